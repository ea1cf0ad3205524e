//! What leaves the process besides events: sd_notify messages, the status file (with
//! the recent events it shows), the recycle report and files beside it. The decisions
//! (what is due, what a message says) are plain functions, tested without a process.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::status::sample_json;
use super::Monitor;
use crate::event::{self, Event, StatusFileWarning};
use crate::notify;
use crate::notify::Notifier;
use crate::recycle::Drain;
use crate::report;
use crate::status_file::{Problem, StatusFile};

/// What the outputs keep between calls.
pub(super) struct Outputs {
    /// sd_notify target, main thread only.
    pub notifier: Option<Notifier>,
    /// The last events (name, time, msg), for the status file.
    pub recent_events: Mutex<VecDeque<Value>>,
    /// When the status file was last written, and the state it said.
    pub status_written: Mutex<Option<(Instant, &'static str)>>,
    /// `STATUS_FILE` with its placeholders expanded, and what was said about it.
    pub status_file: Mutex<Option<StatusFile>>,
    /// Said in the `start` event: `{instance}` without an instance number.
    pub status_file_warning: Option<String>,
}

impl Outputs {
    /// `status_file`: the `STATUS_FILE` template (`{pid}`, `{instance}`).
    pub(super) fn new(status_file: Option<&str>, notifier: Option<Notifier>) -> Outputs {
        let expanded = status_file.map(|template| {
            crate::status_file::expand(
                template,
                std::process::id(),
                crate::status_file::instance_from_env().as_deref(),
            )
        });
        let status_file_warning = expanded.as_ref().and_then(|(_, w)| w.clone());
        let status_file = expanded.map(|(path, _)| StatusFile::new(std::path::PathBuf::from(path)));
        Outputs {
            notifier,
            recent_events: Mutex::new(VecDeque::with_capacity(super::RECENT_EVENTS)),
            status_written: Mutex::new(None),
            status_file: Mutex::new(status_file),
            status_file_warning,
        }
    }
}

impl Monitor {
    /// Writes `body` beside the recycle report (same name, `extension`); `None` without
    /// `REPORT_DIR`.
    pub fn write_beside_report(
        &self,
        extension: &str,
        body: &[u8],
    ) -> Option<Result<String, String>> {
        let path = self.report_path()?.with_extension(extension);
        Some(
            crate::report::write_bytes_atomically(&path, body).map(|()| path.display().to_string()),
        )
    }

    /// `WATCHDOG=1` every half `WATCHDOG_USEC`, only while the loop answers pings: a hung
    /// worker stops feeding it and systemd kills it.
    pub(super) fn feed_watchdog(&self) {
        let Some(notifier) = &self.outputs.notifier else {
            return;
        };
        let Some(every) = notifier.watchdog_every() else {
            return;
        };
        let mut sampling = self.sampling.lock();
        if due(sampling.last_watchdog, Instant::now(), every)
            && self.liveness.answered_within(every)
        {
            notifier.send("WATCHDOG=1");
            sampling.last_watchdog = Some(Instant::now());
        }
    }

    /// `READY=1` at start (systemd `Type=notify`).
    pub fn notify_ready(&self) {
        if self.config.ready_on_baseline {
            return; // READY=baseline: sent once the baseline passes
        }
        if let Some(notifier) = &self.outputs.notifier {
            notifier.send(&ready_message("self-recycle sampling; worker ready"));
        }
    }

    /// Rewrites the status file every STATUS_EVERY, and at once when the state changes. A
    /// failure must not stop sampling: it is said once (a `warning` event) and kept for
    /// `stats().failures` until a write succeeds.
    pub(super) fn write_status_when_due(&self) {
        if self.outputs.status_file.lock().is_none() {
            return;
        }
        let state = self.state_name();
        {
            let mut written = self.outputs.status_written.lock();
            let now = Instant::now();
            if !status_due(*written, now, state) {
                return;
            }
            *written = Some((now, state));
        }
        let mut body = self.status_json().to_string().into_bytes();
        body.push(b'\n');
        let (path, problems) = {
            let mut guard = self.outputs.status_file.lock();
            let Some(file) = guard.as_mut() else {
                return;
            };
            (file.path().display().to_string(), file.write(&body))
        };
        for problem in problems {
            let warning = match problem {
                Problem::Write(failure) => StatusFileWarning::Unwritable {
                    path: path.clone(),
                    error: failure.error,
                    errno: failure.errno,
                },
                Problem::Shared { other_pid } => StatusFileWarning::Shared {
                    path: path.clone(),
                    other_pid,
                },
            };
            self.emit(&Event::StatusFile(warning));
        }
    }

    /// Where the recycle report goes, when `REPORT_DIR` is set.
    pub fn report_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.config.report_dir.as_deref()?;
        Some(report::report_path(dir, self.started_epoch_ms))
    }

