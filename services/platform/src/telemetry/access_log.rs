//! The access log line: one line per finished request, written straight into the log buffer in
//! the JSON format. Kept apart from the set-up because it is what an operator reads first about
//! a request, and its fields are a contract with whoever parses the logs.

use super::json_log::{write_decimal, write_json_string, write_timestamp};
use super::trace_context::RequestContext;
use super::{LOG_FORMAT, LogFormat};

/// One access log line's content.
pub struct AccessLogLine<'a> {
    pub method: &'static str,
    pub route: &'static str,
    pub path: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    pub context: &'a RequestContext,
}

/// The most of a request's path an access log line holds: a head may be up to
/// `HTTP_MAX_HEADER_BYTES`, and a client must not make every line it causes that long.
pub const MAX_LOGGED_PATH: usize = 1024;

/// `path` cut to [`MAX_LOGGED_PATH`] bytes at a character boundary, and whether it was cut.
fn loggable_path(path: &str) -> (&str, bool) {
    if path.len() <= MAX_LOGGED_PATH {
        return (path, false);
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    (&path[..end], true)
}

/// Logs a finished request: in JSON, written straight into the log buffer (the same fields a
/// `tracing` event had, without formatting through the subscriber); in the pretty format, as a
/// `tracing` event.
pub fn access_log(line: &AccessLogLine<'_>) {
    if !tracing::enabled!(target: "platform::http", tracing::Level::INFO) {
        return;
    }
    let trace_id = line.context.trace.trace_hex();
    let span_id = line.context.trace.span_hex();
    let trace_id = std::str::from_utf8(&trace_id).expect("hex");
    let span_id = std::str::from_utf8(&span_id).expect("hex");
    let duration_ms = line.duration.as_secs_f64() * 1000.0;
    let (path, path_truncated) = loggable_path(line.path);
    if LOG_FORMAT.get() != Some(&LogFormat::Json) {
        tracing::info!(
            target: "platform::http",
            method = line.method,
            route = line.route,
            path,
            path_truncated,
            status = line.status,
            duration_ms,
            trace_id,
            span_id,
            request_id = %line.context.request_id,
            "request completed"
        );
        return;
    }
    crate::log_writer::write_line(|out| {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, std::time::SystemTime::now());
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"message\":\"request completed\",\"method\":\"",
        );
        out.extend_from_slice(line.method.as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        write_json_string(out, line.route);
        out.extend_from_slice(b",\"path\":");
        write_json_string(out, path);
        if path_truncated {
            out.extend_from_slice(b",\"path_truncated\":true");
        }
        out.extend_from_slice(b",\"status\":");
        write_decimal(out, u64::from(line.status), 1);
        out.extend_from_slice(b",\"duration_ms\":");
        let micros = u64::try_from(line.duration.as_micros()).unwrap_or(u64::MAX);
        write_decimal(out, micros / 1000, 1);
        out.push(b'.');
        write_decimal(out, micros % 1000, 3);
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(trace_id.as_bytes());
        out.extend_from_slice(b"\",\"span_id\":\"");
        out.extend_from_slice(span_id.as_bytes());
        out.extend_from_slice(b"\",\"target\":\"platform::http\",\"span\":{\"request_id\":");
        write_json_string(out, &line.context.request_id);
        out.extend_from_slice(b"}}\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_path_is_cut_at_a_character_boundary() {
        assert_eq!(loggable_path("/v1/items"), ("/v1/items", false));
        let long = format!("/{}", "é".repeat(MAX_LOGGED_PATH));
        let (cut, truncated) = loggable_path(&long);
        assert!(truncated);
        assert_eq!(
            cut.len(),
            MAX_LOGGED_PATH - 1,
            "'/' then 511 two-byte characters"
        );
    }
}
