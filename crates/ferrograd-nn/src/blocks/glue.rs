//! Glue between blocks: activations, Flatten and Dropout. They learn nothing and do not appear
//! in the lecture's formulas.

use crate::{Module, ParamStore};
use ferrograd::{DType, Error, Result, Tensor};

/// A nonlinearity σ, applied element-wise ([`ferrograd::Nonlinearity`], under the name the
/// blocks use).
pub use ferrograd::Nonlinearity as Activation;

/// The suffix a layer's description gets: "" or " + ReLU".
pub(crate) fn suffix(activation: &Activation) -> String {
    if *activation == Activation::Identity {
        String::new()
    } else {
        format!(" + {}", activation.describe())
    }
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x)
    }
    fn describe(&self) -> String {
        match self {
            Activation::Identity => "Identity",
            Activation::Relu => "ReLU",
            Activation::Tanh => "Tanh",
            Activation::Sigmoid => "Sigmoid",
            Activation::Gelu => "GELU",
            Activation::GeluTanh => "GELU(tanh)",
        }
        .to_string()
    }
}

/// (N, d₁, d₂, …) → (N, d₁·d₂·…): images into feature vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() < 2 {
            return Err(Error::shape(
                "Flatten",
                format!("needs a batch dimension and more, got {}", x.shape()),
            ));
        }
        x.flatten_from(1)
    }
    fn describe(&self) -> String {
        "Flatten".into()
    }
}

/// Zeroes each element with probability `p` while training and scales the rest by 1/(1−p);
/// passes everything through in evaluation mode.
pub struct Dropout {
    p: f64,
    store: ParamStore,
}

impl Dropout {
    pub fn new(store: &ParamStore, p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::value("Dropout", format!("probability must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p, store: store.clone() })
    }

    /// Whether it drops anything now: p > 0 and the store in training mode.
    pub fn active(&self) -> bool {
        self.p > 0.0 && self.store.is_training()
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.store.is_training() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep =
            self.store.with_rng(|rng| Tensor::rand_uniform(x.dims(), 0.0, 1.0, DType::F64, rng))?;
        let mask = keep
            .ge(&Tensor::scalar(self.p))?
            .to_dtype(x.dtype())?
            .mul_scalar(1.0 / (1.0 - self.p))?;
        x.mul(&mask)
    }
    fn describe(&self) -> String {
        format!("Dropout(p = {})", self.p)
    }
}
