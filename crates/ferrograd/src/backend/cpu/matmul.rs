//! Matrix products through the `gemm` crate, with strided operands so that transposes in
//! backward passes cost no copy.

use super::Float;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Products smaller than this (m·k·n) run on one thread.
const PARALLEL_FLOPS: usize = 1 << 18;

/// A transposed right operand is copied row-major when the left one has at least this many
/// rows (so the copy costs at most 1/16 of the product's reads of it).
const REPACK_MIN: usize = 16;

/// The (rows, cols) matrix `x` as a contiguous row-major copy. A transposed row-major matrix
/// (row stride 1) is copied in 4×4 blocks that SSE transposes in registers (several times
/// faster than 0.7 ns an element one by one), bands of rows across threads.
pub fn to_row_major<T: Float + Send + Sync>(
    x: MatRef<T>,
    rows: usize,
    cols: usize,
    threads: bool,
) -> Vec<T> {
    // Bands of 64 rows: the 64 output lines a band is writing stay in L1 until complete.
    const BAND: usize = 64;
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let band = |r0: usize, dst: &mut [MaybeUninit<T>]| {
        for (i, dst) in dst.chunks_mut(BAND * cols).enumerate() {
            let (r, band_rows) = (r0 + i * BAND, dst.len() / cols);
            let src = MatRef { data: &x.data[r * x.row_stride..], ..x };
            copy_row_major(src, band_rows, cols, dst);
        }
    };
    // A few bands per thread: enough to balance, few enough that hand-offs cost nothing.
    let per_task = (rows / (4 * rayon::current_num_threads())).next_multiple_of(BAND).max(BAND);
    let chunk = per_task * cols;
    let fill = |out: &mut [MaybeUninit<T>]| {
        if threads && rows * cols >= super::PARALLEL_MIN {
            out.par_chunks_mut(chunk).enumerate().for_each(|(i, d)| band(i * per_task, d));
        } else {
            band(0, out);
        }
    };
    // SAFETY: the bands are whole rows covering the output, and every (row, column) of each is
    // written, by the 4×4 blocks and their edges or by the loop.
    unsafe { super::filled_by(rows * cols, fill) }
}

/// The (rows, cols) matrix `x` written row-major into `dst` (all of its rows·cols elements),
/// on this thread: [`to_row_major`]'s work for one band of rows.
pub fn copy_row_major<T: Float>(
    x: MatRef<T>,
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<T>],
) {
    if x.row_stride == 1 && transpose_f32(x.data, x.col_stride, dst, rows, cols) {
        return;
    }
    for c in 0..cols {
        for r in 0..rows {
            dst[r * cols + c].write(x.data[r * x.row_stride + c * x.col_stride]);
        }
    }
}

/// [`copy_row_major`] into initialized memory (a scratch buffer used again and again).
pub fn write_row_major<T: Float>(x: MatRef<T>, rows: usize, cols: usize, dst: &mut [T]) {
    assert!(dst.len() >= rows * cols, "write_row_major: {rows}×{cols} into {}", dst.len());
    // SAFETY: MaybeUninit<T> has T's layout, and copy_row_major writes only values of T.
    let dst = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
    copy_row_major(x, rows, cols, dst)
}

/// `dst[r·cols + c] = src[c·stride + r]` for an f32 `T` on x86-64 (false, doing nothing,
/// otherwise): in 8×8 blocks through AVX2 where the processor has it, else 4×4 blocks through
/// SSE (x86-64's baseline).
fn transpose_f32<T: Float>(
    src: &[T],
    stride: usize,
    dst: &mut [MaybeUninit<T>],
    rows: usize,
    cols: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        assert!(cols == 0 || rows == 0 || (cols - 1) * stride + rows <= src.len());
        assert!(dst.len() >= rows * cols);
        // SAFETY: T is f32 (same TypeId), so the casts only name the type; the lengths are
        // those the kernels need (asserted), and AVX2 is checked.
        unsafe {
            let (s, d) = (src.as_ptr() as *const f32, dst.as_mut_ptr() as *mut f32);
            if is_x86_feature_detected!("avx2") {
                transpose_avx2(s, stride, d, rows, cols);
            } else {
                transpose_sse(s, stride, d, rows, cols);
            }
        }
        return true;
    }
    let _ = (src, stride, dst, rows, cols);
    false
}

