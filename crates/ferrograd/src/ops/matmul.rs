//! Matrix products: 2-D and batched, batch dimensions broadcast. Backward passes read their
//! operands transposed through strides, with no copy.

use super::float_map2;
use crate::backend::cpu::{self, MatRef};
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// `self · rhs` over the last two dimensions: (…, m, k) · (…, k, n) → (…, m, n), with the
    /// leading (batch) dimensions broadcast.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    /// let c = Tensor::zeros(&[3, 5], ferrograd::DType::F32).unwrap();
    /// let err = a.matmul(&c).unwrap_err().to_string();
    /// assert_eq!(err, "matmul: [2, 2] × [3, 5]: inner dimensions differ (2 vs 3)");
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = product(self, false, rhs, false)?;
        let (a, b) = (self.clone(), rhs.clone());
        Ok(out.with_history("matmul", &[self, rhs], move |g| {
            let ga = if a.requires_grad() {
                Some(product(g, false, &b, true)?.sum_to_shape(a.shape())?)
            } else {
                None
            };
            let gb = if b.requires_grad() {
                Some(product(&a, true, g, false)?.sum_to_shape(b.shape())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        }))
    }
}

/// `op(a) · op(b)` where `op` transposes the last two dimensions when asked; no history.
fn product(a: &Tensor, a_t: bool, b: &Tensor, b_t: bool) -> Result<Tensor> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            "matmul",
            format!(
                "needs operands of rank 2 or more, got {} and {}; unsqueeze a vector first",
                a.shape(),
                b.shape()
            ),
        ));
    }
    // Logical (rows, cols) of each operand after the optional transpose, and their strides.
    let view = |t: &Tensor, tr: bool| {
        let (r, c) = (t.dims()[t.rank() - 2], t.dims()[t.rank() - 1]);
        if tr {
            (c, r, 1, c)
        } else {
            (r, c, c, 1)
        }
    };
    let (m, k, a_rs, a_cs) = view(a, a_t);
    let (k2, n, b_rs, b_cs) = view(b, b_t);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("{} × {}: inner dimensions differ ({k} vs {k2})", a.shape(), b.shape()),
        ));
    }
    let batch_a = Shape::from_vec(a.dims()[..a.rank() - 2].to_vec());
    let batch_b = Shape::from_vec(b.dims()[..b.rank() - 2].to_vec());
    let batch = broadcast_shapes("matmul", &batch_a, &batch_b)?;
    let offsets = |own: &Shape, size: usize| -> Vec<usize> {
        let strides = broadcast_strides(own, &batch);
        (0..batch.numel())
            .map(|mut i| {
                let mut off = 0;
                for d in (0..batch.rank()).rev() {
                    off += (i % batch.dims()[d]) * strides[d];
                    i /= batch.dims()[d];
                }
                off * size
            })
            .collect()
    };
    let (oa, ob) = (offsets(&batch_a, m * k), offsets(&batch_b, k * n));
    let data = float_map2!("matmul", a.cpu("matmul")?, b.cpu("matmul")?, |x, y| {
        let ma = MatRef { data: x, row_stride: a_rs, col_stride: a_cs };
        let mb = MatRef { data: y, row_stride: b_rs, col_stride: b_cs };
        cpu::matmul_batched(ma, &oa, mb, &ob, m, k, n)
    });
    let mut dims = batch.dims().to_vec();
    dims.extend([m, n]);
    Ok(Tensor::from_storage(data, Shape::new(&dims)?))
}
