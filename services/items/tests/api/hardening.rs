//! Hostile clients against the real `items` binary (docs/resilience.md, "Hostile clients"): a
//! head sent a byte at a time, idle keep-alive connections, oversized heads, a connection flood
//! past the file-descriptor limit, clients that hang up mid-request, and a log sink nobody reads.
//! Raw sockets where the test needs to misbehave; every wait polls a real signal (the socket, the
//! metrics port, the log) up to a deadline.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binary::items_command;
use crate::helpers::{Db, LoggedProcess, TestDb, closed_port};

/// The server keeps its connection clocks in whole milliseconds, so a deadline may fall up to a
/// millisecond before the exact instant; the lower bounds below allow a little more.
const CLOCK_GRAIN: Duration = Duration::from_millis(5);

/// The items binary on a fresh SQLite database, timezones unreachable (nothing here needs it).
struct Items {
    process: LoggedProcess,
    /// `host:port` of the API.
    addr: String,
    /// `http://host:port` of `/metrics`.
    metrics: String,
    _db: TestDb,
}

fn configured(db: &TestDb, env: &[(&str, &str)]) -> Command {
    let mut command = items_command();
    command
        .env("DATABASE_URL", &db.url)
        .env("TIMEZONES_URL", format!("http://{}", closed_port()))
        .envs(env.iter().copied());
    command
}

impl Items {
    async fn start(env: &[(&str, &str)]) -> Self {
        let db = TestDb::create(Db::Sqlite).await;
        Self::from(LoggedProcess::start(&mut configured(&db, env)), db)
    }

    fn from(process: LoggedProcess, db: TestDb) -> Self {
        let addr = process.address.trim_start_matches("http://").to_owned();
        let metrics = process.metrics_address();
        Self {
            process,
            addr,
            metrics,
            _db: db,
        }
    }

    async fn scrape(&self) -> String {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.metrics))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the metrics port answers");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Polls `/metrics` until `metric{labels}` satisfies `wanted`, for up to `within`.
    async fn wait_for_metric(
        &self,
        metric: &str,
        labels: &[&str],
        within: Duration,
        wanted: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let text = self.scrape().await;
            let value = sum(&text, metric, labels);
            if wanted(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{metric}{labels:?} is {value} after {within:?}:\n{}",
                series(&text, metric).join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// The sample lines of `metric` (exactly that name, any labels).
fn series<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The sum of `metric`'s samples whose labels include every `label="value"` given (0 if none).
fn sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    series(text, metric)
        .into_iter()
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            let value = line.rsplit_once(' ').expect("a sample has a value").1;
            value.parse::<f64>().expect("a sample's value is a number")
        })
        .sum()
}

/// Reads until the peer closes (EOF or reset), keeping what arrived. Bounded by the caller.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), received: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("reading the connection: {e}"),
        }
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body off a keep-alive connection;
/// returns its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.expect("reading a response");
        assert!(n > 0, "closed before a whole response head: {data:?}");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("a Content-Length: {head}"));
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("reading a body");
        assert!(n > 0, "closed in the middle of a body");
        data.extend_from_slice(&buf[..n]);
    }
    assert_eq!(data.len(), head_end + length, "nothing after the response");
    (status, data[head_end..].to_vec())
}

/// GET `path` on an open keep-alive connection; returns the status.
async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: items\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read_response(stream))
        .await
        .expect("an answer within 10 s")
        .0
}