/// [`transpose_f32`] in 4×4 blocks through SSE, the ragged edges one by one.
///
/// # Safety
/// `s` must hold `(cols - 1)·stride + rows` elements and `d` `rows·cols`.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose_sse(s: *const f32, stride: usize, d: *mut f32, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
    for c in (0..c4).step_by(4) {
        for r in (0..r4).step_by(4) {
            let p = s.add(c * stride + r);
            let (a, b) = (_mm_loadu_ps(p), _mm_loadu_ps(p.add(stride)));
            let (e, f) = (_mm_loadu_ps(p.add(2 * stride)), _mm_loadu_ps(p.add(3 * stride)));
            let (ab_lo, ef_lo) = (_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(e, f));
            let (ab_hi, ef_hi) = (_mm_unpackhi_ps(a, b), _mm_unpackhi_ps(e, f));
            let q = d.add(r * cols + c);
            _mm_storeu_ps(q, _mm_movelh_ps(ab_lo, ef_lo));
            _mm_storeu_ps(q.add(cols), _mm_movehl_ps(ef_lo, ab_lo));
            _mm_storeu_ps(q.add(2 * cols), _mm_movelh_ps(ab_hi, ef_hi));
            _mm_storeu_ps(q.add(3 * cols), _mm_movehl_ps(ef_hi, ab_hi));
        }
        for r in r4..rows {
            for cc in c..c + 4 {
                *d.add(r * cols + cc) = *s.add(cc * stride + r);
            }
        }
    }
    for c in c4..cols {
        for r in 0..rows {
            *d.add(r * cols + c) = *s.add(c * stride + r);
        }
    }
}

/// [`transpose_f32`] in 8×8 blocks through AVX2, bands of 64 output rows at a time so that
/// the lines being written stay in L1; the ragged edges one by one.
///
/// # Safety
/// AVX2 must be available; `s` must hold `(cols - 1)·stride + rows` elements and `d`
/// `rows·cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(s: *const f32, stride: usize, d: *mut f32, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    const BAND: usize = 64;
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    for band in (0..r8).step_by(BAND) {
        for c in (0..c8).step_by(8) {
            for r in (band..r8.min(band + BAND)).step_by(8) {
                // Source rows c..c + 8 (8 elements each from r) become output rows r..r + 8.
                let p = s.add(c * stride + r);
                let x = |i: usize| _mm256_loadu_ps(p.add(i * stride));
                let (x0, x1, x2, x3) = (x(0), x(1), x(2), x(3));
                let (x4, x5, x6, x7) = (x(4), x(5), x(6), x(7));
                let (t0, t1) = (_mm256_unpacklo_ps(x0, x1), _mm256_unpackhi_ps(x0, x1));
                let (t2, t3) = (_mm256_unpacklo_ps(x2, x3), _mm256_unpackhi_ps(x2, x3));
                let (t4, t5) = (_mm256_unpacklo_ps(x4, x5), _mm256_unpackhi_ps(x4, x5));
                let (t6, t7) = (_mm256_unpacklo_ps(x6, x7), _mm256_unpackhi_ps(x6, x7));
                // u[j]: output rows j and j + 4, of source rows 0..4 (j < 4) or 4..8.
                let u = [
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                    _mm256_shuffle_ps::<0x44>(t4, t6),
                    _mm256_shuffle_ps::<0xEE>(t4, t6),
                    _mm256_shuffle_ps::<0x44>(t5, t7),
                    _mm256_shuffle_ps::<0xEE>(t5, t7),
                ];
                let q = d.add(r * cols + c);
                for j in 0..4 {
                    let (lo, hi) = (u[j], u[j + 4]);
                    _mm256_storeu_ps(q.add(j * cols), _mm256_permute2f128_ps::<0x20>(lo, hi));
                    _mm256_storeu_ps(q.add((j + 4) * cols), _mm256_permute2f128_ps::<0x31>(lo, hi));
                }
            }
        }
    }
    for r in 0..rows {
        let from = if r < r8 { c8 } else { 0 };
        for c in from..cols {
            *d.add(r * cols + c) = *s.add(c * stride + r);
        }
    }
}

