//! A database that cannot take a request now answers 503 with `Retry-After` after
//! `DATABASE_ACQUIRE_TIMEOUT_MS`, well before the request's own deadline (504), and the
//! service recovers as soon as the database does.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Db, Options, TestApp, expect_problem, spawn_app_with};

fn settings(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The app on PostgreSQL with these settings, the path of an item it made, and a connection
/// holding (in an open transaction) a lock on `items` that every query of the app waits for.
async fn postgres_item_behind_a_lock(
    pairs: &[(&'static str, &str)],
) -> (TestApp, String, sqlx::PgConnection) {
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        env: settings(pairs),
        ..Options::default()
    })
    .await;
    let item = app.create(json!({"name": "locked away"})).await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    let mut locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    (app, path, locker)
}

/// How many of the app's statements matching `query_like` wait on a lock now.
async fn waiting_on_a_lock(observer: &mut sqlx::PgConnection, query_like: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(query_like)
    .fetch_one(observer)
    .await
    .unwrap()
}

async fn wait_until_one_waits_on_a_lock(observer: &mut sqlx::PgConnection, query_like: &str) {
    let started = Instant::now();
    while waiting_on_a_lock(observer, query_like).await != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{query_like} never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// PostgreSQL with a pool of one: while that connection waits on a lock another client holds,
/// the next request cannot get a connection and is answered 503 after the acquire timeout.
#[tokio::test]
async fn a_saturated_postgres_pool_answers_503_before_the_deadline() {
    let (app, path, mut locker) = postgres_item_behind_a_lock(&[
        ("DATABASE_MAX_CONNECTIONS", "1"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "300"),
        ("REQUEST_TIMEOUT_MS", "3000"),
    ])
    .await;
    // The first read takes the pool's only connection and waits on the lock...
    let blocked = tokio::spawn(app.client.get(app.url(&path)).send());
    let mut observer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    wait_until_one_waits_on_a_lock(&mut observer, "%FROM items WHERE id%").await;
    // ...so the second waits for a connection, and is told to come back.
    let started = Instant::now();
    let response = app.get(&path).await;
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    expect_problem(response, 503).await;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2500),
        "answered after the acquire timeout, before the deadline: {waited:?}"
    );

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let first = blocked.await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        200,
        "the blocked read completes once the lock is gone"
    );
    assert_eq!(app.get(&path).await.status(), 200);
}

/// SQLite: another process holding the write lock makes writes 503 after the acquire timeout
/// (reads go on: WAL readers do not wait for writers); the next write after it lets go lands.
#[tokio::test]
async fn a_locked_sqlite_file_answers_writes_503_and_recovers() {
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        env: settings(&[("DATABASE_ACQUIRE_TIMEOUT_MS", "300")]),
        ..Options::default()
    })
    .await;
    let item = app.create(json!({"name": "before the lock"})).await;
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let started = Instant::now();
    let response = app
        .write(Method::POST, "/v1/items")
        .json(&json!({"name": "while locked"}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.headers()["retry-after"], "1");
    expect_problem(response, 503).await;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(4000),
        "answered after the busy timeout, before the deadline: {waited:?}"
    );
    let read = app
        .get(&format!("/v1/items/{}", item["id"].as_str().unwrap()))
        .await;
    assert_eq!(read.status(), 200, "reads do not wait for the lock");

    other.execute_batch("ROLLBACK").unwrap();
    app.create(json!({"name": "after the lock"})).await;
    let (_, page) = app.get_json("/v1/items").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["before the lock", "after the lock"],
        "the refused write left nothing"
    );
}

/// A query the request gave up on must not go on holding a pool connection: PostgreSQL
/// cancels it itself (`statement_timeout`, at most the request's deadline). Here the read
/// waits on a lock the test holds and never lets go of until the end.
#[tokio::test]
async fn postgres_cancels_a_query_whose_request_ran_out_of_time() {
    let (app, path, mut locker) = postgres_item_behind_a_lock(&[
        ("REQUEST_TIMEOUT_MS", "400"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "200"),
    ])
    .await;

    let response = app.get(&path).await;
    let status = response.status().as_u16();
    assert!(matches!(status, 503 | 504), "answered {status}");
    expect_problem(response, status).await;

    // The lock is still held, so a read still waiting now would wait for ever; PostgreSQL
    // cancels it within moments of the deadline (the bound only keeps a failure short).
    let mut observer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let answered = Instant::now();
    let still_waiting = loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND query LIKE '%FROM items WHERE id%' \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if waiting == 0 || answered.elapsed() > Duration::from_secs(5) {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        still_waiting, 0,
        "the abandoned read still runs in PostgreSQL 5 s after its request's deadline"
    );

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert_eq!(
        app.get(&path).await.status(),
        200,
        "the connection is usable"
    );
}

