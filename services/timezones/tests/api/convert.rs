use serde_json::json;

use crate::helpers::{expect_problem, spawn_app};

async fn convert(query: &str) -> reqwest::Response {
    let app = spawn_app().await;
    app.client
        .get(format!("{}/v1/convert?{query}", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn converts_several_instants_in_order() {
    let app = spawn_app().await;
    let (status, body) = app
        .get_json("/v1/convert?to=Europe/London&at=2026-01-15T12:00:00Z&at=2026-07-15T12:00:00Z")
        .await;
    assert_eq!(status, 200);
    let conversions = body["conversions"].as_array().unwrap();
    assert_eq!(conversions.len(), 2);
    assert_eq!(
        conversions[0]["to"]["local_time"],
        "2026-01-15T12:00:00+00:00"
    );
    assert_eq!(conversions[0]["to"]["abbreviation"], "GMT");
    assert_eq!(
        conversions[1]["to"]["local_time"],
        "2026-07-15T13:00:00+01:00"
    );
    assert_eq!(conversions[1]["to"]["abbreviation"], "BST");
    assert!(conversions[0].get("from").is_none());
}

#[tokio::test]
async fn converts_a_local_time_between_zones() {
    let app = spawn_app().await;
    let (status, body) = app
        .get_json("/v1/convert?from=America/New_York&to=Asia/Tokyo&local=2026-07-01T09:00:00")
        .await;
    assert_eq!(status, 200);
    let c = &body["conversions"][0];
    assert_eq!(c["from"]["local_time"], "2026-07-01T09:00:00-04:00");
    assert_eq!(c["to"]["local_time"], "2026-07-01T22:00:00+09:00");
    assert_eq!(c["from"]["instant"], c["to"]["instant"]);
}

#[tokio::test]
async fn nonexistent_local_time_in_the_spring_gap_is_a_422() {
    // 2026-03-08 02:30 never happens in New York: clocks jump from 02:00 EST to 03:00 EDT.
    let response =
        convert("from=America/New_York&to=UTC&local=2026-03-08T02:30:00&disambiguation=earlier")
            .await;
    let problem = expect_problem(response, 422).await;
    assert_eq!(
        problem["type"],
        "urn:meridian:problem:nonexistent-local-time"
    );
    assert_eq!(
        problem["extensions"],
        json!({"offset_before": "-05:00", "offset_after": "-04:00"})
    );
}

#[tokio::test]
async fn ambiguous_local_time_in_the_autumn_overlap_is_a_422_with_both_candidates() {
    // 2026-11-01 01:30 happens twice in New York: first in EDT, then again in EST.
    let response = convert("from=America/New_York&to=UTC&local=2026-11-01T01:30:00").await;
    let problem = expect_problem(response, 422).await;
    assert_eq!(problem["type"], "urn:meridian:problem:ambiguous-local-time");
    assert_eq!(
        problem["extensions"]["candidates"],
        json!(["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"])
    );
}

#[tokio::test]
async fn ambiguous_local_time_resolves_when_told_which() {
    let app = spawn_app().await;
    let base = "/v1/convert?from=America/New_York&to=UTC&local=2026-11-01T01:30:00";
    let (_, earlier) = app
        .get_json(&format!("{base}&disambiguation=earlier"))
        .await;
    assert_eq!(
        earlier["conversions"][0]["to"]["local_time"],
        "2026-11-01T05:30:00+00:00"
    );
    assert_eq!(earlier["conversions"][0]["from"]["abbreviation"], "EDT");
    let (_, later) = app.get_json(&format!("{base}&disambiguation=later")).await;
    assert_eq!(
        later["conversions"][0]["to"]["local_time"],
        "2026-11-01T06:30:00+00:00"
    );
    assert_eq!(later["conversions"][0]["from"]["abbreviation"], "EST");
}

#[tokio::test]
async fn malformed_conversions_are_400_problems() {
    for query in [
        "to=UTC",                                                            // neither at nor local
        "to=UTC&local=2026-07-01T09:00:00",                                  // local without from
        "to=UTC&from=UTC&at=2026-07-01T09:00:00Z&local=2026-07-01T09:00:00", // both
        "to=UTC&at=not-a-time",
        "to=UTC&from=UTC&local=2026-07-01T09:00:00&disambiguation=sometimes",
        "at=2026-07-01T09:00:00Z", // no target
    ] {
        expect_problem(convert(query).await, 400).await;
    }
    let too_many = (0..251)
        .map(|_| "at=2026-07-01T09:00:00Z")
        .collect::<Vec<_>>()
        .join("&");
    expect_problem(convert(&format!("to=UTC&{too_many}")).await, 400).await;
}

#[tokio::test]
async fn unknown_zones_in_a_conversion_are_404_problems() {
    expect_problem(
        convert("to=Nowhere/City&at=2026-07-01T09:00:00Z").await,
        404,
    )
    .await;
    expect_problem(
        convert("to=UTC&from=Nowhere/City&local=2026-07-01T09:00:00").await,
        404,
    )
    .await;
}
