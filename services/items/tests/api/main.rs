//! Black-box tests: the real items app on 127.0.0.1:0, wired over HTTP to a real timezones
//! process, on SQLite and on PostgreSQL.

mod binary;
mod body_limit;
mod database_busy;
mod filters;
mod greeting;
mod hardening;
mod helpers;
mod idempotency;
mod items;
mod key_rotation;
mod lifecycle;
mod local_times;
mod migrations;
mod observability;
mod pagination;
mod resilience;
mod scan_budget;
mod secret;
mod service;
mod tagged_deletes;
mod write_outcomes;
