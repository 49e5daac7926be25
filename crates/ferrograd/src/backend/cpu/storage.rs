//! Host memory for tensors, and the CPU's side of the backend interface: each method picks the
//! element type once and runs one of this folder's kernels over plain slices.

use super::RecurrentSaved;
use crate::backend::{
    Around, AttentionDims, BackendStorage, Binary, BlockParams, Broadcast, Cell, Compare, Products,
    RecurrentDims, Saved, Unary, Update, Window,
};
use crate::shape::broadcast_strides;
use crate::storage::count_bytes;
use crate::{DType, Device, Element, Error, Precision, Result};
use rayon::prelude::*;
use std::any::Any;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Memory of one allocation, counted in [`crate::live_bytes`] while it lives.
pub struct Allocation<T: Send + 'static> {
    data: Vec<T>,
    /// A gradient bucket: kept for the next one when dropped.
    bucket: bool,
}

impl<T: Send + 'static> Allocation<T> {
    fn new(data: Vec<T>, bucket: bool) -> Allocation<T> {
        count_bytes((data.len() * std::mem::size_of::<T>()) as isize);
        Allocation { data, bucket }
    }
}

impl<T: Send + 'static> Drop for Allocation<T> {
    fn drop(&mut self) {
        count_bytes(-((self.data.len() * std::mem::size_of::<T>()) as isize));
        if self.bucket {
            let mut kept = KEPT_BUCKETS.lock().unwrap_or_else(|e| e.into_inner());
            kept.push(Box::new(std::mem::take(&mut self.data)));
            if kept.len() > KEEP_AT_MOST {
                kept.remove(0);
            }
        }
    }
}

/// Gradient buckets of the last steps, kept for the next ones: a bucket is as large as the
/// model's gradient and is made at every backward pass, and taking a kept one skips zeroing it
/// and the page faults of fresh memory. (Kept memory is not counted in `live_bytes`.)
static KEPT_BUCKETS: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());
const KEEP_AT_MOST: usize = 4;

/// `len` elements for a gradient bucket: a kept one of that size (holding old values), or new.
fn bucket_memory<T: Element + Default>(len: usize) -> Vec<T> {
    let mut kept = KEPT_BUCKETS.lock().unwrap_or_else(|e| e.into_inner());
    let found =
        kept.iter().position(|b| b.downcast_ref::<Vec<T>>().is_some_and(|v| v.len() == len));
    match found.map(|i| kept.remove(i).downcast::<Vec<T>>()) {
        Some(Ok(v)) => *v,
        _ => vec![T::default(); len],
    }
}

/// A tensor's host data: an allocation of its own (every op's result), or elements
/// `start..start + len` of one shared by views (a flat gradient bucket and each parameter's
/// gradient in it). Only a shared buffer has views; an owned one costs no reference count.
pub enum Buffer<T: Send + 'static> {
    Owned(Allocation<T>),
    Shared { alloc: Arc<Allocation<T>>, start: usize, len: usize },
}

