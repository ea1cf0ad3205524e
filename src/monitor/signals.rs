//! What a stop signal seen by the native watcher (stop_signal.rs) does to this recycler:
//! the first starts (or joins) the stop drain at once, with its deadline from the signal,
//! and hands the `stop` event to JS; a second one ends the process at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

use super::Monitor;
use crate::event;
use crate::recycle::{exit_process, StopOutcome};
use crate::stop_signal::StopSignalHandler;

/// After a second signal, JS gets this long to log the `exit` event and leave itself
/// (running its `exit` listeners) before the native thread does it.
const JS_EXIT_GRACE: Duration = Duration::from_millis(250);

impl StopSignalHandler for Monitor {
    fn on_stop_signal(&self, name: &'static str, number: i32) {
        let (outcome, stop_event) = self.request_stop(name, number);
        match outcome {
            StopOutcome::Started | StopOutcome::Joined => {
                if let Some(stop_event) = stop_event {
                    if !self.sink.deliver(stop_event.clone()) {
                        event::write_stderr(&stop_event, self.config.log.native());
                    }
                }
            }
            StopOutcome::Again => {
                let Some(exit) = self.interrupt(name, number) else {
                    return;
                };
                let code = exit
                    .get("code")
                    .and_then(Value::as_i64)
                    .map_or(128 + number, |c| c as i32);
                if !self.can_exit_process {
                    return;
                }
                let delivered = self.sink.deliver(exit.clone());
                if delivered {
                    std::thread::sleep(JS_EXIT_GRACE);
                }
                if !self.interrupt_exit_logged.load(Ordering::Acquire) {
                    event::write_stderr(&exit, self.config.log.native());
                }
                exit_process(code)
            }
        }
    }
}

impl Monitor {
    /// JS logged the `exit` event of a second signal and is leaving itself.
    pub fn interrupt_exit_logged(&self) {
        self.interrupt_exit_logged.store(true, Ordering::Release);
    }
}
