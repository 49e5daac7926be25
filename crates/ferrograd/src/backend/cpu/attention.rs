//! Multi-head scaled dot-product attention, fused: per sequence and head, the scores, their
//! softmax and the mix of values, forward and backward, reading the heads straight out of the
//! (B, T, H·E) projections. Only the softmax's log-normalizer is kept for backward (B·H·T
//! numbers), which recomputes the probabilities — no (T × S) matrix outlives its head.
//!
//! Legend: B batch, H heads, T queries, S keys, E head size, D = H·E.

use super::reduce::{exp_shifted_sum, lane_sum, row_max};
use super::{
    dense, matmul, matmul_rows, matmul_rows_accumulate, with_wide_vectors, write_row_major, zeroed,
    Float, MatRef,
};
use crate::backend::AttentionDims;
use rayon::prelude::*;

impl AttentionDims {
    fn model(&self) -> usize {
        self.heads * self.head_size
    }
    fn scale<T: Float>(&self) -> T {
        T::from(1.0 / (self.head_size as f64).sqrt()).unwrap_or(T::one())
    }
    /// How many keys query i may see by position: all of them, or the causal prefix.
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i + 1 + self.keys.saturating_sub(self.queries)).min(self.keys)
        } else {
            self.keys
        }
    }
    /// Query blocks as (first query, number of queries, keys they may see): one block of all
    /// queries and keys without `causal`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let size = if self.causal { QUERY_BLOCK } else { self.queries.max(1) };
        (0..self.queries).step_by(size).map(move |i0| {
            let n = size.min(self.queries - i0);
            (i0, n, self.visible(i0 + n - 1))
        })
    }
}

/// Causal attention runs in blocks of this many queries, each against only the keys its last
/// query sees: at T = S = 128 that is 62.5% of the products and exponentials of the whole
/// (T × S) square.
const QUERY_BLOCK: usize = 32;

/// Queries (per sequence) up to which forward reads the keys transposed in place instead of
/// copying them: the one-row products' kernel takes them so ([`super::matmul`]'s `rows_dot`).
const FEW_QUERIES: usize = 4;

/// Row i of raw scores with −∞ for every key query i may not see (past the causal prefix, or
/// masked out); the scale is left to the exponentials, a pass fewer. Contiguous loops, so they
/// vectorize.
#[inline(always)]
fn mask<T: Float>(row: &mut [T], i: usize, allowed: Option<&[bool]>, d: &AttentionDims) {
    let (seen, hidden) = row.split_at_mut(d.visible(i).min(row.len()));
    if let Some(allowed) = allowed {
        for (x, &ok) in seen.iter_mut().zip(allowed) {
            *x = if ok { *x } else { T::neg_infinity() };
        }
    }
    hidden.fill(T::neg_infinity());
}

/// Rows `from..` of head `h` of sequence `b` of a (B, N, D) tensor as an (N − from, E)
/// matrix, and its first rows transposed, (E, N).
fn head<'a, T>(
    x: &'a [T],
    d: &AttentionDims,
    n: usize,
    b: usize,
    h: usize,
    from: usize,
) -> MatRef<'a, T> {
    let at = (b * n + from) * d.model() + h * d.head_size;
    MatRef { data: &x[at..], row_stride: d.model(), col_stride: 1 }
}
fn head_t<'a, T>(x: &'a [T], d: &AttentionDims, n: usize, b: usize, h: usize) -> MatRef<'a, T> {
    MatRef { data: &x[b * n * d.model() + h * d.head_size..], row_stride: 1, col_stride: d.model() }
}
fn dense_t<T>(x: &[T], cols: usize) -> MatRef<'_, T> {
    MatRef { data: x, row_stride: 1, col_stride: cols }
}

/// Head `h` of sequence `b` (N keys) transposed into `dst`, (E, N) row-major, once per head:
/// the score products read it along rows. (Read in place, transposed, every product copied it
/// first, into a new allocation of its own.)
fn transposed_head<'a, T: Float>(
    x: &[T],
    d: &AttentionDims,
    n: usize,
    b: usize,
    h: usize,
    dst: &'a mut [T],
) -> MatRef<'a, T> {
    write_row_major(head_t(x, d, n, b, h), d.head_size, n, dst);
    dense(dst, n)
}

