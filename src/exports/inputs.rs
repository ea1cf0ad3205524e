//! What JS passes in: `#[napi(object)]` structs, converted into the core's types here.

use std::collections::HashMap;

use napi_derive::napi;
use serde_json::{Map, Value};

use super::{invalid, to_bytes};
use crate::event::{DrainPhase, Envelope, Event, Storm};
use crate::fleet::FleetAnswer;
use crate::guard::InitCost;
use crate::probe::v8::{HeapFigures, JsMemoryUsage};

/// What `process.memoryUsage()` returned just before `start`: checked against the native
/// read of V8's statistics (without loading `node:v8`, ~1.6 ms at start).
#[napi(object)]
pub struct MemoryUsageInput {
    pub heap_total: f64,
    pub heap_used: f64,
    pub external: f64,
}

/// `v8.getHeapStatistics()` in camelCase, given only when the native heap probe is refused
/// (the JS fallback then feeds the figures).
#[napi(object)]
pub struct HeapStatisticsInput {
    pub total_heap_size: f64,
    pub used_heap_size: f64,
    pub heap_size_limit: f64,
    /// Absent before Node 20 (`external_memory`): 0.
    pub external_memory: Option<f64>,
}

impl From<&MemoryUsageInput> for JsMemoryUsage {
    fn from(memory: &MemoryUsageInput) -> Self {
        JsMemoryUsage {
            heap_total: memory.heap_total,
            heap_used: memory.heap_used,
            external: memory.external,
        }
    }
}

/// What js/fleet.js counted in the fleet's recent recycles. `use_nullable`: the optional
/// figures are given as `null` (a plain optional field would refuse null).
#[napi(object, use_nullable = true)]
pub struct StormInput {
    pub fleet: String,
    pub recycles: f64,
    pub threshold: f64,
    pub window_ms: f64,
    /// `{ reason: count }`
    #[napi(ts_type = "Record<string, number>")]
    pub reasons: Value,
    /// `{ host: count }`
    #[napi(ts_type = "Record<string, number>")]
    pub hosts: Value,
    pub median_uptime_ms: Option<f64>,
    /// The fleet gap while the storm lasts, when FLEET_STORM_GAP widens it.
    pub gap_ms: Option<f64>,
}

#[napi(object)]
pub struct StartInput {
    /// `SELF_RECYCLE_*` variables, without the prefix.
    pub env: HashMap<String, String>,
    /// Options by camelCase name, values as strings.
    pub options: HashMap<String, String>,
    /// `process.uptime()` in milliseconds.
    pub uptime_ms: f64,
    pub memory: MemoryUsageInput,
    /// Only when the native heap probe is refused (or the tests force the fallback).
    pub heap: Option<HeapStatisticsInput>,
    /// `--max-semi-space-size` in MiB (or V8's default for its major): the young generation
    /// is three of them, and `heap_size_limit` minus that is the old-space limit...
    pub semi_space_mib: f64,
    /// ...unless `--max-old-space-size` says it outright.
    pub old_space_mib: Option<f64>,
    /// Whether JS runs on the process's main thread; `None`: ask the OS (`gettid() == pid`).
    pub main_thread: Option<bool>,
    /// Skip the native V8 probe (tests of the fallback, odd runtimes).
    pub force_js_heap_probe: bool,
    /// A fleet client runs in JS (`fleet` option or FLEET_REDIS): automatic recycles ask
    /// it for a lease first.
    pub fleet: Option<bool>,
    /// Node runs with `--heapsnapshot-near-heap-limit`: its callback must stay in place.
    pub node_owns_near_heap_limit: bool,
    /// Node writes a diagnostic report on fatal errors (`--report-on-fatalerror`): its
    /// OOM handler must stay in place.
    pub node_reports_fatal_errors: bool,
    /// The process has an IPC channel to its parent (`process.send`): `RESTART=exec`
    /// would cut it.
    pub ipc_channel: Option<bool>,
    /// `{ node, v8, platform, arch }`, for the recycle report.
    pub versions: Value,
    /// `Date.now()` at start.
    pub started_epoch_ms: f64,
    /// systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as the process
    /// received them (JS removes them from its environment so children cannot notify).
    pub notify_socket: Option<String>,
    pub watchdog_usec: Option<String>,
    pub watchdog_pid: Option<String>,
}

impl From<&HeapStatisticsInput> for HeapFigures {
    fn from(stats: &HeapStatisticsInput) -> Self {
        HeapFigures {
            used: to_bytes(stats.used_heap_size),
            total: to_bytes(stats.total_heap_size),
            limit: to_bytes(stats.heap_size_limit),
            external: stats.external_memory.map_or(0, to_bytes),
        }
    }
}

impl From<StormInput> for Storm {
    fn from(storm: StormInput) -> Self {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Storm {
            fleet: storm.fleet,
            recycles: to_bytes(storm.recycles),
            threshold: to_bytes(storm.threshold),
            window_ms: to_bytes(storm.window_ms),
            reasons: object(storm.reasons),
            hosts: object(storm.hosts),
            median_uptime_ms: storm.median_uptime_ms.map(to_bytes),
            gap_ms: storm.gap_ms.map(to_bytes),
        }
    }
}

