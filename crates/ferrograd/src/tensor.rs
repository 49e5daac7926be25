//! `Tensor`: a cheap-to-clone handle to immutable data, its shape and dtype, and (when it was
//! computed from inputs that need gradients) the node that records how.

use crate::autograd::{is_grad_enabled, BackwardFn, Node};
use crate::backend::cpu::CpuStorage;
use crate::backend::BackendStorage;
use crate::storage::Storage;
use crate::{DType, Device, Element, Error, Result, Rng, Shape};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A tensor's identity, for looking up its gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> TensorId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

struct Inner {
    id: TensorId,
    storage: Arc<Storage>,
    shape: Shape,
    requires_grad: bool,
    node: Option<Node>,
}

/// An n-dimensional array of f32, f64 or i64 on a device, differentiable when it needs to be.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl Tensor {
    // ---- construction -------------------------------------------------------------------

    fn build(
        storage: Arc<Storage>,
        shape: Shape,
        requires_grad: bool,
        node: Option<Node>,
    ) -> Tensor {
        Tensor(Arc::new(Inner { id: TensorId::next(), storage, shape, requires_grad, node }))
    }

    /// A tensor without history from data a kernel produced (length already checked).
    pub(crate) fn from_storage(data: Storage, shape: Shape) -> Tensor {
        debug_assert_eq!(data.len(), shape.numel());
        Tensor::build(Arc::new(data), shape, false, None)
    }

    /// A tensor without history from host data.
    fn from_host(data: CpuStorage, shape: Shape) -> Tensor {
        Tensor::from_storage(Storage::Cpu(data), shape)
    }

    /// The result of an op: records `backward` when recording is on and an input needs a
    /// gradient; `backward` gets the output's gradient and returns one per input, in order.
    pub(crate) fn from_op(
        data: Storage,
        shape: Shape,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let out = Tensor::from_storage(data, shape);
        out.with_history(op, inputs, backward)
    }

    /// `self` with a graph node attached (when one is needed). Shares the data.
    pub(crate) fn with_history(
        self,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let backward: BackwardFn = Box::new(backward);
        let node = Node::new(op, inputs.iter().map(|t| (*t).clone()).collect(), backward);
        Tensor::build(self.0.storage.clone(), self.0.shape.clone(), true, Some(node))
    }

    /// A tensor from data and a shape; the data's length must be the shape's element count.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert!(Tensor::from_vec(vec![1.0f32, 2.0], &[3]).is_err());
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let shape = Shape::new(shape)?;
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {shape} ({} elements)",
                    data.len(),
                    shape.numel()
                ),
            ));
        }
        Ok(Tensor::from_host(T::into_storage(data), shape))
    }

    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_host(T::into_storage(vec![value]), Shape::scalar())
    }

    /// A tensor of `shape` with every element `value` (cast to `dtype`).
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
        let shape = Shape::new(shape)?;
        let n = shape.numel();
        let data = match dtype {
            DType::F32 => CpuStorage::from_vec(filled("full", n, value as f32)?),
            DType::F64 => CpuStorage::from_vec(filled("full", n, value)?),
            DType::I64 => CpuStorage::from_vec(filled("full", n, value as i64)?),
        };
        Ok(Tensor::from_host(data, shape))
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype)
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.dims(), self.dtype())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.dims(), self.dtype())
    }

    /// `start, start + step, ...` up to (not including) `end`, as a 1-D tensor.
    ///
    /// ```
    /// use ferrograd::{DType, Tensor};
    /// let t = Tensor::arange(0.0, 5.0, 2.0, DType::I64).unwrap();
    /// assert_eq!(t.to_vec::<i64>().unwrap(), vec![0, 2, 4]);
    /// ```
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::value(
                "arange",
                format!("needs finite bounds and a nonzero step, got start {start}, end {end}, step {step}"),
            ));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        // Beyond 2^53 the values repeat, and far sooner they would not fit in memory.
        if count > (1u64 << 53) as f64 {
            return Err(Error::value(
                "arange",
                format!("start {start}, end {end}, step {step} make {count:e} values; too many"),
            ));
        }
        let n = count as usize;
        let mut values = filled("arange", n, 0.0f64)?;
        values.iter_mut().enumerate().for_each(|(i, v)| *v = start + i as f64 * step);
        Tensor::from_vec(values, &[n])?.to_dtype(dtype)
    }

    /// Normally distributed values, drawn from `rng` (same seed, same numbers).
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let n = Shape::new(shape)?.numel();
        let mut values = filled("randn", n, 0.0f64)?;
        values.iter_mut().for_each(|v| *v = mean + std * rng.normal());
        Tensor::from_vec(values, shape)?.to_dtype(dtype)
    }

    /// Values uniform in `[low, high)`, drawn from `rng`.
    pub fn rand_uniform(
        shape: &[usize],
        low: f64,
        high: f64,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) {
            return Err(Error::value(
                "rand_uniform",
                format!("needs low < high, got {low} and {high}"),
            ));
        }
        let n = Shape::new(shape)?.numel();
        let mut values = filled("rand_uniform", n, 0.0f64)?;
        values.iter_mut().for_each(|v| *v = low + (high - low) * rng.uniform());
        Tensor::from_vec(values, shape)?.to_dtype(dtype)
    }

    // ---- what it is ---------------------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }
    /// Whether gradients flow to (a leaf) or through (a computed tensor) this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }
    /// When this is the last handle to a computed tensor, its node's inputs (so that dropping
    /// a deep graph can proceed without recursion).
    pub(crate) fn into_unique_inputs(self) -> Option<Vec<Tensor>> {
        let mut inner = Arc::try_unwrap(self.0).ok()?;
        inner.node.as_mut()?.take_inputs()
    }
    /// The data, for ops to hand to the backend.
    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }
    /// The host data, for reading out (a device tensor answers with an error naming `op`).
    pub(crate) fn cpu(&self, op: &str) -> Result<&CpuStorage> {
        self.0.storage.cpu(op)
    }
    /// The storage and shape to change in place, as [`Tensor::unique_storage_mut`] gives the
    /// storage.
    pub(crate) fn unique_parts_mut(&mut self) -> Option<(&mut Storage, &mut Shape)> {
        let inner = Arc::get_mut(&mut self.0)?;
        if inner.node.is_some() || inner.requires_grad {
            return None;
        }
        Some((Arc::get_mut(&mut inner.storage)?, &mut inner.shape))
    }
    /// The data to write in place, when this handle is the only one to it and it has no
    /// history: nothing else can observe the change (gradient sums in backward).
    pub(crate) fn unique_storage_mut(&mut self) -> Option<&mut Storage> {
        let inner = Arc::get_mut(&mut self.0)?;
        if inner.node.is_some() || inner.requires_grad {
            return None;
        }
        Arc::get_mut(&mut inner.storage)
    }
    /// The data to update in place (an optimizer step on a leaf without history): this
    /// handle's own when nothing else holds it, else a copy first, so no other handle sees
    /// the change. In place the tensor keeps its id; a copy is a new tensor (a new id: the
    /// other handles still hold the old values under the old one). Whether it requires a
    /// gradient is kept.
    pub(crate) fn storage_for_update(&mut self, op: &str) -> Result<&mut Storage> {
        if self.node().is_some() {
            return Err(Error::autograd(op, "cannot update a computed tensor in place"));
        }
        let unique = Arc::get_mut(&mut self.0)
            .and_then(|inner| Arc::get_mut(&mut inner.storage))
            .is_some_and(|s| s.is_unique());
        if !unique {
            let copy = Arc::new(self.0.storage.try_clone()?);
            let inner = Inner {
                id: TensorId::next(),
                storage: copy,
                shape: self.0.shape.clone(),
                requires_grad: self.0.requires_grad,
                node: None,
            };
            *self = Tensor(Arc::new(inner));
        }
        let inner = Arc::get_mut(&mut self.0).expect("just made unique");
        Ok(Arc::get_mut(&mut inner.storage).expect("just made unique"))
    }
    /// The elements to write in place (a gradient bucket summed across processes); `T` must
    /// be this tensor's dtype. This handle's own memory when nothing else holds it, else a
    /// copy first, as [`Tensor::update`] does (and then a new id).
    pub fn as_mut_slice<T: Element>(&mut self, op: &str) -> Result<&mut [T]> {
        if self.dtype() != T::DTYPE {
            return Err(Error::dtype(
                op,
                format!("tensor holds {}, asked for {}", self.dtype(), T::DTYPE),
            ));
        }
        self.storage_for_update(op)?.host_slice_mut(op)
    }
    /// Whether the two tensors' data are the same memory (one a view of the other's buffer).
    pub fn shares_memory(&self, other: &Tensor) -> bool {
        self.0.storage.shares_memory(&other.0.storage)
    }
    /// Resolves a possibly negative dimension of this tensor.
    pub fn dim(&self, op: &str, d: isize) -> Result<usize> {
        self.shape().dim(op, d)
    }

    /// A leaf sharing this data that gradients flow to: a parameter or an input to differentiate.
    pub fn requiring_grad(&self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.shape.clone(), true, None)
    }

    /// The same data cut from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.shape.clone(), false, None)
    }

    /// The same data under another shape with as many elements, sharing the buffer.
    pub(crate) fn with_shape(&self, shape: Shape) -> Tensor {
        Tensor::build(self.0.storage.clone(), shape, false, None)
    }

    /// Elements `start..start + shape.numel()` of this tensor's buffer under `shape`, sharing
    /// the memory (a gradient in the flat store); no history.
    pub(crate) fn view(&self, start: usize, shape: Shape) -> Tensor {
        Tensor::build(Arc::new(self.0.storage.view(start, shape.numel())), shape, false, None)
    }

    // ---- reading it out -----------------------------------------------------------------

    /// The elements in row-major order; `T` must be this tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.as_slice::<T>("to_vec")?.to_vec())
    }

    /// The elements as a borrowed slice; `T` must be this tensor's dtype.
    pub fn as_slice<T: Element>(&self, op: &str) -> Result<&[T]> {
        T::from_storage(self.cpu(op)?).ok_or_else(|| {
            Error::dtype(op, format!("tensor holds {}, asked for {}", self.dtype(), T::DTYPE))
        })
    }

    /// The elements converted to f64, whatever the dtype.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(match self.cpu("to_vec_f64")? {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.to_vec(),
            CpuStorage::I64(v) => v.iter().map(|&x| x as f64).collect(),
        })
    }

    /// The one value of a one-element tensor, as f64.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("needs one element, the tensor has shape {}", self.shape()),
            ));
        }
        Ok(self.to_vec_f64()?[0])
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {}, {}", self.shape(), self.dtype(), self.device())?;
        if let Some(n) = self.node() {
            write!(f, ", grad_fn={}", n.op)?;
        } else if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        f.write_str(")")
    }
}

