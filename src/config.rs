//! Env vars + options -> `Config`. Options override env vars. Every error names the
//! variable (or option), the value and what is accepted; no I/O happens here.

use std::collections::HashMap;
use std::fmt;

use crate::units::{self, Growth, Limit};

pub const ENV_PREFIX: &str = "SELF_RECYCLE_";

/// Every variable of the contract, in README order. Unknown `SELF_RECYCLE_*` names are
/// reported against this list so a typo cannot silently disable a limit.
pub const VARIABLES: &[&str] = &[
    "MAX_RSS",
    "RSS_METRIC",
    "MAX_HEAP",
    "MAX_GROWTH",
    "LEAK_SLOPE",
    "LEAK_WINDOW",
    "NEAR_HEAP_LIMIT",
    "MAX_JOBS",
    "MAX_AGE",
    "JITTER",
    "INTERVAL",
    "STRIKES",
    "WARMUP",
    "MIN_UPTIME",
    "DRAIN_TIMEOUT",
    "EXIT_CODE",
    "STALL_TIMEOUT",
    "STAGGER_DIR",
    "STAGGER_GAP",
    "REPORT_DIR",
    "HEAP_SNAPSHOT",
    "LOG",
    "DRY_RUN",
    "DISABLE",
    "SIGNALS",
];

pub const MIN_INTERVAL_MS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssMetric {
    Rss,
    Anon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    Auto,
    Json,
    Pretty,
    Off,
}

impl LogMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LogMode::Auto => "auto",
            LogMode::Json => "json",
            LogMode::Pretty => "pretty",
            LogMode::Off => "off",
        }
    }
}

/// `MAX_RSS` is special: its default depends on whether a cgroup limit exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RssLimitSetting {
    Default,
    Off,
    Set(Limit),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub max_rss: RssLimitSetting,
    pub rss_metric: RssMetric,
    pub max_heap: Option<Limit>,
    pub max_growth: Option<Growth>,
    pub leak_slope_bytes_per_min: Option<f64>,
    pub leak_window_ms: u64,
    pub near_heap_limit: bool,
    pub max_jobs: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub jitter: f64,
    pub interval_ms: u64,
    pub strikes: u32,
    pub warmup_ms: u64,
    pub min_uptime_ms: u64,
    pub drain_timeout_ms: u64,
    pub exit_code: i32,
    pub stall_timeout_ms: Option<u64>,
    pub stagger_dir: Option<String>,
    pub stagger_gap_ms: u64,
    pub report_dir: Option<String>,
    pub heap_snapshot: bool,
    pub log: LogMode,
    pub dry_run: bool,
    pub disable: bool,
    pub signals: bool,
    /// Non-fatal findings (unknown variables), reported in the `start` event.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rss: RssLimitSetting::Default,
            rss_metric: RssMetric::Rss,
            max_heap: Some(Limit::Fraction(0.85)),
            max_growth: None,
            leak_slope_bytes_per_min: None,
            leak_window_ms: 600_000,
            near_heap_limit: true,
            max_jobs: None,
            max_age_ms: None,
            jitter: 0.10,
            interval_ms: 1000,
            strikes: 3,
            warmup_ms: 30_000,
            min_uptime_ms: 30_000,
            drain_timeout_ms: 30_000,
            exit_code: 75,
            stall_timeout_ms: None,
            stagger_dir: None,
            stagger_gap_ms: 30_000,
            report_dir: None,
            heap_snapshot: false,
            log: LogMode::Auto,
            dry_run: false,
            disable: false,
            signals: false,
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// `SELF_RECYCLE_MAX_RSS` or `option maxRss`.
    pub variable: String,
    pub value: String,
    pub accepts: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.variable, self.value, self.accepts
        )
    }
}

impl std::error::Error for ConfigError {}

/// `MAX_RSS` -> `maxRss`.
pub fn option_name(variable: &str) -> String {
    let mut name = String::with_capacity(variable.len());
    let mut upper = false;
    for c in variable.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    name
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn closest_variable(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|v| (edit_distance(name, v), *v))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, v)| v)
}

