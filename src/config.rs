//! Env vars + options -> `Config`, through one table: each row of `settings!` declares a
//! variable's field, type, default, parser and how it shows in the `start` event. Options
//! override env vars; a blank value means "unset"; every error names the variable (or
//! option), the value and what is accepted. No I/O happens here.

use std::collections::HashMap;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::policy::Limits;
use crate::units::{self, Growth, Limit};

mod machine;
mod values;
pub use machine::{resolve, unreachable_limits, Machine, CEILING_SHARE, DEFAULT_RSS_SHARE};
pub use values::redact_url;
use values::{
    directory, duration, duration_at_least, file_path, fleet_name, limit_setting, optional,
    positive_duration, redis_url, storm_rule, whole,
};

pub const ENV_PREFIX: &str = "SELF_RECYCLE_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssMetric {
    Rss,
    Anon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Exit,
    Exec,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Exit => "exit",
            Restart::Exec => "exec",
        }
    }
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

    /// The format the native side writes in when JS cannot: `auto` means JSON.
    pub fn native(self) -> LogMode {
        match self {
            LogMode::Auto => LogMode::Json,
            mode => mode,
        }
    }
}

/// `MAX_RSS` and `MAX_HEAP` have defaults that depend on the machine (see `resolve`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitSetting {
    Default,
    Off,
    Set(Limit),
}

/// How a setting shows in the `start` event's `config`: a key and its value.
type Shown = (&'static str, fn(&Config, &Limits) -> Value);

/// One row of the table: the variable, how to apply a value, and its `start` view.
pub struct Setting {
    /// Without the prefix: `MAX_RSS`.
    pub variable: &'static str,
    /// Parses the text into the config; `Err` says what is accepted.
    pub apply: fn(&mut Config, &str) -> Result<(), String>,
    /// Key in the `start` event's `config` and its value; `None` for settings not shown.
    pub show: Option<Shown>,
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $variable:ident => $field:ident: $ty:ty = $default:expr,
            parse $parse:expr,
            show $key:tt $show:expr;
    )*) => {
        /// The parsed settings. Built from `SETTINGS`; see each row for its meaning.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $($(#[doc = $doc])* pub $field: $ty,)*
            /// Non-fatal findings (unknown variables), reported in the `start` event.
            pub warnings: Vec<String>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($field: $default,)* warnings: Vec::new() }
            }
        }

        /// Every setting, in README order.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                variable: stringify!($variable),
                apply: |config, text| {
                    let parse: fn(&str) -> Result<$ty, String> = $parse;
                    config.$field = parse(text)?;
                    Ok(())
                },
                show: settings!(@show $key $show),
            },
        )*];
    };
    (@show hidden $show:expr) => { None };
    (@show $key:literal $show:expr) => {{
        let show: fn(&Config, &Limits) -> Value = $show;
        Some(($key, show))
    }};
}

