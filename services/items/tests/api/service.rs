//! What every service offers: health, readiness, the OpenAPI document, Swagger UI and
//! problem+json for routes that do not exist.

use crate::helpers::{Db, expect_problem, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer_on_both_databases() {
    for db in [Db::Sqlite, Db::Postgres] {
        let app = spawn_app(db).await;
        for path in ["/healthz", "/readyz"] {
            let (status, body) = app.get_json(path).await;
            assert_eq!(
                (status, &body["status"]),
                (200, &"ok".into()),
                "{path} on {db:?}"
            );
        }
    }
}

#[tokio::test]
async fn openapi_document_lists_the_contract() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let expected = [
        ("/v1/items", vec!["get", "post", "delete"]),
        ("/v1/items/{id}", vec!["get", "put", "patch", "delete"]),
        ("/v1/greeting", vec!["get"]),
        ("/v1/secret", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            assert!(
                spec["paths"][path].get(method).is_some(),
                "{method} {path} missing"
            );
        }
    }
    assert!(spec["components"]["securitySchemes"]["ApiKeyAuth"].is_object());
}

/// Each operation names itself, explains itself and lists its errors by status, and the
/// schemas state the domain's limits (openapi-python-client names methods after the ids;
/// scripts/openapi-contract.sh lints and drives the whole document).
#[tokio::test]
async fn every_operation_has_an_id_a_description_and_its_errors_by_status() {
    let app = spawn_app(Db::Sqlite).await;
    let (_, spec) = app.get_json("/openapi.json").await;
    assert_eq!(platform::answers::unsaid(&spec), Vec::<String>::new());
    let create = &spec["paths"]["/v1/items"]["post"];
    assert_eq!(create["operationId"], "createItem");
    let statuses: Vec<&str> = create["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        [
            "201", "400", "401", "403", "409", "413", "415", "422", "429", "431", "500", "503"
        ]
    );
    let input = &spec["components"]["schemas"]["ItemInput"]["properties"];
    assert_eq!(input["name"]["maxLength"], 100);
    assert_eq!(input["description"]["maxLength"], 2000);
    assert_eq!(input["tags"]["maxItems"], 10);
    assert_eq!(input["tags"]["items"]["maxLength"], 32);
}

#[tokio::test]
async fn swagger_ui_is_served_without_the_network() {
    let app = spawn_app(Db::Sqlite).await;
    let response = app.get("/docs").await;
    assert_eq!(response.status().as_u16(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("SwaggerUIBundle"));
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn."),
        "no CDN fetches"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app(Db::Sqlite).await;
    expect_problem(app.get("/v1/nothing-here").await, 404).await;
    let response = app.client.put(app.url("/v1/items")).send().await.unwrap();
    expect_problem(response, 405).await;
}

#[tokio::test]
async fn the_app_stops_cleanly_and_keeps_its_data() {
    let app = spawn_app(Db::Sqlite).await;
    let item = app.create(serde_json::json!({"name": "durable"})).await;
    let address = app.address.clone();
    let db = app.stop().await;
    assert!(
        reqwest::get(format!("{address}/healthz")).await.is_err(),
        "port closed"
    );

    let reopened = items::store::Store::connect(&items::store::StoreConfig {
        url: db.url.clone(),
        max_connections: 1,
        max_readers: 1,
        acquire_timeout: std::time::Duration::from_secs(1),
        idempotency_ttl: std::time::Duration::from_secs(60),
        request_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    let id = uuid::Uuid::parse_str(item["id"].as_str().unwrap()).unwrap();
    let stored = reopened
        .get(id)
        .await
        .unwrap()
        .expect("item survived the restart");
    assert_eq!(stored.fields.name.as_str(), "durable");
    reopened.close().await;
}

/// The published contract changes only on purpose: the live document is the committed one.
#[tokio::test]
async fn the_openapi_document_is_the_committed_one() {
    let app = spawn_app(Db::Sqlite).await;
    let live = reqwest::get(format!("{}/openapi.json", app.address)).await;
    let live = live.unwrap().text().await.unwrap();
    platform::answers::assert_document_unchanged(&live, env!("CARGO_MANIFEST_DIR"));
}
