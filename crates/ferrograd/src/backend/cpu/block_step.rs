//! One step of a pre-norm transformer block for a single new token, fused: generation's inner
//! loop. Composed, a step is some fifteen ops, six of them a row times a weight; each takes a
//! few microseconds, its bookkeeping and the wake-up of a second thread about as long, so the
//! ops ran on one thread at a third of what the cores stream. Fused, the pool's threads share
//! the columns of each phase and wait for each other only between phases. The block's
//! composed ops are its twin: each phase calls the kernels they call, in their order, so the
//! two agree to the bit (the tests check it).

use super::attention::softmax_rows;
use super::{dense, matmul, matmul_rows, matmul_rows_accumulate, norm, unary, with_wide_vectors};
use super::{Float, MatRef};
use crate::backend::{AttentionDims, BlockParams};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `x` (D) through the blocks in turn: the last one's output (D). `caches` holds each
/// block's keys and values, (S + 1, D) each with a last row for this token, which the step
/// fills. One team of threads runs all the blocks, so that it forms once a token.
pub fn block_step<T: Float + Send + Sync>(
    x: &[T],
    blocks: &[BlockParams<'_, [T]>],
    caches: &mut [&mut [T]],
) -> Vec<T> {
    assert_eq!(caches.len(), 2 * blocks.len(), "block_step: two caches a block");
    let d = x.len();
    let weights: usize = blocks.iter().map(|p| 2 * p.ff_in[0].len() + 4 * d * d).sum();
    let threads = if weights < PARALLEL_WEIGHTS { 1 } else { rayon::current_num_threads() };
    let steps: Vec<Step<T>> = blocks
        .iter()
        .zip(caches.chunks_mut(2))
        .map(|(p, kv)| match kv {
            [k, v] => Step::new(p, d, k, v, threads),
            _ => unreachable!("two caches a block, asserted"),
        })
        .collect();
    let work = |member: usize| {
        for (i, step) in steps.iter().enumerate() {
            // SAFETY: the block before has ended (its last phase waited for all its pieces).
            let input = if i == 0 { x } else { unsafe { steps[i - 1].out.all() } };
            step.run(input, member, threads);
        }
    };
    team(0, threads, &work);
    match steps.into_iter().last() {
        Some(step) => step.out.into_vec(),
        None => x.to_vec(),
    }
}

/// One block's step: its parameters and sizes, the buffers its phases write, the phases.
struct Step<'a, T> {
    p: &'a BlockParams<'a, [T]>,
    rows: usize,
    cols: [usize; 3],
    query: Shared<T>,
    mixed: Shared<T>,
    h: Shared<T>,
    hidden: Shared<T>,
    out: Shared<T>,
    keys: SharedMut<T>,
    values: SharedMut<T>,
    phases: [Phase; 5],
}

