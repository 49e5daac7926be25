//! Cross-entropy's fused kernels: the mean negative log-likelihood from each row's
//! log-normalizer, and its gradient recomputed from the scores.

use super::Float;

/// Mean negative log-likelihood over kept rows, and each row's log-normalizer
/// `ln Σ exp(x)`, which backward needs.
pub(crate) fn nll_forward<T: Float + Send + Sync>(
    x: &[T],
    c: usize,
    kept: &[Option<usize>],
) -> (T, Vec<T>) {
    let count = kept.iter().filter(|k| k.is_some()).count();
    let lse = super::log_sum_exp_rows(x, c);
    let total: f64 = kept
        .iter()
        .enumerate()
        .filter_map(|(r, k)| k.map(|t| (x[r * c + t] - lse[r]).to_f64().unwrap_or(0.0)))
        .sum();
    // No kept rows gives NaN, as in PyTorch (0/0).
    let mean = if count == 0 { f64::NAN } else { -total / count as f64 };
    (T::from(mean).unwrap_or(T::nan()), lse)
}

/// `scale · (softmax − onehot)` for kept rows, zero for ignored ones; the softmax from the
/// scores `x` and their rows' log-normalizers.
pub(crate) fn nll_backward<T: Float + Send + Sync>(
    x: &[T],
    lse: &[T],
    c: usize,
    kept: &[Option<usize>],
    scale: f64,
) -> Vec<T> {
    let s = T::from(scale).unwrap_or(T::zero());
    let row = |r: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        let (row, l) = (&x[r * c..(r + 1) * c], lse[r]);
        match kept[r] {
            Some(t) => {
                // Zipped slices (no bounds tests) with wide vectors: the exponentials vectorize.
                super::with_wide_vectors(
                    #[inline(always)]
                    || {
                        out.iter_mut().zip(row).for_each(|(o, &v)| {
                            o.write((v - l).fast_exp() * s);
                        })
                    },
                );
                out[t].write((row[t] - l).fast_exp() * s - s);
            }
            None => out.iter_mut().for_each(|o| {
                o.write(T::zero());
            }),
        }
    };
    // SAFETY: `row` writes every element of its row, kept or not.
    unsafe { super::rows_written(kept.len(), c, row) }
}
