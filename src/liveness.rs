//! Is the event loop answering? The sampler thread sends a ping through the threadsafe
//! function; the loop serves it between callbacks, on the JS thread, and records a pong.
//! A loop stuck in synchronous code serves no ping (V8 interrupts would still run, so
//! they cannot tell), whatever JS timers say.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Liveness {
    origin: Instant,
    /// ms since `origin` (+1) when the unanswered ping was sent; 0 = none outstanding.
    outstanding_since: AtomicU64,
    /// ms since `origin` (+1) of the last pong; 0 = never.
    last_pong: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            outstanding_since: AtomicU64::new(0),
            last_pong: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Marks a ping as sent when none is outstanding; `true` means: send one now.
    pub fn ping_due(&self) -> bool {
        self.outstanding_since
            .compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The ping could not be sent (JS is gone): do not count it as unanswered.
    pub fn ping_failed(&self) {
        self.outstanding_since.store(0, Ordering::Release);
    }

    /// On the JS thread: the loop served the ping.
    pub fn pong(&self) {
        self.last_pong.store(self.now(), Ordering::Release);
        self.outstanding_since.store(0, Ordering::Release);
    }

    /// How long the outstanding ping has waited, if one is outstanding.
    pub fn unanswered_for(&self) -> Option<Duration> {
        match self.outstanding_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(self.now().saturating_sub(since))),
        }
    }

    /// The loop answered within `window` (the watchdog's condition).
    pub fn answered_within(&self, window: Duration) -> bool {
        match self.last_pong.load(Ordering::Acquire) {
            0 => false,
            at => self.now().saturating_sub(at) <= window.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ping_at_a_time() {
        let liveness = Liveness::default();
        assert!(liveness.ping_due());
        assert!(!liveness.ping_due(), "still outstanding");
        assert!(liveness.unanswered_for().is_some());
        assert!(!liveness.answered_within(Duration::from_secs(60)));
        liveness.pong();
        assert!(liveness.unanswered_for().is_none());
        assert!(liveness.answered_within(Duration::from_secs(60)));
        assert!(liveness.ping_due());
        liveness.ping_failed();
        assert!(liveness.unanswered_for().is_none());
    }

    #[test]
    fn an_unanswered_ping_ages() {
        let liveness = Liveness::default();
        assert!(liveness.ping_due());
        std::thread::sleep(Duration::from_millis(30));
        assert!(liveness
            .unanswered_for()
            .is_some_and(|d| d >= Duration::from_millis(25)));
    }
}
