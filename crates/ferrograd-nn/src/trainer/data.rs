//! What a Trainer trains on: each micro-batch is named by its place in the run, so that the
//! same place gives the same batch in a straight run and in a resumed one.

use ferrograd::{Error, Result, Rng};

/// Where a micro-batch sits: its index over the whole run, and for data with epochs, the
/// epoch and the batch's index within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub micro: u64,
    pub epoch: u64,
    pub index: usize,
}

/// A source of micro-batches, addressed by [`At`].
pub trait Data: Send {
    type Batch;
    /// Micro-batches in one pass over the data; `None` for an endless stream.
    fn batches_per_epoch(&self) -> Option<usize>;
    /// The micro-batch at `at`; the same `at` must give the same batch.
    fn batch(&mut self, at: At) -> Self::Batch;
    /// Rank `part`'s share of a global `batch` split `parts` ways in a data-parallel run, and
    /// its weight in the global mean (its fraction of the examples). Every rank gets at least
    /// one example; a rank with none of its own repeats one at weight 0.
    fn shard(&self, batch: Self::Batch, part: usize, parts: usize) -> Result<(Self::Batch, f64)> {
        let _ = (part, batch);
        Err(Error::value(
            "Data::shard",
            format!("this data cannot be split across {parts} ranks; give it as Epochs"),
        ))
    }
}

/// `n` examples in batches of `batch_size`, shuffled afresh each epoch from `seed` and the
/// epoch alone; a batch is the indices of its examples. The last batch of an epoch may be
/// smaller.
pub struct Epochs {
    n: usize,
    batch_size: usize,
    seed: Option<u64>,
    order: Option<(u64, Vec<usize>)>,
}

impl Epochs {
    pub fn shuffled(n: usize, batch_size: usize, seed: u64) -> Epochs {
        Epochs { n, batch_size: batch_size.max(1), seed: Some(seed), order: None }
    }
    /// The examples in their own order every epoch.
    pub fn in_order(n: usize, batch_size: usize) -> Epochs {
        Epochs { n, batch_size: batch_size.max(1), seed: None, order: None }
    }
}

impl Data for Epochs {
    type Batch = Vec<usize>;
    fn shard(&self, batch: Vec<usize>, part: usize, parts: usize) -> Result<(Vec<usize>, f64)> {
        let (rows, weight) = even_share(batch.len(), part, parts);
        Ok((batch[rows].to_vec(), weight))
    }
    fn batches_per_epoch(&self) -> Option<usize> {
        Some(self.n.div_ceil(self.batch_size))
    }
    fn batch(&mut self, at: At) -> Vec<usize> {
        if self.order.as_ref().is_none_or(|(e, _)| *e != at.epoch) {
            let mut order: Vec<usize> = (0..self.n).collect();
            if let Some(seed) = self.seed {
                Rng::seed(seed.wrapping_mul(1_000_003).wrapping_add(at.epoch)).shuffle(&mut order);
            }
            self.order = Some((at.epoch, order));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let start = (at.index * self.batch_size).min(self.n);
        order[start..(start + self.batch_size).min(self.n)].to_vec()
    }
}

/// An endless stream: each micro-batch is drawn with a generator seeded from `seed` and its
/// index in the run (random windows of a text, random pairs). It cannot be split across
/// ranks; [`SampledExamples`] can.
pub struct Sampled {
    seed: u64,
}

impl Sampled {
    pub fn new(seed: u64) -> Sampled {
        Sampled { seed }
    }
}

impl Data for Sampled {
    type Batch = Rng;
    fn batches_per_epoch(&self) -> Option<usize> {
        None
    }
    fn batch(&mut self, at: At) -> Rng {
        Rng::seed(self.seed.wrapping_mul(7_919).wrapping_add(at.micro))
    }
}

/// An endless stream of `batch_size` examples a micro-batch, each example drawn with a
/// generator of its own (seeded from `seed`, the micro-batch and its place in it), so that a
/// rank drawing its share of a global batch draws exactly the examples one process would.
pub struct SampledExamples {
    seed: u64,
    batch_size: usize,
}

impl SampledExamples {
    pub fn new(seed: u64, batch_size: usize) -> SampledExamples {
        SampledExamples { seed, batch_size: batch_size.max(1) }
    }
}

/// The examples of one micro-batch (or of a rank's share of it): a generator for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draws {
    seed: u64,
    micro: u64,
    examples: std::ops::Range<usize>,
}

