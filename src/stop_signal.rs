//! Stop signals seen natively (`SIGNALS=on`), so a stop is bounded even when JavaScript
//! never runs again.
//!
//! Node hears SIGTERM/SIGINT through libuv: its handler writes to a pipe the event loop
//! reads, so a JS listener runs only when the loop turns. A worker stuck in a loop would
//! ignore every stop. Here a handler is chained in front of libuv's: it notes the delivery
//! (atomics only), wakes a small watcher thread through a pipe, then calls libuv's handler
//! as before. JS decides as long as it runs (its listener comes within milliseconds); when
//! it has not taken a delivery within `JS_GRACE` the watcher acts for it: a first signal
//! starts the stop drain natively (its deadline from the signal: the sampler exits at it if
//! JS never answers), a second one exits at once. The same signal again within `DUPLICATE_WINDOW` (GNU `timeout` signals the
//! child and its process group) is the same stop: it is swallowed, and JS never sees it.
//!
//! Linux only (the errno location and `pipe2` used here); elsewhere `arm` says so and the
//! JS listeners decide alone, as before.

#[cfg(not(target_os = "linux"))]
use std::sync::Weak;
use std::time::Instant;

/// What the watcher calls for each stop signal delivered (not for duplicates):
/// `delivery` counts them from 1 across both signals, `at` is when the watcher woke.
pub trait StopSignalHandler: Send + Sync {
    fn on_stop_signal(&self, name: &'static str, number: i32, delivery: u32, at: Instant);
}

/// A signal arriving again this soon after the same signal is the same stop.
pub const DUPLICATE_WINDOW_MS: u64 = 100;

#[cfg(target_os = "linux")]
pub use linux::{arm, disarm, expect};

#[cfg(not(target_os = "linux"))]
pub fn arm(_handler: Weak<dyn StopSignalHandler>) -> Result<(), String> {
    Err("stop signals are watched natively on Linux only".to_string())
}

#[cfg(not(target_os = "linux"))]
pub fn disarm() {}

#[cfg(not(target_os = "linux"))]
pub fn expect(_number: i32) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::raw::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{OnceLock, Weak};

    use parking_lot::Mutex;

    use super::{Instant, StopSignalHandler, DUPLICATE_WINDOW_MS};

    const WATCHED: [(c_int, &str); 2] = [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")];

    /// What the signal handler reads and writes: atomics only (async-signal-safe).
    struct Slot {
        /// libuv's handler (or whoever was there when armed) and its `sa_flags`.
        previous_handler: AtomicUsize,
        previous_flags: AtomicI32,
        /// Monotonic ns of the last delivery counted, for the duplicate window.
        last_ns: AtomicU64,
        /// Deliveries counted (duplicates and expected re-raises excluded).
        delivered: AtomicU32,
        /// Re-raises a library announced (Nest re-raises the signal after closing).
        expected: AtomicU32,
        armed: AtomicBool,
    }

    impl Slot {
        const fn new() -> Slot {
            Slot {
                previous_handler: AtomicUsize::new(0),
                previous_flags: AtomicI32::new(0),
                last_ns: AtomicU64::new(0),
                delivered: AtomicU32::new(0),
                expected: AtomicU32::new(0),
                armed: AtomicBool::new(false),
            }
        }
    }

    static SLOTS: [Slot; 2] = [Slot::new(), Slot::new()];
    /// The write end of the watcher's pipe (non-blocking), -1 before the watcher exists.
    static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
    static HANDLER: Mutex<Option<Weak<dyn StopSignalHandler>>> = Mutex::new(None);
    /// The full previous actions, to restore on disarm (never read by the signal handler).
    static PREVIOUS: Mutex<[Option<libc::sigaction>; 2]> = Mutex::new([None, None]);
    static WATCHER: OnceLock<Result<(), String>> = OnceLock::new();

    fn slot_index(signo: c_int) -> Option<usize> {
        WATCHED.iter().position(|(n, _)| *n == signo)
    }

    fn monotonic_ns() -> u64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the struct we own; it is async-signal-safe.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    }

