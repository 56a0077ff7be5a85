use platform::Env;
use timezones::configuration::Settings;
use timezones::startup::Application;

// mimalloc, not glibc's malloc: platform::allocator says why.
#[global_allocator]
static ALLOCATOR: platform::allocator::Allocator = platform::allocator::Allocator;

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
