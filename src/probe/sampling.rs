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
//! No virtual function of the profile is called before `layout` has confirmed the object's
//! vtable and each slot against the running binary's symbols; an unconfirmed profile is
//! leaked (never deleted through an unknown slot) and every later read refused, so
//! `confirm` at start turns the status into `unavailable: ...` (the inspector is used).
//! Must run on the isolate's thread (a napi call), inside its handle scope.

use std::collections::HashSet;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use once_cell::sync::{Lazy, OnceCell};
use serde_json::{json, Map, Value};

use super::layout::{self, Checks, Decision, Expected, Image};

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

/// Where `v8::internal::AllocationProfile`'s vtable and methods are in this process.
struct Layout {
    expected: Expected,
    image: Image,
    /// Tests only (`SELF_RECYCLE_TEST_FORCE_PROFILE_LAYOUT=mismatch-later`): what profiles
    /// after the first are checked against, as if V8 changed under a running reader.
    later: Option<Expected>,
}

/// A profile was taken (the first one is the start's `confirm`).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Found once (a file read on Node 24 and later, where only the static symbol table names
/// the class); every profile is checked against it before a slot is called.
static LAYOUT: Lazy<Result<Layout, String>> = Lazy::new(|| {
    find_layout().map_err(|why| format!("AllocationProfile layout not confirmed: {why}"))
});

/// Set when a profile was refused: it was leaked, and no other is read (or leaked).
static REFUSED: OnceCell<String> = OnceCell::new();

fn dynamic(name: &str) -> Option<usize> {
    let name = std::ffi::CString::new(name).ok()?;
    super::symbols::lookup(&name).map(|address| address as usize)
}

/// Where the shared object (or executable) holding `address` is loaded.
#[cfg(unix)]
fn object_base(address: usize) -> Result<usize, String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the loader's tables and fills `info` (zeroed, so every
    // pointer in it is null or set by dladdr).
    let found = unsafe { libc::dladdr(address as *const c_void, info.as_mut_ptr()) };
    // SAFETY: zero-initialised above; dladdr wrote plain pointers or left them null.
    let base = unsafe { info.assume_init() }.dli_fbase as usize;
    if found == 0 || base == 0 {
        return Err("the loader does not know which file V8 runs from".to_string());
    }
    Ok(base)
}

#[cfg(not(unix))]
fn object_base(_address: usize) -> Result<usize, String> {
    Err("V8's binary is checked on Linux only".to_string())
}

fn find_layout() -> Result<Layout, String> {
    let anchor =
        dynamic(layout::ANCHOR).ok_or_else(|| format!("{} is not exported", layout::ANCHOR))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    // The object's ELF header, not the anchor's text: Node may have remapped its text to
    // anonymous huge pages (--use-largepages).
    let image = Image::of(layout::parse_maps(&maps), object_base(anchor)?)
        .ok_or_else(|| "the file V8 runs from is not mapped under its name".to_string())?;
    // The dynamic symbol table first (Node 18-22 export the class's methods).
    let mut expected = Expected {
        vtable: dynamic(layout::VTABLE).map(|v| v.wrapping_add(layout::ADDRESS_POINT)),
        slots: std::array::from_fn(|i| dynamic(layout::SLOTS[i])),
    };
    if expected.slots[2].is_none() {
        expected.slots[2] = dynamic(layout::SLOT_2_ALIAS);
    }
    if expected.vtable.is_none() || expected.slots.iter().any(Option::is_none) {
        // The static one otherwise, shifted by the load bias the exported anchor gives
        // (`check` then finds the methods in the vtable, or the bias was wrong).
        let file = std::fs::File::open(&image.path)
            .map_err(|e| format!("cannot open {}: {e}", image.path))?;
        let mut names = vec![layout::ANCHOR, layout::VTABLE];
        names.extend(layout::SLOTS);
        names.push(layout::SLOT_2_ALIAS);
        let found = layout::find_symbols(&file, layout::NEEDLE, &names)?;
        let bias = layout::load_bias(&[(anchor, found[0])])?;
        let at = |index: usize| found[index].map(|s| (s.value as usize).wrapping_add(bias));
        expected.vtable = expected
            .vtable
            .or_else(|| at(1).map(|v| v.wrapping_add(layout::ADDRESS_POINT)));
        for slot in 0..layout::SLOTS.len() {
            expected.slots[slot] = expected.slots[slot].or_else(|| at(2 + slot));
        }
        expected.slots[2] = expected.slots[2].or_else(|| at(2 + layout::SLOTS.len()));
    }
    // Tests: as if V8 had declared another virtual function before the destructor, so slot
    // 3 would no longer be the deleting destructor (the vtable itself is not compared).
    let moved = |mut e: Expected| {
        e.slots[3] = e.slots[2];
        e.vtable = None;
        e
    };
    let forced = std::env::var("SELF_RECYCLE_TEST_FORCE_PROFILE_LAYOUT").ok();
    if forced.as_deref() == Some("mismatch") {
        expected = moved(expected);
    }
    let expected = expected.check(&image, |at| {
        // SAFETY: `check` calls this only for an aligned `at` with all VTABLE_WORDS words
        // inside a read-only mapping of the binary (its own segments stay mapped).
        unsafe { std::ptr::read(at as *const [usize; layout::VTABLE_WORDS]) }
    })?;
    let later = (forced.as_deref() == Some("mismatch-later")).then(|| moved(expected.clone()));
    Ok(Layout {
        expected,
        image,
        later,
    })
}

