//! Pure: whether a due automatic recycle goes now, waits for the fleet or its siblings,
//! or bypasses both because a hard limit is near. The gates are asked through closures
//! (a fleet poll, a sibling-queue lock attempt) so each is consulted only when the rules
//! reach it, and tests pass plain answers.

use crate::fleet::FleetAdmission;
use crate::policy::{HardLimit, Reason, Sample};
use crate::stagger::Admission;
use crate::units::format_size;

/// A queued recycle skips the sibling queue once its value reaches limit x this.
const STAGGER_CEILING: f64 = 1.25;
/// A waiting recycle goes before the used heap, growing, would reach this share of the
/// old-space limit, and at once past `HEAP_AT_ONCE_SHARE`. V8 called near-heap-limit with
/// as little as 84% of it used here (fragmentation and garbage not yet collected fill the
/// rest), so with the default `MAX_HEAP` (85%) a growing heap does not wait at all; a
/// flat one may.
const HEAP_HARD_SHARE: f64 = 0.80;
const HEAP_AT_ONCE_SHARE: f64 = 0.95;
/// Time a waiting recycle keeps in hand beyond the drain it expects (sampling, the
/// drain's own start, a GC).
pub(super) const WAIT_MARGIN_MS: u64 = 2000;

/// A figure a waiting recycle must not reach, and how fast it grows.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Gauge {
    pub value: u64,
    pub slope_per_s: Option<f64>,
}

/// The limits a waiting recycle must never reach: a share of what V8's old space may grow
/// to (`heap_limit`; past it V8 collects without end, then calls near-heap-limit with
/// little headroom left, or aborts) and the RSS ceiling (the OOM killer is near).
pub(super) fn hard_limits(
    heap_limit: u64,
    heap: Gauge,
    ceiling: Option<u64>,
    rss: Gauge,
) -> Vec<HardLimit> {
    let mut limits = Vec::with_capacity(2);
    if heap_limit > 0 {
        let limit = (heap_limit as f64 * HEAP_HARD_SHARE) as u64;
        limits.push(HardLimit {
            name: format!(
                "{:.0}% of V8's heap limit ({})",
                HEAP_HARD_SHARE * 100.0,
                format_size(limit)
            ),
            value: heap.value,
            limit,
            at_once: (heap_limit as f64 * HEAP_AT_ONCE_SHARE) as u64,
            slope_per_s: heap.slope_per_s,
        });
    }
    if let Some(ceiling) = ceiling {
        limits.push(HardLimit {
            name: format!("the RSS ceiling ({})", format_size(ceiling)),
            value: rss.value,
            limit: ceiling,
            at_once: ceiling,
            slope_per_s: rss.slope_per_s,
        });
    }
    limits
}

/// The waiting recycle's gauge read again from the latest sample (`rss`: the RSS the
/// policy measures, which may be PSS or the container's working set).
pub(super) fn current_value(reason: Reason, latest: &Sample, rss: u64, before: u64) -> u64 {
    match reason {
        Reason::Rss | Reason::Growth => rss,
        Reason::Heap => latest.heap_used,
        Reason::Jobs => latest.jobs_done,
        Reason::Age => latest.uptime_ms,
        _ => before,
    }
}

/// Why the waiting recycle must go now (`None`: it may wait): a hard limit reached or
/// projected within `lead_ms`, or its own value far over its limit (said instead).
pub(super) fn emergency(
    hard_limits: &[HardLimit],
    lead_ms: u64,
    reason: Reason,
    value: u64,
    limit: u64,
) -> Option<String> {
    if reason.is_bytes() && value as f64 >= limit as f64 * STAGGER_CEILING {
        return Some(format!(
            "over the ceiling ({:.0}% of its limit)",
            STAGGER_CEILING * 100.0
        ));
    }
    hard_limits
        .iter()
        .find_map(|hard| hard.must_go_within(lead_ms))
}

