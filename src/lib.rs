#![deny(clippy::all)]
//! The napi surface only: thin wrappers over the modules below, and error mapping.
//! Every export uses `catch_unwind` so a panic becomes a JS error, never an abort.
//! Events cross to JS as objects (napi's serde-json), built once in `event.rs`.

mod config;
mod event;
mod fleet;
mod guard;
mod liveness;
mod monitor;
mod near_heap;
mod notify;
mod policy;
mod probe;
mod recycle;
mod reexec;
mod report;
mod sampler;
mod stagger;
mod status_file;
mod stop_signal;
mod trend;
mod units;

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

use crate::config::{ConfigError, Machine, RawSettings};
use crate::event::{DrainPhase, Envelope, Event, Recycle};
use crate::guard::{InitCost, REGISTRY};
use crate::liveness::Liveness;
use crate::monitor::{EventSink, Monitor, MonitorSetup, Probes};
use crate::near_heap::NearHeapHandler;
use crate::notify::Notifier;
use crate::policy::Reason;
use crate::probe::heap_cell::HeapCell;
use crate::probe::procfs;
use crate::probe::v8::{self, HeapFigures, Isolate, JsMemoryUsage};
use crate::recycle::StopOutcome;
use crate::sampler::{SampleSource, Ticker};

/// What `process.memoryUsage()` returned just before `start`: checked against the native
/// read of V8's statistics (without loading `node:v8`, ~1.6 ms at start).
#[napi(object)]
pub struct MemoryUsageInput {
    pub heap_total: f64,
    pub heap_used: f64,
    pub external: f64,
}

/// `v8.getHeapStatistics()`, given only when the native heap probe is refused (the JS
/// fallback then feeds the figures).
#[napi(object)]
pub struct HeapStatisticsInput {
    pub total_heap_size: f64,
    pub used_heap_size: f64,
    pub heap_size_limit: f64,
    pub external_memory: f64,
}

impl From<&MemoryUsageInput> for JsMemoryUsage {
    fn from(memory: &MemoryUsageInput) -> Self {
        JsMemoryUsage {
            heap_total: memory.heap_total,
            heap_used: memory.heap_used,
            external: memory.external,
        }
    }
}

/// `null` when the native heap probe reads what `process.memoryUsage()` says (JS then never
/// needs `node:v8`); otherwise why it cannot be used.
#[napi(catch_unwind)]
pub fn native_heap_probe_refusal(memory: MemoryUsageInput) -> Option<String> {
    // SAFETY: a napi call runs on the JS thread of this isolate.
    v8::current_isolate()
        .and_then(|isolate| unsafe { v8::validate(isolate, &JsMemoryUsage::from(&memory)) })
        .err()
}

/// What js/fleet.js counted in the fleet's recent recycles.
#[napi(object)]
pub struct StormInput {
    pub fleet: String,
    pub recycles: f64,
    pub threshold: f64,
    pub window_ms: f64,
    /// `{ reason: count }`
    pub reasons: Value,
    /// `{ host: count }`
    pub hosts: Value,
    pub median_uptime_ms: Option<f64>,
    pub gap_ms: Option<f64>,
}

