//! One recycler: ties probe -> sampler -> policy -> recycle -> event together. Each tick
//! runs on the sampler thread; JS-facing calls (trigger, acknowledge, drain events,
//! finish, stats) run on the JS thread; the near-heap-limit handler runs inside V8's GC.
//! Events leave through an `EventSink` (a threadsafe function in the addon).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::config::{self, Config, Machine, Restart};
use crate::event::{self, Envelope, Event, Recycle};
use crate::fleet::FleetGate;
use crate::liveness::Liveness;
use crate::notify::Notifier;
use crate::policy::{Limits, Policy, Sample};
use crate::probe::cgroup::LimitSource;
use crate::probe::v8::HeapFigures;
use crate::recycle::RecycleState;
use crate::reexec;
use crate::sampler::{SampleRing, SampleSource, Waker};
use crate::stagger::Stagger;

mod container;
mod signals;
pub use signals::JsStop;
mod admission;
mod drafts;
mod drain;
mod outputs;
mod pending;
/// `stats()`, the `start` event's views and the recycle report.
mod status;
mod throttle;
mod tick;
mod verdicts;

/// Samples kept for `stats()` and reports.
const RING_CAPACITY: usize = 120;
/// Events kept for the status file.
const RECENT_EVENTS: usize = 10;
/// How often the status file is rewritten (and at once when the state changes).
const STATUS_EVERY: Duration = Duration::from_secs(2);

pub trait EventSink: Send + Sync {
    /// Hands an event to JS; `false` when JS can no longer receive.
    fn deliver(&self, event: Map<String, Value>) -> bool;
    /// Queues a liveness ping the event loop answers when it runs; `false` if JS is gone.
    fn ping(&self) -> bool;
    /// Lets go of JS for good (the recycler stopped).
    fn release(&self) {}
}

/// Which probes are in use, for the `start` event.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub v8_native: bool,
    pub v8_fallback_reason: Option<String>,
    pub gc_epilogue: bool,
}

pub struct MonitorSetup {
    pub config: Config,
    pub machine: Machine,
    pub source: SampleSource,
    pub probes: Probes,
    /// Only the main thread may end the process; a worker thread's recycler cannot.
    pub can_exit_process: bool,
    pub sink: Box<dyn EventSink>,
    /// Node, V8 and platform versions, for the recycle report.
    pub versions: Value,
    /// Wall-clock start, naming the report file.
    pub started_epoch_ms: u64,
    pub liveness: Arc<Liveness>,
    /// sd_notify target, main thread only.
    pub notifier: Option<Notifier>,
    /// A random number in [0, 1) for the jitter of this process's limits.
    pub jitter_unit: f64,
    /// A fleet client runs in JS: automatic recycles ask it for a lease first.
    pub fleet: bool,
    /// The process has an IPC channel to its parent (`RESTART=exec` would cut it).
    pub ipc_channel: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    samples: u64,
    pressure: u64,
    misconfigured: u64,
    recycles: u64,
}

/// What the sampler thread keeps between ticks.
struct Sampling {
    policy: Policy,
    ring: SampleRing,
    counters: Counters,
    /// An automatic recycle waiting for its turn among siblings, since when.
    pending: Option<(Recycle, Instant)>,
    /// The `queued` event of the pending recycle was emitted.
    pending_announced: bool,
    last_watchdog: Option<Instant>,
    /// Major-GC count when the leak slope was last fitted (refit only on new points).
    leak_checked_at_gc: u64,
    /// (p90 ms, youngest start epoch ms, several in flight) of tracked work, from JS.
    tracked_work: Option<(u64, u64, bool)>,
}

pub struct Monitor {
    config: Config,
    machine: Machine,
    source: SampleSource,
    probes: Probes,
    can_exit_process: bool,
    sink: Box<dyn EventSink>,
    versions: Value,
    started_epoch_ms: u64,
    liveness: Arc<Liveness>,
    stagger: Option<Stagger>,
    fleet: Option<FleetGate>,
    /// `on`, or why the near-heap-limit callback is not installed.
    near_heap_status: Mutex<String>,
    /// `on`, or why V8's OOM handler is not ours.
    oom_status: Mutex<String>,
    /// How allocation sites are profiled (`native`, `inspector`, `off`, or why not).
    profile_status: Mutex<String>,
    /// The profile section of the recycle report (top sites), from JS with the recycle
    /// event it completed.
    report_profile: Mutex<Option<Value>>,
    /// `leak` and `recycle` events JS has yet to complete (drafts.rs).
    drafts: Mutex<drafts::Drafts>,
    /// Wakes the sampler thread so it sleeps no later than a new drain deadline.
    waker: Mutex<Option<Waker>>,
    /// sd_notify, the status file and the recent events it shows.
    outputs: outputs::Outputs,
    sampling: Mutex<Sampling>,
    recycle: Mutex<RecycleState>,
    jobs_done: AtomicU64,
    sample_events: AtomicBool,
    sample_in_flight: AtomicBool,
    /// Stop-signal deliveries taken by JS and by the native watcher (signals.rs).
    stop_book: Mutex<signals::StopBook>,
    /// `RESTART=exec` works here: a recycle re-executes the process instead of exiting.
    exec_on_recycle: bool,
    /// Why `RESTART=exec` cannot work here, when it was asked for.
    exec_refused: Option<String>,
    /// The container budget's cgroup and its last reading.
    container: container::Budget,
    jitter_unit: f64,
}