/// The checks of one profile, reading only its first word and, when that points into the
/// image's read-only data, the vtable words around it.
///
/// # Safety
/// `profile` must be a live object returned by `GetAllocationProfile` (at least one word).
unsafe fn inspect(expected: &Expected, image: &Image, profile: *mut c_void) -> Checks {
    if !(profile as usize).is_multiple_of(std::mem::align_of::<usize>()) {
        return Checks {
            vtable: layout::Check::Wrong,
            header: layout::Check::Unknown,
            slots: [layout::Check::Unknown; 4],
        };
    }
    // SAFETY: a live, aligned C++ object with virtual functions starts with its vtable
    // pointer (caller's contract); only the word is read, nothing is called.
    let vptr = unsafe { *(profile as *const usize) };
    layout::check_object(expected, image, vptr, |at| {
        // SAFETY: check_object calls this only for `at` aligned with all VTABLE_WORDS words
        // inside a read-only mapping of the binary (its own segments stay mapped).
        unsafe { std::ptr::read(at as *const [usize; layout::VTABLE_WORDS]) }
    })
}

/// Takes one profile now and checks its layout (JS thread, right after `start`): `Err` says
/// why the native profiler must not be used (the caller stops it and uses the inspector).
pub fn confirm() -> Result<(), String> {
    take().map(|_| ())
}

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
    let layout = LAYOUT.as_ref().map_err(Clone::clone)?;
    if let Some(why) = REFUSED.get() {
        return Err(why.clone());
    }
    let profiler = heap_profiler(symbols)?;
    // SAFETY: JS thread; returns an owned AllocationProfile* (null when not sampling).
    let profile = unsafe { (symbols.get_profile)(profiler) };
    if profile.is_null() {
        return Ok(None);
    }
    let expected = match (&layout.later, TAKEN.swap(true, Ordering::Relaxed)) {
        (Some(later), true) => later,
        _ => &layout.expected,
    };
    // SAFETY: `profile` is the live object V8 just returned.
    let checks = unsafe { inspect(expected, &layout.image, profile) };
    if let Decision::Leak(why) = layout::decide(&checks) {
        // Nothing of it is called: the object is leaked once, and no other one is read.
        let why = format!("AllocationProfile layout not confirmed: {why} (one profile leaked)");
        return Err(REFUSED.get_or_init(|| why).clone());
    }
    let result = read_profile(symbols, expected, profile);
    // SAFETY: `decide` confirmed the object's vtable slot 3 is the running binary's
    // `v8::internal::AllocationProfile::~AllocationProfile()` deleting destructor, which
    // destroys the object and frees it (`delete profile`); it is not used afterwards.
    unsafe {
        let delete: unsafe extern "C" fn(*mut c_void) =
            std::mem::transmute(confirmed(expected, 3)?);
        delete(profile);
    }
    result.map(Some)
}

/// The address of a slot `decide` confirmed (it refuses a profile whose called slot is not
/// known, so this is `Ok` for slots 0, 1 and 3 once a profile passed).
fn confirmed(expected: &Expected, slot: usize) -> Result<*const c_void, String> {
    expected.slots[slot]
        .map(|address| address as *const c_void)
        .ok_or_else(|| format!("vtable slot {slot} is not confirmed"))
}

/// `GetSamples()` returns a member of the profile: within this many bytes of it.
const MAX_PROFILE_SIZE: usize = 512;

fn read_profile(
    symbols: &Symbols,
    expected: &Expected,
    profile: *mut c_void,
) -> Result<Value, String> {
    let (get_root, get_samples) = (confirmed(expected, 0)?, confirmed(expected, 1)?);
    // SAFETY: `decide` confirmed the object's vtable slots 0 and 1 are the running binary's
    // `v8::internal::AllocationProfile::GetRootNode()` and `GetSamples()`: accessors that
    // take `this` and return a pointer into the live profile.
    let (root, samples) = unsafe {
        let get_root: unsafe extern "C" fn(*mut c_void) -> *const RawNode =
            std::mem::transmute(get_root);
        let get_samples: unsafe extern "C" fn(*mut c_void) -> *const RawVec =
            std::mem::transmute(get_samples);
        (get_root(profile), get_samples(profile))
    };
    let base = profile as usize;
    let in_object = (samples as usize)
        .checked_sub(base)
        .is_some_and(|offset| (std::mem::size_of::<usize>()..MAX_PROFILE_SIZE).contains(&offset));
    if !in_object || !(samples as usize).is_multiple_of(std::mem::align_of::<RawVec>()) {
        return Err(format!(
            "AllocationProfile layout not recognized (its samples at {:#x}, the object at {base:#x})",
            samples as usize
        ));
    }
    if root.is_null() || !(root as usize).is_multiple_of(std::mem::align_of::<RawNode>()) {
        return Err("AllocationProfile layout not recognized (no root, or unaligned)".to_string());
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