/// A matrix operand: its data and the strides of its rows and columns (in elements).
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The transpose, as a view.
    pub fn t(self) -> MatRef<'a, T> {
        MatRef { data: self.data, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

/// A row-major (rows, `cols`) matrix.
pub fn dense<T>(data: &[T], cols: usize) -> MatRef<'_, T> {
    MatRef { data, row_stride: cols, col_stride: 1 }
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
    // SAFETY: T and MaybeUninit<T> have one layout, and only initialized values are written.
    let out = unsafe { &mut *(out as *mut [T] as *mut [MaybeUninit<T>]) };
    matmul_uninit(a, b, m, k, n, out, threads)
}

/// [`matmul`] into memory not yet initialized: every element of `out` is written.
pub fn matmul_uninit<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    m: usize,
    k: usize,
    n: usize,
    out: &mut [MaybeUninit<T>],
    threads: bool,
) {
    assert_eq!(out.len(), m * n, "matmul: output of {} for {m}×{n}", out.len());
    if k == 0 {
        out.iter_mut().for_each(|o| {
            o.write(T::zero());
        });
        return;
    }
    product_into(a, b, (m, k, n), out.as_mut_ptr() as *mut T, false, threads)
}

/// `out += a · b`, `out` (m, n) row-major: for an affine map, the product added onto rows
/// that already hold the bias, in the same pass over `out`.
pub fn matmul_accumulate<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    m: usize,
    k: usize,
    n: usize,
    out: &mut [T],
    threads: bool,
) {
    assert_eq!(out.len(), m * n, "matmul: output of {} for {m}×{n}", out.len());
    if k > 0 {
        product_into(a, b, (m, k, n), out.as_mut_ptr(), true, threads)
    }
}

/// `out = a · b` on this thread, into the (m, n) matrix whose rows lie `row_stride` apart in
/// `out`: the columns of a wider matrix (one head's of attention's (T, D) output), written in
/// place instead of into a scratch matrix and copied over.
pub fn matmul_rows<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: &mut [MaybeUninit<T>],
    row_stride: usize,
) {
    check_rows(m, n, out.len(), row_stride);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.chunks_mut(row_stride).take(m).for_each(|row| {
            row[..n].iter_mut().for_each(|o| {
                o.write(T::zero());
            })
        });
        return;
    }
    gemm_rows(a, b, (m, k, n), out.as_mut_ptr() as *mut T, row_stride, false, false)
}

/// `out += a · b` on this thread, `out` as in [`matmul_rows`].
pub fn matmul_rows_accumulate<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: &mut [T],
    row_stride: usize,
) {
    check_rows(m, n, out.len(), row_stride);
    if m > 0 && n > 0 && k > 0 {
        gemm_rows(a, b, (m, k, n), out.as_mut_ptr(), row_stride, true, false)
    }
}

fn check_rows(m: usize, n: usize, len: usize, row_stride: usize) {
    assert!(
        m == 0 || (n <= row_stride && (m - 1) * row_stride + n <= len),
        "matmul: {m}×{n} rows {row_stride} apart do not fit {len} elements"
    );
}

/// `x · Wᵀ + bias` for an (m, k) `x`, a (k, n) `wt` (Wᵀ, usually a transposed view) and an
/// (n,) bias: the bias is written into each row and the product added onto it.
pub fn affine<T: Float + Send + Sync>(
    x: MatRef<T>,
    wt: MatRef<T>,
    bias: &[T],
    m: usize,
    k: usize,
) -> Vec<T> {
    let n = bias.len();
    if m == 0 || n == 0 {
        return Vec::new();
    }
    // The bias rows written across threads: one thread's copy of them (`bias.repeat`) was 2%
    // of W7's step, with the other thread waiting.
    let fill = |out: &mut [MaybeUninit<T>]| {
        let rows = |block: &mut [MaybeUninit<T>]| {
            for row in block.chunks_mut(n) {
                row.iter_mut().zip(bias).for_each(|(o, &b)| {
                    o.write(b);
                });
            }
        };
        if m * n < super::PARALLEL_MIN {
            rows(out);
        } else {
            out.par_chunks_mut(n * (super::CHUNK / n).max(1)).for_each(rows);
        }
    };
    // SAFETY: the blocks are whole rows covering the output, and each row is written.
    let mut out = unsafe { super::filled_by(m * n, fill) };
    matmul_accumulate(x, wt, m, k, n, &mut out, true);
    out
}

