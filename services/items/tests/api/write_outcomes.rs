//! What a write answers is what happened to it: a 201 is stored, a 503 is not, on SQLite's
//! batching writer, whatever else the batch or the clock did, and on PostgreSQL.

use std::time::Duration;

use items::domain::{ItemFields, Precondition};
use items::store::{ListQuery, Store, StoreConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Db, Options, TestApp, TestDb, item_names, spawn_app_with};

fn settings(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

async fn stored_names(app: &TestApp) -> Vec<String> {
    let (status, page) = app.get_json("/v1/items?limit=100").await;
    assert_eq!(status, 200);
    item_names(&page)
}

/// Writes wait in the writer's queue while another connection holds the file's write lock;
/// their request deadline passes and they are answered 503. Once the lock goes, none of them
/// may be stored: a 503 write is one the client will retry.
#[tokio::test]
async fn a_write_answered_503_at_its_deadline_is_never_stored() {
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        env: settings(&[
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "5000"),
            ("REQUEST_TIMEOUT_MS", "10000"),
        ]),
        ..Options::default()
    })
    .await;
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut answered_201 = Vec::new();
    for n in 0..3 {
        let name = format!("timed out {n}");
        let response = app
            .write(Method::POST, "/v1/items")
            .header("x-request-timeout-ms", "300")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            201 => answered_201.push(name),
            503 => assert_eq!(response.headers()["retry-after"], "1"),
            other => panic!("unexpected status {other}"),
        }
    }
    locker.execute_batch("ROLLBACK").unwrap();
    // Queued behind the timed-out writes, so answered only after the writer has dealt with them.
    let after: Value = app.create(json!({"name": "after the lock"})).await;
    answered_201.push(after["name"].as_str().unwrap().to_owned());

    assert_eq!(
        stored_names(&app).await,
        answered_201,
        "exactly the writes answered 201 are stored"
    );
}

/// On PostgreSQL a write is one statement, committed when it runs. Writes blocked by a lock
/// another connection holds outlive their 300 ms deadline; once the lock goes they commit, so
/// each must be answered with its outcome (201), never 503: exactly the 201s are stored.
#[tokio::test]
async fn on_postgres_a_write_stored_after_its_deadline_is_answered_201() {
    use sqlx::Connection;
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        env: settings(&[("REQUEST_TIMEOUT_MS", "10000")]),
        ..Options::default()
    })
    .await;
    let mut locker = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE items IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let writes: Vec<_> = (0..3)
        .map(|n| {
            let request = app
                .write(Method::POST, "/v1/items")
                .header("x-request-timeout-ms", "300")
                .json(&json!({ "name": format!("blocked {n}") }));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (n, response.status().as_u16())
            })
        })
        .collect();
    // Past every deadline, with the inserts still waiting for the lock.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let mut answered_201 = Vec::new();
    for write in writes {
        let (n, status) = write.await.unwrap();
        match status {
            201 => answered_201.push(format!("blocked {n}")),
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let mut stored = stored_names(&app).await;
    stored.sort();
    assert_eq!(
        stored, answered_201,
        "exactly the writes answered 201 are stored"
    );
}

async fn open_store(url: &str) -> Store {
    Store::connect(&StoreConfig {
        url: url.to_owned(),
        max_connections: 2,
        max_readers: 2,
        acquire_timeout: Duration::from_secs(5),
        idempotency_ttl: Duration::from_secs(60),
        request_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

fn fields(name: &str) -> ItemFields {
    ItemFields::parse(name, None, &[]).unwrap()
}

async fn store_names(store: &Store) -> Vec<String> {
    let page = store
        .list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    page.items
        .iter()
        .map(|i| i.fields.name.as_str().to_owned())
        .collect()
}

/// A trigger's `RAISE(ROLLBACK)` (like IOERR, FULL or NOMEM) rolls back the whole transaction,
/// not just the failing write's savepoint. The other writes of its batch must still be
/// answered by what happened to them: stored and 201, never "failed" yet stored.
#[tokio::test]
async fn a_write_that_rolls_back_the_whole_transaction_fails_alone() {
    let db = TestDb::create(Db::Sqlite).await;
    let store = open_store(&db.url).await;
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker
        .execute_batch(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON items WHEN NEW.name = 'poison' \
             BEGIN SELECT RAISE(ROLLBACK, 'poison refused'); END;",
        )
        .unwrap();
    // Held so that the writes below all queue up: whichever batch the writer has taken blocks
    // on the lock, and the rest form the next batch, so "poison" shares a batch with others.
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let names = ["first", "before", "poison", "after"];
    let all_fields: Vec<ItemFields> = names.iter().map(|n| fields(n)).collect();
    let mut writes: Vec<_> = all_fields
        .iter()
        .map(|f| Box::pin(store.create(f, None)))
        .collect();
    for write in &mut writes {
        // One poll queues the write (the queue has room), and it then waits for the lock.
        assert!(
            tokio::time::timeout(Duration::ZERO, write).await.is_err(),
            "the write waits for the lock"
        );
    }
    locker.execute_batch("ROLLBACK").unwrap();
    let mut answered_ok = Vec::new();
    for (name, write) in names.iter().zip(writes) {
        match write.await {
            Ok(_) => answered_ok.push((*name).to_owned()),
            Err(e) => assert_eq!(*name, "poison", "{name} failed: {e}"),
        }
    }
    assert_eq!(answered_ok, ["first", "before", "after"]);
    assert_eq!(store_names(&store).await, answered_ok);
    assert_eq!(store.count().await.unwrap(), 3);
    store.close().await;
}

/// A panic while running one write (here in the caller's change function) fails that write;
/// the writer goes on serving the next ones.
#[tokio::test]
async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
    let db = TestDb::create(Db::Sqlite).await;
    let store = open_store(&db.url).await;
    let created = store.create(&fields("kept"), None).await.unwrap();
    let panicked = store
        .update(created.item.id, Precondition::None, |_| {
            panic!("a bug in one write")
        })
        .await;
    assert!(panicked.is_err(), "the panicking write fails");
    store
        .create(&fields("after the panic"), None)
        .await
        .expect("the next write is served");
    assert_eq!(store_names(&store).await, ["kept", "after the panic"]);
    store.ping().await.expect("the store stays ready");
    assert!(store.is_alive(), "the store stays live");
    store.close().await;
    assert!(
        !store.is_alive(),
        "a store whose writer is gone is not live"
    );
}
