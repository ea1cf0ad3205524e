//! `RESTART=exec`: after its drain the process re-executes itself in place (same PID,
//! fresh address space) instead of exiting, as Unicorn's master and nginx's binary upgrade
//! do. In a container an exit is a restart the orchestrator counts and backs off
//! (Kubernetes' CrashLoopBackOff); an exec is not seen at all.
//!
//! What the next generation gets is what a fresh start would: the command line and the
//! environment the process was started with (read from /proc at `prepare`, so neither
//! `process.title` nor later `process.env` edits leak in) plus the generation number; no
//! descriptor beyond 0-2 (each is marked close-on-exec first, a native module's stray one
//! included; systemd's `LISTEN_FDS` are kept for the process they were passed to); default
//! signal dispositions and an empty signal mask. Threads, locks held through descriptors
//! (the stagger lock) and all memory go with the old image.
//!
//! Listening sockets handed off (`drainHttp(server, { handOff: true })`, `hand_off`) go
//! the other way: a duplicate taken before the server closes keeps the socket listening
//! through the drain and the exec (connections wait in its backlog instead of being
//! refused), and the next generation gets them as descriptors 3.. with systemd's variables
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), the way socket activation passes them.
//!
//! Where exec cannot work (no /proc, a process with an IPC channel to its parent, execve
//! failing), the caller exits with `EXIT_CODE` as before and says why.

use std::ffi::CString;
use std::sync::{Mutex, OnceLock};

/// The environment variable carrying the generation (0 for a process started normally).
pub const GENERATION_ENV: &str = "SELF_RECYCLE_GENERATION";

struct Plan {
    argv: Vec<CString>,
    /// The original environment without the generation variable.
    env: Vec<CString>,
    generation: u64,
}

static PLAN: OnceLock<Result<Plan, String>> = OnceLock::new();

/// A descriptor kept for the next generation: our close-on-exec duplicate, its name in
/// `LISTEN_FDNAMES`, and what it is (device, inode), so one socket is never passed twice.
struct Handed {
    fd: i32,
    name: String,
    identity: (u64, u64),
}

/// What the next generation gets as descriptors 3.., in order: systemd's sockets kept at
/// `prepare`, then those `hand_off` added.
static HANDED: Mutex<Vec<Handed>> = Mutex::new(Vec::new());

/// At most this many sockets are handed on (systemd caps nothing; a bound keeps it sane).
const MAX_HANDED: usize = 64;

