//! Conv: a bank of 2-D filters slid over an image, then an activation.

use crate::{Activation, Init, Module, Param, ParamStore};
use ferrograd::{Error, Result, Tensor};

/// How a convolution slides: stride, zero padding, bias, and the activation after it.
#[derive(Debug, Clone, Copy)]
pub struct ConvOptions {
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    pub activation: Activation,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions { stride: 1, padding: 0, bias: true, activation: Activation::Identity }
    }
}

/// `σ(b + W ⋆ x)` for (N, C, H, W) images and (O, C, K, K) filters `weight` with (O,) `bias`
/// (PyTorch's `nn.Conv2d` layout and names).
pub struct Conv {
    pub weight: Param,
    pub bias: Option<Param>,
    pub options: ConvOptions,
}

impl Conv {
    pub fn new(
        store: ParamStore,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        options: ConvOptions,
    ) -> Result<Conv> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || options.stride == 0 {
            return Err(Error::value(
                "Conv",
                format!("channels, kernel and stride must be positive, got {in_channels}→{out_channels}, kernel {kernel}, stride {}", options.stride),
            ));
        }
        let init = Init::pytorch_default(in_channels * kernel * kernel);
        Ok(Conv {
            weight: store.param("weight", &[out_channels, in_channels, kernel, kernel], init)?,
            bias: if options.bias {
                Some(store.param("bias", &[out_channels], init)?)
            } else {
                None
            },
            options,
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (s, p) = (self.options.stride, self.options.padding);
        let (weight, bias) = (self.weight.get(), self.bias.as_ref().map(|b| b.get()));
        match self.options.activation {
            // One op: the ReLU applied as the output is written.
            Activation::Relu => x.conv2d_relu(&weight, bias.as_ref(), (s, s), (p, p)),
            act => act.apply(&x.conv2d(&weight, bias.as_ref(), (s, s), (p, p))?),
        }
    }
    fn describe(&self) -> String {
        let d = self.weight.get();
        let d = d.dims();
        let mut s = format!("Conv({}→{}, {}×{}", d[1], d[0], d[2], d[3]);
        if self.options.stride != 1 {
            s += &format!(", stride {}", self.options.stride);
        }
        if self.options.padding != 0 {
            s += &format!(", pad {}", self.options.padding);
        }
        s + ")" + &super::glue::suffix(&self.options.activation)
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["Conv"]
    }
    fn params(&self) -> Vec<Param> {
        std::iter::once(self.weight.clone()).chain(self.bias.clone()).collect()
    }
}
