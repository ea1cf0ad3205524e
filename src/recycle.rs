//! The drain-and-exit state machine. `Running` -> `Draining` (hooks and tracked work get
//! `DRAIN_TIMEOUT`) -> `Exiting` (JS is on its way out). The native thread checks
//! `overdue()` every tick: past the deadline plus a short grace, it exits the process itself.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::policy::Reason;

/// JS gets the whole drain timeout; the native thread steps in this much later, so a
/// responsive JS thread always finishes the exit itself (and runs its `exit` listeners).
pub const NATIVE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Drain {
    pub reason: Reason,
    pub started: Instant,
    pub deadline: Instant,
    /// The `recycle` event, kept so the native side can write it if JS never did.
    pub recycle_event: Map<String, Value>,
    /// JS received the `recycle` event (and so logged or emitted it).
    pub acknowledged: bool,
    /// A stop signal asked for this drain, or joined it: the process then stops instead of
    /// asking to be restarted.
    pub stop: Option<StopSignal>,
}

impl Drain {
    /// When the native thread ends the process: the deadline plus the grace once JS took
    /// the event (it is draining and should finish itself), the deadline itself when JS
    /// never did (it has been stuck for the whole drain: waiting longer helps nobody).
    pub fn native_deadline(&self) -> Instant {
        if self.acknowledged {
            self.deadline + NATIVE_GRACE
        } else {
            self.deadline
        }
    }
}

/// SIGTERM or SIGINT, with its number for `128 + n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal {
    pub name: String,
    pub number: i32,
}

/// What a stop signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing was draining: a stop drain started.
    Started,
    /// A recycle was draining: the stop joined it.
    Joined,
    /// A stop was already under way: this is the second signal of the same stop.
    Again,
}

#[derive(Debug, Clone)]
pub enum Phase {
    Running,
    Draining(Drain),
    /// JS finished draining and is exiting.
    Exiting(Drain),
}

#[derive(Debug)]
pub struct RecycleState {
    phase: Phase,
    timeout: Duration,
}

