//! Collapse: one vector from a sequence (its first, its last, the mean or the max), padding
//! left out.

use super::check_mask;
use crate::Module;
use ferrograd::{Error, Result, Tensor};

/// How a (B, T, D) sequence becomes a (B, D) vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collapse {
    First,
    /// The last real (unpadded) position of each sequence.
    Last,
    Mean,
    Max,
}

impl Collapse {
    /// (B, T, D) and an optional (B, T) mask (1 = token) → (B, D).
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// use ferrograd_nn::Collapse;
    /// let x = Tensor::from_vec(vec![1.0f32, 2., 3., 10.], &[1, 4, 1]).unwrap();
    /// let mask = Tensor::from_vec(vec![1i64, 1, 1, 0], &[1, 4]).unwrap();
    /// assert_eq!(Collapse::Mean.apply(&x, Some(&mask)).unwrap().to_vec::<f32>().unwrap(), vec![2.0]);
    /// assert_eq!(Collapse::Last.apply(&x, Some(&mask)).unwrap().to_vec::<f32>().unwrap(), vec![3.0]);
    /// ```
    pub fn apply(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        check_mask("Collapse", x, mask)?;
        let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        let lengths = super::lengths(mask, b, t)?;
        if let Some(i) = lengths.iter().position(|&l| l == 0) {
            return Err(Error::value(
                "Collapse",
                format!("sequence {i} is all padding: nothing to collapse"),
            ));
        }
        let keep = || -> Result<Tensor> {
            mask.expect("a mask when lengths differ").to_dtype(x.dtype())?.unsqueeze(-1)
        };
        match (self, mask) {
            (Collapse::First, _) => x.narrow(1, 0, 1)?.squeeze(1),
            (Collapse::Last, _) => {
                let idx: Vec<i64> =
                    lengths.iter().flat_map(|&l| std::iter::repeat_n(l as i64 - 1, d)).collect();
                x.gather(1, &Tensor::from_vec(idx, &[b, 1, d])?)?.squeeze(1)
            }
            (Collapse::Mean, None) => x.mean(&[1], false),
            (Collapse::Mean, Some(_)) => {
                let counts: Vec<f64> = lengths.iter().map(|&l| 1.0 / l as f64).collect();
                let inv = Tensor::from_vec(counts, &[b, 1])?.to_dtype(x.dtype())?;
                x.mul(&keep()?)?.sum(&[1], false)?.mul(&inv)
            }
            (Collapse::Max, None) => x.max(&[1], false),
            (Collapse::Max, Some(_)) => x
                .masked_fill(&keep()?.eq(&Tensor::zeros(&[], x.dtype())?)?, f64::NEG_INFINITY)?
                .max(&[1], false),
        }
    }
}

impl Module for Collapse {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, None)
    }
    fn describe(&self) -> String {
        format!("Collapse({self:?})")
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["Collapse"]
    }
}
