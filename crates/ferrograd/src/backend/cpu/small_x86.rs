//! Small f32 matrix products with AVX-512, where the processor has it: attention's per-head
//! products (32×32×32 at W7's and W5's shapes, seven per head and step) and generation's
//! one-row products. At that size gemm's work per call — dispatch, scratch memory, packing
//! both operands — costs a third of the time: 0.92 µs a 32×32×32 product through gemm, 0.64 µs
//! here (one thread; W5's generation +7%, its training +0.7%, W7 +0.3%). gemm is the twin the
//! test checks this against, and does every other product.

use super::MatRef;
use std::any::TypeId;
use std::arch::x86_64::*;

/// Products of at most this many multiply-adds (m·k·n) count as small.
pub const SMALL_PRODUCT: usize = 64 * 64 * 64;

/// Whether [`small_product`] runs here for element type `T`.
pub fn available<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f")
}

/// `out (+)= a · b` for an (m, k) `a` and a (k, n) `b` with column stride 1, into the rows of
/// `out` `row_stride` apart: register tiles of 4 rows × 32 columns (eight accumulators), each
/// summed over k in order, masked at a ragged right edge, written once.
///
/// # Safety
/// [`available`]`::<T>()` holds; `a` and `b` span their matrices; `out` is valid for
/// (m − 1)·row_stride + n elements, initialized when `accumulate`.
pub unsafe fn small_product<T: 'static>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
) {
    debug_assert!(available::<T>() && b.col_stride == 1);
    let a = Operand { at: a.data.as_ptr() as *const f32, rows: a.row_stride, cols: a.col_stride };
    let b = Operand { at: b.data.as_ptr() as *const f32, rows: b.row_stride, cols: 1 };
    // SAFETY: T is f32 with AVX-512F present, and the spans are the caller's promise.
    unsafe { kernel(a, b, (m, k, n), out as *mut f32, row_stride, accumulate) }
}

#[derive(Clone, Copy)]
struct Operand {
    at: *const f32,
    rows: usize,
    cols: usize,
}

