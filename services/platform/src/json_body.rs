//! A JSON response body written straight from `Serialize` into one buffer. poem-openapi's
//! `Json<T>` first builds a `serde_json::Value` tree of the whole answer (an allocation per
//! field, about 30 for an item) and then writes that; on the item read that was a fifth of the
//! handler's instructions (cachegrind). The document is unchanged: the schema, content type and
//! response entry are `Json<T>`'s own, which the OpenAPI snapshot test holds.
//!
//! `T` derives both `poem_openapi::Object` (for the document) and `serde::Serialize` (for the
//! bytes); `tests/api/service.rs` in items checks that the bytes are what the schema says.

use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use serde::Serialize;

/// An answer's JSON body, serialized directly (see the module's documentation).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(512);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => Response::builder()
                .content_type(<Json<String> as Payload>::CONTENT_TYPE)
                .body(body),
            // As poem's `Json`: a value that cannot be written is the server's fault.
            Err(e) => {
                tracing::error!(error = %e, "a response body could not be serialized");
                Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

impl<T: Type + ToJSON + Serialize + Send> ApiResponse for JsonBody<T> {
    fn meta() -> MetaResponses {
        Json::<T>::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// `DateTime<Utc>` as poem-openapi writes it (`to_rfc3339`, `+00:00`; serde's own is `Z`), so
/// the bytes do not depend on which of the two wrote them: `#[serde(serialize_with = ...)]`.
pub fn rfc3339<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339())
}
