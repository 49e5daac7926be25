//! Element-wise kernels: maps of one tensor, and zips of two with NumPy broadcasting.

use super::{with_wide_vectors, CHUNK, PARALLEL_MIN};
use rayon::prelude::*;

/// `f` applied to every element.
pub fn map<T: Copy + Send + Sync, U: Copy + Send + Sync + Default>(
    x: &[T],
    f: impl Fn(T) -> U + Send + Sync,
) -> Vec<U> {
    let mut out = vec![U::default(); x.len()];
    // Maps are mostly the compute-heavy functions (exp, tanh, GELU's erf): wide vectors.
    let run = |(o, i): (&mut [U], &[T])| {
        with_wide_vectors(
            #[inline(always)]
            || o.iter_mut().zip(i).for_each(|(o, &i)| *o = f(i)),
        )
    };
    if x.len() < PARALLEL_MIN {
        run((&mut out, x));
    } else {
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(run);
    }
    out
}

/// `f` applied pairwise to two equally long slices.
pub fn zip<T: Copy + Send + Sync, U: Copy + Send + Sync, V: Copy + Send + Sync + Default>(
    a: &[T],
    b: &[U],
    f: impl Fn(T, U) -> V + Send + Sync,
) -> Vec<V> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![V::default(); a.len()];
    let run = |((o, a), b): ((&mut [V], &[T]), &[U])| {
        o.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = f(a, b))
    };
    if a.len() < PARALLEL_MIN {
        run(((&mut out, a), b));
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(run);
    }
    out
}

/// `f` applied pairwise to `a` and `b` read through broadcast strides (0 along broadcast
/// dimensions) over an output of shape `dims`.
pub fn zip_broadcast<
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    V: Copy + Send + Sync + Default,
>(
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
    let last = dims.len() - 1;
    let row = dims[last].max(1);
    let (sa, sb) = (a_strides[last], b_strides[last]);
    let mut out = vec![V::default(); n];
    let run_rows = |first_row: usize, out: &mut [V]| {
        for (r, o) in out.chunks_mut(row).enumerate() {
            let (oa, ob) =
                row_offsets(first_row + r, &dims[..last], &a_strides[..last], &b_strides[..last]);
            match (sa, sb) {
                (1, 1) => o
                    .iter_mut()
                    .zip(&a[oa..oa + row])
                    .zip(&b[ob..ob + row])
                    .for_each(|((o, &x), &y)| *o = f(x, y)),
                (1, 0) => o.iter_mut().zip(&a[oa..oa + row]).for_each(|(o, &x)| *o = f(x, b[ob])),
                (0, 1) => o.iter_mut().zip(&b[ob..ob + row]).for_each(|(o, &y)| *o = f(a[oa], y)),
                _ => o
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, o)| *o = f(a[oa + i * sa], b[ob + i * sb])),
            }
        }
    };
    if n < PARALLEL_MIN {
        run_rows(0, &mut out);
    } else {
        let rows_per_chunk = (CHUNK / row).max(1);
        out.par_chunks_mut(rows_per_chunk * row)
            .enumerate()
            .for_each(|(c, o)| run_rows(c * rows_per_chunk, o));
    }
    out
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
pub fn zip3<T: Copy + Send + Sync, V: Copy + Send + Sync + Default>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> V + Send + Sync,
) -> Vec<V> {
    let mut out = vec![V::default(); a.len()];
    let run = |(((o, a), b), c): (((&mut [V], &[T]), &[T]), &[T])| {
        // Equal lengths up front: no bounds checks in the loop, so it vectorizes.
        let n = o.len();
        let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
        // The backward passes of those functions: wide vectors too.
        with_wide_vectors(
            #[inline(always)]
            || {
                for i in 0..n {
                    o[i] = f(a[i], b[i], c[i]);
                }
            },
        )
    };
    if a.len() < PARALLEL_MIN {
        run((((&mut out, a), b), c));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .zip(c.par_chunks(CHUNK))
            .for_each(run);
    }
    out
}
