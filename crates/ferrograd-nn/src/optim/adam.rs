//! Adam (L2 weight decay folded into the gradient) and AdamW (decoupled weight decay), as
//! PyTorch's `torch.optim.Adam` and `torch.optim.AdamW` compute them.

use super::{update, Optimizer, Shard, Slots};
use crate::Param;
use ferrograd::{Error, Gradients, Result, Tensor, Update};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: decay the weights directly instead of through the gradient.
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam` defaults with learning rate `lr`.
    pub fn adam(lr: f64) -> AdamConfig {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
    /// `torch.optim.AdamW` defaults (weight decay 0.01) with learning rate `lr`.
    pub fn adamw(lr: f64) -> AdamConfig {
        AdamConfig { weight_decay: 0.01, decoupled: true, ..AdamConfig::adam(lr) }
    }
}

pub struct Adam {
    params: Vec<Param>,
    config: AdamConfig,
    slots: Slots,
    steps: u64,
}

impl Adam {
    pub fn new(params: Vec<Param>, config: AdamConfig) -> Result<Adam> {
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        let ok = finite(config.lr)
            && (0.0..1.0).contains(&config.beta1)
            && (0.0..1.0).contains(&config.beta2)
            && finite(config.eps)
            && finite(config.weight_decay);
        if !ok {
            return Err(Error::value(
                "Adam",
                format!(
                    "needs finite lr, eps, weight decay ≥ 0 and betas in [0, 1), got {config:?}"
                ),
            ));
        }
        let slots = Slots::new(&["exp_avg", "exp_avg_sq"], params.len());
        Ok(Adam { params, config, slots, steps: 0 })
    }
}

impl Adam {
    /// A step of every element, or of those of `shard`.
    fn step_of(&mut self, grads: &Gradients, shard: Option<&Shard>) -> Result<()> {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, decoupled } = self.config;
        self.steps += 1;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        // PyTorch's step · m / (√v / √c2 + eps), with one division instead of two.
        let c2s = c2.sqrt();
        let (scale, eps_c2s) = (lr / c1 * c2s, eps * c2s);
        // AdamW decays the weights first; Adam adds the decay to the gradient instead.
        let (decay, l2) =
            if decoupled { (1.0 - lr * weight_decay, 0.0) } else { (1.0, weight_decay) };
        let rule = Update::Adam { beta1, beta2, scale, eps_c2s, decay, l2 };
        // The parameters side by side, not one after another: a parameter of one chunk (each
        // of W7's 128×128 weights) was updated by one thread while the others waited.
        self.params.par_iter().zip(self.slots.values.par_iter_mut()).try_for_each(|(p, slots)| {
            // No handle to the parameter alive through the update: it would make it copy
            // instead of writing in place.
            let t = p.get();
            let (g, part) = (grads.get(&t), shard.and_then(|s| s.part_of(grads, &t)));
            drop(t);
            match g {
                Some(g) => update(p, g, slots, &rule, part),
                None => Ok(()),
            }
        })
    }
}

impl Optimizer for Adam {
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
        self.slots.import(&self.params, tensors, steps > 0)?;
        self.steps = steps;
        Ok(())
    }
}
