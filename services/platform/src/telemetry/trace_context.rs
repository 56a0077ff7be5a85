//! Trace context: a request's trace and span ids, read from its caller's W3C `traceparent` or
//! B3 headers or made here, carried with the request on its task, and written into the headers
//! of its calls to other services. Kept apart from the set-up because it runs on every request
//! and every outgoing call, whether or not spans are exported.

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_propagator_b3::{B3Encoding, Propagator as B3Propagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use std::future::Future;

use poem::http::HeaderName;

use super::{TRACING, exporting};

/// Reads and writes both W3C `traceparent` and B3 (single `b3` and multi `X-B3-*` headers).
pub(super) fn propagator() -> TextMapCompositePropagator {
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

    pub(super) fn trace_hex(&self) -> [u8; 32] {
        hex(&self.trace_id)
    }

    pub(super) fn span_hex(&self) -> [u8; 16] {
        hex(&self.span_id)
    }
}

pub(super) fn random_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

pub(super) fn random_span_id() -> [u8; 8] {
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
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(traceparent) = text(&TRACEPARENT) {
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
    if let Some(single) = text(&B3) {
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
    let trace_id = b3_trace(text(&B3_TRACE_ID)?)?;
    let span_id = from_hex(text(&B3_SPAN_ID)?)?;
    let sampled = !matches!(text(&B3_SAMPLED), Some("0"))
        || headers.get("x-b3-flags").and_then(|v| v.to_str().ok()) == Some("1");
    Some(TraceIds {
        trace_id,
        span_id,
        sampled,
    })
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
    pub(super) static CURRENT_REQUEST: RequestContext;
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
    let mut put = |name: &HeaderName, value: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name.clone(), value);
        }
    };
    put(&TRACEPARENT, &traceparent);
    put(&B3, &b3);
    put(&B3_TRACE_ID, &trace);
    put(&B3_SPAN_ID, &span);
    put(&B3_SAMPLED, &[sampled]);
}

// Names built once: a lookup or an insert by `&str` parses and checks the name on every call,
// which was a tenth of the hop's own work (cachegrind).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

#[cfg(test)]
mod tests {
    use super::*;

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
}
