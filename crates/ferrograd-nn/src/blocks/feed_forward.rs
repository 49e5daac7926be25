//! FeedForward: the lecture's `σ(b + V x)`, an affine map and an activation.

use crate::{Activation, Init, Module, Param, ParamStore};
use ferrograd::{Result, Tensor};

/// `σ(b + V x)` with V an (out, in) `weight` and b an (out,) `bias` (PyTorch's `nn.Linear`
/// layout and names, so its weights load by name).
pub struct FeedForward {
    pub weight: Param,
    pub bias: Param,
    pub activation: Activation,
}

impl FeedForward {
    /// Parameters `weight` and `bias` under `store`, with PyTorch's default initialization.
    ///
    /// ```
    /// use ferrograd::{DType, Tensor};
    /// use ferrograd_nn::{Activation, FeedForward, Module, ParamStore};
    /// let ff = FeedForward::new(ParamStore::new(0).sub("fc"), 3, 2, Activation::Relu).unwrap();
    /// let y = ff.forward(&Tensor::ones(&[5, 3], DType::F32).unwrap()).unwrap();
    /// assert_eq!(y.dims(), &[5, 2]);
    /// assert_eq!(ff.weight.name(), "fc.weight");
    /// ```
    pub fn new(
        store: ParamStore,
        input: usize,
        output: usize,
        activation: Activation,
    ) -> Result<FeedForward> {
        let init = Init::pytorch_default(input);
        Ok(FeedForward {
            weight: store.param("weight", &[output, input], init)?,
            bias: store.param("bias", &[output], init)?,
            activation,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.activation.apply(&self.weight.linear(x, Some(&self.bias.get()))?)
    }
    fn describe(&self) -> String {
        let d = self.weight.get();
        format!(
            "FeedForward({}→{}){}",
            d.dims()[1],
            d.dims()[0],
            super::glue::suffix(&self.activation)
        )
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["FeedForward"]
    }
    fn params(&self) -> Vec<Param> {
        vec![self.weight.clone(), self.bias.clone()]
    }
}
