//! Character language models from the command line: `train lm` and `generate`.

use crate::training::RunArgs;
use crate::training::{between, BATCH, LAYERS, LENGTH, WIDTH};
use crate::CliResult;
use clap::{Args, ValueEnum};
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_data::{CharTokenizer, LmBatches, PretrainedTokenizer, TextStream, Vocab};
use ferrograd_nn::models::{lm_of_shape, LmShape};
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::trainer::{Draws, Metrics, SampledExamples};
use ferrograd_nn::{
    check_resumable, formula, gpt2, inspect_checkpoint, load_checkpoint, thousands, Activation,
    EmbedToken, Every, GenerateToken, Gpt2Config, LanguageModel, ParamStore, Sampling,
    SequenceModel, SequenceRNN, SequenceStack, SimpleRNN, Trainer, LSTM,
};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequenceKind {
    /// LSTM cells (W4's model).
    Lstm,
    /// Elman RNN cells (tanh).
    Rnn,
    /// Pre-norm causal TransformerBlocks with learned positions and a tied output (W5's
    /// model): `--embed` is its width, `--hidden` its FeedForward's, `--context` its positions.
    Transformer,
}

/// What a checkpoint needs to rebuild its language model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct LmConfig {
    task: String,
    model: SequenceKind,
    embed: usize,
    hidden: usize,
    layers: usize,
    /// The characters of a model trained from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vocab: Option<Vocab>,
    /// A GPT-2 fine-tuned from `--init`: its config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpt2: Option<Gpt2Config>,
    /// GPT-2's tokenizer.json, or the BPE learned from the data (`--tokenizer bpe`), kept whole
    /// so that the checkpoint alone continues text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokenizer: Option<String>,
    /// The ids of a model reading a BPE learned from its data.
    #[serde(default, skip_serializing_if = "is_zero")]
    vocab_size: usize,
    /// The transformer's attention heads and positions, and its dropout in training.
    #[serde(default, skip_serializing_if = "is_zero")]
    heads: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    context: usize,
    #[serde(default, skip_serializing_if = "is_zero_f")]
    dropout: f64,
}

impl LmConfig {
    fn vocab_size(&self) -> usize {
        match (&self.gpt2, &self.vocab) {
            (Some(g), _) => g.vocab_size,
            (None, Some(v)) => v.len(),
            (None, None) => self.vocab_size,
        }
    }

    /// The tokenizer the model reads and writes with.
    fn text(&self, source: &str) -> CliResult<LmText> {
        match (&self.tokenizer, &self.vocab) {
            (Some(json), _) => {
                let tok = PretrainedTokenizer::from_json(json, source)?;
                if tok.vocab_size() > self.vocab_size() {
                    return Err(format!(
                        "{source}: the tokenizer has {} ids, more than the model's {}",
                        tok.vocab_size(),
                        self.vocab_size()
                    )
                    .into());
                }
                Ok(LmText::Pretrained(Box::new(tok)))
            }
            (None, Some(v)) => Ok(LmText::Chars(CharTokenizer::new(v.clone()))),
            (None, None) => {
                Err(format!("{source}: the config has neither a vocabulary nor a tokenizer").into())
            }
        }
    }
}

/// Characters, or a tokenizer.json's tokens (GPT-2's, or a BPE learned from the data).
enum LmText {
    Chars(CharTokenizer),
    Pretrained(Box<PretrainedTokenizer>),
}

