//! Events: one typed value per event, built where it is decided, owning its message. It
//! becomes a JSON object once, at the boundary (to JS, to the log, to the report), with the
//! envelope every event carries.

use serde_json::{json, Map, Value};

use crate::policy::{NearHeapExit, Prediction, Reason, Sample};
use crate::units::{format_duration, format_size};

mod attribution;
mod fields;
mod line;
mod msg;
pub use attribution::{
    Attribution, GrownSites, JobAttribution, JobShare, JobsFit, Position, Since, Site,
};
pub use line::{iso8601_now, write_stderr, write_stderr_line};

pub const SCHEMA: u64 = 1;

/// The figures every event carries, from the latest sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope {
    pub uptime_ms: u64,
    pub rss: u64,
    pub heap_used: u64,
    pub heap_limit: u64,
    /// With `RESTART=exec`: how many times this process re-executed itself.
    pub generation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start(Box<Start>),
    Sample(Sample),
    Pressure {
        reason: Reason,
        value: u64,
        limit: u64,
    },
    Misconfigured {
        reason: Reason,
        value: u64,
        limit: u64,
    },
    Leak {
        slope_per_min: f64,
        threshold_per_min: f64,
        window_ms: u64,
        points: usize,
    },
    Recycle(Box<Recycle>),
    /// Warm-up ended: the baseline, its share of each limit, and whether it passes
    /// `READY_MAX_BASELINE`.
    Baseline(Box<Baseline>),
    /// A stop signal (SIGTERM, SIGINT) with `SIGNALS=on`: not a recycle.
    Stop {
        signal: String,
        joined: bool,
        drain_timeout_ms: u64,
    },
    /// A due recycle waits for its turn (siblings or the fleet); said once per recycle.
    Queued(Box<Queued>),
    /// The memory cgroup's limit changed while the worker runs (an in-place resize): the
    /// limits that refer to it now follow it.
    Limits {
        previous: Option<u64>,
        current: Option<u64>,
        rss_limit: Option<u64>,
        ceiling: Option<u64>,
    },
    Drain(Drain),
    Exit(Box<Exit>),
    /// More recycles fleet-wide than `FLEET_STORM` allows within its window.
    Storm(Box<Storm>),
    /// Something about the fleet a worker cannot fix by itself: members that disagree on
    /// `maxConcurrent`/`gap` (`mismatch`), or a Redis that refuses it (`auth`, `redis`).
    Warning {
        fleet: String,
        code: String,
        reason: String,
        detail: Value,
    },
    Reinit {
        key: String,
        attempts: u64,
        /// Attempts from this call site.
        from_site: u64,
        /// `once()` returned the cached value; `trackInit()` built a new one.
        cached: bool,
        call_site: String,
        stack: String,
    },
    /// A `warning` about the status file (said once): it cannot be written, or another
    /// live process writes it too.
    StatusFile(StatusFileWarning),
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatusFileWarning {
    /// The status file cannot be written: probes reading it will fail.
    Unwritable {
        path: String,
        error: String,
        errno: Option<String>,
    },
    /// Another live process writes the same status file.
    Shared { path: String, other_pid: u32 },
}

impl StatusFileWarning {
    fn code(&self) -> &'static str {
        match self {
            StatusFileWarning::Unwritable { .. } => "status-file-unwritable",
            StatusFileWarning::Shared { .. } => "status-file-shared",
        }
    }

    fn msg(&self) -> String {
        match self {
            StatusFileWarning::Unwritable { path, error, .. } => format!(
                "cannot write the status file {path}: {error}; `self-recycle check` fails until it can (said once; stats().failures.statusFile while it lasts)"
            ),
            StatusFileWarning::Shared { path, other_pid } => format!(
                "another live process (pid {other_pid}) writes the status file {path} too: each shows only the last writer; give each instance its own file with {{pid}} or {{instance}} in STATUS_FILE"
            ),
        }
    }
}

/// What a due recycle waits for, and for how long at most.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub reason: Reason,
    pub value: u64,
    pub limit: u64,
    /// `siblings` (STAGGER_DIR) or `fleet`.
    pub waiting_for: &'static str,
    pub why: String,
    pub max_wait_ms: u64,
}

/// A recycle storm seen in the fleet's history: counts by reason and by host.
#[derive(Debug, Clone, PartialEq)]
pub struct Storm {
    pub fleet: String,
    pub recycles: u64,
    pub threshold: u64,
    pub window_ms: u64,
    pub reasons: Map<String, Value>,
    pub hosts: Map<String, Value>,
    /// Median uptime of the workers when they recycled: short means limits too tight for
    /// the app (a misconfiguration), long means memory that grows (a leak).
    pub median_uptime_ms: Option<u64>,
    /// The fleet gap while the storm lasts, when FLEET_STORM_GAP widens it.
    pub gap_ms: Option<u64>,
}