    /// The signal handler: atomics, `write`, `clock_gettime` and the chained handler only.
    extern "C" fn on_signal(signo: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        // SAFETY: errno is thread-local; saved and restored so the interrupted code sees
        // its own value.
        let saved_errno = unsafe { *libc::__errno_location() };
        if let Some(slot) = slot_index(signo).map(|i| &SLOTS[i]) {
            let forward = if slot
                .expected
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                true // a library's announced re-raise: JS decides, nothing is counted
            } else {
                let now = monotonic_ns();
                let last = slot.last_ns.load(Ordering::Acquire);
                if last != 0 && now.saturating_sub(last) < DUPLICATE_WINDOW_MS * 1_000_000 {
                    false // the same stop twice: swallowed
                } else {
                    slot.last_ns.store(now, Ordering::Release);
                    slot.delivered.fetch_add(1, Ordering::AcqRel);
                    let fd = WAKE_FD.load(Ordering::Acquire);
                    if fd >= 0 {
                        let byte = 1u8;
                        // SAFETY: write(2) on our non-blocking pipe; a full pipe loses
                        // nothing (the watcher reads the counters, not the bytes).
                        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
                    }
                    true
                }
            };
            if forward {
                chain(slot, signo, info, context);
            }
        }
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved_errno };
    }

    fn our_handler() -> usize {
        on_signal as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize
    }

    /// Calls the handler that was installed before ours, the way the kernel would have.
    fn chain(slot: &Slot, signo: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        let handler = slot.previous_handler.load(Ordering::Acquire);
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == 0 {
            return; // never armed over these (see `arm`)
        }
        if slot.previous_flags.load(Ordering::Acquire) & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous action was installed with SA_SIGINFO, so its handler has
            // the three-argument signature; we pass what the kernel gave us.
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(handler) };
            f(signo, info, context);
        } else {
            // SAFETY: without SA_SIGINFO the handler takes the signal number only.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
            f(signo);
        }
    }

    /// The watcher thread and its pipe, once per process.
    fn start_watcher() -> Result<(), String> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe2 fills the two descriptors we pass room for.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
        }
        let [read_fd, write_fd] = fds;
        // SAFETY: fcntl on the descriptor just created.
        unsafe {
            let flags = libc::fcntl(write_fd, libc::F_GETFL);
            libc::fcntl(write_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        // Taken before any handler of ours is installed, so no delivery can fall between
        // this snapshot and the watcher's first read.
        let mut handled = [0u32; 2];
        for (i, slot) in SLOTS.iter().enumerate() {
            handled[i] = slot.delivered.load(Ordering::Acquire);
        }
        std::thread::Builder::new()
            .name("self-recycle-signals".to_string())
            .spawn(move || watch(read_fd, handled))
            .map_err(|e| format!("cannot start the signal watcher thread: {e}"))?;
        WAKE_FD.store(write_fd, Ordering::Release);
        Ok(())
    }

    /// Blocks on the pipe; each wake-up dispatches the deliveries counted since the last.
    fn watch(read_fd: c_int, mut handled: [u32; 2]) {
        let mut total = 0u32;
        let mut buffer = [0u8; 64];
        loop {
            // SAFETY: read(2) into a buffer we own.
            let n = unsafe { libc::read(read_fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return;
            }
            let woke = Instant::now();
            for (i, (number, name)) in WATCHED.iter().enumerate() {
                let delivered = SLOTS[i].delivered.load(Ordering::Acquire);
                while handled[i] != delivered {
                    handled[i] = handled[i].wrapping_add(1);
                    total = total.wrapping_add(1);
                    let handler = HANDLER.lock().as_ref().and_then(Weak::upgrade);
                    if let Some(handler) = handler {
                        // A panic must not end the watcher (nor cross into the host).
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handler.on_stop_signal(name, *number, total, woke)
                        }));
                    }
                }
            }
        }
    }

    /// Chains the native handler in front of the one JS installed (call right after
    /// `process.on(signal)`), and sends the stop signals to `handler`. Refused when a
    /// signal has no handler to chain to (JS did not listen).
    pub fn arm(handler: Weak<dyn StopSignalHandler>) -> Result<(), String> {
        WATCHER.get_or_init(start_watcher).clone()?;
        let mut previous = PREVIOUS.lock();
        for (i, (number, name)) in WATCHED.iter().enumerate() {
            // SAFETY: sigaction with a null new action only reads the current one.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            if unsafe { libc::sigaction(*number, std::ptr::null(), &mut current) } != 0 {
                return Err(format!(
                    "sigaction({name}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            let ours = our_handler();
            if current.sa_sigaction == ours {
                continue; // armed by an earlier start
            }
            if current.sa_sigaction == libc::SIG_DFL || current.sa_sigaction == libc::SIG_IGN {
                return Err(format!("{name} has no handler to chain to"));
            }
            let slot = &SLOTS[i];
            slot.previous_handler
                .store(current.sa_sigaction, Ordering::Release);
            slot.previous_flags
                .store(current.sa_flags, Ordering::Release);
            let mut ours_action = current;
            ours_action.sa_sigaction = ours;
            ours_action.sa_flags = (current.sa_flags | libc::SA_SIGINFO) & !libc::SA_RESETHAND;
            // SAFETY: installs a handler that only does async-signal-safe work.
            if unsafe { libc::sigaction(*number, &ours_action, std::ptr::null_mut()) } != 0 {
                return Err(format!(
                    "sigaction({name}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            previous[i] = Some(current);
            slot.armed.store(true, Ordering::Release);
        }
        *HANDLER.lock() = Some(handler);
        Ok(())
    }

    /// Puts back the handlers that were there before `arm`, where ours is still installed
    /// (libuv resets a signal to the default once its last JS listener is removed).
    pub fn disarm() {
        *HANDLER.lock() = None;
        let mut previous = PREVIOUS.lock();
        for (i, (number, _)) in WATCHED.iter().enumerate() {
            let Some(action) = previous[i].take() else {
                continue;
            };
            SLOTS[i].armed.store(false, Ordering::Release);
            // SAFETY: reads, then (if ours) restores the action saved at arm.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            if unsafe { libc::sigaction(*number, std::ptr::null(), &mut current) } == 0
                && current.sa_sigaction == our_handler()
            {
                unsafe { libc::sigaction(*number, &action, std::ptr::null_mut()) };
            }
        }
    }

    /// The next delivery of `number` is a library's re-raise of the stop under way.
    pub fn expect(number: c_int) {
        if let Some(i) = slot_index(number) {
            if SLOTS[i].armed.load(Ordering::Acquire) {
                SLOTS[i].expected.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}
