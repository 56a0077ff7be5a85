//! The settings every service has: where it listens, how it logs and traces, its HTTP limits
//! and its fault injection. Each part is read by the module that owns it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ConfigError, Env, ServiceDefaults};
use crate::faults::FaultConfig;
use crate::server::ConnectionLimits;
use crate::telemetry::{LogConfig, TraceConfig};

/// Descriptors kept free of API connections: the metrics port's connections (at most
/// [`METRICS_CONNECTIONS`]), the database pool, the upstream client's pool, the listening
/// sockets, and files the process opens.
pub const RESERVED_DESCRIPTORS: u64 = 128;
/// Connections the metrics port serves at once: scrapers are few.
pub const METRICS_CONNECTIONS: usize = 16;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub service: &'static str,
    pub bind_addr: SocketAddr,
    /// Where `/metrics` is served, apart from the API.
    pub metrics_addr: SocketAddr,
    pub log: LogConfig,
    pub trace: TraceConfig,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After a shutdown signal, how long to keep serving with readiness failing, so load
    /// balancers and the mesh stop sending new requests before the listener closes.
    pub drain_delay: Duration,
    /// Each request's time budget; a caller's `x-request-timeout-ms` can only shorten it.
    pub request_timeout: Duration,
    /// Requests served at once; more are shed with 503 + `Retry-After` instead of queueing.
    pub max_concurrent_requests: usize,
    /// What each client connection is allowed (see `server`).
    pub connections: ConnectionLimits,
    /// Fault injection at start; off unless configured.
    pub faults: FaultConfig,
}

impl ServerConfig {
    pub fn from_env(env: &Env, defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        Ok(Self {
            service: defaults.name,
            bind_addr: env.parse_or("BIND_ADDR", defaults.bind_addr)?,
            metrics_addr: env.parse_or("METRICS_ADDR", defaults.metrics_addr)?,
            log: LogConfig::from_env(env)?,
            trace: TraceConfig::from_env(env, &defaults)?,
            max_body_bytes: env.parse_or("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            shutdown_grace: env.millis_or("SHUTDOWN_GRACE_MS", Duration::from_secs(20))?,
            drain_delay: env.millis_or("DRAIN_DELAY_MS", Duration::ZERO)?,
            request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", Duration::from_secs(5))?,
            max_concurrent_requests: at_least_one(env, "MAX_CONCURRENT_REQUESTS", 512)?,
            connections: connection_limits(env, open_file_limit(), memory_limit())?,
            faults: FaultConfig::from_env(env)?,
        })
    }
}

fn at_least_one(env: &Env, name: &str, default: usize) -> Result<usize, ConfigError> {
    match env.parse_or(name, default)? {
        0 => Err(ConfigError::new(name, "must be at least 1")),
        n => Ok(n),
    }
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may hold.
fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if read == 0 { limit.rlim_cur } else { 1024 }
}

/// The memory the process may use: its cgroup's limit (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), or `None` when it has none.
fn memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    // cgroup v1 reports "no limit" as a number near 2^63.
    .filter(|bytes| *bytes < 1 << 60)
}

/// The share of the memory limit the connections' own buffers may take by default; the rest
/// is for the requests they carry, the database and the caches.
const CONNECTION_MEMORY_SHARE: u64 = 2;

