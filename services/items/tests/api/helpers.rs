//! `spawn_app` for the items tests: a real timezones process (the binary, as in production; the
//! services never import each other), the items app in-process, and a fresh database per test.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use items::configuration::Settings;
use items::startup::Application;
use platform::Env;
use serde_json::Value;
use sqlx::Connection;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const SECRET_MESSAGE: &str = "the-test-secret-message";
pub const GREETING: &str = "Hello from the tests";
pub const FALLBACK_OFFSET: &str = "+05:30";
/// Where `scripts/test.sh` starts a throwaway PostgreSQL; tests create one database each.
pub const POSTGRES_URL_VAR: &str = "MERIDIAN_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(db: Db)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Db::Postgres).await })*
        }
    };
}

/// A service binary started with piped stdout: its JSON log lines are collected as they come,
/// and its address is read from its "listening" line.
pub struct LoggedProcess {
    pub child: Child,
    pub address: String,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Held while stdout is left unread (see `start_with_unread_stdout`); dropping it lets the
    /// reader go on.
    unread: Option<std::sync::mpsc::Sender<()>>,
}

impl LoggedProcess {
    pub fn start(command: &mut Command) -> Self {
        Self::spawn(command, false)
    }

    /// Like `start`, but stdout is read only up to the "listening" line and then left unread
    /// (the pipe stays open), as a log shipper that has stopped would leave it.
    pub fn start_with_unread_stdout(command: &mut Command) -> Self {
        Self::spawn(command, true)
    }

