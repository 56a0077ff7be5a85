//! The `items` binary itself: start-up errors, secrets from files, no secrets in logs, and a
//! clean exit on SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Db, LoggedProcess, TestDb, TimezonesProcess};

pub const KEY: &str = "binary-test-key-0123456789";
const SECRET: &str = "binary-test-secret-message";

/// The binary with a valid environment that stops short of serving (its database directory
/// cannot be created), so a test that expects a start-up error never leaves a server running.
pub fn items_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_items"));
    command
        .env_clear()
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("DUMMY_API_KEY", KEY)
        .env("SECRET_MESSAGE", SECRET)
        .env(
            "DATABASE_URL",
            "sqlite:///proc/meridian-cannot-create/items.db",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn bad_settings_stop_the_process_with_one_line_naming_them() {
    // (settings to leave out of a valid environment, settings to add, the one to be named)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        (&["DUMMY_API_KEY"], &[], "DUMMY_API_KEY"),
        (&["SECRET_MESSAGE"], &[], "SECRET_MESSAGE"),
        (
            &["DUMMY_API_KEY"],
            &[("DUMMY_API_KEY_FILE", "/nonexistent/key")],
            "DUMMY_API_KEY_FILE",
        ),
        (
            &[],
            &[("DUMMY_API_KEY_FILE", "/etc/hostname")],
            "DUMMY_API_KEY",
        ),
        (&[], &[("TIMEZONE_OFFSET", "UTC+5")], "TIMEZONE_OFFSET"),
        (&["BIND_ADDR"], &[("BIND_ADDR", "localhost")], "BIND_ADDR"),
        (
            &[],
            &[("DATABASE_URL", "mysql://root:hunter2@db/items")],
            "DATABASE_URL",
        ),
    ];
    for (leave_out, add, setting) in cases {
        let mut command = items_command();
        for name in leave_out {
            command.env_remove(name);
        }
        let output = command
            .envs(add.iter().copied())
            .output()
            .expect("items runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "exit code for bad {setting}; stderr: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(setting), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stderr.contains(KEY),
            "no secrets: {stderr}"
        );
    }
}

#[tokio::test]
async fn secrets_from_files_work_and_never_reach_the_logs() {
    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Sqlite).await;
    let dir = std::env::temp_dir().join(format!("meridian-secrets-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("api-key"), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();

    let mut items = LoggedProcess::start(
        items_command()
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", &timezones.url)
            .env_remove("DUMMY_API_KEY")
            .env_remove("SECRET_MESSAGE")
            .env("DUMMY_API_KEY_FILE", dir.join("api-key"))
            .env("SECRET_MESSAGE_FILE", dir.join("secret"))
            .env("LOG_LEVEL", "trace"),
    );
    let address = items.address.clone();
    let client = reqwest::Client::new();

    let created = client
        .post(format!("{address}/v1/items"))
        .header("x-api-key", KEY)
        .json(&serde_json::json!({"name": "from a file key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status().as_u16(),
        201,
        "the key read from the file works"
    );
    let secret: Value = client
        .get(format!("{address}/v1/secret"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(secret["message"], SECRET);
    let wrong = client
        .get(format!("{address}/v1/secret"))
        .header("x-api-key", format!("{KEY}-wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    let greeting = client
        .get(format!("{address}/v1/greeting?tz=Europe/Paris"))
        .send()
        .await
        .unwrap();
    assert_eq!(greeting.status().as_u16(), 200);

    // SIGTERM: the process drains and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &items.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (exit, lines) = items.wait_for_exit(Duration::from_secs(30));
    assert_eq!(exit, Some(0), "clean exit on SIGTERM");

    let logs = lines.join("\n");
    let mut stderr = String::new();
    items
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(lines.len() > 5, "trace logging produced output: {logs}");
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "every log line is JSON: {line}"
        );
    }
    let requests: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "request completed")
        .collect();
    assert!(requests.len() >= 4, "one line per request");
    let is_hex = |v: &Value, len: usize| {
        v.as_str()
            .is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    for event in &requests {
        assert!(
            event["method"].is_string() && event["route"].is_string(),
            "{event}"
        );
        assert!(
            event["status"].is_u64() && event["duration_ms"].is_f64(),
            "{event}"
        );
        assert!(
            is_hex(&event["trace_id"], 32) && is_hex(&event["span_id"], 16),
            "{event}"
        );
        assert!(event["span"]["request_id"].is_string(), "{event}");
    }
    assert!(
        requests
            .iter()
            .any(|e| e["route"] == "/v1/items" && e["method"] == "POST" && e["status"] == 201),
        "the create is logged by route template"
    );
    for text in [&logs, &stderr] {
        assert!(!text.contains(KEY), "the API key leaked into the logs");
        assert!(
            !text.contains(SECRET),
            "the secret message leaked into the logs"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_healthcheck_subcommand_probes_a_running_instance() {
    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Sqlite).await;
    let items = LoggedProcess::start(
        items_command()
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", &timezones.url),
    );
    let addr = items.address.trim_start_matches("http://");
    let probe = |bind: &str| {
        items_command()
            .env("BIND_ADDR", bind)
            .arg("healthcheck")
            .output()
            .expect("healthcheck runs")
    };
    let healthy = probe(addr);
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let port = addr.rsplit_once(':').unwrap().1;
    let all_interfaces = probe(&format!("0.0.0.0:{port}"));
    assert_eq!(
        all_interfaces.status.code(),
        Some(0),
        "0.0.0.0 is probed on loopback"
    );
    let nobody = probe(&crate::helpers::closed_port().to_string());
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("healthcheck"));
}

/// Kubernetes starts several replicas at once against one fresh database: the migrations must
/// run exactly once (the PostgreSQL migrator holds an advisory lock while it runs) and every
/// replica must come up serving the same data.
#[tokio::test]
async fn replicas_starting_at_once_on_a_fresh_postgres_database_migrate_it_once() {
    const REPLICAS: usize = 4;
    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Postgres).await;
    let starts: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let (url, timezones_url) = (db.url.clone(), timezones.url.clone());
            std::thread::spawn(move || {
                LoggedProcess::start(
                    items_command()
                        .env("DATABASE_URL", url)
                        .env("TIMEZONES_URL", timezones_url),
                )
            })
        })
        .collect();
    let replicas: Vec<LoggedProcess> = starts
        .into_iter()
        .map(|start| start.join().expect("every replica starts"))
        .collect();

    let client = reqwest::Client::new();
    for replica in &replicas {
        let ready = client
            .get(format!("{}/readyz", replica.address))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "{} is not ready", replica.address);
    }
    let created: Value = client
        .post(format!("{}/v1/items", replicas[0].address))
        .header("X-API-Key", KEY)
        .json(&serde_json::json!({"name": "seen by every replica"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for replica in &replicas[1..] {
        let url = format!(
            "{}/v1/items/{}",
            replica.address,
            created["id"].as_str().unwrap()
        );
        assert_eq!(client.get(url).send().await.unwrap().status(), 200);
    }

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count();
    assert_eq!(applied as usize, files, "each migration is recorded once");
}
