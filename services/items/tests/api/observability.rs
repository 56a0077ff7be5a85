//! Metrics, traces and logs as a scraper, a trace backend and a log shipper see them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use poem::web::Data;
use poem::{EndpointExt, Route, handler, post};
use prost::Message;
use serde_json::json;

use crate::binary::items_command;
use crate::helpers::{
    Db, LoggedProcess, Options, TestDb, Timezones, TimezonesProcess, spawn_app, spawn_app_with,
};

async fn scrape(metrics_address: &str) -> String {
    let response = reqwest::get(format!("{metrics_address}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

/// The sample lines of `metric` whose labels include every `label="value"` given.
fn series<'a>(text: &'a str, metric: &str, labels: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .collect()
}

#[tokio::test]
async fn requests_are_counted_and_timed_by_route_template() {
    let app = spawn_app(Db::Sqlite).await;
    let item = app.create(json!({"name": "measured"})).await;
    let id = item["id"].as_str().unwrap();
    app.get(&format!("/v1/items/{id}")).await;
    app.get("/v1/items/01a2035b-c862-7293-91ec-b28b86b76ab2")
        .await;
    app.get("/no/such/route").await;

    let text = scrape(&app.metrics_address).await;
    assert!(!text.contains(id), "no raw ids in label values");
    let ok = series(
        &text,
        "http_server_requests_total",
        &[
            r#"route="/v1/items/{id}""#,
            r#"status="200""#,
            r#"status_class="2xx""#,
            r#"method="GET""#,
            r#"service="items""#,
        ],
    );
    assert_eq!(ok.len(), 1, "{text}");
    assert_eq!(
        series(
            &text,
            "http_server_requests_total",
            &[
                r#"route="/v1/items/{id}""#,
                r#"status="404""#,
                r#"method="GET""#
            ]
        )
        .len(),
        1
    );
    assert_eq!(
        series(
            &text,
            "http_server_requests_total",
            &[r#"route="unmatched""#, r#"status="404""#, r#"method="GET""#]
        )
        .len(),
        1
    );
    let buckets = series(
        &text,
        "http_server_request_duration_seconds_bucket",
        &[
            r#"route="/v1/items""#,
            r#"method="POST""#,
            r#"status_class="2xx""#,
        ],
    );
    assert!(
        buckets.iter().any(|l| l.contains(r#"le="0.0001""#)),
        "sub-millisecond buckets"
    );
    assert!(
        buckets.iter().any(|l| l.contains(r#"le="10""#)),
        "buckets up to seconds"
    );
    assert!(!series(&text, "http_server_requests_in_flight", &[]).is_empty());
    let build = series(&text, "build_info", &[r#"version=""#, r#"commit=""#]);
    assert!(build.iter().any(|l| l.ends_with(" 1")), "{build:?}");

    let on_api_port = app.get("/metrics").await;
    assert_eq!(
        on_api_port.status().as_u16(),
        404,
        "metrics only on the metrics port"
    );
}

#[tokio::test]
async fn the_hop_is_measured() {
    let app = spawn_app_with(Options {
        timezones: Timezones::Started(vec![
            ("FAULT_ERROR_RATE", "1.0".into()),
            ("FAULT_PATHS", "/v1/convert".into()),
        ]),
        ..Options::default()
    })
    .await;
    app.get("/v1/greeting?tz=Asia/Tokyo").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        // items_count is refreshed in the background; wait for its first value.
        let text = scrape(&app.metrics_address).await;
        if !series(&text, "items_count", &[]).is_empty() || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts = series(
        &text,
        "upstream_requests_total",
        &[r#"upstream="timezones""#, r#"outcome="503""#],
    );
    assert_eq!(attempts.len(), 1, "{text}");
    assert!(
        !series(
            &text,
            "upstream_retries_total",
            &[r#"upstream="timezones""#]
        )
        .is_empty()
    );
    assert!(
        !series(
            &text,
            "upstream_request_duration_seconds_bucket",
            &[r#"upstream="timezones""#]
        )
        .is_empty()
    );
    assert!(
        !series(
            &text,
            "upstream_circuit_state",
            &[r#"upstream="timezones""#]
        )
        .is_empty()
    );
    assert!(
        !series(
            &text,
            "upstream_fallbacks_total",
            &[r#"reason="timezones-unavailable""#]
        )
        .is_empty()
    );
    assert!(
        !series(&text, "items_count", &[]).is_empty(),
        "items_count is exported"
    );
}

/// Spans received, each with the `service.name` of the process that sent it.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP trace receiver: collects every span posted to `/v1/traces`.
struct Receiver {
    url: String,
    spans: Received,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[handler]
async fn receive(body: poem::Body, sink: Data<&Received>) -> poem::Response {
    let bytes = body.into_bytes().await.unwrap_or_default();
    if let Ok(request) = ExportTraceServiceRequest::decode(bytes.as_ref()) {
        let mut spans = sink.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    poem::Response::builder()
        .content_type("application/x-protobuf")
        .body(Vec::new())
}

async fn start_receiver() -> Receiver {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = poem::listener::TcpListener::bind("127.0.0.1:0");
    let acceptor = poem::listener::Listener::into_acceptor(listener)
        .await
        .unwrap();
    let addr = poem::listener::Acceptor::local_addr(&acceptor)[0]
        .as_socket_addr()
        .copied()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = Route::new()
        .at("/v1/traces", post(receive))
        .data(Arc::clone(&spans));
    tokio::spawn(
        poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            async move {
                let _ = stopped.await;
            },
            None,
        ),
    );
    Receiver {
        url: format!("http://{addr}"),
        spans,
        _stop: stop,
    }
}

impl Receiver {
    /// Waits until a span satisfies `find`, up to 15 s.
    async fn wait_for(&self, find: impl Fn(&(String, Span)) -> bool) -> (String, Span) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = self.spans.lock().unwrap().iter().find(|s| find(s)) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "span not received within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test]
async fn one_trace_spans_items_and_timezones() {
    let receiver = start_receiver().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let timezones = TimezonesProcess::start_with("127.0.0.1:0", &otel);
    let db = TestDb::create(Db::Sqlite).await;
    let items = LoggedProcess::start(
        items_command()
            .env("DATABASE_URL", &db.url)
            .env("TIMEZONES_URL", &timezones.url)
            .envs(otel.iter().map(|(k, v)| (k, v))),
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .get(format!("{}/v1/greeting?tz=Asia/Tokyo", items.address))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let (service, items_server) = receiver
        .wait_for(|(_, s)| s.kind == SERVER && s.name == "GET /v1/greeting")
        .await;
    assert!(service.contains("items"), "{service}");
    assert_eq!(
        hex(&items_server.trace_id),
        trace_id,
        "items continued the caller's trace"
    );
    assert_eq!(hex(&items_server.parent_span_id), caller_span);

    let (_, items_client) = receiver
        .wait_for(|(_, s)| s.kind == CLIENT && s.name == "GET /v1/convert")
        .await;
    assert_eq!(hex(&items_client.trace_id), trace_id);
    assert_eq!(
        items_client.parent_span_id, items_server.span_id,
        "client span inside the server span"
    );

    let (service, timezones_server) = receiver
        .wait_for(|(_, s)| s.kind == SERVER && s.name == "GET /v1/convert")
        .await;
    assert!(service.contains("timezones"), "{service}");
    assert_eq!(
        hex(&timezones_server.trace_id),
        trace_id,
        "the same trace crossed the hop"
    );
    assert_eq!(
        timezones_server.parent_span_id, items_client.span_id,
        "timezones' server span is a child of items' client span"
    );
}

#[tokio::test]
async fn b3_trace_context_is_accepted() {
    let receiver = start_receiver().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let timezones = TimezonesProcess::start_with("127.0.0.1:0", &otel);
    let trace_id = "463ac35c9f6413ad48485a3953bb6124";
    let response = reqwest::Client::new()
        .get(format!("{}/v1/timezones/UTC", timezones.url))
        .header("x-b3-traceid", trace_id)
        .header("x-b3-spanid", "a2fb4a1d1a96d312")
        .header("x-b3-sampled", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (_, span) = receiver
        .wait_for(|(_, s)| s.kind == SERVER && s.name == "GET /v1/timezones/{zone}")
        .await;
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), "a2fb4a1d1a96d312");
}

#[tokio::test]
async fn a_long_path_is_logged_truncated() {
    // 20 KB of path fits the 32 KiB head limit: the log line holds a bounded part of it.
    let timezones = TimezonesProcess::start();
    let long = "a".repeat(20_000);
    let response = reqwest::get(format!("{}/v1/timezones/{long}", timezones.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let logged = timezones
        .wait_for_logged(Duration::from_secs(5), |e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/v1/timezones/aaaa"))
        })
        .await;
    assert!(logged, "the request was logged");
    let bounded = timezones
        .wait_for_logged(Duration::from_secs(1), |e| {
            e["path"].as_str().is_some_and(|p| {
                p.starts_with("/v1/timezones/aaaa")
                    && p.len() <= 1024
                    && e["path_truncated"] == true
            })
        })
        .await;
    assert!(
        bounded,
        "the logged path is cut to at most 1 KiB and marked so"
    );
}
