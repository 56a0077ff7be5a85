//! The items service: CRUD over SQLite or PostgreSQL, with local times from the timezones
//! service.

pub mod api;
pub mod configuration;
pub mod domain;
pub mod error;
pub mod local_time;
pub mod startup;
pub mod store;
pub mod timezones_client;
