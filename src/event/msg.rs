//! The one human sentence of each event (`msg`).

use super::*;

impl Event {
    /// The message with what JS found about the heap's growth (the top site, the top
    /// named job), each after `; `.
    pub fn msg_with(&self, attribution: &Attribution) -> String {
        let mut msg = self.msg();
        for sentence in attribution.sentences() {
            msg.push_str("; ");
            msg.push_str(&sentence);
        }
        msg
    }

    /// The one human sentence of the event.
    pub fn msg(&self) -> String {
        match self {
            Event::Start(start) => {
                let show = |limit: Option<u64>| limit.map_or("off".to_string(), format_size);
                let after = if start.restart_exec {
                    "re-executes in place after a recycle".to_string()
                } else {
                    format!("exit code {} after a recycle", start.exit_code)
                };
                let mut msg = format!(
                    "sampling every {} (rss limit {}, heap limit {}, heap probe {}); {after}",
                    format_duration(start.interval_ms),
                    show(start.rss_limit),
                    show(start.heap_limit),
                    if start.v8_native { "native" } else { "js" },
                );
                if !start.has_rss {
                    msg.push_str(
                        "; RSS is not available on this platform, RSS limits are inactive",
                    );
                }
                for warning in &start.warnings {
                    msg.push_str("; ");
                    msg.push_str(warning);
                }
                msg
            }
            Event::Sample(sample) => format!(
                "rss {}, heap {} of {}",
                format_size(sample.rss),
                format_size(sample.heap_used),
                format_size(sample.heap_limit)
            ),
            Event::Pressure {
                reason,
                value,
                limit,
            } => format!(
                "{} {} passed 80% of limit {}",
                reason.as_str(),
                describe(*reason, *value),
                describe(*reason, *limit)
            ),
            Event::Misconfigured {
                reason,
                value,
                limit,
            } => {
                let variable = match reason {
                    Reason::Heap => "MAX_HEAP",
                    _ => "MAX_RSS",
                };
                format!(
                    "{} {} is already over limit {} at start; not recycling on it (a restart would not help: raise SELF_RECYCLE_{variable} or the memory limit)",
                    reason.as_str(),
                    describe(*reason, *value),
                    describe(*reason, *limit)
                )
            }
            Event::Leak {
                slope_per_min,
                threshold_per_min,
                window_ms,
                points,
            } => format!(
                "post-GC heap grows {}/min over the last {} ({points} major GCs), above {}/min",
                format_size(*slope_per_min as u64),
                format_duration(*window_ms),
                format_size(*threshold_per_min as u64)
            ),
            Event::Recycle(recycle) => {
                let action = if recycle.exiting.is_some() {
                    "exiting"
                } else if recycle.dry_run {
                    "dry run, not draining"
                } else if recycle.prediction.is_some() {
                    "draining early"
                } else {
                    "draining"
                };
                format!("{}; {action}", recycle.why())
            }
            Event::Baseline(baseline) => {
                let share = |value: u64, limit: Option<u64>| match limit {
                    Some(limit) if limit > 0 => format!(
                        "{} ({:.0}% of limit {})",
                        format_size(value),
                        100.0 * value as f64 / limit as f64,
                        format_size(limit)
                    ),
                    _ => format_size(value),
                };
                let verdict = if baseline.passed() {
                    "ready".to_string()
                } else {
                    format!("not ready: {}", baseline.failures.join("; "))
                };
                format!(
                    "baseline after {} of warm-up: rss {}, heap {}; {verdict}",
                    format_duration(baseline.warmup_ms),
                    share(baseline.rss, baseline.rss_limit),
                    share(baseline.heap_used, baseline.heap_limit)
                )
            }
            Event::Stop {
                signal,
                joined,
                drain_timeout_ms,
            } => {
                if *joined {
                    format!("{signal} received during a recycle drain; the drain goes on, then the worker stops")
                } else {
                    format!(
                        "{signal} received; stopping: draining (up to {})",
                        format_duration(*drain_timeout_ms)
                    )
                }
            }
            Event::Drain(drain) => match &drain.phase {
                DrainPhase::Start {
                    hooks,
                    in_flight,
                    left_ms,
                } => format!(
                    "drain started: {hooks} hook(s), {in_flight} in-flight task(s), {left_ms} ms to finish"
                ),
                DrainPhase::End {
                    in_flight,
                    drained,
                    errors,
                } => {
                    let how = if *drained {
                        format!("drain finished in {} ms", drain.duration_ms)
                    } else {
                        format!(
                            "drain deadline passed after {} ms with {in_flight} task(s) in flight",
                            drain.duration_ms
                        )
                    };
                    if errors.is_empty() {
                        how
                    } else {
                        format!("{how}; {} hook(s) failed: {}", errors.len(), errors.join("; "))
                    }
                }
            },
            Event::Queued(queued) => {
                let what = if queued.reason.is_bytes() {
                    format!(
                        "{} recycle due ({} of limit {})",
                        queued.reason.as_str(),
                        format_size(queued.value),
                        format_size(queued.limit)
                    )
                } else {
                    format!("{} recycle due", queued.reason.as_str())
                };
                format!(
                    "{what}; waiting for the {}: {} (at most {}, sooner if a hard limit comes near)",
                    queued.waiting_for,
                    queued.why,
                    format_duration(queued.max_wait_ms)
                )
            }
            Event::Limits {
                previous,
                current,
                rss_limit,
                ..
            } => {
                let show = |v: &Option<u64>| v.map_or("none".to_string(), format_size);
                format!(
                    "the memory cgroup's limit changed from {} to {}; rss limit now {}",
                    show(previous),
                    show(current),
                    show(rss_limit)
                )
            }
            Event::Exit(exit) => exit.msg(),
            Event::Storm(storm) => storm.msg(),
            Event::StatusFile(warning) => warning.msg(),
            Event::Warning { fleet, reason, .. } => format!("fleet {fleet}: {reason}"),
            Event::Reinit {
                key,
                attempts,
                from_site,
                cached,
                call_site,
                ..
            } => {
                let times = if *from_site > 1 {
                    format!("{from_site} times ")
                } else {
                    String::new()
                };
                let outcome = if *cached {
                    "the existing value was returned"
                } else {
                    "a new value was built each time (trackInit does not cache: guard it with once())"
                };
                format!(
                    "'{key}' is already initialized but was asked to initialize again {times}from {call_site} (attempt {attempts} in all); {outcome}"
                )
            }
        }
    }
}

fn describe(reason: Reason, value: u64) -> String {
    match reason {
        Reason::Jobs => format!("{value} jobs"),
        Reason::Age | Reason::Stall => format_duration(value),
        _ => format_size(value),
    }
}
