//! 2-D convolution by im2col + gemm, and max pooling with arg-max routing.
//!
//! Legend: N batch, C input channels, O output channels, H×W input size, KH×KW kernel,
//! OH×OW output size, K = C·KH·KW (one column of im2col), P = OH·OW.

use super::{dense, PARALLEL_MIN};
use crate::backend::Window;
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

impl Window {
    /// Rows of im2col (K) and columns per image (P).
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// The output columns `[lo, hi)` whose input column (at kernel column `kj`) lies inside the
    /// image, and the input column of `lo`.
    fn columns(&self, kj: usize) -> (usize, usize, usize) {
        let lo = if kj >= self.pw { 0 } else { (self.pw - kj).div_ceil(self.sw) };
        let hi = if self.w + self.pw > kj { (self.w + self.pw - kj - 1) / self.sw + 1 } else { 0 };
        let (lo, hi) = (lo.min(self.ow), hi.min(self.ow));
        (lo, hi.max(lo), (lo * self.sw + kj).saturating_sub(self.pw))
    }
    /// The input row output row `oy` reads at kernel row `ki`, if inside.
    fn row(&self, oy: usize, ki: usize) -> Option<usize> {
        (oy * self.sh + ki).checked_sub(self.ph).filter(|&iy| iy < self.h)
    }
}

/// The (N, C, H, W) images with their zero padding written out, (N, C, H + 2·PH, W + 2·PW):
/// every window row is then one straight run, with no clipping against the border.
fn padded<'a, T: Copy + Default>(x: &'a [T], g: &Window) -> Cow<'a, [T]> {
    if g.ph == 0 && g.pw == 0 {
        return Cow::Borrowed(x);
    }
    let (hp, wp) = (g.h + 2 * g.ph, g.w + 2 * g.pw);
    let mut out = vec![T::default(); g.n * g.c * hp * wp];
    if g.h == 0 || g.w == 0 {
        return Cow::Owned(out); // padding alone
    }
    for (plane, src) in out.chunks_mut(hp * wp).zip(x.chunks(g.h * g.w)) {
        for (row, src) in plane[g.ph * wp..].chunks_mut(wp).zip(src.chunks(g.w)) {
            row[g.pw..g.pw + g.w].copy_from_slice(src);
        }
    }
    Cow::Owned(out)
}

/// (N, C, H, W) → (K, N·P): column `n·P + oy·OW + ox` holds the K inputs output (oy, ox) of
/// image n sees (zeros in the padding). Each row is copied from the padded images, a window
/// row at a time (clipping each run against the border, 14-element runs in W3, cost 3 times
/// as much).
pub fn im2col<T: Copy + Default + Send + Sync + 'static>(
    x: &[T],
    g: &Window,
    threads: bool,
) -> Vec<T> {
    im2col_with(x, g, threads, simd::<T>())
}

/// [`im2col`], with the given vector loops for its stride-1 runs.
fn im2col_with<T: Copy + Default + Send + Sync + 'static>(
    x: &[T],
    g: &Window,
    threads: bool,
    simd: Simd,
) -> Vec<T> {
    let (np, p) = (g.n * g.p(), g.p());
    let (hp, wp) = (g.h + 2 * g.ph, g.w + 2 * g.pw);
    let x = padded(x, g);
    let fill = |r: usize, row: &mut [MaybeUninit<T>]| {
        let (c, ki, kj) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        for n in 0..g.n {
            let plane = &x[(n * g.c + c) * hp * wp..][..hp * wp];
            if g.sw == 1 && g.sh == 1 {
                copy_runs(&mut row[n * p..(n + 1) * p], &plane[ki * wp + kj..], g.ow, wp, simd);
                continue;
            }
            for (oy, out) in row[n * p..(n + 1) * p].chunks_mut(g.ow.max(1)).enumerate() {
                let src = &plane[(oy * g.sh + ki) * wp + kj..];
                if g.sw == 1 {
                    out.iter_mut().zip(src).for_each(|(o, &v)| {
                        o.write(v);
                    });
                } else {
                    out.iter_mut().zip(src.iter().step_by(g.sw)).for_each(|(o, &v)| {
                        o.write(v);
                    });
                }
            }
        }
    };
    let fill_all = |cols: &mut [MaybeUninit<T>]| {
        if !threads || cols.len() < PARALLEL_MIN {
            cols.chunks_mut(np.max(1)).enumerate().for_each(|(r, row)| fill(r, row));
        } else {
            cols.par_chunks_mut(np.max(1)).enumerate().for_each(|(r, row)| fill(r, row));
        }
    };
    // SAFETY: `fill` writes each of a row's N·OH·OW elements: OH runs of OW, each within the
    // padded plane (the last window row starts at (OH − 1)·SH + KH − 1 < H + 2·PH, likewise
    // across).
    unsafe { super::filled_by(g.k() * np, fill_all) }
}