/// Reads by id keep their connection out of the pool for the next read; one the server has
/// closed must fail its read (503) and be dropped, never kept: here PostgreSQL ends every
/// connection of the app, and reads are 200 again after at most one 503 per connection.
#[tokio::test]
async fn reads_recover_when_postgres_ends_the_connections_they_keep() {
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        env: settings(&[("DATABASE_MAX_CONNECTIONS", "4")]),
        ..Options::default()
    })
    .await;
    let item = app.create(json!({"name": "kept"})).await;
    let path = format!("/v1/items/{}", item["id"].as_str().unwrap());
    let reads: Vec<_> = (0..4)
        .map(|_| tokio::spawn(app.client.get(app.url(&path)).send()))
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().unwrap().status(), 200);
    }

    let mut observer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut observer)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the app had connections to end");

    let mut failed = 0;
    loop {
        let response = app.get(&path).await;
        if response.status() == 200 {
            break;
        }
        expect_problem(response, 503).await;
        failed += 1;
        assert!(
            failed <= 4,
            "still failing after one 503 per pool connection"
        );
    }
    for _ in 0..8 {
        assert_eq!(app.get(&path).await.status(), 200, "after {failed} 503s");
    }
}

/// A read's connection is kept for the next read only while the pool has idle connections of
/// its own: when every connection is out, a request queued in the pool must get it. Here a
/// pool of 2 is all out (a read waiting on a lock of `items`, a keyed create on a lock of
/// `idempotency_keys`) when a second read queues; the first read's lock goes, and the second
/// read must get its connection then, not at the acquire timeout.
#[tokio::test]
async fn a_read_hands_its_connection_to_a_request_queued_in_a_drained_pool() {
    let (app, path, mut items_locker) = postgres_item_behind_a_lock(&[
        ("DATABASE_MAX_CONNECTIONS", "2"),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "3000"),
        ("REQUEST_TIMEOUT_MS", "10000"),
    ])
    .await;
    let mut keys_locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN")
        .execute(&mut keys_locker)
        .await
        .unwrap();
    sqlx::query("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut keys_locker)
        .await
        .unwrap();
    let mut observer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();

    let first_read = tokio::spawn(app.client.get(app.url(&path)).send());
    wait_until_one_waits_on_a_lock(&mut observer, "%FROM items WHERE id%").await;
    let keyed_create = tokio::spawn(
        app.write(Method::POST, "/v1/items")
            .header("idempotency-key", "held-connections")
            .json(&json!({"name": "waits on the keys"}))
            .send(),
    );
    wait_until_one_waits_on_a_lock(&mut observer, "%INSERT INTO idempotency_keys%").await;
    // Both connections are out: this read queues in the pool.
    let second_read = tokio::spawn(app.client.get(app.url(&path)).send());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let released = Instant::now();
    sqlx::query("ROLLBACK")
        .execute(&mut items_locker)
        .await
        .unwrap();
    assert_eq!(first_read.await.unwrap().unwrap().status(), 200);
    let second = second_read.await.unwrap().unwrap();
    assert_eq!(second.status(), 200);
    assert!(
        released.elapsed() < Duration::from_millis(2000),
        "the queued read waited {:?}: the first read's connection was kept, not handed over",
        released.elapsed()
    );

    sqlx::query("ROLLBACK")
        .execute(&mut keys_locker)
        .await
        .unwrap();
    assert_eq!(keyed_create.await.unwrap().unwrap().status(), 201);
}

/// The purge of expired idempotency keys is no request: `statement_timeout`, set to the
/// request deadline for requests, must not cancel it when it has to wait (here on rows the
/// test locks while the app starts, which is when the first purge runs).
#[tokio::test]
async fn postgres_purges_expired_keys_that_take_longer_than_a_request() {
    let fast_requests = || {
        settings(&[
            ("REQUEST_TIMEOUT_MS", "300"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "100"),
        ])
    };
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        env: fast_requests(),
        ..Options::default()
    })
    .await;
    let db = app.stop().await;
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request, item_id, created_at) \
         VALUES ('expired long ago', '{}', 'gone', 0)",
    )
    .execute(&mut locker)
    .await
    .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT key FROM idempotency_keys FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();

    let mut env = fast_requests();
    env.push(("DATABASE_URL", db.url.clone()));
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        env,
        ..Options::default()
    })
    .await;
    let mut observer = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let purge = "DELETE FROM idempotency_keys%";
    wait_until_one_waits_on_a_lock(&mut observer, purge).await;
    // Ten request deadlines later the purge is still waiting, not cancelled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        waiting_on_a_lock(&mut observer, purge).await,
        1,
        "the purge was cancelled"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let released = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
            .fetch_one(&mut observer)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(5),
            "the expired key is still there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}
