//! Recurrent networks over whole sequences: a fused cell per step, forward and backward through
//! time, with every buffer allocated once per sequence (none per step).
//!
//! Legend: B batch, T time, H hidden size, G gates per cell (LSTM 4: i, f, g, o as PyTorch
//! orders them; tanh RNN 1). `xproj` is the input's projection for every step, (B, T, G·H),
//! computed beforehand in one matrix product.

use super::{matmul, to_row_major, with_wide_vectors, Float, MatRef};
use crate::backend::{Cell, RecurrentDims as Dims};

/// What forward keeps for backward.
pub struct Saved<T> {
    /// Gate activations (i, f, g, o after their nonlinearities; h for tanh), (B, T, G·H).
    pub gates: Vec<T>,
    /// The hidden state entering each step, (B, T, H).
    pub h_prev: Vec<T>,
    /// The cell state entering each step and after it, (B, T, H) each (LSTM only).
    pub c_prev: Vec<T>,
    pub c_next: Vec<T>,
}

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

#[inline(always)]
fn tanh<T: Float>(x: T) -> T {
    let two = T::one() + T::one();
    T::one() - two / ((two * x).fast_exp() + T::one())
}

/// Sequences run independently, so the batch is split across threads once and each thread
/// takes its sequences through every step: no hand-off per step. Below this much work per
/// step (B·H·G·H multiply-adds) one thread runs everything.
const SPLIT_MIN: usize = 1 << 16;

/// A group of sequences' share of a recurrence's buffers, which splits after its first `k`
/// sequences into two independent groups.
trait Split: Sized + Send {
    fn split(self, k: usize, d: Dims, gh: usize) -> (Self, Self);
}

/// Runs `run` on `rows` — in halves across threads while each half still has sequences,
/// threads to run on and work enough per step, otherwise all on this thread.
fn in_halves<R: Split>(
    rows: R,
    d: Dims,
    gh: usize,
    threads: usize,
    run: &(impl Fn(R, Dims) + Sync),
) {
    if threads < 2 || d.b < 2 || d.b * d.h * gh < SPLIT_MIN {
        return run(rows, d);
    }
    let k = d.b / 2;
    let (first, second) = rows.split(k, d, gh);
    let half = threads / 2;
    rayon::join(
        || in_halves(first, Dims { b: k, ..d }, gh, half, run),
        || in_halves(second, Dims { b: d.b - k, ..d }, gh, threads - half, run),
    );
}

/// Splits a mutable per-sequence buffer after `k` sequences of `per` elements each (an
/// unused, empty buffer splits into two empty ones).
fn split_mut<T>(buf: &mut [T], k: usize, per: usize) -> (&mut [T], &mut [T]) {
    buf.split_at_mut((k * per).min(buf.len()))
}

/// The same for a shared buffer.
fn split_ref<T>(buf: &[T], k: usize, per: usize) -> (&[T], &[T]) {
    buf.split_at((k * per).min(buf.len()))
}

