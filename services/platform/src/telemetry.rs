//! Logs and traces. Logs are JSON lines by default (one object per event, with the request
//! span's fields), human-readable when `LOG_FORMAT=pretty`. Traces are OpenTelemetry spans,
//! exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_*` endpoint variables are set;
//! trace context is read and written as W3C `traceparent` and as B3, so callers and the mesh
//! (Linkerd ≤ 2.18 speaks B3, 2.19+ prefers W3C) join one trace.

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_propagator_b3::{B3Encoding, Propagator as B3Propagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use std::future::Future;
use std::sync::OnceLock;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `info,sqlx=warn`.
    pub level: String,
    pub format: LogFormat,
}

/// Tracing settings, from the OpenTelemetry SDK's standard variables.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// `OTEL_SERVICE_NAME`, or the binary's name.
    pub service_name: String,
    /// Whether spans leave the process: an OTLP endpoint is set and the SDK is not disabled.
    pub export: bool,
    pub sampler: SamplerConfig,
    /// Whether a caller's sampled flag is followed (`OTEL_TRACES_PARENT_TRUSTED`). When it is
    /// not, a parent-based sampler decides a request with a caller as it would a root, by a
    /// random draw at the ratio: neither the caller's flag nor its chosen trace id can make every
    /// request traced.
    pub trust_parent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerConfig>),
}

impl LogConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let level = env.string_or("LOG_LEVEL", "info");
        EnvFilter::try_new(&level)
            .map_err(|e| ConfigError::new("LOG_LEVEL", format!("{level:?}: {e}")))?;
        let format = match env.get("LOG_FORMAT").unwrap_or("json") {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is not one of json, pretty"),
                ));
            }
        };
        Ok(Self { level, format })
    }
}

impl TraceConfig {
    pub fn from_env(
        env: &Env,
        defaults: &crate::config::ServiceDefaults,
    ) -> Result<Self, ConfigError> {
        let default_service_name = defaults.name;
        let endpoint_set = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let disabled = env.get("OTEL_SDK_DISABLED") == Some("true")
            || env.get("OTEL_TRACES_EXPORTER") == Some("none");
        let ratio = || -> Result<f64, ConfigError> {
            let ratio: f64 = env.parse_or("OTEL_TRACES_SAMPLER_ARG", 1.0)?;
            if (0.0..=1.0).contains(&ratio) {
                Ok(ratio)
            } else {
                Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER_ARG",
                    "must be between 0.0 and 1.0",
                ))
            }
        };
        let parent_based = |root| SamplerConfig::ParentBased(Box::new(root));
        let sampler = match env
            .get("OTEL_TRACES_SAMPLER")
            .unwrap_or("parentbased_traceidratio")
        {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::Ratio(ratio()?),
            "parentbased_always_on" => parent_based(SamplerConfig::AlwaysOn),
            "parentbased_always_off" => parent_based(SamplerConfig::AlwaysOff),
            "parentbased_traceidratio" => parent_based(SamplerConfig::Ratio(ratio()?)),
            other => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER",
                    format!("{other:?} is not a supported sampler"),
                ));
            }
        };
        Ok(Self {
            service_name: env.string_or("OTEL_SERVICE_NAME", default_service_name),
            export: endpoint_set && !disabled,
            sampler,
            trust_parent: env
                .parse_or("OTEL_TRACES_PARENT_TRUSTED", defaults.trust_parent_sampling)?,
        })
    }
}

impl SamplerConfig {
    fn build(&self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(*r),
            Self::ParentBased(root) => Sampler::ParentBased(Box::new(root.build())),
        }
    }
}

/// Keeps the tracer provider and the log writer alive; `shutdown` flushes spans and log
/// lines still buffered.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    _log_writer: crate::log_writer::LogWriterGuard,
}

