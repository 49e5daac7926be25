//! Products with int8 weights: `x · Wᵀ + b` with W quantized per output channel (symmetric,
//! once, when packed) and x per row (symmetric, at every call), summed exactly in i32 and
//! scaled back to f32 — PyTorch's and ONNX Runtime's dynamic quantization, with finer
//! activation scales (one per row instead of one per tensor).
//!
//! The weight is packed once into panels of [`NR`] columns in the layout the microkernels read:
//! for each group of four k, the panel's columns' four bytes side by side, so one 64-byte load
//! feeds sixteen 4-way dot products (`vpdpbusd`). That instruction multiplies unsigned bytes
//! by signed ones, so an activation is stored as `q + 128` (1..=255) and `128·Σₖ w` is taken
//! off each column's sum. The levels in `quantized_x86.rs` differ only in the instructions they
//! sum with: integer sums are exact, so every level gives the portable loop's outputs to the
//! bit, which the tests hold them to.

use rayon::prelude::*;

/// Columns per panel: three 16-lane vectors.
pub const NR: usize = 48;
/// Rows per register tile.
pub const MR: usize = 8;
/// Products of at least this many multiply-adds are split across threads.
const PARALLEL_MACS: usize = 1 << 20;

/// An (n, k) weight quantized to int8 per output channel and packed for [`affine_int8`].
pub struct Int8Weight {
    pub n: usize,
    pub k: usize,
    /// k in whole groups of four (one 32-bit lane's dot product).
    quads: usize,
    /// `[panel][quad][column][4]`, zero past n and k.
    packed: Vec<i8>,
    /// Per column, padded to whole panels: the scale (max |w| / 127) and `128·Σₖ q`.
    scales: Vec<f32>,
    shifts: Vec<i32>,
}

impl Int8Weight {
    /// Quantizes the rows of a row-major (n, k) `w`: each row's largest magnitude becomes 127.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Int8Weight {
        let (quads, panels) = (k.div_ceil(4), n.div_ceil(NR));
        let mut packed = vec![0i8; panels * quads * NR * 4];
        let mut scales = vec![0.0f32; panels * NR];
        let mut shifts = vec![0i32; panels * NR];
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
            shifts[j] = 128 * sum;
        }
        Int8Weight { n, k, quads, packed, scales, shifts }
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

/// The rows of an (m, k) `x` quantized: `q + 128` with the row's largest magnitude at 127,
/// each row 4·quads bytes (padding 128, a zero), and each row's scale.
fn quantize_rows(x: &[f32], m: usize, k: usize, quads: usize) -> (Vec<u8>, Vec<f32>) {
    let stride = 4 * quads;
    let mut bytes = vec![128u8; m * stride];
    let mut scales = vec![0.0f32; m];
    let row = |(src, (dst, scale)): (&[f32], (&mut [u8], &mut f32))| {
        super::with_wide_vectors(
            #[inline(always)]
            || {
                let (s, inv) = symmetric_scale(src);
                *scale = s;
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (round_to_int(v * inv) + 128) as u8;
                }
            },
        )
    };
    let (k, stride) = (k.max(1), stride.max(1));
    if m * k < super::PARALLEL_MIN {
        x.chunks_exact(k).zip(bytes.chunks_exact_mut(stride).zip(&mut scales)).for_each(row);
    } else {
        let rows = bytes.par_chunks_exact_mut(stride).zip(scales.par_iter_mut());
        x.par_chunks_exact(k).zip(rows).for_each(row);
    }
    (bytes, scales)
}

/// The instructions a tile is summed with, slowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Level {
    /// Every level this processor runs, the fastest last.
    pub fn available() -> Vec<Level> {
        let mut levels = vec![Level::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                levels.push(Level::Avx2);
            }
            if has!("avx512f") && has!("avx512bw") {
                levels.push(Level::Avx512);
                if has!("avx512vnni") {
                    levels.push(Level::Vnni);
                }
            }
        }
        levels
    }

    pub fn best() -> Level {
        static BEST: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Level::available().last().expect("portable is always there"))
    }
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
    out: Out,
    n: usize,
    columns: usize,
    /// From the tile's first row and the panel's first column on.
    row_scales: &'a [f32],
    scales: &'a [f32],
    shifts: &'a [i32],
    bias: Option<&'a [f32]>,
}

impl Tile<'_> {
    /// The tile `rows` rows further down.
    pub fn below(&self, rows: usize) -> Tile<'_> {
        Tile {
            a: &self.a[rows * self.stride..],
            rows: self.rows - rows,
            out: Out(self.out.at(rows * self.n)),
            row_scales: &self.row_scales[rows..],
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
            _ => unsafe { super::quantized_x86::run(self, level) },
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

    /// The outputs of the tile's first `rows` rows from their i32 sums: `(sum − shift) · (row scale
    /// · column scale) + bias`, one rounding (a fused multiply-add) on every level alike.
    /// Inlined into each level's kernel, so that it is compiled for that level's vectors.
    ///
    /// # Safety
    /// The tile's outputs are valid to write and no one else's.
    #[inline(always)]
    pub unsafe fn write(&self, acc: &[[i32; NR]; MR], rows: usize) {
        for (r, sums) in acc.iter().enumerate().take(rows.min(self.rows)) {
            // SAFETY: the caller's promise; the row's columns are the panel's ≤ n.
            let out =
                unsafe { std::slice::from_raw_parts_mut(self.out.at(r * self.n), self.columns) };
            let row_scale = self.row_scales[r];
            let (scales, shifts) = (&self.scales[..self.columns], &self.shifts[..self.columns]);
            match self.bias {
                Some(bias) => {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o = ((sums[c] - shifts[c]) as f32).mul_add(row_scale * scales[c], bias[c]);
                    }
                }
                None => {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o = ((sums[c] - shifts[c]) as f32) * (row_scale * scales[c]);
                    }
                }
            }
        }
    }
}

