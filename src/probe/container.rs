//! The memory cgroup as one budget (`CONTAINER_MAX`): what the kernel and the kubelet act
//! on is the cgroup's working set, usage minus inactive file cache (cgroup v2
//! `memory.current` - `memory.stat` `inactive_file`; v1 `memory.usage_in_bytes` -
//! `total_inactive_file`), so page cache from logs never counts. Several workers in one
//! cgroup each see only themselves; here each also sees its siblings (`cgroup.procs`) and
//! their resident size (`/proc/<pid>/statm`), so the largest self-recycle worker (a process
//! with self-recycle's addon mapped) recycles when the budget runs out, one at a time, with
//! no master. Parsers are pure; `Container` does the reading.

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use super::cgroup::{own_memory_cgroups, parse_v1_limit, parse_v2_max};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The process's own memory cgroup directory.
#[derive(Debug, Clone)]
pub struct Container {
    dir: PathBuf,
    version: Version,
}

/// One reading of the cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub usage: u64,
    pub inactive_file: u64,
    /// The limit now (an in-place resize changes it): v2 `memory.max`, v1
    /// `memory.limit_in_bytes`; `None` when unlimited.
    pub limit: Option<u64>,
    /// cgroup v2 `memory.high` (throttling starts there), when set.
    pub high: Option<u64>,
    /// v2 `memory.events` (`high`, `max`, `oom`, `oom_kill`), v1 `oom_kill` only.
    pub events: Vec<(String, u64)>,
    pub procs: Vec<u32>,
}

impl Figures {
    /// What the OOM killer and the kubelet act on: usage without inactive file cache.
    pub fn working_set(&self) -> u64 {
        working_set(self.usage, self.inactive_file)
    }
}

pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// A `key value` line of `memory.stat` / `memory.events`.
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