impl TelemetryGuard {
    pub fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

/// Whether spans leave the process, and how requests are sampled; set once by [`init`].
static TRACING: OnceLock<(bool, SamplerConfig, bool)> = OnceLock::new();
static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn exporting() -> bool {
    TRACING.get().is_some_and(|(export, _, _)| *export)
}

/// Installs the global log subscriber, tracer and propagators. OpenTelemetry spans are built
/// only when they are exported; otherwise a request carries trace and span ids read from its
/// caller or made here, which reach its log lines and its calls to other services just the
/// same. Calling it again (as tests do) keeps the first.
pub fn init(log: &LogConfig, trace: &TraceConfig) -> Result<TelemetryGuard, ConfigError> {
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(trace.sampler.build())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(trace.service_name.clone())
                .build(),
        );
    if trace.export {
        // Endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| ConfigError::new("OTEL_EXPORTER_OTLP_ENDPOINT", e.to_string()))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer("meridian");
    opentelemetry::global::set_text_map_propagator(propagator());
    let _ = TRACING.set((trace.export, trace.sampler.clone(), trace.trust_parent));
    let _ = LOG_FORMAT.set(log.format);

    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines are buffered in memory and written by a background thread, so a request never
    // waits on a write(2) to stdout nor wakes a thread per line (see `log_writer`).
    let (writer, log_writer) = crate::log_writer::batched(std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match log.format {
        // JsonLines reads no span fields (a request's ids come from `CURRENT_REQUEST`): left
        // to the default, the layer formatted every span's fields, in ANSI colours, into a
        // string nobody read (about 5,000 instructions a span, measured with cachegrind).
        LogFormat::Json => fmt
            .event_format(JsonLines)
            .fmt_fields(NoSpanFields)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(filter)
            .boxed(),
    };
    // Only our own spans become OpenTelemetry spans, whatever the log level, and only when
    // they leave the process. Spans carry what the OpenTelemetry HTTP conventions ask for,
    // not the layer's extras: busy/idle times (two clock reads per poll), thread ids and
    // source locations cost throughput on every request and answer no operational question.
    let spans = trace.export.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(LevelFilter::INFO)
            .with_filter(filter_fn(|meta| {
                meta.is_span()
                    && ["platform", "items", "timezones"]
                        .iter()
                        .any(|t| meta.target().starts_with(t))
            }))
    });
    let _already_installed = Registry::default().with(fmt).with(spans).try_init();
    Ok(TelemetryGuard {
        provider,
        _log_writer: log_writer,
    })
}

/// Reads and writes both W3C `traceparent` and B3 (single `b3` and multi `X-B3-*` headers).
fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        // Later propagators win on extraction: W3C over B3 when a caller sends both.
        Box::new(B3Propagator::with_encoding(
            B3Encoding::SingleAndMultiHeader,
        )),
        Box::new(TraceContextPropagator::new()),
    ])
}

/// A request's place in its trace: the trace, this service's span in it, and whether the trace
/// is sampled (passed on to callees in the W3C and B3 flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceIds {
    fn new_span(parent: Option<TraceIds>, sampled: bool) -> Self {
        let trace_id = parent.map_or_else(random_trace_id, |p| p.trace_id);
        Self {
            trace_id,
            span_id: random_span_id(),
            sampled,
        }
    }

    fn trace_hex(&self) -> [u8; 32] {
        hex(&self.trace_id)
    }

    fn span_hex(&self) -> [u8; 16] {
        hex(&self.span_id)
    }
}

fn random_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

fn random_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

fn hex<const N: usize, const M: usize>(bytes: &[u8; N]) -> [u8; M] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; M];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    (out.iter().any(|b| *b != 0)).then_some(out)
}

