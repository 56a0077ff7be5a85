//! `GET /v1/items?tag=` and `?name=` on both databases: exactly the matching items, in creation
//! order, page by page; name needles are literal, case-insensitive ASCII substrings of any
//! length (SQLite scans for needles under 3 characters and uses its FTS5 trigram index from 3);
//! and the filters follow every write.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app};
use crate::on_both_databases;

on_both_databases!(
    tag_filter_pages_through_exactly_its_items_in_creation_order,
    name_filter_is_a_literal_case_insensitive_substring_of_any_length,
    tag_and_name_filters_combine,
    filters_follow_puts_patches_and_deletes,
    a_cursor_whose_item_was_deleted_continues_after_it,
    name_filter_folds_ascii_case_alike_on_both_databases,
    a_name_filter_with_control_characters_is_refused_as_invalid,
);

/// Every item of `GET /v1/items` with these query parameters, following `next_cursor` with
/// pages of `limit`; checks that each page is at most `limit` long, that only the last page
/// lacks a cursor and that no page is empty except a first (and last) one.
pub async fn list_all(app: &TestApp, params: &[(&str, &str)], limit: u32) -> Vec<Value> {
    list_all_at(&app.client, &app.address, params, limit).await
}

/// `list_all` against the items at `base` (e.g. a binary started by the test).
pub async fn list_all_at(
    client: &reqwest::Client,
    base: &str,
    params: &[(&str, &str)],
    limit: u32,
) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1.. {
        let limit_text = limit.to_string();
        let mut query: Vec<(&str, &str)> = params.to_vec();
        query.push(("limit", &limit_text));
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let response = client
            .get(format!("{base}/v1/items"))
            .query(&query)
            .send()
            .await
            .expect("request reaches items");
        assert_eq!(response.status().as_u16(), 200, "GET /v1/items {query:?}");
        let page: Value = response.json().await.unwrap();
        let found = page["items"].as_array().expect("items is a list");
        assert!(found.len() <= limit as usize, "page too long: {page}");
        assert!(
            !found.is_empty() || (pages == 1 && page.get("next_cursor").is_none()),
            "an empty page after a cursor: {query:?} gave {page}"
        );
        items.extend(found.iter().cloned());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => {
                assert_eq!(
                    next,
                    items.last().unwrap()["id"].as_str().unwrap(),
                    "the cursor is the page's last id"
                );
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 1000, "pagination ends");
    }
    items
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What the test expects the database to hold: every live item as last answered, in creation
/// order.
struct Model {
    items: Vec<Value>,
}

impl Model {
    fn new() -> Self {
        Self { items: Vec::new() }
    }

    async fn create(&mut self, app: &TestApp, name: &str, tags: &[&str]) -> Value {
        let item = app.create(json!({"name": name, "tags": tags})).await;
        self.items.push(item.clone());
        item
    }

    fn replace(&mut self, item: Value) {
        let slot = self
            .items
            .iter_mut()
            .find(|i| i["id"] == item["id"])
            .expect("the item is in the model");
        *slot = item;
    }

    fn remove(&mut self, id: &str) {
        self.items.retain(|i| i["id"] != id);
    }

