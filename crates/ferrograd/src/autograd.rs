//! Reverse-mode autodiff, define-by-run: ops record their inputs and a backward closure when an
//! input needs a gradient; `backward` walks the graph once in reverse topological order, freeing
//! each node's saved buffers as soon as it is past them.

use crate::backend::BackendStorage;
use crate::{DType, Error, Result, Shape, Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Given the gradient of an op's output, the gradients of its inputs (`None`: no gradient).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// The record an op leaves on its output: its inputs and how to send a gradient to them.
pub(crate) struct Node {
    pub(crate) op: &'static str,
    /// Taken (and so freed) when backward passes this node.
    edges: Mutex<Option<(Vec<Tensor>, BackwardFn)>>,
}

impl Node {
    pub(crate) fn new(op: &'static str, inputs: Vec<Tensor>, backward: BackwardFn) -> Node {
        Node { op, edges: Mutex::new(Some((inputs, backward))) }
    }
}

/// Dropping a long chain of nodes one inside the other would recurse once per op (an RNN
/// unrolled over thousands of steps overflows the stack); this unlinks them in a loop instead.
impl Drop for Node {
    fn drop(&mut self) {
        let Some((inputs, backward)) = self.edges.get_mut().ok().and_then(|e| e.take()) else {
            return;
        };
        drop(backward);
        let mut stack = inputs;
        while let Some(t) = stack.pop() {
            if let Some(inputs) = t.into_unique_inputs() {
                stack.extend(inputs);
            }
        }
    }
}

impl Node {
    /// The inputs, taken out of the node (used when its tensor is being dropped).
    pub(crate) fn take_inputs(&mut self) -> Option<Vec<Tensor>> {
        let (inputs, backward) = self.edges.get_mut().ok()?.take()?;
        drop(backward);
        Some(inputs)
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record a graph (they do unless inside `no_grad`).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous recording mode when dropped.
pub struct NoGradGuard {
    previous: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Stops recording on this thread until the guard is dropped: inference costs no graph memory.
///
/// ```
/// use ferrograd::{no_grad, Tensor};
/// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requiring_grad();
/// let y = { let _g = no_grad(); w.mul(&w).unwrap() };
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

/// One leaf's place in a flat gradient buffer.
#[derive(Clone, Debug)]
struct Slot {
    id: TensorId,
    start: usize,
    shape: Shape,
    /// Whether a gradient reached it (an absent one is zeros and has no entry).
    present: bool,
}

/// A part of a backward pass's flat store whose gradients are final: elements `range` of
/// bucket `bucket`, and a copy of them. See [`Tensor::backward_streaming`].
#[derive(Debug)]
pub struct GradientPiece {
    pub bucket: usize,
    pub range: std::ops::Range<usize>,
    pub values: Tensor,
}

/// What [`Tensor::backward_streaming`] hands each finished piece to.
pub type Ready<'a> = dyn FnMut(GradientPiece) -> Result<()> + 'a;

/// How a bucket is cut for reduction, from its end (the last layers' gradients, final first):
/// `first` elements, then `rest` at a time, as PyTorch DDP's first bucket is small so that
/// communication starts early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSizes {
    pub first: usize,
    pub rest: usize,
}

impl PieceSizes {
    /// The pieces of a bucket of `n` elements, the last one first.
    pub fn cuts(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let mut cuts = Vec::new();
        let mut end = n;
        while end > 0 {
            let size = if cuts.is_empty() { self.first } else { self.rest };
            let start = end.saturating_sub(size.max(1));
            cuts.push(start..end);
            end = start;
        }
        cuts
    }
}

/// The gradients one backward pass produced, for each leaf tensor that requires a gradient.
///
/// They live in a flat store: one contiguous buffer per dtype (a bucket), each leaf's gradient
/// a view into it, laid out in a fixed order — the order given to [`Tensor::backward_for`]
/// (a model's parameters in creation order), then any other leaves by creation. A model's
/// whole gradient can so be reduced in a few large pieces ([`Gradients::buckets`]) and
/// rewritten in place ([`Gradients::with_buckets_mut`]).
///
/// ```
/// use ferrograd::Tensor;
/// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap().requiring_grad();
/// let b = Tensor::from_vec(vec![3.0f32], &[1]).unwrap().requiring_grad();
/// let loss = a.sum_all().unwrap().mul(&b.sum_all().unwrap()).unwrap();
/// let grads = loss.backward_for(&[b.clone(), a.clone()]).unwrap();
/// assert_eq!(grads.buckets()[0].to_vec::<f32>().unwrap(), vec![3.0, 3.0, 3.0]); // b, then a
/// assert!(grads.get(&a).unwrap().shares_memory(&grads.buckets()[0]));
/// ```
#[derive(Default, Clone, Debug)]
pub struct Gradients {
    /// Views into the buckets, and gradients given by `set` for leaves without a slot.
    map: HashMap<TensorId, Tensor>,
    /// One flat 1-D buffer per dtype, and the slots laid out in it.
    buckets: Vec<Tensor>,
    layout: Vec<Vec<Slot>>,
}

impl Gradients {
    /// The gradient of `t`, if `t` contributed to the loss.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    /// Replaces the gradient of `t` (as gradient clipping does); written into `t`'s place in
    /// the flat store when it has one and `grad` fits it.
    pub fn set(&mut self, t: &Tensor, grad: Tensor) {
        self.insert_by_id(t.id(), grad);
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        let removed = self.map.remove(&t.id());
        if let Some((b, i)) = self.slot_of(t.id()) {
            self.clear_slot(b, i);
        }
        removed
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The flat buffers, one per dtype, each a 1-D tensor holding every slot's gradient.
    pub fn buckets(&self) -> &[Tensor] {
        &self.buckets
    }

    /// Which bucket holds the gradient of `t`, and its range of elements there.
    pub fn bucket_range(&self, t: &Tensor) -> Option<(usize, std::ops::Range<usize>)> {
        let (b, i) = self.slot_of(t.id())?;
        let slot = &self.layout[b][i];
        Some((b, slot.start..slot.start + slot.shape.numel()))
    }

    /// Runs `f` on the buckets to rewrite them in place (a reduction across processes, a
    /// scaling); every gradient seen through [`Gradients::get`] afterwards shows the change.
    /// A view someone else still holds keeps the old values (its memory is copied first).
    pub fn with_buckets_mut<R>(&mut self, f: impl FnOnce(&mut [Tensor]) -> Result<R>) -> Result<R> {
        // Our own views go first, so the buckets' memory is theirs alone and is written in place.
        for slot in self.layout.iter().flatten().filter(|s| s.present) {
            self.map.remove(&slot.id);
        }
        let kinds: Vec<(usize, crate::DType)> =
            self.buckets.iter().map(|b| (b.numel(), b.dtype())).collect();
        let result = f(&mut self.buckets);
        // A bucket replaced by one of another size or dtype would misplace every slot in it.
        for (b, (&(n, dtype), bucket)) in kinds.iter().zip(self.buckets.iter_mut()).enumerate() {
            if bucket.rank() != 1 || bucket.numel() != n || bucket.dtype() != dtype {
                let found = format!("{} {}", bucket.dtype(), bucket.shape());
                *bucket = Tensor::zeros(&[n], dtype)?;
                self.layout[b].iter_mut().for_each(|s| s.present = false);
                self.refresh_views();
                return Err(Error::shape(
                    "with_buckets_mut",
                    format!("bucket {b} must stay {dtype} [{n}], got {found}; its gradients are cleared"),
                ));
            }
        }
        self.refresh_views();
        result
    }

    /// Writes `values` over elements `start..` of bucket `bucket` (a piece from
    /// [`Tensor::backward_streaming`], reduced across processes).
    pub fn write_piece(&mut self, bucket: usize, start: usize, values: &Tensor) -> Result<()> {
        let Some(b) = self.buckets.get(bucket) else {
            return Err(Error::value(
                "Gradients::write_piece",
                format!("bucket {bucket} of {}", self.buckets.len()),
            ));
        };
        if values.dtype() != b.dtype()
            || start.checked_add(values.numel()).is_none_or(|e| e > b.numel())
        {
            return Err(Error::shape(
                "Gradients::write_piece",
                format!(
                    "{} {} at {start} does not fit bucket {bucket} ({} [{}])",
                    values.dtype(),
                    values.shape(),
                    b.dtype(),
                    b.numel()
                ),
            ));
        }
        self.with_buckets_mut(|buckets| buckets[bucket].write_at(start, values))
    }

    /// Adds `other`'s gradients to these (`+=`), as over several backward passes: bucket by
    /// bucket when both were laid out alike.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        let _g = no_grad();
        if self.map.is_empty() && self.buckets.is_empty() {
            *self = other;
            return Ok(());
        }
        let alike = |a: &[Vec<Slot>], b: &[Vec<Slot>]| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    x.len() == y.len()
                        && x.iter().zip(y).all(|(s, t)| s.id == t.id && s.shape == t.shape)
                })
        };
        let same_dtypes =
            self.buckets.iter().zip(&other.buckets).all(|(a, b)| a.dtype() == b.dtype());
        let loose: Vec<(TensorId, Tensor)> = if alike(&self.layout, &other.layout) && same_dtypes {
            let slotted: HashSet<TensorId> = other.layout.iter().flatten().map(|s| s.id).collect();
            let loose = other.map.into_iter().filter(|(id, _)| !slotted.contains(id)).collect();
            self.with_buckets_mut(|buckets| {
                for (mine, theirs) in buckets.iter_mut().zip(&other.buckets) {
                    mine.storage_for_update("accumulate")?.add_assign(theirs.storage())?;
                }
                Ok(())
            })?;
            for (mine, theirs) in self.layout.iter_mut().zip(&other.layout) {
                for (s, t) in mine.iter_mut().zip(theirs) {
                    s.present |= t.present;
                }
            }
            self.refresh_views();
            loose
        } else {
            other.map.into_iter().collect()
        };
        for (id, g) in loose {
            let g = match self.map.remove(&id) {
                Some(prev) => sum_reusing(prev.detach(), g)?,
                None => g,
            };
            self.insert_by_id(id, g);
        }
        Ok(())
    }

    /// A gradient for the leaf `id`: into its slot when it has one that `g` fits, else beside
    /// the buckets.
    fn insert_by_id(&mut self, id: TensorId, g: Tensor) {
        let fits = |s: &Self, (b, i): (usize, usize)| {
            s.layout[b][i].shape == *g.shape() && s.buckets[b].dtype() == g.dtype()
        };
        if let Some((b, i)) = self.slot_of(id).filter(|&at| fits(self, at)) {
            let start = self.layout[b][i].start;
            let written = self.with_buckets_mut(|buckets| {
                buckets[b].storage_for_update("Gradients")?.write_at(start, g.storage(), false)
            });
            if written.is_ok() {
                self.layout[b][i].present = true;
                self.refresh_views();
                return;
            }
        }
        // Kept beside the buckets: its slot, if it has one, no longer holds it.
        if let Some((b, i)) = self.slot_of(id) {
            self.clear_slot(b, i);
        }
        self.map.insert(id, g);
    }

    /// Slot `i` of bucket `b` marked absent and zeroed, as an absent slot always is (the
    /// bucket's norm and sums count it).
    fn clear_slot(&mut self, b: usize, i: usize) {
        if !self.layout[b][i].present {
            return;
        }
        let (start, len) = (self.layout[b][i].start, self.layout[b][i].shape.numel());
        let id = self.layout[b][i].id;
        let zeroed = self.with_buckets_mut(|buckets| {
            buckets[b].storage_for_update("Gradients")?.zero_range(start, len)
        });
        self.layout[b][i].present = false;
        self.map.remove(&id);
        debug_assert!(zeroed.is_ok(), "a bucket of its own dtype takes zeros");
    }

    fn slot_of(&self, id: TensorId) -> Option<(usize, usize)> {
        self.layout
            .iter()
            .enumerate()
            .find_map(|(b, slots)| slots.iter().position(|s| s.id == id).map(|i| (b, i)))
    }

    /// Every present slot's entry made a view of its bucket again.
    fn refresh_views(&mut self) {
        for (bucket, slots) in self.buckets.iter().zip(&self.layout) {
            for slot in slots.iter().filter(|s| s.present) {
                self.map.insert(slot.id, bucket.view(slot.start, slot.shape.clone()));
            }
        }
    }
}

