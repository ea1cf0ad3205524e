//! What leaves the process besides events: sd_notify messages and files beside the report.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::status::sample_json;
use super::Monitor;
use crate::event::{self, Event, StatusFileWarning};
use crate::notify;
use crate::recycle::Drain;
use crate::report;
use crate::status_file::Problem;

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
        let Some(notifier) = &self.notifier else {
            return;
        };
        let Some(every) = notifier.watchdog_every() else {
            return;
        };
        let mut sampling = self.sampling.lock();
        let due = sampling
            .last_watchdog
            .is_none_or(|at| at.elapsed() >= every);
        if due && self.liveness.answered_within(every) {
            notifier.send("WATCHDOG=1");
            sampling.last_watchdog = Some(Instant::now());
        }
    }

    /// `READY=1` at start (systemd `Type=notify`).
    pub fn notify_ready(&self) {
        if self.config.ready_on_baseline {
            return; // READY=baseline: sent once the baseline passes
        }
        if let Some(notifier) = &self.notifier {
            let status = notify::status_line("self-recycle sampling; worker ready");
            notifier.send(&format!("READY=1\n{status}"));
        }
    }

    /// Rewrites the status file every STATUS_EVERY, and at once when the state changes. A
    /// failure must not stop sampling: it is said once (a `warning` event) and kept for
    /// `stats().failures` until a write succeeds.
    pub(super) fn write_status_when_due(&self) {
        if self.status_file.lock().is_none() {
            return;
        }
        let state = self.state_name();
        {
            let mut written = self.status_written.lock();
            let due = written
                .is_none_or(|(at, said)| at.elapsed() >= super::STATUS_EVERY || said != state);
            if !due {
                return;
            }
            *written = Some((std::time::Instant::now(), state));
        }
        let mut body = self.status_json().to_string().into_bytes();
        body.push(b'\n');
        let (path, problems) = {
            let mut guard = self.status_file.lock();
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

    /// Writes the report; returns `{ path }` or `{ error }` for the `exit` event.
    pub(super) fn write_report(&self, drain: &Drain, exit: &Map<String, Value>) -> Option<Value> {
        let path = self.report_path()?;
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
        Some(match report::write_atomically(&path, &report) {
            Ok(()) => json!({ "path": path.display().to_string() }),
            Err(error) => json!({ "error": error }),
        })
    }
}
