//! The sharded optimizer step (ZeRO stage 1, PyTorch's `ZeroRedundancyOptimizer`): every flat
//! gradient bucket is split evenly over the ranks; each rank receives only its part of the
//! summed gradients (a reduce-scatter: half an all-reduce's traffic), updates only that part
//! of the parameters and optimizer state, and the updated parameters are all-gathered. The
//! step's work per rank so falls with the number of ranks instead of being repeated on each.
//! Every element is updated by exactly one rank with the arithmetic of the whole step, so the
//! ranks' parameters stay identical, and are the unsharded step's to the bit where the
//! reduce-scatter adds as the all-reduce does (the threaded ranks; MPI picks its own order).

use super::{fingerprint, ranks_differing, Collective};
use crate::optim::{overlap, Optimizer, Shard};
use crate::Param;
use ferrograd::{Error, Gradients, Result, Tensor};
use std::ops::Range;

/// Where each bucket is cut among the ranks, and where each parameter lies in the buckets.
pub struct Sharded {
    /// counts[b][r]: the elements of bucket `b` that rank `r` updates.
    counts: Vec<Vec<usize>>,
    shard: Shard,
    /// Each parameter's bucket and range there (none: not in the buckets, updated whole).
    places: Vec<Option<(usize, Range<usize>)>>,
    /// This rank's summed gradients, and its part of what is gathered, one per bucket, kept
    /// from step to step (elements of no parameter stay zero).
    received: Vec<Tensor>,
    parts: Vec<Tensor>,
}

impl Sharded {
    /// The plan for `grads`' layout of `params`' gradients on this rank of `c`.
    pub fn new(grads: &Gradients, params: &[Param], c: &dyn Collective) -> Result<Sharded> {
        let (rank, size) = (c.rank(), c.size());
        let counts: Vec<Vec<usize>> = grads
            .buckets()
            .iter()
            .map(|b| (0..size).map(|r| b.numel() * (r + 1) / size - b.numel() * r / size).collect())
            .collect();
        let ranges = counts
            .iter()
            .map(|c| {
                let start: usize = c[..rank].iter().sum();
                start..start + c[rank]
            })
            .collect();
        let places = params.iter().map(|p| grads.bucket_range(&p.get())).collect();
        let received = grads
            .buckets()
            .iter()
            .zip(&counts)
            .map(|(b, c)| Tensor::zeros(&[c[rank]], b.dtype()))
            .collect::<Result<Vec<_>>>()?;
        let parts = received.iter().map(|t| t.zeros_like()).collect::<Result<_>>()?;
        Ok(Sharded { counts, shard: Shard { ranges }, places, received, parts })
    }

