//! LayerNorm: each position's features shifted to mean 0 and scaled to variance 1, then by a
//! learned gain and bias.

use crate::{Init, Module, Param, ParamStore};
use ferrograd::{Result, Tensor};

/// `(x − mean) / √(var + eps) · weight + bias` over the last dimension (PyTorch's
/// `nn.LayerNorm`, names `weight` and `bias`).
pub struct LayerNorm {
    pub weight: Param,
    pub bias: Param,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(store: ParamStore, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: store.param("weight", &[dim], Init::Ones)?,
            bias: store.param("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }
}

impl LayerNorm {
    /// The same computation composed from primitive ops: the fused kernel's tested twin.
    pub fn forward_composed(&self, x: &Tensor) -> Result<Tensor> {
        let centered = x.sub(&x.mean(&[-1], true)?)?;
        let var = centered.mul(&centered)?.mean(&[-1], true)?;
        centered
            .mul(&var.add_scalar(self.eps)?.pow(-0.5)?)?
            .mul(&self.weight.get())?
            .add(&self.bias.get())
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.weight.get(), &self.bias.get(), self.eps)
    }
    fn describe(&self) -> String {
        format!("LayerNorm({})", self.weight.get().dims()[0])
    }
    fn params(&self) -> Vec<Param> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}
