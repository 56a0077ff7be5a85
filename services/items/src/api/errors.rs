//! The error answers of each items operation, for its entry in the OpenAPI document: every
//! status the operation truly answers, and only those. The platform's answers
//! (`platform::answers`) cover the layer and the API key; these add what the handlers and the
//! store answer.

use platform::ErrorStatuses;
use platform::answers::{self, Answer};

const READ_MALFORMED: Answer = (
    400,
    "The request cannot be read (a parameter outside its declared bounds, a `cursor` that is \
     not one this API gave), or `tz` names no zone the timezones service knows (`type` \
     `urn:meridian:problem:unknown-zone`).",
);
const WRITE_MALFORMED: Answer = (
    400,
    "The request cannot be read: a body that is not JSON or has unknown fields, or an \
     `Idempotency-Key` that is not 1–255 visible ASCII characters.",
);
const ZONE_INVALID: Answer = (
    422,
    "`tz`, `tag` or `name` breaks its rules (a `name` with a control character, say); `errors` \
     names each field (`type` `urn:meridian:problem:validation-error`).",
);
const ITEM_INVALID: Answer = (
    422,
    "A field breaks its rules (`urn:meridian:problem:validation-error`, `errors` names each), \
     or, on create, the `Idempotency-Key` was used before with a different body \
     (`urn:meridian:problem:idempotency-key-reused`).",
);
const ITEM_NOT_FOUND: Answer = (
    404,
    "No item with this id (an id that is not a UUID names no item).",
);
const WRITE_CONFLICT: Answer = (
    409,
    "The item was changed by other requests while this one was written (PostgreSQL); retry.",
);
const STALE_IF_MATCH: Answer = (
    412,
    "`If-Match` does not match the item's current `ETag`: read it again and retry.",
);
const WRITE_RATE: Answer = (
    429,
    "Over this API key's write rate (`WRITE_RATE_PER_SECOND`, `WRITE_BURST`), or too many wrong \
     API keys from this client in the last minute (`AUTH_FAILURES_PER_MINUTE`).",
);
const STORE_UNAVAILABLE: Answer = (
    503,
    "The database is unavailable or busy (every SQLite reader in use past the acquire \
     timeout), the service is at its concurrency limit, the request's deadline passed (a \
     filtered page stopped there), or a fault is injected (`/admin/faults`).",
);

pub struct CreateErrors;
impl ErrorStatuses for CreateErrors {
    const ANSWERS: &'static [Answer] = &[
        WRITE_MALFORMED,
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        WRITE_CONFLICT,
        answers::BODY_TOO_LARGE,
        answers::NOT_JSON,
        ITEM_INVALID,
        WRITE_RATE,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct ListErrors;
impl ErrorStatuses for ListErrors {
    const ANSWERS: &'static [Answer] = &[
        READ_MALFORMED,
        ZONE_INVALID,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct ReadErrors;
impl ErrorStatuses for ReadErrors {
    const ANSWERS: &'static [Answer] = &[
        READ_MALFORMED,
        ITEM_NOT_FOUND,
        ZONE_INVALID,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct UpdateErrors;
impl ErrorStatuses for UpdateErrors {
    const ANSWERS: &'static [Answer] = &[
        WRITE_MALFORMED,
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        ITEM_NOT_FOUND,
        WRITE_CONFLICT,
        STALE_IF_MATCH,
        answers::BODY_TOO_LARGE,
        answers::NOT_JSON,
        ITEM_INVALID,
        WRITE_RATE,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct DeleteErrors;
impl ErrorStatuses for DeleteErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::MALFORMED,
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        ITEM_NOT_FOUND,
        WRITE_CONFLICT,
        STALE_IF_MATCH,
        WRITE_RATE,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct DeleteTaggedErrors;
impl ErrorStatuses for DeleteTaggedErrors {
    const ANSWERS: &'static [Answer] = &[
        (
            400,
            "The request cannot be read: no `tag`, or `limit` outside 1–1000.",
        ),
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        (
            422,
            "`tag` breaks its rules (`urn:meridian:problem:validation-error`, `errors` names it).",
        ),
        WRITE_RATE,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        STORE_UNAVAILABLE,
    ];
}

pub struct GreetingErrors;
impl ErrorStatuses for GreetingErrors {
    const ANSWERS: &'static [Answer] = &[
        (
            400,
            "`tz` names no zone the timezones service knows (`type` \
             `urn:meridian:problem:unknown-zone`), or a parameter cannot be read.",
        ),
        ZONE_INVALID,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::UNAVAILABLE,
    ];
}

pub struct SecretErrors;
impl ErrorStatuses for SecretErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::NO_API_KEY,
        answers::WRONG_API_KEY,
        answers::KEY_FAILURES,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::UNAVAILABLE,
    ];
}
