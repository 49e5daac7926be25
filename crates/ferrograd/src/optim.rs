//! Optimizer updates as fused ops: one pass over a parameter's weights, gradient and state
//! (SGD with momentum or Nesterov and weight decay, Adam, AdamW), and the global gradient norm
//! and scaling that clipping needs. The optimizers in ferrograd-nn keep configuration and
//! state; the arithmetic is here, in the backend's kernels.

use crate::backend::BackendStorage;
pub use crate::backend::Update;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// One optimizer step of this parameter in place from `grad`, with `slots` (as many as
    /// `rule` names: momentum buffer; Adam's m and v) updated alongside. Memory nothing else
    /// holds is written directly; a shared buffer is copied first, so no other handle sees the
    /// change. The tensor keeps its id.
    ///
    /// ```
    /// use ferrograd::{Tensor, Update};
    /// let mut w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requiring_grad();
    /// let g = Tensor::from_vec(vec![0.5f32, -1.0], &[2]).unwrap();
    /// w.update(&g, &mut [], &Update::Sgd { lr: 0.1, weight_decay: 0.0 }).unwrap();
    /// assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.95, 2.1]);
    /// ```
    pub fn update(&mut self, grad: &Tensor, slots: &mut [Tensor], rule: &Update) -> Result<()> {
        const OP: &str = "update";
        if slots.len() != rule.slots() {
            return Err(Error::value(
                OP,
                format!("{rule:?} keeps {} state slots, got {}", rule.slots(), slots.len()),
            ));
        }
        let fits = |t: &Tensor| t.dims() == self.dims() && t.dtype() == self.dtype();
        let named = std::iter::once(("the gradient".to_string(), grad))
            .chain(slots.iter().enumerate().map(|(i, s)| (format!("state slot {i}"), s)));
        if let Some((what, t)) = named.into_iter().find(|(_, t)| !fits(t)) {
            return Err(Error::shape(
                OP,
                format!(
                    "{what} must be {} {} like the weights, got {} {}",
                    self.dtype(),
                    self.shape(),
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        super::ops::float_dtype(OP, &[self])?;
        let mut state = Vec::with_capacity(slots.len());
        for s in slots.iter_mut() {
            state.push(s.storage_for_update(OP)?);
        }
        self.storage_for_update(OP)?.update(grad.storage(), &mut state, rule)
    }

    /// Σ x² over every element, in f64: the square of the L2 norm.
    pub fn sum_squares(&self) -> Result<f64> {
        super::ops::float_dtype("sum_squares", &[self])?;
        self.storage().sum_squares()
    }

    /// Every element multiplied by `factor`, in place (copied first when shared, as `update`).
    pub fn scale_in_place(&mut self, factor: f64) -> Result<()> {
        super::ops::float_dtype("scale_in_place", &[self])?;
        self.storage_for_update("scale_in_place")?.scale(factor)
    }
}
