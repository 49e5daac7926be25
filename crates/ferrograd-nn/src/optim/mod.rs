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
use ferrograd::{DType, Error, Gradients, Result, Tensor};

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

/// Per-parameter state slots (momentum buffers, moment estimates), kept in f64 and updated in
/// place; named for checkpoints (`exp_avg/0.weight`), where they are saved in f64 so that a
/// resumed run continues to the bit.
pub(crate) struct Slots {
    pub names: &'static [&'static str],
    /// values[param][slot]; empty until the first step touches the parameter.
    pub values: Vec<Vec<Vec<f64>>>,
}

impl Slots {
    pub fn new(names: &'static [&'static str], params: usize) -> Slots {
        Slots { names, values: vec![Vec::new(); params] }
    }

    pub fn export(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (p, slots) in params.iter().zip(&self.values) {
            for (name, v) in self.names.iter().zip(slots) {
                let t = Tensor::from_vec(v.clone(), p.get().dims())
                    .expect("a slot has its parameter's size");
                out.push((format!("{name}/{}", p.name()), t));
            }
        }
        out
    }

    /// Checks every slot first and changes nothing unless all fit.
    pub fn import(
        &mut self,
        params: &[Param],
        tensors: &[(String, Tensor)],
        started: bool,
    ) -> Result<()> {
        let mut values = vec![Vec::new(); params.len()];
        for (i, p) in params.iter().enumerate() {
            let mut slots = Vec::new();
            for name in self.names {
                let key = format!("{name}/{}", p.name());
                match tensors.iter().find(|(k, _)| *k == key).map(|(_, t)| t) {
                    Some(t) if t.dims() != p.get().dims() || t.dtype() != DType::F64 => {
                        return Err(Error::shape(
                            "optimizer state",
                            format!(
                                "{key} is {} {}, expected f64 {}",
                                t.dtype(),
                                t.shape(),
                                p.get().shape()
                            ),
                        ))
                    }
                    Some(t) => slots.push(t.to_vec::<f64>()?),
                    None if started => {
                        return Err(Error::value("optimizer state", format!("{key} is missing")))
                    }
                    None => {}
                }
            }
            if slots.len() == self.names.len() {
                values[i] = slots;
            }
        }
        self.values = values;
        Ok(())
    }
}

/// One fused pass over a parameter: `update(w, g, slots)` for every element, with the slots
/// (zero-initialized on first use) updated in place and the new weights written back. Runs in
/// chunks across threads; within a chunk the loop has no bounds checks left, so it vectorizes.
pub(crate) fn fused_update<const S: usize>(
    param: &Param,
    grad: &Tensor,
    slots: &mut Vec<Vec<f64>>,
    update: impl Fn(f64, f64, &mut [f64; S]) -> f64 + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let p = param.get();
    if grad.dims() != p.dims() || grad.dtype() != p.dtype() {
        return Err(Error::shape(
            "optimizer",
            format!("{}: gradient {} {} for a parameter {} {}", param.name(), grad.dtype(), grad.shape(), p.dtype(), p.shape()),
        ));
    }
    let n = p.numel();
    if slots.is_empty() {
        *slots = vec![vec![0.0; n]; S];
    }
    let slots: &mut [Vec<f64>; S] = slots.as_mut_slice().try_into().map_err(|_| Error::value("optimizer", "state slots do not fit"))?;
    // Per chunk: the slot slices of that chunk, split off each slot vector in step.
    let mut chunked: Vec<[&mut [f64]; S]> = Vec::with_capacity(n.div_ceil(CHUNK));
    {
        let mut rests: Vec<&mut [f64]> = slots.iter_mut().map(|v| v.as_mut_slice()).collect();
        while rests.first().is_some_and(|r| !r.is_empty()) || (S == 0 && chunked.len() * CHUNK < n) {
            let mut parts = Vec::with_capacity(S);
            for r in rests.iter_mut() {
                let take = r.len().min(CHUNK);
                let (head, tail) = std::mem::take(r).split_at_mut(take);
                parts.push(head);
                *r = tail;
            }
            chunked.push(parts.try_into().unwrap_or_else(|_| unreachable!("S parts")));
        }
    }
    macro_rules! run {
        ($t:ty) => {{
            let (w, g) = (p.as_slice::<$t>("optimizer")?, grad.as_slice::<$t>("optimizer")?);
            let mut out: Vec<$t> = vec![0.0; n];
            let body = |((o, (w, g)), sl): ((&mut [$t], (&[$t], &[$t])), &mut [&mut [f64]; S])| {
                let len = o.len();
                assert!(w.len() == len && g.len() == len && sl.iter().all(|s| s.len() == len));
                for i in 0..len {
                    let mut s: [f64; S] = std::array::from_fn(|k| sl[k][i]);
                    o[i] = update(w[i] as f64, g[i] as f64, &mut s) as $t;
                    for k in 0..S {
                        sl[k][i] = s[k];
                    }
                }
            };
            let pieces = out.chunks_mut(CHUNK).zip(w.chunks(CHUNK).zip(g.chunks(CHUNK)));
            if n >= 2 * CHUNK {
                out.par_chunks_mut(CHUNK).zip(w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).zip(chunked.par_iter_mut()).for_each(body);
            } else {
                pieces.zip(chunked.iter_mut()).for_each(body);
            }
            Tensor::from_vec(out, p.dims())?
        }};
    }
    let new = match p.dtype() {
        DType::F32 => run!(f32),
        DType::F64 => run!(f64),
        DType::I64 => return Err(Error::dtype("optimizer", format!("{} is an integer tensor", param.name()))),
    };
    param.set(&new)
}