/// A request head of at least `size` bytes: `GET /healthz` padded with 1,000-byte headers.
fn head_of(size: usize) -> Vec<u8> {
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: items\r\n".to_vec();
    let mut i = 0;
    while head.len() + 2 < size {
        head.extend_from_slice(format!("X-Pad-{i:03}: {}\r\n", "a".repeat(1000)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_read_timeout() {
    let items = Items::start(&[("HTTP_HEADER_READ_TIMEOUT_MS", "500")]).await;

    let started = Instant::now();
    let stream = TcpStream::connect(&items.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: items\r\n")
        .await
        .unwrap();
    // One more byte every 100 ms, at most 100 of them (10 s, far past the bound below): the
    // trickle must not keep the connection alive.
    let trickle = tokio::spawn(async move {
        for byte in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')).take(100) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(&mut reader, &mut received),
    )
    .await
    .expect("the server closes a slow head's connection");
    let elapsed = started.elapsed();
    trickle.abort();
    eprintln!("a slow first head: closed {elapsed:?} after connecting");

    assert!(
        elapsed >= Duration::from_millis(500) - CLOCK_GRAIN,
        "closed before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed long after the 500 ms timeout: {elapsed:?}"
    );
    assert!(
        !received.starts_with(b"HTTP/1.1 2"),
        "an incomplete head is never served: {}",
        String::from_utf8_lossy(&received)
    );
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="header_timeout""#],
            Duration::from_secs(5),
            |closed| closed == 1.0,
        )
        .await;

    // Anyone else is served as usual.
    let mut fresh = TcpStream::connect(&items.addr).await.unwrap();
    assert_eq!(get_on(&mut fresh, "/healthz").await, 200);

    // The clock also runs for a later head on a keep-alive connection: one request answered,
    // a pause past the first head's timeout (well inside the 120 s idle timeout), then a head
    // trickled a byte every 100 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let head_started = Instant::now();
    let (mut reader, mut writer) = fresh.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET /healthz HTTP/1.1\r\nHost: items\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(100) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(&mut reader, &mut received),
    )
    .await
    .expect("the server closes a slow second head's connection");
    let elapsed = head_started.elapsed();
    trickle.abort();
    eprintln!("a slow second head: closed {elapsed:?} after its first byte");
    assert!(
        (Duration::from_millis(500) - CLOCK_GRAIN..Duration::from_secs(3)).contains(&elapsed),
        "a slow second head is cut off 500 ms after its first byte, not {elapsed:?} after"
    );
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="header_timeout""#],
            Duration::from_secs(5),
            |closed| closed == 2.0,
        )
        .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_kept() {
    let items = Items::start(&[
        ("HTTP_IDLE_TIMEOUT_MS", "1000"),
        ("HTTP_HEADER_READ_TIMEOUT_MS", "10000"),
    ])
    .await;
    assert_eq!(
        sum(
            &items.scrape().await,
            "http_server_connections_closed_total",
            &[r#"reason="idle_timeout""#]
        ),
        0.0
    );

    // One request, then silence: closed after the idle timeout (counted from the answer, so
    // at least 1 s after the request was sent), well before the header timeout.
    let mut idle = TcpStream::connect(&items.addr).await.unwrap();
    let sent = Instant::now();
    assert_eq!(get_on(&mut idle, "/healthz").await, 200);
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(&mut idle, &mut received),
    )
    .await
    .expect("the server closes an idle connection");
    let elapsed = sent.elapsed();
    eprintln!("an idle connection: closed {elapsed:?} after its request was sent");
    assert!(
        elapsed >= Duration::from_millis(1000) - CLOCK_GRAIN,
        "closed before the idle timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "closed long after the 1 s idle timeout: {elapsed:?}"
    );
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="idle_timeout""#],
            Duration::from_secs(5),
            |closed| closed == 1.0,
        )
        .await;

    // A request every 200 ms for 3 s (three idle timeouts): the same connection serves all.
    let mut busy = TcpStream::connect(&items.addr).await.unwrap();
    for _ in 0..15 {
        assert_eq!(get_on(&mut busy, "/healthz").await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get_on(&mut busy, "/healthz").await, 200);
    let text = items.scrape().await;
    assert_eq!(
        sum(
            &text,
            "http_server_connections_closed_total",
            &[r#"reason="idle_timeout""#]
        ),
        1.0,
        "only the idle connection was closed"
    );
    assert_eq!(
        sum(
            &text,
            "http_server_connections_closed_total",
            &[r#"reason="header_timeout""#]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431_and_one_under_it_is_served() {
    let items = Items::start(&[]).await;

    // Under the default 32 KiB: served.
    let mut fine = TcpStream::connect(&items.addr).await.unwrap();
    fine.write_all(&head_of(8 * 1024)).await.unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut fine))
        .await
        .expect("an answer within 10 s");
    assert_eq!(status, 200, "an 8 KiB head is served");

    // Over it: 431 from the parser, and the connection is closed.
    let mut big = TcpStream::connect(&items.addr).await.unwrap();
    big.write_all(&head_of(40 * 1024)).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(&mut big, &mut received),
    )
    .await
    .expect("the server answers and closes within 10 s");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 431 "),
        "a 40 KiB head gets 431: {text}"
    );
    // hyper answered it without the service: the server counts it.
    items
        .wait_for_metric(
            "http_server_requests_rejected_total",
            &[r#"listener="api""#, r#"status="431""#],
            Duration::from_secs(5),
            |rejected| rejected == 1.0,
        )
        .await;

    // A head hyper cannot parse: 400, counted the same way.
    let mut garbled = TcpStream::connect(&items.addr).await.unwrap();
    garbled
        .write_all(b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(&mut garbled, &mut received),
    )
    .await
    .expect("the server answers and closes within 10 s");
    assert!(
        received.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&received)
    );
    items
        .wait_for_metric(
            "http_server_requests_rejected_total",
            &[r#"listener="api""#, r#"status="400""#],
            Duration::from_secs(5),
            |rejected| rejected == 1.0,
        )
        .await;
}

/// `command` run under `sh -c 'ulimit -n LIMIT && exec ...'`: the same process (its pid is the
/// binary's), with a soft limit of `limit` open files.
fn with_open_file_limit(command: &Command, limit: u32) -> Command {
    let mut wrapped = Command::new("/bin/sh");
    wrapped
        .arg("-c")
        .arg(format!(r#"ulimit -n {limit} && exec "$0" "$@""#))
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear()
        .envs(
            command
                .get_envs()
                .filter_map(|(name, value)| Some((name, value?))),
        )
        .stderr(Stdio::piped());
    wrapped
}

/// CPU time (user + system) the process has used, from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

#[tokio::test]
async fn a_connection_flood_past_the_descriptor_limit_waits_and_service_resumes() {
    const OPEN_FILES: u32 = 200;
    const FLOOD: usize = 400;
    // The default cap: the soft limit less the descriptors kept for everything else.
    let cap = (u64::from(OPEN_FILES) - platform::settings::RESERVED_DESCRIPTORS) as f64;

    let db = TestDb::create(Db::Sqlite).await;
    let mut command = with_open_file_limit(&configured(&db, &[]), OPEN_FILES);
    let mut items = Items::from(LoggedProcess::start(&mut command), db);
    let pid = items.process.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits.lines().any(|l| l.starts_with("Max open files")
            && l.split_whitespace().nth(3) == Some(&OPEN_FILES.to_string())),
        "the binary runs with a soft limit of 200 open files:\n{limits}"
    );

    // All at once, each given 2 s: past the listener's backlog the kernel drops SYNs and the
    // client would retry only after a second, so a few may not connect.
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let addr = items.addr.clone();
        connecting.spawn(async move {
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        });
    }
    let mut flood = Vec::new();
    while let Some(connected) = connecting.join_next().await {
        if let Ok(Ok(stream)) = connected.unwrap() {
            flood.push(stream);
        }
    }
    // 400 attempted against 200 descriptors: a server accepting all it could would run out.
    // Those past the cap are held by the kernel, not the process.
    assert!(
        flood.len() as f64 > cap,
        "more connections than the cap are open or waiting: {}",
        flood.len()
    );
    // The server holds its cap of them; the rest wait in the kernel's accept backlog.
    let open = items
        .wait_for_metric(
            "http_server_connections_open",
            &[r#"listener="api""#],
            Duration::from_secs(10),
            |open| open >= cap,
        )
        .await;
    assert_eq!(open, cap, "connections open at the API port");

    let before = cpu_time(pid);
    let flooded = Instant::now();
    // The flooded period: a server retrying a failing accept in a loop burns a core here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_time(pid) - before;
    let period = flooded.elapsed();
    eprintln!(
        "flood: {} connections, {open} open at the server (cap {cap}), {spent:?} CPU in {period:?}",
        flood.len()
    );
    assert!(
        spent < Duration::from_millis(300),
        "the process used {spent:?} of CPU in {period:?} while flooded"
    );
    assert!(
        items.process.child.try_wait().unwrap().is_none(),
        "the process is still running"
    );
    let open = sum(
        &items.scrape().await,
        "http_server_connections_open",
        &[r#"listener="api""#],
    );
    assert_eq!(open, cap, "connections open at the API port");

    drop(flood);
    let flood_ended = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = reqwest::Client::new()
            .get(format!("http://{}/healthz", items.addr))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if health.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz not 200 within 20 s of the flood ending: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(items.get("/v1/items").await.status(), 200);
    eprintln!(
        "flood: /healthz and GET /v1/items answered {:?} after the flood ended",
        flood_ended.elapsed()
    );
    assert!(items.process.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn a_request_whose_client_hangs_up_is_counted_and_logged_as_499() {
    let items = Items::start(&[("FAULT_DELAY_MS", "3000")]).await;
    let request_id = format!("hardening-hang-up-{}", uuid::Uuid::now_v7());
    let in_flight = "http_server_requests_in_flight";
    let total = "http_server_requests_total";
    let items_route = r#"route="/v1/items""#;
    items
        .wait_for_metric(in_flight, &[], Duration::from_secs(5), |n| n == 0.0)
        .await;

    let mut client = TcpStream::connect(&items.addr).await.unwrap();
    client
        .write_all(
            format!("GET /v1/items HTTP/1.1\r\nHost: items\r\nX-Request-ID: {request_id}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    items
        .wait_for_metric(in_flight, &[], Duration::from_secs(10), |n| n == 1.0)
        .await;
    drop(client);

    // Had the request run on, it would be answered 200 three seconds in; a 499 instead shows
    // its future was dropped with the connection and still recorded.
    items
        .wait_for_metric(
            total,
            &[
                items_route,
                r#"method="GET""#,
                r#"status="499""#,
                r#"status_class="4xx""#,
            ],
            Duration::from_secs(10),
            |n| n == 1.0,
        )
        .await;
    items
        .wait_for_metric(in_flight, &[], Duration::from_secs(10), |n| n == 0.0)
        .await;
    let text = items.scrape().await;
    assert_eq!(
        sum(&text, total, &[items_route]),
        1.0,
        "one request to /v1/items, recorded once: {:?}",
        series(&text, total)
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = items
            .process
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|e| e["span"]["request_id"] == request_id.as_str());
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the dropped request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let is_hex = |v: &Value, len: usize| {
        v.as_str()
            .is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    assert_eq!(line["message"], "request completed", "{line}");
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/v1/items", "{line}");
    assert_eq!(line["path"], "/v1/items", "{line}");
    assert!(line["duration_ms"].is_f64(), "{line}");
    assert!(
        is_hex(&line["trace_id"], 32) && is_hex(&line["span_id"], 16),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_reading_the_log_requests_are_answered_and_lines_dropped() {
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 1500;
    let db = TestDb::create(Db::Sqlite).await;
    let items = Items::from(
        LoggedProcess::start_with_unread_stdout(&mut configured(&db, &[])),
        db,
    );
    let text = items.scrape().await;
    assert_eq!(
        series(&text, "log_lines_dropped_total").len(),
        1,
        "the counter is there from the start"
    );
    assert_eq!(sum(&text, "log_lines_dropped_total", &[]), 0.0);

    // 6,000 access-log lines of ~300 bytes: more than the pipe (64 KiB) and the writer's 1 MiB
    // buffer hold. Each client is one keep-alive connection.
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let url = format!("http://{}/healthz", items.addr);
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut answered = 0;
                for _ in 0..PER_CONNECTION {
                    let response = client
                        .get(&url)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .expect("answered within 10 s");
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    let started = Instant::now();
    for client in clients {
        answered += tokio::time::timeout(Duration::from_secs(300), client)
            .await
            .expect("all answered within 5 minutes")
            .expect("every request answered 200");
    }
    assert_eq!(answered, CONNECTIONS * PER_CONNECTION);

    let dropped = sum(&items.scrape().await, "log_lines_dropped_total", &[]);
    eprintln!(
        "unread log: {answered} requests answered in {:?}, {dropped} lines dropped",
        started.elapsed()
    );
    assert!(dropped > 0.0, "no line was dropped");
    assert!(
        items.process.lines().len() < 100,
        "the log really was left unread"
    );
}

/// The HTTP/2 connection preface, then an empty SETTINGS frame: a client that has said it
/// speaks HTTP/2 and sent no request.
const HTTP2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads until the server closes, bounded by 10 s; returns how long after `since` it closed
/// and what arrived.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> (Duration, Vec<u8>) {
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_until_closed(stream, &mut received),
    )
    .await
    .expect("the server closes the connection within 10 s");
    (since.elapsed(), received)
}

#[tokio::test]
async fn an_http2_preface_without_a_request_is_cut_off_at_the_header_read_timeout() {
    let items = Items::start(&[
        ("HTTP_HEADER_READ_TIMEOUT_MS", "500"),
        ("HTTP_IDLE_TIMEOUT_MS", "10000"),
    ])
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    stream.write_all(HTTP2_PREFACE).await.unwrap();
    let (elapsed, _) = closed_after(&mut stream, started).await;
    eprintln!("an HTTP/2 preface and no HEADERS: closed {elapsed:?} after connecting");
    assert!(
        (Duration::from_millis(500) - CLOCK_GRAIN..Duration::from_secs(3)).contains(&elapsed),
        "cut off at the 500 ms header clock, not the 10 s idle clock: {elapsed:?}"
    );
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="header_timeout""#],
            Duration::from_secs(5),
            |closed| closed == 1.0,
        )
        .await;
}

#[tokio::test]
async fn a_pipelined_partial_second_head_is_cut_off_at_the_header_read_timeout() {
    let items = Items::start(&[
        ("HTTP_HEADER_READ_TIMEOUT_MS", "500"),
        ("HTTP_IDLE_TIMEOUT_MS", "10000"),
    ])
    .await;
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    // One write: a whole request and the start of another that never ends.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: items\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    let answered = Instant::now();
    let (elapsed, rest) = closed_after(&mut stream, answered).await;
    eprintln!("a pipelined partial head: closed {elapsed:?} after the first answer");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        elapsed < Duration::from_secs(3),
        "cut off at the 500 ms header clock, not the 10 s idle clock: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_at_the_write_timeout() {
    let items = Items::start(&[
        ("HTTP_WRITE_TIMEOUT_MS", "500"),
        ("HTTP_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    // Twenty pipelined requests for Swagger UI's page (its bundle inlined: well over a
    // megabyte each), more than the loopback's socket buffers hold; nothing is ever read.
    let requests = "GET /docs HTTP/1.1\r\nHost: items\r\n\r\n".repeat(20);
    stream.write_all(requests.as_bytes()).await.unwrap();
    let started = Instant::now();
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="write_timeout""#],
            Duration::from_secs(10),
            |closed| closed == 1.0,
        )
        .await;
    let elapsed = started.elapsed();
    eprintln!("a client reading nothing: closed {elapsed:?} after its requests");
    assert!(
        elapsed >= Duration::from_millis(500) - CLOCK_GRAIN,
        "{elapsed:?}"
    );
    items
        .wait_for_metric(
            "http_server_connections_open",
            &[r#"listener="api""#],
            Duration::from_secs(5),
            |open| open == 0.0,
        )
        .await;
}

#[tokio::test]
async fn an_http2_client_that_never_opens_its_window_is_cut_at_the_write_timeout() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let items = Items::start(&[
        ("HTTP_WRITE_TIMEOUT_MS", "500"),
        ("HTTP_IDLE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let stream = TcpStream::connect(&items.addr).await.unwrap();
    // The protocol's smallest windows (hyper's client would otherwise take megabytes unread).
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/docs")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    // The answer's head arrives; its body is never read, so the client never opens its
    // flow-control window and the server's stream cannot move: its socket writes never block,
    // but the response stops moving.
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let elapsed = started.elapsed();
    eprintln!("an HTTP/2 client reading nothing: closed {elapsed:?} after the answer's head");
    assert!(ended.is_ok(), "the server ends the connection within 10 s");
    assert!(
        (Duration::from_millis(500) - CLOCK_GRAIN..Duration::from_secs(3)).contains(&elapsed),
        "cut at the 500 ms write clock: {elapsed:?}"
    );
    drop(response);
    items
        .wait_for_metric(
            "http_server_connections_closed_total",
            &[r#"reason="write_timeout""#],
            Duration::from_secs(5),
            |closed| closed == 1.0,
        )
        .await;
}

/// A request answered before its body is read (a wrong key: 403) leaves unread bytes that
/// hyper cannot skip; it then closes the connection. The answer must say so
/// (`Connection: close`), or a client reusing the connection sends its next request into a
/// closed socket.
#[tokio::test]
async fn an_answer_given_before_the_body_is_read_says_the_connection_closes() {
    let items = Items::start(&[]).await;
    let mut stream = TcpStream::connect(&items.addr).await.unwrap();
    let body = format!("{{\"name\": \"{}\"}}", "a".repeat(30_000));
    let head = format!(
        "POST /v1/items HTTP/1.1\r\nHost: items\r\nX-API-Key: not-the-key-at-all\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The head alone: the key is refused before any of the body has arrived.
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before an answer");
        received.extend_from_slice(&buf[..n]);
    };
    let answer = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 403"), "{answer}");
    if answer.contains("\r\nconnection: close\r\n") {
        return;
    }
    // Said nothing: then the connection must still serve the body's sender.
    let _ = stream.write_all(body.as_bytes()).await;
    let next = b"GET /healthz HTTP/1.1\r\nHost: items\r\n\r\n";
    let sent = stream.write_all(next).await;
    let mut rest = received[head_end..].to_vec();
    read_until_closed_or(&mut stream, &mut rest, Duration::from_secs(2)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        sent.is_ok() && rest.contains("HTTP/1.1 200"),
        "the connection was closed without `Connection: close` in the answer: {answer}"
    );
}

async fn read_until_closed_or(stream: &mut TcpStream, received: &mut Vec<u8>, within: Duration) {
    let _ = tokio::time::timeout(within, read_until_closed(stream, received)).await;
}
