//! `guard.once()`: the per-thread value store, the init registry and the `reinit` event.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use serde_json::{Map, Value};

use super::inputs::{
    GuardScope, InitCostInput, InitEndInput, ReinitAttemptInput, ReinitEventInput,
};
use crate::guard::REGISTRY;
use crate::probe::procfs;

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's id in the guard registry (one per isolate thread).
    static THREAD_ID: u64 = NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed);
    /// This thread's JS value store for `once()`: (napi_env, napi_ref) of the first load.
    /// Kept per thread, not per napi_env, so a re-loaded addon (new env) finds it again.
    static GUARD_STORE: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

fn thread_id() -> u64 {
    THREAD_ID.with(|id| *id)
}

/// Returns this thread's value store, adopting `fresh` the first time.
#[napi(catch_unwind)]
pub fn guard_store<'env>(env: &'env Env, fresh: Object<'env>) -> Result<Object<'env>> {
    if let Some((store_env, reference)) = GUARD_STORE.with(Cell::get) {
        let mut value = std::ptr::null_mut();
        // SAFETY: the env and reference were created on this thread and live as long as
        // its isolate (the cleanup hook below clears them at teardown).
        let status = unsafe {
            napi::sys::napi_get_reference_value(
                store_env as napi::sys::napi_env,
                reference as napi::sys::napi_ref,
                &mut value,
            )
        };
        if status == napi::sys::Status::napi_ok && !value.is_null() {
            // SAFETY: `value` is a live object handle in the current scope.
            return unsafe { Object::from_napi_value(env.raw(), value) };
        }
    }
    let mut reference = std::ptr::null_mut();
    // SAFETY: `fresh` is a live object of this env; the reference is strong (count 1).
    let status =
        unsafe { napi::sys::napi_create_reference(env.raw(), fresh.raw(), 1, &mut reference) };
    if status != napi::sys::Status::napi_ok {
        return Err(Error::new(
            Status::GenericFailure,
            "cannot keep the guard store",
        ));
    }
    GUARD_STORE.with(|store| store.set(Some((env.raw() as usize, reference as usize))));
    let thread = thread_id();
    env.add_env_cleanup_hook((), move |()| {
        GUARD_STORE.with(|store| store.set(None));
        REGISTRY.forget_thread(thread);
    })?;
    Ok(fresh)
}

/// Starts an initialization; `false` when a `scope: 'process'` key belongs to another thread.
#[napi(catch_unwind)]
pub fn guard_begin(key: String, scope: GuardScope) -> bool {
    let process_scope = matches!(scope, GuardScope::Process);
    REGISTRY.begin(&key, thread_id(), process_scope).is_ok()
}

/// Ends the initialization `guardBegin` started.
#[napi(catch_unwind)]
pub fn guard_end(end: InitEndInput) {
    REGISTRY.end(&end.key, thread_id(), end.succeeded, (&end.cost).into());
}

/// Adds `count` hits (the JS side batches them).
#[napi(catch_unwind)]
pub fn guard_hit(key: String, count: u32) {
    REGISTRY.hit(&key, u64::from(count));
}

#[napi(object)]
pub struct ReinitCount {
    pub attempts: f64,
    /// Attempts from this call site.
    pub from_site: f64,
    /// The 1st, 10th, 100th... from this call site: emit a `reinit` event.
    pub report: bool,
}

#[napi(catch_unwind)]
pub fn guard_reinit(attempt: ReinitAttemptInput) -> ReinitCount {
    let reinit = REGISTRY.reinit(&attempt.key, &attempt.call_site);
    ReinitCount {
        attempts: reinit.attempts as f64,
        from_site: reinit.from_site as f64,
        report: reinit.worth_reporting(),
    }
}

/// Records an unguarded initialization; returns how many there have been.
#[napi(catch_unwind)]
pub fn guard_track_init(key: String, cost: InitCostInput) -> f64 {
    REGISTRY.track_init(&key, thread_id(), (&cost).into()) as f64
}

#[napi(catch_unwind)]
pub fn guard_stats() -> Value {
    REGISTRY.stats()
}

/// The guard's `reinit` event (it can happen with no recycler started).
#[napi(catch_unwind)]
pub fn reinit_event(reinit: ReinitEventInput) -> Map<String, Value> {
    let rss = procfs::resident().map_or(0, |r| r.rss);
    let (event, envelope) = reinit.into_event(rss);
    event.to_json(&envelope)
}
