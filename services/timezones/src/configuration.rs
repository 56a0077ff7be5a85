//! The timezones service's settings, all from the environment (every one is in
//! docs/configuration.md).

use std::net::SocketAddr;

use platform::config::{ConfigError, Env, Secret, ServerConfig, ServiceDefaults};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "timezones",
    bind_addr: SocketAddr::new(LOCALHOST, 8081),
    metrics_addr: SocketAddr::new(LOCALHOST, 9465),
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    /// Unlocks `/admin/faults`; without it the admin API refuses every call.
    pub api_key: Option<Secret>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, DEFAULTS)?,
            api_key: env.optional_secret("DUMMY_API_KEY")?,
        })
    }
}