/// Runs the recurrence. Returns the packed (B, T+2, H) result — outputs for every step, then
/// the final h, then the final c (for tanh, c0 passed through untouched) — and what backward
/// needs. Where `mask` is false the state carries over unchanged and the output is zero
/// (padding).
pub fn recurrence_forward<T: Float + Send + Sync>(
    cell: Cell,
    xproj: &[T],
    w_hh: &[T],
    h0: &[T],
    c0: &[T],
    mask: Option<&[bool]>,
    d: Dims,
) -> (Vec<T>, Saved<T>) {
    let (b, t, h, g) = (d.b, d.t, d.h, cell.gates());
    let gh = g * h;
    let lstm = cell == Cell::Lstm;
    let mut packed = vec![T::zero(); b * (t + 2) * h];
    let mut s = Saved {
        gates: vec![T::zero(); b * t * gh],
        h_prev: vec![T::zero(); b * t * h],
        c_prev: if lstm { vec![T::zero(); b * t * h] } else { Vec::new() },
        c_next: if lstm { vec![T::zero(); b * t * h] } else { Vec::new() },
    };
    let (mut hs, mut cs) = (h0.to_vec(), c0.to_vec());
    // W_hh transposed once, (H, G·H) row-major: gemm reads it 2.4× faster per step than
    // the (G·H, H) original through strides (32×256·256×512: 103 against 42 GFLOP/s).
    let w_t = to_row_major(MatRef { data: w_hh, row_stride: 1, col_stride: h }, h, gh, true);
    let rows = ForwardRows {
        xproj,
        mask,
        hs: &mut hs,
        cs: &mut cs,
        packed: &mut packed,
        gates: &mut s.gates,
        h_prev: &mut s.h_prev,
        c_prev: &mut s.c_prev,
        c_next: &mut s.c_next,
    };
    let run = |rows, d| forward_steps(cell, &w_t, rows, d);
    in_halves(rows, d, gh, rayon::current_num_threads(), &run);
    for bi in 0..b {
        packed[(bi * (t + 2) + t) * h..][..h].copy_from_slice(&hs[bi * h..(bi + 1) * h]);
        packed[(bi * (t + 2) + t + 1) * h..][..h].copy_from_slice(&cs[bi * h..(bi + 1) * h]);
    }
    (packed, s)
}

/// One group of sequences' share of every forward buffer (all of them sequence-major).
struct ForwardRows<'a, T> {
    xproj: &'a [T],
    mask: Option<&'a [bool]>,
    hs: &'a mut [T],
    cs: &'a mut [T],
    packed: &'a mut [T],
    gates: &'a mut [T],
    h_prev: &'a mut [T],
    c_prev: &'a mut [T],
    c_next: &'a mut [T],
}

impl<T: Send + Sync> Split for ForwardRows<'_, T> {
    fn split(self, k: usize, d: Dims, gh: usize) -> (Self, Self) {
        let (t, h) = (d.t, d.h);
        let (xproj, mask) =
            (split_ref(self.xproj, k, t * gh), self.mask.map(|m| m.split_at(k * t)).unzip());
        let (hs, cs) = (split_mut(self.hs, k, h), split_mut(self.cs, k, h));
        let (packed, gates) =
            (split_mut(self.packed, k, (t + 2) * h), split_mut(self.gates, k, t * gh));
        let h_prev = split_mut(self.h_prev, k, t * h);
        let (c_prev, c_next) = (split_mut(self.c_prev, k, t * h), split_mut(self.c_next, k, t * h));
        (
            ForwardRows {
                xproj: xproj.0,
                mask: mask.0,
                hs: hs.0,
                cs: cs.0,
                packed: packed.0,
                gates: gates.0,
                h_prev: h_prev.0,
                c_prev: c_prev.0,
                c_next: c_next.0,
            },
            ForwardRows {
                xproj: xproj.1,
                mask: mask.1,
                hs: hs.1,
                cs: cs.1,
                packed: packed.1,
                gates: gates.1,
                h_prev: h_prev.1,
                c_prev: c_prev.1,
                c_next: c_next.1,
            },
        )
    }
}

/// The recurrence for `d.b` sequences on this thread, step by step.
fn forward_steps<T: Float + Send + Sync>(cell: Cell, w_t: &[T], mut r: ForwardRows<T>, d: Dims) {
    let (t, h, gh) = (d.t, d.h, cell.gates() * d.h);
    let b = d.b;
    let mut z = vec![T::zero(); b * gh]; // this step's U·h, reused
    for step in 0..t {
        // U·h for every sequence at once: (B, H) · (H, G·H).
        matmul(
            MatRef { data: r.hs, row_stride: h, col_stride: 1 },
            MatRef { data: w_t, row_stride: gh, col_stride: 1 },
            b,
            h,
            gh,
            &mut z,
            false,
        );
        with_wide_vectors(
            #[inline(always)]
            || step_cells(cell, &mut r, &mut z, step, d),
        );
    }
}