/// How a fleet lease ask ended.
#[napi(string_enum = "lowercase")]
pub enum FleetStatus {
    /// The lease is held: the recycle goes ahead.
    Granted,
    /// Another member holds it (or the gap is not over): ask again later.
    Wait,
    /// Redis cannot answer: the recycle goes ahead alone.
    Unavailable,
}

/// The fleet client's answer to a lease ask.
#[napi(object, use_nullable = true)]
pub struct FleetAnswerInput {
    pub status: FleetStatus,
    /// Why (`wait`, `unavailable`): said in the events; `null` for `granted`.
    pub why: Option<String>,
}

impl From<FleetAnswerInput> for FleetAnswer {
    fn from(answer: FleetAnswerInput) -> Self {
        let why = answer.why.unwrap_or_default();
        match answer.status {
            FleetStatus::Granted => FleetAnswer::Granted,
            FleetStatus::Wait => FleetAnswer::Wait(why),
            FleetStatus::Unavailable => FleetAnswer::Unavailable(why),
        }
    }
}

/// A `warning` about the fleet that js/fleet.js found (a mismatch, a refusal).
#[napi(object)]
pub struct FleetWarningInput {
    pub fleet: String,
    /// What kind: `mismatch`, `refused`...
    pub code: String,
    pub reason: String,
    pub detail: Option<Value>,
}

impl From<FleetWarningInput> for Event {
    fn from(warning: FleetWarningInput) -> Self {
        Event::Warning {
            fleet: warning.fleet,
            code: warning.code,
            reason: warning.reason,
            detail: warning.detail.unwrap_or(Value::Null),
        }
    }
}

/// Tracked work in flight, for the predicted drain time.
#[napi(object)]
pub struct TrackedWorkInput {
    /// The 90th percentile of recent job durations, ms.
    pub p90_ms: f64,
    /// When the youngest job in flight started (epoch ms).
    pub youngest_started_ms: f64,
    /// More than one job is in flight.
    pub concurrent: bool,
}

impl From<TrackedWorkInput> for (u64, u64, bool) {
    fn from(work: TrackedWorkInput) -> Self {
        (
            to_bytes(work.p90_ms),
            to_bytes(work.youngest_started_ms),
            work.concurrent,
        )
    }
}

/// What the drain starts with.
#[napi(object)]
pub struct DrainStartInput {
    /// Drain hooks registered.
    pub hooks: u32,
    /// Tracked work in flight.
    pub in_flight: u32,
}

impl From<DrainStartInput> for DrainPhase {
    fn from(start: DrainStartInput) -> Self {
        DrainPhase::Start {
            hooks: start.hooks,
            in_flight: start.in_flight,
            left_ms: 0,
        }
    }
}

/// How the drain ended.
#[napi(object)]
pub struct DrainEndInput {
    /// Tracked work still in flight.
    pub in_flight: u32,
    /// Every hook finished and no work is left, before the deadline.
    pub drained: bool,
    /// The hooks' errors, as messages.
    pub errors: Vec<String>,
}

impl From<DrainEndInput> for DrainPhase {
    fn from(end: DrainEndInput) -> Self {
        DrainPhase::End {
            in_flight: end.in_flight,
            drained: end.drained,
            errors: end.errors,
        }
    }
}

/// How JS leaves: what `finish` records in the `exit` event.
#[napi(object, use_nullable = true)]
pub struct FinishInput {
    /// Every hook finished and no work is left, before the deadline.
    pub drained: bool,
    /// The heap snapshot written before leaving (`{ path }` or `{ error }`), if any.
    pub heap_snapshot: Option<Value>,
}

/// A file written beside the recycle report.
#[napi(object)]
pub struct BesideReportInput {
    /// The file's extension: letters and digits only (`heapprofile`).
    pub extension: String,
    pub text: String,
}

/// A file extension checked: ASCII letters and digits, nothing that could leave the
/// report's directory.
pub struct Extension(pub String);

impl TryFrom<&BesideReportInput> for Extension {
    type Error = napi::Error;

    fn try_from(file: &BesideReportInput) -> napi::Result<Self> {
        let extension = &file.extension;
        if extension.is_empty() || !extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "writeBesideReport: extension {extension:?} is not a file extension (ASCII letters and digits)"
            )));
        }
        Ok(Extension(extension.clone()))
    }
}

/// Which threads a `once()` key is shared by.
#[napi(string_enum = "lowercase")]
pub enum GuardScope {
    /// Each thread initializes its own value (the default).
    Thread,
    /// One thread only: another thread's `once()` on the key is refused.
    Process,
}

/// What one initialization cost (the JS side measures it around the factory).
#[napi(object)]
pub struct InitCostInput {
    pub duration_ms: f64,
    /// `process.memoryUsage().heapUsed` after minus before (may be negative).
    pub heap_delta: f64,
    /// RSS after minus before (may be negative).
    pub rss_delta: f64,
}

/// A finite number, else 0 (NaN and infinities from JS never reach the registry's sums).
fn finite(value: f64) -> f64 {
    if value.is_finite() {
        value
    } else {
        0.0
    }
}

