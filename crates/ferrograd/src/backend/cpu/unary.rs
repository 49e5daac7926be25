//! Element-wise functions of one tensor. Each line gives the forward `y = f(x)` and the local
//! derivative `dy/dx` (from x and y), which backward multiplies by the incoming gradient.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

use super::{map, with_wide_vectors, zip, zip3, Float};
use crate::backend::Unary;

/// A constant in the element type (1/√2, √(2/π), ... are written once as f64 literals).
#[inline(always)]
fn c<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

// The parameterized maps are computed in f64 and rounded back.
#[inline(always)]
fn pow<T: Float>(x: T, p: f64) -> T {
    c::<T>(x.to_f64().unwrap_or(f64::NAN).powf(p))
}
#[inline(always)]
fn affine<T: Float>(x: T, a: f64, b: f64) -> T {
    c::<T>(a * x.to_f64().unwrap_or(f64::NAN) + b)
}

macro_rules! rules {
    ($( $op:ident: |$x:ident| $fwd:expr, d |$dx:ident, $dy:ident| $deriv:expr; )*) => {
        /// `op` applied to every element.
        pub(crate) fn forward<T: Float + Send + Sync>(x: &[T], op: Unary) -> Vec<T> {
            match op {
                $( Unary::$op => map(x, |$x: T| $fwd), )*
                Unary::Pow(p) => map(x, |x: T| pow(x, p)),
                Unary::Affine(a, b) => map(x, |x: T| affine(x, a, b)),
            }
        }

        /// [`forward`] in place and on this thread (a task of a larger kernel): the same values.
        pub(crate) fn apply_in_place<T: Float>(x: &mut [T], op: Unary) {
            match op {
                $( Unary::$op => with_wide_vectors(
                    #[inline(always)]
                    || x.iter_mut().for_each(|v| {
                        let $x: T = *v;
                        *v = $fwd;
                    }),
                ), )*
                Unary::Pow(p) => x.iter_mut().for_each(|v| *v = pow(*v, p)),
                Unary::Affine(a, b) => x.iter_mut().for_each(|v| *v = affine(*v, a, b)),
            }
        }

        /// The gradient `g · dy/dx` for the output's gradient `g`, input `x`, output `y`.
        pub(crate) fn backward<T: Float + Send + Sync>(g: &[T], x: &[T], y: &[T], op: Unary) -> Vec<T> {
            match op {
                $( Unary::$op => zip3(g, x, y, |g, $dx: T, $dy: T| g * $deriv), )*
                Unary::Pow(p) => zip(g, x, |g, x: T| {
                    g * c::<T>(p * x.to_f64().unwrap_or(f64::NAN).powf(p - 1.0))
                }),
                Unary::Affine(a, _) => zip(g, x, |g, _x| g * c::<T>(a)),
            }
        }
    };
}

rules! {
    Exp: |x| x.fast_exp(), d |_x, y| y;
    Log: |x| x.ln(), d |x, _y| x.recip();
    Sqrt: |x| x.sqrt(), d |_x, y| c::<T>(0.5) / y;
    // Its derivative at 0 is taken as 0, as in PyTorch.
    Abs: |x| x.abs(), d |x, _y| if x > T::zero() { T::one() } else if x < T::zero() { -T::one() } else { T::zero() };
    Tanh: |x| T::one() - c::<T>(2.0) / ((c::<T>(2.0) * x).fast_exp() + T::one()), d |_x, y| T::one() - y * y;
    Sigmoid: |x| (T::one() + (-x).fast_exp()).recip(), d |_x, y| y * (T::one() - y);
    Relu: |x| if x > T::zero() { x } else { T::zero() }, d |x, _y| if x > T::zero() { T::one() } else { T::zero() };
    // x Φ(x), Φ the standard normal CDF.
    Gelu: |x| c::<T>(0.5) * x * (T::one() + (x * c::<T>(0.707_106_781_186_547_6)).fast_erf()),
        d |x, _y| {
            let (cdf, pdf) = x.normal_cdf_pdf();
            cdf + x * pdf
        };
    // PyTorch's approximate="tanh", GPT-2's.
    GeluTanh: |x| c::<T>(0.5) * x * (T::one() + (c::<T>(0.797_884_560_802_865_4) * (x + c::<T>(0.044715) * x * x * x)).tanh()),
        d |x, _y| {
            let t = (c::<T>(0.797_884_560_802_865_4) * (x + c::<T>(0.044715) * x * x * x)).tanh();
            c::<T>(0.5) * (T::one() + t)
                + c::<T>(0.5) * x * (T::one() - t * t) * c::<T>(0.797_884_560_802_865_4)
                    * (T::one() + c::<T>(3.0) * c::<T>(0.044715) * x * x)
        };
}
