//! The container budget (`CONTAINER_MAX`): each tick, the memory cgroup's working set
//! against its threshold; the largest self-recycle worker in the cgroup is the one that
//! recycles (probe/container.rs reads, policy decides). The cgroup's files are read at
//! most every `READ_EVERY` (ticks come every 25 ms near a limit); the ticks between use
//! the last reading.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Monitor;
use crate::config::{self, LimitSetting, Machine, CEILING_SHARE, DEFAULT_RSS_SHARE};
use crate::event::Event;
use crate::policy::{Sample, Verdict};
use crate::probe::cgroup::{LimitSource, MemoryLimit};
use parking_lot::Mutex;

use super::throttle::Throttled;
use crate::probe::container::{is_largest, self_recycle_workers, Container, Figures};

/// How often the cgroup's five files are read at most.
pub(super) const READ_EVERY: Duration = Duration::from_millis(250);

/// What a reading decided: the threshold and ceiling in force, for stats.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    pub figures: Figures,
    pub threshold: Option<u64>,
    pub ceiling: Option<u64>,
}

/// The container budget's state: this process's memory cgroup and its last reading.
pub(super) struct Budget {
    /// `None`: no memory cgroup to read.
    pub cgroup: Option<Container>,
    /// The last reading, taken at most every `READ_EVERY`.
    pub reading: Mutex<Throttled<Figures>>,
    pub view: Mutex<Option<ContainerView>>,
    /// The cgroup limit the limits were last resolved against (it follows a resize).
    pub limit_now: Mutex<Option<u64>>,
    /// The cgroup's own limit at the last reading (`None`: not read yet).
    pub own_limit_seen: Mutex<Option<Option<u64>>>,
}

impl Budget {
    /// `limit`: the cgroup limit the limits were resolved against at start.
    pub(super) fn new(limit: Option<u64>) -> Budget {
        Budget {
            cgroup: Container::detect(),
            reading: Mutex::new(Throttled::new(READ_EVERY)),
            view: Mutex::new(None),
            limit_now: Mutex::new(limit),
            own_limit_seen: Mutex::new(None),
        }
    }
}

impl Monitor {
    /// Reads the cgroup and asks the policy; `None` without a cgroup, a limit, or (by
    /// default) siblings.
    pub(super) fn observe_container(&self, sample: &Sample) -> Option<Verdict> {
        let container = self.container.cgroup.as_ref()?;
        let reading = self
            .container
            .reading
            .lock()
            .get(Instant::now(), || container.read());
        let figures = reading.value?;
        if reading.fresh {
            self.follow_resize(figures.limit);
        }
        if self.config.container_max == LimitSetting::Off {
            *self.container.view.lock() = Some(ContainerView {
                figures,
                threshold: None,
                ceiling: None,
            });
            return None;
        }
        // memory.high, when set and lower, is where throttling starts: the budget's base.
        let reference = match (figures.limit, figures.high) {
            (Some(limit), Some(high)) => Some(limit.min(high)),
            (limit, high) => limit.or(high),
        };
        let threshold = reference.and_then(|reference| match self.config.container_max {
            LimitSetting::Off => None,
            LimitSetting::Default if figures.procs.len() < 2 => None,
            LimitSetting::Default => Some((reference as f64 * DEFAULT_RSS_SHARE) as u64),
            LimitSetting::Set(limit) => limit.resolve(Some(reference)),
        });
        let ceiling = reference.map(|r| (r as f64 * CEILING_SHARE) as u64);
        let working_set = figures.working_set();
        let verdict = match (threshold, ceiling) {
            (Some(threshold), Some(ceiling)) => {
                let largest = working_set >= threshold.min(ceiling)
                    && is_largest(
                        (std::process::id(), sample.rss),
                        &self_recycle_workers(&figures.procs),
                    );
                self.sampling.lock().policy.observe_container(
                    working_set,
                    threshold,
                    ceiling,
                    largest,
                    sample.uptime_ms,
                    reading.fresh,
                )
            }
            _ => None,
        };
        *self.container.view.lock() = Some(ContainerView {
            figures,
            threshold,
            ceiling,
        });
        verdict
    }

    /// An in-place resize (Kubernetes changes `memory.max` of a running pod): the limits
    /// that refer to the cgroup limit are resolved again, and a `limits` event says so.
    fn follow_resize(&self, own_limit: Option<u64>) {
        // The cgroup's own limit is read each tick; the binding one (the smallest up the
        // hierarchy) only when the own one moved.
        {
            let mut seen = self.container.own_limit_seen.lock();
            let unchanged = seen.is_none_or(|before| before == own_limit);
            *seen = Some(own_limit);
            if unchanged {
                return;
            }
        }
        let limit = crate::probe::cgroup::cgroup_limit().map(|m| m.bytes);
        let previous = {
            let mut now = self.container.limit_now.lock();
            if *now == limit || limit.is_none() {
                return;
            }
            std::mem::replace(&mut *now, limit)
        };
        let source = self
            .machine
            .memory_limit
            .map_or(LimitSource::CgroupV2, |m| m.source);
        let source = if source == LimitSource::Physical {
            LimitSource::CgroupV2
        } else {
            source
        };
        let machine = Machine {
            memory_limit: limit.map(|bytes| MemoryLimit { bytes, source }),
            ..self.machine
        };
        let limits = config::resolve(&self.config, &machine, self.jitter_unit);
        let (rss_limit, ceiling) = (limits.rss, limits.ceiling);
        self.sampling.lock().policy.set_limits(limits);
        self.emit(&Event::Limits {
            previous,
            current: limit,
            rss_limit,
            ceiling,
        });
    }

    /// The last container reading, for `stats()` and the status file.
    pub(super) fn container_json(&self) -> Value {
        let view = self.container.view.lock();
        let Some(view) = view.as_ref() else {
            return Value::Null;
        };
        let events: serde_json::Map<String, Value> = view
            .figures
            .events
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "workingSet": view.figures.working_set(),
            "usage": view.figures.usage,
            "inactiveFile": view.figures.inactive_file,
            "limit": view.figures.limit,
            "high": view.figures.high,
            "threshold": view.threshold,
            "ceiling": view.ceiling,
            "processes": view.figures.procs.len(),
            "events": events,
        })
    }
}
