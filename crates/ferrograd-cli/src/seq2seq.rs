//! Sequence to sequence from the command line: `train seq2seq` and `translate`; the training
//! loop and the evaluation (exact match, token accuracy, BLEU) the tour uses too.

use crate::plot::{line_chart, write_loss_csv, Series};
use crate::CliResult;
use clap::{Args, ValueEnum};
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_data::bleu::corpus_bleu;
use ferrograd_data::text::{read_pairs, seq2seq_batch};
use ferrograd_data::{CharTokenizer, Vocab, WordTokenizer};
use ferrograd_nn::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, Schedule};
use ferrograd_nn::{
    inspect_checkpoint, load_checkpoint, save_checkpoint, thousands, BeamOptions, Module,
    ParamStore, Seq2SeqConfig, Seq2SeqKind, SequenceToSequence,
};
use std::path::PathBuf;
use std::time::Instant;

/// (source ids, target ids) pairs.
pub type IdPairs = Vec<(Vec<i64>, Vec<i64>)>;

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Lowercased words, punctuation apart (sentences).
    Word,
    /// Each character (code, spelling).
    Char,
}

/// How one side's text becomes ids: words or chars over a vocabulary with `<bos>` and `<eos>`.
/// Saved in checkpoints as `{"tokens": "word" | "char", "vocab": …}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "SideFile", into = "SideFile")]
pub enum Side {
    Word(WordTokenizer),
    Char(CharTokenizer),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SideFile {
    tokens: TokenKind,
    vocab: Vocab,
}

impl From<SideFile> for Side {
    fn from(f: SideFile) -> Side {
        match f.tokens {
            TokenKind::Word => Side::Word(WordTokenizer::new(f.vocab)),
            TokenKind::Char => Side::Char(CharTokenizer::new(f.vocab)),
        }
    }
}

impl From<Side> for SideFile {
    fn from(side: Side) -> SideFile {
        let tokens = side.kind();
        SideFile { tokens, vocab: side.vocab().clone() }
    }
}

impl Side {
    fn kind(&self) -> TokenKind {
        match self {
            Side::Word(_) => TokenKind::Word,
            Side::Char(_) => TokenKind::Char,
        }
    }

    fn split(kind: TokenKind, text: &str) -> Vec<String> {
        match kind {
            TokenKind::Word => WordTokenizer::split(text),
            TokenKind::Char => text.chars().map(String::from).collect(),
        }
    }

    /// A side whose vocabulary holds every token of `texts`.
    pub fn build<'a>(kind: TokenKind, texts: impl IntoIterator<Item = &'a str>) -> CliResult<Side> {
        let tokens = texts.into_iter().flat_map(|t| Side::split(kind, t));
        let vocab = Vocab::build_with_bos_eos(tokens, 1, None)?;
        Ok(SideFile { tokens: kind, vocab }.into())
    }

    pub fn vocab(&self) -> &Vocab {
        match self {
            Side::Word(t) => t.vocab(),
            Side::Char(t) => t.vocab(),
        }
    }

    pub fn encode(&self, text: &str) -> Vec<i64> {
        match self {
            Side::Word(t) => t.encode(text),
            Side::Char(t) => t.encode(text),
        }
    }

    pub fn decode(&self, ids: &[i64]) -> CliResult<String> {
        Ok(match self {
            Side::Word(t) => t.decode(ids)?,
            Side::Char(t) => t.decode(ids)?,
        })
    }

    /// The tokens of `text` the vocabulary does not hold.
    pub fn unknown(&self, text: &str) -> Vec<String> {
        Side::split(self.kind(), text).into_iter().filter(|t| !self.vocab().contains(t)).collect()
    }
}

/// What a checkpoint needs to rebuild its model and read and write its text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Seq2SeqTask {
    pub task: String,
    pub model: Seq2SeqConfig,
    pub source: Side,
    pub target: Side,
}

