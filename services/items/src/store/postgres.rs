//! The back end for running at scale: PostgreSQL through a typed sqlx pool.
//!
//! - No ping per acquire (`test_before_acquire(false)`): a dead connection fails its query,
//!   which answers 503, and the pool replaces it; a ping would cost every request a round trip.
//! - Reads by id keep their connection checked out for the next one ([`HeldConnections`]):
//!   sqlx's pool pings every connection it gets back, which no setting turns off.
//! - Statements are prepared once per connection and cached by sqlx; the page size is bound,
//!   not formatted in, so every page size shares one statement. Filtered pages are the
//!   exception: they are planned for their actual values (`persistent(false)`), since the
//!   best plan for a rare name differs from the one for a common name.
//! - The pool's size is capped by what the server accepts, and a request waits for a
//!   connection at most the acquire timeout (shorter than its deadline), then gets 503.
//! - The pool's connections have `statement_timeout` set to the request's deadline: a request
//!   that runs out of time drops its query's future, but PostgreSQL would go on running (or
//!   waiting on a lock) and keep the connection busy; this way the server cancels it itself.
//!   Migrations run on a connection of their own without it: an index build takes longer.
//! - Each write is one statement (data-modifying CTEs where there is more than one table), so
//!   an item and its idempotency key change together in one round trip. `item_tags` follows
//!   `items` by a trigger (migrations/postgres), whoever writes: the previous release's pods
//!   during a canary too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, Row};
use uuid::Uuid;

use super::{
    Created, Item, ItemRow, ListQuery, Page, SCAN_BUDGET, StoreConfig, StoreError, WRITE_ATTEMPTS,
    fingerprint, join_tags, name_pattern, new_item, now_micros, replayed_item, uses_trigram_index,
};
use crate::domain::{IdempotencyKey, ItemFields, Precondition, Tag};

/// Taken while migrating, so replicas starting together apply the migrations once. Advisory
/// locks belong to one database, so a constant key is enough.
const MIGRATION_LOCK: i64 = 0x6d65_7269_6469_616e;
/// SQLSTATE classes that say the database, not the request, is the trouble, so 503 like a full
/// pool: 57, operator intervention (a statement cancelled by `statement_timeout` because the
/// database was too busy for the deadline, the server shutting down or ending the connection),
/// and 08, connection exceptions. Either way the statement did not commit.
const UNAVAILABLE_CLASSES: [&str; 2] = ["57", "08"];
/// How often a replica asks again for the migration lock while another one migrates.
const MIGRATION_LOCK_RETRY: Duration = Duration::from_millis(100);

type RowTuple = (String, String, Option<String>, String, i64, i64, i64);

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    held: Arc<HeldConnections>,
    ttl_micros: i64,
}

/// Connections kept checked out of the pool between reads by id. sqlx 0.9's pool pings every
/// connection it gets back, from a task it spawns (`return_to_pool` in sqlx-core's
/// `pool/connection.rs`; no option turns it off): with the acquisition, about 12,000 of a
/// PostgreSQL read's instructions and a round trip to the server (cachegrind,
/// docs/performance.md). A read that completes leaves its connection here for the next one;
/// a read that fails or is cancelled drops it, and the pool's own return path tests it as
/// before, since a dropped query can leave a connection mid-protocol.
///
/// - At most half the pool is held; every query takes a held connection before asking the
///   pool, and none is kept while the pool has no idle connection of its own (someone may be
///   queued for one), so holding cannot starve anyone of a connection.
/// - A connection goes back to the pool after [`HELD_AT_MOST`], so the pool's lifetime and
///   idle rules still reach it.
/// - At shutdown the held connections go back before the pool closes.
struct HeldConnections {
    idle: Mutex<Vec<Held>>,
    capacity: usize,
    pool_size: u32,
}

/// How long a connection stays out of the pool before it goes back through the pool's test.
const HELD_AT_MOST: Duration = Duration::from_secs(60);

struct Held {
    connection: PoolConnection<Postgres>,
    since: Instant,
}

