//! Sequence to sequence from the command line: `train seq2seq` and `translate`; the training
//! loop and the evaluation (exact match, token accuracy, BLEU) the tour uses too.

use crate::training::{between, BATCH, BEAM, HEADS, LAYERS, LENGTH, VOCAB, WIDTH};
use crate::training::{RunArgs, Tokens};
use crate::CliResult;
use clap::{Args, ValueEnum};
use ferrograd::{no_grad, Tensor};
use ferrograd_data::text::{read_pairs, seq2seq_batch};
use ferrograd_data::Tokenizer;
use ferrograd_nn::optim::{Adam, AdamConfig, Schedule};
use ferrograd_nn::trainer::plot::heatmap;
use ferrograd_nn::trainer::{Draws, Metrics, SampledExamples};
use ferrograd_nn::{
    check_resumable, evaluate, inspect_checkpoint, load_checkpoint, thousands, BeamOptions, Every,
    IdPairs, Module, ParamStore, Seq2SeqConfig, Seq2SeqKind, SequenceModel, SequenceToSequence,
    Trainer,
};
use std::path::PathBuf;

/// What a checkpoint needs to rebuild its model and read and write its text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Seq2SeqTask {
    pub task: String,
    pub model: Seq2SeqConfig,
    pub source: Tokenizer,
    pub target: Tokenizer,
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
    /// A Trainer for these settings: AdamW with warm-up and cosine decay, gradients clipped
    /// to norm 1.
    pub fn trainer<'a>(&self, store: &ParamStore) -> CliResult<Trainer<'a>> {
        let schedule = Schedule::Warmup {
            steps: self.warmup,
            then: Box::new(Schedule::Cosine {
                total: self.steps.saturating_sub(self.warmup),
                min_lr: self.lr * 0.05,
            }),
        };
        let adamw = Adam::new(store.params(), AdamConfig::adamw(self.lr))?;
        Ok(Trainer::new(store, adamw).steps(self.steps).schedule(schedule).clip_grad_norm(1.0))
    }

    /// The data: `batch_size` pairs a step, drawn at random.
    pub fn data(&self) -> SampledExamples {
        SampledExamples::new(self.seed, self.batch_size)
    }

    /// The loss of a batch of `pairs` drawn by [`Training::data`], teacher-forced.
    pub fn loss<'m>(
        &'m self,
        model: &'m SequenceToSequence,
        pairs: &'m IdPairs,
    ) -> impl FnMut(Draws, &mut Metrics) -> CliResult<Tensor> + Send + 'm {
        move |draws, m| {
            let c = &model.config;
            let batch: IdPairs =
                draws.generators().map(|mut rng| pairs[rng.below(pairs.len())].clone()).collect();
            let (source, target_in, target_out) = seq2seq_batch(&batch, c.pad, c.bos, c.eos)?;
            m.count(batch.len());
            // The loss is a mean over target tokens, each target and its <eos>.
            m.mean_over(batch.iter().map(|(_, t)| t.len() + 1).sum());
            Ok(model.loss(&source, &target_in, &target_out, self.label_smoothing)?)
        }
    }
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
    source_tokens: Tokens,
    #[arg(long, value_enum, default_value = "word")]
    target_tokens: Tokens,
    /// Pieces to learn for --source-tokens or --target-tokens wordpiece or bpe.
    #[arg(long, default_value_t = 4000, value_parser = between(VOCAB))]
    vocab_size: usize,
    /// One vocabulary and embedding for both sides (needs the same --source/--target-tokens).
    #[arg(long)]
    shared_vocab: bool,
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    #[arg(long, default_value_t = 64, value_parser = between(BATCH))]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 128, value_parser = between(WIDTH))]
    dim: usize,
    #[arg(long, default_value_t = 4, value_parser = between(HEADS))]
    heads: usize,
    #[arg(long, default_value_t = 512, value_parser = between(WIDTH))]
    ff: usize,
    /// Encoder layers and decoder layers (each).
    #[arg(long, default_value_t = 2, value_parser = between(LAYERS))]
    layers: usize,
    /// The longest source or target, in tokens.
    #[arg(long, default_value_t = 64, value_parser = between(LENGTH))]
    max_positions: usize,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Dropout in training, on attention weights and sublayer outputs.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Beam width for the held-out evaluation.
    #[arg(long, default_value_t = 4, value_parser = between(BEAM))]
    beam: usize,
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    run: RunArgs,
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
        let side = Tokenizer::build(a.source_tokens.into(), all, a.vocab_size)?;
        (side.clone(), side)
    } else {
        let (sources, targets) = (
            train_text.iter().map(|(s, _)| s.as_str()),
            train_text.iter().map(|(_, t)| t.as_str()),
        );
        (
            Tokenizer::build(a.source_tokens.into(), sources, a.vocab_size)?,
            Tokenizer::build(a.target_tokens.into(), targets, a.vocab_size)?,
        )
    };
    let v = |s: &Tokenizer| s.vocab_size();
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
            pad: target.pad_id(),
            bos: target.bos_id(),
            eos: target.eos_id(),
            dropout: a.dropout,
        },
        source,
        target,
    };
    let train_ids = task.encode_pairs(train_text, "training")?;
    let held_ids = task.encode_pairs(held_text, "held-out")?;
    let store = ParamStore::new(a.seed);
    let model = SequenceToSequence::new(&store, &task.model)?;
    if a.run.resume {
        let path = a.run.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        check_resumable(path, "seq2seq", |t: &Seq2SeqTask| {
            t.model == task.model && t.source == task.source && t.target == task.target
        })?;
    }
    say!(
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
    let trainer = training
        .trainer(&store)?
        .describe("seq2seq", "pairs")
        .data_settings(serde_json::json!({"batch_size": a.batch_size, "seed": a.seed}));
    let every = Every::Steps(a.eval_every);
    let config = serde_json::to_value(&task)?;
    let mut trainer = a.run.apply(trainer, "seq2seq", every, config, &[a.data.as_path()]);
    let mut last_eval = None;
    let held_out = |_step, m: &mut Metrics| -> CliResult<()> {
        let e = evaluate(&model, &task.target, &held_ids, a.beam)?;
        m.add("exact_match", e.exact_match, 1.0);
        m.add("token_accuracy", e.token_accuracy, 1.0);
        m.add("bleu", e.bleu, 1.0);
        last_eval = Some(e);
        Ok(())
    };
    if let Some((first, _)) = held_ids.first() {
        let (model, first) = (&model, first.clone());
        trainer = trainer.on_evaluate(move |_, _, log| match encoder_attention(model, &first)? {
            Some(head) => log.image_grid("attention/encoder_head0", &head.unsqueeze(0)?),
            None => Ok(()),
        });
    }
    let loss = training.loss(&model, &train_ids);
    let report = trainer.fit_evaluating(&mut training.data(), loss, Some(held_out))?;
    if report.stopped() {
        say!("stopped after step {} of {}; continue with --resume", report.end, a.steps);
        return Ok(());
    }
    let e = match last_eval {
        Some(e) => e,
        None => {
            store.eval();
            evaluate(&model, &task.target, &held_ids, a.beam)?
        }
    };
    let out = a.run.out_dir("seq2seq");
    if let Some((first, _)) = held_ids.first() {
        if let Some(head) = encoder_attention(&model, first)? {
            let tokens = first
                .iter()
                .map(|&id| task.source.decode(&[id]))
                .collect::<ferrograd::Result<Vec<_>>>()?;
            let title = "the encoder's first block, head 0, on the first held-out source";
            heatmap(
                &out.join("attention.svg"),
                title,
                ("query", &tokens),
                ("key", &tokens),
                &head.to_vec::<f32>()?,
            )?;
        }
    }
    for (i, (s, t)) in held_text.iter().enumerate().take(3) {
        say!("  {s:?} → {:?} (reference {t:?})", task.target.decode(&e.outputs[i])?);
    }
    say!(
        "held-out: exact match {:.1}%, token accuracy {:.1}%, BLEU {:.1} after {} steps in {:.0} s (curves in {})",
        100.0 * e.exact_match,
        100.0 * e.token_accuracy,
        e.bleu,
        a.steps,
        report.seconds,
        a.run.out_dir("seq2seq").display()
    );
    if a.run.json {
        say!(
            "{}",
            serde_json::json!({"task": "seq2seq", "steps": a.steps, "exact_match": e.exact_match, "token_accuracy": e.token_accuracy, "bleu": e.bleu})
        );
    }
    Ok(())
}

