//! Black-box tests: the real items app on 127.0.0.1:0, wired over HTTP to a real timezones
//! process, on SQLite and on PostgreSQL.

mod binary;
mod greeting;
mod helpers;
mod items;
mod lifecycle;
mod local_times;
mod observability;
mod resilience;
mod secret;
mod service;
