//! Products `x · Wᵀ + b` with weights packed once in a low precision for inference: int8
//! (`int8.rs`, VNNI) and bf16 (`bf16.rs`, AVX512-BF16). Both share one skeleton, here: the
//! weight in panels of [`NR`] columns, laid out so that one 64-byte load feeds sixteen lanes'
//! dot products of a few k each; register tiles of up to [`MR`] rows against one panel; and
//! tasks of row blocks × panel runs across threads. Each precision has a portable loop, the
//! reference its x86 kernels (`*_x86.rs`) are tested against on every level the processor
//! has.

mod bf16;
#[cfg(target_arch = "x86_64")]
mod bf16_x86;
mod int8;
#[cfg(target_arch = "x86_64")]
mod int8_x86;

use bf16::{affine_bf16_on, Bf16Weight};
use int8::{affine_int8_on, Int8Weight};

use crate::backend::Unary;
use crate::{Error, Precision, Result};
use rayon::prelude::*;

/// A weight packed for one precision's products.
pub(crate) enum PackedCpu {
    Int8(Int8Weight),
    Bf16(Bf16Weight),
}

impl PackedCpu {
    /// A row-major (n, k) f32 `w` packed for `precision`.
    pub fn pack(precision: Precision, w: &[f32], n: usize, k: usize) -> Result<PackedCpu> {
        match precision {
            Precision::Int8 => Ok(PackedCpu::Int8(Int8Weight::pack(w, n, k))),
            Precision::Bf16 => Ok(PackedCpu::Bf16(Bf16Weight::pack(w, n, k))),
            Precision::F32 => Err(Error::value("quantize", "f32 weights are not packed")),
        }
    }

    /// `x · Wᵀ + b` for a row-major (m, k) `x`.
    pub fn affine(&self, x: &[f32], bias: Option<&[f32]>, m: usize) -> Vec<f32> {
        self.affine_split(x, bias, m, Split::Threads)
    }

    fn affine_split(&self, x: &[f32], bias: Option<&[f32]>, m: usize, split: Split) -> Vec<f32> {
        match self {
            PackedCpu::Int8(w) => {
                affine_int8_on(Level::best(Precision::Int8), x, w, bias, m, split)
            }
            PackedCpu::Bf16(w) => {
                affine_bf16_on(Level::best(Precision::Bf16), x, w, bias, m, split)
            }
        }
    }

    /// (n, k): the weight's outputs and inputs.
    fn dims(&self) -> (usize, usize) {
        match self {
            PackedCpu::Int8(w) => (w.n, w.k),
            PackedCpu::Bf16(w) => (w.n, w.k),
        }
    }

    /// `between(x · W₁ᵀ + b₁) · W₂ᵀ + b₂` for a row-major (m, k) `x`, `self` = W₁ (h, k) and
    /// `second` = W₂ (n, h): a FeedForward pair, in blocks of [`ROW_BLOCK`] rows, one thread
    /// each, so that a block's hidden values stay in cache from the first product through
    /// `between` and its quantization to the second. Each row's quantization and sums are
    /// its own, so these are the values of the three steps one after another over all rows.
    pub fn feed_forward(
        &self,
        first_bias: Option<&[f32]>,
        between: Option<Unary>,
        second: &PackedCpu,
        second_bias: Option<&[f32]>,
        x: &[f32],
        m: usize,
    ) -> Vec<f32> {
        let ((_, k), (n, _)) = (self.dims(), second.dims());
        let pair = |x: &[f32], m: usize, split: Split| {
            let mut hidden = self.affine_split(x, first_bias, m, split);
            if let Some(op) = between {
                super::unary::apply_in_place(&mut hidden, op);
            }
            second.affine_split(&hidden, second_bias, m, split)
        };
        // Too few blocks to share among the threads: each product splits by itself.
        if k == 0 || n == 0 || m < 2 * ROW_BLOCK * rayon::current_num_threads() {
            return pair(x, m, Split::Threads);
        }
        let mut out = Vec::with_capacity(m * n);
        let blocks = out.spare_capacity_mut().par_chunks_mut(ROW_BLOCK * n);
        blocks.zip(x.par_chunks(ROW_BLOCK * k)).for_each(|(y, x)| {
            for (y, v) in y.iter_mut().zip(pair(x, x.len() / k, Split::Serial)) {
                y.write(v);
            }
        });
        // SAFETY: block i's rows × n values filled output chunk i, and the chunks cover m · n.
        unsafe { out.set_len(m * n) };
        out
    }

    /// The row-major (n, k) weight the products use.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            PackedCpu::Int8(w) => w.dequantize(),
            PackedCpu::Bf16(w) => w.dequantize(),
        }
    }
}

/// Columns per panel: three 16-lane vectors.
pub const NR: usize = 48;
/// Rows per register tile.
pub const MR: usize = 8;
/// Products of at least this many multiply-adds are split across threads.
const PARALLEL_MACS: usize = 1 << 20;
/// Rows per task: they share each panel while it is in cache.
const ROW_BLOCK: usize = 64;

/// Whether a product shares its work among the threads or runs on the calling one (a task of
/// a larger kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Threads,
    Serial,
}

