//! JSON views of a monitor: the `start` event, `stats()`, and the recycle report.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::{since_ms, Monitor};
use crate::config::RssMetric;
use crate::event;
use crate::policy::Sample;
use crate::recycle::Drain;
use crate::report;
use crate::units::{format_duration, format_size, Growth};

impl Monitor {
    pub fn state_name(&self) -> &'static str {
        self.recycle.lock().name()
    }

    pub fn limits_json(&self) -> Value {
        let policy = self.policy.lock();
        let limits = policy.limits();
        json!({
            "rss": limits.rss,
            "rssMetric": if limits.rss_anon { "anon" } else { "rss" },
            "heap": limits.heap,
            "growth": policy.growth_limit(),
            "jobs": limits.jobs,
            "ageMs": limits.age_ms,
            "strikes": limits.strikes,
            "warmupMs": limits.warmup_ms,
            "minUptimeMs": limits.min_uptime_ms,
        })
    }

    pub(super) fn config_json(&self) -> Value {
        let c = &self.config;
        json!({
            "maxRss": self.limits_json()["rss"],
            "rssMetric": if c.rss_metric == RssMetric::Anon { "anon" } else { "rss" },
            "maxHeap": self.limits_json()["heap"],
            "maxGrowth": c.max_growth.map(|g| match g {
                Growth::Plus(bytes) => format!("+{bytes}"),
                Growth::Factor(f) => format!("{f}x"),
            }),
            "maxJobs": c.max_jobs,
            "maxAgeMs": c.max_age_ms,
            "jitter": c.jitter,
            "intervalMs": c.interval_ms,
            "strikes": c.strikes,
            "warmupMs": c.warmup_ms,
            "minUptimeMs": c.min_uptime_ms,
            "drainTimeoutMs": c.drain_timeout_ms,
            "exitCode": c.exit_code,
            "log": c.log.as_str(),
            "dryRun": c.dry_run,
            "signals": c.signals,
            "stallTimeoutMs": c.stall_timeout_ms,
            "staggerDir": c.stagger_dir,
            "staggerGapMs": c.stagger_gap_ms,
            "reportDir": c.report_dir,
            "heapSnapshot": c.heap_snapshot,
            "leakSlopeBytesPerMin": c.leak_slope_bytes_per_min,
            "leakWindowMs": c.leak_window_ms,
            "nearHeapLimit": c.near_heap_limit,
        })
    }

    pub(super) fn probes_json(&self) -> Value {
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
        })
    }

    pub(super) fn memory_limit_json(&self) -> Value {
        match self.memory_limit {
            Some(limit) => json!({ "bytes": limit.bytes, "source": limit.source.as_str() }),
            None => Value::Null,
        }
    }

    pub fn start_event(&self) -> Map<String, Value> {
        let limits = self.limits_json();
        let show = |key: &str| match limits[key].as_u64() {
            Some(bytes) => format_size(bytes),
            None => "off".to_string(),
        };
        let mut msg = format!(
            "sampling every {} (rss limit {}, heap limit {}, heap probe {}); exit code {} after a recycle",
            format_duration(self.config.interval_ms),
            show("rss"),
            show("heap"),
            if self.probes.v8_native { "native" } else { "js" },
            self.config.exit_code
        );
        if !self.source.has_rss() {
            msg.push_str("; RSS is not available on this platform, RSS limits are inactive");
        }
        for warning in &self.config.warnings {
            msg.push_str("; ");
            msg.push_str(warning);
        }
        let mut extra = Map::new();
        extra.insert("config".into(), self.config_json());
        extra.insert("probes".into(), self.probes_json());
        extra.insert("memoryLimit".into(), self.memory_limit_json());
        extra.insert("warnings".into(), json!(self.config.warnings));
        extra.insert("canExitProcess".into(), json!(self.can_exit_process));
        self.event("start", &msg, extra)
    }

    pub fn stats(&self) -> Value {
        let sample = self.latest();
        let counters = *self.counters.lock();
        let policy = self.policy.lock();
        let baseline = policy
            .baseline()
            .map(|b| json!({ "rss": b.rss, "heapUsed": b.heap_used, "uptimeMs": b.uptime_ms }));
        drop(policy);
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
            "staggerPending": self.pending.lock().as_ref().map(|(request, since)| json!({
                "reason": request.reason.as_str(),
                "waitingMs": since_ms(*since),
                "why": request.extra.get("staggerWaiting"),
            })),
            "heap": {
                "majorGcs": self.source.heap().major_gcs(),
                "ageMs": self.source.heap().age_ms(),
            },
        })
    }

    pub fn recent_samples(&self) -> Vec<Sample> {
        self.ring.lock().to_vec()
    }

    /// Where the recycle report goes, when `REPORT_DIR` is set.
    pub fn report_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.config.report_dir.as_deref()?;
        Some(report::report_path(dir, self.started_epoch_ms))
    }

    /// Writes the report; returns `{ path }` or `{ error }` for the `exit` event.
    pub(super) fn write_report(&self, drain: &Drain, exit: &Map<String, Value>) -> Option<Value> {
        let path = self.report_path()?;
        let samples: Vec<Value> = self.recent_samples().iter().map(sample_json).collect();
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
