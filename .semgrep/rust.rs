// Cases for .semgrep/rust.yml: `semgrep --test .semgrep/` expects a finding on every line after
// a `ruleid:` comment and none after `ok:`.

async fn load(pool: &Pool, table: &str, id: &str) {
    // ruleid: sql-built-from-strings
    sqlx::query(&format!("SELECT * FROM {table} WHERE id = '{id}'")).fetch_one(pool).await;
    // ruleid: sql-built-from-strings
    sqlx::query_as(format!("DELETE FROM items WHERE id = '{id}'"));
    // ok: sql-built-from-strings
    sqlx::query("SELECT * FROM items WHERE id = $1").bind(id).fetch_one(pool).await;
}

fn rusqlite_lookup(conn: &rusqlite::Connection, id: &str, cache: i64) {
    // ruleid: sql-built-from-strings
    conn.prepare_cached(&format!("SELECT * FROM items WHERE id = '{id}'"));
    // ruleid: sql-built-from-strings
    conn.execute_batch(&format!("PRAGMA cache_size = {cache}"));
    // ruleid: sql-built-from-strings
    conn.query_row(&format!("SELECT name FROM items WHERE id = '{id}'"), [], |r| r.get(0));
    // ok: sql-built-from-strings
    conn.prepare_cached("SELECT * FROM items WHERE id = ?1");
    // ok: sql-built-from-strings
    conn.pragma_update(None, "cache_size", cache);
}

fn client() {
    // ruleid: tls-verification-disabled
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build();
    // ok: tls-verification-disabled
    let http = reqwest::Client::builder().danger_accept_invalid_certs(false).build();
}

async fn wait_for_it() {
    // ruleid: blocking-sleep-in-async
    std::thread::sleep(Duration::from_millis(10));
    // ok: blocking-sleep-in-async
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn blocking_is_fine_here() {
    // ok: blocking-sleep-in-async
    std::thread::sleep(Duration::from_millis(10));
}

fn logging(settings: &Settings) {
    // ruleid: secret-value-logged
    tracing::info!(api_key = %settings.api_key, "starting");
    // ruleid: secret-value-logged
    debug!(database_url = ?settings.database_url, "connecting");
    // ok: secret-value-logged
    tracing::info!(zone = %settings.zone, "starting");
    // ok: secret-value-logged
    tracing::info!(api_key_set = true, "starting");
}