impl<'a, T: Float + Send + Sync> Step<'a, T> {
    fn new(
        p: &'a BlockParams<'a, [T]>,
        d: usize,
        keys: &mut [T],
        values: &mut [T],
        threads: usize,
    ) -> Step<'a, T> {
        let f = p.ff_in[1].len();
        let (heads, e) = (p.heads, d / p.heads.max(1));
        let rows = keys.len() / d.max(1);
        assert!(
            heads * e == d && rows >= 1 && keys.len() == rows * d && values.len() == keys.len(),
            "block_step: {heads} heads of {d} features, caches of {} and {}",
            keys.len(),
            values.len()
        );
        for (what, [w, b], n, k) in [
            ("query", p.query, d, d),
            ("key", p.key, d, d),
            ("value", p.value, d, d),
            ("output", p.output, d, d),
            ("ff_in", p.ff_in, f, d),
            ("ff_out", p.ff_out, d, f),
            ("attention_norm", p.attention_norm, d, 1),
            ("ff_norm", p.ff_norm, d, 1),
        ] {
            assert!(
                w.len() == n * k && b.len() == n,
                "block_step: {what} of {} and {}",
                w.len(),
                b.len()
            );
        }
        // One share of each product per thread: each thread then reads the same rows of every
        // weight at every step (its L2 cache may still hold some), and the threads meet once a
        // phase (finer chunks, claimed one by one, made the threads' counters bounce between
        // the cores: half the speed when the two vCPUs sat far apart).
        let share = |n: usize| n.div_ceil(threads).next_multiple_of(8).clamp(1, n.max(1));
        let cols = [share(d), share(d), share(f)];
        Step {
            p,
            rows,
            cols,
            query: Shared::new(d),
            mixed: Shared::new(d),
            h: Shared::new(d),
            hidden: Shared::new(f),
            out: Shared::new(d),
            keys: SharedMut(keys.as_mut_ptr()),
            values: SharedMut(values.as_mut_ptr()),
            phases: [
                Phase::new(3 * d.div_ceil(cols[0])),
                Phase::new(heads),
                Phase::new(d.div_ceil(cols[1])),
                Phase::new(f.div_ceil(cols[2])),
                Phase::new(d.div_ceil(cols[1])),
            ],
        }
    }

    /// Member `member`'s part of the step of `x` (of a team of `threads`), returning when the
    /// whole step is done.
    fn run(&self, x: &[T], member: usize, threads: usize) {
        let Step { p, rows, cols: [qkv_cols, out_cols, hidden_cols], .. } = *self;
        let (d, f) = (x.len(), p.ff_in[1].len());
        let (heads, e) = (p.heads, d / p.heads.max(1));
        let new_row = (rows - 1) * d;
        let (query, keys, values) = (&self.query, &self.keys, &self.values);
        let (mixed, h, hidden, out) = (&self.mixed, &self.h, &self.hidden, &self.out);
        let phases = &self.phases;
        let dims =
            AttentionDims { batch: 1, heads, queries: 1, keys: rows, head_size: e, causal: true };
        let run = |phase: &Phase, piece: &mut dyn FnMut(usize)| phase.run(member, threads, piece);
        // This thread's normalized inputs, made when it first needs them.
        let (mut y1, mut y2) = (None, None);
        let mut scores = vec![T::zero(); rows];
        // Query, key and value columns, each written once, as `linear` writes them: the bias,
        // then the product added.
        run(&phases[0], &mut |i| {
            let y = y1.get_or_insert_with(|| normalized(x, p.attention_norm, p.attention_eps));
            let (which, cols) = (i % 3, columns(i / 3, qkv_cols, d));
            let weights = [p.query, p.key, p.value][which];
            // SAFETY: chunk i alone writes these columns (of the query, or of the caches' last
            // row, which the caller's buffers hold); nothing reads them before this phase ends.
            let dst = unsafe {
                match which {
                    0 => query.range(cols.clone()),
                    1 => keys.range(new_row + cols.start..new_row + cols.end),
                    _ => values.range(new_row + cols.start..new_row + cols.end),
                }
            };
            affine_columns(y, weights, cols, dst);
        });
        // SAFETY (this phase and those after): the buffers a phase reads were written by the
        // phases before it, which have ended; a phase writes only its chunks' columns.
        let (query, all_keys, all_values) =
            unsafe { (query.all(), keys.slice(0..rows * d), values.slice(0..rows * d)) };
        run(&phases[1], &mut |hd| {
            let at = hd * e;
            let q = MatRef { data: &query[at..], row_stride: d, col_stride: 1 };
            let k_t = MatRef { data: &all_keys[at..], row_stride: 1, col_stride: d };
            matmul(q, k_t, 1, e, rows, &mut scores, false);
            let mut lse = [T::zero()];
            with_wide_vectors(
                #[inline(always)]
                || softmax_rows(&mut scores, rows, 0, &mut lse, None, &dims),
            );
            let v = MatRef { data: &all_values[at..], row_stride: d, col_stride: 1 };
            // SAFETY: head hd alone writes its columns.
            let dst = unsafe { mixed.range_uninit(at..at + e) };
            matmul_rows(dense(&scores, rows), v, (1, rows, e), dst, e);
        });
        // The attention's output projection, added to the block's input.
        let mixed = unsafe { mixed.all() };
        run(&phases[2], &mut |i| {
            let cols = columns(i, out_cols, d);
            let dst = unsafe { h.range(cols.clone()) };
            affine_columns(mixed, p.output, cols.clone(), dst);
            dst.iter_mut().zip(&x[cols]).for_each(|(y, &x)| *y = x + *y);
        });
        let h = unsafe { h.all() };
        run(&phases[3], &mut |i| {
            let y = y2.get_or_insert_with(|| normalized(h, p.ff_norm, p.ff_eps));
            let cols = columns(i, hidden_cols, f);
            let dst = unsafe { hidden.range(cols.clone()) };
            affine_columns(y, p.ff_in, cols, dst);
            if let Some(op) = p.activation {
                unary::apply_in_place(dst, op);
            }
        });
        let hidden = unsafe { hidden.all() };
        run(&phases[4], &mut |i| {
            let cols = columns(i, out_cols, d);
            let dst = unsafe { out.range(cols.clone()) };
            affine_columns(hidden, p.ff_out, cols.clone(), dst);
            dst.iter_mut().zip(&h[cols]).for_each(|(y, &h)| *y = h + *y);
        });
    }
}

/// Blocks whose weights hold fewer elements run on one thread: sharing the work costs more
/// than it saves below about 256 KB.
const PARALLEL_WEIGHTS: usize = 1 << 16;

/// Columns of chunk `i` of `n`, `per` at a time.
fn columns(i: usize, per: usize, n: usize) -> Range<usize> {
    i * per..((i + 1) * per).min(n)
}