impl From<&InitCostInput> for InitCost {
    fn from(cost: &InitCostInput) -> Self {
        InitCost {
            duration_ms: finite(cost.duration_ms).max(0.0),
            // `as` saturates: a huge figure cannot wrap.
            heap_delta: finite(cost.heap_delta) as i64,
            rss_delta: finite(cost.rss_delta) as i64,
        }
    }
}

/// How a guarded initialization ended.
#[napi(object)]
pub struct InitEndInput {
    pub key: String,
    /// The factory returned (or its promise resolved); `false`: it threw or rejected.
    pub succeeded: bool,
    pub cost: InitCostInput,
}

/// A re-initialization attempt on an initialized key.
#[napi(object)]
pub struct ReinitAttemptInput {
    pub key: String,
    /// The caller's frame (`loadConfig (file:1:2)`).
    pub call_site: String,
}

/// The `reinit` event's facts (the guard counts them; JS adds its stack and heap).
#[napi(object)]
pub struct ReinitEventInput {
    pub key: String,
    pub attempts: f64,
    /// Attempts from this call site.
    pub from_site: f64,
    /// `once()` returned the cached value; `trackInit()` built a new one.
    pub cached: bool,
    pub call_site: String,
    pub stack: String,
    /// `process.uptime()` in milliseconds.
    pub uptime_ms: f64,
    pub heap_used: f64,
    pub heap_limit: f64,
}

impl ReinitEventInput {
    /// The event and the envelope it is written in (`rss`: read now).
    pub fn into_event(self, rss: u64) -> (Event, Envelope) {
        let envelope = Envelope {
            uptime_ms: to_bytes(self.uptime_ms),
            rss,
            heap_used: to_bytes(self.heap_used),
            heap_limit: to_bytes(self.heap_limit),
            generation: None,
        };
        let event = Event::Reinit {
            key: self.key,
            attempts: to_bytes(self.attempts),
            from_site: to_bytes(self.from_site),
            cached: self.cached,
            call_site: self.call_site,
            stack: self.stack,
        };
        (event, envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(duration_ms: f64, heap_delta: f64, rss_delta: f64) -> InitCost {
        InitCost::from(&InitCostInput {
            duration_ms,
            heap_delta,
            rss_delta,
        })
    }

    #[test]
    fn init_costs_keep_signs_and_drop_what_is_not_a_number() {
        let kept = cost(12.5, -4096.0, 8192.0);
        assert_eq!(
            (kept.duration_ms, kept.heap_delta, kept.rss_delta),
            (12.5, -4096, 8192)
        );
        let odd = cost(f64::NAN, f64::INFINITY, f64::NEG_INFINITY);
        assert_eq!(
            (odd.duration_ms, odd.heap_delta, odd.rss_delta),
            (0.0, 0, 0)
        );
        assert_eq!(cost(-3.0, 1e300, -1e300).heap_delta, i64::MAX);
        assert_eq!(cost(-3.0, 1e300, -1e300).rss_delta, i64::MIN);
        assert_eq!(cost(-3.0, 0.0, 0.0).duration_ms, 0.0);
    }

    #[test]
    fn a_fleet_answer_keeps_why_only_where_it_says_something() {
        let answer = |status, why: Option<&str>| {
            FleetAnswer::from(FleetAnswerInput {
                status,
                why: why.map(str::to_string),
            })
        };
        assert_eq!(
            answer(FleetStatus::Granted, Some("x")),
            FleetAnswer::Granted
        );
        assert_eq!(
            answer(FleetStatus::Wait, Some("held by b")),
            FleetAnswer::Wait("held by b".into())
        );
        assert_eq!(
            answer(FleetStatus::Unavailable, None),
            FleetAnswer::Unavailable(String::new())
        );
    }

    #[test]
    fn extensions_are_letters_and_digits_only() {
        let check = |extension: &str| {
            Extension::try_from(&BesideReportInput {
                extension: extension.to_string(),
                text: String::new(),
            })
            .map(|Extension(e)| e)
            .map_err(|e| e.reason)
        };
        assert_eq!(check("heapprofile"), Ok("heapprofile".to_string()));
        for bad in ["", "../x", "a.b", "a/b", "é", "json\0"] {
            let error = check(bad).expect_err(bad);
            assert!(error.contains(&format!("{bad:?}")), "{error}");
            assert!(error.contains("ASCII letters and digits"), "{error}");
        }
    }

    #[test]
    fn tracked_work_and_heap_figures_clamp_to_whole_non_negative_numbers() {
        let work: (u64, u64, bool) = TrackedWorkInput {
            p90_ms: 1500.7,
            youngest_started_ms: -1.0,
            concurrent: true,
        }
        .into();
        assert_eq!(work, (1500, 0, true));
        let figures = HeapFigures::from(&HeapStatisticsInput {
            total_heap_size: 2048.0,
            used_heap_size: f64::NAN,
            heap_size_limit: 4096.0,
            external_memory: None,
        });
        assert_eq!(
            (figures.used, figures.total, figures.limit, figures.external),
            (0, 2048, 4096, 0)
        );
    }
}
