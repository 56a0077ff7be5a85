//! The one layer every request passes through. In order of meaning: request id, trace context,
//! route template, load shedding, deadline, fault injection, body size limit, panic guard,
//! errors as problem+json, security headers, metrics, access log.
//!
//! One endpoint wrapper instead of a stack of `around` layers: each layer of the old stack
//! boxed a future and moved the request; here the request moves once and the work is one
//! future. A drop guard records the outcome when that future is dropped (the client went away
//! or the server closed the connection), so no request escapes the metrics and the log.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use poem::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use tokio::sync::Semaphore;

use crate::auth::ApiKeyVerifier;
use crate::faults::{Faults, injected_failure};
use crate::problem::Problem;
use crate::settings::ServerConfig;
use crate::telemetry::{self, RequestContext, RequestTrace};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The time budget left for a request, in whole milliseconds. A caller sets it so the callee
/// gives up when the caller would no longer use the answer.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";
// The names as `HeaderName`s, built once: a lookup by `&str` parses and checks the name
// first, on every request (cachegrind: about a sixth of the platform layer's header work).
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const TIMEOUT: HeaderName = HeaderName::from_static(TIMEOUT_HEADER);

/// The status recorded for a request whose client went away before the answer (nginx's
/// convention; no response is sent).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;
/// The status recorded for a request the server dropped at the end of its shutdown grace
/// period: it could not serve it in time (no response is sent).
pub const SERVER_ABORTED_REQUEST: u16 = 503;

/// The id of the request being served, available to handlers as `Data<&RequestId>`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// When the request being served must be answered by, available as `Data<&Deadline>`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Whether a request's answer is still the deadline's to give, or bound to a write that has
/// begun. A write that will commit must not be answered 503 at the deadline (the client would
/// retry a write that happened), and a write answered 503 must never run: whichever of the
/// deadline and the store claims the request first wins, atomically.
#[derive(Debug, Clone, Default)]
pub struct AnswerCommitment(Arc<AtomicU8>);

const ANSWER_OPEN: u8 = 0;
const ANSWER_BOUND_TO_WRITE: u8 = 1;
const ANSWER_EXPIRED: u8 = 2;

impl AnswerCommitment {
    /// Called by a store just before it runs the request's write: true if the write may run
    /// (the request then waits for its outcome past the deadline), false if the request was
    /// already answered 503 at its deadline.
    pub fn bind_to_write(&self) -> bool {
        match self.0.compare_exchange(
            ANSWER_OPEN,
            ANSWER_BOUND_TO_WRITE,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == ANSWER_BOUND_TO_WRITE,
        }
    }

    /// At the deadline: true if the request may be answered 503 (no write of it has begun).
    fn expire(&self) -> bool {
        match self.0.compare_exchange(
            ANSWER_OPEN,
            ANSWER_EXPIRED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == ANSWER_EXPIRED,
        }
    }
}

tokio::task_local! {
    static ANSWER: AnswerCommitment;
}

/// The commitment of the request served on this task; `None` outside a request (startup,
/// background jobs), where no deadline answers for the write.
pub fn current_answer_commitment() -> Option<AnswerCommitment> {
    ANSWER.try_with(Clone::clone).ok()
}

/// Paths that are never shed, delayed or failed on purpose: probes must tell the truth
/// about the process, and the admin switch must stay reachable to turn faults off.
fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/admin/")
}

/// Wraps a service's routes in the platform layer.
pub fn standard_layers<E>(
    routes: E,
    config: &ServerConfig,
    faults: Faults,
    templates: RouteTemplates,
    api_keys: ApiKeyVerifier,
) -> Platform<E>
where
    E: Endpoint + 'static,
{
    let metrics = RouteMetrics::register(&templates);
    let in_flight_gauge = metrics::gauge!("http_server_requests_in_flight");
    in_flight_gauge.increment(0.0);
    Platform {
        inner: routes,
        shared: Arc::new(Shared {
            templates,
            metrics,
            in_flight: Semaphore::new(config.max_concurrent_requests),
            in_flight_gauge,
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
            faults,
            api_keys,
        }),
    }
}

