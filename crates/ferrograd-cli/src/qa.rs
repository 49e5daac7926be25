//! Question answering from the command line: `train qa` fine-tunes a Hugging Face BERT with a
//! span head on SQuAD-format JSON; `qa` answers a question about a context.

use crate::CliResult;
use clap::Args;
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_data::qa::{read_squad, QaExample};
use ferrograd_data::{BertBatch, BertTokenizer};
use ferrograd_nn::optim::{clip_grad_norm, Adam, AdamConfig, Optimizer, Schedule};
use ferrograd_nn::{
    load_checkpoint, save_checkpoint, thousands, Module, ParamStore, QuestionAnswering,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct TrainQaArgs {
    /// A Hugging Face BERT directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// SQuAD-format JSON; the last 10% of the questions (at most 500) are held out.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Tokens per question + context (Hugging Face's default 384); longer contexts are cut at
    /// the end, and a question whose answer is cut off is not trained on.
    #[arg(long, default_value_t = 384)]
    max_len: usize,
    /// The longest answer considered, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the fine-tuned model here (for `ferrograd qa --checkpoint`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// The model of a directory and its tokenizer.
fn load(dir: &Path, store: &ParamStore) -> CliResult<(QuestionAnswering, BertTokenizer)> {
    let model = QuestionAnswering::from_pretrained(dir, store)?;
    let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"))?;
    Ok((model, tokenizer))
}

/// SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces.
fn normalize(text: &str) -> Vec<String> {
    let lower: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(String::from)
        .collect()
}

/// SQuAD's exact match and token F1 of a predicted answer.
fn squad_scores(predicted: &str, truth: &str) -> (f64, f64) {
    let (p, t) = (normalize(predicted), normalize(truth));
    let exact = f64::from(u8::from(p == t));
    let mut pool = t.clone();
    let common = p
        .iter()
        .filter(|w| match pool.iter().position(|x| x == *w) {
            Some(i) => {
                pool.swap_remove(i);
                true
            }
            None => false,
        })
        .count();
    if common == 0 {
        return (exact, 0.0);
    }
    let (precision, recall) = (common as f64 / p.len() as f64, common as f64 / t.len() as f64);
    (exact, 2.0 * precision * recall / (precision + recall))
}

/// The first and last token of an answer; `None` where `max_len` cut it off.
type TokenSpan = Option<(usize, usize)>;

/// A batch of examples and the token span of each answer.
fn encode(
    tok: &BertTokenizer,
    examples: &[&QaExample],
    max_len: usize,
) -> CliResult<(BertBatch, Vec<TokenSpan>)> {
    let pairs: Vec<(&str, &str)> =
        examples.iter().map(|e| (e.question.as_str(), e.context.as_str())).collect();
    let batch = tok.encode_pairs(&pairs, max_len)?;
    let spans = examples
        .iter()
        .enumerate()
        .map(|(i, e)| batch.token_span(i, e.answer_start, e.answer_start + e.answer.len()))
        .collect::<ferrograd::Result<_>>()?;
    Ok((batch, spans))
}

/// The answer text of each row of `batch` and its score.
fn answers(
    model: &QuestionAnswering,
    batch: &BertBatch,
    contexts: &[&str],
    max_answer_len: usize,
) -> CliResult<Vec<Option<(String, f64)>>> {
    let _g = no_grad();
    let (s, e) =
        model.scores(&batch.ids, &batch.token_types, &batch.mask, &batch.context_mask()?)?;
    Ok(QuestionAnswering::best_spans(&s, &e, max_answer_len)?
        .into_iter()
        .enumerate()
        .map(|(row, span)| {
            span.map(|sp| {
                let (from, to) = (batch.offsets[row][sp.start].0, batch.offsets[row][sp.end].1);
                (contexts[row][from..to].to_string(), sp.score)
            })
        })
        .collect())
}

pub fn train(a: &TrainQaArgs) -> CliResult<()> {
    if a.batch_size == 0 || a.epochs == 0 || a.max_answer_len == 0 {
        return Err("--batch-size, --epochs and --max-answer-len must be positive".into());
    }
    let examples = read_squad(&a.data)?;
    if examples.len() < 2 {
        return Err(
            format!("{}: needs at least 2 questions, one to hold out", a.data.display()).into()
        );
    }
    let held = (examples.len() / 10).clamp(1, 500);
    let (train_set, held_set) = examples.split_at(examples.len() - held);
    let store = ParamStore::new(a.seed);
    let (model, tok) = load(&a.model, &store)?;
    // Examples whose answer does not fit in max_len cannot teach the span head.
    let mut usable = Vec::new();
    for chunk in train_set.chunks(64) {
        let refs: Vec<&QaExample> = chunk.iter().collect();
        let (_, spans) = encode(&tok, &refs, a.max_len)?;
        usable.extend(chunk.iter().zip(spans).filter(|(_, s)| s.is_some()).map(|(e, _)| e));
    }
    if usable.is_empty() {
        return Err(format!("no training answer fits in --max-len {}", a.max_len).into());
    }
    println!(
        "{} — {} parameters; {} questions to train on ({} cut off by --max-len), {} held out",
        model.describe(),
        thousands(store.num_params()),
        usable.len(),
        train_set.len() - usable.len(),
        held_set.len()
    );
    let params = store.params();
    let mut opt = Adam::new(params.clone(), AdamConfig::adamw(a.lr))?;
    let steps_per_epoch = usable.len().div_ceil(a.batch_size) as u64;
    let total = steps_per_epoch * a.epochs as u64;
    let schedule = Schedule::Warmup {
        steps: (total / 10).max(1),
        then: Box::new(Schedule::Cosine {
            total: total - (total / 10).max(1).min(total),
            min_lr: 0.0,
        }),
    };
    let bar = crate::train::progress(total, "step");
    let mut rng = Rng::seed(a.seed);
    let started = Instant::now();
    let mut step = 0;
    for _ in 0..a.epochs {
        rng.shuffle(&mut usable);
        for chunk in usable.chunks(a.batch_size) {
            let (batch, spans) = encode(&tok, chunk, a.max_len)?;
            let (starts, ends): (Vec<i64>, Vec<i64>) =
                spans.iter().map(|s| s.map_or((0, 0), |(s, e)| (s as i64, e as i64))).unzip();
            let n = chunk.len();
            let loss = model.loss(
                &batch.ids,
                &batch.token_types,
                &batch.mask,
                &batch.context_mask()?,
                &Tensor::from_vec(starts, &[n])?,
                &Tensor::from_vec(ends, &[n])?,
            )?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&mut grads, &params, 1.0)?;
            opt.set_lr(schedule.lr(a.lr, step));
            opt.step(&grads)?;
            step += 1;
            bar.set_message(format!("loss {:.3}", loss.item()?));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let (mut exact, mut f1) = (0.0, 0.0);
    for chunk in held_set.chunks(32) {
        let refs: Vec<&QaExample> = chunk.iter().collect();
        let (batch, _) = encode(&tok, &refs, a.max_len)?;
        let contexts: Vec<&str> = chunk.iter().map(|e| e.context.as_str()).collect();
        for (got, e) in answers(&model, &batch, &contexts, a.max_answer_len)?.iter().zip(chunk) {
            let (em, f) = squad_scores(got.as_ref().map_or("", |(t, _)| t.as_str()), &e.answer);
            exact += em;
            f1 += f;
        }
    }
    let n = held_set.len() as f64;
    println!(
        "held-out: exact match {:.1}%, F1 {:.1}% after {step} steps in {:.0} s",
        100.0 * exact / n,
        100.0 * f1 / n,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.checkpoint {
        let config = serde_json::json!({"task": "qa", "bert": model.bert.config});
        save_checkpoint(path, &store, None, step, &config)?;
        println!("saved {}", path.display());
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"task": "qa", "steps": step, "exact_match": exact / n, "f1": f1 / n})
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct QaArgs {
    /// A Hugging Face BERT directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Fine-tuned weights from `ferrograd train qa --checkpoint` (without it, the directory's
    /// own `qa_outputs` head, or an untrained one).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long)]
    question: String,
    #[arg(long)]
    context: String,
    #[arg(long, default_value_t = 384)]
    max_len: usize,
    #[arg(long, default_value_t = 30)]
    max_answer_len: usize,
}

/// Prints the answer span of the question in the context, and its score.
pub fn answer(a: &QaArgs) -> CliResult<()> {
    if a.question.trim().is_empty() || a.context.trim().is_empty() {
        return Err("--question and --context must not be empty".into());
    }
    let store = ParamStore::new(0);
    let (model, tok) = load(&a.model, &store)?;
    if let Some(path) = &a.checkpoint {
        load_checkpoint(path, &store, None)?;
    }
    let example = QaExample {
        question: a.question.clone(),
        context: a.context.clone(),
        answer: String::new(),
        answer_start: 0,
    };
    let (batch, _) = encode(&tok, &[&example], a.max_len)?;
    match answers(&model, &batch, &[a.context.as_str()], a.max_answer_len.max(1))?.remove(0) {
        Some((text, score)) => println!("{text}\t(score {score:.2})"),
        None => return Err("the context has no tokens left to answer from: raise --max-len".into()),
    }
    Ok(())
}