settings! {
    /// RSS limit: a size or % of the memory limit; default 90% of a cgroup limit, else off.
    MAX_RSS => max_rss: LimitSetting = LimitSetting::Default,
        parse |t| limit_setting(t, 100.0),
        show "maxRss" |_, l| json!(l.rss);
    /// The memory cgroup as one budget: its working set (usage minus inactive file cache)
    /// against a size or % of its limit; the largest self-recycle worker recycles
    /// (`container`). Default: 90% when the cgroup has a limit and holds several processes.
    CONTAINER_MAX => container_max: LimitSetting = LimitSetting::Default,
        parse |t| limit_setting(t, 100.0),
        show "containerMax" |c, _| match c.container_max {
            LimitSetting::Off => json!("off"),
            LimitSetting::Default => json!("default"),
            LimitSetting::Set(Limit::Bytes(b)) => json!(b),
            LimitSetting::Set(Limit::Fraction(f)) => json!(format!("{}%", f * 100.0)),
        };
    /// Which RSS figure the RSS and growth limits apply to.
    RSS_METRIC => rss_metric: RssMetric = RssMetric::Rss,
        parse |t| match t.trim() {
            "rss" => Ok(RssMetric::Rss),
            "anon" => Ok(RssMetric::Anon),
            _ => Err("rss or anon".to_string()),
        },
        show "rssMetric" |c, _| json!(if c.rss_metric == RssMetric::Anon { "anon" } else { "rss" });
    /// V8 used-heap limit: a size or % of the old-space limit; default 85% of it.
    MAX_HEAP => max_heap: LimitSetting = LimitSetting::Default,
        parse |t| limit_setting(t, 100.0),
        show "maxHeap" |_, l| json!(l.heap);
    /// Growth over the RSS baseline taken after warm-up.
    MAX_GROWTH => max_growth: Option<Growth> = None,
        parse |t| optional(t, units::parse_growth),
        show "maxGrowth" |c, _| json!(c.max_growth.map(|g| match g {
            Growth::Plus(bytes) => format!("+{bytes}"),
            Growth::Factor(f) => format!("{f}x"),
        }));
    /// Recycle when the post-GC heap grows faster than this (bytes per minute).
    LEAK_SLOPE => leak_slope_bytes_per_min: Option<f64> = None,
        parse |t| optional(t, units::parse_rate_per_min),
        show "leakSlopeBytesPerMin" |c, _| json!(c.leak_slope_bytes_per_min);
    /// Window of the leak slope.
    LEAK_WINDOW => leak_window_ms: u64 = 600_000,
        parse |t| duration_at_least(t, 1000, "1s"),
        show "leakWindowMs" |c, _| json!(c.leak_window_ms);
    /// Grant headroom and recycle when V8 is about to run out of heap.
    NEAR_HEAP_LIMIT => near_heap_limit: bool = true,
        parse units::parse_bool,
        show "nearHeapLimit" |c, _| json!(c.near_heap_limit);
    /// Recycle after this many `jobDone()`.
    MAX_JOBS => max_jobs: Option<u64> = None,
        parse |t| optional(t, |t| whole(t, 1, 1 << 53, "jobs")),
        show "maxJobs" |_, l| json!(l.jobs);
    /// Recycle after this uptime.
    MAX_AGE => max_age_ms: Option<u64> = None,
        parse |t| optional(t, positive_duration),
        show "maxAgeMs" |_, l| json!(l.age_ms);
    /// Downward random spread of `MAX_JOBS` and `MAX_AGE` (0.1 = 10%).
    JITTER => jitter: f64 = 0.10,
        parse |t| {
            let accepts = "a percentage from 0% to 50% such as 10%, or 0".to_string();
            // A bare 0 means none, as 0% does; any other number needs its %.
            let trimmed = t.trim();
            let number = match trimmed.strip_suffix('%') {
                Some(number) => number,
                None if trimmed.parse::<f64>() == Ok(0.0) => trimmed,
                None => return Err(accepts),
            };
            match number.trim().parse::<f64>() {
                Ok(p) if (0.0..=50.0).contains(&p) => Ok(p / 100.0),
                _ => Err(accepts),
            }
        },
        show "jitter" |c, _| json!(c.jitter);
    /// Sampling period.
    INTERVAL => interval_ms: u64 = 1000,
        parse |t| duration_at_least(t, MIN_INTERVAL_MS, "10ms"),
        show "intervalMs" |c, _| json!(c.interval_ms);
    /// The sampling period near a limit (past 80% of it, or trending to it): a crossing is
    /// seen within tens of milliseconds; `off` samples at `INTERVAL` always.
    FAST_INTERVAL => fast_interval_ms: Option<u64> = Some(25),
        parse |t| optional(t, |t| duration_at_least(t, MIN_INTERVAL_MS, "10ms")),
        show "fastIntervalMs" |c, _| json!(c.fast_interval_ms);
    /// Start the drain early when tracked work would carry the value over the limit.
    PREDICT => predict: bool = true,
        parse units::parse_bool,
        show "predict" |c, _| json!(c.predict);
    /// Consecutive samples over a limit before recycling.
    STRIKES => strikes: u32 = 3,
        parse |t| whole(t, 1, 1000, "samples").map(|n| n as u32),
        show "strikes" |c, _| json!(c.strikes);
    /// No growth or leak decisions before this; the baseline is taken at its end.
    WARMUP => warmup_ms: u64 = 30_000,
        parse duration,
        show "warmupMs" |c, _| json!(c.warmup_ms);
    /// No automatic recycle before this (the near-heap-limit path and the ceiling excepted).
    MIN_UPTIME => min_uptime_ms: u64 = 30_000,
        parse duration,
        show "minUptimeMs" |c, _| json!(c.min_uptime_ms);
    /// Drain hooks and tracked work get this long; then the native thread exits.
    DRAIN_TIMEOUT => drain_timeout_ms: u64 = 30_000,
        parse positive_duration,
        show "drainTimeoutMs" |c, _| json!(c.drain_timeout_ms);
    /// Exit code after a recycle.
    EXIT_CODE => exit_code: i32 = 75,
        parse |t| match t.trim().parse::<i32>() {
            Ok(code) if (0..=255).contains(&code) => Ok(code),
            _ => Err("an exit code from 0 to 255 (75 = EX_TEMPFAIL)".to_string()),
        },
        show "exitCode" |c, _| json!(c.exit_code);
    /// How a recycled worker comes back: `exit` with `EXIT_CODE` (the process manager
    /// restarts it) or `exec`: it re-executes itself in place (same PID, fresh memory), so
    /// an orchestrator sees no restart (no CrashLoopBackOff).
    RESTART => restart: Restart = Restart::Exit,
        parse |t| match t.trim() {
            "exit" => Ok(Restart::Exit),
            "exec" => Ok(Restart::Exec),
            _ => Err("exit or exec".to_string()),
        },
        show "restart" |c, _| json!(c.restart.as_str());
    /// Event loop unresponsive this long: recycle.
    STALL_TIMEOUT => stall_timeout_ms: Option<u64> = None,
        parse |t| optional(t, |t| duration_at_least(t, 100, "100ms")),
        show "stallTimeoutMs" |c, _| json!(c.stall_timeout_ms);
    /// Sibling workers sharing this directory recycle one at a time.
    STAGGER_DIR => stagger_dir: Option<String> = None,
        parse directory,
        show "staggerDir" |c, _| json!(c.stagger_dir);
    /// Minimum gap between sibling recycles.
    STAGGER_GAP => stagger_gap_ms: u64 = 30_000,
        parse duration,
        show "staggerGapMs" |c, _| json!(c.stagger_gap_ms);
    /// The longest a recycle waits for its turn among siblings; then it goes ahead.
    STAGGER_MAX_WAIT => stagger_max_wait_ms: u64 = 600_000,
        parse |t| duration_at_least(t, 1000, "1s"),
        show "staggerMaxWaitMs" |c, _| json!(c.stagger_max_wait_ms);
    /// The fleet's Redis, for apps that set the fleet up from env alone (the `fleet` option
    /// takes the app's ioredis client instead). Shown without its password.
    FLEET_REDIS => fleet_redis: Option<String> = None,
        parse redis_url,
        show "fleetRedis" |c, _| json!(c.fleet_redis.as_deref().map(redact_url));
    /// The fleet's name: workers with the same name (and Redis) coordinate recycles.
    FLEET_NAME => fleet_name: String = "default".to_string(),
        parse fleet_name,
        show "fleetName" |c, _| json!(c.fleet_name);
    /// The host name a worker gives in the fleet's status and history (default: the OS's).
    FLEET_HOST => fleet_host: Option<String> = None,
        parse |t| match t.trim() {
            h if (1..=255).contains(&h.len()) && !h.chars().any(|c| c.is_whitespace() || c.is_control()) => Ok(Some(h.to_string())),
            _ => Err("a host name of 1 to 255 characters without spaces".to_string()),
        },
        show "fleetHost" |c, _| json!(c.fleet_host);
    /// How many workers of the fleet may drain at once.
    FLEET_MAX_CONCURRENT => fleet_max_concurrent: u64 = 1,
        parse |t| whole(t, 1, 10_000, "workers"),
        show "fleetMaxConcurrent" |c, _| json!(c.fleet_max_concurrent);
    /// After a fleet lease is released (and between two grants) no lease is granted for this long.
    FLEET_GAP => fleet_gap_ms: u64 = 5_000,
        parse duration,
        show "fleetGapMs" |c, _| json!(c.fleet_gap_ms);
    /// A lease not renewed for this long is free again (its holder died); renewed every
    /// third of it while draining.
    FLEET_LEASE_TTL => fleet_lease_ttl_ms: u64 = 15_000,
        parse |t| duration_at_least(t, 1000, "1s"),
        show "fleetLeaseTtlMs" |c, _| json!(c.fleet_lease_ttl_ms);
    /// A Redis command slower than this counts as Redis unavailable: the recycle goes
    /// ahead with the local rules.
    FLEET_TIMEOUT => fleet_timeout_ms: u64 = 1_000,
        parse |t| match units::parse_duration_ms(t) {
            Ok(ms) if (50..=60_000).contains(&ms) => Ok(ms),
            _ => Err(format!("{}, from 50ms to 60s", units::DURATION_ACCEPTS)),
        },
        show "fleetTimeoutMs" |c, _| json!(c.fleet_timeout_ms);
    /// How often a worker writes its heartbeat (it expires after three of these).
    FLEET_HEARTBEAT => fleet_heartbeat_ms: u64 = 5_000,
        parse |t| duration_at_least(t, 500, "500ms"),
        show "fleetHeartbeatMs" |c, _| json!(c.fleet_heartbeat_ms);
    /// More than N recycles fleet-wide within a window emits `storm`: `N/window`, or off.
    FLEET_STORM => fleet_storm: Option<(u64, u64)> = Some((20, 600_000)),
        parse |t| optional(t, storm_rule),
        show "fleetStorm" |c, _| json!(c.fleet_storm.map(|(count, window)| json!({ "recycles": count, "windowMs": window })));
    /// The fleet gap while a storm lasts (wider, to slow a fleet that recycles too often).
    FLEET_STORM_GAP => fleet_storm_gap_ms: Option<u64> = None,
        parse |t| optional(t, duration),
        show "fleetStormGapMs" |c, _| json!(c.fleet_storm_gap_ms);
    /// Keep a small JSON status here (state, figures, baseline, last events), rewritten
    /// atomically every 2 s, for `self-recycle status|check` and deploy pre-flights.
    STATUS_FILE => status_file: Option<String> = None,
        parse file_path,
        show "statusFile" |c, _| json!(c.status_file);
    /// When the worker says it is ready (sd_notify READY=1, `process.send('ready')`):
    /// `start`, or `baseline` (once warm-up ends with the baseline under READY_MAX_BASELINE).
    READY => ready_on_baseline: bool = false,
        parse |t| match t.trim() {
            "start" => Ok(false),
            "baseline" => Ok(true),
            _ => Err("start or baseline".to_string()),
        },
        show "ready" |c, _| json!(if c.ready_on_baseline { "baseline" } else { "start" });
    /// The largest share of each limit the baseline may take for the worker to be ready.
    READY_MAX_BASELINE => ready_max_baseline: f64 = 0.60,
        parse |t| units::parse_percent(t, 100.0),
        show "readyMaxBaseline" |c, _| json!(c.ready_max_baseline);
    /// Write a JSON recycle report here before exit.
    REPORT_DIR => report_dir: Option<String> = None,
        parse directory,
        show "reportDir" |c, _| json!(c.report_dir);
    /// Write a heap snapshot into `REPORT_DIR` on recycle, when free memory allows.
    HEAP_SNAPSHOT => heap_snapshot: bool = false,
        parse units::parse_bool,
        show "heapSnapshot" |c, _| json!(c.heap_snapshot);
    /// V8's sampling heap profiler on the main thread: `heap` names the allocation sites
    /// that grew since the baseline in `leak` and `recycle` events; `off`.
    PROFILE => profile: bool = true,
        parse |t| match t.trim() {
            "heap" | "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("heap or off".to_string()),
        },
        show "profile" |c, _| json!(if c.profile { "heap" } else { "off" });
    /// Bytes allocated, on average, between two samples of the heap profiler.
    PROFILE_INTERVAL => profile_interval: u64 = 512 * 1024,
        parse |t| match units::parse_size(t) {
            Ok(bytes) if (16 * 1024..=64 * 1024 * 1024).contains(&bytes) => Ok(bytes),
            _ => Err(format!("{}, from 16KiB to 64MiB", units::SIZE_ACCEPTS)),
        },
        show "profileIntervalBytes" |c, _| json!(c.profile_interval);
    /// Log format of events on stderr.
    LOG => log: LogMode = LogMode::Auto,
        parse |t| match t.trim() {
            "auto" => Ok(LogMode::Auto),
            "json" => Ok(LogMode::Json),
            "pretty" => Ok(LogMode::Pretty),
            "off" => Ok(LogMode::Off),
            _ => Err("one of auto, json, pretty, off".to_string()),
        },
        show "log" |c, _| json!(c.log.as_str());
    /// Decide and emit, never drain or exit.
    DRY_RUN => dry_run: bool = false,
        parse units::parse_bool,
        show "dryRun" |c, _| json!(c.dry_run);
    /// `start()` returns an inert recycler.
    DISABLE => disable: bool = false,
        parse units::parse_bool,
        show hidden |_, _| Value::Null;
    /// SIGTERM/SIGINT stop the worker through a drain.
    SIGNALS => signals: bool = false,
        parse units::parse_bool,
        show "signals" |c, _| json!(c.signals);
}

