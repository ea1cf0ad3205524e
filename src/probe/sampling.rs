//! V8's sampling heap profiler through its exported C++ API (`dlsym`, like `v8.rs`).
//!
//! Why not `node:inspector`: the inspector starts the profiler with `kSamplingForceGC`, so
//! every `getSamplingProfile` runs a full mark-compact first (1.2 s on a 1.1 GiB heap,
//! measured). Read here, a profile costs what walking its tree costs.
//!
//! The profile is returned in the DevTools protocol's `SamplingHeapProfile` shape (what a
//! `.heapprofile` file holds), built from `v8::AllocationProfile`, whose layout is read
//! directly: `Node { Local<String> name, script_name; int script_id, start_position,
//! line_number, column_number; uint32 node_id; std::vector<Node*> children;
//! std::vector<Allocation> allocations }`, unchanged from V8 7 to 14. Everything read is
//! checked (the root is named `(root)`, vectors are ordered and sized in whole elements,
//! the tree is bounded) and any doubt is an error: the caller then uses the inspector.
//! Must run on the isolate's thread (a napi call), inside its handle scope.

use std::collections::HashSet;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, Ordering};

use once_cell::sync::Lazy;
use serde_json::{json, Map, Value};

/// The tree is at most `stack_depth` deep (we ask for 128) plus V8's synthetic roots.
const MAX_DEPTH: usize = 192;
/// More nodes than this is not a profile we read correctly.
const MAX_NODES: usize = 2_000_000;
/// Function names and URLs longer than this are cut (a data: URL, a minified name).
const MAX_STRING: usize = 1024;
/// The V8 majors whose `AllocationProfile` layout this module was checked against.
const KNOWN_V8_MAJORS: std::ops::RangeInclusive<u32> = 10..=14;

#[repr(C)]
struct RawVec {
    begin: *const u8,
    end: *const u8,
    capacity_end: *const u8,
}

#[repr(C)]
struct RawNode {
    name: *const c_void,
    script_name: *const c_void,
    script_id: c_int,
    start_position: c_int,
    line_number: c_int,
    column_number: c_int,
    node_id: u32,
    children: RawVec,
    allocations: RawVec,
}

#[repr(C)]
struct RawAllocation {
    size: usize,
    count: u32,
}

/// `AllocationProfile::Sample` up to V8 13.
#[repr(C)]
struct RawSample {
    node_id: u32,
    size: usize,
    count: u32,
    sample_id: u64,
}

/// `AllocationProfile::Sample` from V8 14: `bool is_live` appended.
#[repr(C)]
struct RawSampleV14 {
    sample: RawSample,
    is_live: bool,
}

type WriteUtf8 =
    unsafe extern "C" fn(*const c_void, *mut c_void, *mut u8, c_int, *mut c_int, c_int) -> c_int;
/// `WriteUtf8V2(isolate, buffer, capacity, flags, size_t* processed)` (V8 >= 13.x); a
/// trailing argument the callee does not declare is harmless in the SysV and AAPCS64 ABIs,
/// so one type covers the variant without `processed`.
type WriteUtf8V2 =
    unsafe extern "C" fn(*const c_void, *mut c_void, *mut u8, usize, c_int, *mut usize) -> usize;

struct Symbols {
    get_current: unsafe extern "C" fn() -> *mut c_void,
    get_heap_profiler: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    start: unsafe extern "C" fn(*mut c_void, u64, c_int, c_int) -> bool,
    stop: unsafe extern "C" fn(*mut c_void),
    get_profile: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    /// `Ok`: the old `WriteUtf8`; `Err`: `WriteUtf8V2`, preferred where it exists.
    write_utf8: Result<WriteUtf8, WriteUtf8V2>,
}

