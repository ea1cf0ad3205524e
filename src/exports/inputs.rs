//! What JS passes in: `#[napi(object)]` structs, converted into the core's types here.

use std::collections::HashMap;

use napi_derive::napi;
use serde_json::Value;

use crate::probe::v8::JsMemoryUsage;

/// What `process.memoryUsage()` returned just before `start`: checked against the native
/// read of V8's statistics (without loading `node:v8`, ~1.6 ms at start).
#[napi(object)]
pub struct MemoryUsageInput {
    pub heap_total: f64,
    pub heap_used: f64,
    pub external: f64,
}

/// `v8.getHeapStatistics()`, given only when the native heap probe is refused (the JS
/// fallback then feeds the figures).
#[napi(object)]
pub struct HeapStatisticsInput {
    pub total_heap_size: f64,
    pub used_heap_size: f64,
    pub heap_size_limit: f64,
    pub external_memory: f64,
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

/// What js/fleet.js counted in the fleet's recent recycles.
#[napi(object)]
pub struct StormInput {
    pub fleet: String,
    pub recycles: f64,
    pub threshold: f64,
    pub window_ms: f64,
    /// `{ reason: count }`
    pub reasons: Value,
    /// `{ host: count }`
    pub hosts: Value,
    pub median_uptime_ms: Option<f64>,
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
