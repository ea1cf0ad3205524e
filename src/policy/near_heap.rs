//! Pure: what to do when V8 says the heap is about to run out (headroom once, then exit).

/// What to do when V8 reports the heap is about to run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearHeapAction {
    /// First hit: raise the limit by `headroom` bytes and recycle at once.
    Grant { headroom: u64 },
    /// Exit now with the configured code, before V8 aborts.
    Exit(NearHeapExit),
    /// Leave V8 to its own handling (a dry run, or a thread that may not end the process).
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearHeapExit {
    /// The cgroup leaves no room for any headroom.
    NoRoom,
    /// The heap filled again before the drain finished.
    Again,
}

impl NearHeapExit {
    pub fn why(self) -> &'static str {
        match self {
            NearHeapExit::NoRoom => {
                "V8 heap reached its limit and the cgroup leaves no room for headroom"
            }
            NearHeapExit::Again => "V8 heap reached its limit again before the drain finished",
        }
    }
}

/// The near-heap-limit decision: headroom is granted once, on the first hit only.
pub fn near_heap_action(
    hits: u32,
    current_limit: u64,
    rss: u64,
    cgroup_limit: Option<u64>,
    may_exit: bool,
) -> NearHeapAction {
    if hits == 1 {
        if let Some(headroom) = headroom(current_limit, rss, cgroup_limit) {
            return NearHeapAction::Grant { headroom };
        }
    }
    if !may_exit {
        return NearHeapAction::Keep;
    }
    NearHeapAction::Exit(if hits == 1 {
        NearHeapExit::NoRoom
    } else {
        NearHeapExit::Again
    })
}

/// Headroom to grant: a quarter of the current limit, 32 MiB to 256 MiB, and never more
/// than half of what the cgroup still allows. `None` when there is no room at all.
pub fn headroom(current_limit: u64, rss: u64, cgroup_limit: Option<u64>) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let wanted = (current_limit / 4).clamp(32 * MIB, 256 * MIB);
    let allowed = match cgroup_limit {
        Some(limit) => wanted.min(limit.saturating_sub(rss) / 2),
        None => wanted,
    };
    (allowed >= 4 * MIB).then_some(allowed)
}
