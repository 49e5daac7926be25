//! The lecture's text classifier: `score = w · Collapse(SequenceModel^k(EmbedToken(x)))`.

use super::{Collapse, EmbedToken, SequenceModel, SequenceRNN, SequenceStack, LSTM};
use crate::{Activation, FeedForward, Module, Param, ParamStore};
use ferrograd::{Result, Tensor};

/// Token ids and a padding mask in, one score per class out.
pub struct TextClassifier {
    pub embed: EmbedToken,
    pub body: SequenceStack,
    pub collapse: Collapse,
    pub head: FeedForward,
}

impl TextClassifier {
    /// EmbedToken(vocab → dim), `layers` bidirectional LSTMs of `hidden` units, max-Collapse,
    /// and a FeedForward to `classes` scores; padding id 0.
    pub fn lstm(
        store: &ParamStore,
        vocab: usize,
        dim: usize,
        hidden: usize,
        layers: usize,
        classes: usize,
    ) -> Result<TextClassifier> {
        let mut stack: Vec<Box<dyn SequenceModel>> = Vec::new();
        for l in 0..layers.max(1) {
            let input = if l == 0 { dim } else { 2 * hidden };
            stack.push(Box::new(SequenceRNN::<LSTM>::new(
                &store.sub("rnn"),
                input,
                hidden,
                l,
                true,
            )?));
        }
        Ok(TextClassifier {
            embed: EmbedToken::new(store.sub("embed"), vocab, dim, Some(0))?,
            body: SequenceStack { layers: stack },
            collapse: Collapse::Max,
            head: FeedForward::new(store.sub("head"), 2 * hidden, classes, Activation::Identity)?,
        })
    }

    /// (B, T) ids and (B, T) mask → (B, classes) scores.
    pub fn scores(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.body.forward_masked(&self.embed.forward(ids)?, Some(mask))?;
        self.head.forward(&self.collapse.apply(&h, Some(mask))?)
    }
}

impl Module for TextClassifier {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mask = ids.ne(&Tensor::scalar(0i64))?;
        self.scores(ids, &mask)
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        let mut b = self.embed.blocks();
        b.extend(self.body.blocks());
        b.extend(self.collapse.blocks());
        b.extend(self.head.blocks());
        b
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.embed.params();
        p.extend(self.body.params());
        p.extend(self.head.params());
        p
    }
}
