//! Learning-rate schedules: the rate to use at each step, from the base rate.

/// How the learning rate moves over training.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Half a cosine from the base rate down to `min_lr` over `total` steps, then flat.
    Cosine {
        total: u64,
        min_lr: f64,
    },
    /// Rise linearly from 0 over `steps`, then follow `then` (counted from the end of warm-up).
    Warmup {
        steps: u64,
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// The learning rate at `step` (0-based) for base rate `base`.
    ///
    /// ```
    /// use ferrograd_nn::optim::Schedule;
    /// let s = Schedule::Warmup { steps: 10, then: Box::new(Schedule::Cosine { total: 100, min_lr: 0.0 }) };
    /// assert_eq!(s.lr(1.0, 4), 0.5);
    /// assert_eq!(s.lr(1.0, 10), 1.0);
    /// assert!(s.lr(1.0, 110).abs() < 1e-12);
    /// ```
    pub fn lr(&self, base: f64, step: u64) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((step / (*every).max(1)) as i32),
            Schedule::Cosine { total, min_lr } => {
                let progress = step.min(*total) as f64 / (*total).max(1) as f64;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Warmup { steps, then } => {
                if step < *steps {
                    base * (step + 1) as f64 / *steps as f64
                } else {
                    then.lr(base, step - steps)
                }
            }
        }
    }
}
