//! The items → timezones hop and the items process under faults: outage, slowness, overload,
//! rate limits and injected errors. Every load here is bounded in time and count.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    API_KEY, Options, TestApp, Timezones, TimezonesProcess, closed_port, expect_problem,
    spawn_app_with,
};

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// One request made during a load, as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    finished: Instant,
    op: &'static str,
    status: u16,
    /// The `meridian-degraded` header.
    degraded: Option<String>,
}

async fn sample(op: &'static str, request: reqwest::RequestBuilder) -> (Sample, Option<Value>) {
    let started = Instant::now();
    let response = request.send().await.expect("items always answers");
    let status = response.status().as_u16();
    let degraded = response
        .headers()
        .get("meridian-degraded")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json::<Value>().await.ok();
    let sample = Sample {
        started,
        finished: Instant::now(),
        op,
        status,
        degraded,
    };
    (sample, body)
}

/// Item CRUD (create, zoned read, patch, delete) plus greetings from `workers` concurrent
/// clients until `until`.
async fn crud_and_zoned_reads(app: &TestApp, workers: usize, until: Instant) -> Vec<Sample> {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = app.client.clone();
        let base = app.address.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut round = 0;
            while Instant::now() < until && round < 10_000 {
                round += 1;
                let create = client
                    .post(format!("{base}/v1/items"))
                    .header("x-api-key", API_KEY)
                    .json(&json!({"name": format!("w{worker} r{round}")}));
                let (created, body) = sample("create", create).await;
                samples.push(created);
                if let Some(id) = body.as_ref().and_then(|b| b["id"].as_str()) {
                    let read = client.get(format!("{base}/v1/items/{id}?tz=Asia/Tokyo"));
                    let (read, body) = sample("read", read).await;
                    let source = body.as_ref().map(|b| b["local"]["source"].clone());
                    assert_eq!(
                        source,
                        Some(json!(if read.degraded.is_some() {
                            "fallback"
                        } else {
                            "timezones"
                        })),
                        "the body says what the header says"
                    );
                    samples.push(read);
                    let patch = client
                        .patch(format!("{base}/v1/items/{id}"))
                        .header("x-api-key", API_KEY)
                        .json(&json!({"description": "patched during the load"}));
                    samples.push(sample("update", patch).await.0);
                    if round % 2 == 0 {
                        let delete = client
                            .delete(format!("{base}/v1/items/{id}"))
                            .header("x-api-key", API_KEY);
                        samples.push(sample("delete", delete).await.0);
                    }
                }
                let greet = client.get(format!("{base}/v1/greeting?tz=Asia/Tokyo"));
                samples.push(sample("greeting", greet).await.0);
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    samples.sort_by_key(|s| s.started);
    samples
}

#[tokio::test]
async fn a_timezones_outage_degrades_reads_opens_the_circuit_and_recovers() {
    let addr = closed_port().to_string();
    let timezones = TimezonesProcess::start_with(&addr, &[]);
    let app = spawn_app_with(Options {
        timezones: Timezones::At(timezones.url.clone()),
        env: env(&[
            ("CIRCUIT_FAILURE_THRESHOLD", "5"),
            ("CIRCUIT_COOLDOWN_MS", "1000"),
            ("WRITE_RATE_PER_SECOND", "100000"),
            ("WRITE_BURST", "100000"),
        ]),
        ..Options::default()
    })
    .await;

    let start = Instant::now();
    let load_end = start + Duration::from_millis(8_500);
    let (samples, (killed_at, back_at, restarted)) =
        tokio::join!(crud_and_zoned_reads(&app, 4, load_end), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let killed_at = Instant::now();
            timezones.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let restarted = TimezonesProcess::start_with(&addr, &[]);
            (killed_at, Instant::now(), restarted)
        });
    drop(restarted);

    let writes: Vec<_> = samples.iter().filter(|s| s.op == "create").collect();
    assert!(writes.len() > 20, "the load made writes: {}", writes.len());
    assert!(
        samples.iter().all(|s| s.status < 300),
        "every request succeeded: {:?}",
        samples.iter().find(|s| s.status >= 300)
    );

    for op in ["create", "read", "update", "delete", "greeting"] {
        assert!(samples.iter().any(|s| s.op == op), "the load included {op}");
    }
    let reads: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.op == "read" || s.op == "greeting")
        .collect();
    assert!(
        reads
            .iter()
            .filter(|s| s.finished < killed_at)
            .all(|s| s.degraded.is_none())
    );
    let first_open = reads
        .iter()
        .find(|s| s.degraded.as_deref() == Some("timezones-circuit-open"))
        .expect("the circuit opened");
    let opened_after = first_open.finished.saturating_duration_since(killed_at);
    assert!(
        opened_after <= Duration::from_secs(1),
        "circuit opened {opened_after:?} after the kill"
    );
    let during_outage: Vec<_> = reads
        .iter()
        .filter(|s| s.started > killed_at + Duration::from_secs(1) && s.finished < back_at)
        .collect();
    assert!(!during_outage.is_empty());
    assert!(
        during_outage.iter().all(|s| s.degraded.is_some()),
        "reads during the outage are marked degraded"
    );

    let recovered = reads
        .iter()
        .find(|s| s.started > back_at && s.degraded.is_none())
        .expect("responses stopped being degraded");
    let recovery = recovered.started.saturating_duration_since(back_at);
    let settled: Vec<_> = reads
        .iter()
        .filter(|s| s.started > back_at + Duration::from_secs(5))
        .collect();
    assert!(!settled.is_empty(), "the load ran past the 5 s mark");
    assert!(
        settled.iter().all(|s| s.degraded.is_none()),
        "not degraded 5 s after timezones came back"
    );
    println!(
        "outage: {} requests, circuit open {opened_after:?} after the kill, \
         first non-degraded read {recovery:?} after timezones came back",
        samples.len()
    );
}

