//! Pure decisions: samples + limits -> verdicts. No threads, no I/O, no clock: the caller
//! passes the uptime in every sample, so unit tests drive it with synthetic sequences.

use crate::trend::{FloorHistory, Series};
use crate::units::Growth;

mod hard_limit;
mod leak;
mod near_heap;
pub use hard_limit::HardLimit;
pub use near_heap::{near_heap_action, NearHeapAction, NearHeapExit};

pub use crate::trend::theil_sen_slope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Rss,
    Heap,
    Growth,
    Leak,
    NearHeapLimit,
    /// V8 failed an allocation without a near-heap-limit warning (a large rehash).
    Oom,
    Jobs,
    Age,
    Stall,
    Manual,
    Signal,
    /// The memory cgroup's working set neared `CONTAINER_MAX` and this is its largest worker.
    Container,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rss => "rss",
            Reason::Heap => "heap",
            Reason::Growth => "growth",
            Reason::Leak => "leak",
            Reason::NearHeapLimit => "near-heap-limit",
            Reason::Oom => "oom",
            Reason::Jobs => "jobs",
            Reason::Age => "age",
            Reason::Stall => "stall",
            Reason::Manual => "manual",
            Reason::Signal => "signal",
            Reason::Container => "container",
        }
    }

    /// Whether the value is a byte count (for messages).
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            Reason::Rss
                | Reason::Heap
                | Reason::Growth
                | Reason::NearHeapLimit
                | Reason::Oom
                | Reason::Container
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    pub uptime_ms: u64,
    pub rss: u64,
    pub rss_anon: u64,
    pub heap_used: u64,
    pub heap_total: u64,
    pub heap_limit: u64,
    pub external: u64,
    pub jobs_done: u64,
}

/// Limits resolved at start: percentages already turned into bytes, jitter applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub rss: Option<u64>,
    /// Use RssAnon instead of RSS for the `rss` and `growth` limits.
    pub rss_anon: bool,
    /// The hard ceiling (95% of a cgroup limit): past it the OOM killer is near, so it
    /// recycles before `MIN_UPTIME` and even when `MAX_RSS` is suspended as misconfigured.
    /// Only a process already over it at start is spared (a restart would not help).
    pub ceiling: Option<u64>,
    pub heap: Option<u64>,
    pub growth: Option<Growth>,
    pub jobs: Option<u64>,
    pub age_ms: Option<u64>,
    pub strikes: u32,
    pub warmup_ms: u64,
    pub min_uptime_ms: u64,
    /// Recycle when the post-GC heap grows faster than this (bytes per minute).
    pub leak_slope_per_min: Option<f64>,
    pub leak_window_ms: u64,
    /// Recycle when the event loop has not answered for this long.
    pub stall_ms: Option<u64>,
    /// The sampling period far from every limit.
    pub interval_ms: u64,
    /// The sampling period near a limit (`None`: always `interval_ms`).
    pub fast_interval_ms: Option<u64>,
    /// Start the drain early enough that the projected value at its end stays under the limit.
    pub predict: bool,
}

/// A recycle decided ahead of the crossing: where the value would be when the drain ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub projected: u64,
    pub expected_drain_ms: u64,
    pub slope_per_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A soft threshold (80% of a limit) was crossed; once per crossing.
    Pressure {
        reason: Reason,
        value: u64,
        limit: u64,
    },
    /// The baseline is already over a limit: that limit is suspended to avoid a restart loop.
    Misconfigured {
        reason: Reason,
        value: u64,
        limit: u64,
    },
    /// Warm-up ended; growth is measured from here.
    Baseline { rss: u64, heap_used: u64 },
    Recycle {
        reason: Reason,
        value: u64,
        limit: u64,
        strikes: u32,
        /// Crossed the hard ceiling: no queueing behind siblings.
        ceiling: bool,
        /// Decided before the crossing, from the slope and the expected drain time.
        prediction: Option<Prediction>,
    },
    /// The post-GC heap grows faster than the threshold over the window.
    Leak {
        slope_per_min: f64,
        threshold_per_min: f64,
        window_ms: u64,
        points: usize,
    },
}

/// The share of a limit from which a worker is under pressure (a `pressure` event, fast
/// sampling; `stats().pressureAt` for JS); re-armed below `PRESSURE_REARM`.
pub const PRESSURE: f64 = 0.8;

/// The share of each limit in force a sample reached; `None`: the limit is not in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    pub rss: Option<f64>,
    pub heap: Option<f64>,
    pub growth: Option<f64>,
    pub ceiling: Option<f64>,
}

impl Shares {
    /// The highest of the RSS, heap and ceiling shares (what `drainHttp`'s shedding reads);
    /// 0 without limits.
    pub fn highest(&self) -> f64 {
        [self.rss, self.heap, self.ceiling]
            .into_iter()
            .flatten()
            .fold(0.0, f64::max)
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "rss": self.rss,
            "heap": self.heap,
            "growth": self.growth,
            "ceiling": self.ceiling,
        })
    }
}
const PRESSURE_REARM: f64 = 0.75;
/// A suspended (misconfigured) limit comes back once the value falls under this fraction.
const MISCONFIGURED_REARM: f64 = 0.9;

