//! Data-parallel training: every rank (a process, or a thread in tests) holds the whole model
//! and takes its shard of each global batch; the ranks' gradients are summed into the global
//! batch's mean before an optimizer step that is then the same on every rank.
//!
//! [`Collective`] is all a rank needs of the others. Implementations: one process
//! ([`SingleProcess`]), threads of one process ([`Threads`], so that the plain test suite covers
//! the logic), and MPI (feature `mpi`).

#[cfg(feature = "mpi")]
mod mpi;
mod sharded;
mod threads;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;
pub use sharded::Sharded;
pub use threads::Threads;

use crate::{Param, ParamStore};
use ferrograd::{DType, Error, GradientPiece, Gradients, PieceSizes, Result, Tensor};

/// What one rank of a data-parallel job needs from the others. Every rank must make the same
/// calls in the same order.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Replaces `t` on every rank with the sum of every rank's `t` (same shape and dtype on all),
    /// added in rank order so that every rank gets the same bits.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()>;
    /// Replaces `t` on every rank with rank `root`'s.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    /// Starts [`Collective::all_reduce_sum`] and returns at once; [`Pending::wait`] gives the
    /// sum. This default finishes before it returns.
    fn start_all_reduce_sum(&self, mut t: Tensor) -> Result<Pending> {
        self.all_reduce_sum(&mut t)?;
        Ok(Pending::done(t))
    }
    /// Writes into `out` (`counts[rank]` elements) this rank's part of the sum over ranks of
    /// `t` (1-D, `counts`' total elements on every rank): elements from `counts[..rank]`'s total
    /// on, added as [`Collective::all_reduce_sum`] adds. Half an all-reduce's traffic.
    fn reduce_scatter_sum(&self, t: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()>;
    /// Writes into `out` (1-D, `counts`' total elements) every rank's `part` (`counts[r]`
    /// elements from rank r), one after another in rank order.
    fn all_gather(&self, part: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// Tells the other ranks this one failed with `message`: their next call ends with an error
    /// naming this rank instead of waiting for it.
    fn abort(&self, message: &str);
}

/// An all-reduce under way.
pub struct Pending(Box<dyn FnOnce() -> Result<Tensor> + Send>);

impl Pending {
    /// One already summed.
    pub fn done(t: Tensor) -> Pending {
        Pending(Box::new(move || Ok(t)))
    }
    pub fn wait(self) -> Result<Tensor> {
        (self.0)()
    }
}

/// One process: every collective is the identity.
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter_sum(&self, t: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        check_parts("reduce_scatter_sum", t, counts, (0, 1), out)?;
        out.write_at(0, t)
    }
    fn all_gather(&self, part: &Tensor, counts: &[usize], out: &mut Tensor) -> Result<()> {
        check_parts("all_gather", out, counts, (0, 1), part)?;
        out.write_at(0, part)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, _message: &str) {}
}

/// Checks a reduce-scatter's or all-gather's operands on rank `rank` of `size`: one count per
/// rank, `whole` (1-D) holds their total, `part` rank `rank`'s count, both of one dtype.
pub(crate) fn check_parts(
    op: &str,
    whole: &Tensor,
    counts: &[usize],
    (rank, size): (usize, usize),
    part: &Tensor,
) -> Result<()> {
    let total: usize = counts.iter().sum();
    let fits = counts.len() == size
        && whole.rank() == 1
        && whole.numel() == total
        && counts.get(rank) == Some(&part.numel())
        && whole.dtype() == part.dtype();
    if fits {
        return Ok(());
    }
    Err(Error::shape(
        op,
        format!(
            "rank {rank} of {size} ranks with counts {counts:?} (one per rank): the whole must be 1-D with {total} elements, the part {} of them, one dtype; got {} {} and {} {}",
            counts.get(rank).copied().unwrap_or(0),
            whole.dtype(),
            whole.shape(),
            part.dtype(),
            part.shape()
        ),
    ))
}

/// The gradient buckets' elements per all-reduce: PyTorch DDP's 25 MiB of f32.
const BUCKET_ELEMENTS: usize = 25 << 18;

/// How backward hands gradients over to be summed while it goes on, as PyTorch DDP buckets
/// them: 1 MiB of f32 first, so that communication starts early, then 25 MiB at a time.
pub const GRADIENT_PIECES: PieceSizes = PieceSizes { first: 1 << 18, rest: BUCKET_ELEMENTS };

/// Gradient pieces being summed over the ranks while backward computes the rest
/// ([`ferrograd::Tensor::backward_streaming`]).
#[derive(Default)]
pub struct Reducing {
    started: Vec<(usize, usize, Pending)>,
}

impl Reducing {
    /// Starts summing `piece` over the ranks. Each rank must start the same pieces in the
    /// same order, as backward_streaming hands them over.
    pub fn start(&mut self, piece: GradientPiece, c: &dyn Collective) -> Result<()> {
        let pending = c.start_all_reduce_sum(piece.values)?;
        self.started.push((piece.bucket, piece.range.start, pending));
        Ok(())
    }

    /// Waits for every started sum and writes it over its piece of `grads`.
    pub fn finish(self, grads: &mut Gradients) -> Result<()> {
        for (bucket, start, pending) in self.started {
            grads.write_piece(bucket, start, &pending.wait()?)?;
        }
        Ok(())
    }
}

