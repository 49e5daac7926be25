//! Mini-batches of (inputs, targets) along the first dimension, in order or shuffled by a seed.

use ferrograd::{Error, Result, Rng, Tensor};

/// One epoch of mini-batches: each item is (inputs, targets) for up to `batch_size` examples,
/// taken along the first dimension with `index_select`. With an `Rng` the order is shuffled
/// (same seed, same order; make one `Batches` per epoch from the same `Rng` for a new order
/// each epoch); without, it is the data's order. The last, smaller batch is kept unless
/// `drop_last(true)`.
///
/// ```
/// use ferrograd::{Rng, Tensor};
/// use ferrograd_data::Batches;
/// let x = Tensor::from_vec((0..10).map(|i| i as f32).collect(), &[5, 2]).unwrap(); // (N, 2)
/// let y = Tensor::from_vec(vec![0i64, 1, 2, 3, 4], &[5]).unwrap(); // (N,)
/// let mut rng = Rng::seed(0);
/// let mut seen = Vec::new();
/// for batch in Batches::new(&x, &y, 2, Some(&mut rng)).unwrap() {
///     let (xb, yb) = batch.unwrap(); // (≤2, 2), (≤2,)
///     assert_eq!(xb.dims()[0], yb.dims()[0]);
///     seen.extend(yb.to_vec::<i64>().unwrap());
/// }
/// seen.sort();
/// assert_eq!(seen, vec![0, 1, 2, 3, 4]); // every example once, in batches of 2, 2 and 1
/// ```
#[derive(Clone, Debug)]
pub struct Batches {
    inputs: Tensor,
    targets: Tensor,
    order: Vec<i64>,
    batch_size: usize,
    next: usize,
    drop_last: bool,
}

impl Batches {
    /// Batches of `batch_size` from `inputs` and `targets`, which must have the same first
    /// dimension; shuffled with `rng` when one is given.
    pub fn new(
        inputs: &Tensor,
        targets: &Tensor,
        batch_size: usize,
        rng: Option<&mut Rng>,
    ) -> Result<Batches> {
        if batch_size == 0 {
            return Err(Error::value("batches", "batch size must be at least 1, got 0"));
        }
        let (n, m) = (inputs.dims().first(), targets.dims().first());
        let n = match (n, m) {
            (Some(&n), Some(&m)) if n == m => n,
            _ => {
                return Err(Error::shape(
                    "batches",
                    format!(
                        "inputs {} and targets {} must have the same first dimension",
                        inputs.shape(),
                        targets.shape()
                    ),
                ))
            }
        };
        let mut order: Vec<i64> = (0..n as i64).collect();
        if let Some(rng) = rng {
            rng.shuffle(&mut order);
        }
        let (inputs, targets) = (inputs.clone(), targets.clone());
        Ok(Batches { inputs, targets, order, batch_size, next: 0, drop_last: false })
    }

    /// Whether to leave out the last batch when it is smaller than the others.
    pub fn drop_last(mut self, drop_last: bool) -> Batches {
        self.drop_last = drop_last;
        self
    }

    /// How many examples one batch would hold next: 0 when the epoch is over.
    fn next_len(&self) -> usize {
        let left = self.order.len() - self.next;
        match left < self.batch_size && self.drop_last {
            true => 0,
            false => left.min(self.batch_size),
        }
    }
}

impl Iterator for Batches {
    type Item = Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.next_len();
        if len == 0 {
            return None;
        }
        let ids = &self.order[self.next..self.next + len];
        self.next += len;
        let batch = || {
            let ids = Tensor::from_slice(ids, &[len])?;
            Ok((self.inputs.index_select(0, &ids)?, self.targets.index_select(0, &ids)?))
        };
        Some(batch())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.next;
        let n = match self.drop_last {
            true => left / self.batch_size,
            false => left.div_ceil(self.batch_size),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches {}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> (Tensor, Tensor) {
        let x = Tensor::from_vec((0..3 * n).map(|i| i as f32).collect(), &[n, 1, 3]).unwrap();
        let y = Tensor::from_vec((0..n as i64).collect(), &[n]).unwrap();
        (x, y)
    }

    /// The targets of each batch (here each target is its example's index).
    fn epoch(batches: Batches) -> Vec<Vec<i64>> {
        batches.map(|b| b.unwrap().1.to_vec::<i64>().unwrap()).collect()
    }

    #[test]
    fn in_order_keeps_or_drops_the_last_batch() {
        let (x, y) = data(7);
        let kept = Batches::new(&x, &y, 3, None).unwrap();
        assert_eq!(kept.len(), 3);
        assert_eq!(epoch(kept), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        let dropped = Batches::new(&x, &y, 3, None).unwrap().drop_last(true);
        assert_eq!(dropped.len(), 2);
        assert_eq!(epoch(dropped), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(epoch(Batches::new(&x, &y, 7, None).unwrap().drop_last(true)).len(), 1);
        assert_eq!(epoch(Batches::new(&x, &y, 8, None).unwrap().drop_last(true)).len(), 0);
    }

    #[test]
    fn inputs_follow_their_targets() {
        let (x, y) = data(10);
        for batch in Batches::new(&x, &y, 4, Some(&mut Rng::seed(1))).unwrap() {
            let (xb, yb) = batch.unwrap();
            assert_eq!(xb.dims()[1..], [1, 3]);
            let xs = xb.to_vec::<f32>().unwrap();
            for (i, &t) in yb.to_vec::<i64>().unwrap().iter().enumerate() {
                assert_eq!(
                    xs[3 * i..3 * i + 3],
                    [3.0 * t as f32, 3.0 * t as f32 + 1.0, 3.0 * t as f32 + 2.0]
                );
            }
        }
    }

    #[test]
    fn same_seed_same_order_and_each_epoch_a_permutation() {
        let (x, y) = data(50);
        let a = epoch(Batches::new(&x, &y, 8, Some(&mut Rng::seed(5))).unwrap());
        let b = epoch(Batches::new(&x, &y, 8, Some(&mut Rng::seed(5))).unwrap());
        assert_eq!(a, b);
        let mut rng = Rng::seed(5);
        let first = epoch(Batches::new(&x, &y, 8, Some(&mut rng)).unwrap());
        let second = epoch(Batches::new(&x, &y, 8, Some(&mut rng)).unwrap());
        assert_ne!(first, second);
        assert_ne!(first.concat(), (0..50).collect::<Vec<i64>>());
        let mut all = second.concat();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<i64>>());
    }

    #[test]
    fn refuses_batch_size_zero_and_mismatched_data() {
        let (x, y) = data(4);
        let e = Batches::new(&x, &y, 0, None).unwrap_err();
        assert!(e.to_string().contains("batch size must be at least 1"), "{e}");
        let (_, y5) = data(5);
        let e = Batches::new(&x, &y5, 2, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batches: inputs [4, 1, 3] and targets [5] must have the same first dimension"
        );
        assert!(Batches::new(&Tensor::scalar(1.0f32), &y, 2, None).is_err());
        let (x0, y0) = data(0);
        assert_eq!(Batches::new(&x0, &y0, 2, None).unwrap().count(), 0);
    }
}
