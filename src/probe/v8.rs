//! V8's exported C++ API, resolved with `dlsym` from the host binary at run time.
//!
//! Every symbol may be missing (other Node builds, Electron, Bun) and the `HeapStatistics`
//! layout may change (14 words on V8 11.3, 15 on V8 14.6): callers check `symbols()` and
//! `validate()` before relying on this, and fall back to `v8.getHeapStatistics()` in JS.
//! Heap figures must only be read on the isolate's own thread (a napi call, an interrupt
//! or a GC callback): V8 holds no lock for a reader on another thread.

use std::ffi::{c_int, c_void};

use once_cell::sync::Lazy;

/// `void (*)(v8::Isolate*, void*)`
pub type InterruptCallback = unsafe extern "C" fn(*mut c_void, *mut c_void);
/// `void (*)(v8::Isolate*, v8::GCType, v8::GCCallbackFlags, void*)`
pub type GcCallback = unsafe extern "C" fn(*mut c_void, c_int, c_int, *mut c_void);
/// `size_t (*)(void* data, size_t current_heap_limit, size_t initial_heap_limit)`
pub type NearHeapLimitCallback = unsafe extern "C" fn(*mut c_void, usize, usize) -> usize;

/// `void (*)(const char* location, const v8::OOMDetails& details)` (V8 >= 10.4), or
/// `void (*)(const char* location, bool is_heap_oom)` before: the second word is either.
pub type OomCallback = unsafe extern "C" fn(*const std::ffi::c_char, usize);

/// `v8::OOMDetails` (V8 >= 10.4): `{ bool is_heap_oom; const char* detail; }`.
#[repr(C)]
pub struct OomDetails {
    pub is_heap_oom: bool,
    pub detail: *const std::ffi::c_char,
}

/// Which `SetOOMErrorHandler` this runtime has: how to read the callback's second word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomSignature {
    /// A pointer to `OOMDetails`.
    Details,
    /// A bool `is_heap_oom`.
    Flag,
}

/// `v8::GCType::kGCTypeMarkSweepCompact`
pub const GC_TYPE_MARK_SWEEP_COMPACT: c_int = 1 << 2;

struct Symbols {
    get_current: unsafe extern "C" fn() -> *mut c_void,
    heap_statistics_ctor: unsafe extern "C" fn(*mut u64),
    get_heap_statistics: unsafe extern "C" fn(*mut c_void, *mut u64),
    request_interrupt: unsafe extern "C" fn(*mut c_void, InterruptCallback, *mut c_void),
    add_gc_epilogue: unsafe extern "C" fn(*mut c_void, GcCallback, *mut c_void, c_int),
    remove_gc_epilogue: unsafe extern "C" fn(*mut c_void, GcCallback, *mut c_void),
    add_near_heap_limit:
        Option<unsafe extern "C" fn(*mut c_void, NearHeapLimitCallback, *mut c_void)>,
    remove_near_heap_limit: Option<unsafe extern "C" fn(*mut c_void, NearHeapLimitCallback, usize)>,
    set_oom_handler: Option<(unsafe extern "C" fn(*mut c_void, OomCallback), OomSignature)>,
}

static SYMBOLS: Lazy<Result<Symbols, String>> = Lazy::new(|| {
    let missing = |name: &str| format!("symbol {name} not exported by this runtime");
    Ok(Symbols {
        get_current: resolve!(c"_ZN2v87Isolate10GetCurrentEv").ok_or_else(|| missing("v8::Isolate::GetCurrent"))?,
        heap_statistics_ctor: resolve!(c"_ZN2v814HeapStatisticsC1Ev")
            .ok_or_else(|| missing("v8::HeapStatistics::HeapStatistics"))?,
        get_heap_statistics: resolve!(c"_ZN2v87Isolate17GetHeapStatisticsEPNS_14HeapStatisticsE")
            .ok_or_else(|| missing("v8::Isolate::GetHeapStatistics"))?,
        request_interrupt: resolve!(c"_ZN2v87Isolate16RequestInterruptEPFvPS0_PvES2_")
            .ok_or_else(|| missing("v8::Isolate::RequestInterrupt"))?,
        add_gc_epilogue: resolve!(c"_ZN2v87Isolate21AddGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_S2_")
            .ok_or_else(|| missing("v8::Isolate::AddGCEpilogueCallback"))?,
        remove_gc_epilogue: resolve!(c"_ZN2v87Isolate24RemoveGCEpilogueCallbackEPFvPS0_NS_6GCTypeENS_15GCCallbackFlagsEPvES4_")
            .ok_or_else(|| missing("v8::Isolate::RemoveGCEpilogueCallback"))?,
        add_near_heap_limit: resolve!(c"_ZN2v87Isolate24AddNearHeapLimitCallbackEPFmPvmmES1_"),
        remove_near_heap_limit: resolve!(c"_ZN2v87Isolate27RemoveNearHeapLimitCallbackEPFmPvmmEm"),
        set_oom_handler: resolve!(c"_ZN2v87Isolate18SetOOMErrorHandlerEPFvPKcRKNS_10OOMDetailsEE")
            .map(|f| (f, OomSignature::Details))
            .or_else(|| resolve!(c"_ZN2v87Isolate18SetOOMErrorHandlerEPFvPKcbE").map(|f| (f, OomSignature::Flag))),
    })
});