/// Which vector twins of im2col's and col2im's stride-1 loops run ([`super::conv_x86`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Simd {
    Portable,
    Avx2,
    Avx512,
}

/// The widest twins that run here for `T` (f32 on x86-64 with AVX2 or AVX-512F).
fn simd<T: 'static>() -> Simd {
    #[cfg(target_arch = "x86_64")]
    return super::conv_x86::best::<T>();
    #[cfg(not(target_arch = "x86_64"))]
    Simd::Portable
}

/// `dst`'s runs of `run` elements copied from `src`'s runs `stride` apart (through AVX-512
/// when `simd` says so; AMD's AVX2 masked stores are slow, so AVX2 takes the portable loop). Runs of 8 to 16 elements (14 in W3) are copied as two blocks of 8, the
/// second one overlapping: a call to memmove for each (which a loop of blocks also becomes)
/// cost 3 ns; im2col of W3's second convolution took 38 µs an image, 26 µs so.
#[inline(always)]
fn copy_runs<T: Copy>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    run: usize,
    stride: usize,
    simd: Simd,
) {
    const BLOCK: usize = 8;
    let runs = dst.len() / run.max(1);
    assert!(runs == 0 || (runs - 1) * stride + run <= src.len(), "copy_runs: source too short");
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut T);
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 {
        // SAFETY: Avx512 is chosen only when T is f32 and AVX-512F is present; the sizes are
        // asserted above.
        unsafe { super::conv_x86::copy_runs(d as *mut f32, s as *const f32, runs, run, stride) };
        return;
    }
    let _ = simd;
    for i in 0..runs {
        // SAFETY: run i reads src[i·stride .. i·stride + run] (within src, asserted) and
        // writes dst[i·run .. (i + 1)·run] (within dst); the blocks lie inside the run.
        unsafe {
            let (s, d) = (s.add(i * stride), d.add(i * run));
            if (BLOCK..=2 * BLOCK).contains(&run) {
                std::ptr::copy_nonoverlapping(s, d, BLOCK);
                std::ptr::copy_nonoverlapping(s.add(run - BLOCK), d.add(run - BLOCK), BLOCK);
            } else {
                std::ptr::copy_nonoverlapping(s, d, run);
            }
        }
    }
}

/// im2col's adjoint: (K, N·P) columns summed into the (N, C, H, W) image `x` (added to what
/// it holds).
pub fn col2im<T: Copy + Send + Sync + std::ops::AddAssign + 'static>(
    cols: &[T],
    g: &Window,
    x: &mut [T],
    threads: bool,
) {
    col2im_with(cols, g, x, threads, simd::<T>())
}

