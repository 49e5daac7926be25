//! Gradient clipping: by the global norm of all gradients, or element-wise by value.

use crate::Param;
use ferrograd::{Error, Gradients, Result, Tensor};

/// Scales every gradient by `max_norm / total_norm` when the global L2 norm exceeds
/// `max_norm` (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Gradients, params: &[Param], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::value(
            "clip_grad_norm",
            format!("max_norm must be positive, got {max_norm}"),
        ));
    }
    let (with_grad, whole) = laid_out(grads, params);
    let sq: f64 = if whole {
        grads.buckets().iter().map(|b| b.sum_squares()).sum::<Result<f64>>()?
    } else {
        with_grad
            .iter()
            .map(|t| grads.get(t).map_or(Ok(0.0), |g| g.sum_squares()))
            .sum::<Result<f64>>()?
    };
    let norm = sq.sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        scale_laid_out(grads, &with_grad, whole, scale)?;
    }
    Ok(norm)
}

/// The parameters' tensors that have a gradient, and whether those gradients are all the
/// store holds, each in a flat bucket: then a norm or a scaling is one pass over each bucket
/// (absent slots hold zeros).
fn laid_out(grads: &Gradients, params: &[Param]) -> (Vec<Tensor>, bool) {
    let with_grad: Vec<Tensor> =
        params.iter().map(|p| p.get()).filter(|t| grads.get(t).is_some()).collect();
    let whole =
        with_grad.len() == grads.len() && with_grad.iter().all(|t| grads.bucket_range(t).is_some());
    (with_grad, whole)
}

/// Multiplies the gradients of `params` by `factor` in place (the mean over accumulated
/// micro-batches).
pub fn scale_gradients(grads: &mut Gradients, params: &[Param], factor: f64) -> Result<()> {
    let (with_grad, whole) = laid_out(grads, params);
    scale_laid_out(grads, &with_grad, whole, factor)
}

fn scale_laid_out(
    grads: &mut Gradients,
    with_grad: &[Tensor],
    whole: bool,
    scale: f64,
) -> Result<()> {
    if whole {
        return grads.with_buckets_mut(|b| b.iter_mut().try_for_each(|t| t.scale_in_place(scale)));
    }
    for t in with_grad {
        if let Some(g) = grads.get(t) {
            // Scaled as the buckets are (in the gradient's dtype), on a copy.
            let mut scaled = g.clone();
            scaled.scale_in_place(scale)?;
            grads.set(t, scaled);
        }
    }
    Ok(())
}

/// Clamps every gradient element into [−clip, clip].
pub fn clip_grad_value(grads: &mut Gradients, params: &[Param], clip: f64) -> Result<()> {
    if clip.is_nan() || clip <= 0.0 {
        return Err(Error::value("clip_grad_value", format!("clip must be positive, got {clip}")));
    }
    for p in params {
        let t = p.get();
        if let Some(g) = grads.get(&t) {
            let lo = ferrograd::Tensor::full(&[], -clip, g.dtype())?;
            let hi = ferrograd::Tensor::full(&[], clip, g.dtype())?;
            let clamped = g.lt(&lo)?.where_cond(&lo, &g.gt(&hi)?.where_cond(&hi, g)?)?;
            grads.set(&t, clamped);
        }
    }
    Ok(())
}
