//! Builds the items app from its settings and runs it until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use platform::auth::ApiKeyVerifier;
use platform::faults::{FaultApi, Faults};
use platform::lifecycle::{
    BindError, HealthApi, Listeners, LivenessCheck, Readiness, ReadinessCheck,
};
use poem::Endpoint;
use poem_openapi::{OpenApiService, ServerObject};

use crate::api::{GreetingApi, ItemsApi, SecretApi, WriteGuard};
use crate::configuration::Settings;
use crate::local_time::LocalClock;
use crate::store::{Store, StoreConfig};
use crate::timezones_client::TimezonesClient;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Database(crate::store::StoreError),
    #[error("{0}")]
    HttpClient(crate::timezones_client::ClientBuildError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

pub struct Application {
    listeners: Listeners,
    settings: Settings,
    store: Store,
    clock: LocalClock,
}

impl Application {
    /// Binds the port, opens (and migrates) the database and builds the upstream client; any
    /// failure here stops the process before it reports ready.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let listeners = Listeners::bind(&settings.server).await?;
        crate::timezones_client::TimezonesClient::register_metrics();
        let store = Store::connect(&StoreConfig {
            url: settings.database_url.expose().to_owned(),
            max_connections: settings.database_max_connections,
            max_readers: settings.sqlite_max_readers,
            acquire_timeout: settings.database_acquire_timeout,
            idempotency_ttl: settings.idempotency_key_ttl,
            request_timeout: settings.server.request_timeout,
        })
        .await
        .map_err(StartupError::Database)?;
        tracing::info!(backend = ?store.backend(), "database ready");
        let client =
            TimezonesClient::new(settings.timezones.clone()).map_err(StartupError::HttpClient)?;
        let clock = LocalClock::new(client, settings.timezone_offset);
        Ok(Self {
            listeners,
            settings,
            store,
            clock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.api_addr()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.listeners.metrics_addr()
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
            self.listeners.readiness(),
        );
        let counting = tokio::spawn(count_items(self.store.clone()));
        let purging = tokio::spawn(purge_expired_keys(self.store.clone()));
        let result = self.listeners.serve(app, &self.settings.server, stop).await;
        counting.abort();
        purging.abort();
        self.store.close().await;
        result.map_err(StartupError::Serve)
    }
}

/// Keeps the `items_count` gauge current. Every replica reports the same total (it is the
/// database's count), so dashboards take `max`.
async fn count_items(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
    loop {
        tick.tick().await;
        match store.count().await {
            Ok(count) => metrics::gauge!("items_count").set(count as f64),
            Err(e) => tracing::warn!(error = %e, "cannot count items"),
        }
    }
}

/// Forgets expired idempotency keys once a minute, so the table holds about a day of keys.
async fn purge_expired_keys(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        match store.purge_expired_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "cannot purge idempotency keys"),
        }
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

/// The store can still write: on SQLite, its writer thread runs.
struct StoreAlive(Store);

impl LivenessCheck for StoreAlive {
    fn check(&self) -> Result<(), String> {
        if self.0.is_alive() {
            Ok(())
        } else {
            Err("the database writer has stopped".to_owned())
        }
    }
}

fn routes(
    settings: &Settings,
    store: &Store,
    clock: &LocalClock,
    readiness: Readiness,
) -> impl Endpoint<Output = poem::Response> + 'static {
    let auth = ApiKeyVerifier::start(Some(&settings.api_keys));
    let writes = WriteGuard::new(settings.write_rate_per_second, settings.write_burst);
    let faults = Faults::new(settings.server.faults.clone());
    let api = OpenApiService::new(
        (
            ItemsApi::new(store.clone(), clock.clone(), writes),
            GreetingApi::new(settings.greeting.clone(), clock.clone()),
            SecretApi::new(settings.secret_message.clone()),
            HealthApi::new(readiness, Some(Arc::new(DatabaseReachable(store.clone()))))
                .with_liveness(Arc::new(StoreAlive(store.clone()))),
            FaultApi::new(faults.clone()),
        ),
        "meridian items",
        env!("CARGO_PKG_VERSION"),
    )
    .description("Items over SQLite or PostgreSQL, with local times from the timezones service.")
    .server(
        ServerObject::new("/").description(
            "This service where this document was read: local, test or production alike",
        ),
    )
    .contact(platform::http::api_contact());
    let (routes, templates) = platform::http::api_routes(api);
    platform::http::standard_layers(routes, &settings.server, faults, templates, auth)
}