/// [`col2im`], with the given vector loops for stride 1.
fn col2im_with<T: Copy + Send + Sync + std::ops::AddAssign + 'static>(
    cols: &[T],
    g: &Window,
    x: &mut [T],
    threads: bool,
    simd: Simd,
) {
    let (np, p, hw) = (g.n * g.p(), g.p(), g.h * g.w);
    assert_eq!(x.len(), g.n * g.c * hw, "col2im: image of {} elements", x.len());
    assert_eq!(cols.len(), g.k() * np, "col2im: {} columns for {}×{np}", cols.len(), g.k());
    let plane = |nc: usize, out: &mut [T]| {
        let (n, c) = (nc / g.c, nc % g.c);
        #[cfg(target_arch = "x86_64")]
        if simd != Simd::Portable && g.sh == 1 && g.sw == 1 {
            let first_tap = &cols[c * g.kh * g.kw * np + n * p..];
            let (taps, out) = (first_tap.as_ptr() as *const f32, out.as_mut_ptr() as *mut f32);
            // SAFETY: Avx2 and Avx512 are chosen only when T is f32 and the processor has
            // them; the plane's tap rows lie within `cols` (its length is asserted), and `out`
            // is one H×W plane.
            unsafe {
                match simd {
                    Simd::Avx512 => super::conv_x86::col2im_plane(taps, np, g, out),
                    _ => super::conv_x86::col2im_plane_avx2(taps, np, g, out),
                }
            }
            return;
        }
        let _ = simd;
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let (lo, hi, ix0) = g.columns(kj);
                if lo == hi {
                    continue; // this kernel column sees only padding
                }
                let row = &cols[((c * g.kh + ki) * g.kw + kj) * np + n * p..][..p];
                for oy in 0..g.oh {
                    let Some(iy) = g.row(oy, ki) else { continue };
                    let src = &row[oy * g.ow..][lo..hi];
                    let dst = &mut out[iy * g.w + ix0..];
                    if g.sw == 1 {
                        dst[..hi - lo].iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                    } else {
                        src.iter().enumerate().for_each(|(k, &s)| dst[k * g.sw] += s);
                    }
                }
            }
        }
    };
    if !threads || x.len() < PARALLEL_MIN {
        x.chunks_mut(hw.max(1)).enumerate().for_each(|(i, o)| plane(i, o));
    } else {
        x.par_chunks_mut(hw.max(1)).enumerate().for_each(|(i, o)| plane(i, o));
    }
}

/// Max pooling of every (n, c) plane: the values and, for backward, the index within the
/// plane of each window's (first) maximum. Padding never wins.
pub fn max_pool<T: super::Float + Send + Sync>(x: &[T], g: &Window) -> (Vec<T>, Vec<u32>) {
    let (hw, p) = (g.h * g.w, g.p());
    let n_out = g.n * g.c * p;
    let (mut out, mut arg) = (Vec::with_capacity(n_out), Vec::with_capacity(n_out));
    // Each output's window clipped to the image once per row and column, so the taps run
    // without bounds tests; the first tap seeds the maximum, and a NaN wins (the last one, as
    // in PyTorch).
    let taps = |o: usize, stride: usize, pad: usize, k: usize, size: usize| {
        let lo = pad.saturating_sub(o * stride).min(k);
        let hi = (size + pad).saturating_sub(o * stride).min(k).max(lo);
        (lo, hi, (o * stride + lo).saturating_sub(pad))
    };
    // Each output column's window, clipped to the image: the same for every row and plane.
    let columns: Vec<_> = (0..g.ow).map(|ox| taps(ox, g.sw, g.pw, g.kw, g.w)).collect();
    // The common 2×2 stride-2 pool without padding has its own loop, across windows.
    let halving = (g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) == (2, 2, 2, 2, 0, 0);
    let plane = |i: usize, (o, a): (&mut [T], &mut [u32])| {
        let src = &x[i * hw..(i + 1) * hw];
        // NaNs are rare: a plane without any takes the loop that does not look for them.
        let has_nan = src.iter().fold(false, |seen, v| seen | v.is_nan());
        if halving && !has_nan {
            return super::with_wide_vectors(|| halve_plane(src, g.w, o, a, g.ow));
        }
        for oy in 0..g.oh {
            let (ki0, ki1, iy0) = taps(oy, g.sh, g.ph, g.kh, g.h);
            let (o, a) = (&mut o[oy * g.ow..(oy + 1) * g.ow], &mut a[oy * g.ow..(oy + 1) * g.ow]);
            if ki1 == ki0 {
                o.fill(T::neg_infinity());
                a.fill(u32::MAX);
                continue;
            }
            // Window by window, the running maximum in registers (in memory, the compiler
            // branched on each comparison: mispredicted on random data, 5 ms for W3's first
            // pool).
            for (ox, &(kj0, kj1, ix0)) in columns.iter().enumerate() {
                if kj1 == kj0 {
                    (o[ox], a[ox]) = (T::neg_infinity(), u32::MAX);
                    continue;
                }
                let at = iy0 * g.w + ix0;
                // The common full windows as literal sizes, so that their taps unroll.
                (o[ox], a[ox]) = match (ki1 - ki0, kj1 - kj0, has_nan) {
                    (2, 2, false) => window_max(src, g.w, at, 2, 2, false),
                    (3, 3, false) => window_max(src, g.w, at, 3, 3, false),
                    (rows, cols, nan) => window_max(src, g.w, at, rows, cols, nan),
                };
            }
        }
    };
    // Planes zeroed by the tasks that fill them (not by serial memsets first).
    let (out_planes, arg_planes) =
        (&mut out.spare_capacity_mut()[..n_out], &mut arg.spare_capacity_mut()[..n_out]);
    let task = |i: usize, o: &mut [MaybeUninit<T>], a: &mut [MaybeUninit<u32>]| {
        plane(i, (super::zeroed(o), super::zeroed(a)))
    };
    if n_out < PARALLEL_MIN {
        let planes = out_planes.chunks_mut(p.max(1)).zip(arg_planes.chunks_mut(p.max(1)));
        planes.enumerate().for_each(|(i, (o, a))| task(i, o, a));
    } else {
        let planes = out_planes.par_chunks_mut(p.max(1)).zip(arg_planes.par_chunks_mut(p.max(1)));
        planes.enumerate().for_each(|(i, (o, a))| task(i, o, a));
    }
    // SAFETY: the planes (P ≥ 1 elements each) cover both outputs, and each was zeroed.
    unsafe {
        out.set_len(n_out);
        arg.set_len(n_out);
    }
    (out, arg)
}

