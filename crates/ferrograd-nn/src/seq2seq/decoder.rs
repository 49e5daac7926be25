//! The two decoders: the Transformer's DecoderBlock and an LSTM with attention over the encoder
//! states. Both attend to the memory through the same cross-attention.

use super::{needs_memory, Decoder, Memory};
use crate::pytorch::{renamed, scope_of, TorchName};
use crate::sequence::{check_mask, SequenceModel};
use crate::transformer::feed_forward;
use crate::{
    Activation, AddNorm, Attention, Dropout, FeedForward, LayerNorm, Module, Param, ParamStore,
    SequenceRNN, LSTM,
};
use ferrograd::{Error, Result, Tensor};

/// Cross-attention of `x` over the memory, its keys and values computed once and kept in
/// `cache` (empty on the first call) for every later step.
fn cross_attend(
    attention: &Attention,
    x: &Tensor,
    memory: &Memory,
    cache: &mut Vec<Tensor>,
) -> Result<Tensor> {
    if cache.len() != 2 {
        let (k, v) = attention.keys_values(&memory.states)?;
        *cache = vec![k, v];
    }
    attention.attend_to(x, &cache[0], &cache[1], memory.mask.as_ref())
}

/// A decoder layer's step over its state, split in two: its own (the first two tensors: a
/// self-attention cache or an LSTM's h and c) and the memory's keys and values (the next two).
fn with_split_state(
    state: &mut Vec<Tensor>,
    step: impl FnOnce(&mut Vec<Tensor>, &mut Vec<Tensor>) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut own = state.get(..2).map(<[Tensor]>::to_vec).unwrap_or_default();
    let mut cache = state.get(2..4).map(<[Tensor]>::to_vec).unwrap_or_default();
    let out = step(&mut own, &mut cache)?;
    *state = own.into_iter().chain(cache).collect();
    Ok(out)
}

fn check_memory(op: &str, x: &Tensor, memory: &Memory) -> Result<()> {
    let m = memory.states.dims();
    if m.len() != 3 || m[0] != x.dims()[0] || m[2] != x.dims()[2] {
        return Err(Error::shape(
            op,
            format!(
                "memory must be ({}, S, {}), got {}",
                x.dims()[0],
                x.dims()[2],
                memory.states.shape()
            ),
        ));
    }
    Ok(())
}

/// `AddNorm(FeedForward, AddNorm(CrossAttention, AddNorm(Attention, y)))`: causal
/// self-attention over the target so far, attention to the encoder's output, then a two-layer
/// FeedForward (GELU) — PyTorch's `nn.TransformerDecoderLayer`.
pub struct DecoderBlock {
    pub self_attention: Attention,
    pub self_attention_norm: AddNorm,
    pub cross_attention: Attention,
    pub cross_attention_norm: AddNorm,
    pub ff_in: FeedForward,
    pub ff_out: FeedForward,
    pub ff_norm: AddNorm,
    /// Between the FeedForward's two layers, in training.
    pub ff_dropout: Option<Dropout>,
}

impl DecoderBlock {
    /// Parameters `self_attention.*`, `self_attention_norm.*`, `cross_attention.*`,
    /// `cross_attention_norm.*`, `ff_in.*`, `ff_out.*`, `ff_norm.*` under `store`.
    pub fn new(
        store: &ParamStore,
        dim: usize,
        heads: usize,
        ff: usize,
        pre_norm: bool,
    ) -> Result<DecoderBlock> {
        let add_norm =
            |name: &str| Ok(AddNorm::new(LayerNorm::new(store.sub(name), dim, 1e-5)?, pre_norm));
        Ok(DecoderBlock {
            self_attention: Attention::new(&store.sub("self_attention"), dim, heads, true)?,
            self_attention_norm: add_norm("self_attention_norm")?,
            cross_attention: Attention::new(&store.sub("cross_attention"), dim, heads, false)?,
            cross_attention_norm: add_norm("cross_attention_norm")?,
            ff_in: FeedForward::new(store.sub("ff_in"), dim, ff, Activation::Gelu)?,
            ff_out: FeedForward::new(store.sub("ff_out"), ff, dim, Activation::Identity)?,
            ff_norm: add_norm("ff_norm")?,
            ff_dropout: None,
        })
    }

    /// Dropout with probability `p` in training where `nn.TransformerDecoderLayer(dropout=p)`
    /// has it: on both attentions' weights, between the FeedForward's layers, and on each
    /// sublayer's output before it is added back.
    pub fn with_dropout(mut self, store: &ParamStore, p: f64) -> Result<DecoderBlock> {
        self.self_attention.dropout = Some(Dropout::new(store, p)?);
        self.ff_dropout = Some(Dropout::new(store, p)?);
        self.cross_attention.dropout = Some(Dropout::new(store, p)?);
        for norm in
            [&mut self.self_attention_norm, &mut self.cross_attention_norm, &mut self.ff_norm]
        {
            norm.dropout = Some(Dropout::new(store, p)?);
        }
        Ok(self)
    }

    /// The FeedForward's activation in place of GELU (`nn.TransformerDecoderLayer`'s default
    /// is ReLU).
    pub fn with_activation(mut self, activation: Activation) -> DecoderBlock {
        self.ff_in.activation = activation;
        self
    }

    /// Everything after self-attention, the same for a full pass and for one step.
    fn rest(&self, h: &Tensor, memory: &Memory, cache: &mut Vec<Tensor>) -> Result<Tensor> {
        let h = self
            .cross_attention_norm
            .apply(h, |y| cross_attend(&self.cross_attention, y, memory, cache))?;
        let ff = |y: &Tensor| feed_forward(&self.ff_in, &self.ff_out, self.ff_dropout.as_ref(), y);
        self.ff_norm.apply(&h, ff)
    }
}

