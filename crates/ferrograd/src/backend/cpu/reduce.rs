//! Reductions over the middle dimension of an (outer, n, inner) view, and the row-wise
//! softmax family built on them.

use super::{par_rows, Float, PARALLEL_MIN};
use rayon::prelude::*;

/// `out[o, i] = Σ_k x[o, k, i]`.
pub fn sum_dim<T: Float + Send + Sync>(x: &[T], outer: usize, n: usize, inner: usize) -> Vec<T> {
    par_rows(outer, inner, |o, out: &mut [T]| {
        let block = &x[o * n * inner..(o + 1) * n * inner];
        if inner == 1 {
            out[0] = block.iter().copied().sum();
        } else {
            for row in block.chunks_exact(inner) {
                out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
            }
        }
    })
}

/// Largest (or smallest) value along the middle dimension and the first index holding it.
pub fn extreme_dim<T: Float + Send + Sync>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let pairs: Vec<(T, i64)> = par_rows(outer, inner, |o, out: &mut [(T, i64)]| {
        let block = &x[o * n * inner..(o + 1) * n * inner];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut best = (block[i], 0i64);
            for k in 1..n {
                let v = block[k * inner + i];
                let better = if largest { v > best.0 } else { v < best.0 };
                // NaN wins, as in PyTorch: it propagates instead of hiding.
                if better || (v.is_nan() && !best.0.is_nan()) {
                    best = (v, k as i64);
                }
            }
            *slot = best;
        }
    });
    pairs.into_iter().unzip()
}

/// Lanes of the partial maxima and sums below: independent accumulators the compiler keeps
/// in vector registers (a single running sum would fix the order and stay scalar).
const LANES: usize = 16;

/// Σ f(a[i], b[i]) over two equally long rows in `LANES` partial sums (same reason); slices
/// in exact chunks, so the loop has no bounds tests and vectorizes.
#[inline(always)]
pub fn lane_sum<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (a[..n].chunks_exact(LANES), b[..n].chunks_exact(LANES));
    let tail = a.remainder().iter().zip(b.remainder()).fold(T::zero(), |s, (&x, &y)| s + f(x, y));
    let mut lanes = [T::zero(); LANES];
    for (a, b) in a.zip(b) {
        for j in 0..LANES {
            lanes[j] += f(a[j], b[j]);
        }
    }
    tail + fold_lanes(lanes, |x, y| x + y)
}

/// The lanes combined pairwise, halves onto halves: a few shuffles of one vector register,
/// where folding them one by one took a chain of sixteen scalar steps (attention's forward
/// kernel at W7's shapes, rows of 32 scores: 245 → 231 µs).
#[inline(always)]
fn fold_lanes<T: Copy>(mut lanes: [T; LANES], f: impl Fn(T, T) -> T) -> T {
    let mut half = LANES / 2;
    while half > 0 {
        for j in 0..half {
            lanes[j] = f(lanes[j], lanes[j + half]);
        }
        half /= 2;
    }
    lanes[0]
}

/// The largest element of a row (−∞ for an empty row; NaN is passed over).
#[inline(always)]
pub(super) fn row_max<T: Float>(x: &[T]) -> T {
    let bigger = |a: T, b: T| if b > a { b } else { a };
    let mut lanes = [T::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let max = chunks.remainder().iter().fold(T::neg_infinity(), |m, &v| bigger(m, v));
    for c in chunks {
        for j in 0..LANES {
            lanes[j] = bigger(lanes[j], c[j]);
        }
    }
    bigger(max, fold_lanes(lanes, bigger))
}

/// `x ← e^((x − shift)·scale)` over a row, returning the sum of the results.
#[inline(always)]
pub(super) fn exp_shifted_sum<T: Float>(row: &mut [T], shift: T, scale: T) -> T {
    let mut sums = [T::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            c[j] = ((c[j] - shift) * scale).fast_exp();
            sums[j] += c[j];
        }
    }
    let mut tail = T::zero();
    for v in chunks.into_remainder() {
        *v = ((*v - shift) * scale).fast_exp();
        tail += *v;
    }
    tail + fold_lanes(sums, |x, y| x + y)
}

/// `ln Σ exp(x)` of each row of `row_len` elements, max-shifted for stability, rows across
/// threads; reads `x` only (cross-entropy keeps these instead of (N, C) log-probabilities).
pub fn log_sum_exp_rows<T: Float + Send + Sync>(x: &[T], row_len: usize) -> Vec<T> {
    if row_len == 0 {
        return Vec::new();
    }
    let one = |row: &[T]| {
        super::with_wide_vectors(
            #[inline(always)]
            || {
                let max = row_max(row);
                if max == T::neg_infinity() {
                    return max;
                }
                max + lane_sum(row, row, |v, _| (v - max).fast_exp()).ln()
            },
        )
    };
    if x.len() < PARALLEL_MIN {
        x.chunks(row_len).map(one).collect()
    } else {
        x.par_chunks(row_len).map(one).collect()
    }
}

/// Softmax (or log-softmax) of one contiguous row, max-shifted for stability.
#[inline(always)]
fn softmax_row<T: Float>(x: &[T], out: &mut [T], log: bool) {
    let out = &mut out[..x.len()];
    out.copy_from_slice(x);
    let max = row_max(x);
    let sum = exp_shifted_sum(out, max, T::one());
    if log {
        let shift = max + sum.ln();
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - shift;
        }
    } else {
        let inv = sum.recip();
        out.iter_mut().for_each(|o| *o = *o * inv);
    }
}

/// Softmax (or log-softmax) along the middle dimension, max-shifted for stability.
pub fn softmax_dim<T: Float + Send + Sync>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Vec<T> {
    let mut out = par_rows(outer, n * inner, |o, out: &mut [T]| {
        let block = &x[o * n * inner..(o + 1) * n * inner];
        if inner == 1 {
            return super::with_wide_vectors(
                #[inline(always)]
                || softmax_row(block, out, log),
            );
        }
        for i in 0..inner {
            let mut max = T::neg_infinity();
            for k in 0..n {
                max = max.max(block[k * inner + i]);
            }
            let mut sum = T::zero();
            for k in 0..n {
                let e = (block[k * inner + i] - max).fast_exp();
                out[k * inner + i] = e;
                sum += e;
            }
            if log {
                let lse = sum.ln();
                for k in 0..n {
                    out[k * inner + i] = block[k * inner + i] - max - lse;
                }
            } else {
                let inv = sum.recip();
                for k in 0..n {
                    out[k * inner + i] = out[k * inner + i] * inv;
                }
            }
        }
    });
    if n == 0 {
        out.clear();
    }
    out
}
