//! What a write answers is what happened to it: a 201 is stored, a 503 is not, on SQLite's
//! batching writer, whatever else the batch or the clock did.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Db, Options, TestApp, item_names, spawn_app_with};

fn settings(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

async fn stored_names(app: &TestApp) -> Vec<String> {
    let (status, page) = app.get_json("/v1/items?limit=100").await;
    assert_eq!(status, 200);
    item_names(&page)
}

/// Writes wait in the writer's queue while another connection holds the file's write lock;
/// their request deadline passes and they are answered 503. Once the lock goes, none of them
/// may be stored: a 503 write is one the client will retry.
#[tokio::test]
async fn a_write_answered_503_at_its_deadline_is_never_stored() {
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        env: settings(&[
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "5000"),
            ("REQUEST_TIMEOUT_MS", "10000"),
        ]),
        ..Options::default()
    })
    .await;
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut answered_201 = Vec::new();
    for n in 0..3 {
        let name = format!("timed out {n}");
        let response = app
            .write(Method::POST, "/v1/items")
            .header("x-request-timeout-ms", "300")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            201 => answered_201.push(name),
            503 => assert_eq!(response.headers()["retry-after"], "1"),
            other => panic!("unexpected status {other}"),
        }
    }
    locker.execute_batch("ROLLBACK").unwrap();
    // Queued behind the timed-out writes, so answered only after the writer has dealt with them.
    let after: Value = app.create(json!({"name": "after the lock"})).await;
    answered_201.push(after["name"].as_str().unwrap().to_owned());

    assert_eq!(
        stored_names(&app).await,
        answered_201,
        "exactly the writes answered 201 are stored"
    );
}
