use items::configuration::Settings;
use items::startup::Application;
use platform::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::lifecycle::run_service(
        "items",
        Settings::from_env(&Env::from_process()),
        |settings| &settings.server,
        |settings| async move {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        },
    )
    .await
}
