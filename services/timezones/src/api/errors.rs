//! The error answers of each timezones operation, for its entry in the OpenAPI document: every
//! status the operation truly answers, and only those.

use platform::ErrorStatuses;
use platform::answers::{self, Answer};

const UNKNOWN_ZONE: Answer = (
    404,
    "A zone name that is not an IANA zone (`type` `urn:meridian:problem:unknown-zone`; \
     `extensions.zone` repeats it).",
);

pub struct ListErrors;
impl ErrorStatuses for ListErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::MALFORMED,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::UNAVAILABLE,
    ];
}

pub struct LookupErrors;
impl ErrorStatuses for LookupErrors {
    const ANSWERS: &'static [Answer] = &[
        answers::MALFORMED,
        UNKNOWN_ZONE,
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::UNAVAILABLE,
    ];
}

pub struct ConvertErrors;
impl ErrorStatuses for ConvertErrors {
    const ANSWERS: &'static [Answer] = &[
        (
            400,
            "The query cannot be read or does not say what to convert: neither or both of `at` \
             and `local`, `local` without `from`, or a value not of its declared type.",
        ),
        UNKNOWN_ZONE,
        (
            422,
            "The `local` time does not exist in `from` (the clocks skip it: \
             `urn:meridian:problem:nonexistent-local-time`), or occurs twice and \
             `disambiguation` is `reject` (`urn:meridian:problem:ambiguous-local-time`, \
             `extensions.candidates` lists both instants).",
        ),
        answers::HEAD_TOO_LARGE,
        answers::INTERNAL,
        answers::UNAVAILABLE,
    ];
}
