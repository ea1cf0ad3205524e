//! A recycle or stop under way: trigger, stop, drain events, finish, the native exit.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::outputs::stopping_message;
use super::Monitor;
use crate::event::{self, Attribution, DrainPhase, Event, Exit, ExitCause, Recycle};
use crate::near_heap::NearHeapHandler;
use crate::policy::{near_heap_action, NearHeapAction, Reason};
use crate::probe::cgroup::LimitSource;
use crate::recycle::{exit_process, Drain, StopOutcome, StopSignal};
use crate::reexec;

impl Monitor {
    /// Decides a recycle (automatic, manual or near-heap-limit) and returns the draft of
    /// its event for JS to complete (`{ draftId, draft }`, see drafts.rs); `None` when one
    /// is already under way. `deliver`: hand it to JS through the sink (decided here), or
    /// leave it to the caller (decided by a JS call, which must not wait for the event
    /// loop: with nothing else alive it would end first). In a dry run the event is
    /// emitted and nothing else happens.
    pub fn trigger(&self, mut recycle: Recycle, deliver: bool) -> Option<Map<String, Value>> {
        recycle.dry_run = self.config.dry_run;
        recycle.drain_timeout_ms = self.config.drain_timeout_ms;
        let draft = self.draft(Event::Recycle(Box::new(recycle.clone())));
        if !recycle.dry_run {
            // The draft is what the native side writes if JS never completes it.
            if !self
                .recycle
                .lock()
                .begin(recycle.reason, draft.rendered().clone(), Instant::now())
            {
                return None;
            }
            // The sampler may be asleep for a whole INTERVAL: it must wake for the deadline.
            if let Some(waker) = self.waker.lock().as_ref() {
                waker.wake();
            }
            // Every recycle counts toward the siblings' gap, whatever way it went.
            if let Some(stagger) = &self.stagger {
                stagger.count_recycle();
            }
        }
        self.sampling.lock().counters.recycles += 1;
        if let (Some(notifier), false) = (&self.outputs.notifier, recycle.dry_run) {
            notifier.send(&stopping_message(&format!(
                "recycling ({}): {}",
                recycle.reason.as_str(),
                recycle.why()
            )));
        }
        let message = self.open_draft(draft);
        if deliver {
            self.deliver_draft(message.clone());
        }
        Some(message)
    }

    /// A stop signal (`SIGNALS=on`): a stop drain, or the drain under way becomes a stop.
    /// Returns what happened and the `stop` event (none for a second signal).
    pub fn request_stop(
        &self,
        name: &str,
        number: i32,
    ) -> (StopOutcome, Option<Map<String, Value>>) {
        self.request_stop_at(name, number, Instant::now())
    }

    /// `request_stop` for a signal that came at `at` (the drain's deadline counts from it).
    pub fn request_stop_at(
        &self,
        name: &str,
        number: i32,
        at: Instant,
    ) -> (StopOutcome, Option<Map<String, Value>>) {
        let joined = !self.recycle.lock().is_running();
        let event = self.render(&Event::Stop {
            signal: name.to_string(),
            joined,
            drain_timeout_ms: self.config.drain_timeout_ms,
        });
        let signal = StopSignal {
            name: name.to_string(),
            number,
        };
        let outcome = self.recycle.lock().request_stop(signal, event.clone(), at);
        if outcome == StopOutcome::Again {
            return (outcome, None);
        }
        if outcome == StopOutcome::Started {
            if let Some(waker) = self.waker.lock().as_ref() {
                waker.wake();
            }
        }
        if let Some(notifier) = &self.outputs.notifier {
            notifier.send(&stopping_message(&format!("stopping ({name})")));
        }
        (outcome, Some(event))
    }

    /// The second signal of a stop: the `exit` event for leaving at once, with
    /// `128 +` this signal's number.
    pub fn interrupt(&self, name: &str, number: i32) -> Option<Map<String, Value>> {
        let mut drain = self.recycle.lock().finish()?;
        drain.stop = Some(StopSignal {
            name: name.to_string(),
            number,
        });
        Some(self.exit_event(&drain, ExitCause::Interrupted, None))
    }

    /// JS received the `recycle` event; returns the time left to drain.
    pub fn acknowledge(&self) -> Option<Duration> {
        self.recycle.lock().acknowledge(Instant::now())
    }

    /// The `drain` event of the drain under way, on its clock.
    pub fn drain_event(&self, phase: DrainPhase) -> Option<Map<String, Value>> {
        let drain = self.recycle.lock().current()?;
        let phase = match phase {
            DrainPhase::Start {
                hooks, in_flight, ..
            } => DrainPhase::Start {
                hooks,
                in_flight,
                left_ms: drain
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
            },
            end => end,
        };
        Some(self.render(&Event::Drain(event::Drain {
            reason: drain.reason,
            phase,
            duration_ms: drain.started.elapsed().as_millis() as u64,
        })))
    }

    /// JS finished draining and is about to exit: returns the `exit` event, after writing
    /// the report that holds it.
    pub fn finish(
        &self,
        drained: bool,
        heap_snapshot: Option<Value>,
    ) -> Option<Map<String, Value>> {
        let drain = self.recycle.lock().finish()?;
        let cause = if drained {
            ExitCause::Drained
        } else {
            ExitCause::TimedOut
        };
        Some(self.exit_event(&drain, cause, heap_snapshot))
    }

