//! Products with int8 weights: `x · Wᵀ + b` with W quantized per output channel (symmetric,
//! once, when packed) and x per row (asymmetric, uint8 with a zero point, at every call),
//! summed exactly in i32 and scaled back to f32 — PyTorch's and ONNX Runtime's dynamic
//! quantization, with finer activation scales (one per row instead of one per tensor).
//!
//! The weight is packed once into panels (see `mod.rs`):
//! for each group of four k, the panel's columns' four bytes side by side, so one 64-byte load
//! feeds sixteen 4-way dot products (`vpdpbusd`). That instruction multiplies unsigned bytes
//! by signed ones: an activation row's bytes are `x / scale + zero` for its own range
//! (which an asymmetric range, after GELU, fills twice as finely as a symmetric one), and
//! `zero · Σₖ w` is taken off each of its sums. The levels in `int8_x86.rs` differ only in the instructions they
//! sum with: integer sums are exact, so every level gives the portable loop's outputs to the
//! bit, which the tests hold them to.

use super::{tiled_output, write_tile, Level, Out, Split, MR, NR};
use rayon::prelude::*;

/// An (n, k) weight quantized to int8 per output channel and packed for [`affine_int8_on`].
pub struct Int8Weight {
    pub n: usize,
    pub k: usize,
    /// k in whole groups of four (one 32-bit lane's dot product).
    quads: usize,
    /// `[panel][quad][column][4]`, zero past n and k.
    packed: Vec<i8>,
    /// Per column, padded to whole panels: the scale (max |w| / 127) and `Σₖ q`.
    scales: Vec<f32>,
    sums: Vec<i32>,
}

impl Int8Weight {
    /// Quantizes the rows of a row-major (n, k) `w`: each row's largest magnitude becomes 127.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Int8Weight {
        let (quads, panels) = (k.div_ceil(4), n.div_ceil(NR));
        let mut packed = vec![0i8; panels * quads * NR * 4];
        let mut scales = vec![0.0f32; panels * NR];
        let mut sums = vec![0i32; panels * NR];
        for (j, row) in w.chunks_exact(k.max(1)).take(n).enumerate() {
            let (scale, inv) = symmetric_scale(row);
            let (panel, column) = (j / NR, j % NR);
            let mut sum = 0i32;
            for (kk, &v) in row.iter().enumerate() {
                let q = round_to_int(v * inv) as i8;
                sum += q as i32;
                packed[((panel * quads + kk / 4) * NR + column) * 4 + kk % 4] = q;
            }
            scales[j] = scale;
            sums[j] = sum;
        }
        Int8Weight { n, k, quads, packed, scales, sums }
    }

    /// The weight the products use, `q · scale`, as a row-major (n, k) matrix.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.n * self.k];
        for (j, row) in w.chunks_exact_mut(self.k.max(1)).take(self.n).enumerate() {
            let (panel, column) = (j / NR, j % NR);
            for (kk, v) in row.iter_mut().enumerate() {
                let q = self.packed[((panel * self.quads + kk / 4) * NR + column) * 4 + kk % 4];
                *v = q as f32 * self.scales[j];
            }
        }
        w
    }
}

/// The scale that maps a row's largest magnitude to 127, and its inverse (0 for a zero row).
/// A NaN anywhere makes the scale NaN, so that it reaches the outputs as the f32 product's
/// would.
#[inline(always)]
fn symmetric_scale(row: &[f32]) -> (f32, f32) {
    // Sixteen lanes of maxima and of NaN flags: a loop the compiler vectorizes.
    let (mut max, mut nan) = ([0.0f32; 16], [false; 16]);
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..16 {
            max[i] = max[i].max(chunk[i].abs());
            nan[i] |= chunk[i].is_nan();
        }
    }
    for (i, v) in tail.iter().enumerate() {
        max[i] = max[i].max(v.abs());
        nan[i] |= v.is_nan();
    }
    if nan.contains(&true) {
        return (f32::NAN, f32::NAN);
    }
    let max = max.iter().fold(0.0f32, |a, &b| a.max(b));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    (max / 127.0, inv)
}

