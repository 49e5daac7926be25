//! One step of a pre-norm transformer block for a single new token, as one fused op:
//! generation's inner loop. Inference only; the ops it fuses are its twin.

use super::float_dtype;
use super::unary::Nonlinearity;
use crate::backend::{BackendStorage, BlockParams};
use crate::{Error, Result, Tensor};

/// A pre-norm transformer block's parameters for [`Tensor::block_step`]: each layer a
/// (weight, bias) pair with the weight (out, in) as [`Tensor::linear`] takes it, each layer
/// norm a (weight, bias, eps).
pub struct PreNormBlock<'a> {
    pub heads: usize,
    pub attention_norm: (&'a Tensor, &'a Tensor, f64),
    pub query: (&'a Tensor, &'a Tensor),
    pub key: (&'a Tensor, &'a Tensor),
    pub value: (&'a Tensor, &'a Tensor),
    pub output: (&'a Tensor, &'a Tensor),
    pub ff_norm: (&'a Tensor, &'a Tensor, f64),
    pub ff_in: (&'a Tensor, &'a Tensor),
    pub activation: Nonlinearity,
    pub ff_out: (&'a Tensor, &'a Tensor),
}

/// A layer's (weight, bias) storages.
fn pair<'a>((w, bias): (&'a Tensor, &'a Tensor)) -> [&'a crate::storage::Storage; 2] {
    [w.storage(), bias.storage()]
}

impl Tensor {
    /// `h = x + Attention(LayerNorm(x))`, then `h + FeedForward(LayerNorm(h))`, for one token
    /// `self` (1, 1, D) that attends to the cached `keys` and `values` (1, S, D) and to itself:
    /// the block's output (1, 1, D); the token's key and value are appended to the caches in
    /// place. The values are those of the ops one after another (`layer_norm`, `linear`,
    /// `attention`, the activation, `add`), which this fuses so that the threads share each
    /// product of a step of generation. Records no gradient: call it under `no_grad`.
    pub fn block_step(
        &self,
        block: &PreNormBlock,
        keys: &mut Tensor,
        values: &mut Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "block_step";
        let b = block;
        let d = *self.dims().last().unwrap_or(&0);
        if self.dims() != [1, 1, d] || keys.rank() != 3 || keys.dims() != values.dims() {
            return Err(Error::shape(
                OP,
                format!(
                    "takes one token (1, 1, D) and caches of one (1, S, D) shape, got {}, {} and {}",
                    self.shape(),
                    keys.shape(),
                    values.shape()
                ),
            ));
        }
        if keys.dims()[0] != 1 || keys.dims()[2] != d {
            return Err(Error::shape(
                OP,
                format!("caches must be (1, S, {d}) for a token of {d}, got {}", keys.shape()),
            ));
        }
        if b.heads == 0 || !d.is_multiple_of(b.heads) {
            return Err(Error::value(OP, format!("{} heads do not divide {d} features", b.heads)));
        }
        let f = b.ff_in.0.dims().first().copied().unwrap_or(0);
        let layers = [
            ("query", b.query, [d, d]),
            ("key", b.key, [d, d]),
            ("value", b.value, [d, d]),
            ("output", b.output, [d, d]),
            ("ff_in", b.ff_in, [f, d]),
            ("ff_out", b.ff_out, [d, f]),
        ];
        for (name, (w, bias), [n, k]) in layers {
            if w.dims() != [n, k] || bias.dims() != [n] {
                return Err(Error::shape(
                    OP,
                    format!(
                        "{name} must be ({n}, {k}) with a bias ({n},), got {} and {}",
                        w.shape(),
                        bias.shape()
                    ),
                ));
            }
        }
        for (name, (w, bias, _)) in [("attention_norm", b.attention_norm), ("ff_norm", b.ff_norm)] {
            if w.dims() != [d] || bias.dims() != [d] {
                return Err(Error::shape(
                    OP,
                    format!("{name} must be ({d},) twice, got {} and {}", w.shape(), bias.shape()),
                ));
            }
        }
        let mut all: Vec<&Tensor> = vec![self, keys, values];
        all.extend(layers.iter().flat_map(|(_, (w, bias), _)| [*w, *bias]));
        all.extend([b.attention_norm, b.ff_norm].iter().flat_map(|(w, bias, _)| [*w, *bias]));
        float_dtype(OP, &all)?;
        if crate::is_grad_enabled() && all.iter().any(|t| t.requires_grad()) {
            return Err(Error::autograd(
                OP,
                "records no gradient: call it under no_grad (training takes the ops one by one)",
            ));
        }
        // The caches grow by this token's row (in place when they alone hold their memory),
        // which the kernel fills.
        let row = Tensor::zeros(&[1, 1, d], self.dtype())?;
        keys.append(&row, 1)?;
        values.append(&row, 1)?;
        let (Some((k, _)), Some((v, _))) = (keys.unique_parts_mut(), values.unique_parts_mut())
        else {
            return Err(Error::value(OP, "the caches are shared with another tensor"));
        };
        let params = BlockParams {
            heads: b.heads,
            attention_norm: pair((b.attention_norm.0, b.attention_norm.1)),
            attention_eps: b.attention_norm.2,
            query: pair(b.query),
            key: pair(b.key),
            value: pair(b.value),
            output: pair(b.output),
            ff_norm: pair((b.ff_norm.0, b.ff_norm.1)),
            ff_eps: b.ff_norm.2,
            ff_in: pair(b.ff_in),
            activation: b.activation.unary(),
            ff_out: pair(b.ff_out),
        };
        let out = self.storage().block_step(&params, k, v)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }
}