static SYMBOLS: Lazy<Result<Symbols, String>> = Lazy::new(|| {
    let missing = |name: &str| format!("symbol {name} not exported by this runtime");
    let write_utf8: Option<WriteUtf8> = resolve!(c"_ZNK2v86String9WriteUtf8EPNS_7IsolateEPciPii");
    let write_utf8_v2: Option<WriteUtf8V2> =
        resolve!(c"_ZNK2v86String11WriteUtf8V2EPNS_7IsolateEPcmiPm")
            .or_else(|| resolve!(c"_ZNK2v86String11WriteUtf8V2EPNS_7IsolateEPcmi"));
    Ok(Symbols {
        get_current: resolve!(c"_ZN2v87Isolate10GetCurrentEv")
            .ok_or_else(|| missing("v8::Isolate::GetCurrent"))?,
        get_heap_profiler: resolve!(c"_ZN2v87Isolate15GetHeapProfilerEv")
            .ok_or_else(|| missing("v8::Isolate::GetHeapProfiler"))?,
        start: resolve!(c"_ZN2v812HeapProfiler25StartSamplingHeapProfilerEmiNS0_13SamplingFlagsE")
            .ok_or_else(|| missing("v8::HeapProfiler::StartSamplingHeapProfiler"))?,
        stop: resolve!(c"_ZN2v812HeapProfiler24StopSamplingHeapProfilerEv")
            .ok_or_else(|| missing("v8::HeapProfiler::StopSamplingHeapProfiler"))?,
        get_profile: resolve!(c"_ZN2v812HeapProfiler20GetAllocationProfileEv")
            .ok_or_else(|| missing("v8::HeapProfiler::GetAllocationProfile"))?,
        write_utf8: match (write_utf8, write_utf8_v2) {
            (_, Some(v2)) => Err(v2),
            (Some(v1), None) => Ok(v1),
            (None, None) => return Err(missing("v8::String::WriteUtf8")),
        },
    })
});

/// Why the native profiler cannot be used here, if it cannot.
pub fn unavailable(v8_version: &str) -> Option<String> {
    unavailable_for(v8_version)
        .inspect_err(|_| V8_MAJOR.store(0, Ordering::Relaxed))
        .err()
}

/// The V8 major `unavailable` accepted: which `Sample` layout `take` reads.
static V8_MAJOR: AtomicU32 = AtomicU32::new(0);

fn unavailable_for(v8_version: &str) -> Result<(), String> {
    SYMBOLS.as_ref().map_err(Clone::clone)?;
    let major = v8_version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if KNOWN_V8_MAJORS.contains(&major) => {
            V8_MAJOR.store(major, Ordering::Relaxed);
            Ok(())
        }
        _ => Err(format!(
            "V8 {v8_version}: its AllocationProfile layout is not known to this build"
        )),
    }
}

fn heap_profiler(symbols: &Symbols) -> Result<*mut c_void, String> {
    // SAFETY: called on the JS thread (a napi call), where the current isolate is ours.
    let isolate = unsafe { (symbols.get_current)() };
    if isolate.is_null() {
        return Err("no current isolate".to_string());
    }
    // SAFETY: a live isolate on its own thread.
    let profiler = unsafe { (symbols.get_heap_profiler)(isolate) };
    if profiler.is_null() {
        return Err("the isolate has no heap profiler".to_string());
    }
    Ok(profiler)
}

/// Starts sampling every `interval` bytes. `Ok(false)`: someone else (an inspector
/// client, DevTools) already runs the sampling profiler; it is left alone.
pub fn start(interval: u64, stack_depth: u32) -> Result<bool, String> {
    let symbols = SYMBOLS.as_ref().map_err(Clone::clone)?;
    let profiler = heap_profiler(symbols)?;
    // SAFETY: JS thread; flags 0 = kSamplingNoFlags (no forced GC per profile).
    Ok(unsafe { (symbols.start)(profiler, interval, stack_depth as c_int, 0) })
}

pub fn stop() {
    if let Ok(symbols) = SYMBOLS.as_ref() {
        if let Ok(profiler) = heap_profiler(symbols) {
            // SAFETY: JS thread; stopping a stopped profiler is a no-op in V8.
            unsafe { (symbols.stop)(profiler) };
        }
    }
}

/// The current profile as a DevTools `SamplingHeapProfile` (`{ head, samples }`), or why
/// not (`Ok(None)`: the profiler is not running, e.g. another client stopped it).
pub fn take() -> Result<Option<Value>, String> {
    let symbols = SYMBOLS.as_ref().map_err(Clone::clone)?;
    if V8_MAJOR.load(Ordering::Relaxed) == 0 {
        return Err(
            "the native profiler was not checked against this V8 (see unavailable)".to_string(),
        );
    }
    let profiler = heap_profiler(symbols)?;
    // SAFETY: JS thread; returns an owned AllocationProfile* (null when not sampling).
    let profile = unsafe { (symbols.get_profile)(profiler) };
    if profile.is_null() {
        return Ok(None);
    }
    let result = read_profile(symbols, profile);
    // SAFETY: `profile` is a live C++ object; its class declares GetRootNode(),
    // GetSamples(), then the virtual destructor, so Itanium vtable entry 3 is the deleting
    // destructor (`delete profile`).
    unsafe {
        let vtable = *(profile as *const *const usize);
        if !vtable.is_null() {
            let delete: unsafe extern "C" fn(*mut c_void) = std::mem::transmute(*vtable.add(3));
            delete(profile);
        }
    }
    result.map(Some)
}

