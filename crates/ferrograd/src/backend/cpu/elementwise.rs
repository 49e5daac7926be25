//! Element-wise kernels: maps of one tensor, and zips of two with NumPy broadcasting. Each
//! writes every element of a fresh output, so outputs are not zeroed first (that doubled the
//! bytes written: 3% of W7's step in memset, by perf).

use super::{filled_by, with_wide_vectors, CHUNK, PARALLEL_MIN};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `f` applied to every element.
pub fn map<T: Copy + Send + Sync, U: Copy + Send + Sync>(
    x: &[T],
    f: impl Fn(T) -> U + Send + Sync,
) -> Vec<U> {
    // Maps are mostly the compute-heavy functions (exp, tanh, GELU's erf): wide vectors.
    let run = |(o, i): (&mut [MaybeUninit<U>], &[T])| {
        with_wide_vectors(
            #[inline(always)]
            || o.iter_mut().zip(i).for_each(|(o, &i)| *o = MaybeUninit::new(f(i))),
        )
    };
    let all = |out: &mut [MaybeUninit<U>]| {
        if x.len() < PARALLEL_MIN {
            run((out, x));
        } else {
            out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(run);
        }
    };
    // SAFETY: the chunks of `out` pair with those of `x`, equally long, and each is written.
    unsafe { filled_by(x.len(), all) }
}

/// `f` applied pairwise to two equally long slices.
#[allow(clippy::type_complexity)]
pub fn zip<T: Copy + Send + Sync, U: Copy + Send + Sync, V: Copy + Send + Sync>(
    a: &[T],
    b: &[U],
    f: impl Fn(T, U) -> V + Send + Sync,
) -> Vec<V> {
    assert_eq!(a.len(), b.len(), "zip: operands of {} and {} elements", a.len(), b.len());
    let run = |((o, a), b): ((&mut [MaybeUninit<V>], &[T]), &[U])| {
        o.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = MaybeUninit::new(f(a, b)))
    };
    let all = |out: &mut [MaybeUninit<V>]| {
        if a.len() < PARALLEL_MIN {
            run(((out, a), b));
        } else {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK))
                .zip(b.par_chunks(CHUNK))
                .for_each(run);
        }
    };
    // SAFETY: `out`, `a` and `b` are equally long (asserted), so every chunk is written.
    unsafe { filled_by(a.len(), all) }
}

/// `dst += src`, element by element (equal lengths).
pub fn add_assign<T: Copy + Send + Sync + std::ops::AddAssign>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "add_assign: {} and {} elements", dst.len(), src.len());
    let run = |(d, s): (&mut [T], &[T])| d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
    if dst.len() < PARALLEL_MIN {
        run((dst, src));
    } else {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(run);
    }
}

/// `f` applied pairwise to `a` and `b` read through broadcast strides (0 along broadcast
/// dimensions) over an output of shape `dims`.
pub fn zip_broadcast<T: Copy + Send + Sync, U: Copy + Send + Sync, V: Copy + Send + Sync>(
    a: &[T],
    a_strides: &[usize],
    b: &[U],
    b_strides: &[usize],
    dims: &[usize],
    f: impl Fn(T, U) -> V + Send + Sync,
) -> Vec<V> {
    let n: usize = dims.iter().product();
    if dims.is_empty() {
        return vec![f(a[0], b[0])];
    }
    if n == 0 {
        return Vec::new();
    }
    let last = dims.len() - 1;
    let row = dims[last].max(1);
    let (sa, sb) = (a_strides[last], b_strides[last]);
    let run_rows = |first_row: usize, out: &mut [MaybeUninit<V>]| {
        for (r, o) in out.chunks_mut(row).enumerate() {
            let (oa, ob) =
                row_offsets(first_row + r, &dims[..last], &a_strides[..last], &b_strides[..last]);
            match (sa, sb) {
                (1, 1) => o
                    .iter_mut()
                    .zip(&a[oa..oa + row])
                    .zip(&b[ob..ob + row])
                    .for_each(|((o, &x), &y)| *o = MaybeUninit::new(f(x, y))),
                (1, 0) => o
                    .iter_mut()
                    .zip(&a[oa..oa + row])
                    .for_each(|(o, &x)| *o = MaybeUninit::new(f(x, b[ob]))),
                (0, 1) => o
                    .iter_mut()
                    .zip(&b[ob..ob + row])
                    .for_each(|(o, &y)| *o = MaybeUninit::new(f(a[oa], y))),
                _ => o
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, o)| *o = MaybeUninit::new(f(a[oa + i * sa], b[ob + i * sb]))),
            }
        }
    };
    let all = |out: &mut [MaybeUninit<V>]| {
        if n < PARALLEL_MIN {
            run_rows(0, out);
        } else {
            let rows_per_chunk = (CHUNK / row).max(1);
            out.par_chunks_mut(rows_per_chunk * row)
                .enumerate()
                .for_each(|(c, o)| run_rows(c * rows_per_chunk, o));
        }
    };
    // SAFETY: n > 0 (checked above) is a whole number of rows of `row` elements (the last
    // dimension), and every element of every row is written.
    unsafe { filled_by(n, all) }
}

/// Offsets into `a` and `b` of the start of output row `r` (rows span the last dimension).
fn row_offsets(mut r: usize, lead: &[usize], sa: &[usize], sb: &[usize]) -> (usize, usize) {
    let (mut oa, mut ob) = (0, 0);
    for d in (0..lead.len()).rev() {
        let i = r % lead[d];
        r /= lead[d];
        oa += i * sa[d];
        ob += i * sb[d];
    }
    (oa, ob)
}

/// `f` applied to three equally long slices: the shape of most element-wise backward passes.
#[allow(clippy::type_complexity)]
pub fn zip3<T: Copy + Send + Sync, V: Copy + Send + Sync>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> V + Send + Sync,
) -> Vec<V> {
    assert!(b.len() == a.len() && c.len() == a.len(), "zip3: operands differ in length");
    let run = |(((o, a), b), c): (((&mut [MaybeUninit<V>], &[T]), &[T]), &[T])| {
        // Equal lengths up front: no bounds checks in the loop, so it vectorizes.
        let n = o.len();
        let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
        // The backward passes of those functions: wide vectors too.
        with_wide_vectors(
            #[inline(always)]
            || {
                for i in 0..n {
                    o[i] = MaybeUninit::new(f(a[i], b[i], c[i]));
                }
            },
        )
    };
    let all = |out: &mut [MaybeUninit<V>]| {
        if a.len() < PARALLEL_MIN {
            run((((out, a), b), c));
        } else {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK))
                .zip(b.par_chunks(CHUNK))
                .zip(c.par_chunks(CHUNK))
                .for_each(run);
        }
    };
    // SAFETY: all four are equally long (asserted), so every chunk of `out` is written.
    unsafe { filled_by(a.len(), all) }
}
