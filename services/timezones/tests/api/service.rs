//! What every service offers: health, the OpenAPI document, Swagger UI, request ids and
//! problem+json for routes that do not exist.

use crate::helpers::{expect_problem, spawn_app};

#[tokio::test]
async fn health_endpoints_answer() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let (status, body) = app.get_json(path).await;
        assert_eq!((status, &body["status"]), (200, &"ok".into()), "{path}");
    }
}

#[tokio::test]
async fn openapi_document_lists_the_contract() {
    let app = spawn_app().await;
    let (status, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/timezones",
        "/v1/timezones/{zone}",
        "/v1/convert",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// Any operation that takes input can answer 400 with a problem, so the document must say so,
/// by status: clients generate error handling from it (scripts/dast.sh checks the same for both
/// services by fuzzing, scripts/openapi-contract.sh with generated clients; this catches it at
/// `cargo test`).
#[tokio::test]
async fn every_operation_that_takes_input_documents_its_problem_responses() {
    let app = spawn_app().await;
    let (_, spec) = app.get_json("/openapi.json").await;
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let takes_input = operation["parameters"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
                || operation.get("requestBody").is_some();
            if !takes_input {
                continue;
            }
            checked += 1;
            assert!(
                operation["responses"]["400"]["content"]
                    .get("application/problem+json")
                    .is_some(),
                "{method} {path} takes input but documents no 400 problem+json response"
            );
        }
    }
    assert!(checked >= 4, "only {checked} operations checked");
}

/// Each operation names itself, explains itself, and lists its errors by status; a 429 or 503
/// says when to come back.
#[tokio::test]
async fn every_operation_has_an_id_a_description_and_its_errors_by_status() {
    let app = spawn_app().await;
    let (_, spec) = app.get_json("/openapi.json").await;
    assert_eq!(platform::answers::unsaid(&spec), Vec::<String>::new());
    assert_eq!(spec["paths"].as_object().map(|p| p.len()), Some(6));
    assert_eq!(
        spec["paths"]["/v1/timezones/{zone}"]["get"]["responses"]["404"]["description"]
            .as_str()
            .map(|d| d.contains("unknown-zone")),
        Some(true)
    );
}

#[tokio::test]
async fn swagger_ui_is_served_without_the_network() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("SwaggerUIBundle"),
        "the UI bundle is embedded"
    );
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn."),
        "no CDN fetches"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(format!("{}/v2/nothing", app.address))
        .send()
        .await
        .unwrap();
    expect_problem(missing, 404).await;
    let wrong_method = app
        .client
        .delete(format!("{}/v1/timezones", app.address))
        .send()
        .await
        .unwrap();
    expect_problem(wrong_method, 405).await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let generated = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid_like(id), "replaced with a fresh id, got {id}");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// The published contract changes only on purpose: the live document is the committed one.
#[tokio::test]
async fn the_openapi_document_is_the_committed_one() {
    let app = spawn_app().await;
    let live = reqwest::get(format!("{}/openapi.json", app.address)).await;
    let live = live.unwrap().text().await.unwrap();
    platform::answers::assert_document_unchanged(&live, env!("CARGO_MANIFEST_DIR"));
}
