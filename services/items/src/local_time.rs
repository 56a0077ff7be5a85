//! Renders instants as local times for a caller: in an IANA zone via the timezones service, or
//! at the configured `TIMEZONE_OFFSET` when no zone was asked for, or, degraded, when the
//! timezones service cannot answer.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use crate::domain::ZoneName;
use crate::error::ApiError;
use crate::timezones_client::{TimezonesClient, TimezonesError};

/// Where rendered local times came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The timezones service, for the zone the caller asked for.
    Timezones,
    /// `TIMEZONE_OFFSET`, because the caller asked for no zone.
    Offset,
    /// `TIMEZONE_OFFSET`, because the timezones service was unavailable (degraded).
    Fallback,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timezones => "timezones",
            Self::Offset => "offset",
            Self::Fallback => "fallback",
        }
    }

    pub fn is_degraded(self) -> bool {
        self == Self::Fallback
    }
}

#[derive(Debug, Clone)]
pub struct Rendered {
    /// The IANA zone asked for, or the offset used (`+05:30`).
    pub zone: String,
    /// One RFC 3339 local time per instant, in order.
    pub times: Vec<String>,
    pub source: TimeSource,
}

#[derive(Clone)]
pub struct LocalClock {
    client: TimezonesClient,
    fallback: FixedOffset,
}

impl LocalClock {
    pub fn new(client: TimezonesClient, fallback: FixedOffset) -> Self {
        Self { client, fallback }
    }

    /// One upstream call for all `instants`, whatever their number.
    pub async fn render(
        &self,
        zone: Option<&ZoneName>,
        instants: &[DateTime<Utc>],
        request_id: Option<&str>,
    ) -> Result<Rendered, ApiError> {
        let Some(zone) = zone else {
            return Ok(self.at_offset(instants, TimeSource::Offset));
        };
        match self.client.local_times(zone, instants, request_id).await {
            Ok(local) => Ok(Rendered {
                zone: zone.as_str().to_owned(),
                times: local.into_iter().map(|t| t.local_time).collect(),
                source: TimeSource::Timezones,
            }),
            Err(TimezonesError::UnknownZone(zone)) => Err(ApiError::UnknownZone(zone)),
            Err(e @ TimezonesError::Unavailable(_)) => {
                tracing::warn!(error = %e, zone = zone.as_str(), "falling back to TIMEZONE_OFFSET");
                Ok(self.at_offset(instants, TimeSource::Fallback))
            }
        }
    }

    fn at_offset(&self, instants: &[DateTime<Utc>], source: TimeSource) -> Rendered {
        Rendered {
            zone: self.fallback.to_string(),
            times: instants
                .iter()
                .map(|t| {
                    t.with_timezone(&self.fallback)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
                })
                .collect(),
            source,
        }
    }
}