/// `out (+)= a · b` for k > 0, adding onto `out` when `accumulate` (then initialized), else
/// writing it without reading it.
fn product_into<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    accumulate: bool,
    threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // gemm reads a right operand that is transposed (contiguous along k) at half speed or
    // worse (x·Wᵀ at 128×1024×512: 54 against 176 GFLOP/s), so it is copied row-major first
    // when the product is large beside the copy. (Copying `a` instead and computing
    // outᵀ = bᵀ·aᵀ measured slower still; a transposed left operand costs gemm little.)
    if b.col_stride != 1 && m >= REPACK_MIN && k * n > 1 {
        let copy = to_row_major(b, k, n, threads);
        let b = MatRef { data: &copy, row_stride: n, col_stride: 1 };
        return split_k(a, b, (m, k, n), out, accumulate, threads);
    }
    split_k(a, b, (m, k, n), out, accumulate, threads)
}

/// A product with a small output and a long inner dimension (a convolution's filter gradient:
/// 25×41,000×32) gives gemm, which splits only rows and columns, one block: one thread works
/// while the others wait. Such a product is cut along k instead, one part per thread, and the
/// partial products summed.
fn split_k<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    accumulate: bool,
    threads: bool,
) {
    const SMALL_OUTPUT: usize = 64 * 64;
    const PART_MIN: usize = 2048;
    let parts = rayon::current_num_threads().min(k / PART_MIN);
    if !threads || m * n > SMALL_OUTPUT || parts < 2 {
        return gemm_rows(a, b, (m, k, n), out, n, accumulate, threads);
    }
    let per = k.div_ceil(parts);
    let partials: Vec<Vec<T>> = (0..parts)
        .into_par_iter()
        .map(|i| {
            let (k0, kk) = (i * per, per.min(k - i * per));
            let a = MatRef { data: &a.data[k0 * a.col_stride..], ..a };
            let b = MatRef { data: &b.data[k0 * b.row_stride..], ..b };
            let mut part = vec![T::zero(); m * n];
            gemm_rows(a, b, (m, kk, n), part.as_mut_ptr(), n, false, false);
            part
        })
        .collect();
    // SAFETY: `out` holds m·n elements (the callers assert it), initialized when `accumulate`
    // (so only then read).
    let out = unsafe { std::slice::from_raw_parts_mut(out as *mut MaybeUninit<T>, m * n) };
    for (i, o) in out.iter_mut().enumerate() {
        let sum = partials.iter().fold(T::zero(), |s, p| s + p[i]);
        // SAFETY: read only when initialized (above).
        let before = if accumulate { unsafe { o.assume_init_read() } } else { T::zero() };
        o.write(before + sum);
    }
}