impl Seq2SeqTask {
    /// Tokenizes `pairs`; a pair longer than the model's positions is an error naming it.
    pub fn encode_pairs(&self, pairs: &[(String, String)], what: &str) -> CliResult<IdPairs> {
        let longest = self.model.max_positions;
        pairs
            .iter()
            .enumerate()
            .map(|(i, (s, t))| {
                let (s, t) = (self.source.encode(s), self.target.encode(t));
                if s.len() > longest || t.len() + 1 > longest {
                    return Err(format!(
                        "{what} pair {}: {} source and {} target tokens; the model takes at most {longest} and {}",
                        i + 1,
                        s.len(),
                        t.len(),
                        longest - 1
                    )
                    .into());
                }
                Ok((s, t))
            })
            .collect()
    }
}

/// Training settings shared by `train seq2seq` and the tour.
pub struct Training {
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    pub steps: u64,
    pub label_smoothing: f64,
    pub seed: u64,
}

impl Training {
    /// Steps `range` of training (teacher forcing, AdamW with warm-up and cosine decay,
    /// gradients clipped to norm 1); each step's batch depends only on the seed and the step,
    /// so a resumed run sees the same data. Calls `on_step(step, loss, optimizer)` after each.
    pub fn run(
        &self,
        model: &SequenceToSequence,
        opt: &mut Adam,
        params: &[ferrograd_nn::Param],
        pairs: &IdPairs,
        range: std::ops::Range<u64>,
        mut on_step: impl FnMut(u64, f64, &Adam) -> CliResult<()>,
    ) -> CliResult<()> {
        let c = &model.config;
        let schedule = Schedule::Warmup {
            steps: self.warmup,
            then: Box::new(Schedule::Cosine {
                total: self.steps.saturating_sub(self.warmup),
                min_lr: self.lr * 0.05,
            }),
        };
        for step in range {
            let mut rng = Rng::seed(self.seed.wrapping_mul(7_919).wrapping_add(step));
            let batch: IdPairs =
                (0..self.batch_size).map(|_| pairs[rng.below(pairs.len())].clone()).collect();
            let (source, target_in, target_out) = seq2seq_batch(&batch, c.pad, c.bos, c.eos)?;
            let loss = model.loss(&source, &target_in, &target_out, self.label_smoothing)?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, params, 1.0)?;
            opt.set_lr(schedule.lr(self.lr, step));
            opt.step(&grads)?;
            on_step(step, loss.item()?, opt)?;
        }
        Ok(())
    }
}

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
    target: &Side,
    pairs: &IdPairs,
    beam: usize,
) -> CliResult<Evaluation> {
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
    let hyps = outputs.iter().map(|o| target.decode(o)).collect::<CliResult<Vec<_>>>()?;
    let refs = pairs.iter().map(|(_, t)| target.decode(t)).collect::<CliResult<Vec<_>>>()?;
    Ok(Evaluation {
        exact_match: exact as f64 / pairs.len().max(1) as f64,
        token_accuracy: right as f64 / tokens.max(1) as f64,
        bleu: corpus_bleu(&hyps, &refs)?.score,
        outputs,
    })
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Transformer encoder and decoder (post-norm, learned positions).
    Transformer,
    /// Bidirectional LSTM encoder, LSTM decoder with attention.
    Rnn,
}