/// 2×2 stride-2 max pooling of a plane `w` wide without NaNs into `out` and `arg` (rows of
/// `ow`): each output row reads two input rows, and the windows' maxima (the first of equal
/// ones) are selected across a row without branches, so the loop runs in vector registers (the
/// window-by-window loop took 4 ns an output).
#[inline(always)]
fn halve_plane<T: super::Float>(src: &[T], w: usize, out: &mut [T], arg: &mut [u32], ow: usize) {
    let rows = out.chunks_mut(ow.max(1)).zip(arg.chunks_mut(ow.max(1)));
    for (oy, (out, arg)) in rows.enumerate() {
        let top = &src[2 * oy * w..][..2 * ow];
        let bottom = &src[(2 * oy + 1) * w..][..2 * ow];
        let (top_at, bottom_at) = ((2 * oy * w) as u32, ((2 * oy + 1) * w) as u32);
        for (ox, (o, a)) in out.iter_mut().zip(arg.iter_mut()).enumerate() {
            let (v0, v1, v2, v3) =
                (top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]);
            let x = 2 * ox as u32;
            let (mut best, mut at) = (v0, top_at + x);
            at = if v1 > best { top_at + x + 1 } else { at };
            best = if v1 > best { v1 } else { best };
            at = if v2 > best { bottom_at + x } else { at };
            best = if v2 > best { v2 } else { best };
            at = if v3 > best { bottom_at + x + 1 } else { at };
            best = if v3 > best { v3 } else { best };
            (*o, *a) = (best, at);
        }
    }
}

/// The maximum of the (rows, cols) window at plane index `at` of a plane `w` wide, and the
/// plane index of its first occurrence; with `nan`, a NaN wins (the last one, as in PyTorch).
#[inline(always)]
fn window_max<T: super::Float>(
    src: &[T],
    w: usize,
    at: usize,
    rows: usize,
    cols: usize,
    nan: bool,
) -> (T, u32) {
    let (mut best, mut best_at, mut nan_at) = (src[at], at as u32, u32::MAX);
    for r in 0..rows {
        let row = &src[at + r * w..][..cols];
        for (j, &v) in row.iter().enumerate() {
            let i = (at + r * w + j) as u32;
            if nan {
                keep_max(&mut best, &mut best_at, &mut nan_at, v, i);
            } else {
                best_at = if v > best { i } else { best_at };
                best = best.max(v);
            }
        }
    }
    match nan_at {
        u32::MAX => (best, best_at),
        nan_at => (src[nan_at as usize], nan_at),
    }
}

/// One tap of a max-pool window: `v` (at plane index `i`) replaces the best so far when
/// bigger (the first of equal maxima stays), and a NaN wins (the last one, as in PyTorch).
/// Without branches: which tap wins depends on the data, and branches on it were mispredicted
/// half the time (5 ms for W3's first pool). The value goes through `max` (one instruction),
/// the indices through integer selects, and NaNs are tracked on the side.
#[inline(always)]
fn keep_max<T: super::Float>(best: &mut T, at: &mut u32, nan_at: &mut u32, v: T, i: u32) {
    *at = if v > *best { i } else { *at };
    *best = best.max(v);
    *nan_at = if v.is_nan() { i } else { *nan_at };
}

