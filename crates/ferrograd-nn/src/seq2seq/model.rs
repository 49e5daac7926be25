//! SequenceToSequence: `GenerateToken(Decoder(EmbedToken(y), Encoder(EmbedToken(x))))`.

use super::{Decoder, DecoderBlock, DecoderLayer, DecoderStack, Memory, RnnDecoder};
use crate::module::compose;
use crate::sequence::SequenceModel;
use crate::{
    losses, Dropout, EmbedToken, GenerateToken, LayerNorm, Module, Param, ParamStore, Positions,
    SequenceRNN, SequenceStack, TransformerBlock, LSTM,
};
use ferrograd::{DType, Error, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Which blocks the encoder and decoder are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seq2SeqKind {
    /// TransformerBlocks reading the source, DecoderBlocks writing the target, learned
    /// positions on both sides, post-norm with a final LayerNorm on each (`nn.Transformer`).
    Transformer,
    /// A bidirectional LSTM reading the source, RnnDecoders (LSTM + attention) writing.
    Rnn,
}

/// The sizes of a SequenceToSequence model and its target's special token ids; serializable,
/// so that a checkpoint can rebuild the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqConfig {
    pub kind: Seq2SeqKind,
    pub source_vocab: usize,
    pub target_vocab: usize,
    /// One EmbedToken for source and target (the vocabularies must then be the same).
    pub shared_vocab: bool,
    pub dim: usize,
    pub heads: usize,
    /// The FeedForward width inside each Transformer block.
    pub ff: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// The longest source, and the longest target (Transformer: the position tables' size).
    pub max_positions: usize,
    /// Padding (both sides), begin and end of the target.
    pub pad: i64,
    pub bos: i64,
    pub eos: i64,
    /// Dropout in training, on attention weights and sublayer outputs (`nn.Transformer`'s
    /// `dropout`); 0 in checkpoints written before it existed.
    #[serde(default)]
    pub dropout: f64,
}

impl Seq2SeqConfig {
    /// A small Transformer (W7's model): 2 + 2 layers, d 128, 4 heads, FeedForward 512, a shared
    /// vocabulary of 1000, 64 positions; pad 0, bos 2, eos 3 (as `Vocab::build_with_bos_eos`).
    pub fn small_transformer() -> Seq2SeqConfig {
        Seq2SeqConfig {
            kind: Seq2SeqKind::Transformer,
            source_vocab: 1000,
            target_vocab: 1000,
            shared_vocab: true,
            dim: 128,
            heads: 4,
            ff: 512,
            encoder_layers: 2,
            decoder_layers: 2,
            max_positions: 64,
            pad: 0,
            bos: 2,
            eos: 3,
            dropout: 0.0,
        }
    }

    fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::value("SequenceToSequence", m));
        if self.shared_vocab && self.source_vocab != self.target_vocab {
            return fail(format!(
                "a shared vocabulary needs one size, got source {} and target {}",
                self.source_vocab, self.target_vocab
            ));
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 || self.max_positions == 0 {
            return fail("layers and positions must be at least 1".into());
        }
        for (name, n) in [("dim", self.dim), ("heads", self.heads), ("ff", self.ff)] {
            if n == 0 {
                return fail(format!("{name} must be at least 1, got 0"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.kind == Seq2SeqKind::Rnn && !self.dim.is_multiple_of(2) {
            return fail(format!(
                "the RNN encoder splits dim {} over two directions: make it even",
                self.dim
            ));
        }
        for (name, id) in [("pad", self.pad), ("bos", self.bos), ("eos", self.eos)] {
            if id < 0 || id as usize >= self.target_vocab {
                return fail(format!(
                    "{name} id {id} is outside the target vocabulary of {}",
                    self.target_vocab
                ));
            }
        }
        Ok(())
    }
}

/// The lecture's SequenceToSequence: an encoder reads the source, a decoder language model
/// attends to it while it writes the target; GenerateToken is tied to the target EmbedToken.
pub struct SequenceToSequence {
    pub source_embed: EmbedToken,
    pub encoder: SequenceStack,
    pub target_embed: EmbedToken,
    pub decoder: DecoderStack,
    pub head: GenerateToken,
    pub config: Seq2SeqConfig,
}

impl SequenceToSequence {
    /// Parameters `source_embed.weight` (also the target's when shared), `target_embed.weight`,
    /// `encoder.{i}.*` and `decoder.{i}.*` under `store`.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// use ferrograd_nn::{Module, ParamStore, Seq2SeqConfig, SequenceToSequence};
    /// let config = Seq2SeqConfig { dim: 16, heads: 2, ff: 32, ..Seq2SeqConfig::small_transformer() };
    /// let model = SequenceToSequence::new(&ParamStore::new(0), &config).unwrap();
    /// assert_eq!(
    ///     model.describe(),
    ///     "GenerateToken(DecoderBlock^2(EmbedToken(y), TransformerBlock^2(EmbedToken(x))))"
    /// );
    /// let source = Tensor::from_vec(vec![5i64, 6, 7], &[1, 3]).unwrap();
    /// let target = Tensor::from_vec(vec![2i64, 9], &[1, 2]).unwrap(); // <bos> 9
    /// assert_eq!(model.scores(&source, &target).unwrap().dims(), &[1, 2, 1000]);
    /// ```
    pub fn new(store: &ParamStore, c: &Seq2SeqConfig) -> Result<SequenceToSequence> {
        c.check()?;
        let d = c.dim;
        // Tied to GenerateToken: small, as GPT and T5 start them, so that first scores are even.
        let embed = |name: &str, vocab: usize| -> Result<EmbedToken> {
            let e = EmbedToken::new(store.sub(name), vocab, d, Some(c.pad))?;
            let w = e.weight.get();
            e.weight.set(&w.mul_scalar(1.0 / (d as f64).sqrt())?)?;
            Ok(e)
        };
        let source_embed = embed("source_embed", c.source_vocab)?;
        let target_embed = if c.shared_vocab {
            EmbedToken { weight: source_embed.weight.clone(), padding_id: Some(c.pad) }
        } else {
            embed("target_embed", c.target_vocab)?
        };
        let (enc, dec) = (store.sub("encoder"), store.sub("decoder"));
        let mut encoder: Vec<Box<dyn SequenceModel>> = Vec::new();
        let mut decoder: Vec<DecoderLayer> = Vec::new();
        match c.kind {
            Seq2SeqKind::Transformer => {
                encoder.push(Box::new(Positions::new(enc.sub("positions"), c.max_positions, d)?));
                decoder.push(DecoderLayer::Plain(Box::new(Positions::new(
                    dec.sub("positions"),
                    c.max_positions,
                    d,
                )?)));
                for i in 0..c.encoder_layers {
                    let block = TransformerBlock::new(&enc.sub(i), d, c.heads, c.ff, false, false)?;
                    encoder.push(Box::new(block.with_dropout(store, c.dropout)?));
                }
                for i in 0..c.decoder_layers {
                    let block = DecoderBlock::new(&dec.sub(i), d, c.heads, c.ff, false)?;
                    let block = block.with_dropout(store, c.dropout)?;
                    decoder.push(DecoderLayer::Attending(Box::new(block)));
                }
                encoder.push(Box::new(LayerNorm::new(enc.sub("norm"), d, 1e-5)?));
                decoder.push(DecoderLayer::Plain(Box::new(LayerNorm::new(
                    dec.sub("norm"),
                    d,
                    1e-5,
                )?)));
            }
            Seq2SeqKind::Rnn => {
                for i in 0..c.encoder_layers {
                    let rnn = SequenceRNN::<LSTM>::new(&enc.sub("rnn"), d, d / 2, i, true)?;
                    encoder.push(Box::new(rnn));
                }
                for i in 0..c.decoder_layers {
                    let mut layer = RnnDecoder::new(&dec.sub(i), d, c.heads, i)?;
                    layer.attention.dropout = Some(Dropout::new(store, c.dropout)?);
                    layer.attention_norm.dropout = Some(Dropout::new(store, c.dropout)?);
                    decoder.push(DecoderLayer::Attending(Box::new(layer)));
                }
            }
        }
        let head = GenerateToken::tied(&target_embed);
        Ok(SequenceToSequence {
            source_embed,
            encoder: SequenceStack { layers: encoder },
            target_embed,
            decoder: DecoderStack { layers: decoder },
            head,
            config: c.clone(),
        })
    }

    /// 1 where `ids` is a token, 0 where it is padding; `None` when there is no padding, which
    /// spares every attention the masking.
    fn mask_of(&self, ids: &Tensor) -> Result<Option<Tensor>> {
        if !ids.as_slice::<i64>("SequenceToSequence")?.contains(&self.config.pad) {
            return Ok(None);
        }
        Ok(Some(ids.ne(&Tensor::scalar(self.config.pad))?.to_dtype(DType::I64)?))
    }

    fn check_ids(&self, what: &str, ids: &Tensor, longest: usize) -> Result<()> {
        if ids.rank() != 2 || ids.dims()[1] == 0 {
            return Err(Error::shape(
                "SequenceToSequence",
                format!("{what} ids must be (B, T) with T ≥ 1, got {}", ids.shape()),
            ));
        }
        if ids.dims()[1] > longest {
            return Err(Error::shape(
                "SequenceToSequence",
                format!(
                    "the {what} has {} tokens; the model takes at most {longest}",
                    ids.dims()[1]
                ),
            ));
        }
        Ok(())
    }

    /// The encoder's output for (B, S) source ids, padded with the pad id.
    pub fn encode(&self, source: &Tensor) -> Result<Memory> {
        self.check_ids("source", source, self.config.max_positions)?;
        let mask = self.mask_of(source)?;
        let states =
            self.encoder.forward_masked(&self.source_embed.forward(source)?, mask.as_ref())?;
        Ok(Memory { states, mask })
    }

    /// (B, T) target inputs (`<bos>` first, teacher forcing) and the memory → (B, T, V) scores
    /// for the token after each position.
    pub fn decode(&self, target_in: &Tensor, memory: &Memory) -> Result<Tensor> {
        self.check_ids("target", target_in, self.config.max_positions)?;
        let mask = self.mask_of(target_in)?;
        let h = self.decoder.forward_masked(
            &self.target_embed.forward(target_in)?,
            mask.as_ref(),
            memory,
        )?;
        self.head.forward(&h)
    }

    /// (B, S) source and (B, T) target inputs → (B, T, V) scores.
    pub fn scores(&self, source: &Tensor, target_in: &Tensor) -> Result<Tensor> {
        self.decode(target_in, &self.encode(source)?)
    }

    /// Mean cross-entropy (with label smoothing) of `target_out` (B, T) — `target_in` shifted
    /// one on, `<eos>` last — over its non-padding positions.
    pub fn loss(
        &self,
        source: &Tensor,
        target_in: &Tensor,
        target_out: &Tensor,
        label_smoothing: f64,
    ) -> Result<Tensor> {
        if target_in.dims() != target_out.dims() {
            return Err(Error::shape(
                "SequenceToSequence::loss",
                format!(
                    "target inputs {} and outputs {} must have one shape",
                    target_in.shape(),
                    target_out.shape()
                ),
            ));
        }
        let s = self.scores(source, target_in)?;
        let (n, v) = (target_out.numel(), s.dims()[2]);
        losses::cross_entropy(
            &s.reshape(&[n, v])?,
            &target_out.reshape(&[n])?,
            label_smoothing,
            Some(self.config.pad),
        )
    }

    /// One decoding step for every row: (N, 1) previous tokens → (N, V) log-probabilities,
    /// with `<pad>` and `<bos>` ruled out (never generated).
    pub(super) fn step(
        &self,
        tokens: &[i64],
        memory: &Memory,
        state: &mut Vec<Tensor>,
    ) -> Result<Vec<Vec<f64>>> {
        let input = Tensor::from_vec(tokens.to_vec(), &[tokens.len(), 1])?;
        let h =
            self.decoder.forward_incremental(&self.target_embed.forward(&input)?, memory, state)?;
        let logp = self.head.forward(&h)?.log_softmax(-1)?;
        let v = logp.dims()[2];
        let mut rows: Vec<Vec<f64>> = logp.to_vec_f64()?.chunks(v).map(<[f64]>::to_vec).collect();
        for row in &mut rows {
            row[self.config.pad as usize] = f64::NEG_INFINITY;
            row[self.config.bos as usize] = f64::NEG_INFINITY;
        }
        Ok(rows)
    }
}

impl Module for SequenceToSequence {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Err(Error::value(
            "SequenceToSequence",
            format!(
                "needs a source and a target; call scores(source, target) (got one input {})",
                x.shape()
            ),
        ))
    }
    /// `GenerateToken(DecoderBlock^2(EmbedToken(y), TransformerBlock^2(EmbedToken(x))))`.
    fn describe(&self) -> String {
        let encoded = compose(self.encoder.blocks(), "EmbedToken(x)".into(), "");
        let decoded =
            compose(self.decoder.blocks(), "EmbedToken(y)".into(), &format!(", {encoded}"));
        format!("GenerateToken({decoded})")
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["SequenceToSequence"]
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.source_embed.params();
        if !self.config.shared_vocab {
            p.extend(self.target_embed.params());
        }
        p.extend(self.encoder.params());
        p.extend(self.decoder.params());
        p
    }
}
