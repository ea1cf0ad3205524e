//! V8's heap-limit hooks, on the main thread only: V8 keeps just the latest callback, and
//! installing one in a worker thread would replace Node's own handler (turning a catchable
//! ERR_WORKER_OUT_OF_MEMORY into a process abort).
//!
//! Near-heap-limit callback: first hit, grant bounded headroom and start an urgent
//! recycle; any later hit (the drain did not finish before the heap filled again), exit at
//! once with the configured code, before V8 can abort with "Reached heap limit".
//!
//! OOM handler: an allocation larger than the free heap (a big Map's rehash) fails with
//! "CALL_AND_RETRY_LAST" and no near-heap-limit call first. V8 aborts right after the
//! handler, so the handler records the reason and exits with the configured code.

use std::ffi::{c_char, c_void, CStr};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::probe::v8::{self, Isolate};

/// Decides what happens at a near-heap-limit hit or an OOM (the monitor implements it).
pub trait NearHeapHandler: Send + Sync {
    /// `hits` counts from 1; returns the new heap limit (`current` keeps it).
    fn on_near_heap_limit(&self, hits: u32, current: u64, initial: u64) -> u64;
    /// V8 cannot allocate: never returns (V8 would abort).
    fn on_oom(&self, location: &str, detail: Option<&str>) -> !;
}

struct Installed {
    handler: Arc<dyn NearHeapHandler>,
    isolate: Isolate,
    hits: u32,
}

/// At most one install per process (the main thread's isolate).
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// How this runtime passes the OOM handler's second argument, once it is installed.
static OOM_SIGNATURE: Mutex<Option<v8::OomSignature>> = Mutex::new(None);

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

/// Installs the OOM handler (it stays for the life of the process and acts like Node's
/// own when no recycler is installed); `Err` says why it is not in use.
pub fn install_oom_handler(isolate: Isolate) -> Result<(), String> {
    let mut signature = OOM_SIGNATURE.lock();
    if signature.is_some() {
        return Ok(());
    }
    // SAFETY: JS thread (napi call); the callback never returns into V8.
    *signature = unsafe { v8::set_oom_handler(isolate, on_oom) };
    signature.map(|_| ()).ok_or_else(|| {
        "v8::Isolate::SetOOMErrorHandler is not exported by this runtime".to_string()
    })
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

/// # Safety
/// Called by V8 on the JS thread from a failed allocation; `location` is a C string and
/// `second` is `const OOMDetails*` or `bool`, as `OOM_SIGNATURE` says.
unsafe extern "C" fn on_oom(location: *const c_char, second: usize) {
    let text = |pointer: *const c_char| {
        // SAFETY: V8 passes NUL-terminated strings or null.
        (!pointer.is_null()).then(|| {
            unsafe { CStr::from_ptr(pointer) }
                .to_string_lossy()
                .into_owned()
        })
    };
    let location = text(location).unwrap_or_else(|| "unknown".to_string());
    let detail = match *OOM_SIGNATURE.lock() {
        Some(v8::OomSignature::Details) if second != 0 => {
            // SAFETY: with this signature the second word is a valid `const OOMDetails*`.
            text(unsafe { (*(second as *const v8::OomDetails)).detail })
        }
        _ => None,
    };
    let handler = INSTALLED.lock().as_ref().map(|i| Arc::clone(&i.handler));
    if let Some(handler) = handler {
        // A panic must not unwind into V8; on_oom exits on success.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.on_oom(&location, detail.as_deref())
        }));
    }
    // No recycler (stopped): what Node's own handler prints, then V8's abort.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "FATAL ERROR: {location} Allocation failed - JavaScript heap out of memory"
    );
    std::process::abort()
}