/// Max pooling's backward: each output gradient added at its window's arg-max.
pub fn max_pool_backward<T: super::Float + Send + Sync>(
    grad: &[T],
    arg: &[u32],
    g: &Window,
) -> Vec<T> {
    let (hw, p) = (g.h * g.w, g.p());
    // Each plane zeroed by the task that then adds into it (not by a serial memset first).
    super::par_rows(g.n * g.c, hw, |i, d: &mut [T]| {
        for (gv, &a) in grad[i * p..(i + 1) * p].iter().zip(&arg[i * p..(i + 1) * p]) {
            if a != u32::MAX {
                d[a as usize] += *gv;
            }
        }
    })
}

/// Images per group: im2col columns of about 256k elements (1 MB in f32), so that a group's
/// columns are still in L2 cache when its products read them, and at most `most` images.
fn group_size(g: &Window, most: usize) -> usize {
    ((1 << 18) / (g.k() * g.p()).max(1)).min(most).max(1)
}

/// Convolution forward: (N, C, H, W) input, (O, K) filters, optional (O,) bias → the (N, O, P)
/// output, through a ReLU as it is written when `relu`.
///
/// Groups of images run as parallel tasks, each from its columns to its slice of the output
/// while the columns are in cache. (Columns for many images, a gemm across threads, then a
/// reordering pass of the whole output left a thread waiting through serial steps: W3's worker
/// idled 18% of a step.) The columns are not kept: backward makes them again, which costs less
/// than writing them out to memory here and reading them back there (W3 +5%; its second
/// convolution's columns are 40 MB a step).
pub fn conv2d<T: super::Float + Send + Sync>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    o: usize,
    g: &Window,
    relu: bool,
) -> Vec<T> {
    let (k, p, chw) = (g.k(), g.p(), g.c * g.h * g.w);
    let group = conv_group(g, o);
    // With fewer groups than threads (one large image), each group's work is split instead.
    let inner = g.n.div_ceil(group) < rayon::current_num_threads();
    // Deep products run faster as (P, K)·(K, O) (gemm then streams the (O, K) filters' short
    // side): 179 against 204 µs for W3's second convolution, one image, one thread, the
    // transpose of the (P, O) result after it included.
    let transposed = k >= TRANSPOSED_MIN_K;
    let w_t = transposed.then(|| super::to_row_major(dense(w, k).t(), k, o, false));
    let task = |gi: usize, out: &mut [MaybeUninit<T>]| {
        let sub = Window { n: out.len() / (o * p).max(1), ..*g };
        let (n0, np) = (gi * group, sub.n * p);
        let cols = im2col(&x[n0 * chw..(n0 + sub.n) * chw], &sub, inner);
        let mut scratch = Vec::with_capacity(if transposed { p * o } else { 0 });
        // Each image's (O, P) output is its own product of W and its P columns, with the bias
        // added: no (O, n·P) product to reorder afterwards.
        for (img, out) in out.chunks_mut((o * p).max(1)).enumerate() {
            let cm = dense(&cols[img * p..], np);
            match &w_t {
                Some(w_t) => {
                    let scratch = &mut scratch.spare_capacity_mut()[..p * o];
                    super::matmul_uninit(cm.t(), dense(w_t, o), p, k, o, scratch, inner);
                    // SAFETY: the product wrote all P·O elements.
                    let scratch = unsafe { &*(scratch as *const [MaybeUninit<T>] as *const [T]) };
                    super::copy_row_major(dense(scratch, o).t(), o, p, out);
                    // SAFETY: copy_row_major wrote all O·P elements.
                    let out = unsafe { &mut *(out as *mut [MaybeUninit<T>] as *mut [T]) };
                    let bias = |oc: usize| bias.map_or(T::zero(), |b| b[oc]);
                    for (oc, row) in out.chunks_mut(p.max(1)).enumerate() {
                        let b = bias(oc);
                        match relu {
                            true => row.iter_mut().for_each(|v| *v = rectified(*v + b)),
                            false => row.iter_mut().for_each(|v| *v += b),
                        }
                    }
                }
                None => {
                    // The product added onto rows holding the bias.
                    let out = super::zeroed(out);
                    if let Some(bias) = bias {
                        out.chunks_mut(p.max(1)).zip(bias).for_each(|(row, &b)| row.fill(b));
                    }
                    super::matmul_accumulate(dense(w, k), cm, o, k, p, out, inner);
                    if relu {
                        out.iter_mut().for_each(|v| *v = rectified(*v));
                    }
                }
            }
        }
    };
    let all = |out: &mut [MaybeUninit<T>]| {
        let chunks = out.par_chunks_mut((group * o * p).max(1)).enumerate();
        chunks.for_each(|(gi, out)| task(gi, out));
    };
    // SAFETY: the tasks' chunks cover the output, and each writes all n·O·P of its elements.
    unsafe { super::filled_by(g.n * o * p, all) }
}