fn add_into(map: &mut HashMap<TensorId, Tensor>, id: TensorId, g: Tensor) -> Result<()> {
    match map.remove(&id) {
        Some(prev) => map.insert(id, sum_reusing(prev, g)?),
        None => map.insert(id, g),
    };
    Ok(())
}

/// `a + b`, written into whichever of the two buffers nothing else holds (a gradient that is
/// not shared with another input's), else into a new one: a sum without an allocation.
fn sum_reusing(mut a: Tensor, mut b: Tensor) -> Result<Tensor> {
    if a.shape() == b.shape() {
        if add_in_place(&mut a, &b)? {
            return Ok(a);
        }
        if add_in_place(&mut b, &a)? {
            return Ok(b);
        }
    }
    a.add(&b)
}

/// `dst += src` in `dst`'s own buffer, if it is unshared and of `src`'s float dtype.
fn add_in_place(dst: &mut Tensor, src: &Tensor) -> Result<bool> {
    if dst.dtype() != src.dtype() || !dst.dtype().is_float() {
        return Ok(false);
    }
    match dst.unique_storage_mut() {
        Some(d) if d.is_unique() => d.add_assign(src.storage()).map(|()| true),
        _ => Ok(false),
    }
}

impl Tensor {
    /// Gradients of this scalar with respect to every leaf that requires a gradient.
    /// The graph's buffers are freed as the pass goes: a second call on the same graph fails.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let x = Tensor::from_vec(vec![3.0f64], &[1]).unwrap().requiring_grad();
    /// let y = x.mul(&x).unwrap().sum_all().unwrap(); // y = x²
    /// let g = y.backward().unwrap();
    /// assert_eq!(g.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![6.0]);
    /// ```
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::autograd(
                "backward",
                format!(
                    "needs a scalar loss, got shape {}; use backward_with(grad) instead",
                    self.shape()
                ),
            ));
        }
        self.backward_with(&Tensor::ones(self.dims(), self.dtype())?)
    }

    /// [`Tensor::backward`] with the flat store laid out in the order of `leaves` (a model's
    /// parameters, in creation order); leaves not listed come after, by creation. A listed
    /// tensor the loss does not depend on keeps its (zero) place but has no entry.
    pub fn backward_for(&self, leaves: &[Tensor]) -> Result<Gradients> {
        if self.numel() != 1 {
            return self.backward();
        }
        self.backward_into(&Tensor::ones(self.dims(), self.dtype())?, leaves, None)
    }

    /// Backward from this tensor with `grad` as its incoming gradient (same shape).
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
        self.backward_into(grad, &[], None)
    }

    /// [`Tensor::backward_for`] of a scalar, handing each piece of the flat store to `ready`
    /// as soon as no later op of the pass adds to it, cut by `sizes`: a data-parallel step
    /// starts reducing the last layers' gradients while backward computes the first ones'.
    /// Every piece is handed over once, at the latest when the pass ends.
    pub fn backward_streaming(
        &self,
        leaves: &[Tensor],
        sizes: PieceSizes,
        ready: &mut Ready<'_>,
    ) -> Result<Gradients> {
        if self.numel() != 1 {
            return self.backward();
        }
        let one = Tensor::ones(self.dims(), self.dtype())?;
        self.backward_into(&one, leaves, Some((sizes, ready)))
    }

    fn backward_into(
        &self,
        grad: &Tensor,
        order: &[Tensor],
        stream: Option<(PieceSizes, &mut Ready<'_>)>,
    ) -> Result<Gradients> {
        if !self.requires_grad() {
            return Err(Error::autograd(
                "backward",
                "this tensor does not require a gradient: no input was marked with requiring_grad(), or it was computed under no_grad",
            ));
        }
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return Err(Error::shape(
                "backward",
                format!(
                    "gradient is {} {}, the tensor is {} {}",
                    grad.dtype(),
                    grad.shape(),
                    self.dtype(),
                    self.shape()
                ),
            ));
        }
        let _g = no_grad();
        let (nodes, leaves) = topological_order(self)?;
        let mut flat = FlatStore::new(order, leaves)?;
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.detach());
        if self.node().is_none() {
            // The root is itself a leaf: its gradient is the one given.
            flat.add(self, &grad.detach())?;
        }
        let mut stream = match stream {
            Some((sizes, ready)) => Some(Stream::new(&mut flat, &nodes, sizes, ready)?),
            None => None,
        };
        for t in nodes.into_iter().rev() {
            let node = t.node().expect("topological_order keeps only tensors with a node");
            let edges = node
                .edges
                .lock()
                .map_err(|_| Error::autograd(node.op, "graph lock poisoned"))?
                .take();
            let Some((inputs, backward)) = edges else { continue };
            let input_grads = match grads.remove(&t.id()) {
                Some(g) => backward(&g)?,
                None => Vec::new(),
            };
            let mut input_grads = input_grads.into_iter();
            for input in inputs {
                let ig = input_grads.next().flatten();
                if !input.requires_grad() {
                    continue;
                }
                if input.node().is_some() {
                    if let Some(ig) = ig {
                        debug_assert_eq!(ig.shape(), input.shape(), "gradient of {}", node.op);
                        add_into(&mut grads, input.id(), ig)?;
                    }
                    continue;
                }
                if let Some(ig) = ig {
                    debug_assert_eq!(ig.shape(), input.shape(), "gradient of {}", node.op);
                    flat.add(&input, &ig)?;
                }
                if let Some(s) = &mut stream {
                    s.used(&mut flat, input.id())?;
                }
            }
        }
        if let Some(s) = &mut stream {
            s.finish(&mut flat)?;
        }
        flat.finish()
    }
}