/// Head 0 of the encoder's first attention block over the source `ids`, (S, S) in
/// evaluation mode; `None` for an encoder without attention (the RNN).
fn encoder_attention(model: &SequenceToSequence, ids: &[i64]) -> ferrograd::Result<Option<Tensor>> {
    let _g = no_grad();
    let source = Tensor::from_vec(ids.to_vec(), &[1, ids.len()])?;
    let x = model.source_embed.forward(&source)?;
    match model.encoder.attention_weights(&x, None) {
        Some(w) => Ok(Some(w?.narrow(1, 0, 1)?.reshape(&[ids.len(), ids.len()])?)),
        None => Ok(None),
    }
}

#[derive(Args)]
pub struct TranslateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 4, value_parser = between(BEAM))]
    beam: usize,
    /// α in log p / length^α when ranking finished outputs.
    #[arg(long, default_value_t = 0.6)]
    length_penalty: f64,
    /// Print every output with its score, best first, not only the best.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    dtype: crate::DtypeArg,
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
    let c = &task.model;
    let mut sizes = vec![
        ("dim", c.dim),
        ("heads", c.heads),
        ("source_vocab", c.source_vocab),
        ("target_vocab", c.target_vocab),
    ];
    if c.kind == Seq2SeqKind::Transformer {
        sizes.extend([("ff", c.ff), ("max_positions", c.max_positions)]);
    }
    let header = ferrograd::io::read_safetensors_header(&a.checkpoint)?;
    header.check_sizes(
        &format!("{}'s config", a.checkpoint.display()),
        &sizes,
        &[("encoder_layers", c.encoder_layers), ("decoder_layers", c.decoder_layers)],
    )?;
    let store = ParamStore::new(0);
    let source = a.checkpoint.display().to_string();
    let model = store
        .within(header.elements(), &source, || SequenceToSequence::new(&store, &task.model))?;
    load_checkpoint(&a.checkpoint, &store, None)?;
    store.eval();
    a.dtype.apply(&store)?;
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
        let hyps = model.beam_search(&source, &options)?.into_iter().next().unwrap_or_default();
        let Some(best) = hyps.first() else {
            return Err(format!(
                "beam search ended with no translation of {text:?}: every score was NaN or -inf (are the checkpoint's weights finite?)"
            )
            .into());
        };
        say!("{text} → {}", task.target.decode(&best.tokens)?);
        if a.all {
            for h in &hyps {
                say!("    {:>8.3}  {}", h.score, task.target.decode(&h.tokens)?);
            }
        }
    }
    Ok(())
}