/// Scores of queries `i0..` (rows of `keys` raw products each) → probabilities in place;
/// `lse` gets each row's log-normalizer (+∞ for a row that sees no key: its probabilities are
/// all 0).
#[inline(always)]
pub(super) fn softmax_rows<T: Float>(
    p: &mut [T],
    keys: usize,
    i0: usize,
    lse: &mut [T],
    allowed: Option<&[bool]>,
    d: &AttentionDims,
) {
    let scale: T = d.scale();
    // Each step over all rows before the next: a row's steps depend on each other, rows do not,
    // so the processor overlaps rows (one row at a time waited on each step's latency).
    // The largest raw score is the largest scaled one (the scale is positive); `lse` holds
    // each row's maximum, then its sum, then its log-normalizer.
    for (i, (row, l)) in p.chunks_mut(keys).zip(lse.iter_mut()).enumerate() {
        mask(row, i0 + i, allowed, d);
        *l = row_max(row);
    }
    let mut maxima = [T::zero(); QUERY_BLOCK];
    for (rows, lse) in p.chunks_mut(keys * QUERY_BLOCK).zip(lse.chunks_mut(QUERY_BLOCK)) {
        let maxima = &mut maxima[..lse.len()];
        maxima.copy_from_slice(lse);
        for ((row, l), &max) in rows.chunks_mut(keys).zip(lse.iter_mut()).zip(maxima.iter()) {
            *l = if max == T::neg_infinity() {
                row.iter_mut().for_each(|x| *x = T::zero());
                T::zero()
            } else {
                exp_shifted_sum(row, max, scale)
            };
        }
        for ((row, l), &max) in rows.chunks_mut(keys).zip(lse.iter_mut()).zip(maxima.iter()) {
            let sum = *l;
            if sum == T::zero() {
                *l = T::infinity();
                continue;
            }
            let inv = sum.recip();
            row.iter_mut().for_each(|x| *x = *x * inv);
            *l = max * scale + sum.ln();
        }
    }
}

/// `softmax(Q Kᵀ / √E + masks) V` for (B, T, D) queries and (B, S, D) keys and values: the
/// (B, T, D) output and the (B, H, T) log-normalizers backward needs.
pub fn attention_forward<T: Float + Send + Sync>(
    q: &[T],
    k: &[T],
    v: &[T],
    allowed: Option<&[bool]>,
    d: &AttentionDims,
) -> (Vec<T>, Vec<T>) {
    let (t, s, e, dm) = (d.queries, d.keys, d.head_size, d.model());
    let (n_out, n_lse) = (d.batch * t * dm, d.batch * d.heads * t);
    if t == 0 || s == 0 || e == 0 {
        // No queries, no keys (every query gets 0, its normalizer +∞) or empty heads.
        let l = if s == 0 { T::infinity() } else { T::zero() };
        return (vec![T::zero(); n_out], vec![l; n_lse]);
    }
    let (mut out, mut lse) = (Vec::with_capacity(n_out), Vec::with_capacity(n_lse));
    let (out_parts, lse_parts) =
        (&mut out.spare_capacity_mut()[..n_out], &mut lse.spare_capacity_mut()[..n_lse]);
    out_parts
        .par_chunks_mut(t * dm)
        .zip(lse_parts.par_chunks_mut(d.heads * t))
        .enumerate()
        .for_each(|(b, (block, lse))| {
            let lse = zeroed(lse);
            let rows = if d.causal { QUERY_BLOCK.min(t) } else { t };
            // A step of generation reads the keys in place: each score is then one dot product
            // of contiguous rows, which costs less than copying the keys transposed.
            let in_place = t <= FEW_QUERIES;
            let mut p = vec![T::zero(); rows * s];
            let mut kt = if in_place { Vec::new() } else { vec![T::zero(); e * s] };
            let allowed = allowed.map(|a| &a[b * s..(b + 1) * s]);
            for h in 0..d.heads {
                let kt = match in_place {
                    true => head_t(k, d, s, b, h),
                    false => transposed_head(k, d, s, b, h, &mut kt),
                };
                for (i0, n, seen) in d.blocks() {
                    let p = &mut p[..n * seen];
                    matmul(head(q, d, t, b, h, i0), kt, n, e, seen, p, false);
                    let lse = &mut lse[h * t + i0..h * t + i0 + n];
                    with_wide_vectors(
                        #[inline(always)]
                        || softmax_rows(p, seen, i0, lse, allowed, d),
                    );
                    // Straight into this head's columns of the query block's rows.
                    let (mix, at) = ((n, seen, e), i0 * dm + h * e);
                    matmul_rows(dense(p, seen), head(v, d, s, b, h, 0), mix, &mut block[at..], dm);
                }
            }
        });
    // SAFETY: each sequence's block has every head's columns of every row written (the query
    // blocks cover the rows), and each normalizer chunk was zeroed.
    unsafe {
        out.set_len(n_out);
        lse.set_len(n_lse);
    }
    (out, lse)
}

