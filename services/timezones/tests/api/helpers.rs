use platform::Env;
use serde_json::Value;
use timezones::configuration::Settings;
use timezones::startup::Application;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the app on a free port; it stops when the `TestApp` is dropped.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like `spawn_app`, with extra settings.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("BIND_ADDR", "127.0.0.1:0"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    let settings = Settings::from_env(&Env::from_pairs(env)).expect("test settings are valid");
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        _stop: stop,
    }
}

impl TestApp {
    /// GET `path` and return the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the app");
        let status = response.status().as_u16();
        let body = response.json().await.expect("body is JSON");
        (status, body)
    }
}

/// Asserts an RFC 9457 problem with this status, and returns it.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["type"].is_string());
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}
