use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use platform::json_body::JsonBody;
use platform::{Errors, Problem};
use poem_openapi::param::Query;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::errors::ConvertErrors;
use super::{ApiTags, ZoneTimeBody, parse_zone};
use crate::error::ApiError;
use crate::zones::{self, ZoneTime};

pub struct ConvertApi;

/// How to choose between the two instants of a local time that occurs twice (DST ending).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
enum Disambiguation {
    /// Answer 422 naming both candidates (default).
    Reject,
    /// Take the first occurrence.
    Earlier,
    /// Take the second occurrence.
    Later,
}

impl From<Disambiguation> for zones::Disambiguation {
    fn from(d: Disambiguation) -> Self {
        match d {
            Disambiguation::Reject => Self::Reject,
            Disambiguation::Earlier => Self::Earlier,
            Disambiguation::Later => Self::Later,
        }
    }
}

/// One converted instant.
#[derive(Debug, Object, serde::Serialize)]
struct Conversion {
    /// The instant, in UTC.
    #[serde(serialize_with = "platform::json_body::rfc3339")]
    instant: DateTime<Utc>,
    /// The source zone's view, when `from` was given.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<ZoneTimeBody>,
    /// The target zone's view.
    to: ZoneTimeBody,
}

#[derive(Debug, Object, serde::Serialize)]
struct ConvertResult {
    /// One entry per `at`, in order, or one for `local`.
    #[oai(validator(max_items = 250))]
    conversions: Vec<Conversion>,
}

#[derive(ApiResponse)]
enum ConvertResponse {
    /// The conversions.
    #[oai(status = 200)]
    Ok(JsonBody<ConvertResult>),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Conversion")]
impl ConvertApi {
    /// Convert instants, or a local time, into another zone.
    ///
    /// Give either one or more `at` instants, or a `local` wall-clock time together with the
    /// `from` zone it is read in. A local time that the clocks skip (DST starting) is a 422;
    /// one they show twice (DST ending) is a 422 listing both instants unless
    /// `disambiguation` picks one. Needs no key.
    #[oai(path = "/convert", method = "get", operation_id = "convertTime")]
    async fn convert(
        &self,
        /// Target IANA zone.
        to: Query<String>,
        /// Source IANA zone; required with `local`.
        from: Query<Option<String>>,
        /// RFC 3339 instants (repeat the parameter for several; at most 250).
        // Items asks for two instants per item on a page of at most 100. `default`: absent is
        // no instants (the document said "required", though `local` goes without `at`).
        #[oai(default, validator(max_items = 250))]
        at: Query<Vec<DateTime<FixedOffset>>>,
        /// A local date-time without offset, e.g. `2026-03-08T02:30:00`, read in `from`.
        local: Query<Option<NaiveDateTime>>,
        /// For a `local` time that occurs twice; `reject` when absent.
        // An `Option` rather than a `default`: poem-openapi writes a defaulted enum as an
        // `allOf`, which client generators (openapi-python-client) cannot read.
        disambiguation: Query<Option<Disambiguation>>,
    ) -> Result<ConvertResponse, Errors<ConvertErrors>> {
        let to = parse_zone(&to.0)?;
        let from = from.0.as_deref().map(parse_zone).transpose()?;
        let instants: Vec<DateTime<Utc>> = match (at.0.as_slice(), local.0) {
            ([], None) => return Err(invalid("give `at` (one or more instants) or `local`").into()),
            ([_, ..], Some(_)) => {
                return Err(invalid("give either `at` or `local`, not both").into());
            }
            (at, None) => at.iter().map(|t| t.with_timezone(&Utc)).collect(),
            ([], Some(local)) => {
                let from =
                    from.ok_or_else(|| invalid("`local` needs `from`, the zone it is read in"))?;
                vec![
                    zones::resolve_local(
                        from,
                        local,
                        disambiguation.0.unwrap_or(Disambiguation::Reject).into(),
                    )
                    .map_err(ApiError::from)?,
                ]
            }
        };
        let conversions = instants
            .into_iter()
            .map(|instant| Conversion {
                instant,
                from: from.map(|zone| ZoneTime::at(zone, instant).into()),
                to: ZoneTime::at(to, instant).into(),
            })
            .collect();
        Ok(ConvertResponse::Ok(JsonBody(ConvertResult { conversions })))
    }
}

fn invalid(message: &str) -> Problem {
    ApiError::InvalidQuery(message.to_owned()).into()
}
