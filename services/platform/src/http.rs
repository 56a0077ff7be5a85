//! The middleware every request passes through, outermost first:
//! request id, trace span, metrics and access log → panic guard → errors as problem+json → load shedding →
//! deadline → fault injection → body size limit → routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{HeaderValue, StatusCode, header};
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::faults::{Faults, injected_failure};
use crate::problem::Problem;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The time budget left for a request, in whole milliseconds. A caller sets it so the callee
/// gives up when the caller would no longer use the answer.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

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

/// Paths that are never shed, delayed or failed on purpose: probes must tell the truth
/// about the process, and the admin switch must stay reachable to turn faults off.
fn is_operational(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/admin/")
}

/// Wraps a service's routes in the standard layers.
pub fn standard_layers<E>(
    routes: E,
    config: &ServerConfig,
    faults: Faults,
    templates: RouteTemplates,
) -> impl Endpoint<Output = Response> + use<E>
where
    E: Endpoint + 'static,
{
    let max_body_bytes = config.max_body_bytes;
    let request_timeout = config.request_timeout;
    let in_flight = Arc::new(Semaphore::new(config.max_concurrent_requests));
    routes
        .map_to_response()
        .around(move |ep, req| limit_body(ep, req, max_body_bytes))
        .around(move |ep, req| inject_faults(ep, req, faults.clone()))
        .around(move |ep, req| enforce_deadline(ep, req, request_timeout))
        .around(move |ep, req| shed_load(ep, req, Arc::clone(&in_flight)))
        .around(errors_as_problems)
        .with(CatchPanic::new().with_handler(|_| Problem::internal().into_response()))
        .around(move |ep, req| observe(ep, req, templates.clone()))
}

/// 503 at once when `max_concurrent_requests` are already in flight: a fast "try elsewhere"
/// beats an unbounded queue whose requests time out anyway.
async fn shed_load<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    in_flight: Arc<Semaphore>,
) -> poem::Result<E::Output> {
    if is_operational(req.uri().path()) {
        return ep.call(req).await;
    }
    let Ok(_permit) = in_flight.try_acquire_owned() else {
        return Err(Problem::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "the service is at its concurrency limit; retry after the delay in Retry-After",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into());
    };
    ep.call(req).await
}

/// Gives every request a deadline (its own timeout, shortened by a caller's
/// `x-request-timeout-ms`) and abandons the work when it passes.
async fn enforce_deadline<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    request_timeout: Duration,
) -> poem::Result<E::Output> {
    let callers_budget = req
        .headers()
        .get(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let budget = callers_budget.map_or(request_timeout, |b| b.min(request_timeout));
    let timed_out = || {
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
    };
    if budget.is_zero() {
        return Err(timed_out().into());
    }
    req.extensions_mut()
        .insert(Deadline(Instant::now() + budget));
    match tokio::time::timeout(budget, ep.call(req)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(timed_out().into()),
    }
}

async fn inject_faults<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    faults: Faults,
) -> poem::Result<E::Output> {
    let path = req.uri().path();
    let injection = (!is_operational(path))
        .then(|| faults.for_path(path))
        .flatten();
    if let Some(injection) = injection {
        if !injection.delay.is_zero() {
            tokio::time::sleep(injection.delay).await;
        }
        if injection.fail {
            return Err(injected_failure().into());
        }
    }
    ep.call(req).await
}

/// Per request: honours a sane incoming `X-Request-ID` (so a caller's id follows the request
/// across services) or makes one, and echoes it; adds the security headers; continues the
/// caller's trace in a server span; counts and times the request by route template; logs one
/// line when it is done.
async fn observe<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    routes: RouteTemplates,
) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = method_label(req.method());
    let path = req.uri().path().to_owned();
    let route = routes.find(&path);
    req.extensions_mut().insert(RequestId(request_id.clone()));

    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    let (trace_id, span_id) = crate::telemetry::trace_ids(&span).unwrap_or_default();

    let in_flight = metrics::gauge!("http_server_requests_in_flight");
    in_flight.increment(1.0);
    let mut response = async move {
        match ep.call(req).await {
            Ok(response) => response.into_response(),
            Err(err) => Problem::from_poem_error(err).into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    in_flight.decrement(1.0);

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    add_security_headers(response.headers_mut());
    let status = response.status();
    let elapsed = started.elapsed();
    let class = status_class(status);
    metrics::counter!(
        "http_server_requests_total",
        "method" => method, "route" => route, "status" => status.as_u16().to_string(), "status_class" => class,
    )
    .increment(1);
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "method" => method, "route" => route, "status_class" => class,
    )
    .record(elapsed.as_secs_f64());
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    span.in_scope(|| {
        tracing::info!(
            method,
            route,
            %path,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            trace_id,
            span_id,
            "request completed"
        );
    });
    Ok(response)
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
fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A service's routes: the OpenAPI operations, `/openapi.json` and Swagger UI at `/docs`, and
/// the route templates of all of them for metrics and spans.
pub fn api_routes<T, W>(api: poem_openapi::OpenApiService<T, W>) -> (poem::Route, RouteTemplates)
where
    T: poem_openapi::OpenApi + 'static,
    W: poem_openapi::Webhook + 'static,
{
    let templates = RouteTemplates::from_openapi(&api.spec(), &["/openapi.json", "/docs"]);
    let routes = poem::Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui())
        .nest("/", api);
    (routes, templates)
}

