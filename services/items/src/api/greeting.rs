use chrono::Utc;
use platform::Errors;
use platform::http::{Deadline, RequestId};
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::errors::GreetingErrors;
use super::items::DegradedText;
use super::strict_string::StrictString;
use super::{ApiTags, parse_zone};
use crate::local_time::LocalClock;

pub struct GreetingApi {
    greeting: String,
    clock: LocalClock,
}

impl GreetingApi {
    pub fn new(greeting: String, clock: LocalClock) -> Self {
        Self { greeting, clock }
    }
}

#[derive(Debug, Object)]
struct Greeting {
    /// The configured `GREETING`.
    message: String,
    /// The current time, RFC 3339, in `zone`.
    #[oai(validator(max_length = 40))]
    local_time: String,
    /// The IANA zone asked for, or the UTC offset used.
    #[oai(validator(max_length = 64))]
    zone: String,
    /// `timezones` (looked up), `offset` (no zone asked for: `TIMEZONE_OFFSET`) or `fallback`
    /// (timezones unavailable: `TIMEZONE_OFFSET`).
    #[oai(validator(max_length = 9))]
    source: String,
    /// True when the zone asked for could not be looked up and the fallback offset was used.
    degraded: bool,
}

#[derive(ApiResponse)]
enum GetGreetingResponse {
    /// The greeting.
    #[oai(status = 200)]
    Ok(
        Json<Greeting>,
        /// Present when the time fell back to `TIMEZONE_OFFSET`: `timezones-unavailable` or
        /// `timezones-circuit-open`.
        #[oai(header = "Meridian-Degraded")]
        Option<DegradedText>,
    ),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Greeting")]
impl GreetingApi {
    /// A greeting with the current local time.
    ///
    /// With `tz`, the time comes from the timezones service; without, from `TIMEZONE_OFFSET`.
    /// Needs no key.
    #[oai(path = "/greeting", method = "get", operation_id = "getGreeting")]
    async fn get_greeting(
        &self,
        /// IANA zone, e.g. `Asia/Kolkata`.
        tz: Query<Option<StrictString<64>>>,
        request_id: Data<&RequestId>,
        deadline: Data<&Deadline>,
    ) -> Result<GetGreetingResponse, Errors<GreetingErrors>> {
        let zone = parse_zone(tz.0.as_ref().map(|z| z.0.as_str()))?;
        let rendered = self
            .clock
            .render(
                zone.as_ref(),
                &[Utc::now()],
                deadline.0.0,
                Some(&request_id.0.0),
            )
            .await?;
        let degraded = rendered
            .source
            .degraded_reason()
            .map(|r| StrictString(r.to_owned()));
        Ok(GetGreetingResponse::Ok(
            Json(Greeting {
                message: self.greeting.clone(),
                local_time: rendered.times.into_iter().next().unwrap_or_default(),
                zone: rendered.zone,
                source: rendered.source.as_str().to_owned(),
                degraded: rendered.source.is_degraded(),
            }),
            degraded,
        ))
    }
}