impl LmText {
    fn encode(&self, text: &str) -> CliResult<Vec<i64>> {
        Ok(match self {
            LmText::Chars(t) => t.encode(text),
            LmText::Pretrained(t) => t.encode(text)?,
        })
    }
    fn decode(&self, ids: &[i64]) -> CliResult<String> {
        Ok(match self {
            LmText::Chars(t) => t.decode(ids)?,
            LmText::Pretrained(t) => t.decode(ids)?,
        })
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_zero_f(x: &f64) -> bool {
    *x == 0.0
}

/// The most ids a learned BPE may have.
const BPE_IDS: u64 = 1 << 20;

/// What a model trained from scratch reads: characters, or a byte-level BPE learned from the
/// data (`--vocab-size` ids).
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    Char,
    Bpe,
}

#[derive(Args)]
pub struct LmArgs {
    #[arg(long, value_enum, default_value = "lstm")]
    model: SequenceKind,
    /// Fine-tune a Hugging Face GPT-2 directory (config.json, model.safetensors,
    /// tokenizer.json) instead of training a model of characters from scratch.
    #[arg(long, conflicts_with_all = ["model", "embed", "hidden", "layers", "heads", "tokenizer"])]
    init: Option<PathBuf>,
    /// Characters, or a byte-level BPE learned from the training text, saved beside the
    /// checkpoint as tokenizer.json.
    #[arg(long, value_enum, default_value = "char")]
    tokenizer: TokenizerKind,
    /// With `--tokenizer bpe`, its ids, special token included (default 2000).
    #[arg(long, value_parser = between(BPE_IDS))]
    vocab_size: Option<usize>,
    /// A UTF-8 text file; the model learns its characters (or GPT-2's tokens). The last 10% is
    /// held out.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    #[arg(long, default_value_t = 32, value_parser = between(BATCH))]
    batch_size: usize,
    /// Characters per training sequence.
    #[arg(long, default_value_t = 64, value_parser = between(LENGTH))]
    context: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 64, value_parser = between(WIDTH))]
    embed: usize,
    #[arg(long, default_value_t = 256, value_parser = between(WIDTH))]
    hidden: usize,
    /// Stacked recurrent layers or TransformerBlocks: the lecture's SequenceModel^k.
    #[arg(long, default_value_t = 1, value_parser = between(LAYERS))]
    layers: usize,
    /// The transformer's attention heads (they must divide --embed).
    #[arg(long, default_value_t = 4, value_parser = between(LAYERS))]
    heads: usize,
    /// The transformer's dropout in training (default 0); with `--init`, in place of GPT-2's
    /// three rates from its config.json.
    #[arg(long)]
    dropout: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a sample and the held-out loss every this many steps.
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    #[command(flatten)]
    run: RunArgs,
}

fn build(store: &ParamStore, c: &LmConfig) -> ferrograd::Result<LanguageModel> {
    let v = c.vocab_size();
    if let Some(g) = &c.gpt2 {
        return lm_of_shape(store, &g.shape()?);
    }
    if c.model == SequenceKind::Transformer {
        let shape = LmShape {
            vocab: v,
            dim: c.embed,
            heads: c.heads,
            layers: c.layers,
            context: c.context,
            ff: c.hidden,
            activation: Activation::Gelu,
            eps: 1e-5,
            dropout: c.dropout,
            attention_dropout: c.dropout,
            embed_dropout: 0.0,
        };
        return lm_of_shape(store, &shape);
    }
    let mut layers: Vec<Box<dyn SequenceModel>> = Vec::new();
    for l in 0..c.layers.max(1) {
        let input = if l == 0 { c.embed } else { c.hidden };
        let s = store.sub("rnn");
        layers.push(if c.model == SequenceKind::Lstm {
            Box::new(SequenceRNN::<LSTM>::new(&s, input, c.hidden, l, false)?)
        } else {
            Box::new(SequenceRNN::<SimpleRNN>::new(&s, input, c.hidden, l, false)?)
        });
    }
    Ok(LanguageModel {
        embed: EmbedToken::new(store.sub("embed"), v, c.embed, None)?,
        body: Box::new(SequenceStack { layers }),
        head: GenerateToken::untied(store.sub("head"), c.hidden, v)?,
    })
}

