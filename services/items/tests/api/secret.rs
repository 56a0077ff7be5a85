use crate::helpers::{API_KEY, Db, SECRET_MESSAGE, expect_problem, spawn_app};

#[tokio::test]
async fn the_secret_needs_the_api_key() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, body) = {
        let response = app
            .client
            .get(app.url("/v1/secret"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!((status, &body["message"]), (200, &SECRET_MESSAGE.into()));

    let missing = expect_problem(app.get("/v1/secret").await, 401).await;
    assert!(!missing.to_string().contains(SECRET_MESSAGE));
    let wrong = app
        .client
        .get(app.url("/v1/secret"))
        .header("x-api-key", "test-api-key-012345678")
        .send()
        .await
        .unwrap();
    let wrong = expect_problem(wrong, 403).await;
    assert!(!wrong.to_string().contains(SECRET_MESSAGE));
}