#[napi(object)]
pub struct StartInput {
    /// `SELF_RECYCLE_*` variables, without the prefix.
    pub env: HashMap<String, String>,
    /// Options by camelCase name, values as strings.
    pub options: HashMap<String, String>,
    /// `process.uptime()` in milliseconds.
    pub uptime_ms: f64,
    pub memory: MemoryUsageInput,
    /// Only when the native heap probe is refused (or the tests force the fallback).
    pub heap: Option<HeapStatisticsInput>,
    /// `--max-semi-space-size` in MiB (or V8's default for its major): the young generation
    /// is three of them, and `heap_size_limit` minus that is the old-space limit...
    pub semi_space_mib: f64,
    /// ...unless `--max-old-space-size` says it outright.
    pub old_space_mib: Option<f64>,
    /// Whether JS runs on the process's main thread; `None`: ask the OS (`gettid() == pid`).
    pub main_thread: Option<bool>,
    /// Skip the native V8 probe (tests of the fallback, odd runtimes).
    pub force_js_heap_probe: bool,
    /// A fleet client runs in JS (`fleet` option or FLEET_REDIS): automatic recycles ask
    /// it for a lease first.
    pub fleet: Option<bool>,
    /// Node runs with `--heapsnapshot-near-heap-limit`: its callback must stay in place.
    pub node_owns_near_heap_limit: bool,
    /// Node writes a diagnostic report on fatal errors (`--report-on-fatalerror`): its
    /// OOM handler must stay in place.
    pub node_reports_fatal_errors: bool,
    /// The process has an IPC channel to its parent (`process.send`): `RESTART=exec`
    /// would cut it.
    pub ipc_channel: Option<bool>,
    /// `{ node, v8, platform, arch }`, for the recycle report.
    pub versions: Value,
    /// `Date.now()` at start.
    pub started_epoch_ms: f64,
    /// systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` as the process
    /// received them (JS removes them from its environment so children cannot notify).
    pub notify_socket: Option<String>,
    pub watchdog_usec: Option<String>,
    pub watchdog_pid: Option<String>,
}

/// What the sampler thread sends to the JS thread.
enum ToJs {
    Event(Map<String, Value>),
    /// A liveness ping: answered (recorded) on the JS thread; JS receives `null`.
    Ping,
}

type EventCallback = ThreadsafeFunction<ToJs, (), Value, Status, false, true>;

/// Delivers events to JS through a weak threadsafe function (it never keeps the loop
/// alive). Released on `stop()`, so a stopped recycler holds no JS function.
struct JsSink {
    callback: Mutex<Option<EventCallback>>,
}

