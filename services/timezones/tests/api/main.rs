//! Black-box tests: the real timezones app on 127.0.0.1:0, called over HTTP.

mod convert;
mod helpers;
mod key_rotation;
mod resilience;
mod service;
mod zones;