/// `v` (|v| ≤ 127.5) rounded to the nearest integer, ties to even, as the vector
/// conversions do: adding 1.5·2²³ leaves the integer in the low mantissa bits, without a float
/// to int conversion's saturation checks, so the loops vectorize.
#[inline(always)]
fn round_to_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as i32
}

/// A row's range, widened to hold 0 (so that zero is exact); NaN if the row holds a NaN or an
/// infinity, whose products are not finite either.
#[inline(always)]
#[allow(clippy::eq_op)] // `v − v` is the point: 0, or NaN for a NaN or an infinity.
fn range(row: &[f32]) -> (f32, f32) {
    // Sixteen lanes of minima, maxima and `v − v` summed (0 unless some v is not finite): a
    // loop the compiler vectorizes.
    let (mut low, mut high, mut poison) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..16 {
            low[i] = low[i].min(chunk[i]);
            high[i] = high[i].max(chunk[i]);
            poison[i] += chunk[i] - chunk[i];
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        low[i] = low[i].min(v);
        high[i] = high[i].max(v);
        poison[i] += v - v;
    }
    if poison.iter().any(|p| *p != 0.0) {
        return (f32::NAN, f32::NAN);
    }
    (low.iter().fold(0.0f32, |a, &b| a.min(b)), high.iter().fold(0.0f32, |a, &b| a.max(b)))
}

/// The rows of an (m, k) `x` quantized to bytes `round(x / scale) + zero`, with the row's
/// range (holding 0) spread over 0..=255: rows of 4·quads bytes (padding 0, against zero
/// weights), each row's scale and zero point.
fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    quads: usize,
    split: Split,
) -> (Vec<u8>, Vec<f32>, Vec<i32>) {
    let stride = 4 * quads;
    let mut bytes = vec![0u8; m * stride];
    let mut params = vec![(0.0f32, 0i32); m];
    type Row<'a> = (&'a [f32], (&'a mut [u8], &'a mut (f32, i32)));
    let row = |(src, (dst, p)): Row| {
        *p = super::super::with_wide_vectors(
            #[inline(always)]
            || quantize_row(src, dst),
        )
    };
    let (k, stride) = (k.max(1), stride.max(1));
    if split == Split::Serial || m * k < super::super::PARALLEL_MIN {
        x.chunks_exact(k).zip(bytes.chunks_exact_mut(stride).zip(&mut params)).for_each(row);
    } else {
        let rows = bytes.par_chunks_exact_mut(stride).zip(&mut params);
        x.par_chunks_exact(k).zip(rows).for_each(row);
    }
    let (scales, zeros) = params.into_iter().unzip();
    (bytes, scales, zeros)
}

/// One row of [`quantize_rows`]: its bytes, scale and zero point.
#[inline(always)]
fn quantize_row(src: &[f32], dst: &mut [u8]) -> (f32, i32) {
    let (low, high) = range(src);
    let scale = (high - low) / 255.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    // −low/scale ∈ [0, 255]; a NaN row's scale reaches its outputs.
    let zero = if inv > 0.0 { round_to_int(-low * inv) } else { 0 };
    let z = zero as f32;
    for (d, &v) in dst.iter_mut().zip(src) {
        // Within [−0.5, 255.5] before rounding: clamped, the ends stay in a byte.
        *d = round_to_int(v.mul_add(inv, z)).clamp(0, 255) as u8;
    }
    (scale, zero)
}

/// One tile: `rows` ≤ [`MR`] activation rows (`a`, `stride` bytes apart) against one panel
/// (`b`) over `quads` groups of four, and where its outputs go.
pub(crate) struct Tile<'a> {
    pub a: &'a [u8],
    pub stride: usize,
    pub rows: usize,
    pub b: &'a [i8],
    pub quads: usize,
    /// Output row 0's first column of the panel, `n` apart, the panel's columns ≤ n.
    pub(super) out: Out,
    pub(super) n: usize,
    pub(super) columns: usize,
    /// From the tile's first row and the panel's first column on.
    pub(super) row_scales: &'a [f32],
    pub(super) row_zeros: &'a [i32],
    pub(super) scales: &'a [f32],
    pub(super) sums: &'a [i32],
    pub(super) bias: Option<&'a [f32]>,
}

