//! Events as log lines on fd 2 (for when JS cannot run), and their timestamps.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::LogMode;

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

/// Writes one event to fd 2, synchronously. Safe from any thread: for when JS cannot run.
pub fn write_stderr(event: &Map<String, Value>, mode: LogMode) {
    if let Some(mut line) = format_line(event, mode) {
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// One plain line on stderr, for what happens after the last event (a failed re-exec).
pub fn write_stderr_line(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
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