    /// The items a filter must return, in creation order: ASCII case is ignored and the
    /// needle is matched literally (the test data has no upper-case non-ASCII letters).
    fn matching(&self, tag: Option<&str>, needle: Option<&str>) -> Vec<Value> {
        self.items
            .iter()
            .filter(|item| {
                tag.is_none_or(|tag| {
                    item["tags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t.as_str() == Some(tag))
                })
            })
            .filter(|item| {
                needle.is_none_or(|needle| {
                    item["name"]
                        .as_str()
                        .unwrap()
                        .to_lowercase()
                        .contains(&needle.to_lowercase())
                })
            })
            .cloned()
            .collect()
    }

    /// Every filter in `tags` × `needles` (and each alone) answers exactly what the model says,
    /// paged two at a time.
    async fn check(&self, app: &TestApp, tags: &[&str], needles: &[&str]) {
        let mut queries: Vec<(Option<&str>, Option<&str>)> = vec![(None, None)];
        queries.extend(tags.iter().map(|t| (Some(*t), None)));
        queries.extend(needles.iter().map(|n| (None, Some(*n))));
        for tag in tags {
            queries.extend(needles.iter().map(|n| (Some(*tag), Some(*n))));
        }
        for (tag, needle) in queries {
            let mut params = Vec::new();
            if let Some(tag) = tag {
                params.push(("tag", tag));
            }
            if let Some(needle) = needle {
                params.push(("name", needle));
            }
            let found = list_all(app, &params, 2).await;
            let expected = self.matching(tag, needle);
            assert_eq!(
                names(&found),
                names(&expected),
                "names for tag {tag:?}, name {needle:?}"
            );
            assert_eq!(found, expected, "items for tag {tag:?}, name {needle:?}");
        }
    }
}

async fn tag_filter_pages_through_exactly_its_items_in_creation_order(db: Db) {
    let app = spawn_app(db).await;
    let mut model = Model::new();
    // Five "rare" items among many others, some with tags that contain "rare" or that it is a
    // prefix of; "rare" sits first, last and in the middle of the tag lists.
    let mut rare = Vec::new();
    for i in 0..5 {
        for j in 0..4 {
            let tags: &[&str] = match j {
                0 => &["rarer", "common"],
                1 => &["common", "x-rare"],
                2 => &[],
                _ => &["common"],
            };
            model.create(&app, &format!("filler {i}.{j}"), tags).await;
        }
        let tags: &[&str] = match i {
            0 => &["rare"],
            1 => &["rare", "common"],
            2 => &["common", "rare"],
            3 => &["a", "rare", "z"],
            _ => &["rare", "rarer"],
        };
        rare.push(model.create(&app, &format!("rare {i}"), tags).await);
    }
    model.create(&app, "filler last", &["common"]).await;

    let found = list_all(&app, &[("tag", "rare")], 2).await;
    assert_eq!(
        names(&found),
        ["rare 0", "rare 1", "rare 2", "rare 3", "rare 4"]
    );
    assert_eq!(
        found, rare,
        "every match once, in creation order, as stored"
    );

    // The same with other page sizes: one page exactly, and a page size that divides evenly.
    assert_eq!(list_all(&app, &[("tag", "rare")], 5).await, rare);
    assert_eq!(list_all(&app, &[("tag", "rare")], 1).await, rare);
    let (status, first) = app.get_json("/v1/items?tag=rare&limit=5").await;
    assert_eq!(status, 200);
    assert!(first.get("next_cursor").is_none(), "5 of 5: no next page");
    // Tags are matched exactly and case-insensitively; an unknown tag matches nothing.
    assert_eq!(list_all(&app, &[("tag", "RARE")], 2).await, rare);
    let (status, none) = app.get_json("/v1/items?tag=rar").await;
    assert_eq!(status, 200);
    assert_eq!(none, json!({"items": []}));

    model
        .check(
            &app,
            &["rare", "rarer", "common", "x-rare", "a", "nothing"],
            &[],
        )
        .await;
}

/// Needles of every length and with every character that means something to LIKE or FTS5.
const NEEDLES: &[&str] = &[
    // ASCII case, anywhere in the name.
    "widget", "WIDGET", "wIdGeT", "Wi", "w", "t", "T", "xl",
    // LIKE's wildcards and escape character are literal.
    "%", "50%", "0% o", "% off_", "_", "f_s", "ff_sal", "\\", "k\\s", "%_",
    // FTS5 syntax is literal: quotes, operators, stars, column filters, brackets.
    "\"", "\"hi\"", "say \"", "\"\"", "not", "NOT", "or b", "*", "a*b", "name:", "(x)", "^",
    // Spaces, non-ASCII (lower case on both sides) and needles that match nothing.
    " ", "e p", "ü", "üri", "zürich", "café", "é", "zzz", "q", "qq", "widgets",
];

async fn name_filter_is_a_literal_case_insensitive_substring_of_any_length(db: Db) {
    let app = spawn_app(db).await;
    let mut model = Model::new();
    for name in [
        "Alpha widget",
        "50% off_sale",
        "50x offxsale",
        "500 offs",
        "gamma WIDGET xl",
        "Back\\slash",
        "Backxslash",
        "say \"hi\" there",
        "NOTE pad",
        "color blue",
        "a*b star",
        "axb no star",
        "name: value",
        "(x) ^ caret",
        "zürich café",
        "Wi",
        "w",
    ] {
        model.create(&app, name, &["all"]).await;
    }
    // The model's own answers for a few needles, so the model itself is checked too.
    let expect = |needle: &str, expected: &[&str]| {
        assert_eq!(
            names(&model.matching(None, Some(needle))),
            expected,
            "model for {needle:?}"
        );
    };
    expect("widget", &["Alpha widget", "gamma WIDGET xl"]);
    expect("%", &["50% off_sale"]);
    expect("_", &["50% off_sale"]);
    expect("f_s", &["50% off_sale"]);
    expect("\\", &["Back\\slash"]);
    expect("\"hi\"", &["say \"hi\" there"]);
    expect("a*b", &["a*b star"]);
    expect("ü", &["zürich café"]);

    // One by one with plain assertions for the ones the issue names.
    let by_name = |needle: &'static str| {
        let app = &app;
        async move { names(&list_all(app, &[("name", needle)], 100).await) }
    };
    assert_eq!(by_name("WIDGET").await, ["Alpha widget", "gamma WIDGET xl"]);
    assert_eq!(by_name("%").await, ["50% off_sale"], "% is literal");
    assert_eq!(by_name("_").await, ["50% off_sale"], "_ is literal");
    assert_eq!(by_name("% off_").await, ["50% off_sale"]);
    assert_eq!(by_name("\\").await, ["Back\\slash"], "\\ is literal");
    assert_eq!(by_name("k\\s").await, ["Back\\slash"]);
    assert_eq!(by_name("\"").await, ["say \"hi\" there"]);
    assert_eq!(by_name("\"hi\"").await, ["say \"hi\" there"]);