/// The gradients of q, k and v from the output's gradient `dout` (B, T, D), recomputing the
/// probabilities from the saved log-normalizers: with P the probabilities and dP = dO Vᵀ,
/// dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = dS K / √E, dK = dSᵀ Q / √E, dV = Pᵀ dO.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float + Send + Sync>(
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    allowed: Option<&[bool]>,
    d: &AttentionDims,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (t, s, e, dm) = (d.queries, d.keys, d.head_size, d.model());
    let scale: T = d.scale();
    let (n_q, n_kv) = (d.batch * t * dm, d.batch * s * dm);
    if t == 0 || s == 0 || e == 0 {
        // Nothing flows: no queries, no keys (the output is constantly 0) or empty heads.
        return (vec![T::zero(); n_q], vec![T::zero(); n_kv], vec![T::zero(); n_kv]);
    }
    let mut dq = Vec::with_capacity(n_q);
    let (mut dk, mut dv) = (Vec::with_capacity(n_kv), Vec::with_capacity(n_kv));
    dq.spare_capacity_mut()[..n_q]
        .par_chunks_mut(t * dm)
        .zip(dk.spare_capacity_mut()[..n_kv].par_chunks_mut(s * dm))
        .zip(dv.spare_capacity_mut()[..n_kv].par_chunks_mut(s * dm))
        .enumerate()
        .for_each(|(b, ((dq_block, dk_block), dv_block))| {
            // dQ's rows come from their query block alone; dK and dV sum over the blocks.
            let (dk_block, dv_block) = (zeroed(dk_block), zeroed(dv_block));
            let rows = if d.causal { QUERY_BLOCK.min(t) } else { t };
            let (mut p, mut ds) = (vec![T::zero(); rows * s], vec![T::zero(); rows * s]);
            let (mut kt, mut vt) = (vec![T::zero(); e * s], vec![T::zero(); e * s]);
            let allowed = allowed.map(|a| &a[b * s..(b + 1) * s]);
            for h in 0..d.heads {
                let lse = &lse[(b * d.heads + h) * t..(b * d.heads + h + 1) * t];
                let kt = transposed_head(k, d, s, b, h, &mut kt);
                let vt = transposed_head(v, d, s, b, h, &mut vt);
                for (i0, n, seen) in d.blocks() {
                    let (p, ds) = (&mut p[..n * seen], &mut ds[..n * seen]);
                    let (q_rows, dout_rows) = (head(q, d, t, b, h, i0), head(dout, d, t, b, h, i0));
                    matmul(q_rows, kt, n, e, seen, p, false);
                    matmul(dout_rows, vt, n, e, seen, ds, false);
                    let at = |i: usize| (b * t + i0 + i) * dm + h * e;
                    // e^(−∞) = 0 for hidden keys, and for every key of a row that sees none (its
                    // log-normalizer is +∞). One closure, inlined whole, so that all of it is
                    // compiled for wide vectors.
                    with_wide_vectors(
                        #[inline(always)]
                        || {
                            // Row by row, one step at a time (as in `softmax_rows`).
                            for (i, p_row) in p.chunks_mut(seen).enumerate() {
                                mask(p_row, i0 + i, allowed, d);
                                let l = lse[i0 + i];
                                p_row.iter_mut().for_each(|x| *x = (*x * scale - l).fast_exp());
                            }
                            let rows = p.chunks(seen).zip(ds.chunks_mut(seen));
                            for (i, (p_row, ds_row)) in rows.enumerate() {
                                let (go, o) = (&dout[at(i)..at(i) + e], &out[at(i)..at(i) + e]);
                                let row_dot = lane_sum(go, o, |a, c| a * c);
                                for (x, &pij) in ds_row.iter_mut().zip(p_row) {
                                    *x = pij * (*x - row_dot) * scale;
                                }
                            }
                        },
                    );
                    // Straight into this head's columns: dV += Pᵀ dO, dK += dSᵀ Q, dQ = dS K.
                    let (kv, at_q) = ((seen, n, e), i0 * dm + h * e);
                    matmul_rows_accumulate(
                        dense_t(p, seen),
                        dout_rows,
                        kv,
                        &mut dv_block[h * e..],
                        dm,
                    );
                    matmul_rows_accumulate(
                        dense_t(ds, seen),
                        q_rows,
                        kv,
                        &mut dk_block[h * e..],
                        dm,
                    );
                    let k_rows = head(k, d, s, b, h, 0);
                    matmul_rows(dense(ds, seen), k_rows, (n, seen, e), &mut dq_block[at_q..], dm);
                }
            }
        });
    // SAFETY: dK and dV were zeroed, and dQ has every head's columns of every row written (the
    // query blocks cover the rows).
    unsafe {
        dq.set_len(n_q);
        dk.set_len(n_kv);
        dv.set_len(n_kv);
    }
    (dq, dk, dv)
}
