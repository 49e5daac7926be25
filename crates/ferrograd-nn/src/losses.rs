//! Losses of the lecture's chapters: cross-entropy (with label smoothing), squared error,
//! logistic (binary cross-entropy with logits) and hinge. Each returns the mean over examples.

use ferrograd::{DType, Error, Result, Tensor};

/// Cross-entropy of (N, C) scores against (N,) class ids, PyTorch's `F.cross_entropy`:
/// with `label_smoothing` ε the target puts 1−ε on the class and ε/C on every class; rows
/// whose target is `ignore_index` are left out.
pub fn cross_entropy(
    scores: &Tensor,
    targets: &Tensor,
    label_smoothing: f64,
    ignore_index: Option<i64>,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::value(
            "cross_entropy",
            format!("label smoothing must be in [0, 1], got {label_smoothing}"),
        ));
    }
    let nll = scores.cross_entropy(targets, ignore_index)?; // fused, validates shapes and ids
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    // ε · mean over kept rows of (−mean_c log p_c), composed.
    let keep = match ignore_index {
        Some(i) => targets.ne(&Tensor::scalar(i))?.to_dtype(scores.dtype())?,
        None => Tensor::ones(targets.dims(), scores.dtype())?,
    };
    let kept = keep.sum_all()?.item()?.max(1.0);
    let uniform = scores
        .log_softmax(-1)?
        .mean(&[-1], false)?
        .neg()?
        .mul(&keep)?
        .sum_all()?
        .mul_scalar(1.0 / kept)?;
    nll.mul_scalar(1.0 - label_smoothing)?.add(&uniform.mul_scalar(label_smoothing)?)
}

/// Mean squared error.
pub fn mse(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    prediction.mse_loss(target)
}

/// Binary cross-entropy of scores (logits) against 0/1 targets of the same shape, computed
/// stably: `max(x, 0) − x·y + log(1 + e^{−|x|})`.
pub fn binary_cross_entropy_with_logits(scores: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape("binary_cross_entropy_with_logits", scores, targets)?;
    let targets = targets.to_dtype(scores.dtype())?;
    let softplus = scores.abs()?.neg()?.exp()?.add_scalar(1.0)?.log()?;
    scores.relu()?.sub(&scores.mul(&targets)?)?.add(&softplus)?.mean_all()
}

/// Hinge loss `max(0, 1 − y·score)` for labels y ∈ {−1, +1}, the lecture's margin loss.
pub fn hinge(scores: &Tensor, labels: &Tensor) -> Result<Tensor> {
    same_shape("hinge", scores, labels)?;
    let y = labels.to_dtype(DType::F64)?;
    if y.to_vec::<f64>()?.iter().any(|&v| v != 1.0 && v != -1.0) {
        return Err(Error::value("hinge", "labels must be −1 or +1"));
    }
    scores.mul(&y.to_dtype(scores.dtype())?)?.neg()?.add_scalar(1.0)?.relu()?.mean_all()
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!("scores {} and targets {} must have one shape", a.shape(), b.shape()),
        ));
    }
    Ok(())
}

/// The fraction of rows whose highest score is the label (no graph is recorded).
pub fn accuracy(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    let _g = ferrograd::no_grad();
    scores.argmax(-1, false)?.eq(labels)?.to_dtype(DType::F64)?.mean_all()?.item()
}
