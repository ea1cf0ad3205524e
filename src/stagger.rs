//! Staggered recycling for sibling workers that share no master: a flock()ed lock file in
//! `STAGGER_DIR` admits one recycle at a time, and a timestamp file keeps admissions at
//! least `STAGGER_GAP` apart. The kernel drops a flock when its holder dies, so a killed
//! sibling can never block the fleet. Files are 0600 and never opened through a symlink.
//!
//! Nothing found in the directory is trusted to hold a recycle back for good: a directory
//! that is not private, a lock owned by another user or that cannot be opened makes the
//! queue unavailable (the recycle goes ahead at once, saying why); a timestamp from the
//! future is ignored; and the monitor bounds the wait for a lock held by anyone
//! (`STAGGER_MAX_WAIT`).
//!
//! Siblings that serve a port (`drainHttp`) add one rule: the next may drain only once the
//! last one to recycle has a replacement listening. Without it the second of two cluster
//! workers closes its server while the first's replacement is still booting, the primary
//! has nobody to hand connections to and clients see ECONNREFUSED. A replacement says it
//! listens by writing `listening` (a timestamp) in the same directory.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::report::{private_dir, write_bytes_atomically};

const LOCK_FILE: &str = "recycle.lock";
const LAST_FILE: &str = "last-recycle";
const LISTENING_FILE: &str = "listening";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// This worker may recycle now; it holds the lock until it exits.
    Granted,
    /// Not yet: another sibling is recycling, or the last one was too recent.
    Wait(String),
    /// The queue cannot be used (see the module docs): go ahead without it.
    Unavailable(String),
}

/// Clock skew tolerated on a sibling's timestamp; later ones are planted or broken.
const FUTURE_SLACK_MS: u64 = 5_000;

pub struct Stagger {
    dir: PathBuf,
    gap: Duration,
    /// The locked file, kept open (and so locked) until the process exits.
    held: Mutex<Option<File>>,
    /// This worker serves a port: wait for the last recycled sibling's replacement.
    serves: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Stagger {
    pub fn new(dir: &str, gap_ms: u64) -> Stagger {
        Stagger {
            dir: PathBuf::from(dir),
            gap: Duration::from_millis(gap_ms),
            held: Mutex::new(None),
            serves: AtomicBool::new(false),
        }
    }

    /// This worker serves a port: from now on it drains only once the last sibling to
    /// recycle has a replacement listening.
    pub fn serve(&self) {
        self.serves.store(true, Ordering::Relaxed);
    }

    /// This worker listens: a sibling waiting for a replacement may go.
    pub fn mark_listening(&self) -> Result<(), String> {
        private_dir(&self.dir)?;
        write_bytes_atomically(
            &self.dir.join(LISTENING_FILE),
            // The pid lets the siblings tell a replacement from themselves (drainHttp's rebalance).
            format!("{} {}", now_ms(), std::process::id()).as_bytes(),
        )
    }

    pub fn try_admit(&self) -> Admission {
        let mut held = self.held.lock();
        if held.is_some() {
            return Admission::Granted;
        }
        match self.admit() {
            Ok(file) => {
                *held = Some(file);
                Admission::Granted
            }
            Err(admission) => admission,
        }
    }

    /// A recycle that did not pass the queue (near-heap-limit, the ceiling, a bypass, a
    /// timeout, a manual recycle) still counts toward the gap: siblings wait `STAGGER_GAP`
    /// from it (and, for servers, for its replacement to listen). It takes the lock when
    /// free, so no sibling starts a drain beside it.
    #[cfg(unix)]
    pub fn count_recycle(&self) {
        use std::os::fd::AsRawFd;
        let mut held = self.held.lock();
        if held.is_some() {
            return; // admitted: the timestamp is written
        }
        let Ok(lock) = self.open_lock() else {
            return;
        };
        // SAFETY: a valid open descriptor; flock has no other preconditions.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            *held = Some(lock);
        }
        // A server's bypass is stamped by drainHttp when it stops listening (a sibling's
        // replacement may still come up before that, and must count).
        if !self.serves.load(Ordering::Relaxed) {
            let _ =
                write_bytes_atomically(&self.dir.join(LAST_FILE), now_ms().to_string().as_bytes());
        }
    }

    #[cfg(not(unix))]
    pub fn count_recycle(&self) {}

