//! im2col's and col2im's stride-1 loops for f32 with x86 vector instructions, where the
//! processor has them: AVX-512's masked loads and stores make a run of up to 16 elements (W3's
//! are 12 to 14) one instruction, with no ragged edge; AVX2's col2im does the same 8 lanes at a
//! time. [`super::conv`]'s portable loops are their twins, and the tests check each against
//! them.

use super::conv::Simd;
use crate::backend::Window;
use std::any::TypeId;
use std::arch::x86_64::*;

/// The widest of these loops that runs here for element type `T`.
pub fn best<T: 'static>() -> Simd {
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        Simd::Portable
    } else if std::arch::is_x86_feature_detected!("avx512f") {
        Simd::Avx512
    } else if std::arch::is_x86_feature_detected!("avx2") {
        Simd::Avx2
    } else {
        Simd::Portable
    }
}

/// The lanes `[lo, hi)` of 16 (hi ≤ 16).
#[inline(always)]
fn lanes(lo: usize, hi: usize) -> __mmask16 {
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
}

/// For each kernel column kj, for the piece of an output row from input column `x0`, `width`
/// lanes wide: where lane 0 reads within a row of columns (output column x0 + PW − kj, possibly
/// before the row), and the `mask` of lanes `[lo, hi)` that read inside the row.
#[inline(always)]
fn taps<M>(
    g: &Window,
    x0: usize,
    width: usize,
    mask: impl Fn(usize, usize) -> M,
) -> Vec<(isize, M)> {
    let span = |kj: usize| {
        let first = (x0 + g.pw) as isize - kj as isize;
        let lo = (-first).clamp(0, width as isize) as usize;
        let hi = (g.ow as isize - first).clamp(lo as isize, width as isize) as usize;
        (first, mask(lo, hi))
    };
    (0..g.kw).map(span).collect()
}

/// `runs` runs of `run` elements, `stride` apart in `src`, copied one after another into `dst`.
///
/// # Safety
/// AVX-512F is available; `src` holds (runs − 1)·stride + run elements and `dst` runs·run.
#[target_feature(enable = "avx512f")]
pub unsafe fn copy_runs(dst: *mut f32, src: *const f32, runs: usize, run: usize, stride: usize) {
    let (whole, tail) = (run / 16, lanes(0, run % 16));
    for i in 0..runs {
        let (s, d) = (src.add(i * stride), dst.add(i * run));
        for b in 0..whole {
            _mm512_storeu_ps(d.add(16 * b), _mm512_loadu_ps(s.add(16 * b)));
        }
        if tail != 0 {
            let v = _mm512_maskz_loadu_ps(tail, s.add(16 * whole));
            _mm512_mask_storeu_ps(d.add(16 * whole), tail, v);
        }
    }
}

/// col2im of one (H, W) plane for stride 1: `out` (H·W elements) += the sum, over the kernel's
/// taps, of each tap's row of columns shifted into place. Each 16-wide piece of an output row
/// is summed in registers over the KH·KW taps and written once (adding run by run into memory
/// made every run wait on the last one's stores: 42 µs an image of W3's second convolution).
///
/// # Safety
/// AVX-512F is available; `g` has stride 1; `cols` points at the plane's first tap row for
/// this image (row (c, 0, 0) at image n's columns), rows `np` apart, each P = OH·OW long;
/// `out` holds H·W elements.
#[target_feature(enable = "avx512f")]
pub unsafe fn col2im_plane(cols: *const f32, np: usize, g: &Window, out: *mut f32) {
    for x0 in (0..g.w).step_by(16) {
        let width = (g.w - x0).min(16);
        let taps = taps(g, x0, width, lanes);
        for iy in 0..g.h {
            // One sum, the taps added in the portable loop's order: the same rounding when
            // `out` starts at zero, as in backward (two interleaved sums missed a PyTorch
            // fixture's tolerance, for no measurable speed).
            let mut sum = _mm512_setzero_ps();
            for ki in 0..g.kh {
                // The output row that reads input row iy at kernel row ki (written out here:
                // as a helper function the loop measured 20% slower).
                let Some(oy) = (iy + g.ph).checked_sub(ki).filter(|&oy| oy < g.oh) else {
                    continue;
                };
                let rows = cols.add(ki * g.kw * np + oy * g.ow);
                for (kj, &(first, mask)) in taps.iter().enumerate() {
                    // Lanes outside `mask` would read outside the row: never read.
                    let v = _mm512_maskz_loadu_ps(mask, rows.add(kj * np).wrapping_offset(first));
                    sum = _mm512_add_ps(sum, v);
                }
            }
            let (mask, d) = (lanes(0, width), out.add(iy * g.w + x0));
            _mm512_mask_storeu_ps(d, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, d), sum));
        }
    }
}

/// [`col2im_plane`] with AVX2, 8 lanes at a time: masked loads (which, like AVX-512's, never
/// touch masked-off lanes); a plain store where all 8 lanes are in the row.
///
/// # Safety
/// AVX2 is available; otherwise as [`col2im_plane`].
#[target_feature(enable = "avx2")]
pub unsafe fn col2im_plane_avx2(cols: *const f32, np: usize, g: &Window, out: *mut f32) {
    let lanes = |lo: usize, hi: usize| {
        let lane = |i: i32| if (lo as i32..hi as i32).contains(&i) { -1 } else { 0 };
        _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(4), lane(5), lane(6), lane(7))
    };
    for x0 in (0..g.w).step_by(8) {
        let width = (g.w - x0).min(8);
        let taps = taps(g, x0, width, lanes);
        let row_mask = lanes(0, width);
        for iy in 0..g.h {
            let mut sum = _mm256_setzero_ps();
            for ki in 0..g.kh {
                let Some(oy) = (iy + g.ph).checked_sub(ki).filter(|&oy| oy < g.oh) else {
                    continue;
                };
                let rows = cols.add(ki * g.kw * np + oy * g.ow);
                for (kj, &(first, mask)) in taps.iter().enumerate() {
                    let v = _mm256_maskload_ps(rows.add(kj * np).wrapping_offset(first), mask);
                    sum = _mm256_add_ps(sum, v);
                }
            }
            let d = out.add(iy * g.w + x0);
            if width == 8 {
                _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), sum));
            } else {
                let total = _mm256_add_ps(_mm256_maskload_ps(d, row_mask), sum);
                _mm256_maskstore_ps(d, row_mask, total);
            }
        }
    }
}
