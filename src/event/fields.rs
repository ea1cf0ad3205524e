//! Each event's own fields, after the envelope (camelCase JSON).

use super::*;

impl Event {
    /// The event's own fields, after the envelope.
    pub(super) fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        let mut put = |key: &str, value: Value| {
            fields.insert(key.to_string(), value);
        };
        match self {
            Event::Start(start) => {
                put("config", start.config.clone());
                put("probes", start.probes.clone());
                put("memoryLimit", start.memory_limit.clone());
                put("warnings", json!(start.warnings));
                put("canExitProcess", json!(start.can_exit_process));
            }
            Event::Sample(sample) => {
                put("rssAnon", json!(sample.rss_anon));
                put("heapTotal", json!(sample.heap_total));
                put("external", json!(sample.external));
                put("jobsDone", json!(sample.jobs_done));
            }
            Event::Pressure {
                reason,
                value,
                limit,
            }
            | Event::Misconfigured {
                reason,
                value,
                limit,
            } => {
                put("reason", json!(reason.as_str()));
                put("value", json!(value));
                put("limit", json!(limit));
            }
            Event::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            } => {
                put("slopeBytesPerMin", json!(slope_per_min.round()));
                put("thresholdBytesPerMin", json!(threshold_per_min.round()));
                put("windowMs", json!(window_ms));
                put("points", json!(points));
            }
            Event::Recycle(recycle) => {
                put("reason", json!(recycle.reason.as_str()));
                put("value", json!(recycle.value));
                put("limit", json!(recycle.limit));
                put("strikes", json!(recycle.strikes));
                put("dryRun", json!(recycle.dry_run));
                put("drainTimeoutMs", json!(recycle.drain_timeout_ms));
                if recycle.ceiling {
                    put("ceiling", json!(true));
                }
                if let Some(detail) = &recycle.detail {
                    put("detail", json!(detail));
                }
                if let Some((admission, waited_ms)) = &recycle.stagger {
                    put("stagger", json!(admission));
                    put("staggerWaitMs", json!(waited_ms));
                }
                if let Some((admission, why, waited_ms)) = &recycle.fleet {
                    put("fleet", json!(admission));
                    if let Some(why) = why {
                        put("fleetWhy", json!(why));
                    }
                    put("fleetWaitMs", json!(waited_ms));
                }
                if let Some(headroom) = recycle.headroom {
                    put("headroom", json!(headroom));
                }
                if let Some(configured) = recycle.configured_limit {
                    put("configuredLimit", json!(configured));
                }
                if let Some(prediction) = recycle.prediction {
                    put("predicted", json!(true));
                    put("projected", json!(prediction.projected));
                    put("expectedDrainMs", json!(prediction.expected_drain_ms));
                    put("slopeBytesPerSec", json!(prediction.slope_per_s.round()));
                }
            }
            Event::Baseline(baseline) => {
                put("baselineRss", json!(baseline.rss));
                put("baselineHeapUsed", json!(baseline.heap_used));
                put("rssLimit", json!(baseline.rss_limit));
                put("heapLimitInForce", json!(baseline.heap_limit));
                put("warmupMs", json!(baseline.warmup_ms));
                put("maxShare", json!(baseline.max_share));
                put("ready", json!(baseline.passed()));
                put("failures", json!(baseline.failures));
            }
            Event::Stop {
                signal,
                joined,
                drain_timeout_ms,
            } => {
                put("signal", json!(signal));
                put("joined", json!(joined));
                put("drainTimeoutMs", json!(drain_timeout_ms));
            }
            Event::Limits {
                previous,
                current,
                rss_limit,
                ceiling,
            } => {
                put("previous", json!(previous));
                put("current", json!(current));
                put("rssLimit", json!(rss_limit));
                put("ceiling", json!(ceiling));
            }
            Event::Queued(queued) => {
                put("reason", json!(queued.reason.as_str()));
                put("value", json!(queued.value));
                put("limit", json!(queued.limit));
                put("waitingFor", json!(queued.waiting_for));
                put("why", json!(queued.why));
                put("maxWaitMs", json!(queued.max_wait_ms));
            }
            Event::Drain(drain) => {
                put("reason", json!(drain.reason.as_str()));
                put("durationMs", json!(drain.duration_ms));
                match &drain.phase {
                    DrainPhase::Start {
                        hooks, in_flight, ..
                    } => {
                        put("phase", json!("start"));
                        put("inFlight", json!(in_flight));
                        put("hooks", json!(hooks));
                    }
                    DrainPhase::End {
                        in_flight,
                        drained,
                        errors,
                    } => {
                        put("phase", json!("end"));
                        put("inFlight", json!(in_flight));
                        put("drained", json!(drained));
                        put("errors", json!(errors));
                    }
                }
            }
            Event::Exit(exit) => {
                put("code", json!(exit.code));
                put("drained", json!(exit.drained()));
                put("durationMs", json!(exit.duration_ms));
                put("reason", json!(exit.reason.as_str()));
                put("forced", json!(exit.forced()));
                if let Some(signal) = &exit.signal {
                    put("signal", json!(signal));
                }
                put(
                    "restart",
                    json!(if exit.exec_generation.is_some() {
                        "exec"
                    } else {
                        "exit"
                    }),
                );
                if let Some(report) = &exit.report {
                    put("report", report.clone());
                }
                if let Some(snapshot) = &exit.heap_snapshot {
                    put("heapSnapshot", snapshot.clone());
                }
            }
            Event::Warning {
                fleet,
                code,
                reason,
                detail,
            } => {
                put("fleetName", json!(fleet));
                put("code", json!(code));
                put("reason", json!(reason));
                if !detail.is_null() {
                    put("detail", detail.clone());
                }
            }
            Event::Storm(storm) => {
                put("fleetName", json!(storm.fleet));
                put("recycles", json!(storm.recycles));
                put("threshold", json!(storm.threshold));
                put("windowMs", json!(storm.window_ms));
                put("reasons", Value::Object(storm.reasons.clone()));
                put("hosts", Value::Object(storm.hosts.clone()));
                put("medianUptimeMs", json!(storm.median_uptime_ms));
                put("gapMs", json!(storm.gap_ms));
            }
            Event::Reinit {
                key,
                attempts,
                from_site,
                cached,
                call_site,
                stack,
            } => {
                put("key", json!(key));
                put("attempts", json!(attempts));
                put("fromSite", json!(from_site));
                put("cached", json!(cached));
                put("callSite", json!(call_site));
                put("stack", json!(stack));
            }
            Event::StatusFile(warning) => {
                put("code", json!(warning.code()));
                match warning {
                    StatusFileWarning::Unwritable { path, error, errno } => {
                        put("path", json!(path));
                        put("reason", json!(error));
                        put("error", json!(error));
                        put("errno", json!(errno));
                    }
                    StatusFileWarning::Shared { path, other_pid } => {
                        put("path", json!(path));
                        put(
                            "reason",
                            json!(format!("another live process (pid {other_pid}) writes it")),
                        );
                        put("otherPid", json!(other_pid));
                    }
                }
            }
        }
        fields
    }
}
