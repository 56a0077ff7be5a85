//! The `items` process under SIGTERM and SIGKILL, with real load. Bounded in time and count.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::binary::{KEY, items_command};
use crate::helpers::{Db, LoggedProcess, TestDb, TimezonesProcess};

fn signal(process: &LoggedProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

fn start_items(db: &TestDb, timezones: &TimezonesProcess, extra: &[(&str, &str)]) -> LoggedProcess {
    LoggedProcess::start(
        items_command()
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", &timezones.url)
            .env("WRITE_RATE_PER_SECOND", "1000000")
            .env("WRITE_BURST", "1000000")
            .envs(extra.iter().copied()),
    )
}

/// What a client saw: an HTTP answer (accepted), or no answer at all (not accepted).
enum Outcome {
    Answered { status: u16, at: Instant },
    NotAccepted,
}

#[tokio::test]
async fn sigterm_under_load_fails_no_accepted_request_and_exits_0() {
    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Sqlite).await;
    let mut items = start_items(&db, &timezones, &[("DRAIN_DELAY_MS", "1000")]);
    let base = items.address.clone();

    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let client = reqwest::Client::new();
        let base = base.clone();
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            let mut round = 0u32;
            while Instant::now() < stop_at && round < 20_000 {
                round += 1;
                let request = match round % 3 {
                    0 => client.get(format!("{base}/v1/items?limit=5")),
                    1 => client
                        .post(format!("{base}/v1/items"))
                        .header("x-api-key", KEY)
                        .json(&json!({"name": format!("w{worker} r{round}")})),
                    _ => client.get(format!("{base}/v1/greeting?tz=Asia/Tokyo")),
                };
                match request.send().await {
                    Ok(response) => outcomes.push(Outcome::Answered {
                        status: response.status().as_u16(),
                        at: Instant::now(),
                    }),
                    Err(_) => {
                        outcomes.push(Outcome::NotAccepted);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            outcomes
        });
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    let sigterm_at = Instant::now();
    signal(&items, "TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let readiness = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16();

    let outcomes: Vec<Outcome> = workers.join_all().await.into_iter().flatten().collect();
    let (code, lines) = items.wait_for_exit(Duration::from_secs(25));

    assert_eq!(readiness, 503, "readiness fails as soon as SIGTERM arrives");
    let answered: Vec<(u16, Instant)> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Answered { status, at } => Some((*status, *at)),
            Outcome::NotAccepted => None,
        })
        .collect();
    let failed = answered.iter().filter(|(status, _)| *status >= 300).count();
    let after_sigterm = answered.iter().filter(|(_, at)| *at > sigterm_at).count();
    let not_accepted = outcomes.len() - answered.len();
    println!(
        "sigterm: {} answered ({after_sigterm} after SIGTERM, while draining), {failed} failed, \
         {not_accepted} not accepted after the listener closed",
        answered.len()
    );
    assert!(answered.len() > 100, "the load ran");
    assert_eq!(failed, 0, "no accepted request failed");
    assert!(
        after_sigterm > 0,
        "requests were still served during the drain"
    );
    assert!(lines.iter().any(|l| l.contains("\"draining\"")));
    assert_eq!(code, Some(0), "exit 0 within the grace period");
}

#[tokio::test]
async fn sigkill_during_1000_concurrent_creates_keeps_every_acknowledged_item() {
    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Sqlite).await;
    let mut items = start_items(&db, &timezones, &[("MAX_CONCURRENT_REQUESTS", "2000")]);
    let base = items.address.clone();

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (client, base, acknowledged) =
            (client.clone(), base.clone(), Arc::clone(&acknowledged));
        creates.spawn(async move {
            let response = client
                .post(format!("{base}/v1/items"))
                .header("x-api-key", KEY)
                .json(&json!({"name": format!("durable {i}")}))
                .send()
                .await;
            if let Ok(response) = response
                && response.status().as_u16() == 201
                && let Ok(body) = response.json::<serde_json::Value>().await
            {
                let id = body["id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push(id);
            }
        });
    }
    let wait_until = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 150 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(&items, "KILL");
    let acked_at_kill = acknowledged.lock().unwrap().len();
    let (code, _) = items.wait_for_exit(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal, no exit code");
    creates.join_all().await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acked_at_kill >= 150, "the kill came during the load");
    assert!(
        acknowledged.len() < 1000,
        "some creates were cut off by the kill"
    );

    let restarted = start_items(&db, &timezones, &[]);
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for id in &acknowledged {
        let status = client
            .get(format!("{}/v1/items/{id}", restarted.address))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 200 {
            missing.push(id.clone());
        }
    }
    println!(
        "sigkill: {} of 1000 creates acknowledged before the kill, {} missing after restart",
        acknowledged.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged items lost: {missing:?}");
}

/// A request still running when the shutdown grace period ends is dropped by the server: it is
/// recorded as the server's doing (503), not as a client that went away (499), over HTTP/1.1 and
/// over HTTP/2, whose streams hyper runs as tasks of their own.
#[tokio::test]
async fn requests_cut_at_the_end_of_the_grace_period_are_the_servers_doing() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let timezones = TimezonesProcess::start();
    let db = TestDb::create(Db::Sqlite).await;
    let mut items = start_items(
        &db,
        &timezones,
        &[
            ("FAULT_PATHS", "/v1/items"),
            ("FAULT_DELAY_MS", "20000"),
            ("REQUEST_TIMEOUT_MS", "60000"),
            ("DRAIN_DELAY_MS", "0"),
            ("SHUTDOWN_GRACE_MS", "500"),
        ],
    );
    let base = items.address.clone();
    let http1 = tokio::spawn(reqwest::get(format!("{base}/v1/items")));
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut http2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/v1/items?limit=1")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let http2 = tokio::spawn(http2.send_request(request));
    // Both are in flight (held by the injected delay) before the signal.
    let in_flight = async {
        loop {
            let text = reqwest::get(format!("{}/metrics", items.metrics_address()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text
                .lines()
                .any(|l| l.starts_with("http_server_requests_in_flight") && l.ends_with(" 2"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("both requests in flight within 10 s");
    signal(&items, "TERM");
    let (code, lines) = items.wait_for_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(http1.await.unwrap().is_err(), "no answer over HTTP/1.1");
    assert!(http2.await.unwrap().is_err(), "no answer over HTTP/2");
    let cut: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(r#""route":"/v1/items""#))
        .collect();
    assert_eq!(cut.len(), 2, "both requests are logged: {lines:#?}");
    for line in cut {
        assert!(line.contains(r#""status":503"#), "{line}");
    }
}