/// The cells of one step for every sequence of `r`: gates from `z` (U·h) plus the input's
/// projection, then the new state and output; padded sequences keep their state.
#[inline(always)]
fn step_cells<T: Float>(cell: Cell, r: &mut ForwardRows<T>, z: &mut [T], step: usize, d: Dims) {
    let (b, t, h, gh) = (d.b, d.t, d.h, cell.gates() * d.h);
    for bi in 0..b {
        let row = bi * t + step;
        r.h_prev[row * h..(row + 1) * h].copy_from_slice(&r.hs[bi * h..(bi + 1) * h]);
        if cell == Cell::Lstm {
            r.c_prev[row * h..(row + 1) * h].copy_from_slice(&r.cs[bi * h..(bi + 1) * h]);
        }
        if r.mask.is_some_and(|m| !m[row]) {
            if cell == Cell::Lstm {
                r.c_next[row * h..(row + 1) * h].copy_from_slice(&r.cs[bi * h..(bi + 1) * h]);
            }
            continue;
        }
        let pre = &r.xproj[row * gh..(row + 1) * gh];
        let zr = &mut z[bi * gh..(bi + 1) * gh];
        zr.iter_mut().zip(pre).for_each(|(z, &p)| *z += p);
        let gates = &mut r.gates[row * gh..(row + 1) * gh];
        let out = &mut r.packed[(bi * (t + 2) + step) * h..][..h];
        let (hrow, crow) = (&mut r.hs[bi * h..(bi + 1) * h], &mut r.cs[bi * h..(bi + 1) * h]);
        match cell {
            Cell::Tanh => {
                for j in 0..h {
                    let v = tanh(zr[j]);
                    (gates[j], hrow[j], out[j]) = (v, v, v);
                }
            }
            Cell::Lstm => {
                // Activations gate by gate (contiguous, so they vectorize), then the state.
                let (zi, rest) = zr.split_at(h);
                let (zf, rest) = rest.split_at(h);
                let (zg, zo) = rest.split_at(h);
                let (gi, rest) = gates.split_at_mut(h);
                let (gf, rest) = rest.split_at_mut(h);
                let (gg, go) = rest.split_at_mut(h);
                gi.iter_mut().zip(zi).for_each(|(a, &z)| *a = sigmoid(z));
                gf.iter_mut().zip(zf).for_each(|(a, &z)| *a = sigmoid(z));
                gg.iter_mut().zip(zg).for_each(|(a, &z)| *a = tanh(z));
                go.iter_mut().zip(zo).for_each(|(a, &z)| *a = sigmoid(z));
                let cn = &mut r.c_next[row * h..(row + 1) * h];
                for j in 0..h {
                    let c = gf[j] * crow[j] + gi[j] * gg[j];
                    let hv = go[j] * tanh(c);
                    (crow[j], cn[j], hrow[j], out[j]) = (c, c, hv, hv);
                }
            }
        }
    }
}

/// Backward through time from the packed result's gradient: gradients of `xproj`, of W_hh,
/// and of the initial h and c.
#[allow(clippy::type_complexity)]
pub fn recurrence_backward<T: Float + Send + Sync>(
    cell: Cell,
    grad: &[T],
    w_hh: &[T],
    saved: &Saved<T>,
    mask: Option<&[bool]>,
    d: Dims,
) -> (Vec<T>, Vec<T>, Vec<T>, Vec<T>) {
    let (b, t, h, g) = (d.b, d.t, d.h, cell.gates());
    let gh = g * h;
    let mut dx = vec![T::zero(); b * t * gh];
    let mut dh: Vec<T> =
        (0..b).flat_map(|bi| grad[(bi * (t + 2) + t) * h..][..h].to_vec()).collect();
    let mut dc: Vec<T> =
        (0..b).flat_map(|bi| grad[(bi * (t + 2) + t + 1) * h..][..h].to_vec()).collect();
    let rows = BackwardRows {
        grad,
        gates: &saved.gates,
        c_prev: &saved.c_prev,
        c_next: &saved.c_next,
        mask,
        dx: &mut dx,
        dh: &mut dh,
        dc: &mut dc,
    };
    let run = |rows, d| backward_steps(cell, w_hh, rows, d);
    in_halves(rows, d, gh, rayon::current_num_threads(), &run);
    // dW_hh = Σ over (b, t) of dz ⊗ h_prev: one product, (G·H, B·T) · (B·T, H).
    let mut dw = vec![T::zero(); gh * h];
    matmul(
        MatRef { data: &dx, row_stride: 1, col_stride: gh },
        MatRef { data: &saved.h_prev, row_stride: h, col_stride: 1 },
        gh,
        b * t,
        h,
        &mut dw,
        true,
    );
    (dx, dw, dh, dc)
}

