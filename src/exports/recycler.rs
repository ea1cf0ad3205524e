//! `NativeRecycler`: one started recycler, the Monitor behind it and what it attached.

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::completion::AttributionInput;
use super::inputs::{
    BesideReportInput, DrainEndInput, DrainStartInput, Extension, FinishInput, FleetAnswerInput,
    FleetWarningInput, HeapStatisticsInput, StartInput, StormInput, TrackedWorkInput,
};
use super::sink::{EventCallback, JsSink, SharedSink, ToJs};
use super::start::{
    choose_heap_probe, config_error, install_near_heap_limit, on_main_thread, random_unit,
    start_heap_profiler, Attachments,
};
use super::{invalid, to_bytes};
use crate::config::{self, Machine, RawSettings};
use crate::event::{self, Recycle};
use crate::liveness::Liveness;
use crate::monitor::{self, EventSink, Monitor, MonitorSetup, Probes};
use crate::notify::Notifier;
use crate::policy::Reason;
use crate::probe;
use crate::probe::heap_cell::HeapCell;
use crate::probe::v8::HeapFigures;
use crate::recycle::StopOutcome;
use crate::sampler::{SampleSource, Ticker};
use crate::stop_signal;

/// The JS listener: an event, or `null` for a liveness ping (answered natively on delivery).
type OnEvent<'scope> = Function<'scope, Value, ()>;

#[napi]
pub struct NativeRecycler {
    /// `None`: `SELF_RECYCLE_DISABLE` — an inert recycler.
    monitor: Option<Arc<Monitor>>,
    sink: Option<Arc<JsSink>>,
    attachments: Arc<Mutex<Attachments>>,
}