#[derive(Args)]
pub struct Seq2SeqArgs {
    #[arg(long, value_enum, default_value = "transformer")]
    model: ModelKind,
    /// source<TAB>target lines; the last 10% (at most 1,000) are held out.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "word")]
    source_tokens: TokenKind,
    #[arg(long, value_enum, default_value = "word")]
    target_tokens: TokenKind,
    /// One vocabulary and embedding for both sides (needs the same --source/--target-tokens).
    #[arg(long)]
    shared_vocab: bool,
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 512)]
    ff: usize,
    /// Encoder layers and decoder layers (each).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// The longest source or target, in tokens.
    #[arg(long, default_value_t = 64)]
    max_positions: usize,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Dropout in training, on attention weights and sublayer outputs.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Beam width for the held-out evaluation.
    #[arg(long, default_value_t = 4)]
    beam: usize,
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, requires = "checkpoint")]
    resume: bool,
    /// Stop after this step, as an interrupted run would (the checkpoint is saved); finish
    /// later with --resume and the same settings.
    #[arg(long, requires = "checkpoint")]
    stop_after: Option<u64>,
    #[arg(long, default_value = "runs/seq2seq")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn train(a: &Seq2SeqArgs) -> CliResult<()> {
    if a.batch_size == 0 || a.steps == 0 || a.dim == 0 || a.layers == 0 || a.eval_every == 0 {
        return Err(
            "--batch-size, --steps, --dim, --layers and --eval-every must be positive".into()
        );
    }
    if a.shared_vocab && a.source_tokens != a.target_tokens {
        return Err("--shared-vocab needs the same --source-tokens and --target-tokens".into());
    }
    let pairs = read_pairs(&a.data)?;
    if pairs.len() < 2 {
        return Err(format!("{}: needs at least 2 pairs, one to hold out", a.data.display()).into());
    }
    let held = (pairs.len() / 10).clamp(1, 1000);
    let (train_text, held_text) = pairs.split_at(pairs.len() - held);
    let (source, target) = if a.shared_vocab {
        let all = train_text.iter().flat_map(|(s, t)| [s.as_str(), t.as_str()]);
        let side = Side::build(a.source_tokens, all)?;
        (side.clone(), side)
    } else {
        (
            Side::build(a.source_tokens, train_text.iter().map(|(s, _)| s.as_str()))?,
            Side::build(a.target_tokens, train_text.iter().map(|(_, t)| t.as_str()))?,
        )
    };
    let v = |s: &Side| s.vocab().len();
    let task = Seq2SeqTask {
        task: "seq2seq".into(),
        model: Seq2SeqConfig {
            kind: match a.model {
                ModelKind::Transformer => Seq2SeqKind::Transformer,
                ModelKind::Rnn => Seq2SeqKind::Rnn,
            },
            source_vocab: v(&source),
            target_vocab: v(&target),
            shared_vocab: a.shared_vocab,
            dim: a.dim,
            heads: a.heads,
            ff: a.ff,
            encoder_layers: a.layers,
            decoder_layers: a.layers,
            max_positions: a.max_positions,
            pad: target.vocab().pad_id(),
            bos: target.vocab().bos_id().unwrap_or(2),
            eos: target.vocab().eos_id().unwrap_or(3),
            dropout: a.dropout,
        },
        source,
        target,
    };
    let train_ids = task.encode_pairs(train_text, "training")?;
    let held_ids = task.encode_pairs(held_text, "held-out")?;
    let store = ParamStore::new(a.seed);
    let model = SequenceToSequence::new(&store, &task.model)?;
    let params = store.params();
    let mut opt = Adam::new(params.clone(), AdamConfig::adamw(a.lr))?;
    let mut start = 0;
    if a.resume {
        let path = a.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        start = crate::train::resume(path, &store, &mut opt, "seq2seq", |t: &Seq2SeqTask| {
            t.model == task.model && t.source == task.source && t.target == task.target
        })?;
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    println!(
        "{} — {} parameters; {} pairs to train on, {} held out",
        model.describe(),
        thousands(store.num_params()),
        train_ids.len(),
        held_ids.len()
    );
    let training = Training {
        batch_size: a.batch_size,
        lr: a.lr,
        warmup: (a.steps / 20).min(500),
        steps: a.steps,
        label_smoothing: a.label_smoothing,
        seed: a.seed,
    };
    let bar = crate::train::progress(a.steps, "step");
    bar.set_position(start);
    let end = a.stop_after.map_or(a.steps, |s| s.clamp(start, a.steps));
    let started = Instant::now();
    let (mut curve, mut exact_curve) = (Vec::new(), Vec::new());
    let mut smoothed = f64::NAN;
    let mut pairs_seen = 0usize;
    let mut last_eval = None;
    let on_step = |step: u64, loss: f64, opt: &Adam| -> CliResult<()> {
        smoothed = if smoothed.is_nan() { loss } else { 0.95 * smoothed + 0.05 * loss };
        curve.push(((step + 1) as f64, loss));
        pairs_seen += a.batch_size;
        bar.set_message(format!(
            "loss {smoothed:.3}  {:.0} pairs/s",
            pairs_seen as f64 / started.elapsed().as_secs_f64()
        ));
        bar.inc(1);
        if (step + 1).is_multiple_of(a.eval_every) || step + 1 == end {
            store.eval();
            let e = evaluate(&model, &task.target, &held_ids, a.beam)?;
            store.train();
            exact_curve.push(((step + 1) as f64, 100.0 * e.exact_match));
            let line = format!(
                "step {:>6}  held-out exact match {:5.1}%  token accuracy {:5.1}%  BLEU {:5.1}",
                step + 1,
                100.0 * e.exact_match,
                100.0 * e.token_accuracy,
                e.bleu
            );
            if bar.is_hidden() {
                println!("{line}")
            } else {
                bar.println(line)
            }
            if let Some(path) = &a.checkpoint {
                save_checkpoint(path, &store, Some(opt), step + 1, &serde_json::to_value(&task)?)?;
            }
            last_eval = Some(e);
        }
        Ok(())
    };
    training.run(&model, &mut opt, &params, &train_ids, start..end, on_step)?;
    bar.finish_and_clear();
    if end < a.steps {
        println!("stopped after step {end} of {}; continue with --resume", a.steps);
        return Ok(());
    }
    let secs = started.elapsed().as_secs_f64();
    let e = match last_eval {
        Some(e) => e,
        None => {
            store.eval();
            evaluate(&model, &task.target, &held_ids, a.beam)?
        }
    };
    write_loss_csv(&a.out.join("loss.csv"), &curve)?;
    line_chart(
        &a.out.join("loss.svg"),
        "sequence-to-sequence loss",
        "step",
        "cross-entropy (nats/token)",
        &[Series { name: "train".into(), points: curve }],
    )?;
    line_chart(
        &a.out.join("exact_match.svg"),
        "held-out exact match",
        "step",
        "%",
        &[Series { name: "held-out".into(), points: exact_curve }],
    )?;
    for (i, (s, t)) in held_text.iter().enumerate().take(3) {
        println!("  {s:?} → {:?} (reference {t:?})", task.target.decode(&e.outputs[i])?);
    }
    println!(
        "held-out: exact match {:.1}%, token accuracy {:.1}%, BLEU {:.1} after {} steps in {secs:.0} s (curves in {})",
        100.0 * e.exact_match,
        100.0 * e.token_accuracy,
        e.bleu,
        a.steps,
        a.out.display()
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"task": "seq2seq", "steps": a.steps, "exact_match": e.exact_match, "token_accuracy": e.token_accuracy, "bleu": e.bleu})
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct TranslateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// α in log p / length^α when ranking finished outputs.
    #[arg(long, default_value_t = 0.6)]
    length_penalty: f64,
    /// Print every output with its score, best first, not only the best.
    #[arg(long)]
    all: bool,
    /// The sentences to translate.
    #[arg(required = true)]
    text: Vec<String>,
}