#[derive(Debug, Clone, Default)]
struct Gauge {
    strikes: u32,
    /// Consecutive samples whose projection crossed the limit.
    predicted_strikes: u32,
    pressure_reported: bool,
    suspended: bool,
    /// Already recycled (or, in a dry run, reported) for this crossing.
    fired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Baseline {
    pub rss: u64,
    pub heap_used: u64,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Policy {
    limits: Limits,
    rss: Gauge,
    ceiling: Gauge,
    heap: Gauge,
    growth: Gauge,
    jobs_fired: bool,
    age_fired: bool,
    /// The container budget (`observe_container`).
    container: Gauge,
    baseline: Option<Baseline>,
    first_seen: bool,
    leak_reported: bool,
    stall_fired: bool,
    /// Recent (uptime, RSS figure, used heap) for the slope of adaptive sampling.
    recent: std::collections::VecDeque<(u64, u64, u64)>,
    /// The floors a prediction may extrapolate from (only a sustained rise of them).
    floors: FloorHistory,
    /// How long a drain is expected to take now (tracked work's recent durations), if any
    /// work is tracked.
    expected_drain_ms: Option<u64>,
    /// A limit is near: sample at the fast interval.
    near: bool,
}

/// A floor's rise over its window must exceed this share of the limit to be a trend.
const TREND_NOISE: f64 = 0.01;
/// Samples kept for the recent slope.
const RECENT_SAMPLES: usize = 12;
/// Far from every limit, sampling turns fast this many intervals before a projected crossing.
const LOOKAHEAD_INTERVALS: f64 = 3.0;

fn scaled(limit: u64, fraction: f64) -> u64 {
    (limit as f64 * fraction) as u64
}

impl Policy {
    pub fn new(limits: Limits) -> Policy {
        Policy {
            limits,
            rss: Gauge::default(),
            ceiling: Gauge::default(),
            heap: Gauge::default(),
            growth: Gauge::default(),
            jobs_fired: false,
            age_fired: false,
            container: Gauge::default(),
            baseline: None,
            first_seen: false,
            leak_reported: false,
            stall_fired: false,
            recent: std::collections::VecDeque::with_capacity(RECENT_SAMPLES),
            floors: FloorHistory::default(),
            expected_drain_ms: None,
            near: false,
        }
    }

    /// New limits while running (the cgroup was resized): gauges, baseline and history
    /// stay; a limit that moved re-arms its pressure report.
    pub fn set_limits(&mut self, limits: Limits) {
        if limits.rss != self.limits.rss {
            self.rss.pressure_reported = false;
            self.rss.fired = false;
        }
        if limits.ceiling != self.limits.ceiling {
            self.ceiling.fired = false;
        }
        self.limits = limits;
    }

    /// The drain time to plan for (the JS side measures tracked work); `None`: no work.
    pub fn set_expected_drain(&mut self, ms: Option<u64>) {
        self.expected_drain_ms = ms;
    }

    /// How long to wait before the next sample: fast while a limit is near.
    pub fn next_interval_ms(&self) -> u64 {
        match self.limits.fast_interval_ms {
            Some(fast) if self.near => fast.min(self.limits.interval_ms),
            _ => self.limits.interval_ms,
        }
    }

    /// Bytes per second of the RSS figure (`heap` false) or the used heap over the recent
    /// samples (Theil-Sen, so one GC or one spike does not make a trend).
    fn recent_slope_per_s(&self, heap: bool) -> Option<f64> {
        let points: Vec<(u64, u64)> = self
            .recent
            .iter()
            .map(|(t, rss, used)| (*t, if heap { *used } else { *rss }))
            .collect();
        if points.len() < 4 {
            return None;
        }
        theil_sen_slope(&points).map(|per_ms| per_ms * 1000.0)
    }

    /// How fast a series grows now, for a recycle waiting at its limit: the faster of the
    /// recent samples' slope and the slope of the per-second lows over the last 5 s (which
    /// minor GCs' sawtooth does not hide).
    pub fn growth_per_s(&self, heap: bool, now_ms: u64) -> Option<f64> {
        let series = if heap { Series::Heap } else { Series::Rss };
        let floor = self.floors.recent_floor_slope_per_s(series, now_ms, 5000);
        match (self.recent_slope_per_s(heap), floor) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn baseline(&self) -> Option<Baseline> {
        self.baseline
    }

    /// The growth limit in bytes, once the baseline exists.
    pub fn growth_limit(&self) -> Option<u64> {
        Some(self.limits.growth?.limit_over(self.baseline?.rss))
    }

    /// Each limit in force, the share of it `sample` reached (1.0 = at the limit): the one
    /// place these are computed (`stats().pressure`, the status file, `pressure()`).
    pub fn shares(&self, sample: &Sample) -> Shares {
        let rss = self.rss_value(sample);
        let share = |value: u64, limit: Option<u64>| {
            limit.filter(|l| *l > 0).map(|l| value as f64 / l as f64)
        };
        Shares {
            rss: share(rss, self.limits.rss),
            heap: share(sample.heap_used, self.limits.heap),
            growth: share(rss, self.growth_limit()),
            ceiling: share(rss, self.limits.ceiling),
        }
    }

    /// The RSS figure the limits apply to.
    pub fn rss_value(&self, sample: &Sample) -> u64 {
        if self.limits.rss_anon {
            sample.rss_anon
        } else {
            sample.rss
        }
    }

    pub fn observe(&mut self, sample: &Sample) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let rss = self.rss_value(sample);
        // Only a limit exceeded at the very first sample is misconfigured: one crossed
        // during warm-up was reached by growth, and a restart would help.
        let at_start = !self.first_seen;
        self.first_seen = true;

        if self.baseline.is_none() && sample.uptime_ms >= self.limits.warmup_ms {
            self.baseline = Some(Baseline {
                rss,
                heap_used: sample.heap_used,
                uptime_ms: sample.uptime_ms,
            });
            verdicts.push(Verdict::Baseline {
                rss,
                heap_used: sample.heap_used,
            });
        }
        let may_recycle = sample.uptime_ms >= self.limits.min_uptime_ms;
        let strikes_needed = self.limits.strikes.max(1);
        if self.recent.len() == RECENT_SAMPLES {
            self.recent.pop_front();
        }
        self.recent
            .push_back((sample.uptime_ms, rss, sample.heap_used));
        self.floors.record(sample.uptime_ms, rss, sample.heap_used);
        let rss_slope = self.recent_slope_per_s(false);
        let heap_slope = self.recent_slope_per_s(true);
        let mut near = false;

        let gauges = [
            (Reason::Rss, self.limits.rss, rss, false),
            (
                Reason::Heap,
                self.limits.heap.filter(|_| sample.heap_limit > 0),
                sample.heap_used,
                false,
            ),
            (Reason::Growth, self.growth_limit(), rss, false),
            (Reason::Rss, self.limits.ceiling, rss, true),
        ];
        for (reason, limit, value, is_ceiling) in gauges {
            let Some(limit) = limit else { continue };
            let slope = if reason == Reason::Heap {
                heap_slope
            } else {
                rss_slope
            };
            // Near: past the soft threshold, or the trend reaches the limit within a few
            // intervals at the slow rate.
            let lookahead_s = self.limits.interval_ms as f64 * LOOKAHEAD_INTERVALS / 1000.0;
            let trending =
                slope.is_some_and(|s| s > 0.0 && value as f64 + s * lookahead_s >= limit as f64);
            near |= value >= scaled(limit, PRESSURE) || trending;
            let expected_drain_ms = self.expected_drain_ms;
            let predict = self.limits.predict;
            let floors = &self.floors;
            let gauge = match (reason, is_ceiling) {
                (_, true) => &mut self.ceiling,
                (Reason::Rss, _) => &mut self.rss,
                (Reason::Heap, _) => &mut self.heap,
                _ => &mut self.growth,
            };
            // A growth limit starts at the baseline, so it can never be misconfigured.
            if at_start && reason != Reason::Growth && value >= limit {
                gauge.suspended = true;
                verdicts.push(Verdict::Misconfigured {
                    reason,
                    value,
                    limit,
                });
            }
            if gauge.suspended {
                if value < scaled(limit, MISCONFIGURED_REARM) {
                    gauge.suspended = false;
                } else {
                    continue;
                }
            }
            if !is_ceiling {
                if value >= scaled(limit, PRESSURE) {
                    if !gauge.pressure_reported {
                        gauge.pressure_reported = true;
                        verdicts.push(Verdict::Pressure {
                            reason,
                            value,
                            limit,
                        });
                    }
                } else if value < scaled(limit, PRESSURE_REARM) {
                    gauge.pressure_reported = false;
                }
            }
            // The projection at the end of a drain started now: tracked work's expected
            // duration at the rate the series' floor rises. Only a sustained rise of the
            // floor counts (trend.rs): a sawtooth, a burst, a plateau, a value held flat or
            // a series that came back down never projects a crossing.
            let prediction = match (predict, expected_drain_ms) {
                (true, Some(drain_ms)) if value < limit => {
                    let series = if reason == Reason::Heap {
                        Series::Heap
                    } else {
                        Series::Rss
                    };
                    let noise = scaled(limit, TREND_NOISE);
                    floors
                        .sustained_slope_per_s(series, sample.uptime_ms, drain_ms, noise)
                        .and_then(|slope| {
                            let projected = value as f64 + slope * drain_ms as f64 / 1000.0;
                            (projected >= limit as f64).then_some(Prediction {
                                projected: projected as u64,
                                expected_drain_ms: drain_ms,
                                slope_per_s: slope,
                            })
                        })
                }
                _ => None,
            };
            gauge.predicted_strikes = match prediction {
                Some(_) => gauge.predicted_strikes.saturating_add(1),
                None => 0,
            };
            if value >= limit || prediction.is_some() {
                if value >= limit {
                    gauge.strikes = gauge.strikes.saturating_add(1);
                }
                let sustained =
                    gauge.strikes >= strikes_needed || gauge.predicted_strikes >= strikes_needed;
                if sustained && (may_recycle || is_ceiling) && !gauge.fired {
                    gauge.fired = true;
                    verdicts.push(Verdict::Recycle {
                        reason,
                        value,
                        limit,
                        strikes: gauge.strikes.max(gauge.predicted_strikes),
                        ceiling: is_ceiling,
                        prediction: (value < limit).then_some(prediction).flatten(),
                    });
                }
                if value < limit {
                    gauge.strikes = 0;
                }
            } else {
                gauge.strikes = 0;
                gauge.fired = false;
            }
        }

        self.near = near;

        if let Some(limit) = self.limits.jobs {
            if sample.jobs_done >= limit && may_recycle && !self.jobs_fired {
                self.jobs_fired = true;
                verdicts.push(Verdict::Recycle {
                    reason: Reason::Jobs,
                    value: sample.jobs_done,
                    limit,
                    strikes: 0,
                    ceiling: false,
                    prediction: None,
                });
            }
        }
        if let Some(limit) = self.limits.age_ms {
            if sample.uptime_ms >= limit && may_recycle && !self.age_fired {
                self.age_fired = true;
                verdicts.push(Verdict::Recycle {
                    reason: Reason::Age,
                    value: sample.uptime_ms,
                    limit,
                    strikes: 0,
                    ceiling: false,
                    prediction: None,
                });
            }
        }
        verdicts
    }
}

impl Policy {
    /// The container budget: the cgroup's working set against `threshold` (and the
    /// `ceiling`, which needs neither strikes nor `MIN_UPTIME`). Only the largest worker
    /// acts (`largest`: decided by the caller over the cgroup's processes); the others
    /// keep counting, so one of them acts at once if the largest goes away without
    /// bringing the working set down.
    pub fn observe_container(
        &mut self,
        working_set: u64,
        threshold: u64,
        ceiling: u64,
        largest: bool,
        uptime_ms: u64,
        fresh: bool,
    ) -> Option<Verdict> {
        // Near the budget, sample fast (observe() just set `near` for this sample).
        self.near |= working_set >= scaled(threshold, PRESSURE);
        // The cgroup is read at most every 250 ms: a reading kept from an earlier tick is
        // no new evidence, so it counts no strike (and resets none).
        if !fresh {
            return None;
        }
        let gauge = &mut self.container;
        if working_set < threshold {
            gauge.strikes = 0;
            gauge.fired = false;
            return None;
        }
        gauge.strikes = gauge.strikes.saturating_add(1);
        let is_ceiling = working_set >= ceiling;
        let sustained = gauge.strikes >= self.limits.strikes.max(1) || is_ceiling;
        let may = uptime_ms >= self.limits.min_uptime_ms || is_ceiling;
        if !(largest && sustained && may) || gauge.fired {
            return None;
        }
        gauge.fired = true;
        Some(Verdict::Recycle {
            reason: Reason::Container,
            value: working_set,
            limit: threshold,
            strikes: gauge.strikes,
            ceiling: is_ceiling,
            prediction: None,
        })
    }

    /// The event loop has left a ping unanswered for `unanswered_ms` (None: it answered).
    pub fn observe_stall(&mut self, unanswered_ms: Option<u64>, uptime_ms: u64) -> Option<Verdict> {
        let limit = self.limits.stall_ms?;
        match unanswered_ms {
            Some(waited) if waited >= limit => {
                if self.stall_fired || uptime_ms < self.limits.min_uptime_ms {
                    return None;
                }
                self.stall_fired = true;
                Some(Verdict::Recycle {
                    reason: Reason::Stall,
                    value: waited,
                    limit,
                    strikes: 0,
                    ceiling: false,
                    prediction: None,
                })
            }
            _ => {
                self.stall_fired = false;
                None
            }
        }
    }
}

/// Spreads a count or duration down by up to `jitter` (0.1 = 10%), with `unit` in [0, 1):
/// the configured value stays the ceiling, and a fleet started together spreads out.
pub fn apply_jitter(value: u64, jitter: f64, unit: f64) -> u64 {
    let spread = (value as f64 * jitter * unit.clamp(0.0, 1.0)) as u64;
    value.saturating_sub(spread).max(1)
}

#[cfg(test)]
mod tests {
    use super::near_heap::headroom;
    use super::*;

    /// A memory series over time (ms -> bytes), for the shape tests.
    type Shape<'a> = Box<dyn Fn(u64) -> u64 + 'a>;

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            rss: Some(100 * MIB),
            heap: Some(50 * MIB),
            strikes: 3,
            ..Limits::default()
        }
    }

