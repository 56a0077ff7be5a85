//! Builds the items app from its settings and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use platform::auth::ApiKeyVerifier;
use platform::faults::{FaultApi, Faults};
use platform::lifecycle::{BoundServer, HealthApi, Readiness, ReadinessCheck};
use poem::{Endpoint, Route};
use poem_openapi::OpenApiService;

use crate::api::{GreetingApi, ItemsApi, SecretApi, WriteGuard};
use crate::configuration::Settings;
use crate::local_time::LocalClock;
use crate::store::Store;
use crate::timezones_client::TimezonesClient;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Database(crate::store::StoreError),
    #[error("cannot build the timezones client: {0}")]
    HttpClient(reqwest::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

pub struct Application {
    server: BoundServer,
    settings: Settings,
    store: Store,
    clock: LocalClock,
    readiness: Readiness,
}

impl Application {
    /// Binds the port, opens (and migrates) the database and builds the upstream client; any
    /// failure here stops the process before it reports ready.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let addr = settings.server.bind_addr;
        let server = BoundServer::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let store = Store::connect(
            settings.database_url.expose(),
            settings.database_max_connections,
        )
        .await
        .map_err(StartupError::Database)?;
        tracing::info!(backend = ?store.backend(), "database ready");
        let client =
            TimezonesClient::new(settings.timezones.clone()).map_err(StartupError::HttpClient)?;
        let clock = LocalClock::new(client, settings.timezone_offset);
        Ok(Self {
            server,
            settings,
            store,
            clock,
            readiness: Readiness::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.run_until(platform::lifecycle::shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let app = routes(
            &self.settings,
            &self.store,
            &self.clock,
            self.readiness.clone(),
        );
        let server = &self.settings.server;
        let (drain, grace) = (server.drain_delay, server.shutdown_grace);
        let result = self
            .server
            .serve(app, self.readiness, drain, grace, stop)
            .await;
        self.store.close().await;
        result.map_err(StartupError::Serve)
    }
}

struct DatabaseReachable(Store);

impl ReadinessCheck for DatabaseReachable {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0.ping().await.map_err(|e| {
                tracing::warn!(error = %e, "readiness: database unreachable");
                "database unreachable".to_owned()
            })
        })
    }
}

fn routes(
    settings: &Settings,
    store: &Store,
    clock: &LocalClock,
    readiness: Readiness,
) -> impl Endpoint + 'static {
    let auth = ApiKeyVerifier::new(Some(settings.api_key.clone()));
    let writes = WriteGuard::new(
        auth.clone(),
        settings.write_rate_per_second,
        settings.write_burst,
    );
    let faults = Faults::new(settings.server.faults.clone());
    let api = OpenApiService::new(
        (
            ItemsApi::new(store.clone(), clock.clone(), writes),
            GreetingApi::new(settings.greeting.clone(), clock.clone()),
            SecretApi::new(auth.clone(), settings.secret_message.clone()),
            HealthApi::new(readiness, Some(Arc::new(DatabaseReachable(store.clone())))),
            FaultApi::new(faults.clone(), auth),
        ),
        "meridian items",
        env!("CARGO_PKG_VERSION"),
    )
    .description("Items over SQLite or PostgreSQL, with local times from the timezones service.");
    let routes = Route::new()
        .at("/openapi.json", api.spec_endpoint())
        .nest("/docs", api.swagger_ui())
        .nest("/", api);
    platform::http::standard_layers(routes, &settings.server, faults)
}
