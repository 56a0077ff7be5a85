//! Renders instants as local times for a caller: in an IANA zone via the timezones service, or
//! at the configured `TIMEZONE_OFFSET` when no zone was asked for, or, degraded, when the
//! timezones service cannot answer in time.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use crate::domain::ZoneName;
use crate::error::ApiError;
use crate::timezones_client::{TimezonesClient, TimezonesError};

/// The header that marks a degraded answer, with the reason as its value.
pub const DEGRADED_HEADER: &str = "meridian-degraded";

/// Where rendered local times came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The timezones service, for the zone the caller asked for.
    Timezones,
    /// `TIMEZONE_OFFSET`, because the caller asked for no zone.
    Offset,
    /// `TIMEZONE_OFFSET`, because timezones failed or timed out (degraded).
    FallbackUnavailable,
    /// `TIMEZONE_OFFSET`, because the circuit to timezones is open (degraded, not even tried).
    FallbackCircuitOpen,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timezones => "timezones",
            Self::Offset => "offset",
            Self::FallbackUnavailable | Self::FallbackCircuitOpen => "fallback",
        }
    }

    pub fn is_degraded(self) -> bool {
        self.degraded_reason().is_some()
    }

    /// The value of the `meridian-degraded` header, when degraded.
    pub fn degraded_reason(self) -> Option<&'static str> {
        match self {
            Self::Timezones | Self::Offset => None,
            Self::FallbackUnavailable => Some("timezones-unavailable"),
            Self::FallbackCircuitOpen => Some("timezones-circuit-open"),
        }
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

    /// One upstream call for all `instants`, whatever their number, answered by `deadline`.
    pub async fn render(
        &self,
        zone: Option<&ZoneName>,
        instants: &[DateTime<Utc>],
        deadline: std::time::Instant,
        request_id: Option<&str>,
    ) -> Result<Rendered, ApiError> {
        let Some(zone) = zone else {
            return Ok(self.at_offset(instants, TimeSource::Offset));
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        match self
            .client
            .local_times(zone, instants, deadline, request_id)
            .await
        {
            Ok(local) => Ok(Rendered {
                zone: zone.as_str().to_owned(),
                times: local.into_iter().map(|t| t.local_time).collect(),
                source: TimeSource::Timezones,
            }),
            Err(TimezonesError::UnknownZone(zone)) => Err(ApiError::UnknownZone(zone)),
            Err(TimezonesError::CircuitOpen) => {
                Ok(self.fallback(instants, TimeSource::FallbackCircuitOpen))
            }
            Err(e @ TimezonesError::Unavailable { .. }) => {
                tracing::warn!(error = %e, zone = zone.as_str(), "falling back to TIMEZONE_OFFSET");
                Ok(self.fallback(instants, TimeSource::FallbackUnavailable))
            }
        }
    }

    fn fallback(&self, instants: &[DateTime<Utc>], source: TimeSource) -> Rendered {
        let reason = source.degraded_reason().unwrap_or("none");
        metrics::counter!("upstream_fallbacks_total", "upstream" => "timezones", "reason" => reason)
            .increment(1);
        self.at_offset(instants, source)
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
