//! Question answering: BERT reads `[CLS] question [SEP] context [SEP]`, and a span head scores
//! every context token as the answer's start and as its end.
//!
//! Legend: B batch, T tokens, D model size.

use super::{Bert, BertConfig};
use crate::{Activation, FeedForward, Module, Param, ParamStore};
use ferrograd::{DType, Error, Result, Tensor};
use ferrograd_data::BertBatch;
use std::path::Path;

/// Added to the scores of tokens that cannot be part of an answer (question, specials,
/// padding): their probability is exactly 0.
const BLOCKED: f64 = -1e9;

/// An answer: tokens `start..=end` and its score, start score + end score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

/// BERT with a span head, Hugging Face's `BertForQuestionAnswering`: `qa_outputs` maps each
/// token's state to a start score and an end score.
pub struct QuestionAnswering {
    pub bert: Bert,
    pub span: FeedForward,
}

impl QuestionAnswering {
    /// A freshly initialized model: BERT's parameters under `store`, the head `qa_outputs.*`.
    pub fn new(store: &ParamStore, config: &BertConfig) -> Result<QuestionAnswering> {
        let bert = Bert::new(store, config)?;
        let span =
            FeedForward::new(store.sub("qa_outputs"), config.hidden_size, 2, Activation::Identity)?;
        Ok(QuestionAnswering { bert, span })
    }

    /// BERT from a Hugging Face directory (see [`Bert::from_pretrained`]); the span head comes
    /// from the same file when it has `qa_outputs` (a model fine-tuned for QA), and starts fresh
    /// otherwise (to fine-tune a base model).
    pub fn from_pretrained(dir: &Path, store: &ParamStore) -> Result<QuestionAnswering> {
        let bert = Bert::from_pretrained(dir, store)?;
        let span = FeedForward::new(
            store.sub("qa_outputs"),
            bert.config.hidden_size,
            2,
            Activation::Identity,
        )?;
        let (tensors, _) = ferrograd::io::load_safetensors(&dir.join("model.safetensors"))?;
        for (param, name) in [(&span.weight, "qa_outputs.weight"), (&span.bias, "qa_outputs.bias")]
        {
            if let Some((_, t)) = tensors.iter().find(|(k, _)| k == name) {
                param.set(&t.to_dtype(store.dtype())?)?;
            }
        }
        Ok(QuestionAnswering { bert, span })
    }

    /// Start and end scores (B, T) each, for (B, T) ids, segment ids and mask; tokens whose
    /// `context` (B, T) is 0 are blocked from being part of an answer.
    pub fn scores(
        &self,
        ids: &Tensor,
        token_types: &Tensor,
        mask: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        if context.dims() != ids.dims() {
            return Err(Error::shape(
                "QuestionAnswering",
                format!(
                    "the context mask must be {:?} like the ids, got {}",
                    ids.dims(),
                    context.shape()
                ),
            ));
        }
        let h = self.bert.forward(ids, Some(token_types), Some(mask))?;
        let s = self.span.forward(&h)?; // (B, T, 2)
        let blocked = context
            .eq(&Tensor::scalar(0i64).to_dtype(context.dtype())?)?
            .to_dtype(s.dtype())?
            .mul_scalar(BLOCKED)?;
        let (b, t) = (ids.dims()[0], ids.dims()[1]);
        let start = s.narrow(2, 0, 1)?.reshape(&[b, t])?.add(&blocked)?;
        let end = s.narrow(2, 1, 1)?.reshape(&[b, t])?.add(&blocked)?;
        Ok((start, end))
    }

    /// Mean cross-entropy of the true start and end tokens, (B,) i64 each.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        ids: &Tensor,
        token_types: &Tensor,
        mask: &Tensor,
        context: &Tensor,
        starts: &Tensor,
        ends: &Tensor,
    ) -> Result<Tensor> {
        let (start, end) = self.scores(ids, token_types, mask, context)?;
        start.cross_entropy(starts, None)?.add(&end.cross_entropy(ends, None)?)?.mul_scalar(0.5)
    }

    /// The answer of each row of `batch` (`contexts[row]` its context) as text, with its
    /// score; `None` for a row without context tokens. Records no graph.
    pub fn answers(
        &self,
        batch: &BertBatch,
        contexts: &[&str],
        max_answer_len: usize,
    ) -> Result<Vec<Option<(String, f64)>>> {
        let _g = ferrograd::no_grad();
        let (s, e) =
            self.scores(&batch.ids, &batch.token_types, &batch.mask, &batch.context_mask()?)?;
        Ok(QuestionAnswering::best_spans(&s, &e, max_answer_len)?
            .into_iter()
            .enumerate()
            .map(|(row, span)| {
                span.and_then(|sp| {
                    let (from, to) = (batch.offsets[row][sp.start].0, batch.offsets[row][sp.end].1);
                    Some((contexts.get(row)?.get(from..to)?.to_string(), sp.score))
                })
            })
            .collect())
    }

    /// The best span of each row: the largest start score + end score over start ≤ end <
    /// start + `max_len`, both in the context; `None` for a row without context tokens.
    pub fn best_spans(start: &Tensor, end: &Tensor, max_len: usize) -> Result<Vec<Option<Span>>> {
        if start.rank() != 2 || start.dims() != end.dims() {
            return Err(Error::shape(
                "QuestionAnswering::best_spans",
                format!(
                    "start and end scores must both be (B, T), got {} and {}",
                    start.shape(),
                    end.shape()
                ),
            ));
        }
        let t = start.dims()[1];
        let (s, e) = (start.to_vec_f64()?, end.to_vec_f64()?);
        let allowed = |v: f64| v > BLOCKED / 2.0;
        Ok(s.chunks(t.max(1))
            .zip(e.chunks(t.max(1)))
            .map(|(s, e)| {
                let mut best: Option<Span> = None;
                for i in (0..t).filter(|&i| allowed(s[i])) {
                    for j in (i..t.min(i + max_len.max(1))).filter(|&j| allowed(e[j])) {
                        let score = s[i] + e[j];
                        if best.is_none_or(|b| score > b.score) {
                            best = Some(Span { start: i, end: j, score });
                        }
                    }
                }
                best
            })
            .collect())
    }
}

impl Module for QuestionAnswering {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let ones = Tensor::ones(ids.dims(), DType::I64)?;
        let (s, e) = self.scores(ids, &Tensor::zeros(ids.dims(), DType::I64)?, &ones, &ones)?;
        Tensor::stack(&[s, e], 2)
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        let mut b = self.bert.blocks();
        b.push("Span");
        b
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.bert.params();
        p.extend(self.span.params());
        p
    }
}