impl Tile<'_> {
    /// The tile `rows` rows further down.
    pub fn below(&self, rows: usize) -> Tile<'_> {
        Tile {
            a: &self.a[rows * self.stride..],
            rows: self.rows - rows,
            out: Out(self.out.at(rows * self.n)),
            row_scales: &self.row_scales[rows..],
            row_zeros: &self.row_zeros[rows..],
            ..*self
        }
    }

    fn run(&self, level: Level) {
        match level {
            Level::Portable => self.run_portable(),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::available` found the level's instructions on this processor;
            // the tile's slices span its rows and its panel, and its outputs lie in the
            // calling task's rectangle.
            _ => unsafe { super::int8_x86::run(self, level) },
        }
    }

    fn run_portable(&self) {
        let mut acc = [[0i32; NR]; MR];
        for (r, sums) in acc.iter_mut().enumerate().take(self.rows) {
            let a = &self.a[r * self.stride..][..4 * self.quads];
            for (c, sum) in sums.iter_mut().enumerate() {
                *sum = (0..4 * self.quads)
                    .map(|kk| a[kk] as i32 * self.b[((kk / 4) * NR + c) * 4 + kk % 4] as i32)
                    .sum();
            }
        }
        // SAFETY: as in `run`.
        unsafe { self.write(&acc, self.rows) };
    }

    /// The outputs of the tile's first `rows` rows from their i32 sums: `(sum − row zero ·
    /// column Σq) · (row scale · column scale) + bias`, one rounding (a fused multiply-add) on every level alike.
    ///
    /// # Safety
    /// The tile's outputs are valid to write and no one else's.
    #[inline(always)]
    pub unsafe fn write(&self, acc: &[[i32; NR]; MR], rows: usize) {
        let rows = rows.min(self.rows);
        let (scales, sums) = (&self.scales[..self.columns], &self.sums[..self.columns]);
        let zeros = self.row_zeros;
        let scaled = |r: usize, c: usize| (acc[r][c] - zeros[r] * sums[c]) as f32;
        let (out, n, columns, row_scales) = (self.out, self.n, self.columns, self.row_scales);
        // SAFETY: the caller's promise.
        unsafe {
            match self.bias {
                Some(bias) => write_tile(out, n, rows, columns, |r, c| {
                    scaled(r, c).mul_add(row_scales[r] * scales[c], bias[c])
                }),
                None => write_tile(out, n, rows, columns, |r, c| {
                    scaled(r, c) * (row_scales[r] * scales[c])
                }),
            }
        }
    }
}

/// `x · Wᵀ + b` for a row-major (m, k) `x`, on `level` (the fastest the processor has, but
/// the tests run each).
pub fn affine_int8_on(
    level: Level,
    x: &[f32],
    w: &Int8Weight,
    bias: Option<&[f32]>,
    m: usize,
    split: Split,
) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let (a, row_scales, row_zeros) = quantize_rows(x, m, k, w.quads, split);
    let stride = 4 * w.quads;
    let panel_len = w.quads * NR * 4;
    tiled_output(m, n, k, split, |out, i0, rows, panel| {
        let j0 = panel * NR;
        Tile {
            a: &a[i0 * stride..],
            stride,
            rows,
            b: &w.packed[panel * panel_len..][..panel_len],
            quads: w.quads,
            out,
            n,
            columns: (n - j0).min(NR),
            row_scales: &row_scales[i0..],
            row_zeros: &row_zeros[i0..],
            scales: &w.scales[j0..],
            sums: &w.sums[j0..],
            bias: bias.map(|b| &b[j0..]),
        }
        .run(level)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Precision;
    use crate::Rng;

    fn normal(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    /// `x · Wᵀ + b` in f64, and for each output the bound on the quantized product's error:
    /// Σₖ |x − x̂| |w| + |x̂| |w − ŵ|, with each rounding at most half a step: x's steps
    /// span its range (holding 0) in 255, w's its largest magnitude in 127.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let scale = |row: &[f32]| row.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64)) / 127.0;
        let step = |row: &[f32]| {
            let (low, high) =
                row.iter().fold((0.0f64, 0.0f64), |(l, h), &v| (l.min(v as f64), h.max(v as f64)));
            (high - low) / 255.0
        };
        let (mut want, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            let xr = &x[i * k..][..k];
            let sx = step(xr);
            for j in 0..n {
                let wr = &w[j * k..][..k];
                let sw = scale(wr);
                let dot: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let err: f64 = xr
                    .iter()
                    .zip(wr)
                    .map(|(&a, &b)| {
                        0.5 * sx * (b as f64).abs() + 0.5 * sw * ((a as f64).abs() + 0.5 * sx)
                    })
                    .sum();
                want[i * n + j] = dot + bias[j] as f64;
                bound[i * n + j] = err * 1.0001 + 1e-5 * want[i * n + j].abs() + 1e-6;
            }
        }
        (want, bound)
    }

    #[test]
    fn every_level_gives_the_portable_sums_and_stays_within_the_rounding_bound() {
        let mut rng = Rng::seed(7);
        let levels = Level::available(Precision::Int8);
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (8, 4, 48),
            (9, 13, 49),
            (17, 64, 100),
            (70, 130, 97),
            (2, 768, 130),
        ] {
            let x = normal(m * k, &mut rng);
            let w = normal(n * k, &mut rng);
            let bias = normal(n, &mut rng);
            let packed = Int8Weight::pack(&w, n, k);
            let portable =
                affine_int8_on(Level::Portable, &x, &packed, Some(&bias), m, Split::Threads);
            let (want, bound) = reference(&x, &w, &bias, m, k, n);
            for (i, (&got, (&want, &bound))) in
                portable.iter().zip(want.iter().zip(&bound)).enumerate()
            {
                assert!(
                    (got as f64 - want).abs() <= bound,
                    "{m}×{k}×{n} [{i}]: {got} vs {want} ± {bound}"
                );
            }
            let unbiased = affine_int8_on(Level::Portable, &x, &packed, None, m, Split::Threads);
            for &level in &levels {
                let got = affine_int8_on(level, &x, &packed, Some(&bias), m, Split::Threads);
                assert_eq!(got, portable, "{level:?} at {m}×{k}×{n}");
                let got = affine_int8_on(level, &x, &packed, None, m, Split::Threads);
                assert_eq!(got, unbiased, "{level:?} at {m}×{k}×{n}, no bias");
            }
        }
    }

    #[test]
    fn the_largest_values_survive_and_zero_rows_stay_zero() {
        // Extreme bytes on both sides (255 × −127 in every lane), an all-zero row, and a row
        // at both ends of its range.
        let (m, k, n) = (3, 1000, 50);
        let mut x = vec![0.0f32; m * k];
        x[..k].fill(1.0);
        x[2 * k..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { -2.0 } else { 2.0 });
        let w: Vec<f32> = (0..n * k).map(|i| if (i / k) % 2 == 0 { -3.0 } else { 3.0 }).collect();
        let packed = Int8Weight::pack(&w, n, k);
        let (_, bound) = reference(&x, &w, &vec![0.0; n], m, k, n);
        for level in Level::available(Precision::Int8) {
            let y = affine_int8_on(level, &x, &packed, None, m, Split::Threads);
            for j in 0..n {
                let sign = if j % 2 == 0 { -1.0 } else { 1.0 };
                assert!((y[j] - sign * 3000.0).abs() <= 1e-3, "{level:?} row 0 col {j}: {}", y[j]);
                assert_eq!(y[n + j], 0.0, "{level:?} zero row col {j}");
                let alternating = y[2 * n + j] as f64;
                assert!(alternating.abs() <= bound[2 * n + j], "{level:?} col {j}: {alternating}");
            }
        }
        assert_eq!(packed.dequantize(), w);
    }

    #[test]
    fn a_row_with_nan_or_infinity_gives_nan_outputs() {
        let packed = Int8Weight::pack(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        for level in Level::available(Precision::Int8) {
            let x = [1.0, f32::NAN, f32::NEG_INFINITY, 1.0, 1.0, 1.0];
            let y = affine_int8_on(level, &x, &packed, None, 3, Split::Threads);
            assert!(y[..4].iter().all(|v| v.is_nan()), "{level:?}: {y:?}");
            assert!((y[4] - 3.0).abs() < 0.02 && (y[5] - 7.0).abs() < 0.02, "{level:?}: {y:?}");
        }
    }
}
