//! Item CRUD over HTTP, on both databases.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{API_KEY, Db, expect_problem, item_names, spawn_app};
use crate::on_both_databases;

on_both_databases!(
    create_then_read_returns_the_stored_item,
    create_reports_every_invalid_field_and_stores_nothing,
    malformed_bodies_are_4xx_problems_and_store_nothing,
    writes_need_the_right_api_key,
    list_pages_through_every_item_once_in_creation_order,
    list_filters_by_tag_and_name,
    list_rejects_bad_parameters,
    put_replaces_all_fields,
    patch_changes_only_the_given_fields,
    if_match_guards_updates_and_deletes,
    delete_removes_the_item,
    unknown_ids_are_404_problems,
);

async fn create_then_read_returns_the_stored_item(db: Db) {
    let app = spawn_app(db).await;
    let response = app
        .write(Method::POST, "/v1/items")
        .json(&json!({"name": "  Desk lamp ", "description": "warm light", "tags": ["Home", "desk", "home"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "Desk lamp");
    assert_eq!(created["description"], "warm light");
    assert_eq!(created["tags"], json!(["home", "desk"]));
    assert_eq!(created["version"], 1);
    assert_eq!(etag, "\"1\"");
    assert_eq!(created["created_at"], created["updated_at"]);
    assert_eq!(
        location,
        format!("/v1/items/{}", created["id"].as_str().unwrap())
    );

    let read = app.get(&location).await;
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(read.headers()["etag"], etag.as_str());
    let read: Value = read.json().await.unwrap();
    assert_eq!(read, created);
}

async fn create_reports_every_invalid_field_and_stores_nothing(db: Db) {
    let app = spawn_app(db).await;
    let too_many_tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let cases = [
        (json!({"name": ""}), vec!["name"]),
        (json!({"name": "x".repeat(101)}), vec!["name"]),
        (json!({"name": "ok", "tags": too_many_tags}), vec!["tags"]),
        (
            json!({"name": " ", "tags": ["fine", "not fine", "x".repeat(33)]}),
            vec!["name", "tags[1]", "tags[2]"],
        ),
        (
            json!({"name": "ok", "description": "d".repeat(2001)}),
            vec!["description"],
        ),
    ];
    for (body, fields) in cases {
        let response = app
            .write(Method::POST, "/v1/items")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, 422).await;
        assert_eq!(problem["type"], "urn:meridian:problem:validation-error");
        let reported: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(reported, fields, "for {body}");
    }
    let (_, page) = app.get_json("/v1/items").await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

async fn malformed_bodies_are_4xx_problems_and_store_nothing(db: Db) {
    let app = spawn_app(db).await;
    let post = |body: &'static str, content_type: &'static str| {
        app.write(Method::POST, "/v1/items")
            .header("content-type", content_type)
            .body(body)
    };
    let cases = [
        (post("{\"name\": ", "application/json"), 400),
        (post("[1, 2]", "application/json"), 400),
        (post("{\"name\": 5}", "application/json"), 400),
        (post("{\"tags\": []}", "application/json"), 400),
        (
            post("{\"name\": \"x\", \"admin\": true}", "application/json"),
            400,
        ),
        (post("{\"name\": \"x\"}", "text/plain"), 415),
        // No XML parser ever sees a request (deny.toml's quick-xml advisory exceptions rely on it).
        (post("<item><name>x</name></item>", "application/xml"), 415),
        (post("", "application/json"), 400),
    ];
    for (request, status) in cases {
        expect_problem(request.send().await.unwrap(), status).await;
    }
    let oversized = json!({"name": "x", "description": "d".repeat(70_000)});
    let response = app
        .write(Method::POST, "/v1/items")
        .json(&oversized)
        .send()
        .await
        .unwrap();
    expect_problem(response, 413).await;

    let (_, page) = app.get_json("/v1/items").await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
}

async fn writes_need_the_right_api_key(db: Db) {
    let app = spawn_app(db).await;
    let item = app.create(json!({"name": "guarded"})).await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    let body = json!({"name": "changed"});
    let attempts = [
        (Method::POST, "/v1/items".to_owned()),
        (Method::PUT, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
    ];
    for (method, target) in attempts {
        let without = app
            .client
            .request(method.clone(), app.url(&target))
            .json(&body);
        let problem = expect_problem(without.send().await.unwrap(), 401).await;
        assert!(problem["detail"].as_str().unwrap().contains("credentials"));

        let wrong = app
            .client
            .request(method.clone(), app.url(&target))
            .header("x-api-key", format!("{API_KEY}x"))
            .json(&body);
        let problem = expect_problem(wrong.send().await.unwrap(), 403).await;
        assert!(
            !problem.to_string().contains(API_KEY),
            "the key is never echoed"
        );
    }
    let (_, unchanged) = app.get_json(&path).await;
    assert_eq!(unchanged, item);
    let (_, page) = app.get_json("/v1/items").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

async fn list_pages_through_every_item_once_in_creation_order(db: Db) {
    let app = spawn_app(db).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create(json!({"name": format!("item {i}")})).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/items?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200);
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["id"].clone()));
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => path = format!("/v1/items?limit=3&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every item once, in creation order");

    let (_, default_page) = app.get_json("/v1/items").await;
    assert_eq!(default_page["items"].as_array().unwrap().len(), 7);
    assert!(default_page.get("next_cursor").is_none());
}

async fn list_filters_by_tag_and_name(db: Db) {
    let app = spawn_app(db).await;
    app.create(json!({"name": "Red chair", "tags": ["furniture", "red"]}))
        .await;
    app.create(json!({"name": "Blue chair", "tags": ["furniture"]}))
        .await;
    app.create(json!({"name": "Red pen", "tags": ["office", "red-ink"]}))
        .await;
    app.create(json!({"name": "100% cotton", "tags": []})).await;

    let names = item_names;
    let (_, red) = app.get_json("/v1/items?tag=red").await;
    assert_eq!(
        names(&red),
        ["Red chair"],
        "tag match is exact, not a prefix"
    );
    let (_, furniture) = app.get_json("/v1/items?tag=FURNITURE").await;
    assert_eq!(names(&furniture), ["Red chair", "Blue chair"]);
    let (_, chairs) = app.get_json("/v1/items?name=CHAIR").await;
    assert_eq!(names(&chairs), ["Red chair", "Blue chair"]);
    let (_, both) = app.get_json("/v1/items?name=red&tag=office").await;
    assert_eq!(names(&both), ["Red pen"]);
    let (_, percent) = app.get_json("/v1/items?name=%25").await;
    assert_eq!(
        names(&percent),
        ["100% cotton"],
        "% is literal, not a wildcard"
    );
    let (_, underscore) = app.get_json("/v1/items?name=_").await;
    assert_eq!(
        names(&underscore),
        Vec::<String>::new(),
        "_ is literal, not a wildcard"
    );
}

async fn list_rejects_bad_parameters(db: Db) {
    let app = spawn_app(db).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=not-a-cursor",
        "name=",
    ] {
        expect_problem(app.get(&format!("/v1/items?{query}")).await, 400).await;
    }
    expect_problem(app.get("/v1/items?tag=no%20spaces").await, 422).await;
}

async fn put_replaces_all_fields(db: Db) {
    let app = spawn_app(db).await;
    let item = app
        .create(json!({"name": "old", "description": "old text", "tags": ["a"]}))
        .await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    let response = app
        .write(Method::PUT, &path)
        .json(&json!({"name": "new", "tags": ["b", "c"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let replaced: Value = response.json().await.unwrap();
    assert_eq!(replaced["name"], "new");
    assert!(
        replaced.get("description").is_none(),
        "PUT without description removes it"
    );
    assert_eq!(replaced["tags"], json!(["b", "c"]));
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["created_at"], item["created_at"]);
    assert!(replaced["updated_at"].as_str() > item["updated_at"].as_str());
    let (_, read) = app.get_json(&path).await;
    assert_eq!(read, replaced);

    let invalid = app
        .write(Method::PUT, &path)
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    expect_problem(invalid, 422).await;
    let (_, still) = app.get_json(&path).await;
    assert_eq!(still, replaced, "a rejected write changes nothing");
}

async fn patch_changes_only_the_given_fields(db: Db) {
    let app = spawn_app(db).await;
    let item = app
        .create(json!({"name": "n", "description": "d", "tags": ["t"]}))
        .await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    let patch = |body: Value| app.write(Method::PATCH, &path).json(&body).send();

    let renamed: Value = patch(json!({"name": "renamed"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&renamed["name"], &renamed["description"], &renamed["tags"]),
        (&json!("renamed"), &json!("d"), &json!(["t"]))
    );
    let cleared: Value = patch(json!({"description": null}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cleared.get("description").is_none());
    assert_eq!(cleared["name"], "renamed");
    let retagged: Value = patch(json!({"tags": []}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retagged["tags"], json!([]));
    assert_eq!(retagged["version"], 4);

    expect_problem(patch(json!({"name": ""})).await.unwrap(), 422).await;
    expect_problem(patch(json!({"colour": "red"})).await.unwrap(), 400).await;
    let (_, read) = app.get_json(&path).await;
    assert_eq!(read, retagged);
}

async fn if_match_guards_updates_and_deletes(db: Db) {
    let app = spawn_app(db).await;
    let item = app.create(json!({"name": "v1"})).await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());

    for stale in ["\"7\"", "W/\"1\"", "garbage"] {
        let put = app
            .write(Method::PUT, &path)
            .header("if-match", stale)
            .json(&json!({"name": "lost update"}));
        expect_problem(put.send().await.unwrap(), 412).await;
        let patch = app
            .write(Method::PATCH, &path)
            .header("if-match", stale)
            .json(&json!({"name": "lost update"}));
        expect_problem(patch.send().await.unwrap(), 412).await;
        let delete = app.write(Method::DELETE, &path).header("if-match", stale);
        expect_problem(delete.send().await.unwrap(), 412).await;
    }
    let (_, unchanged) = app.get_json(&path).await;
    assert_eq!(unchanged, item, "412s change nothing");

    let ok = app
        .write(Method::PATCH, &path)
        .header("if-match", "\"0\", \"1\"")
        .json(&json!({"name": "v2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers()["etag"], "\"2\"");

    // The ETag from before the change is now stale.
    let stale_put = app
        .write(Method::PUT, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"name": "v3"}));
    expect_problem(stale_put.send().await.unwrap(), 412).await;

    let any = app
        .write(Method::PUT, &path)
        .header("if-match", "*")
        .json(&json!({"name": "v3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(any.status().as_u16(), 200);

    let delete = app
        .write(Method::DELETE, &path)
        .header("if-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 204);
}

async fn delete_removes_the_item(db: Db) {
    let app = spawn_app(db).await;
    let keep = app.create(json!({"name": "keep"})).await;
    let gone = app.create(json!({"name": "gone"})).await;
    let path = format!("/v1/items/{}", gone["id"].as_str().unwrap());
    let response = app.write(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    expect_problem(app.get(&path).await, 404).await;
    expect_problem(app.write(Method::DELETE, &path).send().await.unwrap(), 404).await;
    let (_, page) = app.get_json("/v1/items").await;
    assert_eq!(page["items"], json!([keep]));
}

async fn unknown_ids_are_404_problems(db: Db) {
    let app = spawn_app(db).await;
    for id in ["01a2035b-c862-7293-91ec-b28b86b76ab2", "not-a-uuid"] {
        let path = format!("/v1/items/{id}");
        expect_problem(app.get(&path).await, 404).await;
        let body = json!({"name": "x"});
        for method in [Method::PUT, Method::PATCH] {
            let response = app.write(method, &path).json(&body).send().await.unwrap();
            expect_problem(response, 404).await;
        }
        expect_problem(app.write(Method::DELETE, &path).send().await.unwrap(), 404).await;
    }
}
