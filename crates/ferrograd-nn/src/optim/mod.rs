//! Optimizers (SGD with momentum and Nesterov, Adam, AdamW), learning-rate schedules and
//! gradient clipping. Updates run as one fused pass over each parameter's data.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_grad_value};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};

use crate::Param;
use ferrograd::backend::cpu::{copied, with_wide_vectors, Float};
use ferrograd::{DType, Error, Gradients, Result, Tensor};
use std::mem::MaybeUninit;

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Its state as named tensors (`exp_avg/0.weight`, …) and the step count, for checkpoints.
    fn state(&self) -> (Vec<(String, Tensor)>, u64);
    /// Restores a `state()`; every slot of every parameter must be there with its shape.
    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()>;
}

/// A parameter's state slots (momentum buffers, moment estimates) in the parameter's own dtype,
/// as PyTorch keeps them; empty until the first step touches the parameter.
#[derive(Clone, Default)]
pub(crate) enum SlotValues {
    #[default]
    Empty,
    F32(Vec<Vec<f32>>),
    F64(Vec<Vec<f64>>),
}

impl SlotValues {
    pub fn is_empty(&self) -> bool {
        matches!(self, SlotValues::Empty)
    }
}

/// Per-parameter state slots, updated in place and named for checkpoints
/// (`exp_avg/0.weight`), where they are saved in their own dtype so that a resumed run
/// continues to the bit.
pub(crate) struct Slots {
    pub names: &'static [&'static str],
    /// values[param]: that parameter's slots.
    pub values: Vec<SlotValues>,
}

impl Slots {
    pub fn new(names: &'static [&'static str], params: usize) -> Slots {
        Slots { names, values: vec![SlotValues::Empty; params] }
    }

    pub fn export(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (p, slots) in params.iter().zip(&self.values) {
            let dims = p.get().dims().to_vec();
            let tensors: Vec<Tensor> = match slots {
                SlotValues::Empty => Vec::new(),
                SlotValues::F32(v) => {
                    v.iter().map(|s| Tensor::from_vec(s.clone(), &dims)).collect()
                }
                SlotValues::F64(v) => {
                    v.iter().map(|s| Tensor::from_vec(s.clone(), &dims)).collect()
                }
            }
            .into_iter()
            .map(|t| t.expect("a slot has its parameter's size"))
            .collect();
            for (name, t) in self.names.iter().zip(tensors) {
                out.push((format!("{name}/{}", p.name()), t));
            }
        }
        out
    }

    /// Checks every slot first and changes nothing unless all fit. A slot saved in another
    /// float dtype (f64 state of an f32 parameter, as older checkpoints hold) is converted.
    pub fn import(
        &mut self,
        params: &[Param],
        tensors: &[(String, Tensor)],
        started: bool,
    ) -> Result<()> {
        let mut values = vec![SlotValues::Empty; params.len()];
        for (i, p) in params.iter().enumerate() {
            let p = (p.name(), p.get());
            let mut slots = Vec::new();
            for name in self.names {
                let key = format!("{name}/{}", p.0);
                match tensors.iter().find(|(k, _)| *k == key).map(|(_, t)| t) {
                    Some(t) if t.dims() != p.1.dims() || t.dtype() == DType::I64 => {
                        return Err(Error::shape(
                            "optimizer state",
                            format!(
                                "{key} is {} {}, expected {} {}",
                                t.dtype(),
                                t.shape(),
                                p.1.dtype(),
                                p.1.shape()
                            ),
                        ))
                    }
                    Some(t) => slots.push(t.to_dtype(p.1.dtype())?),
                    None if started => {
                        return Err(Error::value("optimizer state", format!("{key} is missing")))
                    }
                    None => {}
                }
            }
            if slots.len() == self.names.len() {
                values[i] = match p.1.dtype() {
                    DType::F32 => {
                        SlotValues::F32(slots.iter().map(|t| t.to_vec()).collect::<Result<_>>()?)
                    }
                    _ => SlotValues::F64(slots.iter().map(|t| t.to_vec()).collect::<Result<_>>()?),
                };
            }
        }
        self.values = values;
        Ok(())
    }
}

/// A hyperparameter (given in f64) in a parameter's float type.
#[inline(always)]
pub(crate) fn of<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

/// An optimizer's update of one chunk of a parameter: weights `w` updated in place from
/// their gradients `g` and state slots, all slices of one length and the parameter's dtype.
/// Implementations mark `apply` `#[inline(always)]` so that it compiles with wide vectors.
pub(crate) trait Rule<const S: usize>: Sync {
    fn apply<T: Float>(&self, w: &mut [T], g: &[T], slots: [&mut [T]; S]);
}

