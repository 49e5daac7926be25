//! One step of pre-norm transformer blocks for a single new token, fused: generation's inner
//! loop. Composed, a block's step is some fifteen ops, six of them a row times a weight, each
//! a few microseconds long with its bookkeeping; the products stayed on one thread, as handing
//! half of one to another thread cost about what it saved. Fused, the pool's threads form a
//! team once a token and split the columns of every product, meeting between phases. The
//! composed ops are the twin: each phase calls the kernels they call, in their order, so the
//! two agree to the bit (the tests check it), except where the composed product splits its
//! sum across threads (k from 4096 on two: GPT-2 medium's second FeedForward layer), where
//! they agree to rounding.

use super::attention::softmax_rows;
use super::{dense, matmul, matmul_rows, matmul_rows_accumulate, norm, unary, with_wide_vectors};
use super::{Float, MatRef};
use crate::backend::{AttentionDims, BlockParams};
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let threads = if weights < PARALLEL_WEIGHTS { 1 } else { rayon::current_num_threads().min(2) };
    let steps: Vec<Step<T>> = blocks
        .iter()
        .zip(caches.chunks_mut(2))
        .map(|(p, kv)| match kv {
            [k, v] => Step::new(p, d, k, v, threads),
            _ => unreachable!("two caches a block, asserted"),
        })
        .collect();
    let team = Team::new(threads);
    let work = |member: usize, members: usize| {
        for (i, step) in steps.iter().enumerate() {
            // SAFETY: the block before has ended (its last phase waited for every member).
            let input = if i == 0 { x } else { unsafe { steps[i - 1].out.all() } };
            step.run(input, &team, 5 * i, member, members);
        }
    };
    team.run(&work);
    match steps.into_iter().last() {
        Some(step) => step.out.into_vec(),
        None => x.to_vec(),
    }
}

