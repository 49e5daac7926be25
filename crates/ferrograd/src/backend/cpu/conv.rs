//! 2-D convolution by im2col + gemm, and max pooling with arg-max routing.
//!
//! Legend: N batch, C input channels, O output channels, H×W input size, KH×KW kernel,
//! OH×OW output size, K = C·KH·KW (one column of im2col), P = OH·OW.

use super::PARALLEL_MIN;
use rayon::prelude::*;

/// The sizes of one convolution or pooling: input, kernel, stride, padding and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// Rows of im2col (K) and columns per image (P).
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Input row and column read by output (oy, ox) at kernel tap (ki, kj), if inside.
    #[inline]
    fn source(&self, oy: usize, ox: usize, ki: usize, kj: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.sh + ki).checked_sub(self.ph)?;
        let ix = (ox * self.sw + kj).checked_sub(self.pw)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// (N, C, H, W) → (K, N·P): column `n·P + oy·OW + ox` holds the K inputs output (oy, ox) of
/// image n sees (zeros in the padding).
pub fn im2col<T: Copy + Default + Send + Sync>(x: &[T], g: &Window) -> Vec<T> {
    let (np, p) = (g.n * g.p(), g.p());
    let mut cols = vec![T::default(); g.k() * np];
    let fill = |r: usize, row: &mut [T]| {
        let (c, ki, kj) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        for n in 0..g.n {
            let plane = &x[(n * g.c + c) * g.h * g.w..(n * g.c + c + 1) * g.h * g.w];
            for oy in 0..g.oh {
                let out = &mut row[n * p + oy * g.ow..n * p + (oy + 1) * g.ow];
                for (ox, o) in out.iter_mut().enumerate() {
                    if let Some((iy, ix)) = g.source(oy, ox, ki, kj) {
                        *o = plane[iy * g.w + ix];
                    }
                }
            }
        }
    };
    if cols.len() < PARALLEL_MIN {
        cols.chunks_mut(np.max(1)).enumerate().for_each(|(r, row)| fill(r, row));
    } else {
        cols.par_chunks_mut(np.max(1)).enumerate().for_each(|(r, row)| fill(r, row));
    }
    cols
}

/// im2col's adjoint: (K, N·P) columns summed back into an (N, C, H, W) image.
pub fn col2im<T: Copy + Default + Send + Sync + std::ops::AddAssign>(
    cols: &[T],
    g: &Window,
) -> Vec<T> {
    let (np, p, hw) = (g.n * g.p(), g.p(), g.h * g.w);
    let mut x = vec![T::default(); g.n * g.c * hw];
    let plane = |nc: usize, out: &mut [T]| {
        let (n, c) = (nc / g.c, nc % g.c);
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &cols[((c * g.kh + ki) * g.kw + kj) * np + n * p..][..p];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        if let Some((iy, ix)) = g.source(oy, ox, ki, kj) {
                            out[iy * g.w + ix] += row[oy * g.ow + ox];
                        }
                    }
                }
            }
        }
    };
    if x.len() < PARALLEL_MIN {
        x.chunks_mut(hw.max(1)).enumerate().for_each(|(i, o)| plane(i, o));
    } else {
        x.par_chunks_mut(hw.max(1)).enumerate().for_each(|(i, o)| plane(i, o));
    }
    x
}

/// Max pooling of every (n, c) plane: the values and, for backward, the index within the
/// plane of each window's (first) maximum. Padding never wins.
pub fn max_pool<T: super::Float + Send + Sync>(x: &[T], g: &Window) -> (Vec<T>, Vec<u32>) {
    let (hw, p) = (g.h * g.w, g.p());
    let mut out = vec![T::default(); g.n * g.c * p];
    let mut arg = vec![0u32; g.n * g.c * p];
    let plane = |i: usize, (o, a): (&mut [T], &mut [u32])| {
        let src = &x[i * hw..(i + 1) * hw];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut best = (T::neg_infinity(), u32::MAX);
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        if let Some((iy, ix)) = g.source(oy, ox, ki, kj) {
                            let v = src[iy * g.w + ix];
                            if v > best.0 || best.1 == u32::MAX || v.is_nan() {
                                best = (v, (iy * g.w + ix) as u32);
                            }
                        }
                    }
                }
                o[oy * g.ow + ox] = best.0;
                a[oy * g.ow + ox] = best.1;
            }
        }
    };
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(p.max(1))
            .zip(arg.chunks_mut(p.max(1)))
            .enumerate()
            .for_each(|(i, oa)| plane(i, oa));
    } else {
        out.par_chunks_mut(p.max(1))
            .zip(arg.par_chunks_mut(p.max(1)))
            .enumerate()
            .for_each(|(i, oa)| plane(i, oa));
    }
    (out, arg)
}