/// The caller's trace context: W3C `traceparent` wins over B3 (single `b3` or `X-B3-*`), as
/// the composite propagator does.
fn parent_from_headers(headers: &poem::http::HeaderMap) -> Option<TraceIds> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(traceparent) = text("traceparent") {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() == 2 && version != "ff" {
            let flags = from_hex::<1>(flags).map_or(0, |f| f[0]);
            if let (Some(trace_id), Some(span_id)) = (from_hex(trace), from_hex(span)) {
                return Some(TraceIds {
                    trace_id,
                    span_id,
                    sampled: flags & 1 == 1,
                });
            }
        }
    }
    let b3_trace = |trace: &str| -> Option<[u8; 16]> {
        from_hex::<16>(trace).or_else(|| {
            let short = from_hex::<8>(trace)?;
            let mut long = [0u8; 16];
            long[8..].copy_from_slice(&short);
            Some(long)
        })
    };
    if let Some(single) = text("b3") {
        let mut parts = single.split('-');
        let trace_id = b3_trace(parts.next()?)?;
        let span_id = from_hex(parts.next()?)?;
        let sampled = matches!(parts.next(), None | Some("1" | "d"));
        return Some(TraceIds {
            trace_id,
            span_id,
            sampled,
        });
    }
    let trace_id = b3_trace(text("x-b3-traceid")?)?;
    let span_id = from_hex(text("x-b3-spanid")?)?;
    let sampled = !matches!(text("x-b3-sampled"), Some("0")) || text("x-b3-flags") == Some("1");
    Some(TraceIds {
        trace_id,
        span_id,
        sampled,
    })
}

impl SamplerConfig {
    /// The SDK's decision for a server span, made before any span exists (so an unsampled
    /// request builds none). `TraceIdRatioBased` compares the trace id's low 63 bits with the
    /// ratio, as opentelemetry_sdk 0.33 does, so both agree on every trace.
    fn samples(&self, parent: Option<TraceIds>, trace_id: [u8; 16], trust_parent: bool) -> bool {
        match self {
            Self::AlwaysOn => true,
            Self::AlwaysOff => false,
            Self::Ratio(ratio) => {
                let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
                let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
                (low >> 1) < bound
            }
            Self::ParentBased(root) => match parent {
                Some(parent) if trust_parent => parent.sampled,
                // The caller chose the trace id too: draw instead of reading it.
                Some(_) => root.samples(None, random_trace_id(), trust_parent),
                None => root.samples(None, trace_id, trust_parent),
            },
        }
    }
}

/// What the log lines and outgoing calls of one request need to know about it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub trace: TraceIds,
}

impl RequestContext {
    pub fn new(request_id: String, trace: TraceIds) -> Self {
        Self { request_id, trace }
    }
}

tokio::task_local! {
    static CURRENT_REQUEST: RequestContext;
}

/// Runs `work` as part of `request`: its log lines carry the request's ids, and its calls to
/// other services continue its trace.
pub fn in_request<F: Future>(request: RequestContext, work: F) -> impl Future<Output = F::Output> {
    CURRENT_REQUEST.scope(request, work)
}

/// The request being served on this task, if any.
pub fn current_request() -> Option<RequestContext> {
    CURRENT_REQUEST.try_with(Clone::clone).ok()
}

/// A request's server span: an exported OpenTelemetry span when the request is sampled and
/// spans leave the process, otherwise just its ids.
pub enum RequestTrace {
    Ids(TraceIds),
    Exported { span: tracing::Span, ids: TraceIds },
}

impl RequestTrace {
    pub fn start(
        headers: &poem::http::HeaderMap,
        method: &'static str,
        route: &'static str,
    ) -> Self {
        let parent = parent_from_headers(headers);
        let trace_id = parent.map_or_else(random_trace_id, |p| p.trace_id);
        let tracing_config = TRACING.get();
        let trust_parent = tracing_config.is_none_or(|(_, _, trust)| *trust);
        let sampled =
            tracing_config.is_none_or(|(_, s, _)| s.samples(parent, trace_id, trust_parent));
        let ids = TraceIds {
            trace_id,
            ..TraceIds::new_span(parent, sampled)
        };
        if !(exporting() && sampled) {
            return Self::Ids(ids);
        }
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            http.route = route,
            http.response.status_code = tracing::field::Empty,
        );
        match parent {
            Some(parent) if !trust_parent => continue_untrusted(&span, parent, sampled),
            _ => continue_trace(&span, headers),
        }
        let ids = otel_ids(&span).unwrap_or(ids);
        Self::Exported { span, ids }
    }

    pub fn ids(&self) -> TraceIds {
        match self {
            Self::Ids(ids) | Self::Exported { ids, .. } => *ids,
        }
    }

    pub fn span(&self) -> Option<&tracing::Span> {
        match self {
            Self::Ids(_) => None,
            Self::Exported { span, .. } => Some(span),
        }
    }

    pub fn finish(&self, status: u16) {
        if let Self::Exported { span, .. } = self {
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

fn otel_ids(span: &tracing::Span) -> Option<TraceIds> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceIds {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        sampled: span_context.is_sampled(),
    })
}

