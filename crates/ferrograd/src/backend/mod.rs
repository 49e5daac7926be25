//! What a device must provide: the one interface every kernel sits behind. Ops in `ops/` check
//! shapes, record the graph and call these methods on a tensor's [`Storage`]; `storage.rs` is
//! the one place that dispatches on the device, and `cpu/` is today's implementation.
//!
//! The interface is shaped for an accelerator as much as for the host: every method takes and
//! returns whole buffers of one device (a kernel launch on that device's stream, which may run
//! asynchronously — the host waits only where it reads data back), what a fused forward keeps
//! for its backward stays the backend's own ([`Saved`]), and index and mask tensors are
//! passed as buffers, not read out on the host first. A second backend is a new folder here,
//! one `Device` variant and one `Storage` arm; no op, module or model changes.
//!
//! [`Storage`]: crate::storage::Storage

pub(crate) mod cpu;

use crate::{DType, Device, Precision, Result, Shape};
use std::any::Any;

/// Element-wise functions of one tensor; each backend knows its forward and its derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unary {
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    /// Exact GELU, `x Φ(x)`.
    Gelu,
    /// GELU's tanh approximation (GPT-2's).
    GeluTanh,
    /// `xᵖ`
    Pow(f64),
    /// `a·x + b`
    Affine(f64, f64),
}

impl Unary {
    /// Whether the derivative reads the input and the output.
    pub fn reads(self) -> (bool, bool) {
        match self {
            Unary::Exp | Unary::Sqrt | Unary::Tanh | Unary::Sigmoid => (false, true),
            Unary::Affine(..) => (false, false),
            _ => (true, false),
        }
    }
}

/// Element-wise arithmetic of two tensors (broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// Element-wise comparisons (broadcast), giving 1/0 as i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The shapes of a broadcasting element-wise op: each operand's and the output's.
pub(crate) struct Broadcast<'a> {
    pub lhs: &'a Shape,
    pub rhs: &'a Shape,
    pub out: &'a Shape,
}

/// A batch of products `op(a) · op(b)`: each operand read through its (row, column) strides,
/// the i-th product's operands starting at `a_offsets[i]` and `b_offsets[i]`.
pub(crate) struct Products {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a_strides: (usize, usize),
    pub b_strides: (usize, usize),
    pub a_offsets: Vec<usize>,
    pub b_offsets: Vec<usize>,
    /// Whether the products may use every thread (or only the calling one).
    pub threads: bool,
}

/// A view of a tensor as (outer, n, inner) around one dimension of size `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Around {
    pub outer: usize,
    pub n: usize,
    pub inner: usize,
}

/// The sizes of one attention call; with `causal`, query i (at position S − T + i) sees keys
/// 0..=S − T + i.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_size: usize,
    pub causal: bool,
}

