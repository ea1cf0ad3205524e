//! The napi surface: what JS can call, by concern. Each export is a thin wrapper that
//! converts its input, calls the core modules and maps errors; `catch_unwind` on every one.

pub mod completion;
pub mod config;
pub mod diagnostics;
pub mod guard;
pub mod inputs;
pub mod recycler;
pub mod restart;
mod sink;
pub mod stagger;
mod start;

use napi::bindgen_prelude::*;

/// A JS number as a count of bytes (or milliseconds): negative, NaN and infinite are 0.
fn to_bytes(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}