/// Which pieces of the flat store are final during a pass: a leaf's slot is once every op
/// that takes the leaf has been through backward, and a piece once all its slots are.
struct Stream<'a> {
    /// Leaf id → uses by ops not yet through backward.
    uses: HashMap<TensorId, usize>,
    /// Per bucket, its pieces (from the bucket's end) and how many slots each still waits on.
    pieces: Vec<Vec<(std::ops::Range<usize>, usize)>>,
    /// Per bucket and slot, the pieces it overlaps, and whether it is final.
    overlaps: Vec<Vec<std::ops::Range<usize>>>,
    done: Vec<Vec<bool>>,
    /// The next piece to hand over: (bucket, piece).
    next: (usize, usize),
    ready: &'a mut Ready<'a>,
}

impl<'a> Stream<'a> {
    fn new(
        flat: &mut FlatStore,
        nodes: &[Tensor],
        sizes: PieceSizes,
        ready: &'a mut Ready<'a>,
    ) -> Result<Stream<'a>> {
        let mut uses: HashMap<TensorId, usize> = HashMap::new();
        for t in nodes {
            let node = t.node().expect("topological_order keeps only tensors with a node");
            let edges =
                node.edges.lock().map_err(|_| Error::autograd(node.op, "graph lock poisoned"))?;
            for input in edges.iter().flat_map(|(inputs, _)| inputs) {
                if input.requires_grad() && input.node().is_none() {
                    *uses.entry(input.id()).or_default() += 1;
                }
            }
        }
        let (mut pieces, mut overlaps) = (Vec::new(), Vec::new());
        for (bucket, slots) in flat.buckets.iter().zip(&flat.layout) {
            let cuts = sizes.cuts(bucket.numel());
            let of_slot: Vec<std::ops::Range<usize>> = slots
                .iter()
                .map(|slot| {
                    let (a, b) = (slot.start, slot.start + slot.shape.numel());
                    let hit = |r: &std::ops::Range<usize>| r.start < b.max(a + 1) && a < r.end;
                    let lo = cuts.iter().position(hit).unwrap_or(cuts.len());
                    let hi = cuts.iter().rposition(hit).map_or(lo, |p| p + 1);
                    lo..hi
                })
                .collect();
            let mut waiting: Vec<(std::ops::Range<usize>, usize)> =
                cuts.into_iter().map(|r| (r, 0)).collect();
            for r in &of_slot {
                for p in r.clone() {
                    waiting[p].1 += 1;
                }
            }
            pieces.push(waiting);
            overlaps.push(of_slot);
        }
        let done = flat.layout.iter().map(|slots| vec![false; slots.len()]).collect();
        let mut next = (0, 0);
        while next.0 < pieces.len() && pieces[next.0].is_empty() {
            next.0 += 1;
        }
        let mut s = Stream { uses, pieces, overlaps, done, next, ready };
        // Slots that no op of this graph takes are final already (zeros).
        for b in 0..flat.layout.len() {
            for i in 0..flat.layout[b].len() {
                if !s.uses.contains_key(&flat.layout[b][i].id) {
                    s.slot_final(flat, b, i)?;
                }
            }
        }
        Ok(s)
    }

    /// An op taking leaf `id` is through backward.
    fn used(&mut self, flat: &mut FlatStore, id: TensorId) -> Result<()> {
        let Some(n) = self.uses.get_mut(&id) else { return Ok(()) };
        *n = n.saturating_sub(1);
        if *n == 0 {
            if let Some(&(b, i)) = flat.place.get(&id) {
                self.slot_final(flat, b, i)?;
            }
        }
        Ok(())
    }

    fn slot_final(&mut self, flat: &mut FlatStore, b: usize, i: usize) -> Result<()> {
        if std::mem::replace(&mut self.done[b][i], true) {
            return Ok(());
        }
        flat.zero_if_absent(b, i)?;
        for p in self.overlaps[b][i].clone() {
            self.pieces[b][p].1 -= 1;
        }
        self.hand_over(flat)
    }

    /// Hands over the final pieces in one fixed order (each bucket's from its end, bucket by
    /// bucket), whatever order backward finished them in: every rank must start the same
    /// reductions in the same order, and ranks whose graphs differ in shape (sequences of
    /// other lengths) finish pieces in other orders.
    fn hand_over(&mut self, flat: &FlatStore) -> Result<()> {
        while let Some((range, 0)) = self.pieces.get(self.next.0).and_then(|b| b.get(self.next.1)) {
            let (b, range) = (self.next.0, range.clone());
            let mut values = flat.buckets[b].view(range.start, Shape::from_vec(vec![range.len()]));
            // The pass goes on writing the rest of the bucket: the piece is a copy.
            values.storage_for_update("backward")?;
            self.next.1 += 1;
            while self.next.0 < self.pieces.len() && self.next.1 >= self.pieces[self.next.0].len() {
                self.next = (self.next.0 + 1, 0);
            }
            (self.ready)(GradientPiece { bucket: b, range, values })?;
        }
        Ok(())
    }

    /// The pass is over: every slot is final, and each piece not yet handed over goes now.
    fn finish(&mut self, flat: &mut FlatStore) -> Result<()> {
        for b in 0..self.overlaps.len() {
            for i in 0..self.overlaps[b].len() {
                self.slot_final(flat, b, i)?;
            }
        }
        Ok(())
    }
}

