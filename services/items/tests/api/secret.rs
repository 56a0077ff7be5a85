use crate::helpers::{
    API_KEY, Db, Options, SECRET_MESSAGE, Timezones, expect_problem, spawn_app, spawn_app_with,
};

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

/// Failed key checks are limited per client: behind a local proxy (the test's loopback peer,
/// as the Linkerd sidecar is in a pod) the client is the rightmost `X-Forwarded-For` entry.
#[tokio::test]
async fn a_client_that_keeps_guessing_keys_is_throttled_and_others_are_not() {
    let app = spawn_app_with(Options {
        env: vec![("AUTH_FAILURES_PER_MINUTE", "3".to_owned())],
        timezones: Timezones::Down,
        ..Options::default()
    })
    .await;
    let secret_as = |client: &'static str, key: &'static str| {
        app.client
            .get(app.url("/v1/secret"))
            .header("x-api-key", key)
            .header("x-forwarded-for", format!("198.51.100.1, {client}"))
            .send()
    };
    for _ in 0..3 {
        expect_problem(
            secret_as("203.0.113.7", "guess-0123456789abcd")
                .await
                .unwrap(),
            403,
        )
        .await;
    }
    let throttled = secret_as("203.0.113.7", API_KEY).await.unwrap();
    assert!(throttled.headers().contains_key("retry-after"));
    let problem = expect_problem(throttled, 429).await;
    assert!(!problem.to_string().contains(SECRET_MESSAGE));
    // Another client, even one that names the throttled address first, is not affected.
    let other = secret_as("203.0.113.8", API_KEY).await.unwrap();
    assert_eq!(other.status(), 200);
}
