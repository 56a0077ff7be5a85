//! Item storage: one `Store` API for the handlers, one implementation per back end, each
//! written for its database (see docs/architecture.md#storage):
//!
//! - `sqlite`: the embedded default, through rusqlite. Reads run on the calling thread with a
//!   cached prepared statement (WAL readers never block); every write goes to one writer thread
//!   (SQLite has one writer anyway), which commits queued writes together.
//! - `postgres`: a typed sqlx pool without a ping per acquire; statements are prepared once per
//!   connection and cached.
//!
//! Both index their filters: tags live in their own table keyed by (tag, item), and names are
//! searched through a trigram index (FTS5 on SQLite, `pg_trgm` on PostgreSQL).

mod postgres;
mod sqlite;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    Description, IdempotencyKey, ItemFields, ItemName, NameNeedle, Precondition, Tag, Tags,
};

use self::postgres::PostgresStore;
use self::sqlite::SqliteStore;

/// How often a PostgreSQL write re-reads and retries when another writer changed the item in
/// between (SQLite's single writer reads and writes in one transaction, so never retries).
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: Uuid,
    pub fields: ItemFields,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to a create: the item, and whether it was created by an earlier request with the
/// same `Idempotency-Key` (then `item` is that first answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub item: Item,
    pub replayed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("item not found")]
    NotFound,
    #[error("the item's version does not match If-Match")]
    PreconditionFailed,
    #[error("the item kept changing while being written")]
    Conflict,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// The database cannot take the request now (pool exhausted, locked, unreachable): the
    /// client may retry.
    #[error("database unavailable: {0}")]
    Unavailable(BoxError),
    #[error("database error: {0}")]
    Database(BoxError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Setup(String),
}

/// A page query: `after` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: u32,
    pub after: Option<Uuid>,
    pub tag: Option<Tag>,
    pub name_contains: Option<NameNeedle>,
    /// When the request's answer is due: SQLite stops reading at it (503) rather than finish
    /// a page nobody will read while it holds a reader and a thread.
    pub deadline: Option<std::time::Instant>,
}

/// One page of a list, and where it stopped reading when it stopped before filling up.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// Set when the page read its whole row budget (`SCAN_BUDGET`, for name filters too short
    /// to use the trigram index) without filling up: the last id it examined. The next page
    /// continues after it; the rows up to it have all been checked.
    pub examined_up_to: Option<Uuid>,
}

/// The most rows one page reads for a name needle of one or two characters, which no trigram
/// index can narrow: such a page may come back short, with a cursor to go on from, rather
/// than scan the table. About 2–3 ms of one core.
pub const SCAN_BUDGET: u32 = 5_000;

/// Needles shorter than this have no trigram to look up.
const TRIGRAM: usize = 3;

fn uses_trigram_index(needle: &str) -> bool {
    needle.chars().count() >= TRIGRAM
}

