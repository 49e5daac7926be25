//! The softmax family and the losses: cross-entropy (fused log-softmax + NLL) and mean
//! squared error.

use super::{float_map, float_map2};
use crate::backend::cpu::{self, Float};
use crate::storage::CpuStorage;
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim("softmax", dim)?;
        let (outer, n, inner) = self.shape().split_at_dim(d);
        let data = float_map!("softmax", self.cpu("softmax")?, |v| cpu::softmax_dim(
            v, outer, n, inner, false
        ));
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
        let (outer, n, inner) = self.shape().split_at_dim(d);
        let data = float_map!("log_softmax", self.cpu("log_softmax")?, |v| cpu::softmax_dim(
            v, outer, n, inner, true
        ));
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
        let kept = raw
            .iter()
            .map(|&t| match t {
                t if t == ignore => Ok(None),
                t if (0..c as i64).contains(&t) => Ok(Some(t as usize)),
                t => Err(Error::index(OP, format!("target {t} is out of range for {c} classes"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let count = kept.iter().filter(|k| k.is_some()).count();
        let (loss, lse) = match self.cpu(OP)? {
            CpuStorage::F32(v) => {
                let (l, lse) = nll_forward(v, c, &kept, count);
                (CpuStorage::F32(vec![l]), CpuStorage::F32(lse))
            }
            CpuStorage::F64(v) => {
                let (l, lse) = nll_forward(v, c, &kept, count);
                (CpuStorage::F64(vec![l]), CpuStorage::F64(lse))
            }
            CpuStorage::I64(_) => return Err(Error::dtype(OP, "scores must be float, got i64")),
        };
        // Backward recomputes the probabilities from the scores and each row's log-normalizer:
        // forward writes nothing of (N, C) size.
        let (scores, lse) = (self.detach(), Tensor::from_storage(lse, Shape::new(&[n])?));
        Ok(Tensor::from_op(loss, Shape::scalar(), OP, &[self], move |g| {
            let scale = g.item()? / count.max(1) as f64;
            let data = float_map2!(OP, scores.cpu(OP)?, lse.cpu(OP)?, |x, l| {
                nll_backward(x, l, c, &kept, scale)
            });
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

/// Mean negative log-likelihood over kept rows, and each row's log-normalizer
/// `ln Σ exp(x)`, which backward needs.
fn nll_forward<T: Float + Send + Sync>(
    x: &[T],
    c: usize,
    kept: &[Option<usize>],
    count: usize,
) -> (T, Vec<T>) {
    let lse = cpu::log_sum_exp_rows(x, c);
    let total: f64 = kept
        .iter()
        .enumerate()
        .filter_map(|(r, k)| k.map(|t| (x[r * c + t] - lse[r]).to_f64().unwrap_or(0.0)))
        .sum();
    // No kept rows gives NaN, as in PyTorch (0/0).
    let mean = if count == 0 { f64::NAN } else { -total / count as f64 };
    (T::from(mean).unwrap_or(T::nan()), lse)
}

/// `scale · (softmax − onehot)` for kept rows, zero for ignored ones; the softmax from the
/// scores `x` and their rows' log-normalizers.
fn nll_backward<T: Float + Send + Sync>(
    x: &[T],
    lse: &[T],
    c: usize,
    kept: &[Option<usize>],
    scale: f64,
) -> Vec<T> {
    let s = T::from(scale).unwrap_or(T::zero());
    let row = |r: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        let (row, l) = (&x[r * c..(r + 1) * c], lse[r]);
        match kept[r] {
            Some(t) => {
                // Zipped slices (no bounds tests) with wide vectors: the exponentials vectorize.
                cpu::with_wide_vectors(
                    #[inline(always)]
                    || {
                        out.iter_mut().zip(row).for_each(|(o, &v)| {
                            o.write((v - l).fast_exp() * s);
                        })
                    },
                );
                out[t].write((row[t] - l).fast_exp() * s - s);
            }
            None => out.iter_mut().for_each(|o| {
                o.write(T::zero());
            }),
        }
    };
    // SAFETY: `row` writes every element of its row, kept or not.
    unsafe { cpu::rows_written(kept.len(), c, row) }
}
