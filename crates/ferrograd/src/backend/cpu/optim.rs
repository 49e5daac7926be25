//! Optimizer updates as fused kernels: each rule reads a chunk of weights, gradients and state
//! once and writes the new weights and state in the same pass, chunks across threads.

use super::{with_wide_vectors, Float};
use crate::backend::Update;
use rayon::prelude::*;

/// Elements per task of an update: a parameter of fewer than two chunks runs on one thread
/// (the optimizers run parameters side by side).
const CHUNK: usize = 1 << 14;

/// A hyperparameter (given in f64) in the weights' float type.
#[inline(always)]
fn of<T: Float>(x: f64) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

/// `w` and the `slots` (as many as the rule names, each as long as `w`) updated in place.
pub(crate) fn update<T: Float + Send + Sync>(
    w: &mut [T],
    g: &[T],
    slots: &mut [&mut [T]],
    rule: &Update,
) {
    assert!(g.len() == w.len() && slots.iter().all(|s| s.len() == w.len()));
    match (rule, slots) {
        (&Update::Sgd { lr, weight_decay }, []) => {
            let (lr, wd) = (of::<T>(lr), of::<T>(weight_decay));
            chunked(
                w,
                g,
                [],
                #[inline(always)]
                |w, g, []| w.iter_mut().zip(g).for_each(|(w, &g)| *w = *w - lr * (g + wd * *w)),
            );
        }
        (&Update::Momentum { lr, momentum, nesterov, weight_decay, first }, [buf]) => {
            let (lr, wd, mom) = (of::<T>(lr), of::<T>(weight_decay), of::<T>(momentum));
            chunked(
                w,
                g,
                [buf],
                #[inline(always)]
                |w, g, [buf]| {
                    for ((w, &g), buf) in w.iter_mut().zip(g).zip(buf.iter_mut()) {
                        let d = g + wd * *w;
                        // The buffer starts as the first step's gradient, as PyTorch's does.
                        *buf = if first { d } else { mom * *buf + d };
                        *w = *w - lr * if nesterov { d + mom * *buf } else { *buf };
                    }
                },
            );
        }
        (&Update::Adam { beta1, beta2, scale, eps_c2s, decay, l2 }, [m, v]) => {
            let (one_b1, one_b2) = (of::<T>(1.0 - beta1), of::<T>(1.0 - beta2));
            let [beta1, beta2, scale, eps_c2s, decay, l2] =
                [beta1, beta2, scale, eps_c2s, decay, l2].map(of::<T>);
            chunked(
                w,
                g,
                [m, v],
                #[inline(always)]
                |w, g, [m, v]| {
                    let n = w.len();
                    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
                    for i in 0..n {
                        let wi = w[i] * decay;
                        let gi = g[i] + l2 * wi;
                        m[i] = beta1 * m[i] + one_b1 * gi;
                        v[i] = beta2 * v[i] + one_b2 * gi * gi;
                        w[i] = wi - scale * m[i] / (v[i].sqrt() + eps_c2s);
                    }
                },
            );
        }
        (rule, slots) => panic!("{rule:?} takes {} state slots, got {}", rule.slots(), slots.len()),
    }
}

/// `body` over matching chunks of the weights, gradients and `S` slots, compiled with wide
/// vectors (so `body` must be `#[inline(always)]`, or it compiles apart, for the baseline),
/// across threads when there are several chunks.
#[inline(always)]
fn chunked<T: Float + Send + Sync, const S: usize>(
    w: &mut [T],
    g: &[T],
    slots: [&mut &mut [T]; S],
    body: impl Fn(&mut [T], &[T], [&mut [T]; S]) + Send + Sync,
) {
    let n = w.len();
    // Per chunk: the slot slices of that chunk, split off each slot in step.
    let mut rests: [&mut [T]; S] = slots.map(|s| &mut **s);
    let mut parts: Vec<[&mut [T]; S]> = Vec::with_capacity(n.div_ceil(CHUNK));
    for start in (0..n).step_by(CHUNK) {
        let take = CHUNK.min(n - start);
        parts.push(rests.each_mut().map(|r| {
            let (head, tail) = std::mem::take(r).split_at_mut(take);
            *r = tail;
            head
        }));
    }
    type Piece<'a, T, const S: usize> = ((&'a mut [T], &'a [T]), [&'a mut [T]; S]);
    let run = |((w, g), s): Piece<T, S>| {
        with_wide_vectors(
            #[inline(always)]
            || body(w, g, s),
        )
    };
    if n >= 2 * CHUNK {
        w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(parts).for_each(run);
    } else {
        w.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).zip(parts).for_each(run);
    }
}

/// Σ x², accumulated in f64 (as clipping's global norm needs).
pub(crate) fn sum_squares<T: Float + Send + Sync>(x: &[T]) -> f64 {
    let part = |c: &[T]| c.iter().map(|&v| v.to_f64().unwrap_or(f64::NAN).powi(2)).sum::<f64>();
    if x.len() < 2 * CHUNK {
        part(x)
    } else {
        // Chunk sums in chunk order: the same total on any number of threads.
        let parts: Vec<f64> = x.par_chunks(CHUNK).map(part).collect();
        parts.iter().sum()
    }
}

/// `x ← factor · x`, in place.
pub(crate) fn scale<T: Float + Send + Sync>(x: &mut [T], factor: f64) {
    let f = of::<T>(factor);
    x.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = *v * f));
}
