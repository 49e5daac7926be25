//! Element types: f32 (the default), f64 (gradcheck and science) and i64 (ids, labels, masks).

use crate::backend::cpu::{Buffer, CpuStorage};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
        })
    }
}

/// A Rust type that can be a tensor's element.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    #[doc(hidden)]
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    #[doc(hidden)]
    fn from_storage(s: &CpuStorage) -> Option<&[Self]>;
    #[doc(hidden)]
    fn buffer_mut(s: &mut CpuStorage) -> Option<&mut Buffer<Self>>;
    #[doc(hidden)]
    fn from_buffer(b: Buffer<Self>) -> crate::Result<CpuStorage>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v.into())
            }
            fn from_storage(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn from_buffer(b: Buffer<Self>) -> crate::Result<CpuStorage> {
                Ok(CpuStorage::$variant(b))
            }
            fn buffer_mut(s: &mut CpuStorage) -> Option<&mut Buffer<Self>> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(i64, I64);