impl HeldConnections {
    fn new(pool_size: u32) -> Self {
        let capacity = pool_size as usize / 2;
        Self {
            idle: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
            pool_size,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A held connection, or one from the pool.
    async fn take(&self, pool: &PgPool) -> Result<Held, StoreError> {
        if let Some(held) = self.idle().pop() {
            return Ok(held);
        }
        Ok(Held {
            connection: pool.acquire().await?,
            since: Instant::now(),
        })
    }

    /// After a completed query: kept for the next read, or (full, or held long enough) given
    /// back to the pool.
    fn keep(&self, held: Held, pool: &PgPool) {
        // With none idle in the pool and none left to open, a request may be waiting in the
        // pool's queue, which only a connection given back to the pool would reach.
        let pool_drained = pool.num_idle() == 0 && pool.size() >= self.pool_size;
        if !pool_drained && held.since.elapsed() < HELD_AT_MOST {
            let mut idle = self.idle();
            if idle.len() < self.capacity {
                idle.push(held);
            }
        }
    }

    /// Gives every held connection back to the pool (which then closes them when it closes).
    fn release_all(&self) {
        let released = std::mem::take(&mut *self.idle());
        drop(released);
    }
}

impl PostgresStore {
    /// Connects and applies the migrations (see `migrate`).
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = config
            .url
            .parse()
            .map_err(|_| StoreError::Setup("the PostgreSQL URL cannot be parsed".into()))?;
        // Every statement is already in the access log's request; slow ones (over 1 s) are
        // still logged as warnings.
        let options = options.log_statements(tracing::log::LevelFilter::Off);
        let pool_size = pool_size(&options, config).await?;
        migrate(&options).await?;
        let statement_timeout = format!("{}ms", config.request_timeout.as_millis().max(1));
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options.options([("statement_timeout", statement_timeout)]))
            .await?;
        Ok(Self {
            pool,
            held: Arc::new(HeldConnections::new(pool_size)),
            ttl_micros: i64::try_from(config.idempotency_ttl.as_micros()).unwrap_or(i64::MAX),
        })
    }

