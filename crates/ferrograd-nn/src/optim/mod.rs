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
use ferrograd::{Error, Gradients, Result, Tensor};

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

/// Per-parameter state slots (momentum buffers, moment estimates), named for checkpoints.
pub(crate) struct Slots {
    pub names: &'static [&'static str],
    /// values[param][slot]; `None` until the first step touches it.
    pub values: Vec<Vec<Option<Tensor>>>,
}

impl Slots {
    pub fn new(names: &'static [&'static str], params: usize) -> Slots {
        Slots { names, values: vec![vec![None; names.len()]; params] }
    }

    pub fn export(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (p, slots) in params.iter().zip(&self.values) {
            for (name, v) in self.names.iter().zip(slots) {
                if let Some(v) = v {
                    out.push((format!("{name}/{}", p.name()), v.clone()));
                }
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
        let mut values = self.values.clone();
        for (i, p) in params.iter().enumerate() {
            for (j, name) in self.names.iter().enumerate() {
                let key = format!("{name}/{}", p.name());
                let found = tensors.iter().find(|(k, _)| *k == key).map(|(_, t)| t.clone());
                match found {
                    Some(t) if t.dims() != p.get().dims() || t.dtype() != p.get().dtype() => {
                        return Err(Error::shape(
                            "optimizer state",
                            format!(
                                "{key} is {} {}, the parameter is {} {}",
                                t.dtype(),
                                t.shape(),
                                p.get().dtype(),
                                p.get().shape()
                            ),
                        ))
                    }
                    None if started => {
                        return Err(Error::value("optimizer state", format!("{key} is missing")));
                    }
                    t => values[i][j] = t,
                }
            }
        }
        self.values = values;
        Ok(())
    }
}

/// Runs `update(p, g, slots…)` element-wise in f64 over one parameter's data and writes the
/// results back in the parameter's dtype: the fused kernel every optimizer uses.
pub(crate) fn fused_update(
    param: &Param,
    grad: &Tensor,
    slots: &mut [Option<Tensor>],
    update: impl Fn(&mut f64, f64, &mut [f64]),
) -> Result<()> {
    let p = param.get();
    if grad.dims() != p.dims() {
        return Err(Error::shape(
            "optimizer",
            format!("{}: gradient {} for a parameter {}", param.name(), grad.shape(), p.shape()),
        ));
    }
    let mut values = p.to_vec_f64()?;
    let g = grad.to_vec_f64()?;
    let mut state: Vec<Vec<f64>> = slots
        .iter()
        .map(|s| s.as_ref().map_or(Ok(vec![0.0; values.len()]), |t| t.to_vec_f64()))
        .collect::<Result<_>>()?;
    let mut scratch = vec![0.0; state.len()];
    for i in 0..values.len() {
        for (k, s) in state.iter().enumerate() {
            scratch[k] = s[i];
        }
        update(&mut values[i], g[i], &mut scratch);
        for (k, s) in state.iter_mut().enumerate() {
            s[i] = scratch[k];
        }
    }
    let dtype = p.dtype();
    param.set(&Tensor::from_vec(values, p.dims())?.to_dtype(dtype)?)?;
    for (slot, s) in slots.iter_mut().zip(state) {
        *slot = Some(Tensor::from_vec(s, p.dims())?.to_dtype(dtype)?);
    }
    Ok(())
}
