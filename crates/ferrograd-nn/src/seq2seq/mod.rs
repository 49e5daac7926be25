//! The lecture's last model, SequenceToSequence: an encoder SequenceModel reads the source, and
//! a decoder — a language model that also attends to the encoder's output — writes the target.
//!
//! Legend: B batch, S source positions, T target positions, D model size, V vocabulary.

mod decoder;
mod evaluate;
mod model;
mod search;

pub use decoder::{DecoderBlock, RnnDecoder};
pub use evaluate::{evaluate, Evaluation, IdPairs};
pub use model::{Seq2SeqConfig, Seq2SeqKind, SequenceToSequence};
pub use search::{BeamOptions, Hypothesis};

use crate::sequence::SequenceModel;
use crate::{Module, Param};
use ferrograd::{Result, Tensor};

/// The encoder's output as a decoder reads it: (B, S, D) states and their (B, S) padding mask
/// (1 = token, 0 = padding).
#[derive(Clone, Debug)]
pub struct Memory {
    pub states: Tensor,
    pub mask: Option<Tensor>,
}

impl Memory {
    /// The rows `rows` (i64 indices into the batch), in that order: beam search's copies of
    /// each input.
    pub fn select(&self, rows: &Tensor) -> Result<Memory> {
        Ok(Memory {
            states: self.states.index_select(0, rows)?,
            mask: self.mask.as_ref().map(|m| m.index_select(0, rows)).transpose()?,
        })
    }
}

/// The error of calling a decoder's plain `forward`, which has no memory to read.
pub(crate) fn needs_memory(op: &str, x: &Tensor) -> ferrograd::Error {
    ferrograd::Error::value(
        op,
        format!("a decoder needs the encoder's output: call forward_masked (input {})", x.shape()),
    )
}

/// A sequence model conditioned on an encoder's output: (B, T, D) target-side inputs, their
/// (B, T) mask and the memory in, (B, T, D′) out, each position seeing only itself and earlier
/// ones. Any SequenceModel that does not look at the memory (Positions, LayerNorm) is one.
pub trait Decoder: Module {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>, memory: &Memory) -> Result<Tensor>;
    /// Continues from `state` (empty at the start) over a few more positions, updating it.
    /// The state holds `state_len()` tensors, each with the batch first, so that beam search
    /// can reorder them; what the memory contributes (cross-attention keys and values) is
    /// computed on the first call and kept there.
    fn forward_incremental(
        &self,
        x: &Tensor,
        memory: &Memory,
        state: &mut Vec<Tensor>,
    ) -> Result<Tensor>;
    fn state_len(&self) -> usize;
    fn output_size(&self) -> usize;
}

/// A layer of a decoder stack: one that reads the memory, or a plain sequence model that does
/// not (Positions, a final LayerNorm).
pub enum DecoderLayer {
    Attending(Box<dyn Decoder>),
    Plain(Box<dyn SequenceModel>),
}

impl DecoderLayer {
    fn module(&self) -> &dyn Module {
        match self {
            DecoderLayer::Attending(d) => d.as_ref(),
            DecoderLayer::Plain(m) => m.as_ref(),
        }
    }
    fn state_len(&self) -> usize {
        match self {
            DecoderLayer::Attending(d) => d.state_len(),
            DecoderLayer::Plain(m) => m.state_len(),
        }
    }
}

/// Decoders applied in turn, each reading the same memory: the lecture's SequenceModel^k on the
/// target side.
pub struct DecoderStack {
    pub layers: Vec<DecoderLayer>,
}

impl Module for DecoderStack {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(needs_memory("DecoderStack", x))
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        self.layers.iter().flat_map(|l| l.module().blocks()).collect()
    }
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.module().params()).collect()
    }
    fn torch_names(&self) -> Vec<crate::pytorch::TorchName> {
        self.layers.iter().flat_map(|l| l.module().torch_names()).collect()
    }
}

impl Decoder for DecoderStack {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>, memory: &Memory) -> Result<Tensor> {
        self.layers.iter().try_fold(x.clone(), |h, l| match l {
            DecoderLayer::Attending(d) => d.forward_masked(&h, mask, memory),
            DecoderLayer::Plain(m) => m.forward_masked(&h, mask),
        })
    }
    fn forward_incremental(
        &self,
        x: &Tensor,
        memory: &Memory,
        state: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        crate::sequence::incremental_layers(
            &self.layers,
            x,
            state,
            |l| l.state_len(),
            |l, h, s| match l {
                DecoderLayer::Attending(d) => d.forward_incremental(h, memory, s),
                DecoderLayer::Plain(m) => m.forward_incremental(h, s),
            },
        )
    }
    fn state_len(&self) -> usize {
        self.layers.iter().map(|l| l.state_len()).sum()
    }
    fn output_size(&self) -> usize {
        match self.layers.last() {
            Some(DecoderLayer::Attending(d)) => d.output_size(),
            Some(DecoderLayer::Plain(m)) => m.output_size(),
            None => 0,
        }
    }
}
