//! The status file (`STATUS_FILE`): where it goes (`{pid}` and `{instance}` expanded),
//! writing it without ever stopping the sampler, and saying — once — when it cannot be
//! written or when another live process writes the same path.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::report;

/// `{pid}` -> this process id; `{instance}` -> the process manager's instance number
/// (`NODE_APP_INSTANCE`, set by PM2 cluster mode, else PM2's `pm_id`). Returns the path
/// and, when `{instance}` has no value, a warning (the pid stands in for it).
pub fn expand(template: &str, pid: u32, instance: Option<&str>) -> (String, Option<String>) {
    let mut warning = None;
    let mut path = template.replace("{pid}", &pid.to_string());
    if path.contains("{instance}") {
        let value = match instance.map(str::trim).filter(|v| !v.is_empty()) {
            Some(value) => value.to_string(),
            None => {
                warning = Some(format!(
                    "STATUS_FILE {template:?} has {{instance}} but neither NODE_APP_INSTANCE nor pm_id is set; using the pid ({pid}) instead"
                ));
                pid.to_string()
            }
        };
        path = path.replace("{instance}", &value);
    }
    (path, warning)
}

/// The instance number from the environment, for `expand`.
pub fn instance_from_env() -> Option<String> {
    ["NODE_APP_INSTANCE", "pm_id"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// A failed write: the sentence and, when the OS gave one, the errno's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: String,
    pub errno: Option<String>,
}

/// Something to say once about the status file (a `warning` event).
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Writing failed (after none failed, or after a success).
    Write(Failure),
    /// A live process with another pid wrote the file since our last write.
    Shared { other_pid: u32 },
}

/// The status file of one recycler: its path, and what was already said about it.
pub struct StatusFile {
    path: PathBuf,
    /// The failure in force and how many writes failed in a row.
    failing: Option<(Failure, u64)>,
    /// The other writers already reported.
    others: Vec<u32>,
}

impl StatusFile {
    pub fn new(path: PathBuf) -> StatusFile {
        StatusFile {
            path,
            failing: None,
            others: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `body`; returns what is new to report (nothing when it only repeats).
    pub fn write(&mut self, body: &[u8]) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(other) = self.other_writer() {
            if !self.others.contains(&other) {
                self.others.push(other);
                problems.push(Problem::Shared { other_pid: other });
            }
        }
        match report::write_bytes_atomically(&self.path, body) {
            Ok(()) => self.failing = None,
            Err(error) => {
                let failure = Failure {
                    errno: errno_in(&error),
                    error,
                };
                match &mut self.failing {
                    Some((_, count)) => *count += 1,
                    None => {
                        problems.push(Problem::Write(failure.clone()));
                        self.failing = Some((failure, 1));
                    }
                }
            }
        }
        problems
    }

    /// For `stats().failures`: the failure in force, if any.
    pub fn failure_json(&self) -> Option<Value> {
        self.failing.as_ref().map(|(failure, count)| {
            json!({
                "path": self.path.display().to_string(),
                "error": failure.error,
                "errno": failure.errno,
                "count": count,
            })
        })
    }

    /// The pid in the file when it is not ours and that process runs: someone else writes
    /// the same path. A writer on its way out (draining, exiting: the predecessor of a
    /// reload or a recycle) hands the file over and is not one. Read without following a
    /// symlink or blocking (a FIFO planted there).
    fn other_writer(&self) -> Option<u32> {
        let text = read_regular(&self.path, 1 << 20)?;
        let status = serde_json::from_str::<Value>(&text).ok()?;
        if status.get("state").and_then(Value::as_str) != Some("running") {
            return None;
        }
        let pid = u32::try_from(status.get("pid")?.as_u64()?).ok()?;
        (pid > 1 && pid != std::process::id() && alive(pid)).then_some(pid)
    }
}

/// The file's text when it is a regular file of at most `limit` bytes.
#[cfg(unix)]
fn read_regular(path: &Path, limit: u64) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: File = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(not(unix))]
fn read_regular(_path: &Path, _limit: u64) -> Option<String> {
    None
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    false
}

/// The errno name in an error sentence from `report` (Rust prints `(os error N)`).
fn errno_in(error: &str) -> Option<String> {
    let start = error.rfind("(os error ")? + "(os error ".len();
    let number: i32 = error[start..].trim_end_matches(')').parse().ok()?;
    Some(errno_name(number))
}

#[cfg(unix)]
fn errno_name(number: i32) -> String {
    let name = match number {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ELOOP => "ELOOP",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EBUSY => "EBUSY",
        libc::EXDEV => "EXDEV",
        _ => return format!("errno {number}"),
    };
    name.to_string()
}

#[cfg(not(unix))]
fn errno_name(number: i32) -> String {
    format!("errno {number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand() {
        assert_eq!(expand("/run/w/{pid}.json", 42, None).0, "/run/w/42.json");
        assert_eq!(
            expand("/run/w/{instance}.json", 42, Some("3")),
            ("/run/w/3.json".to_string(), None)
        );
        let (path, warning) = expand("/run/w/{instance}.json", 42, None);
        assert_eq!(path, "/run/w/42.json");
        assert!(warning.is_some_and(|w| w.contains("NODE_APP_INSTANCE")));
        assert_eq!(expand("/run/w/s.json", 42, None).0, "/run/w/s.json");
    }

    #[test]
    fn errno_names_come_from_the_os_error() {
        assert_eq!(
            errno_in("cannot write /x: Permission denied (os error 13)").as_deref(),
            Some("EACCES")
        );
        assert_eq!(errno_in("/x is a symlink; it is not followed"), None);
    }

    #[cfg(unix)]
    #[test]
    fn another_running_writer_is_said_once_a_leaving_one_not_at_all() {
        let dir = std::env::temp_dir().join(format!("self-recycle-sf2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("status.json");
        let other = std::os::unix::process::parent_id();
        let plant = |state: &str| {
            std::fs::write(&path, format!("{{\"pid\":{other},\"state\":\"{state}\"}}"))
                .expect("plant")
        };
        let mut file = StatusFile::new(path.clone());
        plant("draining");
        assert!(file.write(b"{}").is_empty(), "a predecessor on its way out");
        plant("running");
        assert_eq!(
            file.write(b"{}"),
            vec![Problem::Shared { other_pid: other }]
        );
        plant("running");
        assert!(file.write(b"{}").is_empty(), "said once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_failure_is_said_once_and_again_after_a_success() {
        let dir = std::env::temp_dir().join(format!("self-recycle-sf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("status.json");
        std::fs::create_dir(&path).expect("a directory where the file goes");
        let mut file = StatusFile::new(path.clone());
        let first = file.write(b"{}\n");
        assert!(
            matches!(&first[..], [Problem::Write(f)] if f.errno.as_deref() == Some("EISDIR") || f.errno.as_deref() == Some("ENOTEMPTY")),
            "{first:?}"
        );
        assert!(file.write(b"{}\n").is_empty(), "said once");
        assert_eq!(
            file.failure_json().and_then(|f| f["count"].as_u64()),
            Some(2)
        );
        std::fs::remove_dir(&path).expect("rmdir");
        assert!(file.write(b"{}\n").is_empty());
        assert!(file.failure_json().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
