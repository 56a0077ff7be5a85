//! Prometheus metrics: a process-wide recorder for the `metrics` facade, rendered at
//! `/metrics` on its own port (`METRICS_ADDR`), so mesh policy can authorize scrapes apart
//! from API traffic. Names and labels are listed in docs/observability.md.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{Route, get, handler, web::Data};

/// Request and upstream latency buckets, in seconds: from 100 µs (a cached lookup) to 10 s
/// (past every timeout we set).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process, labelling every series with `service`, and starts
/// the upkeep task the exporter needs without its own HTTP listener. Later calls return the
/// same handle.
pub fn install(service: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("service", service)
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            metrics::gauge!(
                "build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "commit" => option_env!("MERIDIAN_GIT_COMMIT").unwrap_or("unknown"),
            )
            .set(1.0);
            record_dropped_log_lines();
            handle
        })
        .clone()
}

/// Lines the log writer dropped; read from its own counter at scrape time, because the log
/// starts before the metrics recorder exists.
fn record_dropped_log_lines() {
    metrics::counter!("log_lines_dropped_total").absolute(crate::log_writer::dropped_lines());
}

#[handler]
fn render(handle: Data<&PrometheusHandle>) -> poem::Response {
    record_dropped_log_lines();
    poem::Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// The metrics port's only route.
pub fn routes(handle: PrometheusHandle) -> impl poem::Endpoint<Output = poem::Response> {
    use poem::EndpointExt;
    Route::new().at("/metrics", get(render)).data(handle)
}
