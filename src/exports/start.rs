//! What `new NativeRecycler` attaches to the runtime besides the Monitor: the heap probe,
//! V8's near-heap-limit and OOM hooks, the sampling heap profiler; and how they detach.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::Env;
use serde_json::Value;

use super::inputs::StartInput;
use crate::config::ConfigError;
use crate::monitor::Monitor;
use crate::near_heap::{self, NearHeapHandler};
use crate::probe;
use crate::probe::heap_cell::HeapCell;
use crate::probe::v8::{self, Isolate, JsMemoryUsage};
use crate::sampler::Ticker;
use crate::stop_signal;

/// `ERR_SELF_RECYCLE_CONFIG` with the variable, the value and what is accepted as
/// properties, thrown from the constructor itself.
pub(super) fn config_error(env: &Env, error: &ConfigError) -> Error {
    let thrown = (|| -> Result<()> {
        let mut object = env.create_error(Error::new(Status::InvalidArg, error.to_string()))?;
        object.set_named_property("name", "SelfRecycleConfigError")?;
        object.set_named_property("code", "ERR_SELF_RECYCLE_CONFIG")?;
        object.set_named_property("variable", error.variable.as_str())?;
        object.set_named_property("value", error.value.as_str())?;
        object.set_named_property("accepts", error.accepts.as_str())?;
        env.throw(object)
    })();
    match thrown {
        Ok(()) => Error::new(Status::PendingException, error.to_string()),
        Err(_) => Error::new(Status::InvalidArg, error.to_string()),
    }
}

/// Chooses the heap probe: native when every symbol resolves and the layout matches what
/// JS just read; otherwise the JS fallback, with the reason.
pub(super) fn choose_heap_probe(
    input: &StartInput,
    heap: &HeapCell,
) -> (Option<Isolate>, Option<String>) {
    if input.force_js_heap_probe {
        return (
            None,
            Some("native probe disabled by the caller".to_string()),
        );
    }
    // SAFETY: a napi constructor runs on the JS thread of this isolate.
    let checked = v8::current_isolate().and_then(|isolate| {
        unsafe { v8::validate(isolate, &JsMemoryUsage::from(&input.memory)) }.map(|f| (isolate, f))
    });
    match checked {
        Ok((isolate, figures)) => {
            heap.record(figures);
            (Some(isolate), None)
        }
        Err(reason) => (None, Some(reason)),
    }
}

/// Node's main JS thread is the process's initial thread; worker threads are not. Asking
/// the OS spares `require('node:worker_threads')` (~0.8 ms) at start.
pub(super) fn on_main_thread(input: &StartInput) -> bool {
    input.main_thread.unwrap_or_else(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            u32::try_from(tid).is_ok_and(|tid| tid == std::process::id())
        }
        #[cfg(not(target_os = "linux"))]
        {
            true
        }
    })
}

/// Installs the near-heap-limit callback when allowed; records why not otherwise.
pub(super) fn install_near_heap_limit(
    input: &StartInput,
    monitor: &Arc<Monitor>,
) -> Option<Arc<dyn NearHeapHandler>> {
    let refusal = if !monitor.config().near_heap_limit {
        Some("off (SELF_RECYCLE_NEAR_HEAP_LIMIT=off)".to_string())
    } else if !on_main_thread(input) {
        Some("off in worker threads (it would replace Node's own handler)".to_string())
    } else if input.node_owns_near_heap_limit {
        Some("off: --heapsnapshot-near-heap-limit owns V8's callback".to_string())
    } else {
        None
    };
    if let Some(reason) = refusal {
        monitor.set_near_heap_status(reason);
        return None;
    }
    let handler: Arc<dyn NearHeapHandler> = Arc::clone(monitor) as Arc<dyn NearHeapHandler>;
    let installed =
        v8::current_isolate().and_then(|isolate| near_heap::install(isolate, Arc::clone(&handler)));
    match installed {
        Ok(()) => {
            monitor.set_near_heap_status("on".to_string());
            let oom = if input.node_reports_fatal_errors {
                Err("off: --report-on-fatalerror owns V8's OOM handler".to_string())
            } else {
                v8::current_isolate().and_then(near_heap::install_oom_handler)
            };
            monitor.set_oom_status(match oom {
                Ok(()) => "on".to_string(),
                Err(reason) if reason.starts_with("off") => reason,
                Err(reason) => format!("off: {reason}"),
            });
            Some(handler)
        }
        Err(reason) => {
            monitor.set_near_heap_status(format!("off: {reason}"));
            None
        }
    }
}