/// See the module documentation.
pub struct Platform<E> {
    inner: E,
    shared: Arc<Shared>,
}

struct Shared {
    templates: RouteTemplates,
    metrics: RouteMetrics,
    in_flight: Semaphore,
    in_flight_gauge: metrics::Gauge,
    request_timeout: Duration,
    max_body_bytes: usize,
    faults: Faults,
    /// For [`crate::auth::ApiKeyAuth`]'s checker, which verifies a key during extraction.
    api_keys: ApiKeyVerifier,
}

impl<E: Endpoint> Endpoint for Platform<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let method = method_label(req.method());
        let path: Box<str> = req.uri().path().into();
        let (route_index, route) = self.shared.templates.find_index(&path);
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_acceptable_request_id(id))
            .map_or_else(new_request_id, str::to_owned);
        let trace = RequestTrace::start(req.headers(), method, route);
        let context = RequestContext::new(request_id.clone(), trace.ids());
        req.extensions_mut().insert(RequestId(request_id));
        if req.headers().contains_key(&API_KEY) {
            req.extensions_mut().insert(self.shared.api_keys.clone());
        }

        let mut record = Outcome {
            shared: Arc::clone(&self.shared),
            series: self.shared.metrics.series(route_index, method),
            started,
            method,
            route,
            path,
            context: context.clone(),
            trace,
            answered: false,
        };
        self.shared.in_flight_gauge.increment(1.0);
        let operational = is_operational(&record.path);
        let work = telemetry::in_request(context, self.serve(req, operational));
        let mut response = match record.trace.span() {
            Some(span) => tracing::Instrument::instrument(work, span.clone()).await,
            None => work.await,
        };
        if let Ok(value) = HeaderValue::from_str(&record.context.request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        add_security_headers(response.headers_mut());
        record.answered(response.status());
        Ok(response)
    }
}

impl<E: Endpoint> Platform<E> {
    /// Shedding and the deadline, around the handler.
    async fn serve(&self, mut req: Request, operational: bool) -> Response {
        let _permit = if operational {
            None
        } else {
            match self.shared.in_flight.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => return overloaded().into_response(),
            }
        };
        let callers_budget = req
            .headers()
            .get(&TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let budget = callers_budget.map_or(self.shared.request_timeout, |b| {
            b.min(self.shared.request_timeout)
        });
        if budget.is_zero() {
            return deadline_exceeded(budget).into_response();
        }
        req.extensions_mut()
            .insert(Deadline(Instant::now() + budget));
        let answer = AnswerCommitment::default();
        // Boxed so that `timeout` moves a pointer, not the handler's large future.
        let mut handler = Box::pin(ANSWER.scope(answer.clone(), self.handle(req, operational)));
        match tokio::time::timeout(budget, &mut handler).await {
            Ok(response) => response,
            Err(_elapsed) if answer.expire() => deadline_exceeded(budget).into_response(),
            // A write of this request has begun: its outcome is the answer, however late.
            Err(_elapsed) => handler.await,
        }
    }

    /// Faults, the body limit, the handler, its panics and its errors.
    async fn handle(&self, req: Request, operational: bool) -> Response {
        if !operational && let Some(injection) = self.shared.faults.for_path(req.uri().path()) {
            if !injection.delay.is_zero() {
                tokio::time::sleep(injection.delay).await;
            }
            if injection.fail {
                return injected_failure().into_response();
            }
        }
        let mut req = req;
        let http1 = req.version() < poem::http::Version::HTTP_2;
        let body_limit = match limit_body(&mut req, self.shared.max_body_bytes) {
            Ok(limit) => limit,
            Err(problem) => return closing(problem.into_response(), http1),
        };
        let response = match AssertUnwindSafe(self.inner.call(req)).catch_unwind().await {
            Ok(Ok(response)) => response.into_response(),
            Ok(Err(err)) => Problem::from_poem_error(err).into_response(),
            Err(_panic) => {
                tracing::error!("handler panicked");
                Problem::internal().into_response()
            }
        };
        let Some(body) = body_limit else {
            return response;
        };
        // The handler saw a failed read, which it reports as its own 400: the truth is 413.
        if body.exceeded() {
            return closing(
                payload_too_large(self.shared.max_body_bytes).into_response(),
                http1,
            );
        }
        // Answered without reading the whole body (a refused key, a wrong content type): hyper
        // reads on only what has already arrived and otherwise closes the connection
        // (hyper 1.x `Conn::poll_drain_or_close_read`), so the answer must say so, or a client
        // sends its next request into a closed connection.
        if body.finished() {
            response
        } else {
            closing(response, http1)
        }
    }
}

