//! HTTP API, one file per area. Handlers parse input into domain types, call `zones`, and
//! shape the answer; errors leave as `ApiError` → problem+json.

mod convert;
mod errors;
mod zones;

pub use convert::ConvertApi;
pub use zones::ZonesApi;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, Tags};

use crate::error::ApiError;
use crate::zones::{ZoneName, ZoneTime};

#[derive(Tags)]
enum ApiTags {
    /// IANA time zones.
    Timezones,
    /// Converting instants and local times between zones.
    Conversion,
}

// Written by serde (`JsonBody`), described by poem-openapi.
/// What a zone's clocks show at one instant.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename = "ZoneTime")]
pub struct ZoneTimeBody {
    /// IANA name, e.g. `America/New_York`.
    #[oai(validator(max_length = 32))]
    pub zone: String,
    /// The instant, in UTC.
    #[serde(serialize_with = "platform::json_body::rfc3339")]
    pub instant: DateTime<Utc>,
    /// RFC 3339 local time with the zone's offset.
    #[oai(validator(max_length = 40))]
    pub local_time: String,
    /// Offset from UTC in seconds (east positive); chrono keeps it within a day.
    #[oai(validator(minimum(value = "-86399"), maximum(value = "86399")))]
    pub utc_offset_seconds: i32,
    /// Offset from UTC as `+HH:MM`.
    #[oai(validator(max_length = 6))]
    pub utc_offset: String,
    /// Abbreviation in use, e.g. `EDT`.
    #[oai(validator(max_length = 6))]
    pub abbreviation: String,
    /// Whether daylight-saving time is in effect.
    pub dst: bool,
}

impl From<ZoneTime> for ZoneTimeBody {
    fn from(t: ZoneTime) -> Self {
        Self {
            zone: t.zone.as_str().to_owned(),
            instant: t.instant,
            local_time: t.local_time,
            utc_offset_seconds: t.utc_offset_seconds,
            utc_offset: t.utc_offset,
            abbreviation: t.abbreviation,
            dst: t.dst,
        }
    }
}

fn parse_zone(name: &str) -> Result<ZoneName, ApiError> {
    ZoneName::parse(name).ok_or_else(|| ApiError::UnknownZone(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// The document states these lengths; every zone chrono-tz knows, in winter and summer and
    /// at both ends of its data, keeps within them.
    #[test]
    fn every_zone_time_keeps_within_the_stated_lengths() {
        let instants = [
            Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2100, 12, 31, 23, 59, 59).unwrap(),
        ];
        for tz in chrono_tz::TZ_VARIANTS {
            let zone = ZoneName::parse(tz.name()).expect("a known zone");
            for instant in instants {
                let time = ZoneTimeBody::from(ZoneTime::at(zone, instant));
                assert!(time.zone.chars().count() <= 32, "{}", time.zone);
                assert!(time.local_time.chars().count() <= 40, "{}", time.local_time);
                assert!(time.utc_offset.chars().count() <= 6, "{}", time.utc_offset);
                assert!(
                    time.abbreviation.chars().count() <= 6,
                    "{}",
                    time.abbreviation
                );
                assert!(time.utc_offset_seconds.abs() < 86_400);
            }
        }
    }
}
