#![deny(clippy::all)]
//! The crate's modules; the napi surface lives in `exports/` (thin wrappers over the
//! modules below, and error mapping). Every export uses `catch_unwind` so a panic becomes a
//! JS error, never an abort. Events cross to JS as objects (napi's serde-json), built once
//! in `event.rs`.

mod config;
mod event;
pub mod exports;
mod fleet;
mod guard;
mod liveness;
mod monitor;
mod near_heap;
mod notify;
mod policy;
mod probe;
mod recycle;
mod reexec;
mod report;
mod sampler;
mod stagger;
mod status_file;
mod stop_signal;
mod trend;
mod units;