impl JsSink {
    fn call(&self, value: ToJs) -> bool {
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

fn to_bytes(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

/// `ERR_SELF_RECYCLE_CONFIG` with the variable, the value and what is accepted as
/// properties, thrown from the constructor itself.
fn config_error(env: &Env, error: &ConfigError) -> Error {
    let thrown = (|| -> Result<()> {
        let mut object = env.create_error(Error::new(Status::InvalidArg, error.to_string()))?;
        object.set_named_property("name", "SelfRecycleConfigError")?;
        object.set_named_property("code", "ERR_SELF_RECYCLE_CONFIG")?;
        object.set_named_property("variable", error.variable.as_str())?;
        object.set_named_property("value", error.value.as_str())?;
        object.set_named_property("accepts", error.accepts.as_str())?;
        env.throw(object)
    })();
    match thrown {
        Ok(()) => Error::new(Status::PendingException, error.to_string()),
        Err(_) => Error::new(Status::InvalidArg, error.to_string()),
    }
}

/// Chooses the heap probe: native when every symbol resolves and the layout matches what
/// JS just read; otherwise the JS fallback, with the reason.
fn choose_heap_probe(input: &StartInput, heap: &HeapCell) -> (Option<Isolate>, Option<String>) {
    if input.force_js_heap_probe {
        return (
            None,
            Some("native probe disabled by the caller".to_string()),
        );
    }
    // SAFETY: a napi constructor runs on the JS thread of this isolate.
    let checked = v8::current_isolate().and_then(|isolate| {
        unsafe { v8::validate(isolate, &JsMemoryUsage::from(&input.memory)) }.map(|f| (isolate, f))
    });
    match checked {
        Ok((isolate, figures)) => {
            heap.record(figures);
            (Some(isolate), None)
        }
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
fn install_near_heap_limit(
    input: &StartInput,
    monitor: &Arc<Monitor>,
) -> Option<Arc<dyn NearHeapHandler>> {
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
    let handler: Arc<dyn NearHeapHandler> = Arc::clone(monitor) as Arc<dyn NearHeapHandler>;
    let installed =
        v8::current_isolate().and_then(|isolate| near_heap::install(isolate, Arc::clone(&handler)));
    match installed {
        Ok(()) => {
            monitor.set_near_heap_status("on".to_string());
            let oom = if input.node_reports_fatal_errors {
                Err("off: --report-on-fatalerror owns V8's OOM handler".to_string())
            } else {
                v8::current_isolate().and_then(near_heap::install_oom_handler)
            };
            monitor.set_oom_status(match oom {
                Ok(()) => "on".to_string(),
                Err(reason) if reason.starts_with("off") => reason,
                Err(reason) => format!("off: {reason}"),
            });
            Some(handler)
        }
        Err(reason) => {
            monitor.set_near_heap_status(format!("off: {reason}"));
            None
        }
    }
}

/// What one started recycler attached to the runtime: the sampler thread and V8 hooks.
/// Detached on `stop()`, in the env cleanup hook and at process exit.
struct Attachments {
    ticker: Option<Ticker>,
    near_heap: Option<Arc<dyn NearHeapHandler>>,
    gc_isolate: Option<Isolate>,
    heap: Option<&'static HeapCell>,
    /// We started V8's sampling heap profiler: stop it with the recycler.
    profiling: bool,
    /// The native stop-signal handler is armed for this recycler.
    stop_signals: bool,
}

impl Attachments {
    fn detach(&mut self) {
        if std::mem::take(&mut self.stop_signals) {
            stop_signal::disarm();
        }
        if std::mem::take(&mut self.profiling) {
            // JS thread (napi call or env cleanup hook).
            probe::sampling::stop();
        }
        if let Some(mut ticker) = self.ticker.take() {
            ticker.stop();
        }
        if let (Some(isolate), Some(heap)) = (self.gc_isolate.take(), self.heap) {
            // SAFETY: detach runs on the JS thread (napi call or env cleanup hook).
            unsafe { heap.remove_gc_epilogue(isolate) };
        }
        if let Some(handler) = self.near_heap.take() {
            near_heap::uninstall(&handler);
        }
        if let Some(heap) = self.heap.take() {
            heap.release();
        }
    }
}

/// PROFILE=heap on the main thread: V8's sampling heap profiler, started natively. The
/// status says how sites are profiled; `unavailable: ...` tells JS to use the inspector.
fn start_heap_profiler(monitor: &Monitor, input: &StartInput, main_thread: bool) -> (String, bool) {
    let config = monitor.config();
    if !config.profile {
        return ("off".to_string(), false);
    }
    if !main_thread {
        return (
            "off: worker thread (the main thread's recycler profiles)".to_string(),
            false,
        );
    }
    let v8_version = input
        .versions
        .get("v8")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(why) = probe::sampling::unavailable(v8_version) {
        return (format!("unavailable: {why}"), false);
    }
    match probe::sampling::start(config.profile_interval, PROFILE_STACK_DEPTH) {
        // One profile (a root, nothing sampled yet) is taken and its layout checked before
        // the native path is trusted; refused, the inspector runs the profiler instead.
        Ok(true) => match probe::sampling::confirm() {
            Ok(()) => ("native".to_string(), true),
            Err(why) => {
                probe::sampling::stop();
                (format!("unavailable: {why}"), false)
            }
        },
        Ok(false) => (
            "busy: another inspector client runs the sampling heap profiler; left alone"
                .to_string(),
            false,
        ),
        Err(why) => (format!("unavailable: {why}"), false),
    }
}

/// Frames kept per sample, counted from the allocation up: enough to reach the
/// application's frame under a framework's or a library's (V8 drops the outermost ones,
/// where the app's call would be). The cost is one stack walk per sample.
const PROFILE_STACK_DEPTH: u32 = 128;

#[napi]
pub struct NativeRecycler {
    /// `None`: `SELF_RECYCLE_DISABLE` — an inert recycler.
    monitor: Option<Arc<Monitor>>,
    sink: Option<Arc<JsSink>>,
    attachments: Arc<Mutex<Attachments>>,
}

struct SharedSink(Arc<JsSink>);

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

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}

#[napi]
impl NativeRecycler {
    /// Parses the settings (throwing `ERR_SELF_RECYCLE_CONFIG`), then starts sampling.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, input: StartInput, on_event: Function<Value, ()>) -> Result<Self> {
        let config = config::parse(&RawSettings {
            env: &input.env,
            options: &input.options,
        })
        .map_err(|error| config_error(&env, &error))?;
        if config.disable {
            return Ok(NativeRecycler {
                monitor: None,
                sink: None,
                attachments: Arc::new(Mutex::new(Attachments {
                    ticker: None,
                    near_heap: None,
                    gc_isolate: None,
                    heap: None,
                    profiling: false,
                    stop_signals: false,
                })),
            });
        }
        let heap = HeapCell::acquire();
        let (isolate, fallback_reason) = choose_heap_probe(&input, heap);
        if isolate.is_none() {
            let Some(stats) = &input.heap else {
                return Err(invalid(
                    "the native heap probe is refused: pass v8.getHeapStatistics() as input.heap",
                ));
            };
            heap.record(HeapFigures {
                used: to_bytes(stats.used_heap_size),
                total: to_bytes(stats.total_heap_size),
                limit: to_bytes(stats.heap_size_limit),
                external: to_bytes(stats.external_memory),
            });
        }
        let heap_size_limit = heap.figures().map(|f| f.limit).filter(|l| *l > 0);
        // SAFETY: the constructor runs on the JS thread; the cell outlives the hook.
        let gc_isolate = isolate.filter(|i| unsafe { heap.install_gc_epilogue(*i) });
        let liveness = Arc::new(Liveness::default());
        let answering = Arc::clone(&liveness);
        let callback: EventCallback = on_event
            .build_threadsafe_function::<ToJs>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(move |context| match context.value {
                ToJs::Event(event) => Ok(Value::Object(event)),
                ToJs::Ping => {
                    answering.pong();
                    Ok(Value::Null)
                }
            })?;
        let sink = Arc::new(JsSink {
            callback: Mutex::new(Some(callback)),
        });
        let source = SampleSource::new(heap, isolate, to_bytes(input.uptime_ms));
        let main_thread = on_main_thread(&input);
        let notifier = main_thread
            .then(|| {
                input.notify_socket.clone().map(|socket| {
                    Notifier::new(
                        socket,
                        input.watchdog_usec.as_deref(),
                        input.watchdog_pid.as_deref(),
                        std::process::id(),
                    )
                })
            })
            .flatten();
        let machine = Machine::sized(
            probe::cgroup::detect(),
            heap_size_limit,
            input.semi_space_mib,
            input.old_space_mib,
        );
        let monitor = Arc::new(Monitor::new(MonitorSetup {
            config,
            machine,
            source,
            probes: Probes {
                v8_native: isolate.is_some(),
                v8_fallback_reason: fallback_reason,
                gc_epilogue: gc_isolate.is_some(),
            },
            can_exit_process: main_thread,
            sink: Box::new(SharedSink(Arc::clone(&sink))),
            versions: input.versions.clone(),
            started_epoch_ms: to_bytes(input.started_epoch_ms),
            liveness,
            notifier,
            jitter_unit: random_unit(),
            fleet: input.fleet.unwrap_or(false),
            ipc_channel: input.ipc_channel.unwrap_or(false),
        }));
        monitor.notify_ready();
        let (profile_status, profiling) = start_heap_profiler(&monitor, &input, main_thread);
        monitor.set_profile_status(profile_status);
        let near_heap = install_near_heap_limit(&input, &monitor);
        let ticking = Arc::clone(&monitor);
        let ticker = Ticker::spawn("self-recycle", move || ticking.tick()).map_err(|e| {
            Error::new(
                Status::GenericFailure,
                format!("cannot start the sampler thread: {e}"),
            )
        })?;
        monitor.set_waker(ticker.waker());
        let attachments = Arc::new(Mutex::new(Attachments {
            ticker: Some(ticker),
            near_heap,
            gc_isolate,
            heap: Some(heap),
            profiling,
            stop_signals: false,
        }));
        // Runs when the isolate's environment is torn down (worker.terminate(), normal
        // exit): the thread must be joined before the isolate goes away.
        let for_cleanup = Arc::clone(&attachments);
        env.add_env_cleanup_hook((), move |()| for_cleanup.lock().detach())?;
        Ok(NativeRecycler {
            monitor: Some(monitor),
            sink: Some(sink),
            attachments,
        })
    }

    fn monitor(&self) -> Result<&Arc<Monitor>> {
        self.monitor
            .as_ref()
            .ok_or_else(|| invalid("self-recycle is disabled (SELF_RECYCLE_DISABLE)"))
    }

    /// `true` when `SELF_RECYCLE_DISABLE` made this recycler inert.
    #[napi(getter, catch_unwind)]
    pub fn disabled(&self) -> bool {
        self.monitor.is_none()
    }

    #[napi(catch_unwind)]
    pub fn start_event(&self) -> Result<Map<String, Value>> {
        Ok(self.monitor()?.start_event())
    }

    /// A manual recycle: returns its `recycle` event for JS to drain on at once, or
    /// `null` if a recycle or a stop is already under way.
    #[napi(catch_unwind)]
    pub fn trigger(&self, detail: Option<String>) -> Result<Option<Map<String, Value>>> {
        let mut recycle = Recycle::new(Reason::Manual, 0, 0, 0);
        recycle.detail = detail;
        Ok(self.monitor()?.trigger(recycle, false))
    }

    /// A stop signal: `{ outcome: 'started' | 'joined' | 'again' | 'native', event }`
    /// (`native`: the watcher already acted on it while JS was stuck).
    #[napi(catch_unwind)]
    pub fn request_stop(&self, signal: String, number: i32) -> Result<Value> {
        let (outcome, event) = match self.monitor()?.request_stop_from_js(&signal, number) {
            monitor::JsStop::Decide(outcome, event) => (outcome, event),
            // The native watcher took this delivery while JS was stuck.
            monitor::JsStop::TakenNatively(event) => {
                return Ok(serde_json::json!({ "outcome": "native", "event": event }));
            }
        };
        let outcome = match outcome {
            StopOutcome::Started => "started",
            StopOutcome::Joined => "joined",
            StopOutcome::Again => "again",
        };
        Ok(serde_json::json!({ "outcome": outcome, "event": event }))
    }

    /// Chains the native stop-signal handler in front of the JS listeners just added
    /// (`SIGNALS=on`, main thread): `null` once armed, else why not (JS then decides alone).
    #[napi(catch_unwind)]
    pub fn arm_stop_signals(&self) -> Result<Option<String>> {
        let monitor = self.monitor()?;
        if !monitor.can_exit_process() {
            return Ok(Some(
                "a worker thread's recycler does not own the process's signals".to_string(),
            ));
        }
        let weak: std::sync::Weak<Monitor> = Arc::downgrade(monitor);
        let handler: std::sync::Weak<dyn stop_signal::StopSignalHandler> = weak;
        match stop_signal::arm(handler) {
            Ok(()) => {
                self.attachments.lock().stop_signals = true;
                Ok(None)
            }
            Err(why) => Ok(Some(why)),
        }
    }

    /// The post-GC used heap as `[epoch ms, bytes]` pairs, oldest first (the job
    /// attribution fits per-job growth between them).
    #[napi(catch_unwind)]
    pub fn post_gc_series(&self) -> Result<Vec<Vec<f64>>> {
        Ok(self.monitor()?.post_gc_series_epoch())
    }

    /// A library will re-raise `number` for the stop under way (Nest's shutdown hooks).
    #[napi(catch_unwind)]
    pub fn expect_signal(&self, number: i32) {
        stop_signal::expect(number);
    }

    /// The second signal of a stop: the `exit` event for leaving at once.
    #[napi(catch_unwind)]
    pub fn interrupt(&self, signal: String, number: i32) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.interrupt(&signal, number))
    }

    /// This worker serves a port: with a stagger queue, it drains only once the last
    /// sibling to recycle has a replacement listening. `false` without a queue.
    #[napi(catch_unwind)]
    pub fn stagger_serve(&self) -> Result<bool> {
        Ok(self.monitor()?.stagger_serve())
    }

    /// This worker listens (see `stagger_serve`). `false` without a queue.
    #[napi(catch_unwind)]
    pub fn stagger_listening(&self) -> Result<bool> {
        self.monitor()?.stagger_listening().map_err(invalid)
    }

    /// The fleet client's answer to a lease ask: `granted`, `wait` or `unavailable`, with
    /// why. Returns whether a recycle was waiting for it.
    #[napi(catch_unwind)]
    pub fn fleet_answer(&self, status: String, why: Option<String>) -> Result<bool> {
        let why = why.unwrap_or_default();
        let answer = match status.as_str() {
            "granted" => fleet::FleetAnswer::Granted,
            "wait" => fleet::FleetAnswer::Wait(why),
            "unavailable" => fleet::FleetAnswer::Unavailable(why),
            other => {
                return Err(invalid(format!(
                    "fleetAnswer: {other:?} is not granted, wait or unavailable"
                )))
            }
        };
        Ok(self.monitor()?.fleet_answer(answer))
    }

    /// How allocation sites are profiled, for `probes.profile`.
    #[napi(catch_unwind)]
    pub fn set_profile_status(&self, status: String) -> Result<()> {
        self.monitor()?.set_profile_status(status);
        Ok(())
    }

    /// Adds fields to the `recycle` event under way, as kept for the report.
    #[napi(catch_unwind)]
    pub fn annotate_recycle(&self, fields: Map<String, Value>) -> Result<()> {
        self.monitor()?.annotate_recycle(fields);
        Ok(())
    }

    /// The report's `profile` section.
    #[napi(catch_unwind)]
    pub fn set_report_profile(&self, profile: Value) -> Result<()> {
        self.monitor()?.set_report_profile(profile);
        Ok(())
    }

    /// Writes `text` beside the recycle report: `{ path }`, `{ error }`, or null without
    /// `REPORT_DIR`.
    #[napi(catch_unwind)]
    pub fn write_beside_report(&self, extension: String, text: String) -> Result<Option<Value>> {
        if extension.is_empty() || !extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(format!("not a file extension: {extension:?}")));
        }
        Ok(self
            .monitor()?
            .write_beside_report(&extension, text.as_bytes())
            .map(|written| match written {
                Ok(path) => serde_json::json!({ "path": path }),
                Err(error) => serde_json::json!({ "error": error }),
            }))
    }

    #[napi(catch_unwind)]
    pub fn job_done(&self, count: u32) -> Result<f64> {
        Ok(self.monitor()?.job_done(u64::from(count)) as f64)
    }

    /// Heap figures from the JS fallback probe.
    #[napi(catch_unwind)]
    pub fn report_heap(&self, used: f64, total: f64, limit: f64, external: f64) -> Result<()> {
        self.monitor()?.record_heap(HeapFigures {
            used: to_bytes(used),
            total: to_bytes(total),
            limit: to_bytes(limit),
            external: to_bytes(external),
        });
        Ok(())
    }

    /// A post-GC heap figure from the JS fallback (a major `gc` performance entry).
    #[napi(catch_unwind)]
    pub fn report_post_gc(&self, used: f64) -> Result<()> {
        self.monitor()?.record_post_gc(to_bytes(used));
        Ok(())
    }

    /// How long tracked jobs take (p90, ms) and when the youngest in flight started (epoch
    /// ms); `null`s: no work in flight.
    #[napi(catch_unwind)]
    pub fn set_expected_drain(
        &self,
        p90_ms: Option<f64>,
        youngest_started_ms: Option<f64>,
        concurrent: bool,
    ) -> Result<()> {
        let work = p90_ms
            .zip(youngest_started_ms)
            .map(|(p90, at)| (to_bytes(p90), to_bytes(at), concurrent));
        self.monitor()?.set_tracked_work(work);
        Ok(())
    }

    /// JS took the `recycle` event; returns the milliseconds left to drain.
    #[napi(catch_unwind)]
    pub fn acknowledge(&self) -> Result<Option<f64>> {
        Ok(self
            .monitor()?
            .acknowledge()
            .map(|left| left.as_millis() as f64))
    }

    /// The `drain` start event, on the drain's own clock.
    #[napi(catch_unwind)]
    pub fn drain_started(&self, hooks: u32, in_flight: u32) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.drain_event(DrainPhase::Start {
            hooks,
            in_flight,
            left_ms: 0,
        }))
    }

    /// The `drain` end event.
    #[napi(catch_unwind)]
    pub fn drain_finished(
        &self,
        in_flight: u32,
        drained: bool,
        errors: Vec<String>,
    ) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.drain_event(DrainPhase::End {
            in_flight,
            drained,
            errors,
        }))
    }

    /// JS finished draining and leaves now: returns the `exit` event (the recycle report,
    /// if any, holds the same event).
    #[napi(catch_unwind)]
    pub fn finish(
        &self,
        drained: bool,
        heap_snapshot: Option<Value>,
    ) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.finish(drained, heap_snapshot))
    }

    /// Where the recycle report will be written, if `REPORT_DIR` is set.
    #[napi(catch_unwind)]
    pub fn report_path(&self) -> Result<Option<String>> {
        Ok(self
            .monitor()?
            .report_path()
            .map(|p| p.display().to_string()))
    }

    /// The highest share of a limit the latest sample reached (0 without limits).
    #[napi(catch_unwind)]
    pub fn pressure(&self) -> Result<f64> {
        Ok(self.monitor()?.pressure())
    }

    /// The `storm` event, from what the fleet's history says (js/fleet.js counts it).
    #[napi(catch_unwind)]
    pub fn storm_event(&self, storm: StormInput) -> Result<Map<String, Value>> {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let monitor = self.monitor()?;
        Ok(monitor.render(&event::Event::Storm(Box::new(event::Storm {
            fleet: storm.fleet,
            recycles: to_bytes(storm.recycles),
            threshold: to_bytes(storm.threshold),
            window_ms: to_bytes(storm.window_ms),
            reasons: object(storm.reasons),
            hosts: object(storm.hosts),
            median_uptime_ms: storm.median_uptime_ms.map(to_bytes),
            gap_ms: storm.gap_ms.map(to_bytes),
        }))))
    }

    /// A `warning` event about the fleet (js/fleet.js finds it: a mismatch, a refusal).
    #[napi(catch_unwind)]
    pub fn fleet_warning_event(
        &self,
        fleet: String,
        code: String,
        reason: String,
        detail: Option<Value>,
    ) -> Result<Map<String, Value>> {
        Ok(self.monitor()?.render(&event::Event::Warning {
            fleet,
            code,
            reason,
            detail: detail.unwrap_or(Value::Null),
        }))
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> Result<Value> {
        Ok(self.monitor()?.stats())
    }

    #[napi(catch_unwind)]
    pub fn set_sample_events(&self, enabled: bool) -> Result<()> {
        self.monitor()?.set_sample_events(enabled);
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn sample_consumed(&self) -> Result<()> {
        self.monitor()?.sample_consumed();
        Ok(())
    }

    /// Stops sampling and lets go of the JS callback. Refused (`false`) while a recycle is
    /// under way: the deadline stays.
    #[napi(catch_unwind)]
    pub fn stop(&self) -> bool {
        if let Some(monitor) = &self.monitor {
            if monitor.state_name() != "running" {
                return false;
            }
        }
        self.shut_down();
        true
    }

    /// Stops everything, whatever the state: the process is exiting (`exit` listener).
    #[napi(catch_unwind)]
    pub fn shut_down(&self) {
        self.attachments.lock().detach();
        if let Some(sink) = &self.sink {
            sink.release();
        }
    }
}

impl Drop for NativeRecycler {
    fn drop(&mut self) {
        self.attachments.lock().detach();
    }
}

/// A number in [0, 1), different in each process (the jitter of its limits).
fn random_unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
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

/// `RESTART=exec`: re-executes the process in place (after the `exit` listeners ran).
/// Returns only if that could not start, with why; a failing execve ends the process with
/// `exit_code` itself.
#[napi(catch_unwind)]
pub fn exec_self(exit_code: i32) -> String {
    reexec::exec_self(exit_code)
}

/// `drainHttp(server, { handOff: true })`: keeps the listening socket `fd` open for the
/// next generation (`RESTART=exec`) under `name`; an error says why it cannot.
#[napi(catch_unwind)]
pub fn hand_off_socket(fd: i32, name: String) -> Result<()> {
    reexec::hand_off(fd, &name).map_err(|why| Error::new(Status::InvalidArg, why))
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
    /// Attempts from this call site.
    pub from_site: f64,
    /// The 1st, 10th, 100th... from this call site: emit a `reinit` event.
    pub report: bool,
}

#[napi(catch_unwind)]
pub fn guard_reinit(key: String, call_site: String) -> ReinitCount {
    let reinit = REGISTRY.reinit(&key, &call_site);
    ReinitCount {
        attempts: reinit.attempts as f64,
        from_site: reinit.from_site as f64,
        report: reinit.worth_reporting(),
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
pub fn guard_stats() -> Value {
    REGISTRY.stats()
}

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
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(procfs::resident());
    }
    let rss_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
    // SAFETY: a napi call runs on the JS thread of the current isolate.
    let readable = |isolate: &Isolate| unsafe { v8::read_heap(*isolate) }.is_some();
    let heap_ns = v8::current_isolate().ok().filter(readable).map(|isolate| {
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            // SAFETY: as above.
            std::hint::black_box(unsafe { v8::read_heap(isolate) });
        }
        started.elapsed().as_nanos() as f64 / f64::from(iterations)
    });
    ProbeCost { rss_ns, heap_ns }
}