/// Translates each TEXT with a `train seq2seq` checkpoint, by beam search.
pub fn translate(a: &TranslateArgs) -> CliResult<()> {
    if a.beam == 0 || a.length_penalty.is_nan() || a.length_penalty < 0.0 {
        return Err(format!(
            "--beam must be at least 1 and --length-penalty ≥ 0, got {} and {}",
            a.beam, a.length_penalty
        )
        .into());
    }
    let info = inspect_checkpoint(&a.checkpoint)?;
    let task: Seq2SeqTask = serde_json::from_value(info.config)
        .map_err(|e| format!("{}: not a seq2seq checkpoint: {e}", a.checkpoint.display()))?;
    let store = ParamStore::new(0);
    let model = SequenceToSequence::new(&store, &task.model)?;
    load_checkpoint(&a.checkpoint, &store, None)?;
    store.eval();
    let options = BeamOptions {
        width: a.beam,
        length_penalty: a.length_penalty,
        max_len: task.model.max_positions,
    };
    for text in &a.text {
        let ids = task.source.encode(text);
        if ids.is_empty() {
            return Err(format!("{text:?} has no tokens to translate").into());
        }
        let unknown = task.source.unknown(text);
        if !unknown.is_empty() {
            eprintln!("note: the model never saw {unknown:?}; they read as <unk>");
        }
        let source = Tensor::from_vec(ids.clone(), &[1, ids.len()])?;
        let hyps = model.beam_search(&source, &options)?.remove(0);
        println!("{text} → {}", task.target.decode(&hyps[0].tokens)?);
        if a.all {
            for h in &hyps {
                println!("    {:>8.3}  {}", h.score, task.target.decode(&h.tokens)?);
            }
        }
    }
    Ok(())
}
