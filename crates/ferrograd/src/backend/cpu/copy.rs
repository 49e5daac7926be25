//! Data movement: strided gathers (permute, broadcast), block copies (narrow, concat) and
//! index-driven gathers and scatters.

use super::PARALLEL_MIN;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A contiguous tensor of shape `dims` whose element at index `i` is `x[Σ i_d · strides_d]`:
/// a permutation when `strides` are permuted, a broadcast when some are 0.
pub fn gather_strided<T: Copy + Send + Sync + Default>(
    x: &[T],
    dims: &[usize],
    strides: &[usize],
) -> Vec<T> {
    let n: usize = dims.iter().product();
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    if dims.is_empty() {
        out[0] = x[0];
        return out;
    }
    let last = dims.len() - 1;
    let (row, step) = (dims[last], strides[last]);
    if row == 0 {
        return out;
    }
    let fill = |first_row: usize, o: &mut [T]| {
        for (r, o) in o.chunks_mut(row).enumerate() {
            let mut rem = first_row + r;
            let mut off = 0;
            for d in (0..last).rev() {
                off += (rem % dims[d]) * strides[d];
                rem /= dims[d];
            }
            if step == 1 {
                o.copy_from_slice(&x[off..off + row]);
            } else {
                o.iter_mut().enumerate().for_each(|(i, o)| *o = x[off + i * step]);
            }
        }
    };
    if n < PARALLEL_MIN {
        fill(0, &mut out);
    } else {
        let rows = (super::CHUNK / row).max(1);
        out.par_chunks_mut(rows * row).enumerate().for_each(|(c, o)| fill(c * rows, o));
    }
    out
}

/// Copies block `src` (outer, n_src, inner) into `dst` (outer, n_dst, inner) at `offset` along
/// the middle dimension: the kernel of narrow's backward and of concat.
pub fn copy_block<T: Copy>(
    src: &[T],
    dst: &mut [T],
    outer: usize,
    n_src: usize,
    n_dst: usize,
    inner: usize,
    offset: usize,
) {
    for o in 0..outer {
        let s = &src[o * n_src * inner..(o + 1) * n_src * inner];
        let d0 = (o * n_dst + offset) * inner;
        dst[d0..d0 + n_src * inner].copy_from_slice(s);
    }
}

/// Rows `[start, start + len)` of the middle dimension of (outer, n, inner).
pub fn narrow<T: Copy>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    start: usize,
    len: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        out.extend_from_slice(&x[(o * n + start) * inner..(o * n + start + len) * inner]);
    }
    out
}

/// `out[o, j, i] = x[o, idx[j], i]` for (outer, n, inner) `x`; indices already checked.
pub fn index_select<T: Copy>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &j in idx {
            out.extend_from_slice(&x[(o * n + j) * inner..(o * n + j + 1) * inner]);
        }
    }
    out
}

/// `out[o, idx[j], i] += src[o, j, i]`: index_select's adjoint, into (outer, n, inner) zeros.
pub fn index_add<T: Copy + Default + std::ops::AddAssign>(
    src: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<T> {
    let mut out = vec![T::default(); outer * n * inner];
    for o in 0..outer {
        for (j, &t) in idx.iter().enumerate() {
            let s = &src[(o * idx.len() + j) * inner..(o * idx.len() + j + 1) * inner];
            let d = &mut out[(o * n + t) * inner..(o * n + t + 1) * inner];
            d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
        }
    }
    out
}

/// Along the middle dimension of index-shaped (outer, m, inner): `out[o, j, i] = x[o, idx[o,j,i], i]`
/// where `x` is (outer, n, inner).
pub fn gather_dim<T: Copy>(
    x: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    m: usize,
    idx: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * m * inner);
    for o in 0..outer {
        for j in 0..m {
            for i in 0..inner {
                out.push(x[(o * n + idx[(o * m + j) * inner + i]) * inner + i]);
            }
        }
    }
    out
}

/// gather_dim's adjoint: `base[o, idx[o,j,i], i] += src[o, j, i]`.
pub fn scatter_add_dim<T: Copy + std::ops::AddAssign>(
    base: &mut [T],
    outer: usize,
    n: usize,
    inner: usize,
    m: usize,
    idx: &[usize],
    src: &[T],
) {
    for o in 0..outer {
        for j in 0..m {
            for i in 0..inner {
                let k = (o * m + j) * inner + i;
                base[(o * n + idx[k]) * inner + i] += src[k];
            }
        }
    }
}

/// [`par_rows`] for kernels that write every element of their rows: no zeroing first.
///
/// # Safety
/// `f` must write all of the row it is given (the buffer is returned as initialized).
pub(crate) unsafe fn rows_written<T: Send>(
    rows: usize,
    row_len: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>]) + Send + Sync,
) -> Vec<T> {
    let fill = |out: &mut [MaybeUninit<T>]| {
        if row_len == 0 {
            return;
        }
        if rows * row_len < PARALLEL_MIN {
            out.chunks_mut(row_len).enumerate().for_each(|(r, o)| f(r, o));
        } else {
            out.par_chunks_mut(row_len).enumerate().for_each(|(r, o)| f(r, o));
        }
    };
    // SAFETY: the rows cover the output, and `f` writes every element of each (the caller's
    // promise).
    unsafe { super::filled_by(rows * row_len, fill) }
}

/// Parallel fill of a fresh buffer by rows, for kernels whose rows are independent; each row
/// reaches `f` zeroed (by the task that fills it, not by a serial memset beforehand).
pub fn par_rows<T: Send + Default>(
    rows: usize,
    row_len: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) -> Vec<T> {
    // SAFETY: each row is zeroed whole before `f` sees it.
    unsafe { rows_written(rows, row_len, |r, o| f(r, super::zeroed(o))) }
}
