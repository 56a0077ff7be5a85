//! Write limits per API key. The key itself is checked by `platform::auth`.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use platform::Problem;
use platform::auth::{ApiKeyAuth, ApiKeyVerifier};

use crate::error::ApiError;

/// Checks the API key of a write, then its rate: a client over its rate gets 429 with the
/// seconds to wait in `Retry-After`. Only verified keys are counted, so unauthenticated
/// traffic cannot grow the limiter's memory.
#[derive(Clone)]
pub struct WriteGuard {
    verifier: ApiKeyVerifier,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
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
        self.verifier.verify(auth)?;
        self.limiter
            .check_key(&auth.presented().to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::RateLimited(wait).into()
            })
    }
}
