//! The memory limit that percentages refer to: cgroup v2 `memory.max`, cgroup v1
//! `memory.limit_in_bytes` (found through `/proc/self/cgroup` + `/proc/self/mountinfo`),
//! else physical RAM. The parsers are pure; `detect()` does the reading.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    CgroupV2,
    CgroupV1,
    Physical,
}

impl LimitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitSource::CgroupV2 => "cgroup2",
            LimitSource::CgroupV1 => "cgroup1",
            LimitSource::Physical => "physical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

/// cgroup v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// The process's cgroup paths: (v2 unified path, v1 memory controller path).
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut unified = None;
    let mut memory = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            memory = Some(path.to_string());
        }
    }
    (unified, memory)
}

/// A cgroup filesystem mount: where it is mounted and which cgroup is its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: String,
    pub root: String,
}

/// Finds the cgroup2 mount and the v1 mount carrying the memory controller.
pub fn parse_mountinfo(text: &str) -> (Option<CgroupMount>, Option<CgroupMount>) {
    let mut unified = None;
    let mut memory = None;
    for line in text.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        if fields.len() < 5 || tail.len() < 3 {
            continue;
        }
        let mount = CgroupMount {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
        };
        match tail[0] {
            "cgroup2" if unified.is_none() => unified = Some(mount),
            "cgroup" if memory.is_none() && tail[2].split(',').any(|o| o == "memory") => {
                memory = Some(mount)
            }
            _ => {}
        }
    }
    (unified, memory)
}

/// mountinfo escapes spaces and the like as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(value as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of `cgroup_path` under `mount`, or the mount point itself when the path
/// lies outside the mount's root (a cgroup namespace shows its own root as `/`).
pub fn cgroup_dir(mount: &CgroupMount, cgroup_path: &str) -> PathBuf {
    let relative = if mount.root == "/" {
        Some(cgroup_path)
    } else {
        cgroup_path.strip_prefix(mount.root.as_str())
    };
    let mut dir = PathBuf::from(&mount.mount_point);
    if let Some(relative) = relative {
        let relative = relative.trim_start_matches('/');
        if !relative.is_empty() {
            dir.push(relative);
        }
    }
    dir
}

pub fn parse_v2_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        number => number.parse().ok().filter(|n| *n > 0),
    }
}

pub fn parse_v1_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && *n < V1_UNLIMITED)
}

/// The smallest limit from `dir` up to `mount_point`: a parent's limit binds its children.
fn smallest_limit_upwards(
    dir: &Path,
    mount_point: &Path,
    file: &str,
    parse: fn(&str) -> Option<u64>,
) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    let mut current = Some(dir);
    while let Some(path) = current {
        if !path.starts_with(mount_point) {
            break;
        }
        if let Ok(text) = std::fs::read_to_string(path.join(file)) {
            if let Some(limit) = parse(&text) {
                smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
            }
        }
        current = path.parent();
    }
    smallest
}

#[cfg(not(unix))]
fn physical_memory() -> Option<u64> {
    None
}

#[cfg(unix)]
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok()?;
    let page_size = u64::try_from(page_size).ok()?;
    Some(pages.saturating_mul(page_size)).filter(|b| *b > 0)
}

/// This process's memory cgroup directories with the mount point each lies under:
/// (cgroup v1 memory controller, cgroup v2), from `/proc/self/cgroup` and mountinfo.
pub type OwnCgroups = (Option<(PathBuf, PathBuf)>, Option<(PathBuf, PathBuf)>);

pub fn own_memory_cgroups() -> Option<OwnCgroups> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (v2_path, v1_path) = parse_proc_cgroup(&cgroups);
    let (v2_mount, v1_mount) = parse_mountinfo(&mountinfo);
    let locate = |path: Option<String>, mount: Option<CgroupMount>| {
        let (path, mount) = (path?, mount?);
        Some((cgroup_dir(&mount, &path), PathBuf::from(&mount.mount_point)))
    };
    Some((locate(v1_path, v1_mount), locate(v2_path, v2_mount)))
}

