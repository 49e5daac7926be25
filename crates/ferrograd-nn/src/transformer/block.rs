//! AddNorm and TransformerBlock = AddNorm(FeedForward, AddNorm(Attention, x)).

use super::{Attention, LayerNorm};
use crate::pytorch::{renamed, scope_of, TorchName};
use crate::sequence::{check_mask, Padding, SequenceModel};
use crate::{Activation, Dropout, FeedForward, Module, Param, ParamStore};
use ferrograd::{Result, Tensor};

/// A residual connection with a LayerNorm: the lecture's `LayerNorm(x + f(x))` (post-norm),
/// or `x + f(LayerNorm(x))` (pre-norm, as GPT-style stacks use).
pub struct AddNorm {
    pub norm: LayerNorm,
    pub pre_norm: bool,
    /// Applied to f(x) before it is added, in training (PyTorch's `dropout1`, `dropout2`).
    pub dropout: Option<Dropout>,
}

impl AddNorm {
    pub fn new(norm: LayerNorm, pre_norm: bool) -> AddNorm {
        AddNorm { norm, pre_norm, dropout: None }
    }

    pub fn apply(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let dropped = |y: Tensor| match &self.dropout {
            Some(d) => d.forward(&y),
            None => Ok(y),
        };
        if self.pre_norm {
            x.add(&dropped(f(&self.norm.forward(x)?)?)?)
        } else {
            self.norm.forward(&x.add(&dropped(f(x)?)?)?)
        }
    }
}

/// `AddNorm(FeedForward, AddNorm(Attention, x))`: self-attention, then a two-layer
/// FeedForward (GELU), each wrapped in AddNorm.
pub struct TransformerBlock {
    pub attention: Attention,
    pub attention_norm: AddNorm,
    pub ff_in: FeedForward,
    pub ff_out: FeedForward,
    pub ff_norm: AddNorm,
    /// Between the FeedForward's two layers, in training (PyTorch's `dropout` there).
    pub ff_dropout: Option<Dropout>,
}

/// A block's two-layer FeedForward, with `dropout` between its layers.
pub(crate) fn feed_forward(
    ff_in: &FeedForward,
    ff_out: &FeedForward,
    dropout: Option<&Dropout>,
    h: &Tensor,
) -> Result<Tensor> {
    if !dropout.is_some_and(Dropout::active) {
        if let (Some(w1), Some(w2)) = (ff_in.weight.packed()?, ff_out.weight.packed()?) {
            // Packed inference: both products in one pass over blocks of rows.
            let (b1, b2) = (ff_in.bias.get(), ff_out.bias.get());
            let y = h.feed_forward_packed((&w1, Some(&b1)), ff_in.activation, (&w2, Some(&b2)))?;
            return ff_out.activation.apply(&y);
        }
    }
    let hidden = ff_in.forward(h)?;
    match dropout {
        Some(d) => ff_out.forward(&d.forward(&hidden)?),
        None => ff_out.forward(&hidden),
    }
}

impl TransformerBlock {
    /// A block with parameters `attention.*`, `attention_norm.*`, `ff_in.*`, `ff_out.*`,
    /// `ff_norm.*` under `store`.
    pub fn new(
        store: &ParamStore,
        dim: usize,
        heads: usize,
        ff: usize,
        causal: bool,
        pre_norm: bool,
    ) -> Result<TransformerBlock> {
        Ok(TransformerBlock {
            attention: Attention::new(&store.sub("attention"), dim, heads, causal)?,
            attention_norm: AddNorm::new(
                LayerNorm::new(store.sub("attention_norm"), dim, 1e-5)?,
                pre_norm,
            ),
            ff_in: FeedForward::new(store.sub("ff_in"), dim, ff, Activation::Gelu)?,
            ff_out: FeedForward::new(store.sub("ff_out"), ff, dim, Activation::Identity)?,
            ff_norm: AddNorm::new(LayerNorm::new(store.sub("ff_norm"), dim, 1e-5)?, pre_norm),
            ff_dropout: None,
        })
    }

    /// Dropout with probability `p` in training where `nn.TransformerEncoderLayer(dropout=p)`
    /// has it: on the attention weights, between the FeedForward's layers, and on each
    /// sublayer's output before it is added back.
    pub fn with_dropout(mut self, store: &ParamStore, p: f64) -> Result<TransformerBlock> {
        self.attention.dropout = Some(Dropout::new(store, p)?);
        self.ff_dropout = Some(Dropout::new(store, p)?);
        self.attention_norm.dropout = Some(Dropout::new(store, p)?);
        self.ff_norm.dropout = Some(Dropout::new(store, p)?);
        Ok(self)
    }

    /// The FeedForward's activation in place of GELU (`nn.TransformerEncoderLayer`'s default
    /// is ReLU).
    pub fn with_activation(mut self, activation: Activation) -> TransformerBlock {
        self.ff_in.activation = activation;
        self
    }

    fn feed_forward(&self, h: &Tensor) -> Result<Tensor> {
        feed_forward(&self.ff_in, &self.ff_out, self.ff_dropout.as_ref(), h)
    }

    /// One step from the attention's key/value cache in `state`, skipping `pad`'s keys.
    fn incremental(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: Option<&Padding>,
    ) -> Result<Tensor> {
        if pad.is_none() && state.len() == 2 && self.steps_fused(x)? {
            // Taken, as the composed path takes it: after an error the state is empty.
            let mut caches = std::mem::take(state);
            let y = fused_steps(&[self], x, &mut caches)?;
            *state = caches;
            return Ok(y);
        }
        let h = self.attention_norm.apply(x, |y| self.attention.incremental(y, state, pad))?;
        self.ff_norm.apply(&h, |y| self.feed_forward(y))
    }

