//! Element-wise functions of two tensors with NumPy broadcasting, comparisons and selection.
//! The gradient of a broadcast input is summed back to that input's shape.

use super::{any_map, float_map2};
use crate::backend::cpu;
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::storage::CpuStorage;
use crate::{DType, Error, Result, Shape, Tensor};

/// The kernel shared by all broadcasting binary ops: same shapes take the plain zip.
fn zip_kernel<T: Copy + Send + Sync, U: Copy + Send + Sync, V: Copy + Send + Sync + Default>(
    a: &[T],
    a_shape: &Shape,
    b: &[U],
    b_shape: &Shape,
    out: &Shape,
    f: impl Fn(T, U) -> V + Send + Sync,
) -> Vec<V> {
    if a_shape == b_shape {
        cpu::zip(a, b, f)
    } else {
        let (sa, sb) = (broadcast_strides(a_shape, out), broadcast_strides(b_shape, out));
        cpu::zip_broadcast(a, &sa, b, &sb, out.dims(), f)
    }
}

macro_rules! arithmetic {
    ($( $(#[$doc:meta])* $name:ident: |$x:ident, $y:ident| $fwd:expr,
        grad |$g:ident, $a:ident, $b:ident| ($ga:expr, $gb:expr); )*) => { $(
        $(#[$doc])*
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            const OP: &str = stringify!($name);
            let out = broadcast_shapes(OP, self.shape(), rhs.shape())?;
            let data = float_map2!(OP, self.cpu(OP)?, rhs.cpu(OP)?, |x, y| {
                zip_kernel(x, self.shape(), y, rhs.shape(), &out, |$x, $y| $fwd)
            });
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
    ($( $(#[$doc:meta])* $name:ident: $cmp:tt; )*) => { $(
        $(#[$doc])*
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            const OP: &str = stringify!($name);
            let out = broadcast_shapes(OP, self.shape(), rhs.shape())?;
            let (sa, sb) = (self.shape(), rhs.shape());
            let data = match (self.cpu(OP)?, rhs.cpu(OP)?) {
                (CpuStorage::F32(x), CpuStorage::F32(y)) => zip_kernel(x, sa, y, sb, &out, |x, y| (x $cmp y) as i64),
                (CpuStorage::F64(x), CpuStorage::F64(y)) => zip_kernel(x, sa, y, sb, &out, |x, y| (x $cmp y) as i64),
                (CpuStorage::I64(x), CpuStorage::I64(y)) => zip_kernel(x, sa, y, sb, &out, |x, y| (x $cmp y) as i64),
                (a, b) => return Err(Error::dtype(OP, format!("both tensors must have one dtype, got {} and {}", a.dtype(), b.dtype()))),
            };
            Ok(Tensor::from_storage(CpuStorage::I64(data), out))
        }
    )* };
}

impl Tensor {
    arithmetic! {
        /// `a + b`, broadcasting.
        add: |x, y| x + y, grad |g, a, b| (Ok::<_, Error>(g.clone()), Ok::<_, Error>(g.clone()));
        /// `a - b`, broadcasting.
        sub: |x, y| x - y, grad |g, a, b| (Ok::<_, Error>(g.clone()), g.neg());
        /// `a * b` element-wise, broadcasting.
        mul: |x, y| x * y, grad |g, a, b| (g.mul(&b), g.mul(&a));
        /// `a / b` element-wise, broadcasting.
        div: |x, y| x / y, grad |g, a, b| (g.div(&b), g.mul(&a)?.div(&b.mul(&b)?)?.neg());
    }

    comparisons! {
        /// `a == b` as 1/0 in an i64 tensor, broadcasting.
        eq: ==;
        /// `a != b` as 1/0.
        ne: !=;
        /// `a < b` as 1/0.
        lt: <;
        /// `a <= b` as 1/0.
        le: <=;
        /// `a > b` as 1/0.
        gt: >;
        /// `a >= b` as 1/0.
        ge: >=;
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
        let cond: Vec<bool> = match self.broadcast_to(out.dims())?.cpu(OP)? {
            CpuStorage::F32(v) => v.iter().map(|&c| c != 0.0).collect(),
            CpuStorage::F64(v) => v.iter().map(|&c| c != 0.0).collect(),
            CpuStorage::I64(v) => v.iter().map(|&c| c != 0).collect(),
        };
        let (ab, bb) = (a.detach().broadcast_to(out.dims())?, b.detach().broadcast_to(out.dims())?);
        let data = match (ab.cpu(OP)?, bb.cpu(OP)?) {
            (CpuStorage::I64(x), CpuStorage::I64(y)) => CpuStorage::I64(
                cond.iter()
                    .zip(x.iter().zip(y))
                    .map(|(&c, (&x, &y))| if c { x } else { y })
                    .collect(),
            ),
            (x, y) => float_map2!(OP, x, y, |x, y| {
                cond.iter()
                    .zip(x.iter().zip(y))
                    .map(|(&c, (&x, &y))| if c { x } else { y })
                    .collect()
            }),
        };
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
        let data = match (self.cpu("to_dtype")?, dtype) {
            (CpuStorage::F32(v), DType::F64) => CpuStorage::F64(cpu::map(v, |x| x as f64)),
            (CpuStorage::F32(v), DType::I64) => CpuStorage::I64(cpu::map(v, |x| x as i64)),
            (CpuStorage::F64(v), DType::F32) => CpuStorage::F32(cpu::map(v, |x| x as f32)),
            (CpuStorage::F64(v), DType::I64) => CpuStorage::I64(cpu::map(v, |x| x as i64)),
            (CpuStorage::I64(v), DType::F32) => CpuStorage::F32(cpu::map(v, |x| x as f32)),
            (CpuStorage::I64(v), DType::F64) => CpuStorage::F64(cpu::map(v, |x| x as f64)),
            (s, _) => any_map!(s, |v| v.clone()),
        };
        let from = self.dtype();
        if !(from.is_float() && dtype.is_float()) {
            return Ok(Tensor::from_storage(data, self.shape().clone()));
        }
        Ok(Tensor::from_op(data, self.shape().clone(), "to_dtype", &[self], move |g| {
            Ok(vec![Some(g.to_dtype(from)?)])
        }))
    }
}