    model.check(&app, &[], NEEDLES).await;
}

async fn tag_and_name_filters_combine(db: Db) {
    let app = spawn_app(db).await;
    let mut model = Model::new();
    for (name, tags) in [
        ("Red chair", &["furniture", "red"][..]),
        ("Blue chair", &["furniture"][..]),
        ("Red pen", &["office", "red"][..]),
        ("red CHAIR cover", &["red"][..]),
        ("Armchair", &["furniture", "red"][..]),
        ("Chairman's desk", &["office"][..]),
        ("50% off_chair", &["red", "sale"][..]),
        ("50x offxchair", &["red", "sale"][..]),
        ("Red lamp", &[][..]),
        ("red chair", &["red"][..]),
    ] {
        model.create(&app, name, tags).await;
    }
    let found = list_all(&app, &[("tag", "red"), ("name", "CHAIR")], 1).await;
    assert_eq!(
        names(&found),
        [
            "Red chair",
            "red CHAIR cover",
            "Armchair",
            "50% off_chair",
            "50x offxchair",
            "red chair"
        ]
    );
    let found = list_all(&app, &[("tag", "sale"), ("name", "f_c")], 1).await;
    assert_eq!(names(&found), ["50% off_chair"]);
    model
        .check(
            &app,
            &["red", "furniture", "office", "sale", "none"],
            &["chair", "CH", "c", "red", "%", "_", "f_c", "'s", "zzz"],
        )
        .await;
}

