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
}

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerConfig>),
}

impl TraceConfig {
    pub fn from_env(env: &Env, default_service_name: &str) -> Result<Self, ConfigError> {
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

/// Installs the global log subscriber, tracer and propagators. Spans are always created (so
/// every log line carries a trace id and context is passed on to timezones), and exported
/// only when an OTLP endpoint is configured. Calling it again (as tests do) keeps the first.
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

    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines are buffered in memory and written by a background thread, so a request never
    // waits on a write(2) to stdout nor wakes a thread per line (see `log_writer`).
    let (writer, log_writer) = crate::log_writer::batched(std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(RequestIdOnly)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(filter)
            .boxed(),
    };
    // Only our own spans become OpenTelemetry spans, whatever the log level.
    // Spans carry what the OpenTelemetry HTTP conventions ask for, not the layer's extras:
    // busy/idle times (two clock reads per poll), thread ids and source locations cost
    // throughput on every request and answer no operational question.
    let spans = tracing_opentelemetry::layer()
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
        }));
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

/// What JSON log lines show of the span they were logged in: only its `request_id`. The
/// request span's other fields exist for OpenTelemetry; repeating them in every line would
/// cost a JSON parse per line (measured: about 5% of a read endpoint's throughput).
struct RequestIdOnly;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for RequestIdOnly {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        struct Visitor(Option<String>);
        impl tracing::field::Visit for Visitor {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "request_id" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "request_id" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut visitor = Visitor(None);
        fields.record(&mut visitor);
        match visitor.0 {
            Some(id) => write!(
                writer,
                "{{\"request_id\":{}}}",
                serde_json::Value::String(id)
            ),
            None => write!(writer, "{{}}"),
        }
    }

    fn add_fields(
        &self,
        _current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        _fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        // Fields recorded later (the status) are for the trace, not the log lines.
        Ok(())
    }
}

/// The trace and span ids of a tracing span, as hex, when it has an OpenTelemetry context.
pub fn trace_ids(span: &tracing::Span) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// Starts the current span's trace in `span` from the caller's headers (W3C or B3).
pub fn continue_trace(span: &tracing::Span, headers: &poem::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// Writes `span`'s trace context into outgoing headers (W3C and B3).
pub fn inject_trace(span: &tracing::Span, headers: &mut poem::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_without_an_endpoint() {
        let config = TraceConfig::from_env(&Env::from_pairs([]), "svc").unwrap();
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
        assert!(TraceConfig::from_env(&on, "svc").unwrap().export);
        let disabled = Env::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(!TraceConfig::from_env(&disabled, "svc").unwrap().export);
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
            TraceConfig::from_env(&env, "s").unwrap_err().setting,
            "OTEL_TRACES_SAMPLER_ARG"
        );
        let env = Env::from_pairs([("OTEL_TRACES_SAMPLER", "sometimes")]);
        assert_eq!(
            TraceConfig::from_env(&env, "s").unwrap_err().setting,
            "OTEL_TRACES_SAMPLER"
        );
    }
}
