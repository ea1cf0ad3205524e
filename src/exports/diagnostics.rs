//! Native reads for JS and `bench/`: heap-probe checks, probe costs, the sampling heap
//! profiler, available memory and RSS.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use super::inputs::MemoryUsageInput;
use super::invalid;
use crate::probe;
use crate::probe::procfs;
use crate::probe::v8::{self, Isolate, JsMemoryUsage};

/// `null` when the native heap probe reads what `process.memoryUsage()` says (JS then never
/// needs `node:v8`); otherwise why it cannot be used.
#[napi(catch_unwind)]
pub fn native_heap_probe_refusal(memory: MemoryUsageInput) -> Option<String> {
    // SAFETY: a napi call runs on the JS thread of this isolate.
    v8::current_isolate()
        .and_then(|isolate| unsafe { v8::validate(isolate, &JsMemoryUsage::from(&memory)) })
        .err()
}

#[napi(object, use_nullable = true)]
pub struct ProbeCost {
    /// Nanoseconds per `/proc/self/statm` read (kept fd, pread).
    pub rss_ns: f64,
    /// Nanoseconds per native V8 heap read; `null` when the native probe is unavailable.
    pub heap_ns: Option<f64>,
}

/// Diagnostics for `bench/`: the native cost of one RSS and one heap sample.
#[napi(catch_unwind)]
pub fn probe_cost(iterations: u32) -> ProbeCost {
    let iterations = iterations.max(1);
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(procfs::resident());
    }
    let rss_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    // SAFETY: a napi call runs on the JS thread of the current isolate.
    let readable = |isolate: &Isolate| unsafe { v8::read_heap(*isolate) }.is_some();
    let heap_ns = v8::current_isolate().ok().filter(readable).map(|isolate| {
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            // SAFETY: as above.
            std::hint::black_box(unsafe { v8::read_heap(isolate) });
        }
        started.elapsed().as_nanos() as f64 / f64::from(iterations)
    });
    ProbeCost { rss_ns, heap_ns }
}

#[napi(catch_unwind)]
pub fn heap_profile_stop() {
    probe::sampling::stop();
}

/// The sampling heap profile as a DevTools `SamplingHeapProfile`, or null when the
/// profiler is not running (another client stopped it).
#[napi(catch_unwind)]
pub fn heap_profile_take() -> Result<Option<Value>> {
    probe::sampling::take().map_err(invalid)
}

/// Memory still available (cgroup limit minus usage, or MemAvailable), if known.
#[napi(catch_unwind)]
pub fn available_memory() -> Option<f64> {
    probe::cgroup::available_memory().map(|b| b as f64)
}

/// Current RSS in bytes (0 where there is no procfs).
#[napi(catch_unwind)]
pub fn resident_bytes() -> f64 {
    procfs::resident().map_or(0.0, |r| r.rss as f64)
}
