//! The API key: sent in `X-API-Key`, compared in constant time. A missing key is 401 (from the
//! framework's security scheme); a wrong one is 403.

use poem::http::StatusCode;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::problem::Problem;

#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header")]
pub struct ApiKeyAuth(ApiKey);

impl ApiKeyAuth {
    /// The key as presented, for keying per-client limits. Never log it.
    pub fn presented(&self) -> &str {
        &self.0.key
    }
}

/// Checks presented keys against the configured one; with none configured, every key is
/// refused (the operations it guards are then disabled).
#[derive(Clone)]
pub struct ApiKeyVerifier {
    expected: Option<Secret>,
}

impl ApiKeyVerifier {
    pub fn new(expected: Option<Secret>) -> Self {
        Self { expected }
    }

    /// Constant-time comparison, so response timing does not reveal how much of a guess was
    /// right. (A length mismatch returns early; the length is not the secret.)
    pub fn verify(&self, presented: &ApiKeyAuth) -> Result<(), Problem> {
        let Some(expected) = &self.expected else {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "this operation is disabled: the service has no API key configured",
            ));
        };
        let matches: bool = presented
            .presented()
            .as_bytes()
            .ct_eq(expected.expose().as_bytes())
            .into();
        if matches {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "the X-API-Key header does not match this service's key",
            ))
        }
    }
}
