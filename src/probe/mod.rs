//! Probes read figures; they never decide. `procfs` and `cgroup` are safe to call from any
//! thread; `v8` must only read the heap on the JS thread (see its docs).

pub mod cgroup;
pub mod heap_cell;
pub mod procfs;
pub mod v8;
