//! Pure: the value parsers the settings table uses (sizes, durations, paths, URLs);
//! each error says what is accepted.

use super::*;

fn is_off(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "no"
    )
}

/// A setting that can be a value or `off`.
pub(super) fn optional<T>(
    text: &str,
    parser: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if is_off(text) {
        Ok(None)
    } else {
        parser(text)
            .map(Some)
            .map_err(|accepts| format!("{accepts}, or off"))
    }
}

pub(super) fn limit_setting(text: &str, max_percent: f64) -> Result<LimitSetting, String> {
    if is_off(text) {
        return Ok(LimitSetting::Off);
    }
    units::parse_limit(text, max_percent)
        .map(LimitSetting::Set)
        .map_err(|accepts| format!("{accepts}, or off"))
}

/// A whole number from `min` to `max`.
pub(super) fn whole(text: &str, min: u64, max: u64, what: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("a whole number of {what} from {min} to {max}"))
}

pub(super) fn duration(text: &str) -> Result<u64, String> {
    units::parse_duration_ms(text)
}

pub(super) fn positive_duration(text: &str) -> Result<u64, String> {
    match units::parse_duration_ms(text) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("{} above 0", units::DURATION_ACCEPTS)),
    }
}

pub(super) fn duration_at_least(text: &str, min_ms: u64, shown: &str) -> Result<u64, String> {
    match units::parse_duration_ms(text) {
        Ok(ms) if ms >= min_ms => Ok(ms),
        _ => Err(format!("{}, at least {shown}", units::DURATION_ACCEPTS)),
    }
}

/// A file path (its directory must be private, see report.rs), or `off` for none.
pub(super) fn file_path(text: &str) -> Result<Option<String>, String> {
    let trimmed = text.trim();
    if is_off(trimmed) {
        Ok(None)
    } else if trimmed.contains('\0') || trimmed.ends_with('/') {
        Err("a file path (not a directory, no NUL bytes)".to_string())
    } else {
        Ok(Some(trimmed.to_string()))
    }
}

/// A directory path, or `off` for none.
pub(super) fn directory(text: &str) -> Result<Option<String>, String> {
    let trimmed = text.trim();
    if is_off(trimmed) {
        Ok(None)
    } else if trimmed.contains('\0') {
        Err("a directory path without NUL bytes".to_string())
    } else {
        Ok(Some(trimmed.to_string()))
    }
}

/// A `redis://` or `rediss://` URL.
pub(super) fn redis_url(text: &str) -> Result<Option<String>, String> {
    let trimmed = text.trim();
    if is_off(trimmed) {
        return Ok(None);
    }
    let rest = trimmed
        .strip_prefix("redis://")
        .or_else(|| trimmed.strip_prefix("rediss://"));
    match rest {
        Some(rest) if !rest.is_empty() && !trimmed.chars().any(char::is_whitespace) => {
            Ok(Some(trimmed.to_string()))
        }
        _ => Err("a redis:// or rediss:// URL (redis://host:6379/0), or off".to_string()),
    }
}

/// The URL without its password (`redis://user:***@host`), for events, logs and errors.
/// Everything before the last `@` counts as credentials (a password may hold `/` or `@`):
/// when in doubt, more is hidden. Text without `://` is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            // A `/` before the `@`: the "user" may be part of the secret.
            let user = if user.contains('/') { "" } else { user };
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// A value given for a URL setting, as an error may show it: a malformed one may lack its
/// scheme (`user:pass@host`), and is redacted all the same.
pub(super) fn redact_given_url(text: &str) -> String {
    if text.contains("://") {
        redact_url(text)
    } else if text.contains('@') {
        redact_url(&format!("://{text}"))
            .trim_start_matches("://")
            .to_string()
    } else {
        text.to_string()
    }
}

/// A fleet name: 1 to 64 letters, digits, `.`, `_`, `-`.
pub(super) fn fleet_name(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if (1..=64).contains(&trimmed.len())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Ok(trimmed.to_string())
    } else {
        Err("1 to 64 letters, digits, '.', '_' or '-'".to_string())
    }
}

/// `N/window`: more than N recycles within the window (`20/10m`).
pub(super) fn storm_rule(text: &str) -> Result<(u64, u64), String> {
    const ACCEPTS: &str =
        "N/window: more than N recycles (1-100000) within a window of 1s to 24h, such as 20/10m";
    let (count, window) = text.trim().split_once('/').ok_or(ACCEPTS)?;
    let count = whole(count, 1, 100_000, "recycles").map_err(|_| ACCEPTS)?;
    match units::parse_duration_ms(window) {
        Ok(ms) if (1000..=86_400_000).contains(&ms) => Ok((count, ms)),
        _ => Err(ACCEPTS.to_string()),
    }
}