/// `response` with `Connection: close` over HTTP/1.x, where the connection will not be reused
/// (HTTP/2 closes a stream, never the connection, for an unread body).
fn closing(mut response: Response, http1: bool) -> Response {
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 503 at once when `max_concurrent_requests` are already in flight: a fast "try elsewhere"
/// beats an unbounded queue whose requests time out anyway.
fn overloaded() -> Problem {
    Problem::typed(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Overloaded",
        "the service is at its concurrency limit; retry after the delay in Retry-After",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

fn deadline_exceeded(budget: Duration) -> Problem {
    Problem::typed(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline-exceeded",
        "Deadline exceeded",
        format!(
            "the request did not finish within its {} ms budget",
            budget.as_millis()
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// A request id in the UUIDv7 format, from the thread's own random generator (no lock).
fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut random = [0u8; 10];
    fastrand::fill(&mut random);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// Records a request's outcome once: when it is answered, or when its future is dropped.
struct Outcome {
    shared: Arc<Shared>,
    series: Arc<SeriesHandles>,
    started: Instant,
    method: &'static str,
    route: &'static str,
    path: Box<str>,
    context: RequestContext,
    trace: RequestTrace,
    answered: bool,
}

impl Outcome {
    fn answered(&mut self, status: StatusCode) {
        self.answered = true;
        self.record(status.as_u16());
    }

    fn record(&self, status: u16) {
        let elapsed = self.started.elapsed();
        self.series.record(status, elapsed);
        self.trace.finish(status);
        telemetry::access_log(&telemetry::AccessLogLine {
            method: self.method,
            route: self.route,
            path: &self.path,
            status,
            duration: elapsed,
            context: &self.context,
        });
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.shared.in_flight_gauge.decrement(1.0);
        if !self.answered {
            // Dropped unanswered: the client went away, unless the server gave up on it.
            let status = if SERVER_ABORTING.load(Ordering::Relaxed) {
                SERVER_ABORTED_REQUEST
            } else {
                CLIENT_CLOSED_REQUEST
            };
            self.record(status);
        }
    }
}

/// Set once the shutdown grace period is over and the server drops the requests still in
/// flight: from then on an unanswered request is the server's doing, not its client's.
static SERVER_ABORTING: AtomicBool = AtomicBool::new(false);

/// Called by the server when its grace period ends with requests still in flight.
pub(crate) fn server_aborting() {
    SERVER_ABORTING.store(true, Ordering::Relaxed);
}

/// OWASP's baseline for an API: browsers must not guess content types or frame any response
/// (Swagger UI included); a route that sets its own policy keeps it.
fn add_security_headers(headers: &mut poem::http::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
}

/// Methods as static labels; anything unusual is one label, so it cannot grow the series.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

fn method_label(method: &Method) -> &'static str {
    METHODS[method_index(method)]
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn label_index(label: &str) -> usize {
    METHODS.iter().position(|m| *m == label).unwrap_or(7)
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The request series of one route template and method: handles made once, so a request
/// looks up nothing in the registry and builds no labels.
struct SeriesHandles {
    method: &'static str,
    route: &'static str,
    by_status: RwLock<Vec<(u16, metrics::Counter)>>,
    durations: [OnceLock<metrics::Histogram>; 5],
}

impl SeriesHandles {
    fn new(route: &'static str, method: &'static str) -> Self {
        Self {
            method,
            route,
            by_status: RwLock::new(Vec::new()),
            durations: Default::default(),
        }
    }

    fn counter(&self, status: u16) -> metrics::Counter {
        let known = self
            .by_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, c)| c.clone());
        known.unwrap_or_else(|| {
            let counter = metrics::counter!(
                "http_server_requests_total",
                "method" => self.method,
                "route" => self.route,
                "status" => status.to_string(),
                "status_class" => STATUS_CLASSES[status_class_index(status)],
            );
            let mut by_status = self.by_status.write().unwrap_or_else(|e| e.into_inner());
            if !by_status.iter().any(|(s, _)| *s == status) {
                by_status.push((status, counter.clone()));
            }
            counter
        })
    }

    fn histogram(&self, status: u16) -> &metrics::Histogram {
        let class = status_class_index(status);
        self.durations[class].get_or_init(|| {
            metrics::histogram!(
                "http_server_request_duration_seconds",
                "method" => self.method,
                "route" => self.route,
                "status_class" => STATUS_CLASSES[class],
            )
        })
    }

    /// Makes the series of `status` exist at 0 before any request.
    fn register(&self, status: u16) {
        self.counter(status).absolute(0);
        self.histogram(status);
    }

    fn record(&self, status: u16, elapsed: Duration) {
        self.counter(status).increment(1);
        self.histogram(status).record(elapsed.as_secs_f64());
    }
}

/// Series handles per route template (plus `unmatched`) and method.
struct RouteMetrics {
    routes: Vec<&'static str>,
    series: Vec<[OnceLock<Arc<SeriesHandles>>; 8]>,
}

impl RouteMetrics {
    /// Registers every operation's declared statuses at 0, so dashboards and alerts see
    /// series on a healthy system.
    fn register(templates: &RouteTemplates) -> Self {
        let mut routes: Vec<&'static str> = vec![UNMATCHED_ROUTE; templates.0.len() + 1];
        for template in templates.0.iter() {
            routes[template.index] = template.text;
        }
        let metrics = Self {
            series: routes.iter().map(|_| Default::default()).collect(),
            routes,
        };
        for template in templates.0.iter() {
            for (method, statuses) in &template.operations {
                let series = metrics.series(Some(template.index), METHODS[label_index(method)]);
                // The statuses every operation can answer whatever it declares: shed,
                // past its deadline, or failed.
                for status in statuses.iter().chain(&[500, 503]) {
                    series.register(*status);
                }
            }
        }
        metrics
            .series(None, "GET")
            .register(StatusCode::NOT_FOUND.as_u16());
        metrics
    }

    fn series(&self, route_index: Option<usize>, method: &'static str) -> Arc<SeriesHandles> {
        let index = route_index.unwrap_or(self.routes.len() - 1);
        let slot = &self.series[index][label_index(method)];
        Arc::clone(slot.get_or_init(|| Arc::new(SeriesHandles::new(self.routes[index], method))))
    }
}

/// Who answers for both services' contracts, for their documents' `info.contact`.
pub fn api_contact() -> poem_openapi::ContactObject {
    poem_openapi::ContactObject::new().name("meridian maintainers (docs/runbooks.md)")
}

/// A service's routes: the OpenAPI operations, `/openapi.json` and Swagger UI at `/docs`, and
/// the route templates of all of them for metrics and spans.
pub fn api_routes<T, W>(
    api: poem_openapi::OpenApiService<T, W>,
) -> (impl Endpoint<Output = Response> + 'static, RouteTemplates)
where
    T: poem_openapi::OpenApi + 'static,
    W: poem_openapi::Webhook + 'static,
{
    let templates = RouteTemplates::from_openapi(&api.spec(), &["/openapi.json", "/docs"]);
    // Both made once: poem-openapi's own endpoints clone their text on every request, which
    // for Swagger UI (its bundle inlined) is 1.6 MB. `Bytes` clones share one buffer.
    let spec = StaticBody::new("application/json", api.spec());
    let docs = StaticBody::new("text/html; charset=utf-8", api.swagger_ui_html());
    let routes = ApiRoutes {
        spec,
        docs,
        operations: poem::IntoEndpoint::into_endpoint(api),
    };
    (routes, templates)
}

/// The size of the pieces a static body is sent in.
const STATIC_PIECE: usize = 16 * 1024;

/// A body made once and served by reference: the OpenAPI document, Swagger UI's page.
struct StaticBody {
    content_type: &'static str,
    bytes: hyper::body::Bytes,
}

impl StaticBody {
    fn new(content_type: &'static str, text: String) -> Self {
        Self {
            content_type,
            bytes: hyper::body::Bytes::from(text),
        }
    }

    fn respond(&self, req: &Request) -> poem::Result<Response> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(poem::error::MethodNotAllowedError.into());
        }
        // In pieces that share the one buffer: hyper takes each piece only when the last found
        // room, so a client that stops reading is seen to stop (server::WatchedBody).
        let bytes = self.bytes.clone();
        let pieces = (0..bytes.len()).step_by(STATIC_PIECE).map(move |at| {
            Ok::<_, std::io::Error>(bytes.slice(at..(at + STATIC_PIECE).min(bytes.len())))
        });
        Ok(Response::builder()
            .content_type(self.content_type)
            .header(header::CONTENT_LENGTH, self.bytes.len())
            .body(poem::Body::from_bytes_stream(futures_util::stream::iter(
                pieces,
            ))))
    }
}

/// Sends a request to the document, Swagger UI or the operations by a plain comparison of
/// its path: a `Route` nesting the operations at `/` would route every request twice and
/// rewrite its URI on the way.
struct ApiRoutes<O> {
    spec: StaticBody,
    docs: StaticBody,
    operations: O,
}

impl<O> Endpoint for ApiRoutes<O>
where
    O: Endpoint,
{
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        if path == "/openapi.json" {
            self.spec.respond(&req)
        } else if path == "/docs" || path == "/docs/" {
            self.docs.respond(&req)
        } else {
            self.operations
                .call(req)
                .await
                .map(IntoResponse::into_response)
        }
    }
}

/// Maps a request path to the route template it matched (`/v1/items/{id}`), the only path
/// label metrics and spans use: raw paths would make a series per item.
#[derive(Clone)]
pub struct RouteTemplates(Arc<Vec<Template>>);

/// A route template split into segments: `Some(literal)` or `None` for a `{parameter}`.
struct Template {
    segments: Vec<Option<&'static str>>,
    /// The text before its first parameter (all of it when it has none): a path that does not
    /// start with it cannot match, which is checked before walking the segments.
    literal_prefix: &'static str,
    text: &'static str,
    /// Its position in the order given, which metrics use as its key.
    index: usize,
    /// Methods and the statuses the API document declares for them.
    operations: Operations,
}

/// Methods of a route and the statuses the API document declares for each.
type Operations = Vec<(String, Vec<u16>)>;

/// The label for paths that match no route (404 scans), so they share one series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

impl RouteTemplates {
    /// `{name}` segments match any one segment; a trailing one also matches several (zone
    /// names such as `America/New_York` contain `/`). Templates live for the whole process.
    pub fn new<S: AsRef<str>>(templates: impl IntoIterator<Item = S>) -> Self {
        Self::with_operations(
            templates
                .into_iter()
                .map(|t| (t.as_ref().to_owned(), Vec::new())),
        )
    }

    fn with_operations(templates: impl IntoIterator<Item = (String, Operations)>) -> Self {
        let mut parsed: Vec<Template> = templates
            .into_iter()
            .enumerate()
            .map(|(index, (text, operations))| {
                let text: &'static str = Box::leak(text.into_boxed_str());
                let segments = text
                    .split('/')
                    .map(|seg| (!(seg.starts_with('{') && seg.ends_with('}'))).then_some(seg))
                    .collect();
                Template {
                    segments,
                    literal_prefix: text.find('{').map_or(text, |at| &text[..at]),
                    text,
                    index,
                    operations,
                }
            })
            .collect();
        // Literal segments win over parameters: `/admin/faults` before `/admin/{x}`.
        parsed.sort_by_key(|t| std::cmp::Reverse(t.segments.iter().flatten().count()));
        Self(Arc::new(parsed))
    }

    /// The templates of an OpenAPI document's paths with their operations' declared
    /// statuses, plus `extra` (routes outside it, served by GET).
    pub fn from_openapi(spec_json: &str, extra: &[&str]) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec_json).unwrap_or_default();
        let mut templates: Vec<(String, Operations)> = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, item)| {
                        let operations = item
                            .as_object()
                            .map(|ops| {
                                ops.iter()
                                    .map(|(method, op)| {
                                        let statuses = op["responses"]
                                            .as_object()
                                            .map(|r| {
                                                r.keys().filter_map(|s| s.parse().ok()).collect()
                                            })
                                            .unwrap_or_default();
                                        (method.to_ascii_uppercase(), statuses)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        (path.clone(), operations)
                    })
                    .collect()
            })
            .unwrap_or_default();
        templates.extend(
            extra
                .iter()
                .map(|path| ((*path).to_owned(), vec![("GET".to_owned(), vec![200])])),
        );
        Self::with_operations(templates)
    }

    pub fn find(&self, path: &str) -> &'static str {
        self.find_index(path).1
    }

    /// The matching template's index (its key in the metrics) and text.
    fn find_index(&self, path: &str) -> (Option<usize>, &'static str) {
        self.0
            .iter()
            .find(|t| path.starts_with(t.literal_prefix) && matches_template(&t.segments, path))
            .map_or((None, UNMATCHED_ROUTE), |t| (Some(t.index), t.text))
    }
}

