//! Pure: the machine's figures (memory limit, V8's heap limits) and the limits derived
//! from them and the settings.

use super::{Config, LimitSetting, RssMetric};
use crate::policy::{apply_jitter, Limits};
use crate::probe::cgroup::{LimitSource, MemoryLimit};
use crate::units::format_size;

/// What the machine and the runtime say, for the defaults that depend on them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine {
    /// The cgroup limit, or physical memory when there is none.
    pub memory_limit: Option<MemoryLimit>,
    /// V8's `heap_size_limit` (old space plus the young generation).
    pub heap_size_limit: Option<u64>,
    /// What the old space may grow to: the used heap dies near this, not near
    /// `heap_size_limit` (with `--max-old-space-size=160` that is 208 MiB).
    pub old_space_limit: Option<u64>,
}

impl Machine {
    /// The machine from what was detected and how V8 was started: the old space is
    /// `--max-old-space-size` when given and within the heap limit, else the heap limit
    /// less the young generation (three semi-spaces of `semi_space_mib`).
    pub fn sized(
        memory_limit: Option<MemoryLimit>,
        heap_size_limit: Option<u64>,
        semi_space_mib: f64,
        old_space_mib: Option<f64>,
    ) -> Machine {
        let young = (semi_space_mib.max(0.0) as u64 * 3) << 20;
        Machine {
            memory_limit,
            heap_size_limit,
            old_space_limit: heap_size_limit.and_then(|limit| {
                let given = old_space_mib
                    .filter(|mib| *mib > 0.0)
                    .map(|mib| (mib as u64) << 20)
                    .filter(|old| *old <= limit);
                Some(given.unwrap_or(limit.saturating_sub(young))).filter(|old| *old > 0)
            }),
        }
    }
}

/// The default RSS limit as a share of a cgroup limit.
pub const DEFAULT_RSS_SHARE: f64 = 0.90;
/// The default heap limit as a share of the old-space limit.
pub const DEFAULT_HEAP_SHARE: f64 = 0.85;
/// The hard ceiling as a share of a cgroup limit: past it the kernel's OOM killer is near,
/// so it recycles whatever else holds recycles back (see `Limits::ceiling`).
pub const CEILING_SHARE: f64 = 0.95;

/// Turns settings into limits in bytes, counts and milliseconds: percentages against the
/// machine, machine-dependent defaults, and the jitter (`unit` is a random number in
/// [0, 1) drawn once per process).
pub fn resolve(config: &Config, machine: &Machine, unit: f64) -> Limits {
    let cgroup = machine
        .memory_limit
        .filter(|m| m.source != LimitSource::Physical)
        .map(|m| m.bytes);
    let rss = match config.max_rss {
        LimitSetting::Off => None,
        LimitSetting::Default => cgroup.map(|bytes| scaled(bytes, DEFAULT_RSS_SHARE)),
        LimitSetting::Set(limit) => limit.resolve(machine.memory_limit.map(|m| m.bytes)),
    };
    let heap_reference = machine.old_space_limit.or(machine.heap_size_limit);
    let heap = match config.max_heap {
        LimitSetting::Off => None,
        LimitSetting::Default => heap_reference.map(|bytes| scaled(bytes, DEFAULT_HEAP_SHARE)),
        LimitSetting::Set(limit) => limit.resolve(heap_reference),
    };
    Limits {
        rss,
        rss_anon: config.rss_metric == RssMetric::Anon,
        ceiling: cgroup.map(|bytes| scaled(bytes, CEILING_SHARE)),
        heap,
        growth: config.max_growth,
        jobs: config
            .max_jobs
            .map(|n| apply_jitter(n, config.jitter, unit)),
        age_ms: config
            .max_age_ms
            .map(|ms| apply_jitter(ms, config.jitter, unit)),
        strikes: config.strikes,
        warmup_ms: config.warmup_ms,
        min_uptime_ms: config.min_uptime_ms,
        leak_slope_per_min: config.leak_slope_bytes_per_min,
        leak_window_ms: config.leak_window_ms,
        stall_ms: config.stall_timeout_ms,
        interval_ms: config.interval_ms,
        fast_interval_ms: config.fast_interval_ms,
        predict: config.predict,
    }
}

