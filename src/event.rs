//! Events: the JSON envelope every event carries, its log line (json or pretty) and the
//! write to stderr used when JS cannot log (a stuck loop, a passed deadline).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::LogMode;

pub const SCHEMA: u64 = 1;

/// The figures every event carries, from the latest sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope {
    pub uptime_ms: u64,
    pub rss: u64,
    pub heap_used: u64,
    pub heap_limit: u64,
}

/// Builds `{ event, schema, time, pid, uptimeMs, rss, heapUsed, heapLimit, msg, ...extra }`.
pub fn build(
    name: &str,
    envelope: &Envelope,
    msg: &str,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("event".into(), json!(name));
    event.insert("schema".into(), json!(SCHEMA));
    event.insert("time".into(), json!(iso8601_now()));
    event.insert("pid".into(), json!(std::process::id()));
    event.insert("uptimeMs".into(), json!(envelope.uptime_ms));
    event.insert("rss".into(), json!(envelope.rss));
    event.insert("heapUsed".into(), json!(envelope.heap_used));
    event.insert("heapLimit".into(), json!(envelope.heap_limit));
    event.insert("msg".into(), json!(msg));
    for (key, value) in extra {
        // The envelope is the contract: extra fields never overwrite it.
        event.entry(key).or_insert(value);
    }
    event
}

/// One log line (without the newline) in the given mode; `None` for `off`.
pub fn format_line(event: &Map<String, Value>, mode: LogMode) -> Option<String> {
    match mode {
        LogMode::Off => None,
        LogMode::Json | LogMode::Auto => serde_json::to_string(event).ok(),
        LogMode::Pretty => {
            let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or("");
            Some(format!(
                "{} self-recycle[{}] {}: {}",
                text("time"),
                event.get("pid").map(Value::to_string).unwrap_or_default(),
                text("event"),
                text("msg")
            ))
        }
    }
}

/// Writes one event to stderr, synchronously. Safe from any thread.
pub fn write_stderr(event: &Map<String, Value>, mode: LogMode) {
    if let Some(mut line) = format_line(event, mode) {
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// `2026-11-29T15:47:31.123Z`
pub fn iso8601_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso8601(since_epoch.as_millis() as u64)
}

pub fn iso8601(millis: u64) -> String {
    let seconds = millis / 1000;
    let (hour, minute, second) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        millis % 1000
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_967_251_123), "2026-11-29T15:47:31.123Z");
    }

    #[test]
    fn envelope_first_and_protected() {
        let envelope = Envelope {
            uptime_ms: 5,
            rss: 10,
            heap_used: 3,
            heap_limit: 100,
        };
        let mut extra = Map::new();
        extra.insert("reason".into(), json!("rss"));
        extra.insert("pid".into(), json!(-1));
        let event = build("recycle", &envelope, "hello", extra);
        let keys: Vec<&str> = event.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "event",
                "schema",
                "time",
                "pid",
                "uptimeMs",
                "rss",
                "heapUsed",
                "heapLimit",
                "msg",
                "reason"
            ]
        );
        assert_eq!(event["pid"], json!(std::process::id()));
        let line = format_line(&event, LogMode::Pretty).expect("pretty");
        assert!(line.ends_with("recycle: hello"), "{line}");
        assert!(format_line(&event, LogMode::Off).is_none());
        let parsed: Value =
            serde_json::from_str(&format_line(&event, LogMode::Json).expect("json"))
                .expect("valid");
        assert_eq!(parsed["reason"], json!("rss"));
    }
}
