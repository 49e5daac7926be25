//! Backends: one module per device. Ops in `ops/` call these kernels through the `Storage`
//! seam; a CUDA backend would sit beside `cpu` with the same kernel names.

pub mod cpu;
