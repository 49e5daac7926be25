//! A seeded random generator: the same seed gives the same numbers on every machine.

use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Explicit, seedable randomness for initialization, sampling, dropout and shuffling.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    inner: Xoshiro256PlusPlus,
    /// Box–Muller yields normals in pairs; the second waits here.
    spare_normal: Option<f64>,
}

impl Rng {
    pub fn seed(seed: u64) -> Rng {
        Rng { inner: Xoshiro256PlusPlus::seed_from_u64(seed), spare_normal: None }
    }
    /// The generator's whole state as text, to save in a checkpoint.
    pub fn state(&self) -> String {
        serde_json::to_string(self).expect("the state is plain numbers")
    }
    /// A generator from a saved `state()`; it continues exactly where that one stopped.
    pub fn from_state(state: &str) -> crate::Result<Rng> {
        serde_json::from_str(state).map_err(|e| {
            crate::Error::value("Rng::from_state", format!("not a saved generator state: {e}"))
        })
    }
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal, by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: log is finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }
    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let (mut a, mut b) = (Rng::seed(7), Rng::seed(7));
        let xs: Vec<f64> = (0..5).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::seed(8).normal(), xs[0]);
    }

    #[test]
    fn saved_state_continues_exactly() {
        let mut a = Rng::seed(9);
        a.normal();
        let mut b = Rng::from_state(&a.state()).unwrap();
        assert_eq!(
            (0..4).map(|_| a.normal()).collect::<Vec<_>>(),
            (0..4).map(|_| b.normal()).collect::<Vec<_>>()
        );
        assert!(Rng::from_state("{").is_err());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = Rng::seed(1);
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
