//! Whether a due automatic recycle goes now, waits for the fleet or its siblings, or
//! bypasses both (a hard limit is near).

use std::time::Instant;

use serde_json::{Map, Value};

use super::Monitor;
use crate::event::{self, Event, Recycle};
use crate::fleet::{FleetAdmission, FleetAnswer};
use crate::policy::{HardLimit, Policy, Reason, Sample};
use crate::stagger::{Admission, Stagger};

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
const WAIT_MARGIN_MS: u64 = 2000;

impl Monitor {
    /// This worker serves a port (see `stagger`); `false` without a stagger queue.
    pub fn stagger_serve(&self) -> bool {
        self.stagger.as_ref().map(Stagger::serve).is_some()
    }

    /// This worker listens: siblings waiting for a replacement may drain.
    pub fn stagger_listening(&self) -> Result<bool, String> {
        match &self.stagger {
            Some(stagger) => stagger.mark_listening().map(|()| true),
            None => Ok(false),
        }
    }

    /// Automatic recycles queue behind the fleet (a lease in Redis, taken by JS) and
    /// siblings (`STAGGER_DIR`); the hard ceiling, and a value far over its limit, skip
    /// both, so no worker waits its way into an OOM.
    pub(super) fn request_recycle(&self, mut recycle: Recycle) {
        if recycle.ceiling && self.fleet.is_some() {
            recycle.fleet = Some(("bypass".into(), Some("the hard ceiling".into()), 0));
        }
        if (self.stagger.is_none() && self.fleet.is_none()) || recycle.ceiling {
            self.trigger(recycle, true);
            return;
        }
        {
            let mut sampling = self.sampling.lock();
            if sampling.pending.is_none() {
                sampling.pending = Some((recycle, Instant::now()));
                sampling.pending_announced = false;
            }
        }
        self.admit_pending(None);
    }

    /// The fleet client's answer; the next tick acts on it (woken now).
    pub fn fleet_answer(&self, answer: FleetAnswer) -> bool {
        let Some(gate) = &self.fleet else {
            return false;
        };
        let final_answer = !matches!(answer, FleetAnswer::Wait(_));
        let taken = gate.answer(answer, Instant::now());
        if taken && final_answer {
            self.admit_pending(None);
        }
        taken
    }

