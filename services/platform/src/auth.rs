//! The API key, one policy for both services: sent in `X-API-Key`, compared in constant time. A
//! missing key is 401 (from the framework's security scheme); a wrong one is 403. The key is
//! checked while the operation's parameters are extracted, before its body is read: a client
//! with a wrong key never gets its body parsed.
//!
//! - Every key is at least [`API_KEY_MIN_LEN`] characters, checked at start; the error names the
//!   setting, never the value.
//! - Two keys may be valid at once, so a key can be rotated without a window of refusals: the
//!   current one (`DUMMY_API_KEY` / `DUMMY_API_KEY_FILE`) and a second one
//!   (`DUMMY_API_KEY_NEXT` / `DUMMY_API_KEY_NEXT_FILE`), which is the *next* key while clients
//!   move to it and the *previous* key right after the swap (runbook: docs/security.md).
//! - Keys given as files are re-read every `API_KEY_RELOAD_MS` (10 s by default), because
//!   Kubernetes updates a mounted Secret's files in place (an atomic swap of the `..data`
//!   symlink) without restarting the pod. Both files are read through one resolution of that
//!   link, so a reload never pairs an old current key with a new next key. A missing or empty
//!   next-key file means "no second key"; a reload that finds an unusable key keeps the keys it
//!   had and logs a warning.
//! - A verified key is known by its [`KeyId`], an HMAC of the key under a deployment secret
//!   (`API_KEY_ID_SECRET`): logs and metrics can name a key without giving anyone who reads them
//!   a way to test guesses offline. Per-key state (the write rate limiter) is keyed by it.
//! - Failed verifications are limited per client (`AUTH_FAILURES_PER_MINUTE`): past the limit a
//!   client gets 429 without its key being compared, until the minute is over.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use poem::Request;
use poem::http::{HeaderValue, StatusCode, header};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
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
/// The secret key ids are computed under (or `API_KEY_ID_SECRET_FILE`).
pub const ID_SECRET: &str = "API_KEY_ID_SECRET";
/// Failed verifications a client may make per minute before it gets 429.
pub const FAILURES_PER_MINUTE: &str = "AUTH_FAILURES_PER_MINUTE";
const DEFAULT_FAILURES_PER_MINUTE: u32 = 30;

/// A caller whose `X-API-Key` is one of the service's keys. The key is verified by the
/// security scheme's checker, during parameter extraction: operations take this as their first
/// parameter, so a wrong key is refused before the body is read.
#[derive(SecurityScheme)]
#[oai(
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "verify_request"
)]
pub struct ApiKeyAuth(KeyId);

impl ApiKeyAuth {
    /// The verified key's id: log it and key per-client state by it, never by the key.
    pub fn key_id(&self) -> KeyId {
        self.0
    }
}

/// The checker of [`ApiKeyAuth`]: the service's verifier travels with the request (the
/// platform layer puts it there for requests that carry a key).
async fn verify_request(req: &Request, presented: ApiKey) -> poem::Result<KeyId> {
    let Some(verifier) = req.extensions().get::<ApiKeyVerifier>() else {
        tracing::error!("an operation takes an API key but the request carries no verifier");
        return Err(Problem::internal().into());
    };
    Ok(verifier.verify_from(&presented.key, client_address(req))?)
}

/// Who a failed verification is charged to. Behind a proxy on the same host (the Linkerd
/// sidecar, the local Gateway), every peer is a loopback address: the client is then the
/// rightmost `X-Forwarded-For` entry, the one the edge (NGINX) appended. A direct peer is the
/// client itself, whatever headers it sends.
fn client_address(req: &Request) -> Option<IpAddr> {
    let peer = match req.remote_addr().as_socket_addr() {
        Some(addr) => addr.ip(),
        None => return None,
    };
    if !peer.is_loopback() {
        return Some(peer);
    }
    // The last entry only: anything before it came from the client and proves nothing.
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|entry| entry.trim().parse::<IpAddr>().ok());
    Some(forwarded.unwrap_or(peer))
}

