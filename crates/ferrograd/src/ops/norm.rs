//! Layer normalization as one fused op, forward and backward; its composed twin (mean, var,
//! sub, mul — every piece differentiated on its own) is the test's reference.

use crate::backend::cpu::{self, Float};
use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per parallel task: about `cpu::CHUNK` elements, whole rows.
fn rows_per_task(d: usize) -> usize {
    (cpu::CHUNK / d).max(1)
}

/// Normalizes every row of `x` (rows of length `d`), returning y and the per-row (mean, 1/σ).
/// One pass per row while it is in L1: statistics, then y.
#[allow(clippy::type_complexity)]
fn forward<T: Float + Send + Sync>(
    x: &[T],
    w: &[T],
    b: &[T],
    d: usize,
    eps: f64,
) -> (Vec<T>, Vec<(T, T)>) {
    if d == 0 {
        return (Vec::new(), Vec::new());
    }
    let rows = x.len() / d;
    let (n, eps) = (T::from(d).unwrap_or(T::one()), T::from(eps).unwrap_or(T::zero()));
    let (w, b) = (&w[..d], &b[..d]);
    let mut stats = vec![(T::zero(), T::zero()); rows];
    let run = |((y, stats), x): ((&mut [MaybeUninit<T>], &mut [(T, T)]), &[T])| {
        cpu::with_wide_vectors(
            #[inline(always)]
            || {
                for ((yr, s), xr) in y.chunks_exact_mut(d).zip(stats).zip(x.chunks_exact(d)) {
                    let mean = cpu::lane_sum(xr, xr, |x, _| x) / n;
                    let var = cpu::lane_sum(xr, xr, |x, _| (x - mean) * (x - mean)) / n;
                    let rstd = (var + eps).sqrt().recip();
                    *s = (mean, rstd);
                    for (((y, &x), &w), &b) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        y.write((x - mean) * rstd * w + b);
                    }
                }
            },
        )
    };
    let per = rows_per_task(d);
    let fill = |y: &mut [MaybeUninit<T>]| {
        if x.len() < cpu::PARALLEL_MIN {
            run(((y, &mut stats), x));
        } else {
            let tasks = y.par_chunks_mut(per * d).zip(stats.par_chunks_mut(per));
            tasks.zip(x.par_chunks(per * d)).for_each(run);
        }
    };
    // SAFETY: x and y hold `rows` whole rows each, and every element of every row is written.
    let y = unsafe { cpu::filled_by(rows * d, fill) };
    (y, stats)
}

/// dx, dw, db from dy.
#[allow(clippy::type_complexity)]
fn backward<T: Float + Send + Sync>(
    dy: &[T],
    x: &[T],
    w: &[T],
    stats: &[(T, T)],
    d: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    if d == 0 {
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let n = T::from(d).unwrap_or(T::one());
    let w = &w[..d];
    // Each task's rows give dx and their share of dw = Σ dy ⊙ x̂ and db = Σ dy, summed after:
    // one pass over the rows, on every thread (the sums over all rows on one thread after dx
    // kept the others waiting).
    let run = |(((dx, stats), x), dy): (((&mut [MaybeUninit<T>], &[(T, T)]), &[T]), &[T])| {
        let mut gw = vec![T::zero(); d]; // ĝ = dy ⊙ w, one row
        let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
        cpu::with_wide_vectors(
            #[inline(always)]
            || {
                let rows = dx.chunks_exact_mut(d).zip(stats).zip(x.chunks_exact(d));
                for (((out, &(mean, rstd)), xr), gr) in rows.zip(dy.chunks_exact(d)) {
                    gw.iter_mut().zip(gr).zip(w).for_each(|((o, &g), &w)| *o = g * w);
                    // dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), x̂ = (x − mean) · rstd
                    let mg = cpu::lane_sum(&gw, &gw, |g, _| g) / n;
                    let mgx = cpu::lane_sum(&gw, xr, |g, x| g * (x - mean)) * rstd / n;
                    for ((o, &g), &x) in out.iter_mut().zip(&gw).zip(xr) {
                        o.write(rstd * (g - mg - (x - mean) * rstd * mgx));
                    }
                    for (((dw, db), &x), &g) in dw.iter_mut().zip(db.iter_mut()).zip(xr).zip(gr) {
                        *dw += g * (x - mean) * rstd;
                        *db += g;
                    }
                }
            },
        );
        (dw, db)
    };
    let per = rows_per_task(d);
    let mut shares = Vec::new();
    let fill = |dx: &mut [MaybeUninit<T>]| {
        shares = if x.len() < cpu::PARALLEL_MIN {
            vec![run((((dx, stats), x), dy))]
        } else {
            let tasks = dx.par_chunks_mut(per * d).zip(stats.par_chunks(per));
            tasks.zip(x.par_chunks(per * d)).zip(dy.par_chunks(per * d)).map(run).collect()
        };
    };
    // SAFETY: dx, x and dy hold `stats.len()` whole rows each, and every element is written.
    let dx = unsafe { cpu::filled_by(stats.len() * d, fill) };
    let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
    for (share_w, share_b) in shares {
        dw.iter_mut().zip(share_w).for_each(|(s, v)| *s += v);
        db.iter_mut().zip(share_b).for_each(|(s, v)| *s += v);
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
