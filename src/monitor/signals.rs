//! What a stop signal seen by the native watcher (stop_signal.rs) does to this recycler.
//! JS decides as long as it runs: its listener takes each delivery (`request_stop_from_js`)
//! within milliseconds. A delivery JS has not taken after `JS_GRACE` means JS is stuck:
//! the watcher then starts (or joins) the stop drain itself, its deadline counted from the
//! signal, or, for a second signal, writes the `exit` event and ends the process. When JS
//! runs again, its listener for a delivery the watcher took gets that stop's event.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Monitor;
use crate::event;
use crate::recycle::{exit_process, StopOutcome};
use crate::stop_signal::StopSignalHandler;

/// How long JS has to take a delivery before the watcher acts for it.
const JS_GRACE: Duration = Duration::from_millis(250);

/// Deliveries taken by JS and by the watcher, in the order they came.
#[derive(Debug, Default)]
pub struct StopBook {
    js: u32,
    native: u32,
}

/// What JS's signal listener learns.
pub enum JsStop {
    /// JS decides, as without the watcher.
    Decide(StopOutcome, Option<Map<String, Value>>),
    /// The watcher took this delivery while JS was stuck: the stop's event, if a stop
    /// drain is under way.
    TakenNatively(Option<Map<String, Value>>),
}

impl StopSignalHandler for Monitor {
    fn on_stop_signal(&self, name: &'static str, number: i32, delivery: u32, at: Instant) {
        let wait = JS_GRACE.saturating_sub(at.elapsed());
        std::thread::sleep(wait);
        {
            let mut book = self.stop_book.lock();
            if book.js >= delivery {
                return; // JS took it
            }
            book.native = book.native.max(delivery);
        }
        let (outcome, _) = self.request_stop_at(name, number, at);
        if outcome != StopOutcome::Again || !self.can_exit_process {
            return; // the sampler enforces the deadline; JS hears of it when it runs
        }
        let Some(exit) = self.interrupt(name, number) else {
            return;
        };
        let code = exit
            .get("code")
            .and_then(Value::as_i64)
            .map_or(128 + number, |c| c as i32);
        event::write_stderr(&exit, self.config.log.native());
        exit_process(code)
    }
}

impl Monitor {
    /// JS's listener for a stop signal (one call per delivery it sees).
    pub fn request_stop_from_js(&self, name: &str, number: i32) -> JsStop {
        let taken_natively = {
            let mut book = self.stop_book.lock();
            book.js += 1;
            book.js <= book.native
        };
        if taken_natively {
            let event = self
                .recycle
                .lock()
                .current()
                .filter(|drain| drain.stop.is_some())
                .map(|drain| drain.recycle_event);
            return JsStop::TakenNatively(event);
        }
        let (outcome, event) = self.request_stop(name, number);
        JsStop::Decide(outcome, event)
    }
}