/// Matches without collecting the path's segments: this runs on every request.
fn matches_template(segments: &[Option<&str>], path: &str) -> bool {
    let tail_param = matches!(segments.last(), Some(None));
    let mut parts = path.split('/');
    for (position, segment) in segments.iter().enumerate() {
        let Some(part) = parts.next() else {
            return false;
        };
        let last = position + 1 == segments.len();
        match segment {
            Some(literal) if *literal != part => return false,
            None if part.is_empty() => return false,
            _ => {}
        }
        if last {
            return match parts.next() {
                None => true,
                Some(_) => tail_param,
            };
        }
    }
    false
}

fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Counts a request's body against the limit, whatever its headers say: over HTTP/2 a client
/// needs neither `Content-Length` nor `Transfer-Encoding`, so a check of the headers alone lets
/// a body of any size through. A declared length over the limit is refused at once; any other
/// body that may carry bytes is wrapped in a counting limit (`http_body_util::Limited`, as
/// tower-http's `RequestBodyLimitLayer` does), read lazily by the handler after it has checked
/// the caller's credentials. Reading past the limit fails the read and trips the returned
/// [`BodyWatch`], which turns whatever the handler answers into 413; a body left unread makes
/// the answer close the connection.
fn limit_body(req: &mut Request, max_body_bytes: usize) -> Result<Option<BodyWatch>, Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // hyper (HTTP/1.1) and h2 (HTTP/2) refuse a body longer than its declared length; the
    // limit below then only watches whether the handler read it to its end.
    if declared.is_some_and(|length| length > max_body_bytes as u64) {
        return Err(payload_too_large(max_body_bytes));
    }
    if declared == Some(0) {
        return Ok(None);
    }
    let body: BoxBody = req.take_body().into();
    if http_body::Body::is_end_stream(&body) {
        req.set_body(poem::Body::from(body));
        return Ok(None);
    }
    let watch = BodyWatch::default();
    let limited = WatchedBody {
        inner: http_body_util::Limited::new(body, max_body_bytes),
        watch: Arc::clone(&watch.0),
    };
    req.set_body(poem::Body::from(BoxBody::new(limited)));
    Ok(Some(watch))
}