/// The flat store as backward fills it: each leaf's gradient written into its slot as it
/// arrives (added when one is there), so no per-leaf gradient outlives its arrival.
struct FlatStore {
    buckets: Vec<Tensor>,
    layout: Vec<Vec<Slot>>,
    /// Leaf id → (bucket, slot).
    place: HashMap<TensorId, (usize, usize)>,
}

impl FlatStore {
    fn new(order: &[Tensor], leaves: Vec<Tensor>) -> Result<FlatStore> {
        let listed: HashSet<TensorId> = order.iter().map(|t| t.id()).collect();
        let mut rest: Vec<Tensor> =
            leaves.into_iter().filter(|t| !listed.contains(&t.id())).collect();
        rest.sort_by_key(|t| t.id());
        let mut seen = HashSet::new();
        let all = order.iter().chain(&rest).filter(|t| t.requires_grad() && t.node().is_none());
        let (mut dtypes, mut layout, mut samples): (Vec<DType>, Vec<Vec<Slot>>, Vec<Tensor>) =
            Default::default();
        let mut place = HashMap::new();
        let mut sizes: Vec<usize> = Vec::new();
        for t in all.filter(|t| seen.insert(t.id())) {
            let b = match dtypes.iter().position(|&d| d == t.dtype()) {
                Some(b) => b,
                None => {
                    dtypes.push(t.dtype());
                    layout.push(Vec::new());
                    samples.push(t.clone());
                    sizes.push(0);
                    dtypes.len() - 1
                }
            };
            place.insert(t.id(), (b, layout[b].len()));
            let shape: Shape = t.shape().clone();
            layout[b].push(Slot { id: t.id(), start: sizes[b], shape, present: false });
            sizes[b] += t.numel();
        }
        let buckets = samples
            .iter()
            .zip(&sizes)
            .map(|(t, &n)| {
                // Slots are written as gradients arrive, and zeroed at the end where none did.
                let memory = t.storage().bucket(n, t.dtype())?;
                Ok(Tensor::from_storage(memory, Shape::from_vec(vec![n])))
            })
            .collect::<Result<_>>()?;
        Ok(FlatStore { buckets, layout, place })
    }