/// `x · Wᵀ + b` for a row-major (m, k) `x`, on the fastest level this processor has.
pub fn affine_int8(x: &[f32], w: &Int8Weight, bias: Option<&[f32]>, m: usize) -> Vec<f32> {
    affine_int8_on(Level::best(), x, w, bias, m)
}

/// A raw output pointer shared by tasks that each write their own rectangle of it.
#[derive(Clone, Copy)]
pub(crate) struct Out(*mut f32);
// SAFETY: the tasks write disjoint elements (one rectangle of rows × panels each) and the
// buffer outlives them (rayon's scope).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so that closures capture the whole `Out`, which is `Sync`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// [`affine_int8`] on the given level (the tests run each level the processor has).
pub fn affine_int8_on(
    level: Level,
    x: &[f32],
    w: &Int8Weight,
    bias: Option<&[f32]>,
    m: usize,
) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let (a, row_scales) = quantize_rows(x, m, k, w.quads);
    let stride = 4 * w.quads;
    let panels = n.div_ceil(NR);
    let mut out = Vec::<f32>::with_capacity(m * n);
    let at = Out(out.as_mut_ptr());
    // Tasks of up to 64 rows × a run of panels: rows share each panel while it is in cache,
    // and a short product (one row when generating) splits by panels.
    let row_blocks = m.div_ceil(64);
    let threads = if m * n * k >= PARALLEL_MACS { rayon::current_num_threads() } else { 1 };
    let panel_runs = (4 * threads).div_ceil(row_blocks).clamp(1, panels.max(1));
    let per_run = panels.div_ceil(panel_runs.max(1)).max(1);
    let task = |t: usize| {
        let (block, run) = (t / panel_runs, t % panel_runs);
        let rows = block * 64..(block * 64 + 64).min(m);
        for panel in run * per_run..((run + 1) * per_run).min(panels) {
            let (b, j0) = (&w.packed[panel * w.quads * NR * 4..][..w.quads * NR * 4], panel * NR);
            for i0 in rows.clone().step_by(MR) {
                Tile {
                    a: &a[i0 * stride..],
                    stride,
                    rows: MR.min(m - i0),
                    b,
                    quads: w.quads,
                    out: Out(at.at(i0 * n + j0)),
                    n,
                    columns: (n - j0).min(NR),
                    row_scales: &row_scales[i0..],
                    scales: &w.scales[j0..],
                    shifts: &w.shifts[j0..],
                    bias: bias.map(|b| &b[j0..]),
                }
                .run(level);
            }
        }
    };
    let tasks = row_blocks * panel_runs;
    if threads > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    // SAFETY: every (row, column) lies in exactly one task's rectangle, and each was written.
    unsafe { out.set_len(m * n) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn normal(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    /// `x · Wᵀ + b` in f64, and for each output the bound on the quantized product's error:
    /// Σₖ |x − x̂| |w| + |x̂| |w − ŵ|, with each rounding at most half a step.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let scale = |row: &[f32]| row.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64)) / 127.0;
        let (mut want, mut bound) = (vec![0.0; m * n], vec![0.0; m * n]);
        for i in 0..m {
            let xr = &x[i * k..][..k];
            let sx = scale(xr);
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
        let levels = Level::available();
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
            let portable = affine_int8_on(Level::Portable, &x, &packed, Some(&bias), m);
            let (want, bound) = reference(&x, &w, &bias, m, k, n);
            for (i, (&got, (&want, &bound))) in
                portable.iter().zip(want.iter().zip(&bound)).enumerate()
            {
                assert!(
                    (got as f64 - want).abs() <= bound,
                    "{m}×{k}×{n} [{i}]: {got} vs {want} ± {bound}"
                );
            }
            for &level in &levels {
                let got = affine_int8_on(level, &x, &packed, Some(&bias), m);
                assert_eq!(got, portable, "{level:?} at {m}×{k}×{n}");
            }
        }
    }

    #[test]
    fn the_largest_values_survive_and_zero_rows_stay_zero() {
        // Extreme bytes on both sides (255 × −127 in every lane) and an all-zero row.
        let (m, k, n) = (3, 1000, 50);
        let mut x = vec![0.0f32; m * k];
        x[..k].fill(1.0);
        x[2 * k..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { -2.0 } else { 2.0 });
        let w: Vec<f32> = (0..n * k).map(|i| if (i / k) % 2 == 0 { -3.0 } else { 3.0 }).collect();
        let packed = Int8Weight::pack(&w, n, k);
        for level in Level::available() {
            let y = affine_int8_on(level, &x, &packed, None, m);
            for j in 0..n {
                let sign = if j % 2 == 0 { -1.0 } else { 1.0 };
                assert!((y[j] - sign * 3000.0).abs() <= 1e-3, "{level:?} row 0 col {j}: {}", y[j]);
                assert_eq!(y[n + j], 0.0, "{level:?} zero row col {j}");
                assert_eq!(y[2 * n + j], 0.0, "{level:?} alternating row col {j}");
            }
        }
        assert_eq!(packed.dequantize(), w);
    }

    #[test]
    fn a_nan_input_row_gives_nan_outputs() {
        let packed = Int8Weight::pack(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        let y = affine_int8_on(Level::best(), &[1.0, f32::NAN, 1.0, 1.0], &packed, None, 2);
        assert!(y[0].is_nan() && y[1].is_nan(), "{y:?}");
        assert!(y[2].is_finite() && y[3].is_finite(), "{y:?}");
    }
}