/// systemd's separator in `LISTEN_FDNAMES`, and what a name may not hold.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// This process's generation: how many times it re-executed itself.
pub fn generation() -> u64 {
    std::env::var(GENERATION_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Splits a NUL-separated /proc file into C strings (an empty last entry dropped).
fn nul_separated(bytes: &[u8]) -> Vec<CString> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .filter_map(|part| CString::new(part).ok())
        .collect()
}

/// The environment for the next generation: the original one, generation replaced.
fn next_environment(original: &[CString], next_generation: u64) -> Vec<CString> {
    let prefix = format!("{GENERATION_ENV}=");
    let mut env: Vec<CString> = original
        .iter()
        .filter(|entry| !entry.as_bytes().starts_with(prefix.as_bytes()))
        .cloned()
        .collect();
    if let Ok(entry) = CString::new(format!("{prefix}{next_generation}")) {
        env.push(entry);
    }
    env
}

/// Captures what the next generation needs, at start (before the app edits its title or
/// environment). `ipc_channel`: the process talks to its parent over an inherited channel
/// (node:cluster, PM2, `fork()`): an exec would cut it, so the parent must restart it.
/// Returns why exec is not possible, if it is not.
pub fn prepare(ipc_channel: bool) -> Option<String> {
    let plan = PLAN.get_or_init(|| {
        if ipc_channel {
            return Err(
                "the process has an IPC channel to its parent (node:cluster, PM2, fork): the parent restarts it"
                    .to_string(),
            );
        }
        if !cfg!(target_os = "linux") {
            return Err("re-executing in place needs Linux's /proc/self/exe".to_string());
        }
        let argv = std::fs::read("/proc/self/cmdline")
            .map_err(|e| format!("cannot read /proc/self/cmdline: {e}"))?;
        let env = std::fs::read("/proc/self/environ")
            .map_err(|e| format!("cannot read /proc/self/environ: {e}"))?;
        let argv = nul_separated(&argv);
        if argv.is_empty() {
            return Err("/proc/self/cmdline is empty".to_string());
        }
        std::fs::metadata("/proc/self/exe")
            .map_err(|e| format!("cannot use /proc/self/exe: {e}"))?;
        keep_systemd_descriptors();
        Ok(Plan {
            argv,
            env: nul_separated(&env),
            generation: generation(),
        })
    });
    plan.as_ref().err().cloned()
}

/// (device, inode) of an open descriptor: what it is, whatever its number.
#[cfg(target_os = "linux")]
fn identity(fd: i32) -> Result<(u64, u64), String> {
    // SAFETY: fstat writes into a zeroed struct we own; a bad descriptor fails with EBADF.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(format!(
            "descriptor {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((stat.st_dev, stat.st_ino))
}

/// systemd's descriptors passed to this process (`LISTEN_PID` is ours): duplicated now,
/// because the app's server closes its own copy during the drain (and libuv may reopen
/// the number for something else), and passed on at 3.. under their names.
#[cfg(target_os = "linux")]
fn keep_systemd_descriptors() {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let Ok(mut handed) = HANDED.lock() else {
        return;
    };
    for (i, fd) in listen_fds().enumerate() {
        let Ok(identity) = identity(fd) else {
            continue;
        };
        // SAFETY: duplicating a descriptor fstat just accepted.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            continue;
        }
        let name = names
            .get(i)
            .filter(|n| valid_name(n))
            .map_or("unknown", |n| n);
        handed.push(Handed {
            fd: copy,
            name: name.to_string(),
            identity,
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_systemd_descriptors() {}

/// Keeps the listening socket `fd` open for the next generation under `name` (the
/// server may close its own descriptor now). Refuses what is not a listening socket.
#[cfg(target_os = "linux")]
pub fn hand_off(fd: i32, name: &str) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!(
            "name {name:?}: expected 1-255 printable ASCII characters without ':'"
        ));
    }
    let mut accepting: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `accepting`; a descriptor that
    // is not a socket fails with ENOTSOCK (or EBADF), which we report.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    if got != 0 {
        return Err(format!(
            "descriptor {fd} is not a socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    if accepting == 0 {
        return Err(format!("descriptor {fd} is a socket that does not listen"));
    }
    let identity = identity(fd)?;
    let mut handed = HANDED
        .lock()
        .map_err(|_| "hand-off list poisoned".to_string())?;
    if handed.iter().any(|h| h.identity == identity) {
        return Ok(()); // kept already (systemd's, or handed twice)
    }
    if handed.iter().any(|h| h.name == name) {
        return Err(format!("another socket is handed on as {name} already"));
    }
    if handed.len() >= MAX_HANDED {
        return Err(format!("at most {MAX_HANDED} sockets are handed on"));
    }
    // SAFETY: fcntl duplicates a descriptor we just checked; the copy is close-on-exec
    // until `exec_self` places it.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(format!(
            "cannot duplicate descriptor {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    handed.push(Handed {
        fd: copy,
        name: name.to_string(),
        identity,
    });
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn hand_off(_fd: i32, _name: &str) -> Result<(), String> {
    Err("handing a socket on needs Linux".to_string())
}

/// The environment for a generation that gets `names` as descriptors 3..: systemd's three
/// variables replaced, or removed when nothing is passed (the original ones, read from
/// /proc at start, describe descriptors this generation no longer has).
fn with_listen_fds(mut env: Vec<CString>, names: &[String], pid: u32) -> Vec<CString> {
    env.retain(|entry| {
        let bytes = entry.as_bytes();
        !(bytes.starts_with(b"LISTEN_FDS=")
            || bytes.starts_with(b"LISTEN_PID=")
            || bytes.starts_with(b"LISTEN_FDNAMES="))
    });
    if names.is_empty() {
        return env;
    }
    for entry in [
        format!("LISTEN_FDS={}", names.len()),
        format!("LISTEN_PID={pid}"),
        format!("LISTEN_FDNAMES={}", names.join(":")),
    ] {
        if let Ok(entry) = CString::new(entry) {
            env.push(entry);
        }
    }
    env
}

/// Places the kept descriptors at 3.. (inheritable) and returns their names, in order.
/// Each first goes above the targets, so that placing one never closes another.
#[cfg(target_os = "linux")]
fn place_handed() -> Vec<String> {
    let Ok(handed) = HANDED.lock() else {
        return Vec::new();
    };
    let count = handed.len() as i32;
    let mut above = Vec::with_capacity(handed.len());
    for kept in handed.iter() {
        // SAFETY: duplicating our own descriptor to the lowest free one >= 3 + count.
        let copy = unsafe { libc::fcntl(kept.fd, libc::F_DUPFD_CLOEXEC, 3 + count) };
        if copy >= 0 {
            above.push((copy, kept.name.clone()));
        }
    }
    let mut names = Vec::with_capacity(above.len());
    for (fd, name) in above {
        // Numbered by what was placed, so a failure never shifts names off their sockets.
        let target = 3 + names.len() as i32;
        // SAFETY: dup2 onto a descriptor number below `above`'s; whatever was there
        // (marked close-on-exec already) is closed. The target is inheritable.
        if unsafe { libc::dup2(fd, target) } == target {
            names.push(name);
        }
    }
    names
}

/// Re-executes the process. Returns why not when it cannot start (nothing changed yet);
/// once descriptors and signal dispositions were rearranged for the next image, a failing
/// execve leaves this one unfit to go on (libuv's descriptors replaced, SIGPIPE default):
/// it says why on stderr and ends with `exit_code` at once.
#[cfg(target_os = "linux")]
pub fn exec_self(exit_code: i32) -> String {
    let plan = match PLAN.get() {
        Some(Ok(plan)) => plan,
        Some(Err(why)) => return why.clone(),
        None => return "exec was not prepared at start".to_string(),
    };
    close_on_exec_beyond_stdio();
    reset_signals();
    let names = place_handed();
    let env = with_listen_fds(
        next_environment(&plan.env, plan.generation + 1),
        &names,
        std::process::id(),
    );
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let exe = c"/proc/self/exe";
    // SAFETY: NUL-terminated arrays of pointers into CStrings that live until execve
    // returns (it only returns on failure).
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let line = format!(
        "self-recycle: could not re-execute in place (execve failed: {}); exiting with code {exit_code}\n",
        std::io::Error::last_os_error()
    );
    // SAFETY: write(2) of a buffer we own to stderr, then _exit: no destructor, no atexit
    // handler runs in a process whose descriptors were already rearranged.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(exit_code)
    }
}