    /// Whether `grads` still has the layout this plan was made for.
    pub fn fits(&self, grads: &Gradients, params: &[Param]) -> bool {
        grads.buckets().len() == self.counts.len()
            && grads
                .buckets()
                .iter()
                .zip(&self.counts)
                .all(|(b, c)| b.numel() == c.iter().sum::<usize>())
            && params.len() == self.places.len()
            && params.iter().zip(&self.places).all(|(p, at)| grads.bucket_range(&p.get()) == *at)
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Sums this rank's part of every bucket over the ranks, into `grads`; the rest of each
    /// bucket keeps this rank's own gradients. Each rank's gradients must already carry its
    /// weight in the global mean.
    pub fn reduce(&mut self, grads: &mut Gradients, c: &dyn Collective) -> Result<()> {
        for (b, counts) in self.counts.iter().enumerate() {
            c.reduce_scatter_sum(&grads.buckets()[b], counts, &mut self.received[b])?;
            grads.write_piece(b, self.shard.ranges[b].start, &self.received[b])?;
        }
        Ok(())
    }

    /// Gives every rank every rank's part of the parameters after a sharded step, gathered
    /// through `grads`' buckets, whose gradients are spent then.
    pub fn gather_params(
        &mut self,
        params: &[Param],
        grads: &mut Gradients,
        c: &dyn Collective,
    ) -> Result<()> {
        let values: Vec<Option<Tensor>> = params.iter().map(|p| Some(p.get())).collect();
        grads.with_buckets_mut(|buckets| self.gather(&values, buckets, c))?;
        // No handle to a parameter alive while it is written: it would be copied.
        drop(values);
        for (p, at) in params.iter().zip(&self.places) {
            if let Some((b, r)) = at {
                for piece in self.theirs(*b, r) {
                    let from = grads.buckets()[*b].narrow(0, piece.start, piece.len())?;
                    p.write_at(piece.start - r.start, &from)?;
                }
            }
        }
        Ok(())
    }

    /// Gives every rank the whole optimizer state (before a checkpoint, a new plan, the end of
    /// training): each rank keeps only its part of every slot up to date.
    pub fn gather_state(
        &mut self,
        params: &[Param],
        optimizer: &mut dyn Optimizer,
        c: &dyn Collective,
    ) -> Result<()> {
        let mut state = optimizer.state_mut();
        // Slots are named `{slot}/{parameter}`: each kind is gathered like the parameters.
        // Ranks holding other slots would make other collectives, so they are refused first.
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        let differ = ranks_differing(&[fingerprint(names.join("\n").as_bytes())], c)?;
        if !differ.is_empty() {
            return Err(Error::value(
                "sharded optimizer step",
                format!("rank(s) {differ:?} hold other optimizer state than rank 0"),
            ));
        }
        let mut kinds: Vec<String> = Vec::new();
        for name in names {
            let kind = name.split('/').next().unwrap_or_default().to_string();
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        for kind in kinds {
            let slot_of: Vec<Option<usize>> = params
                .iter()
                .map(|p| {
                    let name = format!("{kind}/{}", p.name());
                    state.iter().position(|(n, _)| *n == name)
                })
                .collect();
            let values: Vec<Option<Tensor>> =
                slot_of.iter().map(|i| i.map(|i| state[i].1.clone())).collect();
            let mut buckets = self
                .received
                .iter()
                .zip(&self.counts)
                .map(|(t, c)| Tensor::zeros(&[c.iter().sum()], t.dtype()))
                .collect::<Result<Vec<_>>>()?;
            self.gather(&values, &mut buckets, c)?;
            // No second handle to a slot while it is written: it would be copied.
            drop(values);
            for (i, at) in slot_of.iter().zip(&self.places) {
                let (Some(i), Some((b, r))) = (i, at) else { continue };
                for piece in self.theirs(*b, r) {
                    let from = buckets[*b].narrow(0, piece.start, piece.len())?;
                    state[*i].1.write_at(piece.start - r.start, &from)?;
                }
            }
        }
        Ok(())
    }

    /// Every rank's part of `values` (one per parameter, as laid out in the buckets; none:
    /// zeros) into `out`, one whole bucket each.
    fn gather(
        &mut self,
        values: &[Option<Tensor>],
        out: &mut [Tensor],
        c: &dyn Collective,
    ) -> Result<()> {
        for (b, counts) in self.counts.iter().enumerate() {
            let mine = &self.shard.ranges[b];
            let part = &mut self.parts[b];
            for (value, at) in values.iter().zip(&self.places) {
                let Some((_, r)) = at.as_ref().filter(|(vb, _)| *vb == b) else { continue };
                let common = overlap(r, mine);
                if common.is_empty() {
                    continue;
                }
                let piece = match value {
                    Some(v) => {
                        let flat = v.reshape(&[v.numel()])?;
                        flat.narrow(0, common.start - r.start, common.len())?
                    }
                    None => Tensor::zeros(&[common.len()], part.dtype())?,
                };
                part.write_at(common.start - mine.start, &piece)?;
            }
            c.all_gather(part, counts, &mut out[b])?;
        }
        Ok(())
    }

    /// The elements of range `r` of bucket `b` that other ranks update: before and after
    /// this rank's part.
    fn theirs(&self, b: usize, r: &Range<usize>) -> Vec<Range<usize>> {
        let mine = &self.shard.ranges[b];
        [overlap(r, &(0..mine.start)), overlap(r, &(mine.end..usize::MAX))]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect()
    }
}