impl Draws {
    pub fn len(&self) -> usize {
        self.examples.len()
    }
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
    /// One generator per example, in order.
    pub fn generators(&self) -> impl Iterator<Item = Rng> + '_ {
        self.examples.clone().map(move |i| {
            let micro = self.seed.wrapping_mul(7_919).wrapping_add(self.micro);
            Rng::seed(micro.wrapping_mul(1_000_003).wrapping_add(i as u64))
        })
    }
}

impl Data for SampledExamples {
    type Batch = Draws;
    fn batches_per_epoch(&self) -> Option<usize> {
        None
    }
    fn batch(&mut self, at: At) -> Draws {
        Draws { seed: self.seed, micro: at.micro, examples: 0..self.batch_size }
    }
    fn shard(&self, batch: Draws, part: usize, parts: usize) -> Result<(Draws, f64)> {
        let n = batch.examples.len();
        let (range, weight) = even_share(n, part, parts);
        let start = batch.examples.start;
        Ok((Draws { examples: start + range.start..start + range.end, ..batch }, weight))
    }
}

/// Rank `part`'s rows of `n` split `parts` ways, as even as can be (the first `n mod parts`
/// ranks take one more), and its weight in the global mean. A rank with no row of its own
/// repeats the first at weight 0, so that it still takes part in every collective.
fn even_share(n: usize, part: usize, parts: usize) -> (std::ops::Range<usize>, f64) {
    let (base, extra) = (n / parts, n % parts);
    let start = part * base + part.min(extra);
    let len = base + usize::from(part < extra);
    if len == 0 {
        return (0..1.min(n), 0.0);
    }
    (start..start + len, len as f64 / n as f64)
}

/// `n` prepared batches in turn; a batch is its index.
pub struct Cycle {
    n: usize,
}

impl Cycle {
    pub fn new(n: usize) -> Cycle {
        Cycle { n: n.max(1) }
    }
}

impl Data for Cycle {
    type Batch = usize;
    fn batches_per_epoch(&self) -> Option<usize> {
        Some(self.n)
    }
    fn batch(&mut self, at: At) -> usize {
        at.index
    }
}

impl At {
    /// The place of micro-batch `micro` in data of `per_epoch` batches an epoch.
    pub fn of(micro: u64, per_epoch: Option<usize>) -> At {
        match per_epoch {
            Some(p) if p > 0 => {
                At { micro, epoch: micro / p as u64, index: (micro % p as u64) as usize }
            }
            _ => At { micro, epoch: 0, index: micro as usize },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_example_once_and_repeat_by_epoch() {
        let mut d = Epochs::shuffled(10, 4, 7);
        assert_eq!(d.batches_per_epoch(), Some(3));
        let epoch = |d: &mut Epochs, e: u64| -> Vec<usize> {
            (0..3).flat_map(|i| d.batch(At::of(e * 3 + i, Some(3)))).collect()
        };
        let (a, b) = (epoch(&mut d, 0), epoch(&mut d, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b, "each epoch is shuffled afresh");
        assert_eq!(
            epoch(&mut Epochs::shuffled(10, 4, 7), 1),
            b,
            "an epoch depends on the seed and the epoch"
        );
        assert_eq!(d.batch(At::of(2, Some(3))).len(), 2);
    }

    #[test]
    fn shards_of_sampled_examples_are_the_whole_batch_drawn_alike() {
        let mut d = SampledExamples::new(3, 7);
        let whole = d.batch(At::of(5, None));
        let firsts =
            |b: &Draws| -> Vec<usize> { b.generators().map(|mut r| r.below(1_000_000)).collect() };
        let mut joined = Vec::new();
        let mut weight = 0.0;
        for part in 0..3 {
            let (shard, w) = d.shard(whole.clone(), part, 3).unwrap();
            joined.extend(firsts(&shard));
            weight += w;
        }
        assert_eq!(joined, firsts(&whole));
        assert!((weight - 1.0).abs() < 1e-12);
        assert_ne!(firsts(&d.batch(At::of(6, None))), firsts(&whole), "each micro-batch anew");
        let mut two = SampledExamples::new(3, 2);
        let pair = two.batch(At::of(0, None));
        let (spare, w) = two.shard(pair, 2, 3).unwrap();
        assert_eq!((spare.len(), w), (1, 0.0), "a rank with no example repeats one at weight 0");
    }
}
