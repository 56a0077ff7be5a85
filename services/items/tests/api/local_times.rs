//! Item reads with `?tz=`: the items → timezones hop, one call per request, and the fallback.

use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};

use crate::helpers::{
    Db, FALLBACK_OFFSET, Options, Timezones, expect_problem, spawn_app, spawn_app_with,
};
use crate::on_both_databases;

on_both_databases!(
    item_read_renders_timestamps_in_the_zone_asked_for,
    an_updated_item_renders_each_of_its_two_instants,
    item_list_makes_one_timezones_call_per_page,
);

fn same_instant(utc: &Value, local: &Value) -> bool {
    let utc: DateTime<FixedOffset> = utc.as_str().unwrap().parse().unwrap();
    let local: DateTime<FixedOffset> = local.as_str().unwrap().parse().unwrap();
    utc == local
}

fn offset_of(local: &Value) -> String {
    let t: DateTime<FixedOffset> = local.as_str().unwrap().parse().unwrap();
    t.offset().to_string()
}

async fn item_read_renders_timestamps_in_the_zone_asked_for(db: Db) {
    let app = spawn_app(db).await;
    let item = app.create(json!({"name": "clock"})).await;
    let path = format!("/v1/items/{}?tz=Asia/Tokyo", item["id"].as_str().unwrap());
    let (status, read) = app.get_json(&path).await;
    assert_eq!(status, 200);
    let local = &read["local"];
    assert_eq!(local["zone"], "Asia/Tokyo");
    assert_eq!(local["source"], "timezones");
    assert_eq!(local["degraded"], false);
    assert_eq!(offset_of(&local["created_at"]), "+09:00");
    assert!(same_instant(&read["created_at"], &local["created_at"]));
    assert!(same_instant(&read["updated_at"], &local["updated_at"]));
    let timezones = app.timezones.as_ref().unwrap();
    assert_eq!(
        timezones.requests_to("/v1/convert").await,
        1,
        "both fields in one call"
    );

    let (_, plain) = app
        .get_json(&format!("/v1/items/{}", item["id"].as_str().unwrap()))
        .await;
    assert!(
        plain.get("local").is_none(),
        "no tz, no local times, no call"
    );
    assert_eq!(timezones.requests_to("/v1/convert").await, 1);
}

/// items asks timezones for each distinct instant once; a changed item has two, and each
/// local time must stay with its own field.
async fn an_updated_item_renders_each_of_its_two_instants(db: Db) {
    let app = spawn_app(db).await;
    let item = app.create(json!({"name": "before"})).await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    // Timestamps are kept to the microsecond: a few milliseconds apart is apart.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let response = app
        .write(reqwest::Method::PATCH, &path)
        .json(&json!({"name": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, read) = app.get_json(&format!("{path}?tz=Asia/Tokyo")).await;
    assert_eq!(status, 200);
    assert_ne!(read["created_at"], read["updated_at"]);
    let local = &read["local"];
    assert_eq!(local["source"], "timezones");
    assert_ne!(local["created_at"], local["updated_at"]);
    assert!(same_instant(&read["created_at"], &local["created_at"]));
    assert!(same_instant(&read["updated_at"], &local["updated_at"]));
}

async fn item_list_makes_one_timezones_call_per_page(db: Db) {
    let app = spawn_app(db).await;
    for i in 0..5 {
        app.create(json!({"name": format!("n{i}")})).await;
    }
    let (status, page) = app.get_json("/v1/items?tz=America/New_York").await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for item in items {
        assert_eq!(item["local"]["zone"], "America/New_York");
        assert!(["-05:00", "-04:00"].contains(&offset_of(&item["local"]["created_at"]).as_str()));
        assert!(same_instant(
            &item["created_at"],
            &item["local"]["created_at"]
        ));
        assert!(same_instant(
            &item["updated_at"],
            &item["local"]["updated_at"]
        ));
    }
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
async fn unknown_or_malformed_zones_are_client_errors() {
    let app = spawn_app(Db::Sqlite).await;
    let item = app.create(json!({"name": "x"})).await;
    let id = item["id"].as_str().unwrap();
    let problem = expect_problem(
        app.get(&format!("/v1/items/{id}?tz=Atlantis/Capital"))
            .await,
        400,
    )
    .await;
    assert_eq!(problem["type"], "urn:meridian:problem:unknown-zone");
    expect_problem(app.get("/v1/items?tz=Atlantis/Capital").await, 400).await;
    expect_problem(
        app.get(&format!("/v1/items/{id}?tz=..%2F..%2Fadmin")).await,
        422,
    )
    .await;
}

#[tokio::test]
async fn reads_fall_back_to_the_offset_when_timezones_is_down() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Down,
        ..Options::default()
    })
    .await;
    let item = app.create(json!({"name": "offline"})).await;
    let (status, read) = app
        .get_json(&format!(
            "/v1/items/{}?tz=Asia/Tokyo",
            item["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "a read never fails because timezones is down");
    let local = &read["local"];
    assert_eq!(local["degraded"], true);
    assert_eq!(local["source"], "fallback");
    assert_eq!(local["zone"], FALLBACK_OFFSET);
    assert_eq!(offset_of(&local["created_at"]), FALLBACK_OFFSET);
    assert!(same_instant(&read["created_at"], &local["created_at"]));

    let (status, page) = app.get_json("/v1/items?tz=Asia/Tokyo").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["local"]["degraded"], true);
}
