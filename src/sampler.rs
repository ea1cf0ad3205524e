//! The background thread and what it reads each tick: a named thread that sleeps
//! interruptibly (shutdown flag and wake-up in the same mutex as the condvar), and the
//! sample source combining the statm probe with the heap cell.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::policy::Sample;
use crate::probe::heap_cell::HeapCell;
use crate::probe::procfs::{self, Resident};
use crate::probe::v8::Isolate;

/// Where samples come from. `isolate` is set when the native V8 probe validated: the
/// sampler then asks the JS thread for fresh heap figures through an interrupt.
pub struct SampleSource {
    heap: &'static HeapCell,
    isolate: Option<Isolate>,
    origin: Instant,
    /// Process uptime when `origin` was taken.
    uptime_at_origin_ms: u64,
}

impl SampleSource {
    pub fn new(
        heap: &'static HeapCell,
        isolate: Option<Isolate>,
        uptime_at_origin_ms: u64,
    ) -> Self {
        SampleSource {
            heap,
            isolate,
            origin: Instant::now(),
            uptime_at_origin_ms,
        }
    }

    pub fn has_rss(&self) -> bool {
        procfs::available()
    }

    pub fn uptime_ms(&self) -> u64 {
        self.uptime_at_origin_ms + self.origin.elapsed().as_millis() as u64
    }

    pub fn heap(&self) -> &'static HeapCell {
        self.heap
    }

    pub fn resident(&self) -> Option<Resident> {
        procfs::resident()
    }

    /// Takes a sample. Heap figures are the latest the JS thread recorded; a refresh is
    /// requested for the next tick (an interrupt is served within microseconds while JS
    /// runs, and the heap cannot grow while it does not).
    pub fn take(&self, jobs_done: u64, previous: &Sample) -> Sample {
        if let Some(isolate) = self.isolate {
            self.heap.request_refresh(isolate);
        }
        let resident = self.resident();
        let heap = self.heap.figures().unwrap_or_default();
        Sample {
            uptime_ms: self.uptime_ms(),
            rss: resident.map_or(previous.rss, |r| r.rss),
            rss_anon: resident.map_or(previous.rss_anon, |r| r.anon),
            heap_used: heap.used,
            heap_total: heap.total,
            heap_limit: heap.limit,
            external: heap.external,
            jobs_done,
        }
    }
}

/// The last samples, for `stats()` and the recycle report.
pub struct SampleRing {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl SampleRing {
    pub fn new(capacity: usize) -> Self {
        SampleRing {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    pub fn to_vec(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[derive(Default)]
struct Control {
    stop: bool,
    wake: bool,
}

struct Shared {
    control: Mutex<Control>,
    condvar: Condvar,
}

/// Wakes a `Ticker` from any thread (a new deadline must not wait for the next tick).
#[derive(Clone)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl Waker {
    pub fn wake(&self) {
        self.shared.control.lock().wake = true;
        self.shared.condvar.notify_all();
    }
}

/// A named thread calling `tick` until stopped; `tick` returns how long to sleep next.
pub struct Ticker {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn spawn<F>(name: &str, mut tick: F) -> std::io::Result<Ticker>
    where
        F: FnMut() -> Duration + Send + 'static,
    {
        let shared = Arc::new(Shared {
            control: Mutex::new(Control::default()),
            condvar: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut panicked = false;
                loop {
                    // A panic in a tick must not kill the host: say so once, keep sampling.
                    let sleep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut tick))
                        .unwrap_or_else(|_| {
                            if !panicked {
                                panicked = true;
                                report_panic();
                            }
                            Duration::from_secs(1)
                        });
                    let deadline = Instant::now() + sleep;
                    let mut control = thread_shared.control.lock();
                    loop {
                        if control.stop {
                            return;
                        }
                        if control.wake {
                            control.wake = false;
                            break;
                        }
                        // Spurious wake-ups loop back to the flag checks.
                        if thread_shared
                            .condvar
                            .wait_until(&mut control, deadline)
                            .timed_out()
                        {
                            break;
                        }
                    }
                }
            })?;
        Ok(Ticker {
            shared,
            handle: Some(handle),
        })
    }

    /// A handle that runs the next tick now instead of at the end of the sleep.
    pub fn waker(&self) -> Waker {
        Waker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops and joins. Idempotent. Must not be called from the ticker thread itself.
    pub fn stop(&mut self) {
        self.shared.control.lock().stop = true;
        self.shared.condvar.notify_all();
        if let Some(handle) = self.handle.take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// One line on stderr the first time a tick panics (the panic hook already printed the
/// panic itself, unless the app replaced it).
fn report_panic() {
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"self-recycle: a sampler tick panicked; sampling goes on (please report this with the panic message)\n",
    );
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ticks_wakes_and_stops() {
        let count = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&count);
        let mut ticker = Ticker::spawn("test-ticker", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Duration::from_secs(3600)
        })
        .expect("spawns");
        let started = Instant::now();
        while count.load(Ordering::SeqCst) < 1 {
            std::thread::yield_now();
        }
        ticker.waker().wake();
        while count.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        ticker.stop();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stop interrupts the sleep"
        );
        ticker.stop();
    }

    #[test]
    fn a_panicking_tick_does_not_end_the_thread() {
        let count = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&count);
        let mut ticker = Ticker::spawn("test-panic", move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first tick fails");
            }
            Duration::from_millis(1)
        })
        .expect("spawns");
        ticker.waker().wake();
        let started = Instant::now();
        while count.load(Ordering::SeqCst) < 3 && started.elapsed() < Duration::from_secs(5) {
            ticker.waker().wake();
            std::thread::yield_now();
        }
        ticker.stop();
        assert!(count.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn ring_keeps_the_last() {
        let mut ring = SampleRing::new(2);
        for i in 0..5 {
            ring.push(Sample {
                uptime_ms: i,
                ..Sample::default()
            });
        }
        assert_eq!(
            ring.to_vec()
                .iter()
                .map(|s| s.uptime_ms)
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(ring.latest().map(|s| s.uptime_ms), Some(4));
    }
}