/// `out (+)= a · b` through gemm (or, for few rows against a transposed weight or a small
/// product, an AVX-512 or AVX2 kernel of `small_x86.rs`), the rows of `out` `row_stride` apart
/// (n for a row-major (m, n) output).
fn gemm_rows<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
    threads: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = super::small_x86::level::<T>() {
        if m <= super::small_x86::DOT_ROWS
            && a.col_stride == 1
            && b.row_stride == 1
            && b.col_stride != 1
        {
            return rows_dot(level, a, b, (m, k, n), out, row_stride, accumulate, threads);
        }
        // Products below gemm's threads' threshold (on one thread either way).
        let size = m * k * n;
        if b.col_stride == 1
            && size <= super::small_x86::SMALL_PRODUCT
            && (!threads || size < PARALLEL_FLOPS)
        {
            // SAFETY: the kernel runs here for T, and the spans are as for gemm below.
            return unsafe {
                super::small_x86::small_product(level, a, b, (m, k, n), out, row_stride, accumulate)
            };
        }
    }
    let parallelism = if threads && m * k * n >= PARALLEL_FLOPS {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    // gemm computes dst = alpha·dst + beta·a·b, reading dst only when told to.
    let alpha = if accumulate { T::one() } else { T::zero() };
    // SAFETY: the slices outlive the call and the strides/sizes stay within them: `a` spans
    // (m-1)·rs + (k-1)·cs < len, likewise `b`, and `out` holds (m-1)·row_stride + n elements
    // (the callers assert it), initialized when gemm reads it (`accumulate`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            alpha,
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// [`super::small_x86::rows_dot`], its columns split across threads when the weight is large
/// (GPT-2's, which a token's step streams from memory).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn rows_dot<T: Float + Send + Sync>(
    level: super::small_x86::Level,
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
    threads: bool,
) {
    let parts = if threads && k * n >= PARALLEL_FLOPS { rayon::current_num_threads() } else { 1 };
    let per = n.div_ceil(parts).next_multiple_of(8);
    let out = out as usize; // shared: each part writes only its own columns
    let part = |cols: std::ops::Range<usize>| {
        // SAFETY: the level runs here for T, the spans are the callers' (as for gemm), and the
        // parts' column ranges are disjoint.
        unsafe {
            let out = out as *mut T;
            super::small_x86::rows_dot(level, a, b, (m, k, n), cols, out, row_stride, accumulate)
        }
    };
    if parts == 1 {
        return part(0..n);
    }
    (0..n.div_ceil(per)).into_par_iter().for_each(|i| part(i * per..((i + 1) * per).min(n)));
}

