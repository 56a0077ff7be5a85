use crate::helpers::{expect_problem, spawn_app};

#[tokio::test]
async fn lists_zones_sorted_and_paginated() {
    let app = spawn_app().await;
    let (status, first) = app.get_json("/v1/timezones?limit=50").await;
    assert_eq!(status, 200);
    let total = first["total"].as_u64().unwrap();
    assert!(
        total > 400,
        "chrono-tz knows hundreds of zones, got {total}"
    );
    assert_eq!(first["zones"].as_array().unwrap().len(), 50);
    assert_eq!(first["next_offset"], 50);

    let (_, second) = app.get_json("/v1/timezones?limit=50&offset=50").await;
    let last_of_first = first["zones"][49].as_str().unwrap();
    let first_of_second = second["zones"][0].as_str().unwrap();
    assert!(last_of_first < first_of_second, "pages continue in order");

    let (_, tail) = app
        .get_json(&format!("/v1/timezones?limit=50&offset={}", total - 1))
        .await;
    assert_eq!(tail["zones"].as_array().unwrap().len(), 1);
    assert!(
        tail.get("next_offset").is_none(),
        "no next page after the last"
    );
}

#[tokio::test]
async fn filters_by_region_and_prefix() {
    let app = spawn_app().await;
    let (_, europe) = app.get_json("/v1/timezones?region=Europe&limit=1000").await;
    let zones = europe["zones"].as_array().unwrap();
    assert!(zones.iter().any(|z| z == "Europe/Paris"));
    assert!(
        zones
            .iter()
            .all(|z| z.as_str().unwrap().starts_with("Europe/"))
    );

    let (_, ny) = app.get_json("/v1/timezones?prefix=america/new").await;
    assert_eq!(ny["zones"], serde_json::json!(["America/New_York"]));
    assert_eq!(ny["total"], 1);
}

#[tokio::test]
async fn list_rejects_out_of_range_limits() {
    let app = spawn_app().await;
    for query in ["limit=0", "limit=1001", "limit=ten", "offset=-1"] {
        let response = app
            .client
            .get(format!("{}/v1/timezones?{query}", app.address))
            .send()
            .await
            .unwrap();
        expect_problem(response, 400).await;
    }
}

#[tokio::test]
async fn zone_detail_takes_the_name_with_its_slash_in_the_path() {
    let app = spawn_app().await;
    let (status, summer) = app
        .get_json("/v1/timezones/America/New_York?at=2026-07-01T12:00:00Z")
        .await;
    assert_eq!(status, 200);
    assert_eq!(summer["zone"], "America/New_York");
    assert_eq!(summer["utc_offset_seconds"], -4 * 3600);
    assert_eq!(summer["utc_offset"], "-04:00");
    assert_eq!(summer["abbreviation"], "EDT");
    assert_eq!(summer["dst"], true);
    assert_eq!(summer["local_time"], "2026-07-01T08:00:00-04:00");

    let (_, winter) = app
        .get_json("/v1/timezones/America%2FNew_York?at=2026-01-15T12:00:00%2B00:00")
        .await;
    assert_eq!(
        (
            &winter["abbreviation"],
            &winter["dst"],
            &winter["utc_offset"]
        ),
        (&"EST".into(), &false.into(), &"-05:00".into())
    );

    let (_, three_parts) = app
        .get_json("/v1/timezones/America/Argentina/Buenos_Aires")
        .await;
    assert_eq!(three_parts["zone"], "America/Argentina/Buenos_Aires");
}

#[tokio::test]
async fn zone_detail_defaults_to_now() {
    let app = spawn_app().await;
    let before = chrono::Utc::now();
    let (_, utc) = app.get_json("/v1/timezones/UTC").await;
    let instant: chrono::DateTime<chrono::Utc> = utc["instant"].as_str().unwrap().parse().unwrap();
    assert!(instant >= before && instant <= chrono::Utc::now());
    assert_eq!(utc["utc_offset_seconds"], 0);
}

#[tokio::test]
async fn zone_names_match_ignoring_case_and_answer_canonically() {
    let app = spawn_app().await;
    let (status, paris) = app.get_json("/v1/timezones/europe/paris").await;
    assert_eq!(status, 200);
    assert_eq!(paris["zone"], "Europe/Paris");
}

#[tokio::test]
async fn unknown_zone_is_a_404_problem_naming_it() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v1/timezones/Mars/Olympus_Mons", app.address))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 404).await;
    assert_eq!(problem["type"], "urn:meridian:problem:unknown-zone");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Mars/Olympus_Mons")
    );
}

#[tokio::test]
async fn malformed_instant_is_a_400_problem() {
    let app = spawn_app().await;
    for at in ["yesterday", "2026-13-01T00:00:00Z", "2026-07-01T12:00:00"] {
        let response = app
            .client
            .get(format!("{}/v1/timezones/UTC?at={at}", app.address))
            .send()
            .await
            .unwrap();
        expect_problem(response, 400).await;
    }
}
