//! A tensor's data on its device: the one place that dispatches on the device. Each method
//! of the backend interface is passed to the backend holding the data; operands on another
//! device are an error naming both (a second backend adds one arm to each match here).

use crate::backend::cpu::CpuStorage;
use crate::backend::{
    Around, AttentionDims, BackendStorage, Binary, BlockParams, Broadcast, Cell, Compare, Products,
    RecurrentDims, Saved, Unary, Update, Window,
};
use crate::{DType, Device, Error, Precision, Result};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Bytes of tensor data alive right now in this process (all threads).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed).max(0) as usize
}

/// Counts an allocation (positive) or its release (negative) in [`live_bytes`].
pub(crate) fn count_bytes(delta: isize) {
    LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
}

#[derive(Debug)]
pub(crate) enum Storage {
    Cpu(CpuStorage),
}

impl Storage {
    /// The host elements to write in place, when nothing else holds them and `T` is their
    /// dtype; a device backend answers with an error naming the op.
    pub(crate) fn host_slice_mut<T: crate::Element>(&mut self, _op: &str) -> Result<&mut [T]> {
        match self {
            Storage::Cpu(s) => s.slice_mut(),
        }
    }
    /// The host data; a device backend answers with an error naming the op that needs it.
    pub(crate) fn cpu(&self, _op: &str) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
        }
    }
}

/// The operand `o` as host data, or an error naming both devices.
fn cpu_operand(o: &Storage) -> Result<&CpuStorage> {
    match o {
        Storage::Cpu(s) => Ok(s),
    }
}

fn cpu_operand_mut(o: &mut Storage) -> Result<&mut CpuStorage> {
    match o {
        Storage::Cpu(s) => Ok(s),
    }
}

/// Runs `$body` in the arm of `$self`'s device, `$s` its data there, `$on` the accessor of
/// operands on that device (an error for any other) and `$wrap` the wrapper of results.
macro_rules! dispatch {
    ($self:expr, |$s:ident, $on:ident, $wrap:ident| $body:expr) => {
        match $self {
            Storage::Cpu($s) => {
                #[allow(unused_variables)]
                let ($on, $wrap) = (cpu_operand, Storage::Cpu);
                $body
            }
        }
    };
}

