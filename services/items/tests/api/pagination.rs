//! Pages follow item ids (creation order), and a PostgreSQL create takes its id before its
//! statement commits. Two creates can therefore commit out of id order, and a reader whose
//! page already went past the later id never sees the earlier one by following `next_cursor`.
//! That is the documented behaviour (the list operation's description, docs/architecture.md);
//! this shows it holds, with the slow create held open by the test.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{Db, spawn_app};

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_postgres_create_committed_after_a_later_one_is_behind_a_cursor_already_past_it() {
    let app = spawn_app(Db::Postgres).await;
    let (status, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let description = spec["paths"]["/v1/items"]["get"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("committed out of order"),
        "the list operation says which items a walk by cursor can miss: {description:?}"
    );

    // A create that took its id and has not committed yet, as a slow request's would be.
    let mut slow_create = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN")
        .execute(&mut slow_create)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
         VALUES ($1, 'slow create', NULL, '', 1, 0, 0)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .execute(&mut slow_create)
    .await
    .unwrap();
    app.create(json!({"name": "quick create"})).await;
    app.create(json!({"name": "another quick create"})).await;

    let (_, first) = app.get_json("/v1/items?limit=1").await;
    assert_eq!(names(&first), ["quick create"]);
    sqlx::query("COMMIT")
        .execute(&mut slow_create)
        .await
        .unwrap();

    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get_json(&format!("/v1/items?limit=10&cursor={cursor}"))
        .await;
    assert_eq!(
        names(&second),
        ["another quick create"],
        "the walk goes on after its cursor"
    );
    assert!(second["next_cursor"].is_null());

    let (_, again) = app.get_json("/v1/items?limit=10").await;
    assert_eq!(
        names(&again),
        ["slow create", "quick create", "another quick create"],
        "a walk started after the commit has it, in id order"
    );
}