/// Nested brackets like NumPy, values to 4 decimals (ids as integers), long dimensions elided.
impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.to_vec_f64().map_err(|_| fmt::Error)?;
        let int = self.dtype() == DType::I64;
        fn rec(f: &mut fmt::Formatter<'_>, v: &[f64], dims: &[usize], int: bool) -> fmt::Result {
            let Some((&n, rest)) = dims.split_first() else {
                return if int { write!(f, "{}", v[0]) } else { write!(f, "{:.4}", v[0]) };
            };
            let stride: usize = rest.iter().product();
            f.write_str("[")?;
            for i in 0..n {
                if n > 8 && i == 3 {
                    f.write_str(", ...")?;
                }
                if n > 8 && (3..n - 3).contains(&i) {
                    continue;
                }
                if i > 0 {
                    f.write_str(if rest.is_empty() { ", " } else { ",\n " })?;
                }
                rec(f, &v[i * stride..(i + 1) * stride], rest, int)?;
            }
            f.write_str("]")
        }
        if values.is_empty() {
            return write!(f, "[] (shape {})", self.shape());
        }
        rec(f, &values, self.dims(), int)
    }
}

/// `n` copies of `value`, or an error naming `op` where memory cannot hold them: a failed
/// allocation would abort the process.
fn filled<T: Clone>(op: &str, n: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        let bytes = n as f64 * std::mem::size_of::<T>() as f64;
        Error::value(op, format!("{n} elements ({bytes:.3e} bytes) do not fit in memory"))
    })?;
    v.resize(n, value);
    Ok(v)
}
