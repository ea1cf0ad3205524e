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
//! Where exec cannot work (no /proc, a process with an IPC channel to its parent, execve
//! failing), the caller exits with `EXIT_CODE` as before and says why.

use std::ffi::CString;
use std::sync::OnceLock;

/// The environment variable carrying the generation (0 for a process started normally).
pub const GENERATION_ENV: &str = "SELF_RECYCLE_GENERATION";

struct Plan {
    argv: Vec<CString>,
    /// The original environment without the generation variable.
    env: Vec<CString>,
    generation: u64,
}

static PLAN: OnceLock<Result<Plan, String>> = OnceLock::new();

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
        Ok(Plan {
            argv,
            env: nul_separated(&env),
            generation: generation(),
        })
    });
    plan.as_ref().err().cloned()
}

/// Re-executes the process. Returns only on failure, with why.
#[cfg(target_os = "linux")]
pub fn exec_self() -> String {
    let plan = match PLAN.get() {
        Some(Ok(plan)) => plan,
        Some(Err(why)) => return why.clone(),
        None => return "exec was not prepared at start".to_string(),
    };
    close_on_exec_beyond_stdio();
    reset_signals();
    let env = next_environment(&plan.env, plan.generation + 1);
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let exe = c"/proc/self/exe";
    // SAFETY: NUL-terminated arrays of pointers into CStrings that live until execve
    // returns (it only returns on failure).
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    format!("execve failed: {}", std::io::Error::last_os_error())
}

#[cfg(not(target_os = "linux"))]
pub fn exec_self() -> String {
    "re-executing in place needs Linux".to_string()
}

/// Marks every descriptor above 2 close-on-exec, except systemd's `LISTEN_FDS` when they
/// were passed to this process (the next generation takes them over).
#[cfg(target_os = "linux")]
fn close_on_exec_beyond_stdio() {
    let keep = listen_fds();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
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