/// Raw inputs: env vars without the prefix and options keyed by camelCase name. Values
/// are strings; the JS layer turns numbers and booleans into strings.
pub struct RawSettings<'a> {
    pub env: &'a HashMap<String, String>,
    pub options: &'a HashMap<String, String>,
}

impl RawSettings<'_> {
    fn lookup(&self, variable: &str) -> Option<(String, String)> {
        let option = option_name(variable);
        if let Some(value) = self.options.get(&option) {
            return Some((format!("option {option}"), value.clone()));
        }
        self.env
            .get(variable)
            .map(|value| (format!("{ENV_PREFIX}{variable}"), value.clone()))
    }

    /// Parses one setting if present; `Ok(None)` when absent.
    fn parse<T>(
        &self,
        variable: &str,
        parser: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.lookup(variable) {
            None => Ok(None),
            Some((shown, value)) => parser(&value).map(Some).map_err(|accepts| ConfigError {
                variable: shown,
                value,
                accepts,
            }),
        }
    }
}

fn is_off(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "no"
    )
}

/// A setting that can be a value or `off`.
fn optional<T>(
    parser: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Option<T>, String> {
    move |text| {
        if is_off(text) {
            Ok(None)
        } else {
            parser(text)
                .map(Some)
                .map_err(|accepts| format!("{accepts}, or off"))
        }
    }
}

fn count(text: &str, what: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("a whole number of {what} above 0"))
}

