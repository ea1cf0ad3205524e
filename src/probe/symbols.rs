//! V8's C++ API found by its mangled names in the running process (dlsym), for the probes
//! that call it (`v8`, `sampling`). Each symbol can be missing: callers fall back.

use std::ffi::{c_void, CStr};

#[cfg(unix)]
pub fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

#[cfg(not(unix))]
pub fn lookup(_name: &CStr) -> Option<*mut c_void> {
    None
}