/// The text a BPE learns from: the part before the held-out tenth (the split falls near there
/// in tokens too), so that held-out text is not in its merges.
fn training_part(text: &str) -> &str {
    let mut end = text.len() - text.len() / 10;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes a learned tokenizer.json beside the checkpoint (or into the run's folder), where
/// Hugging Face's tokenizers can read it; the checkpoint keeps its own copy.
fn write_beside(checkpoint: Option<&Path>, out_dir: &Path, json: &str) -> CliResult<()> {
    let dir = match checkpoint.and_then(Path::parent) {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => out_dir.to_path_buf(),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tokenizer.json");
    // The same tokenizer again (a resumed run) is fine; another's is not replaced.
    if let Ok(old) = std::fs::read_to_string(&path) {
        if old != json {
            return Err(format!(
                "{} holds another tokenizer; move it, or give --checkpoint in another folder",
                path.display()
            )
            .into());
        }
    }
    ferrograd::io::write_atomically(&path, json.as_bytes())?;
    say!("tokenizer: {}", path.display());
    Ok(())
}

/// Mean loss over `n` fixed held-out batches.
fn held_out_loss(lm: &LanguageModel, batches: &LmBatches, n: usize) -> ferrograd::Result<f64> {
    let _g = no_grad();
    let mut rng = Rng::seed(12345); // the same batches every time
    let mut total = 0.0;
    for _ in 0..n {
        let (x, y) = batches.sample(&mut rng)?;
        total += lm.loss(&x, &y, None)?.item()?;
    }
    Ok(total / n as f64)
}

pub fn train(a: &LmArgs) -> CliResult<()> {
    if a.batch_size == 0
        || a.context == 0
        || a.steps == 0
        || a.embed == 0
        || a.hidden == 0
        || a.sample_every == 0
    {
        return Err("--batch-size, --context, --steps, --embed, --hidden and --sample-every must be positive".into());
    }
    let dropout = a.dropout.unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(format!("--dropout must be in [0, 1), got {dropout}").into());
    }
    if a.vocab_size.is_some() && (a.init.is_some() || a.tokenizer != TokenizerKind::Bpe) {
        return Err(
            "--vocab-size is the size of a learned BPE: give it with --tokenizer bpe".into()
        );
    }
    let transformer = a.model == SequenceKind::Transformer;
    if transformer && !a.embed.is_multiple_of(a.heads) {
        return Err(format!("--heads {} must divide --embed {}", a.heads, a.embed).into());
    }
    let text = ferrograd::io::read_text(&a.data, "train lm")?;
    let store = ParamStore::new(a.seed);
    let (lm, config, tokenizer) = match &a.init {
        Some(dir) => {
            let mut g = Gpt2Config::read(&dir.join("config.json"))?;
            if let Some(p) = a.dropout {
                (g.resid_pdrop, g.attn_pdrop, g.embd_pdrop) = (p, p, p);
            }
            let lm = gpt2::load(dir, &g, &store)?;
            let path = dir.join("tokenizer.json");
            let json = ferrograd::io::read_text(&path, "train lm")?;
            let tokenizer = PretrainedTokenizer::from_json(&json, &path.display().to_string())?;
            if a.context > g.n_positions {
                return Err(format!(
                    "--context {} is beyond the model's {} positions",
                    a.context, g.n_positions
                )
                .into());
            }
            let shape = g.shape()?;
            let config = LmConfig {
                task: "lm".into(),
                model: SequenceKind::Transformer,
                embed: shape.dim,
                hidden: shape.ff,
                layers: shape.layers,
                vocab: None,
                gpt2: Some(g),
                tokenizer: Some(json),
                vocab_size: 0,
                heads: shape.heads,
                context: shape.context,
                dropout: 0.0,
            };
            (lm, config, LmText::Pretrained(Box::new(tokenizer)))
        }
        None => {
            let mut config = LmConfig {
                task: "lm".into(),
                model: a.model,
                embed: a.embed,
                hidden: a.hidden,
                layers: a.layers.max(1),
                vocab: None,
                gpt2: None,
                tokenizer: None,
                vocab_size: 0,
                heads: if transformer { a.heads } else { 0 },
                context: if transformer { a.context } else { 0 },
                dropout: if transformer { dropout } else { 0.0 },
            };
            let tokenizer = match a.tokenizer {
                TokenizerKind::Char => {
                    let chars = CharTokenizer::from_text(&text);
                    config.vocab = Some(chars.vocab().clone());
                    LmText::Chars(chars)
                }
                TokenizerKind::Bpe => {
                    let size = a.vocab_size.unwrap_or(2000);
                    let bpe = PretrainedTokenizer::train_bpe(training_part(&text), size)?;
                    let json = bpe.to_json()?;
                    config.vocab_size = bpe.vocab_size();
                    config.tokenizer = Some(json);
                    LmText::Pretrained(Box::new(bpe))
                }
            };
            (build(&store, &config)?, config, tokenizer)
        }
    };
    let ids = tokenizer.encode(&text)?;
    let (train_ids, held_ids) = LmBatches::split(&ids, 0.1)?;
    let train = LmBatches::new(train_ids, a.batch_size, a.context)?;
    let held = LmBatches::new(held_ids, a.batch_size, a.context)?;
    if a.run.resume {
        let path = a.run.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        check_resumable(path, "language model", |c: &LmConfig| *c == config)?;
    }
    if let (Some(json), None) = (&config.tokenizer, &config.gpt2) {
        write_beside(a.run.checkpoint.as_deref(), &a.run.out_dir("lm"), json)?;
    }
    say!(
        "{} — {} parameters, {} tokens ({} distinct), {} held out",
        formula(&lm),
        thousands(store.num_params()),
        ids.len(),
        config.vocab_size() - if config.vocab.is_some() { 2 } else { 0 },
        held.ids().len()
    );
    // The transformer as W5 trains it: AdamW (weight decay 0.01).
    let rule = if config.model == SequenceKind::Transformer {
        AdamConfig::adamw(a.lr)
    } else {
        AdamConfig::adam(a.lr)
    };
    let trainer = Trainer::new(&store, Adam::new(store.params(), rule)?)
        .steps(a.steps)
        .describe("lm", "tokens")
        .data_settings(
            serde_json::json!({"batch_size": a.batch_size, "context": a.context, "seed": a.seed}),
        );
    let every = Every::Steps(a.sample_every);
    let mut trainer =
        a.run.apply(trainer, "lm", every, serde_json::to_value(&config)?, &[a.data.as_path()]);
    let step = |draws: Draws, m: &mut Metrics| -> CliResult<Tensor> {
        let (x, y) = train.windows(draws.generators())?;
        m.count(x.numel());
        Ok(lm.loss(&x, &y, None)?)
    };
    let evaluate = |step: u64, m: &mut Metrics| -> CliResult<()> {
        m.add("loss", held_out_loss(&lm, &held, 8)?, 1.0);
        // The sample's seed is the step's, so a resumed run writes the same text.
        let sample = sample_text(&lm, &tokenizer, "\n", 120, a.seed + step)?;
        m.note(format!("sample: {sample:?}"));
        Ok(())
    };
    let report = trainer.fit_evaluating(
        &mut SampledExamples::new(a.seed, a.batch_size),
        step,
        Some(evaluate),
    )?;
    if report.stopped() {
        say!("stopped after step {} of {}; continue with --resume", report.end, report.total);
        return Ok(());
    }
    store.eval(); // the Trainer leaves it training
    let held_loss = held_out_loss(&lm, &held, 32)?;
    say!(
        "held-out loss: {held_loss:.4} nats/{} after {} steps, {:.0} tokens/s (curves in {})",
        if config.vocab.is_some() { "char" } else { "token" },
        a.steps,
        report.units_per_s,
        a.run.out_dir("lm").display()
    );
    if a.run.json {
        say!(
            "{}",
            serde_json::json!({"task": "lm", "model": config.model, "steps": a.steps, "held_out_loss": held_loss, "train_tokens_per_s": report.units_per_s})
        );
    }
    Ok(())
}

fn sample_text(
    lm: &LanguageModel,
    tok: &LmText,
    prompt: &str,
    n: usize,
    seed: u64,
) -> CliResult<String> {
    let sampling = Sampling { temperature: 0.8, top_k: 0, top_p: 1.0 };
    let ids =
        lm.generate(&tok.encode(prompt)?, n, sampling, &[], &mut Rng::seed(seed), |_| Ok(()))?;
    tok.decode(&ids)
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A model trained by `ferrograd train lm`.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// A Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The text to continue; several are continued one after another from a checkpoint, and
    /// side by side as one padded batch by GPT-2 (default: a new line; GPT-2's <|endoftext|>).
    #[arg(long)]
    prompt: Vec<String>,
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    dtype: crate::DtypeArg,
}

/// Streams a continuation of each prompt to stdout, token by token.
pub fn generate(a: &GenerateArgs) -> CliResult<()> {
    let valid = a.temperature >= 0.0 && a.top_p > 0.0 && a.top_p <= 1.0; // false for NaN too
    if !valid {
        return Err(format!(
            "--temperature must be ≥ 0 and --top-p in (0, 1], got {} and {}",
            a.temperature, a.top_p
        )
        .into());
    }
    let sampling = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p };
    match (&a.checkpoint, &a.model) {
        (Some(checkpoint), _) => generate_from_checkpoint(a, checkpoint, sampling),
        (None, Some(dir)) => generate_pretrained(a, dir, sampling),
        (None, None) => Err("give --checkpoint or --model".into()),
    }
}

fn generate_from_checkpoint(
    a: &GenerateArgs,
    checkpoint: &Path,
    sampling: Sampling,
) -> CliResult<()> {
    let info = inspect_checkpoint(checkpoint)?;
    let config: LmConfig = serde_json::from_value(info.config)
        .map_err(|e| format!("{}: not a language model checkpoint: {e}", checkpoint.display()))?;
    let c = &config;
    let header = ferrograd::io::read_safetensors_header(checkpoint)?;
    let mut sizes = vec![("embed", c.embed), ("hidden", c.hidden), ("vocab", c.vocab_size())];
    if c.model == SequenceKind::Transformer {
        sizes.extend([("heads", c.heads), ("context", c.context)]);
    }
    header.check_sizes(
        &format!("{}'s config", checkpoint.display()),
        &sizes,
        &[("layers", c.layers)],
    )?;
    let store = ParamStore::new(0);
    let source = checkpoint.display().to_string();
    let lm = store.within(header.elements(), &source, || build(&store, &config))?;
    load_checkpoint(checkpoint, &store, None)?;
    store.eval(); // no dropout while generating
    a.dtype.apply(&store)?;
    let tok = match config.text(&source)? {
        LmText::Pretrained(tok) => {
            let eos = match &config.gpt2 {
                Some(g) => g.eos_token_id,
                None => tok.token_id("<|endoftext|>"),
            };
            return continue_prompts(a, &lm, &tok, eos, config.context, sampling);
        }
        LmText::Chars(tok) => tok,
    };
    let vocab = tok.vocab().clone();
    let prompts = if a.prompt.is_empty() { vec!["\n".to_string()] } else { a.prompt.clone() };
    let mut out = std::io::stdout().lock();
    for (i, text) in prompts.iter().enumerate() {
        let prompt = tok.encode(text);
        if prompt.is_empty() {
            return Err("the prompt is empty".into());
        }
        if let Some(c) = text.chars().find(|c| !vocab.contains(&c.to_string())) {
            eprintln!("note: the model never saw {c:?}; it reads as <unk>");
        }
        if i > 0 {
            writeln!(out)?;
        }
        write!(out, "{text}")?;
        let mut rng = Rng::seed(a.seed);
        lm.generate(&prompt, a.tokens, sampling, &[], &mut rng, |t| {
            let s = tok.decode(&[t])?;
            let _ = write!(out, "{s}");
            let _ = out.flush();
            Ok(())
        })?;
        writeln!(out)?;
    }
    Ok(())
}

/// GPT-2 from a Hugging Face directory, its continuation streamed through its tokenizer.
fn generate_pretrained(a: &GenerateArgs, dir: &Path, sampling: Sampling) -> CliResult<()> {
    let store = ParamStore::new(0);
    let (lm, config) = gpt2::from_pretrained(dir, &store)?;
    a.dtype.apply(&store)?;
    let tok = PretrainedTokenizer::from_file(&dir.join("tokenizer.json"))?;
    if tok.vocab_size() > config.vocab_size {
        return Err(format!(
            "{}: the tokenizer has {} ids, more than the model's vocab_size {}",
            dir.display(),
            tok.vocab_size(),
            config.vocab_size
        )
        .into());
    }
    eprintln!("{}: {} ({} parameters)", dir.display(), formula(&lm), thousands(store.num_params()));
    continue_prompts(a, &lm, &tok, config.eos_token_id, config.n_positions, sampling)
}

/// Continues `--prompt`s with a model of `context` positions through a pretrained tokenizer,
/// stopping at `eos` (or `<|endoftext|>`): one prompt streamed, several as one batch.
fn continue_prompts(
    a: &GenerateArgs,
    lm: &LanguageModel,
    tok: &PretrainedTokenizer,
    eos: Option<i64>,
    context: usize,
    sampling: Sampling,
) -> CliResult<()> {
    let eos = eos.or_else(|| tok.token_id("<|endoftext|>"));
    let mut prompts = Vec::new();
    for text in &a.prompt {
        let ids = tok.encode(text)?;
        if ids.is_empty() {
            return Err(format!("the prompt {text:?} has no tokens").into());
        }
        prompts.push((text.clone(), ids));
    }
    if prompts.is_empty() {
        let start = eos.ok_or("no --prompt, and the model has no <|endoftext|> to start from")?;
        prompts.push((String::new(), vec![start]));
    }
    // One row slides its window past the last position; a padded batch cannot.
    let beyond = prompts.iter().find(|(_, ids)| ids.len() + a.tokens > context);
    match beyond {
        Some((text, ids)) if prompts.len() > 1 => {
            return Err(format!(
                "the prompt {text:?} ({} tokens) and --tokens {} exceed the model's context of \
                 {context} positions, which a batch of prompts cannot slide past",
                ids.len(),
                a.tokens
            )
            .into());
        }
        Some(_) => eprintln!(
            "note: past the model's {context} positions the window slides: each new token sees \
             the last {} to {context} tokens",
            context / 2
        ),
        None => {}
    }
    let stop: Vec<i64> = eos.into_iter().collect();
    let mut out = std::io::stdout().lock();
    let mut rng = Rng::seed(a.seed);
    if prompts.len() > 1 {
        let ids: Vec<Vec<i64>> = prompts.iter().map(|(_, ids)| ids.clone()).collect();
        let continued = lm.generate_batch(&ids, a.tokens, sampling, &stop, &mut rng)?;
        for (i, ((text, _), new)) in prompts.iter().zip(&continued).enumerate() {
            let sep = if i > 0 { "\n" } else { "" };
            writeln!(out, "{sep}{text}{}", tok.decode(new)?)?;
        }
        return Ok(());
    }
    // One prompt: streamed as it comes.
    let (text, ids) = &prompts[0];
    write!(out, "{text}")?;
    let mut stream = TextStream::new(tok);
    lm.generate(ids, a.tokens, sampling, &stop, &mut rng, |t| {
        let _ = write!(out, "{}", stream.push(t)?);
        let _ = out.flush();
        Ok(())
    })?;
    writeln!(out, "{}", stream.finish()?)?;
    Ok(())
}
