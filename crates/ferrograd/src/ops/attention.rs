//! Multi-head scaled dot-product attention as one fused op, forward and backward; its composed
//! twin (matmul, softmax and masks, each differentiated on its own, in ferrograd-nn's
//! `Attention::weights` path) is the tests' reference.

use crate::backend::{AttentionDims, BackendStorage};
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `softmax(Q Kᵀ / √E + masks) V` per head, for queries `self` (B, T, D) and keys and
    /// values (B, S, D), D split into `heads` heads of E: the (B, T, D) mix. Keys whose
    /// `key_mask` (B, S) is 0 are not attended to; with `causal`, query i (at position
    /// S − T + i) sees only keys up to its own position. A query that sees no key gets 0.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let q = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 1, 2]).unwrap();
    /// let k = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[1, 2, 2]).unwrap();
    /// let v = Tensor::from_vec(vec![10.0f32, 0.0, 0.0, 10.0], &[1, 2, 2]).unwrap();
    /// let mask = Tensor::from_vec(vec![0i64, 1], &[1, 2]).unwrap(); // key 0 is padding
    /// let out = q.attention(&k, &v, 1, Some(&mask), false).unwrap();
    /// assert_eq!(out.to_vec::<f32>().unwrap(), vec![0.0, 10.0]);
    /// ```
    pub fn attention(
        &self,
        keys: &Tensor,
        values: &Tensor,
        heads: usize,
        key_mask: Option<&Tensor>,
        causal: bool,
    ) -> Result<Tensor> {
        const OP: &str = "attention";
        let (q, k, v) = (self, keys, values);
        if q.rank() != 3 || k.rank() != 3 || k.dims() != v.dims() {
            return Err(Error::shape(
                OP,
                format!(
                    "queries must be (B, T, D) and keys and values one (B, S, D) shape, got {}, {} and {}",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        let (b, t, dm) = (q.dims()[0], q.dims()[1], q.dims()[2]);
        let s = k.dims()[1];
        if k.dims()[0] != b || k.dims()[2] != dm {
            return Err(Error::shape(
                OP,
                format!(
                    "keys {} do not fit queries {}: batch and D must agree",
                    k.shape(),
                    q.shape()
                ),
            ));
        }
        if heads == 0 || !dm.is_multiple_of(heads) {
            return Err(Error::value(OP, format!("{heads} heads cannot split D = {dm}")));
        }
        if let Some(m) = key_mask.filter(|m| m.dims() != [b, s]) {
            return Err(Error::shape(
                OP,
                format!("key mask must be ({b}, {s}), got {}", m.shape()),
            ));
        }
        super::float_operands(
            OP,
            &[q, k, v],
            "queries, keys and values must share one float dtype",
        )?;
        let dims =
            AttentionDims { batch: b, heads, queries: t, keys: s, head_size: dm / heads, causal };
        let mask = key_mask.map(|m| m.storage());
        let (out, saved) = q.storage().attention(k.storage(), v.storage(), mask, &dims)?;
        let out = Tensor::from_storage(out, q.shape().clone());
        let (qd, kd, vd, od) = (q.detach(), k.detach(), v.detach(), out.detach());
        let (q_shape, k_shape) = (q.shape().clone(), k.shape().clone());
        Ok(out.with_history(OP, &[q, k, v], move |g| {
            let (dq, dk, dv) = g.storage().attention_backward(
                qd.storage(),
                kd.storage(),
                vd.storage(),
                od.storage(),
                &saved,
                &dims,
            )?;
            Ok(vec![
                Some(Tensor::from_storage(dq, q_shape)),
                Some(Tensor::from_storage(dk, k_shape.clone())),
                Some(Tensor::from_storage(dv, k_shape)),
            ])
        }))
    }
}