/// Maps a request path to the route template it matched (`/v1/items/{id}`), the only path
/// label metrics and spans use: raw paths would make a series per item.
#[derive(Clone)]
pub struct RouteTemplates(Arc<Vec<Template>>);

/// A route template split into segments: `Some(literal)` or `None` for a `{parameter}`.
struct Template {
    segments: Vec<Option<&'static str>>,
    text: &'static str,
}

/// The label for paths that match no route (404 scans), so they share one series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

impl RouteTemplates {
    /// `{name}` segments match any one segment; a trailing one also matches several (zone
    /// names such as `America/New_York` contain `/`). Templates live for the whole process.
    pub fn new<S: AsRef<str>>(templates: impl IntoIterator<Item = S>) -> Self {
        let mut parsed: Vec<Template> = templates
            .into_iter()
            .map(|t| {
                let text: &'static str = Box::leak(t.as_ref().to_owned().into_boxed_str());
                let segments = text
                    .split('/')
                    .map(|seg| (!(seg.starts_with('{') && seg.ends_with('}'))).then_some(seg))
                    .collect();
                Template { segments, text }
            })
            .collect();
        // Literal segments win over parameters: `/admin/faults` before `/admin/{x}`.
        parsed.sort_by_key(|t| std::cmp::Reverse(t.segments.iter().flatten().count()));
        Self(Arc::new(parsed))
    }

    /// The templates of an OpenAPI document's paths, plus `extra` (routes outside it).
    pub fn from_openapi(spec_json: &str, extra: &[&str]) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec_json).unwrap_or_default();
        let paths = spec["paths"]
            .as_object()
            .map(|paths| paths.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        Self::new(
            paths
                .into_iter()
                .chain(extra.iter().map(|s| (*s).to_owned())),
        )
    }

    pub fn find(&self, path: &str) -> &'static str {
        let parts: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|t| matches_template(&t.segments, &parts))
            .map_or(UNMATCHED_ROUTE, |t| t.text)
    }
}

fn matches_template(segments: &[Option<&str>], parts: &[&str]) -> bool {
    let tail_param = matches!(segments.last(), Some(None));
    let length_ok = parts.len() == segments.len() || (tail_param && parts.len() > segments.len());
    length_ok
        && segments
            .iter()
            .zip(parts)
            .all(|(segment, part)| match segment {
                Some(literal) => literal == part,
                None => !part.is_empty(),
            })
}

fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Every error that leaves the routes becomes an RFC 9457 response.
async fn errors_as_problems<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    Ok(match ep.call(req).await {
        Ok(response) => response.into_response(),
        Err(err) => Problem::from_poem_error(err).into_response(),
    })
}

/// Rejects bodies over the limit with 413 before a handler sees them. A declared
/// `Content-Length` is checked up front; a chunked body is read up to the limit.
async fn limit_body<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    max_body_bytes: usize,
) -> poem::Result<E::Output> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max_body_bytes} bytes"),
        )
    };
    match declared {
        Some(length) if length > max_body_bytes as u64 => return Err(too_large().into()),
        Some(_) => {}
        None => {
            let has_body = req
                .headers()
                .contains_key(poem::http::header::TRANSFER_ENCODING);
            if has_body {
                let bytes = req
                    .take_body()
                    .into_bytes_limit(max_body_bytes)
                    .await
                    .map_err(|_| too_large())?;
                req.set_body(bytes);
            }
        }
    }
    ep.call(req).await
}

#[cfg(test)]
mod tests {
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
        assert_eq!(routes.find("/wp-admin.php"), UNMATCHED_ROUTE);
        assert_eq!(routes.find("/admin/faults"), "/admin/faults");
    }

    /// Answers, problems for unknown routes and panics alike carry the browser security
    /// headers (the dast workflow's ZAP scan fails without them).
    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        use crate::config::{Env, ServiceDefaults};
        use crate::faults::FaultConfig;
        use poem::test::TestClient;
        use poem::{EndpointExt, get, handler};

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
        )
        .boxed(); // erases the layered type, whose depth overflows the compiler's limit here
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
    }
}
