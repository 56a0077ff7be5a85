use platform::Secret;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Writes and the secret need the service's API key in `X-API-Key`. A missing key is 401
/// (from the framework); a wrong one is 403.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header")]
pub struct ApiKeyAuth(ApiKey);

#[derive(Clone)]
pub struct ApiKeyVerifier {
    expected: Secret,
}

impl ApiKeyVerifier {
    pub fn new(expected: Secret) -> Self {
        Self { expected }
    }

    /// Constant-time comparison, so response timing does not reveal how much of a guess was
    /// right. (A length mismatch returns early; the length is not the secret.)
    pub fn verify(&self, presented: &ApiKeyAuth) -> Result<(), ApiError> {
        let matches: bool = presented
            .0
            .key
            .as_bytes()
            .ct_eq(self.expected.expose().as_bytes())
            .into();
        if matches {
            Ok(())
        } else {
            Err(ApiError::WrongApiKey)
        }
    }
}
