//! The timezones service: IANA zones (chrono-tz) over HTTP.

pub mod api;
pub mod configuration;
pub mod error;
pub mod startup;
pub mod zones;
