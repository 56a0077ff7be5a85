//! What both meridian services need, and nothing else: configuration from the environment,
//! telemetry set-up, HTTP middleware, RFC 9457 problem responses and process lifecycle.
//!
//! This crate knows neither service; each service composes these parts in its own `startup`.

pub mod allocator;
pub mod answers;
pub mod auth;
pub mod config;
pub mod faults;
pub mod http;
pub mod json_body;
pub mod lifecycle;
pub mod log_writer;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod settings;
pub mod telemetry;

pub use config::{ConfigError, Env, Secret};
pub use problem::{ErrorStatuses, Errors, Problem};