    /// Whether a step of `x` from a cache runs as one fused op ([`Tensor::block_step`]): one
    /// token of a batch of one, in f32 or f64 inference through a pre-norm block without
    /// dropout.
    pub(crate) fn steps_fused(&self, x: &Tensor) -> Result<bool> {
        let dropout = [
            self.attention.dropout.as_ref(),
            self.ff_dropout.as_ref(),
            self.attention_norm.dropout.as_ref(),
            self.ff_norm.dropout.as_ref(),
        ];
        let layers = [
            &self.attention.query,
            &self.attention.key,
            &self.attention.value,
            &self.attention.output,
            &self.ff_in,
            &self.ff_out,
        ];
        let simple = x.dims()[..x.rank().min(2)] == [1, 1]
            && !ferrograd::is_grad_enabled()
            && self.attention_norm.pre_norm
            && self.ff_norm.pre_norm
            && !dropout.into_iter().flatten().any(Dropout::active)
            && layers[..4].iter().all(|l| l.activation == Activation::Identity)
            && self.ff_out.activation == Activation::Identity;
        if !simple {
            return Ok(false);
        }
        // Weights packed for int8 or bf16 products take the packed ops.
        for layer in layers {
            if layer.weight.packed()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One token's step through `blocks` in turn as one op ([`Tensor::block_step`]), appending
/// to `caches` (each block's keys and values).
pub(crate) fn fused_steps(
    blocks: &[&TransformerBlock],
    x: &Tensor,
    caches: &mut [Tensor],
) -> Result<Tensor> {
    let pair = |f: &FeedForward| (f.weight.get(), f.bias.get());
    let norm = |n: &AddNorm| (n.norm.weight.get(), n.norm.bias.get(), n.norm.eps);
    let values: Vec<_> = blocks
        .iter()
        .map(|b| {
            let a = &b.attention;
            let layers = [&a.query, &a.key, &a.value, &a.output, &b.ff_in, &b.ff_out].map(pair);
            (layers, norm(&b.attention_norm), norm(&b.ff_norm))
        })
        .collect();
    let params: Vec<_> = blocks
        .iter()
        .zip(&values)
        .map(|(b, ([q, k, v, o, ff_in, ff_out], n1, n2))| ferrograd::PreNormBlock {
            heads: b.attention.heads,
            attention_norm: (&n1.0, &n1.1, n1.2),
            query: (&q.0, &q.1),
            key: (&k.0, &k.1),
            value: (&v.0, &v.1),
            output: (&o.0, &o.1),
            ff_norm: (&n2.0, &n2.1, n2.2),
            ff_in: (&ff_in.0, &ff_in.1),
            activation: b.ff_in.activation,
            ff_out: (&ff_out.0, &ff_out.1),
        })
        .collect();
    x.block_step(&params, caches)
}

impl Module for TransformerBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        let pre = if self.attention_norm.pre_norm { ", pre-norm" } else { "" };
        format!(
            "TransformerBlock({}, FeedForward {}{pre})",
            self.attention.describe(),
            self.ff_in.weight.get().dims()[0]
        )
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["TransformerBlock"]
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.attention.params();
        p.extend(self.attention_norm.norm.params());
        p.extend(self.ff_in.params());
        p.extend(self.ff_out.params());
        p.extend(self.ff_norm.norm.params());
        p
    }
    /// `nn.TransformerEncoderLayer`'s: `self_attn`, `linear1`, `linear2`, `norm1`, `norm2`.
    fn torch_names(&self) -> Vec<TorchName> {
        let mut names = self.attention.torch_names();
        for p in [
            self.attention_norm.norm.params(),
            self.ff_in.params(),
            self.ff_out.params(),
            self.ff_norm.norm.params(),
        ] {
            names.extend(p.into_iter().map(TorchName::same));
        }
        match scope_of(&self.attention_norm.norm.weight, "attention_norm.weight") {
            Some(scope) => renamed(
                names,
                &scope,
                &[
                    ("attention.", "self_attn."),
                    ("attention_norm.", "norm1."),
                    ("ff_in.", "linear1."),
                    ("ff_out.", "linear2."),
                    ("ff_norm.", "norm2."),
                ],
            ),
            None => names,
        }
    }
}

impl SequenceModel for TransformerBlock {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        check_mask("TransformerBlock", x, mask)?;
        let h = self.attention_norm.apply(x, |y| self.attention.attend(y, y, mask))?;
        self.ff_norm.apply(&h, |y| self.feed_forward(y))
    }
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor> {
        self.incremental(x, state, None)
    }
    fn forward_incremental_padded(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: &Padding,
    ) -> Result<Tensor> {
        self.incremental(x, state, Some(pad))
    }
    fn state_len(&self) -> usize {
        2
    }
    fn output_size(&self) -> usize {
        self.ff_out.weight.get().dims()[0]
    }
    fn as_transformer_block(&self) -> Option<&TransformerBlock> {
        Some(self)
    }
    fn attention_weights(&self, x: &Tensor, mask: Option<&Tensor>) -> Option<Result<Tensor>> {
        let weights = || {
            let y = if self.attention_norm.pre_norm {
                self.attention_norm.norm.forward(x)?
            } else {
                x.clone()
            };
            Ok(self.attention.attend_composed(&y, &y, mask)?.1)
        };
        Some(weights())
    }
}
