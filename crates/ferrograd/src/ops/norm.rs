//! Layer normalization as one fused op (its kernels in the backend); its composed twin (mean,
//! var, sub, mul — every piece differentiated on its own) is the test's reference.

use crate::backend::BackendStorage;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `(x − mean) / √(var + eps) · weight + bias` over the last dimension, fused: one pass
    /// forward, one back (PyTorch's `F.layer_norm`).
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let d = *self
            .dims()
            .last()
            .ok_or_else(|| Error::shape(OP, "needs at least one dimension, got a scalar"))?;
        if weight.dims() != [d] || bias.dims() != [d] {
            return Err(Error::shape(
                OP,
                format!(
                    "weight and bias must be ({d},) for input {}, got {} and {}",
                    self.shape(),
                    weight.shape(),
                    bias.shape()
                ),
            ));
        }
        super::float_operands(
            OP,
            &[self, weight, bias],
            "input, weight and bias must share one float dtype",
        )?;
        let (y, saved) = self.storage().layer_norm(weight.storage(), bias.storage(), d, eps)?;
        let (x, w) = (self.detach(), weight.detach()); // shared, not copied
        let (x_shape, p_shape) = (self.shape().clone(), weight.shape().clone());
        Ok(Tensor::from_op(y, self.shape().clone(), OP, &[self, weight, bias], move |g| {
            let (dx, dw, db) =
                g.storage().layer_norm_backward(x.storage(), w.storage(), &saved, d)?;
            Ok(vec![
                Some(Tensor::from_storage(dx, x_shape)),
                Some(Tensor::from_storage(dw, p_shape.clone())),
                Some(Tensor::from_storage(db, p_shape)),
            ])
        }))
    }
}