    /// The lock file, opened without following a symlink and owned by this user.
    #[cfg(unix)]
    fn open_lock(&self) -> Result<File, Admission> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        private_dir(&self.dir).map_err(Admission::Unavailable)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.dir.join(LOCK_FILE))
            .map_err(|e| Admission::Unavailable(format!("cannot open the stagger lock: {e}")))?;
        let owner = lock.metadata().map(|m| m.uid()).unwrap_or(u32::MAX);
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if owner != me {
            return Err(Admission::Unavailable(format!(
                "the stagger lock belongs to uid {owner}, not {me}: siblings must run as one user"
            )));
        }
        Ok(lock)
    }

    #[cfg(unix)]
    fn admit(&self) -> Result<File, Admission> {
        use std::os::fd::AsRawFd;
        let lock = self.open_lock()?;
        // SAFETY: a valid open descriptor; flock has no other preconditions.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Admission::Wait("a sibling is recycling".to_string()));
        }
        let now = now_ms();
        // A timestamp from the future is not a sibling's: ignore it (it is overwritten).
        let last = self
            .timestamp(LAST_FILE)
            .filter(|last| *last <= now + FUTURE_SLACK_MS);
        if let Some(last) = last.filter(|l| now.saturating_sub(*l) < self.gap.as_millis() as u64) {
            // Dropping `lock` closes it and releases the flock.
            return Err(Admission::Wait(format!(
                "a sibling recycled {} ms ago, the gap is {} ms",
                now.saturating_sub(last),
                self.gap.as_millis()
            )));
        }
        if let Some(last) = last.filter(|_| self.serves.load(Ordering::Relaxed)) {
            let listening = self
                .timestamp(LISTENING_FILE)
                .filter(|at| *at <= now + FUTURE_SLACK_MS);
            if listening.is_none_or(|at| at < last) {
                return Err(Admission::Wait(format!(
                    "the sibling that recycled {} ms ago has no replacement listening yet",
                    now.saturating_sub(last)
                )));
            }
        }
        write_bytes_atomically(&self.dir.join(LAST_FILE), now.to_string().as_bytes())
            .map_err(Admission::Unavailable)?;
        Ok(lock)
    }

    #[cfg(not(unix))]
    fn admit(&self) -> Result<File, Admission> {
        Err(Admission::Unavailable(
            "staggering needs flock (unix only)".to_string(),
        ))
    }

    /// A sibling's timestamp file, in ms since the epoch; `None` if absent or garbled.
    fn timestamp(&self, name: &str) -> Option<u64> {
        read_stamp(&self.dir, name).map(|(at, _)| at)
    }
}

/// A stamp file, `<ms since the epoch> [<pid>]`; `None` if absent or garbled.
fn read_stamp(dir: &Path, name: &str) -> Option<(u64, Option<u32>)> {
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(name))
    };
    #[cfg(not(unix))]
    let file = File::open(dir.join(name));
    let mut text = String::new();
    file.ok()?.take(64).read_to_string(&mut text).ok()?;
    let mut fields = text.split_whitespace();
    let at = fields.next()?.parse().ok()?;
    Some((at, fields.next().and_then(|pid| pid.parse().ok())))
}

/// The process that wrote the `listening` mark in `dir` (drainHttp's rebalance tells a
/// sibling's replacement from itself by it); `None` without a readable mark.
pub fn listening_pid(dir: &Path) -> Option<u32> {
    read_stamp(dir, LISTENING_FILE).and_then(|(_, pid)| pid)
}

/// Whether another process marked `listening` in `dir` since the last recycle there: a
/// server that bypassed the queue may then stop listening (the port stays attended).
pub fn sibling_listens(dir: &Path, own_pid: u32) -> bool {
    let latest = now_ms() + FUTURE_SLACK_MS;
    let last = read_stamp(dir, LAST_FILE)
        .map(|(at, _)| at)
        .filter(|at| *at <= latest)
        .unwrap_or(0);
    matches!(read_stamp(dir, LISTENING_FILE),
        Some((at, pid)) if at >= last && at <= latest && pid != Some(own_pid))
}

