//! Small f32 matrix products with x86 vector instructions (AVX-512, or AVX2 with FMA), where
//! the processor has them: attention's per-head products (32×32×32 at W7's and W5's shapes,
//! seven per head and step) and generation's one-row products. At that size gemm's work per
//! call — dispatch, scratch memory, packing both operands — costs a third of the time: 0.92 µs
//! a 32×32×32 product through gemm, 0.64 µs here (one thread, AVX-512); and gemm's one-row
//! path, without AVX-512, ran W5's generation at half the speed of these kernels. gemm is the
//! twin the tests check this against, and does every other product.
//!
//! Each kernel is written once over [`Lanes`], the few register operations it needs, and
//! compiled for each level by a `#[target_feature]` entry point.

use super::MatRef;
use std::any::TypeId;
use std::arch::x86_64::*;

/// Products of at most this many multiply-adds (m·k·n) count as small.
pub const SMALL_PRODUCT: usize = 64 * 64 * 64;

/// The vector instructions a kernel runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx2,
    Avx512,
}

#[cfg(test)]
impl Level {
    /// Every level this processor runs, the widest last.
    pub fn available() -> Vec<Level> {
        use std::arch::is_x86_feature_detected as has;
        let mut levels = Vec::new();
        if has!("avx2") && has!("fma") {
            levels.push(Level::Avx2);
        }
        if has!("avx512f") {
            levels.push(Level::Avx512);
        }
        levels
    }
}

/// The widest level these kernels run at here for element type `T` (f32 only), if any.
pub fn level<T: 'static>() -> Option<Level> {
    use std::arch::is_x86_feature_detected as has;
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        None
    } else if has!("avx512f") {
        Some(Level::Avx512)
    } else if has!("avx2") && has!("fma") {
        Some(Level::Avx2)
    } else {
        None
    }
}

/// One register of f32 lanes, and what the kernels do with it. Every method is
/// `#[inline(always)]`, so that it compiles inside the `#[target_feature]` kernel calling it.
trait Lanes {
    const N: usize;
    type V: Copy;
    type M: Copy;
    /// The first `count` lanes (all of them from N up).
    unsafe fn first(count: usize) -> Self::M;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// The masked lanes from `p`, zeros in the others (which are not read).
    unsafe fn load(m: Self::M, p: *const f32) -> Self::V;
    /// The masked lanes to `p` (the others are not written).
    unsafe fn store(m: Self::M, p: *mut f32, v: Self::V);
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sum(v: Self::V) -> f32;
    /// Each register's sum.
    #[inline(always)]
    unsafe fn sums<const R: usize>(v: &[Self::V; R]) -> [f32; R]
    where
        Self: Sized,
    {
        unsafe { one_by_one::<Self, R>(v) }
    }
}

/// Each register's sum, one after another.
#[inline(always)]
unsafe fn one_by_one<L: Lanes, const R: usize>(v: &[L::V; R]) -> [f32; R] {
    let mut out = [0.0; R];
    for (o, &v) in out.iter_mut().zip(v) {
        *o = unsafe { L::sum(v) };
    }
    out
}

struct Avx512;

