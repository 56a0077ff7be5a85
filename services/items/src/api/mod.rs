//! HTTP API, one file per area. Handlers parse input into domain types, call the store or the
//! local clock, and shape the answer; errors leave as `ApiError` → problem+json.

mod auth;
mod errors;
mod greeting;
mod items;
mod secret;
mod strict_string;

pub use auth::WriteGuard;
pub use greeting::GreetingApi;
pub use items::ItemsApi;
pub use secret::SecretApi;

use poem_openapi::Tags;

use crate::domain::ZoneName;
use crate::error::ApiError;

#[derive(Tags)]
enum ApiTags {
    /// Create, read, update and delete items.
    Items,
    /// A greeting with the local time, via the timezones service.
    Greeting,
    /// An API-key-protected message.
    Secret,
}

fn parse_zone(tz: Option<&str>) -> Result<Option<ZoneName>, ApiError> {
    Ok(tz.map(ZoneName::parse).transpose()?)
}
