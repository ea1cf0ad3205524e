//! One recycler: ties probe -> sampler -> policy -> recycle -> event together. Each tick
//! runs on the sampler thread; JS-facing calls (trigger, acknowledge, finish, stats) run on
//! the JS thread. Events leave through an `EventSink` (a threadsafe function in the addon).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::config::{Config, LogMode, RssLimitSetting, RssMetric};
use crate::event::{self, Envelope};
use crate::liveness::Liveness;
use crate::near_heap;
use crate::notify::{self, Notifier};
use crate::policy::{apply_jitter, Limits, Policy, Reason, Sample, Verdict};
use crate::probe::cgroup::{LimitSource, MemoryLimit};
use crate::recycle::{exit_process, Drain, RecycleState};
use crate::sampler::{SampleRing, SampleSource};
use crate::stagger::{Admission, Stagger};
use crate::units::{format_duration, format_size};

/// Samples kept for `stats()` and reports.
mod views;

pub use views::sample_json;

const RING_CAPACITY: usize = 120;

pub trait EventSink: Send + Sync {
    /// Hands an event to JS; `false` when JS can no longer receive.
    fn deliver(&self, event: &Map<String, Value>) -> bool;
    /// Queues a liveness ping the event loop answers when it runs; `false` if JS is gone.
    fn ping(&self) -> bool;
}

/// Which probes are in use, for the `start` event.
#[derive(Debug, Clone)]
pub struct Probes {
    pub v8_native: bool,
    pub v8_fallback_reason: Option<String>,
    pub gc_epilogue: bool,
}

pub struct MonitorSetup {
    pub config: Config,
    pub memory_limit: Option<MemoryLimit>,
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
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    samples: u64,
    pressure: u64,
    misconfigured: u64,
    recycles: u64,
}

pub struct Monitor {
    config: Config,
    memory_limit: Option<MemoryLimit>,
    source: SampleSource,
    probes: Probes,
    can_exit_process: bool,
    sink: Box<dyn EventSink>,
    versions: Value,
    started_epoch_ms: u64,
    liveness: Arc<Liveness>,
    notifier: Option<Notifier>,
    last_watchdog: Mutex<Option<Instant>>,
    stagger: Option<Stagger>,
    /// An automatic recycle waiting for its turn among siblings, since when.
    pending: Mutex<Option<(RecycleRequest, Instant)>>,
    /// `on`, or why the near-heap-limit callback is not installed.
    near_heap_status: Mutex<String>,
    policy: Mutex<Policy>,
    ring: Mutex<SampleRing>,
    recycle: Mutex<RecycleState>,
    counters: Mutex<Counters>,
    jobs_done: AtomicU64,
    sample_events: AtomicBool,
    sample_in_flight: AtomicBool,
    /// Major-GC count when the leak slope was last fitted (refit only on new points).
    leak_checked_at_gc: AtomicU64,
}

fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn describe(reason: Reason, value: u64) -> String {
    match reason {
        Reason::Jobs => format!("{value} jobs"),
        Reason::Age | Reason::Stall => format_duration(value),
        _ => format_size(value),
    }
}

