//! Probes read figures; they never decide. `procfs` and `cgroup` are safe to call from any
//! thread; `v8` and `sampling` must only touch the heap on the JS thread (see their docs).

pub mod cgroup;
pub mod heap_cell;
pub mod procfs;
pub mod sampling;
pub mod v8;
