//! The API key, one policy for both services: sent in `X-API-Key`, compared in constant time. A
//! missing key is 401 (from the framework's security scheme); a wrong one is 403.
//!
//! - Every key is at least [`API_KEY_MIN_LEN`] characters, checked at start; the error names the
//!   setting, never the value.
//! - Two keys may be valid at once, so a key can be rotated without a window of refusals: the
//!   current one (`DUMMY_API_KEY` / `DUMMY_API_KEY_FILE`) and a second one
//!   (`DUMMY_API_KEY_NEXT` / `DUMMY_API_KEY_NEXT_FILE`), which is the *next* key while clients
//!   move to it and the *previous* key right after the swap (runbook: docs/security.md).
//! - Keys given as files are re-read every `API_KEY_RELOAD_MS` (10 s by default), because
//!   Kubernetes updates a mounted Secret's files in place (an atomic swap of the `..data`
//!   symlink) without restarting the pod. A missing or empty next-key file means "no second
//!   key"; a reload that finds an unusable key keeps the keys it had and logs a warning.
//! - A verified key is known by its [`KeyId`], a fingerprint that is not the secret; per-key
//!   state (the write rate limiter) is keyed by it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use poem::http::StatusCode;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Env, Secret};
use crate::problem::Problem;

/// Shorter keys are refused: a guessable key is worse than none.
pub const API_KEY_MIN_LEN: usize = 16;
/// The current key (or `DUMMY_API_KEY_FILE`).
pub const CURRENT_KEY: &str = "DUMMY_API_KEY";
/// The second key accepted during a rotation (or `DUMMY_API_KEY_NEXT_FILE`).
pub const NEXT_KEY: &str = "DUMMY_API_KEY_NEXT";
/// How often key files are re-read, in milliseconds.
pub const RELOAD_MS: &str = "API_KEY_RELOAD_MS";
const DEFAULT_RELOAD: Duration = Duration::from_secs(10);

#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header")]
pub struct ApiKeyAuth(ApiKey);

impl ApiKeyAuth {
    /// The key as presented. Never log it, never key state by it: use the [`KeyId`] that
    /// [`ApiKeyVerifier::verify`] returns.
    pub fn presented(&self) -> &str {
        &self.0.key
    }
}

/// A configured key's fingerprint: the first 32 bits of its SHA-256, shown as 8 hex digits.
/// It names a key in logs and per-key state without revealing it, and it is the same in every
/// replica, so an operator can compute it (`printf %s "$key" | sha256sum | cut -c1-8`).
///
/// Per-key state is keyed by the fingerprint rather than by the key's role ("current",
/// "next"): a role moves from one key to another at the swap, so a client's rate limit would
/// jump to another bucket mid-rotation, while a fingerprint stays with the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(u32);

impl KeyId {
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self(u32::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3],
        ]))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Where one key comes from: the environment (fixed for the life of the process) or a file
/// (re-read).
#[derive(Debug, Clone)]
enum Source {
    Value(Secret),
    File(PathBuf),
}

/// The API-key settings of a service, validated at start. Its `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    current: Source,
    next: Option<Source>,
    reload_every: Duration,
    /// The keys as read at start, so the service starts with exactly what was checked.
    initial: KeySet,
}

