#![deny(clippy::all)]
//! The napi surface only: thin wrappers over the modules below, and error mapping.
//! Every export uses `catch_unwind` so a panic becomes a JS error, never an abort.

pub mod config;
pub mod event;
pub mod monitor;
pub mod policy;
pub mod probe;
pub mod recycle;
pub mod sampler;
pub mod units;

use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::config::RawSettings;
use crate::monitor::{EventSink, Monitor, MonitorSetup, Probes};
use crate::policy::Reason;
use crate::probe::heap_cell::HeapCell;
use crate::probe::v8::{self, HeapFigures, Isolate, JsHeapStatistics};
use crate::sampler::{SampleSource, Ticker};

/// The result of validating settings: `ok`, or the failing variable, its value and what
/// is accepted (the JS layer turns this into an `ERR_SELF_RECYCLE_CONFIG` error).
#[napi(object)]
pub struct ConfigCheck {
    pub ok: bool,
    pub disabled: bool,
    pub variable: Option<String>,
    pub value: Option<String>,
    pub accepts: Option<String>,
    pub message: Option<String>,
}

#[napi(catch_unwind)]
pub fn check_config(env: HashMap<String, String>, options: HashMap<String, String>) -> ConfigCheck {
    match config::parse(&RawSettings {
        env: &env,
        options: &options,
    }) {
        Ok(config) => ConfigCheck {
            ok: true,
            disabled: config.disable,
            variable: None,
            value: None,
            accepts: None,
            message: None,
        },
        Err(error) => ConfigCheck {
            ok: false,
            disabled: false,
            message: Some(error.to_string()),
            variable: Some(error.variable),
            value: Some(error.value),
            accepts: Some(error.accepts),
        },
    }
}

/// What `v8.getHeapStatistics()` returned just before `start`, in camelCase.
#[napi(object)]
pub struct HeapStatisticsInput {
    pub total_heap_size: f64,
    pub total_physical_size: f64,
    pub used_heap_size: f64,
    pub heap_size_limit: f64,
    pub external_memory: f64,
    pub number_of_native_contexts: f64,
}

#[napi(object)]
pub struct StartInput {
    /// `SELF_RECYCLE_*` variables, without the prefix.
    pub env: HashMap<String, String>,
    /// Options by camelCase name, values as strings.
    pub options: HashMap<String, String>,
    /// `process.uptime()` in milliseconds.
    pub uptime_ms: f64,
    pub heap: HeapStatisticsInput,
    pub main_thread: bool,
    /// Skip the native V8 probe (tests of the fallback, odd runtimes).
    pub force_js_heap_probe: bool,
}

type EventCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

/// Delivers events to JS through a weak threadsafe function (it never keeps the loop alive).
struct JsSink {
    callback: EventCallback,
}

impl EventSink for JsSink {
    fn deliver(&self, event: &Map<String, Value>) -> bool {
        match serde_json::to_string(event) {
            Ok(json) => {
                self.callback
                    .call(json, ThreadsafeFunctionCallMode::NonBlocking)
                    == Status::Ok
            }
            Err(_) => false,
        }
    }
}

