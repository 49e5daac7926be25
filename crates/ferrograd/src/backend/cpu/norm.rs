//! Layer normalization's fused kernels, forward and backward: one pass over each row.

use super::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per parallel task: about `super::CHUNK` elements, whole rows.
fn rows_per_task(d: usize) -> usize {
    (super::CHUNK / d).max(1)
}

/// Normalizes every row of `x` (rows of length `d`), returning y and the per-row (mean, 1/σ).
/// One pass per row while it is in L1: statistics, then y.
#[allow(clippy::type_complexity)]
pub(crate) fn forward<T: Float + Send + Sync>(
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
    let (w, b) = (&w[..d], &b[..d]);
    let mut stats = vec![(T::zero(), T::zero()); rows];
    let run = |((y, stats), x): ((&mut [MaybeUninit<T>], &mut [(T, T)]), &[T])| {
        super::with_wide_vectors(
            #[inline(always)]
            || {
                for ((yr, s), xr) in y.chunks_exact_mut(d).zip(stats).zip(x.chunks_exact(d)) {
                    *s = row(xr, w, b, eps, yr);
                }
            },
        )
    };
    let per = rows_per_task(d);
    let fill = |y: &mut [MaybeUninit<T>]| {
        if x.len() < super::PARALLEL_MIN {
            run(((y, &mut stats), x));
        } else {
            let tasks = y.par_chunks_mut(per * d).zip(stats.par_chunks_mut(per));
            tasks.zip(x.par_chunks(per * d)).for_each(run);
        }
    };
    // SAFETY: x and y hold `rows` whole rows each, and every element of every row is written.
    let y = unsafe { super::filled_by(rows * d, fill) };
    (y, stats)
}

/// One row `x` normalized into `y`, scaled by `w` and shifted by `b`; its (mean, 1/σ).
#[inline(always)]
fn row<T: Float>(x: &[T], w: &[T], b: &[T], eps: f64, y: &mut [MaybeUninit<T>]) -> (T, T) {
    let (n, eps) = (T::from(x.len()).unwrap_or(T::one()), T::from(eps).unwrap_or(T::zero()));
    let mean = super::lane_sum(x, x, |x, _| x) / n;
    let var = super::lane_sum(x, x, |x, _| (x - mean) * (x - mean)) / n;
    let rstd = (var + eps).sqrt().recip();
    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
        y.write((x - mean) * rstd * w + b);
    }
    (mean, rstd)
}

/// [`forward`] of one row on this thread (a task of a larger kernel): the same values.
pub(crate) fn normalize_row<T: Float>(
    x: &[T],
    w: &[T],
    b: &[T],
    eps: f64,
    y: &mut [MaybeUninit<T>],
) {
    super::with_wide_vectors(
        #[inline(always)]
        || row(x, w, b, eps, y),
    );
}

/// dx, dw, db from dy.
#[allow(clippy::type_complexity)]
pub(crate) fn backward<T: Float + Send + Sync>(
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
    // one pass over the rows, on every thread, with no serial pass over all rows after it.
    let run = |(((dx, stats), x), dy): (((&mut [MaybeUninit<T>], &[(T, T)]), &[T]), &[T])| {
        let mut gw = vec![T::zero(); d]; // ĝ = dy ⊙ w, one row
        let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
        super::with_wide_vectors(
            #[inline(always)]
            || {
                let rows = dx.chunks_exact_mut(d).zip(stats).zip(x.chunks_exact(d));
                for (((out, &(mean, rstd)), xr), gr) in rows.zip(dy.chunks_exact(d)) {
                    gw.iter_mut().zip(gr).zip(w).for_each(|((o, &g), &w)| *o = g * w);
                    // dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), x̂ = (x − mean) · rstd
                    let mg = super::lane_sum(&gw, &gw, |g, _| g) / n;
                    let mgx = super::lane_sum(&gw, xr, |g, x| g * (x - mean)) * rstd / n;
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
        shares = if x.len() < super::PARALLEL_MIN {
            vec![run((((dx, stats), x), dy))]
        } else {
            let tasks = dx.par_chunks_mut(per * d).zip(stats.par_chunks(per));
            tasks.zip(x.par_chunks(per * d)).zip(dy.par_chunks(per * d)).map(run).collect()
        };
    };
    // SAFETY: dx, x and dy hold `stats.len()` whole rows each, and every element is written.
    let dx = unsafe { super::filled_by(stats.len() * d, fill) };
    let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
    for (share_w, share_b) in shares {
        dw.iter_mut().zip(share_w).for_each(|(s, v)| *s += v);
        db.iter_mut().zip(share_b).for_each(|(s, v)| *s += v);
    }
    (dx, dw, db)
}
