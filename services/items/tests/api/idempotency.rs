//! `POST /v1/items` with `Idempotency-Key`: a retry answers the first answer without a second
//! item, a reused key with another body is 422, bad keys are 400, keys expire, concurrent
//! requests with one key make one item, and a process killed mid-burst of keyed creates leaves
//! no duplicates for the retries after its restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::binary::{KEY as BINARY_KEY, items_command};
use crate::filters::{list_all, list_all_at};
use crate::helpers::{
    API_KEY, Db, LoggedProcess, Options, TestApp, TestDb, closed_port, expect_problem, spawn_app,
    spawn_app_with,
};
use crate::on_both_databases;

on_both_databases!(
    the_same_key_and_body_replay_the_first_answer,
    quoted_and_bare_keys_are_one_key,
    a_reused_key_with_another_body_is_422_and_creates_nothing,
    bad_keys_are_400_and_store_nothing,
    without_a_key_identical_posts_create_two_items,
    an_expired_key_creates_a_new_item,
    concurrent_requests_with_one_key_create_one_item,
    a_key_is_the_deployments_across_an_api_key_rotation,
);

/// One answer to a create, with the headers that matter here.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    location: Option<String>,
    etag: Option<String>,
    replayed: Option<String>,
    body: Value,
}

impl Answer {
    fn id(&self) -> &str {
        self.body["id"].as_str().expect("the answer has an id")
    }
}

/// `POST {base}/v1/items` with `api_key` and, if given, this `Idempotency-Key` (sent as raw
/// bytes, so tests can send what a client library would refuse).
async fn post_at(
    client: &reqwest::Client,
    base: &str,
    api_key: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Result<Answer> {
    let mut request = client
        .post(format!("{base}/v1/items"))
        .header("x-api-key", api_key)
        .json(body);
    if let Some(key) = key {
        let value = HeaderValue::from_bytes(key.as_bytes()).expect("a header value");
        request = request.header("idempotency-key", value);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, location, etag, replayed) = (
        response.status().as_u16(),
        header("location"),
        header("etag"),
        header("idempotent-replayed"),
    );
    let body = response.json().await?;
    Ok(Answer {
        status,
        location,
        etag,
        replayed,
        body,
    })
}

async fn post(app: &TestApp, key: Option<&str>, body: &Value) -> Answer {
    post_at(&app.client, &app.address, API_KEY, key, body)
        .await
        .expect("items answers")
}

/// Asserts a fresh create: 201, the item's Location and ETag, no replay header.
fn assert_created(answer: &Answer) {
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(
        answer.location.as_deref(),
        Some(format!("/v1/items/{}", answer.id()).as_str())
    );
    assert_eq!(answer.etag.as_deref(), Some("\"1\""));
    assert_eq!(answer.replayed, None, "a fresh create is not a replay");
}

/// Asserts `answer` is `first` again, marked as a replay.
fn assert_replay_of(answer: &Answer, first: &Answer) {
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.body, first.body, "the first answer's body");
    assert_eq!(answer.location, first.location);
    assert_eq!(answer.etag, first.etag);
    assert_eq!(answer.replayed.as_deref(), Some("true"), "{answer:?}");
}

async fn all_items(app: &TestApp) -> Vec<Value> {
    list_all(app, &[], 100).await
}

async fn the_same_key_and_body_replay_the_first_answer(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "Desk lamp", "description": "warm light", "tags": ["home", "desk"]});
    let first = post(&app, Some("lamp-0001"), &body).await;
    assert_created(&first);
    assert_eq!(first.body["name"], "Desk lamp");

    let second = post(&app, Some("lamp-0001"), &body).await;
    assert_replay_of(&second, &first);
    // The same request written differently (spaces, tag case and order of JSON members) is the
    // same request.
    let respelled =
        json!({"tags": ["HOME", "desk"], "name": "  Desk lamp ", "description": "warm light"});
    let third = post(&app, Some("lamp-0001"), &respelled).await;
    assert_replay_of(&third, &first);

    assert_eq!(
        all_items(&app).await,
        std::slice::from_ref(&first.body),
        "one item"
    );
    let (status, read) = app.get_json(first.location.as_deref().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(read, first.body);

    // Another key is another request.
    let other = post(&app, Some("lamp-0002"), &body).await;
    assert_created(&other);
    assert_ne!(other.id(), first.id());
    assert_eq!(all_items(&app).await, [first.body, other.body]);
}