pub const MIN_INTERVAL_MS: u64 = 10;

/// The variables of the table, for the unknown-variable hint.
pub fn variables() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|s| s.variable)
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
    variables()
        .map(|v| (edit_distance(name, v), v))
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
    /// The value in force for `variable` and how to name it in an error. A blank value is
    /// no value: `SELF_RECYCLE_NEAR_HEAP_LIMIT=` must not turn a protection off.
    fn lookup(&self, variable: &str) -> Option<(String, &str)> {
        let option = option_name(variable);
        if let Some(value) = self.options.get(&option).filter(|v| !v.trim().is_empty()) {
            return Some((format!("option {option}"), value));
        }
        self.env
            .get(variable)
            .filter(|v| !v.trim().is_empty())
            .map(|value| (format!("{ENV_PREFIX}{variable}"), value.as_str()))
    }
}

/// Settings whose value is a secret in part: an error shows it redacted.
const REDACTED: &[&str] = &["FLEET_REDIS"];

/// The value as an error may show it (a Redis URL without its password).
fn shown_value(variable: &str, value: &str) -> String {
    if REDACTED.contains(&variable) {
        values::redact_given_url(value)
    } else {
        value.to_string()
    }
}

/// The variables (without the prefix) that have a value in force: an option, or a
/// non-blank env var. `STAGGER_DIR=off` is given; `STAGGER_DIR=` is not.
pub fn given(raw: &RawSettings<'_>) -> Vec<&'static str> {
    variables()
        .filter(|variable| raw.lookup(variable).is_some())
        .collect()
}

pub fn parse(raw: &RawSettings<'_>) -> Result<Config, ConfigError> {
    parse_only(raw, |_| true)
}

/// `parse` with only the settings `wanted` accepts read (the others keep their default):
/// a command that needs FLEET_REDIS must not fail on a malformed MAX_RSS. Unknown options
/// are refused all the same; unknown variables are warnings either way.
pub fn parse_only(
    raw: &RawSettings<'_>,
    wanted: impl Fn(&str) -> bool,
) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut unknown_env: Vec<&String> = raw
        .env
        .keys()
        .filter(|name| !variables().any(|v| v == name.as_str()))
        .collect();
    unknown_env.sort();
    for name in unknown_env {
        let hint = closest_variable(name)
            .map(|v| format!(" (did you mean {ENV_PREFIX}{v}?)"))
            .unwrap_or_default();
        config
            .warnings
            .push(format!("unknown variable {ENV_PREFIX}{name} ignored{hint}"));
    }
    let mut options: Vec<&String> = raw.options.keys().collect();
    options.sort();
    for name in options {
        if !variables().any(|v| option_name(v) == *name) {
            let hint = closest_variable(&name.to_ascii_uppercase())
                .or_else(|| variables().find(|v| edit_distance(&option_name(v), name) <= 3))
                .map(|v| format!(" (did you mean {}?)", option_name(v)))
                .unwrap_or_default();
            return Err(ConfigError {
                variable: format!("option {name}"),
                value: raw
                    .options
                    .get(name)
                    .map(|value| redact_url(value))
                    .unwrap_or_default(),
                accepts: format!("a known option{hint}"),
            });
        }
    }
    for setting in SETTINGS.iter().filter(|s| wanted(s.variable)) {
        if let Some((shown, value)) = raw.lookup(setting.variable) {
            (setting.apply)(&mut config, value).map_err(|accepts| ConfigError {
                variable: shown,
                value: shown_value(setting.variable, value),
                accepts,
            })?;
        }
    }
    Ok(config)
}