/// Why V8's sampling heap profiler cannot be used natively here (`null`: it can).
#[napi(catch_unwind)]
pub fn heap_profile_unavailable(v8_version: String) -> Option<String> {
    probe::sampling::unavailable(&v8_version)
}

/// Starts V8's sampling heap profiler (JS thread): `false` if another client runs it.
#[napi(catch_unwind)]
pub fn heap_profile_start(interval: f64, stack_depth: u32) -> Result<bool> {
    probe::sampling::start(to_bytes(interval), stack_depth).map_err(invalid)
}

#[napi(catch_unwind)]
pub fn heap_profile_stop() {
    probe::sampling::stop();
}

/// The sampling heap profile as a DevTools `SamplingHeapProfile`, or null when the
/// profiler is not running (another client stopped it).
#[napi(catch_unwind)]
pub fn heap_profile_take() -> Result<Option<Value>> {
    probe::sampling::take().map_err(invalid)
}

/// Memory still available (cgroup limit minus usage, or MemAvailable), if known.
#[napi(catch_unwind)]
pub fn available_memory() -> Option<f64> {
    probe::cgroup::available_memory().map(|b| b as f64)
}

/// Current RSS in bytes (0 where there is no procfs).
#[napi(catch_unwind)]
pub fn resident_bytes() -> f64 {
    procfs::resident().map_or(0.0, |r| r.rss as f64)
}

/// The guard's `reinit` event (it can happen with no recycler started).
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn reinit_event(
    key: String,
    attempts: f64,
    from_site: f64,
    cached: bool,
    call_site: String,
    stack: String,
    uptime_ms: f64,
    heap_used: f64,
    heap_limit: f64,
) -> Map<String, Value> {
    let envelope = Envelope {
        uptime_ms: to_bytes(uptime_ms),
        rss: procfs::resident().map_or(0, |r| r.rss),
        heap_used: to_bytes(heap_used),
        heap_limit: to_bytes(heap_limit),
        generation: None,
    };
    Event::Reinit {
        key,
        attempts: to_bytes(attempts),
        from_site: to_bytes(from_site),
        cached,
        call_site,
        stack,
    }
    .to_json(&envelope)
}
