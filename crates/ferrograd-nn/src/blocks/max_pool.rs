//! MaxPool: the largest value of each window, for smaller maps and some spatial invariance.

use crate::Module;
use ferrograd::{Error, Result, Tensor};

/// Max pooling over `size`×`size` windows every `stride` pixels, with optional padding.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    pub size: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool {
    /// ```
    /// use ferrograd::Tensor;
    /// use ferrograd_nn::{MaxPool, Module};
    /// // The lecture's example: max pool with 2×2 filters and stride 2.
    /// let x = Tensor::from_vec(vec![1.0f32, 1., 2., 4., 5., 6., 7., 8., 3., 2., 1., 0., 1., 2., 3., 4.],
    ///                          &[1, 1, 4, 4]).unwrap();
    /// let y = MaxPool::new(2, 2).unwrap().forward(&x).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![6., 8., 3., 4.]);
    /// ```
    pub fn new(size: usize, stride: usize) -> Result<MaxPool> {
        MaxPool::with_padding(size, stride, 0)
    }
    pub fn with_padding(size: usize, stride: usize, padding: usize) -> Result<MaxPool> {
        if size == 0 || stride == 0 {
            return Err(Error::value(
                "MaxPool",
                format!("size and stride must be positive, got {size} and {stride}"),
            ));
        }
        Ok(MaxPool { size, stride, padding })
    }
}

impl Module for MaxPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (k, s, p) = (self.size, self.stride, self.padding);
        x.max_pool2d((k, k), (s, s), (p, p))
    }
    fn describe(&self) -> String {
        let pad = if self.padding > 0 { format!(", pad {}", self.padding) } else { String::new() };
        format!("MaxPool({}×{}, stride {}{pad})", self.size, self.size, self.stride)
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["MaxPool"]
    }
}
