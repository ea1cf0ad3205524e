#![deny(clippy::all)]
//! The napi surface only: thin wrappers over the modules below, and error mapping.
//! Every export uses `catch_unwind` so a panic becomes a JS error, never an abort.

pub mod config;
pub mod event;
pub mod guard;
pub mod liveness;
pub mod monitor;
pub mod near_heap;
pub mod notify;
pub mod policy;
pub mod probe;
pub mod recycle;
pub mod report;
pub mod sampler;
pub mod stagger;
pub mod units;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::config::{LogMode, RawSettings};
use crate::guard::{InitCost, REGISTRY};
use crate::liveness::Liveness;
use crate::monitor::{EventSink, Monitor, MonitorSetup, Probes, RecycleRequest};
use crate::notify::Notifier;
use crate::policy::Reason;
use crate::probe::heap_cell::HeapCell;
use crate::probe::procfs::StatmReader;
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
    /// Whether JS runs on the process's main thread; `None`: ask the OS (`gettid() == pid`).
    pub main_thread: Option<bool>,
    /// Skip the native V8 probe (tests of the fallback, odd runtimes).
    pub force_js_heap_probe: bool,
    /// Node runs with `--heapsnapshot-near-heap-limit`: its callback must stay in place.
    pub node_owns_near_heap_limit: bool,
    /// `{ node, v8, platform, arch }` as JSON, for the recycle report.
    pub versions_json: String,
    /// `Date.now()` at start.
    pub started_epoch_ms: f64,
}

/// What the sampler thread sends to the JS thread.
enum ToJs {
    Event(String),
    /// A liveness ping: answered (recorded) on the JS thread; JS receives an empty string.
    Ping,
}

type EventCallback = ThreadsafeFunction<ToJs, (), String, Status, false, true>;

/// Delivers events to JS through a weak threadsafe function (it never keeps the loop alive).
struct JsSink {
    callback: EventCallback,
}

impl EventSink for JsSink {
    fn deliver(&self, event: &Map<String, Value>) -> bool {
        match serde_json::to_string(event) {
            Ok(json) => {
                self.callback
                    .call(ToJs::Event(json), ThreadsafeFunctionCallMode::NonBlocking)
                    == Status::Ok
            }
            Err(_) => false,
        }
    }

