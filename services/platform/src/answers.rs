//! What each error status means when the platform layer or the shared security scheme answers
//! it: the parts of an operation's `ErrorStatuses` both services share. Each is one
//! `(status, description)` of the OpenAPI document; a service writes its own for the statuses
//! its handlers answer for reasons of their own.

pub type Answer = (u16, &'static str);

/// A parameter, header or body that cannot be read: not the declared type, outside the
/// declared bounds, or a request head the HTTP server cannot parse.
pub const MALFORMED: Answer = (
    400,
    "The request cannot be read: a parameter, header or JSON body that is not of its declared \
     type or outside its declared bounds.",
);
pub const NO_API_KEY: Answer = (
    401,
    "No `X-API-Key` header: this operation needs the API key.",
);
pub const WRONG_API_KEY: Answer = (
    403,
    "The `X-API-Key` is not this service's key (or the service has no key configured).",
);
pub const BODY_TOO_LARGE: Answer = (
    413,
    "The body is larger than the service's limit (`MAX_BODY_BYTES`, 64 KiB by default).",
);
pub const NOT_JSON: Answer = (415, "The body's `Content-Type` is not `application/json`.");
/// `ApiKeyAuth`'s failure limiter, per client address.
pub const KEY_FAILURES: Answer = (
    429,
    "Too many wrong API keys from this client in the last minute (`AUTH_FAILURES_PER_MINUTE`).",
);
/// Answered by the HTTP server, before routing, with an empty body.
pub const HEAD_TOO_LARGE: Answer = (
    431,
    "The request head is larger than the server's limit (`HTTP_MAX_HEADER_BYTES`); the HTTP server \
     answers this itself, with an empty body.",
);
/// The panic guard and storage failures whose cause belongs only in the log.
pub const INTERNAL: Answer = (
    500,
    "The service failed; the `x-request-id` response header finds the cause in its logs.",
);
/// Load shedding, the request deadline and injected faults.
pub const UNAVAILABLE: Answer = (
    503,
    "The service is at its concurrency limit, the request's deadline passed \
     (`REQUEST_TIMEOUT_MS`, or the caller's `X-Request-Timeout-Ms`), or a fault is injected \
     (`/admin/faults`).",
);
/// `/healthz`, `/readyz` and `/admin/*` are never shed nor failed on purpose: only their
/// deadline can pass.
pub const DEADLINE_PASSED: Answer = (
    503,
    "The request's deadline passed (`REQUEST_TIMEOUT_MS`, or the caller's \
     `X-Request-Timeout-Ms`).",
);

/// What an OpenAPI document leaves unsaid about its operations: an operation without an
/// `operationId` (or sharing one) or a description, a catch-all `default` response, an error
/// status without a problem+json body (431 aside: hyper's, bodiless), a 429 without
/// `Retry-After`. Each service's tests hold its live document to an empty list.
pub fn unsaid(spec: &serde_json::Value) -> Vec<String> {
    let mut gaps = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let paths = spec["paths"].as_object().into_iter().flatten();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().into_iter().flatten() {
            let name = format!("{} {path}", method.to_uppercase());
            match operation["operationId"].as_str() {
                Some(id) if !ids.insert(id.to_owned()) => {
                    gaps.push(format!("{name}: id {id} twice"))
                }
                Some(_) => {}
                None => gaps.push(format!("{name}: no operationId")),
            }
            if operation["description"].as_str().is_none_or(str::is_empty) {
                gaps.push(format!("{name}: no description"));
            }
            let responses = operation["responses"].as_object().into_iter().flatten();
            for (status, response) in responses {
                let problem = response["content"]
                    .get(super::problem::CONTENT_TYPE)
                    .is_some();
                let retry_after = response["headers"]
                    .as_object()
                    .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("retry-after")));
                match status.as_str() {
                    "default" => gaps.push(format!("{name}: a catch-all default response")),
                    "431" => {}
                    "429" if !problem || !retry_after => {
                        gaps.push(format!("{name}: 429 without a problem or Retry-After"));
                    }
                    s if s.starts_with(['4', '5']) && !problem => {
                        gaps.push(format!("{name}: {s} without a problem+json body"));
                    }
                    _ => {}
                }
            }
        }
    }
    gaps
}

/// Panics unless a service's live OpenAPI document is, byte for byte, the one committed beside
/// its tests (`<crate>/tests/api/openapi.json`): a change to the published contract is then a
/// reviewed change to that file, never a side effect (a serializer swapped for speed, say).
/// With `UPDATE_OPENAPI=1` the file is rewritten instead (docs/changing.md).
pub fn assert_document_unchanged(live: &str, crate_dir: &str) {
    let committed = std::path::Path::new(crate_dir).join("tests/api/openapi.json");
    if let Err(difference) = document_unchanged(live, &committed) {
        panic!("{difference}");
    }
}

fn document_unchanged(live: &str, committed: &std::path::Path) -> Result<(), String> {
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        return std::fs::write(committed, live).map_err(|e| e.to_string());
    }
    let expected = std::fs::read_to_string(committed).map_err(|e| e.to_string())?;
    match live.bytes().zip(expected.bytes()).position(|(a, b)| a != b) {
        None if live.len() == expected.len() => Ok(()),
        at => {
            let at = at.unwrap_or(live.len().min(expected.len()));
            let context = |text: &str| {
                text.get(at.saturating_sub(80)..(at + 80).min(text.len()))
                    .unwrap_or("")
                    .to_owned()
            };
            Err(format!(
                "the OpenAPI document differs from {} at byte {at}:\n  live:      …{}…\n  committed: …{}…\n\
                 (UPDATE_OPENAPI=1 rewrites the file when the change is meant)",
                committed.display(),
                context(live),
                context(&expected),
            ))
        }
    }
}
