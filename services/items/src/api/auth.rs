//! Write limits per API key. The key itself is checked by `platform::auth`, before a write's
//! parameters and body are read.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use platform::Problem;
use platform::auth::{ApiKeyAuth, KeyId};

use crate::error::ApiError;

/// The rate of a verified key's writes: a client over its rate gets 429 with the seconds to
/// wait in `Retry-After`. Only verified keys are counted, so unauthenticated traffic cannot
/// grow the limiter's memory.
///
/// The limiter is keyed by the verified key's [`KeyId`], never by the raw secret: the secret
/// then lives only in the verifier, and a key keeps its own bucket through a rotation (its id
/// does not change when it moves from "next" to "current"). The buckets are this process's:
/// the limit is per key per pod (docs/security.md).
#[derive(Clone)]
pub struct WriteGuard {
    limiter: Arc<DefaultKeyedRateLimiter<KeyId>>,
}

impl WriteGuard {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
        }
    }

    pub fn check(&self, auth: &ApiKeyAuth) -> Result<(), Problem> {
        self.check_id(auth.key_id())
    }

    fn check_id(&self, id: KeyId) -> Result<(), Problem> {
        self.limiter.check_key(&id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited(wait).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use platform::Secret;
    use poem::http::StatusCode;

    use super::*;

    #[test]
    fn each_key_has_its_own_bucket_keyed_by_its_id() {
        let secret = Secret::new("write-guard-id-secret");
        let (current, next) = (
            KeyId::of("write-guard-current-key", &secret),
            KeyId::of("write-guard-next-key-01", &secret),
        );
        // One write per second, burst 1: the second write with a key in the same instant is
        // over its rate (the bucket refills only after a whole second).
        let guard = WriteGuard::new(1, 1);
        guard.check_id(current).unwrap();
        let limited = guard.check_id(current).unwrap_err();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        guard
            .check_id(next)
            .expect("the other key has its own bucket");
        assert_eq!(guard.limiter.len(), 2);
    }
}
