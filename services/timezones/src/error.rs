//! The timezones service's one error type, and how each case reads as problem+json.

use platform::Problem;
use poem::http::StatusCode;

use crate::zones::LocalTimeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unknown time zone {0:?}; GET /v1/timezones lists the known ones")]
    UnknownZone(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error(transparent)]
    LocalTime(#[from] LocalTimeError),
}

impl From<ApiError> for Problem {
    fn from(err: ApiError) -> Self {
        let detail = err.to_string();
        match err {
            ApiError::UnknownZone(zone) => Problem::typed(
                StatusCode::NOT_FOUND,
                "unknown-zone",
                "Unknown time zone",
                detail,
            )
            .with_extensions(serde_json::json!({ "zone": zone })),
            ApiError::InvalidQuery(_) => Problem::new(StatusCode::BAD_REQUEST, detail),
            ApiError::LocalTime(LocalTimeError::Nonexistent {
                offset_before,
                offset_after,
                ..
            }) => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nonexistent-local-time",
                "The local time does not exist in this zone",
                detail,
            )
            .with_extensions(serde_json::json!({
                "offset_before": offset_before,
                "offset_after": offset_after,
            })),
            ApiError::LocalTime(LocalTimeError::Ambiguous { earlier, later, .. }) => {
                Problem::typed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ambiguous-local-time",
                    "The local time occurs twice in this zone",
                    detail,
                )
                .with_extensions(serde_json::json!({ "candidates": [earlier, later] }))
            }
        }
    }
}
