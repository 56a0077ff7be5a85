use platform::Env;
use timezones::configuration::Settings;
use timezones::startup::Application;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::lifecycle::run_service(
        "timezones",
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
