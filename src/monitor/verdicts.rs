//! Pure: what each policy verdict becomes (an event, the baseline check, a recycle to
//! admit), and the tick's sleep. The tick (tick.rs) carries these out.

use std::time::Duration;

use crate::config::Config;
use crate::event::{self, Event, Recycle};
use crate::policy::{Limits, Reason, Verdict};
use crate::units::format_size;

/// The `stats()` counter an event counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counter {
    Pressure,
    Misconfigured,
}

#[derive(Debug, PartialEq)]
pub(super) enum Action {
    Emit(Event, Option<Counter>),
    /// The `baseline` event; `ready`: send READY=1 first (`READY=baseline`, and it passed).
    Baseline {
        baseline: Box<event::Baseline>,
        ready: bool,
    },
    /// An automatic recycle, to be admitted (fleet, siblings) then triggered.
    Recycle(Recycle),
}

pub(super) fn action(verdict: Verdict, limits: &Limits, config: &Config) -> Action {
    match verdict {
        Verdict::Pressure {
            reason,
            value,
            limit,
        } => Action::Emit(
            Event::Pressure {
                reason,
                value,
                limit,
            },
            Some(Counter::Pressure),
        ),
        Verdict::Misconfigured {
            reason,
            value,
            limit,
        } => Action::Emit(
            Event::Misconfigured {
                reason,
                value,
                limit,
            },
            Some(Counter::Misconfigured),
        ),
        Verdict::Baseline { rss, heap_used } => {
            let baseline = baseline(limits, config, rss, heap_used);
            let ready = baseline.passed() && config.ready_on_baseline;
            Action::Baseline {
                baseline: Box::new(baseline),
                ready,
            }
        }
        Verdict::Leak {
            slope_per_min,
            threshold_per_min,
            window_ms,
            points,
        } => Action::Emit(
            Event::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            },
            None,
        ),
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
            // The limit before JITTER, for counts and ages.
            recycle.configured_limit = match reason {
                Reason::Jobs => config.max_jobs,
                Reason::Age => config.max_age_ms,
                _ => None,
            };
            Action::Recycle(recycle)
        }
    }
}

