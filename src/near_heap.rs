//! V8's near-heap-limit callback, on the main thread only: V8 keeps just the latest
//! callback, and installing one in a worker thread would replace Node's own handler
//! (turning a catchable ERR_WORKER_OUT_OF_MEMORY into a process abort).
//!
//! First hit: grant bounded headroom and start an urgent recycle. Any later hit (the drain
//! did not finish before the heap filled again): exit at once with the configured code,
//! before V8 can abort with "FATAL ERROR: Reached heap limit".

use std::ffi::c_void;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::probe::v8::{self, Isolate};

/// Decides what happens at a near-heap-limit hit (the monitor implements it).
pub trait NearHeapHandler: Send + Sync {
    /// `hits` counts from 1; returns the new heap limit (`current` keeps it).
    fn on_near_heap_limit(&self, hits: u32, current: u64, initial: u64) -> u64;
}

struct Installed {
    handler: Arc<dyn NearHeapHandler>,
    isolate: Isolate,
    hits: u32,
}

/// At most one install per process (the main thread's isolate).
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// Installs the callback; `Err` says why it is not in use.
pub fn install(isolate: Isolate, handler: Arc<dyn NearHeapHandler>) -> Result<(), String> {
    if !v8::near_heap_limit_available() {
        return Err("V8 near-heap-limit hooks are not exported by this runtime".to_string());
    }
    let mut installed = INSTALLED.lock();
    if let Some(previous) = installed.take() {
        // SAFETY: JS thread (napi call); same callback as installed.
        unsafe { v8::remove_near_heap_limit(previous.isolate, on_near_heap_limit, 0) };
    }
    // SAFETY: JS thread (napi call); the callback uses static state, not `data`.
    if !unsafe { v8::add_near_heap_limit(isolate, on_near_heap_limit, std::ptr::null_mut()) } {
        return Err("AddNearHeapLimitCallback is unavailable".to_string());
    }
    *installed = Some(Installed {
        handler,
        isolate,
        hits: 0,
    });
    Ok(())
}

/// Removes the callback if `handler` installed it. The heap limit keeps any headroom
/// already granted (0 = keep the current limit).
pub fn uninstall(handler: &Arc<dyn NearHeapHandler>) {
    let mut installed = INSTALLED.lock();
    if installed
        .as_ref()
        .is_some_and(|i| Arc::ptr_eq(&i.handler, handler))
    {
        if let Some(previous) = installed.take() {
            // SAFETY: JS thread (napi stop or env cleanup hook).
            unsafe { v8::remove_near_heap_limit(previous.isolate, on_near_heap_limit, 0) };
        }
    }
}

/// # Safety
/// Called by V8 on the JS thread, inside a GC: no JS may run here.
unsafe extern "C" fn on_near_heap_limit(
    _data: *mut c_void,
    current: usize,
    initial: usize,
) -> usize {
    std::panic::catch_unwind(|| {
        let (handler, hits) = {
            let mut installed = INSTALLED.lock();
            let Some(entry) = installed.as_mut() else {
                return current;
            };
            entry.hits += 1;
            (Arc::clone(&entry.handler), entry.hits)
        };
        handler.on_near_heap_limit(hits, current as u64, initial as u64) as usize
    })
    .unwrap_or(current)
}