impl Monitor {
    pub fn new(setup: MonitorSetup) -> Monitor {
        let config = setup.config;
        let heap_limit = setup
            .source
            .heap()
            .figures()
            .map(|f| f.limit)
            .filter(|l| *l > 0);
        let rss = match config.max_rss {
            RssLimitSetting::Off => None,
            RssLimitSetting::Default => setup
                .memory_limit
                .filter(|m| m.source != LimitSource::Physical)
                .map(|m| (m.bytes as f64 * 0.9) as u64),
            RssLimitSetting::Set(limit) => limit.resolve(setup.memory_limit.map(|m| m.bytes)),
        };
        let limits = Limits {
            rss,
            rss_anon: config.rss_metric == RssMetric::Anon,
            heap: config.max_heap.and_then(|l| l.resolve(heap_limit)),
            growth: config.max_growth,
            jobs: config
                .max_jobs
                .map(|n| apply_jitter(n, config.jitter, random_unit())),
            age_ms: config
                .max_age_ms
                .map(|ms| apply_jitter(ms, config.jitter, random_unit())),
            strikes: config.strikes,
            warmup_ms: config.warmup_ms,
            min_uptime_ms: config.min_uptime_ms,
            leak_slope_per_min: config.leak_slope_bytes_per_min,
            leak_window_ms: config.leak_window_ms,
            stall_ms: config.stall_timeout_ms,
        };
        let stagger = config
            .stagger_dir
            .as_deref()
            .map(|dir| Stagger::new(dir, config.stagger_gap_ms));
        let first = setup.source.take(0, &Sample::default());
        let mut ring = SampleRing::new(RING_CAPACITY);
        ring.push(first);
        Monitor {
            recycle: Mutex::new(RecycleState::new(Duration::from_millis(
                config.drain_timeout_ms,
            ))),
            config,
            memory_limit: setup.memory_limit,
            source: setup.source,
            probes: setup.probes,
            can_exit_process: setup.can_exit_process,
            sink: setup.sink,
            versions: setup.versions,
            started_epoch_ms: setup.started_epoch_ms,
            liveness: setup.liveness,
            notifier: setup.notifier,
            last_watchdog: Mutex::new(None),
            stagger,
            pending: Mutex::new(None),
            near_heap_status: Mutex::new("off".to_string()),
            policy: Mutex::new(Policy::new(limits)),
            ring: Mutex::new(ring),
            counters: Mutex::new(Counters::default()),
            jobs_done: AtomicU64::new(0),
            sample_events: AtomicBool::new(false),
            sample_in_flight: AtomicBool::new(false),
            leak_checked_at_gc: AtomicU64::new(0),
        }
    }

