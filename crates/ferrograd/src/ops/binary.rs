//! Element-wise functions of two tensors with NumPy broadcasting, comparisons and selection.
//! The gradient of a broadcast input is summed back to that input's shape.

use super::float_dtype;
use crate::backend::{BackendStorage, Binary, Broadcast, Compare};
use crate::shape::broadcast_shapes;
use crate::{DType, Error, Result, Tensor};

macro_rules! arithmetic {
    ($( $(#[$doc:meta])* $name:ident: $op:expr,
        grad |$g:ident, $a:ident, $b:ident| ($ga:expr, $gb:expr); )*) => { $(
        $(#[$doc])*
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            const OP: &str = stringify!($name);
            let out = broadcast_shapes(OP, self.shape(), rhs.shape())?;
            float_dtype(OP, &[self, rhs])?;
            let shapes = Broadcast { lhs: self.shape(), rhs: rhs.shape(), out: &out };
            let data = self.storage().binary($op, rhs.storage(), &shapes)?;
            let ($a, $b) = (self.clone(), rhs.clone());
            Ok(Tensor::from_op(data, out, OP, &[self, rhs], move |$g| {
                let ga = if $a.requires_grad() { Some($ga?.sum_to_shape($a.shape())?) } else { None };
                let gb = if $b.requires_grad() { Some($gb?.sum_to_shape($b.shape())?) } else { None };
                Ok(vec![ga, gb])
            }))
        }
    )* };
}

macro_rules! comparisons {
    ($( $(#[$doc:meta])* $name:ident: $op:expr; )*) => { $(
        $(#[$doc])*
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            const OP: &str = stringify!($name);
            let out = broadcast_shapes(OP, self.shape(), rhs.shape())?;
            if self.dtype() != rhs.dtype() {
                return Err(Error::dtype(OP, format!("both tensors must have one dtype, got {} and {}", self.dtype(), rhs.dtype())));
            }
            let shapes = Broadcast { lhs: self.shape(), rhs: rhs.shape(), out: &out };
            let data = self.storage().compare($op, rhs.storage(), &shapes)?;
            Ok(Tensor::from_storage(data, out))
        }
    )* };
}

impl Tensor {
    arithmetic! {
        /// `a + b`, broadcasting.
        add: Binary::Add, grad |g, a, b| (Ok::<_, Error>(g.clone()), Ok::<_, Error>(g.clone()));
        /// `a - b`, broadcasting.
        sub: Binary::Sub, grad |g, a, b| (Ok::<_, Error>(g.clone()), g.neg());
        /// `a * b` element-wise, broadcasting.
        mul: Binary::Mul, grad |g, a, b| (g.mul(&b), g.mul(&a));
        /// `a / b` element-wise, broadcasting.
        div: Binary::Div, grad |g, a, b| (g.div(&b), g.mul(&a)?.div(&b.mul(&b)?)?.neg());
    }

    comparisons! {
        /// `a == b` as 1/0 in an i64 tensor, broadcasting.
        eq: Compare::Eq;
        /// `a != b` as 1/0.
        ne: Compare::Ne;
        /// `a < b` as 1/0.
        lt: Compare::Lt;
        /// `a <= b` as 1/0.
        le: Compare::Le;
        /// `a > b` as 1/0.
        gt: Compare::Gt;
        /// `a >= b` as 1/0.
        ge: Compare::Ge;
    }

    /// Element-wise `if cond { a } else { b }`, all three broadcast together; `cond` is any
    /// tensor, nonzero meaning true (the comparisons' i64 results, typically).
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 2.0], &[2]).unwrap();
    /// let zero = Tensor::scalar(0.0f32);
    /// let y = x.gt(&zero).unwrap().where_cond(&x, &zero).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 2.0]);
    /// ```
    pub fn where_cond(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        let out = broadcast_shapes(OP, &broadcast_shapes(OP, self.shape(), a.shape())?, b.shape())?;
        if a.dtype() != b.dtype() {
            return Err(Error::dtype(
                OP,
                format!("both branches must have one dtype, got {} and {}", a.dtype(), b.dtype()),
            ));
        }
        let cond = self.detach().broadcast_to(out.dims())?;
        let (ab, bb) = (a.detach().broadcast_to(out.dims())?, b.detach().broadcast_to(out.dims())?);
        let data = cond.storage().where_cond(ab.storage(), bb.storage())?;
        let (mask, a_shape, b_shape) = (self.detach(), a.shape().clone(), b.shape().clone());
        Ok(Tensor::from_op(data, out, OP, &[self, a, b], move |g| {
            let zero = Tensor::zeros(&[], g.dtype())?;
            let ga = mask.where_cond(g, &zero)?.sum_to_shape(&a_shape)?;
            let gb = mask.where_cond(&zero, g)?.sum_to_shape(&b_shape)?;
            Ok(vec![None, Some(ga), Some(gb)])
        }))
    }

    /// `value` where `mask` is nonzero, `self` elsewhere (mask broadcasts to self's shape).
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full(&[], value, self.dtype())?;
        let out = mask.where_cond(&fill, self)?;
        if out.shape() != self.shape() {
            return Err(Error::shape(
                "masked_fill",
                format!(
                    "mask of shape {} does not broadcast to the tensor's shape {}",
                    mask.shape(),
                    self.shape()
                ),
            ));
        }
        Ok(out)
    }

    /// The same values in another dtype. Between float types gradients flow (cast back);
    /// to or from i64 the result is cut from the graph.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let data = self.storage().to_dtype(dtype)?;
        let from = self.dtype();
        if !(from.is_float() && dtype.is_float()) {
            return Ok(Tensor::from_storage(data, self.shape().clone()));
        }
        Ok(Tensor::from_op(data, self.shape().clone(), "to_dtype", &[self], move |g| {
            Ok(vec![Some(g.to_dtype(from)?)])
        }))
    }
}