async fn quoted_and_bare_keys_are_one_key(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "quoted first"});
    let quoted = post(&app, Some("\"abc\""), &body).await;
    assert_created(&quoted);
    assert_replay_of(&post(&app, Some("abc"), &body).await, &quoted);
    assert_replay_of(&post(&app, Some("\"abc\""), &body).await, &quoted);

    let body = json!({"name": "bare first"});
    let bare = post(&app, Some("8e03978e-40d5-43e8-bc93-6894a57f9324"), &body).await;
    assert_created(&bare);
    let again = post(
        &app,
        Some("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""),
        &body,
    )
    .await;
    assert_replay_of(&again, &bare);
    assert_eq!(all_items(&app).await, [quoted.body, bare.body]);
}

async fn a_reused_key_with_another_body_is_422_and_creates_nothing(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "original", "description": "d", "tags": ["a"]});
    let first = post(&app, Some("reused"), &body).await;
    assert_created(&first);
    for other in [
        json!({"name": "different", "description": "d", "tags": ["a"]}),
        json!({"name": "original", "description": "other", "tags": ["a"]}),
        json!({"name": "original", "tags": ["a"]}),
        json!({"name": "original", "description": "d", "tags": ["a", "b"]}),
        json!({"name": "original", "description": "d"}),
    ] {
        let response = app
            .client
            .post(app.url("/v1/items"))
            .header("x-api-key", API_KEY)
            .header("idempotency-key", "\"reused\"")
            .json(&other)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("idempotent-replayed").is_none());
        let problem = expect_problem(response, 422).await;
        let kind = problem["type"].as_str().unwrap();
        assert!(
            kind.ends_with("idempotency-key-reused"),
            "{kind} for {other}"
        );
    }
    assert_eq!(
        all_items(&app).await,
        std::slice::from_ref(&first.body),
        "no new item"
    );
    // The key still answers its own request.
    assert_replay_of(&post(&app, Some("reused"), &body).await, &first);
    assert_eq!(all_items(&app).await, [first.body]);
}

async fn bad_keys_are_400_and_store_nothing(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "never stored"});
    let too_long = "k".repeat(256);
    let too_long_quoted = format!("\"{}\"", "k".repeat(256));
    let mut not_refused: Vec<(String, u16)> = Vec::new();
    for key in [
        "",
        "\"\"",
        too_long.as_str(),
        too_long_quoted.as_str(),
        "a b",
        "\"a b\"",
        "a\tb",
        "ключ",
        "café",
        "a\"b",
        "a\\b",
        "\"unclosed",
    ] {
        let mut request = app
            .client
            .post(app.url("/v1/items"))
            .header("x-api-key", API_KEY)
            .json(&body);
        request = request.header(
            "idempotency-key",
            HeaderValue::from_bytes(key.as_bytes()).unwrap(),
        );
        let response = request.send().await.unwrap();
        if response.status().as_u16() != 400 {
            not_refused.push((key.to_owned(), response.status().as_u16()));
            continue;
        }
        let problem = expect_problem(response, 400).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "the problem names the header for {key:?}: {problem}"
        );
    }
    assert_eq!(
        not_refused,
        Vec::<(String, u16)>::new(),
        "these keys were not refused with 400 (key, status)"
    );
    assert_eq!(all_items(&app).await, Vec::<Value>::new(), "nothing stored");

    // The longest key accepted, quoted or bare.
    let longest = "k".repeat(255);
    let first = post(&app, Some(&longest), &body).await;
    assert_created(&first);
    assert_replay_of(
        &post(&app, Some(&format!("\"{longest}\"")), &body).await,
        &first,
    );
    assert_eq!(all_items(&app).await, [first.body]);
}