/// Starts `span`'s trace from the caller's headers (W3C or B3).
fn continue_trace(span: &tracing::Span, headers: &poem::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// Starts `span`'s trace under an untrusted caller: its trace and span ids, but this service's
/// own sampling decision as the parent's flag, which the SDK's parent-based sampler follows.
fn continue_untrusted(span: &tracing::Span, parent: TraceIds, sampled: bool) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Writes the trace context of an outgoing call into its headers (W3C and B3). `span` is the
/// call's client span: exported when the request being served is, so the callee's span is its
/// child; otherwise the request's own ids are passed on.
pub fn inject_trace(span: &tracing::Span, headers: &mut poem::http::HeaderMap) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let request = current_request();
    if exporting() {
        if let Some(request) = &request {
            // A request that was not sampled has no server span: make the client span its
            // child by id, so the sampler drops it too instead of starting a new trace.
            let parent_exported = !span.context().span().span_context().is_valid();
            if parent_exported && !request.trace.sampled {
                let flags = TraceFlags::default();
                let remote = SpanContext::new(
                    TraceId::from_bytes(request.trace.trace_id),
                    SpanId::from_bytes(request.trace.span_id),
                    flags,
                    true,
                    Default::default(),
                );
                let _ =
                    span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
            }
        }
        let context = span.context();
        if context.span().span_context().is_valid() {
            opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers))
            });
            return;
        }
    }
    if let Some(request) = request {
        write_trace_headers(&request.trace, headers);
    }
}

/// W3C `traceparent` and B3 (single and multi), as the composite propagator writes them.
fn write_trace_headers(ids: &TraceIds, headers: &mut poem::http::HeaderMap) {
    use poem::http::HeaderValue;
    let (trace, span) = (ids.trace_hex(), ids.span_hex());
    let sampled = if ids.sampled { b'1' } else { b'0' };
    // Built from the hex bytes: formatting them through `format!` cost a fifth of the hop's
    // header work (cachegrind).
    let mut traceparent = [0u8; 55];
    traceparent[..3].copy_from_slice(b"00-");
    traceparent[3..35].copy_from_slice(&trace);
    traceparent[35] = b'-';
    traceparent[36..52].copy_from_slice(&span);
    traceparent[52..54].copy_from_slice(b"-0");
    traceparent[54] = sampled;
    let mut b3 = [0u8; 51];
    b3[..32].copy_from_slice(&trace);
    b3[32] = b'-';
    b3[33..49].copy_from_slice(&span);
    b3[49] = b'-';
    b3[50] = sampled;
    let mut put = |name: &'static str, value: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    };
    put("traceparent", &traceparent);
    put("b3", &b3);
    put("x-b3-traceid", &trace);
    put("x-b3-spanid", &span);
    put("x-b3-sampled", &[sampled]);
}

/// One access log line's content.
pub struct AccessLogLine<'a> {
    pub method: &'static str,
    pub route: &'static str,
    pub path: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub context: &'a RequestContext,
}

/// The most of a request's path an access log line holds: a head may be up to
/// `HTTP_MAX_HEADER_BYTES`, and a client must not make every line it causes that long.
pub const MAX_LOGGED_PATH: usize = 1024;