fn symbols() -> Result<&'static Symbols, String> {
    SYMBOLS.as_ref().map_err(Clone::clone)
}

/// A `v8::Isolate*`. Only `request_interrupt` may be called from another thread (V8
/// documents it as thread-safe); everything else must run on the isolate's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolate(*mut c_void);

// SAFETY: the pointer is only dereferenced by V8, under the rules stated on `Isolate`.
unsafe impl Send for Isolate {}
unsafe impl Sync for Isolate {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapFigures {
    pub used: u64,
    pub total: u64,
    pub limit: u64,
    pub external: u64,
}

/// Word positions in `v8::HeapStatistics` (stable from V8 10.2 to 14.6; checked by `validate`).
const TOTAL_HEAP_SIZE: usize = 0;
const USED_HEAP_SIZE: usize = 4;
const HEAP_SIZE_LIMIT: usize = 5;
const EXTERNAL_MEMORY: usize = 7;
const NATIVE_CONTEXTS: usize = 10;
/// V8 writes 14 or 15 words today; a generous buffer shows how many it really writes.
const BUFFER_WORDS: usize = 64;
const MAX_EXPECTED_WORDS: usize = 32;
const SENTINEL: u64 = 0xA5A5_5A5A_DEAD_BEEF;

/// Raw statistics words; `None` when the layout is not plausible.
///
/// # Safety
/// On the isolate's JS thread (a napi call, an interrupt or a GC callback).
unsafe fn read_words(isolate: Isolate) -> Option<[u64; BUFFER_WORDS]> {
    let symbols = symbols().ok()?;
    let mut words = [SENTINEL; BUFFER_WORDS];
    // SAFETY: the buffer is 4x larger than any known HeapStatistics; the caller is on the
    // isolate's thread (module contract).
    unsafe {
        (symbols.heap_statistics_ctor)(words.as_mut_ptr());
        (symbols.get_heap_statistics)(isolate.0, words.as_mut_ptr());
    }
    let written = words
        .iter()
        .rposition(|w| *w != SENTINEL)
        .map_or(0, |i| i + 1);
    (14..=MAX_EXPECTED_WORDS)
        .contains(&written)
        .then_some(words)
}

/// The isolate running on this thread (null off the JS thread).
pub fn current_isolate() -> Result<Isolate, String> {
    let symbols = symbols()?;
    // SAFETY: GetCurrent has no preconditions.
    let isolate = unsafe { (symbols.get_current)() };
    if isolate.is_null() {
        Err("no V8 isolate on this thread".to_string())
    } else {
        Ok(Isolate(isolate))
    }
}

/// Reads heap figures.
///
/// # Safety
/// On the isolate's JS thread: V8 holds no lock for a reader on another thread.
pub unsafe fn read_heap(isolate: Isolate) -> Option<HeapFigures> {
    // SAFETY: the caller is on the JS thread.
    let words = unsafe { read_words(isolate) }?;
    Some(HeapFigures {
        used: words[USED_HEAP_SIZE],
        total: words[TOTAL_HEAP_SIZE],
        limit: words[HEAP_SIZE_LIMIT],
        external: words[EXTERNAL_MEMORY],
    })
}

/// What `process.memoryUsage()` said just before `validate` was called (it reads the same
/// V8 statistics, without loading `node:v8`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsMemoryUsage {
    pub heap_total: f64,
    pub heap_used: f64,
    pub external: f64,
}

/// Checks the native read against the JS one, field by field (heap figures may move a
/// little between the two reads), and the fields JS did not give for plausibility.
///
/// # Safety
/// On the isolate's JS thread.
pub unsafe fn validate(isolate: Isolate, js: &JsMemoryUsage) -> Result<HeapFigures, String> {
    const SLACK: f64 = 16.0 * 1024.0 * 1024.0;
    const MIB: u64 = 1 << 20;
    // SAFETY: the caller is on the JS thread.
    let words = unsafe { read_words(isolate) }
        .ok_or_else(|| "HeapStatistics layout not recognised (unexpected size)".to_string())?;
    let checks = [
        ("total_heap_size", TOTAL_HEAP_SIZE, js.heap_total),
        ("used_heap_size", USED_HEAP_SIZE, js.heap_used),
        ("external_memory", EXTERNAL_MEMORY, js.external),
    ];
    for (name, index, expected) in checks {
        let native = words[index] as f64;
        if (native - expected).abs() > SLACK {
            return Err(format!(
                "HeapStatistics.{name} reads {native} natively but {expected} from JS"
            ));
        }
    }
    let limit = words[HEAP_SIZE_LIMIT];
    if !(16 * MIB..=(1 << 40)).contains(&limit) || limit < words[TOTAL_HEAP_SIZE] {
        return Err(format!(
            "HeapStatistics.heap_size_limit reads {limit}: not plausible"
        ));
    }
    if !(1..=100_000).contains(&words[NATIVE_CONTEXTS]) {
        return Err(format!(
            "HeapStatistics.number_of_native_contexts reads {}: not plausible",
            words[NATIVE_CONTEXTS]
        ));
    }
    Ok(HeapFigures {
        used: words[USED_HEAP_SIZE],
        total: words[TOTAL_HEAP_SIZE],
        limit,
        external: words[EXTERNAL_MEMORY],
    })
}

