use items::configuration::Settings;
use items::startup::Application;
use platform::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("items: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    platform::telemetry::init_logging(&settings.server.log);
    let result = match Application::build(settings).await {
        Ok(app) => app.run_until_stopped().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "items failed");
            eprintln!("items: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
