//! The ops on `Tensor`, each with its forward and its backward side by side, grouped by family.

mod attention;
mod binary;
mod conv;
mod loss;
mod matmul;
mod movement;
mod norm;
pub(crate) mod recurrent;
mod reduce;
mod unary;

/// Runs `$body` with `$v` bound to the float data of `$s` and wraps the result in the same
/// dtype; an i64 tensor gets a clear error.
macro_rules! float_map {
    ($op:expr, $s:expr, |$v:ident| $body:expr) => {
        match $s {
            $crate::storage::CpuStorage::F32($v) => $crate::storage::CpuStorage::F32($body),
            $crate::storage::CpuStorage::F64($v) => $crate::storage::CpuStorage::F64($body),
            $crate::storage::CpuStorage::I64(_) => {
                return Err($crate::Error::dtype(
                    $op,
                    "takes a float tensor (f32 or f64), got i64; convert it with to_dtype",
                ))
            }
        }
    };
}

/// Like `float_map!` for two tensors that must share a float dtype.
macro_rules! float_map2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::storage::CpuStorage::F32($x), $crate::storage::CpuStorage::F32($y)) => {
                $crate::storage::CpuStorage::F32($body)
            }
            ($crate::storage::CpuStorage::F64($x), $crate::storage::CpuStorage::F64($y)) => {
                $crate::storage::CpuStorage::F64($body)
            }
            (a, b) => return Err($crate::ops::dtype_pair_error($op, a.dtype(), b.dtype())),
        }
    };
}

/// Runs `$body` with `$v` bound to the data of `$s`, whatever its dtype, and wraps the result
/// in the same dtype: for ops that only move elements.
macro_rules! any_map {
    ($s:expr, |$v:ident| $body:expr) => {
        match $s {
            $crate::storage::CpuStorage::F32($v) => $crate::storage::CpuStorage::F32($body),
            $crate::storage::CpuStorage::F64($v) => $crate::storage::CpuStorage::F64($body),
            $crate::storage::CpuStorage::I64($v) => $crate::storage::CpuStorage::I64($body),
        }
    };
}

pub(crate) use {any_map, float_map, float_map2};

use crate::{DType, Error};

pub(crate) fn dtype_pair_error(op: &str, a: DType, b: DType) -> Error {
    if a == b {
        Error::dtype(
            op,
            format!("takes float tensors (f32 or f64), got {a}; convert with to_dtype"),
        )
    } else {
        Error::dtype(op, format!("both tensors must have one dtype, got {a} and {b}"))
    }
}

/// Checks that `t` is an i64 tensor of indices in `[0, n)` and returns them as usize.
pub(crate) fn checked_indices(op: &str, t: &crate::Tensor, n: usize) -> crate::Result<Vec<usize>> {
    let ids = t.as_slice::<i64>(op).map_err(|_| {
        Error::dtype(op, format!("indices must be an i64 tensor, got {}", t.dtype()))
    })?;
    ids.iter()
        .map(|&i| {
            if i < 0 || i as usize >= n {
                Err(Error::index(
                    op,
                    format!("index {i} is out of range for a dimension of size {n}"),
                ))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}