impl Lanes for Avx512 {
    const N: usize = 16;
    type V = __m512;
    type M = __mmask16;
    #[inline(always)]
    unsafe fn first(count: usize) -> __mmask16 {
        ((1u32 << count.min(16)) - 1) as __mmask16
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(m: __mmask16, p: *const f32) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store(m: __mmask16, p: *mut f32, v: __m512) {
        unsafe { _mm512_mask_storeu_ps(p, m, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    /// Eight registers' sums: each folded to 8 lanes, then [`Avx2`]'s tree of pairwise adds
    /// (one by one, the reductions were a third of a token's products in W5's generation).
    #[inline(always)]
    unsafe fn sums<const R: usize>(v: &[__m512; R]) -> [f32; R] {
        if R != 8 {
            return unsafe { one_by_one::<Self, R>(v) };
        }
        let mut halves = [unsafe { _mm256_setzero_ps() }; 8];
        for (half, &v) in halves.iter_mut().zip(v) {
            // SAFETY: AVX-512F is enabled wherever these lanes run.
            *half = unsafe {
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                _mm256_add_ps(_mm512_castps512_ps256(v), high)
            };
        }
        let mut out = [0.0; R];
        out.copy_from_slice(&unsafe { Avx2::sums(&halves) });
        out
    }
}

struct Avx2;

/// AVX2's mask: how many lanes, and the lane mask its masked loads and stores take. Whole
/// registers use plain loads and stores (the masked ones are slower, the stores much slower on
/// AMD's cores).
#[derive(Clone, Copy)]
struct Mask8 {
    count: usize,
    lanes: __m256i,
}

impl Lanes for Avx2 {
    const N: usize = 8;
    type V = __m256;
    type M = Mask8;
    #[inline(always)]
    unsafe fn first(count: usize) -> Mask8 {
        let count = count.min(8);
        let index = unsafe { _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7) };
        Mask8 {
            count,
            lanes: unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), index) },
        }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(m: Mask8, p: *const f32) -> __m256 {
        match m.count {
            8 => unsafe { _mm256_loadu_ps(p) },
            0 => unsafe { _mm256_setzero_ps() },
            _ => unsafe { _mm256_maskload_ps(p, m.lanes) },
        }
    }
    #[inline(always)]
    unsafe fn store(m: Mask8, p: *mut f32, v: __m256) {
        match m.count {
            8 => unsafe { _mm256_storeu_ps(p, v) },
            0 => {}
            _ => unsafe { _mm256_maskstore_ps(p, m.lanes, v) },
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }
    /// Eight registers' sums through a tree of pairwise adds (seven horizontal adds, one
    /// lane swap), where one by one each took five steps.
    #[inline(always)]
    unsafe fn sums<const R: usize>(v: &[__m256; R]) -> [f32; R] {
        if R != 8 {
            return unsafe { one_by_one::<Self, R>(v) };
        }
        unsafe {
            let (h01, h23) = (_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
            let (h45, h67) = (_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
            let (q0, q1) = (_mm256_hadd_ps(h01, h23), _mm256_hadd_ps(h45, h67));
            // q0 holds registers 0–3's partial sums in each 128-bit half, q1 those of 4–7.
            let lo = _mm256_permute2f128_ps(q0, q1, 0x20);
            let hi = _mm256_permute2f128_ps(q0, q1, 0x31);
            let mut out = [0.0; R];
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(lo, hi));
            out
        }
    }
}

/// `out (+)= a · b` for an (m, k) `a` and a (k, n) `b` with column stride 1, into the rows of
/// `out` `row_stride` apart, at `level`.
///
/// # Safety
/// `level` runs here and `T` is f32 ([`level`]`::<T>()` gave it or a narrower one); `a` and
/// `b` span their matrices; `out` is valid for (m − 1)·row_stride + n elements, initialized
/// when `accumulate`.
pub unsafe fn small_product<T: 'static>(
    level: Level,
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
) {
    debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>() && b.col_stride == 1);
    let a = Operand { at: a.data.as_ptr() as *const f32, rows: a.row_stride, cols: a.col_stride };
    let b = Operand { at: b.data.as_ptr() as *const f32, rows: b.row_stride, cols: 1 };
    let (out, dims) = (out as *mut f32, (m, k, n));
    // SAFETY: T is f32 with the level's features present, and the spans are the caller's
    // promise.
    unsafe {
        match level {
            Level::Avx512 => product_avx512(a, b, dims, out, row_stride, accumulate),
            Level::Avx2 => product_avx2(a, b, dims, out, row_stride, accumulate),
        }
    }
}

#[derive(Clone, Copy)]
struct Operand {
    at: *const f32,
    rows: usize,
    cols: usize,
}

#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(
    a: Operand,
    b: Operand,
    dims: (usize, usize, usize),
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
) {
    unsafe { product::<Avx512>(a, b, dims, out, row_stride, accumulate) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(
    a: Operand,
    b: Operand,
    dims: (usize, usize, usize),
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
) {
    unsafe { product::<Avx2>(a, b, dims, out, row_stride, accumulate) }
}

/// Register tiles of 4 rows × 2 registers, then each row left over alone across as many
/// registers (up to 8) as its columns fill: enough independent sums to hide the FMA's latency
/// (one row across two registers waited on it: W5's one-row steps). Each tile sums over k in
/// order, masked at a ragged right edge, and is written once.
#[inline(always)]
unsafe fn product<L: Lanes>(
    a: Operand,
    b: Operand,
    (m, k, n): (usize, usize, usize),
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
) {
    let whole = m / 4 * 4;
    let t = Tiles { a, b, k, n, out, row_stride, accumulate };
    // SAFETY (both): the rows are below m, and the caller's promise covers the rest.
    unsafe {
        t.strips::<L, 4, 2>(0, whole);
        match n.div_ceil(L::N) {
            0 | 1 => t.strips::<L, 1, 1>(whole, m),
            2 => t.strips::<L, 1, 2>(whole, m),
            3 | 4 => t.strips::<L, 1, 4>(whole, m),
            _ => t.strips::<L, 1, 8>(whole, m),
        }
    }
}

/// One product's operands and output, cut into register tiles.
struct Tiles {
    a: Operand,
    b: Operand,
    k: usize,
    n: usize,
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
}

impl Tiles {
    /// Rows `from..to` (a multiple of R of them) in tiles of R rows × C registers.
    #[inline(always)]
    unsafe fn strips<L: Lanes, const R: usize, const C: usize>(&self, from: usize, to: usize) {
        let mut j0 = 0;
        while j0 < self.n {
            // SAFETY: first() only builds a mask.
            let mut masks = [unsafe { L::first(0) }; C];
            for (c, mask) in masks.iter_mut().enumerate() {
                *mask = unsafe { L::first((self.n - j0).saturating_sub(c * L::N)) };
            }
            let mut i0 = from;
            while i0 + R <= to {
                // SAFETY: rows i0..i0 + R < m and the columns the masks let through are < n.
                unsafe { self.tile::<L, R, C>(i0, j0, &masks) };
                i0 += R;
            }
            j0 += C * L::N;
        }
    }

    /// Row `p` of `b` times column `p` of `a`'s rows `i0..i0 + R`, added into `acc`.
    #[inline(always)]
    unsafe fn step<L: Lanes, const R: usize, const C: usize>(
        &self,
        p: usize,
        i0: usize,
        j0: usize,
        masks: &[L::M; C],
        acc: &mut [[L::V; C]; R],
    ) {
        let (a, b) = (self.a, self.b);
        // SAFETY: as in `tile`, whose promise this is.
        unsafe {
            let row = b.at.wrapping_add(p * b.rows + j0);
            let mut bv = [L::zero(); C];
            for (c, v) in bv.iter_mut().enumerate() {
                *v = L::load(masks[c], row.wrapping_add(c * L::N));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = L::splat(*a.at.add((i0 + r) * a.rows + p * a.cols));
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = L::fmadd(x, bv, *acc);
                }
            }
        }
    }

    /// Rows `i0..i0 + R`, columns `j0..` (as far as the masks reach) of the product.
    #[inline(always)]
    unsafe fn tile<L: Lanes, const R: usize, const C: usize>(
        &self,
        i0: usize,
        j0: usize,
        masks: &[L::M; C],
    ) {
        // SAFETY (whole body): every read and write is masked to lanes inside the matrices;
        // the pointers to masked-off lanes are formed with wrapping_add and never dereferenced.
        unsafe {
            let mut acc = [[L::zero(); C]; R];
            // A tile of few registers sums even and odd k apart, so that twice as many sums
            // are under way while each waits on its FMA (attention's one-row mixing).
            if R * C <= 4 {
                let mut odd = [[L::zero(); C]; R];
                let mut p = 0;
                while p + 1 < self.k {
                    self.step::<L, R, C>(p, i0, j0, masks, &mut acc);
                    self.step::<L, R, C>(p + 1, i0, j0, masks, &mut odd);
                    p += 2;
                }
                if p < self.k {
                    self.step::<L, R, C>(p, i0, j0, masks, &mut acc);
                }
                for (acc, odd) in acc.iter_mut().zip(&odd) {
                    for (acc, &odd) in acc.iter_mut().zip(odd) {
                        *acc = L::add(*acc, odd);
                    }
                }
            } else {
                for p in 0..self.k {
                    self.step::<L, R, C>(p, i0, j0, masks, &mut acc);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let o = self.out.wrapping_add((i0 + r) * self.row_stride + j0);
                for (c, &v) in acc.iter().enumerate() {
                    let at = o.wrapping_add(c * L::N);
                    let v = if self.accumulate { L::add(v, L::load(masks[c], at)) } else { v };
                    L::store(masks[c], at, v);
                }
            }
        }
    }
}

/// Products with at most this many rows whose right operand is a transposed weight go to
/// [`rows_dot`]: generation's one-row `x · Wᵀ`, a dot product per output, where gemm's tiles
/// (made for many rows) add work and no reuse.
pub const DOT_ROWS: usize = 4;

/// `out (+)= a · b` for an (m, k) `a` with column stride 1 and a (k, n) `b` with row stride 1
/// (Wᵀ for a row-major (n, k) weight W, so that each output is a dot product of two contiguous
/// rows), at `level`: eight rows of W at a time, each an accumulator over k a register at a
/// time, masked at the end of k, reduced and written once. Columns `cols` of the output only
/// (a thread's share); rows of `out` are `row_stride` apart.
///
/// # Safety
/// `level` runs here and `T` is f32; `a` and `b` span their matrices with those unit strides;
/// `cols.start ≤ cols.end ≤ n`; `out` is valid for (m − 1)·row_stride + n elements,
/// initialized when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_dot<T: 'static>(
    level: Level,
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    cols: std::ops::Range<usize>,
    out: *mut T,
    row_stride: usize,
    accumulate: bool,
) {
    debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>());
    debug_assert!(a.col_stride == 1 && b.row_stride == 1 && cols.end <= n);
    let dots = Dots {
        x: a.data.as_ptr() as *const f32,
        x_rows: a.row_stride,
        w: b.data.as_ptr() as *const f32,
        w_rows: b.col_stride,
        m,
        k,
        out: out as *mut f32,
        row_stride,
        accumulate,
    };
    // SAFETY: T is f32 with the level's features present; the spans are the caller's promise.
    unsafe {
        match level {
            Level::Avx512 => dots_avx512(&dots, cols),
            Level::Avx2 => dots_avx2(&dots, cols),
        }
    }
}