/// The baseline and its share of each limit against `READY_MAX_BASELINE`.
pub(super) fn baseline(
    limits: &Limits,
    config: &Config,
    rss: u64,
    heap_used: u64,
) -> event::Baseline {
    let rss_limit = limits.rss.or(limits.ceiling);
    let max_share = config.ready_max_baseline;
    let mut failures = Vec::new();
    for (name, value, limit) in [("rss", rss, rss_limit), ("heap", heap_used, limits.heap)] {
        if let Some(limit) = limit.filter(|l| *l > 0) {
            let share = value as f64 / limit as f64;
            if share > max_share {
                failures.push(format!(
                    "{name} {} is {:.0}% of limit {} (at most {:.0}%)",
                    format_size(value),
                    share * 100.0,
                    format_size(limit),
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
        warmup_ms: config.warmup_ms,
        max_share,
        failures,
    }
}

/// How long a drain started now would take: what is left of the youngest tracked job at
/// its usual (p90) duration (`youngest_ms`, `now_ms` on the epoch clock). A worker running
/// one job at a time decides at job boundaries: the decision must also cover the job that
/// would start after this one, or that job would carry it over the limit before the next
/// chance to decide.
pub(super) fn expected_drain_ms(
    p90_ms: u64,
    youngest_ms: u64,
    concurrent: bool,
    now_ms: u64,
) -> u64 {
    let left = p90_ms.saturating_sub(now_ms.saturating_sub(youngest_ms));
    if concurrent {
        left
    } else {
        left + p90_ms
    }
}

/// The sampler's sleep: the policy's interval, at most half the systemd watchdog period,
/// and no later than the drain deadline (at least 1 ms, so a passed one does not spin).
pub(super) fn sleep_for(
    interval_ms: u64,
    watchdog_every: Option<Duration>,
    to_deadline: Option<Duration>,
) -> Duration {
    let mut sleep = Duration::from_millis(interval_ms);
    if let Some(every) = watchdog_every {
        sleep = sleep.min(every / 2);
    }
    match to_deadline {
        Some(left) => sleep.min(left.max(Duration::from_millis(1))),
        None => sleep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits {
            rss: Some(400 * MIB),
            ceiling: Some(950 * MIB),
            heap: Some(200 * MIB),
            ..Limits::default()
        }
    }

    #[test]
    fn pressure_and_misconfigured_are_counted_events() {
        let config = Config::default();
        let pressure = action(
            Verdict::Pressure {
                reason: Reason::Rss,
                value: 1,
                limit: 2,
            },
            &limits(),
            &config,
        );
        assert_eq!(
            pressure,
            Action::Emit(
                Event::Pressure {
                    reason: Reason::Rss,
                    value: 1,
                    limit: 2
                },
                Some(Counter::Pressure)
            )
        );
        let misconfigured = action(
            Verdict::Misconfigured {
                reason: Reason::Heap,
                value: 3,
                limit: 2,
            },
            &limits(),
            &config,
        );
        assert!(matches!(
            misconfigured,
            Action::Emit(
                Event::Misconfigured { value: 3, .. },
                Some(Counter::Misconfigured)
            )
        ));
    }

    #[test]
    fn a_baseline_over_its_share_fails_with_a_sentence_and_sends_no_ready() {
        let config = Config {
            ready_max_baseline: 0.5,
            ready_on_baseline: true,
            ..Config::default()
        };
        let Action::Baseline { baseline, ready } = action(
            Verdict::Baseline {
                rss: 300 * MIB,
                heap_used: 50 * MIB,
            },
            &limits(),
            &config,
        ) else {
            panic!("a baseline verdict is a baseline action");
        };
        assert!(!ready);
        assert_eq!(
            baseline.failures,
            vec!["rss 300 MiB is 75% of limit 400 MiB (at most 50%)".to_string()]
        );
        let Action::Baseline { ready, .. } = action(
            Verdict::Baseline {
                rss: 100 * MIB,
                heap_used: 50 * MIB,
            },
            &limits(),
            &config,
        ) else {
            panic!("a baseline verdict is a baseline action");
        };
        assert!(ready, "passed with READY=baseline");
    }

    #[test]
    fn without_an_rss_limit_the_baseline_is_judged_against_the_ceiling() {
        let limits = Limits {
            rss: None,
            ..limits()
        };
        let config = Config {
            ready_max_baseline: 0.5,
            ..Config::default()
        };
        let baseline = baseline(&limits, &config, 450 * MIB, 0);
        assert_eq!(baseline.rss_limit, Some(950 * MIB));
        assert!(baseline.passed(), "450 MiB is 47% of the 950 MiB ceiling");
    }

    #[test]
    fn a_recycle_of_jobs_or_age_carries_the_configured_limit() {
        let config = Config {
            max_jobs: Some(1000),
            max_age_ms: Some(60_000),
            ..Config::default()
        };
        let verdict = |reason| Verdict::Recycle {
            reason,
            value: 10,
            limit: 9,
            strikes: 3,
            ceiling: false,
            prediction: None,
        };
        for (reason, configured) in [
            (Reason::Jobs, Some(1000)),
            (Reason::Age, Some(60_000)),
            (Reason::Rss, None),
        ] {
            let Action::Recycle(recycle) = action(verdict(reason), &limits(), &config) else {
                panic!("a recycle verdict is a recycle");
            };
            assert_eq!(recycle.configured_limit, configured, "{reason:?}");
            assert_eq!((recycle.value, recycle.limit, recycle.strikes), (10, 9, 3));
        }
    }

    #[test]
    fn the_expected_drain_covers_the_next_job_when_jobs_run_one_at_a_time() {
        // p90 10 s, the youngest job started 4 s ago: 6 s left.
        assert_eq!(expected_drain_ms(10_000, 96_000, true, 100_000), 6_000);
        assert_eq!(expected_drain_ms(10_000, 96_000, false, 100_000), 16_000);
        // Overrun, or a start ahead of this clock: nothing left / all of it.
        assert_eq!(expected_drain_ms(10_000, 0, true, 100_000), 0);
        assert_eq!(expected_drain_ms(10_000, 200_000, true, 100_000), 10_000);
    }

    #[test]
    fn the_sleep_is_the_shortest_of_interval_half_watchdog_and_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(sleep_for(1000, None, None), ms(1000));
        assert_eq!(sleep_for(1000, Some(ms(800)), None), ms(400));
        assert_eq!(sleep_for(1000, Some(ms(800)), Some(ms(30))), ms(30));
        assert_eq!(sleep_for(1000, None, Some(Duration::ZERO)), ms(1));
    }

    #[test]
    fn a_baseline_exactly_at_its_share_passes() {
        let config = Config {
            ready_max_baseline: 0.5,
            ..Config::default()
        };
        // 200 of 400 MiB and 100 of 200 MiB: 50% each, the most allowed.
        let at_share = baseline(&limits(), &config, 200 * MIB, 100 * MIB);
        assert_eq!(at_share.failures, Vec::<String>::new());
        let over = baseline(&limits(), &config, 200 * MIB, 100 * MIB + 1);
        assert_eq!(over.failures.len(), 1, "{:?}", over.failures);
        assert!(over.failures[0].starts_with("heap 100 MiB is 50% of limit 200 MiB"));
    }

    #[test]
    fn a_zero_limit_judges_nothing() {
        let limits = Limits {
            rss: Some(0),
            ceiling: None,
            heap: Some(0),
            ..Limits::default()
        };
        let config = Config {
            ready_max_baseline: 0.5,
            ..Config::default()
        };
        let baseline = baseline(&limits, &config, 300 * MIB, 50 * MIB);
        assert_eq!(baseline.failures, Vec::<String>::new());
        assert_eq!(
            (baseline.rss_limit, baseline.heap_limit),
            (Some(0), Some(0))
        );
    }
}
