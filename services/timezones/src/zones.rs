//! The time-zone domain: IANA names as a parsed type, the time in a zone at an instant, and
//! local wall-clock times resolved to instants without guessing across DST transitions.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::{OffsetComponents, OffsetName, TZ_VARIANTS, Tz};

/// An IANA time zone that exists in the bundled database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneName(Tz);

impl ZoneName {
    /// Parses an IANA name; an exact match first, then ignoring ASCII case, so that
    /// `europe/paris` finds `Europe/Paris`. Returns `None` for names that do not exist.
    pub fn parse(name: &str) -> Option<Self> {
        Tz::from_str(name)
            .ok()
            .or_else(|| {
                TZ_VARIANTS
                    .iter()
                    .copied()
                    .find(|tz| tz.name().eq_ignore_ascii_case(name))
            })
            .map(Self)
    }

    pub fn as_str(&self) -> &'static str {
        self.0.name()
    }

    pub fn tz(&self) -> Tz {
        self.0
    }
}

/// What a zone's clocks show at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneTime {
    pub zone: ZoneName,
    pub instant: DateTime<Utc>,
    /// RFC 3339 with the zone's offset, e.g. `2026-07-01T08:00:00-04:00`.
    pub local_time: String,
    pub utc_offset_seconds: i32,
    /// The offset as `+HH:MM`.
    pub utc_offset: String,
    /// e.g. `EDT`; zones without a letter abbreviation use their offset, e.g. `+0530`.
    pub abbreviation: String,
    pub dst: bool,
}

impl ZoneTime {
    pub fn at(zone: ZoneName, instant: DateTime<Utc>) -> Self {
        let local = instant.with_timezone(&zone.tz());
        let offset = local.offset();
        let utc_offset_seconds = offset.fix().local_minus_utc();
        let utc_offset = format_offset(utc_offset_seconds);
        let abbreviation = offset
            .abbreviation()
            .map(str::to_owned)
            .unwrap_or_else(|| utc_offset.replace(':', ""));
        Self {
            zone,
            instant,
            local_time: local.to_rfc3339_opts(SecondsFormat::AutoSi, false),
            utc_offset_seconds,
            utc_offset,
            abbreviation,
            dst: !offset.dst_offset().is_zero(),
        }
    }
}

/// `+HH:MM` / `-HH:MM` for an offset in seconds (sub-minute historic offsets are truncated).
pub fn format_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// How to pick an instant for a local time that the clocks show twice (when DST ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disambiguation {
    /// Refuse and report both candidates.
    #[default]
    Reject,
    /// The first occurrence (still on the earlier offset).
    Earlier,
    /// The second occurrence (on the later offset).
    Later,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalTimeError {
    /// The clocks skip this wall time (DST starts): it never happens in the zone.
    #[error(
        "{local} does not exist in {zone}: clocks skip it when the UTC offset changes from {offset_before} to {offset_after}"
    )]
    Nonexistent {
        zone: &'static str,
        local: NaiveDateTime,
        offset_before: String,
        offset_after: String,
    },
    /// The clocks show this wall time twice (DST ends).
    #[error(
        "{local} occurs twice in {zone} (at {earlier} and at {later}); choose one with disambiguation=earlier or disambiguation=later"
    )]
    Ambiguous {
        zone: &'static str,
        local: NaiveDateTime,
        earlier: DateTime<Utc>,
        later: DateTime<Utc>,
    },
}

/// The instant at which `zone`'s clocks show `local`.
pub fn resolve_local(
    zone: ZoneName,
    local: NaiveDateTime,
    disambiguation: Disambiguation,
) -> Result<DateTime<Utc>, LocalTimeError> {
    match zone.tz().from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (earlier, later) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            let (earlier, later) = (earlier.min(later), earlier.max(later));
            match disambiguation {
                Disambiguation::Earlier => Ok(earlier),
                Disambiguation::Later => Ok(later),
                Disambiguation::Reject => Err(LocalTimeError::Ambiguous {
                    zone: zone.as_str(),
                    local,
                    earlier,
                    later,
                }),
            }
        }
        LocalResult::None => {
            // Transitions are months apart, so the offsets a day either side are the two the
            // gap lies between.
            let offset_near = |days: i64| {
                zone.tz()
                    .from_local_datetime(&(local + chrono::Duration::days(days)))
                    .earliest()
                    .map_or_else(
                        || "unknown".to_owned(),
                        |t| format_offset(t.offset().fix().local_minus_utc()),
                    )
            };
            Err(LocalTimeError::Nonexistent {
                zone: zone.as_str(),
                local,
                offset_before: offset_near(-1),
                offset_after: offset_near(1),
            })
        }
    }
}

