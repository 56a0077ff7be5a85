//! `DELETE /v1/items?tag=`: how a load run removes what it created, however many. Each request
//! deletes up to `limit` items with the tag, oldest first, and says how many; repeated until it
//! answers 0, none is left, and no item without the tag is touched. Every index follows: the
//! deleted items' other tags and their names find nothing.

use items::domain::ItemFields;
use reqwest::Method;
use serde_json::Value;

use crate::filters::list_all;
use crate::helpers::{Db, TestApp, expect_problem, second_store, spawn_app};
use crate::on_both_databases;

on_both_databases!(
    repeated_tagged_deletes_remove_exactly_the_tagged_items,
    tagged_deletes_refuse_what_they_cannot_read_and_delete_nothing,
);

/// More than two requests' worth at the largest `limit`.
const TAGGED: usize = 2_500;

/// Writes `TAGGED` items tagged `run` (every tenth also `also`, named `doomed <i>`) and 30
/// untagged ones (`kept <i>`, tag `other`), in bulk through a second store on the app's
/// database.
async fn seed(app: &TestApp) {
    let store = second_store(app).await;
    let mut fields: Vec<ItemFields> = (0..TAGGED)
        .map(|i| {
            let mut tags = vec!["run".to_owned()];
            if i % 10 == 0 {
                tags.push("also".to_owned());
            }
            ItemFields::parse(&format!("doomed {i}"), None, &tags).unwrap()
        })
        .collect();
    // Interleaved with the tagged ones, so a delete that strayed by position would hit them.
    for i in 0..30 {
        let kept = ItemFields::parse(&format!("kept {i}"), None, &["other".to_owned()]).unwrap();
        fields.insert(i * 80, kept);
    }
    for chunk in fields.chunks(1_000) {
        store.create_many(chunk.to_vec()).await.unwrap();
    }
    store.close().await;
}

async fn delete_tagged(app: &TestApp, query: &str) -> reqwest::Response {
    app.write(Method::DELETE, &format!("/v1/items?{query}"))
        .send()
        .await
        .unwrap()
}

async fn repeated_tagged_deletes_remove_exactly_the_tagged_items(db: Db) {
    let app = spawn_app(db).await;
    seed(&app).await;
    let first_tagged = list_all(&app, &[("tag", "run")], 100).await;
    assert_eq!(first_tagged.len(), TAGGED);

    let mut answers = Vec::new();
    for limit in ["1000", "1000", "1000", "1000"] {
        let response = delete_tagged(&app, &format!("tag=run&limit={limit}")).await;
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        answers.push(body["deleted"].as_u64().unwrap());
    }
    assert_eq!(answers, [1000, 1000, 500, 0]);

    assert!(list_all(&app, &[("tag", "run")], 100).await.is_empty());
    assert!(list_all(&app, &[("tag", "also")], 100).await.is_empty());
    assert!(list_all(&app, &[("name", "doomed")], 100).await.is_empty());
    let kept = list_all(&app, &[("tag", "other")], 100).await;
    assert_eq!(kept.len(), 30);
    assert_eq!(list_all(&app, &[("name", "kept")], 100).await.len(), 30);
    let all = list_all(&app, &[], 100).await;
    assert_eq!(all.len(), 30, "only the untagged items are left");
    let (status, _) = app
        .get_json(&format!(
            "/v1/items/{}",
            first_tagged[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404);
}

async fn tagged_deletes_refuse_what_they_cannot_read_and_delete_nothing(db: Db) {
    let app = spawn_app(db).await;
    seed(&app).await;
    for query in ["", "limit=10", "tag=run&limit=0", "tag=run&limit=1001"] {
        let problem = expect_problem(delete_tagged(&app, query).await, 400).await;
        assert!(problem["detail"].is_string(), "{query}: {problem}");
    }
    let problem = expect_problem(delete_tagged(&app, "tag=Not%20A%20Tag").await, 422).await;
    assert_eq!(problem["type"], "urn:meridian:problem:validation-error");
    let without_key = app
        .client
        .delete(app.url("/v1/items?tag=run"))
        .send()
        .await
        .unwrap();
    expect_problem(without_key, 401).await;

    assert_eq!(list_all(&app, &[("tag", "run")], 100).await.len(), TAGGED);
    assert_eq!(list_all(&app, &[], 100).await.len(), TAGGED + 30);
}