fn read_profile(symbols: &Symbols, profile: *mut c_void) -> Result<Value, String> {
    // SAFETY: Itanium vtable of AllocationProfile, in declaration order: [0] GetRootNode(),
    // [1] GetSamples(), [2] complete destructor, [3] deleting destructor. Checked below
    // through the root's name.
    let (root, samples) = unsafe {
        let vtable = *(profile as *const *const usize);
        if vtable.is_null() {
            return Err("AllocationProfile without a vtable".to_string());
        }
        let get_root: unsafe extern "C" fn(*mut c_void) -> *const RawNode =
            std::mem::transmute(*vtable.add(0));
        let get_samples: unsafe extern "C" fn(*mut c_void) -> *const RawVec =
            std::mem::transmute(*vtable.add(1));
        (get_root(profile), get_samples(profile))
    };
    if root.is_null() {
        return Err("AllocationProfile without a root".to_string());
    }
    let isolate = {
        // SAFETY: as in heap_profiler.
        let isolate = unsafe { (symbols.get_current)() };
        if isolate.is_null() {
            return Err("no current isolate".to_string());
        }
        isolate
    };
    // SAFETY: `root` points into the live profile; its name is checked before anything
    // else of the layout is trusted.
    let root_name = unsafe { string(symbols, isolate, (*root).name) };
    if root_name != "(root)" {
        return Err(format!(
            "AllocationProfile layout not recognized (root named {root_name:?})"
        ));
    }
    let mut ids = HashSet::new();
    // SAFETY: as above; `node` checks every vector before reading it.
    let head = unsafe { node(symbols, isolate, root, 0, &mut ids)? };
    // SAFETY: `samples` points into the live profile (a std::vector<Sample>).
    let samples = unsafe { read_samples(samples, V8_MAJOR.load(Ordering::Relaxed))? };
    // V8 may add a sample while it builds the profile (translating the tree allocates
    // names on the heap): that sample's node is not in the tree. A few are left out; when
    // most samples name nodes the tree does not have, the Sample layout is not what we read.
    let total = samples.len();
    let samples: Vec<Value> = samples
        .into_iter()
        .filter(|s| ids.contains(&s["nodeId"].as_u64().unwrap_or(u64::MAX)))
        .collect();
    if !stray_samples_tolerable(total, total - samples.len()) {
        return Err(format!(
            "AllocationProfile layout not recognized ({} of {total} samples name nodes the tree does not have)",
            total - samples.len()
        ));
    }
    Ok(json!({ "head": head, "samples": samples }))
}

/// Samples of nodes outside the tree that a profile may have and still be trusted: the
/// few V8 adds while it builds the profile, never most of them.
fn stray_samples_tolerable(total: usize, stray: usize) -> bool {
    stray <= 16.max(total / 20)
}

/// A `std::vector<T>`'s elements, after checking it is one.
///
/// # Safety
/// `vec` must point to a live `std::vector<T>` (or to memory of that size).
unsafe fn elements<'a, T>(vec: *const RawVec, limit: usize) -> Result<&'a [T], String> {
    if vec.is_null() {
        return Err("null vector".to_string());
    }
    let RawVec {
        begin,
        end,
        capacity_end,
    } = &*vec;
    let (begin, end, capacity_end) = (*begin as usize, *end as usize, *capacity_end as usize);
    let size = std::mem::size_of::<T>();
    if begin == 0 && end == 0 {
        return Ok(&[]);
    }
    let sane = begin != 0
        && begin <= end
        && end <= capacity_end
        && (end - begin) % size == 0
        && begin % std::mem::align_of::<T>() == 0
        && (end - begin) / size <= limit;
    if !sane {
        return Err("AllocationProfile layout not recognized (a vector is malformed)".to_string());
    }
    Ok(std::slice::from_raw_parts(
        begin as *const T,
        (end - begin) / size,
    ))
}