async fn filters_follow_puts_patches_and_deletes(db: Db) {
    let app = spawn_app(db).await;
    let mut model = Model::new();
    let renamed = model.create(&app, "Old lamp", &["old", "keep"]).await;
    model.create(&app, "Another lamp", &["new"]).await;
    let retagged = model.create(&app, "Desk", &["old"]).await;
    let patched = model.create(&app, "Chair", &["old", "keep"]).await;
    let deleted = model
        .create(&app, "Doomed lamp", &["old", "new", "keep"])
        .await;
    model.create(&app, "Last lamp", &["new", "old"]).await;
    let tags = ["old", "new", "keep", "fresh"];
    let needles = [
        "lamp", "LA", "l", "torch", "to", "t", "stool", "st", "desk", "de", "chair", "doomed",
    ];
    model.check(&app, &tags, &needles).await;

    let path = |item: &Value| format!("/v1/items/{}", item["id"].as_str().unwrap());
    let write = |method: Method, item: &Value, body: Value| {
        let request = app.write(method, &path(item)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "write {body}");
            response.json::<Value>().await.unwrap()
        }
    };

    // PUT renames: found by the new name (long and short needles), not by the old one.
    let updated = write(
        Method::PUT,
        &renamed,
        json!({"name": "New torch", "tags": ["old", "keep"]}),
    )
    .await;
    model.replace(updated);
    assert_eq!(
        names(&list_all(&app, &[("name", "torch")], 2).await),
        ["New torch"]
    );
    assert_eq!(
        names(&list_all(&app, &[("name", "lamp")], 2).await),
        ["Another lamp", "Doomed lamp", "Last lamp"]
    );
    model.check(&app, &tags, &needles).await;

    // PATCH retags: it leaves the old tag's list and joins the new one at its creation place.
    let updated = write(Method::PATCH, &retagged, json!({"tags": ["new"]})).await;
    model.replace(updated);
    assert_eq!(
        names(&list_all(&app, &[("tag", "old")], 2).await),
        ["New torch", "Chair", "Doomed lamp", "Last lamp"]
    );
    assert_eq!(
        names(&list_all(&app, &[("tag", "new")], 2).await),
        ["Another lamp", "Desk", "Doomed lamp", "Last lamp"]
    );
    model.check(&app, &tags, &needles).await;

    // PATCH renames and PUT drops every tag.
    let updated = write(Method::PATCH, &patched, json!({"name": "Stool"})).await;
    model.replace(updated);
    let updated = write(Method::PUT, &patched, json!({"name": "Stool"})).await;
    assert_eq!(updated["tags"], json!([]));
    model.replace(updated);
    assert_eq!(
        names(&list_all(&app, &[("tag", "keep")], 2).await),
        ["New torch", "Doomed lamp"]
    );
    model.check(&app, &tags, &needles).await;

    // A PATCH that changes neither name nor tags leaves the filters as they were.
    let updated = write(
        Method::PATCH,
        &retagged,
        json!({"description": "now described"}),
    )
    .await;
    model.replace(updated);
    model.check(&app, &tags, &needles).await;

    // DELETE: gone from every tag and name result.
    let response = app
        .write(Method::DELETE, &path(&deleted))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    model.remove(deleted["id"].as_str().unwrap());
    for tag in ["old", "new", "keep"] {
        let found = list_all(&app, &[("tag", tag)], 2).await;
        assert!(
            !ids(&found).contains(&deleted["id"].as_str().unwrap().to_owned()),
            "deleted item still tagged {tag}"
        );
    }
    assert_eq!(
        names(&list_all(&app, &[("name", "doomed")], 2).await),
        Vec::<String>::new()
    );
    model.check(&app, &tags, &needles).await;

    // A new item after all that joins the end of each of its lists.
    model.create(&app, "Fresh lamp", &["fresh", "old"]).await;
    model.check(&app, &tags, &needles).await;
}