/// Asks V8 to run `callback(isolate, data)` on the JS thread at the next interrupt check.
/// Thread-safe. Not served while the event loop sleeps with no JS running.
///
/// # Safety
/// The isolate must be alive for the whole call, and `data` valid whenever V8 runs it.
pub unsafe fn request_interrupt(
    isolate: Isolate,
    callback: InterruptCallback,
    data: *mut c_void,
) -> bool {
    match symbols() {
        Ok(symbols) => {
            // SAFETY: RequestInterrupt is documented as callable from any thread; the caller
            // guarantees the isolate outlives this call (the sampler joins before teardown).
            unsafe { (symbols.request_interrupt)(isolate.0, callback, data) };
            true
        }
        Err(_) => false,
    }
}

/// Registers a GC epilogue callback for mark-compact GCs only (scavenges are frequent and
/// the post-GC series only needs full collections).
///
/// # Safety
/// JS thread only; `data` must stay valid until removed.
pub unsafe fn add_gc_epilogue(isolate: Isolate, callback: GcCallback, data: *mut c_void) -> bool {
    match symbols() {
        Ok(symbols) => {
            // SAFETY: JS thread (module contract); `data` outlives the registration.
            unsafe {
                (symbols.add_gc_epilogue)(isolate.0, callback, data, GC_TYPE_MARK_SWEEP_COMPACT)
            };
            true
        }
        Err(_) => false,
    }
}

/// Removes a callback added with `add_gc_epilogue` (same callback and data).
///
/// # Safety
/// JS thread only.
pub unsafe fn remove_gc_epilogue(isolate: Isolate, callback: GcCallback, data: *mut c_void) {
    if let Ok(symbols) = symbols() {
        // SAFETY: JS thread (module contract).
        unsafe { (symbols.remove_gc_epilogue)(isolate.0, callback, data) };
    }
}

pub fn near_heap_limit_available() -> bool {
    symbols().is_ok_and(|s| s.add_near_heap_limit.is_some() && s.remove_near_heap_limit.is_some())
}

/// Installs a near-heap-limit callback. V8 keeps only the latest one.
///
/// # Safety
/// JS thread only; `data` must stay valid until removed.
pub unsafe fn add_near_heap_limit(
    isolate: Isolate,
    callback: NearHeapLimitCallback,
    data: *mut c_void,
) -> bool {
    match symbols().ok().and_then(|s| s.add_near_heap_limit) {
        Some(add) => {
            // SAFETY: JS thread (module contract); `data` is 'static.
            unsafe { add(isolate.0, callback, data) };
            true
        }
        None => false,
    }
}

/// Removes it; `heap_limit` is the limit to return to (0 keeps the current one).
///
/// # Safety
/// JS thread only.
pub unsafe fn remove_near_heap_limit(
    isolate: Isolate,
    callback: NearHeapLimitCallback,
    heap_limit: usize,
) {
    if let Some(remove) = symbols().ok().and_then(|s| s.remove_near_heap_limit) {
        // SAFETY: JS thread (module contract).
        unsafe { remove(isolate.0, callback, heap_limit) };
    }
}

/// Replaces V8's OOM handler (Node's prints `FATAL ERROR` and aborts). Returns how the
/// callback's second argument must be read, or `None` when the symbol is missing.
///
/// # Safety
/// JS thread only; the callback must never return into V8 (V8 aborts after it).
pub unsafe fn set_oom_handler(isolate: Isolate, callback: OomCallback) -> Option<OomSignature> {
    let (set, signature) = symbols().ok()?.set_oom_handler?;
    // SAFETY: JS thread (caller's contract); the callback has the resolved signature's ABI.
    unsafe { set(isolate.0, callback) };
    Some(signature)
}

impl Isolate {
    /// Wraps a pointer V8 handed to one of our callbacks.
    pub fn from_raw(pointer: *mut c_void) -> Isolate {
        Isolate(pointer)
    }
}
