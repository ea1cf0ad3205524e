//! The latest V8 heap figures, written on the JS thread (napi call, interrupt, GC epilogue
//! or the JS fallback) and read lock-free by the sampler thread.

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::v8::{self, HeapFigures, Isolate};

/// Post-GC points kept for the leak slope (a few hours of major GCs).
const POST_GC_CAPACITY: usize = 4096;

pub struct HeapCell {
    origin: Instant,
    used: AtomicU64,
    total: AtomicU64,
    limit: AtomicU64,
    external: AtomicU64,
    /// Milliseconds since `origin` of the last update; 0 = never.
    updated_ms: AtomicU64,
    interrupt_pending: AtomicBool,
    major_gcs: AtomicU64,
    /// (ms since origin, used heap) after each mark-compact.
    post_gc: Mutex<VecDeque<(u64, u64)>>,
}

/// Cells of stopped recyclers, for the next `start()` to reuse.
static RELEASED: Mutex<Vec<&'static HeapCell>> = Mutex::new(Vec::new());

impl HeapCell {
    /// A cell that is never freed: V8 may hold its address in a pending interrupt after
    /// its recycler is gone. Released cells are reused, so start/stop cycles do not grow.
    pub fn acquire() -> &'static HeapCell {
        if let Some(cell) = RELEASED.lock().pop() {
            cell.reset();
            return cell;
        }
        Box::leak(Box::new(HeapCell {
            origin: Instant::now(),
            used: AtomicU64::new(0),
            total: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            external: AtomicU64::new(0),
            updated_ms: AtomicU64::new(0),
            interrupt_pending: AtomicBool::new(false),
            major_gcs: AtomicU64::new(0),
            post_gc: Mutex::new(VecDeque::new()),
        }))
    }

    /// Hands the cell back for reuse (its recycler stopped and removed its GC hook).
    pub fn release(&'static self) {
        RELEASED.lock().push(self);
    }

    fn reset(&self) {
        for figure in [
            &self.used,
            &self.total,
            &self.limit,
            &self.external,
            &self.updated_ms,
        ] {
            figure.store(0, Ordering::Release);
        }
        self.major_gcs.store(0, Ordering::Release);
        self.post_gc.lock().clear();
    }

    /// Milliseconds since the cell was created: the clock of the post-GC series.
    pub fn elapsed_ms(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64).max(1)
    }

    pub fn record(&self, figures: HeapFigures) {
        self.used.store(figures.used, Ordering::Relaxed);
        self.total.store(figures.total, Ordering::Relaxed);
        self.limit.store(figures.limit, Ordering::Relaxed);
        self.external.store(figures.external, Ordering::Relaxed);
        self.updated_ms.store(self.elapsed_ms(), Ordering::Release);
    }

    pub fn figures(&self) -> Option<HeapFigures> {
        if self.updated_ms.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(HeapFigures {
            used: self.used.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            limit: self.limit.load(Ordering::Relaxed),
            external: self.external.load(Ordering::Relaxed),
        })
    }

    pub fn age_ms(&self) -> Option<u64> {
        match self.updated_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(self.elapsed_ms().saturating_sub(at)),
        }
    }

    pub fn major_gcs(&self) -> u64 {
        self.major_gcs.load(Ordering::Relaxed)
    }

    /// The post-GC series as (`elapsed_ms` clock, used heap), oldest first.
    pub fn post_gc_series(&self) -> Vec<(u64, u64)> {
        self.post_gc.lock().iter().copied().collect()
    }

    fn as_data(&'static self) -> *mut c_void {
        self as *const HeapCell as *mut c_void
    }

    /// From the sampler thread: ask the JS thread for fresh figures, at most one request
    /// in flight (an idle loop does not serve interrupts; they must not pile up).
    pub fn request_refresh(&'static self, isolate: Isolate) {
        if self
            .interrupt_pending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            // SAFETY: the sampler is joined before the isolate goes away; the cell is 'static.
            && !unsafe { v8::request_interrupt(isolate, on_interrupt, self.as_data()) }
        {
            self.interrupt_pending.store(false, Ordering::Release);
        }
    }

    /// # Safety
    /// On the isolate's JS thread.
    pub unsafe fn install_gc_epilogue(&'static self, isolate: Isolate) -> bool {
        // SAFETY: the caller is on the JS thread; the cell is 'static.
        unsafe { v8::add_gc_epilogue(isolate, on_gc_epilogue, self.as_data()) }
    }

    /// # Safety
    /// On the isolate's JS thread.
    pub unsafe fn remove_gc_epilogue(&'static self, isolate: Isolate) {
        // SAFETY: the caller is on the JS thread.
        unsafe { v8::remove_gc_epilogue(isolate, on_gc_epilogue, self.as_data()) }
    }

    /// Post-GC point from the JS fallback (a `gc` performance entry).
    pub fn record_post_gc(&self, used: u64) {
        self.major_gcs.fetch_add(1, Ordering::Relaxed);
        let mut series = self.post_gc.lock();
        if series.len() == POST_GC_CAPACITY {
            series.pop_front();
        }
        series.push_back((self.elapsed_ms(), used));
    }
}

/// # Safety
/// Called by V8 on the JS thread with the `data` given to `request_interrupt`: a leaked,
/// never-freed `HeapCell`.
unsafe extern "C" fn on_interrupt(isolate: *mut c_void, data: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `data` is a `&'static HeapCell` (see `request_refresh`).
        let cell = unsafe { &*(data as *const HeapCell) };
        // SAFETY: V8 runs interrupts on the isolate's JS thread.
        if let Some(figures) = unsafe { v8::read_heap(Isolate::from_raw(isolate)) } {
            cell.record(figures);
        }
        cell.interrupt_pending.store(false, Ordering::Release);
    });
}

/// # Safety
/// Called by V8 on the JS thread after a GC, with no JS running, with the leaked cell.
unsafe extern "C" fn on_gc_epilogue(
    isolate: *mut c_void,
    gc_type: c_int,
    _flags: c_int,
    data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: as for `on_interrupt`.
        let cell = unsafe { &*(data as *const HeapCell) };
        // SAFETY: V8 runs GC callbacks on the isolate's JS thread.
        if let Some(figures) = unsafe { v8::read_heap(Isolate::from_raw(isolate)) } {
            cell.record(figures);
            if gc_type & v8::GC_TYPE_MARK_SWEEP_COMPACT != 0 {
                cell.record_post_gc(figures.used);
            }
        }
    });
}
