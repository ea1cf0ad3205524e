//! The settings table and the value syntaxes, for JS: the settings JS acts on before (or
//! beside) a recycler, parsed by the one parser; sizes, durations, percentages and rates
//! for the CLI; the table's names for the tests that keep JS, types and docs in step.

use std::collections::HashMap;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use super::invalid;
use super::start::config_error;
use crate::config::{self, RawSettings};
use crate::units;

#[napi(object)]
pub struct SettingsInput {
    /// `SELF_RECYCLE_*` variables without the prefix.
    pub env: HashMap<String, String>,
    /// Options by camelCase name, as strings (js/options.js `normalizeOptions`).
    pub options: HashMap<String, String>,
    /// Read only these variables (`FLEET_REDIS`); the others keep their default, so a
    /// malformed one that is not asked for is no error. Unknown options are refused always.
    pub only: Option<Vec<String>>,
}

/// What JS needs of the settings, typed; the rest stays native.
#[napi(object)]
pub struct SettingsView {
    /// The fleet's Redis URL, to connect with: never to be shown or logged (absent: none).
    pub fleet_redis: Option<String>,
    /// The same URL without its password, for messages.
    pub fleet_redis_shown: Option<String>,
    pub fleet_name: String,
    pub fleet_timeout_ms: u32,
    pub warmup_ms: f64,
    /// `auto`, `json`, `pretty` or `off`.
    pub log: String,
    /// The status file's path as given (`{pid}` not yet expanded); absent: none.
    pub status_file: Option<String>,
    /// The variables with a value in force (an option, or a non-blank env var), such as
    /// `STAGGER_DIR`: `off` counts as given.
    pub given: Vec<String>,
}

/// Parses the settings as `new NativeRecycler` does (throwing the same
/// `ERR_SELF_RECYCLE_CONFIG`) and returns what JS acts on.
#[napi(catch_unwind)]
pub fn settings(env: Env, input: SettingsInput) -> Result<SettingsView> {
    let raw = RawSettings {
        env: &input.env,
        options: &input.options,
    };
    let parsed = match &input.only {
        Some(only) => config::parse_only(&raw, |variable| only.iter().any(|v| v == variable)),
        None => config::parse(&raw),
    };
    let config = parsed.map_err(|error| config_error(&env, &error))?;
    Ok(SettingsView {
        fleet_redis_shown: config.fleet_redis.as_deref().map(config::redact_url),
        fleet_redis: config.fleet_redis,
        fleet_name: config.fleet_name,
        // FLEET_TIMEOUT is at most 60 s (its row).
        fleet_timeout_ms: u32::try_from(config.fleet_timeout_ms).unwrap_or(u32::MAX),
        warmup_ms: config.warmup_ms as f64,
        log: config.log.as_str().to_string(),
        status_file: config.status_file,
        given: config::given(&raw).into_iter().map(String::from).collect(),
    })
}

/// A duration (`30s`, `1500`) in ms, at most 2^31 - 1; throws what is accepted.
#[napi(catch_unwind)]
pub fn parse_duration(text: String) -> Result<f64> {
    units::parse_duration_ms(&text)
        .map(|ms| ms as f64)
        .map_err(invalid)
}

/// A rate (`5MiB/min`) in bytes per minute; throws what is accepted.
#[napi(catch_unwind)]
pub fn parse_rate(text: String) -> Result<f64> {
    units::parse_rate_per_min(&text).map_err(invalid)
}

/// A percentage (`60%`, above 0 and at most `max_percent`) as a share (0.6); throws what
/// is accepted.
#[napi(catch_unwind)]
pub fn parse_percent(text: String, max_percent: f64) -> Result<f64> {
    units::parse_percent(&text, max_percent).map_err(invalid)
}

#[napi(object)]
pub struct SettingName {
    /// `MAX_RSS` (without the prefix).
    pub variable: String,
    /// `maxRss`.
    pub option: String,
}

/// Every row of the settings table, in its order (for the tests that compare it with the
/// options JS accepts, the types and docs/configuration.md).
#[napi(catch_unwind)]
pub fn setting_names() -> Vec<SettingName> {
    config::variables()
        .map(|variable| SettingName {
            variable: variable.to_string(),
            option: config::option_name(variable),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_named_once() {
        let names = setting_names();
        assert!(names.len() > 30);
        let mut options: Vec<&str> = names.iter().map(|n| n.option.as_str()).collect();
        options.sort_unstable();
        options.dedup();
        assert_eq!(options.len(), names.len());
        assert!(names
            .iter()
            .any(|n| n.variable == "FLEET_REDIS" && n.option == "fleetRedis"));
    }
}