impl ApiKeySettings {
    /// The keys, or `None` when no key is configured at all (a service may then disable what
    /// the key guards). A second key without a current one is an error.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        // The names are spelled out (not built from the constants) so that a search for a
        // setting, and the manifests' contract test (k8s/tests/contract.py), find them here.
        let current = source(
            CURRENT_KEY,
            env.get("DUMMY_API_KEY"),
            env.get("DUMMY_API_KEY_FILE"),
        )?;
        let next = source(
            NEXT_KEY,
            env.get("DUMMY_API_KEY_NEXT"),
            env.get("DUMMY_API_KEY_NEXT_FILE"),
        )?;
        let Some(current) = current else {
            if next.is_some() {
                return Err(ConfigError::new(
                    NEXT_KEY,
                    format!("a second key needs a current one; set {CURRENT_KEY} first"),
                ));
            }
            return Ok(None);
        };
        if let Some(Source::File(path)) = &next {
            // The file itself may be absent (no rotation under way), but its directory must be
            // there: a mistyped mount path would otherwise silently disable rotation.
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    &format!("{NEXT_KEY}_FILE"),
                    format!("directory {dir:?} does not exist"),
                ));
            }
        }
        let reload_every = env.millis_or("API_KEY_RELOAD_MS", DEFAULT_RELOAD)?;
        if reload_every.is_zero() {
            return Err(ConfigError::new(RELOAD_MS, "must be at least 1"));
        }
        let initial = load(&current, next.as_ref())?;
        Ok(Some(Self {
            current,
            next,
            reload_every,
            initial,
        }))
    }

    /// Like [`ApiKeySettings::from_env`], for a service that cannot run without a key.
    pub fn required(env: &Env) -> Result<Self, ConfigError> {
        Self::from_env(env)?.ok_or_else(|| {
            ConfigError::new(
                CURRENT_KEY,
                format!("required; set {CURRENT_KEY} or {CURRENT_KEY}_FILE"),
            )
        })
    }

    /// The fingerprints of the keys read at start, current first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.initial.keys.iter().map(|(_, id)| *id).collect()
    }

    fn has_files(&self) -> bool {
        matches!(self.current, Source::File(_)) || matches!(self.next, Some(Source::File(_)))
    }
}

/// The key from `name` or from the file `{name}_FILE` names; both is an error rather than a
/// silent precedence rule.
fn source(
    name: &str,
    value: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Source>, ConfigError> {
    let file_setting = format!("{name}_FILE");
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            name,
            format!("set either {name} or {file_setting}, not both"),
        )),
        (Some(value), None) => Ok(Some(Source::Value(Secret::new(value)))),
        (None, Some(path)) => Ok(Some(Source::File(PathBuf::from(path)))),
        (None, None) => Ok(None),
    }
}

/// The keys accepted at one moment: the current one first, then the second one if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySet {
    keys: Vec<(Secret, KeyId)>,
}

impl KeySet {
    fn describe(&self) -> String {
        let ids: Vec<String> = self.keys.iter().map(|(_, id)| id.to_string()).collect();
        ids.join(", ")
    }
}

/// Reads both keys and applies the policy. Used at start and by every reload.
fn load(current: &Source, next: Option<&Source>) -> Result<KeySet, ConfigError> {
    let current = match current {
        Source::Value(secret) => checked(CURRENT_KEY, secret.clone())?,
        Source::File(path) => {
            let setting = format!("{CURRENT_KEY}_FILE");
            match read_key_file(&setting, path)? {
                Some(secret) => checked(&setting, secret)?,
                None => {
                    return Err(ConfigError::new(&setting, format!("{path:?} is empty")));
                }
            }
        }
    };
    let next = match next {
        None => None,
        Some(Source::Value(secret)) => Some(checked(NEXT_KEY, secret.clone())?),
        Some(Source::File(path)) => {
            let setting = format!("{NEXT_KEY}_FILE");
            match std::fs::metadata(path) {
                // Absent: no rotation under way.
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                _ => match read_key_file(&setting, path)? {
                    Some(secret) => Some(checked(&setting, secret)?),
                    None => None,
                },
            }
        }
    };
    let mut keys = vec![(current.clone(), KeyId::of(current.expose()))];
    if let Some(next) = next.filter(|next| *next != current) {
        let id = KeyId::of(next.expose());
        keys.push((next, id));
    }
    Ok(KeySet { keys })
}

/// The file's content without a trailing newline (`echo` writes one; Kubernetes Secrets usually
/// do not), or `None` when that leaves nothing.
fn read_key_file(setting: &str, path: &Path) -> Result<Option<Secret>, ConfigError> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {path:?}: {e}")))?;
    let value = content.trim_end_matches(['\n', '\r']);
    Ok((!value.is_empty()).then(|| Secret::new(value)))
}

fn checked(setting: &str, key: Secret) -> Result<Secret, ConfigError> {
    if key.expose().chars().count() < API_KEY_MIN_LEN {
        return Err(ConfigError::new(
            setting,
            format!("must be at least {API_KEY_MIN_LEN} characters"),
        ));
    }
    Ok(key)
}

/// Checks presented keys against the configured ones; with none configured, every key is
/// refused (the operations it guards are then disabled).
#[derive(Clone)]
pub struct ApiKeyVerifier {
    keys: Option<Arc<RwLock<InForce>>>,
}