    /// A connection for one request: a held one (see [`HeldConnections`]) when there is one.
    async fn connection(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.held.take(&self.pool).await?.connection)
    }

    /// The statistics collector's live-row count: no scan, whatever the table's size. It lags
    /// commits by up to a second or so, which a 15-second gauge does not notice.
    pub async fn count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT n_live_tup FROM pg_stat_user_tables \
             WHERE relname = 'items' AND schemaname = current_schema()), 0)",
        )
        .fetch_one(&mut *self.connection().await?)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.connection().await?)
            .await?;
        Ok(())
    }

    pub async fn create(
        &self,
        fields: &ItemFields,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let Some(key) = key else {
            return Ok(Created {
                item: self.insert(fields).await?,
                replayed: false,
            });
        };
        let request = fingerprint(fields);
        for _ in 0..WRITE_ATTEMPTS {
            let id = Uuid::now_v7();
            let now = now_micros();
            // The key's row is inserted first; on a conflict (the key is taken, or another
            // request is inserting it right now, which this waits for) nothing is inserted.
            let mut connection = self.connection().await?;
            claim_the_answer()?;
            let inserted: i64 = sqlx::query_scalar(
                "WITH key AS ( \
                    INSERT INTO idempotency_keys (key, request, item_id, created_at) \
                    VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING key), \
                 item AS ( \
                    INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
                    SELECT $3, $5, $6, $7, 1, $4, $4 WHERE EXISTS (SELECT 1 FROM key)) \
                 SELECT count(*) FROM key",
            )
            .bind(key.as_str())
            .bind(&request)
            .bind(id.to_string())
            .bind(now)
            .bind(fields.name.as_str())
            .bind(fields.description.as_ref().map(|d| d.as_str()))
            .bind(join_tags(&fields.tags))
            .fetch_one(&mut *connection)
            .await?;
            // Back to the pool before the queries below take one of their own.
            drop(connection);
            if inserted == 1 {
                return Ok(Created {
                    item: new_item(id, fields, now)?,
                    replayed: false,
                });
            }
            let remembered: Option<(String, String, i64)> = sqlx::query_as(
                "SELECT request, item_id, created_at FROM idempotency_keys WHERE key = $1",
            )
            .bind(key.as_str())
            .fetch_optional(&mut *self.connection().await?)
            .await?;
            match remembered {
                Some((stored, item_id, at)) if at > now - self.ttl_micros => {
                    return if stored == request {
                        replayed_item(&item_id, &stored, at)
                    } else {
                        Err(StoreError::IdempotencyKeyReused)
                    };
                }
                Some((_, _, at)) => {
                    // Expired: forget it (unless someone renewed it meanwhile) and try again.
                    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND created_at = $2")
                        .bind(key.as_str())
                        .bind(at)
                        .execute(&mut *self.connection().await?)
                        .await?;
                }
                None => {} // purged in between: try again
            }
        }
        Err(StoreError::Conflict)
    }

    async fn insert(&self, fields: &ItemFields) -> Result<Item, StoreError> {
        let id = Uuid::now_v7();
        let now = now_micros();
        let mut connection = self.connection().await?;
        claim_the_answer()?;
        sqlx::query(
            "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $5)",
        )
        .bind(id.to_string())
        .bind(fields.name.as_str())
        .bind(fields.description.as_ref().map(|d| d.as_str()))
        .bind(join_tags(&fields.tags))
        .bind(now)
        .execute(&mut *connection)
        .await?;
        new_item(id, fields, now)
    }

    /// Many items in one statement per call (the caller chunks), for seeding.
    pub async fn create_many(&self, batch: Vec<ItemFields>) -> Result<usize, StoreError> {
        let now = now_micros();
        let ids: Vec<String> = batch.iter().map(|_| Uuid::now_v7().to_string()).collect();
        let names: Vec<&str> = batch.iter().map(|f| f.name.as_str()).collect();
        let descriptions: Vec<Option<&str>> = batch
            .iter()
            .map(|f| f.description.as_ref().map(|d| d.as_str()))
            .collect();
        let tags: Vec<String> = batch.iter().map(|f| join_tags(&f.tags)).collect();
        sqlx::query(
            "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
             SELECT id, name, description, tags, 1, $5, $5 \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                AS t(id, name, description, tags)",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&descriptions)
        .bind(&tags)
        .bind(now)
        .execute(&mut *self.connection().await?)
        .await?;
        Ok(batch.len())
    }

    /// On a held connection (see [`HeldConnections`]). An error drops the connection, which
    /// the pool then tests.
    pub async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        let mut held = self.held.take(&self.pool).await?;
        let item = get_on(&mut held.connection, id).await?;
        self.held.keep(held, &self.pool);
        Ok(item)
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let after = query.after.map(|a| a.to_string()).unwrap_or_default();
        let limit = i64::from(query.limit);
        // One connection for the page's queries.
        let mut connection = self.connection().await?;
        let budget = i64::from(SCAN_BUDGET);
        let tag = query.tag.as_ref().map(|t| t.as_str());
        let needle = query.name_contains.as_deref();
        // `LOWER(name) LIKE LOWER(pattern)` lets the trigram index on `LOWER(name)` narrow
        // the rows; `translate` then folds ASCII only, the filter both back ends share.
        let pattern = needle.map(name_pattern);
        let short = needle.is_some_and(|n| !uses_trigram_index(n));
        // A short needle (no trigram) reads a window of at most SCAN_BUDGET rows: first the
        // window's last id, then the matches up to it, so rows written meanwhile cannot slip
        // in behind the cursor.
        let window_end: Option<String> = match (short, tag) {
            (false, _) => None,
            (true, Some(tag)) => {
                sqlx::query_scalar(
                    "SELECT item_id FROM item_tags WHERE tag = $1 AND item_id > $2 \
                     ORDER BY item_id LIMIT 1 OFFSET $3",
                )
                .bind(tag)
                .bind(&after)
                .bind(budget - 1)
                .fetch_optional(&mut *connection)
                .await?
            }
            (true, None) => {
                sqlx::query_scalar(
                    "SELECT id FROM items WHERE id > $1 ORDER BY id LIMIT 1 OFFSET $2",
                )
                .bind(&after)
                .bind(budget - 1)
                .fetch_optional(&mut *connection)
                .await?
            }
        };
        let rows = match (tag, &pattern) {
            (None, None) => {
                sqlx::query_as::<_, RowTuple>(
                    "SELECT id, name, description, tags, version, created_at, updated_at \
                     FROM items WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(&after)
                .bind(limit)
                .fetch_all(&mut *connection)
                .await?
            }
            (Some(tag), Some(pattern)) if short => {
                sqlx::query_as::<_, RowTuple>(
                    "SELECT i.id, i.name, i.description, i.tags, i.version, i.created_at, \
                     i.updated_at FROM item_tags t JOIN items i ON i.id = t.item_id \
                     WHERE t.tag = $1 AND t.item_id > $2 \
                     AND ($5::text IS NULL OR t.item_id <= $5) AND LOWER(i.name) LIKE LOWER($3) \
                     AND translate(i.name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', \
                     'abcdefghijklmnopqrstuvwxyz') LIKE $3 \
                     ORDER BY t.item_id LIMIT $4",
                )
                .bind(tag)
                .bind(&after)
                .bind(pattern)
                .bind(limit)
                .bind(window_end.as_deref())
                .fetch_all(&mut *connection)
                .await?
            }
            (None, Some(pattern)) if short => {
                sqlx::query_as::<_, RowTuple>(
                    "SELECT id, name, description, tags, version, created_at, updated_at \
                     FROM items WHERE id > $1 AND ($4::text IS NULL OR id <= $4) \
                     AND LOWER(name) LIKE LOWER($2) AND translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', \
                     'abcdefghijklmnopqrstuvwxyz') LIKE $2 ORDER BY id LIMIT $3",
                )
                .bind(&after)
                .bind(pattern)
                .bind(limit)
                .bind(window_end.as_deref())
                .fetch_all(&mut *connection)
                .await?
            }
            (Some(tag), pattern) => {
                sqlx::query_as::<_, RowTuple>(
                    "SELECT i.id, i.name, i.description, i.tags, i.version, i.created_at, \
                     i.updated_at FROM item_tags t JOIN items i ON i.id = t.item_id \
                     WHERE t.tag = $1 AND t.item_id > $2 \
                     AND ($3::text IS NULL OR (LOWER(i.name) LIKE LOWER($3) \
                     AND translate(i.name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', \
                     'abcdefghijklmnopqrstuvwxyz') LIKE $3)) \
                     ORDER BY t.item_id LIMIT $4",
                )
                .bind(tag)
                .bind(&after)
                .bind(pattern.as_deref())
                .bind(limit)
                .persistent(false)
                .fetch_all(&mut *connection)
                .await?
            }
            (None, Some(pattern)) => {
                sqlx::query_as::<_, RowTuple>(
                    "SELECT id, name, description, tags, version, created_at, updated_at \
                     FROM items WHERE LOWER(name) LIKE LOWER($1) AND translate(name, \
                     'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') LIKE $1 \
                     AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(pattern)
                .bind(&after)
                .bind(limit)
                .persistent(false)
                .fetch_all(&mut *connection)
                .await?
            }
        };
        let examined_up_to = window_end
            .filter(|_| (rows.len() as i64) < limit)
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("id: {e}")))?;
        Ok(Page {
            items: rows.into_iter().map(into_item).collect::<Result<_, _>>()?,
            examined_up_to,
        })
    }

    /// Optimistic: reads the item, computes the change, and writes only if the version is
    /// still the one read; retries a few times when another writer got in between.
    pub async fn update(
        &self,
        id: Uuid,
        precondition: &Precondition,
        change: impl Fn(&ItemFields) -> ItemFields,
    ) -> Result<Item, StoreError> {
        // One connection for the reads and the write: each acquisition is a pool round and,
        // on release, a ping to the server (sqlx 0.9's `return_to_pool`).
        let mut connection = self.connection().await?;
        for _ in 0..WRITE_ATTEMPTS {
            let current = get_on(&mut connection, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            let fields = change(&current.fields);
            let now = now_micros();
            claim_the_answer()?;
            let updated = sqlx::query(
                "UPDATE items SET name = $1, description = $2, tags = $3, \
                 version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6",
            )
            .bind(fields.name.as_str())
            .bind(fields.description.as_ref().map(|d| d.as_str()))
            .bind(join_tags(&fields.tags))
            .bind(now)
            .bind(id.to_string())
            .bind(current.version)
            .execute(&mut *connection)
            .await?
            .rows_affected();
            if updated == 1 {
                return Ok(Item {
                    fields,
                    version: current.version + 1,
                    updated_at: super::from_micros(now)?,
                    ..current
                });
            }
        }
        Err(StoreError::Conflict)
    }

    pub async fn delete(&self, id: Uuid, precondition: &Precondition) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        for _ in 0..WRITE_ATTEMPTS {
            let current = get_on(&mut connection, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            claim_the_answer()?;
            let deleted = sqlx::query("DELETE FROM items WHERE id = $1 AND version = $2")
                .bind(id.to_string())
                .bind(current.version)
                .execute(&mut *connection)
                .await?
                .rows_affected();
            if deleted == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Conflict)
    }

    /// One statement: the trigger removes the items' tag rows. Rows another request deletes
    /// meanwhile are skipped, not counted.
    pub async fn delete_tagged(&self, tag: &Tag, limit: u32) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        claim_the_answer()?;
        let deleted = sqlx::query(
            "DELETE FROM items WHERE id IN \
             (SELECT item_id FROM item_tags WHERE tag = $1 ORDER BY item_id LIMIT $2)",
        )
        .bind(tag.as_str())
        .bind(i64::from(limit))
        .execute(&mut *connection)
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// Not a request, so not held to a request's `statement_timeout`: a purge after a pause
    /// (or one waiting on a lock) may take longer, and cancelling it each minute would let
    /// the table grow. One minute is the time between purges.
    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query("SET LOCAL statement_timeout = '1min'")
            .execute(&mut *tx)
            .await?;
        let purged = sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(now_micros() - self.ttl_micros)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(purged.rows_affected())
    }

    pub async fn close(&self) {
        self.held.release_all();
        self.pool.close().await;
    }
}

