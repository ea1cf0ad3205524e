//! The sampler-thread tick: a sample, the policy's verdicts on it, their events.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Monitor;
use crate::event::{self, Event, ExitCause, Recycle};
use crate::notify::{self, Notifier};
use crate::policy::{Reason, Sample, Verdict};

impl Monitor {
    /// Tracked work as JS sees it: (p90 duration, the youngest job's start, both ms, the
    /// start on the epoch clock; several jobs in flight), or `None` with nothing in flight.
    pub fn set_tracked_work(&self, work: Option<(u64, u64, bool)>) {
        self.sampling.lock().tracked_work = work;
    }

    /// How long a drain started now would take: what is left of the youngest tracked job at
    /// its usual (p90) duration. A worker running one job at a time decides at job
    /// boundaries: the decision must also cover the job that would start after this one,
    /// or that job would carry it over the limit before the next chance to decide.
    pub(super) fn expected_drain_ms(&self) -> Option<u64> {
        let (p90, youngest, concurrent) = self.sampling.lock().tracked_work?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = p90.saturating_sub(now.saturating_sub(youngest));
        Some(if concurrent { left } else { left + p90 })
    }

    /// The baseline and its share of each limit against `READY_MAX_BASELINE`.
    pub(super) fn baseline_event(&self, rss: u64, heap_used: u64) -> event::Baseline {
        let limits = self.limits();
        let rss_limit = limits.rss.or(limits.ceiling);
        let max_share = self.config.ready_max_baseline;
        let mut failures = Vec::new();
        for (name, value, limit) in [("rss", rss, rss_limit), ("heap", heap_used, limits.heap)] {
            if let Some(limit) = limit.filter(|l| *l > 0) {
                let share = value as f64 / limit as f64;
                if share > max_share {
                    failures.push(format!(
                        "{name} {} is {:.0}% of limit {} (at most {:.0}%)",
                        crate::units::format_size(value),
                        share * 100.0,
                        crate::units::format_size(limit),
                        max_share * 100.0
                    ));
                }
            }
        }
        event::Baseline {
            rss,
            heap_used,
            rss_limit,
            heap_limit: limits.heap,
            warmup_ms: self.config.warmup_ms,
            max_share,
            failures,
        }
    }

    /// One sampler-thread tick; returns how long to sleep.
    pub fn tick(&self) -> Duration {
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
        let mut sleep = Duration::from_millis(self.sampling.lock().policy.next_interval_ms());
        if let Some(every) = self.notifier.as_ref().and_then(Notifier::watchdog_every) {
            sleep = sleep.min(every / 2);
        }
        match self.recycle.lock().time_to_deadline(Instant::now()) {
            Some(left) => sleep.min(left.max(Duration::from_millis(1))),
            None => sleep,
        }
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

    pub(super) fn act_on(&self, verdict: Verdict) {
        match verdict {
            Verdict::Pressure {
                reason,
                value,
                limit,
            } => {
                self.sampling.lock().counters.pressure += 1;
                self.emit(&Event::Pressure {
                    reason,
                    value,
                    limit,
                });
            }
            Verdict::Misconfigured {
                reason,
                value,
                limit,
            } => {
                self.sampling.lock().counters.misconfigured += 1;
                self.emit(&Event::Misconfigured {
                    reason,
                    value,
                    limit,
                });
            }
            Verdict::Baseline { rss, heap_used } => {
                let baseline = self.baseline_event(rss, heap_used);
                if baseline.passed() && self.config.ready_on_baseline {
                    if let Some(notifier) = &self.notifier {
                        let status =
                            notify::status_line("self-recycle: baseline passed; worker ready");
                        notifier.send(&format!("READY=1\n{status}"));
                    }
                }
                self.emit(&Event::Baseline(Box::new(baseline)));
            }
            Verdict::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            } => self.emit(&Event::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            }),
            Verdict::Recycle {
                reason,
                value,
                limit,
                strikes,
                ceiling,
                prediction,
            } => {
                let mut recycle = Recycle::new(reason, value, limit, strikes);
                recycle.ceiling = ceiling;
                recycle.prediction = prediction;
                recycle.configured_limit = match reason {
                    Reason::Jobs => self.config.max_jobs,
                    Reason::Age => self.config.max_age_ms,
                    _ => None,
                };
                self.request_recycle(recycle);
            }
        }
    }
}
