//! Reductions: sum, mean, max, min over chosen dimensions, and argmax/argmin.

use super::float_dtype;
use crate::backend::{around, BackendStorage};
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// Sum over `dims` (negative counts from the end); `keepdim` keeps them as size 1.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// assert_eq!(t.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
    /// ```
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let dims = self.resolve_dims("sum", dims)?;
        let mut kept = self.dims().to_vec();
        for &d in &dims {
            kept[d] = 1;
        }
        float_dtype("sum", &[self])?;
        let mut data = None;
        let mut shape = self.shape().clone();
        for &d in &dims {
            let src = data.as_ref().unwrap_or(self.storage());
            let mut next = shape.dims().to_vec();
            next[d] = 1;
            // Summing away an empty dimension makes the result larger than the input.
            let next = crate::shape::output_shape("sum", next)?;
            data = Some(src.sum(around(&shape, d))?);
            shape = next;
        }
        let data = match data {
            Some(d) => d,
            None => self.storage().try_clone()?,
        };
        let kept = Shape::from_vec(kept);
        let out_shape = if keepdim { kept.clone() } else { squeeze_dims(&kept, &dims) };
        let in_shape = self.shape().clone();
        Ok(Tensor::from_op(data, out_shape, "sum", &[self], move |g| {
            Ok(vec![Some(g.reshape(kept.dims())?.broadcast_to(in_shape.dims())?)])
        }))
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let resolved = self.resolve_dims("mean", dims)?;
        let count: usize = resolved.iter().map(|&d| self.dims()[d]).product();
        if count == 0 {
            return Err(Error::value(
                "mean",
                format!("mean over an empty dimension of shape {}", self.shape()),
            ));
        }
        self.sum(dims, keepdim)?.mul_scalar(1.0 / count as f64)
    }

    /// Sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&all, false)
    }

    /// Mean of every element, as a rank-0 tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&all, false)
    }

    /// Largest value over `dims`; the gradient goes to the (first) position of each maximum.
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("max", dims, keepdim, true)
    }

    /// Smallest value over `dims`; the gradient goes to the (first) position of each minimum.
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("min", dims, keepdim, false)
    }

    /// Index of the largest value along `dim`, as i64.
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extreme("argmax", dim, keepdim, true)
    }

    /// Index of the smallest value along `dim`, as i64.
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_extreme("argmin", dim, keepdim, false)
    }

    fn arg_extreme(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
        largest: bool,
    ) -> Result<Tensor> {
        let d = self.dim(op, dim)?;
        let at = around(self.shape(), d);
        if at.n == 0 {
            return Err(Error::value(
                op,
                format!("dimension {dim} of shape {} is empty", self.shape()),
            ));
        }
        let x = self.to_dtype(crate::DType::F64)?.detach();
        let (_, idx) = x.storage().extreme(at, largest)?;
        let shape = reduced_shape(self.shape(), d, keepdim);
        Ok(Tensor::from_storage(idx, shape))
    }

    /// Max or min over several dimensions, one at a time (each routes its gradient).
    fn extreme(
        &self,
        op: &'static str,
        dims: &[isize],
        keepdim: bool,
        largest: bool,
    ) -> Result<Tensor> {
        let mut resolved = self.resolve_dims(op, dims)?;
        resolved.sort_unstable_by(|a, b| b.cmp(a)); // last first, so earlier indices stay valid
        let mut out = self.clone();
        for d in resolved {
            out = out.extreme_dim(op, d, keepdim, largest)?;
        }
        Ok(out)
    }

    fn extreme_dim(
        &self,
        op: &'static str,
        d: usize,
        keepdim: bool,
        largest: bool,
    ) -> Result<Tensor> {
        let at = around(self.shape(), d);
        if at.n == 0 {
            return Err(Error::value(
                op,
                format!("dimension {d} of shape {} is empty", self.shape()),
            ));
        }
        float_dtype(op, &[self])?;
        let (data, arg) = self.storage().extreme(at, largest)?;
        let in_shape = self.shape().clone();
        let out_shape = reduced_shape(self.shape(), d, keepdim);
        Ok(Tensor::from_op(data, out_shape, op, &[self], move |g| {
            let base = g.storage().zeros(in_shape.numel(), g.dtype())?;
            let scattered = base.scatter_add(&arg, g.storage(), at, 1)?;
            Ok(vec![Some(Tensor::from_storage(scattered, in_shape))])
        }))
    }

    /// Sums a broadcast result back to `shape` (the gradient rule of every broadcasting op).
    pub fn sum_to_shape(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.rank()).ok_or_else(|| {
            Error::shape(
                "sum_to_shape",
                format!("cannot sum {} down to the larger rank of {shape}", self.shape()),
            )
        })?;
        let mut dims: Vec<isize> = (0..lead as isize).collect();
        for (i, &s) in shape.dims().iter().enumerate() {
            if s == 1 && self.dims()[lead + i] != 1 {
                dims.push((lead + i) as isize);
            } else if s != self.dims()[lead + i] {
                return Err(Error::shape(
                    "sum_to_shape",
                    format!("{} does not broadcast from {shape}", self.shape()),
                ));
            }
        }
        self.sum(&dims, true)?.reshape(shape.dims())
    }

    /// Distinct, resolved dimensions, in increasing order.
    fn resolve_dims(&self, op: &str, dims: &[isize]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(dims.len());
        for &d in dims {
            let r = self.dim(op, d)?;
            if out.contains(&r) {
                return Err(Error::index(op, format!("dimension {d} is given twice")));
            }
            out.push(r);
        }
        out.sort_unstable();
        Ok(out)
    }
}

fn reduced_shape(s: &Shape, d: usize, keepdim: bool) -> Shape {
    let mut dims = s.dims().to_vec();
    if keepdim {
        dims[d] = 1;
    } else {
        dims.remove(d);
    }
    Shape::from_vec(dims)
}

fn squeeze_dims(s: &Shape, dims: &[usize]) -> Shape {
    Shape::from_vec(
        s.dims().iter().enumerate().filter(|(i, _)| !dims.contains(i)).map(|(_, &d)| d).collect(),
    )
}
