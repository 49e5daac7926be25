//! Decoding a SequenceToSequence model: greedy or sampled token by token, or beam search — all
//! batched, the decoder's keys and values cached, the memory's projected once per input.

use super::{Memory, SequenceToSequence};
use crate::Sampling;
use ferrograd::{no_grad, Error, Result, Rng, Tensor};

/// Beam search's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamOptions {
    /// Hypotheses kept at each step.
    pub width: usize,
    /// α in `score / length^α`, length counting `<eos>`: 0 ranks by total log-probability
    /// (favouring short outputs), 1 by the mean per token.
    pub length_penalty: f64,
    /// The most tokens a hypothesis may have, `<eos>` included.
    pub max_len: usize,
}

/// A finished output: its tokens (without `<eos>`), total log-probability and the score it is
/// ranked by (the log-probability over `length^α`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<i64>,
    pub log_prob: f64,
    pub score: f64,
}

fn rank(log_prob: f64, len: usize, alpha: f64) -> f64 {
    log_prob / (len.max(1) as f64).powf(alpha)
}

/// The rows `rows` of every state tensor with a batch dimension (Positions' counter has none).
fn select_rows(state: &mut [Tensor], rows: &[i64]) -> Result<()> {
    let index = Tensor::from_vec(rows.to_vec(), &[rows.len()])?;
    for s in state.iter_mut().filter(|s| s.rank() > 0) {
        *s = s.index_select(0, &index)?;
    }
    Ok(())
}

impl SequenceToSequence {
    /// The memory of `source`, each row repeated `k` times (row-major: input 0's copies first).
    fn repeated_memory(&self, source: &Tensor, k: usize) -> Result<Memory> {
        let memory = self.encode(source)?;
        if k == 1 {
            return Ok(memory);
        }
        let rows: Vec<i64> =
            (0..source.dims()[0] as i64).flat_map(|b| std::iter::repeat_n(b, k)).collect();
        memory.select(&Tensor::from_vec(rows.clone(), &[rows.len()])?)
    }

    /// The most tokens the decoder can write: `max_len`, capped by the model's positions.
    fn longest_output(&self, max_len: usize) -> Result<usize> {
        if max_len == 0 {
            return Err(Error::value(
                "SequenceToSequence",
                "the output length limit must be at least 1",
            ));
        }
        Ok(max_len.min(self.config.max_positions))
    }

