//! The sampler-thread tick: a sample, the policy's verdicts on it, their events (what
//! each verdict becomes is verdicts.rs's, pure).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outputs::ready_message;
use super::verdicts::{self, Action, Counter};
use super::Monitor;
use crate::event::{Event, ExitCause};
use crate::notify::Notifier;
use crate::policy::{Sample, Verdict};

impl Monitor {
    /// Tracked work as JS sees it: (p90 duration, the youngest job's start, both ms, the
    /// start on the epoch clock; several jobs in flight), or `None` with nothing in flight.
    pub fn set_tracked_work(&self, work: Option<(u64, u64, bool)>) {
        self.sampling.lock().tracked_work = work;
    }

    /// How long a drain started now would take (verdicts.rs says how).
    pub(super) fn expected_drain_ms(&self) -> Option<u64> {
        let (p90, youngest, concurrent) = self.sampling.lock().tracked_work?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Some(verdicts::expected_drain_ms(p90, youngest, concurrent, now))
    }

    /// One sampler-thread tick; returns how long to sleep.
    pub fn tick(&self) -> Duration {
        // The recycle guard is held through the native exit on purpose: a JS `finish` or
        // `acknowledge` racing the deadline waits on it, so one side alone writes `exit`.
        if let Some(drain) = self.recycle.lock().overdue(Instant::now()).cloned() {
            if self.can_exit_process {
                self.exit_natively(&drain, ExitCause::NativeDeadline);
            }
        }
        let previous = self.latest();
        let sample = self
            .source
            .take(self.jobs_done.load(Ordering::Acquire), &previous);
        {
            let mut sampling = self.sampling.lock();
            sampling.ring.push(sample);
            sampling.counters.samples += 1;
        }
        if self.sample_events.load(Ordering::Acquire)
            && !self.sample_in_flight.swap(true, Ordering::AcqRel)
        {
            self.emit(&Event::Sample(sample));
        }
        if self.liveness.ping_due() && !self.sink.ping() {
            self.liveness.ping_failed();
        }
        self.feed_watchdog();
        if self.recycle.lock().is_running() {
            for verdict in self.observe(&sample) {
                self.act_on(verdict);
            }
            self.admit_pending(Some(&sample));
        }
        self.write_status_when_due();
        let interval_ms = self.sampling.lock().policy.next_interval_ms();
        let to_deadline = self.recycle.lock().time_to_deadline(Instant::now());
        verdicts::sleep_for(
            interval_ms,
            self.outputs
                .notifier
                .as_ref()
                .and_then(Notifier::watchdog_every),
            to_deadline,
        )
    }

    /// The policy's verdicts on this sample, the stall check and (on new major GCs) the
    /// leak slope.
    pub(super) fn observe(&self, sample: &Sample) -> Vec<Verdict> {
        let unanswered_ms = self.liveness.unanswered_for().map(|d| d.as_millis() as u64);
        let heap = self.source.heap();
        let major_gcs = heap.major_gcs();
        let expected_drain_ms = self.expected_drain_ms();
        let mut sampling = self.sampling.lock();
        sampling.policy.set_expected_drain(expected_drain_ms);
        let mut verdicts = sampling.policy.observe(sample);
        drop(sampling);
        verdicts.extend(self.observe_container(sample));
        let mut sampling = self.sampling.lock();
        verdicts.extend(
            sampling
                .policy
                .observe_stall(unanswered_ms, sample.uptime_ms),
        );
        if sampling.leak_checked_at_gc != major_gcs {
            sampling.leak_checked_at_gc = major_gcs;
            let series = heap.post_gc_series();
            verdicts.extend(sampling.policy.observe_leak(
                &series,
                heap.elapsed_ms(),
                sample.uptime_ms,
            ));
        }
        verdicts
    }

    /// Carries out what verdicts.rs made of a verdict.
    pub(super) fn act_on(&self, verdict: Verdict) {
        let limits = self.limits();
        match verdicts::action(verdict, &limits, &self.config) {
            Action::Emit(event, counter) => {
                match counter {
                    Some(Counter::Pressure) => self.sampling.lock().counters.pressure += 1,
                    Some(Counter::Misconfigured) => {
                        self.sampling.lock().counters.misconfigured += 1
                    }
                    None => {}
                }
                self.emit(&event);
            }
            Action::Baseline { baseline, ready } => {
                if let (true, Some(notifier)) = (ready, &self.outputs.notifier) {
                    notifier.send(&ready_message(
                        "self-recycle: baseline passed; worker ready",
                    ));
                }
                self.emit(&Event::Baseline(baseline));
            }
            Action::Recycle(recycle) => self.request_recycle(recycle),
        }
    }
}
