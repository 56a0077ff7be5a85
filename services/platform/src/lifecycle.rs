//! Health and shutdown: liveness says the process runs, readiness says it should get traffic,
//! and a shutdown signal flips readiness before the server stops accepting work.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use poem::Endpoint;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use tokio::net::TcpListener;

use crate::answers::{self, Answer};
use crate::config::ConfigError;
use crate::problem::{ErrorStatuses, Errors, Problem};
use crate::server::ConnectionLimits;
use crate::settings::ServerConfig;

/// Shared readiness: false from the moment shutdown begins.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Body of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// `ok`, or why the service is not ready.
    pub status: String,
}

impl HealthStatus {
    pub fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

/// A check that decides readiness beyond "not shutting down", e.g. "the database answers".
pub trait ReadinessCheck: Send + Sync + 'static {
    /// `Err` carries a reason safe to show to callers (no secrets, no connection strings).
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// A check that decides liveness: whether the process can still serve at all (a worker it
/// cannot serve without has died), so that restarting it is the cure.
pub trait LivenessCheck: Send + Sync + 'static {
    /// `Err` carries a reason safe to show to callers.
    fn check(&self) -> Result<(), String>;
}

#[derive(Tags)]
enum HealthTags {
    /// Liveness and readiness probes.
    Health,
}

/// `/healthz` and `/readyz`, shared by both services.
pub struct HealthApi {
    readiness: Readiness,
    check: Option<Arc<dyn ReadinessCheck>>,
    liveness: Option<Arc<dyn LivenessCheck>>,
}

impl HealthApi {
    pub fn new(readiness: Readiness, check: Option<Arc<dyn ReadinessCheck>>) -> Self {
        Self {
            readiness,
            check,
            liveness: None,
        }
    }

    /// Also fail `/healthz` when `check` fails.
    pub fn with_liveness(mut self, check: Arc<dyn LivenessCheck>) -> Self {
        self.liveness = Some(check);
        self
    }
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The process is up (liveness) or ready for traffic (readiness).
    #[oai(status = 200)]
    Ok(Json<HealthStatus>),
}

#[OpenApi(tag = "HealthTags::Health")]
impl HealthApi {
    /// Liveness: the process runs and serves HTTP, and no worker it needs (items' SQLite
    /// writer) has died.
    ///
    /// Restart the process if this fails (503). Never shed nor failed on purpose, and needs no
    /// key: probes call it.
    #[oai(path = "/healthz", method = "get", operation_id = "getLiveness")]
    async fn healthz(&self) -> Result<HealthResponse, Errors<LivenessErrors>> {
        if let Some(check) = &self.liveness {
            check.check().map_err(|reason| {
                Problem::new(poem::http::StatusCode::SERVICE_UNAVAILABLE, reason)
            })?;
        }
        Ok(HealthResponse::Ok(Json(HealthStatus::ok())))
    }

    /// Readiness: whether to send traffic here.
    ///
    /// 503 while shutting down or while a dependency (the items database) is unreachable.
    /// Never shed nor failed on purpose, and needs no key: probes call it.
    #[oai(path = "/readyz", method = "get", operation_id = "getReadiness")]
    async fn readyz(&self) -> Result<HealthResponse, Errors<ReadinessErrors>> {
        let not_ready =
            |reason: String| Problem::new(poem::http::StatusCode::SERVICE_UNAVAILABLE, reason);
        if !self.readiness.is_ready() {
            return Err(not_ready("shutting down".into()).into());
        }
        if let Some(check) = &self.check {
            check.check().await.map_err(not_ready)?;
        }
        Ok(HealthResponse::Ok(Json(HealthStatus::ok())))
    }
}

struct LivenessErrors;
impl ErrorStatuses for LivenessErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        (
            503,
            "Not alive: a worker the service needs has stopped (restart it), or the request's \
             deadline passed.",
        ),
    ];
}

struct ReadinessErrors;
impl ErrorStatuses for ReadinessErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        (
            503,
            "Not ready: shutting down, a dependency is unreachable, or the request's deadline \
             passed.",
        ),
    ];
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// What a service serves on: its API socket and its metrics socket (bound up front, so tests
/// and logs learn the real ports), and the readiness flag the shutdown flips.
pub struct Listeners {
    api: TcpListener,
    metrics: TcpListener,
    metrics_handle: metrics_exporter_prometheus::PrometheusHandle,
    readiness: Readiness,
}

