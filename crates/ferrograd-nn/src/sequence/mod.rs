//! The lecture's sequence blocks: EmbedToken, the recurrent cells (SimpleRNN, LSTM) behind the
//! `Rnn` trait, SequenceRNN, Collapse, GenerateToken and LanguageModel.

mod classifier;
mod collapse;
mod embed;
mod language_model;
mod rnn;

pub use classifier::TextClassifier;
pub use collapse::Collapse;
pub use embed::{EmbedToken, GenerateToken};
pub use language_model::{LanguageModel, Sampling};
pub use rnn::{Rnn, RnnStack, RnnState, SequenceRNN, SimpleRNN, LSTM};

use crate::Module;
use ferrograd::{Error, Result, Tensor};

/// A (B, T, D) sequence and an optional (B, T) padding mask (1 = token, 0 = padding) in, a
/// (B, T, D′) sequence out: the lecture's SequenceModel.
pub trait SequenceModel: Module {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor>;
    /// Continues from `state` (empty at the start) over a few more steps, updating it, for
    /// generation that does not recompute the prefix. The state holds `state_len()` tensors.
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor>;
    /// [`SequenceModel::forward_incremental`] for rows that start with `pad.lead[b]` padding
    /// slots (prompts of different lengths, left-padded into one batch): keys on padding are
    /// not attended to and positions count from each row's first token. Only models that can
    /// skip padding (attention, positions, pointwise layers) take a padded batch.
    fn forward_incremental_padded(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: &Padding,
    ) -> Result<Tensor> {
        if pad.lead.iter().all(|&n| n == 0) {
            return self.forward_incremental(x, state);
        }
        Err(Error::value(
            "generate",
            format!("{} cannot continue a batch of padded rows", self.describe()),
        ))
    }
    fn state_len(&self) -> usize;
    fn output_size(&self) -> usize;
    /// The most positions it can take in one sequence (learned positions have a last one);
    /// `None` when unbounded, as recurrences are.
    fn context(&self) -> Option<usize> {
        None
    }
    /// The attention weights (B, H, T, S) of the first attention in this model for input `x`,
    /// for looking at what it attends to; `None` when it has no attention.
    fn attention_weights(&self, _x: &Tensor, _mask: Option<&Tensor>) -> Option<Result<Tensor>> {
        None
    }
    /// This layer as a TransformerBlock, whose one-token steps a stack fuses with its
    /// neighbours' ([`Tensor::block_step`]); `None` for every other layer.
    fn as_transformer_block(&self) -> Option<&crate::TransformerBlock> {
        None
    }
}

/// How many padding slots each row of a left-padded batch starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct Padding {
    pub lead: Vec<usize>,
}

impl Padding {
    /// (B, S) i64: 1 on the rows' tokens, 0 on their padding, for keys at slots 0..s.
    pub fn key_mask(&self, s: usize) -> Result<Tensor> {
        let mask = self.lead.iter().flat_map(|&n| (0..s).map(move |j| i64::from(j >= n)));
        Tensor::from_vec(mask.collect(), &[self.lead.len(), s])
    }
}

/// A stack of sequence models applied in turn: the lecture's SequenceModel^k.
pub struct SequenceStack {
    pub layers: Vec<Box<dyn SequenceModel>>,
}

impl Module for SequenceStack {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        self.layers.iter().flat_map(|l| l.blocks()).collect()
    }
    fn params(&self) -> Vec<crate::Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
    fn torch_names(&self) -> Vec<crate::pytorch::TorchName> {
        self.layers.iter().flat_map(|l| l.torch_names()).collect()
    }
}

