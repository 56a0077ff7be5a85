//! Builds the timezones app from its settings and runs it until a shutdown signal.

use std::net::SocketAddr;

use platform::auth::ApiKeyVerifier;
use platform::faults::{FaultApi, Faults};
use platform::lifecycle::{HealthApi, Listeners, Readiness};
use poem::{Endpoint, EndpointExt, Request};
use poem_openapi::{OpenApiService, ServerObject};

use crate::api::{ConvertApi, ZonesApi};
use crate::configuration::Settings;

pub struct Application {
    listeners: Listeners,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> std::io::Result<Self> {
        let listeners = Listeners::bind(&settings.server)
            .await
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))?;
        Ok(Self {
            listeners,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.api_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.listeners.metrics_addr()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(platform::lifecycle::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = routes(&self.settings, self.listeners.readiness());
        self.listeners.serve(app, &self.settings.server, stop).await
    }
}

fn routes(
    settings: &Settings,
    readiness: Readiness,
) -> impl Endpoint<Output = poem::Response> + 'static {
    let faults = Faults::new(settings.server.faults.clone());
    let auth = ApiKeyVerifier::start(settings.api_keys.as_ref());
    let api =
        OpenApiService::new(
            (
                ZonesApi,
                ConvertApi,
                HealthApi::new(readiness, None),
                FaultApi::new(faults.clone()),
            ),
            "meridian timezones",
            env!("CARGO_PKG_VERSION"),
        )
        .description("IANA time zones: list, look up, and convert instants and local times.")
        .server(ServerObject::new("/").description(
            "This service where this document was read: local, test or production alike",
        ))
        .contact(platform::http::api_contact());
    let (routes, templates) = platform::http::api_routes(api);
    let routes = routes.before(|req| async move { Ok(encode_zone_slashes(req)) });
    platform::http::standard_layers(routes, &settings.server, faults, templates, auth)
}

/// IANA names contain `/` (`America/New_York`) and the contract takes them in the path as they
/// are. The router matches one segment per parameter, so the rest of the path after
/// `/v1/timezones/` is percent-encoded into one segment here, before routing; the parameter
/// arrives decoded. Clients that already send `America%2FNew_York` are unaffected.
fn encode_zone_slashes(mut req: Request) -> Request {
    const PREFIX: &str = "/v1/timezones/";
    let path = req.uri().path();
    let Some(zone) = path.strip_prefix(PREFIX).filter(|z| z.contains('/')) else {
        return req;
    };
    let mut rewritten = format!("{PREFIX}{}", zone.replace('/', "%2F"));
    if let Some(query) = req.uri().query() {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    if let Ok(uri) = rewritten.parse() {
        *req.uri_mut() = uri;
    }
    req
}