    /// The outputs for (B, S) source ids, token by token, each chosen by `sampling` (greedy:
    /// `Sampling::greedy()`), until `<eos>` (not included) or `max_len` tokens.
    pub fn generate(
        &self,
        source: &Tensor,
        max_len: usize,
        sampling: Sampling,
        rng: &mut Rng,
    ) -> Result<Vec<Vec<i64>>> {
        let _g = no_grad();
        let max_len = self.longest_output(max_len)?;
        let memory = self.encode(source)?;
        let b = source.dims()[0];
        let (mut outputs, mut done) = (vec![Vec::new(); b], vec![false; b]);
        let mut tokens = vec![self.config.bos; b];
        let mut state = Vec::new();
        for _ in 0..max_len {
            let logp = self.step(&tokens, &memory, &mut state)?;
            for (i, row) in logp.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let next = sampling.choose(row, rng)? as i64;
                tokens[i] = next;
                if next == self.config.eos {
                    done[i] = true;
                } else {
                    outputs[i].push(next);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(outputs)
    }

    /// The `width` best outputs for each row of (B, S) source ids, best first, by beam search:
    /// every step extends each kept hypothesis by every token and keeps the `width` best
    /// extensions that do not end; those that end (`<eos>`) are set aside. An input stops once
    /// no kept hypothesis can still beat its `width` best finished ones.
    pub fn beam_search(
        &self,
        source: &Tensor,
        options: &BeamOptions,
    ) -> Result<Vec<Vec<Hypothesis>>> {
        let _g = no_grad();
        let k = options.width;
        if k == 0 {
            return Err(Error::value("beam_search", "the beam width must be at least 1"));
        }
        let max_len = self.longest_output(options.max_len)?;
        let alpha = options.length_penalty;
        if !(alpha >= 0.0 && alpha.is_finite()) {
            return Err(Error::value(
                "beam_search",
                format!("the length penalty must be a number ≥ 0, got {alpha}"),
            ));
        }
        let b = source.dims()[0];
        let memory = self.repeated_memory(source, k)?;
        // Beam j of input i is row i·k + j. At first only beam 0 is live, so that the first
        // step does not pick the same token k times.
        let mut beams: Vec<Vec<i64>> = vec![Vec::new(); b * k];
        let mut log_probs: Vec<f64> =
            (0..b * k).map(|r| if r % k == 0 { 0.0 } else { f64::NEG_INFINITY }).collect();
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut tokens = vec![self.config.bos; b * k];
        let mut state = Vec::new();
        for len in 1..=max_len {
            let logp = self.step(&tokens, &memory, &mut state)?;
            let mut parents: Vec<i64> = (0..(b * k) as i64).collect();
            for i in 0..b {
                if done[i] {
                    continue;
                }
                let mut candidates: Vec<(f64, usize, usize)> = Vec::new(); // (log p, beam, token)
                for j in 0..k {
                    let r = i * k + j;
                    if log_probs[r] == f64::NEG_INFINITY {
                        continue;
                    }
                    candidates.extend(
                        logp[r]
                            .iter()
                            .enumerate()
                            .filter(|(_, &l)| l > f64::NEG_INFINITY)
                            .map(|(t, &l)| (log_probs[r] + l, r, t)),
                    );
                }
                candidates.sort_by(|a, c| c.0.total_cmp(&a.0));
                let mut kept = 0;
                let (mut next_beams, mut next_logp) =
                    (Vec::with_capacity(k), Vec::with_capacity(k));
                for &(lp, r, t) in &candidates {
                    if kept == k {
                        break;
                    }
                    if t as i64 == self.config.eos {
                        finished[i].push(Hypothesis {
                            tokens: beams[r].clone(),
                            log_prob: lp,
                            score: rank(lp, len, alpha),
                        });
                        continue;
                    }
                    let mut seq = beams[r].clone();
                    seq.push(t as i64);
                    parents[i * k + kept] = r as i64;
                    next_beams.push(seq);
                    next_logp.push(lp);
                    kept += 1;
                }
                for j in 0..k {
                    let r = i * k + j;
                    beams[r] = next_beams.get(j).cloned().unwrap_or_default();
                    log_probs[r] = next_logp.get(j).copied().unwrap_or(f64::NEG_INFINITY);
                    tokens[r] = beams[r].last().copied().unwrap_or(self.config.eos);
                }
                finished[i].sort_by(|a, c| c.score.total_cmp(&a.score));
                finished[i].truncate(k);
                // Log-probabilities only fall as hypotheses grow; with α > 0 the length can
                // still lift a score, at most to log p / max_len^α.
                let best_open = next_logp.first().map_or(f64::NEG_INFINITY, |&lp| {
                    rank(lp, if alpha > 0.0 { max_len } else { len }, alpha)
                });
                done[i] = finished[i].len() == k && finished[i][k - 1].score >= best_open;
            }
            if done.iter().all(|&d| d) {
                break;
            }
            select_rows(&mut state, &parents)?;
        }
        // Inputs still open at the length limit: their open hypotheses count as outputs.
        for i in (0..b).filter(|&i| !done[i]) {
            for j in 0..k {
                let r = i * k + j;
                if log_probs[r] > f64::NEG_INFINITY {
                    let lp = log_probs[r];
                    finished[i].push(Hypothesis {
                        tokens: beams[r].clone(),
                        log_prob: lp,
                        score: rank(lp, beams[r].len(), alpha),
                    });
                }
            }
            finished[i].sort_by(|a, c| c.score.total_cmp(&a.score));
            finished[i].truncate(k);
        }
        Ok(finished)
    }
}
