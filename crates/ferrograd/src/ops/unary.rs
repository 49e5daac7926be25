//! Element-wise functions of one tensor; the backend holds each one's forward and derivative
//! side by side (`backend/cpu/unary.rs`), and backward multiplies the derivative by the
//! incoming gradient.

use super::float_dtype;
use crate::backend::{BackendStorage, Unary};
use crate::{Error, Result, Tensor};

macro_rules! unary_ops {
    ($( $(#[$doc:meta])* $name:ident => $op:expr; )*) => { $(
        $(#[$doc])*
        pub fn $name(&self) -> Result<Tensor> {
            self.unary(stringify!($name), $op)
        }
    )* };
}

impl Tensor {
    unary_ops! {
        /// `eˣ`
        exp => Unary::Exp;
        /// Natural logarithm.
        log => Unary::Log;
        /// Square root.
        sqrt => Unary::Sqrt;
        /// Absolute value (its derivative at 0 is taken as 0, as in PyTorch).
        abs => Unary::Abs;
        /// Hyperbolic tangent.
        tanh => Unary::Tanh;
        /// Logistic sigmoid `1 / (1 + e⁻ˣ)`.
        sigmoid => Unary::Sigmoid;
        /// `max(x, 0)`.
        relu => Unary::Relu;
        /// GELU, exact form: `x Φ(x)` with Φ the standard normal CDF.
        gelu => Unary::Gelu;
        /// GELU, tanh approximation (PyTorch's `approximate="tanh"`, GPT-2's).
        gelu_tanh => Unary::GeluTanh;
    }

    /// `-x`
    pub fn neg(&self) -> Result<Tensor> {
        self.affine(-1.0, 0.0)
    }

    /// `xᵖ` for a scalar exponent `p`.
    pub fn pow(&self, p: f64) -> Result<Tensor> {
        self.unary("pow", Unary::Pow(p))
    }

    /// `a·x + b` for scalars `a` and `b`.
    pub fn affine(&self, a: f64, b: f64) -> Result<Tensor> {
        self.unary("affine", Unary::Affine(a, b))
    }

    /// `x + c`
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(1.0, c)
    }

    /// `c·x`
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.affine(c, 0.0)
    }

    fn unary(&self, name: &'static str, op: Unary) -> Result<Tensor> {
        float_dtype(name, &[self])?;
        let y = Tensor::from_storage(self.storage().unary(op)?, self.shape().clone());
        // Backward keeps only what the derivative reads (the gradient stands in for the rest).
        let (reads_x, reads_y) = op.reads();
        let x = reads_x.then(|| self.detach());
        let yd = reads_y.then(|| y.detach());
        let shape = self.shape().clone();
        Ok(y.with_history(name, &[self], move |g| {
            let (xs, ys) = (x.as_ref().unwrap_or(g), yd.as_ref().unwrap_or(g));
            let dx = g.storage().unary_backward(op, xs.storage(), ys.storage())?;
            Ok(vec![Some(Tensor::from_storage(dx, shape))])
        }))
    }
}

/// A nonlinearity σ applied element-wise: a FeedForward's activation, and what runs between
/// the products of [`Tensor::feed_forward_packed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nonlinearity {
    #[default]
    Identity,
    Relu,
    Tanh,
    Sigmoid,
    /// Exact GELU, `x Φ(x)`.
    Gelu,
    /// GELU's tanh approximation (GPT-2's).
    GeluTanh,
}

impl Nonlinearity {
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self.unary() {
            None => Ok(x.clone()),
            Some(op) => x.unary(self.name(), op),
        }
    }

    /// The op, none for the identity.
    pub(crate) fn unary(self) -> Option<Unary> {
        match self {
            Nonlinearity::Identity => None,
            Nonlinearity::Relu => Some(Unary::Relu),
            Nonlinearity::Tanh => Some(Unary::Tanh),
            Nonlinearity::Sigmoid => Some(Unary::Sigmoid),
            Nonlinearity::Gelu => Some(Unary::Gelu),
            Nonlinearity::GeluTanh => Some(Unary::GeluTanh),
        }
    }

    /// The name of the tensor method it is.
    fn name(self) -> &'static str {
        match self {
            Nonlinearity::Identity => "identity",
            Nonlinearity::Relu => "relu",
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Sigmoid => "sigmoid",
            Nonlinearity::Gelu => "gelu",
            Nonlinearity::GeluTanh => "gelu_tanh",
        }
    }

    /// The function a Hugging Face `config.json` names (`hidden_act`, GPT-2's
    /// `activation_function`); an error names what is supported.
    pub fn hugging_face(op: &str, name: &str) -> Result<Nonlinearity> {
        match name {
            "gelu" => Ok(Nonlinearity::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Nonlinearity::GeluTanh),
            "relu" => Ok(Nonlinearity::Relu),
            "tanh" => Ok(Nonlinearity::Tanh),
            "sigmoid" => Ok(Nonlinearity::Sigmoid),
            other => Err(Error::value(
                op,
                format!("activation {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, tanh, sigmoid)"),
            )),
        }
    }
}