/// ReLU, as `Tensor::relu` computes it (NaN → 0).
#[inline(always)]
fn rectified<T: super::Float>(v: T) -> T {
    if v > T::zero() {
        v
    } else {
        T::zero()
    }
}

/// Filter sizes (K) from which forward multiplies transposed: [`conv2d`].
const TRANSPOSED_MIN_K: usize = 64;

/// Images per group: four groups per thread when the batch allows, so that the threads finish
/// together; a small convolution, not worth threads, in as few groups as the cache allows.
fn conv_group(g: &Window, o: usize) -> usize {
    let most = if small(g, o) { g.n } else { g.n.div_ceil(4 * rayon::current_num_threads()) };
    group_size(g, most)
}

/// Whether a convolution is too small (N·K·P·O multiply-adds) to be worth threads.
fn small(g: &Window, o: usize) -> bool {
    g.n * g.k() * g.p() * o < 1 << 20
}

/// Convolution backward from the (N, O, P) output gradient and forward's (N, C, H, W) input:
/// gradients of the input (when asked), of the (O, K) filters and of the (O,) bias. With
/// `relu_out`, forward's output went through a ReLU, and the gradient is masked by it first.
///
/// The batch is cut into one contiguous part per thread; each part goes through its groups of
/// images (each group's im2col columns, and its input gradient's, used while in cache) and
/// sums its own filter and bias gradients, and the parts' sums are added in a fixed order, so
/// the result does not depend on which thread ran what.
pub fn conv2d_backward<T: super::Float + Send + Sync>(
    grad: &[T],
    x: &[T],
    w: &[T],
    o: usize,
    g: &Window,
    need_input: bool,
    relu_out: Option<&[T]>,
) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let (k, p, chw) = (g.k(), g.p(), g.c * g.h * g.w);
    if let Some(y) = relu_out {
        assert_eq!(y.len(), grad.len(), "conv backward: ReLU output and gradient differ");
    }
    if o == 0 {
        // No filters: an empty output, through which no gradient flows.
        return (need_input.then(|| vec![T::zero(); g.n * chw]), Vec::new(), Vec::new());
    }
    let threads = rayon::current_num_threads();
    let ways = if small(g, o) { 1 } else { threads };
    let group = conv_group(g, o);
    // Wᵀ, (K, O), once: gemm multiplies a row-major left operand faster (194 against 201 µs
    // an image for W3's second convolution's input gradient).
    let w_t =
        if need_input { super::to_row_major(dense(w, k).t(), k, o, false) } else { Vec::new() };
    let per_part = g.n.div_ceil(ways).next_multiple_of(group).max(1);
    let parts = g.n.div_ceil(per_part);
    let inner = parts < threads;
    // One part: its images' filter gradient (transposed, (K, O)) and bias gradient, writing
    // their input gradient (zeroed here first) into `dx` when asked.
    let part = |pi: usize, dx: Option<&mut [MaybeUninit<T>]>| -> (Vec<T>, Vec<T>) {
        let (mut dw_t, mut db) = (vec![T::zero(); k * o], vec![T::zero(); o]);
        let mut dx = dx.map(super::zeroed);
        let (first, last) = (pi * per_part, ((pi + 1) * per_part).min(g.n));
        for n0 in (first..last).step_by(group) {
            let sub = Window { n: group.min(last - n0), ..*g };
            let np = sub.n * p;
            let cols = im2col(&x[n0 * chw..(n0 + sub.n) * chw], &sub, inner);
            // (n, O, P) → (O, n·P), the layout the products want; each channel's row adds to
            // db on the way.
            let reorder = |grad_t: &mut [MaybeUninit<T>]| {
                for (oc, (row, db)) in grad_t.chunks_mut(np.max(1)).zip(&mut db).enumerate() {
                    for (img, dst) in row.chunks_mut(p.max(1)).enumerate() {
                        let at = ((n0 + img) * o + oc) * p;
                        let src = &grad[at..][..p];
                        let dst = match relu_out {
                            // Through the ReLU first: the gradient where its output is positive.
                            Some(y) => {
                                let y = &y[at..][..p];
                                dst.iter_mut().zip(src).zip(y).for_each(|((d, &v), &y)| {
                                    d.write(if y > T::zero() { v } else { T::zero() });
                                });
                                // SAFETY: every element was just written.
                                unsafe { &*(dst as *const [MaybeUninit<T>] as *const [T]) }
                            }
                            None => &*super::copied(dst, src),
                        };
                        *db += super::lane_sum(dst, dst, |v, _| v);
                    }
                }
            };
            // SAFETY: each of the O rows is n whole planes of P, each copied from the gradient.
            let grad_t = unsafe { super::filled_by(o * np, reorder) };
            // dWᵀ += cols · gradᵀ, (K, n·P) · (n·P, O).
            let grad_tt = dense(&grad_t, np).t();
            super::matmul_accumulate(dense(&cols, np), grad_tt, k, np, o, &mut dw_t, inner);
            if let Some(dx) = dx.as_mut() {
                let product = |out: &mut [MaybeUninit<T>]| {
                    super::matmul_uninit(dense(&w_t, o), dense(&grad_t, np), k, o, np, out, inner)
                };
                // SAFETY: the product writes all of its (K, n·P) output.
                let dcols = unsafe { super::filled_by(k * np, product) };
                let dx = &mut dx[(n0 - first) * chw..(n0 - first + sub.n) * chw];
                col2im(&dcols, &sub, dx, inner);
            }
        }
        (dw_t, db)
    };
    let mut dx = need_input.then(|| Vec::<T>::with_capacity(g.n * chw));
    let dx_parts: Vec<Option<&mut [MaybeUninit<T>]>> = match dx.as_mut() {
        Some(v) if chw > 0 => {
            v.spare_capacity_mut()[..g.n * chw].chunks_mut(per_part * chw).map(Some).collect()
        }
        _ => (0..parts).map(|_| None).collect(),
    };
    let sums: Vec<(Vec<T>, Vec<T>)> =
        dx_parts.into_par_iter().enumerate().map(|(pi, dx)| part(pi, dx)).collect();
    if let Some(dx) = dx.as_mut() {
        // SAFETY: the parts' chunks cover dx (empty when chw = 0), and each part zeroed its
        // chunk before adding into it.
        unsafe { dx.set_len(g.n * chw) };
    }
    let (mut dw_t, mut db) = (vec![T::zero(); k * o], vec![T::zero(); o]);
    for (part_dw, part_db) in &sums {
        dw_t.iter_mut().zip(part_dw).for_each(|(d, &v)| *d += v);
        db.iter_mut().zip(part_db).for_each(|(d, &v)| *d += v);
    }
    let dw = super::to_row_major(dense(&dw_t, o).t(), o, k, false);
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and AVX-512 twins of im2col's and col2im's stride-1 loops against the portable
    /// ones (each where the processor has it), across widths under, at and over 8 and 16
    /// lanes, paddings and kernel sizes. Integer values keep the sums exact in any order.
    #[test]
    fn vector_im2col_and_col2im_equal_the_portable_loops() {
        let mut levels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                levels.push(Simd::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                levels.push(Simd::Avx512);
            }
        }
        if levels.is_empty() {
            eprintln!("no AVX2 or AVX-512F here: only the portable loops run");
        }
        let shapes =
            [(2, 3, 14, 14, 5, 5, 2, 2), (1, 2, 28, 28, 5, 5, 2, 2), (3, 2, 9, 37, 3, 4, 1, 0)];
        let more =
            [(2, 1, 16, 16, 1, 1, 0, 0), (1, 4, 7, 5, 3, 3, 2, 1), (2, 2, 6, 17, 2, 5, 0, 2)];
        for (n, c, h, w, kh, kw, ph, pw) in shapes.into_iter().chain(more) {
            let (oh, ow) = (h + 2 * ph - kh + 1, w + 2 * pw - kw + 1);
            let g = Window { n, c, h, w, kh, kw, sh: 1, sw: 1, ph, pw, oh, ow };
            let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
            let cols = im2col_with(&x, &g, false, Simd::Portable);
            let dcols: Vec<f32> = (0..cols.len()).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
            let start: Vec<f32> = (0..x.len()).map(|i| (i % 5) as f32).collect();
            let mut portable = start.clone();
            col2im_with(&dcols, &g, &mut portable, false, Simd::Portable);
            for &level in &levels {
                assert_eq!(cols, im2col_with(&x, &g, false, level), "{level:?} im2col {g:?}");
                let mut fast = start.clone();
                col2im_with(&dcols, &g, &mut fast, false, level);
                assert_eq!(fast, portable, "{level:?} col2im {g:?}");
            }
        }
    }

    /// Forward against the convolution's defining sum, on both sides of TRANSPOSED_MIN_K,
    /// with strides, padding, bias and batches that form groups of several images.
    #[test]
    fn conv2d_matches_the_defining_sum() {
        let (h, w) = (9, 7);
        for (c, o, kh, kw, s, p, n) in
            [(3, 5, 3, 3, 1, 1, 3), (8, 6, 3, 3, 2, 1, 5), (4, 3, 5, 5, 1, 2, 2)]
        {
            let (oh, ow) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
            let g = Window { n, c, h, w, kh, kw, sh: s, sw: s, ph: p, pw: p, oh, ow };
            let x: Vec<f64> = (0..n * c * h * w).map(|i| ((i * 37) % 23) as f64 - 11.0).collect();
            let f: Vec<f64> = (0..o * g.k()).map(|i| ((i * 13) % 7) as f64 / 4.0 - 0.8).collect();
            let b: Vec<f64> = (0..o).map(|i| i as f64 - 1.5).collect();
            let y = conv2d(&x, &f, Some(&b), o, &g, false);
            for (i, &got) in y.iter().enumerate() {
                let (img, oc, oy, ox) = (i / (o * oh * ow), i / (oh * ow) % o, i / ow % oh, i % ow);
                let mut want = b[oc];
                for (ci, ki, kj) in (0..c)
                    .flat_map(|ci| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (ci, ki, kj))))
                {
                    let (iy, ix) =
                        ((oy * s + ki) as isize - p as isize, (ox * s + kj) as isize - p as isize);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        let v = x[((img * c + ci) * h + iy as usize) * w + ix as usize];
                        want += v * f[((oc * c + ci) * kh + ki) * kw + kj];
                    }
                }
                assert!((got - want).abs() < 1e-9, "c{c} k{kh}: output {i} is {got}, want {want}");
            }
        }
    }

    /// The clipped-window max pool against a tap-by-tap reference: paddings, strides,
    /// overlapping windows, and NaN (the last NaN of a window wins).
    #[test]
    fn max_pool_matches_tap_by_tap() {
        let (h, w) = (7, 6);
        let mut x: Vec<f64> = (0..2 * h * w).map(|i| ((i * 37) % 23) as f64 - 11.0).collect();
        x[9] = f64::NAN;
        x[11] = f64::NAN;
        for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1), (3, 3, 0)] {
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = Window { n: 1, c: 2, h, w, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, oh, ow };
            let (y, arg) = max_pool(&x, &g);
            for c in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = (f64::NEG_INFINITY, u32::MAX);
                        for ki in 0..k {
                            for kj in 0..k {
                                let (iy, ix) = (oy * s + ki, ox * s + kj);
                                if iy < p || ix < p || iy - p >= h || ix - p >= w {
                                    continue;
                                }
                                let at = (iy - p) * w + ix - p;
                                let v = x[c * h * w + at];
                                if v > best.0 || best.1 == u32::MAX || v.is_nan() {
                                    best = (v, at as u32);
                                }
                            }
                        }
                        let i = (c * oh + oy) * ow + ox;
                        assert_eq!(arg[i], best.1, "k{k} s{s} p{p} at {c},{oy},{ox}");
                        assert!(y[i] == best.0 || y[i].is_nan() && best.0.is_nan());
                    }
                }
            }
        }
    }
}
