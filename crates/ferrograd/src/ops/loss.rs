//! The softmax family and the losses: cross-entropy (fused log-softmax + NLL) and mean
//! squared error.

use super::float_dtype;
use crate::backend::{around, BackendStorage};
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim("softmax", dim)?;
        float_dtype("softmax", &[self])?;
        let data = self.storage().softmax(around(self.shape(), d), false)?;
        let y = Tensor::from_storage(data, self.shape().clone());
        let yd = y.detach();
        Ok(y.with_history("softmax", &[self], move |g| {
            // dx = y ⊙ (g − Σ g ⊙ y)
            let dot = g.mul(&yd)?.sum(&[d as isize], true)?;
            Ok(vec![Some(yd.mul(&g.sub(&dot)?)?)])
        }))
    }

    /// `x − log Σ exp(x)` along `dim`, computed stably.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim("log_softmax", dim)?;
        float_dtype("log_softmax", &[self])?;
        let data = self.storage().softmax(around(self.shape(), d), true)?;
        let y = Tensor::from_storage(data, self.shape().clone());
        let yd = y.detach();
        Ok(y.with_history("log_softmax", &[self], move |g| {
            // dx = g − softmax(x) Σ g
            let total = g.sum(&[d as isize], true)?;
            Ok(vec![Some(g.sub(&yd.exp()?.mul(&total)?)?)])
        }))
    }

    /// Mean cross-entropy of (N, C) class scores against (N,) i64 class ids, rows whose target
    /// is `ignore_index` left out (PyTorch's `F.cross_entropy`). Fused: one pass forward, one back.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2]).unwrap();
    /// let target = Tensor::from_vec(vec![1i64], &[1]).unwrap();
    /// let loss = logits.cross_entropy(&target, None).unwrap().item().unwrap();
    /// assert!((loss - 2f64.ln()).abs() < 1e-6);
    /// ```
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: Option<i64>) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        if self.rank() != 2 {
            return Err(Error::shape(
                OP,
                format!("scores must be (N, C), got {}; reshape to (-1, C) first", self.shape()),
            ));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        if targets.dims() != [n] {
            return Err(Error::shape(
                OP,
                format!(
                    "targets must be ({n},) for scores {}, got {}",
                    self.shape(),
                    targets.shape()
                ),
            ));
        }
        if c == 0 {
            return Err(Error::shape(OP, "scores have zero classes"));
        }
        let ignore = ignore_index.unwrap_or(i64::MIN);
        let raw = targets.as_slice::<i64>(OP).map_err(|_| {
            Error::dtype(OP, format!("targets must be i64 class ids, got {}", targets.dtype()))
        })?;
        if let Some(&t) = raw.iter().find(|&&t| t != ignore && !(0..c as i64).contains(&t)) {
            return Err(Error::index(OP, format!("target {t} is out of range for {c} classes")));
        }
        let count = raw.iter().filter(|&&t| t != ignore).count();
        if !self.dtype().is_float() {
            return Err(Error::dtype(OP, format!("scores must be float, got {}", self.dtype())));
        }
        let (loss, saved) = self.storage().cross_entropy(targets.storage(), c, ignore)?;
        // Backward recomputes the probabilities from the scores and each row's log-normalizer:
        // forward writes nothing of (N, C) size.
        let scores = self.detach();
        Ok(Tensor::from_op(loss, Shape::scalar(), OP, &[self], move |g| {
            let scale = g.item()? / count.max(1) as f64;
            let data = scores.storage().cross_entropy_backward(&saved, scale)?;
            Ok(vec![Some(Tensor::from_storage(data, scores.shape().clone()))])
        }))
    }

    /// Mean of `(self − target)²` over every element.
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(Error::shape(
                "mse_loss",
                format!(
                    "prediction {} and target {} must have one shape",
                    self.shape(),
                    target.shape()
                ),
            ));
        }
        let diff = self.sub(target)?;
        diff.mul(&diff)?.mean_all()
    }
}
