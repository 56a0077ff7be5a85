use platform::{Errors, Secret};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use platform::auth::ApiKeyAuth;

use super::ApiTags;
use super::errors::SecretErrors;

pub struct SecretApi {
    message: Secret,
}

impl SecretApi {
    pub fn new(message: Secret) -> Self {
        Self { message }
    }
}

#[derive(Debug, Object)]
struct SecretMessage {
    /// The configured `SECRET_MESSAGE`.
    message: String,
}

#[derive(ApiResponse)]
enum GetSecretResponse {
    /// The secret message.
    #[oai(status = 200)]
    Ok(Json<SecretMessage>),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Secret")]
impl SecretApi {
    /// The configured secret message.
    ///
    /// Needs the API key: it shows a client how to send one.
    #[oai(path = "/secret", method = "get", operation_id = "getSecret")]
    async fn get_secret(
        &self,
        _auth: ApiKeyAuth,
    ) -> Result<GetSecretResponse, Errors<SecretErrors>> {
        Ok(GetSecretResponse::Ok(Json(SecretMessage {
            message: self.message.expose().to_owned(),
        })))
    }
}
