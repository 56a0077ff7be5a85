//! The items → timezones hop: one shared pooled HTTP client, timeouts bounded by the caller's
//! deadline (which travels on as `x-request-timeout-ms`), bounded retries with jittered
//! backoff under a retry budget, and a circuit breaker. Callers decide what to do when it is
//! unavailable.
//!
//! The client is hyper-util's pooled client (the one reqwest wraps), not reqwest: reqwest 0.13
//! re-parses the request's URL with the `url` crate twice per call (its redirect policy's
//! `on_request` and the pending request's response URL), and its redirect and retry layers run
//! on every call. Measured with cachegrind on the hop, reqwest spent ~55,000 instructions a call
//! around hyper's ~13,000. This hop needs none of that: one GET, no redirects, no cookies.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;
use serde::Deserialize;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;
use url::Url;

use crate::domain::ZoneName;

/// Time kept back from the caller's deadline for answering it with the fallback.
const FALLBACK_RESERVE: Duration = Duration::from_millis(25);
/// The most of an answer that is read: a zone conversion for a page of items is a few KiB, and a
/// broken or hostile upstream must not fill items' memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How much sooner than items timezones is asked to give up, so that it answers (503,
/// `deadline-exceeded`) while items still listens, instead of items hanging up first (which
/// timezones records as 499). A tenth of the budget, at most 10 ms.
const HOP_ALLOWANCE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries after the first attempt; 0 when a mesh (Linkerd) is the retry layer.
    pub retries: usize,
    /// Consecutive failed calls that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one trial call (half-open).
    pub cooldown: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TimezonesError {
    /// The timezones service answered that the zone does not exist.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// No usable answer: connection refused, timeout, 5xx, or a malformed body.
    #[error("timezones service unavailable: {reason}")]
    Unavailable {
        reason: String,
        retryable: bool,
        /// The caller's own deadline, shorter than the call timeout, ran out: a fact about the
        /// caller, which the circuit breaker does not count against timezones.
        callers_deadline: bool,
    },
    /// Recent calls failed; not calling until the cool-down passes.
    #[error("timezones circuit is open")]
    CircuitOpen,
}

impl TimezonesError {
    fn unavailable(reason: impl std::fmt::Display, retryable: bool) -> Self {
        Self::Unavailable {
            reason: reason.to_string(),
            retryable,
            callers_deadline: false,
        }
    }

    fn callers_deadline(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            reason: reason.to_string(),
            retryable: false,
            callers_deadline: true,
        }
    }

    /// Only failures where the request cannot have done work, or the server says "try
    /// again": connect errors and 502/503/504. Never timeouts: the work may be under way.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                retryable: true,
                ..
            }
        )
    }
}

/// An instant as the clocks of a zone show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// RFC 3339 with the zone's offset.
    pub local_time: String,
    pub abbreviation: String,
}

type Breaker = StateMachine<ConsecutiveFailures<Constant>, CircuitMetrics>;

const UPSTREAM: &str = "timezones";

const CLOSED: u8 = 0;
const HALF_OPEN: u8 = 1;
const OPEN: u8 = 2;

/// Publishes the breaker's state as `upstream_circuit_state` (0 closed, 1 half-open, 2 open),
/// counts the calls it refuses, and keeps the state where [`TrialGate`] can read it.
struct CircuitMetrics {
    state: Arc<AtomicU8>,
}

impl CircuitMetrics {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        metrics::gauge!("upstream_circuit_state", "upstream" => UPSTREAM).set(f64::from(state));
    }
}

fn count_rejection() {
    metrics::counter!("upstream_circuit_rejections_total", "upstream" => UPSTREAM).increment(1);
}

impl failsafe::Instrument for CircuitMetrics {
    fn on_call_rejected(&self) {
        count_rejection();
    }

    fn on_open(&self) {
        tracing::warn!(upstream = UPSTREAM, "circuit opened");
        self.set(OPEN);
    }