/// Sums every rank's gradients into `grads`, piece by piece from the end of each flat bucket
/// (the last parameters' gradients are the first final in backward), at most
/// `BUCKET_ELEMENTS` a piece. Each rank's gradients must already carry its weight in the
/// global mean.
pub fn all_reduce_gradients(grads: &mut Gradients, c: &dyn Collective) -> Result<()> {
    if c.size() == 1 {
        return Ok(());
    }
    for b in 0..grads.buckets().len() {
        let n = grads.buckets()[b].numel();
        if n <= BUCKET_ELEMENTS {
            grads.with_buckets_mut(|buckets| c.all_reduce_sum(&mut buckets[b]))?;
            continue;
        }
        let sizes = PieceSizes { first: BUCKET_ELEMENTS, rest: BUCKET_ELEMENTS };
        for r in sizes.cuts(n) {
            let mut piece = grads.buckets()[b].narrow(0, r.start, r.len())?.detach();
            c.all_reduce_sum(&mut piece)?;
            grads.write_piece(b, r.start, &piece)?;
        }
    }
    Ok(())
}

/// Makes every rank's parameters rank 0's.
pub fn broadcast_parameters(params: &[Param], c: &dyn Collective) -> Result<()> {
    if c.size() == 1 {
        return Ok(());
    }
    for p in params {
        let mut t = p.get().detach();
        c.broadcast(&mut t, 0)?;
        p.set(&t)?;
    }
    Ok(())
}

/// Refuses to start unless every rank has the same model (names, shapes, dtypes) and the same
/// training `facts` (steps, batches per epoch, …).
pub fn check_agreement(store: &ParamStore, facts: &[f64], c: &dyn Collective) -> Result<()> {
    if c.size() == 1 {
        return Ok(());
    }
    let mut mine: Vec<f64> = facts.to_vec();
    let params = store.params();
    mine.push(params.len() as f64);
    for p in &params {
        let t = p.get();
        mine.push(fingerprint(p.name().as_bytes()));
        mine.push(t.numel() as f64);
        mine.push(t.rank() as f64);
    }
    let differ = ranks_differing(&mine, c)?;
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::value(
        "data-parallel training",
        format!("rank(s) {differ:?} have another model or other training settings than rank 0 (parameters, their shapes, steps, batch size or data); all ranks must run the same command on the same data"),
    ))
}

/// Checks that every rank's parameters are rank 0's to the bit, as data-parallel steps keep
/// them: a difference means the ranks saw different data or summed differently.
pub fn check_replicas(params: &[Param], c: &dyn Collective) -> Result<()> {
    if c.size() == 1 {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for p in params {
        bytes.extend(p.get().to_vec_f64()?.iter().flat_map(|x| x.to_bits().to_le_bytes()));
    }
    let differ = ranks_differing(&[fingerprint(&bytes)], c)?;
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::value(
        "data-parallel training",
        format!("the parameters of rank(s) {differ:?} are not rank 0's after training"),
    ))
}

/// The ranks whose `mine` is not rank 0's: rank 0's values are sent to all, each compares,
/// and all learn which differ, so that all stop together.
fn ranks_differing(mine: &[f64], c: &dyn Collective) -> Result<Vec<usize>> {
    let mut count = Tensor::from_vec(vec![mine.len() as f64], &[1])?;
    c.broadcast(&mut count, 0)?;
    let n = count.item()? as usize;
    let mut root =
        Tensor::from_vec(if n == mine.len() { mine.to_vec() } else { vec![0.0; n] }, &[n])?;
    c.broadcast(&mut root, 0)?;
    let agrees = n == mine.len() && root.to_vec::<f64>()? == mine;
    // Each rank puts a 1 at its own place if it differs.
    let mut flags = vec![0.0f64; c.size()];
    flags[c.rank()] = f64::from(u8::from(!agrees));
    let mut flags = Tensor::from_vec(flags, &[c.size()])?;
    c.all_reduce_sum(&mut flags)?;
    Ok(flags
        .to_vec::<f64>()?
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0.0)
        .map(|(r, _)| r)
        .collect())
}

/// Bytes as a number that survives an f64 round trip exactly (48 bits of FNV-1a).
fn fingerprint(bytes: &[u8]) -> f64 {
    let h = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (h >> 16) as f64
}

/// Sums `values` over the ranks (as f64), for metrics.
pub fn all_reduce_values(values: &mut [f64], c: &dyn Collective) -> Result<()> {
    if c.size() == 1 || values.is_empty() {
        return Ok(());
    }
    let mut t = Tensor::from_vec(values.to_vec(), &[values.len()])?;
    c.all_reduce_sum(&mut t)?;
    values.copy_from_slice(t.as_mut_slice::<f64>("all_reduce_values")?);
    Ok(())
}

/// Adds rank-ordered contributions exactly as [`Collective::all_reduce_sum`] promises: in the
/// tensor's own dtype, rank 0 first.
pub(crate) fn sum_in_rank_order(parts: &[Vec<f64>], dtype: DType, out: &mut Tensor) -> Result<()> {
    match dtype {
        DType::F32 => {
            let dst = out.as_mut_slice::<f32>("all_reduce_sum")?;
            for (i, d) in dst.iter_mut().enumerate() {
                *d = parts.iter().fold(0.0f32, |acc, p| acc + p[i] as f32);
            }
        }
        DType::F64 => {
            let dst = out.as_mut_slice::<f64>("all_reduce_sum")?;
            for (i, d) in dst.iter_mut().enumerate() {
                *d = parts.iter().fold(0.0f64, |acc, p| acc + p[i]);
            }
        }
        DType::I64 => {
            let dst = out.as_mut_slice::<i64>("all_reduce_sum")?;
            for (i, d) in dst.iter_mut().enumerate() {
                *d = parts.iter().fold(0i64, |acc, p| acc + p[i] as i64);
            }
        }
    }
    Ok(())
}