/// dz (the gradient of the cells' pre-activations) of one step for every sequence of `r`,
/// from the hidden state's gradient `dh` and the output's; `dc` carried one step back.
#[inline(always)]
fn step_gradients<T: Float>(cell: Cell, r: &mut BackwardRows<T>, step: usize, d: Dims) {
    let (b, t, h, gh) = (d.b, d.t, d.h, cell.gates() * d.h);
    let one = T::one();
    for bi in 0..b {
        let row = bi * t + step;
        if r.mask.is_some_and(|m| !m[row]) {
            continue; // state carried through unchanged: its gradient passes straight back
        }
        let gates = &r.gates[row * gh..(row + 1) * gh];
        let dz = &mut r.dx[row * gh..(row + 1) * gh];
        let gout = &r.grad[(bi * (t + 2) + step) * h..][..h];
        let (dh, dc) = (&r.dh[bi * h..(bi + 1) * h], &mut r.dc[bi * h..(bi + 1) * h]);
        match cell {
            Cell::Tanh => {
                for j in 0..h {
                    dz[j] = (dh[j] + gout[j]) * (one - gates[j] * gates[j]);
                }
            }
            Cell::Lstm => {
                // Every slice h long, so the loop runs without bounds tests and vectorizes.
                let (gi, gf, gg, go) =
                    (&gates[..h], &gates[h..2 * h], &gates[2 * h..3 * h], &gates[3 * h..4 * h]);
                let (dzi, rest) = dz.split_at_mut(h);
                let (dzf, rest) = rest.split_at_mut(h);
                let (dzg, dzo) = rest.split_at_mut(h);
                let (c_prev, c_next) =
                    (&r.c_prev[row * h..(row + 1) * h], &r.c_next[row * h..(row + 1) * h]);
                for j in 0..h {
                    let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
                    let dhv = dh[j] + gout[j];
                    let tc = tanh(c_next[j]);
                    let dcv = dc[j] + dhv * o * (one - tc * tc);
                    dzi[j] = dcv * g * i * (one - i);
                    dzf[j] = dcv * c_prev[j] * f * (one - f);
                    dzg[j] = dcv * i * (one - g * g);
                    dzo[j] = dhv * tc * o * (one - o);
                    dc[j] = dcv * f;
                }
            }
        }
    }
}

/// One group of sequences' share of the backward buffers (all sequence-major).
struct BackwardRows<'a, T> {
    grad: &'a [T],
    gates: &'a [T],
    c_prev: &'a [T],
    c_next: &'a [T],
    mask: Option<&'a [bool]>,
    dx: &'a mut [T],
    dh: &'a mut [T],
    dc: &'a mut [T],
}

