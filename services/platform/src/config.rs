//! 12-factor configuration: every setting comes from an environment variable, secrets may come
//! from a file (`NAME_FILE`) the way a mounted Kubernetes Secret provides them, and every bad
//! value is a start-up error that names the setting.
//!
//! A leaf: the modules that own settings (`settings`, `telemetry`, `faults`, `auth`) read them
//! through [`Env`]; this module knows none of them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A setting that is missing or cannot be used. Its `Display` is the one line the process prints
/// before it exits, so it always names the setting; it never contains a secret value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A secret value. It cannot be printed by accident: `Debug` and `Display` redact it, and the
/// only way to read it is the explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where settings are read from: the process environment in production, a plain map in tests
/// (so tests never mutate the process-wide environment).
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of `name`; an empty value counts as unset, as most deploy tools write one for
    /// "not configured".
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Parses `name` with `FromStr`, or returns `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| ConfigError::new(name, format!("cannot parse {raw:?}: {e}"))),
        }
    }

    /// A duration in whole milliseconds, e.g. `REQUEST_TIMEOUT_MS=2500`.
    pub fn millis_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parse_or(name, default_ms).map(Duration::from_millis)
    }

    /// An optional secret: like [`Env::secret`], but `None` when neither setting is present.
    pub fn optional_secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        if self.get(name).is_none() && self.get(&format!("{name}_FILE")).is_none() {
            return Ok(None);
        }
        self.secret(name).map(Some)
    }

    /// A required secret, from `name` or from the file named by `{name}_FILE`. Setting both is
    /// an error rather than a silent precedence rule. A trailing newline in the file is dropped
    /// (`echo` writes one; Kubernetes Secrets usually do not).
    pub fn secret(&self, name: &str) -> Result<Secret, ConfigError> {
        let file_setting = format!("{name}_FILE");
        match (self.get(name), self.get(&file_setting)) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                name,
                format!("set either {name} or {file_setting}, not both"),
            )),
            (Some(value), None) => Ok(Secret::new(value)),
            (None, Some(path)) => {
                let content = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(&file_setting, format!("cannot read {path:?}: {e}"))
                })?;
                let value = content.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(ConfigError::new(
                        &file_setting,
                        format!("{path:?} is empty"),
                    ));
                }
                Ok(Secret::new(value))
            }
            (None, None) => Err(ConfigError::new(
                name,
                format!("required; set {name} or {file_setting}"),
            )),
        }
    }
}

/// What differs between the services before any setting is read.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    /// The service's name in metrics, traces and logs.
    pub name: &'static str,
    pub bind_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Whether a caller's sampled flag decides this service's sampling by default
    /// (`OTEL_TRACES_PARENT_TRUSTED`): yes for a service only meshed callers reach, no for one
    /// behind the public edge, where any client could make every request traced.
    pub trust_parent_sampling: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn secret_comes_from_a_file_without_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("meridian-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.to_str().unwrap();
        let env = Env::from_pairs([("API_KEY_FILE", path)]);
        assert_eq!(env.secret("API_KEY").unwrap().expose(), "from-file");
    }

    #[test]
    fn missing_secret_names_both_settings() {
        let err = Env::from_pairs([]).secret("API_KEY").unwrap_err();
        assert_eq!(err.setting, "API_KEY");
        assert!(err.to_string().contains("API_KEY_FILE"), "{err}");
    }

    #[test]
    fn secret_set_twice_is_rejected() {
        let env = Env::from_pairs([("API_KEY", "a"), ("API_KEY_FILE", "/nonexistent")]);
        assert!(
            env.secret("API_KEY")
                .unwrap_err()
                .reason
                .contains("not both")
        );
    }

    #[test]
    fn unreadable_secret_file_names_the_file_setting() {
        let env = Env::from_pairs([("API_KEY_FILE", "/nonexistent/key")]);
        assert_eq!(env.secret("API_KEY").unwrap_err().setting, "API_KEY_FILE");
    }
}
