//! `?name=` with one or two characters: no trigram index can narrow it, so a page reads at most
//! `SCAN_BUDGET` items and may come back short with a cursor. Following the cursors still finds
//! every match, once, in order.

use items::domain::ItemFields;
use items::store::SCAN_BUDGET;
use serde_json::Value;

use crate::helpers::{Db, TestApp, item_names, second_store, spawn_app};
use crate::on_both_databases;

on_both_databases!(short_needles_page_through_a_bounded_window);

/// The items `seed` writes: two and a half windows.
const TOTAL: usize = SCAN_BUDGET as usize * 5 / 2;
/// The items that match, one in each window.
const MATCHING: [usize; 3] = [10, SCAN_BUDGET as usize + 10, 2 * SCAN_BUDGET as usize + 10];

/// Writes `TOTAL` items, named and tagged by `item(i, i is in MATCHING)`, in bulk through a
/// second store on the app's database.
async fn seed(app: &TestApp, item: impl Fn(usize, bool) -> (String, &'static str)) {
    let store = second_store(app).await;
    let fields: Vec<ItemFields> = (0..TOTAL)
        .map(|i| {
            let (name, tag) = item(i, MATCHING.contains(&i));
            ItemFields::parse(&name, None, &[tag.to_owned()]).unwrap()
        })
        .collect();
    for chunk in fields.chunks(2_000) {
        store.create_many(chunk.to_vec()).await.unwrap();
    }
    store.close().await;
}

async fn short_needles_page_through_a_bounded_window(db: Db) {
    let app = spawn_app(db).await;
    // 2.5 windows of items, of which three match "zq" (one in each window).
    seed(&app, |i, matching| {
        let name = if matching {
            format!("item {i} ZQ")
        } else {
            format!("item {i}")
        };
        (name, "bulk")
    })
    .await;

    let expected: Vec<String> = MATCHING.iter().map(|i| format!("item {i} ZQ")).collect();
    for filter in ["name=zq", "name=zq&tag=bulk"] {
        expect_one_page_per_window(&app, filter, &expected).await;
    }

    // A three-character needle uses the index: all matches on one page.
    let (_, page) = app.get_json("/v1/items?name=%20zq&limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
    assert!(page.get("next_cursor").is_none(), "{page}");
}

/// Following the cursors of `filter` with pages of 100 finds `expected`, once each and in
/// order, one page per window (the tests put one match in each).
async fn expect_one_page_per_window(app: &TestApp, filter: &str, expected: &[String]) {
    let mut found = Vec::new();
    let mut pages = 0;
    let mut path = format!("/v1/items?{filter}&limit=100");
    loop {
        pages += 1;
        assert!(pages <= 10, "{filter}: the cursors do not come to an end");
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        let names = item_names(&page);
        assert!(
            names.len() <= 1,
            "{filter}: one match per window: {names:?}"
        );
        found.extend(names);
        match &page["next_cursor"] {
            Value::String(cursor) => path = format!("/v1/items?{filter}&limit=100&cursor={cursor}"),
            _ => break,
        }
    }
    assert_eq!(found, expected, "{filter}: every match once, in order");
    assert_eq!(pages, 3, "{filter}: one page per window of {SCAN_BUDGET}");
}

/// Needles of three characters or more use the trigram index, but the index only finds
/// candidates: a tag most of them lack, or a needle FTS5 folds more widely than the exact
/// check (`école` finds every `ÉCOLE`), leaves most of them refused. A page reads at most
/// `SCAN_BUDGET` candidates, like a short needle's, rather than walking them all.
#[tokio::test]
async fn trigram_candidates_are_read_in_bounded_windows() {
    let app = spawn_app(Db::Sqlite).await;
    seed(&app, |i, matching| {
        if matching {
            (format!("école {i}"), "rare")
        } else {
            (format!("ÉCOLE {i}"), "bulk")
        }
    })
    .await;

    let expected: Vec<String> = MATCHING.iter().map(|i| format!("école {i}")).collect();
    for filter in ["name=%C3%A9cole", "name=cole&tag=rare"] {
        expect_one_page_per_window(&app, filter, &expected).await;
    }
}