/// All zone names, sorted, matching an optional region (first path segment) and name prefix,
/// both case-insensitive.
pub fn list(region: Option<&str>, prefix: Option<&str>) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .filter(|name| {
            region.is_none_or(|region| {
                name.split('/')
                    .next()
                    .is_some_and(|first| first.eq_ignore_ascii_case(region))
                    && name.contains('/')
            })
        })
        .filter(|name| {
            prefix.is_none_or(|prefix| {
                name.len() >= prefix.len()
                    && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            })
        })
        .collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn zone(name: &str) -> ZoneName {
        ZoneName::parse(name).unwrap()
    }

    fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn names_parse_exactly_or_ignoring_case() {
        assert_eq!(zone("America/New_York").as_str(), "America/New_York");
        assert_eq!(zone("america/new_york").as_str(), "America/New_York");
        assert!(ZoneName::parse("Mars/Olympus_Mons").is_none());
        assert!(ZoneName::parse("").is_none());
    }

    #[test]
    fn summer_in_new_york_is_edt() {
        let instant = "2026-07-01T12:00:00Z".parse().unwrap();
        let t = ZoneTime::at(zone("America/New_York"), instant);
        assert_eq!(t.utc_offset_seconds, -4 * 3600);
        assert_eq!(t.utc_offset, "-04:00");
        assert_eq!(t.abbreviation, "EDT");
        assert!(t.dst);
        assert_eq!(t.local_time, "2026-07-01T08:00:00-04:00");
    }

    #[test]
    fn winter_in_new_york_is_est() {
        let t = ZoneTime::at(
            zone("America/New_York"),
            "2026-01-15T12:00:00Z".parse().unwrap(),
        );
        assert_eq!(
            (t.utc_offset.as_str(), t.abbreviation.as_str(), t.dst),
            ("-05:00", "EST", false)
        );
    }

    #[test]
    fn half_hour_offsets_format() {
        let t = ZoneTime::at(
            zone("Asia/Kolkata"),
            "2026-01-15T12:00:00Z".parse().unwrap(),
        );
        assert_eq!(t.utc_offset, "+05:30");
        assert_eq!(format_offset(-(9 * 3600 + 30 * 60)), "-09:30");
    }

    #[test]
    fn spring_forward_gap_does_not_exist() {
        // 2026-03-08: New York clocks go from 02:00 EST straight to 03:00 EDT.
        let err = resolve_local(
            zone("America/New_York"),
            local(2026, 3, 8, 2, 30),
            Disambiguation::Later,
        )
        .unwrap_err();
        assert_eq!(
            err,
            LocalTimeError::Nonexistent {
                zone: "America/New_York",
                local: local(2026, 3, 8, 2, 30),
                offset_before: "-05:00".into(),
                offset_after: "-04:00".into(),
            }
        );
    }

    #[test]
    fn fall_back_hour_is_ambiguous_unless_disambiguated() {
        // 2026-11-01: 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
        let ny = zone("America/New_York");
        let t = local(2026, 11, 1, 1, 30);
        let earlier: DateTime<Utc> = "2026-11-01T05:30:00Z".parse().unwrap();
        let later: DateTime<Utc> = "2026-11-01T06:30:00Z".parse().unwrap();
        assert_eq!(resolve_local(ny, t, Disambiguation::Earlier), Ok(earlier));
        assert_eq!(resolve_local(ny, t, Disambiguation::Later), Ok(later));
        assert!(matches!(
            resolve_local(ny, t, Disambiguation::Reject),
            Err(LocalTimeError::Ambiguous { earlier: e, later: l, .. }) if e == earlier && l == later
        ));
    }

    #[test]
    fn ordinary_local_time_is_unique() {
        let instant = resolve_local(
            zone("Europe/Paris"),
            local(2026, 6, 1, 12, 0),
            Disambiguation::Reject,
        );
        assert_eq!(instant, Ok("2026-06-01T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn listing_filters_by_region_and_prefix() {
        let europe = list(Some("europe"), None);
        assert!(europe.contains(&"Europe/Paris"));
        assert!(europe.iter().all(|n| n.starts_with("Europe/")));
        assert!(europe.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(list(None, Some("america/new_")), vec!["America/New_York"]);
        assert!(list(Some("Nowhere"), None).is_empty());
        assert!(list(None, None).len() > 400);
    }
}