/// How to open the store (from the service's settings).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    /// PostgreSQL: the pool's size. SQLite: how many idle reader connections are kept.
    pub max_connections: u32,
    /// SQLite: the most reader connections open at once; a read that finds them all busy
    /// waits up to `acquire_timeout`, then is answered 503. (PostgreSQL: unused, the pool's
    /// size caps it.)
    pub max_readers: u32,
    /// How long a request waits for a connection (PostgreSQL) or for the writer (SQLite)
    /// before it is answered 503; shorter than the request deadline.
    pub acquire_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// The request's deadline (`REQUEST_TIMEOUT_MS`): no statement outlives it.
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Connects, creating an SQLite file (and its directory) on first start, and migrates the
    /// schema, moving existing data along.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        match backend_of(&config.url) {
            Some(Backend::Sqlite) => Ok(Self::Sqlite(SqliteStore::open(config).await?)),
            Some(Backend::Postgres) => Ok(Self::Postgres(PostgresStore::connect(config).await?)),
            None => Err(StoreError::Setup(
                "the URL must start with sqlite: or postgres:".into(),
            )),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// How many items are stored: exact on SQLite (kept by the writer), the statistics
    /// collector's live-row estimate on PostgreSQL (no `COUNT(*)` scan).
    pub async fn count(&self) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => Ok(s.count()),
            Self::Postgres(s) => s.count().await,
        }
    }

    /// Whether the store can still serve writes at all: false once SQLite's writer thread
    /// is gone (only a restart brings it back). For liveness; no I/O.
    pub fn is_alive(&self) -> bool {
        match self {
            Self::Sqlite(s) => s.is_alive(),
            Self::Postgres(_) => true,
        }
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
            Self::Postgres(s) => s.ping().await,
        }
    }

    /// Creates an item. With an idempotency key, a repeat of the same request (same key and
    /// fields, within the key's lifetime) answers the first item instead of creating another.
    pub async fn create(
        &self,
        fields: &ItemFields,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        match self {
            Self::Sqlite(s) => s.create(fields, key).await,
            Self::Postgres(s) => s.create(fields, key).await,
        }
    }

    /// Creates many items in one transaction (seeding and benchmarks); returns how many.
    pub async fn create_many(&self, batch: Vec<ItemFields>) -> Result<usize, StoreError> {
        match self {
            Self::Sqlite(s) => s.create_many(batch).await,
            Self::Postgres(s) => s.create_many(batch).await,
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        match self {
            Self::Sqlite(s) => s.get(id).await,
            // Boxed: this future is as large as its largest branch, and every SQLite read
            // would move PostgreSQL's (memcpy was 16,000 of its instructions, cachegrind).
            Self::Postgres(s) => Box::pin(s.get(id)).await,
        }
    }

    /// Items in id (= creation) order, after the cursor, matching the filters.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        match self {
            Self::Sqlite(s) => s.list(query).await,
            Self::Postgres(s) => s.list(query).await,
        }
    }

    /// Replaces or patches an item: `change` computes the new fields from the current ones.
    /// The write only lands on the version it was computed from, so concurrent writers never
    /// overwrite each other silently.
    pub async fn update(
        &self,
        id: Uuid,
        precondition: Precondition,
        change: impl Fn(&ItemFields) -> ItemFields + Send + 'static,
    ) -> Result<Item, StoreError> {
        match self {
            Self::Sqlite(s) => s.update(id, precondition, Box::new(change)).await,
            Self::Postgres(s) => s.update(id, &precondition, change).await,
        }
    }

    pub async fn delete(&self, id: Uuid, precondition: Precondition) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.delete(id, precondition).await,
            Self::Postgres(s) => s.delete(id, &precondition).await,
        }
    }

    /// Deletes up to `limit` items with this tag, oldest first; returns how many. A load run
    /// tags what it creates, and deletes it all by repeating this until it answers 0, however
    /// many items the run made (load-tests/mix.js).
    pub async fn delete_tagged(&self, tag: &Tag, limit: u32) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.delete_tagged(tag, limit).await,
            Self::Postgres(s) => s.delete_tagged(tag, limit).await,
        }
    }

    /// Forgets idempotency keys older than their lifetime; returns how many.
    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.purge_expired_keys().await,
            Self::Postgres(s) => s.purge_expired_keys().await,
        }
    }

    /// Closes every connection (on SQLite this checkpoints the WAL into the database file).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// Tags as stored in the item row: normalised tags joined by ',' (a tag cannot contain ',').
/// The row keeps them for reads; filters use the (tag, item) table instead.
fn join_tags(tags: &Tags) -> String {
    tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",")
}

fn tag_list(tags: &Tags) -> Vec<String> {
    tags.iter().map(|t| t.as_str().to_owned()).collect()
}