async fn without_a_key_identical_posts_create_two_items(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "twice", "tags": ["same"]});
    let first = post(&app, None, &body).await;
    let second = post(&app, None, &body).await;
    assert_created(&first);
    assert_created(&second);
    assert_ne!(first.id(), second.id());
    assert_eq!(all_items(&app).await, [first.body, second.body]);
}

async fn an_expired_key_creates_a_new_item(db: Db) {
    let app = spawn_app_with(Options {
        db,
        env: vec![("IDEMPOTENCY_KEY_TTL_SECONDS", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let body = json!({"name": "short-lived key"});
    let sent = Instant::now();
    let first = post(&app, Some("expiring"), &body).await;
    let mut last_created = Instant::now();
    assert_created(&first);
    let mut ids = vec![first.id().to_owned()];

    // The key was stored after `sent`: a retry answered within 0.9 s of it must replay. (On a
    // machine so slow that it is not, the retry may only have found the key expired.)
    let retry = post(&app, Some("expiring"), &body).await;
    assert_eq!(retry.status, 201, "{retry:?}");
    if sent.elapsed() < Duration::from_millis(900) || retry.replayed.is_some() {
        assert_replay_of(&retry, &first);
    } else {
        last_created = Instant::now();
        ids.push(retry.id().to_owned());
    }

    // Every key was stored before its item's answer came: 1.1 s after that answer, it has
    // expired, and the same key and body make a new item.
    tokio::time::sleep_until((last_created + Duration::from_millis(1100)).into()).await;
    let after = post(&app, Some("expiring"), &body).await;
    assert_created(&after);
    assert!(
        !ids.contains(&after.id().to_owned()),
        "an expired key makes a new item"
    );
    ids.push(after.id().to_owned());

    // The key now belongs to the new item.
    let resent = Instant::now();
    let again = post(&app, Some("expiring"), &body).await;
    assert_eq!(again.status, 201, "{again:?}");
    if resent.elapsed() < Duration::from_millis(900) || again.replayed.is_some() {
        assert_replay_of(&again, &after);
    } else {
        ids.push(again.id().to_owned());
    }
    let listed: Vec<String> = all_items(&app)
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids);
}

async fn concurrent_requests_with_one_key_create_one_item(db: Db) {
    const REQUESTS: usize = 16;
    let app = spawn_app_with(Options {
        db,
        env: vec![
            ("WRITE_RATE_PER_SECOND", "100000".to_owned()),
            ("WRITE_BURST", "100000".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let body = json!({"name": "raced", "tags": ["race"]});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let (client, base, body) = (app.client.clone(), app.address.clone(), body.clone());
        tasks.spawn(async move {
            post_at(&client, &base, API_KEY, Some("one-key"), &body)
                .await
                .expect("items answers")
        });
    }
    let answers: Vec<Answer> = tasks.join_all().await;
    assert_eq!(answers.len(), REQUESTS);
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(answer.id(), answers[0].id(), "one id for every answer");
        assert_eq!(answer.body, answers[0].body);
    }
    let fresh: Vec<&Answer> = answers.iter().filter(|a| a.replayed.is_none()).collect();
    assert_eq!(fresh.len(), 1, "exactly one request created the item");
    for answer in &answers {
        if answer.replayed.is_some() {
            assert_replay_of(answer, fresh[0]);
        }
    }
    assert_eq!(all_items(&app).await, [answers[0].body.clone()], "one item");
}

/// An `Idempotency-Key` belongs to the deployment, not to the API key that sent it: while a
/// client rotates from the current key to the next, its retry with the next key replays the
/// first answer rather than making a second item (and another body under that key is 422).
async fn a_key_is_the_deployments_across_an_api_key_rotation(db: Db) {
    const NEXT_API_KEY: &str = "idempotency-next-api-key-0123456789";
    let app = spawn_app_with(Options {
        db,
        env: vec![("DUMMY_API_KEY_NEXT", NEXT_API_KEY.to_owned())],
        ..Options::default()
    })
    .await;
    let (_, spec) = app.get_json("/openapi.json").await;
    let create = &spec["paths"]["/v1/items"]["post"];
    let explained = format!("{} {}", create["summary"], create["description"]);
    assert!(
        explained.contains("scoped to the deployment"),
        "the create operation says what a key is scoped to: {explained}"
    );

    let body = json!({"name": "Rotated lamp", "tags": ["rotation"]});
    let key = Some("rotation-retry-1");
    let first = post_at(&app.client, &app.address, API_KEY, key, &body)
        .await
        .unwrap();
    assert_created(&first);
    let retried = post_at(&app.client, &app.address, NEXT_API_KEY, key, &body)
        .await
        .unwrap();
    assert_replay_of(&retried, &first);
    let other = post_at(
        &app.client,
        &app.address,
        NEXT_API_KEY,
        key,
        &json!({"name": "Another lamp"}),
    )
    .await
    .unwrap();
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(
        all_items(&app).await,
        std::slice::from_ref(&first.body),
        "one item"
    );
}

#[tokio::test]
async fn openapi_documents_the_idempotency_headers() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let post = &spec["paths"]["/v1/items"]["post"];
    let parameters = post["parameters"].as_array().expect("POST has parameters");
    let key = parameters
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap_or_else(|| panic!("no Idempotency-Key parameter: {parameters:?}"));
    assert_eq!(key["in"], "header");
    assert_ne!(key["required"], true, "the key is optional");
    assert!(
        key["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{key}"
    );
    let headers = post["responses"]["201"]["headers"]
        .as_object()
        .expect("the 201 answer documents headers");
    let replayed = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Idempotent-Replayed"))
        .unwrap_or_else(|| panic!("no Idempotent-Replayed header: {headers:?}"))
        .1;
    assert_ne!(replayed["required"], true, "absent on a fresh create");
    assert!(
        replayed["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{replayed}"
    );
    // poem-openapi puts a doc comment's first paragraph in the summary, the rest in the
    // description.
    let explained = format!("{} {}", post["summary"], post["description"]);
    assert!(
        explained.contains("Idempotency-Key") && explained.contains("422"),
        "the operation explains the key: {explained}"
    );
}

/// The items binary on `db`, with its write rate limit lifted and timezones unreachable (no
/// create needs it).
fn start_items(db: &TestDb) -> LoggedProcess {
    LoggedProcess::start(
        items_command()
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", format!("http://{}", closed_port()))
            .env("WRITE_RATE_PER_SECOND", "100000")
            .env("WRITE_BURST", "100000"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keyed_creates_killed_mid_burst_are_retried_without_duplicates() {
    keyed_creates_killed_mid_burst_are_retried_without_duplicates(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keyed_creates_killed_mid_burst_are_retried_without_duplicates() {
    keyed_creates_killed_mid_burst_are_retried_without_duplicates(Db::Postgres).await;
}

/// Sends 200 keyed creates from 16 tasks, SIGKILLs items once 50 have been answered (the
/// tasks send nothing new from then until the kill, so some are answered and some are not,
/// whatever the timing; those in flight at the kill may or may not have committed), restarts it
/// on the same database and retries every key: every key ends with exactly one item.
async fn keyed_creates_killed_mid_burst_are_retried_without_duplicates(db: Db) {
    const KEYS: usize = 200;
    const TASKS: usize = 16;
    const KILL_AFTER: usize = 50;
    let db = TestDb::create(db).await;
    let body = |i: usize| json!({"name": format!("burst {i}"), "tags": [format!("t{}", i % 7)]});
    let key = |i: usize| format!("k{i}");

    let mut first = start_items(&db);
    let base = first.address.clone();
    let client = reqwest::Client::new();
    let answered = Arc::new(AtomicUsize::new(0));
    let threshold = Arc::new(tokio::sync::Notify::new());
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (client, base) = (client.clone(), base.clone());
        let (answered, threshold, mut killed) =
            (answered.clone(), threshold.clone(), killed_rx.clone());
        tasks.spawn(async move {
            let mut created = Vec::new();
            for i in (task..KEYS).step_by(TASKS) {
                if answered.load(Ordering::SeqCst) >= KILL_AFTER {
                    killed.wait_for(|k| *k).await.unwrap();
                    break;
                }
                match post_at(&client, &base, BINARY_KEY, Some(&key(i)), &body(i)).await {
                    Ok(answer) => {
                        assert_created(&answer);
                        assert_eq!(answer.body["name"], format!("burst {i}"));
                        created.push((i, answer));
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            threshold.notify_one();
                        }
                    }
                    // In flight when the process died.
                    Err(_) => break,
                }
            }
            created
        });
    }
    threshold.notified().await;
    first.child.kill().expect("SIGKILL items");
    first.child.wait().unwrap();
    killed_tx.send(true).unwrap();
    let before_kill: BTreeMap<usize, Answer> =
        tasks.join_all().await.into_iter().flatten().collect();
    assert!(
        (KILL_AFTER..KILL_AFTER + TASKS).contains(&before_kill.len()),
        "killed after {} answers",
        before_kill.len()
    );
    drop(first);

    // The restart, and every key again (concurrently, a few at a time).
    let second = start_items(&db);
    let mut retries = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (client, base) = (client.clone(), second.address.clone());
        retries.spawn(async move {
            let mut answers = Vec::new();
            for i in (task..KEYS).step_by(8) {
                let answer = post_at(&client, &base, BINARY_KEY, Some(&key(i)), &body(i))
                    .await
                    .expect("the restarted items answers");
                answers.push((i, answer));
            }
            answers
        });
    }
    let after: BTreeMap<usize, Answer> = retries.join_all().await.into_iter().flatten().collect();
    assert_eq!(after.len(), KEYS);
    for (i, answer) in &after {
        assert_eq!(answer.status, 201, "retry of k{i}: {answer:?}");
        assert_eq!(answer.body["name"], format!("burst {i}"), "k{i}");
        if let Some(first) = before_kill.get(i) {
            assert_replay_of(answer, first);
        }
    }

    let in_flight_committed = after
        .iter()
        .filter(|(i, a)| !before_kill.contains_key(i) && a.replayed.is_some())
        .count();
    eprintln!(
        "{} keys answered before the kill; {in_flight_committed} more had committed unanswered",
        before_kill.len()
    );
    let listed = list_all_at(&client, &second.address, &[], 100).await;
    assert_eq!(listed.len(), KEYS, "exactly one item per key");
    let listed_ids: BTreeSet<&str> = listed.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids.len(), KEYS, "no id twice");
    let answered_ids: BTreeSet<&str> = after.values().map(Answer::id).collect();
    assert_eq!(
        listed_ids, answered_ids,
        "the items are the ones the retries name"
    );
    let names: BTreeSet<&str> = listed.iter().map(|i| i["name"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..KEYS).map(|i| format!("burst {i}")).collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // Retrying once more replays every key's item.
    for i in [0, KEYS / 2, KEYS - 1] {
        let answer = post_at(
            &client,
            &second.address,
            BINARY_KEY,
            Some(&key(i)),
            &body(i),
        )
        .await
        .unwrap();
        assert_replay_of(&answer, &after[&i]);
    }
}