#[cfg(not(target_os = "linux"))]
pub fn exec_self(_exit_code: i32) -> String {
    "re-executing in place needs Linux".to_string()
}

/// Marks every descriptor above 2 close-on-exec: what the next generation gets beyond
/// stdio is placed afterwards (`place_handed`), systemd's sockets included.
#[cfg(target_os = "linux")]
fn close_on_exec_beyond_stdio() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that closed since the listing fails
        // with EBADF, which is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    // Node's stdio can be close-on-exec (libuv marks the descriptors it opens or adopts):
    // the next generation must write where this one did, not to the /dev/null Node opens
    // for a missing descriptor.
    for fd in 0..=2 {
        // SAFETY: as above, on the three standard descriptors.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC != 0 {
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
        }
    }
}

/// Descriptors systemd passed to this very process (`LISTEN_PID` is ours).
#[cfg(target_os = "linux")]
fn listen_fds() -> std::ops::Range<i32> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 0 && *n < 1024);
    match (ours, count) {
        (true, Some(n)) => 3..3 + n,
        _ => 0..0,
    }
}

/// Default dispositions for every signal and an empty mask, as a fresh process gets them
/// (Node ignores SIGPIPE, and an ignored signal stays ignored across execve).
#[cfg(target_os = "linux")]
fn reset_signals() {
    // SAFETY: sigaction/sigprocmask with valid, zero-initialised structs; SIGKILL and
    // SIGSTOP (which cannot be changed) fail harmlessly.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[CString]) -> Vec<String> {
        list.iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn proc_lists_split_on_nul() {
        assert_eq!(
            strings(&nul_separated(b"node\0--max-old-space-size=64\0w.js\0")),
            vec!["node", "--max-old-space-size=64", "w.js"]
        );
        assert!(nul_separated(b"").is_empty());
    }

    #[test]
    fn handed_sockets_replace_systemds_variables() {
        let original = nul_separated(b"A=1\0LISTEN_FDS=2\0LISTEN_PID=9\0LISTEN_FDNAMES=x:y\0");
        let names = vec!["selfrecycle.3000".to_string(), "b".to_string()];
        assert_eq!(
            strings(&with_listen_fds(original.clone(), &names, 42)),
            vec![
                "A=1",
                "LISTEN_FDS=2",
                "LISTEN_PID=42",
                "LISTEN_FDNAMES=selfrecycle.3000:b"
            ]
        );
        // Nothing passed on: the variables read at start are gone (they described
        // descriptors this generation no longer has).
        assert_eq!(strings(&with_listen_fds(original, &[], 42)), vec!["A=1"]);
    }

    #[test]
    fn names_are_printable_without_the_separator() {
        assert!(valid_name("selfrecycle.3000"));
        for bad in ["", "a:b", "sp ace", "tab\t", "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&"x".repeat(256)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_listening_socket_is_handed_off() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let connected =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let file = std::fs::File::open("/proc/self/statm").expect("open");
        use std::os::fd::AsRawFd;
        assert!(hand_off(connected.as_raw_fd(), "c")
            .expect_err("a connected socket")
            .contains("does not listen"));
        assert!(hand_off(file.as_raw_fd(), "f")
            .expect_err("a file")
            .contains("not a socket"));
        assert!(hand_off(-1, "n").is_err());
        assert!(hand_off(listener.as_raw_fd(), "bad:name").is_err());
        hand_off(listener.as_raw_fd(), "ok").expect("a listening socket");
        let handed = HANDED.lock().expect("lock");
        let kept = handed.last().expect("handed");
        assert_eq!(kept.name, "ok");
        assert_ne!(kept.fd, listener.as_raw_fd());
        drop(handed);
        // The same socket again (another name, another descriptor for it): kept once.
        // SAFETY: dup of a descriptor the listener owns; the copy is ours to leak in a test.
        let again = unsafe { libc::dup(listener.as_raw_fd()) };
        hand_off(again, "other").expect("the same socket is accepted");
        assert_eq!(HANDED.lock().expect("lock").len(), 1);
        // Another socket under a name already used: refused.
        let second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(hand_off(second.as_raw_fd(), "ok")
            .expect_err("a name twice")
            .contains("already"));
    }

    #[test]
    fn the_generation_is_replaced_not_repeated() {
        let original = nul_separated(b"A=1\0SELF_RECYCLE_GENERATION=4\0B=2\0");
        assert_eq!(
            strings(&next_environment(&original, 5)),
            vec!["A=1", "B=2", "SELF_RECYCLE_GENERATION=5"]
        );
        assert_eq!(
            strings(&next_environment(&nul_separated(b"A=1\0"), 1)),
            vec!["A=1", "SELF_RECYCLE_GENERATION=1"]
        );
    }
}