impl RecycleState {
    pub fn new(timeout: Duration) -> Self {
        RecycleState {
            phase: Phase::Running,
            timeout,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.phase {
            Phase::Running => "running",
            Phase::Draining(_) => "draining",
            Phase::Exiting(_) => "exiting",
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Starts a drain; `false` if one is already under way (the first reason wins).
    pub fn begin(
        &mut self,
        reason: Reason,
        recycle_event: Map<String, Value>,
        now: Instant,
    ) -> bool {
        let was_running = self.is_running();
        self.begin_or_current(reason, recycle_event, now);
        was_running
    }

    /// The drain under way, or a new one started with this reason.
    pub fn begin_or_current(
        &mut self,
        reason: Reason,
        recycle_event: Map<String, Value>,
        now: Instant,
    ) -> Drain {
        if let Phase::Draining(drain) | Phase::Exiting(drain) = &self.phase {
            return drain.clone();
        }
        let drain = Drain {
            reason,
            started: now,
            deadline: now + self.timeout,
            recycle_event,
            acknowledged: false,
            stop: None,
        };
        self.phase = Phase::Draining(drain.clone());
        drain
    }

    /// A stop signal: starts a stop drain, joins the drain under way, or says it is the
    /// second signal of a stop. `event` is the `stop` event, kept for the native writer.
    pub fn request_stop(
        &mut self,
        signal: StopSignal,
        event: Map<String, Value>,
        now: Instant,
    ) -> StopOutcome {
        match &mut self.phase {
            Phase::Running => {
                self.begin(Reason::Signal, event, now);
                if let Phase::Draining(drain) = &mut self.phase {
                    drain.stop = Some(signal);
                }
                StopOutcome::Started
            }
            Phase::Draining(drain) if drain.stop.is_none() => {
                drain.stop = Some(signal);
                StopOutcome::Joined
            }
            _ => StopOutcome::Again,
        }
    }

    /// The drain under way (draining or exiting), if any.
    pub fn current(&self) -> Option<Drain> {
        match &self.phase {
            Phase::Draining(drain) | Phase::Exiting(drain) => Some(drain.clone()),
            Phase::Running => None,
        }
    }

    /// JS completed this drain's `recycle` event (`draft` is the rendering it completes):
    /// the report and the native writer keep the completed one. `false` when `draft` is
    /// not this drain's event.
    pub fn complete_recycle_event(
        &mut self,
        draft: &Map<String, Value>,
        completed: Map<String, Value>,
    ) -> bool {
        match &mut self.phase {
            Phase::Draining(drain) | Phase::Exiting(drain) if drain.recycle_event == *draft => {
                drain.recycle_event = completed;
                true
            }
            _ => false,
        }
    }

    /// JS took the `recycle` event; returns the time left to drain.
    pub fn acknowledge(&mut self, now: Instant) -> Option<Duration> {
        match &mut self.phase {
            Phase::Draining(drain) => {
                drain.acknowledged = true;
                Some(drain.deadline.saturating_duration_since(now))
            }
            _ => None,
        }
    }

    /// JS finished draining; returns the drain for the `exit` event.
    pub fn finish(&mut self) -> Option<Drain> {
        match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Draining(drain) | Phase::Exiting(drain) => {
                self.phase = Phase::Exiting(drain.clone());
                Some(drain)
            }
            Phase::Running => None,
        }
    }

    /// The drain, once past its native deadline.
    pub fn overdue(&self, now: Instant) -> Option<&Drain> {
        match &self.phase {
            Phase::Draining(drain) | Phase::Exiting(drain) if now >= drain.native_deadline() => {
                Some(drain)
            }
            _ => None,
        }
    }

    /// How long the ticker may sleep without missing the native deadline.
    pub fn time_to_deadline(&self, now: Instant) -> Option<Duration> {
        match &self.phase {
            Phase::Draining(drain) | Phase::Exiting(drain) => {
                Some(drain.native_deadline().saturating_duration_since(now))
            }
            Phase::Running => None,
        }
    }
}

/// Ends the process from the calling thread without running JS, atexit handlers or
/// destructors that could race with a stuck JS thread.
pub fn exit_process(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: _exit has no preconditions and does not return.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_deadline_applies() {
        let mut state = RecycleState::new(Duration::from_secs(1));
        let now = Instant::now();
        assert!(state.begin(Reason::Rss, Map::new(), now));
        assert!(!state.begin(Reason::Manual, Map::new(), now));
        assert_eq!(state.name(), "draining");
        // JS never took the event: the native thread exits at the deadline itself.
        assert!(state.overdue(now + Duration::from_millis(999)).is_none());
        let overdue = state
            .overdue(now + Duration::from_millis(1000))
            .expect("overdue");
        assert_eq!(overdue.reason, Reason::Rss);
        assert!(!overdue.acknowledged);
        // Once JS took it, it gets the grace to finish itself.
        state.acknowledge(now);
        assert!(state.overdue(now + Duration::from_millis(1400)).is_none());
        assert!(state.overdue(now + Duration::from_millis(1500)).is_some());
    }

    #[test]
    fn acknowledge_then_finish() {
        let mut state = RecycleState::new(Duration::from_secs(10));
        let now = Instant::now();
        assert!(state.acknowledge(now).is_none());
        state.begin(Reason::Heap, Map::new(), now);
        let left = state
            .acknowledge(now + Duration::from_secs(4))
            .expect("draining");
        assert_eq!(left, Duration::from_secs(6));
        let drain = state.finish().expect("finishes");
        assert!(drain.acknowledged);
        assert_eq!(state.name(), "exiting");
        assert!(
            state.overdue(now + Duration::from_secs(11)).is_some(),
            "exit still guarded"
        );
    }

    #[test]
    fn only_this_drains_recycle_event_is_completed() {
        let event = |msg: &str| {
            let mut map = Map::new();
            map.insert("msg".into(), Value::from(msg));
            map
        };
        let mut state = RecycleState::new(Duration::from_secs(10));
        assert!(!state.complete_recycle_event(&event("draft"), event("final")));
        state.begin(Reason::Heap, event("draft"), Instant::now());
        assert!(!state.complete_recycle_event(&event("another"), event("final")));
        assert!(state.complete_recycle_event(&event("draft"), event("final")));
        let drain = state.finish().expect("finishes");
        assert_eq!(drain.recycle_event, event("final"));
    }
}