type BoxBody = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::io::Error>;

const BODY_EXCEEDED: u8 = 1;
const BODY_FINISHED: u8 = 2;

/// What became of a request's body while the handler read it: whether it ran past the limit,
/// and whether it was read to its end.
#[derive(Default)]
struct BodyWatch(Arc<AtomicU8>);

impl BodyWatch {
    fn exceeded(&self) -> bool {
        self.0.load(Ordering::Relaxed) & BODY_EXCEEDED != 0
    }

    fn finished(&self) -> bool {
        self.0.load(Ordering::Relaxed) & BODY_FINISHED != 0
    }
}

/// A request body counted against the limit, reporting to its [`BodyWatch`].
struct WatchedBody {
    inner: http_body_util::Limited<BoxBody>,
    watch: Arc<AtomicU8>,
}

impl http_body::Body for WatchedBody {
    type Data = hyper::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                this.watch.fetch_or(BODY_FINISHED, Ordering::Relaxed);
            }
            std::task::Poll::Ready(Some(Err(error)))
                if error.is::<http_body_util::LengthLimitError>() =>
            {
                this.watch.fetch_or(BODY_EXCEEDED, Ordering::Relaxed);
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|f| f.map_err(std::io::Error::other)))
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.inner.is_end_stream();
        if ended {
            self.watch.fetch_or(BODY_FINISHED, Ordering::Relaxed);
        }
        ended
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn payload_too_large(max_body_bytes: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the limit of {max_body_bytes} bytes"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_is_either_answered_at_its_deadline_or_bound_to_its_write() {
        let bound = AnswerCommitment::default();
        assert!(bound.bind_to_write());
        assert!(
            bound.bind_to_write(),
            "a second write of the same request also runs"
        );
        assert!(!bound.expire(), "a write has begun: no 503");

        let expired = AnswerCommitment::default();
        assert!(expired.expire());
        assert!(
            !expired.bind_to_write(),
            "answered 503: the write must not run"
        );
    }

    use super::*;

    #[test]
    fn paths_map_to_their_route_templates() {
        let routes = RouteTemplates::new([
            "/v1/items",
            "/v1/items/{id}",
            "/v1/timezones/{zone}",
            "/admin/faults",
            "/healthz",
        ]);
        assert_eq!(routes.find("/v1/items"), "/v1/items");
        assert_eq!(routes.find("/v1/items/0192-abc"), "/v1/items/{id}");
        assert_eq!(routes.find("/v1/timezones/UTC"), "/v1/timezones/{zone}");
        assert_eq!(
            routes.find("/v1/timezones/America/New_York"),
            "/v1/timezones/{zone}"
        );
        // A trailing parameter may span segments; the router still answers 404 for this.
        assert_eq!(routes.find("/v1/items/a/b"), "/v1/items/{id}");
        assert_eq!(routes.find("/v2/items/a"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/v1/items/"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/v1"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/v1/items/a/b/"), "/v1/items/{id}");
        assert_eq!(routes.find("/wp-admin.php"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/admin/faults"), "/admin/faults");
        assert_eq!(routes.find("/admin/faults/x"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/healthz"), "/healthz");
    }

    /// Answers, problems for unknown routes and panics alike carry the browser security
    /// headers (the dast workflow's ZAP scan fails without them).
    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        use crate::config::{Env, ServiceDefaults};
        use crate::faults::FaultConfig;
        use poem::test::TestClient;
        use poem::{get, handler};

        #[handler]
        fn answer() -> &'static str {
            "ok"
        }
        #[handler]
        fn crash() -> &'static str {
            panic!("handler bug")
        }
        let local = "127.0.0.1:0".parse().unwrap();
        let defaults = ServiceDefaults {
            name: "test",
            bind_addr: local,
            metrics_addr: local,
            trust_parent_sampling: false,
        };
        let config = ServerConfig::from_env(&Env::from_pairs([]), defaults).unwrap();
        let faults = Faults::new(FaultConfig::from_env(&Env::from_pairs([])).unwrap());
        let routes = poem::Route::new()
            .at("/answer", get(answer))
            .at("/crash", get(crash));
        let app = standard_layers(
            routes,
            &config,
            faults,
            RouteTemplates::new(["/answer", "/crash"]),
            ApiKeyVerifier::start(None),
        );
        let client = TestClient::new(app);
        for (path, status) in [("/answer", 200), ("/nothing", 404), ("/crash", 500)] {
            let response = client.get(path).send().await;
            response.assert_status(StatusCode::from_u16(status).unwrap());
            response.assert_header("x-content-type-options", "nosniff");
            response.assert_header("x-frame-options", "DENY");
            response.assert_header("content-security-policy", "frame-ancestors 'none'");
        }
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
        assert!(!is_acceptable_request_id("evil\nlog line"));
        let generated = new_request_id();
        assert!(is_acceptable_request_id(&generated));
        assert_eq!(
            uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
            7
        );
    }
}