/// The instructions a tile is summed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// `vpdpbusd`, int8 only.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// `vdpbf16ps`, bf16 only.
    #[cfg(target_arch = "x86_64")]
    Bf16,
}

impl Level {
    /// Every level this processor runs for `precision`'s products, the fastest last.
    pub fn available(precision: Precision) -> Vec<Level> {
        let mut levels = vec![Level::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                levels.push(Level::Avx2);
            }
            if has!("avx512f") && has!("avx512bw") {
                levels.push(Level::Avx512);
                match precision {
                    Precision::Int8 if has!("avx512vnni") => levels.push(Level::Vnni),
                    Precision::Bf16 if has!("avx512bf16") => levels.push(Level::Bf16),
                    _ => {}
                }
            }
        }
        levels
    }

    pub fn best(precision: Precision) -> Level {
        use std::sync::OnceLock;
        static BEST: [OnceLock<Level>; 2] = [OnceLock::new(), OnceLock::new()];
        let slot = if precision == Precision::Bf16 { 1 } else { 0 };
        *BEST[slot]
            .get_or_init(|| *Level::available(precision).last().expect("portable is always there"))
    }
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

/// An (m, n) f32 output written tile by tile: `tile(out, i0, rows, panel)` must write rows
/// `i0..i0 + rows` (≤ [`MR`]) of the panel's columns, `out` pointing at row `i0`, column
/// `panel · NR`. Tasks are up to [`ROW_BLOCK`] rows × a run of panels, so that a short product
/// (one row when generating) still splits, by panels.
pub(crate) fn tiled_output(
    m: usize,
    n: usize,
    k: usize,
    split: Split,
    tile: impl Fn(Out, usize, usize, usize) + Sync,
) -> Vec<f32> {
    let panels = n.div_ceil(NR);
    let mut out = Vec::<f32>::with_capacity(m * n);
    let at = Out(out.as_mut_ptr());
    let row_blocks = m.div_ceil(ROW_BLOCK);
    let threads = if split == Split::Threads && m * n * k >= PARALLEL_MACS {
        rayon::current_num_threads()
    } else {
        1
    };
    let panel_runs = (4 * threads).div_ceil(row_blocks.max(1)).clamp(1, panels.max(1));
    let per_run = panels.div_ceil(panel_runs).max(1);
    let task = |t: usize| {
        let (block, run) = (t / panel_runs, t % panel_runs);
        let rows = block * ROW_BLOCK..(block * ROW_BLOCK + ROW_BLOCK).min(m);
        for panel in run * per_run..((run + 1) * per_run).min(panels) {
            for i0 in rows.clone().step_by(MR) {
                tile(Out(at.at(i0 * n + panel * NR)), i0, MR.min(m - i0), panel);
            }
        }
    };
    let tasks = row_blocks * panel_runs;
    if threads > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    // SAFETY: every (row, column) lies in exactly one task's rectangle, and `tile` wrote it.
    unsafe { out.set_len(m * n) };
    out
}

/// Writes a tile's f32 results: `rows` rows of `columns` (≤ [`NR`]) outputs, `n` apart from
/// `out`, each `value(r, c)`. Inlined into each kernel, so that it is compiled for that
/// kernel's vectors.
///
/// # Safety
/// The tile's outputs are valid to write and no one else's.
#[inline(always)]
pub(crate) unsafe fn write_tile(
    out: Out,
    n: usize,
    rows: usize,
    columns: usize,
    value: impl Fn(usize, usize) -> f32,
) {
    for r in 0..rows {
        // SAFETY: the caller's promise.
        let row = unsafe { std::slice::from_raw_parts_mut(out.at(r * n), columns) };
        for (c, o) in row.iter_mut().enumerate() {
            *o = value(r, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn a_feed_forward_pair_in_blocks_gives_the_values_of_its_three_steps() {
        let mut rng = Rng::seed(11);
        let mut normal = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<_>>();
        // Both sides of the threshold for blocks, with a ragged last block.
        let fused = 2 * ROW_BLOCK * rayon::current_num_threads();
        for (m, k, h, n) in
            [(1, 3, 5, 2), (fused - 1, 8, 20, 9), (fused, 40, 100, 30), (fused + 37, 64, 96, 49)]
        {
            let (x, w1, b1, w2, b2) =
                (normal(m * k), normal(h * k), normal(h), normal(n * h), normal(n));
            for precision in [Precision::Int8, Precision::Bf16] {
                let first = PackedCpu::pack(precision, &w1, h, k).unwrap();
                let second = PackedCpu::pack(precision, &w2, n, h).unwrap();
                for between in [None, Some(Unary::Gelu), Some(Unary::Relu)] {
                    let b2 = (between != Some(Unary::Relu)).then_some(&b2[..]);
                    let mut hidden = first.affine(&x, Some(&b1), m);
                    if let Some(op) = between {
                        hidden = super::super::unary::forward(&hidden, op);
                    }
                    let want = second.affine(&hidden, b2, m);
                    let got = first.feed_forward(Some(&b1), between, &second, b2, &x, m);
                    assert_eq!(got, want, "{precision} {m}×{k}×{h}×{n}, {between:?}");
                }
            }
        }
    }
}
