//! How events reach JS: a weak threadsafe function the sampler thread calls.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::monitor::EventSink;

/// What the sampler thread sends to the JS thread.
pub(super) enum ToJs {
    Event(Map<String, Value>),
    /// A liveness ping: answered (recorded) on the JS thread; JS receives `null`.
    Ping,
}

pub(super) type EventCallback = ThreadsafeFunction<ToJs, (), Value, Status, false, true>;

/// Delivers events to JS through a weak threadsafe function (it never keeps the loop
/// alive). Released on `stop()`, so a stopped recycler holds no JS function.
pub(super) struct JsSink {
    pub(super) callback: Mutex<Option<EventCallback>>,
}

impl JsSink {
    pub(super) fn call(&self, value: ToJs) -> bool {
        match self.callback.lock().as_ref() {
            Some(callback) => {
                callback.call(value, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok
            }
            None => false,
        }
    }
}

impl EventSink for JsSink {
    fn deliver(&self, event: Map<String, Value>) -> bool {
        self.call(ToJs::Event(event))
    }

    fn ping(&self) -> bool {
        self.call(ToJs::Ping)
    }

    fn release(&self) {
        self.callback.lock().take();
    }
}

pub(super) struct SharedSink(pub(super) Arc<JsSink>);

impl EventSink for SharedSink {
    fn deliver(&self, event: Map<String, Value>) -> bool {
        self.0.deliver(event)
    }

    fn ping(&self) -> bool {
        self.0.ping()
    }

    fn release(&self) {
        self.0.release();
    }
}