/// The cgroup memory limit, if any is set.
pub fn cgroup_limit() -> Option<MemoryLimit> {
    let (v1, v2) = own_memory_cgroups()?;
    if let Some((dir, top)) = v1 {
        if let Some(bytes) =
            smallest_limit_upwards(&dir, &top, "memory.limit_in_bytes", parse_v1_limit)
        {
            return Some(MemoryLimit {
                bytes,
                source: LimitSource::CgroupV1,
            });
        }
    }
    if let Some((dir, top)) = v2 {
        if let Some(bytes) = smallest_limit_upwards(&dir, &top, "memory.max", parse_v2_max) {
            return Some(MemoryLimit {
                bytes,
                source: LimitSource::CgroupV2,
            });
        }
    }
    None
}

/// Memory still available before the tightest limit: the cgroup's (limit minus usage) and
/// the host's `MemAvailable`, whichever is smaller.
pub fn available_memory() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_available(&text));
    let cgroup = cgroup_limit().and_then(|limit| {
        let usage = cgroup_usage(limit.source)?;
        Some(limit.bytes.saturating_sub(usage))
    });
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

fn cgroup_usage(source: LimitSource) -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (v2_path, v1_path) = parse_proc_cgroup(&cgroups);
    let (v2_mount, v1_mount) = parse_mountinfo(&mountinfo);
    let (dir, file) = match source {
        LimitSource::CgroupV1 => (cgroup_dir(&v1_mount?, &v1_path?), "memory.usage_in_bytes"),
        LimitSource::CgroupV2 => (cgroup_dir(&v2_mount?, &v2_path?), "memory.current"),
        LimitSource::Physical => return None,
    };
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `MemAvailable:  123456 kB` -> bytes.
pub fn parse_meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The limit percentages refer to: the cgroup's, else physical RAM.
pub fn detect() -> Option<MemoryLimit> {
    cgroup_limit().or_else(|| {
        physical_memory().map(|bytes| MemoryLimit {
            bytes,
            source: LimitSource::Physical,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_cgroup_v1_and_v2() {
        let v1 = "12:memory:/user.slice/worker\n11:cpu,cpuacct:/user.slice\n0::/user.slice\n";
        assert_eq!(
            parse_proc_cgroup(v1),
            (
                Some("/user.slice".to_string()),
                Some("/user.slice/worker".to_string())
            )
        );
        let v2 = "0::/system.slice/worker.service\n";
        assert_eq!(
            parse_proc_cgroup(v2),
            (Some("/system.slice/worker.service".to_string()), None)
        );
        assert_eq!(parse_proc_cgroup(""), (None, None));
    }

    #[test]
    fn mountinfo_finds_both_kinds() {
        let text = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw
35 30 0:31 /docker/abc /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu\\040set rw shared:10 - cgroup cgroup rw,cpuset
";
        let (v2, v1) = parse_mountinfo(text);
        assert_eq!(v2.expect("v2").mount_point, "/sys/fs/cgroup/unified");
        let v1 = v1.expect("v1 memory");
        assert_eq!(v1.mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(v1.root, "/docker/abc");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn cgroup_dirs() {
        let mount = CgroupMount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(
            cgroup_dir(&mount, "/a/b"),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        let nested = CgroupMount {
            mount_point: "/sys/fs/cgroup/memory".into(),
            root: "/docker/abc".into(),
        };
        assert_eq!(
            cgroup_dir(&nested, "/docker/abc/x"),
            PathBuf::from("/sys/fs/cgroup/memory/x")
        );
        assert_eq!(
            cgroup_dir(&nested, "/elsewhere"),
            PathBuf::from("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn limit_files() {
        assert_eq!(parse_v2_max("max\n"), None);
        assert_eq!(parse_v2_max("536870912\n"), Some(536_870_912));
        assert_eq!(parse_v1_limit("9223372036854771712\n"), None);
        assert_eq!(parse_v1_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_v1_limit("junk"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(parse_meminfo_available(text), Some(1_024_000));
        assert_eq!(parse_meminfo_available("junk"), None);
        assert!(available_memory().is_some_and(|b| b > 0));
    }

    #[test]
    fn detect_on_this_machine() {
        let limit = detect().expect("some limit or physical RAM");
        assert!(limit.bytes > 64 << 20);
    }
}
