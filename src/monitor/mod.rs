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
use crate::event::{self, DrainPhase, Envelope, Event, Exit, ExitCause, Recycle};
use crate::fleet::{FleetAdmission, FleetAnswer, FleetGate};
use crate::liveness::Liveness;
use crate::near_heap::NearHeapHandler;
use crate::notify::{self, Notifier};
use crate::policy::{
    near_heap_action, HardLimit, Limits, NearHeapAction, Policy, Reason, Sample, Verdict,
};
use crate::probe::cgroup::LimitSource;
use crate::probe::v8::HeapFigures;
use crate::recycle::{exit_process, Drain, RecycleState, StopOutcome, StopSignal};
use crate::reexec;
use crate::sampler::{SampleRing, SampleSource, Waker};
use crate::stagger::{Admission, Stagger};

/// `stats()`, the `start` event's views and the recycle report.
mod container;
mod signals;
pub use signals::JsStop;
mod status;

/// Samples kept for `stats()` and reports.
const RING_CAPACITY: usize = 120;
/// Events kept for the status file.
const RECENT_EVENTS: usize = 10;
/// How often the status file is rewritten (and at once when the state changes).
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A queued recycle skips the sibling queue once its value reaches limit x this.
const STAGGER_CEILING: f64 = 1.25;
/// A waiting recycle goes before the used heap, growing, would reach this share of the
/// old-space limit, and at once past `HEAP_AT_ONCE_SHARE`. V8 called near-heap-limit with
/// as little as 84% of it used here (fragmentation and garbage not yet collected fill the
/// rest), so with the default `MAX_HEAP` (85%) a growing heap does not wait at all; a
/// flat one may.
const HEAP_HARD_SHARE: f64 = 0.80;
const HEAP_AT_ONCE_SHARE: f64 = 0.95;
/// Time a waiting recycle keeps in hand beyond the drain it expects (sampling, the
/// drain's own start, a GC).
const WAIT_MARGIN_MS: u64 = 2000;

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
    notifier: Option<Notifier>,
    stagger: Option<Stagger>,
    fleet: Option<FleetGate>,
    /// `on`, or why the near-heap-limit callback is not installed.
    near_heap_status: Mutex<String>,
    /// `on`, or why V8's OOM handler is not ours.
    oom_status: Mutex<String>,
    /// How allocation sites are profiled (`native`, `inspector`, `off`, or why not).
    profile_status: Mutex<String>,
    /// The profile section of the recycle report (top sites), set by JS at the recycle.
    report_profile: Mutex<Option<Value>>,
    /// Wakes the sampler thread so it sleeps no later than a new drain deadline.
    waker: Mutex<Option<Waker>>,
    /// The last events (name, time, msg), for the status file.
    recent_events: Mutex<std::collections::VecDeque<Value>>,
    /// When the status file was last written, and the state it said.
    status_written: Mutex<Option<(Instant, &'static str)>>,
    /// `STATUS_FILE` with its placeholders expanded, and what was said about it.
    status_file: Mutex<Option<crate::status_file::StatusFile>>,
    /// Said in the `start` event: `{instance}` without an instance number.
    status_file_warning: Option<String>,
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
    /// This process's memory cgroup (the container budget).
    container: Option<crate::probe::container::Container>,
    container_view: Mutex<Option<container::ContainerView>>,
    /// The cgroup limit the limits were last resolved against (it follows a resize).
    cgroup_limit_now: Mutex<Option<u64>>,
    /// The cgroup's own limit at the last reading (`None`: not read yet).
    own_limit_seen: Mutex<Option<Option<u64>>>,
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
        let expanded = config.status_file.as_deref().map(|template| {
            crate::status_file::expand(
                template,
                std::process::id(),
                crate::status_file::instance_from_env().as_deref(),
            )
        });
        let status_file_warning = expanded.as_ref().and_then(|(_, w)| w.clone());
        let status_file = expanded
            .map(|(path, _)| crate::status_file::StatusFile::new(std::path::PathBuf::from(path)));
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
            container: crate::probe::container::Container::detect(),
            container_view: Mutex::new(None),
            cgroup_limit_now: Mutex::new(
                setup
                    .machine
                    .memory_limit
                    .filter(|m| m.source != LimitSource::Physical)
                    .map(|m| m.bytes),
            ),
            own_limit_seen: Mutex::new(None),
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
            notifier: setup.notifier,
            stagger,
            fleet,
            near_heap_status: Mutex::new("off".to_string()),
            oom_status: Mutex::new("off".to_string()),
            profile_status: Mutex::new("off".to_string()),
            report_profile: Mutex::new(None),
            waker: Mutex::new(None),
            recent_events: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_EVENTS)),
            status_written: Mutex::new(None),
            status_file: Mutex::new(status_file),
            status_file_warning,
            jobs_done: AtomicU64::new(0),
            sample_events: AtomicBool::new(false),
            sample_in_flight: AtomicBool::new(false),
            stop_book: Mutex::new(signals::StopBook::default()),
        }
    }

    pub fn set_profile_status(&self, status: String) {
        *self.profile_status.lock() = status;
    }

    /// Fields JS adds to the `recycle` event under way (kept for the report).
    pub fn annotate_recycle(&self, fields: Map<String, Value>) {
        self.recycle.lock().annotate(fields);
    }

    pub fn set_report_profile(&self, profile: Value) {
        *self.report_profile.lock() = Some(profile);
    }

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

    fn limits(&self) -> Limits {
        self.sampling.lock().policy.limits().clone()
    }

    fn latest(&self) -> Sample {
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
            let mut recent = self.recent_events.lock();
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(serde_json::json!({
                "event": object.get("event"),
                "time": object.get("time"),
                "msg": object.get("msg"),
            }));
        }
        object
    }

    fn emit(&self, event: &Event) {
        let object = self.render(event);
        if !self.sink.deliver(object.clone()) {
            // JS is gone (teardown): keep the log complete anyway.
            event::write_stderr(&object, self.config.log.native());
        }
    }

    /// Tracked work as JS sees it: (p90 duration, the youngest job's start, both ms, the
    /// start on the epoch clock; several jobs in flight), or `None` with nothing in flight.
    pub fn set_tracked_work(&self, work: Option<(u64, u64, bool)>) {
        self.sampling.lock().tracked_work = work;
    }

    /// How long a drain started now would take: what is left of the youngest tracked job at
    /// its usual (p90) duration. A worker running one job at a time decides at job
    /// boundaries: the decision must also cover the job that would start after this one,
    /// or that job would carry it over the limit before the next chance to decide.
    fn expected_drain_ms(&self) -> Option<u64> {
        let (p90, youngest, concurrent) = self.sampling.lock().tracked_work?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = p90.saturating_sub(now.saturating_sub(youngest));
        Some(if concurrent { left } else { left + p90 })
    }

    /// The baseline and its share of each limit against `READY_MAX_BASELINE`.
    fn baseline_event(&self, rss: u64, heap_used: u64) -> event::Baseline {
        let limits = self.limits();
        let rss_limit = limits.rss.or(limits.ceiling);
        let max_share = self.config.ready_max_baseline;
        let mut failures = Vec::new();
        for (name, value, limit) in [("rss", rss, rss_limit), ("heap", heap_used, limits.heap)] {
            if let Some(limit) = limit.filter(|l| *l > 0) {
                let share = value as f64 / limit as f64;
                if share > max_share {
                    failures.push(format!(
                        "{name} {} is {:.0}% of limit {} (at most {:.0}%)",
                        crate::units::format_size(value),
                        share * 100.0,
                        crate::units::format_size(limit),
                        max_share * 100.0
                    ));
                }
            }
        }
        event::Baseline {
            rss,
            heap_used,
            rss_limit,
            heap_limit: limits.heap,
            warmup_ms: self.config.warmup_ms,
            max_share,
            failures,
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

    /// One sampler-thread tick; returns how long to sleep.
    pub fn tick(&self) -> Duration {
        if let Some(drain) = self.recycle.lock().overdue(Instant::now()).cloned() {
            if self.can_exit_process {
                self.exit_natively(&drain, ExitCause::NativeDeadline);
            }
        }
        let previous = self.latest();
        let sample = self
            .source
            .take(self.jobs_done.load(Ordering::Acquire), &previous);
        {
            let mut sampling = self.sampling.lock();
            sampling.ring.push(sample);
            sampling.counters.samples += 1;
        }
        if self.sample_events.load(Ordering::Acquire)
            && !self.sample_in_flight.swap(true, Ordering::AcqRel)
        {
            self.emit(&Event::Sample(sample));
        }
        if self.liveness.ping_due() && !self.sink.ping() {
            self.liveness.ping_failed();
        }
        self.feed_watchdog();
        if self.recycle.lock().is_running() {
            for verdict in self.observe(&sample) {
                self.act_on(verdict);
            }
            self.admit_pending(Some(&sample));
        }
        self.write_status_when_due();
        let mut sleep = Duration::from_millis(self.sampling.lock().policy.next_interval_ms());
        if let Some(every) = self.notifier.as_ref().and_then(Notifier::watchdog_every) {
            sleep = sleep.min(every / 2);
        }
        match self.recycle.lock().time_to_deadline(Instant::now()) {
            Some(left) => sleep.min(left.max(Duration::from_millis(1))),
            None => sleep,
        }
    }

    /// The policy's verdicts on this sample, the stall check and (on new major GCs) the
    /// leak slope.
    fn observe(&self, sample: &Sample) -> Vec<Verdict> {
        let unanswered_ms = self.liveness.unanswered_for().map(|d| d.as_millis() as u64);
        let heap = self.source.heap();
        let major_gcs = heap.major_gcs();
        let expected_drain_ms = self.expected_drain_ms();
        let mut sampling = self.sampling.lock();
        sampling.policy.set_expected_drain(expected_drain_ms);
        let mut verdicts = sampling.policy.observe(sample);
        drop(sampling);
        verdicts.extend(self.observe_container(sample));
        let mut sampling = self.sampling.lock();
        verdicts.extend(
            sampling
                .policy
                .observe_stall(unanswered_ms, sample.uptime_ms),
        );
        if sampling.leak_checked_at_gc != major_gcs {
            sampling.leak_checked_at_gc = major_gcs;
            let series = heap.post_gc_series();
            verdicts.extend(sampling.policy.observe_leak(
                &series,
                heap.elapsed_ms(),
                sample.uptime_ms,
            ));
        }
        verdicts
    }

    /// `WATCHDOG=1` every half `WATCHDOG_USEC`, only while the loop answers pings: a hung
    /// worker stops feeding it and systemd kills it.
    fn feed_watchdog(&self) {
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

    fn act_on(&self, verdict: Verdict) {
        match verdict {
            Verdict::Pressure {
                reason,
                value,
                limit,
            } => {
                self.sampling.lock().counters.pressure += 1;
                self.emit(&Event::Pressure {
                    reason,
                    value,
                    limit,
                });
            }
            Verdict::Misconfigured {
                reason,
                value,
                limit,
            } => {
                self.sampling.lock().counters.misconfigured += 1;
                self.emit(&Event::Misconfigured {
                    reason,
                    value,
                    limit,
                });
            }
            Verdict::Baseline { rss, heap_used } => {
                let baseline = self.baseline_event(rss, heap_used);
                if baseline.passed() && self.config.ready_on_baseline {
                    if let Some(notifier) = &self.notifier {
                        let status =
                            notify::status_line("self-recycle: baseline passed; worker ready");
                        notifier.send(&format!("READY=1\n{status}"));
                    }
                }
                self.emit(&Event::Baseline(Box::new(baseline)));
            }
            Verdict::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            } => self.emit(&Event::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            }),
            Verdict::Recycle {
                reason,
                value,
                limit,
                strikes,
                ceiling,
                prediction,
            } => {
                let mut recycle = Recycle::new(reason, value, limit, strikes);
                recycle.ceiling = ceiling;
                recycle.prediction = prediction;
                recycle.configured_limit = match reason {
                    Reason::Jobs => self.config.max_jobs,
                    Reason::Age => self.config.max_age_ms,
                    _ => None,
                };
                self.request_recycle(recycle);
            }
        }
    }

    /// This worker serves a port (see `stagger`); `false` without a stagger queue.
    pub fn stagger_serve(&self) -> bool {
        self.stagger.as_ref().map(Stagger::serve).is_some()
    }

    /// This worker listens: siblings waiting for a replacement may drain.
    pub fn stagger_listening(&self) -> Result<bool, String> {
        match &self.stagger {
            Some(stagger) => stagger.mark_listening().map(|()| true),
            None => Ok(false),
        }
    }

    /// Automatic recycles queue behind the fleet (a lease in Redis, taken by JS) and
    /// siblings (`STAGGER_DIR`); the hard ceiling, and a value far over its limit, skip
    /// both, so no worker waits its way into an OOM.
    fn request_recycle(&self, mut recycle: Recycle) {
        if recycle.ceiling && self.fleet.is_some() {
            recycle.fleet = Some(("bypass".into(), Some("the hard ceiling".into()), 0));
        }
        if (self.stagger.is_none() && self.fleet.is_none()) || recycle.ceiling {
            self.trigger(recycle, true);
            return;
        }
        {
            let mut sampling = self.sampling.lock();
            if sampling.pending.is_none() {
                sampling.pending = Some((recycle, Instant::now()));
                sampling.pending_announced = false;
            }
        }
        self.admit_pending(None);
    }

    /// The fleet client's answer; the next tick acts on it (woken now).
    pub fn fleet_answer(&self, answer: FleetAnswer) -> bool {
        let Some(gate) = &self.fleet else {
            return false;
        };
        let final_answer = !matches!(answer, FleetAnswer::Wait(_));
        let taken = gate.answer(answer, Instant::now());
        if taken && final_answer {
            self.admit_pending(None);
        }
        taken
    }

    /// Tries the queued recycle again (each tick), with the latest value of its gauge:
    /// first the fleet, then the sibling queue. A recycle that would reach a hard limit
    /// (V8's heap limit, the RSS ceiling, 1.25x its own limit) before a drain started now
    /// could finish goes at once (`bypass`, saying why); the first wait says what it
    /// waits for (`queued`).
    fn admit_pending(&self, sample: Option<&Sample>) {
        if self.stagger.is_none() && self.fleet.is_none() {
            return;
        }
        let latest = match sample {
            Some(sample) => *sample,
            None => self.latest(),
        };
        let lead_ms = self.expected_drain_ms().unwrap_or(0) + WAIT_MARGIN_MS;
        let mut guard = self.sampling.lock();
        let sampling = &mut *guard;
        let rss = sampling.policy.rss_value(&latest);
        let hard_limits = self.hard_limits(&sampling.policy, &latest, rss);
        let Some((recycle, since)) = sampling.pending.as_mut() else {
            return;
        };
        if sample.is_some() {
            recycle.value = match recycle.reason {
                Reason::Rss | Reason::Growth => rss,
                Reason::Heap => latest.heap_used,
                Reason::Jobs => latest.jobs_done,
                Reason::Age => latest.uptime_ms,
                _ => recycle.value,
            };
        }
        let mut emergency = hard_limits
            .iter()
            .find_map(|hard| hard.must_go_within(lead_ms));
        if recycle.reason.is_bytes()
            && recycle.value as f64 >= recycle.limit as f64 * STAGGER_CEILING
        {
            emergency = Some(format!(
                "over the ceiling ({:.0}% of its limit)",
                STAGGER_CEILING * 100.0
            ));
        }
        let waited_ms = since.elapsed().as_millis() as u64;
        let max_wait = self.config.stagger_max_wait_ms;
        let mut go_local = true;
        let mut waiting: Option<(&'static str, String)> = None;
        if let (Some(gate), None) = (&self.fleet, &recycle.fleet) {
            let outcome = if let Some(why) = &emergency {
                gate.reset();
                ("bypass", Some(why.clone()))
            } else {
                match gate.poll(Instant::now()) {
                    FleetAdmission::Ask => {
                        let ask = fleet_ask(recycle);
                        drop(guard);
                        if !self.sink.deliver(ask) {
                            self.fleet_answer(FleetAnswer::Unavailable(
                                "JS can no longer receive".into(),
                            ));
                        }
                        return;
                    }
                    // Nobody may hold a recycle back for good, not even a stuck fleet.
                    FleetAdmission::Wait(why) if waited_ms >= max_wait => {
                        gate.reset();
                        ("timeout", Some(format!("waited {waited_ms} ms ({why})")))
                    }
                    FleetAdmission::Wait(why) => {
                        waiting = Some(("fleet", why));
                        ("wait", None)
                    }
                    FleetAdmission::Granted => ("granted", None),
                    FleetAdmission::Unavailable(why) => ("unavailable", Some(why)),
                }
            };
            if outcome.0 != "wait" {
                // A grant still passes the sibling queue: on one host its rules also keep a
                // server from draining before the last recycled sibling's replacement
                // listens. A fleet that cannot be used falls back to it; a timeout or a
                // bypass goes ahead.
                go_local = matches!(outcome.0, "granted" | "unavailable");
                recycle.fleet = Some((outcome.0.to_string(), outcome.1, waited_ms));
            }
        }
        if waiting.is_none() {
            if let (Some(stagger), true) = (&self.stagger, go_local) {
                let admission = if let Some(why) = &emergency {
                    format!("bypass: {why}")
                } else {
                    match stagger.try_admit() {
                        Admission::Granted => "granted".to_string(),
                        Admission::Unavailable(why) => format!("unavailable: {why}"),
                        // Nobody may hold a recycle back for good, not even a hostile lock
                        // holder.
                        Admission::Wait(why) if waited_ms >= max_wait => {
                            format!("timeout: waited {waited_ms} ms ({why})")
                        }
                        Admission::Wait(why) => {
                            waiting = Some(("siblings", why));
                            String::new()
                        }
                    }
                };
                if waiting.is_none() {
                    recycle.stagger = Some((admission, waited_ms));
                }
            }
        }
        if let Some((waiting_for, why)) = waiting {
            if std::mem::replace(&mut sampling.pending_announced, true) {
                return;
            }
            let queued = Event::Queued(Box::new(event::Queued {
                reason: recycle.reason,
                value: recycle.value,
                limit: recycle.limit,
                waiting_for,
                why,
                max_wait_ms: max_wait.saturating_sub(waited_ms),
            }));
            drop(guard);
            self.emit(&queued);
            return;
        }
        let Some((recycle, _)) = sampling.pending.take() else {
            return;
        };
        drop(guard);
        self.trigger(recycle, true);
    }

    /// The limits a waiting recycle must never reach: 90% of what V8's old space may grow
    /// to (past it V8 collects without end, then calls near-heap-limit with little
    /// headroom left, or aborts) and the RSS ceiling (the OOM killer is near).
    fn hard_limits(&self, policy: &Policy, sample: &Sample, rss: u64) -> Vec<HardLimit> {
        let mut limits = Vec::with_capacity(2);
        let heap_limit = self
            .machine
            .old_space_limit
            .or(self.machine.heap_size_limit)
            .unwrap_or(sample.heap_limit);
        if heap_limit > 0 {
            let limit = (heap_limit as f64 * HEAP_HARD_SHARE) as u64;
            limits.push(HardLimit {
                name: format!(
                    "{:.0}% of V8's heap limit ({})",
                    HEAP_HARD_SHARE * 100.0,
                    crate::units::format_size(limit)
                ),
                value: sample.heap_used,
                limit,
                at_once: (heap_limit as f64 * HEAP_AT_ONCE_SHARE) as u64,
                slope_per_s: policy.growth_per_s(true, sample.uptime_ms),
            });
        }
        if let Some(ceiling) = policy.limits().ceiling {
            limits.push(HardLimit {
                name: format!("the RSS ceiling ({})", crate::units::format_size(ceiling)),
                value: rss,
                limit: ceiling,
                at_once: ceiling,
                slope_per_s: policy.growth_per_s(false, sample.uptime_ms),
            });
        }
        limits
    }

    /// Decides a recycle (automatic, manual or near-heap-limit) and returns its event;
    /// `None` when one is already under way. `deliver`: hand the event to JS through the
    /// sink (decided here), or leave it to the caller (decided by a JS call, which must
    /// not wait for the event loop: with nothing else alive it would end first). In a dry
    /// run the event is emitted and nothing else happens.
    pub fn trigger(&self, mut recycle: Recycle, deliver: bool) -> Option<Map<String, Value>> {
        recycle.dry_run = self.config.dry_run;
        recycle.drain_timeout_ms = self.config.drain_timeout_ms;
        let event = Event::Recycle(Box::new(recycle.clone()));
        let object = self.render(&event);
        if !recycle.dry_run {
            if !self
                .recycle
                .lock()
                .begin(recycle.reason, object.clone(), Instant::now())
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
        if let (Some(notifier), false) = (&self.notifier, recycle.dry_run) {
            let status = notify::status_line(&format!(
                "recycling ({}): {}",
                recycle.reason.as_str(),
                recycle.why()
            ));
            notifier.send(&format!("STOPPING=1\n{status}"));
        }
        if deliver && !self.sink.deliver(object.clone()) {
            event::write_stderr(&object, self.config.log.native());
        }
        Some(object)
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
        if let Some(notifier) = &self.notifier {
            let status = notify::status_line(&format!("stopping ({name})"));
            notifier.send(&format!("STOPPING=1\n{status}"));
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
    fn exit_event(
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
        // A report tells why a worker recycled; a plain stop has nothing to report.
        if drain.reason != Reason::Signal && self.report_path().is_some() {
            let written = self.write_report(
                drain,
                &Event::Exit(Box::new(exit.clone())).to_json(&self.envelope()),
            );
            exit.report = written;
        }
        self.render(&Event::Exit(Box::new(exit)))
    }

    /// A recycle ends with `EXIT_CODE`; a stop with 0 once drained, else `128 + signal`
    /// as a shell reports a process killed by it.
    fn exit_code(&self, drain: &Drain, cause: ExitCause) -> i32 {
        match (&drain.stop, cause) {
            (Some(_), ExitCause::Drained) => 0,
            (Some(signal), _) => 128 + signal.number,
            (None, _) => self.config.exit_code,
        }
    }

    /// JS cannot finish (a passed deadline, a heap about to abort): write the `recycle`
    /// event if JS never took it, then the report and the `exit` event, then exit.
    fn exit_natively(&self, drain: &Drain, cause: ExitCause) -> ! {
        let mode = self.config.log.native();
        if !drain.acknowledged {
            event::write_stderr(&drain.recycle_event, mode);
        }
        let exit = self.exit_event(drain, cause, None);
        event::write_stderr(&exit, mode);
        let code = self.exit_code(drain, cause);
        if exit.get("restart").and_then(Value::as_str) == Some("exec") {
            let why = reexec::exec_self();
            event::write_stderr_line(&format!(
                "self-recycle: could not re-execute in place ({why}); exiting with code {code}"
            ));
        }
        exit_process(code)
    }

    fn cgroup_limit(&self) -> Option<u64> {
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

/// What JS hears when a recycle asks the fleet for a lease (not an event: no `event` key).
fn fleet_ask(recycle: &Recycle) -> Map<String, Value> {
    let mut ask = Map::new();
    ask.insert("fleetAsk".into(), Value::Bool(true));
    ask.insert("reason".into(), serde_json::json!(recycle.reason.as_str()));
    ask
}