/// A pre-norm transformer block's parameters as one backend holds them, for the fused step
/// of one new token ([`BackendStorage::block_step`]): each layer's (weight, bias), the
/// weights row-major (out, in) as `linear` takes them.
pub(crate) struct BlockParams<'a, S: ?Sized> {
    pub heads: usize,
    pub attention_norm: [&'a S; 2],
    pub attention_eps: f64,
    pub query: [&'a S; 2],
    pub key: [&'a S; 2],
    pub value: [&'a S; 2],
    pub output: [&'a S; 2],
    pub ff_norm: [&'a S; 2],
    pub ff_eps: f64,
    pub ff_in: [&'a S; 2],
    pub activation: Option<Unary>,
    pub ff_out: [&'a S; 2],
}

impl<'a, S: ?Sized> BlockParams<'a, S> {
    /// The same parameters through `f` (from one backend's storage to another's view of it).
    pub fn map<U: ?Sized>(
        &self,
        mut f: impl FnMut(&'a S) -> Result<&'a U>,
    ) -> Result<BlockParams<'a, U>> {
        let mut pair = |[w, b]: [&'a S; 2]| -> Result<[&'a U; 2]> { Ok([f(w)?, f(b)?]) };
        Ok(BlockParams {
            heads: self.heads,
            attention_norm: pair(self.attention_norm)?,
            attention_eps: self.attention_eps,
            query: pair(self.query)?,
            key: pair(self.key)?,
            value: pair(self.value)?,
            output: pair(self.output)?,
            ff_norm: pair(self.ff_norm)?,
            ff_eps: self.ff_eps,
            ff_in: pair(self.ff_in)?,
            activation: self.activation,
            ff_out: pair(self.ff_out)?,
        })
    }
}

/// The sizes of one convolution or pooling: input, kernel, stride, padding and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The cell a recurrence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// `h = tanh(W x + U h)` (PyTorch's `nn.RNN`).
    Tanh,
    /// Long short-term memory (PyTorch's `nn.LSTM`).
    Lstm,
}

impl Cell {
    /// Gates per hidden unit: LSTM 4 (i, f, g, o as PyTorch orders them), tanh 1.
    pub fn gates(self) -> usize {
        match self {
            Cell::Tanh => 1,
            Cell::Lstm => 4,
        }
    }
}

/// The sizes of one recurrence: batch, time, hidden size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecurrentDims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
}

/// One optimizer update of a parameter `w` from its gradient `g`, with the state slots it
/// names (PyTorch's formulas; the constants of this step already folded in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// SGD without momentum: `w ← w − lr (g + λ w)`. No state.
    Sgd { lr: f64, weight_decay: f64 },
    /// SGD with a momentum buffer `b ← μ b + (g + λ w)` (`b ← g + λ w` on the first step),
    /// then `w ← w − lr b`, or with Nesterov `w ← w − lr (g + λ w + μ b)`. One slot.
    Momentum { lr: f64, momentum: f64, nesterov: bool, weight_decay: f64, first: bool },
    /// Adam / AdamW: `w ← w·decay`, `g ← g + l2·w`, `m ← β₁m + (1−β₁)g`,
    /// `v ← β₂v + (1−β₂)g²`, `w ← w − scale·m / (√v + eps_c2s)`. Two slots (m, v).
    Adam { beta1: f64, beta2: f64, scale: f64, eps_c2s: f64, decay: f64, l2: f64 },
}

impl Update {
    /// State slots the update reads and writes.
    pub fn slots(&self) -> usize {
        match self {
            Update::Sgd { .. } => 0,
            Update::Momentum { .. } => 1,
            Update::Adam { .. } => 2,
        }
    }
}

/// Data in the form of the backend that made it (host vectors for the CPU, device buffers for
/// an accelerator), which only that backend reads: what a fused forward keeps for its
/// backward, a weight packed for low-precision products.
pub(crate) struct Saved(Box<dyn Any + Send + Sync>);

impl Saved {
    pub fn new<T: Any + Send + Sync>(value: T) -> Saved {
        Saved(Box::new(value))
    }
    pub fn get<T: Any>(&self, op: &str) -> Result<&T> {
        self.0.downcast_ref().ok_or_else(|| {
            crate::Error::autograd(op, "saved state comes from another backend or dtype")
        })
    }
}

/// The interface of one device's tensor data. Every method is one kernel (or a fused group of
/// them) over whole buffers of this device; operands come from one device, checked by the
/// dispatch in `storage.rs`. Shapes are already checked by the op; a backend reports only
/// what depends on the data (an index out of range) or on itself (a dtype it lacks).
pub(crate) trait BackendStorage: Sized + Send + Sync {
    fn dtype(&self) -> DType;
    fn len(&self) -> usize;
    fn device(&self) -> Device;
    /// Elements `start..start + len`, sharing this buffer's memory (a gradient in the flat
    /// store).
    fn view(&self, start: usize, len: usize) -> Self;
    /// Whether no other handle (a view) shares this memory, so that it may be written.
    fn is_unique(&self) -> bool;
    /// Whether `other` is a view of the same memory.
    fn shares_memory(&self, other: &Self) -> bool;
    /// `len` zeros of `dtype` on this buffer's device.
    fn zeros(&self, len: usize, dtype: DType) -> Result<Self>;
    /// `len` elements for a flat gradient bucket, their values unspecified (memory of an
    /// earlier bucket may be reused): every element is written before it is read, by
    /// `write_at` or `zero_range`.
    fn bucket(&self, len: usize, dtype: DType) -> Result<Self>;
    /// Elements `start..start + len` set to zero, in place.
    fn zero_range(&mut self, start: usize, len: usize) -> Result<()>;
    /// `src` copied (or, with `accumulate`, added) into elements `start..start + src.len()`,
    /// in place; fails when another handle shares this memory.
    fn write_at(&mut self, start: usize, src: &Self, accumulate: bool) -> Result<()>;
    /// `src`'s elements added at the end, in place, growing the memory as a `Vec` grows;
    /// false (and nothing changed) where this memory cannot grow in place (views share it).
    fn append(&mut self, src: &Self) -> Result<bool>;
    /// A copy of the data in a new buffer of the same device.
    fn try_clone(&self) -> Result<Self>;
    /// The same values in `dtype` (floats to integers truncate toward zero).
    fn to_dtype(&self, dtype: DType) -> Result<Self>;

    // ---- element-wise -----------------------------------------------------------------
    fn unary(&self, op: Unary) -> Result<Self>;
    /// `self` is the output's gradient; `x` the input, `y` the output.
    fn unary_backward(&self, op: Unary, x: &Self, y: &Self) -> Result<Self>;
    fn binary(&self, op: Binary, rhs: &Self, shapes: &Broadcast) -> Result<Self>;
    fn compare(&self, op: Compare, rhs: &Self, shapes: &Broadcast) -> Result<Self>;
    /// Where `self` (any dtype, equally long) is nonzero `a`, else `b`.
    fn where_cond(&self, a: &Self, b: &Self) -> Result<Self>;
    /// `self += other` in place (equal lengths, one float dtype).
    fn add_assign(&mut self, other: &Self) -> Result<()>;

    // ---- moving elements ----------------------------------------------------------------
    /// Elements of `dims` read through `strides` (0 along broadcast dimensions).
    fn strided(&self, dims: &[usize], strides: &[usize]) -> Result<Self>;
    /// `len` entries of the middle dimension from `start`.
    fn narrow(&self, at: Around, start: usize, len: usize) -> Result<Self>;
    /// `narrow`'s adjoint: `self` (with `len` entries in the middle) placed at `start` of a
    /// zero tensor whose middle dimension has `at.n` entries.
    fn pad(&self, at: Around, start: usize, len: usize) -> Result<Self>;
    /// The parts joined along the middle dimension; part i has `sizes[i]` entries there.
    fn concat(parts: &[&Self], outer: usize, sizes: &[usize], inner: usize) -> Result<Self>;
    /// Entries `ids` (i64, each in `[0, at.n)`) of the middle dimension.
    fn index_select(&self, ids: &Self, at: Around) -> Result<Self>;
    /// `index_select`'s adjoint: `self`'s entries summed into a zero tensor with `at.n`.
    fn index_add(&self, ids: &Self, at: Around) -> Result<Self>;
    /// `out[o, j, i] = self[o, ids[o, j, i], i]`, `ids` with `m` entries in the middle.
    fn gather(&self, ids: &Self, at: Around, m: usize) -> Result<Self>;
    /// `self` with `src` added at `ids` (gather's adjoint), as a new buffer.
    fn scatter_add(&self, ids: &Self, src: &Self, at: Around, m: usize) -> Result<Self>;

    // ---- reductions ---------------------------------------------------------------------
    fn sum(&self, at: Around) -> Result<Self>;
    /// The largest (or smallest) value along the middle and the (first) index holding it.
    fn extreme(&self, at: Around, largest: bool) -> Result<(Self, Self)>;
    /// The softmax (or log-softmax) along the middle dimension.
    fn softmax(&self, at: Around, log: bool) -> Result<Self>;
    /// Σ x² over all elements, in f64.
    fn sum_squares(&self) -> Result<f64>;

    // ---- products -----------------------------------------------------------------------
    fn matmul(&self, rhs: &Self, p: &Products) -> Result<Self>;
    /// `x · Wᵀ + b` for `self` = x (m, k), an (n, k) `w` and an (n,) bias.
    fn affine(&self, w: &Self, bias: &Self, m: usize, k: usize) -> Result<Self>;
    /// `self`, an (n, k) f32 weight, packed for products in `precision`.
    fn pack_weight(&self, precision: Precision, n: usize, k: usize) -> Result<Saved>;
    /// `x · Wᵀ (+ b)` in f32 for `self` = x (m, k) f32 and a weight from `pack_weight`.
    fn packed_affine(&self, w: &Saved, bias: Option<&Self>, m: usize) -> Result<Self>;
    /// `between(x · W₁ᵀ + b₁) · W₂ᵀ + b₂` for `self` = x (m, k) f32 and packed W₁ (h, k),
    /// W₂ (n, h): the values of `packed_affine`, `between`, `packed_affine`, computed together.
    fn packed_feed_forward(
        &self,
        first: (&Saved, Option<&Self>),
        between: Option<Unary>,
        second: (&Saved, Option<&Self>),
        m: usize,
    ) -> Result<Self>;
    /// The (n, k) f32 values a packed weight's products use.
    fn unpack_weight(w: &Saved, device: Device) -> Result<Self>;

    // ---- fused kernels ------------------------------------------------------------------
    /// Mean cross-entropy of (N, C) scores against i64 targets (rows at `ignore` left out):
    /// the loss and what backward needs.
    fn cross_entropy(&self, targets: &Self, c: usize, ignore: i64) -> Result<(Self, Saved)>;
    /// The scores' gradient for an incoming loss gradient `scale`.
    fn cross_entropy_backward(&self, saved: &Saved, scale: f64) -> Result<Self>;
    fn layer_norm(&self, w: &Self, b: &Self, d: usize, eps: f64) -> Result<(Self, Saved)>;
    /// `self` is dy; returns dx, dw, db.
    fn layer_norm_backward(
        &self,
        x: &Self,
        w: &Self,
        saved: &Saved,
        d: usize,
    ) -> Result<(Self, Self, Self)>;
    fn attention(
        &self,
        k: &Self,
        v: &Self,
        mask: Option<&Self>,
        d: &AttentionDims,
    ) -> Result<(Self, Saved)>;
    /// `self` is the output's gradient; returns dq, dk, dv.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self,
        k: &Self,
        v: &Self,
        out: &Self,
        saved: &Saved,
        d: &AttentionDims,
    ) -> Result<(Self, Self, Self)>;
    /// One step of pre-norm transformer blocks, one after another, for the single token
    /// `self` (D,): the last block's output (D,). `caches` holds each block's keys and values,
    /// (S + 1, D) each with one more row at the end, which the step fills with this token's.
    fn block_step(
        &self,
        blocks: &[BlockParams<'_, Self>],
        caches: &mut [&mut Self],
    ) -> Result<Self>;
    fn conv2d(
        &self,
        w: &Self,
        bias: Option<&Self>,
        o: usize,
        g: &Window,
        relu: bool,
    ) -> Result<Self>;
    /// `self` is the output's gradient; returns dx (when asked), dw, db.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        x: &Self,
        w: &Self,
        o: usize,
        g: &Window,
        need_input: bool,
        relu_out: Option<&Self>,
    ) -> Result<(Option<Self>, Self, Self)>;
    fn max_pool(&self, g: &Window) -> Result<(Self, Saved)>;
    fn max_pool_backward(&self, saved: &Saved, g: &Window) -> Result<Self>;
    /// The packed (B, T+2, H) result: outputs, final h, final c.
    fn recurrence(
        &self,
        cell: Cell,
        w_hh: &Self,
        h0: &Self,
        c0: &Self,
        mask: Option<&Self>,
        d: RecurrentDims,
    ) -> Result<(Self, Saved)>;
    /// `self` is the packed result's gradient; returns dx, dw_hh, dh0, dc0.
    fn recurrence_backward(
        &self,
        cell: Cell,
        w_hh: &Self,
        saved: &Saved,
        d: RecurrentDims,
    ) -> Result<(Self, Self, Self, Self)>;

    // ---- optimizers ---------------------------------------------------------------------
    /// Elements `start..start + grad's length` of `self` (the weights) and of each state slot
    /// (each as long as `self`) updated in place from `grad`.
    fn update(
        &mut self,
        start: usize,
        grad: &Self,
        slots: &mut [&mut Self],
        rule: &Update,
    ) -> Result<()>;
    /// Every element multiplied by `factor`, in place.
    fn scale(&mut self, factor: f64) -> Result<()>;
}

/// Describes `shape` around dimension `d`.
pub(crate) fn around(shape: &Shape, d: usize) -> Around {
    let (outer, n, inner) = shape.split_at_dim(d);
    Around { outer, n, inner }
}
