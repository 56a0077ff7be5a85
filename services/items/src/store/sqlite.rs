//! The embedded back end: one SQLite file through rusqlite.
//!
//! - Reads run on the calling thread, on a connection taken from a small pool of idle readers
//!   (at most `max_readers` open at once; past that a read waits, then is answered 503),
//!   with statements prepared once per connection. WAL readers never wait for the writer, so a
//!   point read is a few microseconds of SQLite and no thread hand-off. Page queries, which can
//!   touch more rows, run in `block_in_place` so the runtime moves other tasks off this thread.
//! - Every write goes to one writer thread, which owns the only writing connection (SQLite
//!   allows one writer at a time anyway). It takes whatever writes are queued, up to
//!   `MAX_BATCH`, and commits them in one transaction, each in its own savepoint, answering
//!   each only after the commit. A write that rolls back the whole transaction is answered
//!   its error and the batch's other writes run again in a fresh one. WAL with `synchronous = NORMAL` keeps every committed write
//!   across a process kill (SIGKILL); only an OS crash or power loss can drop the last commits.
//! - The writer keeps the item count, so the `items_count` gauge costs nothing.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use platform::http::{AnswerCommitment, current_answer_commitment};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Created, Item, ItemRow, ListQuery, Page, SCAN_BUDGET, StoreConfig, StoreError, fingerprint,
    join_tags, name_pattern, new_item, now_micros, replayed_item, uses_trigram_index,
};
use crate::domain::{IdempotencyKey, ItemFields, Precondition, Tag};

/// Page cache per connection, in KiB (`PRAGMA cache_size = -N`). Small on purpose: the pages a
/// read walks (the upper levels of the id index) fit, the rest comes from the OS's file cache,
/// and the process's memory stops growing once these fill, however large the table grows (with
/// 2 + 8 MiB, RSS grew by a quarter over 2 minutes of the soak mix as the table grew; with
/// these it stayed flat: docs/performance.md). With the default 8 idle readers: at most
/// 8 × 0.5 + 2 = 6 MiB.
const READER_CACHE_KIB: i64 = 512;
const WRITER_CACHE_KIB: i64 = 2 * 1024;
/// Writes waiting for the writer; beyond this, callers wait (up to the acquire timeout).
const WRITE_QUEUE: usize = 1024;
/// The most writes committed in one transaction.
const MAX_BATCH: usize = 128;
/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

// Every statement is a literal: values are bound, never formatted in (a semgrep rule checks).
const ITEM_BY_ID: &str = "SELECT id, name, description, tags, version, created_at, updated_at \
     FROM items WHERE id = ?1";
const PAGE: &str = "SELECT id, name, description, tags, version, created_at, updated_at \
     FROM items WHERE seq >= ?1 AND (?2 IS NULL OR name LIKE ?2 ESCAPE '\\') \
     ORDER BY seq LIMIT ?3";
/// A short needle (no trigram) reads a window of at most `SCAN_BUDGET` rows: first the
/// window's last row (`?2` = budget − 1), then the matches up to it (`?4`), so rows written
/// meanwhile cannot slip in behind the cursor.
const SCAN_END: &str = "SELECT seq, id FROM items WHERE seq >= ?1 ORDER BY seq LIMIT 1 OFFSET ?2";
const PAGE_SCAN: &str = "SELECT id, name, description, tags, version, created_at, updated_at \
     FROM items WHERE seq >= ?1 AND seq <= ?4 AND name LIKE ?2 ESCAPE '\\' \
     ORDER BY seq LIMIT ?3";
const SCAN_END_BY_TAG: &str = "SELECT t.seq, i.id FROM item_tags t JOIN items i \
     ON i.seq = t.seq WHERE t.tag = ?1 AND t.seq >= ?2 ORDER BY t.seq LIMIT 1 OFFSET ?3";
const PAGE_SCAN_BY_TAG: &str = "SELECT i.id, i.name, i.description, i.tags, i.version, \
     i.created_at, i.updated_at FROM item_tags t JOIN items i ON i.seq = t.seq \
     WHERE t.tag = ?1 AND t.seq >= ?2 AND t.seq <= ?5 AND i.name LIKE ?3 ESCAPE '\\' \
     ORDER BY t.seq LIMIT ?4";
const PAGE_BY_TAG: &str = "SELECT i.id, i.name, i.description, i.tags, i.version, \
     i.created_at, i.updated_at FROM item_tags t JOIN items i ON i.seq = t.seq \
     WHERE t.tag = ?1 AND t.seq >= ?2 AND (?3 IS NULL OR i.name LIKE ?3 ESCAPE '\\') \
     ORDER BY t.seq LIMIT ?4";
