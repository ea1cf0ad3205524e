//! What a monitor shows about itself: the `start` event, `stats()`, and the recycle report.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::Monitor;
use crate::config;
use crate::event::{self, Event, Start};
use crate::policy::Sample;

impl Monitor {
    /// Only the main thread's recycler may end the process (and so own its signals).
    pub fn can_exit_process(&self) -> bool {
        self.can_exit_process
    }

    /// The post-GC series on the wall clock: `[epoch ms, used bytes]`.
    pub fn post_gc_series_epoch(&self) -> Vec<Vec<f64>> {
        let heap = self.source.heap();
        let now_elapsed = heap.elapsed_ms();
        let now_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        heap.post_gc_series()
            .into_iter()
            .map(|(at, used)| {
                let epoch = now_epoch.saturating_sub(now_elapsed.saturating_sub(at));
                vec![epoch as f64, used as f64]
            })
            .collect()
    }

    pub fn state_name(&self) -> &'static str {
        self.recycle.lock().name()
    }

    pub(super) fn limits_json(&self) -> Value {
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

    pub(super) fn probes_json(&self) -> Value {
        json!({
            "rss": if self.source.has_rss() { "statm" } else { "none" },
            "v8": if self.probes.v8_native { "native" } else { "js" },
            "v8Fallback": self.probes.v8_fallback_reason,
            "gcEpilogue": self.probes.gc_epilogue,
            "notify": self.outputs.notifier.as_ref().map(|n| json!({
                "socket": n.socket(),
                "watchdogMs": n.watchdog_every().map(|d| d.as_millis() as u64 * 2),
            })),
            "nearHeapLimit": *self.near_heap_status.lock(),
            "oomHandler": *self.oom_status.lock(),
            "profile": *self.profile_status.lock(),
            "restart": if self.exec_on_recycle { "exec" } else { "exit" },
        })
    }

    pub(super) fn memory_limit_json(&self) -> Value {
        match self.machine.memory_limit {
            Some(limit) => json!({ "bytes": limit.bytes, "source": limit.source.as_str() }),
            None => Value::Null,
        }
    }

    pub(super) fn config_json(&self) -> Value {
        config::effective_json(&self.config, &self.limits())
    }

    pub fn start_event(&self) -> Map<String, Value> {
        let limits = self.limits();
        let mut warnings = self.config.warnings.clone();
        warnings.extend(config::unreachable_limits(&limits, &self.machine));
        warnings.extend(self.outputs.status_file_warning.clone());
        if let Some(why) = &self.exec_refused {
            warnings.push(format!(
                "SELF_RECYCLE_RESTART=exec cannot work here ({why}): a recycle exits with EXIT_CODE instead"
            ));
        }
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
            restart_exec: self.exec_on_recycle,
        })))
    }

    pub fn stats(&self) -> Value {
        let sample = self.latest();
        let sampling = self.sampling.lock();
        let counters = sampling.counters;
        let shares = sampling.policy.shares(&sample);
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
            "pressure": shares.to_json(),
            "pressureAt": crate::policy::PRESSURE,
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
            "failures": self.failures_json(),
            "container": self.container_json(),
            "heap": {
                "majorGcs": self.source.heap().major_gcs(),
                "ageMs": self.source.heap().age_ms(),
            },
        })
    }

    /// The highest share of a limit in force the latest sample reached (RSS, heap, the hard
    /// ceiling); 0 without limits. Cheap: `drainHttp`'s `underPressure` asks per request.
    pub fn pressure(&self) -> f64 {
        let sample = self.latest();
        self.sampling.lock().policy.shares(&sample).highest()
    }

    /// The status file's content: what `self-recycle status|check|preflight` read.
    pub fn status_json(&self) -> Value {
        let sample = self.latest();
        let sampling = self.sampling.lock();
        let policy = &sampling.policy;
        let limits = policy.limits().clone();
        let baseline = policy.baseline();
        let shares = policy.shares(&sample);
        drop(sampling);
        let share = |value: u64, limit: Option<u64>| {
            limit.filter(|l| *l > 0).map(|l| value as f64 / l as f64)
        };
        let heap = self.source.heap();
        let window_start = heap.elapsed_ms().saturating_sub(self.config.leak_window_ms);
        let series: Vec<(u64, u64)> = heap
            .post_gc_series()
            .into_iter()
            .filter(|(at, _)| *at >= window_start)
            .collect();
        let slope = (series.len() >= 3)
            .then(|| crate::policy::theil_sen_slope(&series))
            .flatten()
            .map(|per_ms| (per_ms * 60_000.0).round());
        let baseline_json = baseline.map(|b| {
            let event = super::verdicts::baseline(&limits, &self.config, b.rss, b.heap_used);
            json!({
                "rss": b.rss,
                "heapUsed": b.heap_used,
                "uptimeMs": b.uptime_ms,
                "rssShare": share(b.rss, limits.rss.or(limits.ceiling)),
                "heapShare": share(b.heap_used, limits.heap),
                "ready": event.passed(),
                "failures": event.failures,
            })
        });
        json!({
            "schema": event::SCHEMA,
            "pid": std::process::id(),
            "time": event::iso8601_now(),
            "writeEveryMs": super::STATUS_EVERY.as_millis() as u64,
            "uptimeMs": self.source.uptime_ms(),
            "state": self.state_name(),
            "sample": sample_json(&sample),
            "limits": self.limits_json(),
            "pressure": shares.to_json(),
            "memoryLimit": self.memory_limit_json(),
            "warmupMs": self.config.warmup_ms,
            "readyMaxBaseline": self.config.ready_max_baseline,
            "baseline": baseline_json,
            "postGcSlopeBytesPerMin": slope,
            "postGcPoints": series.len(),
            "reinits": crate::guard::REGISTRY.reinits(),
            "recentEvents": Value::Array(self.outputs.recent_events.lock().iter().cloned().collect()),
        })
    }

    /// What keeps failing, for `stats().failures` (empty when nothing does).
    fn failures_json(&self) -> Value {
        let mut failures = Map::new();
        if let Some(failure) = self
            .outputs
            .status_file
            .lock()
            .as_ref()
            .and_then(|f| f.failure_json())
        {
            failures.insert("statusFile".into(), failure);
        }
        Value::Object(failures)
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
