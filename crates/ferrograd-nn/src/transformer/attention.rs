//! Attention: each position reads a weighted mix of the (other) positions' values, weighted by
//! how well its query matches their keys — multi-head, scaled dot-product.
//!
//! Legend: B batch, T query positions, S key positions, D model size, H heads, E = D / H.

use crate::pytorch::{scope_of, TorchName};
use crate::sequence::{check_mask, Padding, SequenceModel};
use crate::{Activation, Dropout, FeedForward, Module, Param, ParamStore};
use ferrograd::{Error, Result, Tensor};

/// Added to the scores of positions that must not be attended to: exp of it is exactly 0.
const BLOCKED: f64 = -1e9;

/// Multi-head attention with query, key, value and output projections.
pub struct Attention {
    pub query: FeedForward,
    pub key: FeedForward,
    pub value: FeedForward,
    pub output: FeedForward,
    pub heads: usize,
    /// Each position attends only to itself and earlier positions (language models).
    pub causal: bool,
    /// Dropout on the attention weights in training (which then takes the composed path).
    pub dropout: Option<Dropout>,
}

impl Attention {
    /// Projections named `query`, `key`, `value` and `output` under `store`.
    pub fn new(store: &ParamStore, dim: usize, heads: usize, causal: bool) -> Result<Attention> {
        Attention::with_names(store, ["query", "key", "value", "output"], dim, heads, causal)
    }

    /// Projections under the given names (BERT's are `attention.self.query`, …,
    /// `attention.output.dense`).
    pub fn with_names(
        store: &ParamStore,
        names: [&str; 4],
        dim: usize,
        heads: usize,
        causal: bool,
    ) -> Result<Attention> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::value(
                "Attention",
                format!("{heads} heads cannot split a model size of {dim}"),
            ));
        }
        let proj = |n: &str| FeedForward::new(store.sub(n), dim, dim, Activation::Identity);
        Ok(Attention {
            query: proj(names[0])?,
            key: proj(names[1])?,
            value: proj(names[2])?,
            output: proj(names[3])?,
            heads,
            causal,
            dropout: None,
        })
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        x.reshape(&[b, t, self.heads, d / self.heads])?.permute(&[0, 2, 1, 3]) // (B, H, T, E)
    }

    /// Queries from `x` (B, T, D) attend to keys and values from `context` (B, S, D) (`x`
    /// itself for self-attention), skipping keys whose `key_mask` (B, S) is 0: the output
    /// (B, T, D), through the fused attention op.
    pub fn attend(
        &self,
        x: &Tensor,
        context: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (k, v) = self.keys_values(context)?;
        self.attend_to(x, &k, &v, key_mask)
    }

    /// The projected keys and values (B, S, D) of `context` (B, S, D): what a cache keeps, so
    /// that a decoder projects the encoder's output once per input, not once per step.
    pub fn keys_values(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.key.forward(context)?, self.value.forward(context)?))
    }

    /// Attention of `x`'s queries over already projected keys and values (B, S, D); with
    /// `causal`, query i of T sits at position S − T + i.
    pub fn attend_to(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.dropout.as_ref().is_some_and(Dropout::active) {
            return Ok(self.composed(x, k, v, key_mask)?.0);
        }
        let q = self.query.forward(x)?;
        self.output.forward(&q.attention(k, v, self.heads, key_mask, self.causal)?)
    }

    /// [`Attention::attend`] composed from matmul, softmax and additive masks, each op
    /// differentiated on its own: the fused op's tested twin. Also returns the attention
    /// weights (B, H, T, S), for looking at what each head attends to.
    pub fn attend_composed(
        &self,
        x: &Tensor,
        context: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (k, v) = self.keys_values(context)?;
        self.composed(x, &k, &v, key_mask)
    }

    /// The composed path over projected keys and values (B, S, D); dropout, when on, falls on
    /// the weights it mixes with (the returned weights are those before dropout).
    fn composed(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let (k, v) = (self.split_heads(k)?, self.split_heads(v)?);
        let s = k.dims()[2];
        let e = d / self.heads;
        // The 1/√E scale on the queries: cheaper than on the (T × S) scores.
        let q = self.split_heads(&self.query.forward(x)?.mul_scalar(1.0 / (e as f64).sqrt())?)?;
        let mut scores = q.matmul(&k.transpose(-1, -2)?)?; // (B, H, T, S)
        if let Some(m) = key_mask {
            if m.dims() != [b, s] {
                return Err(Error::shape(
                    "Attention",
                    format!("key mask must be ({b}, {s}), got {}", m.shape()),
                ));
            }
            let blocked = m
                .eq(&Tensor::scalar(0i64).to_dtype(m.dtype())?)?
                .to_dtype(x.dtype())?
                .mul_scalar(BLOCKED)?;
            scores = scores.add(&blocked.reshape(&[b, 1, 1, s])?)?;
        }
        if self.causal && t > 1 {
            let offset = s.saturating_sub(t);
            let future: Vec<f64> = (0..t)
                .flat_map(|i| (0..s).map(move |j| if j > i + offset { BLOCKED } else { 0.0 }))
                .collect();
            scores = scores.add(&Tensor::from_vec(future, &[t, s])?.to_dtype(x.dtype())?)?;
        }
        let weights = scores.softmax(-1)?;
        let mixing = match &self.dropout {
            Some(drop) => drop.forward(&weights)?,
            None => weights.clone(),
        };
        let mixed = mixing.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[b, t, d])?; // (B, T, D)
        Ok((self.output.forward(&mixed)?, weights))
    }
}