/// The trigram index drives; `?5` (a tag) narrows further when given. The index only finds
/// candidates, which the tag or the exact `LIKE` (folding less than FTS5 does) may all refuse,
/// so it too reads a window of at most `SCAN_BUDGET` candidates, up to `?6`.
const SCAN_END_BY_NAME: &str = "SELECT i.seq, i.id FROM item_names JOIN items i \
     ON i.seq = item_names.rowid WHERE item_names MATCH ?1 AND item_names.rowid >= ?2 \
     ORDER BY item_names.rowid LIMIT 1 OFFSET ?3";
const PAGE_BY_NAME: &str = "SELECT i.id, i.name, i.description, i.tags, i.version, \
     i.created_at, i.updated_at FROM item_names JOIN items i ON i.seq = item_names.rowid \
     WHERE item_names MATCH ?1 AND item_names.rowid >= ?2 AND item_names.rowid <= ?6 \
     AND i.name LIKE ?3 ESCAPE '\\' \
     AND (?5 IS NULL OR EXISTS (SELECT 1 FROM item_tags t WHERE t.tag = ?5 AND t.seq = i.seq)) \
     ORDER BY item_names.rowid LIMIT ?4";

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    busy_timeout: Duration,
    readers: Mutex<Vec<Connection>>,
    max_idle_readers: usize,
    /// One permit per reader connection that may be open: without a cap, every read that
    /// found no idle reader opened another, so a burst of slow scans opened connections (and
    /// their page caches) without bound.
    reader_slots: tokio::sync::Semaphore,
    writes: mpsc::Sender<Command>,
    acquire_timeout: Duration,
    count: Arc<AtomicI64>,
}

struct Command {
    op: Op,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
    /// The request this write answers, if any: the writer binds it before running the write.
    answer: Option<AnswerCommitment>,
}

impl Command {
    /// False when the write must not run: its request was answered at its deadline, or its
    /// caller is gone. Otherwise the request now waits for this write's outcome.
    fn may_run(&self) -> bool {
        !self.reply.is_closed()
            && self
                .answer
                .as_ref()
                .is_none_or(AnswerCommitment::bind_to_write)
    }
}

enum Op {
    Create {
        fields: ItemFields,
        key: Option<IdempotencyKey>,
    },
    CreateMany(Vec<ItemFields>),
    Update {
        id: Uuid,
        precondition: Precondition,
        change: Box<dyn Fn(&ItemFields) -> ItemFields + Send>,
    },
    Delete {
        id: Uuid,
        precondition: Precondition,
    },
    DeleteTagged {
        tag: Tag,
        limit: u32,
    },
    PurgeKeys,
    Close,
}

enum Outcome {
    Created(Created),
    Updated(Item),
    Done(u64),
}