#[tokio::test]
async fn slow_timezones_is_cut_off_at_the_call_timeout() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(env(&[
            ("FAULT_DELAY_MS", "3000"),
            ("FAULT_PATHS", "/v1/convert"),
        ])),
        env: env(&[("TIMEZONES_TIMEOUT_MS", "300")]),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let (greeting, body) = sample(
        "greeting",
        app.client.get(app.url("/v1/greeting?tz=Asia/Tokyo")),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(greeting.status, 200);
    assert_eq!(greeting.degraded.as_deref(), Some("timezones-unavailable"));
    assert_eq!(body.unwrap()["degraded"], true);
    assert!(
        took < Duration::from_millis(1500),
        "answered in {took:?}, not after the 3 s delay"
    );
}

#[tokio::test]
async fn slow_timezones_is_cut_off_at_the_request_deadline_and_gives_up_too() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(env(&[
            ("FAULT_DELAY_MS", "3000"),
            ("FAULT_PATHS", "/v1/convert"),
        ])),
        env: env(&[
            ("TIMEZONES_TIMEOUT_MS", "5000"),
            ("REQUEST_TIMEOUT_MS", "400"),
        ]),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let (read, _) = sample(
        "greeting",
        app.client.get(app.url("/v1/greeting?tz=Europe/Paris")),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        read.status, 200,
        "answered with the fallback inside its own deadline"
    );
    assert_eq!(read.degraded.as_deref(), Some("timezones-unavailable"));
    assert!(took < Duration::from_millis(1000), "answered in {took:?}");

    // The budget travelled in x-request-timeout-ms, a little shorter than items' own, so
    // timezones abandoned the work long before its 3 s delay would have ended: with its own
    // 503, or, if items' clock ran out first on a busy machine, when items hung up (499).
    let timezones = app.timezones.as_ref().unwrap();
    let gave_up = timezones
        .wait_for_logged(Duration::from_secs(2), |e| {
            e["path"] == "/v1/convert"
                && (e["status"] == 503 || e["status"] == 499)
                && e["duration_ms"].as_f64().is_some_and(|ms| ms < 1000.0)
        })
        .await;
    assert!(gave_up, "timezones gave up on the expired request");
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_with_retry_after() {
    let app = spawn_app_with(Options {
        env: env(&[
            ("MAX_CONCURRENT_REQUESTS", "2"),
            ("FAULT_DELAY_MS", "600"),
            ("FAULT_PATHS", "/v1/greeting"),
        ]),
        ..Options::default()
    })
    .await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        requests.spawn(app.client.get(app.url("/v1/greeting")).send());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = app.get("/readyz").await.status().as_u16();
    let responses = requests.join_all().await;
    assert_eq!(probe, 200, "probes are never shed");
    let mut served = 0;
    let mut shed = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => served += 1,
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let problem = expect_problem(response, 503).await;
                assert_eq!(problem["type"], "urn:meridian:problem:overloaded");
                shed += 1;
            }
            other => panic!("only 200 or 503 expected, got {other}"),
        }
    }
    assert_eq!((served, shed), (2, 4));
}

