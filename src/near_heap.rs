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

use crate::monitor::Monitor;
use crate::probe::v8::{self, Isolate};

struct Installed {
    monitor: Arc<Monitor>,
    isolate: Isolate,
    hits: u32,
}

/// At most one install per process (the main thread's isolate).
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// Installs the callback; `Err` says why it is not in use.
pub fn install(isolate: Isolate, monitor: Arc<Monitor>) -> Result<(), String> {
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
        monitor,
        isolate,
        hits: 0,
    });
    Ok(())
}

/// Removes the callback if `monitor` installed it. The heap limit keeps any headroom
/// already granted (0 = keep the current limit).
pub fn uninstall(monitor: &Arc<Monitor>) {
    let mut installed = INSTALLED.lock();
    if installed
        .as_ref()
        .is_some_and(|i| Arc::ptr_eq(&i.monitor, monitor))
    {
        if let Some(previous) = installed.take() {
            // SAFETY: JS thread (napi stop or env cleanup hook).
            unsafe { v8::remove_near_heap_limit(previous.isolate, on_near_heap_limit, 0) };
        }
    }
}

/// Headroom to grant: a quarter of the current limit, 32 MiB to 256 MiB, and never more
/// than half of what the cgroup still allows. `None` when there is no room at all.
pub fn headroom(current_limit: u64, rss: u64, cgroup_limit: Option<u64>) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let wanted = (current_limit / 4).clamp(32 * MIB, 256 * MIB);
    let allowed = match cgroup_limit {
        Some(limit) => wanted.min(limit.saturating_sub(rss) / 2),
        None => wanted,
    };
    (allowed >= 4 * MIB).then_some(allowed)
}

/// # Safety
/// Called by V8 on the JS thread, inside a GC: no JS may run here.
unsafe extern "C" fn on_near_heap_limit(
    _data: *mut c_void,
    current: usize,
    initial: usize,
) -> usize {
    std::panic::catch_unwind(|| {
        let monitor = {
            let mut installed = INSTALLED.lock();
            let Some(entry) = installed.as_mut() else {
                return current;
            };
            entry.hits += 1;
            (Arc::clone(&entry.monitor), entry.hits)
        };
        let (monitor, hits) = monitor;
        monitor.on_near_heap_limit(hits, current as u64, initial as u64) as usize
    })
    .unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn headroom_is_bounded() {
        assert_eq!(headroom(64 * MIB, 100 * MIB, None), Some(32 * MIB));
        assert_eq!(headroom(400 * MIB, 100 * MIB, None), Some(100 * MIB));
        assert_eq!(headroom(4096 * MIB, 100 * MIB, None), Some(256 * MIB));
        assert_eq!(
            headroom(400 * MIB, 900 * MIB, Some(1000 * MIB)),
            Some(50 * MIB)
        );
        assert_eq!(headroom(400 * MIB, 999 * MIB, Some(1000 * MIB)), None);
    }
}