/// The `LIKE` pattern both back ends check names against: ASCII letters in either case,
/// every other character only itself (`%`, `_` and `\` literal). Both compare it with an
/// ASCII-folded name (SQLite's `LIKE` folds ASCII only; PostgreSQL folds the name with
/// `translate`, as its `LOWER` follows the locale), so one needle finds the same items on
/// both. The trigram indexes fold more than ASCII, so they only narrow the rows it is tried on.
fn name_pattern(needle: &str) -> String {
    let lowered = needle.to_ascii_lowercase();
    let escaped = lowered
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// What an idempotency key remembers of its request: the parsed fields, canonical, so the same
/// item written with different whitespace or tag case is the same request.
fn fingerprint(fields: &ItemFields) -> String {
    serde_json::json!({
        "name": fields.name.as_str(),
        "description": fields.description.as_ref().map(Description::as_str),
        "tags": tag_list(&fields.tags),
    })
    .to_string()
}

/// The first answer to a keyed create, rebuilt from what the key remembers.
fn replayed_item(item_id: &str, request: &str, created_at: i64) -> Result<Created, StoreError> {
    #[derive(serde::Deserialize)]
    struct Request {
        name: String,
        description: Option<String>,
        tags: Vec<String>,
    }
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("idempotency key: {e}"));
    let request: Request = serde_json::from_str(request).map_err(|e| corrupt(&e))?;
    let fields = parse_fields(&request.name, request.description.as_deref(), &request.tags)?;
    let at = from_micros(created_at)?;
    Ok(Created {
        item: Item {
            id: Uuid::parse_str(item_id).map_err(|e| corrupt(&e))?,
            fields,
            version: 1,
            created_at: at,
            updated_at: at,
        },
        replayed: true,
    })
}

/// A just-created item, as its create answers it.
fn new_item(id: Uuid, fields: &ItemFields, now: i64) -> Result<Item, StoreError> {
    let at = from_micros(now)?;
    Ok(Item {
        id,
        fields: fields.clone(),
        version: 1,
        created_at: at,
        updated_at: at,
    })
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

/// The stored columns of one item, as this store wrote them (see `ItemFields::from_store`).
struct ItemRow {
    id: String,
    name: String,
    description: Option<String>,
    tags: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl ItemRow {
    fn into_item(self) -> Result<Item, StoreError> {
        Ok(Item {
            id: Uuid::parse_str(&self.id).map_err(|e| StoreError::Corrupt(format!("id: {e}")))?,
            fields: ItemFields::from_store(self.name, self.description, &self.tags),
            version: self.version,
            created_at: from_micros(self.created_at)?,
            updated_at: from_micros(self.updated_at)?,
        })
    }
}

fn parse_fields(
    name: &str,
    description: Option<&str>,
    tags: &[String],
) -> Result<ItemFields, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    Ok(ItemFields {
        name: ItemName::parse(name).map_err(|e| corrupt("name", &e.message))?,
        description: description
            .map(Description::parse)
            .transpose()
            .map_err(|e| corrupt("description", &e.message))?,
        tags: Tags::parse(tags).map_err(|e| corrupt("tags", &format!("{e:?}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_in_user_input_are_literal() {
        assert_eq!(name_pattern("50%_Off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(name_pattern("ÉCOLE"), "%École%");
    }

    #[test]
    fn backends_are_recognised_by_scheme() {
        assert_eq!(backend_of("sqlite://data/items.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("mysql://u@h/db"), None);
    }

    #[test]
    fn fingerprints_ignore_what_parsing_normalises() {
        let a = ItemFields::parse(" A ", None, &["X".into(), "y".into()]).unwrap();
        let b = ItemFields::parse("A", None, &["x".into(), "y".into(), "x".into()]).unwrap();
        let c = ItemFields::parse("A", Some("d"), &["x".into(), "y".into()]).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn a_replay_rebuilds_the_first_answer() {
        let fields = ItemFields::parse("A", Some("d"), &["x".into()]).unwrap();
        let id = Uuid::now_v7();
        let created = replayed_item(
            &id.to_string(),
            &fingerprint(&fields),
            1_700_000_000_000_000,
        )
        .unwrap();
        assert!(created.replayed);
        assert_eq!(created.item.id, id);
        assert_eq!(created.item.fields, fields);
        assert_eq!(created.item.version, 1);
        assert_eq!(created.item.created_at, created.item.updated_at);
    }
}