impl<T: Send + Sync> Split for BackwardRows<'_, T> {
    fn split(self, k: usize, d: Dims, gh: usize) -> (Self, Self) {
        let (t, h) = (d.t, d.h);
        let (grad, gates) =
            (split_ref(self.grad, k, (t + 2) * h), split_ref(self.gates, k, t * gh));
        let (c_prev, c_next) = (split_ref(self.c_prev, k, t * h), split_ref(self.c_next, k, t * h));
        let mask = self.mask.map(|m| m.split_at(k * t)).unzip();
        let (dx, dh, dc) =
            (split_mut(self.dx, k, t * gh), split_mut(self.dh, k, h), split_mut(self.dc, k, h));
        (
            BackwardRows {
                grad: grad.0,
                gates: gates.0,
                c_prev: c_prev.0,
                c_next: c_next.0,
                mask: mask.0,
                dx: dx.0,
                dh: dh.0,
                dc: dc.0,
            },
            BackwardRows {
                grad: grad.1,
                gates: gates.1,
                c_prev: c_prev.1,
                c_next: c_next.1,
                mask: mask.1,
                dx: dx.1,
                dh: dh.1,
                dc: dc.1,
            },
        )
    }
}

/// Backward through time for `d.b` sequences on this thread, step by step. `dh` and `dc` hold
/// the gradients of the final states and leave as those of the initial ones.
fn backward_steps<T: Float + Send + Sync>(cell: Cell, w_hh: &[T], mut r: BackwardRows<T>, d: Dims) {
    let (b, t, h) = (d.b, d.t, d.h);
    if b == 0 {
        return; // no sequences: nothing flows back
    }
    let gh = cell.gates() * h;
    let mut dh_prev = vec![T::zero(); b * h];
    for step in (0..t).rev() {
        with_wide_vectors(
            #[inline(always)]
            || step_gradients(cell, &mut r, step, d),
        );
        // dh entering this step: dz · W_hh for active sequences, unchanged for padded ones.
        matmul(
            MatRef { data: &r.dx[step * gh..], row_stride: t * gh, col_stride: 1 },
            MatRef { data: w_hh, row_stride: h, col_stride: 1 },
            b,
            gh,
            h,
            &mut dh_prev,
            false,
        );
        for bi in 0..b {
            if r.mask.is_none_or(|m| m[bi * t + step]) {
                r.dh[bi * h..(bi + 1) * h].copy_from_slice(&dh_prev[bi * h..(bi + 1) * h]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch split across threads gives what one thread gives, padding included.
    #[test]
    fn split_batches_match_one_thread() {
        for cell in [Cell::Lstm, Cell::Tanh] {
            let d = Dims { b: 7, t: 5, h: 100 };
            let gh = cell.gates() * d.h;
            assert!(d.b * d.h * gh >= SPLIT_MIN, "big enough to split");
            let val = |i: usize, s: usize| (((i * s) % 97) as f64 - 48.0) / 200.0;
            let xproj: Vec<f64> = (0..d.b * d.t * gh).map(|i| val(i, 7)).collect();
            let w: Vec<f64> = (0..gh * d.h).map(|i| val(i, 13) / 4.0).collect();
            let h0: Vec<f64> = (0..d.b * d.h).map(|i| val(i, 3)).collect();
            let c0: Vec<f64> = (0..d.b * d.h).map(|i| val(i, 5)).collect();
            let mask: Vec<bool> = (0..d.b * d.t).map(|i| i % d.t < d.t - i / d.t % 3).collect();
            let grad: Vec<f64> = (0..d.b * (d.t + 2) * d.h).map(|i| val(i, 11)).collect();
            let run = |threads: usize| {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(
                    || {
                        let (y, saved) =
                            recurrence_forward(cell, &xproj, &w, &h0, &c0, Some(&mask), d);
                        let back = recurrence_backward(cell, &grad, &w, &saved, Some(&mask), d);
                        (y, saved.gates, back)
                    },
                )
            };
            let (one, two) = (run(1), run(2));
            assert_eq!(one.0, two.0, "{cell:?} outputs");
            assert_eq!(one.1, two.1, "{cell:?} gates");
            assert_eq!(one.2 .0, two.2 .0, "{cell:?} dx");
            assert_eq!(one.2 .2, two.2 .2, "{cell:?} dh");
            assert_eq!(one.2 .3, two.2 .3, "{cell:?} dc");
            let close = one.2 .1.iter().zip(&two.2 .1).all(|(a, b)| (a - b).abs() < 1e-12);
            assert!(close, "{cell:?} dW");
        }
    }
}