/// Stamps `last-recycle` in `dir` now, as an admission does: a server that stopped
/// listening after a queue bypass counts toward the gap, and siblings wait for its
/// replacement to listen.
pub fn mark_recycled(dir: &Path) -> Result<(), String> {
    write_bytes_atomically(&dir.join(LAST_FILE), now_ms().to_string().as_bytes())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!(
            "self-recycle-stagger-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir.display().to_string()
    }

    #[test]
    fn one_at_a_time_then_the_gap() {
        let dir = scratch("serial");
        let first = Stagger::new(&dir, 60_000);
        let second = Stagger::new(&dir, 60_000);
        assert_eq!(first.try_admit(), Admission::Granted);
        assert_eq!(first.try_admit(), Admission::Granted, "still held");
        assert!(matches!(second.try_admit(), Admission::Wait(w) if w.contains("recycling")));
        drop(first); // the holder exits
        assert!(matches!(second.try_admit(), Admission::Wait(w) if w.contains("gap")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_recycle_that_skipped_the_queue_still_counts_toward_the_gap() {
        let dir = scratch("counted");
        let first = Stagger::new(&dir, 60_000);
        let second = Stagger::new(&dir, 60_000);
        // A near-heap-limit recycle of the first: it never asked the queue.
        first.count_recycle();
        assert!(matches!(second.try_admit(), Admission::Wait(w) if w.contains("recycling")));
        first.count_recycle(); // idempotent while it holds the lock
        drop(first);
        assert!(matches!(second.try_admit(), Admission::Wait(w) if w.contains("gap")));
        // Counted while a sibling holds the lock: the timestamp still moves.
        let dir2 = scratch("counted-held");
        let holder = Stagger::new(&dir2, 60_000);
        let bypasser = Stagger::new(&dir2, 60_000);
        let third = Stagger::new(&dir2, 60_000);
        assert_eq!(holder.try_admit(), Admission::Granted);
        std::fs::write(std::path::Path::new(&dir2).join(LAST_FILE), "1000").expect("old stamp");
        bypasser.count_recycle();
        drop(holder);
        assert!(matches!(third.try_admit(), Admission::Wait(w) if w.contains("gap")));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }

    #[test]
    fn no_gap_admits_the_next_once_the_holder_is_gone() {
        let dir = scratch("nogap");
        let first = Stagger::new(&dir, 0);
        assert_eq!(first.try_admit(), Admission::Granted);
        drop(first);
        assert_eq!(Stagger::new(&dir, 0).try_admit(), Admission::Granted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_server_waits_for_the_last_recycled_siblings_replacement_to_listen() {
        let dir = scratch("listening");
        let first = Stagger::new(&dir, 0);
        first.serve();
        first.mark_listening().expect("listening");
        let second = Stagger::new(&dir, 0);
        second.serve();
        second.mark_listening().expect("listening");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(first.try_admit(), Admission::Granted);
        drop(first); // the holder exits; its replacement boots
        assert!(
            matches!(second.try_admit(), Admission::Wait(w) if w.contains("no replacement listening"))
        );
        let worker = Stagger::new(&dir, 0);
        assert_eq!(
            worker.try_admit(),
            Admission::Granted,
            "a worker that serves no port does not wait"
        );
        drop(worker);
        std::thread::sleep(Duration::from_millis(5));
        let replacement = Stagger::new(&dir, 0);
        replacement.mark_listening().expect("listening");
        assert_eq!(second.try_admit(), Admission::Granted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_listening_mark_names_its_writer_and_counts_only_after_the_last_recycle() {
        let dir = scratch("mark");
        let path = Path::new(&dir);
        assert_eq!(listening_pid(path), None);
        assert!(!sibling_listens(path, 1));
        Stagger::new(&dir, 0).mark_listening().expect("listening");
        let me = std::process::id();
        assert_eq!(listening_pid(path), Some(me));
        assert!(
            !sibling_listens(path, me),
            "its own mark is not a sibling's"
        );
        assert!(sibling_listens(path, me + 1));
        // A recycle after the mark: the mark is older, no sibling listens since.
        let later = now_ms() + 1000;
        std::fs::write(path.join(LAST_FILE), later.to_string()).expect("stamp");
        assert!(!sibling_listens(path, me + 1));
        // A last-recycle from far in the future is planted or broken: ignored.
        std::fs::write(path.join(LAST_FILE), (later + 3_600_000).to_string()).expect("stamp");
        assert!(sibling_listens(path, me + 1));
        mark_recycled(path).expect("stamped");
        std::fs::write(path.join(LISTENING_FILE), "garbled").expect("garble");
        assert_eq!(listening_pid(path), None);
        assert!(!sibling_listens(path, me + 1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlinked_listening_file_is_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = scratch("listening-symlink");
        std::fs::create_dir_all(&dir).expect("dir");
        let victim = PathBuf::from(&dir).join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        symlink(&victim, PathBuf::from(&dir).join(LISTENING_FILE)).expect("symlink");
        Stagger::new(&dir, 0)
            .mark_listening()
            .expect("replaced, not followed");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        use std::os::unix::fs::symlink;
        let dir = scratch("symlink");
        std::fs::create_dir_all(&dir).expect("dir");
        let victim = PathBuf::from(&dir).join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        symlink(&victim, PathBuf::from(&dir).join(LOCK_FILE)).expect("symlink");
        assert!(
            matches!(Stagger::new(&dir, 0).try_admit(), Admission::Unavailable(w) if w.contains("cannot open"))
        );
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_future_timestamp_is_ignored() {
        let dir = scratch("future");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            PathBuf::from(&dir).join(LAST_FILE),
            (now_ms() + 86_400_000).to_string(),
        )
        .expect("planted");
        assert_eq!(Stagger::new(&dir, 60_000).try_admit(), Admission::Granted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_that_is_not_private_makes_the_queue_unavailable() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = scratch("shared");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(
            matches!(Stagger::new(&dir, 0).try_admit(), Admission::Unavailable(w) if w.contains("writable by group or others"))
        );
        let target = scratch("target");
        std::fs::create_dir_all(&target).expect("target");
        let link = format!("{dir}-link");
        let _ = std::fs::remove_file(&link);
        symlink(&target, &link).expect("symlink");
        assert!(
            matches!(Stagger::new(&link, 0).try_admit(), Admission::Unavailable(w) if w.contains("symlink"))
        );
        assert!(std::fs::read_dir(&target).expect("list").next().is_none());
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&target);
    }
}