impl Monitor {
    pub fn new(setup: MonitorSetup) -> Monitor {
        let config = setup.config;
        let limits = config::resolve(&config, &setup.machine, setup.jitter_unit);
        let stagger = config
            .stagger_dir
            .as_deref()
            .map(|dir| Stagger::new(dir, config.stagger_gap_ms));
        let fleet = setup.fleet.then(|| FleetGate::new(config.fleet_timeout_ms));
        let mut ring = SampleRing::new(RING_CAPACITY);
        ring.push(setup.source.take(0, &Sample::default()));
        let exec_refused = match (config.restart, setup.can_exit_process) {
            (Restart::Exit, _) => None,
            (Restart::Exec, false) => {
                Some("a worker thread's recycler does not own the process".to_string())
            }
            (Restart::Exec, true) => reexec::prepare(setup.ipc_channel),
        };
        let exec_on_recycle = config.restart == Restart::Exec && exec_refused.is_none();
        Monitor {
            exec_on_recycle,
            exec_refused,
            container: container::Budget::new(
                setup
                    .machine
                    .memory_limit
                    .filter(|m| m.source != LimitSource::Physical)
                    .map(|m| m.bytes),
            ),
            outputs: outputs::Outputs::new(config.status_file.as_deref(), setup.notifier),
            jitter_unit: setup.jitter_unit,
            recycle: Mutex::new(RecycleState::new(Duration::from_millis(
                config.drain_timeout_ms,
            ))),
            sampling: Mutex::new(Sampling {
                policy: Policy::new(limits),
                ring,
                counters: Counters::default(),
                pending: None,
                pending_announced: false,
                last_watchdog: None,
                leak_checked_at_gc: 0,
                tracked_work: None,
            }),
            config,
            machine: setup.machine,
            source: setup.source,
            probes: setup.probes,
            can_exit_process: setup.can_exit_process,
            sink: setup.sink,
            versions: setup.versions,
            started_epoch_ms: setup.started_epoch_ms,
            liveness: setup.liveness,
            stagger,
            fleet,
            near_heap_status: Mutex::new("off".to_string()),
            oom_status: Mutex::new("off".to_string()),
            profile_status: Mutex::new("off".to_string()),
            report_profile: Mutex::new(None),
            drafts: Mutex::new(drafts::Drafts::default()),
            waker: Mutex::new(None),
            jobs_done: AtomicU64::new(0),
            sample_events: AtomicBool::new(false),
            sample_in_flight: AtomicBool::new(false),
            stop_book: Mutex::new(signals::StopBook::default()),
        }
    }

    pub fn set_profile_status(&self, status: String) {
        *self.profile_status.lock() = status;
    }

    /// JS's inspector fallback took over profiling at start: the status it reports, and
    /// the `start` event that says so (it replaces the one rendered before, which JS never
    /// logs).
    pub fn start_event_with_profile(&self, status: String) -> Map<String, Value> {
        self.set_profile_status(status);
        outputs::forget(&mut self.outputs.recent_events.lock(), "start");
        self.start_event()
    }

    pub fn set_near_heap_status(&self, status: String) {
        *self.near_heap_status.lock() = status;
    }

    pub fn set_oom_status(&self, status: String) {
        *self.oom_status.lock() = status;
    }

    pub fn set_waker(&self, waker: Waker) {
        *self.waker.lock() = Some(waker);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(super) fn limits(&self) -> Limits {
        self.sampling.lock().policy.limits().clone()
    }

    pub(super) fn latest(&self) -> Sample {
        self.sampling
            .lock()
            .ring
            .latest()
            .copied()
            .unwrap_or_default()
    }

    /// Figures for an event's envelope: RSS read now (about 1 us), heap from the latest
    /// JS-thread reading (a GC epilogue, an interrupt or a napi call).
    pub fn envelope(&self) -> Envelope {
        let sample = self.latest();
        let heap = self.source.heap().figures().unwrap_or_default();
        Envelope {
            uptime_ms: self.source.uptime_ms(),
            rss: self.source.resident().map_or(sample.rss, |r| r.rss),
            heap_used: heap.used,
            heap_limit: heap.limit,
            generation: (self.config.restart == Restart::Exec).then(reexec::generation),
        }
    }

    /// The event as JSON with a fresh envelope; remembered for the status file (samples
    /// excepted).
    pub fn render(&self, event: &Event) -> Map<String, Value> {
        let object = event.to_json(&self.envelope());
        if !matches!(event, Event::Sample(_)) {
            self.remember(&object);
        }
        object
    }

    /// Keeps a logged event for the status file's recent events.
    pub(super) fn remember(&self, object: &Map<String, Value>) {
        outputs::remember(
            &mut self.outputs.recent_events.lock(),
            object,
            RECENT_EVENTS,
        );
    }

    /// Hands an event to JS (a draft for JS to complete, for `leak`), or writes it to fd 2
    /// when JS is gone.
    pub(super) fn emit(&self, event: &Event) {
        if event.attributed_by_js() {
            let draft = self.draft(event.clone());
            self.deliver_draft(self.open_draft(draft));
            return;
        }
        let object = self.render(event);
        if !self.sink.deliver(object.clone()) {
            // JS is gone (teardown): keep the log complete anyway.
            event::write_stderr(&object, self.config.log.native());
        }
    }

    /// Heap figures from the JS fallback probe.
    pub fn record_heap(&self, figures: HeapFigures) {
        self.source.heap().record(figures);
    }

    /// A post-GC point from the JS fallback probe.
    pub fn record_post_gc(&self, used: u64) {
        self.source.heap().record_post_gc(used);
    }

    pub fn set_sample_events(&self, enabled: bool) {
        self.sample_events.store(enabled, Ordering::Release);
    }

    /// Called on the JS thread once a `sample` event was handed over.
    pub fn sample_consumed(&self) {
        self.sample_in_flight.store(false, Ordering::Release);
    }

    pub fn job_done(&self, count: u64) -> u64 {
        self.jobs_done.fetch_add(count, Ordering::AcqRel) + count
    }
}