/// What one started recycler attached to the runtime: the sampler thread and V8 hooks.
/// Detached on `stop()`, in the env cleanup hook and at process exit.
pub(super) struct Attachments {
    pub(super) ticker: Option<Ticker>,
    pub(super) near_heap: Option<Arc<dyn NearHeapHandler>>,
    pub(super) gc_isolate: Option<Isolate>,
    pub(super) heap: Option<&'static HeapCell>,
    /// We started V8's sampling heap profiler: stop it with the recycler.
    pub(super) profiling: bool,
    /// The native stop-signal handler is armed for this recycler.
    pub(super) stop_signals: bool,
}

impl Attachments {
    pub(super) fn detach(&mut self) {
        if std::mem::take(&mut self.stop_signals) {
            stop_signal::disarm();
        }
        if std::mem::take(&mut self.profiling) {
            // JS thread (napi call or env cleanup hook).
            probe::sampling::stop();
        }
        if let Some(mut ticker) = self.ticker.take() {
            ticker.stop();
        }
        if let (Some(isolate), Some(heap)) = (self.gc_isolate.take(), self.heap) {
            // SAFETY: detach runs on the JS thread (napi call or env cleanup hook).
            unsafe { heap.remove_gc_epilogue(isolate) };
        }
        if let Some(handler) = self.near_heap.take() {
            near_heap::uninstall(&handler);
        }
        if let Some(heap) = self.heap.take() {
            heap.release();
        }
    }
}

/// PROFILE=heap on the main thread: V8's sampling heap profiler, started natively. The
/// status says how sites are profiled; `unavailable: ...` tells JS to use the inspector.
pub(super) fn start_heap_profiler(
    monitor: &Monitor,
    input: &StartInput,
    main_thread: bool,
) -> (String, bool) {
    let config = monitor.config();
    if !config.profile {
        return ("off".to_string(), false);
    }
    if !main_thread {
        return (
            "off: worker thread (the main thread's recycler profiles)".to_string(),
            false,
        );
    }
    let v8_version = input
        .versions
        .get("v8")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(why) = probe::sampling::unavailable(v8_version) {
        return (format!("unavailable: {why}"), false);
    }
    match probe::sampling::start(config.profile_interval, PROFILE_STACK_DEPTH) {
        // One profile (a root, nothing sampled yet) is taken and its layout checked before
        // the native path is trusted; refused, the inspector runs the profiler instead.
        Ok(true) => match probe::sampling::confirm() {
            Ok(()) => ("native".to_string(), true),
            Err(why) => {
                probe::sampling::stop();
                (format!("unavailable: {why}"), false)
            }
        },
        Ok(false) => (
            "busy: another inspector client runs the sampling heap profiler; left alone"
                .to_string(),
            false,
        ),
        Err(why) => (format!("unavailable: {why}"), false),
    }
}

/// Frames kept per sample, counted from the allocation up: enough to reach the
/// application's frame under a framework's or a library's (V8 drops the outermost ones,
/// where the app's call would be). The cost is one stack walk per sample.
pub(super) const PROFILE_STACK_DEPTH: u32 = 128;

/// A number in [0, 1), different in each process (the jitter of its limits).
pub(super) fn random_unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
