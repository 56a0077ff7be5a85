//! The timezones service's settings, all from the environment (every one is in
//! docs/configuration.md).

use std::net::SocketAddr;

use platform::auth::ApiKeySettings;
use platform::config::{ConfigError, Env, ServiceDefaults};
use platform::settings::ServerConfig;

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "timezones",
    bind_addr: SocketAddr::new(LOCALHOST, 8081),
    metrics_addr: SocketAddr::new(LOCALHOST, 9465),
    trust_parent_sampling: true,
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerConfig,
    /// Unlocks `/admin/faults`; without it the admin API refuses every call. Optional, but
    /// when set it follows the one policy of `platform::auth`, as items' key does (minimum
    /// length, a second key for rotation, key files re-read).
    pub api_keys: Option<ApiKeySettings>,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, DEFAULTS)?,
            api_keys: ApiKeySettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_key_follows_the_same_policy_as_items() {
        let settings = Settings::from_env(&Env::from_pairs([])).unwrap();
        assert!(
            settings.api_keys.is_none(),
            "no key: the switch is disabled"
        );
        for (name, value) in [
            ("DUMMY_API_KEY", "any-key"),
            ("DUMMY_API_KEY_NEXT", "short-next"),
        ] {
            let env = Env::from_pairs([("DUMMY_API_KEY", "timezones-key-0123"), (name, value)]);
            let err = Settings::from_env(&env).unwrap_err();
            assert_eq!(err.setting, name);
            assert!(!err.to_string().contains(value), "{err}");
        }
    }
}
