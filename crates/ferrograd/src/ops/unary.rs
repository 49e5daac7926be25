//! Element-wise functions of one tensor. Each line gives the forward `y = f(x)` and the local
//! derivative `dy/dx` (from x and y), which backward multiplies by the incoming gradient.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

use super::float_map;
use crate::backend::cpu::{self, FastExp};
use crate::storage::CpuStorage;
use crate::{Result, Tensor};

// Constants are written as literals so that each takes the element type (f32 or f64) of the
// arm it lands in: 1/√2, 1/√(2π), and √(2/π) (GELU's tanh form).

macro_rules! unary_ops {
    ($( $(#[$doc:meta])* $name:ident: |$x:ident| $fwd:expr, d |$dx:ident, $dy:ident| $deriv:expr; )*) => { $(
        $(#[$doc])*
        pub fn $name(&self) -> Result<Tensor> {
            const OP: &str = stringify!($name);
            let y = Tensor::from_storage(
                float_map!(OP, self.cpu(OP)?, |v| cpu::map(v, |$x| $fwd)),
                self.shape().clone(),
            );
            let (x, yd) = (self.clone(), y.detach());
            Ok(y.with_history(OP, &[self], move |g| {
                let data = match (g.cpu(OP)?, x.cpu(OP)?, yd.cpu(OP)?) {
                    (CpuStorage::F32(g), CpuStorage::F32(x), CpuStorage::F32(y)) => {
                        CpuStorage::F32(cpu::zip3(g, x, y, |g, $dx, $dy| g * $deriv))
                    }
                    (CpuStorage::F64(g), CpuStorage::F64(x), CpuStorage::F64(y)) => {
                        CpuStorage::F64(cpu::zip3(g, x, y, |g, $dx, $dy| g * $deriv))
                    }
                    _ => unreachable!("{OP}: gradient dtype follows the forward dtype"),
                };
                Ok(vec![Some(Tensor::from_storage(data, x.shape().clone()))])
            }))
        }
    )* };
}

impl Tensor {
    unary_ops! {
        /// `eˣ`
        exp: |x| x.fast_exp(), d |_x, y| y;
        /// Natural logarithm.
        log: |x| x.ln(), d |x, _y| x.recip();
        /// Square root.
        sqrt: |x| x.sqrt(), d |_x, y| 0.5 / y;
        /// Absolute value (its derivative at 0 is taken as 0, as in PyTorch).
        abs: |x| x.abs(), d |x, _y| if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { 0.0 };
        /// Hyperbolic tangent.
        tanh: |x| 1.0 - 2.0 / ((2.0 * x).fast_exp() + 1.0), d |_x, y| 1.0 - y * y;
        /// Logistic sigmoid `1 / (1 + e⁻ˣ)`.
        sigmoid: |x| (1.0 + (-x).fast_exp()).recip(), d |_x, y| y * (1.0 - y);
        /// `max(x, 0)`.
        relu: |x| if x > 0.0 { x } else { 0.0 }, d |x, _y| if x > 0.0 { 1.0 } else { 0.0 };
        /// GELU, exact form: `x Φ(x)` with Φ the standard normal CDF.
        gelu: |x| 0.5 * x * (1.0 + erf(x * 0.707_106_781_186_547_6)),
            d |x, _y| {
                let (cdf, pdf) = x.normal_cdf_pdf();
                cdf + x * pdf
            };
        /// GELU, tanh approximation (PyTorch's `approximate="tanh"`, GPT-2's).
        gelu_tanh: |x| 0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh()),
            d |x, _y| {
                let t = (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.797_884_560_802_865_4 * (1.0 + 3.0 * 0.044715 * x * x)
            };
    }

    /// `-x`
    pub fn neg(&self) -> Result<Tensor> {
        self.affine(-1.0, 0.0)
    }

    /// `xᵖ` for a scalar exponent `p`.
    pub fn pow(&self, p: f64) -> Result<Tensor> {
        self.map_with_grad("pow", move |x| x.powf(p), move |x| p * x.powf(p - 1.0))
    }

    /// `a·x + b` for scalars `a` and `b`.
    pub fn affine(&self, a: f64, b: f64) -> Result<Tensor> {
        self.map_with_grad("affine", move |x| a * x + b, move |_| a)
    }

    /// `x + c`
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(1.0, c)
    }

    /// `c·x`
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(c, 0.0)
    }

    /// A unary op from closures over f64 (for ops with a runtime parameter); f32 data is
    /// computed in f64 and rounded back.
    #[allow(clippy::unnecessary_cast)]
    fn map_with_grad(
        &self,
        op: &'static str,
        f: impl Fn(f64) -> f64 + Send + Sync + Copy + 'static,
        df: impl Fn(f64) -> f64 + Send + Sync + Copy + 'static,
    ) -> Result<Tensor> {
        let data = float_map!(op, self.cpu(op)?, |v| cpu::map(v, |x| f(x as f64) as _));
        let x = self.clone();
        Ok(Tensor::from_op(data, self.shape().clone(), op, &[self], move |g| {
            let data = match (g.cpu(op)?, x.cpu(op)?) {
                (CpuStorage::F32(g), CpuStorage::F32(x)) => {
                    CpuStorage::F32(cpu::zip(g, x, |g, x| g * df(x as f64) as f32))
                }
                (CpuStorage::F64(g), CpuStorage::F64(x)) => {
                    CpuStorage::F64(cpu::zip(g, x, |g, x| g * df(x)))
                }
                _ => unreachable!("{op}: gradient dtype follows the forward dtype"),
            };
            Ok(vec![Some(Tensor::from_storage(data, x.shape().clone()))])
        }))
    }
}

/// The error function: fast (≤ 1.5e-7 absolute) for f32, exact for f64.
fn erf<T: cpu::Float>(x: T) -> T {
    x.fast_erf()
}