/// Max pooling's backward: each output gradient added at its window's arg-max.
pub fn max_pool_backward<T: super::Float + Send + Sync>(
    grad: &[T],
    arg: &[u32],
    g: &Window,
) -> Vec<T> {
    let (hw, p) = (g.h * g.w, g.p());
    let mut dx = vec![T::default(); g.n * g.c * hw];
    let plane = |i: usize, d: &mut [T]| {
        for (gv, &a) in grad[i * p..(i + 1) * p].iter().zip(&arg[i * p..(i + 1) * p]) {
            if a != u32::MAX {
                d[a as usize] += *gv;
            }
        }
    };
    if dx.len() < PARALLEL_MIN {
        dx.chunks_mut(hw.max(1)).enumerate().for_each(|(i, d)| plane(i, d));
    } else {
        dx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(i, d)| plane(i, d));
    }
    dx
}

/// Convolution forward: (N, C, H, W) input, (O, K) filters, optional (O,) bias → the (N, O, P)
/// output and the im2col columns backward needs.
pub fn conv2d<T: super::Float + Send + Sync>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    o: usize,
    g: &Window,
) -> (Vec<T>, Vec<T>) {
    let (k, p, np) = (g.k(), g.p(), g.n * g.p());
    let cols = im2col(x, g);
    let mut out_t = vec![T::zero(); o * np]; // (O, N·P)
    super::matmul(
        super::MatRef { data: w, row_stride: k, col_stride: 1 },
        super::MatRef { data: &cols, row_stride: np, col_stride: 1 },
        o,
        k,
        np,
        &mut out_t,
        true,
    );
    let out = super::par_rows(g.n * o, p, |r, row: &mut [T]| {
        let (n, oc) = (r / o, r % o);
        let b = bias.map_or(T::zero(), |b| b[oc]);
        row.iter_mut().zip(&out_t[oc * np + n * p..][..p]).for_each(|(d, &s)| *d = s + b);
    });
    (out, cols)
}

/// Convolution backward from the (N, O, P) output gradient: gradients of the input (when
/// asked), of the (O, K) filters and of the (O,) bias.
pub fn conv2d_backward<T: super::Float + Send + Sync>(
    grad: &[T],
    w: &[T],
    cols: &[T],
    o: usize,
    g: &Window,
    need_input: bool,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let (k, p, np) = (g.k(), g.p(), g.n * g.p());
    // (N, O, P) → (O, N·P), the layout the products want.
    let grad_t = super::par_rows(o, np, |oc, row: &mut [T]| {
        for n in 0..g.n {
            row[n * p..(n + 1) * p].copy_from_slice(&grad[(n * o + oc) * p..][..p]);
        }
    });
    let db: Vec<T> = grad_t.chunks(np.max(1)).map(|r| r.iter().copied().sum()).collect();
    let mut dw = vec![T::zero(); o * k];
    super::matmul(
        super::MatRef { data: &grad_t, row_stride: np, col_stride: 1 },
        super::MatRef { data: cols, row_stride: 1, col_stride: np }, // colsᵀ: (N·P, K)
        o,
        np,
        k,
        &mut dw,
        true,
    );
    let dx = need_input.then(|| {
        let mut dcols = vec![T::zero(); k * np];
        super::matmul(
            super::MatRef { data: w, row_stride: 1, col_stride: k }, // wᵀ: (K, O)
            super::MatRef { data: &grad_t, row_stride: np, col_stride: 1 },
            k,
            o,
            np,
            &mut dcols,
            true,
        );
        col2im(&dcols, g)
    });
    (dx, dw, db.into_iter().take(o).collect())
}