/// `x` through a layer norm of (weight, bias), as the layer-norm op computes a row.
fn normalized<T: Float>(x: &[T], [w, b]: [&[T]; 2], eps: f64) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    norm::normalize_row(x, w, b, eps, y.spare_capacity_mut());
    // SAFETY: normalize_row wrote every element.
    unsafe { y.set_len(x.len()) };
    y
}

/// `dst = bias[cols] + x · W[cols]ᵀ` for the rows `cols` of a row-major (n, k) weight.
fn affine_columns<T: Float + Send + Sync>(
    x: &[T],
    [w, b]: [&[T]; 2],
    cols: Range<usize>,
    dst: &mut [T],
) {
    let k = x.len();
    dst.copy_from_slice(&b[cols.clone()]);
    let w_t = MatRef { data: &w[cols.start * k..cols.end * k], row_stride: 1, col_stride: k };
    matmul_rows_accumulate(dense(x, k), w_t, (1, k, cols.len()), dst, cols.len());
}

/// Runs `work(member)` for members `first..threads` on as many threads of the pool (this one
/// first), returning when all have. A member that does not start in time finds the phases
/// done by the others.
fn team(first: usize, threads: usize, work: &(impl Fn(usize) + Sync)) {
    if first + 1 >= threads {
        return work(first);
    }
    super::join_polling(|| work(first), || team(first + 1, threads, work));
}

/// One phase of the step: `chunks` pieces of work. Member m of a team of n takes pieces m,
/// m + n, ... first, then any the others have not taken, and waits until all are done. No
/// member waits for another to arrive, so one that never starts (its thread busy elsewhere)
/// costs only its share, which the others take.
#[repr(align(128))] // a cache line (pair) of its own: the threads poll it
struct Phase {
    taken: Vec<AtomicBool>,
    done: AtomicUsize,
}

impl Phase {
    fn new(chunks: usize) -> Phase {
        Phase {
            taken: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            done: AtomicUsize::new(0),
        }
    }

    fn run(&self, member: usize, members: usize, piece: &mut dyn FnMut(usize)) {
        /// Counts the piece done even if it panics, so the others' wait ends (and the join
        /// passes the panic on).
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Release);
            }
        }
        let n = self.taken.len();
        let members = members.max(1);
        let others = (0..n).filter(|i| i % members != member);
        for i in (member..n).step_by(members).chain(others) {
            if !self.taken[i].load(Ordering::Relaxed) && !self.taken[i].swap(true, Ordering::AcqRel)
            {
                let _done = Done(&self.done);
                piece(i);
            }
        }
        while self.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
    }
}

/// A buffer the team's threads write in disjoint ranges during a phase and read after it.
struct Shared<T>(UnsafeCell<Vec<MaybeUninit<T>>>);

// SAFETY: threads write disjoint ranges, and read only after the phase that wrote them has
// ended (its counter's Release/Acquire orders the writes before the reads).
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    fn new(n: usize) -> Shared<T> {
        let mut v = Vec::with_capacity(n);
        // SAFETY: MaybeUninit needs no initialization.
        unsafe { v.set_len(n) };
        Shared(UnsafeCell::new(v))
    }
    /// # Safety
    /// No other thread touches `r` until the phase ends.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range_uninit(&self, r: Range<usize>) -> &mut [MaybeUninit<T>] {
        let base = unsafe { (*self.0.get()).as_mut_ptr() };
        unsafe { std::slice::from_raw_parts_mut(base.add(r.start), r.len()) }
    }
    /// # Safety
    /// As [`Shared::range_uninit`]; the caller writes every element before reading it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, r: Range<usize>) -> &mut [T] {
        let r = unsafe { self.range_uninit(r) };
        unsafe { &mut *(r as *mut [MaybeUninit<T>] as *mut [T]) }
    }
    /// # Safety
    /// The phases that write the buffer have ended, and wrote all of it.
    unsafe fn all(&self) -> &[T] {
        let v = unsafe { &*self.0.get() };
        unsafe { &*(v.as_slice() as *const [MaybeUninit<T>] as *const [T]) }
    }
    fn into_vec(self) -> Vec<T> {
        let mut v = std::mem::ManuallyDrop::new(self.0.into_inner());
        // SAFETY: called after the last phase, which wrote every element; MaybeUninit<T> and
        // T have one layout.
        unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
    }
}

/// The caller's cache buffers, written and read as [`Shared`] is.
struct SharedMut<T>(*mut T);

// SAFETY: as for Shared.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// # Safety
    /// `r` lies inside the buffer and no other thread touches it until the phase ends.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, r: Range<usize>) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r.start), r.len()) }
    }
    /// # Safety
    /// `r` lies inside the buffer and no thread writes it any more.
    unsafe fn slice(&self, r: Range<usize>) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.0.add(r.start), r.len()) }
    }
}
