//! Deadlines from callers, and the fault-injection switch.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{expect_problem, spawn_app, spawn_app_with};

const KEY: &str = "timezones-test-key-0123";

#[tokio::test]
async fn a_spent_budget_is_refused_without_doing_the_work() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v1/timezones/UTC", app.address))
        .header("x-request-timeout-ms", "0")
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 503).await;
    assert_eq!(problem["type"], "urn:meridian:problem:deadline-exceeded");
}

#[tokio::test]
async fn work_past_the_callers_budget_is_abandoned() {
    let app = spawn_app_with(&[("FAULT_DELAY_MS", "2000")]).await;
    let started = Instant::now();
    let response = app
        .client
        .get(format!("{}/v1/timezones/UTC", app.address))
        .header("x-request-timeout-ms", "150")
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "gave up at the caller's budget"
    );
    expect_problem(response, 503).await;
}

#[tokio::test]
async fn without_an_api_key_configured_the_admin_switch_is_disabled() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(format!("{}/admin/faults", app.address))
        .header("x-api-key", "anything-at-all-here")
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("disabled"));
    assert_eq!(
        app.get_json("/v1/timezones/UTC").await.0,
        200,
        "no fault was switched on"
    );
}

#[tokio::test]
async fn the_admin_switch_injects_errors_and_turns_them_off() {
    let app = spawn_app_with(&[("DUMMY_API_KEY", KEY)]).await;
    let put = |body: serde_json::Value, key: &str| {
        app.client
            .put(format!("{}/admin/faults", app.address))
            .header("x-api-key", key)
            .json(&body)
            .send()
    };
    expect_problem(
        put(json!({"error_rate": 1.0}), "wrong-key-wrong-key")
            .await
            .unwrap(),
        403,
    )
    .await;
    let on = put(json!({"error_rate": 1.0, "paths": ["/v1/convert"]}), KEY)
        .await
        .unwrap();
    assert_eq!(on.status().as_u16(), 200);

    let response = app
        .client
        .get(format!(
            "{}/v1/convert?to=UTC&at=2026-01-01T00:00:00Z",
            app.address
        ))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 503).await;
    assert_eq!(problem["type"], "urn:meridian:problem:injected-fault");
    assert_eq!(
        app.get_json("/v1/timezones/UTC").await.0,
        200,
        "other paths untouched"
    );
    assert_eq!(app.get_json("/healthz").await.0, 200, "probes untouched");

    let off = put(json!({}), KEY).await.unwrap();
    assert_eq!(off.status().as_u16(), 200);
    let (status, _) = app
        .get_json("/v1/convert?to=UTC&at=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(status, 200);
}
