//! The ops on `Tensor`, each with its forward and its backward side by side, grouped by family.

mod attention;
mod binary;
pub(crate) mod block_step;
mod conv;
mod loss;
mod matmul;
mod movement;
mod norm;
pub(crate) mod quantized;
pub(crate) mod recurrent;
mod reduce;
pub(crate) mod unary;

use crate::{DType, Error, Result, Tensor};

/// The one float dtype `tensors` share, or an error naming `op` and what it was given.
pub(crate) fn float_dtype(op: &str, tensors: &[&Tensor]) -> Result<DType> {
    let first = tensors.first().map_or(DType::F32, |t| t.dtype());
    if let Some(t) = tensors.iter().find(|t| t.dtype() != first) {
        return Err(Error::dtype(
            op,
            format!("all tensors must have one dtype, got {first} and {}", t.dtype()),
        ));
    }
    if !first.is_float() {
        return Err(Error::dtype(
            op,
            format!("takes float tensors (f32 or f64), got {first}; convert with to_dtype"),
        ));
    }
    Ok(first)
}

/// Like [`float_dtype`] for fused ops over several operands: an integer input is named as such,
/// a mixture gets `mixed`.
pub(crate) fn float_operands(op: &str, tensors: &[&Tensor], mixed: &str) -> Result<DType> {
    let first = tensors.first().map_or(DType::F32, |t| t.dtype());
    if !first.is_float() {
        return Err(Error::dtype(op, format!("takes float input, got {first}")));
    }
    float_dtype(op, tensors).map_err(|_| Error::dtype(op, mixed.to_string()))
}

/// Checks that `t` is an i64 tensor of indices in `[0, n)`. (Read on the host: indices are
/// small next to the data they pick, and a device kernel could not report the bad one.)
pub(crate) fn check_indices(op: &str, t: &Tensor, n: usize) -> Result<()> {
    let ids = t.as_slice::<i64>(op).map_err(|_| {
        Error::dtype(op, format!("indices must be an i64 tensor, got {}", t.dtype()))
    })?;
    match ids.iter().find(|&&i| i < 0 || i as usize >= n) {
        Some(i) => {
            Err(Error::index(op, format!("index {i} is out of range for a dimension of size {n}")))
        }
        None => Ok(()),
    }
}