/// `path` cut to [`MAX_LOGGED_PATH`] bytes at a character boundary, and whether it was cut.
fn loggable_path(path: &str) -> (&str, bool) {
    if path.len() <= MAX_LOGGED_PATH {
        return (path, false);
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    (&path[..end], true)
}

/// Logs a finished request: in JSON, written straight into the log buffer (the same fields a
/// `tracing` event had, without formatting through the subscriber); in the pretty format, as a
/// `tracing` event.
pub fn access_log(line: &AccessLogLine<'_>) {
    if !tracing::enabled!(target: "platform::http", tracing::Level::INFO) {
        return;
    }
    let trace_id = line.context.trace.trace_hex();
    let span_id = line.context.trace.span_hex();
    let trace_id = std::str::from_utf8(&trace_id).expect("hex");
    let span_id = std::str::from_utf8(&span_id).expect("hex");
    let duration_ms = line.duration.as_secs_f64() * 1000.0;
    let (path, path_truncated) = loggable_path(line.path);
    if LOG_FORMAT.get() != Some(&LogFormat::Json) {
        tracing::info!(
            target: "platform::http",
            method = line.method,
            route = line.route,
            path,
            path_truncated,
            status = line.status,
            duration_ms,
            trace_id,
            span_id,
            request_id = %line.context.request_id,
            "request completed"
        );
        return;
    }
    crate::log_writer::write_line(|out| {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, std::time::SystemTime::now());
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"message\":\"request completed\",\"method\":\"",
        );
        out.extend_from_slice(line.method.as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        write_json_string(out, line.route);
        out.extend_from_slice(b",\"path\":");
        write_json_string(out, path);
        if path_truncated {
            out.extend_from_slice(b",\"path_truncated\":true");
        }
        out.extend_from_slice(b",\"status\":");
        write_decimal(out, u64::from(line.status), 1);
        out.extend_from_slice(b",\"duration_ms\":");
        let micros = u64::try_from(line.duration.as_micros()).unwrap_or(u64::MAX);
        write_decimal(out, micros / 1000, 1);
        out.push(b'.');
        write_decimal(out, micros % 1000, 3);
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(trace_id.as_bytes());
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(span_id.as_bytes());
        out.extend_from_slice(b"\",\"target\":\"platform::http\",\"span\":{\"request_id\":");
        write_json_string(out, &line.context.request_id);
        out.extend_from_slice(b"}}\n");
    });
}

/// `value` in decimal, zero-padded to at least `width` digits, without the formatting
/// machinery (this runs for every request).
fn write_decimal(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[start..]);
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber wrote it. The date and time of
/// day are formatted once per second per thread.
fn write_timestamp(out: &mut Vec<u8>, at: std::time::SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> = const {
            std::cell::RefCell::new((u64::MAX, Vec::new()))
        };
    }
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *cached = seconds;
            text.clear();
            write_date_and_time(text, seconds);
        }
        out.extend_from_slice(text);
    });
    out.push(b'.');
    write_decimal(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, in UTC.
fn write_date_and_time(out: &mut Vec<u8>, seconds: u64) {
    use std::io::Write;
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let of_day = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    );
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let needs_escape = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    if !text.bytes().any(needs_escape) {
        out.extend_from_slice(text.as_bytes());
    } else {
        for (i, c) in text.char_indices() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 => {
                    use std::io::Write;
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                _ => out.extend_from_slice(&text.as_bytes()[i..i + c.len_utf8()]),
            }
        }
    }
    out.push(b'"');
}

/// Span fields for a log format that shows none: formats nothing.
struct NoSpanFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: tracing_subscriber::fmt::format::Writer<'writer>,
        _fields: R,
    ) -> std::fmt::Result {
        Ok(())
    }
}

/// JSON lines for every other event: the event's fields flattened beside `timestamp`, `level`
/// and `target`, and, inside a request, its `trace_id`, `span_id` and `span.request_id`, so
/// one id finds all of a request's lines.
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(&mut out, std::time::SystemTime::now());
        out.extend_from_slice(b"\",\"level\":\"");
        out.extend_from_slice(event.metadata().level().as_str().as_bytes());
        out.push(b'"');
        event.record(&mut JsonFields(&mut out));
        out.extend_from_slice(b",\"target\":");
        write_json_string(&mut out, event.metadata().target());
        let _ = CURRENT_REQUEST.try_with(|request| {
            out.extend_from_slice(b",\"trace_id\":\"");
            out.extend_from_slice(&request.trace.trace_hex());
            out.extend_from_slice(b"\",\"span_id\":\"");
            out.extend_from_slice(&request.trace.span_hex());
            out.extend_from_slice(b"\",\"span\":{\"request_id\":");
            write_json_string(&mut out, &request.request_id);
            out.push(b'}');
        });
        out.extend_from_slice(b"}\n");
        writer.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

