//! The pending automatic recycle: queued behind the fleet and the sibling queue, tried
//! again each tick, and triggered when admission.rs lets it go.

use std::time::Instant;

use serde_json::{Map, Value};

use super::admission::{
    current_value, decide, emergency, hard_limits, Gauge, Next, WAIT_MARGIN_MS,
};
use super::Monitor;
use crate::event::{self, Event, Recycle};
use crate::fleet::FleetAnswer;
use crate::policy::{HardLimit, Policy, Sample};
use crate::stagger::Stagger;

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

    /// The fleet client's answer, acted on at once (on the JS thread): a grant admits the
    /// pending recycle now.
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
    /// waits for (`queued`). The rules are admission.rs's; this applies them.
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
            recycle.value = current_value(recycle.reason, &latest, rss, recycle.value);
        }
        let emergency = emergency(
            &hard_limits,
            lead_ms,
            recycle.reason,
            recycle.value,
            recycle.limit,
        );
        let waited_ms = since.elapsed().as_millis() as u64;
        let max_wait = self.config.stagger_max_wait_ms;
        let gate = self.fleet.as_ref().filter(|_| recycle.fleet.is_none());
        let decision = decide(
            emergency.as_deref(),
            waited_ms,
            max_wait,
            gate.map(|gate| || gate.poll(Instant::now())),
            self.stagger.as_ref().map(|stagger| || stagger.try_admit()),
        );
        if let (Some(gate), true) = (gate, decision.reset_fleet) {
            gate.reset();
        }
        if decision.fleet.is_some() {
            recycle.fleet = decision.fleet;
        }
        match decision.next {
            Next::AskFleet => {
                let ask = fleet_ask(recycle);
                drop(guard);
                if !self.sink.deliver(ask) {
                    self.fleet_answer(FleetAnswer::Unavailable("JS can no longer receive".into()));
                }
            }
            Next::Wait(waiting_for, why) => {
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
            }
            Next::Go { stagger } => {
                if stagger.is_some() {
                    recycle.stagger = stagger;
                }
                let Some((recycle, _)) = sampling.pending.take() else {
                    return;
                };
                drop(guard);
                self.trigger(recycle, true);
            }
        }
    }

    /// The hard limits against the old-space limit V8 was started with (else the heap
    /// limit it reports) and the policy's RSS ceiling, with their current slopes.
    fn hard_limits(&self, policy: &Policy, sample: &Sample, rss: u64) -> Vec<HardLimit> {
        let heap_limit = self
            .machine
            .old_space_limit
            .or(self.machine.heap_size_limit)
            .unwrap_or(sample.heap_limit);
        hard_limits(
            heap_limit,
            Gauge {
                value: sample.heap_used,
                slope_per_s: policy.growth_per_s(true, sample.uptime_ms),
            },
            policy.limits().ceiling,
            Gauge {
                value: rss,
                slope_per_s: policy.growth_per_s(false, sample.uptime_ms),
            },
        )
    }
}

/// What JS hears when a recycle asks the fleet for a lease (not an event: no `event` key).
fn fleet_ask(recycle: &Recycle) -> Map<String, Value> {
    let mut ask = Map::new();
    ask.insert("fleetAsk".into(), Value::Bool(true));
    ask.insert("reason".into(), serde_json::json!(recycle.reason.as_str()));
    ask
}