impl SqliteStore {
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let path = database_path(&config.url)?;
        let busy_timeout = config.acquire_timeout;
        let mut writer = open_connection(&path, busy_timeout, WRITER_CACHE_KIB, false)?;
        migrate(&mut writer)?;
        let count: i64 = writer.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
        let last_id: Option<String> = writer
            .query_row("SELECT id FROM items ORDER BY seq DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let last_id = last_id
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("id: {e}")))?
            .unwrap_or(Uuid::nil());

        let count = Arc::new(AtomicI64::new(count));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let state = Writer {
            conn: writer,
            last_id,
            count: Arc::clone(&count),
            ttl_micros: micros(config.idempotency_ttl),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || state.run(queue))
            .map_err(|e| StoreError::Setup(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                busy_timeout,
                readers: Mutex::new(Vec::new()),
                max_idle_readers: config.max_connections.min(config.max_readers) as usize,
                reader_slots: tokio::sync::Semaphore::new(config.max_readers as usize),
                writes,
                acquire_timeout: config.acquire_timeout,
                count,
            }),
        })
    }

    pub fn count(&self) -> i64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn is_alive(&self) -> bool {
        !self.inner.writes.is_closed()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        if !self.is_alive() {
            return Err(StoreError::Unavailable(
                "the SQLite writer has stopped".into(),
            ));
        }
        self.read(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        let mut buffer = Uuid::encode_buffer();
        let id = id.hyphenated().encode_lower(&mut buffer);
        self.read(|conn| {
            conn.prepare_cached(ITEM_BY_ID)?
                .query_row([&*id], item_row)
                .optional()?
                .map(ItemRow::into_item)
                .transpose()
        })
        .await
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let _slot = self.reader_slot().await?;
        let run = || {
            self.read_now(|conn| until_deadline(conn, query.deadline, || list_page(conn, query)))
        };
        // Index-driven pages read about `limit` rows: inline, like a point read. A short
        // needle reads up to SCAN_BUDGET rows (a few milliseconds), so the runtime first moves
        // this thread's other tasks elsewhere.
        let scans = query
            .name_contains
            .as_deref()
            .is_some_and(|needle| !uses_trigram_index(needle));
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        match flavor {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) if scans => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    pub async fn create(
        &self,
        fields: &ItemFields,
        key: Option<&IdempotencyKey>,
    ) -> Result<Created, StoreError> {
        let op = Op::Create {
            fields: fields.clone(),
            key: key.cloned(),
        };
        match self.write(op).await? {
            Outcome::Created(created) => Ok(created),
            _ => unreachable!("a create answers Created"),
        }
    }

    pub async fn create_many(&self, batch: Vec<ItemFields>) -> Result<usize, StoreError> {
        match self.write(Op::CreateMany(batch)).await? {
            Outcome::Done(n) => Ok(n as usize),
            _ => unreachable!("a batch create answers Done"),
        }
    }

    pub async fn update(
        &self,
        id: Uuid,
        precondition: Precondition,
        change: Box<dyn Fn(&ItemFields) -> ItemFields + Send>,
    ) -> Result<Item, StoreError> {
        let op = Op::Update {
            id,
            precondition,
            change,
        };
        match self.write(op).await? {
            Outcome::Updated(item) => Ok(item),
            _ => unreachable!("an update answers Updated"),
        }
    }

    pub async fn delete(&self, id: Uuid, precondition: Precondition) -> Result<(), StoreError> {
        self.write(Op::Delete { id, precondition }).await.map(drop)
    }

    pub async fn delete_tagged(&self, tag: &Tag, limit: u32) -> Result<u64, StoreError> {
        let op = Op::DeleteTagged {
            tag: tag.clone(),
            limit,
        };
        match self.write(op).await? {
            Outcome::Done(n) => Ok(n),
            _ => unreachable!("a tagged delete answers Done"),
        }
    }

    pub async fn purge_expired_keys(&self) -> Result<u64, StoreError> {
        match self.write(Op::PurgeKeys).await? {
            Outcome::Done(n) => Ok(n),
            _ => unreachable!("a purge answers Done"),
        }
    }

    /// Closes the idle readers, then lets the writer finish what is queued and close last, so
    /// its close checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let _ = self.write(Op::Close).await;
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queued = tokio::time::timeout(
            self.inner.acquire_timeout,
            self.inner.writes.send(Command {
                op,
                reply,
                answer: current_answer_commitment(),
            }),
        )
        .await;
        match queued {
            Err(_elapsed) => {
                return Err(StoreError::Unavailable(
                    "the SQLite writer's queue stayed full".into(),
                ));
            }
            Ok(Err(_closed)) => {
                return Err(StoreError::Unavailable(
                    "the SQLite writer has stopped".into(),
                ));
            }
            Ok(Ok(())) => {}
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    /// Runs `f` on a reader, once one of the `max_readers` is free.
    async fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _slot = self.reader_slot().await?;
        self.read_now(f)
    }

    /// Leave to hold a reader connection, waiting up to the acquire timeout for one.
    async fn reader_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        let slots = &self.inner.reader_slots;
        match tokio::time::timeout(self.inner.acquire_timeout, slots.acquire()).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_closed)) => Err(StoreError::Unavailable(
                "the SQLite readers are closed".into(),
            )),
            Err(_elapsed) => Err(StoreError::Unavailable(
                "every SQLite reader (SQLITE_MAX_READERS) stayed busy past the acquire timeout"
                    .into(),
            )),
        }
    }

    /// Runs `f` on an idle reader (opening one if none is idle) on this thread; the caller
    /// holds a reader slot.
    fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_connection(
                &self.inner.path,
                self.inner.busy_timeout,
                READER_CACHE_KIB,
                true,
            )?,
        };
        let result = f(&conn);
        let mut idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.inner.max_idle_readers {
            idle.push(conn);
        }
        result
    }
}

/// How many SQLite VM instructions run between two looks at the clock while a page is read
/// (a few microseconds of work).
const DEADLINE_CHECK_OPS: std::ffi::c_int = 4_096;