/// One fused pass over a parameter: the rule on each chunk of elements (across threads),
/// then the new weights set. State slots start at zero.
pub(crate) fn fused_update<const S: usize>(
    param: &Param,
    grad: &Tensor,
    slots: &mut SlotValues,
    rule: &impl Rule<S>,
) -> Result<()> {
    let p = param.get();
    if grad.dims() != p.dims() || grad.dtype() != p.dtype() {
        return Err(Error::shape(
            "optimizer",
            format!(
                "{}: gradient {} {} for a parameter {} {}",
                param.name(),
                grad.dtype(),
                grad.shape(),
                p.dtype(),
                p.shape()
            ),
        ));
    }
    let n = p.numel();
    let new = match (p.dtype(), slots) {
        (DType::F32, slots @ SlotValues::Empty) => {
            *slots = SlotValues::F32(vec![vec![0.0; n]; S]);
            return fused_update(param, grad, slots, rule);
        }
        (DType::F64, slots @ SlotValues::Empty) => {
            *slots = SlotValues::F64(vec![vec![0.0; n]; S]);
            return fused_update(param, grad, slots, rule);
        }
        (DType::F32, SlotValues::F32(s)) => update_chunks(&p, grad, s, rule)?,
        (DType::F64, SlotValues::F64(s)) => update_chunks(&p, grad, s, rule)?,
        (DType::I64, _) => {
            return Err(Error::dtype("optimizer", format!("{} is an integer tensor", param.name())))
        }
        _ => {
            return Err(Error::dtype(
                "optimizer",
                format!("{}: its state has another dtype than {}", param.name(), p.dtype()),
            ))
        }
    };
    param.set(&new)
}

/// The rule over chunks of `CHUNK` elements, in parallel when there are several.
fn update_chunks<T: Float + Send + Sync, const S: usize>(
    p: &Tensor,
    grad: &Tensor,
    slots: &mut [Vec<T>],
    rule: &impl Rule<S>,
) -> Result<Tensor> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let n = p.numel();
    if slots.len() != S || slots.iter().any(|s| s.len() != n) {
        return Err(Error::value("optimizer", "state slots do not fit"));
    }
    // The new values are written chunk by chunk, each chunk copied from the old ones by the
    // task that then updates it (a serial copy of every parameter first left threads idle).
    let old = p.as_slice::<T>("optimizer")?;
    let mut w: Vec<T> = Vec::with_capacity(n);
    let g = grad.as_slice::<T>("optimizer")?;
    // Per chunk: the slot slices of that chunk, split off each slot vector in step.
    let mut rests: Vec<&mut [T]> = slots.iter_mut().map(|v| v.as_mut_slice()).collect();
    let mut chunked: Vec<[&mut [T]; S]> = Vec::with_capacity(n.div_ceil(CHUNK));
    for start in (0..n).step_by(CHUNK) {
        let take = CHUNK.min(n - start);
        let parts: Vec<&mut [T]> = rests
            .iter_mut()
            .map(|r| {
                let (head, tail) = std::mem::take(r).split_at_mut(take);
                *r = tail;
                head
            })
            .collect();
        chunked.push(parts.try_into().unwrap_or_else(|_| unreachable!("S parts")));
    }
    type Piece<'a, 'b, T, const S: usize> =
        (((&'a mut [MaybeUninit<T>], &'a [T]), &'a [T]), &'a mut [&'b mut [T]; S]);
    let body = |(((w, old), g), sl): Piece<T, S>| {
        let w = copied(w, old);
        with_wide_vectors(
            #[inline(always)]
            || rule.apply(w, g, sl.each_mut().map(|s| &mut **s)),
        )
    };
    let new = &mut w.spare_capacity_mut()[..n];
    if n >= 2 * CHUNK {
        let pieces = new.par_chunks_mut(CHUNK).zip(old.par_chunks(CHUNK)).zip(g.par_chunks(CHUNK));
        pieces.zip(chunked.par_iter_mut()).for_each(body);
    } else {
        let pieces = new.chunks_mut(CHUNK).zip(old.chunks(CHUNK)).zip(g.chunks(CHUNK));
        pieces.zip(chunked.iter_mut()).for_each(body);
    }
    // SAFETY: the chunks cover all n elements, and each was copied from the old values.
    unsafe { w.set_len(n) };
    Tensor::from_vec(w, p.dims())
}