pub fn parse_procs(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Whether `me` is the one to recycle among `workers` (pid, resident bytes): the largest,
/// ties to the lowest pid. `me` counts even when it vanished from the list.
pub fn is_largest(me: (u32, u64), workers: &[(u32, u64)]) -> bool {
    workers
        .iter()
        .filter(|(pid, _)| *pid != me.0)
        .all(|(pid, rss)| *rss < me.1 || (*rss == me.1 && me.0 < *pid))
}

/// A process maps self-recycle's addon (the maps file lists the `.node` it loaded).
pub fn maps_self_recycle(maps: &str) -> bool {
    maps.lines()
        .any(|line| line.contains("self-recycle") && line.trim_end().ends_with(".node"))
}

impl Container {
    /// This process's memory cgroup, when the memory controller is mounted.
    pub fn detect() -> Option<Container> {
        let (v1, v2) = own_memory_cgroups()?;
        if let Some((dir, _)) = v1.filter(|(dir, _)| dir.join("memory.usage_in_bytes").exists()) {
            return Some(Container {
                dir,
                version: Version::V1,
            });
        }
        let (dir, _) = v2?;
        dir.join("memory.current").exists().then_some(Container {
            dir,
            version: Version::V2,
        })
    }

    /// For tests: a cgroup directory laid out as v1 or v2 (fixture files).
    #[cfg(test)]
    fn at(dir: &Path, v2: bool) -> Container {
        Container {
            dir: dir.to_path_buf(),
            version: if v2 { Version::V2 } else { Version::V1 },
        }
    }

    fn read_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    pub fn read(&self) -> Option<Figures> {
        let stat = self.read_file("memory.stat").unwrap_or_default();
        let procs = parse_procs(&self.read_file("cgroup.procs").unwrap_or_default());
        Some(match self.version {
            Version::V1 => Figures {
                usage: self
                    .read_file("memory.usage_in_bytes")?
                    .trim()
                    .parse()
                    .ok()?,
                inactive_file: stat_value(&stat, "total_inactive_file").unwrap_or(0),
                limit: self
                    .read_file("memory.limit_in_bytes")
                    .and_then(|t| parse_v1_limit(&t)),
                high: None,
                events: self
                    .read_file("memory.oom_control")
                    .and_then(|t| stat_value(&t, "oom_kill"))
                    .map(|n| vec![("oom_kill".to_string(), n)])
                    .unwrap_or_default(),
                procs,
            },
            Version::V2 => Figures {
                usage: self.read_file("memory.current")?.trim().parse().ok()?,
                inactive_file: stat_value(&stat, "inactive_file").unwrap_or(0),
                limit: self.read_file("memory.max").and_then(|t| parse_v2_max(&t)),
                high: self.read_file("memory.high").and_then(|t| parse_v2_max(&t)),
                events: self
                    .read_file("memory.events")
                    .map(|t| {
                        ["high", "max", "oom", "oom_kill"]
                            .iter()
                            .filter_map(|k| stat_value(&t, k).map(|v| (k.to_string(), v)))
                            .collect()
                    })
                    .unwrap_or_default(),
                procs,
            },
        })
    }
}

/// The self-recycle workers among `procs` with their resident bytes; a pid that vanished
/// or was reused by a process without the addon is left out.
pub fn self_recycle_workers(procs: &[u32]) -> Vec<(u32, u64)> {
    procs
        .iter()
        .filter_map(|pid| {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            if !maps_self_recycle(&maps) {
                return None;
            }
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            Some((*pid, pages.saturating_mul(page_size())))
        })
        .collect()
}

fn page_size() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).unwrap_or(4096)
    }
    #[cfg(not(unix))]
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_working_set_leaves_out_inactive_file_cache() {
        assert_eq!(working_set(700 * MIB, 300 * MIB), 400 * MIB);
        assert_eq!(working_set(10, 20), 0, "a stat read after usage fell");
    }

    #[test]
    fn stat_lines() {
        let v1 = "cache 100\nrss 5\ninactive_file 7\ntotal_inactive_file 4096\n";
        assert_eq!(stat_value(v1, "total_inactive_file"), Some(4096));
        assert_eq!(stat_value(v1, "inactive_file"), Some(7));
        assert_eq!(stat_value(v1, "missing"), None);
        let events = "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(stat_value(events, "oom_kill"), Some(1));
        assert_eq!(parse_procs("12\n 40\nx\n\n"), vec![12, 40]);
    }

    #[test]
    fn the_largest_recycles_ties_to_the_lowest_pid() {
        let others = [(20, 300), (30, 200)];
        assert!(is_largest((10, 400), &others));
        assert!(!is_largest((10, 250), &others));
        assert!(
            is_largest((10, 300), &others),
            "a tie goes to the lower pid"
        );
        assert!(!is_largest((25, 300), &others));
        // Itself in the list (with an older reading) does not count against it.
        assert!(is_largest((10, 400), &[(10, 500), (20, 300)]));
        // Alone, or its siblings vanished between two reads.
        assert!(is_largest((10, 1), &[]));
    }

    #[test]
    fn only_processes_with_the_addon_mapped_are_workers() {
        let ours = "7f00-7f10 r-xp 00000000 08:01 123 /app/node_modules/self-recycle-linux-x64-gnu/self-recycle.linux-x64-gnu.node\n";
        let other = "7f00-7f10 r-xp 00000000 08:01 123 /usr/lib/libc.so.6\n";
        assert!(maps_self_recycle(ours));
        assert!(!maps_self_recycle(other));
        assert!(!maps_self_recycle(""));
    }

    #[test]
    fn reads_v1_and_v2_layouts() {
        let base =
            std::env::temp_dir().join(format!("self-recycle-container-{}", std::process::id()));
        let v1 = base.join("v1");
        let v2 = base.join("v2");
        std::fs::create_dir_all(&v1).expect("v1");
        std::fs::create_dir_all(&v2).expect("v2");
        for (name, text) in [
            ("memory.usage_in_bytes", "734003200\n"),
            ("memory.limit_in_bytes", "734003200\n"),
            ("memory.stat", "cache 5\ntotal_inactive_file 104857600\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("cgroup.procs", "101\n102\n"),
        ] {
            std::fs::write(v1.join(name), text).expect("write");
        }
        // As a cgroup v2 host shows them (Kubernetes MemoryQoS sets memory.high).
        for (name, text) in [
            ("memory.current", "524288000\n"),
            ("memory.max", "max\n"),
            ("memory.high", "471859200\n"),
            (
                "memory.stat",
                "anon 400000000\nfile 90000000\ninactive_file 52428800\nactive_file 1000\n",
            ),
            ("memory.events", "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n"),
            ("cgroup.procs", "7\n"),
        ] {
            std::fs::write(v2.join(name), text).expect("write");
        }
        let one = Container::at(&v1, false).read().expect("v1");
        assert_eq!(one.working_set(), 734003200 - 104857600);
        assert_eq!(one.limit, Some(734003200));
        assert_eq!(one.events, vec![("oom_kill".to_string(), 2)]);
        assert_eq!(one.procs, vec![101, 102]);
        let two = Container::at(&v2, true).read().expect("v2");
        assert_eq!(two.working_set(), 524288000 - 52428800);
        assert_eq!(two.limit, None);
        assert_eq!(two.high, Some(471859200));
        assert_eq!(two.events.len(), 4);
        let _ = std::fs::remove_dir_all(&base);
    }
}