/// A product of rows of `x` with rows of a weight W, each output one dot product.
struct Dots {
    x: *const f32,
    x_rows: usize,
    w: *const f32,
    w_rows: usize,
    m: usize,
    k: usize,
    out: *mut f32,
    row_stride: usize,
    accumulate: bool,
}

#[target_feature(enable = "avx512f")]
unsafe fn dots_avx512(d: &Dots, cols: std::ops::Range<usize>) {
    unsafe { d.columns::<Avx512>(cols) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(d: &Dots, cols: std::ops::Range<usize>) {
    unsafe { d.columns::<Avx2>(cols) }
}

impl Dots {
    #[inline(always)]
    unsafe fn columns<L: Lanes>(&self, cols: std::ops::Range<usize>) {
        for i in 0..self.m {
            // SAFETY: row i of x and rows `cols` of W are inside their spans, and out's row i
            // holds n ≥ cols.end elements.
            unsafe {
                let x = self.x.add(i * self.x_rows);
                let o = self.out.add(i * self.row_stride);
                let mut j = cols.start;
                while j + 8 <= cols.end {
                    self.dots::<L, 8>(x, j, o);
                    j += 8;
                }
                for j in j..cols.end {
                    self.dots::<L, 1>(x, j, o);
                }
            }
        }
    }

    /// `o[j..j + R] (+)= x · W[j..j + R]ᵀ`.
    #[inline(always)]
    unsafe fn dots<L: Lanes, const R: usize>(&self, x: *const f32, j: usize, o: *mut f32) {
        // SAFETY (whole body): loads are masked to p..k, inside x's row and W's rows j..j + R.
        unsafe {
            let mut acc = [L::zero(); R];
            // Whole registers, then the masked rest (one mask for all of them).
            let (whole, full) = (self.k / L::N * L::N, L::first(L::N));
            let mut p = 0;
            while p < whole {
                let xv = L::load(full, x.add(p));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wv = L::load(full, self.w.add((j + r) * self.w_rows + p));
                    *acc = L::fmadd(xv, wv, *acc);
                }
                p += L::N;
            }
            if whole < self.k {
                let mask = L::first(self.k - whole);
                let xv = L::load(mask, x.add(whole));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wv = L::load(mask, self.w.add((j + r) * self.w_rows + whole));
                    *acc = L::fmadd(xv, wv, *acc);
                }
            }
            for (r, sum) in L::sums(&acc).into_iter().enumerate() {
                let at = o.add(j + r);
                *at = if self.accumulate { *at + sum } else { sum };
            }
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

    /// The levels to test, each against gemm (none on a processor without AVX2).
    fn levels() -> Vec<Level> {
        let levels = Level::available();
        if levels.is_empty() {
            eprintln!("no AVX2 or AVX-512 here: gemm does these products");
        }
        levels
    }

    #[test]
    fn small_products_equal_gemms_for_ragged_shapes_transposes_and_sums() {
        let shapes = [(1, 1, 1), (3, 7, 15), (4, 32, 16), (5, 9, 17), (32, 32, 32), (9, 3, 70)];
        // One row across 1, 2, 4 and 8 registers, ragged or whole, and strips after it.
        let rows = [(1, 128, 384), (1, 5, 33), (2, 16, 129), (6, 4, 300), (1, 3, 24), (1, 7, 64)];
        for level in levels() {
            for (m, k, n) in shapes.into_iter().chain(rows) {
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
                    let dims = (m, k, n);
                    // SAFETY: f32 at a level this processor runs; got holds (m − 1)·stride + n.
                    unsafe { small_product(level, a, b, dims, got.as_mut_ptr(), stride, false) };
                    let mut sum = got.clone();
                    unsafe { small_product(level, a, b, dims, sum.as_mut_ptr(), stride, true) };
                    check_strided(&got, &sum, &want, (m, n), stride);
                    // And through the public path, which picks this kernel for small products.
                    let mut through = want.clone();
                    matmul_rows_accumulate(a, b, (m, k, n), &mut through, n);
                    assert_eq!(through, want.iter().map(|w| 2.0 * w).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn row_dots_equal_the_naive_sum_for_ragged_shapes_column_ranges_and_sums() {
        let shapes = [(1, 1, 1), (1, 15, 9), (1, 16, 8), (2, 17, 23), (4, 128, 65), (3, 33, 7)];
        for level in levels() {
            for (m, k, n) in shapes {
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
                let dims = (m, k, n);
                // Two column ranges, as two threads would split them.
                let half = n / 2;
                for cols in [0..half, half..n] {
                    // SAFETY: f32 at a level this processor runs; got holds its rows.
                    unsafe { rows_dot(level, a, wt, dims, cols, got.as_mut_ptr(), stride, false) };
                }
                let mut sum = got.clone();
                unsafe { rows_dot(level, a, wt, dims, 0..n, sum.as_mut_ptr(), stride, true) };
                check_strided(&got, &sum, &want, (m, n), stride);
                // And through the public path, which picks this kernel for few rows.
                let mut through = want.clone();
                matmul_rows_accumulate(a, wt, (m, k, n), &mut through, n);
                assert_eq!(through, want.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
            }
        }
    }
}