/// Binds the request's answer to the write about to run: a statement commits as it runs, so
/// once it is sent the request waits for its outcome, even past its deadline (bounded by
/// `statement_timeout`), rather than answer 503 for a write that may be stored. A request
/// already answered 503 at its deadline sends nothing.
fn claim_the_answer() -> Result<(), StoreError> {
    if platform::http::current_answer_commitment().is_none_or(|answer| answer.bind_to_write()) {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "the request was answered 503 at its deadline".into(),
        ))
    }
}

/// Applies the migrations under an advisory lock, asked for with `pg_try_advisory_lock` and
/// retried, not waited for in `pg_advisory_lock` as sqlx's migrator does: a session blocked in
/// that call holds a snapshot, and `CREATE INDEX CONCURRENTLY` (a migration) waits for every
/// older snapshot, so the replica building the index and one waiting for its lock deadlock and
/// PostgreSQL aborts the build. Between tries a waiting replica holds no snapshot. The lock
/// is on its own connection and goes with it, whatever a migration does.
async fn migrate(options: &PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::Connection;
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_locking(false);
    let mut conn = sqlx::PgConnection::connect_with(options).await?;
    while !sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut conn)
        .await?
    {
        tokio::time::sleep(MIGRATION_LOCK_RETRY).await;
    }
    let migrated = migrator.run(&mut conn).await;
    let _ = conn.close().await;
    migrated.map_err(|e| StoreError::Database(Box::new(e)))
}

