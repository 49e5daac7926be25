//! Layer normalization as one fused op, forward and backward; its composed twin (mean, var,
//! sub, mul — every piece differentiated on its own) is the test's reference.

use crate::backend::cpu::{self, Float};
use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};

/// Normalizes every row of `x` (rows of length `d`), returning y and the per-row (mean, 1/σ).
fn forward<T: Float + Send + Sync>(
    x: &[T],
    w: &[T],
    b: &[T],
    d: usize,
    eps: f64,
) -> (Vec<T>, Vec<(T, T)>) {
    let rows = x.len() / d.max(1);
    let (n, eps) = (T::from(d).unwrap_or(T::one()), T::from(eps).unwrap_or(T::zero()));
    let (w, b) = (&w[..d], &b[..d]);
    let stats: Vec<(T, T)> = cpu::par_rows(rows, 1, |r, out: &mut [(T, T)]| {
        let row = &x[r * d..(r + 1) * d];
        out[0] = cpu::with_wide_vectors(
            #[inline(always)]
            || {
                let mean = cpu::lane_sum(d, |i| row[i]) / n;
                let var = cpu::lane_sum(d, |i| (row[i] - mean) * (row[i] - mean)) / n;
                (mean, (var + eps).sqrt().recip())
            },
        );
    });
    let y = cpu::par_rows(rows, d, |r, out: &mut [T]| {
        let (mean, rstd) = stats[r];
        let row = &x[r * d..(r + 1) * d];
        cpu::with_wide_vectors(
            #[inline(always)]
            || {
                for i in 0..d {
                    out[i] = (row[i] - mean) * rstd * w[i] + b[i];
                }
            },
        )
    });
    (y, stats)
}

/// dx, dw, db from dy.
fn backward<T: Float + Send + Sync>(
    dy: &[T],
    x: &[T],
    w: &[T],
    stats: &[(T, T)],
    d: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = stats.len();
    let n = T::from(d).unwrap_or(T::one());
    let w = &w[..d];
    let dx = cpu::par_rows(rows, d, |r, out: &mut [T]| {
        let (mean, rstd) = stats[r];
        let (xr, gr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
        cpu::with_wide_vectors(
            #[inline(always)]
            || {
                // dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ w
                let mg = cpu::lane_sum(d, |i| gr[i] * w[i]) / n;
                let mgx = cpu::lane_sum(d, |i| gr[i] * w[i] * (xr[i] - mean) * rstd) / n;
                for i in 0..d {
                    let xhat = (xr[i] - mean) * rstd;
                    out[i] = rstd * (gr[i] * w[i] - mg - xhat * mgx);
                }
            },
        )
    });
    let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
    for ((xr, gr), &(mean, rstd)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(stats) {
        let (dw, db) = (&mut dw[..d], &mut db[..d]);
        for i in 0..d {
            dw[i] += gr[i] * (xr[i] - mean) * rstd;
            db[i] += gr[i];
        }
    }
    (dx, dw, db)
}

impl Tensor {
    /// `(x − mean) / √(var + eps) · weight + bias` over the last dimension, fused: one pass
    /// forward, one back (PyTorch's `F.layer_norm`).
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let d = *self
            .dims()
            .last()
            .ok_or_else(|| Error::shape(OP, "needs at least one dimension, got a scalar"))?;
        if weight.dims() != [d] || bias.dims() != [d] {
            return Err(Error::shape(
                OP,
                format!(
                    "weight and bias must be ({d},) for input {}, got {} and {}",
                    self.shape(),
                    weight.shape(),
                    bias.shape()
                ),
            ));
        }
        let dtype_err = || Error::dtype(OP, "input, weight and bias must share one float dtype");
        type Backward = Box<dyn FnOnce(&Tensor) -> Result<[CpuStorage; 3]> + Send + Sync>;
        macro_rules! run {
            ($ty:ty, $variant:ident) => {{
                let x = self.as_slice::<$ty>(OP)?;
                let w = weight.as_slice::<$ty>(OP).map_err(|_| dtype_err())?;
                let b = bias.as_slice::<$ty>(OP).map_err(|_| dtype_err())?;
                let (y, stats) = forward(x, w, b, d, eps);
                let (xs, ws) = (self.detach(), weight.detach()); // shared, not copied
                let back: Backward = Box::new(move |g: &Tensor| {
                    let (x, w) = (xs.as_slice::<$ty>(OP)?, ws.as_slice::<$ty>(OP)?);
                    let (dx, dw, db) = backward(g.as_slice::<$ty>(OP)?, x, w, &stats, d);
                    Ok([
                        CpuStorage::$variant(dx),
                        CpuStorage::$variant(dw),
                        CpuStorage::$variant(db),
                    ])
                });
                (CpuStorage::$variant(y), back)
            }};
        }
        let (y, back) = match self.cpu(OP)? {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            CpuStorage::I64(_) => return Err(Error::dtype(OP, "takes float input, got i64")),
        };
        let (x_shape, p_shape) = (self.shape().clone(), weight.shape().clone());
        Ok(Tensor::from_op(y, self.shape().clone(), OP, &[self, weight, bias], move |g| {
            let [dx, dw, db] = back(g)?;
            Ok(vec![
                Some(Tensor::from_storage(dx, x_shape)),
                Some(Tensor::from_storage(dw, p_shape.clone())),
                Some(Tensor::from_storage(db, p_shape)),
            ])
        }))
    }
}
