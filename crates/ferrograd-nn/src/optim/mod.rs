//! Optimizers (SGD with momentum and Nesterov, Adam, AdamW), learning-rate schedules and
//! gradient clipping: configuration and state here, the updates fused ops of core.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_grad_value, scale_gradients};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};

use crate::Param;
use ferrograd::{DType, Error, Gradients, Result, Tensor};
use std::ops::Range;

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    /// Whether [`Optimizer::step_shard`] and [`Optimizer::state_mut`] are implemented: the
    /// rule updates each element on its own, so a data-parallel trainer may shard the step.
    fn shardable(&self) -> bool {
        false
    }
    /// One rank's share of a sharded step: only the elements `shard` gives of each flat
    /// gradient bucket are updated (`grads` holds the global gradient there only) and the
    /// trainer then gathers every rank's share. State slots are still made for every parameter
    /// with a gradient, so that all ranks hold the same ones. Called only when `shardable`.
    fn step_shard(&mut self, grads: &Gradients, shard: &Shard) -> Result<()> {
        let _ = shard;
        self.step(grads)
    }
    /// The state as in [`Optimizer::state`], to rewrite in place (a sharded step's state
    /// gathered from the ranks). Needed when `shardable`.
    fn state_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Its state as named tensors (`exp_avg/0.weight`, …) and the step count, for checkpoints.
    fn state(&self) -> (Vec<(String, Tensor)>, u64);
    /// Restores a `state()`: each parameter with state has all its slots there, in its shape
    /// (one that never had a gradient may have none).
    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()>;
}

/// The elements of each flat gradient bucket that one rank updates in a sharded step
/// ([`Optimizer::step_shard`]): `ranges[b]` of bucket `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub ranges: Vec<Range<usize>>,
}

impl Shard {
    /// Which of `t`'s elements the shard holds (possibly none); `None` when `t` has no place
    /// in the buckets, and so is updated whole.
    pub fn part_of(&self, grads: &Gradients, t: &Tensor) -> Option<Range<usize>> {
        let (b, r) = grads.bucket_range(t)?;
        let common = overlap(&r, self.ranges.get(b)?);
        Some(common.start - r.start..common.end - r.start)
    }
}

/// The elements two ranges share (empty, at `a.start`, when none).
pub(crate) fn overlap(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    let (lo, hi) = (a.start.max(b.start), a.end.min(b.end));
    if lo < hi {
        lo..hi
    } else {
        a.start..a.start
    }
}

/// Per-parameter state slots (momentum buffers, moment estimates) as tensors in the
/// parameter's own dtype and device, as PyTorch keeps them, updated in place by the fused
/// update ops of core; named for checkpoints (`exp_avg/0.weight`), where they are saved in
/// their own dtype so that a resumed run continues to the bit.
pub(crate) struct Slots {
    pub names: &'static [&'static str],
    /// values[param]: that parameter's slots, empty until the first step touches it.
    pub values: Vec<Vec<Tensor>>,
}

impl Slots {
    pub fn new(names: &'static [&'static str], params: usize) -> Slots {
        Slots { names, values: vec![Vec::new(); params] }
    }

    pub fn export(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (p, slots) in params.iter().zip(&self.values) {
            for (name, t) in self.names.iter().zip(slots) {
                out.push((format!("{name}/{}", p.name()), t.clone()));
            }
        }
        out
    }

    pub fn export_mut(&mut self, params: &[Param]) -> Vec<(String, &mut Tensor)> {
        let mut out = Vec::new();
        for (p, slots) in params.iter().zip(&mut self.values) {
            for (name, t) in self.names.iter().zip(slots) {
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
        let mut values = vec![Vec::new(); params.len()];
        for (i, p) in params.iter().enumerate() {
            let p = (p.name(), p.get());
            let (mut slots, mut missing) = (Vec::new(), Vec::new());
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
                    Some(t) => slots.push(t.to_dtype(p.1.dtype())?.detach()),
                    None => missing.push(key),
                }
            }
            // A parameter that never had a gradient has no state; one with only some of its
            // slots comes from a damaged file.
            match (slots.len(), missing.first()) {
                (0, _) => {}
                (_, None) => values[i] = slots,
                (_, Some(key)) => {
                    return Err(Error::value("optimizer state", format!("{key} is missing")))
                }
            }
        }
        if started && !params.is_empty() && values.iter().all(Vec::is_empty) {
            let names = self.names.join(", ");
            return Err(Error::value(
                "optimizer state",
                format!("steps were taken, but no parameter's state ({names}) is there"),
            ));
        }
        self.values = values;
        Ok(())
    }
}

/// One fused update of `param` from `grad` with its `slots`, which start at zero: of the
/// elements `part` only when given.
pub(crate) fn update(
    param: &Param,
    grad: &Tensor,
    slots: &mut Vec<Tensor>,
    rule: &ferrograd::Update,
    part: Option<Range<usize>>,
) -> Result<()> {
    if slots.is_empty() && rule.slots() > 0 {
        let p = param.get();
        *slots = (0..rule.slots()).map(|_| p.zeros_like()).collect::<Result<_>>()?;
    }
    match part {
        None => param.update(grad, slots, rule),
        Some(r) => {
            let grad = grad.reshape(&[grad.numel()])?.narrow(0, r.start, r.len())?;
            param.update_part(r.start, &grad, slots, rule)
        }
    }
}
