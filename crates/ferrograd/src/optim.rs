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
        if grad.dims() != self.dims() {
            return Err(Error::shape(
                "update",
                format!(
                    "the gradient must be {} {} like the weights, got {} {}",
                    self.dtype(),
                    self.shape(),
                    grad.dtype(),
                    grad.shape()
                ),
            ));
        }
        self.update_part(0, grad, slots, rule)
    }

    /// [`Tensor::update`] of elements `start..start + grad.numel()` only (in row-major order;
    /// `grad` of any shape), the rest of the weights and of the `slots`, which are as large as
    /// the weights, unchanged: one rank's share of a sharded optimizer step.
    ///
    /// ```
    /// use ferrograd::{Tensor, Update};
    /// let mut w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    /// let g = Tensor::from_vec(vec![10.0f32], &[1]).unwrap();
    /// w.update_part(1, &g, &mut [], &Update::Sgd { lr: 0.1, weight_decay: 0.0 }).unwrap();
    /// assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0, 1.0, 3.0]);
    /// ```
    pub fn update_part(
        &mut self,
        start: usize,
        grad: &Tensor,
        slots: &mut [Tensor],
        rule: &Update,
    ) -> Result<()> {
        const OP: &str = "update";
        if slots.len() != rule.slots() {
            return Err(Error::value(
                OP,
                format!("{rule:?} keeps {} state slots, got {}", rule.slots(), slots.len()),
            ));
        }
        if start.checked_add(grad.numel()).is_none_or(|end| end > self.numel())
            || grad.dtype() != self.dtype()
        {
            return Err(Error::shape(
                OP,
                format!(
                    "a gradient of {} {} from element {start} does not fit weights of {} {}",
                    grad.dtype(),
                    grad.shape(),
                    self.dtype(),
                    self.shape()
                ),
            ));
        }
        let fits = |t: &Tensor| t.dims() == self.dims() && t.dtype() == self.dtype();
        if let Some((i, t)) = slots.iter().enumerate().find(|(_, t)| !fits(t)) {
            return Err(Error::shape(
                OP,
                format!(
                    "state slot {i} must be {} {} like the weights, got {} {}",
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
        self.storage_for_update(OP)?.update(start, grad.storage(), &mut state, rule)
    }

    /// Writes `values` (of any shape, this tensor's dtype) over elements `start..` in
    /// row-major order, in place, as [`Tensor::update`] writes: a shared buffer is copied
    /// first, and the tensor keeps its id.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let mut t = Tensor::zeros(&[2, 2], ferrograd::DType::F32).unwrap();
    /// t.write_at(1, &Tensor::from_vec(vec![5.0f32, 6.0], &[2]).unwrap()).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.0, 5.0, 6.0, 0.0]);
    /// ```
    pub fn write_at(&mut self, start: usize, values: &Tensor) -> Result<()> {
        const OP: &str = "write_at";
        if values.dtype() != self.dtype()
            || start.checked_add(values.numel()).is_none_or(|end| end > self.numel())
        {
            return Err(Error::shape(
                OP,
                format!(
                    "{} {} from element {start} does not fit {} {}",
                    values.dtype(),
                    values.shape(),
                    self.dtype(),
                    self.shape()
                ),
            ));
        }
        self.storage_for_update(OP)?.write_at(start, values.storage(), false)
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
