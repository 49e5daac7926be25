//! The `Module` trait, sequential composition, and how a model writes itself in the lecture's
//! notation (`FeedForward^3(MaxPool(Conv(x)))`) with a table of its layers.

use crate::pytorch::TorchName;
use crate::Param;
use ferrograd::{no_grad, Result, Tensor};

/// A differentiable building block: a struct of its parameters and sub-modules plus `forward`.
pub trait Module: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// This layer in a few words, for the summary: `Conv(1→32, 5×5, pad 2) + ReLU`.
    fn describe(&self) -> String;
    /// The lecture's blocks this module applies, innermost first (`["Conv", "MaxPool"]`).
    /// Glue — activations on their own, Flatten, Dropout — applies none.
    fn blocks(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Its parameters, sub-modules' included.
    fn params(&self) -> Vec<Param> {
        Vec::new()
    }
    /// Its layers as the summary lists them; a plain layer is its own only layer.
    fn layers(&self) -> Vec<&dyn Module> {
        Vec::new()
    }
    /// Its parameters under the names PyTorch's equivalent module gives them in its
    /// `state_dict` ([`crate::pytorch`]). Each under its own name unless a block says otherwise
    /// (Attention, the Transformer blocks); the stacks, Sequential, LanguageModel and RnnDecoder
    /// gather their parts'. A model of your own that holds such blocks gathers theirs too.
    fn torch_names(&self) -> Vec<TorchName> {
        self.params().into_iter().map(TorchName::same).collect()
    }
}

/// Modules applied one after the other.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }
    /// Appends a layer: `a.then(b)` applies a, then b.
    pub fn then(mut self, layer: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }
    /// The `i`-th layer (a CNN's first convolution, to look at its filters).
    pub fn layer(&self, i: usize) -> Option<&dyn Module> {
        self.layers.get(i).map(|l| l.as_ref())
    }
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |h, layer| layer.forward(&h))
    }
    fn describe(&self) -> String {
        formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        self.layers.iter().flat_map(|l| l.blocks()).collect()
    }
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
    fn torch_names(&self) -> Vec<TorchName> {
        self.layers.iter().flat_map(|l| l.torch_names()).collect()
    }
    fn layers(&self) -> Vec<&dyn Module> {
        self.layers
            .iter()
            .flat_map(|l| {
                let inner = l.layers();
                if inner.is_empty() {
                    vec![l.as_ref()]
                } else {
                    inner
                }
            })
            .collect()
    }
}

/// The module in the lecture's notation: repeated blocks as powers, innermost at the right.
///
/// ```
/// use ferrograd_nn::{formula, Activation, FeedForward, ParamStore, Sequential};
/// let s = ParamStore::new(0);
/// let net = Sequential::new()
///     .then(FeedForward::new(s.sub(0), 4, 8, Activation::Relu).unwrap())
///     .then(FeedForward::new(s.sub(1), 8, 8, Activation::Relu).unwrap())
///     .then(FeedForward::new(s.sub(2), 8, 2, Activation::Identity).unwrap());
/// assert_eq!(formula(&net), "FeedForward^3(x)");
/// ```
pub fn formula(m: &dyn Module) -> String {
    compose(m.blocks(), "x".into(), "")
}

/// `blocks` (innermost first) applied to `inner`, repeats as powers; `extra` follows the
/// innermost argument of each (a decoder's second argument, the encoded source).
pub(crate) fn compose(blocks: Vec<&'static str>, inner: String, extra: &str) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for b in blocks {
        match runs.last_mut() {
            Some((name, k)) if *name == b => *k += 1,
            _ => runs.push((b, 1)),
        }
    }
    runs.into_iter().fold(inner, |inner, (name, k)| {
        if k == 1 {
            format!("{name}({inner}{extra})")
        } else {
            format!("{name}^{k}({inner}{extra})")
        }
    })
}

/// The formula, then each layer with its output shape for an input of `input_dims` and its
/// parameter count, then the total.
pub fn summary(m: &dyn Module, input_dims: &[usize]) -> Result<String> {
    let _g = no_grad();
    let mut out = format!("{}\n\n", formula(m));
    out += &format!("  {:<3} {:<44} {:<20} {:>10}\n", "#", "layer", "output", "parameters");
    let mut x = Tensor::zeros(input_dims, ferrograd::DType::F32)?;
    out += &format!("  {:<3} {:<44} {:<20} {:>10}\n", "", "input", format!("{:?}", input_dims), "");
    let layers = m.layers();
    let layers = if layers.is_empty() { vec![m] } else { layers };
    for (i, layer) in layers.iter().enumerate() {
        x = layer.forward(&x)?;
        let n: usize = layer.params().iter().map(|p| p.numel()).sum();
        out += &format!(
            "  {:<3} {:<44} {:<20} {:>10}\n",
            i,
            layer.describe(),
            format!("{:?}", x.dims()),
            thousands(n)
        );
    }
    let total: usize = m.params().iter().map(|p| p.numel()).sum();
    out += &format!("  total parameters: {}\n", thousands(total));
    Ok(out)
}

/// 1234567 → "1,234,567".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
