//! Matrix products through the `gemm` crate, with strided operands so that transposes in
//! backward passes cost no copy.

use super::Float;
use gemm::Parallelism;
use rayon::prelude::*;

/// Products smaller than this (m·k·n) run on one thread.
const PARALLEL_FLOPS: usize = 1 << 18;

/// A matrix operand: its data and the strides of its rows and columns (in elements).
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `out = a · b` for an (m, k) `a` and a (k, n) `b`; `out` is (m, n) row-major.
pub fn matmul<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    m: usize,
    k: usize,
    n: usize,
    out: &mut [T],
    threads: bool,
) {
    debug_assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.iter_mut().for_each(|o| *o = T::zero());
        return;
    }
    let parallelism = if threads && m * k * n >= PARALLEL_FLOPS {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // SAFETY: the slices outlive the call and the strides/sizes stay within them: `a` spans
    // (m-1)·rs + (k-1)·cs < len, likewise `b`, and `out` is exactly m·n row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A batch of products; `a_offsets[i]`, `b_offsets[i]` locate the i-th operands. Many small
/// products run one per thread; few large ones each use all threads.
pub fn matmul_batched<T: Float + Send + Sync>(
    a: MatRef<T>,
    a_offsets: &[usize],
    b: MatRef<T>,
    b_offsets: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    let batch = a_offsets.len();
    let mut out = vec![T::zero(); batch * m * n];
    if m * n == 0 {
        return out;
    }
    let one = |i: usize, o: &mut [T], threads: bool| {
        let ai = MatRef { data: &a.data[a_offsets[i]..], ..a };
        let bi = MatRef { data: &b.data[b_offsets[i]..], ..b };
        matmul(ai, bi, m, k, n, o, threads);
    };
    if batch > 1 && m * k * n < 4 * PARALLEL_FLOPS {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, false));
    } else {
        out.chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, true));
    }
    out
}
