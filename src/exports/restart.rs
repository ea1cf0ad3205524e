//! `RESTART=exec`: the in-place re-execution and the listening sockets it hands on.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::reexec;

/// `RESTART=exec`: re-executes the process in place (after the `exit` listeners ran).
/// Returns only if that could not start, with why; a failing execve ends the process with
/// `exitCode` itself.
#[napi(catch_unwind)]
pub fn exec_self(exit_code: i32) -> String {
    reexec::exec_self(exit_code)
}

/// `drainHttp(server, { handOff: true })`: keeps the listening socket `fd` open for the
/// next generation (`RESTART=exec`) under `name`; an error says why it cannot.
#[napi(catch_unwind)]
pub fn hand_off_socket(fd: i32, name: String) -> Result<()> {
    reexec::hand_off(fd, &name).map_err(|why| Error::new(Status::InvalidArg, why))
}
