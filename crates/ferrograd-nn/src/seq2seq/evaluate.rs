//! How well a sequence-to-sequence model does on held-out pairs: exact match of whole outputs
//! by beam search, teacher-forced token accuracy, and corpus BLEU.

use super::{BeamOptions, SequenceToSequence};
use ferrograd::{no_grad, Result};
use ferrograd_data::bleu::corpus_bleu;
use ferrograd_data::text::seq2seq_batch;
use ferrograd_data::Tokenizer;

/// (source ids, target ids) pairs.
pub type IdPairs = Vec<(Vec<i64>, Vec<i64>)>;

/// Held-out scores: exact match of whole outputs, teacher-forced token accuracy and BLEU.
pub struct Evaluation {
    pub exact_match: f64,
    pub token_accuracy: f64,
    pub bleu: f64,
    /// The decoded outputs, in order.
    pub outputs: Vec<Vec<i64>>,
}

/// Decodes every source of `pairs` by beam search (`beam` 1: greedy) in batches and scores it.
pub fn evaluate(
    model: &SequenceToSequence,
    target: &Tokenizer,
    pairs: &[(Vec<i64>, Vec<i64>)],
    beam: usize,
) -> Result<Evaluation> {
    let _g = no_grad();
    let c = &model.config;
    let options = BeamOptions { width: beam.max(1), length_penalty: 0.6, max_len: c.max_positions };
    let (mut outputs, mut right, mut tokens) = (Vec::new(), 0usize, 0usize);
    for chunk in pairs.chunks(64) {
        let (source, target_in, target_out) = seq2seq_batch(chunk, c.pad, c.bos, c.eos)?;
        for hyps in model.beam_search(&source, &options)? {
            outputs.push(hyps.into_iter().next().map(|h| h.tokens).unwrap_or_default());
        }
        let guess = model.scores(&source, &target_in)?.argmax(-1, false)?.to_vec::<i64>()?;
        for (g, t) in guess.iter().zip(target_out.to_vec::<i64>()?) {
            if t != c.pad {
                tokens += 1;
                right += usize::from(*g == t);
            }
        }
    }
    let exact = outputs.iter().zip(pairs).filter(|(o, (_, t))| *o == t).count();
    let hyps = outputs.iter().map(|o| target.decode(o)).collect::<Result<Vec<_>>>()?;
    let refs = pairs.iter().map(|(_, t)| target.decode(t)).collect::<Result<Vec<_>>>()?;
    Ok(Evaluation {
        exact_match: exact as f64 / pairs.len().max(1) as f64,
        token_accuracy: right as f64 / tokens.max(1) as f64,
        bleu: corpus_bleu(&hyps, &refs)?.score,
        outputs,
    })
}