impl<T: Send + 'static> Buffer<T> {
    fn new(v: Vec<T>, shared: bool) -> Buffer<T> {
        if shared {
            let len = v.len();
            Buffer::Shared { alloc: Arc::new(Allocation::new(v, false)), start: 0, len }
        } else {
            Buffer::Owned(Allocation::new(v, false))
        }
    }
    /// A gradient bucket's memory: shared by views, and kept for the next bucket when dropped.
    fn bucket(v: Vec<T>) -> Buffer<T> {
        let len = v.len();
        Buffer::Shared { alloc: Arc::new(Allocation::new(v, true)), start: 0, len }
    }
    /// Elements `start..start + len`: the same memory for a shared buffer, a copy of an owned
    /// one (which cannot become shared behind the handles that own it).
    pub(crate) fn view(&self, start: usize, len: usize) -> Buffer<T>
    where
        T: Copy,
    {
        assert!(start + len <= self.len(), "view {start}+{len} of {} elements", self.len());
        match self {
            Buffer::Shared { alloc, start: s, .. } => {
                Buffer::Shared { alloc: alloc.clone(), start: s + start, len }
            }
            Buffer::Owned(a) => Buffer::new(a.data[start..start + len].to_vec(), false),
        }
    }
    /// A copy in new memory, of the same kind (a copied bucket can still have views).
    fn copied(&self) -> Buffer<T>
    where
        T: Copy,
    {
        Buffer::new(self.to_vec(), matches!(self, Buffer::Shared { .. }))
    }
    /// The elements to write, when nothing else (no view, no other tensor) holds the memory.
    pub(crate) fn get_mut(&mut self) -> Option<&mut [T]> {
        match self {
            Buffer::Owned(a) => Some(&mut a.data),
            Buffer::Shared { alloc, start, len } => {
                Some(&mut Arc::get_mut(alloc)?.data[*start..*start + *len])
            }
        }
    }
    /// `src` appended in place when this buffer is its own allocation (false for a view).
    fn extend(&mut self, src: &[T]) -> bool
    where
        T: Copy,
    {
        match self {
            Buffer::Owned(a) => {
                count_bytes(std::mem::size_of_val(src) as isize);
                a.data.extend_from_slice(src);
                true
            }
            Buffer::Shared { .. } => false,
        }
    }
    fn is_unique(&self) -> bool {
        match self {
            Buffer::Owned(_) => true,
            Buffer::Shared { alloc, .. } => Arc::strong_count(alloc) == 1,
        }
    }
    /// Whether `other` is a view of the same allocation.
    pub(crate) fn shares_memory(&self, other: &Buffer<T>) -> bool {
        match (self, other) {
            (Buffer::Shared { alloc: a, .. }, Buffer::Shared { alloc: b, .. }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T: Send + 'static> From<Vec<T>> for Buffer<T> {
    fn from(v: Vec<T>) -> Buffer<T> {
        Buffer::new(v, false)
    }
}

impl<T: Send + 'static> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buffer::Owned(a) => &a.data,
            Buffer::Shared { alloc, start, len } => &alloc.data[*start..*start + *len],
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} elements)", self.len())
    }
}

/// Data in host memory, one variant per dtype.
#[derive(Debug)]
pub enum CpuStorage {
    F32(Buffer<f32>),
    F64(Buffer<f64>),
    I64(Buffer<i64>),
}

impl CpuStorage {
    pub(crate) fn from_vec<T: Element>(v: Vec<T>) -> CpuStorage {
        T::into_storage(v)
    }
    /// The elements, when they are `T`s.
    pub(crate) fn slice<T: Element>(&self) -> Result<&[T]> {
        T::from_storage(self).ok_or_else(|| unsupported(self.dtype(), T::DTYPE))
    }
    pub(crate) fn slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        let dtype = self.dtype();
        T::buffer_mut(self)
            .ok_or_else(|| unsupported(dtype, T::DTYPE))?
            .get_mut()
            .ok_or_else(|| Error::value("cpu", "the buffer to write in place is shared"))
    }
    /// Nonzero elements as true (masks of any dtype).
    fn truths(&self) -> Vec<bool> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x != 0.0).collect(),
            CpuStorage::F64(v) => v.iter().map(|&x| x != 0.0).collect(),
            CpuStorage::I64(v) => v.iter().map(|&x| x != 0).collect(),
        }
    }
    /// i64 indices, already checked by the op to lie in range.
    fn indices(&self) -> Result<Vec<usize>> {
        Ok(self.slice::<i64>()?.iter().map(|&i| i as usize).collect())
    }
}

/// A dtype (or combination) the CPU kernels were not given: the ops check dtypes first, so
/// this names a bug, not user input.
fn unsupported(got: DType, want: DType) -> Error {
    Error::dtype("cpu", format!("kernel for {want} data was given {got}"))
}

/// Runs `$body` with `$T` the element type of `$dtype`, floats only.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            d => Err(unsupported(d, DType::F32)),
        }
    };
}

/// Runs `$body` with `$T` the element type of `$dtype`, any dtype.
macro_rules! with_any {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::I64 => {
                type $T = i64;
                $body
            }
            floats => with_float!(floats, $T => $body),
        }
    };
}

