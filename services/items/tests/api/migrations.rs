//! Upgrades from the previous release: a database it wrote opens in this build, reads the same,
//! filters through the new indexes, takes new items, and is not migrated again on the next
//! start.
//!
//! SQLite: `tests/fixtures/items-v1.sqlite` was written by the previous release's binary, and
//! `items-v1.expected.json` is that binary's answer to `GET /v1/items?limit=100` on it.
//! PostgreSQL: the previous release's state is rebuilt by running only its migration (a
//! byte-identical copy, so its checksum matches) and inserting the fixture's rows as they were
//! stored then (comma-joined tags, microsecond timestamps).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::filters::list_all;
use crate::helpers::{Db, Options, POSTGRES_URL_VAR, TestApp, TestDb, spawn_app_with};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const FIRST_POSTGRES_MIGRATION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/migrations/postgres/20261122000001_create_items.sql"
);

fn expected_page() -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/items-v1.expected.json"))
        .expect("the expected answer is in tests/fixtures");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        6,
        "the fixture's items"
    );
    page
}

/// A directory for one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("meridian-{what}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The app on this database URL (the `TestDb` that `spawn_app_with` makes is left unused).
async fn start_on(url: &str) -> TestApp {
    spawn_app_with(Options {
        db: Db::Sqlite,
        env: vec![("DATABASE_URL", url.to_owned())],
        ..Options::default()
    })
    .await
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// What the previous release's data must look like through this build, plus `added` (items
/// created since the upgrade, in order).
async fn check_upgraded(app: &TestApp, added: &[Value]) {
    let mut expected = expected_page();
    expected["items"]
        .as_array_mut()
        .unwrap()
        .extend(added.iter().cloned());
    let (status, page) = app.get_json("/v1/items?limit=100").await;
    assert_eq!(status, 200);
    assert_eq!(page, expected, "the same answer as the previous release");
    for item in expected["items"].as_array().unwrap() {
        let (status, read) = app
            .get_json(&format!("/v1/items/{}", item["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200);
        assert_eq!(&read, item, "read by id");
    }
    // Pages of two follow the old items' order too.
    assert_eq!(
        &list_all(app, &[], 2).await,
        expected["items"].as_array().unwrap()
    );

    let with_added = |old: &[&str], matches: &dyn Fn(&Value) -> bool| {
        let mut all: Vec<String> = old.iter().map(|s| (*s).to_owned()).collect();
        all.extend(
            added
                .iter()
                .filter(|i| matches(i))
                .map(|i| i["name"].as_str().unwrap().to_owned()),
        );
        all
    };
    let has_tag =
        |tag: &'static str| move |i: &Value| i["tags"].as_array().unwrap().iter().any(|t| t == tag);
    let has_text = |text: &'static str| {
        move |i: &Value| i["name"].as_str().unwrap().to_lowercase().contains(text)
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            vec![("tag", "common")],
            with_added(
                &[
                    "Alpha widget",
                    "50% off_sale",
                    "gamma WIDGET xl",
                    "Patched Name",
                ],
                &has_tag("common"),
            ),
        ),
        (
            vec![("tag", "red")],
            with_added(&["Alpha widget", "gamma WIDGET xl"], &has_tag("red")),
        ),
        (
            vec![("tag", "unicode")],
            with_added(&["Zürich café"], &has_tag("unicode")),
        ),
        (
            vec![("tag", "new")],
            with_added(&["Patched Name"], &has_tag("new")),
        ),
        (
            vec![("name", "WIDGET")],
            with_added(&["Alpha widget", "gamma WIDGET xl"], &has_text("widget")),
        ),
        (
            vec![("name", "wi")],
            with_added(&["Alpha widget", "gamma WIDGET xl"], &has_text("wi")),
        ),
        (
            vec![("name", "%")],
            with_added(&["50% off_sale"], &has_text("%")),
        ),
        (
            vec![("name", "_")],
            with_added(&["50% off_sale"], &has_text("_")),
        ),
        (
            vec![("name", "café")],
            with_added(&["Zürich café"], &has_text("café")),
        ),
        (
            vec![("tag", "red"), ("name", "xl")],
            with_added(&["gamma WIDGET xl"], &|i| {
                has_tag("red")(i) && has_text("xl")(i)
            }),
        ),
    ];
    for (params, expected_names) in cases {
        let found = list_all(app, &params, 2).await;
        assert_eq!(names(&found), expected_names, "{params:?}");
    }
    // The issue's own spelling of the % query.
    let (status, percent) = app.get_json("/v1/items?name=%25").await;
    assert_eq!(status, 200);
    assert_eq!(
        names(percent["items"].as_array().unwrap()),
        with_added(&["50% off_sale"], &has_text("%"))
    );
}

/// Creates an item after the upgrade and checks it is listed last.
async fn create_after_upgrade(app: &TestApp, name: &str) -> Value {
    let created = app
        .create(json!({"name": name, "tags": ["common", "fresh"]}))
        .await;
    let (_, page) = app.get_json("/v1/items?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().last(), Some(&created));
    created
}

#[tokio::test]
async fn a_sqlite_file_from_the_previous_release_upgrades_and_reads_the_same() {
    let dir = TempDir::new("upgrade");
    let file = dir.0.join("items.db");
    std::fs::copy(format!("{FIXTURES}/items-v1.sqlite"), &file).unwrap();
    assert_eq!(
        user_version(&file),
        0,
        "the fixture is the previous release's"
    );
    let url = format!("sqlite://{}", file.display());

    let app = start_on(&url).await;
    check_upgraded(&app, &[]).await;
    let added = create_after_upgrade(&app, "Delta widget after upgrade").await;
    check_upgraded(&app, std::slice::from_ref(&added)).await;
    app.stop().await;
    assert_eq!(user_version(&file), 2, "upgraded to this build's schema");

    // A second start on the upgraded file: no migration again, the same data, and writes go on.
    let app = start_on(&url).await;
    check_upgraded(&app, std::slice::from_ref(&added)).await;
    let another = create_after_upgrade(&app, "epsilon").await;
    check_upgraded(&app, &[added, another]).await;
    app.stop().await;
    assert_eq!(user_version(&file), 2);
}

/// `PRAGMA user_version` of an SQLite file, read while no app has it open.
fn user_version(file: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// An items row as the previous release stored it: id, name, description, comma-joined tags,
/// version, created_at and updated_at (microseconds).
type OldRow = (String, String, Option<String>, String, i64, i64, i64);

/// The fixture's rows, read from a copy of the SQLite file the previous release wrote.
fn previous_release_rows() -> Vec<OldRow> {
    let dir = TempDir::new("fixture-rows");
    let file = dir.0.join("items.db");
    std::fs::copy(format!("{FIXTURES}/items-v1.sqlite"), &file).unwrap();
    let conn = rusqlite::Connection::open(&file).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT id, name, description, tags, version, created_at, updated_at \
             FROM items ORDER BY id",
        )
        .unwrap();
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(rows.len(), 6);
    rows
}

#[tokio::test]
async fn a_postgres_database_from_the_previous_release_upgrades_and_reads_the_same() {
    assert!(
        std::env::var(POSTGRES_URL_VAR).is_ok(),
        "{POSTGRES_URL_VAR} is not set"
    );
    let db = TestDb::create(Db::Postgres).await;

    // The previous release's schema: its one migration, run by sqlx's migrator as it ran it.
    let dir = TempDir::new("pg-v1-migrations");
    let copy = dir.0.join("20261122000001_create_items.sql");
    std::fs::copy(FIRST_POSTGRES_MIGRATION, &copy).unwrap();
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(FIRST_POSTGRES_MIGRATION).unwrap()
    );
    let migrator = sqlx::migrate::Migrator::new(dir.0.as_path())
        .await
        .expect("the first migration loads");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    migrator
        .run(&mut conn)
        .await
        .expect("the first migration runs");

    // Its rows, as it stored them: comma-joined tags (empty for none), microseconds.
    let rows = previous_release_rows();
    assert!(rows.iter().any(|r| r.3.is_empty()), "an item without tags");
    assert!(rows.iter().any(|r| r.4 == 2), "an item at version 2");
    for (id, name, description, tags, version, created_at, updated_at) in rows {
        sqlx::query(
            "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(name)
        .bind(description)
        .bind(tags)
        .bind(version)
        .bind(created_at)
        .bind(updated_at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let applied = || async {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        versions
    };
    assert_eq!(applied().await, [20261122000001]);
    conn.close().await.unwrap();

    let app = start_on(&db.url).await;
    check_upgraded(&app, &[]).await;
    let added = create_after_upgrade(&app, "Delta widget after upgrade").await;
    check_upgraded(&app, std::slice::from_ref(&added)).await;
    app.stop().await;
    let upgraded = applied().await;
    assert_eq!(
        upgraded,
        [20261122000001, 20261128000001, 20261128000002],
        "the upgrade's migrations ran"
    );

    let app = start_on(&db.url).await;
    check_upgraded(&app, std::slice::from_ref(&added)).await;
    let another = create_after_upgrade(&app, "epsilon").await;
    check_upgraded(&app, &[added, another]).await;
    app.stop().await;
    assert_eq!(
        applied().await,
        upgraded,
        "no migration on the second start"
    );
}

/// During a canary the previous release's pods keep writing `items` the way they always did,
/// knowing nothing of `item_tags`; `?tag=` must still find what they wrote, changed and removed.
#[tokio::test]
async fn the_previous_release_writing_during_a_canary_stays_visible_to_tag_filters() {
    assert!(
        std::env::var(POSTGRES_URL_VAR).is_ok(),
        "{POSTGRES_URL_VAR} is not set"
    );
    let app = spawn_app_with(Options {
        db: Db::Postgres,
        ..Options::default()
    })
    .await;
    let mut old_pod = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let name_index_valid: Option<bool> = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name_trigrams'::regclass",
    )
    .fetch_optional(&mut old_pod)
    .await
    .unwrap();
    assert_eq!(
        name_index_valid,
        Some(true),
        "built concurrently, and valid"
    );
    let tagged = |tag: &'static str| {
        let app = &app;
        async move { names(&list_all(app, &[("tag", tag)], 10).await) }
    };

    // The previous release's statements, as its store sent them.
    let id = uuid::Uuid::now_v7().to_string();
    let now = 1_764_000_000_000_000_i64;
    sqlx::query(
        "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind("written by the stable pod")
    .bind(None::<String>)
    .bind("canary,stable")
    .bind(1_i64)
    .bind(now)
    .bind(now)
    .execute(&mut old_pod)
    .await
    .unwrap();
    assert_eq!(tagged("canary").await, ["written by the stable pod"]);
    assert_eq!(tagged("stable").await, ["written by the stable pod"]);

    sqlx::query(
        "UPDATE items SET name = $1, description = $2, tags = $3, version = version + 1, \
         updated_at = $4 WHERE id = $5 AND version = $6",
    )
    .bind("retagged by the stable pod")
    .bind(None::<String>)
    .bind("rollout,stable")
    .bind(now + 1)
    .bind(&id)
    .bind(1_i64)
    .execute(&mut old_pod)
    .await
    .unwrap();
    assert!(tagged("canary").await.is_empty(), "the removed tag is gone");
    assert_eq!(tagged("rollout").await, ["retagged by the stable pod"]);
    assert_eq!(tagged("stable").await, ["retagged by the stable pod"]);

    sqlx::query("DELETE FROM items WHERE id = $1 AND version = $2")
        .bind(&id)
        .bind(2_i64)
        .execute(&mut old_pod)
        .await
        .unwrap();
    assert!(tagged("rollout").await.is_empty());
    assert!(tagged("stable").await.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM item_tags")
        .fetch_one(&mut old_pod)
        .await
        .unwrap();
    assert_eq!(left, 0, "no tag rows outlive their item");

    // This build's own writes go through the same path and are not doubled.
    let created = app
        .create(json!({"name": "made by the canary", "tags": ["canary", "canary"]}))
        .await;
    assert_eq!(tagged("canary").await, ["made by the canary"]);
    let updated = app
        .write(
            reqwest::Method::PATCH,
            &format!("/v1/items/{}", created["id"].as_str().unwrap()),
        )
        .json(&json!({"tags": ["rollout"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status().as_u16(), 200);
    assert!(tagged("canary").await.is_empty());
    assert_eq!(tagged("rollout").await, ["made by the canary"]);
    app.stop().await;
}

fn sqlite_config(url: &str) -> items::store::StoreConfig {
    items::store::StoreConfig {
        url: url.to_owned(),
        max_connections: 1,
        max_readers: 1,
        acquire_timeout: std::time::Duration::from_secs(10),
        idempotency_ttl: std::time::Duration::from_secs(60),
        request_timeout: std::time::Duration::from_secs(5),
    }
}

/// Opens and closes a store on `url` on a thread of its own, as another process would.
fn start_elsewhere(url: &str) -> std::thread::JoinHandle<Result<(), String>> {
    let config = sqlite_config(url);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = items::store::Store::connect(&config)
                .await
                .map_err(|e| e.to_string())?;
            store.close().await;
            Ok(())
        })
    })
}

/// Two processes starting on one fresh file: both wait for the file's lock, one migrates, and
/// the other must then see the migrated schema rather than migrate it again from the version
/// it read before the lock.
#[test]
fn two_processes_migrating_a_fresh_sqlite_file_at_once_both_start() {
    let dir = TempDir::new("concurrent-migration");
    let file = dir.0.join("items.db");
    let locker = rusqlite::Connection::open(&file).unwrap();
    let mode: String = locker
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let url = format!("sqlite://{}", file.display());
    let starts = [start_elsewhere(&url), start_elsewhere(&url)];
    // Not a synchronisation: with the schema version read under the lock, the outcome is the
    // same whenever the lock goes. The pause only lets a build that reads the version before
    // taking the lock show its failure.
    std::thread::sleep(std::time::Duration::from_millis(500));
    locker.execute_batch("ROLLBACK").unwrap();
    for start in starts {
        start.join().unwrap().expect("both processes start");
    }
    assert_eq!(user_version(&file), 2);
}

/// A file migrated by a newer build is refused, not written past: the error names the file's
/// schema version, and the file is left as it was.
#[test]
fn a_sqlite_file_with_a_newer_schema_is_refused_at_startup() {
    let dir = TempDir::new("newer-schema");
    let file = dir.0.join("items.db");
    let url = format!("sqlite://{}", file.display());
    start_elsewhere(&url)
        .join()
        .unwrap()
        .expect("a fresh file starts");
    rusqlite::Connection::open(&file)
        .unwrap()
        .pragma_update(None, "user_version", 3)
        .unwrap();

    let refused = start_elsewhere(&url).join().unwrap();
    let error = refused.expect_err("a newer schema is refused");
    assert!(error.contains("schema version 3"), "{error}");
    assert_eq!(user_version(&file), 3, "the file is left as it was");
}
