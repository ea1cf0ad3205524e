//! What a monitor shows about itself: the `start` event, `stats()`, and the recycle report.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::Monitor;
use crate::config;
use crate::event::{self, Event, Start};
use crate::policy::Sample;
use crate::recycle::Drain;
use crate::report;

impl Monitor {
    pub fn state_name(&self) -> &'static str {
        self.recycle.lock().name()
    }

    fn limits_json(&self) -> Value {
        let sampling = self.sampling.lock();
        let policy = &sampling.policy;
        let limits = policy.limits();
        json!({
            "rss": limits.rss,
            "rssMetric": if limits.rss_anon { "anon" } else { "rss" },
            "ceiling": limits.ceiling,
            "heap": limits.heap,
            "growth": policy.growth_limit(),
            "jobs": limits.jobs,
            "ageMs": limits.age_ms,
            "strikes": limits.strikes,
            "warmupMs": limits.warmup_ms,
            "minUptimeMs": limits.min_uptime_ms,
        })
    }

    fn probes_json(&self) -> Value {
        json!({
            "rss": if self.source.has_rss() { "statm" } else { "none" },
            "v8": if self.probes.v8_native { "native" } else { "js" },
            "v8Fallback": self.probes.v8_fallback_reason,
            "gcEpilogue": self.probes.gc_epilogue,
            "notify": self.notifier.as_ref().map(|n| json!({
                "socket": n.socket(),
                "watchdogMs": n.watchdog_every().map(|d| d.as_millis() as u64 * 2),
            })),
            "nearHeapLimit": *self.near_heap_status.lock(),
            "oomHandler": *self.oom_status.lock(),
        })
    }

    fn memory_limit_json(&self) -> Value {
        match self.machine.memory_limit {
            Some(limit) => json!({ "bytes": limit.bytes, "source": limit.source.as_str() }),
            None => Value::Null,
        }
    }

    fn config_json(&self) -> Value {
        config::effective_json(&self.config, &self.limits())
    }

    pub fn start_event(&self) -> Map<String, Value> {
        let limits = self.limits();
        let mut warnings = self.config.warnings.clone();
        warnings.extend(config::unreachable_limits(&limits, &self.machine));
        self.render(&Event::Start(Box::new(Start {
            config: self.config_json(),
            probes: self.probes_json(),
            memory_limit: self.memory_limit_json(),
            warnings,
            can_exit_process: self.can_exit_process,
            interval_ms: self.config.interval_ms,
            rss_limit: limits.rss,
            heap_limit: limits.heap,
            v8_native: self.probes.v8_native,
            has_rss: self.source.has_rss(),
            exit_code: self.config.exit_code,
        })))
    }

    pub fn stats(&self) -> Value {
        let sample = self.latest();
        let sampling = self.sampling.lock();
        let counters = sampling.counters;
        let baseline = sampling
            .policy
            .baseline()
            .map(|b| json!({ "rss": b.rss, "heapUsed": b.heap_used, "uptimeMs": b.uptime_ms }));
        let pending = sampling.pending.as_ref().map(|(recycle, since)| {
            json!({
                "reason": recycle.reason.as_str(),
                "waitingMs": since.elapsed().as_millis() as u64,
            })
        });
        drop(sampling);
        json!({
            "state": self.state_name(),
            "sample": sample_json(&sample),
            "limits": self.limits_json(),
            "baseline": baseline,
            "counters": {
                "samples": counters.samples,
                "jobsDone": self.jobs_done.load(Ordering::Acquire),
                "pressure": counters.pressure,
                "misconfigured": counters.misconfigured,
                "recycles": counters.recycles,
            },
            "probes": self.probes_json(),
            "memoryLimit": self.memory_limit_json(),
            "staggerPending": pending,
            "heap": {
                "majorGcs": self.source.heap().major_gcs(),
                "ageMs": self.source.heap().age_ms(),
            },
        })
    }

    /// Where the recycle report goes, when `REPORT_DIR` is set.
    pub fn report_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.config.report_dir.as_deref()?;
        Some(report::report_path(dir, self.started_epoch_ms))
    }

    /// Writes the report; returns `{ path }` or `{ error }` for the `exit` event.
    pub(super) fn write_report(&self, drain: &Drain, exit: &Map<String, Value>) -> Option<Value> {
        let path = self.report_path()?;
        let samples: Vec<Value> = self
            .sampling
            .lock()
            .ring
            .to_vec()
            .iter()
            .map(sample_json)
            .collect();
        let heap = self.source.heap();
        let now = heap.elapsed_ms();
        let post_gc: Vec<Value> = heap
            .post_gc_series()
            .into_iter()
            .map(|(at, used)| json!({ "msAgo": now.saturating_sub(at), "heapUsed": used }))
            .collect();
        let report = json!({
            "schema": event::SCHEMA,
            "reason": drain.reason.as_str(),
            "time": event::iso8601_now(),
            "pid": std::process::id(),
            "recycle": Value::Object(drain.recycle_event.clone()),
            "exit": Value::Object(exit.clone()),
            "config": self.config_json(),
            "limits": self.limits_json(),
            "probes": self.probes_json(),
            "memoryLimit": self.memory_limit_json(),
            "samples": samples,
            "postGc": post_gc,
            "guard": crate::guard::REGISTRY.stats(),
            "versions": self.versions.clone(),
        });
        Some(match report::write_atomically(&path, &report) {
            Ok(()) => json!({ "path": path.display().to_string() }),
            Err(error) => json!({ "error": error }),
        })
    }
}

pub fn sample_json(sample: &Sample) -> Value {
    json!({
        "uptimeMs": sample.uptime_ms,
        "rss": sample.rss,
        "rssAnon": sample.rss_anon,
        "heapUsed": sample.heap_used,
        "heapTotal": sample.heap_total,
        "heapLimit": sample.heap_limit,
        "external": sample.external,
        "jobsDone": sample.jobs_done,
    })
}
