//! One step of a pre-norm transformer block for a single new token, as one fused op:
//! generation's inner loop. Inference only; the ops it fuses are its twin.

use super::float_dtype;
use super::unary::Nonlinearity;
use crate::backend::{BackendStorage, BlockParams};
use crate::storage::Storage;
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
fn pair<'a>((w, bias): (&'a Tensor, &'a Tensor)) -> [&'a Storage; 2] {
    [w.storage(), bias.storage()]
}

impl Tensor {
    /// One token `self` (1, 1, D) through pre-norm transformer blocks in turn, each
    /// `h = x + Attention(LayerNorm(x))`, then `h + FeedForward(LayerNorm(h))`, attending to
    /// its cached keys and values and to the token itself: the last block's output
    /// (1, 1, D). `caches` holds each block's keys and values, (1, S, D) each, to which the
    /// token's are appended in place. The values are those of the ops one after another
    /// (`layer_norm`, `linear`, `attention`, the activation, `add`), which this fuses so that
    /// the threads share each product of a step of generation. Records no gradient: call it
    /// under `no_grad`.
    pub fn block_step(&self, blocks: &[PreNormBlock], caches: &mut [Tensor]) -> Result<Tensor> {
        const OP: &str = "block_step";
        let d = *self.dims().last().unwrap_or(&0);
        if self.dims() != [1, 1, d] || d == 0 {
            return Err(Error::shape(
                OP,
                format!("takes one token (1, 1, D) of D > 0 features, got {}", self.shape()),
            ));
        }
        if caches.len() != 2 * blocks.len() {
            return Err(Error::value(
                OP,
                format!(
                    "takes keys and values for each of {} blocks, got {} caches",
                    blocks.len(),
                    caches.len()
                ),
            ));
        }
        let mut all: Vec<&Tensor> = vec![self];
        for (i, (b, kv)) in blocks.iter().zip(caches.chunks(2)).enumerate() {
            check_block(OP, i, b, d, &kv[0], &kv[1])?;
            all.extend(kv);
            all.extend(layers(b, d).iter().flat_map(|(_, (w, bias), _)| [*w, *bias]));
            all.extend([b.attention_norm, b.ff_norm].iter().flat_map(|(w, bias, _)| [*w, *bias]));
        }
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
        for cache in caches.iter_mut() {
            cache.append(&row, 1)?;
        }
        let Some(mut storages) = caches
            .iter_mut()
            .map(|c| c.unique_parts_mut().map(|(s, _)| s))
            .collect::<Option<Vec<_>>>()
        else {
            return Err(Error::value(OP, "the caches are shared with another tensor"));
        };
        let params: Vec<BlockParams<'_, Storage>> = blocks
            .iter()
            .map(|b| BlockParams {
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
            })
            .collect();
        let out = self.storage().block_step(&params, &mut storages)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }
}

/// The six layers of block `b` for D features, with the (out, in) sizes each must have.
fn layers<'a>(
    b: &PreNormBlock<'a>,
    d: usize,
) -> [(&'static str, (&'a Tensor, &'a Tensor), [usize; 2]); 6] {
    let f = b.ff_in.0.dims().first().copied().unwrap_or(0);
    [
        ("query", b.query, [d, d]),
        ("key", b.key, [d, d]),
        ("value", b.value, [d, d]),
        ("output", b.output, [d, d]),
        ("ff_in", b.ff_in, [f, d]),
        ("ff_out", b.ff_out, [d, f]),
    ]
}

/// Block `i`'s sizes against a token of `d` features, and its caches'.
fn check_block(
    op: &str,
    i: usize,
    b: &PreNormBlock,
    d: usize,
    keys: &Tensor,
    values: &Tensor,
) -> Result<()> {
    if keys.rank() != 3
        || keys.dims() != values.dims()
        || keys.dims()[0] != 1
        || keys.dims()[2] != d
    {
        return Err(Error::shape(
            op,
            format!(
                "block {i}: caches must be one (1, S, {d}) shape for a token of {d}, got {} and {}",
                keys.shape(),
                values.shape()
            ),
        ));
    }
    if b.heads == 0 || !d.is_multiple_of(b.heads) {
        return Err(Error::value(
            op,
            format!("block {i}: {} heads do not divide {d} features", b.heads),
        ));
    }
    for (name, (w, bias), [n, k]) in layers(b, d) {
        if w.dims() != [n, k] || bias.dims() != [n] {
            return Err(Error::shape(
                op,
                format!(
                    "block {i}: {name} must be ({n}, {k}) with a bias ({n},), got {} and {}",
                    w.shape(),
                    bias.shape()
                ),
            ));
        }
    }
    for (name, (w, bias, _)) in [("attention_norm", b.attention_norm), ("ff_norm", b.ff_norm)] {
        if w.dims() != [d] || bias.dims() != [d] {
            return Err(Error::shape(
                op,
                format!(
                    "block {i}: {name} must be ({d},) twice, got {} and {}",
                    w.shape(),
                    bias.shape()
                ),
            ));
        }
    }
    Ok(())
}