    fn ping(&self) -> bool {
        self.callback
            .call(ToJs::Ping, ThreadsafeFunctionCallMode::NonBlocking)
            == Status::Ok
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

/// Node's main JS thread is the process's initial thread; worker threads are not. Asking
/// the OS spares `require('node:worker_threads')` (~0.8 ms) at start.
fn on_main_thread(input: &StartInput) -> bool {
    input.main_thread.unwrap_or_else(|| {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            u32::try_from(tid).is_ok_and(|tid| tid == std::process::id())
        }
        #[cfg(not(target_os = "linux"))]
        {
            true
        }
    })
}

/// Installs the near-heap-limit callback when allowed; records why not otherwise.
fn install_near_heap_limit(input: &StartInput, monitor: &Arc<Monitor>) -> Option<Arc<Monitor>> {
    let refusal = if !monitor.config().near_heap_limit {
        Some("off (SELF_RECYCLE_NEAR_HEAP_LIMIT=off)".to_string())
    } else if !on_main_thread(input) {
        Some("off in worker threads (it would replace Node's own handler)".to_string())
    } else if input.node_owns_near_heap_limit {
        Some("off: --heapsnapshot-near-heap-limit owns V8's callback".to_string())
    } else {
        None
    };
    if let Some(reason) = refusal {
        monitor.set_near_heap_status(reason);
        return None;
    }
    let installed =
        v8::current_isolate().and_then(|isolate| near_heap::install(isolate, Arc::clone(monitor)));
    match installed {
        Ok(()) => {
            monitor.set_near_heap_status("on".to_string());
            Some(Arc::clone(monitor))
        }
        Err(reason) => {
            monitor.set_near_heap_status(format!("off: {reason}"));
            None
        }
    }
}

/// Stops the ticker and unhooks from V8; shared with the env cleanup hook.
struct Running {
    ticker: Option<Ticker>,
    near_heap: Option<Arc<Monitor>>,
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
        if let Some(monitor) = self.near_heap.take() {
            near_heap::uninstall(&monitor);
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
        let liveness = Arc::new(Liveness::default());
        let answering = Arc::clone(&liveness);
        let callback: EventCallback = on_event
            .build_threadsafe_function::<ToJs>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(move |context| match context.value {
                ToJs::Event(json) => Ok(json),
                ToJs::Ping => {
                    answering.pong();
                    Ok(String::new())
                }
            })?;
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
            can_exit_process: on_main_thread(&input),
            sink: Box::new(JsSink { callback }),
            versions: serde_json::from_str(&input.versions_json).unwrap_or(Value::Null),
            started_epoch_ms: to_bytes(input.started_epoch_ms),
            liveness,
            notifier: on_main_thread(&input).then(Notifier::from_env).flatten(),
        }));
        monitor.notify_ready();
        let near_heap = install_near_heap_limit(&input, &monitor);
        let ticking = Arc::clone(&monitor);
        let ticker = Ticker::spawn("self-recycle", move || ticking.tick()).map_err(|e| {
            Error::new(
                Status::GenericFailure,
                format!("cannot start the sampler thread: {e}"),
            )
        })?;
        let running = Arc::new(Mutex::new(Running {
            ticker: Some(ticker),
            near_heap,
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
        let mut request = RecycleRequest::new(reason, why, 0, 0, 0);
        if let Some(detail) = detail {
            request.extra.insert("detail".into(), Value::String(detail));
        }
        self.monitor.trigger(request)
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

    /// A post-GC heap figure from the JS fallback (a major `gc` performance entry).
    #[napi(catch_unwind)]
    pub fn report_post_gc(&self, used: f64) {
        self.running.lock().heap.record_post_gc(to_bytes(used));
    }

    /// JS took the `recycle` event; returns the milliseconds left to drain.
    #[napi(catch_unwind)]
    pub fn acknowledge(&self) -> Option<f64> {
        self.monitor
            .acknowledge()
            .map(|left| left.as_millis() as f64)
    }

    /// JS finished draining; returns the `exit` event as JSON. `extra_json` fields (such
    /// as the heap snapshot's path) go into the event and the report.
    #[napi(catch_unwind)]
    pub fn finish(&self, drained: bool, extra_json: Option<String>) -> Option<String> {
        let extra = match extra_json.map(|text| serde_json::from_str::<Value>(&text)) {
            Some(Ok(Value::Object(map))) => map,
            _ => Map::new(),
        };
        self.monitor
            .finish(drained, extra)
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

    /// Where the recycle report will be written, if `REPORT_DIR` is set.
    #[napi(catch_unwind)]
    pub fn report_path(&self) -> Option<String> {
        self.monitor.report_path().map(|p| p.display().to_string())
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

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's id in the guard registry (one per isolate thread).
    static THREAD_ID: u64 = NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed);
    /// This thread's JS value store for `once()`: (napi_env, napi_ref) of the first load.
    /// Kept per thread, not per napi_env, so a re-loaded addon (new env) finds it again.
    static GUARD_STORE: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

fn thread_id() -> u64 {
    THREAD_ID.with(|id| *id)
}

/// Returns this thread's value store, adopting `fresh` the first time.
#[napi(catch_unwind)]
pub fn guard_store<'env>(env: &'env Env, fresh: Object<'env>) -> Result<Object<'env>> {
    if let Some((store_env, reference)) = GUARD_STORE.with(Cell::get) {
        let mut value = std::ptr::null_mut();
        // SAFETY: the env and reference were created on this thread and live as long as
        // its isolate (the cleanup hook below clears them at teardown).
        let status = unsafe {
            napi::sys::napi_get_reference_value(
                store_env as napi::sys::napi_env,
                reference as napi::sys::napi_ref,
                &mut value,
            )
        };
        if status == napi::sys::Status::napi_ok && !value.is_null() {
            // SAFETY: `value` is a live object handle in the current scope.
            return unsafe { Object::from_napi_value(env.raw(), value) };
        }
    }
    let mut reference = std::ptr::null_mut();
    // SAFETY: `fresh` is a live object of this env; the reference is strong (count 1).
    let status =
        unsafe { napi::sys::napi_create_reference(env.raw(), fresh.raw(), 1, &mut reference) };
    if status != napi::sys::Status::napi_ok {
        return Err(Error::new(
            Status::GenericFailure,
            "cannot keep the guard store",
        ));
    }
    GUARD_STORE.with(|store| store.set(Some((env.raw() as usize, reference as usize))));
    let thread = thread_id();
    env.add_env_cleanup_hook((), move |()| {
        GUARD_STORE.with(|store| store.set(None));
        REGISTRY.forget_thread(thread);
    })?;
    Ok(fresh)
}

/// Starts an initialization; `false` when a `scope: 'process'` key belongs to another thread.
#[napi(catch_unwind)]
pub fn guard_begin(key: String, process_scope: bool) -> bool {
    REGISTRY.begin(&key, thread_id(), process_scope).is_ok()
}

#[napi(catch_unwind)]
pub fn guard_end(key: String, succeeded: bool, duration_ms: f64, heap_delta: f64, rss_delta: f64) {
    let cost = InitCost {
        duration_ms,
        heap_delta: heap_delta as i64,
        rss_delta: rss_delta as i64,
    };
    REGISTRY.end(&key, thread_id(), succeeded, cost);
}

/// Adds `count` hits (the JS side batches them).
#[napi(catch_unwind)]
pub fn guard_hit(key: String, count: u32) {
    REGISTRY.hit(&key, u64::from(count));
}

#[napi(object)]
pub struct ReinitCount {
    pub attempts: f64,
    pub first_from_site: bool,
}

#[napi(catch_unwind)]
pub fn guard_reinit(key: String, call_site: String) -> ReinitCount {
    let reinit = REGISTRY.reinit(&key, &call_site);
    ReinitCount {
        attempts: reinit.attempts as f64,
        first_from_site: reinit.first_from_site,
    }
}

/// Records an unguarded initialization; returns how many there have been.
#[napi(catch_unwind)]
pub fn guard_track_init(key: String, duration_ms: f64, heap_delta: f64, rss_delta: f64) -> f64 {
    let cost = InitCost {
        duration_ms,
        heap_delta: heap_delta as i64,
        rss_delta: rss_delta as i64,
    };
    REGISTRY.track_init(&key, thread_id(), cost) as f64
}

#[napi(catch_unwind)]
pub fn guard_stats() -> String {
    REGISTRY.stats().to_string()
}

static STATM: once_cell::sync::Lazy<Option<StatmReader>> =
    once_cell::sync::Lazy::new(StatmReader::open);

#[napi(object)]
pub struct ProbeCost {
    /// Nanoseconds per `/proc/self/statm` read (kept fd, pread).
    pub rss_ns: f64,
    /// Nanoseconds per native V8 heap read; `None` when the native probe is unavailable.
    pub heap_ns: Option<f64>,
}

/// Diagnostics for `bench/`: the native cost of one RSS and one heap sample.
#[napi(catch_unwind)]
pub fn probe_cost(iterations: u32) -> ProbeCost {
    let iterations = iterations.max(1);
    let reader = StatmReader::open();
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(reader.as_ref().and_then(StatmReader::read));
    }
    let rss_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    let heap_ns = v8::current_isolate()
        .ok()
        .filter(|i| v8::read_heap(*i).is_some())
        .map(|isolate| {
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                std::hint::black_box(v8::read_heap(isolate));
            }
            started.elapsed().as_nanos() as f64 / f64::from(iterations)
        });
    ProbeCost { rss_ns, heap_ns }
}

/// Memory still available (cgroup limit minus usage, or MemAvailable), if known.
#[napi(catch_unwind)]
pub fn available_memory() -> Option<f64> {
    probe::cgroup::available_memory().map(|b| b as f64)
}

/// Current RSS in bytes (0 where there is no procfs).
#[napi(catch_unwind)]
pub fn resident_bytes() -> f64 {
    STATM
        .as_ref()
        .and_then(StatmReader::read)
        .map_or(0.0, |r| r.rss as f64)
}

/// Builds an event outside a running recycler (the guard's `reinit`).
#[napi(catch_unwind)]
pub fn build_event(
    name: String,
    msg: String,
    extra_json: String,
    uptime_ms: f64,
    heap_used: f64,
    heap_limit: f64,
) -> Result<String> {
    let extra = match serde_json::from_str::<Value>(&extra_json) {
        Ok(Value::Object(map)) => map,
        _ => return Err(invalid("event fields must be a JSON object")),
    };
    let envelope = event::Envelope {
        uptime_ms: to_bytes(uptime_ms),
        rss: resident_bytes() as u64,
        heap_used: to_bytes(heap_used),
        heap_limit: to_bytes(heap_limit),
    };
    Ok(Value::Object(event::build(&name, &envelope, &msg, extra)).to_string())
}

/// Writes an event line to stderr: `mode` is json, pretty or off (auto = json).
#[napi(catch_unwind)]
pub fn log_event(event_json: String, mode: String) {
    let mode = match mode.as_str() {
        "pretty" => LogMode::Pretty,
        "off" => LogMode::Off,
        _ => LogMode::Json,
    };
    if let Ok(Value::Object(event)) = serde_json::from_str::<Value>(&event_json) {
        event::write_stderr(&event, mode);
    }
}