fn connection_limits(
    env: &Env,
    open_file_limit: u64,
    memory_limit: Option<u64>,
) -> Result<ConnectionLimits, ConfigError> {
    let usable = open_file_limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
    let max_header_bytes = env.parse_or("HTTP_MAX_HEADER_BYTES", 32 * 1024)?;
    let max_body_bytes = env.parse_or("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
    // As many as both the descriptors and half the memory limit allow, counting each
    // connection's buffers at their most (`server::connection_memory`).
    let by_memory = memory_limit.map_or(u64::MAX, |limit| {
        (limit / CONNECTION_MEMORY_SHARE)
            / crate::server::connection_memory(max_header_bytes, max_body_bytes)
    });
    let default_connections =
        usize::try_from(usable.min(by_memory).clamp(16, 100_000)).unwrap_or(100_000);
    let max_connections = at_least_one(env, "MAX_CONNECTIONS", default_connections)?;
    if max_connections as u64 > usable {
        return Err(ConfigError::new(
            "MAX_CONNECTIONS",
            format!(
                "{max_connections} would not leave {RESERVED_DESCRIPTORS} of the process's \
                 {open_file_limit} file descriptors for anything else; at most {usable}"
            ),
        ));
    }
    if !(8192..=1 << 20).contains(&max_header_bytes) {
        return Err(ConfigError::new(
            "HTTP_MAX_HEADER_BYTES",
            "must be between 8192 and 1048576",
        ));
    }
    let header_read_timeout =
        env.millis_or("HTTP_HEADER_READ_TIMEOUT_MS", Duration::from_secs(10))?;
    let idle_timeout = env.millis_or("HTTP_IDLE_TIMEOUT_MS", Duration::from_secs(120))?;
    let write_timeout = env.millis_or("HTTP_WRITE_TIMEOUT_MS", Duration::from_secs(30))?;
    let close_timeout = env.millis_or("HTTP_CLOSE_TIMEOUT_MS", Duration::from_secs(5))?;
    let http2_keepalive_interval =
        env.millis_or("HTTP2_KEEPALIVE_INTERVAL_MS", Duration::from_secs(20))?;
    for (name, timeout) in [
        ("HTTP_HEADER_READ_TIMEOUT_MS", header_read_timeout),
        ("HTTP_IDLE_TIMEOUT_MS", idle_timeout),
        ("HTTP_WRITE_TIMEOUT_MS", write_timeout),
        ("HTTP_CLOSE_TIMEOUT_MS", close_timeout),
        ("HTTP2_KEEPALIVE_INTERVAL_MS", http2_keepalive_interval),
    ] {
        if timeout.is_zero() {
            return Err(ConfigError::new(name, "must be at least 1 ms"));
        }
    }
    Ok(ConnectionLimits {
        header_read_timeout,
        idle_timeout,
        write_timeout,
        close_timeout,
        http2_keepalive_interval,
        max_header_bytes,
        max_connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            name: "test",
            bind_addr: "127.0.0.1:1".parse().unwrap(),
            metrics_addr: "127.0.0.1:2".parse().unwrap(),
            trust_parent_sampling: false,
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        let env = Env::from_pairs([("BIND_ADDR", "nowhere:port")]);
        let err = ServerConfig::from_env(&env, defaults()).unwrap_err();
        assert_eq!(err.setting, "BIND_ADDR");
        assert!(
            err.to_string()
                .starts_with("invalid configuration: BIND_ADDR:")
        );

        for (name, value) in [
            ("LOG_FORMAT", "xml"),
            ("HTTP_MAX_HEADER_BYTES", "100"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "0"),
            ("MAX_CONNECTIONS", "0"),
        ] {
            let err = ServerConfig::from_env(&Env::from_pairs([(name, value)]), defaults());
            assert_eq!(err.unwrap_err().setting, name);
        }
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let env = Env::from_pairs([("BIND_ADDR", "")]);
        let config = ServerConfig::from_env(&env, defaults()).unwrap();
        assert_eq!(config.bind_addr.port(), 1);
    }

    #[test]
    fn connections_leave_descriptors_for_everything_else() {
        let limits = connection_limits(&Env::from_pairs([]), 1024, None).unwrap();
        assert_eq!(limits.max_connections, 1024 - 128);
        let tight = connection_limits(&Env::from_pairs([]), 100, None).unwrap();
        assert_eq!(tight.max_connections, 16);
        let err = connection_limits(&Env::from_pairs([("MAX_CONNECTIONS", "2000")]), 1024, None);
        assert_eq!(err.unwrap_err().setting, "MAX_CONNECTIONS");
    }

    #[test]
    fn connections_leave_memory_for_everything_else() {
        let mib = 1024 * 1024;
        // A 256 MiB pod: half of it for connections of (32 + 64 + 256 + 64) KiB at most.
        let limits = connection_limits(&Env::from_pairs([]), 1 << 20, Some(256 * mib)).unwrap();
        assert_eq!(limits.max_connections, (128 * 1024) / (32 + 64 + 256 + 64));
        // Bigger bodies allowed, fewer connections.
        let env = Env::from_pairs([("MAX_BODY_BYTES", "1048576")]);
        let fewer = connection_limits(&env, 1 << 20, Some(256 * mib)).unwrap();
        assert!(fewer.max_connections < limits.max_connections);
        // The descriptors still bound it when they are the scarcer.
        let limits = connection_limits(&Env::from_pairs([]), 200, Some(1 << 40)).unwrap();
        assert_eq!(limits.max_connections, 200 - 128);
    }
}