pub fn parse(raw: &RawSettings<'_>) -> Result<Config, ConfigError> {
    let mut config = Config::default();

    for name in raw.env.keys() {
        if !VARIABLES.contains(&name.as_str()) {
            let hint = closest_variable(name)
                .map(|v| format!(" (did you mean {ENV_PREFIX}{v}?)"))
                .unwrap_or_default();
            config
                .warnings
                .push(format!("unknown variable {ENV_PREFIX}{name} ignored{hint}"));
        }
    }
    for name in raw.options.keys() {
        if !VARIABLES.iter().any(|v| option_name(v) == *name) {
            let hint = closest_variable(&name.to_ascii_uppercase())
                .or_else(|| {
                    VARIABLES
                        .iter()
                        .find(|v| edit_distance(&option_name(v), name) <= 3)
                        .copied()
                })
                .map(|v| format!(" (did you mean {}?)", option_name(v)))
                .unwrap_or_default();
            return Err(ConfigError {
                variable: format!("option {name}"),
                value: raw.options.get(name).cloned().unwrap_or_default(),
                accepts: format!("a known option{hint}"),
            });
        }
    }

    if let Some(value) = raw.parse("MAX_RSS", |t| {
        if is_off(t) {
            Ok(RssLimitSetting::Off)
        } else {
            units::parse_limit(t, 100.0)
                .map(RssLimitSetting::Set)
                .map_err(|a| format!("{a}, or off"))
        }
    })? {
        config.max_rss = value;
    }
    if let Some(value) = raw.parse("RSS_METRIC", |t| match t.trim() {
        "rss" => Ok(RssMetric::Rss),
        "anon" => Ok(RssMetric::Anon),
        _ => Err("rss or anon".to_string()),
    })? {
        config.rss_metric = value;
    }
    if let Some(value) = raw.parse("MAX_HEAP", optional(|t| units::parse_limit(t, 100.0)))? {
        config.max_heap = value;
    }
    if let Some(value) = raw.parse("MAX_GROWTH", optional(units::parse_growth))? {
        config.max_growth = value;
    }
    if let Some(value) = raw.parse("LEAK_SLOPE", optional(units::parse_rate_per_min))? {
        config.leak_slope_bytes_per_min = value;
    }
    if let Some(value) = raw.parse("LEAK_WINDOW", |t| match units::parse_duration_ms(t) {
        Ok(ms) if ms >= 1000 => Ok(ms),
        _ => Err(format!("{}, at least 1s", units::DURATION_ACCEPTS)),
    })? {
        config.leak_window_ms = value;
    }
    if let Some(value) = raw.parse("NEAR_HEAP_LIMIT", units::parse_bool)? {
        config.near_heap_limit = value;
    }
    if let Some(value) = raw.parse("MAX_JOBS", optional(|t| count(t, "jobs")))? {
        config.max_jobs = value;
    }
    if let Some(value) = raw.parse(
        "MAX_AGE",
        optional(|t| match units::parse_duration_ms(t) {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(format!("{} above 0", units::DURATION_ACCEPTS)),
        }),
    )? {
        config.max_age_ms = value;
    }
    if let Some(value) = raw.parse("JITTER", |t| {
        let accepts = "a percentage from 0% to 50% such as 10%".to_string();
        let number = t.trim().strip_suffix('%').ok_or_else(|| accepts.clone())?;
        match number.trim().parse::<f64>() {
            Ok(p) if (0.0..=50.0).contains(&p) => Ok(p / 100.0),
            _ => Err(accepts),
        }
    })? {
        config.jitter = value;
    }
    if let Some(value) = raw.parse("INTERVAL", |t| match units::parse_duration_ms(t) {
        Ok(ms) if ms >= MIN_INTERVAL_MS => Ok(ms),
        _ => Err(format!("{}, at least 10ms", units::DURATION_ACCEPTS)),
    })? {
        config.interval_ms = value;
    }
    if let Some(value) = raw.parse("STRIKES", |t| {
        count(t, "samples").and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
    })? {
        config.strikes = value;
    }
    if let Some(value) = raw.parse("WARMUP", units::parse_duration_ms)? {
        config.warmup_ms = value;
    }
    if let Some(value) = raw.parse("MIN_UPTIME", units::parse_duration_ms)? {
        config.min_uptime_ms = value;
    }
    if let Some(value) = raw.parse("DRAIN_TIMEOUT", |t| match units::parse_duration_ms(t) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("{} above 0", units::DURATION_ACCEPTS)),
    })? {
        config.drain_timeout_ms = value;
    }
    if let Some(value) = raw.parse("EXIT_CODE", |t| match t.trim().parse::<i32>() {
        Ok(code) if (0..=255).contains(&code) => Ok(code),
        _ => Err("an exit code from 0 to 255 (75 = EX_TEMPFAIL)".to_string()),
    })? {
        config.exit_code = value;
    }
    if let Some(value) = raw.parse(
        "STALL_TIMEOUT",
        optional(|t| match units::parse_duration_ms(t) {
            Ok(ms) if ms >= 100 => Ok(ms),
            _ => Err(format!("{}, at least 100ms", units::DURATION_ACCEPTS)),
        }),
    )? {
        config.stall_timeout_ms = value;
    }
    if let Some(value) = raw.parse("STAGGER_DIR", directory)? {
        config.stagger_dir = value;
    }
    if let Some(value) = raw.parse("STAGGER_GAP", units::parse_duration_ms)? {
        config.stagger_gap_ms = value;
    }
    if let Some(value) = raw.parse("REPORT_DIR", directory)? {
        config.report_dir = value;
    }
    if let Some(value) = raw.parse("HEAP_SNAPSHOT", units::parse_bool)? {
        config.heap_snapshot = value;
    }
    if let Some(value) = raw.parse("LOG", |t| match t.trim() {
        "auto" => Ok(LogMode::Auto),
        "json" => Ok(LogMode::Json),
        "pretty" => Ok(LogMode::Pretty),
        "off" => Ok(LogMode::Off),
        _ => Err("one of auto, json, pretty, off".to_string()),
    })? {
        config.log = value;
    }
    if let Some(value) = raw.parse("DRY_RUN", units::parse_bool)? {
        config.dry_run = value;
    }
    if let Some(value) = raw.parse("DISABLE", units::parse_bool)? {
        config.disable = value;
    }
    if let Some(value) = raw.parse("SIGNALS", units::parse_bool)? {
        config.signals = value;
    }
    Ok(config)
}

