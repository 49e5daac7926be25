//! Recurrent networks over whole sequences: a fused cell per step, forward and backward through
//! time, with every buffer allocated once per sequence (none per step).
//!
//! Legend: B batch, T time, H hidden size, G gates per cell (LSTM 4: i, f, g, o as PyTorch
//! orders them; tanh RNN 1). `xproj` is the input's projection for every step, (B, T, G·H),
//! computed beforehand in one matrix product.

use super::{matmul, Float, MatRef};

/// The cell a recurrence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// `h = tanh(W x + U h)` (PyTorch's `nn.RNN`).
    Tanh,
    /// Long short-term memory (PyTorch's `nn.LSTM`).
    Lstm,
}

impl Cell {
    pub fn gates(self) -> usize {
        match self {
            Cell::Tanh => 1,
            Cell::Lstm => 4,
        }
    }
}

/// The sizes of one recurrence.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
}

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

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// Runs the recurrence. Returns the packed (B, T+2, H) result — outputs for every step, then
/// the final h, then the final c (for tanh, c0 passed through untouched) — and what backward
/// needs. Where `mask` is
/// false the state carries over unchanged and the output is zero (padding).
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
    let mut packed = vec![T::zero(); b * (t + 2) * h];
    let mut s = Saved {
        gates: vec![T::zero(); b * t * gh],
        h_prev: vec![T::zero(); b * t * h],
        c_prev: if cell == Cell::Lstm { vec![T::zero(); b * t * h] } else { Vec::new() },
        c_next: if cell == Cell::Lstm { vec![T::zero(); b * t * h] } else { Vec::new() },
    };
    let (mut hs, mut cs) = (h0.to_vec(), c0.to_vec());
    let mut z = vec![T::zero(); b * gh]; // this step's U·h, reused
    for step in 0..t {
        // U·h for every sequence at once: (B, H) · (H, G·H), reading W_hh (G·H, H) transposed.
        matmul(
            MatRef { data: &hs, row_stride: h, col_stride: 1 },
            MatRef { data: w_hh, row_stride: 1, col_stride: h },
            b,
            h,
            gh,
            &mut z,
            true,
        );
        for bi in 0..b {
            let row = bi * t + step;
            s.h_prev[row * h..(row + 1) * h].copy_from_slice(&hs[bi * h..(bi + 1) * h]);
            if cell == Cell::Lstm {
                s.c_prev[row * h..(row + 1) * h].copy_from_slice(&cs[bi * h..(bi + 1) * h]);
            }
            if mask.is_some_and(|m| !m[row]) {
                if cell == Cell::Lstm {
                    s.c_next[row * h..(row + 1) * h].copy_from_slice(&cs[bi * h..(bi + 1) * h]);
                }
                continue;
            }
            let pre = &xproj[row * gh..(row + 1) * gh];
            let zr = &z[bi * gh..(bi + 1) * gh];
            let gates = &mut s.gates[row * gh..(row + 1) * gh];
            let out = &mut packed[(bi * (t + 2) + step) * h..][..h];
            match cell {
                Cell::Tanh => {
                    for j in 0..h {
                        let v = (pre[j] + zr[j]).tanh();
                        gates[j] = v;
                        hs[bi * h + j] = v;
                        out[j] = v;
                    }
                }
                Cell::Lstm => {
                    for j in 0..h {
                        let i = sigmoid(pre[j] + zr[j]);
                        let f = sigmoid(pre[h + j] + zr[h + j]);
                        let gg = (pre[2 * h + j] + zr[2 * h + j]).tanh();
                        let o = sigmoid(pre[3 * h + j] + zr[3 * h + j]);
                        let c = f * cs[bi * h + j] + i * gg;
                        let hv = o * c.tanh();
                        (gates[j], gates[h + j], gates[2 * h + j], gates[3 * h + j]) =
                            (i, f, gg, o);
                        cs[bi * h + j] = c;
                        s.c_next[row * h + j] = c;
                        hs[bi * h + j] = hv;
                        out[j] = hv;
                    }
                }
            }
        }
    }
    for bi in 0..b {
        packed[(bi * (t + 2) + t) * h..][..h].copy_from_slice(&hs[bi * h..(bi + 1) * h]);
        packed[(bi * (t + 2) + t + 1) * h..][..h].copy_from_slice(&cs[bi * h..(bi + 1) * h]);
    }
    (packed, s)
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
    let mut dh_prev = vec![T::zero(); b * h];
    let one = T::one();
    for step in (0..t).rev() {
        for bi in 0..b {
            let row = bi * t + step;
            if mask.is_some_and(|m| !m[row]) {
                continue; // state carried through unchanged: its gradient passes straight back
            }
            let gates = &saved.gates[row * gh..(row + 1) * gh];
            let dz = &mut dx[row * gh..(row + 1) * gh];
            let gout = &grad[(bi * (t + 2) + step) * h..][..h];
            for j in 0..h {
                let dhv = dh[bi * h + j] + gout[j];
                match cell {
                    Cell::Tanh => dz[j] = dhv * (one - gates[j] * gates[j]),
                    Cell::Lstm => {
                        let (i, f, gg, o) =
                            (gates[j], gates[h + j], gates[2 * h + j], gates[3 * h + j]);
                        let tc = saved.c_next[row * h + j].tanh();
                        let dcv = dc[bi * h + j] + dhv * o * (one - tc * tc);
                        dz[j] = dcv * gg * i * (one - i);
                        dz[h + j] = dcv * saved.c_prev[row * h + j] * f * (one - f);
                        dz[2 * h + j] = dcv * i * (one - gg * gg);
                        dz[3 * h + j] = dhv * tc * o * (one - o);
                        dc[bi * h + j] = dcv * f;
                    }
                }
            }
        }
        // dh entering this step: dz · W_hh for active sequences, unchanged for padded ones.
        matmul(
            MatRef { data: &dx[step * gh..], row_stride: t * gh, col_stride: 1 },
            MatRef { data: w_hh, row_stride: h, col_stride: 1 },
            b,
            gh,
            h,
            &mut dh_prev,
            true,
        );
        for bi in 0..b {
            if mask.is_none_or(|m| m[bi * t + step]) {
                dh[bi * h..(bi + 1) * h].copy_from_slice(&dh_prev[bi * h..(bi + 1) * h]);
            }
        }
    }
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