    /// Tries the queued recycle again (each tick), with the latest value of its gauge:
    /// first the fleet, then the sibling queue. A recycle that would reach a hard limit
    /// (V8's heap limit, the RSS ceiling, 1.25x its own limit) before a drain started now
    /// could finish goes at once (`bypass`, saying why); the first wait says what it
    /// waits for (`queued`).
    pub(super) fn admit_pending(&self, sample: Option<&Sample>) {
        if self.stagger.is_none() && self.fleet.is_none() {
            return;
        }
        let latest = match sample {
            Some(sample) => *sample,
            None => self.latest(),
        };
        let lead_ms = self.expected_drain_ms().unwrap_or(0) + WAIT_MARGIN_MS;
        let mut guard = self.sampling.lock();
        let sampling = &mut *guard;
        let rss = sampling.policy.rss_value(&latest);
        let hard_limits = self.hard_limits(&sampling.policy, &latest, rss);
        let Some((recycle, since)) = sampling.pending.as_mut() else {
            return;
        };
        if sample.is_some() {
            recycle.value = match recycle.reason {
                Reason::Rss | Reason::Growth => rss,
                Reason::Heap => latest.heap_used,
                Reason::Jobs => latest.jobs_done,
                Reason::Age => latest.uptime_ms,
                _ => recycle.value,
            };
        }
        let mut emergency = hard_limits
            .iter()
            .find_map(|hard| hard.must_go_within(lead_ms));
        if recycle.reason.is_bytes()
            && recycle.value as f64 >= recycle.limit as f64 * STAGGER_CEILING
        {
            emergency = Some(format!(
                "over the ceiling ({:.0}% of its limit)",
                STAGGER_CEILING * 100.0
            ));
        }
        let waited_ms = since.elapsed().as_millis() as u64;
        let max_wait = self.config.stagger_max_wait_ms;
        let mut go_local = true;
        let mut waiting: Option<(&'static str, String)> = None;
        if let (Some(gate), None) = (&self.fleet, &recycle.fleet) {
            let outcome = if let Some(why) = &emergency {
                gate.reset();
                ("bypass", Some(why.clone()))
            } else {
                match gate.poll(Instant::now()) {
                    FleetAdmission::Ask => {
                        let ask = fleet_ask(recycle);
                        drop(guard);
                        if !self.sink.deliver(ask) {
                            self.fleet_answer(FleetAnswer::Unavailable(
                                "JS can no longer receive".into(),
                            ));
                        }
                        return;
                    }
                    // Nobody may hold a recycle back for good, not even a stuck fleet.
                    FleetAdmission::Wait(why) if waited_ms >= max_wait => {
                        gate.reset();
                        ("timeout", Some(format!("waited {waited_ms} ms ({why})")))
                    }
                    FleetAdmission::Wait(why) => {
                        waiting = Some(("fleet", why));
                        ("wait", None)
                    }
                    FleetAdmission::Granted => ("granted", None),
                    FleetAdmission::Unavailable(why) => ("unavailable", Some(why)),
                }
            };
            if outcome.0 != "wait" {
                // A grant still passes the sibling queue: on one host its rules also keep a
                // server from draining before the last recycled sibling's replacement
                // listens. A fleet that cannot be used falls back to it; a timeout or a
                // bypass goes ahead.
                go_local = matches!(outcome.0, "granted" | "unavailable");
                recycle.fleet = Some((outcome.0.to_string(), outcome.1, waited_ms));
            }
        }
        if waiting.is_none() {
            if let (Some(stagger), true) = (&self.stagger, go_local) {
                let admission = if let Some(why) = &emergency {
                    format!("bypass: {why}")
                } else {
                    match stagger.try_admit() {
                        Admission::Granted => "granted".to_string(),
                        Admission::Unavailable(why) => format!("unavailable: {why}"),
                        // Nobody may hold a recycle back for good, not even a hostile lock
                        // holder.
                        Admission::Wait(why) if waited_ms >= max_wait => {
                            format!("timeout: waited {waited_ms} ms ({why})")
                        }
                        Admission::Wait(why) => {
                            waiting = Some(("siblings", why));
                            String::new()
                        }
                    }
                };
                if waiting.is_none() {
                    recycle.stagger = Some((admission, waited_ms));
                }
            }
        }
        if let Some((waiting_for, why)) = waiting {
            if std::mem::replace(&mut sampling.pending_announced, true) {
                return;
            }
            let queued = Event::Queued(Box::new(event::Queued {
                reason: recycle.reason,
                value: recycle.value,
                limit: recycle.limit,
                waiting_for,
                why,
                max_wait_ms: max_wait.saturating_sub(waited_ms),
            }));
            drop(guard);
            self.emit(&queued);
            return;
        }
        let Some((recycle, _)) = sampling.pending.take() else {
            return;
        };
        drop(guard);
        self.trigger(recycle, true);
    }

    /// The limits a waiting recycle must never reach: 90% of what V8's old space may grow
    /// to (past it V8 collects without end, then calls near-heap-limit with little
    /// headroom left, or aborts) and the RSS ceiling (the OOM killer is near).
    pub(super) fn hard_limits(&self, policy: &Policy, sample: &Sample, rss: u64) -> Vec<HardLimit> {
        let mut limits = Vec::with_capacity(2);
        let heap_limit = self
            .machine
            .old_space_limit
            .or(self.machine.heap_size_limit)
            .unwrap_or(sample.heap_limit);
        if heap_limit > 0 {
            let limit = (heap_limit as f64 * HEAP_HARD_SHARE) as u64;
            limits.push(HardLimit {
                name: format!(
                    "{:.0}% of V8's heap limit ({})",
                    HEAP_HARD_SHARE * 100.0,
                    crate::units::format_size(limit)
                ),
                value: sample.heap_used,
                limit,
                at_once: (heap_limit as f64 * HEAP_AT_ONCE_SHARE) as u64,
                slope_per_s: policy.growth_per_s(true, sample.uptime_ms),
            });
        }
        if let Some(ceiling) = policy.limits().ceiling {
            limits.push(HardLimit {
                name: format!("the RSS ceiling ({})", crate::units::format_size(ceiling)),
                value: rss,
                limit: ceiling,
                at_once: ceiling,
                slope_per_s: policy.growth_per_s(false, sample.uptime_ms),
            });
        }
        limits
    }
}

/// What JS hears when a recycle asks the fleet for a lease (not an event: no `event` key).
fn fleet_ask(recycle: &Recycle) -> Map<String, Value> {
    let mut ask = Map::new();
    ask.insert("fleetAsk".into(), Value::Bool(true));
    ask.insert("reason".into(), serde_json::json!(recycle.reason.as_str()));
    ask
}