impl Storm {
    fn msg(&self) -> String {
        let count = |map: &Map<String, Value>| {
            let mut pairs: Vec<(String, u64)> = map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect();
            pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            pairs
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut msg = format!(
            "recycle storm in fleet {}: {} recycles in {} (more than {}); reasons: {}; on {} host(s)",
            self.fleet,
            self.recycles,
            format_duration(self.window_ms),
            self.threshold,
            count(&self.reasons),
            self.hosts.len()
        );
        if let Some(uptime) = self.median_uptime_ms {
            let hint = if uptime < 300_000 {
                "limits too tight for the app? (a misconfiguration recycles soon after start)"
            } else {
                "memory that grows over time (a leak) in many workers at once"
            };
            msg.push_str(&format!(
                "; median uptime at recycle {}: {hint}",
                format_duration(uptime)
            ));
        }
        if let Some(gap) = self.gap_ms {
            msg.push_str(&format!(
                "; fleet gap widened to {} while it lasts",
                format_duration(gap)
            ));
        }
        msg
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub config: Value,
    pub probes: Value,
    pub memory_limit: Value,
    pub warnings: Vec<String>,
    pub can_exit_process: bool,
    pub interval_ms: u64,
    pub rss_limit: Option<u64>,
    pub heap_limit: Option<u64>,
    pub v8_native: bool,
    pub has_rss: bool,
    pub exit_code: i32,
    /// `RESTART=exec` works here: a recycle re-executes the process in place.
    pub restart_exec: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub rss: u64,
    pub heap_used: u64,
    pub rss_limit: Option<u64>,
    pub heap_limit: Option<u64>,
    pub warmup_ms: u64,
    pub max_share: f64,
    /// What is over `max_share`, as sentences.
    pub failures: Vec<String>,
}

impl Baseline {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A decided recycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Recycle {
    pub reason: Reason,
    pub value: u64,
    pub limit: u64,
    pub strikes: u32,
    pub dry_run: bool,
    pub drain_timeout_ms: u64,
    /// Crossed the hard ceiling (95% of the cgroup limit).
    pub ceiling: bool,
    /// Free text given to `recycle(reason)` or the signal name.
    pub detail: Option<String>,
    /// How the sibling queue admitted it (`granted`, `bypass: ...`), and after how long.
    pub stagger: Option<(String, u64)>,
    /// The fleet's admission: (`granted`, `unavailable`, `timeout` or `bypass`, why, ms waited).
    pub fleet: Option<(String, Option<String>, u64)>,
    /// Headroom granted by the near-heap-limit rescue.
    pub headroom: Option<u64>,
    /// The heap limit V8 started with, for near-heap-limit recycles.
    pub initial_limit: Option<u64>,
    /// No drain: the process exits at once (why, for the message).
    pub exiting: Option<String>,
    /// Decided before the crossing (`PREDICT`): the projection at the drain's end.
    pub prediction: Option<Prediction>,
    /// `MAX_JOBS` or `MAX_AGE` as configured, when JITTER lowered it to `limit`.
    pub configured_limit: Option<u64>,
}

impl Recycle {
    pub fn new(reason: Reason, value: u64, limit: u64, strikes: u32) -> Recycle {
        Recycle {
            reason,
            value,
            limit,
            strikes,
            dry_run: false,
            drain_timeout_ms: 0,
            ceiling: false,
            detail: None,
            stagger: None,
            fleet: None,
            headroom: None,
            initial_limit: None,
            exiting: None,
            prediction: None,
            configured_limit: None,
        }
    }

    /// Why a jobs or age value is not the limit itself: JITTER lowered the limit; the count
    /// is read at each sample, so what finished since the crossing is in it too.
    fn jitter_note(&self, configured: String, limit: String) -> String {
        match self.configured_limit {
            Some(configured_limit) if configured_limit != self.limit => format!(
                " (this worker's limit: {configured} less JITTER, spread so that workers do not recycle together, gave {limit})"
            ),
            _ => String::new(),
        }
    }

    /// What crossed which limit: the first half of the message.
    pub fn why(&self) -> String {
        let (value, limit, strikes) = (self.value, self.limit, self.strikes);
        match self.reason {
            Reason::Jobs => {
                let mut why = format!("{value} jobs done, limit {limit}");
                why.push_str(&self.jitter_note(
                    format!("MAX_JOBS {}", self.configured_limit.unwrap_or(limit)),
                    limit.to_string(),
                ));
                if value > limit {
                    why.push_str(&format!(
                        "; {} more than the limit: jobs are counted at each sample, so those that finished since the last one count too",
                        value - limit
                    ));
                }
                why
            }
            Reason::Leak => format!(
                "post-GC heap grows {}/min, over {}/min",
                format_size(value),
                format_size(limit)
            ),
            Reason::Age => format!(
                "uptime {} reached limit {}{}",
                format_duration(value),
                format_duration(limit),
                self.jitter_note(
                    format!(
                        "MAX_AGE {}",
                        format_duration(self.configured_limit.unwrap_or(limit))
                    ),
                    format_duration(limit)
                )
            ),
            Reason::Stall => format!(
                "event loop unresponsive for {} (limit {})",
                format_duration(value),
                format_duration(limit)
            ),
            _ if self.exiting.is_some() => self.exiting.clone().unwrap_or_default(),
            _ if self.prediction.is_some() => {
                let p = self.prediction.unwrap_or(Prediction {
                    projected: value,
                    expected_drain_ms: 0,
                    slope_per_s: 0.0,
                });
                format!(
                    "{} {} grows {}/s: over limit {} at {} by the end of a {} drain (tracked work)",
                    self.reason.as_str(),
                    format_size(value),
                    format_size(p.slope_per_s.max(0.0) as u64),
                    format_size(limit),
                    format_size(p.projected),
                    format_duration(p.expected_drain_ms)
                )
            }
            Reason::NearHeapLimit => match self.headroom {
                Some(headroom) => format!(
                    "V8 heap reached its limit of {} (initially {}); granted {} of headroom to drain",
                    format_size(limit),
                    format_size(self.initial_limit.unwrap_or(limit)),
                    format_size(headroom)
                ),
                None => format!("V8 heap reached its limit of {}", format_size(limit)),
            },
            Reason::Manual | Reason::Signal => match &self.detail {
                Some(text) => format!("{} recycle requested ({text})", self.reason.as_str()),
                None => format!("{} recycle requested", self.reason.as_str()),
            },
            Reason::Rss if self.ceiling => format!(
                "rss {} over the hard ceiling {} (95% of the cgroup memory limit) for {strikes} samples",
                format_size(value),
                format_size(limit)
            ),
            _ => format!(
                "{} {} over limit {} for {strikes} samples",
                self.reason.as_str(),
                format_size(value),
                format_size(limit)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DrainPhase {
    Start {
        hooks: u32,
        in_flight: u32,
        left_ms: u64,
    },
    End {
        in_flight: u32,
        drained: bool,
        errors: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub reason: Reason,
    pub phase: DrainPhase,
    /// Since the recycle was decided: the same clock as the `exit` event's.
    pub duration_ms: u64,
}

/// Why the process is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// JS finished the drain in time.
    Drained,
    /// JS gave up at the deadline, work still in flight.
    TimedOut,
    /// The native thread ended it: JS did not finish within the deadline plus the grace.
    NativeDeadline,
    /// The near-heap-limit callback ended it before V8 could abort.
    NearHeapLimit(NearHeapExit),
    /// A second stop signal: leave at once.
    Interrupted,
    /// V8's OOM handler: an allocation failed with no near-heap-limit warning first.
    Oom,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub code: i32,
    pub reason: Reason,
    pub cause: ExitCause,
    pub duration_ms: u64,
    pub drain_timeout_ms: u64,
    /// `{ path }` or `{ error }` of the recycle report.
    pub report: Option<Value>,
    /// `{ path }` or `{ skipped }` of the heap snapshot.
    pub heap_snapshot: Option<Value>,
    /// The stop signal, when the process stops rather than recycles.
    pub signal: Option<String>,
    /// `RESTART=exec`: the generation the process re-executes itself as (`None`: it exits).
    pub exec_generation: Option<u64>,
}

impl Exit {
    pub fn drained(&self) -> bool {
        self.cause == ExitCause::Drained
    }

    /// Written by the native thread, not by JS.
    pub fn forced(&self) -> bool {
        matches!(
            self.cause,
            ExitCause::NativeDeadline | ExitCause::NearHeapLimit(_) | ExitCause::Oom
        )
    }

    fn msg(&self) -> String {
        let code = self.code;
        let how = self.how(code);
        match &self.signal {
            Some(signal) => format!("stopping on {signal}: {how}"),
            None => how,
        }
    }

    /// How the process leaves: exits with `code`, or re-executes itself in place.
    fn leaving(&self, code: i32) -> String {
        match self.exec_generation {
            Some(next) => format!(
                "re-executing in place as generation {next} (exit code {code} if that fails)"
            ),
            None => format!("exiting with code {code}"),
        }
    }

    fn how(&self, code: i32) -> String {
        let leaving = self.leaving(code);
        match self.cause {
            ExitCause::Drained => {
                format!("drained in {} ms; {leaving}", self.duration_ms)
            }
            ExitCause::TimedOut => format!(
                "drain timed out after {}; {leaving}",
                format_duration(self.drain_timeout_ms)
            ),
            ExitCause::NativeDeadline => format!(
                "drain did not finish within {} (JS unresponsive or a hook hung); {leaving} from the native thread",
                format_duration(self.drain_timeout_ms)
            ),
            ExitCause::NearHeapLimit(why) => {
                format!("{}; {leaving} before V8 aborts", why.why())
            }
            ExitCause::Interrupted => {
                format!("a second signal; exiting at once with code {code}")
            }
            ExitCause::Oom => format!(
                "V8 could not allocate and would abort; {leaving} instead (work in flight is lost)"
            ),
        }
    }
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start(_) => "start",
            Event::Sample(_) => "sample",
            Event::Pressure { .. } => "pressure",
            Event::Misconfigured { .. } => "misconfigured",
            Event::Leak { .. } => "leak",
            Event::Recycle(_) => "recycle",
            Event::Baseline(_) => "baseline",
            Event::Stop { .. } => "stop",
            Event::Queued(_) => "queued",
            Event::Limits { .. } => "limits",
            Event::Drain(_) => "drain",
            Event::Exit(_) => "exit",
            Event::Storm(_) => "storm",
            Event::Warning { .. } => "warning",
            Event::Reinit { .. } => "reinit",
            Event::StatusFile(_) => "warning",
        }
    }

    /// `leak` and `recycle`: JS adds where the heap grew (an `Attribution`) before the
    /// event is logged, so it is rendered once that is known.
    pub fn attributed_by_js(&self) -> bool {
        matches!(self, Event::Leak { .. } | Event::Recycle(_))
    }

    /// `{ event, schema, time, pid, uptimeMs, rss, heapUsed, heapLimit, msg, ...fields }`,
    /// timed now.
    pub fn to_json(&self, envelope: &Envelope) -> Map<String, Value> {
        self.to_json_at(envelope, &iso8601_now(), &Attribution::default())
    }

    /// `to_json` at a given `time`, with what JS found about the heap's growth (its fields
    /// after the event's own, its sentences at the end of `msg`).
    pub fn to_json_at(
        &self,
        envelope: &Envelope,
        time: &str,
        attribution: &Attribution,
    ) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("event".into(), json!(self.name()));
        object.insert("schema".into(), json!(SCHEMA));
        object.insert("time".into(), json!(time));
        object.insert("pid".into(), json!(std::process::id()));
        object.insert("uptimeMs".into(), json!(envelope.uptime_ms));
        object.insert("rss".into(), json!(envelope.rss));
        object.insert("heapUsed".into(), json!(envelope.heap_used));
        object.insert("heapLimit".into(), json!(envelope.heap_limit));
        if let Some(generation) = envelope.generation {
            object.insert("generation".into(), json!(generation));
        }
        object.insert("msg".into(), json!(self.msg_with(attribution)));
        let mut fields = self.fields();
        attribution.put_fields(&mut |key, value| {
            fields.entry(key.to_string()).or_insert(value);
        });
        for (key, value) in fields {
            // The envelope is the contract: fields never overwrite it.
            object.entry(key).or_insert(value);
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::line::{format_line, iso8601};
    use super::*;
    use crate::config::LogMode;

    const MIB: u64 = 1 << 20;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_967_251_123), "2026-11-29T15:47:31.123Z");
    }

    #[test]
    fn envelope_first_and_protected() {
        let envelope = Envelope {
            uptime_ms: 5,
            rss: 10,
            heap_used: 3,
            heap_limit: 100,
            generation: None,
        };
        let event = Event::Pressure {
            reason: Reason::Rss,
            value: 90 * MIB,
            limit: 100 * MIB,
        };
        let object = event.to_json(&envelope);
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "event",
                "schema",
                "time",
                "pid",
                "uptimeMs",
                "rss",
                "heapUsed",
                "heapLimit",
                "msg",
                "reason",
                "value",
                "limit"
            ]
        );
        assert_eq!(object["pid"], json!(std::process::id()));
        assert_eq!(
            object["msg"],
            json!("rss 90 MiB passed 80% of limit 100 MiB")
        );
        let line = format_line(&object, LogMode::Pretty).expect("pretty");
        assert!(
            line.ends_with("pressure: rss 90 MiB passed 80% of limit 100 MiB"),
            "{line}"
        );
        assert!(format_line(&object, LogMode::Off).is_none());
        let parsed: Value =
            serde_json::from_str(&format_line(&object, LogMode::Json).expect("json"))
                .expect("valid");
        assert_eq!(parsed["reason"], json!("rss"));
    }

    #[test]
    fn a_jobs_recycle_explains_the_jittered_limit_and_the_overshoot() {
        let mut recycle = Recycle::new(Reason::Jobs, 36, 28, 0);
        recycle.configured_limit = Some(30);
        let msg = Event::Recycle(Box::new(recycle.clone())).msg();
        assert_eq!(
            msg,
            "36 jobs done, limit 28 (this worker's limit: MAX_JOBS 30 less JITTER, spread so that workers do not recycle together, gave 28); 8 more than the limit: jobs are counted at each sample, so those that finished since the last one count too; draining"
        );
        let object = Event::Recycle(Box::new(recycle)).to_json(&Envelope::default());
        assert_eq!(object["configuredLimit"], json!(30));
        let exact = Recycle {
            configured_limit: Some(30),
            ..Recycle::new(Reason::Jobs, 30, 30, 0)
        };
        assert_eq!(
            Event::Recycle(Box::new(exact)).msg(),
            "30 jobs done, limit 30; draining"
        );
    }

    #[test]
    fn a_predicted_recycle_says_draining_early_once() {
        let mut recycle = Recycle::new(Reason::Rss, 90 * MIB, 100 * MIB, 0);
        recycle.prediction = Some(Prediction {
            projected: 110 * MIB,
            expected_drain_ms: 2000,
            slope_per_s: 5.0 * MIB as f64,
        });
        let msg = Event::Recycle(Box::new(recycle)).msg();
        assert!(msg.ends_with("(tracked work); draining early"), "{msg}");
        assert_eq!(msg.matches("draining").count(), 1, "{msg}");
    }

    #[test]
    fn exit_message_and_duration_agree() {
        let exit = Exit {
            code: 42,
            reason: Reason::Rss,
            cause: ExitCause::Drained,
            duration_ms: 45,
            drain_timeout_ms: 30_000,
            report: None,
            heap_snapshot: None,
            signal: None,
            exec_generation: None,
        };
        let object = Event::Exit(Box::new(exit)).to_json(&Envelope::default());
        assert_eq!(
            object["msg"],
            json!("drained in 45 ms; exiting with code 42")
        );
        assert_eq!(object["durationMs"], json!(45));
        assert_eq!(object["drained"], json!(true));
        assert_eq!(object["forced"], json!(false));
    }

    #[test]
    fn a_near_heap_exit_says_so() {
        let exit = Exit {
            code: 75,
            reason: Reason::NearHeapLimit,
            cause: ExitCause::NearHeapLimit(NearHeapExit::Again),
            duration_ms: 3,
            drain_timeout_ms: 30_000,
            report: None,
            heap_snapshot: None,
            signal: None,
            exec_generation: None,
        };
        let object = Event::Exit(Box::new(exit)).to_json(&Envelope::default());
        let msg = object["msg"].as_str().unwrap_or_default();
        assert!(msg.starts_with("V8 heap reached its limit again"), "{msg}");
        assert!(!msg.contains("drain did not finish"), "{msg}");
        assert_eq!(object["forced"], json!(true));
        assert_eq!(object["drained"], json!(false));
    }

    #[test]
    fn recycle_messages() {
        let mut recycle = Recycle::new(Reason::Rss, 774 * MIB, 768 * MIB, 3);
        assert_eq!(
            Event::Recycle(Box::new(recycle.clone())).msg(),
            "rss 774 MiB over limit 768 MiB for 3 samples; draining"
        );
        recycle.ceiling = true;
        assert!(recycle.why().contains("hard ceiling"));
        let mut manual = Recycle::new(Reason::Manual, 0, 0, 0);
        manual.detail = Some("deploy".into());
        manual.dry_run = true;
        assert_eq!(
            Event::Recycle(Box::new(manual)).msg(),
            "manual recycle requested (deploy); dry run, not draining"
        );
    }
}