/// The first `c` of 16 lanes.
#[inline(always)]
fn first(c: usize) -> __mmask16 {
    ((1u32 << c.min(16)) - 1) as __mmask16
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel(
    a: Operand,
    b: Operand,
    (m, k, n): (usize, usize, usize),
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
) {
    for j0 in (0..n).step_by(32) {
        let cols = (n - j0).min(32);
        let masks = (first(cols), first(cols.saturating_sub(16)));
        let mut i0 = 0;
        while i0 + 4 <= m {
            // SAFETY: rows i0..i0 + 4 < m and columns j0..j0 + cols ≤ n (the masks).
            unsafe { tile::<4>(a, b, (i0, j0), k, masks, out, row_stride, accumulate) };
            i0 += 4;
        }
        for i in i0..m {
            // SAFETY: as above.
            unsafe { tile::<1>(a, b, (i, j0), k, masks, out, row_stride, accumulate) };
        }
    }
}

/// Rows `i0..i0 + R`, columns `j0..` (as far as the masks reach) of the product.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    a: Operand,
    b: Operand,
    (i0, j0): (usize, usize),
    k: usize,
    (lo_mask, hi_mask): (__mmask16, __mmask16),
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
) {
    // SAFETY (whole body): every read and write is masked to lanes inside the matrices; the
    // pointers to masked-off lanes are formed with wrapping_add and never dereferenced.
    unsafe {
        let (mut lo, mut hi) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
        for p in 0..k {
            let row = b.at.wrapping_add(p * b.rows + j0);
            let (b_lo, b_hi) = (
                _mm512_maskz_loadu_ps(lo_mask, row),
                _mm512_maskz_loadu_ps(hi_mask, row.wrapping_add(16)),
            );
            for r in 0..R {
                let x = _mm512_set1_ps(*a.at.add((i0 + r) * a.rows + p * a.cols));
                lo[r] = _mm512_fmadd_ps(x, b_lo, lo[r]);
                hi[r] = _mm512_fmadd_ps(x, b_hi, hi[r]);
            }
        }
        for r in 0..R {
            let o = out.wrapping_add((i0 + r) * row_stride + j0);
            let (mut v_lo, mut v_hi) = (lo[r], hi[r]);
            if accumulate {
                v_lo = _mm512_add_ps(v_lo, _mm512_maskz_loadu_ps(lo_mask, o));
                v_hi = _mm512_add_ps(v_hi, _mm512_maskz_loadu_ps(hi_mask, o.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(o, lo_mask, v_lo);
            _mm512_mask_storeu_ps(o.wrapping_add(16), hi_mask, v_hi);
        }
    }
}

/// Products with at most this many rows whose right operand is a transposed weight go to
/// [`rows_dot`]: generation's one-row `x · Wᵀ`, a dot product per output, where gemm's tiles
/// (made for many rows) add work and no reuse.
pub const DOT_ROWS: usize = 4;

/// `out (+)= a · b` for an (m, k) `a` with column stride 1 and a (k, n) `b` with row stride 1
/// (Wᵀ for a row-major (n, k) weight W, so that each output is a dot product of two contiguous
/// rows): eight rows of W at a time, each an accumulator over k in 16-lane steps, masked at
/// the end of k, reduced and written once. Columns `cols` of the output only (a thread's
/// share); rows of `out` are `row_stride` apart.
///
/// # Safety
/// [`available`]`::<T>()` holds; `a` and `b` span their matrices with those unit strides;
/// `cols.start ≤ cols.end ≤ n`; `out` is valid for (m − 1)·row_stride + n elements,
/// initialized when `accumulate`.
pub unsafe fn rows_dot<T: 'static>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    cols: std::ops::Range<usize>,
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
) {
    debug_assert!(available::<T>() && a.col_stride == 1 && b.row_stride == 1 && cols.end <= n);
    let (x, w) = (a.data.as_ptr() as *const f32, b.data.as_ptr() as *const f32);
    let out = out as *mut f32;
    for i in 0..m {
        // SAFETY: T is f32 with AVX-512F present; row i of a and rows `cols` of W are inside
        // their spans, and out's row i holds n ≥ cols.end elements.
        unsafe {
            let x = x.add(i * a.row_stride);
            let o = out.add(i * row_stride);
            let mut j = cols.start;
            while j + 8 <= cols.end {
                dots::<8>(x, w, b.col_stride, j, k, o, accumulate);
                j += 8;
            }
            for j in j..cols.end {
                dots::<1>(x, w, b.col_stride, j, k, o, accumulate);
            }
        }
    }
}

/// `o[j..j + R] (+)= x · W[j..j + R]ᵀ`, W's rows `stride` apart.
#[target_feature(enable = "avx512f")]
unsafe fn dots<const R: usize>(
    x: *const f32,
    w: *const f32,
    stride: usize,
    j: usize,
    k: usize,
    o: *mut f32,
    accumulate: bool,
) {
    // SAFETY (whole body): loads are masked to p..k, inside x's row and W's rows j..j + R.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut p = 0;
        while p < k {
            let mask = first(k - p);
            let xv = _mm512_maskz_loadu_ps(mask, x.add(p));
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = _mm512_maskz_loadu_ps(mask, w.add((j + r) * stride + p));
                *acc = _mm512_fmadd_ps(xv, wv, *acc);
            }
            p += 16;
        }
        for (r, acc) in acc.iter().enumerate() {
            let sum = _mm512_reduce_add_ps(*acc);
            let at = o.add(j + r);
            *at = if accumulate { *at + sum } else { sum };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{matmul, matmul_rows_accumulate};

    /// `got` holds `want`'s (m, n) rows `stride` apart with the -7 sentinels between them
    /// untouched, and `sum` twice `want` (the product added onto itself).
    fn check_strided(
        got: &[f32],
        sum: &[f32],
        want: &[f32],
        (m, n): (usize, usize),
        stride: usize,
    ) {
        for i in 0..m {
            assert_eq!(&got[i * stride..i * stride + n], &want[i * n..(i + 1) * n], "row {i}");
            let twice: Vec<f32> = want[i * n..(i + 1) * n].iter().map(|w| 2.0 * w).collect();
            assert_eq!(&sum[i * stride..i * stride + n], &twice[..], "{m}×{n} row {i}");
            if i + 1 < m {
                assert!(got[i * stride + n..(i + 1) * stride].iter().all(|&v| v == -7.0));
            }
        }
    }

    #[test]
    fn small_products_equal_gemms_for_ragged_shapes_transposes_and_sums() {
        if !available::<f32>() {
            return; // nothing to compare on this processor
        }
        for (m, k, n) in [(1, 1, 1), (3, 7, 15), (4, 32, 16), (5, 9, 17), (32, 32, 32), (9, 3, 70)]
        {
            // Small integers: every partial sum is exact, whatever the order.
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let dense_a = MatRef { data: &a[..], row_stride: k, col_stride: 1 };
            let transposed_a = MatRef { data: &a[..], row_stride: 1, col_stride: m };
            let b = MatRef { data: &b[..], row_stride: n, col_stride: 1 };
            for a in [dense_a, transposed_a] {
                let mut want = vec![0.0f32; m * n];
                matmul(a, b, m, k, n, &mut want, false);
                // Rows 3 apart wider than n, with a sentinel between them that must survive.
                let stride = n + 3;
                let mut got = vec![-7.0f32; (m - 1) * stride + n];
                // SAFETY: f32 with AVX-512F (checked above); got holds (m − 1)·stride + n.
                unsafe { small_product(a, b, (m, k, n), got.as_mut_ptr(), stride, false) };
                let mut sum = got.clone();
                unsafe { small_product(a, b, (m, k, n), sum.as_mut_ptr(), stride, true) };
                check_strided(&got, &sum, &want, (m, n), stride);
                // And through the public path, which picks this kernel for small products.
                let mut through = want.clone();
                matmul_rows_accumulate(a, b, (m, k, n), &mut through, n);
                assert_eq!(through, want.iter().map(|w| 2.0 * w).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn row_dots_equal_the_naive_sum_for_ragged_shapes_column_ranges_and_sums() {
        if !available::<f32>() {
            return;
        }
        for (m, k, n) in [(1, 1, 1), (1, 15, 9), (1, 16, 8), (2, 17, 23), (4, 128, 65), (3, 33, 7)]
        {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let a = MatRef { data: &a[..], row_stride: k, col_stride: 1 };
            let wt = MatRef { data: &w[..], row_stride: 1, col_stride: k }; // Wᵀ, (k, n)
                                                                            // The naive sum, exact on small integers whatever the order.
            let want: Vec<f32> = (0..m * n)
                .map(|o| (0..k).map(|p| a.data[o / n * k + p] * w[o % n * k + p]).sum())
                .collect();
            let stride = n + 2;
            let mut got = vec![-7.0f32; (m - 1) * stride + n];
            // Two column ranges, as two threads would split them.
            let half = n / 2;
            for cols in [0..half, half..n] {
                unsafe { rows_dot(a, wt, (m, k, n), cols, got.as_mut_ptr(), stride, false) };
            }
            let mut sum = got.clone();
            unsafe { rows_dot(a, wt, (m, k, n), 0..n, sum.as_mut_ptr(), stride, true) };
            check_strided(&got, &sum, &want, (m, n), stride);
            // And through the public path, which picks this kernel for few rows.
            let mut through = want.clone();
            matmul_rows_accumulate(a, wt, (m, k, n), &mut through, n);
            assert_eq!(through, want.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
        }
    }
}
