//! The items service's settings, all from the environment (every one is in
//! docs/configuration.md). Every bad value stops the process at start with one line naming the
//! setting.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::FixedOffset;
use platform::auth::ApiKeySettings;
use platform::config::{ConfigError, Env, Secret, ServiceDefaults};
use platform::settings::ServerConfig;
use url::Url;

use crate::timezones_client::ClientConfig;

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "items",
    bind_addr: SocketAddr::new(LOCALHOST, 8080),
    metrics_addr: SocketAddr::new(LOCALHOST, 9464),
    trust_parent_sampling: false,
};
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/items.db";
pub const DEFAULT_TIMEZONES_URL: &str = "http://127.0.0.1:8081";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    /// May hold a password, hence a `Secret`.
    pub database_url: Secret,
    /// PostgreSQL: the pool's size. SQLite: how many idle reader connections are kept.
    pub database_max_connections: u32,
    /// SQLite: the most reader connections open at once (idle or reading).
    pub sqlite_max_readers: u32,
    /// How long a request waits for a database connection (or SQLite's writer) before 503.
    pub database_acquire_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_key_ttl: Duration,
    pub timezones: ClientConfig,
    pub greeting: String,
    pub timezone_offset: FixedOffset,
    /// The write key(s): required, under the one policy of `platform::auth` (minimum length,
    /// a second key for rotation, key files re-read).
    pub api_keys: ApiKeySettings,
    pub secret_message: Secret,
    /// Sustained writes per second allowed per API key; bursts up to `write_burst`.
    pub write_rate_per_second: u32,
    pub write_burst: u32,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database_url = env
            .optional_secret("DATABASE_URL")?
            .unwrap_or_else(|| Secret::new(DEFAULT_DATABASE_URL));
        let scheme_ok = ["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|s| database_url.expose().starts_with(s));
        if !scheme_ok {
            // The value itself may carry a password: name the setting, not the value.
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite:, postgres: or postgresql:",
            ));
        }
        let api_keys = ApiKeySettings::required(env)?;
        let server = ServerConfig::from_env(env, DEFAULTS)?;
        // A request must hear 503 from a saturated pool before its own deadline answers 504.
        let default_acquire = (server.request_timeout / 2).min(Duration::from_secs(1));
        let database_acquire_timeout =
            env.millis_or("DATABASE_ACQUIRE_TIMEOUT_MS", default_acquire)?;
        if database_acquire_timeout.is_zero() || database_acquire_timeout >= server.request_timeout
        {
            return Err(ConfigError::new(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                format!(
                    "must be at least 1 and less than REQUEST_TIMEOUT_MS ({} ms)",
                    server.request_timeout.as_millis()
                ),
            ));
        }
        let idempotency_key_ttl_seconds = positive(env, "IDEMPOTENCY_KEY_TTL_SECONDS", 86_400)?;
        Ok(Self {
            server,
            database_url,
            database_max_connections: positive(env, "DATABASE_MAX_CONNECTIONS", 8)?,
            sqlite_max_readers: positive(env, "SQLITE_MAX_READERS", 16)?,
            database_acquire_timeout,
            idempotency_key_ttl: Duration::from_secs(u64::from(idempotency_key_ttl_seconds)),
            timezones: ClientConfig {
                base_url: parse_timezones_url(env)?,
                connect_timeout: env
                    .millis_or("TIMEZONES_CONNECT_TIMEOUT_MS", Duration::from_millis(250))?,
                request_timeout: env
                    .millis_or("TIMEZONES_TIMEOUT_MS", Duration::from_millis(1000))?,
                retries: env.parse_or("TIMEZONES_RETRIES", 2)?,
                failure_threshold: positive(env, "CIRCUIT_FAILURE_THRESHOLD", 5)?,
                cooldown: env.millis_or("CIRCUIT_COOLDOWN_MS", Duration::from_secs(2))?,
            },
            greeting: env.string_or("GREETING", "Hello from meridian"),
            timezone_offset: parse_offset(env.get("TIMEZONE_OFFSET").unwrap_or("+00:00"))
                .map_err(|reason| ConfigError::new("TIMEZONE_OFFSET", reason))?,
            api_keys,
            secret_message: env.secret("SECRET_MESSAGE")?,
            write_rate_per_second: positive(env, "WRITE_RATE_PER_SECOND", 50)?,
            write_burst: positive(env, "WRITE_BURST", 100)?,
        })
    }
}

fn positive(env: &Env, name: &str, default: u32) -> Result<u32, ConfigError> {
    match env.parse_or(name, default)? {
        0 => Err(ConfigError::new(name, "must be at least 1")),
        n => Ok(n),
    }
}

