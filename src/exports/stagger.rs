//! The stagger directory's marks for drainHttp (which may belong to another copy of the
//! package than the recycler): who wrote `listening`, whether a sibling listens since the
//! last recycle, and the `last-recycle` stamp. Their format is src/stagger.rs's alone.

use std::path::Path;

use napi_derive::napi;

use crate::stagger;

/// The pid in the `listening` mark of `dir`, or null without a readable mark.
#[napi(catch_unwind)]
pub fn stagger_listening_pid(dir: String) -> Option<u32> {
    stagger::listening_pid(Path::new(&dir))
}

/// Whether another process marked `listening` in `dir` since its last recycle.
#[napi(catch_unwind)]
pub fn stagger_sibling_listens(dir: String) -> bool {
    stagger::sibling_listens(Path::new(&dir), std::process::id())
}

/// Stamps `last-recycle` in `dir`; null, or why it could not.
#[napi(catch_unwind)]
pub fn stagger_mark_recycled(dir: String) -> Option<String> {
    stagger::mark_recycled(Path::new(&dir)).err()
}