#[tokio::test]
async fn writes_over_the_rate_limit_get_429_with_retry_after() {
    let app = spawn_app_with(Options {
        env: env(&[("WRITE_RATE_PER_SECOND", "1"), ("WRITE_BURST", "3")]),
        ..Options::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let response = app
            .write(Method::POST, "/v1/items")
            .json(&json!({"name": format!("n{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&wait), "Retry-After {wait}");
            let problem = expect_problem(response, 429).await;
            assert_eq!(problem["type"], "urn:meridian:problem:rate-limited");
        }
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    let (status, page) = app.get_json("/v1/items").await;
    assert_eq!(status, 200, "reads are not limited");
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        3,
        "limited writes stored nothing"
    );
    let wrong_key = app
        .client
        .post(app.url("/v1/items"))
        .header("x-api-key", "not-the-key-at-all")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong_key.status().as_u16(),
        403,
        "a wrong key is refused before any limit"
    );
}

#[tokio::test]
async fn a_request_over_its_deadline_is_abandoned_with_503() {
    let app = spawn_app_with(Options {
        env: env(&[
            ("REQUEST_TIMEOUT_MS", "200"),
            ("FAULT_DELAY_MS", "1000"),
            ("FAULT_PATHS", "/v1/items"),
        ]),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let response = app.get("/v1/items").await;
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(response.headers()["retry-after"], "1");
    let problem = expect_problem(response, 503).await;
    assert_eq!(problem["type"], "urn:meridian:problem:deadline-exceeded");
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn injected_errors_follow_the_configured_rate_and_stop_when_switched_off() {
    let app = spawn_app_with(Options {
        env: env(&[("FAULT_ERROR_RATE", "0.5"), ("FAULT_PATHS", "/v1/items")]),
        ..Options::default()
    })
    .await;
    let mut injected = 0;
    for _ in 0..200 {
        let response = app.get("/v1/items").await;
        match response.status().as_u16() {
            200 => {}
            503 => {
                let problem = expect_problem(response, 503).await;
                assert_eq!(problem["type"], "urn:meridian:problem:injected-fault");
                injected += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial(200, 0.5): 60..=140 is over five standard deviations either side.
    assert!((60..=140).contains(&injected), "{injected} of 200 injected");
    let (status, _) = app.get_json("/v1/greeting").await;
    assert_eq!(status, 200, "paths outside FAULT_PATHS are untouched");
    assert_eq!(app.get_json("/readyz").await.0, 200, "probes are untouched");

    let no_key = app
        .client
        .put(app.url("/admin/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_problem(no_key, 401).await;
    let wrong = app
        .client
        .put(app.url("/admin/faults"))
        .header("x-api-key", "wrong-key-wrong-key")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_problem(wrong, 403).await;
    let invalid = app
        .write(Method::PUT, "/admin/faults")
        .json(&json!({"error_rate": 2}))
        .send()
        .await
        .unwrap();
    expect_problem(invalid, 422).await;

    let off = app
        .write(Method::PUT, "/admin/faults")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status().as_u16(), 200);
    assert_eq!(off.json::<Value>().await.unwrap()["error_rate"], 0.0);
    for _ in 0..100 {
        assert_eq!(
            app.get("/v1/items").await.status().as_u16(),
            200,
            "faults are off"
        );
    }

    let on = app
        .write(Method::PUT, "/admin/faults")
        .json(&json!({"error_rate": 1.0, "paths": ["/v1/greeting"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(on.status().as_u16(), 200);
    expect_problem(app.get("/v1/greeting").await, 503).await;
    assert_eq!(app.get("/v1/items").await.status().as_u16(), 200);
}

#[tokio::test]
async fn only_try_again_answers_are_retried_and_retries_stay_within_budget() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(env(&[
            ("FAULT_ERROR_RATE", "1.0"),
            ("FAULT_PATHS", "/v1/convert"),
        ])),
        env: env(&[
            ("TIMEZONES_RETRIES", "2"),
            ("CIRCUIT_FAILURE_THRESHOLD", "100000"),
        ]),
        ..Options::default()
    })
    .await;
    let timezones = app.timezones.as_ref().unwrap();
    let (status, greeting) = app.get_json("/v1/greeting?tz=Asia/Tokyo").await;
    assert_eq!((status, &greeting["degraded"]), (200, &json!(true)));
    assert_eq!(
        timezones.requests_to("/v1/convert").await,
        3,
        "a 503 is tried 1 + 2 times"
    );

    // 150 more calls that each want two retries: the budget (20% of calls plus 10 a second
    // over its 10 s window) lets far fewer than 300 through.
    for _ in 0..150 {
        app.get("/v1/greeting?tz=Asia/Tokyo").await;
    }
    let attempts = timezones.requests_to("/v1/convert").await - 3;
    let retries = attempts - 150;
    println!("retry budget: 150 calls wanting 300 retries made {retries}");
    assert!(retries < 200, "the budget capped retries at {retries}");
}

#[tokio::test]
async fn answers_that_are_not_transient_are_not_retried() {
    let app = spawn_app_with(Options {
        env: env(&[("TIMEZONES_RETRIES", "2")]),
        ..Options::default()
    })
    .await;
    expect_problem(app.get("/v1/greeting?tz=Nowhere/Land").await, 400).await;
    let timezones = app.timezones.as_ref().unwrap();
    assert_eq!(
        timezones.requests_to("/v1/convert").await,
        1,
        "a 404 is final"
    );
}

#[tokio::test]
async fn retries_can_be_switched_off_for_the_mesh() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(env(&[
            ("FAULT_ERROR_RATE", "1.0"),
            ("FAULT_PATHS", "/v1/convert"),
        ])),
        env: env(&[("TIMEZONES_RETRIES", "0")]),
        ..Options::default()
    })
    .await;
    app.get("/v1/greeting?tz=Asia/Tokyo").await;
    let timezones = app.timezones.as_ref().unwrap();
    assert_eq!(timezones.requests_to("/v1/convert").await, 1);
}

#[tokio::test]
async fn a_callers_short_budget_does_not_open_the_circuit_for_everyone() {
    // timezones answers after 200 ms: a caller's 60 ms budget runs out during the call, its
    // 1 ms budget before it; neither is timezones failing.
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(env(&[
            ("FAULT_DELAY_MS", "200"),
            ("FAULT_PATHS", "/v1/convert"),
        ])),
        env: env(&[
            ("CIRCUIT_FAILURE_THRESHOLD", "5"),
            ("CIRCUIT_COOLDOWN_MS", "60000"),
        ]),
        ..Options::default()
    })
    .await;
    for budget in ["1", "60"] {
        for _ in 0..6 {
            let (short, _) = sample(
                "greeting",
                app.client
                    .get(app.url("/v1/greeting?tz=UTC"))
                    .header("x-request-timeout-ms", budget),
            )
            .await;
            assert_ne!(
                short.degraded.as_deref(),
                Some("timezones-circuit-open"),
                "a {budget} ms budget opened the circuit"
            );
        }
    }
    let (normal, _) = sample("greeting", app.client.get(app.url("/v1/greeting?tz=UTC"))).await;
    assert_eq!(normal.status, 200);
    assert_eq!(
        normal.degraded, None,
        "a caller with the normal budget is answered by timezones"
    );
}

#[tokio::test]
async fn the_half_open_circuit_lets_one_trial_call_through() {
    let addr = closed_port().to_string();
    let app = spawn_app_with(Options {
        timezones: Timezones::At(format!("http://{addr}")),
        env: env(&[
            ("CIRCUIT_FAILURE_THRESHOLD", "2"),
            ("CIRCUIT_COOLDOWN_MS", "300"),
            ("TIMEZONES_RETRIES", "0"),
        ]),
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let (failed, _) = sample("greeting", app.client.get(app.url("/v1/greeting?tz=UTC"))).await;
        assert_eq!(failed.degraded.as_deref(), Some("timezones-unavailable"));
    }
    let (open, _) = sample("greeting", app.client.get(app.url("/v1/greeting?tz=UTC"))).await;
    assert_eq!(open.degraded.as_deref(), Some("timezones-circuit-open"));

    // timezones is back, slow enough that the trial call is still out while the others come.
    let timezones = TimezonesProcess::start_with(
        &addr,
        &env(&[("FAULT_DELAY_MS", "500"), ("FAULT_PATHS", "/v1/convert")]),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let trial = tokio::spawn(sample(
        "greeting",
        app.client.get(app.url("/v1/greeting?tz=UTC")),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(sample(
                "greeting",
                app.client.get(app.url("/v1/greeting?tz=UTC")),
            ))
        })
        .collect();
    for other in others {
        let (other, _) = other.await.unwrap();
        assert_eq!(
            other.degraded.as_deref(),
            Some("timezones-circuit-open"),
            "only the trial call goes through while the circuit is half-open"
        );
    }
    let (trial, _) = trial.await.unwrap();
    assert_eq!(trial.degraded, None, "the trial call was answered");
    assert_eq!(timezones.requests_to("/v1/convert").await, 1);
    let (closed, _) = sample("greeting", app.client.get(app.url("/v1/greeting?tz=UTC"))).await;
    assert_eq!(
        closed.degraded, None,
        "the trial's success closed the circuit"
    );
}

/// A timezones stand-in that answers every conversion correctly, followed by `padding` bytes of
/// JSON whitespace: a valid answer of any size. Serves until the test ends.
fn padded_timezones(padding: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    // The headers, up to the blank line.
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let target = request_line.split(' ').nth(1).unwrap_or_default();
                    let conversions: Vec<Value> = target
                        .split(['?', '&'])
                        .filter_map(|pair| pair.strip_prefix("at="))
                        .map(|at| json!({"to": {"local_time": at, "abbreviation": "UTC"}}))
                        .collect();
                    let mut body = json!({ "conversions": conversions })
                        .to_string()
                        .into_bytes();
                    body.resize(body.len() + padding, b' ');
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(&body).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn an_oversized_answer_from_timezones_is_refused_not_buffered() {
    for (padding, degraded) in [(100 << 10, None), (2 << 20, Some("timezones-unavailable"))] {
        let app = spawn_app_with(Options {
            timezones: Timezones::At(padded_timezones(padding)),
            env: env(&[("TIMEZONES_RETRIES", "0")]),
            ..Options::default()
        })
        .await;
        let created = app
            .create(json!({"name": "sized", "description": "answer size"}))
            .await;
        let id = created["id"].as_str().unwrap();
        let (read, body) = sample(
            "read",
            app.client.get(app.url(&format!("/v1/items/{id}?tz=UTC"))),
        )
        .await;
        assert_eq!(read.status, 200);
        assert_eq!(
            read.degraded.as_deref(),
            degraded,
            "an answer padded by {padding} bytes: {body:?}"
        );
    }
}
