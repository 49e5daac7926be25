//! The CPU backend: host memory (`storage.rs`, which implements the backend interface) and
//! kernels over plain slices. Large work is split across threads with rayon; small work stays
//! on the calling thread.

mod attention;
mod block_step;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_x86;
mod copy;
mod elementwise;
mod loss;
mod matmul;
mod norm;
mod optim;
mod packed;
mod recurrent;
mod reduce;
#[cfg(target_arch = "x86_64")]
mod small_x86;
mod storage;
mod unary;
mod warm;

pub(crate) use attention::{attention_backward, attention_forward};
pub(crate) use block_step::block_step;
pub(crate) use conv::*;
pub(crate) use copy::*;
pub(crate) use elementwise::*;
pub(crate) use matmul::*;
pub(crate) use packed::PackedCpu;
pub(crate) use recurrent::{recurrence_backward, recurrence_forward, Saved as RecurrentSaved};
pub(crate) use reduce::*;
pub(crate) use storage::{Buffer, CpuStorage};
pub use warm::{join_polling, KeepWarm};

use crate::Element;
use std::mem::MaybeUninit;

/// Below this many elements a kernel runs on one thread: spawning costs more than it saves.
pub const PARALLEL_MIN: usize = 1 << 15;

/// Elements split into chunks of this size when run in parallel.
pub const CHUNK: usize = 1 << 13;

/// `eˣ` in a form the compiler vectorizes: for f32 a Cephes-style polynomial (about 1 ulp),
/// for f64 the exact library call (f64 is for gradchecks, where precision is the point).
pub trait FastExp: Copy {
    fn fast_exp(self) -> Self;
    /// The error function: for f32 a rational function (absolute error ≤ 3.3e-7, [`erf_f32`]),
    /// for f64 the exact library call.
    fn fast_erf(self) -> Self;
    /// The standard normal CDF Φ(x) and density φ(x) together: GELU's backward needs both,
    /// and for f32 they share one exponential, e^(−x²/2).
    fn normal_cdf_pdf(self) -> (Self, Self);
}

impl FastExp for f64 {
    fn fast_exp(self) -> f64 {
        self.exp()
    }
    fn fast_erf(self) -> f64 {
        libm::erf(self)
    }
    fn normal_cdf_pdf(self) -> (f64, f64) {
        let cdf = 0.5 * (1.0 + libm::erf(self * std::f64::consts::FRAC_1_SQRT_2));
        (cdf, (-0.5 * self * self).exp() * 0.398_942_280_401_432_7)
    }
}

impl FastExp for f32 {
    #[inline(always)]
    #[allow(clippy::excessive_precision)]
    fn fast_exp(self) -> f32 {
        let x = self.clamp(-87.3, 88.7);
        // eˣ = 2ⁿ · e^r with n = round(x / ln 2), |r| ≤ ln 2 / 2.
        // Round to nearest by the 1.5·2²³ trick: no libm call, so the loop vectorizes.
        // The sum's low mantissa bits hold n itself: read them instead of a float-to-int cast,
        // whose saturation checks keep the loop from vectorizing.
        let shifted = x * std::f32::consts::LOG2_E + 12_582_912.0;
        let n = shifted - 12_582_912.0;
        let n_int = shifted.to_bits().wrapping_sub(0x4B40_0000) as i32;
        let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4;
        let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 5.000_000_1e-1;
        let y = p * r * r + r + 1.0;
        // Below the clamp the true value is under f32's smallest normal: 0, as e^−∞ must be
        // (masked scores), instead of e^−87.3.
        if self < -87.3 {
            0.0
        } else {
            y * f32::from_bits(((n_int + 127) as u32) << 23)
        }
    }
    #[inline(always)]
    fn fast_erf(self) -> f32 {
        erf_f32(self)
    }
    #[inline(always)]
    fn normal_cdf_pdf(self) -> (f32, f32) {
        // Here the density's exponential is needed anyway, and Abramowitz–Stegun 7.1.26
        // (absolute error ≤ 1.5e-7) builds erf on the same one: cheaper than a second chain.
        let e = (-0.5 * self * self).fast_exp(); // e^(−z²) for z = x/√2
        let z = self * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let erf_abs = 1.0 - poly * e;
        let erf = if z < 0.0 { -erf_abs } else { erf_abs };
        (0.5 * (1.0 + erf), e * 0.398_942_3)
    }
}

