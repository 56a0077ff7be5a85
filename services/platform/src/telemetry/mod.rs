//! Logs and traces. Logs are JSON lines by default (one object per event, with the request
//! span's fields), human-readable when `LOG_FORMAT=pretty`. Traces are OpenTelemetry spans,
//! exported over OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_*` endpoint variables are set;
//! trace context is read and written as W3C `traceparent` and as B3, so callers and the mesh
//! (Linkerd ≤ 2.18 speaks B3, 2.19+ prefers W3C) join one trace.
//!
//! This module is the set-up (settings, [`init`], the guard); each part that runs per request
//! or per line has its own file: `json_log` (the JSON line format), `sampler`, `access_log`
//! (the line per finished request) and `trace_context` (ids, W3C/B3 headers, the request's
//! context on its task).

mod access_log;
mod json_log;
mod sampler;
mod trace_context;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use std::sync::OnceLock;

use crate::config::{ConfigError, Env};

pub use access_log::{AccessLogLine, MAX_LOGGED_PATH, access_log};
pub use sampler::SamplerConfig;
pub use trace_context::{
    RequestContext, RequestTrace, TraceIds, current_request, in_request, inject_trace,
};

use json_log::{JsonLines, NoSpanFields};
use trace_context::propagator;

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

/// Whether spans are exported. When they are not, a span a caller builds goes nowhere but
/// still costs its fields' formatting and the registry's bookkeeping, so callers skip it.
pub fn exporting() -> bool {
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