    pub fn set_near_heap_status(&self, status: String) {
        *self.near_heap_status.lock() = status;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.config.interval_ms)
    }

    fn latest(&self) -> Sample {
        self.ring.lock().latest().copied().unwrap_or_default()
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
        }
    }

    pub fn event(&self, name: &str, msg: &str, extra: Map<String, Value>) -> Map<String, Value> {
        event::build(name, &self.envelope(), msg, extra)
    }

    fn deliver(&self, event: Map<String, Value>) {
        if !self.sink.deliver(&event) {
            // JS is gone (teardown): keep the log complete anyway.
            event::write_stderr(&event, self.native_log_mode());
        }
    }

    /// The format the native side writes in when JS cannot: `auto` means JSON.
    pub fn native_log_mode(&self) -> LogMode {
        match self.config.log {
            LogMode::Auto => LogMode::Json,
            mode => mode,
        }
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
        let now = Instant::now();
        if let Some(drain) = self.recycle.lock().overdue(now).cloned() {
            if self.can_exit_process {
                self.exit_from_native_thread(&drain);
            }
        }
        let sample = self
            .source
            .take(self.jobs_done.load(Ordering::Acquire), &self.latest());
        self.ring.lock().push(sample);
        self.counters.lock().samples += 1;
        if self.sample_events.load(Ordering::Acquire)
            && !self.sample_in_flight.swap(true, Ordering::AcqRel)
        {
            self.deliver(self.sample_event(&sample));
        }
        if self.liveness.ping_due() && !self.sink.ping() {
            self.liveness.ping_failed();
        }
        let unanswered_ms = self.liveness.unanswered_for().map(|d| d.as_millis() as u64);
        self.feed_watchdog();
        if self.recycle.lock().is_running() {
            let mut verdicts = self.policy.lock().observe(&sample);
            verdicts.extend(
                self.policy
                    .lock()
                    .observe_stall(unanswered_ms, sample.uptime_ms),
            );
            let heap = self.source.heap();
            let major_gcs = heap.major_gcs();
            if self.leak_checked_at_gc.swap(major_gcs, Ordering::AcqRel) != major_gcs {
                let series = heap.post_gc_series();
                verdicts.extend(self.policy.lock().observe_leak(
                    &series,
                    heap.elapsed_ms(),
                    sample.uptime_ms,
                ));
            }
            for verdict in verdicts {
                self.act_on(verdict);
            }
            self.admit_pending(Some(&sample));
        }
        let mut sleep = self.interval();
        if let Some(every) = self.notifier.as_ref().and_then(Notifier::watchdog_every) {
            sleep = sleep.min(every / 2);
        }
        match self.recycle.lock().time_to_deadline(Instant::now()) {
            Some(left) => sleep.min(left.max(Duration::from_millis(1))),
            None => sleep,
        }
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
        let mut last = self.last_watchdog.lock();
        let due = last.is_none_or(|at| at.elapsed() >= every);
        if due && self.liveness.answered_within(every) {
            let _ = notifier.send("WATCHDOG=1");
            *last = Some(Instant::now());
        }
    }

    /// `READY=1` at start (systemd `Type=notify`).
    pub fn notify_ready(&self) {
        if let Some(notifier) = &self.notifier {
            let status = notify::status_line("self-recycle sampling; worker ready");
            let _ = notifier.send(&format!("READY=1\n{status}"));
        }
    }

    fn sample_event(&self, sample: &Sample) -> Map<String, Value> {
        let mut extra = Map::new();
        extra.insert("rssAnon".into(), json!(sample.rss_anon));
        extra.insert("heapTotal".into(), json!(sample.heap_total));
        extra.insert("external".into(), json!(sample.external));
        extra.insert("jobsDone".into(), json!(sample.jobs_done));
        let msg = format!(
            "rss {}, heap {} of {}",
            format_size(sample.rss),
            format_size(sample.heap_used),
            format_size(sample.heap_limit)
        );
        self.event("sample", &msg, extra)
    }

    fn act_on(&self, verdict: Verdict) {
        match verdict {
            Verdict::Pressure {
                reason,
                value,
                limit,
            } => {
                self.counters.lock().pressure += 1;
                let msg = format!(
                    "{} {} passed 80% of limit {}",
                    reason.as_str(),
                    describe(reason, value),
                    describe(reason, limit)
                );
                self.deliver(self.event("pressure", &msg, reason_fields(reason, value, limit)));
            }
            Verdict::Misconfigured {
                reason,
                value,
                limit,
            } => {
                self.counters.lock().misconfigured += 1;
                let variable = match reason {
                    Reason::Heap => "MAX_HEAP",
                    _ => "MAX_RSS",
                };
                let msg = format!(
                    "{} {} is already over limit {} at start; not recycling on it (a restart would not help: raise SELF_RECYCLE_{variable})",
                    reason.as_str(),
                    describe(reason, value),
                    describe(reason, limit)
                );
                self.deliver(self.event(
                    "misconfigured",
                    &msg,
                    reason_fields(reason, value, limit),
                ));
            }
            Verdict::Baseline { .. } => {}
            Verdict::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            } => {
                let msg = format!(
                    "post-GC heap grows {}/min over the last {} ({points} major GCs), above {}/min",
                    format_size(slope_per_min as u64),
                    format_duration(window_ms),
                    format_size(threshold_per_min as u64)
                );
                let mut extra = Map::new();
                extra.insert("slopeBytesPerMin".into(), json!(slope_per_min.round()));
                extra.insert(
                    "thresholdBytesPerMin".into(),
                    json!(threshold_per_min.round()),
                );
                extra.insert("windowMs".into(), json!(window_ms));
                extra.insert("points".into(), json!(points));
                self.deliver(self.event("leak", &msg, extra));
            }
            Verdict::Recycle {
                reason,
                value,
                limit,
                strikes,
            } => {
                let over = match reason {
                    Reason::Jobs => format!("{value} jobs done, limit {limit}"),
                    Reason::Leak => format!(
                        "post-GC heap grows {}/min, over {}/min",
                        format_size(value),
                        format_size(limit)
                    ),
                    Reason::Age => format!(
                        "uptime {} reached limit {}",
                        format_duration(value),
                        format_duration(limit)
                    ),
                    Reason::Stall => format!(
                        "event loop unresponsive for {} (limit {})",
                        format_duration(value),
                        format_duration(limit)
                    ),
                    _ => format!(
                        "{} {} over limit {} for {strikes} samples",
                        reason.as_str(),
                        format_size(value),
                        format_size(limit)
                    ),
                };
                self.request_recycle(RecycleRequest::new(reason, over, value, limit, strikes));
            }
        }
    }

    /// Automatic recycles queue behind siblings when `STAGGER_DIR` is set; a value far over
    /// its limit (the ceiling) skips the queue, so no worker waits its way into an OOM.
    fn request_recycle(&self, request: RecycleRequest) {
        if self.stagger.is_none() {
            self.trigger(request);
            return;
        }
        let mut pending = self.pending.lock();
        if pending.is_none() {
            *pending = Some((request, Instant::now()));
        }
        drop(pending);
        self.admit_pending(None);
    }

    /// Tries the queued recycle again (each tick), with the latest value of its gauge.
    fn admit_pending(&self, sample: Option<&Sample>) {
        let Some(stagger) = &self.stagger else { return };
        let mut pending = self.pending.lock();
        let Some((request, _)) = pending.as_mut() else {
            return;
        };
        if let Some(sample) = sample {
            request.value = match request.reason {
                Reason::Rss | Reason::Growth => self.policy.lock().rss_value(sample),
                Reason::Heap => sample.heap_used,
                Reason::Jobs => sample.jobs_done,
                Reason::Age => sample.uptime_ms,
                _ => request.value,
            };
        }
        let over_ceiling = request.reason.is_bytes()
            && request.value as f64 >= request.limit as f64 * STAGGER_CEILING;
        let admission = if over_ceiling {
            "bypass: over the ceiling".to_string()
        } else {
            match stagger.try_admit() {
                Admission::Granted => "granted".to_string(),
                Admission::Wait(reason) => {
                    request.extra.insert("staggerWaiting".into(), json!(reason));
                    return;
                }
            }
        };
        let Some((mut request, since)) = pending.take() else {
            return;
        };
        request.extra.remove("staggerWaiting");
        request.extra.insert("stagger".into(), json!(admission));
        request
            .extra
            .insert("staggerWaitMs".into(), json!(since_ms(since)));
        drop(pending);
        self.trigger(request);
    }

    /// Decides a recycle (automatic or manual). Returns `false` when one is already under
    /// way. In a dry run the event is emitted and nothing else happens.
    pub fn trigger(&self, request: RecycleRequest) -> bool {
        let RecycleRequest {
            reason,
            why,
            value,
            limit,
            strikes,
            extra: request_extra,
        } = request;
        let why = why.as_str();
        let dry_run = self.config.dry_run;
        let mut extra = reason_fields(reason, value, limit);
        extra.insert("strikes".into(), json!(strikes));
        extra.insert("dryRun".into(), json!(dry_run));
        extra.insert("drainTimeoutMs".into(), json!(self.config.drain_timeout_ms));
        extra.extend(request_extra);
        let action = if dry_run {
            "dry run, not draining"
        } else {
            "draining"
        };
        let event = self.event("recycle", &format!("{why}; {action}"), extra);
        if !dry_run
            && !self
                .recycle
                .lock()
                .begin(reason, event.clone(), Instant::now())
        {
            return false;
        }
        self.counters.lock().recycles += 1;
        if let (Some(notifier), false) = (&self.notifier, dry_run) {
            let status = notify::status_line(&format!("recycling ({}): {why}", reason.as_str()));
            let _ = notifier.send(&format!("STOPPING=1\n{status}"));
        }
        self.deliver(event);
        true
    }

    /// JS received the `recycle` event; returns the time left to drain.
    pub fn acknowledge(&self) -> Option<Duration> {
        self.recycle.lock().acknowledge(Instant::now())
    }

    /// JS finished draining; returns the `exit` event for it to emit.
    pub fn finish(&self, drained: bool, extra: Map<String, Value>) -> Option<Map<String, Value>> {
        let drain = self.recycle.lock().finish(drained)?;
        Some(self.exit_event(&drain, drained, false, extra))
    }

    fn exit_event(
        &self,
        drain: &Drain,
        drained: bool,
        forced: bool,
        mut extra: Map<String, Value>,
    ) -> Map<String, Value> {
        let code = self.config.exit_code;
        let duration_ms = drain.started.elapsed().as_millis() as u64;
        extra.insert("code".into(), json!(code));
        extra.insert("drained".into(), json!(drained));
        extra.insert("durationMs".into(), json!(duration_ms));
        extra.insert("reason".into(), json!(drain.reason.as_str()));
        extra.insert("forced".into(), json!(forced));
        let msg = if forced {
            format!(
                "drain did not finish within {} (JS unresponsive or a hook hung); exiting with code {code} from the native thread",
                format_duration(self.config.drain_timeout_ms)
            )
        } else if drained {
            format!("drained in {duration_ms} ms; exiting with code {code}")
        } else {
            format!(
                "drain timed out after {}; exiting with code {code}",
                format_duration(self.config.drain_timeout_ms)
            )
        };
        let mut exit = self.event("exit", &msg, extra);
        if let Some(report) = self.write_report(drain, &exit) {
            exit.insert("report".into(), report);
        }
        exit
    }

    /// The JS thread did not finish in time: write what it could not, then exit.
    fn exit_from_native_thread(&self, drain: &Drain) -> ! {
        let msg = format!(
            "drain did not finish within {} (JS unresponsive or a hook hung); exiting with code {} from the native thread",
            format_duration(self.config.drain_timeout_ms),
            self.config.exit_code
        );
        self.exit_natively(drain, &msg)
    }

    /// Writes the `recycle` event if JS never took it, then an `exit` event, then exits.
    fn exit_natively(&self, drain: &Drain, msg: &str) -> ! {
        let mode = self.native_log_mode();
        if !drain.acknowledged {
            event::write_stderr(&drain.recycle_event, mode);
        }
        let mut exit = self.exit_event(drain, false, true, Map::new());
        exit.insert("msg".into(), json!(msg));
        event::write_stderr(&exit, mode);
        exit_process(self.config.exit_code)
    }

    /// V8 is about to run out of heap (JS thread, inside a GC). Returns the new limit.
    pub fn on_near_heap_limit(&self, hits: u32, current: u64, initial: u64) -> u64 {
        let cgroup = self
            .memory_limit
            .filter(|m| m.source != LimitSource::Physical)
            .map(|m| m.bytes);
        let rss = self.source.resident().map_or(0, |r| r.rss);
        let grant = if hits == 1 {
            near_heap::headroom(current, rss, cgroup)
        } else {
            None
        };
        if let Some(headroom) = grant {
            let why = format!(
                "V8 heap reached its limit of {} (initially {}); granted {} of headroom to drain",
                format_size(current),
                format_size(initial),
                format_size(headroom)
            );
            self.trigger(RecycleRequest::new(
                Reason::NearHeapLimit,
                why,
                current,
                current,
                0,
            ));
            return current + headroom;
        }
        if self.config.dry_run || !self.can_exit_process {
            return current;
        }
        let why = if hits == 1 {
            "V8 heap reached its limit and the cgroup leaves no room for headroom"
        } else {
            "V8 heap reached its limit again before the drain finished"
        };
        let mut extra = reason_fields(Reason::NearHeapLimit, current, current);
        extra.insert("strikes".into(), json!(0));
        extra.insert("dryRun".into(), json!(false));
        let fresh_event = self.event("recycle", &format!("{why}; exiting"), extra);
        let drain = self.recycle.lock().begin_or_current(
            Reason::NearHeapLimit,
            fresh_event,
            Instant::now(),
        );
        let msg = format!(
            "{why}; exiting with code {} before V8 aborts",
            self.config.exit_code
        );
        self.exit_natively(&drain, &msg)
    }
}

/// A recycle to decide: what crossed which limit, and fields for the `recycle` event.
#[derive(Debug, Clone)]
pub struct RecycleRequest {
    pub reason: Reason,
    /// The first half of the event's `msg` ("rss 774 MiB over limit 768 MiB ...").
    pub why: String,
    pub value: u64,
    pub limit: u64,
    pub strikes: u32,
    pub extra: Map<String, Value>,
}

impl RecycleRequest {
    pub fn new(reason: Reason, why: String, value: u64, limit: u64, strikes: u32) -> Self {
        RecycleRequest {
            reason,
            why,
            value,
            limit,
            strikes,
            extra: Map::new(),
        }
    }
}

/// A queued recycle skips the stagger queue once its value reaches limit x this.
const STAGGER_CEILING: f64 = 1.25;

fn since_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn reason_fields(reason: Reason, value: u64, limit: u64) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("reason".into(), json!(reason.as_str()));
    extra.insert("value".into(), json!(value));
    extra.insert("limit".into(), json!(limit));
    extra
}
