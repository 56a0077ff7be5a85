//! The items → timezones hop: one shared reqwest client, a per-request timeout, and answers
//! parsed into just what items needs. Callers decide what to do when it is unavailable.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::domain::ZoneName;

#[derive(Debug, thiserror::Error)]
pub enum TimezonesError {
    /// The timezones service answered that the zone does not exist.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// No usable answer: connection refused, timeout, 5xx, or a malformed body.
    #[error("timezones service unavailable: {0}")]
    Unavailable(String),
}

/// An instant as the clocks of a zone show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// RFC 3339 with the zone's offset.
    pub local_time: String,
    pub abbreviation: String,
}

#[derive(Clone)]
pub struct TimezonesClient {
    http: reqwest::Client,
    convert_url: Url,
}

const UNKNOWN_ZONE_PROBLEM: &str = "urn:meridian:problem:unknown-zone";

#[derive(Deserialize)]
struct ProblemType {
    #[serde(rename = "type")]
    problem_type: String,
}

#[derive(Deserialize)]
struct ConvertBody {
    conversions: Vec<ConversionBody>,
}

#[derive(Deserialize)]
struct ConversionBody {
    to: ZoneTimeBody,
}

#[derive(Deserialize)]
struct ZoneTimeBody {
    local_time: String,
    abbreviation: String,
}

impl TimezonesClient {
    /// Built once at start-up and shared: the client pools connections to timezones.
    pub fn new(base_url: &Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("meridian-items/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let convert_url = base_url
            .join("v1/convert")
            .expect("joining a relative path onto an http(s) URL cannot fail");
        Ok(Self { http, convert_url })
    }

    /// The local time in `zone` of each instant, in order, in one request.
    pub async fn local_times(
        &self,
        zone: &ZoneName,
        instants: &[DateTime<Utc>],
        request_id: Option<&str>,
    ) -> Result<Vec<LocalTime>, TimezonesError> {
        let mut query: Vec<(&str, String)> = Vec::with_capacity(instants.len() + 1);
        query.push(("to", zone.as_str().to_owned()));
        query.extend(instants.iter().map(|t| ("at", t.to_rfc3339())));
        let mut request = self.http.get(self.convert_url.clone()).query(&query);
        if let Some(id) = request_id {
            request = request.header(platform::http::REQUEST_ID_HEADER, id);
        }
        let unavailable = |e: &dyn std::fmt::Display| TimezonesError::Unavailable(e.to_string());
        let response = request.send().await.map_err(|e| unavailable(&e))?;
        match response.status() {
            StatusCode::OK => {}
            // Only the service's own "unknown zone" problem means the zone is bad; any other 404
            // (a wrong TIMEZONES_URL, say) is an outage, not the caller's fault.
            StatusCode::NOT_FOUND => {
                let problem: Option<ProblemType> = response.json().await.ok();
                return Err(match problem {
                    Some(p) if p.problem_type == UNKNOWN_ZONE_PROBLEM => {
                        TimezonesError::UnknownZone(zone.as_str().to_owned())
                    }
                    _ => unavailable(&"status 404 Not Found"),
                });
            }
            other => return Err(unavailable(&format!("status {other}"))),
        }
        let body: ConvertBody = response.json().await.map_err(|e| unavailable(&e))?;
        if body.conversions.len() != instants.len() {
            return Err(unavailable(&"answer has the wrong number of conversions"));
        }
        Ok(body
            .conversions
            .into_iter()
            .map(|c| LocalTime {
                local_time: c.to.local_time,
                abbreviation: c.to.abbreviation,
            })
            .collect())
    }
}
