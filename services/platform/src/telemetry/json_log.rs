//! The JSON log format: one object per event, written by hand into a byte buffer, and the
//! timestamp, number and string writers the access log line shares. Kept apart from the set-up
//! because it runs on every log line and is tuned instruction by instruction (cachegrind), so a
//! change to it is reviewed against its own tests, not among the settings.

use super::trace_context::CURRENT_REQUEST;

/// `value` in decimal, zero-padded to at least `width` digits, without the formatting
/// machinery (this runs for every request).
pub(super) fn write_decimal(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[start..]);
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber wrote it. The date and time of
/// day are formatted once per second per thread.
pub(super) fn write_timestamp(out: &mut Vec<u8>, at: std::time::SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> = const {
            std::cell::RefCell::new((u64::MAX, Vec::new()))
        };
    }
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *cached = seconds;
            text.clear();
            write_date_and_time(text, seconds);
        }
        out.extend_from_slice(text);
    });
    out.push(b'.');
    write_decimal(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, in UTC.
fn write_date_and_time(out: &mut Vec<u8>, seconds: u64) {
    use std::io::Write;
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let of_day = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    );
}

pub(super) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let needs_escape = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    if !text.bytes().any(needs_escape) {
        out.extend_from_slice(text.as_bytes());
    } else {
        for (i, c) in text.char_indices() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 => {
                    use std::io::Write;
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                _ => out.extend_from_slice(&text.as_bytes()[i..i + c.len_utf8()]),
            }
        }
    }
    out.push(b'"');
}

/// Span fields for a log format that shows none: formats nothing.
pub(super) struct NoSpanFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: tracing_subscriber::fmt::format::Writer<'writer>,
        _fields: R,
    ) -> std::fmt::Result {
        Ok(())
    }
}

/// JSON lines for every other event: the event's fields flattened beside `timestamp`, `level`
/// and `target`, and, inside a request, its `trace_id`, `span_id` and `span.request_id`, so
/// one id finds all of a request's lines.
pub(super) struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(&mut out, std::time::SystemTime::now());
        out.extend_from_slice(b"\",\"level\":\"");
        out.extend_from_slice(event.metadata().level().as_str().as_bytes());
        out.push(b'"');
        event.record(&mut JsonFields(&mut out));
        out.extend_from_slice(b",\"target\":");
        write_json_string(&mut out, event.metadata().target());
        let _ = CURRENT_REQUEST.try_with(|request| {
            out.extend_from_slice(b",\"trace_id\":\"");
            out.extend_from_slice(&request.trace.trace_hex());
            out.extend_from_slice(b"\",\"span_id\":\"");
            out.extend_from_slice(&request.trace.span_hex());
            out.extend_from_slice(b"\",\"span\":{\"request_id\":");
            write_json_string(&mut out, &request.request_id);
            out.push(b'}');
        });
        out.extend_from_slice(b"}\n");
        writer.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

struct JsonFields<'a>(&'a mut Vec<u8>);

impl JsonFields<'_> {
    fn key(&mut self, field: &tracing::field::Field) {
        self.0.push(b',');
        write_json_string(self.0, field.name());
        self.0.push(b':');
    }
}

impl tracing::field::Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        write_json_string(self.0, value);
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.key(field);
        self.0.extend_from_slice(value.to_string().as_bytes());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.key(field);
        self.0.extend_from_slice(value.to_string().as_bytes());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            self.0.extend_from_slice(value.to_string().as_bytes());
        } else {
            write_json_string(self.0, &value.to_string());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        write_json_string(self.0, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_pieces_are_formatted_by_hand_as_json_would_be() {
        let mut out = Vec::new();
        // 2026-11-28T13:24:53.000042Z
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_795_872_293, 42_000);
        write_timestamp(&mut out, at);
        assert_eq!(out, b"2026-11-28T13:24:53.000042Z");
        out.clear();
        write_timestamp(
            &mut out,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400),
        );
        assert_eq!(out, b"2000-02-29T00:00:00.000000Z");
        out.clear();
        write_decimal(&mut out, 0, 1);
        write_decimal(&mut out, 7, 3);
        write_decimal(&mut out, 1234, 3);
        assert_eq!(out, b"00071234");
        out.clear();
        write_json_string(&mut out, "a\"b\\c\nd/é");
        let parsed: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd/é");
    }
}