    /// `g` into `leaf`'s slot: copied the first time, added after.
    fn add(&mut self, leaf: &Tensor, g: &Tensor) -> Result<()> {
        let &(b, i) = self.place.get(&leaf.id()).ok_or_else(|| {
            Error::autograd("backward", "a gradient reached a leaf outside the graph")
        })?;
        let slot = &mut self.layout[b][i];
        if g.dtype() != self.buckets[b].dtype() || g.numel() != slot.shape.numel() {
            return Err(Error::autograd(
                "backward",
                format!(
                    "a {} {} gradient for a {} {} leaf",
                    g.dtype(),
                    g.shape(),
                    self.buckets[b].dtype(),
                    slot.shape
                ),
            ));
        }
        let storage = self.buckets[b].storage_for_update("backward")?;
        storage.write_at(slot.start, g.storage(), slot.present)?;
        slot.present = true;
        Ok(())
    }

    /// An absent slot's zeros, written when it is known to stay absent.
    fn zero_if_absent(&mut self, b: usize, i: usize) -> Result<()> {
        let slot = &mut self.layout[b][i];
        if !slot.present {
            let (start, len) = (slot.start, slot.shape.numel());
            self.buckets[b].storage_for_update("backward")?.zero_range(start, len)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Gradients> {
        for (bucket, slots) in self.buckets.iter_mut().zip(&self.layout) {
            for slot in slots.iter().filter(|s| !s.present) {
                bucket
                    .storage_for_update("backward")?
                    .zero_range(slot.start, slot.shape.numel())?;
            }
        }
        let mut grads =
            Gradients { map: HashMap::new(), buckets: self.buckets, layout: self.layout };
        grads.refresh_views();
        Ok(grads)
    }
}

/// Non-leaf tensors reachable from `root`, each after all of its inputs, and the leaves that
/// need a gradient.
fn topological_order(root: &Tensor) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let mut order = Vec::new();
    let mut leaves = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: deep graphs (long RNN unrolls) must not overflow the stack.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let Some(node) = t.node() else {
            if t.requires_grad() {
                leaves.push(t);
            }
            continue;
        };
        let edges =
            node.edges.lock().map_err(|_| Error::autograd(node.op, "graph lock poisoned"))?;
        let Some((inputs, _)) = edges.as_ref() else {
            return Err(Error::autograd(
                "backward",
                format!(
                    "the graph through `{}` was already used by a backward pass and freed",
                    node.op
                ),
            ));
        };
        let inputs: Vec<Tensor> = inputs.iter().filter(|i| i.requires_grad()).cloned().collect();
        drop(edges);
        stack.push((t, true));
        for i in inputs {
            if !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    Ok((order, leaves))
}
