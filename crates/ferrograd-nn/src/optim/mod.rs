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
/// (zero-initialized on first use) updated in place and the new weights written back.
pub(crate) fn fused_update<const S: usize>(
    param: &Param,
    grad: &Tensor,
    slots: &mut Vec<Vec<f64>>,
    update: impl Fn(f64, f64, &mut [f64; S]) -> f64,
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
    if slots.is_empty() {
        *slots = vec![vec![0.0; p.numel()]; S];
    }
    let slots: &mut [Vec<f64>; S] = slots
        .as_mut_slice()
        .try_into()
        .map_err(|_| Error::value("optimizer", "state slots do not fit"))?;
    macro_rules! run {
        ($t:ty) => {{
            let (w, g) = (p.as_slice::<$t>("optimizer")?, grad.as_slice::<$t>("optimizer")?);
            let mut out = Vec::with_capacity(w.len());
            for i in 0..w.len() {
                let mut s: [f64; S] = std::array::from_fn(|k| slots[k][i]);
                out.push(update(w[i] as f64, g[i] as f64, &mut s) as $t);
                for k in 0..S {
                    slots[k][i] = s[k];
                }
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