async fn a_cursor_whose_item_was_deleted_continues_after_it(db: Db) {
    let app = spawn_app(db).await;
    let mut all = Vec::new();
    for i in 0..8 {
        // Odd items carry the tag and a name the needles find; even ones do not.
        let (name, tags): (String, &[&str]) = if i % 2 == 1 {
            (format!("match {i}"), &["t"])
        } else {
            (format!("other {i}"), &[])
        };
        all.push(app.create(json!({"name": name, "tags": tags})).await);
    }
    let delete = |item: &Value| {
        let request = app.write(
            Method::DELETE,
            &format!("/v1/items/{}", item["id"].as_str().unwrap()),
        );
        async move { assert_eq!(request.send().await.unwrap().status().as_u16(), 204) }
    };
    let page = |query: String| {
        let app = &app;
        async move {
            let (status, page) = app.get_json(&format!("/v1/items?{query}")).await;
            assert_eq!(status, 200, "{query}");
            page
        }
    };
    // The first page of each listing, taken before any delete.
    let filters = [
        "",
        "tag=t&",
        "name=match&",
        "name=ma&",
        "name=m&",
        "tag=t&name=mat&",
    ];
    let mut cursors = Vec::new();
    for filter in filters {
        let first = page(format!("{filter}limit=2")).await;
        cursors.push(first["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(cursors[0], all[1]["id"].as_str().unwrap());
    for cursor in &cursors[1..] {
        assert_eq!(cursor, all[3]["id"].as_str().unwrap());
    }
    // Each cursor's own item is deleted, and so is the item right after item 3 (item 4).
    delete(&all[1]).await;
    delete(&all[3]).await;
    delete(&all[4]).await;
    let unfiltered = page(format!("limit=2&cursor={}", cursors[0])).await;
    assert_eq!(
        names(unfiltered["items"].as_array().unwrap()),
        ["other 2", "match 5"]
    );
    for (filter, cursor) in filters.iter().zip(&cursors).skip(1) {
        let next = page(format!("{filter}limit=2&cursor={cursor}")).await;
        assert_eq!(
            names(next["items"].as_array().unwrap()),
            ["match 5", "match 7"],
            "{filter}"
        );
        assert!(next.get("next_cursor").is_none(), "{filter}");
    }
    // A cursor past the last item, deleted: an empty last page.
    let last = all[7]["id"].as_str().unwrap().to_owned();
    delete(&all[7]).await;
    for filter in filters {
        let after = page(format!("{filter}limit=2&cursor={last}")).await;
        assert_eq!(after, json!({"items": []}), "{filter}");
    }
}

/// The name filter folds ASCII letters only, on both databases alike: a needle finds the name
/// as written, whatever the ASCII case, and non-ASCII letters match only themselves.
async fn name_filter_folds_ascii_case_alike_on_both_databases(db: Db) {
    let app = spawn_app(db).await;
    for name in ["ÉCOLE", "école", "Ecole", "ÉCOLE ÉTÉ"] {
        app.create(json!({ "name": name })).await;
    }
    let names = |items: Vec<Value>| -> Vec<String> {
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for (needle, expected) in [
        ("ÉCOLE", vec!["ÉCOLE", "ÉCOLE ÉTÉ"]),
        ("École", vec!["ÉCOLE", "ÉCOLE ÉTÉ"]),
        ("école", vec!["école"]),
        ("ECOLE", vec!["Ecole"]),
        ("cole", vec!["ÉCOLE", "école", "Ecole", "ÉCOLE ÉTÉ"]),
        ("ÉT", vec!["ÉCOLE ÉTÉ"]),
        ("été", vec![]),
    ] {
        assert_eq!(
            names(list_all(&app, &[("name", needle)], 10).await),
            expected,
            "?name={needle}"
        );
    }
}

/// A needle no name can contain (control characters, NUL among them) is refused as a
/// validation problem, like a malformed `?tag=`, before it reaches the database.
async fn a_name_filter_with_control_characters_is_refused_as_invalid(db: Db) {
    let app = spawn_app(db).await;
    app.create(json!({"name": "abcd"})).await;
    for raw in ["ab%00cd", "%00", "ab%07", "ab%0Acd", "%C2%85x"] {
        let response = app.get(&format!("/v1/items?name={raw}")).await;
        let problem = crate::helpers::expect_problem(response, 422).await;
        assert_eq!(
            problem["errors"][0]["field"], "name",
            "?name={raw}: {problem}"
        );
    }
}