    /// Builds the `exit` event once, then writes the report with exactly that event in it.
    pub(super) fn exit_event(
        &self,
        drain: &Drain,
        cause: ExitCause,
        heap_snapshot: Option<Value>,
    ) -> Map<String, Value> {
        let mut exit = Exit {
            code: self.exit_code(drain, cause),
            reason: drain.reason,
            cause,
            duration_ms: drain.started.elapsed().as_millis() as u64,
            drain_timeout_ms: self.config.drain_timeout_ms,
            report: None,
            heap_snapshot,
            signal: drain.stop.as_ref().map(|s| s.name.clone()),
            // A stop stops; every other way out of a recycle comes back in place.
            exec_generation: (self.exec_on_recycle
                && drain.stop.is_none()
                && cause != ExitCause::Interrupted)
                .then(|| reexec::generation() + 1),
        };
        let envelope = self.envelope();
        let time = event::iso8601_now();
        let render = |exit: &Exit| {
            Event::Exit(Box::new(exit.clone())).to_json_at(
                &envelope,
                &time,
                &Attribution::default(),
            )
        };
        // A report tells why a worker recycled; a plain stop has nothing to report.
        let report_path = self
            .report_path()
            .filter(|_| drain.reason != Reason::Signal);
        let object = match report_path {
            Some(path) => {
                // The report holds the event as logged: `report` names the file it is in.
                exit.report = Some(json!({ "path": path.display().to_string() }));
                let object = render(&exit);
                match self.write_report(&path, drain, &object) {
                    Ok(()) => object,
                    Err(error) => {
                        // No report holds it: the event says why instead.
                        exit.report = Some(json!({ "error": error }));
                        render(&exit)
                    }
                }
            }
            None => render(&exit),
        };
        self.remember(&object);
        object
    }

    /// A recycle ends with `EXIT_CODE`; a stop with 0 once drained, else `128 + signal`
    /// as a shell reports a process killed by it.
    pub(super) fn exit_code(&self, drain: &Drain, cause: ExitCause) -> i32 {
        match (&drain.stop, cause) {
            (Some(_), ExitCause::Drained) => 0,
            (Some(signal), _) => 128 + signal.number,
            (None, _) => self.config.exit_code,
        }
    }

    /// JS cannot finish (a passed deadline, a heap about to abort): write the `recycle`
    /// event if JS never took it, then the report and the `exit` event, then exit.
    pub(super) fn exit_natively(&self, drain: &Drain, cause: ExitCause) -> ! {
        let mode = self.config.log.native();
        if !drain.acknowledged {
            event::write_stderr(&drain.recycle_event, mode);
        }
        let exit = self.exit_event(drain, cause, None);
        event::write_stderr(&exit, mode);
        let code = self.exit_code(drain, cause);
        if exit.get("restart").and_then(Value::as_str) == Some("exec") {
            let why = reexec::exec_self(code);
            event::write_stderr_line(&format!(
                "self-recycle: could not re-execute in place ({why}); exiting with code {code}"
            ));
        }
        exit_process(code)
    }

    pub(super) fn cgroup_limit(&self) -> Option<u64> {
        self.machine
            .memory_limit
            .filter(|m| m.source != LimitSource::Physical)
            .map(|m| m.bytes)
    }
}

impl NearHeapHandler for Monitor {
    /// V8's OOM handler (inside a failed allocation, JS thread): no way back into V8, so
    /// record the reason and exit with the configured code instead of a SIGABRT.
    fn on_oom(&self, location: &str, detail: Option<&str>) -> ! {
        let heap = self.source.heap().figures().unwrap_or_default();
        let mut recycle = Recycle::new(Reason::Oom, heap.used, heap.limit, 0);
        recycle.drain_timeout_ms = self.config.drain_timeout_ms;
        recycle.detail = Some(match detail {
            Some(detail) => format!("{location}: {detail}"),
            None => location.to_string(),
        });
        recycle.exiting = Some(format!(
            "V8 failed an allocation ({location}) with {} of {} heap used and no near-heap-limit warning: a single allocation larger than the free heap, such as a growing Map or array rehashing",
            crate::units::format_size(heap.used),
            crate::units::format_size(heap.limit)
        ));
        let object = self.render(&Event::Recycle(Box::new(recycle)));
        let current =
            self.recycle
                .lock()
                .begin_or_current(Reason::Oom, object.clone(), Instant::now());
        // Whatever was draining, this is what ends the process: say so.
        let drain = Drain {
            reason: Reason::Oom,
            recycle_event: object,
            acknowledged: false,
            ..current
        };
        self.exit_natively(&drain, ExitCause::Oom)
    }

    /// V8 is about to run out of heap (JS thread, inside a GC). Returns the new limit.
    fn on_near_heap_limit(&self, hits: u32, current: u64, initial: u64) -> u64 {
        let rss = self.source.resident().map_or(0, |r| r.rss);
        let may_exit = self.can_exit_process && !self.config.dry_run;
        match near_heap_action(hits, current, rss, self.cgroup_limit(), may_exit) {
            NearHeapAction::Grant { headroom } => {
                let mut recycle = Recycle::new(Reason::NearHeapLimit, current, current, 0);
                recycle.headroom = Some(headroom);
                recycle.initial_limit = Some(initial);
                self.trigger(recycle, true);
                current + headroom
            }
            NearHeapAction::Keep => current,
            NearHeapAction::Exit(why) => {
                let mut recycle = Recycle::new(Reason::NearHeapLimit, current, current, 0);
                recycle.drain_timeout_ms = self.config.drain_timeout_ms;
                recycle.exiting = Some(why.why().to_string());
                let object = self.render(&Event::Recycle(Box::new(recycle)));
                let drain = self.recycle.lock().begin_or_current(
                    Reason::NearHeapLimit,
                    object,
                    Instant::now(),
                );
                self.exit_natively(&drain, ExitCause::NearHeapLimit(why))
            }
        }
    }
}
