//! Tensor data, per device. Counts live bytes so tests can show memory is released.

use crate::{DType, Device, Result};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Bytes of tensor data alive right now in this process (all threads).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed).max(0) as usize
}

/// Data in host memory, one variant per dtype.
#[derive(Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn bytes(&self) -> isize {
        (self.len() * self.dtype().size_in_bytes()) as isize
    }
}

/// A tensor's data on its device: the seam where backends meet.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
}

impl Storage {
    pub(crate) fn new(s: CpuStorage) -> Storage {
        LIVE_BYTES.fetch_add(s.bytes(), Ordering::Relaxed);
        Storage::Cpu(s)
    }
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
    /// The host data; a device backend answers with an error naming the op that needs it.
    pub(crate) fn cpu(&self, _op: &str) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
        }
    }
    fn bytes(&self) -> isize {
        match self {
            Storage::Cpu(s) => s.bytes(),
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}