/// A batch of products; `a_offsets[i]`, `b_offsets[i]` locate the i-th operands. With
/// `threads`, many small products run one per thread and few large ones each use all threads;
/// without, all run on this thread.
pub fn matmul_batched<T: Float + Send + Sync>(
    a: MatRef<T>,
    a_offsets: &[usize],
    b: MatRef<T>,
    b_offsets: &[usize],
    (m, k, n): (usize, usize, usize),
    threads: bool,
) -> Vec<T> {
    let batch = a_offsets.len();
    if m * n == 0 {
        return Vec::new();
    }
    let one = |i: usize, o: &mut [MaybeUninit<T>], threads: bool| {
        let ai = MatRef { data: &a.data[a_offsets[i]..], ..a };
        let bi = MatRef { data: &b.data[b_offsets[i]..], ..b };
        matmul_uninit(ai, bi, m, k, n, o, threads);
    };
    let all = |out: &mut [MaybeUninit<T>]| {
        if threads && batch > 1 && m * k * n < 4 * PARALLEL_FLOPS {
            out.par_chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, false));
        } else {
            out.chunks_mut(m * n).enumerate().for_each(|(i, o)| one(i, o, threads));
        }
    };
    // SAFETY: each product writes all of its m·n chunk, and the chunks cover the output.
    unsafe { super::filled_by(batch * m * n, all) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<f64>, b: MatRef<f64>, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[i * a.row_stride + p * a.col_stride]
                            * b.data[p * b.row_stride + j * b.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn row_major_copies_match_element_by_element_for_ragged_sizes() {
        for (rows, cols) in [(1, 1), (3, 5), (4, 4), (17, 9), (33, 70), (200, 3), (130, 72)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            // The transpose of a (cols, rows) row-major matrix, and a general strided view.
            let t = MatRef { data: &src, row_stride: 1, col_stride: rows };
            let got = to_row_major(t, rows, cols, true);
            let want: Vec<f32> =
                (0..rows * cols).map(|i| src[(i % cols) * rows + i / cols]).collect();
            assert_eq!(got, want, "{rows}×{cols}");
            let wide: Vec<f64> = src.iter().map(|&x| x as f64).collect();
            let t64 = MatRef { data: &wide, row_stride: 1, col_stride: rows };
            let got64 = to_row_major(t64, rows, cols, false);
            assert_eq!(got64, want.iter().map(|&x| x as f64).collect::<Vec<_>>());
            // Every kernel this processor runs, not only the one chosen.
            #[cfg(target_arch = "x86_64")]
            {
                type Kernel = unsafe fn(*const f32, usize, *mut f32, usize, usize);
                let mut kernels: Vec<Kernel> = vec![transpose_sse];
                if is_x86_feature_detected!("avx2") {
                    kernels.push(transpose_avx2);
                }
                for kernel in kernels {
                    let mut got = vec![0.0f32; rows * cols];
                    // SAFETY: src holds (cols - 1)·rows + rows elements, got rows·cols; AVX2
                    // is checked above.
                    unsafe { kernel(src.as_ptr(), rows, got.as_mut_ptr(), rows, cols) };
                    assert_eq!(got, want, "{rows}×{cols}");
                }
            }
        }
    }

    #[test]
    fn products_with_transposed_operands_match_the_naive_sum() {
        for (m, k, n) in [(16, 5, 7), (40, 33, 18), (17, 64, 130)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5) % 13) as f64 - 6.0).collect();
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let am = if ta {
                    MatRef { data: &a, row_stride: 1, col_stride: m }
                } else {
                    MatRef { data: &a, row_stride: k, col_stride: 1 }
                };
                let bm = if tb {
                    MatRef { data: &b, row_stride: 1, col_stride: k }
                } else {
                    MatRef { data: &b, row_stride: n, col_stride: 1 }
                };
                let mut out = vec![0.0; m * n];
                matmul(am, bm, m, k, n, &mut out, true);
                assert_eq!(out, naive(am, bm, m, k, n), "{m}×{k}×{n} {ta} {tb}");
                let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
                let b32: Vec<f32> = b.iter().map(|&x| x as f32).collect();
                let mut out32 = vec![0.0f32; m * n];
                let a32m =
                    MatRef { data: &a32[..], row_stride: am.row_stride, col_stride: am.col_stride };
                let b32m =
                    MatRef { data: &b32[..], row_stride: bm.row_stride, col_stride: bm.col_stride };
                matmul(a32m, b32m, m, k, n, &mut out32, true);
                // Small integers: every partial sum is exact in f32 as well.
                assert_eq!(out32.iter().map(|&x| x as f64).collect::<Vec<_>>(), out);
            }
        }
    }

    #[test]
    fn products_cut_along_k_equal_the_naive_sum() {
        // Small outputs, long inner dimensions: cut along k (on two threads or more).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (m, k, n) in [(5, 5000, 7), (25, 9000, 32)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5) % 13) as f64 - 6.0).collect();
            let am = MatRef { data: &a[..], row_stride: k, col_stride: 1 };
            for bm in [
                MatRef { data: &b[..], row_stride: n, col_stride: 1 },
                MatRef { data: &b[..], row_stride: 1, col_stride: k }, // transposed
            ] {
                let want = naive(am, bm, m, k, n);
                let mut out = vec![0.0; m * n];
                pool.install(|| matmul(am, bm, m, k, n, &mut out, true));
                assert_eq!(out, want, "{m}×{k}×{n}");
                let mut acc = vec![1.0; m * n];
                pool.install(|| matmul_accumulate(am, bm, m, k, n, &mut acc, true));
                assert_eq!(acc, want.iter().map(|w| w + 1.0).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn affine_adds_the_product_onto_the_bias_rows() {
        for (m, k, n) in [(3, 4, 5), (20, 33, 17), (64, 128, 96)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 3.0).collect();
            let xm = MatRef { data: &x[..], row_stride: k, col_stride: 1 };
            let wt = MatRef { data: &w[..], row_stride: 1, col_stride: k }; // Wᵀ, transposed view
            let mut want = vec![0.0f32; m * n];
            matmul(xm, wt, m, k, n, &mut want, true);
            want.iter_mut().enumerate().for_each(|(i, v)| *v += bias[i % n]);
            assert_eq!(affine(xm, wt, &bias, m, k), want, "{m}×{k}×{n}");
        }
    }
}