    fn on_half_open(&self) {
        self.set(HALF_OPEN);
    }

    fn on_closed(&self) {
        self.set(CLOSED);
    }
}

/// One trial call at a time while the circuit is not closed. failsafe 1.3's `HalfOpen` permits
/// every call until one reports back (`StateMachine::is_call_permitted`), so after a cool-down
/// the whole backlog would hit a timezones that may still be down.
#[derive(Default)]
struct TrialGate {
    state: Arc<AtomicU8>,
    trial_out: AtomicBool,
}

/// The trial slot, given back when the trial call ends, however it ends (a caller's deadline
/// drops the call's future too).
struct Trial<'a>(&'a AtomicBool);

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl TrialGate {
    /// `Ok(None)` while closed; `Ok(Some(trial))` for the one call let through otherwise.
    /// A permitted call that still reads `OPEN` is the one whose permission moved the breaker
    /// to half-open, before failsafe told the instrument.
    fn enter(&self) -> Result<Option<Trial<'_>>, TimezonesError> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(None);
        }
        if self.trial_out.swap(true, Ordering::AcqRel) {
            count_rejection();
            return Err(TimezonesError::CircuitOpen);
        }
        Ok(Some(Trial(&self.trial_out)))
    }
}

type HttpClient = PooledClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for the timezones client: {0}")]
pub struct ClientBuildError(#[from] rustls::Error);

#[derive(Clone)]
pub struct TimezonesClient {
    http: HttpClient,
    /// `<base>/v1/convert`, without a query; each call appends its own.
    convert_url: Arc<str>,
    server_address: Arc<str>,
    metrics: Arc<HopMetrics>,
    config: ClientConfig,
    breaker: Breaker,
    trial_gate: Arc<TrialGate>,
    /// Retries may add at most 20% to the calls made (plus a floor of 10 a second), so they
    /// never multiply load on a struggling timezones. tower's budget is the Finagle/Linkerd one.
    retry_budget: Arc<TpsBudget>,
}

const UNKNOWN_ZONE_PROBLEM: &str = "urn:meridian:problem:unknown-zone";
const DEADLINE_EXCEEDED_PROBLEM: &str = "urn:meridian:problem:deadline-exceeded";

#[derive(Deserialize)]
struct ProblemType {
    #[serde(rename = "type")]
    problem_type: String,
}

#[derive(Deserialize)]
struct ConvertBody {
    conversions: Vec<ConversionBody>,
}

#[derive(Deserialize)]
struct ConversionBody {
    to: ZoneTimeBody,
}

#[derive(Deserialize)]
struct ZoneTimeBody {
    local_time: String,
    abbreviation: String,
}

impl TimezonesClient {
    /// Makes the client's counters exist at 0, so dashboards and alerts on retries and
    /// fallbacks see a series on a healthy system, not "no data". Needs the recorder installed.
    pub fn register_metrics() {
        for name in [
            "upstream_retries_total",
            "upstream_circuit_rejections_total",
        ] {
            metrics::counter!(name, "upstream" => UPSTREAM).absolute(0);
        }
        for reason in ["timezones-unavailable", "timezones-circuit-open"] {
            metrics::counter!("upstream_fallbacks_total", "upstream" => UPSTREAM, "reason" => reason)
                .absolute(0);
        }
    }

    /// Built once at start-up, after the metrics recorder, and shared: the client pools
    /// connections to timezones.
    pub fn new(config: ClientConfig) -> Result<Self, ClientBuildError> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_nodelay(true);
        // The https connector below decides the scheme.
        tcp.enforce_http(false);
        // aws-lc-rs, the one crypto provider in the process (see the workspace Cargo.toml),
        // and the platform's trust store, as reqwest's rustls feature sets it up.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = PooledClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let convert_url = config
            .base_url
            .join("v1/convert")
            .expect("joining a relative path onto an http(s) URL cannot fail");
        let trial_gate = Arc::new(TrialGate::default());
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                config.failure_threshold,
                failsafe::backoff::constant(config.cooldown),
            ))
            .instrument(CircuitMetrics {
                state: trial_gate.state.clone(),
            })
            .build();
        Ok(Self {
            http,
            server_address: config.base_url.host_str().unwrap_or_default().into(),
            metrics: Arc::new(HopMetrics {
                answered_ok: metrics::counter!("upstream_requests_total", "upstream" => UPSTREAM, "outcome" => "200"),
                duration: metrics::histogram!("upstream_request_duration_seconds", "upstream" => UPSTREAM),
            }),
            convert_url: convert_url.as_str().into(),
            breaker,
            trial_gate,
            retry_budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            config,
        })
    }

    /// The local time in `zone` of each instant, in order, in one logical call, answered
    /// before `deadline`.
    pub async fn local_times(
        &self,
        zone: &ZoneName,
        instants: &[DateTime<Utc>],
        deadline: tokio::time::Instant,
        request_id: Option<&str>,
    ) -> Result<Vec<LocalTime>, TimezonesError> {
        if !self.breaker.is_call_permitted() {
            return Err(TimezonesError::CircuitOpen);
        }
        let _trial = self.trial_gate.enter()?;
        self.retry_budget.deposit();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(200))
            .with_max_times(self.config.retries)
            .with_jitter();
        // An item never updated has `created_at == updated_at`: each instant is asked once,
        // which halves what both services write and parse for it.
        let distinct = distinct_instants(instants);
        let result = (|| self.attempt(zone, &distinct, deadline, request_id))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| e.is_retryable() && self.retry_budget.withdraw())
            .notify(|e, wait| {
                metrics::counter!("upstream_retries_total", "upstream" => UPSTREAM).increment(1);
                tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "retrying timezones");
            })
            .await;
        match &result {
            Ok(_) | Err(TimezonesError::UnknownZone(_)) => self.breaker.on_success(),
            Err(TimezonesError::Unavailable {
                callers_deadline: true,
                ..
            }) => {}
            Err(_) => self.breaker.on_error(),
        }
        let local = result?;
        if distinct == instants {
            return Ok(local);
        }
        Ok(instants
            .iter()
            .map(|at| {
                let asked = distinct.binary_search(at);
                local[asked.expect("every instant is among the distinct ones")].clone()
            })
            .collect())
    }

    /// `/v1/convert?to=<zone>&at=<instant>...`, written straight into the query: a zone name
    /// holds only `[A-Za-z0-9/_+-]`, of which only `+` needs escaping, and UTC instants in the
    /// `Z` form need none. (reqwest's `.query()` serialized each pair through `url`'s form
    /// encoder: about 4,000 instructions a call, measured with cachegrind.)
    fn convert_uri_for(&self, zone: &ZoneName, instants: &[DateTime<Utc>]) -> Uri {
        let mut uri = String::with_capacity(
            self.convert_url.len() + 4 + zone.as_str().len() + instants.len() * 36,
        );
        uri.push_str(&self.convert_url);
        uri.push_str("?to=");
        for c in zone.as_str().chars() {
            match c {
                '+' => uri.push_str("%2B"),
                c => uri.push(c),
            }
        }
        for instant in instants {
            uri.push_str("&at=");
            uri.push_str(&instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
        Uri::try_from(uri).expect("a URL that parsed, with a query of URI characters, is a URI")
    }

    async fn attempt(
        &self,
        zone: &ZoneName,
        instants: &[DateTime<Utc>],
        deadline: tokio::time::Instant,
        request_id: Option<&str>,
    ) -> Result<Vec<LocalTime>, TimezonesError> {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .saturating_sub(FALLBACK_RESERVE);
        let timeout = left.min(self.config.request_timeout);
        // Whether a timeout here would be the caller's budget running out rather than
        // timezones being slow.
        let callers_budget_binds = left < self.config.request_timeout;
        if timeout.is_zero() {
            return Err(TimezonesError::callers_deadline(
                "no time left before the deadline",
            ));
        }
        let mut request = Request::get(self.convert_uri_for(zone, instants))
            .body(Empty::new())
            .expect("a GET with a valid URI and no headers yet is a valid request");
        let headers = request.headers_mut();
        // Room for all of them: the user agent, the budget, the request id and five trace headers.
        headers.reserve(8);
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(
            TIMEOUT_HEADER,
            HeaderValue::from(
                timeout
                    .saturating_sub(HOP_ALLOWANCE.min(timeout / 10))
                    .as_millis() as u64,
            ),
        );
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(REQUEST_ID_HEADER, id);
        }
        // Without an exporter the span would reach only the log layer, which formats its
        // fields and never prints them (log lines take their ids from the request).
        let span = if platform::telemetry::exporting() {
            tracing::info_span!(
                "GET /v1/convert",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = "GET",
                server.address = &*self.server_address,
                url.full = &*self.convert_url,
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        platform::telemetry::inject_trace(&span, request.headers_mut());
        let started = std::time::Instant::now();
        // The answer is read whole inside the timeout: a body that trickles in counts too.
        let sent = tokio::time::timeout(timeout, self.exchange(request))
            .instrument(span.clone())
            .await
            .unwrap_or(Err(HopFailure::Timeout));
        match &sent {
            Ok((StatusCode::OK, _)) => self.metrics.answered_ok.increment(1),
            other => metrics::counter!("upstream_requests_total", "upstream" => UPSTREAM, "outcome" => outcome(other))
                .increment(1),
        }
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        match &sent {
            Ok((status, _)) => {
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        let (status, answer) = sent.map_err(|failure| match failure {
            HopFailure::Timeout if callers_budget_binds => {
                TimezonesError::callers_deadline("timed out at the caller's deadline")
            }
            HopFailure::Timeout => TimezonesError::unavailable("timed out", false),
            // The whole chain: hyper-util's own Display stops at "client error (Connect)".
            HopFailure::Connect(e) => TimezonesError::unavailable(error_chain(&e), true),
            HopFailure::Other(e) => TimezonesError::unavailable(e, false),
        })?;
        let problem_type = || {
            serde_json::from_slice::<ProblemType>(&answer)
                .ok()
                .map(|p| p.problem_type)
        };
        match status {
            StatusCode::OK => {}
            // Only the service's own "unknown zone" problem means the zone is bad; any other 404
            // (a wrong TIMEZONES_URL, say) is an outage, not the caller's fault.
            StatusCode::NOT_FOUND => {
                return Err(match problem_type() {
                    Some(p) if p == UNKNOWN_ZONE_PROBLEM => {
                        TimezonesError::UnknownZone(zone.as_str().to_owned())
                    }
                    _ => TimezonesError::unavailable("status 404 Not Found", false),
                });
            }
            // timezones gave up at the budget items passed on: the caller's deadline again.
            StatusCode::SERVICE_UNAVAILABLE if callers_budget_binds => {
                return Err(match problem_type() {
                    Some(p) if p == DEADLINE_EXCEEDED_PROBLEM => {
                        TimezonesError::callers_deadline("status 503: deadline exceeded")
                    }
                    _ => TimezonesError::unavailable("status 503 Service Unavailable", true),
                });
            }
            status @ (StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT) => {
                return Err(TimezonesError::unavailable(
                    format!("status {status}"),
                    true,
                ));
            }
            status => {
                return Err(TimezonesError::unavailable(
                    format!("status {status}"),
                    false,
                ));
            }
        }
        let body: ConvertBody = serde_json::from_slice(&answer)
            .map_err(|e| TimezonesError::unavailable(format!("malformed answer: {e}"), false))?;
        if body.conversions.len() != instants.len() {
            return Err(TimezonesError::unavailable(
                "answer has the wrong number of conversions",
                false,
            ));
        }
        Ok(body
            .conversions
            .into_iter()
            .map(|c| LocalTime {
                local_time: c.to.local_time,
                abbreviation: c.to.abbreviation,
            })
            .collect())
    }
}

/// The series every call records, looked up once: a lookup by name and labels hashes the key
/// (SipHash) on every call, a few thousand instructions a call (cachegrind). Needs the recorder
/// installed before the client is built, as for [`TimezonesClient::register_metrics`].
struct HopMetrics {
    answered_ok: metrics::Counter,
    duration: metrics::Histogram,
}

/// Why an exchange with timezones gave no answer.
enum HopFailure {
    Timeout,
    /// No connection: nothing was sent, so the call may be retried.
    Connect(hyper_util::client::legacy::Error),
    Other(String),
}

/// The `outcome` label of `upstream_requests_total`: the status code, or what went wrong.
fn outcome(sent: &Result<(StatusCode, Bytes), HopFailure>) -> Cow<'static, str> {
    match sent {
        // The statuses timezones answers with get their label without an allocation.
        Ok((status, _)) => match status.as_u16() {
            200 => "200".into(),
            400 => "400".into(),
            404 => "404".into(),
            500 => "500".into(),
            503 => "503".into(),
            code => code.to_string().into(),
        },
        Err(HopFailure::Timeout) => "timeout".into(),
        Err(HopFailure::Connect(_)) => "connect_error".into(),
        Err(HopFailure::Other(_)) => "error".into(),
    }
}

const USER_AGENT_VALUE: &str = concat!("meridian-items/", env!("CARGO_PKG_VERSION"));
// Built once, not parsed from `&str` on every call.
const TIMEOUT_HEADER: HeaderName = HeaderName::from_static(platform::http::TIMEOUT_HEADER);
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(platform::http::REQUEST_ID_HEADER);

impl TimezonesClient {
    /// One request and its whole answer, at most [`MAX_ANSWER_BYTES`].
    async fn exchange(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<(StatusCode, Bytes), HopFailure> {
        let response = self.http.request(request).await.map_err(|e| {
            if e.is_connect() {
                HopFailure::Connect(e)
            } else {
                HopFailure::Other(error_chain(&e))
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| HopFailure::Other(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

/// `instants` sorted, each once (as given when they already are).
fn distinct_instants(instants: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    let mut distinct = instants.to_vec();
    if !distinct.is_sorted_by(|a, b| a < b) {
        distinct.sort_unstable();
        distinct.dedup();
    }
    distinct
}

/// An error with its causes, as `a: b: c` (hyper-util's own Display says only "client error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_convert_url_escapes_what_a_query_would_misread() {
        let client = TimezonesClient::new(ClientConfig {
            base_url: Url::parse("http://timezones:8081/").unwrap(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            retries: 0,
            failure_threshold: 5,
            cooldown: Duration::from_secs(1),
        })
        .unwrap();
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let uri = client.convert_uri_for(&ZoneName::parse("Etc/GMT+5").unwrap(), &[at, at]);
        let url = Url::parse(&uri.to_string()).unwrap();
        assert_eq!(
            url.as_str(),
            "http://timezones:8081/v1/convert?to=Etc/GMT%2B5\
             &at=2026-05-28T20:26:40.123456Z&at=2026-05-28T20:26:40.123456Z"
        );
        // What timezones reads back: the zone with its '+', the instants as they were.
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("to".to_owned(), "Etc/GMT+5".to_owned()));
        assert_eq!(pairs[1].1.parse::<DateTime<Utc>>().unwrap(), at);
    }

    #[test]
    fn each_instant_is_asked_for_once() {
        let at = |micros| DateTime::from_timestamp_micros(micros).unwrap();
        assert_eq!(distinct_instants(&[at(5), at(5)]), [at(5)]);
        assert_eq!(distinct_instants(&[at(7), at(5), at(7)]), [at(5), at(7)]);
        assert_eq!(distinct_instants(&[at(5), at(7)]), [at(5), at(7)]);
        assert!(distinct_instants(&[]).is_empty());
    }
}
