use chrono::{DateTime, FixedOffset, Utc};
use platform::Errors;
use platform::json_body::JsonBody;
use poem_openapi::param::{Path, Query};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::errors::{ListErrors, LookupErrors};
use super::{ApiTags, ZoneTimeBody, parse_zone};
use crate::zones::{self, ZoneTime};

pub struct ZonesApi;

/// One page of zone names.
#[derive(Debug, Object, serde::Serialize)]
struct ZoneList {
    /// IANA names, sorted; at most `limit`.
    #[oai(validator(max_items = 1000))]
    zones: Vec<String>,
    /// How many zones match the filters, over all pages.
    #[oai(validator(minimum(value = "0"), maximum(value = "4294967295")))]
    total: u32,
    #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
    limit: u32,
    #[oai(validator(minimum(value = "0"), maximum(value = "4294967295")))]
    offset: u32,
    /// The `offset` of the next page; absent on the last page.
    #[oai(
        skip_serializing_if_is_none,
        validator(minimum(value = "0"), maximum(value = "4294967295"))
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    next_offset: Option<u32>,
}

#[derive(ApiResponse)]
enum ListZonesResponse {
    /// The matching zones.
    #[oai(status = 200)]
    Ok(JsonBody<ZoneList>),
}

#[derive(ApiResponse)]
enum GetZoneResponse {
    /// The zone's clocks at the instant.
    #[oai(status = 200)]
    Ok(JsonBody<ZoneTimeBody>),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Timezones")]
impl ZonesApi {
    /// List IANA time zones, optionally filtered, a page at a time.
    ///
    /// Filter by `region` or by a name `prefix`; follow `next_offset` for the next page. Needs
    /// no key.
    #[oai(path = "/timezones", method = "get", operation_id = "listZones")]
    async fn list_zones(
        &self,
        /// Only zones in this region (the part before the first `/`), e.g. `Europe`; any case.
        region: Query<Option<String>>,
        /// Only zones whose name starts with this, e.g. `America/Ar`; any case.
        prefix: Query<Option<String>>,
        /// Page size.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// How many matching zones to skip.
        #[oai(
            default,
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        offset: Query<u32>,
        // Never an error of its own, but a bad `limit` or `offset` is a 400 problem, and the
        // `Result` is what puts that response in the OpenAPI document.
    ) -> Result<ListZonesResponse, Errors<ListErrors>> {
        let names = zones::list(region.0.as_deref(), prefix.0.as_deref());
        let total = u32::try_from(names.len()).unwrap_or(u32::MAX);
        let (limit, offset) = (limit.0, offset.0);
        let page: Vec<String> = names
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(str::to_owned)
            .collect();
        let end = offset.saturating_add(limit);
        Ok(ListZonesResponse::Ok(JsonBody(ZoneList {
            zones: page,
            total,
            limit,
            offset,
            next_offset: (end < total).then_some(end),
        })))
    }

    /// The time in one zone now, or at a given instant.
    ///
    /// The zone name goes in the path as it is: `/v1/timezones/America/New_York`. Needs no key.
    #[oai(path = "/timezones/:zone", method = "get", operation_id = "getZone")]
    async fn get_zone(
        &self,
        /// IANA name, e.g. `America/New_York` (exact, or differing only in case).
        zone: Path<String>,
        /// An RFC 3339 instant, e.g. `2026-03-08T07:30:00Z`; default now.
        at: Query<Option<DateTime<FixedOffset>>>,
    ) -> Result<GetZoneResponse, Errors<LookupErrors>> {
        let zone = parse_zone(&zone.0)?;
        let instant = at.0.map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        Ok(GetZoneResponse::Ok(JsonBody(
            ZoneTime::at(zone, instant).into(),
        )))
    }
}

fn default_limit() -> u32 {
    100
}