impl Listeners {
    /// Binds both sockets and installs the process's metrics recorder.
    pub async fn bind(config: &ServerConfig) -> Result<Self, BindError> {
        let bind = |addr| async move {
            crate::server::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })
        };
        let metrics_handle = crate::metrics::install(config.service);
        Ok(Self {
            api: bind(config.bind_addr).await?,
            metrics: bind(config.metrics_addr).await?,
            metrics_handle,
            readiness: Readiness::default(),
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        local_addr(&self.api)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        local_addr(&self.metrics)
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves the API and `/metrics` until `stop`. Then readiness turns false at once, requests
    /// are still served for `drain_delay` (so endpoints and the mesh stop routing here), then
    /// new connections are refused and in-flight requests get up to `shutdown_grace` to
    /// finish. The metrics port closes after the API, so scrapes see the drain to the end.
    pub async fn serve<E>(
        self,
        app: E,
        config: &ServerConfig,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        E: Endpoint<Output = poem::Response> + 'static,
    {
        let (api_done, metrics_stop) = tokio::sync::oneshot::channel::<()>();
        let api_addr = self.api_addr();
        tracing::info!(addr = %self.metrics_addr(), "metrics listening");
        let metrics_server = tokio::spawn(crate::server::serve(
            "metrics",
            self.metrics,
            crate::metrics::routes(self.metrics_handle),
            ConnectionLimits {
                max_connections: crate::settings::METRICS_CONNECTIONS,
                ..config.connections
            },
            Duration::from_secs(1),
            async move {
                let _ = metrics_stop.await;
            },
        ));
        let readiness = self.readiness;
        let drain_delay = config.drain_delay;
        let stopping = async move {
            stop.await;
            readiness.set_not_ready();
            tracing::info!(drain_ms = drain_delay.as_millis() as u64, "draining");
            tokio::time::sleep(drain_delay).await;
        };
        crate::allocator::release_startup_memory();
        tracing::info!(addr = %api_addr, "listening");
        let served = crate::server::serve(
            "api",
            self.api,
            app,
            config.connections,
            config.shutdown_grace,
            stopping,
        )
        .await;
        tracing::info!("stopped");
        let _ = api_done.send(());
        let _ = metrics_server.await;
        served
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound TCP socket has a local address")
}

/// `<service> healthcheck`: asks this service's own `/healthz` on `BIND_ADDR` (the loopback
/// address when bound to all interfaces), for a container `HEALTHCHECK` in an image without
/// curl or a shell. Exit 0 on 200 within 2 s, 1 otherwise.
pub fn healthcheck(bind_addr: SocketAddr) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let mut target = bind_addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(2);
    let probe = || -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        )?;
        let mut status_line = [0u8; 12];
        stream.read_exact(&mut status_line)?;
        Ok(status_line.starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {target}/healthz did not answer 200");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {target}/healthz: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole of a service's `main`: bad configuration exits 2 with one line naming the setting
/// (before any logging is set up, so it is never lost in JSON); then logs and traces start and
/// `run` builds and serves; a failure after that exits 1. Buffered spans are flushed at exit.
/// With the argument `healthcheck`, it probes a running instance instead (see [`healthcheck`]).
pub async fn run_service<S, E, Fut>(
    name: &str,
    settings: Result<S, ConfigError>,
    server_config: impl FnOnce(&S) -> &ServerConfig,
    run: impl FnOnce(S) -> Fut,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<(), E>>,
{
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = server_config(&settings);
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(server.bind_addr);
    }
    let telemetry = match crate::telemetry::init(&server.log, &server.trace) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    // The exporter's blocking client must not be dropped on the async runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::test::TestClient;
    use poem_openapi::OpenApiService;
    use std::sync::atomic::AtomicBool;

    struct Worker(Arc<AtomicBool>);

    impl LivenessCheck for Worker {
        fn check(&self) -> Result<(), String> {
            if self.0.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err("the worker has stopped".into())
            }
        }
    }

    #[tokio::test]
    async fn liveness_fails_once_a_needed_worker_is_gone() {
        let running = Arc::new(AtomicBool::new(true));
        let api = HealthApi::new(Readiness::default(), None)
            .with_liveness(Arc::new(Worker(Arc::clone(&running))));
        let client =
            TestClient::new(poem::Route::new().nest("/", OpenApiService::new(api, "t", "1")));
        client.get("/healthz").send().await.assert_status_is_ok();
        running.store(false, Ordering::Release);
        let response = client.get("/healthz").send().await;
        response.assert_status(poem::http::StatusCode::SERVICE_UNAVAILABLE);
        let body = response.0.into_body().into_string().await.unwrap();
        assert!(body.contains("the worker has stopped"), "{body}");
    }
}
