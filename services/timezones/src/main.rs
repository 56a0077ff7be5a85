use platform::Env;
use timezones::configuration::Settings;
use timezones::startup::Application;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("timezones: {e}");
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
            tracing::error!(error = %e, "timezones failed");
            eprintln!("timezones: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
