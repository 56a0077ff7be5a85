//! Item storage over sqlx's `Any` driver: an SQLite file by default, PostgreSQL when
//! `DATABASE_URL` says so. One schema and one set of queries serve both (see `migrations/`),
//! so the two back ends cannot drift apart.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use uuid::Uuid;

use crate::domain::{Description, ItemFields, ItemName, Precondition, Tag, Tags};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often a write re-reads and retries when another writer changed the item in between.
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: Uuid,
    pub fields: ItemFields,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("item not found")]
    NotFound,
    #[error("the item's version does not match If-Match")]
    PreconditionFailed,
    #[error("the item kept changing while being written")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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
    pub name_contains: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects, creating an SQLite file (and its directory) on first start, and applies the
    /// migrations. On PostgreSQL the migrator holds an advisory lock, so replicas starting
    /// together apply them once.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(database_url).ok_or_else(|| {
            StoreError::Setup("the URL must start with sqlite: or postgres:".into())
        })?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(database_url)?,
            Backend::Postgres => database_url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer. synchronous=NORMAL in WAL mode
                        // keeps every committed write across a process crash (SIGKILL); only an
                        // OS crash or power loss can drop the last commits.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(e.into()))?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many items are stored.
    pub async fn count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM items")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn create(&self, fields: &ItemFields) -> Result<Item, StoreError> {
        let now = now_micros();
        let item = Item {
            id: Uuid::now_v7(),
            fields: fields.clone(),
            version: 1,
            created_at: from_micros(now)?,
            updated_at: from_micros(now)?,
        };
        sqlx::query(
            "INSERT INTO items (id, name, description, tags, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(item.id.to_string())
        .bind(fields.name.as_str().to_owned())
        .bind(fields.description.as_ref().map(|d| d.as_str().to_owned()))
        .bind(join_tags(&fields.tags))
        .bind(item.version)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(item)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Item>, StoreError> {
        sqlx::query(
            "SELECT id, name, description, tags, version, created_at, updated_at \
             FROM items WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .map(|row| item_from_row(&row))
        .transpose()
    }

    /// Items in id (= creation) order, after the cursor, matching the filters.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Item>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM items WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let placeholder = |value: String, binds: &mut Vec<String>| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(after) = query.after {
            let p = placeholder(after.to_string(), &mut binds);
            sql.push_str(&format!(" AND id > {p}"));
        }
        if let Some(tag) = &query.tag {
            let p = placeholder(format!("%,{},%", tag.as_str()), &mut binds);
            sql.push_str(&format!(" AND (',' || tags || ',') LIKE {p}"));
        }
        if let Some(needle) = &query.name_contains {
            let p = placeholder(
                format!("%{}%", escape_like(&needle.to_lowercase())),
                &mut binds,
            );
            sql.push_str(&format!(" AND LOWER(name) LIKE {p} ESCAPE '\\'"));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", query.limit));
        // Audited: `sql` holds only constant text, `$n` placeholders and the integer limit;
        // every user-supplied value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in binds {
            q = q.bind(value);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(item_from_row)
            .collect()
    }

    /// Replaces or patches an item: `change` computes the new fields from the current ones.
    /// The write only lands on the version it was computed from, so concurrent writers never
    /// overwrite each other silently.
    pub async fn update(
        &self,
        id: Uuid,
        precondition: &Precondition,
        change: impl Fn(&ItemFields) -> ItemFields,
    ) -> Result<Item, StoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.get(id).await?.ok_or(StoreError::NotFound)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            let fields = change(&current.fields);
            let now = now_micros();
            let updated = sqlx::query(
                "UPDATE items SET name = $1, description = $2, tags = $3, version = version + 1, \
                 updated_at = $4 WHERE id = $5 AND version = $6",
            )
            .bind(fields.name.as_str().to_owned())
            .bind(fields.description.as_ref().map(|d| d.as_str().to_owned()))
            .bind(join_tags(&fields.tags))
            .bind(now)
            .bind(id.to_string())
            .bind(current.version)
            .execute(&self.pool)
            .await?;
            if updated.rows_affected() == 1 {
                return Ok(Item {
                    fields,
                    version: current.version + 1,
                    updated_at: from_micros(now)?,
                    ..current
                });
            }
        }
        Err(StoreError::Conflict)
    }

    pub async fn delete(&self, id: Uuid, precondition: &Precondition) -> Result<(), StoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.get(id).await?.ok_or(StoreError::NotFound)?;
            if !precondition.allows(current.version) {
                return Err(StoreError::PreconditionFailed);
            }
            let deleted = sqlx::query("DELETE FROM items WHERE id = $1 AND version = $2")
                .bind(id.to_string())
                .bind(current.version)
                .execute(&self.pool)
                .await?;
            if deleted.rows_affected() == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Conflict)
    }

    /// Closes the pool, checkpointing SQLite's WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const COLUMNS: &str = "id, name, description, tags, version, created_at, updated_at";

fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// Creates the database file's directory and asks SQLite to create the file (`mode=rwc`)
/// unless the URL chose a mode itself.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let directory = Path::new(path)
        .parent()
        .filter(|d| path != ":memory:" && !d.as_os_str().is_empty());
    if let Some(dir) = directory {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Setup(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    Ok(if query.split('&').any(|kv| kv.starts_with("mode=")) {
        url.to_owned()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    })
}

fn join_tags(tags: &Tags) -> String {
    tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",")
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

/// Rows are re-parsed through the domain types: what the database hands back is input too.
fn item_from_row(row: &AnyRow) -> Result<Item, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let id: String = row.try_get("id")?;
    let name: String = row.try_get("name")?;
    let description: Option<String> = row.try_get("description")?;
    let tags: String = row.try_get("tags")?;
    let tags: Vec<String> = if tags.is_empty() {
        Vec::new()
    } else {
        tags.split(',').map(str::to_owned).collect()
    };
    Ok(Item {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("id", &e))?,
        fields: ItemFields {
            name: ItemName::parse(&name).map_err(|e| corrupt("name", &e.message))?,
            description: description
                .as_deref()
                .map(Description::parse)
                .transpose()
                .map_err(|e| corrupt("description", &e.message))?,
            tags: Tags::parse(&tags).map_err(|e| corrupt("tags", &format!("{e:?}")))?,
        },
        version: row.try_get("version")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("meridian-url-{}", std::process::id()));
        let url = format!("sqlite://{}/sub/items.db", dir.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.join("sub").is_dir());
        assert_eq!(
            prepare_sqlite_url("sqlite::memory:?cache=shared").unwrap(),
            "sqlite::memory:?cache=shared&mode=rwc"
        );
        assert_eq!(
            prepare_sqlite_url("sqlite:x.db?mode=ro").unwrap(),
            "sqlite:x.db?mode=ro"
        );
    }

    #[test]
    fn like_wildcards_in_user_input_are_literal() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn backends_are_recognised_by_scheme() {
        assert_eq!(backend_of("sqlite://data/items.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("mysql://u@h/db"), None);
    }
}