/// Runs `f` with SQLite interrupting its statement once `deadline` has passed (the read then
/// fails as Unavailable: 503): a synchronous page read cannot be dropped at the deadline like
/// a future, and would otherwise go on holding a thread and a reader for an answer nobody
/// reads.
fn until_deadline<T>(
    conn: &Connection,
    deadline: Option<Instant>,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let Some(deadline) = deadline else {
        return f();
    };
    conn.progress_handler(DEADLINE_CHECK_OPS, Some(move || Instant::now() >= deadline))?;
    let result = f();
    conn.progress_handler(0, None::<fn() -> bool>)?;
    result
}

/// One page: the index that narrows the rows most drives the query, in seq (= id) order, and
/// stops after `limit` rows (or, for a short needle, after `SCAN_BUDGET` rows read).
fn list_page(conn: &Connection, query: &ListQuery) -> Result<Page, StoreError> {
    // The cursor is an id; the first row after it, found through the id index, gives the seq
    // to start from (the cursor's own item may have been deleted since).
    let from_seq: i64 = match query.after {
        None => 0,
        Some(after) => {
            let next = conn
                .prepare_cached("SELECT seq FROM items WHERE id > ?1 ORDER BY id LIMIT 1")?
                .query_row([after.to_string()], |r| r.get(0))
                .optional()?;
            match next {
                Some(seq) => seq,
                None => return Ok(Page::default()),
            }
        }
    };
    let limit = i64::from(query.limit);
    let budget = i64::from(SCAN_BUDGET);
    let tag = query.tag.as_ref().map(|t| t.as_str());
    let needle = query.name_contains.as_deref();
    let pattern = needle.map(name_pattern);
    let collect = |rows: rusqlite::MappedRows<'_, _>| rows.collect::<Result<Vec<ItemRow>, _>>();
    let mut scan_end = None;
    let rows = match (tag, needle) {
        (tag, Some(needle)) if uses_trigram_index(needle) => {
            // The needle as one FTS5 phrase: its trigrams, consecutive.
            let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
            let end = conn
                .prepare_cached(SCAN_END_BY_NAME)?
                .query_row(params![phrase, from_seq, budget - 1], window_end)
                .optional()?;
            let last_seq = end.as_ref().map_or(i64::MAX, |(seq, _)| *seq);
            let mut statement = conn.prepare_cached(PAGE_BY_NAME)?;
            let rows = collect(statement.query_map(
                params![phrase, from_seq, pattern, limit, tag, last_seq],
                item_row,
            )?)?;
            scan_end = end
                .filter(|_| (rows.len() as i64) < limit)
                .map(|(_, id)| id);
            rows
        }
        (Some(tag), Some(_short)) => {
            let end = conn
                .prepare_cached(SCAN_END_BY_TAG)?
                .query_row(params![tag, from_seq, budget - 1], window_end)
                .optional()?;
            let last_seq = end.as_ref().map_or(i64::MAX, |(seq, _)| *seq);
            let mut statement = conn.prepare_cached(PAGE_SCAN_BY_TAG)?;
            let rows = collect(
                statement.query_map(params![tag, from_seq, pattern, limit, last_seq], item_row)?,
            )?;
            scan_end = end
                .filter(|_| (rows.len() as i64) < limit)
                .map(|(_, id)| id);
            rows
        }
        (None, Some(_short)) => {
            let end = conn
                .prepare_cached(SCAN_END)?
                .query_row(params![from_seq, budget - 1], window_end)
                .optional()?;
            let last_seq = end.as_ref().map_or(i64::MAX, |(seq, _)| *seq);
            let mut statement = conn.prepare_cached(PAGE_SCAN)?;
            let rows = collect(
                statement.query_map(params![from_seq, pattern, limit, last_seq], item_row)?,
            )?;
            scan_end = end
                .filter(|_| (rows.len() as i64) < limit)
                .map(|(_, id)| id);
            rows
        }
        (Some(tag), None) => {
            let mut statement = conn.prepare_cached(PAGE_BY_TAG)?;
            collect(statement.query_map(params![tag, from_seq, pattern, limit], item_row)?)?
        }
        (None, None) => {
            let mut statement = conn.prepare_cached(PAGE)?;
            collect(statement.query_map(params![from_seq, pattern, limit], item_row)?)?
        }
    };
    Ok(Page {
        items: rows
            .into_iter()
            .map(ItemRow::into_item)
            .collect::<Result<_, _>>()?,
        examined_up_to: scan_end
            .map(|id| Uuid::parse_str(&id))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("id: {e}")))?,
    })
}