/// # Safety
/// `node` must point to a live `AllocationProfile::Node`.
unsafe fn node(
    symbols: &Symbols,
    isolate: *mut c_void,
    node: *const RawNode,
    depth: usize,
    ids: &mut HashSet<u64>,
) -> Result<Value, String> {
    if depth > MAX_DEPTH || ids.len() >= MAX_NODES {
        return Err(
            "AllocationProfile layout not recognized (tree too deep or too big)".to_string(),
        );
    }
    let raw = &*node;
    ids.insert(u64::from(raw.node_id));
    let mut self_size: u64 = 0;
    for allocation in elements::<RawAllocation>(&raw.allocations, MAX_NODES)? {
        self_size = self_size.saturating_add(allocation.size as u64 * u64::from(allocation.count));
    }
    let mut children = Vec::new();
    for &child in elements::<*const RawNode>(&raw.children, MAX_NODES)? {
        if child.is_null() {
            return Err("AllocationProfile layout not recognized (a null child)".to_string());
        }
        children.push(self::node(symbols, isolate, child, depth + 1, ids)?);
    }
    let mut frame = Map::new();
    frame.insert(
        "functionName".into(),
        json!(string(symbols, isolate, raw.name)),
    );
    frame.insert("scriptId".into(), json!(raw.script_id.to_string()));
    frame.insert(
        "url".into(),
        json!(string(symbols, isolate, raw.script_name)),
    );
    // V8 counts lines and columns from 1 (0: unknown); the protocol from 0.
    frame.insert("lineNumber".into(), json!(raw.line_number - 1));
    frame.insert("columnNumber".into(), json!(raw.column_number - 1));
    Ok(json!({
        "callFrame": frame,
        "selfSize": self_size,
        "id": raw.node_id,
        "children": children,
    }))
}

/// # Safety
/// `samples` must point to a live `std::vector<AllocationProfile::Sample>` of V8 `major`.
unsafe fn read_samples(samples: *const RawVec, major: u32) -> Result<Vec<Value>, String> {
    let raw: Vec<&RawSample> = if major >= 14 {
        elements::<RawSampleV14>(samples, MAX_NODES * 8)?
            .iter()
            .map(|s| &s.sample)
            .collect()
    } else {
        elements::<RawSample>(samples, MAX_NODES * 8)?
            .iter()
            .collect()
    };
    Ok(raw
        .into_iter()
        .map(|s| {
            json!({
                "size": s.size as u64 * u64::from(s.count),
                "nodeId": s.node_id,
                "ordinal": s.sample_id,
            })
        })
        .collect())
}

/// A `Local<String>` as UTF-8, cut at `MAX_STRING` bytes; empty when null.
///
/// # Safety
/// `local` must be null or a live `Local<String>` of `isolate`, on its thread.
unsafe fn string(symbols: &Symbols, isolate: *mut c_void, local: *const c_void) -> String {
    if local.is_null() {
        return String::new();
    }
    let mut buffer = [0u8; MAX_STRING];
    let written = match symbols.write_utf8 {
        // Options 0: no flags; returns the bytes written, a NUL included when it fit.
        Ok(write) => write(
            local,
            isolate,
            buffer.as_mut_ptr(),
            MAX_STRING as c_int,
            std::ptr::null_mut(),
            0,
        )
        .max(0) as usize,
        // Flags 0: no NUL; returns the bytes written.
        Err(write_v2) => write_v2(
            local,
            isolate,
            buffer.as_mut_ptr(),
            MAX_STRING,
            0,
            std::ptr::null_mut(),
        ),
    }
    .min(MAX_STRING);
    let text = &buffer[..written];
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    String::from_utf8_lossy(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::stray_samples_tolerable;

    #[test]
    fn a_few_stray_samples_are_left_out_most_are_a_layout_error() {
        assert!(stray_samples_tolerable(0, 0));
        assert!(stray_samples_tolerable(10, 1));
        assert!(stray_samples_tolerable(1000, 16));
        assert!(stray_samples_tolerable(1000, 50));
        assert!(!stray_samples_tolerable(1000, 51));
        assert!(!stray_samples_tolerable(100, 17));
        assert!(!stray_samples_tolerable(2000, 1990));
    }
}