/// The pool's size: as configured, but never more than the connections the server accepts
/// from ordinary roles (`max_connections` minus the reserved ones), which it reports on a
/// first connection. Replicas × pool size should stay below that too: see
/// docs/architecture.md#storage.
async fn pool_size(options: &PgConnectOptions, config: &StoreConfig) -> Result<u32, StoreError> {
    use sqlx::Connection;
    let mut conn = tokio::time::timeout(
        config.acquire_timeout.max(Duration::from_secs(5)),
        sqlx::PgConnection::connect_with(options),
    )
    .await
    .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))??;
    let available: i64 = sqlx::query_scalar(
        "SELECT current_setting('max_connections')::bigint \
         - current_setting('superuser_reserved_connections')::bigint \
         - COALESCE(current_setting('reserved_connections', true), '0')::bigint",
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    let available = u32::try_from(available.max(1)).unwrap_or(u32::MAX);
    if config.max_connections > available {
        tracing::warn!(
            configured = config.max_connections,
            server_allows = available,
            "DATABASE_MAX_CONNECTIONS is more than the server accepts; using the server's limit"
        );
    }
    Ok(config.max_connections.min(available))
}

const SELECT_ITEM: &str = "SELECT id, name, description, tags, version, created_at, updated_at \
                           FROM items WHERE id = $1";

async fn get_on(connection: &mut sqlx::PgConnection, id: Uuid) -> Result<Option<Item>, StoreError> {
    let mut buffer = Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut buffer);
    sqlx::query_as::<_, RowTuple>(SELECT_ITEM)
        .bind(&*id)
        .fetch_optional(connection)
        .await?
        .map(into_item)
        .transpose()
}

fn into_item(row: RowTuple) -> Result<Item, StoreError> {
    let (id, name, description, tags, version, created_at, updated_at) = row;
    ItemRow {
        id,
        name,
        description,
        tags,
        version,
        created_at,
        updated_at,
    }
    .into_item()
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(Box::new(e))
            }
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| {
                    UNAVAILABLE_CLASSES.iter().any(|c| code.starts_with(c))
                }) =>
            {
                StoreError::Unavailable(Box::new(e))
            }
            e => StoreError::Database(Box::new(e)),
        }
    }
}