impl SequenceModel for SequenceStack {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |h, l| l.forward_masked(&h, mask))
    }
    /// Each run of TransformerBlocks that can fuse a step ([`Tensor::block_step`]) takes it
    /// as one op, so that the threads that share its products meet once a token; every other
    /// layer, and a run without its caches yet, steps as [`incremental_layers`] steps it.
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.clone();
        let mut old = std::mem::take(state).into_iter();
        let mut next = Vec::with_capacity(old.len());
        let mut i = 0;
        while i < self.layers.len() {
            let run: Vec<&crate::TransformerBlock> =
                self.layers[i..].iter().map_while(|l| l.as_transformer_block()).collect();
            let mut fused = !run.is_empty() && old.len() >= 2 * run.len();
            for b in &run {
                fused = fused && b.steps_fused(&h)?;
            }
            if fused {
                let mut caches: Vec<Tensor> = old.by_ref().take(2 * run.len()).collect();
                h = crate::transformer::fused_steps(&run, &h, &mut caches)?;
                next.extend(caches);
                i += run.len();
                continue;
            }
            let n = self.layers[i].state_len();
            let mut s: Vec<Tensor> = old.by_ref().take(n).collect();
            if s.len() < n {
                s.clear();
            }
            h = self.layers[i].forward_incremental(&h, &mut s)?;
            next.extend(s);
            i += 1;
        }
        *state = next;
        Ok(h)
    }
    fn forward_incremental_padded(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: &Padding,
    ) -> Result<Tensor> {
        incremental_layers(
            &self.layers,
            x,
            state,
            |l| l.state_len(),
            |l, h, s| l.forward_incremental_padded(h, s, pad),
        )
    }
    fn context(&self) -> Option<usize> {
        self.layers.iter().filter_map(|l| l.context()).min()
    }
    fn state_len(&self) -> usize {
        self.layers.iter().map(|l| l.state_len()).sum()
    }
    fn attention_weights(&self, x: &Tensor, mask: Option<&Tensor>) -> Option<Result<Tensor>> {
        let mut h = x.clone();
        for l in &self.layers {
            if let Some(w) = l.attention_weights(&h, mask) {
                return Some(w);
            }
            h = match l.forward_masked(&h, mask) {
                Ok(next) => next,
                Err(e) => return Some(Err(e)),
            };
        }
        None
    }
    fn output_size(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_size())
    }
}

/// Runs `layers` in turn from a stack's `state`, each on its own slice of it (`state_len` of
/// them, or none where the state runs short), and puts their new states back in the same
/// order. The tensors are moved, not cloned, so that a layer's cache is its own to grow in
/// place ([`Tensor::append`]); after an error the state is empty.
pub(crate) fn incremental_layers<L>(
    layers: &[L],
    x: &Tensor,
    state: &mut Vec<Tensor>,
    state_len: impl Fn(&L) -> usize,
    mut step: impl FnMut(&L, &Tensor, &mut Vec<Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut h = x.clone();
    let mut old = std::mem::take(state).into_iter();
    let mut next = Vec::with_capacity(old.len());
    for l in layers {
        let n = state_len(l);
        let mut s: Vec<Tensor> = old.by_ref().take(n).collect();
        if s.len() < n {
            s.clear();
        }
        h = step(l, &h, &mut s)?;
        next.extend(s);
    }
    *state = next;
    Ok(h)
}

/// Checks a (B, T) mask against a (B, T, D) input.
pub fn check_mask(op: &str, x: &Tensor, mask: Option<&Tensor>) -> Result<()> {
    if x.rank() != 3 {
        return Err(Error::shape(op, format!("input must be (B, T, D), got {}", x.shape())));
    }
    if x.dims()[1] == 0 {
        return Err(Error::shape(op, "the sequence is empty (T = 0)"));
    }
    if let Some(m) = mask {
        if m.dims() != &x.dims()[..2] {
            return Err(Error::shape(
                op,
                format!(
                    "mask must be {:?} for input {}, got {}",
                    &x.dims()[..2],
                    x.shape(),
                    m.shape()
                ),
            ));
        }
    }
    Ok(())
}

/// The number of real tokens in each row of a (B, T) mask (T for every row without one).
pub(crate) fn lengths(mask: Option<&Tensor>, b: usize, t: usize) -> Result<Vec<usize>> {
    match mask {
        None => Ok(vec![t; b]),
        Some(m) => Ok(m
            .to_vec_f64()?
            .chunks(t.max(1))
            .map(|row| row.iter().filter(|&&v| v != 0.0).count())
            .collect()),
    }
}