/// erf(z) ≈ z·P(z²)/Q(z²) for |z| ≤ 3.9, where beyond erf is ±1 to within 4e-8: absolute
/// error ≤ 3.3e-7 in f32 arithmetic, coefficients fitted by `scripts/fit_erf.py`. Element-wise
/// loops like GELU's are bound by the latency of their longest chain of operations: here P and
/// Q are two short independent chains, with no exponential (Abramowitz–Stegun 7.1.26, over
/// e^(−z²), made GELU 3–4 times slower).
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn erf_f32(z: f32) -> f32 {
    let z = z.clamp(-3.9, 3.9);
    let z2 = z * z;
    let p = ((((((2.012_070_237e-8 * z2 - 1.997_332_804e-6) * z2 + 1.475_328_895e-4) * z2
        + 3.898_366_643e-3)
        * z2
        + 5.115_567_832e-2)
        * z2
        + 2.042_689_810e-1)
        * z2
        + 1.128_378_805)
        * z;
    let q = (((1.007_129_915e-3 * z2 + 1.473_478_394e-2) * z2 + 1.168_044_918e-1) * z2
        + 5.143_577_217e-1)
        * z2
        + 1.0;
    p / q
}

/// Floating-point element types (f32, f64) with what kernels need.
pub trait Float:
    num_traits::Float
    + FastExp
    + Element
    + Default
    + std::iter::Sum
    + std::ops::AddAssign
    + std::fmt::Debug
{
}
impl Float for f32 {}
impl Float for f64 {}

/// Runs `f` compiled for AVX-512 (or else AVX2 and FMA) when the processor has it: the crates
/// are built for the x86-64 baseline, whose 4-lane f32 vectors halve the speed of
/// exponentials, square roots and divisions. (AVX-512 over AVX2: W7 +1.8–2.7%, W5 +1.3%, with
/// the same results, since neither reorders or fuses floating-point operations.) `f`, and what
/// it calls, must be `#[inline(always)]` to be compiled so.
#[inline(always)]
pub fn with_wide_vectors<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn widest<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq");
        if avx512 {
            // SAFETY: the features were just detected on this processor.
            return unsafe { widest(f) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this processor.
            return unsafe { wide(f) };
        }
    }
    f()
}

/// `x` set to `T::default()` (zero), as initialized memory: for outputs allocated uninitialized
/// and zeroed by the parallel tasks that then fill them. A serial `vec![0; n]` of a large output
/// is a memset the other threads wait through (a W7 step zeroed about 12 MB so).
pub fn zeroed<T: Default>(x: &mut [MaybeUninit<T>]) -> &mut [T] {
    x.iter_mut().for_each(|v| {
        v.write(T::default());
    });
    // SAFETY: every element was just written, and MaybeUninit<T> has T's layout.
    unsafe { &mut *(x as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// `x` set to a copy of `src` (as long), as initialized memory: like [`zeroed`], for outputs
/// whose tasks start from a copy.
pub fn copied<'a, T: Copy>(x: &'a mut [MaybeUninit<T>], src: &[T]) -> &'a mut [T] {
    assert_eq!(x.len(), src.len(), "copied: {} elements into {}", src.len(), x.len());
    x.iter_mut().zip(src).for_each(|(v, &s)| {
        v.write(s);
    });
    // SAFETY: every element was just written (the lengths are equal), and MaybeUninit<T> has
    // T's layout.
    unsafe { &mut *(x as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `n` elements written by `fill` without being zeroed first: for the large
/// outputs a kernel overwrites completely (im2col columns, products), where zeroing wrote every
/// byte twice (a twelfth of W3's time in memset, by perf).
///
/// # Safety
/// `fill` must write every one of the `n` elements.
pub(crate) unsafe fn filled_by<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's promise: all n elements are initialized now.
    unsafe { v.set_len(n) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 1/1000 over [−6, 6], and the far ends.
    fn grid() -> impl Iterator<Item = f32> {
        (-6000..=6000).map(|i| i as f32 / 1000.0).chain([-1e30, -50.0, 50.0, 1e30])
    }

    #[test]
    fn f32_erf_and_normal_cdf_pdf_are_within_their_error_bounds() {
        for x in grid() {
            let exact = libm::erf(x as f64);
            assert!((erf_f32(x) as f64 - exact).abs() <= 3.3e-7, "erf({x}): {}", erf_f32(x));
            let (cdf, pdf) = x.normal_cdf_pdf();
            let (cdf64, pdf64) = (x as f64).normal_cdf_pdf();
            assert!((cdf as f64 - cdf64).abs() <= 3e-7, "Φ({x}): {cdf} vs {cdf64}");
            assert!((pdf as f64 - pdf64).abs() <= 1e-7, "φ({x}): {pdf} vs {pdf64}");
        }
        assert_eq!(erf_f32(0.0), 0.0);
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn f32_exp_is_within_two_ulp_and_underflows_to_zero() {
        for x in grid().filter(|x| x.abs() <= 80.0) {
            let (got, exact) = (x.fast_exp() as f64, (x as f64).exp());
            assert!((got - exact).abs() <= 2.0 * f32::EPSILON as f64 * exact, "exp({x}): {got}");
        }
        assert_eq!((-1e30f32).fast_exp(), 0.0);
        assert_eq!(f32::NEG_INFINITY.fast_exp(), 0.0);
    }
}
