//! HTTP API, one file per area. Handlers parse input into domain types, call `zones`, and
//! shape the answer; errors leave as `ApiError` → problem+json.

mod convert;
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

/// What a zone's clocks show at one instant.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ZoneTime")]
pub struct ZoneTimeBody {
    /// IANA name, e.g. `America/New_York`.
    pub zone: String,
    /// The instant, in UTC.
    pub instant: DateTime<Utc>,
    /// RFC 3339 local time with the zone's offset.
    pub local_time: String,
    /// Offset from UTC in seconds (east positive).
    pub utc_offset_seconds: i32,
    /// Offset from UTC as `+HH:MM`.
    pub utc_offset: String,
    /// Abbreviation in use, e.g. `EDT`.
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