#[napi]
impl NativeRecycler {
    /// Parses the settings (throwing `ERR_SELF_RECYCLE_CONFIG`), then starts sampling.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        input: StartInput,
        #[napi(ts_arg_type = "(event: Record<string, any> | null) => void")] on_event: OnEvent,
    ) -> Result<Self> {
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
            heap.record(HeapFigures::from(stats));
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

    /// A manual recycle: returns the draft of its `recycle` event (`{ draftId, draft }`,
    /// for `completeEvent`) for JS to drain on at once, or `null` if a recycle or a stop
    /// is already under way.
    #[napi(catch_unwind)]
    pub fn trigger(&self, detail: Option<String>) -> Result<Option<Map<String, Value>>> {
        let mut recycle = Recycle::new(Reason::Manual, 0, 0, 0);
        recycle.detail = detail;
        Ok(self.monitor()?.trigger(recycle, false))
    }

    /// A stop signal (`SIGTERM`, 15): what JS does with it, and the stop's event.
    #[napi(catch_unwind)]
    pub fn request_stop(&self, signal: String, number: i32) -> Result<StopRequest> {
        Ok(self.monitor()?.request_stop_from_js(&signal, number).into())
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

    /// This worker listens (see `staggerServe`). `false` without a queue.
    #[napi(catch_unwind)]
    pub fn stagger_listening(&self) -> Result<bool> {
        self.monitor()?.stagger_listening().map_err(invalid)
    }

    /// The fleet client's answer to a lease ask. Returns whether a recycle was waiting
    /// for it.
    #[napi(catch_unwind)]
    pub fn fleet_answer(&self, answer: FleetAnswerInput) -> Result<bool> {
        Ok(self.monitor()?.fleet_answer(answer.into()))
    }

    /// How allocation sites are profiled, for `probes.profile`, when JS's inspector
    /// fallback took over at start: returns the `start` event to log, which says so.
    #[napi(catch_unwind)]
    pub fn set_profile_status(&self, status: String) -> Result<Map<String, Value>> {
        Ok(self.monitor()?.start_event_with_profile(status))
    }

    /// Completes the `leak` or `recycle` draft `draft_id` with where the heap grew: returns
    /// the event to emit as it is (the recycle report holds the same), or `null` if that
    /// draft is no longer open.
    #[napi(catch_unwind)]
    pub fn complete_event(
        &self,
        draft_id: f64,
        attribution: AttributionInput,
    ) -> Result<Option<Map<String, Value>>> {
        let monitor = self.monitor()?;
        let (attribution, report_profile) = attribution.into_parts().map_err(invalid)?;
        Ok(monitor.complete(to_bytes(draft_id), &attribution, report_profile))
    }

    /// Writes a file beside the recycle report; `null` without `REPORT_DIR`.
    #[napi(catch_unwind)]
    pub fn write_beside_report(&self, file: BesideReportInput) -> Result<Option<BesideReport>> {
        let Extension(extension) = Extension::try_from(&file)?;
        Ok(self
            .monitor()?
            .write_beside_report(&extension, file.text.as_bytes())
            .map(BesideReport::from))
    }

    #[napi(catch_unwind)]
    pub fn job_done(&self, count: u32) -> Result<f64> {
        Ok(self.monitor()?.job_done(u64::from(count)) as f64)
    }

    /// Heap figures from the JS fallback probe.
    #[napi(catch_unwind)]
    pub fn report_heap(&self, stats: HeapStatisticsInput) -> Result<()> {
        self.monitor()?.record_heap(HeapFigures::from(&stats));
        Ok(())
    }

    /// A post-GC heap figure from the JS fallback (a major `gc` performance entry).
    #[napi(catch_unwind)]
    pub fn report_post_gc(&self, used: f64) -> Result<()> {
        self.monitor()?.record_post_gc(to_bytes(used));
        Ok(())
    }

    /// How long the tracked work in flight should take to drain; `null`: none in flight
    /// (or no durations yet).
    #[napi(catch_unwind)]
    pub fn set_expected_drain(&self, work: Option<TrackedWorkInput>) -> Result<()> {
        self.monitor()?.set_tracked_work(work.map(Into::into));
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
    pub fn drain_started(&self, start: DrainStartInput) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.drain_event(start.into()))
    }

    /// The `drain` end event.
    #[napi(catch_unwind)]
    pub fn drain_finished(&self, end: DrainEndInput) -> Result<Option<Map<String, Value>>> {
        Ok(self.monitor()?.drain_event(end.into()))
    }

    /// JS finished draining and leaves now: returns the `exit` event (the recycle report,
    /// if any, holds the same event).
    #[napi(catch_unwind)]
    pub fn finish(&self, leaving: FinishInput) -> Result<Option<Map<String, Value>>> {
        Ok(self
            .monitor()?
            .finish(leaving.drained, leaving.heap_snapshot))
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
        let storm = event::Event::Storm(Box::new(storm.into()));
        Ok(self.monitor()?.render(&storm))
    }

    /// A `warning` event about the fleet (js/fleet.js finds it: a mismatch, a refusal).
    #[napi(catch_unwind)]
    pub fn fleet_warning_event(&self, warning: FleetWarningInput) -> Result<Map<String, Value>> {
        Ok(self.monitor()?.render(&warning.into()))
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

/// What JS does with a stop signal.
#[napi(string_enum = "lowercase")]
pub enum StopDecision {
    /// Nothing was draining: a stop drain started; drain on its event.
    Started,
    /// A recycle was draining: the stop joined it.
    Joined,
    /// A stop was already under way: the second signal, leave at once.
    Again,
    /// The native watcher took this delivery while JS was stuck: emit its event, drain
    /// what can still be drained.
    Native,
}

/// `requestStop`'s answer.
#[napi(object, use_nullable = true)]
pub struct StopRequest {
    pub outcome: StopDecision,
    /// The stop's event (`null`: none to emit).
    pub event: Option<Map<String, Value>>,
}

impl From<monitor::JsStop> for StopRequest {
    fn from(stop: monitor::JsStop) -> Self {
        let (outcome, event) = match stop {
            monitor::JsStop::Decide(StopOutcome::Started, event) => (StopDecision::Started, event),
            monitor::JsStop::Decide(StopOutcome::Joined, event) => (StopDecision::Joined, event),
            monitor::JsStop::Decide(StopOutcome::Again, event) => (StopDecision::Again, event),
            monitor::JsStop::TakenNatively(event) => (StopDecision::Native, event),
        };
        StopRequest { outcome, event }
    }
}

/// A file written beside the recycle report: its path, or why it could not be.
#[napi(object, use_nullable = true)]
pub struct BesideReport {
    pub path: Option<String>,
    pub error: Option<String>,
}

impl From<std::result::Result<String, String>> for BesideReport {
    fn from(written: std::result::Result<String, String>) -> Self {
        match written {
            Ok(path) => BesideReport {
                path: Some(path),
                error: None,
            },
            Err(error) => BesideReport {
                path: None,
                error: Some(error),
            },
        }
    }
}

impl Drop for NativeRecycler {
    fn drop(&mut self) {
        self.attachments.lock().detach();
    }
}
