//! Products with bf16 weights: `x · Wᵀ + b` with W rounded to bf16 once, when packed, and x
//! per call, summed in f32. A bf16 product is exact in f32, so the only roundings are the
//! two conversions and the f32 additions.
//!
//! The weight is packed into panels (see `mod.rs`): for each pair of k, the panel's columns'
//! two bf16 values side by side, so one 64-byte load feeds sixteen 2-way dot products
//! (`vdpbf16ps`). That instruction adds the odd element's product and then the even one's,
//! each rounded; the levels in `bf16_x86.rs` without it do the same with two fused
//! multiply-adds, so every level gives the portable loop's outputs to the bit, which the
//! tests hold them to (for normal numbers: `vdpbf16ps` counts bf16 subnormals, below
//! about 1.2e-38, as zero).

use super::{tiled_output, write_tile, Level, Out, Split, MR, NR};
use rayon::prelude::*;

/// An (n, k) weight rounded to bf16 and packed for [`affine_bf16_on`].
pub struct Bf16Weight {
    pub n: usize,
    pub k: usize,
    /// k in whole pairs (one 32-bit lane's dot product).
    pairs: usize,
    /// `[panel][pair][column][2]`, zero past n and k.
    packed: Vec<u16>,
}

impl Bf16Weight {
    /// Rounds the rows of a row-major (n, k) `w` to bf16.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Bf16Weight {
        let (pairs, panels) = (k.div_ceil(2), n.div_ceil(NR));
        let mut packed = vec![0u16; panels * pairs * NR * 2];
        for (j, row) in w.chunks_exact(k.max(1)).take(n).enumerate() {
            let (panel, column) = (j / NR, j % NR);
            for (kk, &v) in row.iter().enumerate() {
                packed[((panel * pairs + kk / 2) * NR + column) * 2 + kk % 2] = to_bf16(v);
            }
        }
        Bf16Weight { n, k, pairs, packed }
    }

    /// The weight the products use, as a row-major (n, k) f32 matrix.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.n * self.k];
        for (j, row) in w.chunks_exact_mut(self.k.max(1)).take(self.n).enumerate() {
            let (panel, column) = (j / NR, j % NR);
            for (kk, v) in row.iter_mut().enumerate() {
                *v = from_bf16(
                    self.packed[((panel * self.pairs + kk / 2) * NR + column) * 2 + kk % 2],
                );
            }
        }
        w
    }
}

/// `v` rounded to the nearest bf16, ties to even; a NaN stays a (quiet) NaN.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The rows of an (m, k) `x` in bf16, each row 2·pairs values (padding zero).
fn convert_rows(x: &[f32], m: usize, k: usize, pairs: usize, split: Split) -> Vec<u16> {
    let stride = 2 * pairs;
    let mut out = vec![0u16; m * stride];
    let row = |(src, dst): (&[f32], &mut [u16])| {
        super::super::with_wide_vectors(
            #[inline(always)]
            || dst.iter_mut().zip(src).for_each(|(d, &v)| *d = to_bf16(v)),
        )
    };
    let (k, stride) = (k.max(1), stride.max(1));
    if split == Split::Serial || m * k < super::super::PARALLEL_MIN {
        x.chunks_exact(k).zip(out.chunks_exact_mut(stride)).for_each(row);
    } else {
        x.par_chunks_exact(k).zip(out.par_chunks_exact_mut(stride)).for_each(row);
    }
    out
}

/// One tile: `rows` ≤ [`MR`] activation rows (`a`, `stride` values apart) against one panel
/// (`b`) over `pairs` pairs of k, and where its outputs go.
pub(crate) struct Tile<'a> {
    pub a: &'a [u16],
    pub stride: usize,
    pub rows: usize,
    pub b: &'a [u16],
    pub pairs: usize,
    /// Output row 0's first column of the panel, `n` apart, the panel's columns ≤ n.
    out: Out,
    n: usize,
    columns: usize,
    /// From the panel's first column on.
    bias: Option<&'a [f32]>,
}

impl Tile<'_> {
    /// The tile `rows` rows further down.
    pub fn below(&self, rows: usize) -> Tile<'_> {
        Tile {
            a: &self.a[rows * self.stride..],
            rows: self.rows - rows,
            out: Out(self.out.at(rows * self.n)),
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
            _ => unsafe { super::bf16_x86::run(self, level) },
        }
    }

    fn run_portable(&self) {
        let mut acc = [[0.0f32; NR]; MR];
        for (r, sums) in acc.iter_mut().enumerate().take(self.rows) {
            let a = &self.a[r * self.stride..][..2 * self.pairs];
            for (c, sum) in sums.iter_mut().enumerate() {
                for p in 0..self.pairs {
                    let b = &self.b[(p * NR + c) * 2..][..2];
                    let (a0, a1) = (from_bf16(a[2 * p]), from_bf16(a[2 * p + 1]));
                    *sum = a0.mul_add(from_bf16(b[0]), a1.mul_add(from_bf16(b[1]), *sum));
                }
            }
        }
        // SAFETY: as in `run`.
        unsafe { self.write(&acc, self.rows) };
    }

    /// The outputs of the tile's first `rows` rows: their sums, plus the bias.
    ///
    /// # Safety
    /// The tile's outputs are valid to write and no one else's.
    #[inline(always)]
    pub unsafe fn write(&self, acc: &[[f32; NR]; MR], rows: usize) {
        let (out, n, rows, columns) = (self.out, self.n, rows.min(self.rows), self.columns);
        // SAFETY: the caller's promise.
        unsafe {
            match self.bias {
                Some(bias) => write_tile(out, n, rows, columns, |r, c| acc[r][c] + bias[c]),
                None => write_tile(out, n, rows, columns, |r, c| acc[r][c]),
            }
        }
    }
}