/// Limits that can never act, as `start` warnings: a heap limit above what the old space
/// can hold, an RSS limit above the cgroup limit.
pub fn unreachable_limits(limits: &Limits, machine: &Machine) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(heap), Some(old_space)) = (limits.heap, machine.old_space_limit) {
        if heap >= old_space {
            warnings.push(format!(
                "MAX_HEAP {} can never be reached: V8's old space holds at most {} (--max-old-space-size); the near-heap-limit rescue acts first, without staggering. Set MAX_HEAP below it (the default is 85% of it)",
                format_size(heap),
                format_size(old_space)
            ));
        }
    }
    if let (Some(rss), Some(ceiling)) = (limits.rss, limits.ceiling) {
        if rss >= ceiling {
            warnings.push(format!(
                "MAX_RSS {} is at or above 95% of the cgroup memory limit: the hard ceiling {} recycles first",
                format_size(rss),
                format_size(ceiling)
            ));
        }
    }
    warnings
}

fn scaled(bytes: u64, share: f64) -> u64 {
    (bytes as f64 * share) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn cgroup(bytes: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit {
            bytes,
            source: LimitSource::CgroupV2,
        })
    }

    #[test]
    fn the_old_space_is_the_heap_limit_less_three_semi_spaces() {
        let machine = Machine::sized(cgroup(MIB), Some(208 * MIB), 16.0, None);
        assert_eq!(machine.old_space_limit, Some(160 * MIB));
        assert_eq!(machine.heap_size_limit, Some(208 * MIB));
        assert_eq!(machine.memory_limit, cgroup(MIB));
    }

    #[test]
    fn a_given_old_space_size_wins_while_it_fits_the_heap_limit() {
        let given = Machine::sized(None, Some(208 * MIB), 16.0, Some(150.0));
        assert_eq!(given.old_space_limit, Some(150 * MIB));
        let too_large = Machine::sized(None, Some(208 * MIB), 16.0, Some(300.0));
        assert_eq!(too_large.old_space_limit, Some(160 * MIB));
        for ignored in [0.0, -5.0, f64::NAN] {
            let machine = Machine::sized(None, Some(208 * MIB), 16.0, Some(ignored));
            assert_eq!(machine.old_space_limit, Some(160 * MIB), "{ignored}");
        }
    }

    #[test]
    fn no_heap_limit_or_nothing_left_gives_no_old_space() {
        assert_eq!(
            Machine::sized(None, None, 16.0, Some(100.0)).old_space_limit,
            None
        );
        assert_eq!(
            Machine::sized(None, Some(40 * MIB), 16.0, None).old_space_limit,
            None,
            "three 16 MiB semi-spaces leave nothing of 40 MiB"
        );
        let odd = Machine::sized(None, Some(100 * MIB), f64::NAN, None);
        assert_eq!(
            odd.old_space_limit,
            Some(100 * MIB),
            "a NaN semi-space is none"
        );
        let negative = Machine::sized(None, Some(100 * MIB), -1.0, None);
        assert_eq!(negative.old_space_limit, Some(100 * MIB));
    }

    #[test]
    fn defaults_follow_the_old_space_and_a_cgroup_but_not_physical_memory() {
        let machine = Machine::sized(cgroup(1000 * MIB), Some(208 * MIB), 16.0, None);
        let limits = resolve(&Config::default(), &machine, 0.0);
        assert_eq!(limits.rss, Some(900 * MIB));
        assert_eq!(limits.ceiling, Some(950 * MIB));
        assert_eq!(limits.heap, Some(136 * MIB));
        let physical = Machine::sized(
            Some(MemoryLimit {
                bytes: 1000 * MIB,
                source: LimitSource::Physical,
            }),
            None,
            16.0,
            None,
        );
        let limits = resolve(&Config::default(), &physical, 0.0);
        assert_eq!(
            (limits.rss, limits.ceiling, limits.heap),
            (None, None, None)
        );
    }
}
