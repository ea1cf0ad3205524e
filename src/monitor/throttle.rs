//! Pure: a reading taken at most once per period, the last one kept in between. The
//! caller passes the instant, so tests need no clock.

use std::time::{Duration, Instant};

pub(super) struct Throttled<T> {
    every: Duration,
    /// When the last reading was taken, and what it gave (`None`: it failed).
    last: Option<(Instant, Option<T>)>,
}

impl<T: Clone> Throttled<T> {
    pub(super) fn new(every: Duration) -> Self {
        Throttled { every, last: None }
    }

    /// `read()`'s result when the last reading is `every` old at `now` (or there is none),
    /// else the last one again; `fresh` says which. A failed reading is kept too, so a
    /// missing file is not retried on every call.
    pub(super) fn get(&mut self, now: Instant, read: impl FnOnce() -> Option<T>) -> Reading<T> {
        match &self.last {
            Some((at, value)) if now.saturating_duration_since(*at) < self.every => Reading {
                value: value.clone(),
                fresh: false,
            },
            _ => {
                let value = read();
                self.last = Some((now, value.clone()));
                Reading { value, fresh: true }
            }
        }
    }
}

pub(super) struct Reading<T> {
    pub value: Option<T>,
    /// Read now, not kept from an earlier call.
    pub fresh: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(250);

    #[test]
    fn reads_at_most_once_per_period_and_keeps_the_last_reading() {
        let start = Instant::now();
        let mut throttled = Throttled::new(EVERY);
        let mut reads = 0;
        let mut read_at = |ms: u64| {
            let reading = throttled.get(start + Duration::from_millis(ms), || {
                reads += 1;
                Some(ms)
            });
            (reading.value, reading.fresh)
        };
        assert_eq!(read_at(0), (Some(0), true));
        // Every 25 ms (a tick near a limit): the first reading again, until 250 ms.
        for ms in (25..250).step_by(25) {
            assert_eq!(read_at(ms), (Some(0), false), "at {ms} ms");
        }
        assert_eq!(read_at(250), (Some(250), true));
        assert_eq!(read_at(499), (Some(250), false));
        assert_eq!(read_at(900), (Some(900), true));
        assert_eq!(reads, 3);
    }

    #[test]
    fn a_failed_reading_is_kept_for_the_period_too() {
        let start = Instant::now();
        let mut throttled: Throttled<u64> = Throttled::new(EVERY);
        let first = throttled.get(start, || None);
        assert!(first.fresh && first.value.is_none());
        let kept = throttled.get(start + Duration::from_millis(100), || Some(1));
        assert!(!kept.fresh && kept.value.is_none());
        let next = throttled.get(start + EVERY, || Some(2));
        assert!(next.fresh);
        assert_eq!(next.value, Some(2));
    }

    #[test]
    fn an_earlier_instant_keeps_the_reading() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut throttled = Throttled::new(EVERY);
        throttled.get(start, || Some(1));
        let earlier = throttled.get(start - Duration::from_millis(10), || Some(2));
        assert!(!earlier.fresh);
        assert_eq!(earlier.value, Some(1));
    }
}