impl Attention {
    /// Keys and values of earlier positions are cached: each new position costs one position.
    /// With `pad`, keys on each row's leading padding are skipped. After an error the cache is
    /// empty (the step starts again from no earlier positions).
    pub fn incremental(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: Option<&Padding>,
    ) -> Result<Tensor> {
        check_mask("Attention", x, None)?;
        let (k_new, v_new) = self.keys_values(x)?;
        // The cache grows in place (each step writes its position only).
        let (k, v) = match <[Tensor; 2]>::try_from(std::mem::take(state)) {
            Ok([mut k, mut v]) => {
                k.append(&k_new, 1)?;
                v.append(&v_new, 1)?;
                (k, v)
            }
            Err(_) => (k_new, v_new),
        };
        let mask = pad.map(|p| p.key_mask(k.dims()[1])).transpose()?;
        let out = self.attend_to(x, &k, &v, mask.as_ref())?;
        *state = vec![k, v];
        Ok(out)
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        let d = self.query.weight.get().dims()[0];
        format!("Attention({d}, {} heads{})", self.heads, if self.causal { ", causal" } else { "" })
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["Attention"]
    }
    fn params(&self) -> Vec<Param> {
        [&self.query, &self.key, &self.value, &self.output]
            .iter()
            .flat_map(|p| p.params())
            .collect()
    }
    /// `nn.MultiheadAttention`'s: query, key and value packed in `in_proj_weight` and
    /// `in_proj_bias`, the output as `out_proj`.
    fn torch_names(&self) -> Vec<TorchName> {
        let ours = |f: &FeedForward, name: &str| {
            [(&f.weight, "weight"), (&f.bias, "bias")]
                .iter()
                .map(|(p, kind)| scope_of(p, &format!("{name}.{kind}")))
                .collect::<Vec<_>>()
        };
        let scopes: Vec<Option<String>> = [
            ours(&self.query, "query"),
            ours(&self.key, "key"),
            ours(&self.value, "value"),
            ours(&self.output, "output"),
        ]
        .concat();
        // Built under other names (BERT's `attention.self.query`, `attention.output.dense`):
        // those stay.
        let Some(scope) =
            scopes[0].clone().filter(|s| scopes.iter().all(|o| o.as_ref() == Some(s)))
        else {
            return self.params().into_iter().map(TorchName::same).collect();
        };
        let packed = |name: &str, part: fn(&FeedForward) -> &Param| TorchName {
            name: format!("{scope}{name}"),
            parts: [&self.query, &self.key, &self.value].map(|f| part(f).clone()).to_vec(),
        };
        let output = |name: &str, p: &Param| TorchName {
            name: format!("{scope}out_proj.{name}"),
            parts: vec![p.clone()],
        };
        vec![
            packed("in_proj_weight", |f| &f.weight),
            packed("in_proj_bias", |f| &f.bias),
            output("weight", &self.output.weight),
            output("bias", &self.output.bias),
        ]
    }
}

impl SequenceModel for Attention {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        check_mask("Attention", x, mask)?;
        self.attend(x, x, mask)
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
        self.output.weight.get().dims()[0]
    }
}