fn to_bytes(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

/// Chooses the heap probe: native when every symbol resolves and the layout matches what
/// JS just read; otherwise the JS fallback, with the reason.
fn choose_heap_probe(
    input: &StartInput,
    heap: &'static HeapCell,
) -> (Option<Isolate>, Option<String>) {
    if input.force_js_heap_probe {
        return (
            None,
            Some("native probe disabled by the caller".to_string()),
        );
    }
    let js = JsHeapStatistics {
        total_heap_size: input.heap.total_heap_size,
        total_physical_size: input.heap.total_physical_size,
        used_heap_size: input.heap.used_heap_size,
        heap_size_limit: input.heap.heap_size_limit,
        external_memory: input.heap.external_memory,
        number_of_native_contexts: input.heap.number_of_native_contexts,
    };
    let checked =
        v8::current_isolate().and_then(|isolate| v8::validate(isolate, &js).map(|()| isolate));
    match checked {
        Ok(isolate) => match v8::read_heap(isolate) {
            Some(figures) => {
                heap.record(figures);
                (Some(isolate), None)
            }
            None => (None, Some("HeapStatistics could not be read".to_string())),
        },
        Err(reason) => (None, Some(reason)),
    }
}

/// Stops the ticker and unhooks from V8; shared with the env cleanup hook.
struct Running {
    ticker: Option<Ticker>,
    gc_isolate: Option<Isolate>,
    heap: &'static HeapCell,
}

impl Running {
    fn shut_down(&mut self) {
        if let Some(mut ticker) = self.ticker.take() {
            ticker.stop();
        }
        if let Some(isolate) = self.gc_isolate.take() {
            self.heap.remove_gc_epilogue(isolate);
        }
    }
}

#[napi]
pub struct NativeRecycler {
    monitor: Arc<Monitor>,
    running: Arc<Mutex<Running>>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}

#[napi]
impl NativeRecycler {
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, input: StartInput, on_event: Function<String, ()>) -> Result<Self> {
        let config = config::parse(&RawSettings {
            env: &input.env,
            options: &input.options,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let heap = HeapCell::leak();
        let (isolate, fallback_reason) = choose_heap_probe(&input, heap);
        if isolate.is_none() {
            heap.record(HeapFigures {
                used: to_bytes(input.heap.used_heap_size),
                total: to_bytes(input.heap.total_heap_size),
                limit: to_bytes(input.heap.heap_size_limit),
                external: to_bytes(input.heap.external_memory),
            });
        }
        let gc_isolate = isolate.filter(|i| heap.install_gc_epilogue(*i));
        let callback: EventCallback = on_event
            .build_threadsafe_function()
            .weak::<true>()
            .callee_handled::<false>()
            .build()?;
        let source = SampleSource::new(heap, isolate, to_bytes(input.uptime_ms));
        let monitor = Arc::new(Monitor::new(MonitorSetup {
            config,
            memory_limit: probe::cgroup::detect(),
            source,
            probes: Probes {
                v8_native: isolate.is_some(),
                v8_fallback_reason: fallback_reason,
                gc_epilogue: gc_isolate.is_some(),
            },
            can_exit_process: input.main_thread,
            sink: Box::new(JsSink { callback }),
        }));
        let ticking = Arc::clone(&monitor);
        let ticker = Ticker::spawn("self-recycle", move || ticking.tick()).map_err(|e| {
            Error::new(
                Status::GenericFailure,
                format!("cannot start the sampler thread: {e}"),
            )
        })?;
        let running = Arc::new(Mutex::new(Running {
            ticker: Some(ticker),
            gc_isolate,
            heap,
        }));
        // Runs when the isolate's environment is torn down (worker.terminate(), normal
        // exit): the thread must be joined before the isolate goes away.
        let for_cleanup = Arc::clone(&running);
        env.add_env_cleanup_hook((), move |()| for_cleanup.lock().shut_down())?;
        Ok(NativeRecycler { monitor, running })
    }

    #[napi(catch_unwind)]
    pub fn start_event(&self) -> String {
        Value::Object(self.monitor.start_event()).to_string()
    }

    /// Manual or signal-driven recycle; `false` if one is already under way.
    #[napi(catch_unwind)]
    pub fn trigger(&self, reason: String, detail: Option<String>) -> bool {
        let (reason, detail) = match Reason::parse(&reason) {
            Some(known) => (known, detail),
            None => (Reason::Manual, Some(reason)),
        };
        let why = match &detail {
            Some(text) => format!("{} recycle requested ({text})", reason.as_str()),
            None => format!("{} recycle requested", reason.as_str()),
        };
        self.monitor
            .trigger(reason, &why, 0, 0, 0, detail.as_deref())
    }

    #[napi(catch_unwind)]
    pub fn job_done(&self, count: u32) -> f64 {
        self.monitor.job_done(u64::from(count)) as f64
    }

    /// Heap figures from the JS fallback probe.
    #[napi(catch_unwind)]
    pub fn report_heap(&self, used: f64, total: f64, limit: f64, external: f64) {
        self.running.lock().heap.record(HeapFigures {
            used: to_bytes(used),
            total: to_bytes(total),
            limit: to_bytes(limit),
            external: to_bytes(external),
        });
    }

    /// JS took the `recycle` event; returns the milliseconds left to drain.
    #[napi(catch_unwind)]
    pub fn acknowledge(&self) -> Option<f64> {
        self.monitor
            .acknowledge()
            .map(|left| left.as_millis() as f64)
    }

    /// JS finished draining; returns the `exit` event as JSON.
    #[napi(catch_unwind)]
    pub fn finish(&self, drained: bool) -> Option<String> {
        self.monitor
            .finish(drained)
            .map(|event| Value::Object(event).to_string())
    }

    /// Builds an event with the envelope filled from the latest sample.
    #[napi(catch_unwind)]
    pub fn event(&self, name: String, msg: String, extra_json: Option<String>) -> Result<String> {
        let extra = match extra_json {
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                _ => return Err(invalid("event fields must be a JSON object")),
            },
            None => Map::new(),
        };
        Ok(Value::Object(self.monitor.event(&name, &msg, extra)).to_string())
    }

    /// Writes one event to stderr in the configured log format.
    #[napi(catch_unwind)]
    pub fn write_log(&self, event_json: String) {
        if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&event_json) {
            event::write_stderr(&event, self.monitor.native_log_mode());
        }
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> String {
        self.monitor.stats().to_string()
    }

    #[napi(catch_unwind)]
    pub fn set_sample_events(&self, enabled: bool) {
        self.monitor.set_sample_events(enabled);
    }

    #[napi(catch_unwind)]
    pub fn sample_consumed(&self) {
        self.monitor.sample_consumed();
    }

    /// Stops sampling. Refused (`false`) while a recycle is under way: the deadline stays.
    #[napi(catch_unwind)]
    pub fn stop(&self) -> bool {
        if self.monitor.state_name() != "running" {
            return false;
        }
        self.running.lock().shut_down();
        true
    }

    /// Stops everything, whatever the state: the process is exiting (`exit` listener).
    #[napi(catch_unwind)]
    pub fn shut_down(&self) {
        self.running.lock().shut_down();
    }
}

impl Drop for NativeRecycler {
    fn drop(&mut self) {
        self.running.lock().shut_down();
    }
}
