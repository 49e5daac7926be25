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

/// One fused pass over a parameter: `update(w, g, slots)` on each chunk of elements — weights
/// (updated in place), gradients and the state slots (zero-initialized on first use), all as
/// f64 slices of one length so the optimizer's loop vectorizes — then the new weights written
/// back in the parameter's dtype. Chunks run across threads.
pub(crate) fn fused_update<const S: usize>(
    param: &Param,
    grad: &Tensor,
    slots: &mut Vec<Vec<f64>>,
    update: impl Fn(&mut [f64], &[f64], [&mut [f64]; S]) + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
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
    if slots.is_empty() {
        *slots = vec![vec![0.0; n]; S];
    }
    let slots: &mut [Vec<f64>; S] = slots
        .as_mut_slice()
        .try_into()
        .map_err(|_| Error::value("optimizer", "state slots do not fit"))?;
    // Per chunk: the slot slices of that chunk, split off each slot vector in step.
    let mut chunked: Vec<[&mut [f64]; S]> = Vec::with_capacity(n.div_ceil(CHUNK));
    {
        let mut rests: Vec<&mut [f64]> = slots.iter_mut().map(|v| v.as_mut_slice()).collect();
        while rests.first().is_some_and(|r| !r.is_empty()) || (S == 0 && chunked.len() * CHUNK < n)
        {
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
                let mut wf: Vec<f64> = w.iter().map(|&x| x as f64).collect();
                let gf: Vec<f64> = g.iter().map(|&x| x as f64).collect();
                with_wide_vectors(|| update(&mut wf, &gf, sl.each_mut().map(|s| &mut **s)));
                o.iter_mut().zip(&wf).for_each(|(o, &x)| *o = x as $t);
            };
            let pieces = out.chunks_mut(CHUNK).zip(w.chunks(CHUNK).zip(g.chunks(CHUNK)));
            if n >= 2 * CHUNK {
                out.par_chunks_mut(CHUNK)
                    .zip(w.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .zip(chunked.par_iter_mut())
                    .for_each(body);
            } else {
                pieces.zip(chunked.iter_mut()).for_each(body);
            }
            Tensor::from_vec(out, p.dims())?
        }};
    }
    let new = match p.dtype() {
        DType::F32 => run!(f32),
        DType::F64 => run!(f64),
        DType::I64 => {
            return Err(Error::dtype("optimizer", format!("{} is an integer tensor", param.name())))
        }
    };
    param.set(&new)
}

/// Runs `f` compiled for AVX2 and FMA when the processor has them (the crate is built for the
/// x86-64 baseline, whose 2-lane vectors make the optimizers' square roots and divisions slow).
#[inline(always)]
fn with_wide_vectors<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this processor.
            return unsafe { wide(f) };
        }
    }
    f()
}
