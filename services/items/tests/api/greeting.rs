use chrono::{DateTime, FixedOffset, Utc};

use crate::helpers::{
    Db, FALLBACK_OFFSET, GREETING, Options, Timezones, expect_problem, spawn_app, spawn_app_with,
};

fn parse(local: &serde_json::Value) -> DateTime<FixedOffset> {
    local.as_str().unwrap().parse().unwrap()
}

fn is_now(t: DateTime<FixedOffset>) -> bool {
    (Utc::now() - t.with_timezone(&Utc)).num_seconds().abs() < 5
}

#[tokio::test]
async fn without_a_zone_the_greeting_uses_the_configured_offset() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, greeting) = app.get_json("/v1/greeting").await;
    assert_eq!(status, 200);
    assert_eq!(greeting["message"], GREETING);
    assert_eq!(greeting["zone"], FALLBACK_OFFSET);
    assert_eq!(greeting["source"], "offset");
    assert_eq!(greeting["degraded"], false);
    let local = parse(&greeting["local_time"]);
    assert_eq!(local.offset().to_string(), FALLBACK_OFFSET);
    assert!(is_now(local));
    assert_eq!(
        app.timezones
            .as_ref()
            .unwrap()
            .requests_to("/v1/convert")
            .await,
        0,
        "no hop needed"
    );
}

#[tokio::test]
async fn with_a_zone_the_greeting_asks_the_timezones_service() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, greeting) = app.get_json("/v1/greeting?tz=Asia/Tokyo").await;
    assert_eq!(status, 200);
    assert_eq!(greeting["message"], GREETING);
    assert_eq!(greeting["zone"], "Asia/Tokyo");
    assert_eq!(greeting["source"], "timezones");
    assert_eq!(greeting["degraded"], false);
    let local = parse(&greeting["local_time"]);
    assert_eq!(local.offset().to_string(), "+09:00");
    assert!(is_now(local));
    assert_eq!(
        app.timezones
            .as_ref()
            .unwrap()
            .requests_to("/v1/convert")
            .await,
        1
    );
}

#[tokio::test]
async fn the_request_id_travels_to_timezones() {
    let app = spawn_app(Db::Sqlite).await;
    let response = app
        .client
        .get(app.url("/v1/greeting?tz=Europe/Paris"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let timezones = app.timezones.as_ref().unwrap();
    assert_eq!(timezones.requests_with_id("trace-me-42").await, 1);
}

#[tokio::test]
async fn an_unknown_zone_is_a_400_problem() {
    let app = spawn_app(Db::Sqlite).await;
    let problem = expect_problem(app.get("/v1/greeting?tz=Mars/Base").await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("Mars/Base"));
}

#[tokio::test]
async fn when_timezones_is_down_the_greeting_falls_back_and_says_so() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Down,
        ..Options::default()
    })
    .await;
    let (status, greeting) = app.get_json("/v1/greeting?tz=Asia/Tokyo").await;
    assert_eq!(status, 200);
    assert_eq!(greeting["degraded"], true);
    assert_eq!(greeting["source"], "fallback");
    assert_eq!(greeting["zone"], FALLBACK_OFFSET);
    assert_eq!(
        parse(&greeting["local_time"]).offset().to_string(),
        FALLBACK_OFFSET
    );
}
