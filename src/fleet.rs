//! The native half of fleet-wide staggering: a gate a pending recycle passes before it
//! drains. The lease itself lives in Redis and is taken by JS (`js/fleet.js`, through the
//! app's ioredis client); this side only asks, waits and bounds the wait.
//!
//! The rule that matters: the fleet may delay a recycle, never prevent one. JS answers
//! `granted`, `wait` (another worker holds the lease or the gap runs) or `unavailable`
//! (Redis down, slow or failing). A JS side that stops answering (its loop is blocked, its
//! client hangs) counts as unavailable after `silence`, so the recycle goes ahead with the
//! local rules. The monitor also bounds the whole wait (`STAGGER_MAX_WAIT`).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What JS said about the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAnswer {
    Granted,
    Wait(String),
    Unavailable(String),
}

/// What the monitor does with its pending recycle now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAdmission {
    /// Ask JS for a lease (first call for this recycle): deliver the ask, then wait.
    Ask,
    Wait(String),
    Granted,
    Unavailable(String),
}

#[derive(Debug, Default)]
struct GateState {
    /// When JS was asked for this recycle's lease.
    asked_at: Option<Instant>,
    /// When JS last answered (a `wait` counts: it is alive and trying).
    heard_at: Option<Instant>,
    answer: Option<FleetAnswer>,
}

pub struct FleetGate {
    state: Mutex<GateState>,
    /// How long JS may stay silent before the fleet counts as unavailable.
    silence: Duration,
}

impl FleetGate {
    /// `timeout_ms`: FLEET_TIMEOUT; JS gets a few of them to answer, at least 2 s.
    pub fn new(timeout_ms: u64) -> FleetGate {
        FleetGate {
            state: Mutex::new(GateState::default()),
            silence: Duration::from_millis(timeout_ms.saturating_mul(3).max(2_000)),
        }
    }

    /// Where the pending recycle stands. A final answer (granted, unavailable) is taken:
    /// the next recycle (a dry run recycles again) asks anew.
    pub fn poll(&self, now: Instant) -> FleetAdmission {
        let mut state = self.state.lock();
        let Some(asked_at) = state.asked_at else {
            state.asked_at = Some(now);
            state.heard_at = None;
            state.answer = None;
            return FleetAdmission::Ask;
        };
        let heard = state.heard_at.unwrap_or(asked_at);
        let admission = match state.answer.clone() {
            Some(FleetAnswer::Granted) => FleetAdmission::Granted,
            Some(FleetAnswer::Unavailable(why)) => FleetAdmission::Unavailable(why),
            _ if now.saturating_duration_since(heard) >= self.silence => {
                FleetAdmission::Unavailable(format!(
                    "no answer from the fleet client in {} ms",
                    now.saturating_duration_since(heard).as_millis()
                ))
            }
            Some(FleetAnswer::Wait(why)) => FleetAdmission::Wait(why),
            None => FleetAdmission::Wait("asking the fleet".to_string()),
        };
        if !matches!(admission, FleetAdmission::Wait(_)) {
            *state = GateState::default();
        }
        admission
    }

    /// JS's answer; ignored when nothing was asked (a late answer after a decision).
    /// Returns whether it was taken.
    pub fn answer(&self, answer: FleetAnswer, now: Instant) -> bool {
        let mut state = self.state.lock();
        if state.asked_at.is_none() {
            return false;
        }
        state.heard_at = Some(now);
        state.answer = Some(answer);
        true
    }

    /// Forgets the question (the recycle went ahead another way).
    pub fn reset(&self) {
        *self.state.lock() = GateState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn asks_once_then_waits_for_the_answer() {
        let gate = FleetGate::new(1000);
        let t = Instant::now();
        assert_eq!(gate.poll(t), FleetAdmission::Ask);
        assert!(matches!(gate.poll(at(t, 10)), FleetAdmission::Wait(_)));
        assert!(gate.answer(FleetAnswer::Wait("held by b:2".into()), at(t, 20)));
        assert_eq!(
            gate.poll(at(t, 30)),
            FleetAdmission::Wait("held by b:2".into())
        );
        assert!(gate.answer(FleetAnswer::Granted, at(t, 40)));
        assert_eq!(gate.poll(at(t, 50)), FleetAdmission::Granted);
        // Taken: the next recycle asks again.
        assert_eq!(gate.poll(at(t, 60)), FleetAdmission::Ask);
    }

    #[test]
    fn silence_counts_as_unavailable() {
        let gate = FleetGate::new(1000);
        let t = Instant::now();
        assert_eq!(gate.poll(t), FleetAdmission::Ask);
        assert!(matches!(gate.poll(at(t, 2_999)), FleetAdmission::Wait(_)));
        match gate.poll(at(t, 3_000)) {
            FleetAdmission::Unavailable(why) => assert!(why.contains("no answer"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wait_answer_keeps_the_client_alive() {
        let gate = FleetGate::new(100);
        let t = Instant::now();
        gate.poll(t);
        gate.answer(FleetAnswer::Wait("gap".into()), at(t, 1_900));
        assert_eq!(gate.poll(at(t, 3_000)), FleetAdmission::Wait("gap".into()));
        assert!(matches!(
            gate.poll(at(t, 3_900)),
            FleetAdmission::Unavailable(_)
        ));
    }

    #[test]
    fn unavailable_is_final_and_late_answers_are_ignored() {
        let gate = FleetGate::new(1000);
        let t = Instant::now();
        assert!(!gate.answer(FleetAnswer::Granted, t));
        gate.poll(t);
        gate.answer(FleetAnswer::Unavailable("redis is down".into()), at(t, 5));
        assert_eq!(
            gate.poll(at(t, 6)),
            FleetAdmission::Unavailable("redis is down".into())
        );
        assert!(!gate.answer(FleetAnswer::Granted, at(t, 7)));
        gate.poll(at(t, 8));
        gate.reset();
        assert_eq!(gate.poll(at(t, 9)), FleetAdmission::Ask);
    }
}