/// A directory path, or `off`/empty for none.
fn directory(text: &str) -> Result<Option<String>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || is_off(trimmed) {
        Ok(None)
    } else if trimmed.contains('\0') {
        Err("a directory path without NUL bytes".to_string())
    } else {
        Ok(Some(trimmed.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let options = HashMap::new();
        parse(&RawSettings {
            env: &env,
            options: &options,
        })
    }

    #[test]
    fn defaults() {
        let config = parse_env(&[]).expect("defaults parse");
        assert_eq!(config, Config::default());
        assert_eq!(config.exit_code, 75);
        assert_eq!(config.max_heap, Some(Limit::Fraction(0.85)));
    }

    #[test]
    fn env_values() {
        let config = parse_env(&[
            ("MAX_RSS", "768MiB"),
            ("MAX_HEAP", "off"),
            ("MAX_GROWTH", "2x"),
            ("INTERVAL", "250ms"),
            ("STRIKES", "2"),
            ("LOG", "pretty"),
            ("DRY_RUN", "1"),
            ("MAX_JOBS", "1000"),
        ])
        .expect("valid");
        assert_eq!(
            config.max_rss,
            RssLimitSetting::Set(Limit::Bytes(768 << 20))
        );
        assert_eq!(config.max_heap, None);
        assert_eq!(config.max_growth, Some(Growth::Factor(2.0)));
        assert_eq!(config.interval_ms, 250);
        assert_eq!(config.strikes, 2);
        assert_eq!(config.log, LogMode::Pretty);
        assert!(config.dry_run);
        assert_eq!(config.max_jobs, Some(1000));
    }

    #[test]
    fn options_override_env() {
        let env = HashMap::from([("INTERVAL".to_string(), "1s".to_string())]);
        let options = HashMap::from([("interval".to_string(), "50".to_string())]);
        let config = parse(&RawSettings {
            env: &env,
            options: &options,
        })
        .expect("valid");
        assert_eq!(config.interval_ms, 50);
    }

    #[test]
    fn errors_name_variable_value_and_accepted() {
        for (name, value) in [
            ("MAX_RSS", "banana"),
            ("INTERVAL", "-5s"),
            ("INTERVAL", "5ms"),
            ("MAX_HEAP", "150%"),
            ("STRIKES", "0"),
            ("EXIT_CODE", "256"),
            ("LOG", "loud"),
            ("JITTER", "80%"),
            ("MAX_GROWTH", "0.5x"),
            ("RSS_METRIC", "pss"),
        ] {
            let error = parse_env(&[(name, value)]).expect_err(name);
            let message = error.to_string();
            assert!(
                message.contains(&format!("SELF_RECYCLE_{name}")),
                "{message}"
            );
            assert!(message.contains(value), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
    }

    #[test]
    fn unknown_env_is_a_warning_with_a_hint() {
        let config = parse_env(&[("MAX_RRS", "1GB")]).expect("warning only");
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("SELF_RECYCLE_MAX_RRS"));
        assert!(config.warnings[0].contains("did you mean SELF_RECYCLE_MAX_RSS"));
    }

    #[test]
    fn unknown_option_is_an_error() {
        let env = HashMap::new();
        let options = HashMap::from([("maxRs".to_string(), "1GB".to_string())]);
        let error = parse(&RawSettings {
            env: &env,
            options: &options,
        })
        .expect_err("unknown option");
        assert!(error.to_string().contains("maxRss"), "{error}");
    }

    #[test]
    fn option_names() {
        assert_eq!(option_name("MAX_RSS"), "maxRss");
        assert_eq!(option_name("NEAR_HEAP_LIMIT"), "nearHeapLimit");
        assert_eq!(option_name("LOG"), "log");
    }

    proptest! {
        #[test]
        fn no_value_panics(index in 0..VARIABLES.len(), value in ".{0,30}") {
            let _ = parse_env(&[(VARIABLES[index], value.as_str())]);
        }
    }
}