/// `x · Wᵀ + b` for a row-major (m, k) `x`, on `level` (the fastest the processor has, but
/// the tests run each).
pub fn affine_bf16_on(
    level: Level,
    x: &[f32],
    w: &Bf16Weight,
    bias: Option<&[f32]>,
    m: usize,
    split: Split,
) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let a = convert_rows(x, m, k, w.pairs, split);
    let stride = 2 * w.pairs;
    let panel_len = w.pairs * NR * 2;
    tiled_output(m, n, k, split, |out, i0, rows, panel| {
        let j0 = panel * NR;
        Tile {
            a: &a[i0 * stride..],
            stride,
            rows,
            b: &w.packed[panel * panel_len..][..panel_len],
            pairs: w.pairs,
            out,
            n,
            columns: (n - j0).min(NR),
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

    #[test]
    fn rounding_to_bf16_is_to_nearest_even_and_keeps_nan_and_infinity() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: to even (1); just above it rounds up.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up, to even.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(to_bf16(f32::MAX), 0x7F80, "rounds past the largest bf16");
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert!(from_bf16(to_bf16(f32::from_bits(0x7F80_0001))).is_nan(), "a NaN's low bits");
        for v in [0.0f32, -0.0, 3.140625, -1e30, 1e-30] {
            assert_eq!(from_bf16(to_bf16(v)).to_bits() >> 16, to_bf16(v) as u32);
        }
    }

    #[test]
    fn every_level_gives_the_portable_sums_and_stays_within_the_rounding_bound() {
        let mut rng = Rng::seed(11);
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (8, 2, 48),
            (9, 13, 49),
            (17, 64, 100),
            (70, 131, 97),
            (2, 768, 130),
        ] {
            let x = normal(m * k, &mut rng);
            let w = normal(n * k, &mut rng);
            let bias = normal(n, &mut rng);
            let packed = Bf16Weight::pack(&w, n, k);
            let portable =
                affine_bf16_on(Level::Portable, &x, &packed, Some(&bias), m, Split::Threads);
            for i in 0..m {
                for j in 0..n {
                    let (xr, wr) = (&x[i * k..][..k], &w[j * k..][..k]);
                    let want: f64 =
                        xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                            + bias[j] as f64;
                    // Each factor off by at most 2⁻⁸ of itself (8 bits kept); the f32 sums add k·2⁻²⁴.
                    let size: f64 =
                        xr.iter().zip(wr).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                    let bound = size * (2.0 / 256.0 + 1.0 / 65_536.0 + k as f64 * 6e-8)
                        + 1e-6 * (bias[j] as f64).abs()
                        + 1e-6;
                    let got = portable[i * n + j] as f64;
                    assert!((got - want).abs() <= bound, "{m}×{k}×{n} [{i},{j}]: {got} vs {want}");
                }
            }
            for level in Level::available(Precision::Bf16) {
                let got = affine_bf16_on(level, &x, &packed, Some(&bias), m, Split::Threads);
                assert_eq!(got, portable, "{level:?} at {m}×{k}×{n}");
                let unbiased = affine_bf16_on(level, &x, &packed, None, m, Split::Threads);
                let shifted: Vec<f32> =
                    unbiased.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
                assert_eq!(shifted, portable, "{level:?} at {m}×{k}×{n} without bias");
            }
        }
    }

    #[test]
    fn bf16_weights_pack_without_change_and_nan_reaches_the_outputs() {
        // Values that are already bf16 (a bf16 checkpoint widened on loading) pack exactly.
        let mut rng = Rng::seed(3);
        let w: Vec<f32> =
            normal(50 * 30, &mut rng).iter().map(|&v| from_bf16(to_bf16(v))).collect();
        assert_eq!(Bf16Weight::pack(&w, 50, 30).dequantize(), w);
        let packed = Bf16Weight::pack(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        for level in Level::available(Precision::Bf16) {
            let y =
                affine_bf16_on(level, &[1.0, f32::NAN, 1.0, 1.0], &packed, None, 2, Split::Threads);
            assert!(y[0].is_nan() && y[1].is_nan(), "{level:?} {y:?}");
            assert_eq!(&y[2..], &[3.0, 7.0], "{level:?}");
        }
    }
}
