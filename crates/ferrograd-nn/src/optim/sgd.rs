//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay (PyTorch's
//! `torch.optim.SGD`).

use super::{update, Optimizer, Shard, Slots};
use crate::Param;
use ferrograd::{Error, Gradients, Result, Tensor, Update};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.01, momentum: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

pub struct Sgd {
    params: Vec<Param>,
    config: SgdConfig,
    slots: Slots,
    steps: u64,
}

impl Sgd {
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Result<Sgd> {
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !(finite(config.lr) && finite(config.momentum) && finite(config.weight_decay)) {
            return Err(Error::value(
                "Sgd",
                format!("lr, momentum and weight decay must be finite and ≥ 0, got {config:?}"),
            ));
        }
        if config.nesterov && config.momentum == 0.0 {
            return Err(Error::value("Sgd", "Nesterov momentum needs a momentum > 0"));
        }
        let slots = Slots::new(&["momentum_buffer"], params.len());
        Ok(Sgd { params, config, slots, steps: 0 })
    }
}

impl Sgd {
    /// A step of every element, or of those of `shard`.
    fn step_of(&mut self, grads: &Gradients, shard: Option<&Shard>) -> Result<()> {
        let SgdConfig { lr, momentum, nesterov, weight_decay } = self.config;
        for (p, slots) in self.params.iter().zip(self.slots.values.iter_mut()) {
            // No handle to the parameter alive through the update: it would make it copy
            // instead of writing in place.
            let t = p.get();
            let (g, part) = (grads.get(&t), shard.and_then(|s| s.part_of(grads, &t)));
            drop(t);
            let Some(g) = g else { continue };
            let rule = if momentum == 0.0 {
                // Plain SGD keeps no state.
                Update::Sgd { lr, weight_decay }
            } else {
                let first = slots.is_empty();
                Update::Momentum { lr, momentum, nesterov, weight_decay, first }
            };
            update(p, g, slots, &rule, part)?;
        }
        self.steps += 1;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        self.step_of(grads, None)
    }
    fn shardable(&self) -> bool {
        true
    }
    fn step_shard(&mut self, grads: &Gradients, shard: &Shard) -> Result<()> {
        self.step_of(grads, Some(shard))
    }
    fn state_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.slots.export_mut(&self.params)
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
    fn steps(&self) -> u64 {
        self.steps
    }
    fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        (self.slots.export(&self.params), self.steps)
    }
    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()> {
        self.slots.import(&self.params, tensors, steps > 0 && self.config.momentum != 0.0)?;
        self.steps = steps;
        Ok(())
    }
}