impl Module for DecoderBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(needs_memory("DecoderBlock", x))
    }
    fn describe(&self) -> String {
        let pre = if self.ff_norm.pre_norm { ", pre-norm" } else { "" };
        format!(
            "DecoderBlock({}, cross-attention, FeedForward {}{pre})",
            self.self_attention.describe(),
            self.ff_in.weight.get().dims()[0]
        )
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["DecoderBlock"]
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.self_attention.params();
        p.extend(self.self_attention_norm.norm.params());
        p.extend(self.cross_attention.params());
        p.extend(self.cross_attention_norm.norm.params());
        p.extend(self.ff_in.params());
        p.extend(self.ff_out.params());
        p.extend(self.ff_norm.norm.params());
        p
    }
    /// `nn.TransformerDecoderLayer`'s: `self_attn`, `multihead_attn`, `linear1`, `linear2`,
    /// `norm1`, `norm2`, `norm3`.
    fn torch_names(&self) -> Vec<TorchName> {
        let mut names = self.self_attention.torch_names();
        names.extend(self.self_attention_norm.norm.params().into_iter().map(TorchName::same));
        names.extend(self.cross_attention.torch_names());
        names.extend(self.cross_attention_norm.norm.params().into_iter().map(TorchName::same));
        for p in [self.ff_in.params(), self.ff_out.params(), self.ff_norm.norm.params()] {
            names.extend(p.into_iter().map(TorchName::same));
        }
        match scope_of(&self.ff_norm.norm.weight, "ff_norm.weight") {
            Some(scope) => renamed(
                names,
                &scope,
                &[
                    ("self_attention.", "self_attn."),
                    ("self_attention_norm.", "norm1."),
                    ("cross_attention.", "multihead_attn."),
                    ("cross_attention_norm.", "norm2."),
                    ("ff_in.", "linear1."),
                    ("ff_out.", "linear2."),
                    ("ff_norm.", "norm3."),
                ],
            ),
            None => names,
        }
    }
}

impl Decoder for DecoderBlock {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>, memory: &Memory) -> Result<Tensor> {
        check_mask("DecoderBlock", x, mask)?;
        check_memory("DecoderBlock", x, memory)?;
        let h = self.self_attention_norm.apply(x, |y| self.self_attention.attend(y, y, mask))?;
        self.rest(&h, memory, &mut Vec::new())
    }
    /// State: the self-attention's keys and values so far, then the memory's.
    fn forward_incremental(
        &self,
        x: &Tensor,
        memory: &Memory,
        state: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        check_memory("DecoderBlock", x, memory)?;
        with_split_state(state, |own, cache| {
            let h = self
                .self_attention_norm
                .apply(x, |y| SequenceModel::forward_incremental(&self.self_attention, y, own))?;
            self.rest(&h, memory, cache)
        })
    }
    fn state_len(&self) -> usize {
        4
    }
    fn output_size(&self) -> usize {
        self.ff_out.weight.get().dims()[0]
    }
}

/// `AddNorm(CrossAttention, SequenceRNN<LSTM>(y))`: an LSTM reads the target so far, and each of
/// its outputs attends to the encoder's states (Luong-style attention, without input feeding,
/// so training runs the fused recurrence over the whole target at once).
pub struct RnnDecoder {
    pub rnn: SequenceRNN<LSTM>,
    pub attention: Attention,
    pub attention_norm: AddNorm,
}

impl RnnDecoder {
    /// An LSTM `rnn.weight_ih_l{layer}` … and attention `attention.*`, `attention_norm.*`.
    pub fn new(store: &ParamStore, dim: usize, heads: usize, layer: usize) -> Result<RnnDecoder> {
        Ok(RnnDecoder {
            rnn: SequenceRNN::new(&store.sub("rnn"), dim, dim, layer, false)?,
            attention: Attention::new(&store.sub("attention"), dim, heads, false)?,
            attention_norm: AddNorm::new(
                LayerNorm::new(store.sub("attention_norm"), dim, 1e-5)?,
                false,
            ),
        })
    }
}

impl Module for RnnDecoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(needs_memory("RnnDecoder", x))
    }
    fn describe(&self) -> String {
        format!("RnnDecoder({}, {})", self.rnn.describe(), self.attention.describe())
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["RnnDecoder"]
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.rnn.params();
        p.extend(self.attention.params());
        p.extend(self.attention_norm.norm.params());
        p
    }
    fn torch_names(&self) -> Vec<TorchName> {
        let mut n = self.rnn.torch_names();
        n.extend(self.attention.torch_names());
        n.extend(self.attention_norm.norm.torch_names());
        n
    }
}

impl Decoder for RnnDecoder {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>, memory: &Memory) -> Result<Tensor> {
        check_memory("RnnDecoder", x, memory)?;
        let h = SequenceModel::forward_masked(&self.rnn, x, mask)?;
        self.attention_norm.apply(&h, |y| cross_attend(&self.attention, y, memory, &mut Vec::new()))
    }
    /// State: the LSTM's h and c, then the memory's keys and values.
    fn forward_incremental(
        &self,
        x: &Tensor,
        memory: &Memory,
        state: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        check_memory("RnnDecoder", x, memory)?;
        with_split_state(state, |own, cache| {
            let h = SequenceModel::forward_incremental(&self.rnn, x, own)?;
            self.attention_norm.apply(&h, |y| cross_attend(&self.attention, y, memory, cache))
        })
    }
    fn state_len(&self) -> usize {
        4
    }
    fn output_size(&self) -> usize {
        self.rnn.output_size()
    }
}
