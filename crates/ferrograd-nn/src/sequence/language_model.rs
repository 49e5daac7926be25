//! LanguageModel: `GenerateToken(SequenceModel(EmbedToken(x)))` at every position — trained on
//! every next token at once, generating one token at a time.

use super::{EmbedToken, GenerateToken, Padding, SequenceModel};
use crate::{Module, Param};
use ferrograd::{no_grad, Error, Result, Rng, Tensor};

/// How the next token is chosen from the scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 picks the best-scoring token (greedy); otherwise scores are divided by it.
    pub temperature: f64,
    /// Keep only the k best tokens (0: all).
    pub top_k: usize,
    /// Keep the fewest best tokens whose probabilities add up to p (1: all).
    pub top_p: f64,
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 }
    }

    /// The chosen token for one row of scores.
    pub fn choose(&self, scores: &[f64], rng: &mut Rng) -> Result<usize> {
        if scores.is_empty() {
            return Err(Error::value("Sampling", "no scores to choose from"));
        }
        let best = (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap_or(0);
        if self.temperature <= 0.0 {
            return Ok(best);
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let max = scores[order[0]];
        let mut probs: Vec<f64> =
            order.iter().map(|&i| ((scores[i] - max) / self.temperature).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&p| {
                acc += p;
                acc >= self.top_p
            });
            let n = keep.map_or(probs.len(), |k| k + 1);
            order.truncate(n);
            probs.truncate(n);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut u = rng.uniform();
        for (i, p) in order.iter().zip(&probs) {
            if u < *p {
                return Ok(*i);
            }
            u -= p;
        }
        Ok(*order.last().unwrap_or(&best))
    }
}

/// The lecture's language model over any SequenceModel.
pub struct LanguageModel {
    pub embed: EmbedToken,
    pub body: Box<dyn SequenceModel>,
    pub head: GenerateToken,
}

impl LanguageModel {
    /// (B, T) ids → (B, T, V) scores for the token after each position.
    pub fn scores(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.head.forward(&self.body.forward_masked(&self.embed.forward(ids)?, mask)?)
    }

    /// Mean cross-entropy of predicting `targets` (B, T) from `ids` (B, T), every position at
    /// once; positions whose target is `ignore` are left out.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, ignore: Option<i64>) -> Result<Tensor> {
        if ids.dims() != targets.dims() {
            return Err(Error::shape(
                "LanguageModel::loss",
                format!("ids {} and targets {} must have one shape", ids.shape(), targets.shape()),
            ));
        }
        let s = self.scores(ids, None)?;
        let v = s.dims()[2];
        s.reshape(&[ids.numel(), v])?.cross_entropy(&targets.reshape(&[ids.numel()])?, ignore)
    }

    /// Continues `prompt` by up to `max_tokens` tokens, calling `on_token` with each as it is
    /// chosen (to stream it); stops early at any of `stop`. Each new token costs one step of
    /// the sequence model, not a pass over the whole prefix. A model with a bounded context
    /// (learned positions) that fills it starts again from the last half of what it has seen
    /// (the prompt's end when the prompt alone is too long).
    pub fn generate(
        &self,
        prompt: &[i64],
        max_tokens: usize,
        sampling: Sampling,
        stop: &[i64],
        rng: &mut Rng,
        mut on_token: impl FnMut(i64) -> Result<()>,
    ) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::value("generate", "the prompt is empty: give at least one token"));
        }
        let _g = no_grad();
        let context = self.body.context().unwrap_or(usize::MAX);
        let mut seen = prompt.to_vec();
        let mut state = Vec::new();
        let (mut fed, mut input) = (0, seen.clone());
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            if fed + input.len() > context {
                let keep = if fed == 0 { context } else { (context / 2).max(1) };
                input = seen[seen.len() - keep..].to_vec();
                (fed, state) = (0, Vec::new());
            }
            let x = Tensor::from_vec(input.clone(), &[1, input.len()])?;
            let h = self.body.forward_incremental(&self.embed.forward(&x)?, &mut state)?;
            fed += input.len();
            let last = h.narrow(1, h.dims()[1] - 1, 1)?;
            let scores = self.head.forward(&last)?.to_vec_f64()?;
            let next = sampling.choose(&scores, rng)? as i64;
            out.push(next);
            seen.push(next);
            on_token(next)?;
            if stop.contains(&next) {
                break;
            }
            input = vec![next];
        }
        Ok(out)
    }

    /// Continues several prompts side by side as one batch, left-padded to the longest: each
    /// row chooses its own tokens (in row order from `rng`) and ends at any of `stop` or after
    /// `max_tokens`. Gives each row's new tokens, as [`LanguageModel::generate`] would alone.
    /// The model must skip padding (a transformer) and hold the longest prompt and the
    /// continuation within its context.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<i64>],
        max_tokens: usize,
        sampling: Sampling,
        stop: &[i64],
        rng: &mut Rng,
    ) -> Result<Vec<Vec<i64>>> {
        const OP: &str = "generate_batch";
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if prompts.iter().any(Vec::is_empty) {
            return Err(Error::value(OP, "a prompt is empty: give at least one token each"));
        }
        if let Some(context) = self.body.context().filter(|&c| longest + max_tokens > c) {
            return Err(Error::value(
                OP,
                format!("the longest prompt ({longest} tokens) and {max_tokens} new ones exceed the model's context of {context} positions"),
            ));
        }
        let _g = no_grad();
        let b = prompts.len();
        let pad = Padding { lead: prompts.iter().map(|p| longest - p.len()).collect() };
        // Padding slots hold a prompt's first token: any id the vocabulary has.
        let ids: Vec<i64> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p[0], longest - p.len()).chain(p.iter().copied()))
            .collect();
        let mut input = Tensor::from_vec(ids, &[b, longest])?;
        let mut state = Vec::new();
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for _ in 0..max_tokens {
            let h = self.body.forward_incremental_padded(
                &self.embed.forward(&input)?,
                &mut state,
                &pad,
            )?;
            let last = h.narrow(1, h.dims()[1] - 1, 1)?;
            let scores = self.head.forward(&last)?.to_vec_f64()?;
            let v = scores.len() / b;
            let mut next = Vec::with_capacity(b);
            for (row, row_scores) in scores.chunks(v).enumerate() {
                let token = sampling.choose(row_scores, rng)? as i64;
                if !done[row] {
                    out[row].push(token);
                    done[row] = stop.contains(&token);
                }
                next.push(token);
            }
            if done.iter().all(|&d| d) {
                break;
            }
            input = Tensor::from_vec(next, &[b, 1])?;
        }
        Ok(out)
    }
}

impl Module for LanguageModel {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.scores(ids, None)
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        let mut b = self.embed.blocks();
        b.extend(self.body.blocks());
        b.extend(self.head.blocks());
        b
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.embed.params();
        p.extend(self.body.params());
        p.extend(self.head.params());
        p
    }
    fn torch_names(&self) -> Vec<crate::pytorch::TorchName> {
        let mut n = self.embed.torch_names();
        n.extend(self.body.torch_names());
        n.extend(self.head.torch_names());
        n
    }
}