struct JsonFields<'a>(&'a mut Vec<u8>);

impl JsonFields<'_> {
    fn key(&mut self, field: &tracing::field::Field) {
        self.0.push(b',');
        write_json_string(self.0, field.name());
        self.0.push(b':');
    }
}

impl tracing::field::Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        write_json_string(self.0, value);
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.key(field);
        self.0.extend_from_slice(value.to_string().as_bytes());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.key(field);
        self.0.extend_from_slice(value.to_string().as_bytes());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            self.0.extend_from_slice(value.to_string().as_bytes());
        } else {
            write_json_string(self.0, &value.to_string());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        write_json_string(self.0, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_without_an_endpoint() {
        let config = TraceConfig::from_env(&Env::from_pairs([]), &defaults("svc")).unwrap();
        assert!(!config.export);
        assert_eq!(config.service_name, "svc");
        assert_eq!(
            config.sampler,
            SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(1.0)))
        );
    }

    #[test]
    fn export_follows_the_standard_variables() {
        let on = Env::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
        assert!(TraceConfig::from_env(&on, &defaults("svc")).unwrap().export);
        let disabled = Env::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(
            !TraceConfig::from_env(&disabled, &defaults("svc"))
                .unwrap()
                .export
        );
    }

    #[test]
    fn trace_context_is_written_as_w3c_and_b3() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let context = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut headers = poem::http::HeaderMap::new();
        propagator().inject_context(
            &context,
            &mut opentelemetry_http::HeaderInjector(&mut headers),
        );
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(headers["x-b3-spanid"], "00f067aa0ba902b7");
        assert!(
            headers["b3"]
                .to_str()
                .unwrap()
                .starts_with("4bf92f3577b34da6a3ce929d0e0e4736-")
        );

        let extracted = propagator().extract(&opentelemetry_http::HeaderExtractor(&headers));
        assert_eq!(extracted.span().span_context().trace_id(), trace_id);
    }

    #[test]
    fn bad_sampler_settings_are_named() {
        let env = Env::from_pairs([("OTEL_TRACES_SAMPLER_ARG", "2")]);
        assert_eq!(
            TraceConfig::from_env(&env, &defaults("s"))
                .unwrap_err()
                .setting,
            "OTEL_TRACES_SAMPLER_ARG"
        );
        let env = Env::from_pairs([("OTEL_TRACES_SAMPLER", "sometimes")]);
        assert_eq!(
            TraceConfig::from_env(&env, &defaults("s"))
                .unwrap_err()
                .setting,
            "OTEL_TRACES_SAMPLER"
        );
    }

    #[test]
    fn access_log_pieces_are_formatted_by_hand_as_json_would_be() {
        let mut out = Vec::new();
        // 2026-11-28T13:24:53.000042Z
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_795_872_293, 42_000);
        write_timestamp(&mut out, at);
        assert_eq!(out, b"2026-11-28T13:24:53.000042Z");
        out.clear();
        write_timestamp(
            &mut out,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400),
        );
        assert_eq!(out, b"2000-02-29T00:00:00.000000Z");
        out.clear();
        write_decimal(&mut out, 0, 1);
        write_decimal(&mut out, 7, 3);
        write_decimal(&mut out, 1234, 3);
        assert_eq!(out, b"00071234");
        out.clear();
        write_json_string(&mut out, "a\"b\\c\nd/é");
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd/é");
    }

    #[test]
    fn a_logged_path_is_cut_at_a_character_boundary() {
        assert_eq!(loggable_path("/v1/items"), ("/v1/items", false));
        let long = format!("/{}", "é".repeat(MAX_LOGGED_PATH));
        let (cut, truncated) = loggable_path(&long);
        assert!(truncated);
        assert_eq!(
            cut.len(),
            MAX_LOGGED_PATH - 1,
            "'/' then 511 two-byte characters"
        );
    }

    #[test]
    fn the_callers_trace_is_read_from_w3c_then_b3() {
        let mut headers = poem::http::HeaderMap::new();
        headers.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"
                .parse()
                .unwrap(),
        );
        let b3 = parent_from_headers(&headers).unwrap();
        assert_eq!(b3.trace_hex(), *b"80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(b3.span_hex(), *b"e457b5a2e4d86bd1");
        assert!(!b3.sampled);
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let w3c = parent_from_headers(&headers).unwrap();
        assert_eq!(w3c.trace_hex(), *b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(w3c.sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-x-y-01",
            "00-zz",
        ] {
            let mut headers = poem::http::HeaderMap::new();
            headers.insert("traceparent", bad.parse().unwrap());
            assert_eq!(parent_from_headers(&headers), None, "{bad}");
        }
    }

    #[test]
    fn the_ratio_sampler_agrees_with_the_sdk() {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::ShouldSample;
        let sdk = Sampler::TraceIdRatioBased(0.25);
        let ours = SamplerConfig::Ratio(0.25);
        let mut agreed = 0;
        for _ in 0..2000 {
            let trace_id = random_trace_id();
            let sdk_samples = sdk
                .should_sample(
                    None,
                    TraceId::from_bytes(trace_id),
                    "s",
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
                == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample;
            assert_eq!(ours.samples(None, trace_id, true), sdk_samples);
            agreed += usize::from(sdk_samples);
        }
        assert!(
            (300..700).contains(&agreed),
            "{agreed} of 2000 sampled at 0.25"
        );
        let parent = TraceIds {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            sampled: false,
        };
        let parent_based = SamplerConfig::ParentBased(Box::new(SamplerConfig::AlwaysOn));
        assert!(!parent_based.samples(Some(parent), parent.trace_id, true));
        assert!(parent_based.samples(None, parent.trace_id, true));
    }

    #[test]
    fn an_untrusted_parent_cannot_force_sampling() {
        let ratio = SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.0)));
        let forced = TraceIds {
            trace_id: [0; 16],
            span_id: random_span_id(),
            sampled: true,
        };
        assert!(
            ratio.samples(Some(forced), forced.trace_id, true),
            "trusted"
        );
        assert!(
            !ratio.samples(Some(forced), forced.trace_id, false),
            "untrusted"
        );
        let half = SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.5)));
        // A trace id whose low bits are all zero is sampled by any ratio: an untrusted caller's
        // chosen id must not decide, so about half of 2000 such requests are sampled.
        let sampled = (0..2000)
            .filter(|_| half.samples(Some(forced), forced.trace_id, false))
            .count();
        assert!((800..1200).contains(&sampled), "{sampled} of 2000 at 0.5");
    }

    #[test]
    fn parent_trust_follows_the_service_default_and_the_setting() {
        let mut trusting = defaults("svc");
        trusting.trust_parent_sampling = true;
        let empty = Env::from_pairs([]);
        assert!(
            TraceConfig::from_env(&empty, &trusting)
                .unwrap()
                .trust_parent
        );
        assert!(
            !TraceConfig::from_env(&empty, &defaults("svc"))
                .unwrap()
                .trust_parent
        );
        let on = Env::from_pairs([("OTEL_TRACES_PARENT_TRUSTED", "true")]);
        assert!(
            TraceConfig::from_env(&on, &defaults("svc"))
                .unwrap()
                .trust_parent
        );
        let bad = Env::from_pairs([("OTEL_TRACES_PARENT_TRUSTED", "maybe")]);
        assert_eq!(
            TraceConfig::from_env(&bad, &trusting).unwrap_err().setting,
            "OTEL_TRACES_PARENT_TRUSTED"
        );
    }

    fn defaults(name: &'static str) -> crate::config::ServiceDefaults {
        let local = "127.0.0.1:0".parse().unwrap();
        crate::config::ServiceDefaults {
            name,
            bind_addr: local,
            metrics_addr: local,
            trust_parent_sampling: false,
        }
    }
}