fn put<T: Element>(v: Vec<T>) -> CpuStorage {
    T::into_storage(v)
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn view(&self, start: usize, len: usize) -> CpuStorage {
        match self {
            CpuStorage::F32(b) => CpuStorage::F32(b.view(start, len)),
            CpuStorage::F64(b) => CpuStorage::F64(b.view(start, len)),
            CpuStorage::I64(b) => CpuStorage::I64(b.view(start, len)),
        }
    }
    fn is_unique(&self) -> bool {
        match self {
            CpuStorage::F32(b) => b.is_unique(),
            CpuStorage::F64(b) => b.is_unique(),
            CpuStorage::I64(b) => b.is_unique(),
        }
    }
    fn shares_memory(&self, other: &CpuStorage) -> bool {
        match (self, other) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => a.shares_memory(b),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => a.shares_memory(b),
            (CpuStorage::I64(a), CpuStorage::I64(b)) => a.shares_memory(b),
            _ => false,
        }
    }
    fn zeros(&self, len: usize, dtype: DType) -> Result<CpuStorage> {
        with_any!(dtype, T => Ok(put(vec![T::default(); len])))
    }
    fn bucket(&self, len: usize, dtype: DType) -> Result<CpuStorage> {
        with_any!(dtype, T => {
            let buffer = Buffer::bucket(bucket_memory::<T>(len));
            T::from_buffer(buffer)
        })
    }
    fn zero_range(&mut self, start: usize, len: usize) -> Result<()> {
        with_any!(self.dtype(), T => {
            self.slice_mut::<T>()?[start..start + len].fill(T::default());
            Ok(())
        })
    }
    fn write_at(&mut self, start: usize, src: &CpuStorage, accumulate: bool) -> Result<()> {
        with_any!(self.dtype(), T => {
            let s = src.slice::<T>()?;
            let dst = &mut self.slice_mut::<T>()?[start..start + s.len()];
            let run = |(d, s): (&mut [T], &[T])| {
                if accumulate {
                    d.iter_mut().zip(s).for_each(|(d, &s)| *d += s);
                } else {
                    d.copy_from_slice(s);
                }
            };
            if s.len() < super::PARALLEL_MIN {
                run((dst, s));
            } else {
                dst.par_chunks_mut(super::CHUNK).zip(s.par_chunks(super::CHUNK)).for_each(run);
            }
            Ok(())
        })
    }
    fn append(&mut self, src: &CpuStorage) -> Result<bool> {
        with_any!(self.dtype(), T => {
            let src = src.slice::<T>()?;
            Ok(T::buffer_mut(self).is_some_and(|b| b.extend(src)))
        })
    }
    fn try_clone(&self) -> Result<CpuStorage> {
        Ok(match self {
            CpuStorage::F32(b) => CpuStorage::F32(b.copied()),
            CpuStorage::F64(b) => CpuStorage::F64(b.copied()),
            CpuStorage::I64(b) => CpuStorage::I64(b.copied()),
        })
    }
    fn to_dtype(&self, dtype: DType) -> Result<CpuStorage> {
        fn cast<T: Element + num_traits::AsPrimitive<U>, U: Element>(x: &[T]) -> CpuStorage {
            put(super::map(x, |x| x.as_()))
        }
        with_any!(self.dtype(), T => {
            let x = self.slice::<T>()?;
            Ok(match dtype {
                DType::F32 => cast::<T, f32>(x),
                DType::F64 => cast::<T, f64>(x),
                DType::I64 => cast::<T, i64>(x),
            })
        })
    }

    fn unary(&self, op: Unary) -> Result<CpuStorage> {
        with_float!(self.dtype(), T => Ok(put(super::unary::forward::<T>(self.slice()?, op))))
    }
    fn unary_backward(&self, op: Unary, x: &CpuStorage, y: &CpuStorage) -> Result<CpuStorage> {
        with_float!(self.dtype(), T => {
            Ok(put(super::unary::backward::<T>(self.slice()?, x.slice()?, y.slice()?, op)))
        })
    }
    fn binary(&self, op: Binary, rhs: &CpuStorage, s: &Broadcast) -> Result<CpuStorage> {
        with_float!(self.dtype(), T => {
            let (a, b) = (self.slice::<T>()?, rhs.slice::<T>()?);
            Ok(put(match op {
                Binary::Add => zip_broadcast(a, b, s, |x, y| x + y),
                Binary::Sub => zip_broadcast(a, b, s, |x, y| x - y),
                Binary::Mul => zip_broadcast(a, b, s, |x, y| x * y),
                Binary::Div => zip_broadcast(a, b, s, |x, y| x / y),
            }))
        })
    }
    fn compare(&self, op: Compare, rhs: &CpuStorage, s: &Broadcast) -> Result<CpuStorage> {
        with_any!(self.dtype(), T => {
            let (a, b) = (self.slice::<T>()?, rhs.slice::<T>()?);
            Ok(put(match op {
                Compare::Eq => zip_broadcast(a, b, s, |x, y| (x == y) as i64),
                Compare::Ne => zip_broadcast(a, b, s, |x, y| (x != y) as i64),
                Compare::Lt => zip_broadcast(a, b, s, |x, y| (x < y) as i64),
                Compare::Le => zip_broadcast(a, b, s, |x, y| (x <= y) as i64),
                Compare::Gt => zip_broadcast(a, b, s, |x, y| (x > y) as i64),
                Compare::Ge => zip_broadcast(a, b, s, |x, y| (x >= y) as i64),
            }))
        })
    }
    fn where_cond(&self, a: &CpuStorage, b: &CpuStorage) -> Result<CpuStorage> {
        let cond = self.truths();
        with_any!(a.dtype(), T => {
            let (x, y) = (a.slice::<T>()?, b.slice::<T>()?);
            let picked = cond.iter().zip(x.iter().zip(y));
            Ok(put(picked.map(|(&c, (&x, &y))| if c { x } else { y }).collect()))
        })
    }
    fn add_assign(&mut self, other: &CpuStorage) -> Result<()> {
        with_float!(self.dtype(), T => {
            super::add_assign(self.slice_mut::<T>()?, other.slice::<T>()?);
            Ok(())
        })
    }

    fn strided(&self, dims: &[usize], strides: &[usize]) -> Result<CpuStorage> {
        with_any!(self.dtype(), T => Ok(put(super::gather_strided(self.slice::<T>()?, dims, strides))))
    }
    fn narrow(&self, at: Around, start: usize, len: usize) -> Result<CpuStorage> {
        let Around { outer, n, inner } = at;
        with_any!(self.dtype(), T => {
            Ok(put(super::narrow(self.slice::<T>()?, outer, n, inner, start, len)))
        })
    }
    fn pad(&self, at: Around, start: usize, len: usize) -> Result<CpuStorage> {
        let Around { outer, n, inner } = at;
        with_any!(self.dtype(), T => {
            let mut base = vec![T::default(); outer * n * inner];
            super::copy_block(self.slice::<T>()?, &mut base, outer, len, n, inner, start);
            Ok(put(base))
        })
    }
    fn concat(parts: &[&CpuStorage], outer: usize, sizes: &[usize], inner: usize) -> Result<Self> {
        let total: usize = sizes.iter().sum();
        let dtype = parts.first().map_or(DType::F32, |p| p.dtype());
        with_any!(dtype, T => {
            let parts: Vec<&[T]> = parts.iter().map(|p| p.slice::<T>()).collect::<Result<_>>()?;
            // Each outer row's blocks appended in turn: no zeroed output written over (a step
            // of generation concatenates its whole key/value cache).
            let mut out = Vec::with_capacity(outer * total * inner);
            for o in 0..outer {
                for (p, &n) in parts.iter().zip(sizes) {
                    out.extend_from_slice(&p[o * n * inner..(o + 1) * n * inner]);
                }
            }
            Ok(put(out))
        })
    }
    fn index_select(&self, ids: &CpuStorage, at: Around) -> Result<CpuStorage> {
        let (Around { outer, n, inner }, idx) = (at, ids.indices()?);
        with_any!(self.dtype(), T => {
            Ok(put(super::index_select(self.slice::<T>()?, outer, n, inner, &idx)))
        })
    }
    fn index_add(&self, ids: &CpuStorage, at: Around) -> Result<CpuStorage> {
        let (Around { outer, n, inner }, idx) = (at, ids.indices()?);
        with_float!(self.dtype(), T => {
            Ok(put(super::index_add(self.slice::<T>()?, outer, n, inner, &idx)))
        })
    }
    fn gather(&self, ids: &CpuStorage, at: Around, m: usize) -> Result<CpuStorage> {
        let (Around { outer, n, inner }, idx) = (at, ids.indices()?);
        with_any!(self.dtype(), T => {
            Ok(put(super::gather_dim(self.slice::<T>()?, outer, n, inner, m, &idx)))
        })
    }
    fn scatter_add(&self, ids: &CpuStorage, src: &Self, at: Around, m: usize) -> Result<Self> {
        let (Around { outer, n, inner }, idx) = (at, ids.indices()?);
        with_float!(self.dtype(), T => {
            let mut base = self.slice::<T>()?.to_vec();
            super::scatter_add_dim(&mut base, outer, n, inner, m, &idx, src.slice::<T>()?);
            Ok(put(base))
        })
    }

    fn sum(&self, at: Around) -> Result<CpuStorage> {
        let Around { outer, n, inner } = at;
        with_float!(self.dtype(), T => Ok(put(super::sum_dim(self.slice::<T>()?, outer, n, inner))))
    }
    fn extreme(&self, at: Around, largest: bool) -> Result<(CpuStorage, CpuStorage)> {
        let Around { outer, n, inner } = at;
        with_float!(self.dtype(), T => {
            let (values, idx) = super::extreme_dim(self.slice::<T>()?, outer, n, inner, largest);
            Ok((put(values), put(idx)))
        })
    }
    fn softmax(&self, at: Around, log: bool) -> Result<CpuStorage> {
        let Around { outer, n, inner } = at;
        with_float!(self.dtype(), T => {
            Ok(put(super::softmax_dim(self.slice::<T>()?, outer, n, inner, log)))
        })
    }
    fn sum_squares(&self) -> Result<f64> {
        with_float!(self.dtype(), T => Ok(super::optim::sum_squares(self.slice::<T>()?)))
    }

    fn matmul(&self, rhs: &CpuStorage, p: &Products) -> Result<CpuStorage> {
        with_float!(self.dtype(), T => {
            let a = super::MatRef {
                data: self.slice::<T>()?,
                row_stride: p.a_strides.0,
                col_stride: p.a_strides.1,
            };
            let b = super::MatRef {
                data: rhs.slice::<T>()?,
                row_stride: p.b_strides.0,
                col_stride: p.b_strides.1,
            };
            let mkn = (p.m, p.k, p.n);
            Ok(put(super::matmul_batched(a, &p.a_offsets, b, &p.b_offsets, mkn, p.threads)))
        })
    }
    fn affine(&self, w: &CpuStorage, bias: &CpuStorage, m: usize, k: usize) -> Result<Self> {
        with_float!(self.dtype(), T => {
            let x = super::dense(self.slice::<T>()?, k);
            let wt = super::dense(w.slice::<T>()?, k).t(); // Wᵀ, read transposed
            Ok(put(super::affine(x, wt, bias.slice::<T>()?, m, k)))
        })
    }

    fn pack_weight(&self, precision: Precision, n: usize, k: usize) -> Result<Saved> {
        Ok(Saved::new(super::PackedCpu::pack(precision, self.slice::<f32>()?, n, k)?))
    }
    fn packed_affine(&self, w: &Saved, bias: Option<&Self>, m: usize) -> Result<Self> {
        let x = self.slice::<f32>()?;
        let bias = bias.map(|b| b.slice::<f32>()).transpose()?;
        Ok(put(w.get::<super::PackedCpu>("linear_packed")?.affine(x, bias, m)))
    }
    fn packed_feed_forward(
        &self,
        first: (&Saved, Option<&Self>),
        between: Option<Unary>,
        second: (&Saved, Option<&Self>),
        m: usize,
    ) -> Result<Self> {
        const OP: &str = "feed_forward_packed";
        let (w1, w2) =
            (first.0.get::<super::PackedCpu>(OP)?, second.0.get::<super::PackedCpu>(OP)?);
        let b1 = first.1.map(|b| b.slice::<f32>()).transpose()?;
        let b2 = second.1.map(|b| b.slice::<f32>()).transpose()?;
        Ok(put(w1.feed_forward(b1, between, w2, b2, self.slice::<f32>()?, m)))
    }
    fn unpack_weight(w: &Saved, _device: Device) -> Result<Self> {
        Ok(put(w.get::<super::PackedCpu>("dequantize")?.dequantize()))
    }
    fn cross_entropy(&self, targets: &CpuStorage, c: usize, ignore: i64) -> Result<(Self, Saved)> {
        let kept: Vec<Option<usize>> =
            targets.slice::<i64>()?.iter().map(|&t| (t != ignore).then_some(t as usize)).collect();
        with_float!(self.dtype(), T => {
            let (loss, lse) = super::loss::nll_forward(self.slice::<T>()?, c, &kept);
            Ok((put(vec![loss]), Saved::new((lse, kept))))
        })
    }
    fn cross_entropy_backward(&self, saved: &Saved, scale: f64) -> Result<CpuStorage> {
        with_float!(self.dtype(), T => {
            let (lse, kept) = saved.get::<(Vec<T>, Vec<Option<usize>>)>("cross_entropy")?;
            let c = self.len() / kept.len().max(1);
            Ok(put(super::loss::nll_backward(self.slice::<T>()?, lse, c, kept, scale)))
        })
    }
    fn layer_norm(&self, w: &Self, b: &Self, d: usize, eps: f64) -> Result<(Self, Saved)> {
        with_float!(self.dtype(), T => {
            let x = self.slice::<T>()?;
            let (y, stats) = super::norm::forward(x, w.slice::<T>()?, b.slice::<T>()?, d, eps);
            Ok((put(y), Saved::new(stats)))
        })
    }
    fn layer_norm_backward(
        &self,
        x: &Self,
        w: &Self,
        saved: &Saved,
        d: usize,
    ) -> Result<(Self, Self, Self)> {
        with_float!(self.dtype(), T => {
            let stats = saved.get::<Vec<(T, T)>>("layer_norm")?;
            let (dy, x, w) = (self.slice::<T>()?, x.slice::<T>()?, w.slice::<T>()?);
            let (dx, dw, db) = super::norm::backward(dy, x, w, stats, d);
            Ok((put(dx), put(dw), put(db)))
        })
    }
    fn attention(
        &self,
        k: &Self,
        v: &Self,
        mask: Option<&Self>,
        d: &AttentionDims,
    ) -> Result<(Self, Saved)> {
        let allowed = mask.map(|m| m.truths());
        with_float!(self.dtype(), T => {
            let (q, k, v) = (self.slice::<T>()?, k.slice::<T>()?, v.slice::<T>()?);
            let (out, lse) = super::attention_forward(q, k, v, allowed.as_deref(), d);
            Ok((put(out), Saved::new((lse, allowed))))
        })
    }
    fn block_step(
        &self,
        blocks: &[BlockParams<'_, Self>],
        caches: &mut [&mut Self],
    ) -> Result<Self> {
        with_float!(self.dtype(), T => {
            let blocks =
                blocks.iter().map(|p| p.map(|s| s.slice::<T>())).collect::<Result<Vec<_>>>()?;
            let mut caches =
                caches.iter_mut().map(|c| c.slice_mut::<T>()).collect::<Result<Vec<_>>>()?;
            Ok(put(super::block_step(self.slice::<T>()?, &blocks, &mut caches)))
        })
    }
    fn attention_backward(
        &self,
        q: &Self,
        k: &Self,
        v: &Self,
        out: &Self,
        saved: &Saved,
        d: &AttentionDims,
    ) -> Result<(Self, Self, Self)> {
        with_float!(self.dtype(), T => {
            let (lse, allowed) = saved.get::<(Vec<T>, Option<Vec<bool>>)>("attention")?;
            let (dq, dk, dv) = super::attention_backward(
                self.slice::<T>()?,
                q.slice::<T>()?,
                k.slice::<T>()?,
                v.slice::<T>()?,
                out.slice::<T>()?,
                lse,
                allowed.as_deref(),
                d,
            );
            Ok((put(dq), put(dk), put(dv)))
        })
    }
    fn conv2d(
        &self,
        w: &Self,
        bias: Option<&Self>,
        o: usize,
        g: &Window,
        relu: bool,
    ) -> Result<Self> {
        with_float!(self.dtype(), T => {
            let bias = bias.map(|b| b.slice::<T>()).transpose()?;
            Ok(put(super::conv2d(self.slice::<T>()?, w.slice::<T>()?, bias, o, g, relu)))
        })
    }
    fn conv2d_backward(
        &self,
        x: &Self,
        w: &Self,
        o: usize,
        g: &Window,
        need_input: bool,
        relu_out: Option<&Self>,
    ) -> Result<(Option<Self>, Self, Self)> {
        with_float!(self.dtype(), T => {
            let (grad, x, w) = (self.slice::<T>()?, x.slice::<T>()?, w.slice::<T>()?);
            let y = relu_out.map(|y| y.slice::<T>()).transpose()?;
            let (dx, dw, db) = super::conv2d_backward(grad, x, w, o, g, need_input, y);
            Ok((dx.map(put), put(dw), put(db)))
        })
    }
    fn max_pool(&self, g: &Window) -> Result<(CpuStorage, Saved)> {
        with_float!(self.dtype(), T => {
            let (y, arg) = super::max_pool(self.slice::<T>()?, g);
            Ok((put(y), Saved::new(arg)))
        })
    }
    fn max_pool_backward(&self, saved: &Saved, g: &Window) -> Result<CpuStorage> {
        let arg = saved.get::<Vec<u32>>("max_pool")?;
        with_float!(self.dtype(), T => Ok(put(super::max_pool_backward(self.slice::<T>()?, arg, g))))
    }
    fn recurrence(
        &self,
        cell: Cell,
        w_hh: &Self,
        h0: &Self,
        c0: &Self,
        mask: Option<&Self>,
        d: RecurrentDims,
    ) -> Result<(Self, Saved)> {
        let mask = mask.map(|m| m.truths());
        with_float!(self.dtype(), T => {
            let (x, w) = (self.slice::<T>()?, w_hh.slice::<T>()?);
            let (h0, c0) = (h0.slice::<T>()?, c0.slice::<T>()?);
            let (packed, saved) =
                super::recurrence_forward(cell, x, w, h0, c0, mask.as_deref(), d);
            Ok((put(packed), Saved::new((saved, mask))))
        })
    }
    fn recurrence_backward(
        &self,
        cell: Cell,
        w_hh: &Self,
        saved: &Saved,
        d: RecurrentDims,
    ) -> Result<(Self, Self, Self, Self)> {
        with_float!(self.dtype(), T => {
            let (saved, mask) = saved.get::<(RecurrentSaved<T>, Option<Vec<bool>>)>("recurrence")?;
            let (grad, w) = (self.slice::<T>()?, w_hh.slice::<T>()?);
            let (dx, dw, dh, dc) =
                super::recurrence_backward(cell, grad, w, saved, mask.as_deref(), d);
            Ok((put(dx), put(dw), put(dh), put(dc)))
        })
    }

    fn update(
        &mut self,
        start: usize,
        grad: &Self,
        slots: &mut [&mut Self],
        rule: &Update,
    ) -> Result<()> {
        with_float!(self.dtype(), T => {
            let g = grad.slice::<T>()?;
            let mut state = Vec::with_capacity(slots.len());
            for s in slots.iter_mut() {
                state.push(elements(s.slice_mut::<T>()?, start, g.len())?);
            }
            super::optim::update(elements(self.slice_mut::<T>()?, start, g.len())?, g, &mut state, rule);
            Ok(())
        })
    }
    fn scale(&mut self, factor: f64) -> Result<()> {
        with_float!(self.dtype(), T => {
            super::optim::scale(self.slice_mut::<T>()?, factor);
            Ok(())
        })
    }
}

/// Elements `start..start + len` of `s`, or an error naming `update`.
fn elements<T>(s: &mut [T], start: usize, len: usize) -> Result<&mut [T]> {
    let n = s.len();
    s.get_mut(start..start.saturating_add(len))
        .ok_or_else(|| Error::shape("update", format!("{len} elements from {start} of {n}")))
}

/// `f` pairwise over two operands broadcast to the output's shape (equal shapes: a plain zip).
fn zip_broadcast<T: Copy + Send + Sync, V: Copy + Send + Sync>(
    a: &[T],
    b: &[T],
    s: &Broadcast,
    f: impl Fn(T, T) -> V + Send + Sync,
) -> Vec<V> {
    if s.lhs == s.rhs {
        super::zip(a, b, f)
    } else {
        let (sa, sb) = (broadcast_strides(s.lhs, s.out), broadcast_strides(s.rhs, s.out));
        super::zip_broadcast(a, &sa, b, &sb, s.out.dims(), f)
    }
}
