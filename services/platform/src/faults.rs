//! Fault injection, for demonstrating mesh retries, golden metrics and this system's own
//! fallbacks: added latency and/or a rate of injected 503s on chosen path prefixes. Off by
//! default; set at start from `FAULT_*` variables or at run time through `/admin/faults`,
//! which needs the API key.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::answers::{self, Answer};
use crate::auth::ApiKeyAuth;
use crate::config::{ConfigError, Env};
use crate::problem::{ErrorStatuses, Errors, FieldError, Problem};

const MAX_DELAY_MS: u64 = 60_000;

/// What to inject, and where.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(deny_unknown_fields)]
pub struct FaultConfig {
    /// Latency added before each matching request, in milliseconds (0–60000; more is a 422).
    #[oai(default)]
    pub delay_ms: u64,
    /// Share of matching requests answered with an injected 503, from 0.0 to 1.0.
    #[oai(default)]
    pub error_rate: f64,
    /// Path prefixes the faults apply to, e.g. `/v1/items`. Health, readiness and admin
    /// paths are never affected.
    #[oai(default = "default_paths")]
    pub paths: Vec<String>,
}

fn default_paths() -> Vec<String> {
    vec!["/v1/".to_owned()]
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            error_rate: 0.0,
            paths: default_paths(),
        }
    }
}

impl FaultConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            delay_ms: env.parse_or("FAULT_DELAY_MS", 0)?,
            error_rate: env.parse_or("FAULT_ERROR_RATE", 0.0)?,
            paths: env.get("FAULT_PATHS").map_or_else(default_paths, |p| {
                p.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
        };
        config.check().map_err(|errors| {
            let e = &errors[0];
            let setting = match e.field.as_str() {
                "delay_ms" => "FAULT_DELAY_MS",
                "error_rate" => "FAULT_ERROR_RATE",
                _ => "FAULT_PATHS",
            };
            ConfigError::new(setting, e.message.clone())
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };
        if self.delay_ms > MAX_DELAY_MS {
            error("delay_ms", format!("must be at most {MAX_DELAY_MS}"));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            error("error_rate", "must be between 0.0 and 1.0".into());
        }
        if self.paths.iter().any(|p| !p.starts_with('/')) {
            error("paths", "each must start with '/'".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn is_active(&self) -> bool {
        self.delay_ms > 0 || self.error_rate > 0.0
    }

    fn applies_to(&self, path: &str) -> bool {
        self.paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    }
}

/// The live fault settings, shared by the middleware and the admin API.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<RwLock<FaultConfig>>);

/// What the middleware should do to one request.
pub struct Injection {
    pub delay: Duration,
    pub fail: bool,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    pub fn get(&self) -> FaultConfig {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, config: FaultConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The faults for a request to `path`, or `None` (the common case, one read lock).
    pub fn for_path(&self, path: &str) -> Option<Injection> {
        let config = self.0.read().unwrap_or_else(|e| e.into_inner());
        if !config.is_active() || !config.applies_to(path) {
            return None;
        }
        Some(Injection {
            delay: Duration::from_millis(config.delay_ms),
            fail: config.error_rate > 0.0 && fastrand::f64() < config.error_rate,
        })
    }
}

/// The answer to an injected failure: a 503 that says it was injected.
pub fn injected_failure() -> Problem {
    Problem::typed(
        StatusCode::SERVICE_UNAVAILABLE,
        "injected-fault",
        "Injected fault",
        "fault injection is on for this path (see /admin/faults)",
    )
}

#[derive(Tags)]
enum AdminTags {
    /// Operational switches; every one needs the API key.
    Admin,
}

/// `/admin/faults`: read or replace the fault settings at run time.
pub struct FaultApi {
    faults: Faults,
}

impl FaultApi {
    pub fn new(faults: Faults) -> Self {
        Self { faults }
    }
}

#[derive(ApiResponse)]
enum FaultResponse {
    /// The fault settings now in force.
    #[oai(status = 200)]
    Ok(Json<FaultConfig>),
}

struct ReadFaultsErrors;
impl ErrorStatuses for ReadFaultsErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        answers::KEY_FAILURES,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::DEADLINE_PASSED,
    ];
}

struct ReplaceFaultsErrors;
impl ErrorStatuses for ReplaceFaultsErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::MALFORMED,
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        answers::BODY_TOO_LARGE,
        answers::NOT_JSON,
        (
            422,
            "A setting out of its range: `delay_ms` over 60000, `error_rate` outside 0.0–1.0, \
             or a path not starting with `/`; `errors` names each.",
        ),
        answers::KEY_FAILURES,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::DEADLINE_PASSED,
    ];
}

#[OpenApi(tag = "AdminTags::Admin")]
impl FaultApi {
    /// The fault injection settings in force.
    ///
    /// Needs the API key. Never shed nor failed on purpose, so it stays reachable to turn
    /// faults off.
    #[oai(path = "/admin/faults", method = "get", operation_id = "getFaults")]
    async fn get_faults(
        &self,
        _auth: ApiKeyAuth,
    ) -> Result<FaultResponse, Errors<ReadFaultsErrors>> {
        Ok(FaultResponse::Ok(Json(self.faults.get())))
    }

    /// Replace the fault injection settings.
    ///
    /// `{}` turns injection off. Needs the API key; the change is logged with the key's id.
    #[oai(path = "/admin/faults", method = "put", operation_id = "replaceFaults")]
    async fn put_faults(
        &self,
        auth: ApiKeyAuth,
        body: Json<FaultConfig>,
    ) -> Result<FaultResponse, Errors<ReplaceFaultsErrors>> {
        let key_id = auth.key_id();
        body.0.check().map_err(Problem::validation)?;
        tracing::warn!(faults = ?body.0, %key_id, "fault injection changed");
        self.faults.set(body.0);
        Ok(FaultResponse::Ok(Json(self.faults.get())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_off_by_default() {
        let faults = Faults::new(FaultConfig::from_env(&Env::from_pairs([])).unwrap());
        assert!(faults.for_path("/v1/items").is_none());
    }

    #[test]
    fn faults_apply_only_to_their_paths() {
        let faults = Faults::new(FaultConfig {
            delay_ms: 10,
            error_rate: 1.0,
            paths: vec!["/v1/convert".into()],
        });
        let injection = faults.for_path("/v1/convert").unwrap();
        assert!(injection.fail);
        assert_eq!(injection.delay, Duration::from_millis(10));
        assert!(faults.for_path("/v1/timezones").is_none());
    }

    #[test]
    fn bad_fault_settings_name_their_variable() {
        let err =
            FaultConfig::from_env(&Env::from_pairs([("FAULT_ERROR_RATE", "1.5")])).unwrap_err();
        assert_eq!(err.setting, "FAULT_ERROR_RATE");
        let err = FaultConfig::from_env(&Env::from_pairs([("FAULT_PATHS", "v1")])).unwrap_err();
        assert_eq!(err.setting, "FAULT_PATHS");
    }
}