    fn sample(uptime_ms: u64, rss: u64, heap_used: u64) -> Sample {
        Sample {
            uptime_ms,
            rss,
            rss_anon: rss / 2,
            heap_used,
            heap_total: heap_used,
            heap_limit: 100 * MIB,
            external: 0,
            jobs_done: 0,
        }
    }

    fn recycles(verdicts: &[Verdict]) -> Vec<Reason> {
        verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Recycle { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rss_needs_consecutive_strikes() {
        let mut policy = Policy::new(limits());
        let mut fired = Vec::new();
        for (i, rss) in [40, 120, 120, 90, 120, 120, 120].iter().enumerate() {
            fired.push(recycles(&policy.observe(&sample(
                i as u64 * 1000,
                rss * MIB,
                MIB,
            ))));
        }
        assert!(fired[..6].iter().all(|r| r.is_empty()), "{fired:?}");
        assert_eq!(fired[6], vec![Reason::Rss]);
    }

    #[test]
    fn heap_limit_and_pressure() {
        let mut policy = Policy::new(limits());
        let first = policy.observe(&sample(0, 10 * MIB, 41 * MIB));
        assert!(matches!(
            first[..],
            [
                Verdict::Baseline { .. },
                Verdict::Pressure {
                    reason: Reason::Heap,
                    ..
                }
            ]
        ));
        assert!(
            policy.observe(&sample(1, 10 * MIB, 42 * MIB)).is_empty(),
            "pressure once per crossing"
        );
        policy.observe(&sample(2, 10 * MIB, 60 * MIB));
        policy.observe(&sample(3, 10 * MIB, 60 * MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(4, 10 * MIB, 60 * MIB))),
            vec![Reason::Heap]
        );
    }

    #[test]
    fn min_uptime_holds_back_automatic_recycles() {
        let mut policy = Policy::new(Limits {
            min_uptime_ms: 10_000,
            ..limits()
        });
        policy.observe(&sample(0, 40 * MIB, MIB));
        for t in 1..10 {
            assert!(recycles(&policy.observe(&sample(t * 1000, 200 * MIB, MIB))).is_empty());
        }
        assert_eq!(
            recycles(&policy.observe(&sample(10_000, 200 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn growth_over_baseline_after_warmup() {
        let mut policy = Policy::new(Limits {
            rss: None,
            heap: None,
            growth: Some(Growth::Plus(50 * MIB)),
            warmup_ms: 5000,
            strikes: 1,
            ..Limits::default()
        });
        assert!(
            recycles(&policy.observe(&sample(0, 500 * MIB, MIB))).is_empty(),
            "warm-up"
        );
        let verdicts = policy.observe(&sample(5000, 60 * MIB, MIB));
        assert_eq!(
            verdicts,
            vec![Verdict::Baseline {
                rss: 60 * MIB,
                heap_used: MIB
            }]
        );
        assert_eq!(policy.growth_limit(), Some(110 * MIB));
        assert!(recycles(&policy.observe(&sample(6000, 100 * MIB, MIB))).is_empty());
        assert_eq!(
            recycles(&policy.observe(&sample(7000, 111 * MIB, MIB))),
            vec![Reason::Growth]
        );
    }

    #[test]
    fn baseline_over_limit_is_misconfigured_not_a_loop() {
        let mut policy = Policy::new(Limits {
            strikes: 1,
            ..limits()
        });
        let verdicts = policy.observe(&sample(0, 150 * MIB, MIB));
        assert!(verdicts.contains(&Verdict::Misconfigured {
            reason: Reason::Rss,
            value: 150 * MIB,
            limit: 100 * MIB
        }));
        for t in 1..20 {
            assert!(recycles(&policy.observe(&sample(t * 1000, 150 * MIB, MIB))).is_empty());
        }
        // Back under 90% of the limit re-arms it.
        policy.observe(&sample(30_000, 80 * MIB, MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(31_000, 150 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn a_crossing_during_warmup_is_not_misconfigured() {
        // 300 MiB cgroup: MAX_RSS 270 MiB. The worker starts at 245 MiB and grows 1 MiB/s,
        // crossing the limit at 25 s, before the end of warm-up and MIN_UPTIME (30 s).
        let mut policy = Policy::new(Limits {
            rss: Some(270 * MIB),
            ceiling: Some(285 * MIB),
            strikes: 3,
            warmup_ms: 30_000,
            min_uptime_ms: 30_000,
            ..Limits::default()
        });
        let mut decided = None;
        for second in 0..60u64 {
            let verdicts = policy.observe(&sample(second * 1000, (245 + second) * MIB, MIB));
            assert!(
                !verdicts
                    .iter()
                    .any(|v| matches!(v, Verdict::Misconfigured { .. })),
                "misconfigured at {second}s"
            );
            if !recycles(&verdicts).is_empty() {
                decided = Some(second);
                break;
            }
        }
        assert_eq!(decided, Some(30), "recycles as soon as MIN_UPTIME allows");
    }

    #[test]
    fn the_ceiling_does_not_wait_for_min_uptime_or_a_suspended_limit() {
        let limits = Limits {
            rss: Some(270 * MIB),
            ceiling: Some(285 * MIB),
            strikes: 2,
            min_uptime_ms: 30_000,
            ..Limits::default()
        };
        // A 10 MiB/s leak from 200 MiB: the ceiling fires at 9 s, long before MIN_UPTIME.
        let mut policy = Policy::new(limits.clone());
        let fired = (0..30u64).find_map(|second| {
            let verdicts = policy.observe(&sample(second * 1000, (200 + 10 * second) * MIB, MIB));
            verdicts.into_iter().find_map(|v| match v {
                Verdict::Recycle {
                    ceiling: true,
                    value,
                    limit,
                    ..
                } => Some((second, value, limit)),
                _ => None,
            })
        });
        assert_eq!(fired, Some((10, 300 * MIB, 285 * MIB)));
        // MAX_RSS over at start is suspended, the ceiling still acts on further growth.
        let mut policy = Policy::new(limits.clone());
        let first = policy.observe(&sample(0, 275 * MIB, MIB));
        assert_eq!(
            first
                .iter()
                .filter(|v| matches!(v, Verdict::Misconfigured { .. }))
                .count(),
            1,
            "{first:?}"
        );
        assert!(recycles(&policy.observe(&sample(1000, 280 * MIB, MIB))).is_empty());
        assert!(recycles(&policy.observe(&sample(2000, 286 * MIB, MIB))).is_empty());
        assert_eq!(
            recycles(&policy.observe(&sample(3000, 287 * MIB, MIB))),
            vec![Reason::Rss]
        );
        // Over the ceiling at start: misconfigured, no restart loop.
        let mut policy = Policy::new(limits);
        let first = policy.observe(&sample(0, 290 * MIB, MIB));
        assert_eq!(
            first
                .iter()
                .filter(|v| matches!(v, Verdict::Misconfigured { .. }))
                .count(),
            2
        );
        for t in 1..40 {
            assert!(recycles(&policy.observe(&sample(t * 1000, 290 * MIB, MIB))).is_empty());
        }
    }

    #[test]
    fn near_heap_headroom_is_granted_once() {
        let limit = 400 * MIB;
        assert_eq!(
            near_heap_action(1, limit, 100 * MIB, None, true),
            NearHeapAction::Grant {
                headroom: 100 * MIB
            }
        );
        assert_eq!(
            near_heap_action(2, limit, 100 * MIB, None, true),
            NearHeapAction::Exit(NearHeapExit::Again)
        );
        assert_eq!(
            near_heap_action(3, limit, 100 * MIB, None, true),
            NearHeapAction::Exit(NearHeapExit::Again)
        );
        assert_eq!(
            near_heap_action(1, limit, 999 * MIB, Some(1000 * MIB), true),
            NearHeapAction::Exit(NearHeapExit::NoRoom)
        );
        assert_eq!(
            near_heap_action(2, limit, 100 * MIB, None, false),
            NearHeapAction::Keep
        );
        assert!(NearHeapExit::Again.why().contains("again"));
    }

    #[test]
    fn headroom_is_bounded() {
        assert_eq!(headroom(64 * MIB, 100 * MIB, None), Some(32 * MIB));
        assert_eq!(headroom(400 * MIB, 100 * MIB, None), Some(100 * MIB));
        assert_eq!(headroom(4096 * MIB, 100 * MIB, None), Some(256 * MIB));
        assert_eq!(
            headroom(400 * MIB, 900 * MIB, Some(1000 * MIB)),
            Some(50 * MIB)
        );
        assert_eq!(headroom(400 * MIB, 999 * MIB, Some(1000 * MIB)), None);
    }

    #[test]
    fn jobs_and_age_fire_once() {
        let mut policy = Policy::new(Limits {
            jobs: Some(10),
            age_ms: Some(60_000),
            ..Limits::default()
        });
        let mut s = sample(0, MIB, MIB);
        s.jobs_done = 9;
        assert!(recycles(&policy.observe(&s)).is_empty());
        s.jobs_done = 10;
        assert_eq!(recycles(&policy.observe(&s)), vec![Reason::Jobs]);
        s.jobs_done = 11;
        assert!(recycles(&policy.observe(&s)).is_empty());
        s.uptime_ms = 60_000;
        assert_eq!(recycles(&policy.observe(&s)), vec![Reason::Age]);
        assert!(recycles(&policy.observe(&s)).is_empty());
    }

    #[test]
    fn a_fired_limit_rearms_only_after_falling_below() {
        let mut policy = Policy::new(Limits {
            strikes: 1,
            ..limits()
        });
        policy.observe(&sample(0, 10 * MIB, MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(1, 200 * MIB, MIB))),
            vec![Reason::Rss]
        );
        assert!(recycles(&policy.observe(&sample(2, 200 * MIB, MIB))).is_empty());
        policy.observe(&sample(3, 10 * MIB, MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(4, 200 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn rss_anon_metric() {
        let mut policy = Policy::new(Limits {
            rss_anon: true,
            strikes: 1,
            ..limits()
        });
        policy.observe(&sample(0, 10 * MIB, MIB));
        assert!(
            recycles(&policy.observe(&sample(1, 150 * MIB, MIB))).is_empty(),
            "anon is 75 MiB"
        );
        assert_eq!(
            recycles(&policy.observe(&sample(2, 250 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    fn leak_policy() -> Policy {
        Policy::new(Limits {
            leak_slope_per_min: Some(10.0 * MIB as f64),
            leak_window_ms: 60_000,
            ..Limits::default()
        })
    }

    #[test]
    fn a_sustained_post_gc_slope_is_a_leak() {
        let mut policy = leak_policy();
        // 20 MiB/min: one point every 5 s, +1.67 MiB each.
        let points: Vec<(u64, u64)> = (0..13)
            .map(|i| (i * 5000, 50 * MIB + i * 5 * MIB / 3))
            .collect();
        let verdicts = policy.observe_leak(&points, 60_000, 60_000);
        assert!(
            matches!(verdicts[0], Verdict::Leak { slope_per_min, .. } if (slope_per_min / MIB as f64 - 20.0).abs() < 0.5)
        );
        assert_eq!(recycles(&verdicts), vec![Reason::Leak]);
        assert!(
            policy.observe_leak(&points, 60_000, 61_000).is_empty(),
            "once per crossing"
        );
    }

    #[test]
    fn sawtooth_and_spike_are_not_leaks() {
        let mut policy = leak_policy();
        let sawtooth: Vec<(u64, u64)> = (0..30)
            .map(|i| (i * 2000, 50 * MIB + (i % 3) * 30 * MIB))
            .collect();
        assert!(policy.observe_leak(&sawtooth, 60_000, 60_000).is_empty());
        let mut spike: Vec<(u64, u64)> = (0..30).map(|i| (i * 2000, 50 * MIB)).collect();
        spike[20].1 = 400 * MIB;
        spike[21].1 = 400 * MIB;
        assert!(policy.observe_leak(&spike, 60_000, 60_000).is_empty());
    }

    #[test]
    fn too_few_points_or_too_short_a_span_decide_nothing() {
        let mut policy = leak_policy();
        let few: Vec<(u64, u64)> = (0..4).map(|i| (i * 15_000, i * 100 * MIB)).collect();
        assert!(policy.observe_leak(&few, 60_000, 60_000).is_empty());
        let short: Vec<(u64, u64)> = (0..20).map(|i| (50_000 + i * 100, i * 100 * MIB)).collect();
        assert!(policy.observe_leak(&short, 60_000, 60_000).is_empty());
    }

    #[test]
    fn leak_waits_for_warmup_and_min_uptime() {
        let mut policy = Policy::new(Limits {
            leak_slope_per_min: Some(1.0),
            leak_window_ms: 10_000,
            warmup_ms: 5_000,
            min_uptime_ms: 20_000,
            ..Limits::default()
        });
        let points: Vec<(u64, u64)> = (0..10).map(|i| (i * 1000, i * MIB)).collect();
        assert!(
            policy.observe_leak(&points, 10_000, 1_000).is_empty(),
            "warm-up"
        );
        let verdicts = policy.observe_leak(&points, 10_000, 10_000);
        assert_eq!(
            verdicts.len(),
            1,
            "leak reported, recycle held by MIN_UPTIME"
        );
    }

    #[test]
    fn stall_fires_once_per_stall_after_min_uptime() {
        let mut policy = Policy::new(Limits {
            stall_ms: Some(1000),
            min_uptime_ms: 5000,
            ..Limits::default()
        });
        assert_eq!(policy.observe_stall(Some(2000), 1000), None, "min uptime");
        assert_eq!(policy.observe_stall(Some(999), 6000), None);
        assert_eq!(
            policy.observe_stall(Some(1000), 6000),
            Some(Verdict::Recycle {
                reason: Reason::Stall,
                value: 1000,
                limit: 1000,
                strikes: 0,
                ceiling: false,
                prediction: None,
            })
        );
        assert_eq!(
            policy.observe_stall(Some(3000), 7000),
            None,
            "once per stall"
        );
        assert_eq!(policy.observe_stall(None, 8000), None);
        assert!(
            policy.observe_stall(Some(1500), 9000).is_some(),
            "a new stall"
        );
        assert_eq!(
            Policy::new(Limits::default()).observe_stall(Some(99_999), 99_999),
            None,
            "off"
        );
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut points: Vec<(u64, u64)> = (0..11).map(|i| (i, i * 10)).collect();
        points[5].1 = 10_000;
        assert_eq!(theil_sen_slope(&points), Some(10.0));
        assert_eq!(theil_sen_slope(&[(1, 1)]), None);
    }

    #[test]
    fn jitter_spreads_down_only() {
        assert_eq!(apply_jitter(1000, 0.1, 0.0), 1000);
        assert_eq!(apply_jitter(1000, 0.1, 0.5), 950);
        assert_eq!(apply_jitter(1000, 0.1, 0.999), 901);
        assert_eq!(apply_jitter(1, 0.5, 0.99), 1);
    }

    #[test]
    fn each_limit_keeps_its_own_gauge() {
        // rss, heap and growth cross 80% in the same sample: three pressure events.
        let mut policy = Policy::new(Limits {
            rss: Some(100 * MIB),
            heap: Some(50 * MIB),
            growth: Some(Growth::Plus(60 * MIB)),
            strikes: 2,
            ..Limits::default()
        });
        policy.observe(&sample(0, 50 * MIB, MIB));
        let verdicts = policy.observe(&sample(1, 90 * MIB, 45 * MIB));
        let pressured: Vec<Reason> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Pressure { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(pressured, vec![Reason::Rss, Reason::Heap, Reason::Growth]);
        assert_eq!(policy.baseline().map(|b| b.rss), Some(50 * MIB));
        assert_eq!(policy.limits().rss, Some(100 * MIB));
        assert_eq!(policy.growth_limit(), Some(110 * MIB));
    }

    #[test]
    fn no_heap_figures_no_heap_limit() {
        let mut policy = Policy::new(Limits {
            heap: Some(MIB),
            strikes: 1,
            ..Limits::default()
        });
        let mut figures = sample(0, MIB, 10 * MIB);
        figures.heap_limit = 0;
        let verdicts = policy.observe(&figures);
        assert!(
            verdicts
                .iter()
                .all(|v| matches!(v, Verdict::Baseline { .. })),
            "heap_limit 0 (not read yet): {verdicts:?}"
        );
    }

    #[test]
    fn rearm_thresholds_are_strict() {
        // A misconfigured limit comes back only under 90%; pressure re-arms under 75%.
        let mut policy = Policy::new(Limits {
            rss: Some(100 * MIB),
            strikes: 1,
            ..Limits::default()
        });
        policy.observe(&sample(0, 120 * MIB, MIB));
        policy.observe(&sample(1, 90 * MIB, MIB));
        assert!(
            recycles(&policy.observe(&sample(2, 120 * MIB, MIB))).is_empty(),
            "90% exactly does not re-arm"
        );
        policy.observe(&sample(3, 89 * MIB, MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(4, 120 * MIB, MIB))),
            vec![Reason::Rss]
        );

        let pressure = |verdicts: &[Verdict]| {
            verdicts
                .iter()
                .any(|v| matches!(v, Verdict::Pressure { .. }))
        };
        let mut policy = Policy::new(Limits {
            rss: Some(100 * MIB),
            strikes: 5,
            ..Limits::default()
        });
        assert!(
            pressure(&policy.observe(&sample(0, 80 * MIB, MIB))),
            "80% exactly is pressure"
        );
        policy.observe(&sample(1, 75 * MIB, MIB));
        assert!(
            !pressure(&policy.observe(&sample(2, 85 * MIB, MIB))),
            "75% exactly does not re-arm"
        );
        policy.observe(&sample(3, 74 * MIB, MIB));
        assert!(pressure(&policy.observe(&sample(4, 85 * MIB, MIB))));
    }

    #[test]
    fn leak_boundaries() {
        // Slope exactly at the threshold is not a leak; warm-up ends inclusively.
        let threshold = 60_000.0; // bytes per minute = 1 byte per ms
        let series: Vec<(u64, u64)> = (0..10)
            .map(|i| (i * 10_000, 1_000_000 + i * 10_000))
            .collect();
        let mut policy = Policy::new(Limits {
            leak_slope_per_min: Some(threshold),
            leak_window_ms: 100_000,
            warmup_ms: 5_000,
            ..Limits::default()
        });
        assert!(
            policy.observe_leak(&series, 90_000, 90_000).is_empty(),
            "equal is not over"
        );
        let steeper: Vec<(u64, u64)> = (0..10)
            .map(|i| (i * 10_000, 1_000_000 + i * 20_000))
            .collect();
        assert_eq!(
            policy.observe_leak(&steeper, 90_000, 5_000).len(),
            2,
            "at warm-up's end"
        );
        // Reported once; re-armed only under 75% of the threshold.
        assert!(policy.observe_leak(&steeper, 90_000, 6_000).is_empty());
        let slower: Vec<(u64, u64)> = (0..10)
            .map(|i| (i * 10_000, 1_000_000 + i * 8_000))
            .collect();
        assert!(policy.observe_leak(&slower, 90_000, 7_000).is_empty());
        assert!(
            policy.observe_leak(&steeper, 90_000, 8_000).is_empty(),
            "80% did not re-arm"
        );
        let slowest: Vec<(u64, u64)> = (0..10)
            .map(|i| (i * 10_000, 1_000_000 + i * 7_000))
            .collect();
        policy.observe_leak(&slowest, 90_000, 9_000);
        assert_eq!(
            policy.observe_leak(&steeper, 90_000, 10_000).len(),
            2,
            "70% re-armed"
        );
    }

    #[test]
    fn stall_at_exactly_min_uptime_counts() {
        let mut policy = Policy::new(Limits {
            stall_ms: Some(1000),
            min_uptime_ms: 5000,
            ..Limits::default()
        });
        assert!(policy.observe_stall(Some(1000), 5000).is_some());
    }

    #[test]
    fn theil_sen_averages_the_two_middle_slopes() {
        // Slopes 1, 1.5, 2, 2.33, 3, 4: the median of six is (2 + 2.33) / 2.
        let slope = theil_sen_slope(&[(0, 0), (1, 1), (2, 3), (3, 7)]).expect("slope");
        assert!((slope - (2.0 + 7.0 / 3.0) / 2.0).abs() < 1e-9, "{slope}");
        assert_eq!(theil_sen_slope(&[(0, 0), (1, 1), (2, 3)]), Some(1.5));
        assert_eq!(
            theil_sen_slope(&[(5, 0), (5, 9)]),
            None,
            "no two distinct times"
        );
    }

    #[test]
    fn headroom_needs_at_least_4_mib() {
        let limit = 400 * MIB;
        assert_eq!(headroom(limit, 992 * MIB, Some(1000 * MIB)), Some(4 * MIB));
        assert_eq!(headroom(limit, 994 * MIB, Some(1000 * MIB)), None);
    }

    #[test]
    fn byte_reasons() {
        for reason in [
            Reason::Rss,
            Reason::Heap,
            Reason::Growth,
            Reason::NearHeapLimit,
            Reason::Oom,
        ] {
            assert!(reason.is_bytes(), "{reason:?}");
        }
        for reason in [
            Reason::Leak,
            Reason::Jobs,
            Reason::Age,
            Reason::Stall,
            Reason::Manual,
            Reason::Signal,
        ] {
            assert!(!reason.is_bytes(), "{reason:?}");
        }
    }

    fn adaptive(strikes: u32) -> Policy {
        Policy::new(Limits {
            rss: Some(150 * MIB),
            strikes,
            interval_ms: 1000,
            fast_interval_ms: Some(25),
            predict: true,
            ..Limits::default()
        })
    }

    #[test]
    fn near_a_limit_sampling_turns_fast_and_back() {
        let mut policy = adaptive(3);
        policy.observe(&sample(0, 60 * MIB, MIB));
        assert_eq!(policy.next_interval_ms(), 1000, "far from the limit");
        policy.observe(&sample(1000, 125 * MIB, MIB));
        assert_eq!(policy.next_interval_ms(), 25, "past 80%");
        for t in 1..6 {
            policy.observe(&sample(1000 + t * 1000, 60 * MIB, MIB));
        }
        assert_eq!(policy.next_interval_ms(), 1000, "back down");
        // A trend that reaches the limit within 3 intervals turns it fast before 80%.
        let mut trending = adaptive(3);
        for (i, mib) in [60u64, 75, 90, 105].iter().enumerate() {
            trending.observe(&sample(i as u64 * 1000, mib * MIB, MIB));
        }
        assert_eq!(
            trending.next_interval_ms(),
            25,
            "105 MiB + 15 MiB/s x 3 s >= 150 MiB"
        );
        let mut off = Policy::new(Limits {
            fast_interval_ms: None,
            ..adaptive(3).limits().clone()
        });
        off.observe(&sample(0, 140 * MIB, MIB));
        assert_eq!(off.next_interval_ms(), 1000);
    }

    #[test]
    fn a_spike_shorter_than_strikes_samples_does_not_recycle() {
        let mut policy = adaptive(3);
        policy.observe(&sample(0, 130 * MIB, MIB));
        // Two fast samples over the limit, then back: 50 ms at 25 ms sampling.
        assert!(recycles(&policy.observe(&sample(25, 200 * MIB, MIB))).is_empty());
        assert!(recycles(&policy.observe(&sample(50, 200 * MIB, MIB))).is_empty());
        assert!(recycles(&policy.observe(&sample(75, 130 * MIB, MIB))).is_empty());
        assert!(recycles(&policy.observe(&sample(100, 200 * MIB, MIB))).is_empty());
        assert!(recycles(&policy.observe(&sample(125, 200 * MIB, MIB))).is_empty());
        assert_eq!(
            recycles(&policy.observe(&sample(150, 200 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn a_steady_leak_with_long_jobs_is_predicted_before_the_crossing() {
        // 2 MiB/s from 60 MiB with 5 s jobs: once the rise has been seen for the 30 s window,
        // the drain must start when value + 2 MiB/s x 5 s reaches 150 MiB, at about 140 MiB.
        let mut policy = adaptive(3);
        policy.set_expected_drain(Some(5000));
        let fired = run_shape(&mut policy, 120_000, |t| {
            60 * MIB + (2.0 * MIB as f64 * t as f64 / 1000.0) as u64
        });
        let Some((
            _,
            Verdict::Recycle {
                value,
                limit,
                prediction: Some(prediction),
                ..
            },
        )) = fired.first().copied()
        else {
            panic!("no predicted recycle: {fired:?}");
        };
        assert!(value < limit, "decided before the crossing");
        assert!(value < 143 * MIB && value > 137 * MIB, "{}", value / MIB);
        assert!(prediction.projected >= limit);
        assert_eq!(prediction.expected_drain_ms, 5000);
        assert!((prediction.slope_per_s / MIB as f64 - 2.0).abs() < 0.2);
    }

    /// Samples `shape(t)` (RSS; heap 1 MiB) the way the monitor does: at the interval the
    /// policy asks for next. Returns each recycle verdict with its time.
    fn run_shape(
        policy: &mut Policy,
        until_ms: u64,
        shape: impl Fn(u64) -> u64,
    ) -> Vec<(u64, Verdict)> {
        let mut fired = Vec::new();
        let mut t = 0;
        while t <= until_ms {
            for verdict in policy.observe(&sample(t, shape(t), MIB)) {
                if matches!(verdict, Verdict::Recycle { .. }) {
                    fired.push((t, verdict));
                }
            }
            t += policy.next_interval_ms();
        }
        fired
    }

    /// Default settings at `MAX_RSS=400MiB` (30 s of `MIN_UPTIME`, 3 strikes, 1 s / 25 ms
    /// sampling, prediction on) with tracked jobs whose drain is expected to take `drain_ms`.
    fn defaults_at_400_mib(drain_ms: u64) -> Policy {
        let mut policy = Policy::new(Limits {
            rss: Some(400 * MIB),
            strikes: 3,
            min_uptime_ms: 30_000,
            warmup_ms: 30_000,
            interval_ms: 1000,
            fast_interval_ms: Some(25),
            predict: true,
            ..Limits::default()
        });
        policy.set_expected_drain(Some(drain_ms));
        policy
    }

    fn share(limit: u64, percent: f64) -> u64 {
        (limit as f64 * percent / 100.0) as u64
    }

    #[test]
    fn a_waiting_recycle_goes_before_a_hard_limit() {
        let hard = |value: u64, slope: Option<f64>| HardLimit {
            name: "90% of V8's heap limit (144 MiB)".to_string(),
            value: value * MIB,
            limit: 144 * MIB,
            at_once: 152 * MIB,
            slope_per_s: slope,
        };
        // Past the projection target but flat: it may wait, until the at-once mark.
        assert!(hard(146, None).must_go_within(60_000).is_none());
        assert!(hard(152, None).must_go_within(0).is_some());
        // Past the target and growing: at once.
        assert!(hard(146, Some(1.0)).must_go_within(0).is_some());
        // 2 MiB/s, 10 MiB left: 5 s; a 4 s lead waits, a 5 s lead goes.
        let growing = hard(134, Some(2.0 * MIB as f64));
        assert_eq!(growing.must_go_within(4000), None);
        let why = growing.must_go_within(5000).expect("goes");
        assert!(why.contains("in 5.0 s"), "{why}");
        // Flat or falling: waits.
        assert_eq!(hard(140, Some(0.0)).must_go_within(60_000), None);
        assert_eq!(hard(140, Some(-1.0)).must_go_within(60_000), None);
        assert_eq!(hard(140, None).must_go_within(60_000), None);
    }

    #[test]
    fn the_container_budget_recycles_its_largest_worker_only() {
        let mut policy = Policy::new(Limits {
            strikes: 3,
            min_uptime_ms: 30_000,
            ..Limits::default()
        });
        let (threshold, ceiling) = (630 * MIB, 665 * MIB);
        // Under the budget: nothing.
        assert_eq!(
            policy.observe_container(600 * MIB, threshold, ceiling, true, 60_000, true),
            None
        );
        // Over it but not the largest: nothing, however long.
        for _ in 0..5 {
            assert_eq!(
                policy.observe_container(640 * MIB, threshold, ceiling, false, 60_000, true),
                None
            );
        }
        // Now the largest (a sibling went away without the working set falling): at once,
        // its strikes already counted.
        let verdict = policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, true);
        assert!(
            matches!(
                verdict,
                Some(Verdict::Recycle {
                    reason: Reason::Container,
                    ceiling: false,
                    ..
                })
            ),
            "{verdict:?}"
        );
        assert_eq!(
            policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, true),
            None,
            "once per crossing"
        );
        // The ceiling acts before MIN_UPTIME and without strikes.
        let mut young = Policy::new(Limits {
            strikes: 3,
            min_uptime_ms: 30_000,
            ..Limits::default()
        });
        assert_eq!(
            young.observe_container(640 * MIB, threshold, ceiling, true, 1000, true),
            None
        );
        let verdict = young.observe_container(670 * MIB, threshold, ceiling, true, 1000, true);
        assert!(
            matches!(verdict, Some(Verdict::Recycle { ceiling: true, .. })),
            "{verdict:?}"
        );
    }

    #[test]
    fn shares_of_each_limit_in_force_and_the_highest() {
        let policy = Policy::new(Limits {
            rss: Some(400 * MIB),
            heap: Some(200 * MIB),
            ceiling: Some(800 * MIB),
            ..Limits::default()
        });
        let shares = policy.shares(&sample(1000, 300 * MIB, 180 * MIB));
        assert_eq!(shares.rss, Some(0.75));
        assert_eq!(shares.heap, Some(0.9));
        assert_eq!(shares.ceiling, Some(0.375));
        assert_eq!(shares.growth, None, "no growth limit before a baseline");
        assert_eq!(shares.highest(), 0.9);
        let none = Policy::new(Limits::default()).shares(&sample(1000, 300 * MIB, 180 * MIB));
        assert_eq!((none.rss, none.heap, none.highest()), (None, None, 0.0));
    }

    #[test]
    fn a_kept_container_reading_counts_no_strike() {
        let mut policy = Policy::new(Limits {
            strikes: 3,
            min_uptime_ms: 0,
            ..Limits::default()
        });
        let (threshold, ceiling) = (630 * MIB, 665 * MIB);
        // One fresh reading over the budget, then the same reading kept for 9 fast ticks.
        assert_eq!(
            policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, true),
            None
        );
        for _ in 0..9 {
            assert_eq!(
                policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, false),
                None,
                "a kept reading is not a strike"
            );
        }
        // Two more fresh readings over it: three strikes.
        assert_eq!(
            policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, true),
            None
        );
        assert!(matches!(
            policy.observe_container(640 * MIB, threshold, ceiling, true, 60_000, true),
            Some(Verdict::Recycle {
                reason: Reason::Container,
                strikes: 3,
                ..
            })
        ));
    }

    #[test]
    fn healthy_shapes_near_the_limit_are_never_recycled() {
        let limit = 400 * MIB;
        let pct = |p: f64| share(limit, p);
        // Page-level noise, repeatable.
        let noise = |t: u64| (t.wrapping_mul(2_654_435_761) % 97) * MIB / 64;
        let shapes: Vec<(&str, Shape<'_>)> = vec![
            // From 60% up to a peak of 90-97% (varying per cycle), freed by GC, again.
            (
                "sawtooth",
                Box::new(move |t| {
                    let cycle = t / 9000;
                    let peak = 90.0 + (cycle * 37 % 8) as f64;
                    let phase = (t % 9000) as f64 / 9000.0;
                    pct(60.0 + (peak - 60.0) * phase) + noise(t)
                }),
            ),
            // +30% of the limit for 2 s of every 8 s, from 60%.
            (
                "burst",
                Box::new(move |t| pct(if t % 8000 < 2000 { 90.0 } else { 60.0 }) + noise(t)),
            ),
            // Held steady at 98%.
            ("steady at 98%", Box::new(move |t| pct(98.0) + noise(t))),
            // A warm-up ramp from 30% that levels off at 85% by 40 s.
            (
                "warm-up plateau",
                Box::new(move |t| {
                    let s = (t as f64 / 1000.0).min(40.0);
                    pct(30.0 + 55.0 * (1.0 - (1.0 - s / 40.0).powi(2))) + noise(t)
                }),
            ),
            // A cache refilled once: +25% over 10 s at 50 s, from 65% to 90%.
            (
                "cache refill",
                Box::new(move |t| {
                    let s = t as f64 / 1000.0;
                    pct(65.0 + 25.0 * ((s - 50.0) / 10.0).clamp(0.0, 1.0)) + noise(t)
                }),
            ),
            // A sawtooth whose GC runs late once: one rise goes on twice as long (to 96%).
            (
                "late gc",
                Box::new(move |t| {
                    let phase = match t {
                        45_000..=62_999 => (t - 45_000) as f64 / 9000.0,
                        _ => (t % 9000) as f64 / 9000.0,
                    };
                    pct(60.0 + 18.0 * phase) + noise(t)
                }),
            ),
        ];
        for (name, shape) in &shapes {
            for drain_ms in [500, 3000, 15_000] {
                let mut policy = defaults_at_400_mib(drain_ms);
                let fired = run_shape(&mut policy, 90_000, shape);
                assert!(fired.is_empty(), "{name}, {drain_ms} ms drains: {fired:?}");
            }
        }
    }

    #[test]
    fn leaks_are_still_caught_near_the_limit() {
        let limit = 400 * MIB;
        // 0.2 MiB/s from 95%, 3 s drains: a crossing at about 100 s, by strikes.
        let mut slow = defaults_at_400_mib(3000);
        let start = share(limit, 95.0);
        let fired = run_shape(&mut slow, 150_000, |t| start + t * MIB / 5000);
        let (_, Verdict::Recycle { value, .. }) = fired[0] else {
            panic!("{fired:?}")
        };
        assert!(value < share(limit, 100.5), "{} MiB", value / MIB);
        // A step that stays: recycled by strikes within a few fast samples.
        let mut step = defaults_at_400_mib(3000);
        let fired = run_shape(&mut step, 90_000, |t| {
            share(limit, if t < 50_000 { 70.0 } else { 101.0 })
        });
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].0 < 50_000 + 1000 + 3 * 25, "{fired:?}");
        // 4 MiB/s with 15 s jobs, seen for over a minute: predicted, so the drain ends near
        // the limit, not 60 MiB past it.
        let mut fast = defaults_at_400_mib(15_000);
        let fired = run_shape(&mut fast, 120_000, |t| {
            share(limit, 10.0) + t * 4 * MIB / 1000
        });
        let (
            _,
            Verdict::Recycle {
                value, prediction, ..
            },
        ) = fired[0]
        else {
            panic!("{fired:?}")
        };
        let prediction = prediction.expect("predicted");
        assert!(
            value + 60 * MIB >= limit && value < limit,
            "{} MiB",
            value / MIB
        );
        assert!(prediction.projected < limit + 8 * MIB, "{prediction:?}");
    }

    #[test]
    fn a_flat_or_falling_series_or_no_tracked_work_is_never_predicted() {
        for (expected, series) in [
            (Some(5000), vec![140u64; 40]),
            (Some(5000), (0..40).map(|i| 145 - i).collect::<Vec<u64>>()),
            (None, (0..40).map(|i| 100 + i).collect::<Vec<u64>>()),
        ] {
            let mut policy = adaptive(3);
            policy.set_expected_drain(expected);
            for (i, mib) in series.iter().enumerate() {
                let verdicts = policy.observe(&sample(i as u64 * 25, mib * MIB, MIB));
                assert!(recycles(&verdicts).is_empty(), "{expected:?} at {mib} MiB");
            }
        }
    }

    #[test]
    fn a_slow_trend_far_from_the_limit_keeps_the_slow_interval() {
        // 2 MiB/s at 66 MiB: the limit is 42 s away, far beyond 3 intervals.
        let mut policy = adaptive(3);
        for (i, mib) in [60u64, 62, 64, 66].iter().enumerate() {
            policy.observe(&sample(i as u64 * 1000, mib * MIB, MIB));
        }
        assert_eq!(policy.next_interval_ms(), 1000);
    }

    #[test]
    fn a_value_exactly_at_the_limit_is_a_strike() {
        let mut policy = adaptive(3);
        // (Over the limit at the first sample would be `misconfigured`.)
        policy.observe(&sample(0, 100 * MIB, MIB));
        let fired: Vec<Vec<Reason>> = (1..4)
            .map(|i| recycles(&policy.observe(&sample(i * 1000, 150 * MIB, MIB))))
            .collect();
        assert_eq!(fired, vec![vec![], vec![], vec![Reason::Rss]]);
    }

    #[test]
    fn a_dip_under_the_limit_restarts_the_strikes_even_while_a_prediction_holds() {
        let mut policy = adaptive(3);
        policy.set_expected_drain(Some(2000));
        let mut fired = Vec::new();
        // Two strikes over the limit, a dip under it (still rising: a prediction), then over
        // again: one strike, not three.
        for (i, mib) in [100u64, 151, 152, 149, 151].iter().enumerate() {
            fired.push(recycles(&policy.observe(&sample(
                i as u64 * 25,
                mib * MIB,
                MIB,
            ))));
        }
        assert!(fired.iter().all(Vec::is_empty), "{fired:?}");
    }

    fn rss_pressures(verdicts: &[Verdict]) -> usize {
        verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v,
                    Verdict::Pressure {
                        reason: Reason::Rss,
                        ..
                    }
                )
            })
            .count()
    }

    #[test]
    fn a_resized_limit_rearms_its_pressure_report_and_its_recycle() {
        let at = |rss_mib: u64| Limits {
            rss: Some(rss_mib * MIB),
            strikes: 1,
            ..limits()
        };
        let mut policy = Policy::new(at(100));
        policy.observe(&sample(0, 10 * MIB, MIB));
        assert_eq!(rss_pressures(&policy.observe(&sample(1, 85 * MIB, MIB))), 1);
        // The same limit again (a resize of something else): still reported.
        policy.set_limits(at(100));
        assert_eq!(rss_pressures(&policy.observe(&sample(2, 85 * MIB, MIB))), 0);
        // Raised to 105 MiB: 85 MiB is 81% of it, a new pressure.
        policy.set_limits(at(105));
        assert_eq!(policy.limits().rss, Some(105 * MIB));
        assert_eq!(rss_pressures(&policy.observe(&sample(3, 85 * MIB, MIB))), 1);
        assert_eq!(
            recycles(&policy.observe(&sample(4, 120 * MIB, MIB))),
            vec![Reason::Rss]
        );
        policy.set_limits(at(105));
        assert!(recycles(&policy.observe(&sample(5, 120 * MIB, MIB))).is_empty());
        // Still over the moved limit: a recycle for the new one.
        policy.set_limits(at(110));
        assert_eq!(
            recycles(&policy.observe(&sample(6, 120 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn a_resized_ceiling_rearms_its_recycle() {
        let at = |ceiling_mib: u64| Limits {
            ceiling: Some(ceiling_mib * MIB),
            strikes: 1,
            ..Limits::default()
        };
        let mut policy = Policy::new(at(200));
        policy.observe(&sample(0, 10 * MIB, MIB));
        assert_eq!(
            recycles(&policy.observe(&sample(1000, 250 * MIB, MIB))),
            vec![Reason::Rss]
        );
        policy.set_limits(at(200));
        assert!(recycles(&policy.observe(&sample(2000, 250 * MIB, MIB))).is_empty());
        policy.set_limits(at(220));
        assert_eq!(
            recycles(&policy.observe(&sample(3000, 250 * MIB, MIB))),
            vec![Reason::Rss]
        );
    }

    #[test]
    fn shares_as_json_name_each_limit_and_null_one_not_in_force() {
        let policy = Policy::new(Limits {
            rss: Some(400 * MIB),
            heap: Some(200 * MIB),
            ..Limits::default()
        });
        let shares = policy.shares(&sample(1000, 300 * MIB, 180 * MIB));
        assert_eq!(
            shares.to_json(),
            serde_json::json!({ "rss": 0.75, "heap": 0.9, "growth": null, "ceiling": null })
        );
    }

    #[test]
    fn growth_is_read_from_the_recent_samples_or_the_per_second_lows() {
        // Ten samples within one second, RSS +10 MiB/s and heap +5 MiB/s: one second of
        // lows says nothing yet, the recent samples do.
        let mut policy = Policy::new(limits());
        for t in (0..1000).step_by(100) {
            policy.observe(&sample(
                t,
                20 * MIB + t * 10 * MIB / 1000,
                MIB + t * 5 * MIB / 1000,
            ));
        }
        let mib_per_s =
            |slope: Option<f64>| slope.map(|s| (s / MIB as f64 * 100.0).round() / 100.0);
        assert_eq!(mib_per_s(policy.growth_per_s(false, 900)), Some(10.0));
        assert_eq!(mib_per_s(policy.growth_per_s(true, 900)), Some(5.0));
        // Three samples a second apart: too few for the recent slope, three seconds of lows.
        let mut policy = Policy::new(limits());
        for t in [0, 1000, 2000] {
            policy.observe(&sample(t, 20 * MIB + t * 2 * MIB / 1000, MIB));
        }
        assert_eq!(mib_per_s(policy.growth_per_s(false, 2000)), Some(2.0));
        assert_eq!(Policy::new(limits()).growth_per_s(false, 0), None);
    }

    #[test]
    fn a_zero_limit_has_no_share() {
        let policy = Policy::new(Limits {
            rss: Some(0),
            heap: Some(0),
            ceiling: Some(0),
            ..Limits::default()
        });
        let shares = policy.shares(&sample(1000, 300 * MIB, 180 * MIB));
        assert_eq!(
            (shares.rss, shares.heap, shares.ceiling),
            (None, None, None)
        );
        assert_eq!(shares.highest(), 0.0);
    }

    #[test]
    fn near_the_container_budget_sampling_turns_fast() {
        let (threshold, ceiling) = (630 * MIB, 665 * MIB);
        let mut policy = adaptive(3);
        policy.observe(&sample(0, 60 * MIB, MIB));
        policy.observe_container(500 * MIB, threshold, ceiling, true, 0, true);
        assert_eq!(policy.next_interval_ms(), 1000, "79% of the budget");
        policy.observe(&sample(1000, 60 * MIB, MIB));
        policy.observe_container(504 * MIB, threshold, ceiling, true, 1000, false);
        assert_eq!(
            policy.next_interval_ms(),
            25,
            "80% of it, even a kept reading"
        );
    }

    #[test]
    fn a_working_set_under_the_budget_restarts_the_strikes_and_one_at_it_counts() {
        let (threshold, ceiling) = (630 * MIB, 665 * MIB);
        let mut policy = Policy::new(Limits {
            strikes: 3,
            ..Limits::default()
        });
        let fired: Vec<bool> = [640, 640, 600, 640, 640, 630]
            .iter()
            .map(|mib| {
                policy
                    .observe_container(mib * MIB, threshold, ceiling, true, 60_000, true)
                    .is_some()
            })
            .collect();
        assert_eq!(fired, [false, false, false, false, false, true]);
    }
}