fn window_end(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn item_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    item_row_from(row, 0)
}

/// The item's seven columns, starting at column `first`.
fn item_row_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        id: row.get(first)?,
        name: row.get(first + 1)?,
        description: row.get(first + 2)?,
        tags: row.get(first + 3)?,
        version: row.get(first + 4)?,
        created_at: row.get(first + 5)?,
        updated_at: row.get(first + 6)?,
    })
}

/// The one writing connection and what it keeps between batches.
struct Writer {
    conn: Connection,
    /// The newest id handed out: new ids are always greater, even if the clock steps back,
    /// so seq order stays id order.
    last_id: Uuid,
    count: Arc<AtomicI64>,
    ttl_micros: i64,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut closed_by = None;
        while let Some(first) = queue.blocking_recv() {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut next = Some(first);
            while let Some(command) = next.take() {
                if matches!(command.op, Op::Close) {
                    closed_by = Some(command.reply);
                    break;
                }
                batch.push(command);
                if batch.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                // A panic outside a single write (each is caught in `run_transaction`) drops
                // this batch's replies, which answers its writes 503, and leaves the writer
                // serving the next batches; the transaction rolls back as it unwinds.
                let run = std::panic::catch_unwind(AssertUnwindSafe(|| self.commit_batch(batch)));
                if run.is_err() {
                    tracing::error!("the SQLite writer panicked while committing a batch");
                }
            }
            if closed_by.is_some() {
                break;
            }
        }
        queue.close();
        // Writes queued after the close are refused; then the connection (the last one) is
        // dropped, which checkpoints the WAL into the database file, and only then does
        // `close` return.
        while let Ok(command) = queue.try_recv() {
            let _ = command.reply.send(Err(StoreError::Unavailable(
                "the SQLite writer has stopped".into(),
            )));
        }
        drop(self.conn);
        if let Some(reply) = closed_by {
            let _ = reply.send(Ok(Outcome::Done(0)));
        }
    }

    /// Runs a batch in one transaction, each write in its own savepoint, and answers each
    /// write after the commit. A write that rolls back the whole transaction (a trigger's
    /// `RAISE(ROLLBACK)`, IOERR, FULL, NOMEM) took the batch's earlier writes with it: it is
    /// answered its error, and the others run again in a new transaction.
    fn commit_batch(&mut self, batch: Vec<Command>) {
        // Answers decided for good before a commit: writes not run, and writes that rolled
        // the transaction back.
        let mut settled: Vec<Option<Result<Outcome, StoreError>>> =
            batch.iter().map(|_| None).collect();
        loop {
            match self.run_transaction(&batch, &mut settled) {
                Ok(Attempt::Committed { results, added }) => {
                    self.count.fetch_add(added, Ordering::Relaxed);
                    for ((command, settled), result) in batch.into_iter().zip(settled).zip(results)
                    {
                        if let Some(answer) = settled.or(result) {
                            let _ = command.reply.send(answer);
                        }
                    }
                    return;
                }
                Ok(Attempt::RolledBack) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "SQLite transaction failed");
                    for (command, settled) in batch.into_iter().zip(settled) {
                        let answer = settled.unwrap_or_else(|| Err(batch_failed(&e)));
                        let _ = command.reply.send(answer);
                    }
                    return;
                }
            }
        }
    }

    /// One transaction over the writes of `batch` not yet settled.
    fn run_transaction(
        &mut self,
        batch: &[Command],
        settled: &mut [Option<Result<Outcome, StoreError>>],
    ) -> rusqlite::Result<Attempt> {
        let (conn, last_id, ttl_micros) = (&mut self.conn, &mut self.last_id, self.ttl_micros);
        // IMMEDIATE takes the write lock now, waiting up to the busy timeout if another
        // process holds it.
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut added = 0;
        for (command, settled) in batch.iter().zip(settled.iter_mut()) {
            if settled.is_some() {
                results.push(None);
                continue;
            }
            // Only now, with the write lock held, is the write sure to run at once: a write
            // still waiting for the lock stays the deadline's to answer.
            if !command.may_run() {
                *settled = Some(Err(StoreError::Unavailable(
                    "the request's deadline passed before its write ran".into(),
                )));
                results.push(None);
                continue;
            }
            let savepoint = tx.savepoint()?;
            // A panic in one write (a bug, or the caller's change function) fails that write
            // alone; its savepoint rolls back below like any failed write's.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                apply(&savepoint, &command.op, last_id, ttl_micros)
            }))
            .unwrap_or_else(|_| {
                tracing::error!("an SQLite write panicked");
                Err(StoreError::Database("the write panicked".into()))
            });
            if savepoint.is_autocommit() {
                // The whole transaction is gone, not just this savepoint: without this check
                // the next write's SAVEPOINT would open a transaction of its own and its
                // RELEASE commit it, and the final COMMIT fail for writes that were stored.
                *settled = Some(Err(result.err().unwrap_or_else(|| {
                    StoreError::Database("the write transaction was rolled back".into())
                })));
                return Ok(Attempt::RolledBack);
            }
            if result.is_ok() {
                savepoint.commit()?;
            }
            if let Ok((_, delta)) = &result {
                added += delta;
            }
            results.push(Some(result.map(|(outcome, _)| outcome)));
        }
        tx.commit()?;
        Ok(Attempt::Committed { results, added })
    }
}

