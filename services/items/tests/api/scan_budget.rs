//! `?name=` with one or two characters: no trigram index can narrow it, so a page reads at most
//! `SCAN_BUDGET` items and may come back short with a cursor. Following the cursors still finds
//! every match, once, in order.

use std::time::Duration;

use items::domain::ItemFields;
use items::store::{SCAN_BUDGET, Store, StoreConfig};
use serde_json::Value;

use crate::helpers::{Db, spawn_app};
use crate::on_both_databases;

on_both_databases!(short_needles_page_through_a_bounded_window);

async fn short_needles_page_through_a_bounded_window(db: Db) {
    let app = spawn_app(db).await;
    // Seeded through a second store on the same database, in bulk: 2.5 windows of items, of
    // which three match "zq" (one in each window).
    let store = Store::connect(&StoreConfig {
        url: app.db.url.clone(),
        max_connections: 1,
        max_readers: 1,
        acquire_timeout: Duration::from_secs(5),
        idempotency_ttl: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let total = SCAN_BUDGET as usize * 5 / 2;
    let matching = [10, SCAN_BUDGET as usize + 10, 2 * SCAN_BUDGET as usize + 10];
    let fields: Vec<ItemFields> = (0..total)
        .map(|i| {
            let name = if matching.contains(&i) {
                format!("item {i} ZQ")
            } else {
                format!("item {i}")
            };
            ItemFields::parse(&name, None, &["bulk".to_owned()]).unwrap()
        })
        .collect();
    for chunk in fields.chunks(2_000) {
        store.create_many(chunk.to_vec()).await.unwrap();
    }
    store.close().await;

    for filter in ["name=zq", "name=zq&tag=bulk"] {
        let mut found = Vec::new();
        let mut pages = 0;
        let mut path = format!("/v1/items?{filter}&limit=100");
        loop {
            pages += 1;
            assert!(pages <= 10, "{filter}: the cursors do not come to an end");
            let (status, page) = app.get_json(&path).await;
            assert_eq!(status, 200, "{page}");
            let names: Vec<&str> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap())
                .collect();
            assert!(
                names.len() <= 1,
                "{filter}: one match per window: {names:?}"
            );
            found.extend(names.iter().map(|n| n.to_string()));
            match &page["next_cursor"] {
                Value::String(cursor) => {
                    path = format!("/v1/items?{filter}&limit=100&cursor={cursor}")
                }
                _ => break,
            }
        }
        let expected: Vec<String> = matching.iter().map(|i| format!("item {i} ZQ")).collect();
        assert_eq!(found, expected, "{filter}: every match once, in order");
        assert_eq!(pages, 3, "{filter}: one page per window of {SCAN_BUDGET}");
    }

    // A three-character needle uses the index: all matches on one page.
    let (_, page) = app.get_json("/v1/items?name=%20zq&limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
    assert!(page.get("next_cursor").is_none(), "{page}");
}