/// The keys in force, with a use counter per key (`api_key_requests_total{key_id}`), so an
/// operator sees when clients have stopped sending a key before removing it.
struct InForce {
    set: KeySet,
    uses: Vec<metrics::Counter>,
}

impl InForce {
    fn new(set: KeySet) -> Self {
        let uses = set
            .keys
            .iter()
            .map(|(_, id)| {
                let counter =
                    metrics::counter!("api_key_requests_total", "key_id" => id.to_string());
                counter.increment(0); // the series exists from the moment the key does
                counter
            })
            .collect();
        Self { set, uses }
    }
}

impl ApiKeyVerifier {
    /// A verifier for these settings (`None`: every key refused). When a key comes from a
    /// file, a task re-reads the files every reload period for as long as a clone of this
    /// verifier is alive; this must then be called within a Tokio runtime.
    pub fn start(settings: Option<&ApiKeySettings>) -> Self {
        let Some(settings) = settings else {
            return Self { keys: None };
        };
        tracing::info!(
            key_ids = %settings.initial.describe(),
            reload_ms = settings.reload_every.as_millis() as u64,
            "API keys loaded"
        );
        let keys = Arc::new(RwLock::new(InForce::new(settings.initial.clone())));
        if settings.has_files() {
            tokio::spawn(reload(Arc::downgrade(&keys), settings.clone()));
        }
        Self { keys: Some(keys) }
    }

    /// Constant-time comparison with every configured key (no early exit), so response timing
    /// does not reveal how much of a guess was right. (A length mismatch returns early; the
    /// length is not the secret.) Returns the matching key's id.
    pub fn verify(&self, presented: &ApiKeyAuth) -> Result<KeyId, Problem> {
        self.verify_key(presented.presented())
    }

    /// [`ApiKeyVerifier::verify`] for a key as a string.
    pub fn verify_key(&self, presented: &str) -> Result<KeyId, Problem> {
        let Some(keys) = &self.keys else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this operation is disabled: the service has no API key configured",
            ));
        };
        let keys = keys.read().unwrap_or_else(|e| e.into_inner());
        let mut matched = None;
        for (i, (key, _)) in keys.set.keys.iter().enumerate() {
            let equal: bool = presented.as_bytes().ct_eq(key.expose().as_bytes()).into();
            if equal {
                matched = Some(i);
            }
        }
        let matched = matched.map(|i| {
            keys.uses[i].increment(1);
            keys.set.keys[i].1
        });
        matched.ok_or_else(|| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "the X-API-Key header does not match this service's key",
            )
        })
    }
}