/// How one transaction over a batch ended.
enum Attempt {
    /// Committed: each write's answer (`None` for writes settled beforehand) and how the item
    /// count changed.
    Committed {
        results: Vec<Option<Result<Outcome, StoreError>>>,
        added: i64,
    },
    /// One write rolled the whole transaction back; it is settled, the rest must run again.
    RolledBack,
}

/// What each write of a batch answers when the batch's transaction failed.
fn batch_failed(e: &rusqlite::Error) -> StoreError {
    let message = format!("the write transaction failed: {e}");
    if is_busy(e) {
        StoreError::Unavailable(message.into())
    } else {
        StoreError::Database(message.into())
    }
}

/// One write, inside its savepoint. Returns the answer and how it changed the item count.
fn apply(
    conn: &Connection,
    op: &Op,
    last_id: &mut Uuid,
    ttl_micros: i64,
) -> Result<(Outcome, i64), StoreError> {
    let now = now_micros();
    match op {
        Op::Create { fields, key } => {
            if let Some(key) = key {
                let remembered = conn
                    .prepare_cached(
                        "SELECT request, item_id, created_at FROM idempotency_keys WHERE key = ?1",
                    )?
                    .query_row([key.as_str()], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?;
                match remembered {
                    Some((request, item_id, at)) if at > now - ttl_micros => {
                        return if request == fingerprint(fields) {
                            Ok((Outcome::Created(replayed_item(&item_id, &request, at)?), 0))
                        } else {
                            Err(StoreError::IdempotencyKeyReused)
                        };
                    }
                    Some(_expired) => {
                        conn.prepare_cached("DELETE FROM idempotency_keys WHERE key = ?1")?
                            .execute([key.as_str()])?;
                    }
                    None => {}
                }
            }
            let item = insert(conn, fields, now, last_id)?;
            if let Some(key) = key {
                conn.prepare_cached(
                    "INSERT INTO idempotency_keys (key, request, item_id, created_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    key.as_str(),
                    fingerprint(fields),
                    item.id.to_string(),
                    now
                ])?;
            }
            let created = Created {
                item,
                replayed: false,
            };
            Ok((Outcome::Created(created), 1))
        }
        Op::CreateMany(batch) => {
            for fields in batch {
                insert(conn, fields, now, last_id)?;
            }
            let n = batch.len() as i64;
            Ok((Outcome::Done(n as u64), n))
        }
        Op::Update {
            id,
            precondition,
            change,
        } => {
            let (seq, current) = current(conn, *id)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            let fields = change(&current.fields);
            conn.prepare_cached(
                "UPDATE items SET name = ?1, description = ?2, tags = ?3, version = version + 1, \
                 updated_at = ?4 WHERE seq = ?5",
            )?
            .execute(params![
                fields.name.as_str(),
                fields.description.as_ref().map(|d| d.as_str()),
                join_tags(&fields.tags),
                now,
                seq
            ])?;
            for old in current.fields.tags.iter() {
                if !fields.tags.iter().any(|t| t == old) {
                    conn.prepare_cached("DELETE FROM item_tags WHERE tag = ?1 AND seq = ?2")?
                        .execute(params![old.as_str(), seq])?;
                }
            }
            for new in fields.tags.iter() {
                if !current.fields.tags.iter().any(|t| t == new) {
                    conn.prepare_cached("INSERT INTO item_tags (tag, seq) VALUES (?1, ?2)")?
                        .execute(params![new.as_str(), seq])?;
                }
            }
            let item = Item {
                fields,
                version: current.version + 1,
                updated_at: super::from_micros(now)?,
                ..current
            };
            Ok((Outcome::Updated(item), 0))
        }
        Op::Delete { id, precondition } => {
            let (seq, current) = current(conn, *id)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            conn.prepare_cached("DELETE FROM items WHERE seq = ?1")?
                .execute([seq])?;
            for tag in current.fields.tags.iter() {
                conn.prepare_cached("DELETE FROM item_tags WHERE tag = ?1 AND seq = ?2")?
                    .execute(params![tag.as_str(), seq])?;
            }
            Ok((Outcome::Done(1), -1))
        }
        Op::DeleteTagged { tag, limit } => {
            let doomed: Vec<(i64, String)> = conn
                .prepare_cached(
                    "SELECT t.seq, i.tags FROM item_tags t JOIN items i ON i.seq = t.seq \
                     WHERE t.tag = ?1 ORDER BY t.seq LIMIT ?2",
                )?
                .query_map(params![tag.as_str(), limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (seq, tags) in &doomed {
                conn.prepare_cached("DELETE FROM items WHERE seq = ?1")?
                    .execute([seq])?;
                for tag in tags.split(',').filter(|t| !t.is_empty()) {
                    conn.prepare_cached("DELETE FROM item_tags WHERE tag = ?1 AND seq = ?2")?
                        .execute(params![tag, seq])?;
                }
            }
            let n = doomed.len() as i64;
            Ok((Outcome::Done(n as u64), -n))
        }
        Op::PurgeKeys => {
            let purged = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE created_at <= ?1")?
                .execute([now - ttl_micros])?;
            Ok((Outcome::Done(purged as u64), 0))
        }
        Op::Close => unreachable!("the writer handles Close itself"),
    }
}

fn insert(
    conn: &Connection,
    fields: &ItemFields,
    now: i64,
    last_id: &mut Uuid,
) -> Result<Item, StoreError> {
    let mut id = Uuid::now_v7();
    if id <= *last_id {
        id = Uuid::from_u128(last_id.as_u128() + 1);
    }
    *last_id = id;
    conn.prepare_cached(
        "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
    )?
    .execute(params![
        id.to_string(),
        fields.name.as_str(),
        fields.description.as_ref().map(|d| d.as_str()),
        join_tags(&fields.tags),
        now
    ])?;
    let seq = conn.last_insert_rowid();
    for tag in fields.tags.iter() {
        conn.prepare_cached("INSERT INTO item_tags (tag, seq) VALUES (?1, ?2)")?
            .execute(params![tag.as_str(), seq])?;
    }
    new_item(id, fields, now)
}

/// The item's seq and current state, read inside the writer's transaction.
fn current(conn: &Connection, id: Uuid) -> Result<(i64, Item), StoreError> {
    let (seq, row) = conn
        .prepare_cached(
            "SELECT seq, id, name, description, tags, version, created_at, updated_at \
             FROM items WHERE id = ?1",
        )?
        .query_row([id.to_string()], |r| {
            Ok((r.get::<_, i64>(0)?, item_row_from(r, 1)?))
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    Ok((seq, row.into_item()?))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `sqlite://relative/path`, `sqlite:///absolute/path` or `sqlite:path`; the file's directory
/// is created. URL options (`?mode=…`) are refused rather than ignored.
fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url.trim_start_matches("sqlite:");
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.contains('?') {
        return Err(StoreError::Setup(
            "SQLite URLs take no options (nothing after '?'): journal mode, synchronous and \
             caches are set by items itself"
                .into(),
        ));
    }
    if rest.is_empty() || rest == ":memory:" {
        return Err(StoreError::Setup(
            "the SQLite URL needs a file path, such as sqlite://data/items.db".into(),
        ));
    }
    let path = PathBuf::from(rest);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Setup(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    Ok(path)
}

fn open_connection(
    path: &Path,
    busy_timeout: Duration,
    cache_kib: i64,
    reader: bool,
) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Setup(format!(
            "cannot open the SQLite file {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    // WAL: readers never block the writer, nor it them. synchronous=NORMAL in WAL mode keeps
    // every committed write across a process crash. The WAL file is trimmed back to 64 MiB
    // after checkpoints so it cannot keep a burst's size forever.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;",
    )?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "query_only", reader)?;
    Ok(conn)
}

/// Brings the schema to `SCHEMA_VERSION` in one transaction, moving the data along.
/// Version 1 is the schema of the first release (made by sqlx's migrator, which left
/// `_sqlx_migrations` behind and no `user_version`).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // The version is read under the lock: a process that read it before waiting for the lock
    // would migrate again what the process holding the lock had just migrated (and fail), or
    // take a schema a newer build wrote meanwhile for its own.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let mut version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Setup(format!(
            "the SQLite file has schema version {version}, newer than this build's \
             {SCHEMA_VERSION}: run the newer items, or restore a backup"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version == 0 {
        let has_items: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items')",
            [],
            |r| r.get(0),
        )?;
        if !has_items {
            tx.execute_batch(include_str!(
                "../../migrations/sqlite/0001_create_items.sql"
            ))?;
        }
        version = 1;
    }
    if version == 1 {
        tx.execute_batch(include_str!(
            "../../migrations/sqlite/0002_indexed_filters_and_idempotency.sql"
        ))?;
        backfill_tags(&tx)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Fills `item_tags` from the comma-joined column of every existing item.
fn backfill_tags(conn: &Connection) -> Result<(), StoreError> {
    let mut rows = conn.prepare("SELECT seq, tags FROM items WHERE tags <> ''")?;
    let mut insert = conn.prepare("INSERT OR IGNORE INTO item_tags (tag, seq) VALUES (?1, ?2)")?;
    let mut cursor = rows.query([])?;
    while let Some(row) = cursor.next()? {
        let seq: i64 = row.get(0)?;
        let tags: String = row.get(1)?;
        for tag in tags.split(',') {
            insert.execute(params![tag, seq])?;
        }
    }
    Ok(())
}

/// Another connection (another process) holds the lock past the busy timeout.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A read stopped at its request's deadline (`until_deadline`).
fn is_interrupted(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_busy(&e) || is_interrupted(&e) {
            StoreError::Unavailable(Box::new(e))
        } else {
            StoreError::Database(Box::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// .cargo/config.toml's LIBSQLITE3_FLAGS reached the bundled build: neither global mutex
    /// is compiled in.
    #[test]
    fn the_bundled_sqlite_has_no_global_memory_mutexes() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// A store with one reader, on a new file in a directory of its own.
    async fn store_in_temp_dir(what: &str, acquire_timeout: Duration) -> (SqliteStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("meridian-{what}-{}", Uuid::now_v7()));
        let store = SqliteStore::open(&StoreConfig {
            url: format!("sqlite://{}/items.db", dir.display()),
            max_connections: 1,
            max_readers: 1,
            acquire_timeout,
            idempotency_ttl: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        (store, dir)
    }

    /// With every reader slot held (here by a read that waits for the test), the next read
    /// opens no further connection: it waits the acquire timeout and is answered Unavailable
    /// (503), and reads go on once a slot frees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_past_the_reader_cap_wait_then_are_unavailable() {
        let (store, dir) = store_in_temp_dir("readers", Duration::from_millis(200)).await;
        let (reading, started) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .read(move |_| {
                        let _ = reading.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        started.await.unwrap();
        let refused = store.get(Uuid::nil()).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert!(store.get(Uuid::nil()).await.unwrap().is_none());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A page read past its deadline is interrupted inside SQLite and answered Unavailable;
    /// the same read without one completes, on the same connection.
    #[tokio::test]
    async fn a_page_read_stops_at_its_deadline() {
        let (store, dir) = store_in_temp_dir("deadline", Duration::from_secs(5)).await;
        let fields: Vec<ItemFields> = (0..3_000)
            .map(|i| ItemFields::parse(&format!("item {i}"), None, &[]).unwrap())
            .collect();
        store.create_many(fields).await.unwrap();
        let query = |deadline| ListQuery {
            limit: 10,
            name_contains: Some(crate::domain::NameNeedle::parse("zq").unwrap()),
            deadline,
            ..ListQuery::default()
        };
        let past = Instant::now() - Duration::from_millis(1);
        let late = store.list(&query(Some(past))).await;
        assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
        let page = store.list(&query(None)).await.unwrap();
        assert!(page.items.is_empty());
        let far = Instant::now() + Duration::from_secs(60);
        store.list(&query(Some(far))).await.unwrap();
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sqlite_urls_name_a_file_and_create_its_directory() {
        let dir = std::env::temp_dir().join(format!("meridian-url-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/items.db", dir.display());
        assert_eq!(database_path(&url).unwrap(), dir.join("sub/items.db"));
        assert!(dir.join("sub").is_dir());
        assert_eq!(database_path("sqlite:x.db").unwrap(), PathBuf::from("x.db"));
        assert!(database_path("sqlite:x.db?mode=ro").is_err());
        assert!(database_path("sqlite::memory:").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