    /// Writes the report at `path` (`report_path()`), with `exit`, the `exit` event as it
    /// is logged; `Err`: why it could not be written.
    pub(super) fn write_report(
        &self,
        path: &std::path::Path,
        drain: &Drain,
        exit: &Map<String, Value>,
    ) -> Result<(), String> {
        let samples: Vec<Value> = self
            .sampling
            .lock()
            .ring
            .to_vec()
            .iter()
            .map(sample_json)
            .collect();
        let heap = self.source.heap();
        let now = heap.elapsed_ms();
        let post_gc: Vec<Value> = heap
            .post_gc_series()
            .into_iter()
            .map(|(at, used)| json!({ "msAgo": now.saturating_sub(at), "heapUsed": used }))
            .collect();
        let report = json!({
            "schema": event::SCHEMA,
            "reason": drain.reason.as_str(),
            "time": event::iso8601_now(),
            "pid": std::process::id(),
            "recycle": Value::Object(drain.recycle_event.clone()),
            "exit": Value::Object(exit.clone()),
            "config": self.config_json(),
            "limits": self.limits_json(),
            "probes": self.probes_json(),
            "memoryLimit": self.memory_limit_json(),
            "samples": samples,
            "postGc": post_gc,
            "guard": crate::guard::REGISTRY.stats(),
            "profile": self.report_profile.lock().clone(),
            "versions": self.versions.clone(),
        });
        report::write_atomically(path, &report)
    }
}

/// sd_notify `READY=1`, saying `text` as the unit's status.
pub(super) fn ready_message(text: &str) -> String {
    format!("READY=1\n{}", notify::status_line(text))
}

/// sd_notify `STOPPING=1`, saying `text` as the unit's status.
pub(super) fn stopping_message(text: &str) -> String {
    format!("STOPPING=1\n{}", notify::status_line(text))
}

/// A periodic output (the watchdog ping) is due: never sent, or `every` passed since.
pub(super) fn due(last: Option<Instant>, now: Instant, every: Duration) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= every)
}

/// The status file is rewritten every `STATUS_EVERY`, and at once when the state changes.
pub(super) fn status_due(last: Option<(Instant, &str)>, now: Instant, state: &str) -> bool {
    last.is_none_or(|(at, said)| due(Some(at), now, super::STATUS_EVERY) || said != state)
}

/// Keeps `event`'s name, time and message among the last `capacity` for the status file.
pub(super) fn remember(recent: &mut VecDeque<Value>, event: &Map<String, Value>, capacity: usize) {
    if recent.len() == capacity {
        recent.pop_front();
    }
    recent.push_back(json!({
        "event": event.get("event"),
        "time": event.get("time"),
        "msg": event.get("msg"),
    }));
}

/// Drops the remembered events named `name` (a rendering that was replaced, not logged).
pub(super) fn forget(recent: &mut VecDeque<Value>, name: &str) {
    recent.retain(|event| event.get("event").and_then(Value::as_str) != Some(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_notify_messages_carry_the_status_on_one_line() {
        assert_eq!(
            ready_message("self-recycle sampling; worker ready"),
            "READY=1\nSTATUS=self-recycle sampling; worker ready"
        );
        assert_eq!(
            stopping_message("recycling (rss): over\nthe limit"),
            "STOPPING=1\nSTATUS=recycling (rss): over the limit"
        );
    }

    #[test]
    fn the_watchdog_is_due_first_and_then_every_period() {
        let start = Instant::now();
        let every = Duration::from_secs(5);
        assert!(due(None, start, every));
        assert!(!due(
            Some(start),
            start + Duration::from_millis(4999),
            every
        ));
        assert!(due(Some(start), start + every, every));
        assert!(
            !due(Some(start + every), start, every),
            "an earlier instant is not due"
        );
    }

    #[test]
    fn the_status_file_is_due_every_period_or_on_a_new_state() {
        let start = Instant::now();
        let soon = start + Duration::from_millis(10);
        assert!(status_due(None, start, "running"));
        assert!(!status_due(Some((start, "running")), soon, "running"));
        assert!(status_due(Some((start, "running")), soon, "draining"));
        assert!(status_due(
            Some((start, "running")),
            start + super::super::STATUS_EVERY,
            "running"
        ));
    }

    #[test]
    fn the_recent_events_keep_the_last_ones_and_three_fields() {
        let mut recent = VecDeque::new();
        for n in 0..5 {
            let event = json!({ "event": "pressure", "time": n, "msg": format!("m{n}"), "rss": 1 });
            let Value::Object(event) = event else {
                unreachable!("an object literal")
            };
            remember(&mut recent, &event, 3);
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(
            recent[0],
            json!({ "event": "pressure", "time": 2, "msg": "m2" })
        );
        assert_eq!(
            recent[2],
            json!({ "event": "pressure", "time": 4, "msg": "m4" })
        );
        forget(&mut recent, "start");
        assert_eq!(recent.len(), 3, "nothing of that name");
        forget(&mut recent, "pressure");
        assert!(recent.is_empty());
    }
}