/// What the fleet said, as the `recycle` event records it: (outcome, why, waited ms).
pub(super) type FleetRecord = (String, Option<String>, u64);

#[derive(Debug, PartialEq)]
pub(super) enum Next {
    /// Hand JS the fleet ask, then wait for its answer.
    AskFleet,
    /// Wait on (`fleet` or `siblings`, why).
    Wait(&'static str, String),
    /// Recycle now; `stagger` is what the sibling queue said (`None`: not asked).
    Go { stagger: Option<(String, u64)> },
}

#[derive(Debug, PartialEq)]
pub(super) struct Decision {
    /// The fleet's final outcome, recorded on the recycle once (later tries skip the fleet).
    pub fleet: Option<FleetRecord>,
    /// Forget the fleet ask under way (a bypass or a timeout goes without its lease).
    pub reset_fleet: bool,
    pub next: Next,
}

/// First the fleet (`fleet`: `None` without one, or once it decided), then the sibling
/// queue (`siblings`: `None` without one). Nobody may hold a recycle back past
/// `max_wait_ms`, not even a stuck fleet or a hostile lock holder.
pub(super) fn decide(
    emergency: Option<&str>,
    waited_ms: u64,
    max_wait_ms: u64,
    fleet: Option<impl FnOnce() -> FleetAdmission>,
    siblings: Option<impl FnOnce() -> Admission>,
) -> Decision {
    let mut decision = Decision {
        fleet: None,
        reset_fleet: false,
        next: Next::Go { stagger: None },
    };
    // A grant still passes the sibling queue: on one host its rules also keep a server
    // from draining before the last recycled sibling's replacement listens. A fleet that
    // cannot be used falls back to it; a timeout or a bypass goes ahead.
    let mut go_local = true;
    if let Some(poll) = fleet {
        let (outcome, why) = if let Some(why) = emergency {
            decision.reset_fleet = true;
            ("bypass", Some(why.to_string()))
        } else {
            match poll() {
                FleetAdmission::Ask => {
                    decision.next = Next::AskFleet;
                    return decision;
                }
                FleetAdmission::Wait(why) if waited_ms >= max_wait_ms => {
                    decision.reset_fleet = true;
                    ("timeout", Some(format!("waited {waited_ms} ms ({why})")))
                }
                FleetAdmission::Wait(why) => {
                    decision.next = Next::Wait("fleet", why);
                    return decision;
                }
                FleetAdmission::Granted => ("granted", None),
                FleetAdmission::Unavailable(why) => ("unavailable", Some(why)),
            }
        };
        go_local = matches!(outcome, "granted" | "unavailable");
        decision.fleet = Some((outcome.to_string(), why, waited_ms));
    }
    let Some(try_admit) = siblings.filter(|_| go_local) else {
        return decision;
    };
    let admission = match emergency {
        Some(why) => format!("bypass: {why}"),
        None => match try_admit() {
            Admission::Granted => "granted".to_string(),
            Admission::Unavailable(why) => format!("unavailable: {why}"),
            Admission::Wait(why) if waited_ms >= max_wait_ms => {
                format!("timeout: waited {waited_ms} ms ({why})")
            }
            Admission::Wait(why) => {
                decision.next = Next::Wait("siblings", why);
                return decision;
            }
        },
    };
    decision.next = Next::Go {
        stagger: Some((admission, waited_ms)),
    };
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MIB: u64 = 1 << 20;
    const MAX_WAIT: u64 = 60_000;

    /// A fleet or sibling answer that must not be asked for.
    fn never<T>() -> Option<impl FnOnce() -> T> {
        Some(|| -> T { panic!("this gate must not be consulted") })
    }

    fn none<T>() -> Option<fn() -> T> {
        None
    }

    fn heap_limits(used: u64, slope_per_s: Option<f64>) -> Vec<HardLimit> {
        hard_limits(
            1000 * MIB,
            Gauge {
                value: used,
                slope_per_s,
            },
            None,
            Gauge::default(),
        )
    }

    #[test]
    fn the_heap_limits_are_80_and_95_percent_of_the_old_space_limit() {
        let limits = heap_limits(0, None);
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].limit, 800 * MIB);
        assert_eq!(limits[0].at_once, 950 * MIB);
        assert_eq!(limits[0].name, "80% of V8's heap limit (800 MiB)");
        assert!(hard_limits(0, Gauge::default(), None, Gauge::default()).is_empty());
    }

    #[test]
    fn a_flat_heap_above_95_percent_bypasses_at_once() {
        let limits = heap_limits(951 * MIB, None);
        let why = emergency(&limits, 2000, Reason::Heap, 951 * MIB, 900 * MIB);
        assert_eq!(why.as_deref(), Some("at 951 MiB of 950 MiB"));
        let decision = decide(why.as_deref(), 10, MAX_WAIT, never(), never());
        assert_eq!(
            decision,
            Decision {
                fleet: Some(("bypass".into(), Some("at 951 MiB of 950 MiB".into()), 10)),
                reset_fleet: true,
                next: Next::Go { stagger: None },
            }
        );
        // Without a fleet the sibling queue is not asked either, the bypass is recorded.
        let decision = decide(why.as_deref(), 10, MAX_WAIT, none(), never());
        assert_eq!(
            decision.next,
            Next::Go {
                stagger: Some(("bypass: at 951 MiB of 950 MiB".into(), 10))
            }
        );
    }

    #[test]
    fn a_flat_heap_between_80_and_95_percent_may_wait() {
        let limits = heap_limits(900 * MIB, Some(0.0));
        assert_eq!(
            emergency(&limits, 2000, Reason::Heap, 900 * MIB, 850 * MIB),
            None
        );
    }

    #[test]
    fn a_growing_heap_waits_while_its_projection_stays_under_80_percent() {
        // 100 MiB left at 10 MiB/s: 10 s, more than the 2 s lead.
        let limits = heap_limits(700 * MIB, Some(10.0 * MIB as f64));
        assert_eq!(
            emergency(&limits, 2000, Reason::Heap, 700 * MIB, 650 * MIB),
            None
        );
        let decision = decide(
            None,
            10,
            MAX_WAIT,
            none(),
            Some(|| Admission::Wait("a sibling is recycling".into())),
        );
        assert_eq!(
            decision.next,
            Next::Wait("siblings", "a sibling is recycling".into())
        );
        assert_eq!(decision.fleet, None);
        // The same heap with a longer drain ahead must go now.
        let why = emergency(&limits, 12_000, Reason::Heap, 700 * MIB, 650 * MIB);
        assert!(why
            .as_deref()
            .is_some_and(|w| w.starts_with("700 MiB would reach 80% of V8's heap limit")));
    }

    #[test]
    fn the_rss_ceiling_is_a_hard_limit() {
        let limits = hard_limits(
            0,
            Gauge::default(),
            Some(500 * MIB),
            Gauge {
                value: 500 * MIB,
                slope_per_s: None,
            },
        );
        assert_eq!(limits[0].name, "the RSS ceiling (500 MiB)");
        assert!(emergency(&limits, 0, Reason::Rss, 500 * MIB, 450 * MIB).is_some());
    }

    #[test]
    fn a_value_at_125_percent_of_its_own_limit_goes_but_a_count_does_not() {
        let why = emergency(&[], 0, Reason::Rss, 125, 100);
        assert_eq!(why.as_deref(), Some("over the ceiling (125% of its limit)"));
        assert_eq!(emergency(&[], 0, Reason::Rss, 124, 100), None);
        assert_eq!(emergency(&[], 0, Reason::Jobs, 1000, 100), None);
    }

    #[test]
    fn an_unavailable_fleet_falls_back_to_the_sibling_queue() {
        let decision = decide(
            None,
            30,
            MAX_WAIT,
            Some(|| FleetAdmission::Unavailable("redis down".into())),
            Some(|| Admission::Granted),
        );
        assert_eq!(
            decision,
            Decision {
                fleet: Some(("unavailable".into(), Some("redis down".into()), 30)),
                reset_fleet: false,
                next: Next::Go {
                    stagger: Some(("granted".into(), 30))
                },
            }
        );
    }

    #[test]
    fn a_granted_lease_still_waits_for_siblings() {
        let decision = decide(
            None,
            5,
            MAX_WAIT,
            Some(|| FleetAdmission::Granted),
            Some(|| Admission::Wait("gap".into())),
        );
        assert_eq!(decision.fleet, Some(("granted".into(), None, 5)));
        assert_eq!(decision.next, Next::Wait("siblings", "gap".into()));
    }

    #[test]
    fn a_stagger_that_grants_lets_the_recycle_go() {
        let asked = Cell::new(0);
        let decision = decide(
            None,
            0,
            MAX_WAIT,
            none(),
            Some(|| {
                asked.set(asked.get() + 1);
                Admission::Granted
            }),
        );
        assert_eq!(asked.get(), 1);
        assert_eq!(
            decision.next,
            Next::Go {
                stagger: Some(("granted".into(), 0))
            }
        );
        let decision = decide(
            None,
            0,
            MAX_WAIT,
            none(),
            Some(|| Admission::Unavailable("no flock".into())),
        );
        assert_eq!(
            decision.next,
            Next::Go {
                stagger: Some(("unavailable: no flock".into(), 0))
            }
        );
    }

    #[test]
    fn the_first_fleet_poll_asks_and_a_waiting_fleet_holds_the_siblings_back() {
        let decision = decide(None, 0, MAX_WAIT, Some(|| FleetAdmission::Ask), never());
        assert_eq!(decision.next, Next::AskFleet);
        assert_eq!(decision.fleet, None);
        let decision = decide(
            None,
            100,
            MAX_WAIT,
            Some(|| FleetAdmission::Wait("3 of 3 leases held".into())),
            never(),
        );
        assert_eq!(
            decision.next,
            Next::Wait("fleet", "3 of 3 leases held".into())
        );
        assert!(!decision.reset_fleet);
    }

    #[test]
    fn nobody_holds_a_recycle_past_the_maximum_wait() {
        let decision = decide(
            None,
            MAX_WAIT,
            MAX_WAIT,
            Some(|| FleetAdmission::Wait("stuck".into())),
            never(),
        );
        assert_eq!(
            decision,
            Decision {
                fleet: Some((
                    "timeout".into(),
                    Some(format!("waited {MAX_WAIT} ms (stuck)")),
                    MAX_WAIT
                )),
                reset_fleet: true,
                next: Next::Go { stagger: None },
            }
        );
        let decision = decide(
            None,
            MAX_WAIT + 1,
            MAX_WAIT,
            none(),
            Some(|| Admission::Wait("held".into())),
        );
        assert_eq!(
            decision.next,
            Next::Go {
                stagger: Some((
                    format!("timeout: waited {} ms (held)", MAX_WAIT + 1),
                    MAX_WAIT + 1
                ))
            }
        );
    }

    #[test]
    fn the_gauge_follows_the_reason() {
        let latest = Sample {
            heap_used: 7,
            jobs_done: 8,
            uptime_ms: 9,
            ..Sample::default()
        };
        assert_eq!(current_value(Reason::Rss, &latest, 6, 1), 6);
        assert_eq!(current_value(Reason::Growth, &latest, 6, 1), 6);
        assert_eq!(current_value(Reason::Heap, &latest, 6, 1), 7);
        assert_eq!(current_value(Reason::Jobs, &latest, 6, 1), 8);
        assert_eq!(current_value(Reason::Age, &latest, 6, 1), 9);
        assert_eq!(current_value(Reason::Manual, &latest, 6, 1), 1);
    }
}