/// One block's step: its parameters and sizes, the buffers its phases write, the phases.
struct Step<'a, T> {
    p: &'a BlockParams<'a, [T]>,
    rows: usize,
    /// Columns a member's share of a product over D, and over the FeedForward's F.
    cols: [usize; 2],
    query: Shared<T>,
    mixed: Shared<T>,
    h: Shared<T>,
    hidden: Shared<T>,
    out: Shared<T>,
    keys: SharedMut<T>,
    values: SharedMut<T>,
    /// Pieces of each of the step's five phases.
    pieces: [usize; 5],
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
            "block_step: {heads} heads of {d} features, caches of {} and {} (the op checks sizes)",
            keys.len(),
            values.len()
        );
        // One share of each product per thread: each thread then reads the same rows of every
        // weight at every step (its L2 cache may still hold some), and the threads meet once a
        // phase (finer chunks, claimed one by one, made the threads' counters bounce between
        // the cores: half the speed when the two vCPUs sat far apart).
        let share = |n: usize| n.div_ceil(threads).next_multiple_of(8).clamp(1, n.max(1));
        let cols = [share(d), share(f)];
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
            pieces: [
                3 * d.div_ceil(cols[0]),
                heads,
                d.div_ceil(cols[0]),
                f.div_ceil(cols[1]),
                d.div_ceil(cols[0]),
            ],
        }
    }

    /// Member `member`'s part of the step of `x` (of `members` in `team`), returning when the
    /// whole step is done; its phases are the team's `first..first + 5`.
    fn run(&self, x: &[T], team: &Team, first: usize, member: usize, members: usize) {
        let Step { p, rows, cols: [d_cols, f_cols], .. } = *self;
        let (d, f) = (x.len(), p.ff_in[1].len());
        let (heads, e) = (p.heads, d / p.heads.max(1));
        let new_row = (rows - 1) * d;
        let (query, keys, values) = (&self.query, &self.keys, &self.values);
        let (mixed, h, hidden, out) = (&self.mixed, &self.h, &self.hidden, &self.out);
        let dims =
            AttentionDims { batch: 1, heads, queries: 1, keys: rows, head_size: e, causal: true };
        // Phase k: this member's pieces (every members-th), then the wait for the others.
        let run = |k: usize, piece: &mut dyn FnMut(usize)| {
            (member..self.pieces[k]).step_by(members).for_each(&mut *piece);
            team.finished(member, members, first + k);
        };
        // This thread's normalized inputs, made when it first needs them.
        let (mut y1, mut y2) = (None, None);
        let mut scores = vec![T::zero(); rows];
        // Query, key and value columns, each written once, as `linear` writes them: the bias,
        // then the product added.
        run(0, &mut |i| {
            let y = y1.get_or_insert_with(|| normalized(x, p.attention_norm, p.attention_eps));
            let (which, cols) = (i % 3, columns(i / 3, d_cols, d));
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
        run(1, &mut |hd| {
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
        run(2, &mut |i| {
            let cols = columns(i, d_cols, d);
            added_to(x, mixed, p.output, cols.clone(), unsafe { h.range(cols) });
        });
        let h = unsafe { h.all() };
        run(3, &mut |i| {
            let y = y2.get_or_insert_with(|| normalized(h, p.ff_norm, p.ff_eps));
            let cols = columns(i, f_cols, f);
            let dst = unsafe { hidden.range(cols.clone()) };
            affine_columns(y, p.ff_in, cols, dst);
            if let Some(op) = p.activation {
                unary::apply_in_place(dst, op);
            }
        });
        let hidden = unsafe { hidden.all() };
        run(4, &mut |i| {
            let cols = columns(i, d_cols, d);
            added_to(h, hidden, p.ff_out, cols.clone(), unsafe { out.range(cols) });
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

/// `dst = residual[cols] + (bias[cols] + x · W[cols]ᵀ)`, as `add` after `linear` computes it.
fn added_to<T: Float + Send + Sync>(
    residual: &[T],
    x: &[T],
    weights: [&[T]; 2],
    cols: Range<usize>,
    dst: &mut [T],
) {
    affine_columns(x, weights, cols.clone(), dst);
    dst.iter_mut().zip(&residual[cols]).for_each(|(y, &r)| *y = r + *y);
}

/// The two threads that share a step (two at most: a third would wait in a nested join,
/// where a KeepWarm poller it picked up would keep it until the poller stops). The helper
/// starts as a pool job, and the step goes ahead with it only if it has started within
/// [`JOIN_WAIT`]; otherwise the first thread takes the step alone (a pool whose workers sleep
/// would make each token wait for a wake-up). Together, the two split every phase statically
/// and meet through their progress counters, each on a cache line of its own, which the other
/// only reads: claiming pieces through shared counters made a line bounce between the cores at
/// every piece.
struct Team {
    threads: usize,
    progress: [Padded; 2],
    joined: Padded,
    decided: Padded,
}

/// Marks a member that panics as past every phase, so that the other stops waiting and panics
/// in turn (rather than read what it did not write); the join passes the panic on.
struct Bail<'a>(&'a Padded);

impl Drop for Bail<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0 .0.store(usize::MAX, Ordering::Release);
        }
    }
}

/// How long the first thread waits for the helper to start.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_micros(20);

const UNDECIDED: usize = 0;
const TOGETHER: usize = 1;
const ALONE: usize = 2;

#[repr(align(128))] // a cache line (pair) of its own
struct Padded(AtomicUsize);

impl Padded {
    fn new(v: usize) -> Padded {
        Padded(AtomicUsize::new(v))
    }
}

impl Team {
    /// A team of `threads`, 1 or 2.
    fn new(threads: usize) -> Team {
        Team {
            threads: threads.clamp(1, 2),
            progress: [Padded::new(0), Padded::new(0)],
            joined: Padded::new(0),
            decided: Padded::new(UNDECIDED),
        }
    }

    /// Runs `work(member, members)` on this thread as member 0 and, when it starts in time,
    /// on the helper's as member 1; returns when both are done.
    fn run(&self, work: &(impl Fn(usize, usize) + Sync)) {
        if self.threads == 1 {
            return work(0, 1);
        }
        let lead = || {
            let start = std::time::Instant::now();
            while self.joined.0.load(Ordering::Acquire) == 0 && start.elapsed() < JOIN_WAIT {
                std::hint::spin_loop();
            }
            let together = self.joined.0.load(Ordering::Acquire) == 1;
            self.decided.0.store(if together { TOGETHER } else { ALONE }, Ordering::Release);
            let _bail = Bail(&self.progress[0]);
            work(0, if together { 2 } else { 1 });
        };
        let helper = || {
            self.joined.0.store(1, Ordering::Release);
            let decided = loop {
                match self.decided.0.load(Ordering::Acquire) {
                    UNDECIDED => std::hint::spin_loop(),
                    d => break d,
                }
            };
            if decided == TOGETHER {
                let _bail = Bail(&self.progress[1]);
                work(1, 2);
            }
        };
        super::join_polling(lead, helper);
    }

    /// Member `member` of `members` has finished phase `k`; waits until the other has.
    fn finished(&self, member: usize, members: usize, k: usize) {
        if members == 1 {
            return;
        }
        self.progress[member].0.store(k + 1, Ordering::Release);
        let other = &self.progress[1 - member].0;
        loop {
            match other.load(Ordering::Acquire) {
                // Its pieces of this phase may be unwritten: no one reads on.
                usize::MAX => panic!("block_step: the other member of the team panicked"),
                p if p > k => break,
                _ => std::hint::spin_loop(),
            }
        }
    }
}

/// A buffer the team's threads write in disjoint ranges during a phase and read after it,
/// always through the one pointer taken when it was made.
struct Shared<T> {
    buffer: Vec<T>,
    at: *mut T,
}

// SAFETY: threads write disjoint ranges, and read only after the phase that wrote them has
// ended (the progress counters' Release/Acquire order the writes before the reads).
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

impl<T: Float> Shared<T> {
    fn new(n: usize) -> Shared<T> {
        let mut buffer = vec![T::zero(); n];
        let at = buffer.as_mut_ptr();
        Shared { buffer, at }
    }
    /// # Safety
    /// `r` lies inside the buffer and no other thread touches it until the phase ends.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, r: Range<usize>) -> &mut [T] {
        debug_assert!(r.end <= self.buffer.len());
        unsafe { std::slice::from_raw_parts_mut(self.at.add(r.start), r.len()) }
    }
    /// # Safety
    /// As [`Shared::range`].
    #[allow(clippy::mut_from_ref)]
    unsafe fn range_uninit(&self, r: Range<usize>) -> &mut [MaybeUninit<T>] {
        let r = unsafe { self.range(r) };
        // SAFETY: MaybeUninit<T> has T's layout, and only values of T are written.
        unsafe { &mut *(r as *mut [T] as *mut [MaybeUninit<T>]) }
    }
    /// # Safety
    /// The phases that write the buffer have ended.
    unsafe fn all(&self) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.at, self.buffer.len()) }
    }
    fn into_vec(self) -> Vec<T> {
        self.buffer
    }
}

/// The caller's cache buffers, written and read as [`Shared`] is.
struct SharedMut<T>(*mut T);

// SAFETY: as for Shared.
unsafe impl<T: Send + Sync> Sync for SharedMut<T> {}

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