/// The effective settings for the `start` event, `stats()` and the report.
pub fn effective_json(config: &Config, limits: &Limits) -> Value {
    let mut view = Map::new();
    for setting in SETTINGS {
        if let Some((key, show)) = setting.show {
            view.insert(key.to_string(), show(config, limits));
        }
    }
    Value::Object(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::cgroup::{LimitSource, MemoryLimit};

    #[test]
    fn fleet_settings_parse_and_hide_the_password() {
        let config = parse_env(&[
            ("FLEET_REDIS", "redis://worker:s3cret@redis:6379/2"),
            ("FLEET_NAME", "invoices.workers-2"),
            ("FLEET_STORM", "30/15m"),
            ("FLEET_STORM_GAP", "1m"),
        ])
        .expect("valid");
        assert_eq!(
            config.fleet_redis.as_deref(),
            Some("redis://worker:s3cret@redis:6379/2")
        );
        assert_eq!(config.fleet_storm, Some((30, 900_000)));
        assert_eq!(config.fleet_storm_gap_ms, Some(60_000));
        assert_eq!(
            redact_url("redis://worker:s3cret@redis:6379/2"),
            "redis://worker:***@redis:6379/2"
        );
        assert_eq!(redact_url("rediss://:p@ss@host/0"), "rediss://:***@host/0");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            parse_env(&[("FLEET_STORM", "off")])
                .expect("off")
                .fleet_storm,
            None
        );
        for (variable, value) in [
            ("FLEET_REDIS", "http://redis"),
            ("FLEET_REDIS", "redis://"),
            ("FLEET_REDIS", "redis://a b"),
            ("FLEET_NAME", "a/b"),
            ("FLEET_NAME", &"x".repeat(65)),
            ("FLEET_MAX_CONCURRENT", "0"),
            ("FLEET_LEASE_TTL", "500ms"),
            ("FLEET_TIMEOUT", "10ms"),
            ("FLEET_STORM", "20"),
            ("FLEET_STORM", "0/10m"),
            ("FLEET_STORM", "20/10ms"),
            ("FLEET_HOST", "a b"),
        ] {
            let error = parse_env(&[(variable, value)]).expect_err(value);
            assert!(error.variable.ends_with(variable), "{error:?}");
        }
    }

    #[test]
    fn a_redis_url_is_never_shown_with_its_password() {
        assert_eq!(redact_url("redis://u:p/w@host/1"), "redis://u:***@host/1");
        assert_eq!(redact_url("redis://p@ss/w@host"), "redis://:***@host");
        for (value, shown) in [
            ("http://u:s3cret@host", "http://u:***@host"),
            ("u:s3cret@host", "u:***@host"),
            ("redis://u:s3cret@ho st", "redis://u:***@ho st"),
        ] {
            let error = parse_env(&[("FLEET_REDIS", value)]).expect_err(value);
            assert_eq!(error.value, shown);
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
        let env = HashMap::new();
        let options = [("fleetRediss", "redis://u:s3cret@host")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let error = parse(&RawSettings {
            env: &env,
            options: &options,
        })
        .expect_err("unknown option");
        assert_eq!(error.value, "redis://u:***@host");
        assert!(error.accepts.contains("fleetRedis"), "{error}");
    }

    #[test]
    fn parse_only_reads_the_wanted_settings_and_given_names_the_set_ones() {
        let env = [
            ("MAX_RSS", "banana"),
            ("FLEET_NAME", "a"),
            ("STAGGER_DIR", " "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let options = [("staggerGap", "0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let raw = RawSettings {
            env: &env,
            options: &options,
        };
        assert_eq!(
            parse(&raw).expect_err("MAX_RSS").variable,
            "SELF_RECYCLE_MAX_RSS"
        );
        let config = parse_only(&raw, |v| v.starts_with("FLEET_")).expect("fleet only");
        assert_eq!(config.fleet_name, "a");
        assert_eq!(config.stagger_gap_ms, Config::default().stagger_gap_ms);
        assert_eq!(given(&raw), ["MAX_RSS", "STAGGER_GAP", "FLEET_NAME"]);
    }

    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

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
        assert_eq!(config.max_heap, LimitSetting::Default);
        assert_eq!(config.jitter, 0.10);
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
            ("JITTER", "25%"),
            ("MAX_AGE", "6h"),
        ])
        .expect("valid");
        assert_eq!(config.max_rss, LimitSetting::Set(Limit::Bytes(768 << 20)));
        assert_eq!(config.max_heap, LimitSetting::Off);
        assert_eq!(config.max_growth, Some(Growth::Factor(2.0)));
        assert_eq!(config.interval_ms, 250);
        assert_eq!(config.strikes, 2);
        assert_eq!(config.log, LogMode::Pretty);
        assert!(config.dry_run);
        assert_eq!(config.max_jobs, Some(1000));
        assert_eq!(config.jitter, 0.25);
        assert_eq!(config.max_age_ms, Some(6 * 3_600_000));
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
    fn blank_is_unset_never_off() {
        let config = parse_env(&[
            ("NEAR_HEAP_LIMIT", ""),
            ("MAX_HEAP", "  "),
            ("STRIKES", ""),
            ("SIGNALS", " "),
        ])
        .expect("blank values are defaults");
        assert!(config.near_heap_limit);
        assert_eq!(config.max_heap, LimitSetting::Default);
        assert_eq!(config.strikes, 3);
        let env = HashMap::from([("INTERVAL".to_string(), "250ms".to_string())]);
        let options = HashMap::from([("interval".to_string(), String::new())]);
        let config = parse(&RawSettings {
            env: &env,
            options: &options,
        })
        .expect("valid");
        assert_eq!(
            config.interval_ms, 250,
            "a blank option falls back to the env"
        );
    }

    #[test]
    fn errors_name_variable_value_and_accepted() {
        for (name, value) in [
            ("MAX_RSS", "banana"),
            ("INTERVAL", "-5s"),
            ("INTERVAL", "5ms"),
            ("MAX_HEAP", "150%"),
            ("STRIKES", "0"),
            ("STRIKES", "4294967296"),
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
        let strikes = parse_env(&[("STRIKES", "4294967296")]).expect_err("range");
        assert!(strikes.accepts.contains("from 1 to 1000"), "{strikes}");
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
    fn typo_hints_find_the_closest_name_and_only_a_close_one() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abcd", "abd"), 1);
        assert_eq!(edit_distance("xab", "ab"), 1);
        assert_eq!(edit_distance("ab", "b"), 1);
        assert_eq!(closest_variable("INTERVL"), Some("INTERVAL"));
        assert_eq!(closest_variable("COMPLETELY_ELSE"), None);
        let env = HashMap::new();
        for (typo, hint) in [("intervall", Some("interval")), ("zzzzzzzzzzzz", None)] {
            let options = HashMap::from([(typo.to_string(), "1s".to_string())]);
            let error = parse(&RawSettings {
                env: &env,
                options: &options,
            })
            .expect_err(typo);
            match hint {
                Some(hint) => assert!(
                    error.accepts.contains(&format!("did you mean {hint}?")),
                    "{error}"
                ),
                None => assert_eq!(error.accepts, "a known option"),
            }
        }
    }

    #[test]
    fn durations_directories_and_metrics_parse_to_what_they_say() {
        let config = parse_env(&[
            ("WARMUP", "5s"),
            ("MIN_UPTIME", "7s"),
            ("STAGGER_GAP", "2s"),
            ("DRAIN_TIMEOUT", "1"),
            ("STAGGER_DIR", "/run/stagger"),
            ("REPORT_DIR", "off"),
            ("RSS_METRIC", "anon"),
            ("LOG", "pretty"),
        ])
        .expect("valid");
        assert_eq!(
            (
                config.warmup_ms,
                config.min_uptime_ms,
                config.stagger_gap_ms
            ),
            (5000, 7000, 2000)
        );
        assert_eq!(config.drain_timeout_ms, 1);
        assert_eq!(config.stagger_dir.as_deref(), Some("/run/stagger"));
        assert_eq!(config.report_dir, None);
        assert!(parse_env(&[("DRAIN_TIMEOUT", "0")]).is_err());
        assert!(parse_env(&[("STAGGER_DIR", "a\0b")]).is_err());
        let limits = resolve(&config, &Machine::default(), 0.0);
        assert!(limits.rss_anon);
        assert!(!resolve(&Config::default(), &Machine::default(), 0.0).rss_anon);
        let view = effective_json(&config, &limits);
        assert_eq!(view["log"], json!("pretty"));
        assert_eq!(view["rssMetric"], json!("anon"));
        assert_eq!(LogMode::Auto.as_str(), "auto");
        assert_eq!(LogMode::Json.as_str(), "json");
        assert_eq!(LogMode::Off.as_str(), "off");
        assert_eq!(LogMode::Auto.native(), LogMode::Json);
        assert_eq!(LogMode::Pretty.native(), LogMode::Pretty);
    }

    #[test]
    fn option_names() {
        assert_eq!(option_name("MAX_RSS"), "maxRss");
        assert_eq!(option_name("NEAR_HEAP_LIMIT"), "nearHeapLimit");
        assert_eq!(option_name("LOG"), "log");
    }

    #[test]
    fn every_setting_applies_and_shows() {
        let mut shown = 0;
        for setting in SETTINGS {
            assert!(
                setting
                    .variable
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_'),
                "{}",
                setting.variable
            );
            if setting.show.is_some() {
                shown += 1;
            }
        }
        let config = Config::default();
        let limits = resolve(&config, &Machine::default(), 0.0);
        let view = effective_json(&config, &limits);
        assert_eq!(view.as_object().map(Map::len), Some(shown));
        assert_eq!(view["intervalMs"], json!(1000));
        assert_eq!(view["jitter"], json!(0.1));
    }

    fn machine(cgroup: Option<u64>, old_space: Option<u64>) -> Machine {
        Machine {
            memory_limit: cgroup.map(|bytes| MemoryLimit {
                bytes,
                source: LimitSource::CgroupV2,
            }),
            heap_size_limit: old_space.map(|o| o + 48 * MIB),
            old_space_limit: old_space,
        }
    }

    #[test]
    fn machine_defaults_resolve_in_one_place() {
        let config = Config::default();
        let limits = resolve(&config, &machine(Some(1000 * MIB), Some(160 * MIB)), 0.0);
        assert_eq!(limits.rss, Some(900 * MIB));
        assert_eq!(limits.ceiling, Some(950 * MIB));
        assert_eq!(
            limits.heap,
            Some(136 * MIB),
            "85% of the old space, not of heap_size_limit"
        );
        let physical = Machine {
            memory_limit: Some(MemoryLimit {
                bytes: 1000 * MIB,
                source: LimitSource::Physical,
            }),
            ..Machine::default()
        };
        let limits = resolve(&config, &physical, 0.0);
        assert_eq!(limits.rss, None, "no default RSS limit without a cgroup");
        assert_eq!(limits.ceiling, None);
    }

    #[test]
    fn jitter_applies_to_jobs_and_age() {
        let config = parse_env(&[("MAX_JOBS", "1000"), ("MAX_AGE", "100s"), ("JITTER", "10%")])
            .expect("valid");
        let lowest = resolve(&config, &Machine::default(), 0.999_999);
        assert_eq!(lowest.jobs, Some(901));
        assert_eq!(lowest.age_ms, Some(90_001));
        let middle = resolve(&config, &Machine::default(), 0.5);
        assert_eq!(middle.jobs, Some(950));
        assert_eq!(middle.age_ms, Some(95_000));
        let highest = resolve(&config, &Machine::default(), 0.0);
        assert_eq!(highest.jobs, Some(1000));
        assert_eq!(highest.age_ms, Some(100_000));
    }

    #[test]
    fn jitter_zero_is_accepted_as_zero_percent() {
        for text in ["0", " 0 ", "0.0", "0%"] {
            let config = parse_env(&[("JITTER", text)]).expect(text);
            assert_eq!(config.jitter, 0.0, "{text}");
        }
        for text in ["10", "0.1", "60%", "-1%"] {
            let error = parse_env(&[("JITTER", text)]).expect_err(text);
            assert!(error.to_string().contains("JITTER"), "{error}");
        }
    }

    #[test]
    fn unreachable_limits_are_named() {
        let config = parse_env(&[("MAX_HEAP", "200MiB")]).expect("valid");
        let machine = machine(Some(300 * MIB), Some(160 * MIB));
        let warnings = unreachable_limits(&resolve(&config, &machine, 0.0), &machine);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("MAX_HEAP 200 MiB can never be reached"));
        let config = parse_env(&[("MAX_RSS", "1GiB")]).expect("valid");
        let warnings = unreachable_limits(&resolve(&config, &machine, 0.0), &machine);
        assert!(
            warnings.iter().any(|w| w.contains("MAX_RSS 1.0 GiB")),
            "{warnings:?}"
        );
        assert!(
            unreachable_limits(&resolve(&Config::default(), &machine, 0.0), &machine).is_empty()
        );
    }

    /// Every millisecond figure in a view, with its path.
    fn millis(view: &Value, path: &str, out: &mut Vec<(String, u64)>) {
        match view {
            Value::Object(map) => {
                for (key, value) in map {
                    millis(value, &format!("{path}.{key}"), out);
                }
            }
            Value::Number(n) if path.ends_with("Ms") => {
                out.push((path.to_string(), n.as_u64().unwrap_or(u64::MAX)))
            }
            _ => {}
        }
    }

    #[test]
    fn no_duration_setting_reaches_the_timer_limit() {
        // Every row of the table, given durations past what a JS timer holds: each is refused
        // with the shared bound, or is not a duration at all; nothing in the effective config
        // reaches 2^31 ms.
        let mut refused = Vec::new();
        for setting in SETTINGS {
            for value in ["25d", "2147483648", "20/25d"] {
                match parse_env(&[(setting.variable, value)]) {
                    Err(error) => {
                        assert!(error.variable.ends_with(setting.variable), "{error}");
                        assert!(error.to_string().contains(value), "{error}");
                        if error.accepts.contains("duration") {
                            assert!(error.accepts.contains("at most 24d"), "{error}");
                            refused.push(setting.variable);
                        }
                    }
                    Ok(config) => {
                        let limits = resolve(&config, &Machine::default(), 0.0);
                        let mut found = Vec::new();
                        millis(&effective_json(&config, &limits), "", &mut found);
                        for (path, ms) in found {
                            assert!(
                                ms <= units::MAX_DURATION_MS,
                                "{}={value}: {path} = {ms}",
                                setting.variable
                            );
                        }
                    }
                }
            }
        }
        for variable in [
            "MAX_AGE",
            "DRAIN_TIMEOUT",
            "FLEET_HEARTBEAT",
            "FLEET_LEASE_TTL",
            "FLEET_GAP",
            "STALL_TIMEOUT",
            "STAGGER_MAX_WAIT",
            "FLEET_STORM_GAP",
            "WARMUP",
            "INTERVAL",
        ] {
            assert!(
                refused.contains(&variable),
                "{variable} took 25d: {refused:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn no_value_panics(index in 0..SETTINGS.len(), value in ".{0,30}") {
            let _ = parse_env(&[(SETTINGS[index].variable, value.as_str())]);
        }
    }

    #[test]
    fn status_file_is_a_trimmed_file_path_or_off() {
        let status = |text: &str| parse_env(&[("STATUS_FILE", text)]).map(|c| c.status_file);
        assert_eq!(status("off").expect("off"), None);
        assert_eq!(status("").expect("blank is the default"), None);
        assert_eq!(
            status(" /run/worker/status.json ").expect("path"),
            Some("/run/worker/status.json".to_string())
        );
        for bad in ["/run/worker/", "/run/a\0b"] {
            let error = status(bad).expect_err(bad);
            assert!(error.to_string().contains("STATUS_FILE"), "{error}");
            assert!(error.to_string().contains("not a directory"), "{error}");
        }
    }

    #[test]
    fn the_restart_mode_shows_as_set() {
        let shown = |env: &[(&str, &str)]| {
            let config = parse_env(env).expect("valid");
            let limits = resolve(&config, &Machine::default(), 0.0);
            effective_json(&config, &limits)["restart"].clone()
        };
        assert_eq!(shown(&[]), json!("exit"));
        assert_eq!(shown(&[("RESTART", "exec")]), json!("exec"));
        assert_eq!(shown(&[("RESTART", " exit ")]), json!("exit"));
    }
}