/// A configured key's id: the first 64 bits of HMAC-SHA256(API_KEY_ID_SECRET, key), as 16 hex
/// digits. It names a key in logs, metrics and per-key state without revealing it; unlike a
/// plain hash it gives whoever reads those no way to test guesses offline. It is the same in
/// every replica that shares the secret, and an operator can compute it
/// (`printf %s "$key" | openssl dgst -sha256 -hmac "$secret"`, first 16 digits).
///
/// Per-key state is keyed by the id rather than by the key's role ("current", "next"): a role
/// moves from one key to another at the swap, so a client's rate limit would jump to another
/// bucket mid-rotation, while an id stays with the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(u64);

impl KeyId {
    pub fn of(key: &str, id_secret: &Secret) -> Self {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(id_secret.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(key.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
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
    id_secret: Secret,
    /// The id secret was drawn at random, for want of `API_KEY_ID_SECRET`: said in the log once
    /// the service logs (settings are read before the subscriber exists).
    id_secret_drawn: bool,
    failures_per_minute: u32,
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
        let configured_id_secret = env.optional_secret("API_KEY_ID_SECRET")?;
        let id_secret_drawn = configured_id_secret.is_none();
        let id_secret = match configured_id_secret {
            Some(secret) => checked(ID_SECRET, secret)?,
            None => {
                let mut random = [0u8; 32];
                fastrand::fill(&mut random);
                Secret::new(
                    random
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>(),
                )
            }
        };
        let failures_per_minute =
            env.parse_or("AUTH_FAILURES_PER_MINUTE", DEFAULT_FAILURES_PER_MINUTE)?;
        if failures_per_minute == 0 {
            return Err(ConfigError::new(FAILURES_PER_MINUTE, "must be at least 1"));
        }
        let initial = load(&current, next.as_ref(), &id_secret)?;
        Ok(Some(Self {
            current,
            next,
            reload_every,
            id_secret,
            id_secret_drawn,
            failures_per_minute,
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

    /// The ids of the keys read at start, current first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.initial.keys.iter().map(|(_, id)| *id).collect()
    }

    /// The id a key has in this service.
    pub fn id_of(&self, key: &str) -> KeyId {
        KeyId::of(key, &self.id_secret)
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
fn load(
    current: &Source,
    next: Option<&Source>,
    id_secret: &Secret,
) -> Result<KeySet, ConfigError> {
    // Kubernetes swaps a Secret volume's `..data` link to a new directory in one step; reading
    // each file through the link could pair the old current key with the new next key. Both
    // are read from the one directory the link names now.
    let snapshot = Snapshot::of(current, next);
    let current = match current {
        Source::Value(secret) => checked(CURRENT_KEY, secret.clone())?,
        Source::File(path) => {
            let setting = format!("{CURRENT_KEY}_FILE");
            let path = snapshot.path(path);
            match read_key_file(&setting, &path)? {
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
            let path = snapshot.path(path);
            match std::fs::metadata(&path) {
                // Absent: no rotation under way.
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                _ => match read_key_file(&setting, &path)? {
                    Some(secret) => Some(checked(&setting, secret)?),
                    None => None,
                },
            }
        }
    };
    let mut keys = vec![(current.clone(), KeyId::of(current.expose(), id_secret))];
    if let Some(next) = next.filter(|next| *next != current) {
        let id = KeyId::of(next.expose(), id_secret);
        keys.push((next, id));
    }
    Ok(KeySet { keys })
}

/// Where a Secret volume's `..data` link pointed when the keys were read: the directory both
/// key files are then read from, when they sit in the same volume.
struct Snapshot {
    volume: PathBuf,
    data: Option<PathBuf>,
}

impl Snapshot {
    fn of(current: &Source, next: Option<&Source>) -> Self {
        let dir = |source: Option<&Source>| match source {
            Some(Source::File(path)) => path.parent().map(Path::to_path_buf),
            _ => None,
        };
        let volume = dir(Some(current)).or_else(|| dir(next)).unwrap_or_default();
        // The link's target, resolved once: `..2026_12_02_18_30_00.123`.
        let data = std::fs::read_link(volume.join("..data"))
            .ok()
            .map(|target| volume.join(target));
        Self { volume, data }
    }

    /// `path`, read through the resolved `..data` when it is a file of the same volume.
    fn path(&self, path: &Path) -> PathBuf {
        match (&self.data, path.parent(), path.file_name()) {
            (Some(data), Some(parent), Some(name)) if parent == self.volume => data.join(name),
            _ => path.to_path_buf(),
        }
    }
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
    failures: Arc<FailureLimiter>,
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
        let failures = Arc::new(FailureLimiter::new(
            settings.map_or(DEFAULT_FAILURES_PER_MINUTE, |s| s.failures_per_minute),
        ));
        let Some(settings) = settings else {
            return Self {
                keys: None,
                failures,
            };
        };
        if settings.id_secret_drawn {
            // Ids are then this process's own: fine for one process, confusing across
            // replicas, whose logs would name one key differently.
            tracing::warn!(
                "{ID_SECRET} is not set: API key ids are random per process; set it to the \
                 same secret in every replica to get the same ids everywhere"
            );
        }
        tracing::info!(
            key_ids = %settings.initial.describe(),
            reload_ms = settings.reload_every.as_millis() as u64,
            "API keys loaded"
        );
        let keys = Arc::new(RwLock::new(InForce::new(settings.initial.clone())));
        if settings.has_files() {
            tokio::spawn(reload(Arc::downgrade(&keys), settings.clone()));
        }
        Self {
            keys: Some(keys),
            failures,
        }
    }

    /// [`ApiKeyVerifier::verify_from`] for a caller whose address is not known (not charged
    /// for failures).
    pub fn verify_key(&self, presented: &str) -> Result<KeyId, Problem> {
        self.verify_from(presented, None)
    }

    /// Constant-time comparison with every configured key (no early exit), so response timing
    /// does not reveal how much of a guess was right. (A length mismatch returns early; the
    /// length is not the secret.) Returns the matching key's id. A client past its failures for
    /// this minute gets 429 without a comparison.
    pub fn verify_from(&self, presented: &str, client: Option<IpAddr>) -> Result<KeyId, Problem> {
        if let Some(wait) = client.and_then(|ip| self.failures.blocked(ip)) {
            return Err(too_many_failures(wait));
        }
        let matched = self.matching(presented);
        if matched.is_none() {
            metrics::counter!("api_key_failures_total").increment(1);
            if let Some(ip) = client {
                self.failures.record(ip);
            }
        }
        matched.ok_or_else(|| match &self.keys {
            None => Problem::new(
                StatusCode::FORBIDDEN,
                "this operation is disabled: the service has no API key configured",
            ),
            Some(_) => Problem::new(
                StatusCode::FORBIDDEN,
                "the X-API-Key header does not match this service's key",
            ),
        })
    }

    fn matching(&self, presented: &str) -> Option<KeyId> {
        let keys = self.keys.as_ref()?;
        let keys = keys.read().unwrap_or_else(|e| e.into_inner());
        let mut matched = None;
        for (i, (key, _)) in keys.set.keys.iter().enumerate() {
            let equal: bool = presented.as_bytes().ct_eq(key.expose().as_bytes()).into();
            if equal {
                matched = Some(i);
            }
        }
        matched.map(|i| {
            keys.uses[i].increment(1);
            keys.set.keys[i].1
        })
    }
}

fn too_many_failures(wait: Duration) -> Problem {
    let seconds = wait.as_secs().max(1);
    Problem::typed(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-key-failures",
        "Too many failed API key checks",
        format!("too many wrong API keys from this client; retry in {seconds} s"),
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from_str(&seconds.to_string()).expect("digits are a valid header value"),
    )
}

/// Failed verifications per client in fixed one-minute windows. Its memory is bounded: past
/// [`FailureLimiter::MAX_CLIENTS`] clients in one window, new ones share one count, so a flood of
/// addresses throttles itself rather than growing the map.
struct FailureLimiter {
    per_minute: u32,
    window: Mutex<(Instant, HashMap<Option<IpAddr>, u32>)>,
}

impl FailureLimiter {
    const WINDOW: Duration = Duration::from_secs(60);
    const MAX_CLIENTS: usize = 10_000;

    fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    fn with_window<T>(&self, f: impl FnOnce(Instant, &mut HashMap<Option<IpAddr>, u32>) -> T) -> T {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.0.elapsed() >= Self::WINDOW {
            *window = (Instant::now(), HashMap::new());
        }
        let (started, counts) = &mut *window;
        f(*started, counts)
    }

    fn slot(counts: &HashMap<Option<IpAddr>, u32>, ip: IpAddr) -> Option<IpAddr> {
        (counts.contains_key(&Some(ip)) || counts.len() < Self::MAX_CLIENTS).then_some(ip)
    }

    /// How long until the client may try again, when it is over its failures.
    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.with_window(|started, counts| {
            let count = counts.get(&Self::slot(counts, ip)).copied().unwrap_or(0);
            (count >= self.per_minute).then(|| Self::WINDOW.saturating_sub(started.elapsed()))
        })
    }

    fn record(&self, ip: IpAddr) {
        self.with_window(|_, counts| {
            let slot = Self::slot(counts, ip);
            *counts.entry(slot).or_default() += 1;
        });
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
        match load(
            &settings.current,
            settings.next.as_ref(),
            &settings.id_secret,
        ) {
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

    const ID_SECRET_VALUE: &str = "id-secret-0123456789";

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<ApiKeySettings>, ConfigError> {
        let mut pairs = pairs.to_vec();
        if !pairs.iter().any(|(name, _)| name.starts_with(ID_SECRET)) {
            pairs.push((ID_SECRET, ID_SECRET_VALUE));
        }
        ApiKeySettings::from_env(&Env::from_pairs(pairs))
    }

    fn id(key: &str) -> KeyId {
        KeyId::of(key, &Secret::new(ID_SECRET_VALUE))
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
        assert_eq!(s.key_ids(), vec![id(A)]);

        std::fs::write(&next, "\n").unwrap();
        let s = settings(&[
            ("DUMMY_API_KEY", A),
            ("DUMMY_API_KEY_NEXT_FILE", next.to_str().unwrap()),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.key_ids(), vec![id(A)], "an empty file is no key");

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
        assert_eq!(verifier.verify_key(A).unwrap(), id(A));
        assert_eq!(verifier.verify_key(B).unwrap(), id(B));
        assert_ne!(id(A), id(B));
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
    fn a_key_id_is_an_hmac_under_the_deployment_secret() {
        let id_a = id(A).to_string();
        assert_eq!(id_a.len(), 16);
        assert!(id_a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!A.contains(&id_a) && !id_a.contains("key-a"));
        assert_eq!(id(A), id(A));
        assert_ne!(
            id(A),
            KeyId::of(A, &Secret::new("another-secret-0123")),
            "without the secret, an id says nothing about the key"
        );
        // What an operator gets with
        // `printf %s KEY | openssl dgst -sha256 -hmac SECRET`, first 16 digits (checked with
        // that command).
        assert_eq!(id("0123456789abcdef").to_string(), "55260fe06e72a99e");
        let s = settings(&[("DUMMY_API_KEY", A)]).unwrap().unwrap();
        assert_eq!(s.id_of(A), id(A));
        assert!(!format!("{s:?}").contains(A), "Debug shows no key");
        assert!(
            !format!("{s:?}").contains(ID_SECRET_VALUE),
            "nor the id secret"
        );
        let err = settings(&[("DUMMY_API_KEY", A), (ID_SECRET, "short")]).unwrap_err();
        assert_eq!(err.setting, ID_SECRET);
    }

    #[test]
    fn without_a_deployment_secret_ids_are_the_processs_own() {
        let pairs = [("DUMMY_API_KEY", A)];
        let one = ApiKeySettings::from_env(&Env::from_pairs(pairs))
            .unwrap()
            .unwrap();
        let two = ApiKeySettings::from_env(&Env::from_pairs(pairs))
            .unwrap()
            .unwrap();
        assert_ne!(one.id_of(A), two.id_of(A));
    }

    #[tokio::test]
    async fn a_client_past_its_failures_gets_429_until_the_minute_is_over() {
        let s = settings(&[("DUMMY_API_KEY", A), (FAILURES_PER_MINUTE, "3")])
            .unwrap()
            .unwrap();
        let verifier = ApiKeyVerifier::start(Some(&s));
        let (guesser, other): (IpAddr, IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "203.0.113.8".parse().unwrap(),
        );
        for _ in 0..3 {
            let refused = verifier.verify_from("guess-0123456789abc", Some(guesser));
            assert_eq!(refused.unwrap_err().status(), StatusCode::FORBIDDEN);
        }
        // Now even the right key is not compared for this client...
        let throttled = verifier.verify_from(A, Some(guesser)).unwrap_err();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        let response = poem::IntoResponse::into_response(throttled);
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
        // ...while other clients are unaffected.
        assert_eq!(verifier.verify_from(A, Some(other)).unwrap(), id(A));
    }

    #[test]
    fn the_failure_count_is_bounded_in_memory() {
        let limiter = FailureLimiter::new(2);
        for i in 0..(FailureLimiter::MAX_CLIENTS as u32 + 100) {
            limiter.record(IpAddr::from(i.to_be_bytes()));
        }
        let window = limiter.window.lock().unwrap();
        assert!(window.1.len() <= FailureLimiter::MAX_CLIENTS + 1);
        drop(window);
        // The clients past the cap share one count, so they are throttled together.
        assert!(limiter.blocked(IpAddr::from([255, 0, 0, 1])).is_some());
    }

    /// Kubernetes' atomic writer: the files are links into `..data`, itself a link to a
    /// timestamped directory, swapped in one rename.
    fn secret_volume(dir: &Path, keys: &[(&str, &str)], generation: u32) {
        let data = dir.join(format!("..gen{generation}"));
        std::fs::create_dir_all(&data).unwrap();
        for (name, key) in keys {
            std::fs::write(data.join(name), key).unwrap();
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        let staging = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..gen{generation}"), &staging).unwrap();
        std::fs::rename(&staging, dir.join("..data")).unwrap();
    }

    #[test]
    fn both_key_files_are_read_from_one_resolution_of_the_data_link() {
        let dir = temp_dir("atomic");
        secret_volume(&dir, &[("current", A), ("next", B)], 1);
        let current = Source::File(dir.join("current"));
        let next = Source::File(dir.join("next"));
        let snapshot = Snapshot::of(&current, Some(&next));
        // The swap lands between the two reads of a reload.
        secret_volume(
            &dir,
            &[("current", B), ("next", "key-c-0123456789abcdef")],
            2,
        );
        let read = |name: &str| std::fs::read_to_string(snapshot.path(&dir.join(name))).unwrap();
        assert_eq!((read("current").as_str(), read("next").as_str()), (A, B));
        let s = settings(&[
            ("DUMMY_API_KEY_FILE", dir.join("current").to_str().unwrap()),
            (
                "DUMMY_API_KEY_NEXT_FILE",
                dir.join("next").to_str().unwrap(),
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.key_ids(), vec![id(B), id("key-c-0123456789abcdef")]);
    }
}
