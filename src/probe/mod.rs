//! Probes read figures; they never decide. `procfs` and `cgroup` are safe to call from any
//! thread; `v8` and `sampling` must only touch the heap on the JS thread (see their docs).

/// Resolves a V8 symbol as a function pointer of the declared type, or `None`.
macro_rules! resolve {
    ($name:literal) => {
        // SAFETY: the mangled name pins the C++ signature; on x86-64/arm64 SysV a member
        // function takes `this` as its first argument, like the declared C signature.
        $crate::probe::symbols::lookup($name)
            .map(|address| unsafe { std::mem::transmute::<*mut std::ffi::c_void, _>(address) })
    };
}

pub mod cgroup;
pub mod container;
pub mod heap_cell;
pub mod layout;
pub mod procfs;
pub mod sampling;
mod symbols;
pub mod v8;
