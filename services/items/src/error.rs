//! The items service's one error type, and how each case reads as problem+json.

use platform::Problem;
use platform::problem::FieldError;
use poem::http::{HeaderValue, StatusCode, header};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("too many writes with this API key; retry after the delay in Retry-After")]
    RateLimited(std::time::Duration),
    #[error("no item with id {0}")]
    ItemNotFound(String),
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }
}

impl From<ApiError> for Problem {
    fn from(err: ApiError) -> Self {
        let detail = err.to_string();
        match err {
            ApiError::Validation(errors) => Problem::validation(errors),
            ApiError::BadRequest(_) => Problem::new(StatusCode::BAD_REQUEST, detail),
            ApiError::RateLimited(wait) => {
                // Whole seconds, rounded up, and at least one: Retry-After has no fractions.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Problem::typed(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    detail,
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            ApiError::ItemNotFound(_) | ApiError::Store(StoreError::NotFound) => {
                Problem::new(StatusCode::NOT_FOUND, detail)
            }
            ApiError::UnknownZone(zone) => Problem::typed(
                StatusCode::BAD_REQUEST,
                "unknown-zone",
                "Unknown time zone",
                format!(
                    "{detail}; GET /v1/timezones on the timezones service lists the known ones"
                ),
            )
            .with_extensions(serde_json::json!({ "zone": zone })),
            ApiError::Store(StoreError::PreconditionFailed) => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "If-Match does not match the item's current ETag; GET it again and retry",
            ),
            ApiError::Store(StoreError::Conflict) => Problem::new(
                StatusCode::CONFLICT,
                "the item was changed by other requests while this one was written; retry",
            ),
            ApiError::Store(StoreError::IdempotencyKeyReused) => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used with a different request body; \
                 use a new key for a new request",
            ),
            ApiError::Store(StoreError::Unavailable(e)) => {
                tracing::error!(error = %e, "database unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry shortly",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            ApiError::Store(
                e @ (StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Setup(_)),
            ) => {
                tracing::error!(error = %e, "storage failed");
                Problem::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_outages_are_503_with_retry_after() {
        let problem = Problem::from(ApiError::Store(StoreError::from(sqlx::Error::PoolTimedOut)));
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = poem::IntoResponse::into_response(problem);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    #[test]
    fn other_storage_failures_are_500_without_details() {
        let problem = Problem::from(ApiError::Store(StoreError::Corrupt(
            "row 7 has password=hunter2".into(),
        )));
        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!problem.body().detail.contains("hunter2"));
    }
}