    /// The metrics address (`http://host:port`) from the "metrics listening" line.
    pub fn metrics_address(&self) -> String {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|e| e["message"] == "metrics listening" && e["target"] == "platform::lifecycle")
            .and_then(|e| e["addr"].as_str().map(|addr| format!("http://{addr}")))
            .expect("the service logs its metrics address before its API address")
    }

    fn spawn(command: &mut Command, leave_unread: bool) -> Self {
        let (unread, stalled) = std::sync::mpsc::channel::<()>();
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                // Ours, not the web framework's own "listening" lines.
                let listening =
                    event["message"] == "listening" && event["target"] == "platform::lifecycle";
                lines.lock().unwrap().push(line);
                if listening {
                    let _ = addr_tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                    if leave_unread {
                        // Blocks until the process handle is dropped.
                        let _ = stalled.recv();
                    }
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the service logs its address within 20 s");
        Self {
            child,
            address: format!("http://{addr}"),
            log,
            reader: Some(reader),
            unread: leave_unread.then_some(unread),
        }
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code, then every line it
    /// logged. Kills it if it does not exit in time.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        let deadline = std::time::Instant::now() + timeout;
        let mut code = None;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if code.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.unread.take();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (code, self.lines())
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The timezones binary, running on a free port; killed on drop. Its log lines are kept so
/// tests can count the calls items makes.
pub struct TimezonesProcess {
    process: LoggedProcess,
    pub url: String,
}

impl TimezonesProcess {
    pub fn start() -> Self {
        Self::start_with("127.0.0.1:0", &[])
    }

    /// Starts timezones listening on `bind_addr`, with extra settings.
    pub fn start_with(bind_addr: &str, env: &[(&str, String)]) -> Self {
        let process = LoggedProcess::start(
            Command::new(sibling_binary("timezones"))
                .env_clear()
                .env("BIND_ADDR", bind_addr)
                .env("METRICS_ADDR", "127.0.0.1:0")
                .env("LOG_FORMAT", "json")
                .envs(env.iter().map(|(k, v)| (k, v))),
        );
        let url = process.address.clone();
        Self { process, url }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

impl TimezonesProcess {
    /// How many requests for `path` timezones has logged.
    pub async fn requests_to(&self, path: &str) -> usize {
        self.count_logged(|e| e["path"] == path).await
    }

    /// How many requests carrying this `X-Request-ID` timezones has logged.
    pub async fn requests_with_id(&self, request_id: &str) -> usize {
        self.count_logged(|e| e["span"]["request_id"] == request_id)
            .await
    }

    /// Waits up to `timeout` for a logged request matching `matches`; true if one came.
    pub async fn wait_for_logged(
        &self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.count_logged(&matches).await > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Counts logged requests after every earlier line has been read: a marker request is
    /// sent and awaited in the log, since timezones logs in order.
    async fn count_logged(&self, matches: impl Fn(&Value) -> bool) -> usize {
        let marker = format!("log-marker-{}", uuid::Uuid::now_v7());
        reqwest::Client::new()
            .get(format!("{}/healthz", self.url))
            .header("x-request-id", &marker)
            .send()
            .await
            .expect("timezones answers");
        let completed = |e: &Value| e["message"] == "request completed";
        for _ in 0..500 {
            let events: Vec<Value> = self
                .process
                .lines()
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .filter(completed)
                .collect();
            if events
                .iter()
                .any(|e| e["span"]["request_id"] == marker.as_str())
            {
                return events.iter().filter(|e| matches(e)).count();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timezones did not log the marker request within 5 s");
    }
}

/// A binary of this workspace, next to the test executable's `deps/` directory. The test
/// command builds all binaries first; `cargo test -p items` alone needs
/// `cargo build -p timezones` before it.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    sqlite_dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn create(db: Db) -> Self {
        let name = format!("meridian_test_{}", uuid::Uuid::now_v7().simple());
        match db {
            Db::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                Self {
                    url: format!("sqlite://{}/items.db", dir.display()),
                    sqlite_dir: Some(dir),
                }
            }
            Db::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
                    panic!(
                        "{POSTGRES_URL_VAR} is not set: run scripts/test.sh, which starts \
                         PostgreSQL, or point it at a server where you may create databases"
                    )
                });
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create a test database");
                let base = admin_url.rsplit_once('/').expect("URL has a database").0;
                Self {
                    url: format!("{base}/{name}"),
                    sqlite_dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub metrics_address: String,
    pub client: reqwest::Client,
    pub timezones: Option<TimezonesProcess>,
    pub db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Options beyond the defaults.
pub struct Options {
    pub db: Db,
    pub timezones: Timezones,
    /// Extra settings for items, overriding the test defaults.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            db: Db::Sqlite,
            timezones: Timezones::Started(Vec::new()),
            env: Vec::new(),
        }
    }
}

/// Which timezones items talks to.
pub enum Timezones {
    /// A timezones process started for the test, with these extra settings.
    Started(Vec<(&'static str, String)>),
    /// None: items points at a closed port.
    Down,
    /// One the test runs itself, at this URL.
    At(String),
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(Options {
        db,
        ..Options::default()
    })
    .await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let (timezones, timezones_url) = match options.timezones {
        Timezones::Started(env) => {
            let process = TimezonesProcess::start_with("127.0.0.1:0", &env);
            let url = process.url.clone();
            (Some(process), url)
        }
        Timezones::Down => (None, format!("http://{}", closed_port())),
        Timezones::At(url) => (None, url),
    };
    let db = TestDb::create(options.db).await;
    let mut env = vec![
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("TIMEZONES_URL", timezones_url),
        ("TIMEZONES_TIMEOUT_MS", "2000".to_owned()),
        ("DUMMY_API_KEY", API_KEY.to_owned()),
        ("SECRET_MESSAGE", SECRET_MESSAGE.to_owned()),
        ("GREETING", GREETING.to_owned()),
        ("TIMEZONE_OFFSET", FALLBACK_OFFSET.to_owned()),
    ];
    env.extend(options.env);
    let settings = Settings::from_env(&Env::from_pairs(env.iter().map(|(k, v)| (*k, v.as_str()))))
        .expect("test settings are valid");
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let metrics_address = format!("http://{}", app.metrics_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async move {
            let _ = stopped.await;
        })
        .await
        .expect("app runs");
    });
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::new(),
        timezones,
        db,
        stop: Some(stop),
        server: Some(server),
    }
}

/// An address nothing listens on: bound, then released.
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches items")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// POST /v1/items with the API key; returns the created item.
    pub async fn create(&self, body: Value) -> Value {
        let response = self
            .client
            .post(self.url("/v1/items"))
            .header("x-api-key", API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "create {body}");
        response.json().await.unwrap()
    }

    /// A write with the API key.
    pub fn write(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-api-key", API_KEY)
    }

    /// Stops the app, waits until it has shut down, and hands back its database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("app stops cleanly");
        }
        self.db
    }
}

/// Another store on the app's database, for writing test data in bulk (`create_many`).
pub async fn second_store(app: &TestApp) -> items::store::Store {
    items::store::Store::connect(&items::store::StoreConfig {
        url: app.db.url.clone(),
        max_connections: 1,
        max_readers: 1,
        acquire_timeout: Duration::from_secs(5),
        idempotency_ttl: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

/// Asserts an RFC 9457 problem with this status, and returns it.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "{:?}",
        response.url().path()
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["type"].is_string());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// The names of a page's items, in order.
pub fn item_names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items is a list")
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}
