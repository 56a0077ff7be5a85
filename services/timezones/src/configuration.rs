//! The timezones service's settings, all from the environment (see README's table).

use std::net::SocketAddr;

use platform::config::{ConfigError, Env, Secret, ServerConfig};

pub const DEFAULT_BIND_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    /// Unlocks `/admin/faults`; without it the admin API refuses every call.
    pub api_key: Option<Secret>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, DEFAULT_BIND_ADDR)?,
            api_key: env.optional_secret("DUMMY_API_KEY")?,
        })
    }
}
