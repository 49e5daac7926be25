//! Reverse-mode autodiff, define-by-run: ops record their inputs and a backward closure when an
//! input needs a gradient; `backward` walks the graph once in reverse topological order, freeing
//! each node's saved buffers as soon as it is past them.

use crate::backend::cpu;
use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor, TensorId};
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

/// The gradients one backward pass produced, for each leaf tensor that requires a gradient.
#[derive(Default, Clone, Debug)]
pub struct Gradients {
    map: HashMap<TensorId, Tensor>,
}

impl Gradients {
    /// The gradient of `t`, if `t` contributed to the loss.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    /// Replaces the gradient of `t` (as gradient clipping does).
    pub fn set(&mut self, t: &Tensor, grad: Tensor) {
        self.map.insert(t.id(), grad);
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Adds `other`'s gradients to these (`+=`), as over several backward passes.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        let _g = no_grad();
        for (id, g) in other.map {
            add_into(&mut self.map, id, g)?;
        }
        Ok(())
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
    let src = src.cpu("add")?;
    Ok(match (dst.unique_data_mut(), src) {
        (Some(CpuStorage::F32(d)), CpuStorage::F32(s)) => {
            cpu::add_assign(d, s);
            true
        }
        (Some(CpuStorage::F64(d)), CpuStorage::F64(s)) => {
            cpu::add_assign(d, s);
            true
        }
        _ => false,
    })
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

    /// Backward from this tensor with `grad` as its incoming gradient (same shape).
    pub fn backward_with(&self, grad: &Tensor) -> Result<Gradients> {
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
        let order = topological_order(self)?;
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.detach());
        let mut leaves = HashSet::new();
        for t in order.into_iter().rev() {
            let node = t.node().expect("topological_order keeps only tensors with a node");
            let edges = node
                .edges
                .lock()
                .map_err(|_| Error::autograd(node.op, "graph lock poisoned"))?
                .take();
            let Some((inputs, backward)) = edges else { continue };
            let Some(g) = grads.remove(&t.id()) else { continue };
            let input_grads = backward(&g)?;
            for (input, ig) in inputs.into_iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !input.requires_grad() {
                    continue;
                }
                debug_assert_eq!(ig.shape(), input.shape(), "gradient shape of {}", node.op);
                if input.node().is_none() {
                    leaves.insert(input.id());
                }
                add_into(&mut grads, input.id(), ig)?;
            }
        }
        grads.retain(|id, _| leaves.contains(id));
        Ok(Gradients { map: grads })
    }
}

/// Non-leaf tensors reachable from `root`, each after all of its inputs.
fn topological_order(root: &Tensor) -> Result<Vec<Tensor>> {
    let mut order = Vec::new();
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
        let Some(node) = t.node() else { continue };
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
    Ok(order)
}