impl BackendStorage for Storage {
    fn dtype(&self) -> DType {
        dispatch!(self, |s, on, one| s.dtype())
    }
    fn len(&self) -> usize {
        dispatch!(self, |s, on, one| s.len())
    }
    fn device(&self) -> Device {
        dispatch!(self, |s, on, one| s.device())
    }
    fn view(&self, start: usize, len: usize) -> Storage {
        dispatch!(self, |s, on, one| one(s.view(start, len)))
    }
    fn is_unique(&self) -> bool {
        dispatch!(self, |s, on, one| s.is_unique())
    }
    fn shares_memory(&self, other: &Storage) -> bool {
        dispatch!(self, |s, on, one| on(other).is_ok_and(|o| s.shares_memory(o)))
    }
    fn zeros(&self, len: usize, dtype: DType) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.zeros(len, dtype).map(one))
    }
    fn bucket(&self, len: usize, dtype: DType) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.bucket(len, dtype).map(one))
    }
    fn zero_range(&mut self, start: usize, len: usize) -> Result<()> {
        dispatch!(self, |s, on, one| s.zero_range(start, len))
    }
    fn write_at(&mut self, start: usize, src: &Storage, accumulate: bool) -> Result<()> {
        dispatch!(self, |s, on, one| s.write_at(start, on(src)?, accumulate))
    }
    fn append(&mut self, src: &Storage) -> Result<bool> {
        dispatch!(self, |s, on, one| s.append(on(src)?))
    }
    fn try_clone(&self) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.try_clone().map(one))
    }
    fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.to_dtype(dtype).map(one))
    }
    fn unary(&self, op: Unary) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.unary(op).map(one))
    }
    fn unary_backward(&self, op: Unary, x: &Storage, y: &Storage) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.unary_backward(op, on(x)?, on(y)?).map(one))
    }
    fn binary(&self, op: Binary, rhs: &Storage, shapes: &Broadcast) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.binary(op, on(rhs)?, shapes).map(one))
    }
    fn compare(&self, op: Compare, rhs: &Storage, shapes: &Broadcast) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.compare(op, on(rhs)?, shapes).map(one))
    }
    fn where_cond(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.where_cond(on(a)?, on(b)?).map(one))
    }
    fn add_assign(&mut self, other: &Storage) -> Result<()> {
        dispatch!(self, |s, on, one| s.add_assign(on(other)?))
    }
    fn strided(&self, dims: &[usize], strides: &[usize]) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.strided(dims, strides).map(one))
    }
    fn narrow(&self, at: Around, start: usize, len: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.narrow(at, start, len).map(one))
    }
    fn pad(&self, at: Around, start: usize, len: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.pad(at, start, len).map(one))
    }
    fn concat(parts: &[&Storage], outer: usize, sizes: &[usize], inner: usize) -> Result<Storage> {
        let Some(first) = parts.first() else {
            return Err(Error::value("concat", "needs at least one tensor, got none"));
        };
        dispatch!(first, |_s, on, one| {
            let parts = parts.iter().map(|p| on(p)).collect::<Result<Vec<_>>>()?;
            CpuStorage::concat(&parts, outer, sizes, inner).map(one)
        })
    }
    fn index_select(&self, ids: &Storage, at: Around) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.index_select(on(ids)?, at).map(one))
    }
    fn index_add(&self, ids: &Storage, at: Around) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.index_add(on(ids)?, at).map(one))
    }
    fn gather(&self, ids: &Storage, at: Around, m: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.gather(on(ids)?, at, m).map(one))
    }
    fn scatter_add(&self, ids: &Storage, src: &Storage, at: Around, m: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.scatter_add(on(ids)?, on(src)?, at, m).map(one))
    }
    fn sum(&self, at: Around) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.sum(at).map(one))
    }
    fn extreme(&self, at: Around, largest: bool) -> Result<(Storage, Storage)> {
        dispatch!(self, |s, on, one| s.extreme(at, largest).map(|(v, i)| (one(v), one(i))))
    }
    fn softmax(&self, at: Around, log: bool) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.softmax(at, log).map(one))
    }
    fn sum_squares(&self) -> Result<f64> {
        dispatch!(self, |s, on, one| s.sum_squares())
    }
    fn matmul(&self, rhs: &Storage, p: &Products) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.matmul(on(rhs)?, p).map(one))
    }
    fn affine(&self, w: &Storage, bias: &Storage, m: usize, k: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.affine(on(w)?, on(bias)?, m, k).map(one))
    }
    fn pack_weight(&self, precision: Precision, n: usize, k: usize) -> Result<Saved> {
        dispatch!(self, |s, on, one| s.pack_weight(precision, n, k))
    }
    fn packed_affine(&self, w: &Saved, bias: Option<&Storage>, m: usize) -> Result<Storage> {
        dispatch!(self, |s, on, one| {
            let bias = bias.map(on).transpose()?;
            s.packed_affine(w, bias, m).map(one)
        })
    }
    fn packed_feed_forward(
        &self,
        first: (&Saved, Option<&Storage>),
        between: Option<Unary>,
        second: (&Saved, Option<&Storage>),
        m: usize,
    ) -> Result<Storage> {
        dispatch!(self, |s, on, one| {
            let (b1, b2) = (first.1.map(on).transpose()?, second.1.map(on).transpose()?);
            s.packed_feed_forward((first.0, b1), between, (second.0, b2), m).map(one)
        })
    }
    fn unpack_weight(w: &Saved, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => CpuStorage::unpack_weight(w, device).map(Storage::Cpu),
        }
    }
    fn cross_entropy(&self, targets: &Storage, c: usize, ignore: i64) -> Result<(Storage, Saved)> {
        dispatch!(self, |s, on, one| s
            .cross_entropy(on(targets)?, c, ignore)
            .map(|(l, k)| (one(l), k)))
    }
    fn cross_entropy_backward(&self, saved: &Saved, scale: f64) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.cross_entropy_backward(saved, scale).map(one))
    }
    fn layer_norm(&self, w: &Storage, b: &Storage, d: usize, eps: f64) -> Result<(Storage, Saved)> {
        dispatch!(self, |s, on, one| s.layer_norm(on(w)?, on(b)?, d, eps).map(|(y, k)| (one(y), k)))
    }
    fn layer_norm_backward(
        &self,
        x: &Storage,
        w: &Storage,
        saved: &Saved,
        d: usize,
    ) -> Result<(Storage, Storage, Storage)> {
        dispatch!(self, |s, on, one| s
            .layer_norm_backward(on(x)?, on(w)?, saved, d)
            .map(|(a, b, c)| (one(a), one(b), one(c))))
    }
    fn attention(
        &self,
        k: &Storage,
        v: &Storage,
        mask: Option<&Storage>,
        d: &AttentionDims,
    ) -> Result<(Storage, Saved)> {
        dispatch!(self, |s, on, one| {
            let mask = mask.map(on).transpose()?;
            s.attention(on(k)?, on(v)?, mask, d).map(|(o, k)| (one(o), k))
        })
    }
    fn block_step(
        &self,
        blocks: &[BlockParams<'_, Storage>],
        caches: &mut [&mut Storage],
    ) -> Result<Storage> {
        dispatch!(self, |s, on, one| {
            let blocks = blocks.iter().map(|p| p.map(on)).collect::<Result<Vec<_>>>()?;
            let mut caches =
                caches.iter_mut().map(|c| cpu_operand_mut(c)).collect::<Result<Vec<_>>>()?;
            s.block_step(&blocks, &mut caches).map(one)
        })
    }
    fn attention_backward(
        &self,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        saved: &Saved,
        d: &AttentionDims,
    ) -> Result<(Storage, Storage, Storage)> {
        dispatch!(self, |s, on, one| s
            .attention_backward(on(q)?, on(k)?, on(v)?, on(out)?, saved, d)
            .map(|(a, b, c)| (one(a), one(b), one(c))))
    }
    fn conv2d(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        o: usize,
        g: &Window,
        relu: bool,
    ) -> Result<Storage> {
        dispatch!(self, |s, on, one| {
            let bias = bias.map(on).transpose()?;
            s.conv2d(on(w)?, bias, o, g, relu).map(one)
        })
    }
    fn conv2d_backward(
        &self,
        x: &Storage,
        w: &Storage,
        o: usize,
        g: &Window,
        need_input: bool,
        relu_out: Option<&Storage>,
    ) -> Result<(Option<Storage>, Storage, Storage)> {
        dispatch!(self, |s, on, one| {
            let relu_out = relu_out.map(on).transpose()?;
            s.conv2d_backward(on(x)?, on(w)?, o, g, need_input, relu_out)
                .map(|(dx, dw, db)| (dx.map(one), one(dw), one(db)))
        })
    }
    fn max_pool(&self, g: &Window) -> Result<(Storage, Saved)> {
        dispatch!(self, |s, on, one| s.max_pool(g).map(|(y, k)| (one(y), k)))
    }
    fn max_pool_backward(&self, saved: &Saved, g: &Window) -> Result<Storage> {
        dispatch!(self, |s, on, one| s.max_pool_backward(saved, g).map(one))
    }
    fn recurrence(
        &self,
        cell: Cell,
        w_hh: &Storage,
        h0: &Storage,
        c0: &Storage,
        mask: Option<&Storage>,
        d: RecurrentDims,
    ) -> Result<(Storage, Saved)> {
        dispatch!(self, |s, on, one| {
            let mask = mask.map(on).transpose()?;
            s.recurrence(cell, on(w_hh)?, on(h0)?, on(c0)?, mask, d).map(|(p, k)| (one(p), k))
        })
    }
    fn recurrence_backward(
        &self,
        cell: Cell,
        w_hh: &Storage,
        saved: &Saved,
        d: RecurrentDims,
    ) -> Result<(Storage, Storage, Storage, Storage)> {
        dispatch!(self, |s, on, one| s
            .recurrence_backward(cell, on(w_hh)?, saved, d)
            .map(|(a, b, c, e)| (one(a), one(b), one(c), one(e))))
    }
    fn update(
        &mut self,
        start: usize,
        grad: &Storage,
        slots: &mut [&mut Storage],
        rule: &Update,
    ) -> Result<()> {
        dispatch!(self, |s, on, one| {
            let mut state = Vec::with_capacity(slots.len());
            for slot in slots.iter_mut() {
                state.push(cpu_operand_mut(slot)?);
            }
            s.update(start, on(grad)?, &mut state, rule)
        })
    }
    fn scale(&mut self, factor: f64) -> Result<()> {
        dispatch!(self, |s, on, one| s.scale(factor))
    }
}