fn parse_timezones_url(env: &Env) -> Result<Url, ConfigError> {
    let raw = env.get("TIMEZONES_URL").unwrap_or(DEFAULT_TIMEZONES_URL);
    let mut url = Url::parse(raw)
        .map_err(|e| ConfigError::new("TIMEZONES_URL", format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            "TIMEZONES_URL",
            "must be an http:// or https:// URL",
        ));
    }
    // A trailing slash makes `join("v1/convert")` append rather than replace the last segment.
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// `+HH:MM` or `-HH:MM` (also `Z`), within ±23:59.
pub fn parse_offset(raw: &str) -> Result<FixedOffset, String> {
    let invalid = || format!("{raw:?} is not an offset like +05:30 or -08:00");
    if raw == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset is valid"));
    }
    let (sign, rest) = match raw.as_bytes().first() {
        Some(b'+') => (1, &raw[1..]),
        Some(b'-') => (-1, &raw[1..]),
        _ => return Err(invalid()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(invalid)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(invalid());
    }
    let hours: i32 = hours.parse().map_err(|_| invalid())?;
    let minutes: i32 = minutes.parse().map_err(|_| invalid())?;
    if hours > 23 || minutes > 59 {
        return Err(invalid());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DUMMY_API_KEY", "0123456789abcdef"),
            ("SECRET_MESSAGE", "the eagle has landed"),
        ]
    }

    fn settings(extra: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Settings::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.server.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url.expose(), "sqlite://data/items.db");
        assert_eq!(s.timezones.base_url.as_str(), "http://127.0.0.1:8081/");
        assert_eq!(s.timezones.retries, 2);
        assert_eq!(s.timezone_offset.local_minus_utc(), 0);
    }

    #[test]
    fn offsets_parse_strictly() {
        assert_eq!(parse_offset("+05:30").unwrap().local_minus_utc(), 19800);
        assert_eq!(parse_offset("-08:00").unwrap().local_minus_utc(), -28800);
        for bad in ["05:30", "+5:30", "+24:00", "+05:60", "UTC", "", "+05"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
        assert_eq!(
            settings(&[("TIMEZONE_OFFSET", "nope")])
                .unwrap_err()
                .setting,
            "TIMEZONE_OFFSET"
        );
    }

    #[test]
    fn required_secrets_are_named_when_missing() {
        let err = Settings::from_env(&Env::from_pairs([("SECRET_MESSAGE", "x")])).unwrap_err();
        assert_eq!(err.setting, "DUMMY_API_KEY");
        let err = Settings::from_env(&Env::from_pairs([("DUMMY_API_KEY", "0123456789abcdef")]))
            .unwrap_err();
        assert_eq!(err.setting, "SECRET_MESSAGE");
    }

    #[test]
    fn short_api_keys_are_refused_without_echoing_them() {
        let err = settings(&[("DUMMY_API_KEY", "short-key")]).unwrap_err();
        assert_eq!(err.setting, "DUMMY_API_KEY");
        assert!(!err.to_string().contains("short-key"));
    }

    #[test]
    fn bad_database_url_is_named_without_its_value() {
        let err = settings(&[("DATABASE_URL", "mysql://root:pw@db/items")]).unwrap_err();
        assert_eq!(err.setting, "DATABASE_URL");
        assert!(!err.to_string().contains("pw"));
    }

    #[test]
    fn the_acquire_timeout_is_shorter_than_the_request_deadline() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_acquire_timeout, Duration::from_secs(1));
        assert_eq!(s.idempotency_key_ttl, Duration::from_secs(86_400));
        let s = settings(&[("REQUEST_TIMEOUT_MS", "600")]).unwrap();
        assert_eq!(s.database_acquire_timeout, Duration::from_millis(300));
        for bad in [
            vec![("DATABASE_ACQUIRE_TIMEOUT_MS", "5000")],
            vec![("DATABASE_ACQUIRE_TIMEOUT_MS", "0")],
            vec![
                ("REQUEST_TIMEOUT_MS", "800"),
                ("DATABASE_ACQUIRE_TIMEOUT_MS", "900"),
            ],
        ] {
            assert_eq!(
                settings(&bad).unwrap_err().setting,
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                "{bad:?}"
            );
        }
        assert_eq!(
            settings(&[("IDEMPOTENCY_KEY_TTL_SECONDS", "0")])
                .unwrap_err()
                .setting,
            "IDEMPOTENCY_KEY_TTL_SECONDS"
        );
    }

    #[test]
    fn bad_timezones_url_is_named() {
        assert_eq!(
            settings(&[("TIMEZONES_URL", "not a url")])
                .unwrap_err()
                .setting,
            "TIMEZONES_URL"
        );
        assert_eq!(
            settings(&[("TIMEZONES_URL", "ftp://x")])
                .unwrap_err()
                .setting,
            "TIMEZONES_URL"
        );
        assert_eq!(
            settings(&[("DATABASE_MAX_CONNECTIONS", "0")])
                .unwrap_err()
                .setting,
            "DATABASE_MAX_CONNECTIONS"
        );
    }
}
