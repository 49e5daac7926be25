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

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

#[inline(always)]
fn tanh<T: Float>(x: T) -> T {
    let two = T::one() + T::one();
    T::one() - two / ((two * x).fast_exp() + T::one())
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
    let mut halves = (Vec::new(), Vec::new());
    // W_hh transposed once, (H, G·H) row-major: gemm reads it 2.4× faster per step than
    // the (G·H, H) original through strides (32×256·256×512 per thread: 103 against 42 GFLOP/s).
    let mut w_t = vec![T::zero(); h * gh];
    for (r, row) in w_hh.chunks_exact(h).enumerate() {
        row.iter().enumerate().for_each(|(c, &v)| w_t[c * gh + r] = v);
    }
    for step in 0..t {
        // U·h for every sequence at once: (B, H) · (H, G·H).
        split_product(
            MatRef { data: &hs, row_stride: h, col_stride: 1 },
            MatRef { data: &w_t, row_stride: gh, col_stride: 1 },
            (b, h, gh),
            &mut z,
            &mut halves,
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
            let zr = &mut z[bi * gh..(bi + 1) * gh];
            zr.iter_mut().zip(pre).for_each(|(z, &p)| *z += p);
            let gates = &mut s.gates[row * gh..(row + 1) * gh];
            let out = &mut packed[(bi * (t + 2) + step) * h..][..h];
            let (hrow, crow) = (&mut hs[bi * h..(bi + 1) * h], &mut cs[bi * h..(bi + 1) * h]);
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
                    let cn = &mut s.c_next[row * h..(row + 1) * h];
                    for j in 0..h {
                        let c = gf[j] * crow[j] + gi[j] * gg[j];
                        let hv = go[j] * tanh(c);
                        (crow[j], cn[j], hrow[j], out[j]) = (c, c, hv, hv);
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
    let mut halves = (Vec::new(), Vec::new());
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
                        let tc = tanh(saved.c_next[row * h + j]);
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
        split_product(
            MatRef { data: &dx[step * gh..], row_stride: t * gh, col_stride: 1 },
            MatRef { data: w_hh, row_stride: h, col_stride: 1 },
            (b, gh, h),
            &mut dh_prev,
            &mut halves,
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

/// `out = a · b` for an (m, k) `a` and a (k, n) `b`, the columns of `b` split between two
/// threads. The per-step products of a recurrence are too small for gemm's own threading to
/// pay, but two halves on two cores do; `halves` are reused buffers.
fn split_product<T: Float + Send + Sync>(
    a: MatRef<T>,
    b: MatRef<T>,
    (m, k, n): (usize, usize, usize),
    out: &mut [T],
    halves: &mut (Vec<T>, Vec<T>),
) {
    let n1 = n / 2;
    if m * k * n < 1 << 16 || n1 == 0 {
        return matmul(a, b, m, k, n, out, false);
    }
    let (lo, hi) = halves;
    lo.resize(m * n1, T::zero());
    hi.resize(m * (n - n1), T::zero());
    let b_hi = MatRef { data: &b.data[n1 * b.col_stride..], ..b };
    rayon::join(|| matmul(a, b, m, k, n1, lo, false), || matmul(a, b_hi, m, k, n - n1, hi, false));
    for (r, row) in out.chunks_mut(n).enumerate() {
        row[..n1].copy_from_slice(&lo[r * n1..(r + 1) * n1]);
        row[n1..].copy_from_slice(&hi[r * (n - n1)..(r + 1) * (n - n1)]);
    }
}
