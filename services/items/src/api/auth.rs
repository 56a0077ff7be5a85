//! Write limits per API key. The key itself is checked by `platform::auth`.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use platform::Problem;
use platform::auth::{ApiKeyAuth, ApiKeyVerifier, KeyId};

use crate::error::ApiError;

/// Checks the API key of a write, then its rate: a client over its rate gets 429 with the
/// seconds to wait in `Retry-After`. Only verified keys are counted, so unauthenticated
/// traffic cannot grow the limiter's memory.
///
/// The limiter is keyed by the verified key's [`KeyId`] (a fingerprint), never by the raw
/// secret: the secret then lives only in the verifier, and a key keeps its own bucket through
/// a rotation (its id does not change when it moves from "next" to "current").
#[derive(Clone)]
pub struct WriteGuard {
    verifier: ApiKeyVerifier,
    limiter: Arc<DefaultKeyedRateLimiter<KeyId>>,
}

impl WriteGuard {
    pub fn new(verifier: ApiKeyVerifier, per_second: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            verifier,
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
        }
    }

    pub fn check(&self, auth: &ApiKeyAuth) -> Result<(), Problem> {
        self.check_key(auth.presented())
    }

    fn check_key(&self, presented: &str) -> Result<(), Problem> {
        let id = self.verifier.verify_key(presented)?;
        self.limiter.check_key(&id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited(wait).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use platform::Env;
    use platform::auth::ApiKeySettings;
    use poem::http::StatusCode;

    use super::*;

    const CURRENT: &str = "write-guard-current-key";
    const NEXT: &str = "write-guard-next-key-01";

    #[tokio::test]
    async fn each_key_has_its_own_bucket_keyed_by_its_id() {
        let env = Env::from_pairs([("DUMMY_API_KEY", CURRENT), ("DUMMY_API_KEY_NEXT", NEXT)]);
        let settings = ApiKeySettings::required(&env).unwrap();
        // One write per second, burst 1: the second write with a key in the same instant is
        // over its rate (the bucket refills only after a whole second).
        let guard = WriteGuard::new(ApiKeyVerifier::start(Some(&settings)), 1, 1);
        guard.check_key(CURRENT).unwrap();
        let limited = guard.check_key(CURRENT).unwrap_err();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        guard
            .check_key(NEXT)
            .expect("the other key has its own bucket");
        assert_eq!(
            guard
                .check_key("not-a-configured-key")
                .unwrap_err()
                .status(),
            StatusCode::FORBIDDEN,
            "a wrong key is refused before any bucket"
        );
        // The buckets are the keys' fingerprints: the limiter holds no secret.
        assert_eq!(guard.limiter.len(), 2);
        assert!(
            guard.limiter.check_key(&KeyId::of(CURRENT)).is_err(),
            "the bucket spent by CURRENT is the one under its id"
        );
    }
}