/// Re-reads the key files every period until the verifier is gone. A read that fails keeps
/// the keys in force (a half-written or deleted current key must not lock every client out)
/// and logs a warning once per distinct problem.
async fn reload(keys: std::sync::Weak<RwLock<InForce>>, settings: ApiKeySettings) {
    let mut tick = tokio::time::interval(settings.reload_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the keys were just read
    let mut last_problem: Option<ConfigError> = None;
    loop {
        tick.tick().await;
        let Some(keys) = keys.upgrade() else {
            return;
        };
        // Two small files on a tmpfs: reading them inline costs microseconds.
        match load(&settings.current, settings.next.as_ref()) {
            Ok(loaded) => {
                last_problem = None;
                let mut in_force = keys.write().unwrap_or_else(|e| e.into_inner());
                if in_force.set != loaded {
                    tracing::info!(key_ids = %loaded.describe(), "API keys reloaded");
                    *in_force = InForce::new(loaded);
                }
            }
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(
                        error = %problem,
                        "API key files unusable; keeping the keys in force"
                    );
                    last_problem = Some(problem);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "key-a-0123456789abcdef";
    const B: &str = "key-b-0123456789abcdef";

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<ApiKeySettings>, ConfigError> {
        ApiKeySettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meridian-auth-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn every_short_key_is_refused_naming_its_setting_not_its_value() {
        let dir = temp_dir("short");
        std::fs::write(dir.join("short"), "short-key-file\n").unwrap();
        let short_file = dir.join("short");
        let short_file = short_file.to_str().unwrap();
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("DUMMY_API_KEY", "short-key")], "DUMMY_API_KEY"),
            (&[("DUMMY_API_KEY_FILE", short_file)], "DUMMY_API_KEY_FILE"),
            (
                &[("DUMMY_API_KEY", A), ("DUMMY_API_KEY_NEXT", "short-key")],
                "DUMMY_API_KEY_NEXT",
            ),
            (
                &[
                    ("DUMMY_API_KEY", A),
                    ("DUMMY_API_KEY_NEXT_FILE", short_file),
                ],
                "DUMMY_API_KEY_NEXT_FILE",
            ),
        ];
        for (pairs, setting) in cases {
            let err = settings(pairs).unwrap_err();
            assert_eq!(err.setting, setting);
            assert!(err.reason.contains("at least 16"), "{err}");
            assert!(!err.to_string().contains("short-key"), "{err}");
        }
        // Exactly the minimum is enough.
        assert!(settings(&[("DUMMY_API_KEY", "0123456789abcdef")]).is_ok());
    }

    #[test]
    fn no_key_is_none_or_an_error_when_required() {
        assert!(settings(&[]).unwrap().is_none());
        let err = ApiKeySettings::required(&Env::from_pairs([])).unwrap_err();
        assert_eq!(err.setting, "DUMMY_API_KEY");
        assert!(err.reason.contains("DUMMY_API_KEY_FILE"), "{err}");
        let err = settings(&[("DUMMY_API_KEY_NEXT", B)]).unwrap_err();
        assert_eq!(err.setting, "DUMMY_API_KEY_NEXT");
        let err = settings(&[("DUMMY_API_KEY", A), ("DUMMY_API_KEY_FILE", "/x")]).unwrap_err();
        assert!(err.reason.contains("not both"), "{err}");
        let err = settings(&[("DUMMY_API_KEY", A), ("API_KEY_RELOAD_MS", "0")]).unwrap_err();
        assert_eq!(err.setting, "API_KEY_RELOAD_MS");
    }

    #[test]
    fn an_absent_next_key_file_means_no_second_key_but_its_directory_must_exist() {
        let dir = temp_dir("absent");
        let next = dir.join("next");
        let s = settings(&[
            ("DUMMY_API_KEY", A),
            ("DUMMY_API_KEY_NEXT_FILE", next.to_str().unwrap()),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.key_ids(), vec![KeyId::of(A)]);

        std::fs::write(&next, "\n").unwrap();
        let s = settings(&[
            ("DUMMY_API_KEY", A),
            ("DUMMY_API_KEY_NEXT_FILE", next.to_str().unwrap()),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.key_ids(), vec![KeyId::of(A)], "an empty file is no key");

        let err = settings(&[
            ("DUMMY_API_KEY", A),
            ("DUMMY_API_KEY_NEXT_FILE", "/nonexistent-meridian-dir/next"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "DUMMY_API_KEY_NEXT_FILE");
    }

    #[tokio::test]
    async fn both_keys_verify_each_with_its_own_id_and_others_are_refused() {
        let s = settings(&[("DUMMY_API_KEY", A), ("DUMMY_API_KEY_NEXT", B)])
            .unwrap()
            .unwrap();
        let verifier = ApiKeyVerifier::start(Some(&s));
        assert_eq!(verifier.verify_key(A).unwrap(), KeyId::of(A));
        assert_eq!(verifier.verify_key(B).unwrap(), KeyId::of(B));
        assert_ne!(KeyId::of(A), KeyId::of(B));
        for wrong in ["", "key-a", "key-c-0123456789abcdef", &format!("{A}x")] {
            let problem = verifier.verify_key(wrong).unwrap_err();
            assert_eq!(problem.status(), StatusCode::FORBIDDEN);
        }
        let disabled = ApiKeyVerifier::start(None);
        assert_eq!(
            disabled.verify_key(A).unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn a_key_id_is_a_stable_fingerprint_that_does_not_contain_the_key() {
        let id = KeyId::of(A).to_string();
        assert_eq!(id.len(), 8);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!A.contains(&id) && !id.contains("key-a"));
        assert_eq!(KeyId::of(A), KeyId::of(A));
        // The same fingerprint an operator gets with `printf %s KEY | sha256sum | cut -c1-8`
        // (value checked with that command).
        assert_eq!(KeyId::of("0123456789abcdef").to_string(), "9f9f5111");
        let s = settings(&[("DUMMY_API_KEY", A)]).unwrap().unwrap();
        assert!(!format!("{s:?}").contains(A), "Debug shows no key");
    }
}
