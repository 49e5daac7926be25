//! Question answering from the command line: `train qa` fine-tunes a Hugging Face BERT with a
//! span head on SQuAD-format JSON; `qa` answers a question about a context.

use crate::training::RunArgs;
use crate::training::{between, BATCH, LENGTH};
use crate::CliResult;
use clap::Args;
use ferrograd::Tensor;
use ferrograd_data::qa::{encode_examples, read_squad, squad_scores, QaExample};
use ferrograd_data::BertTokenizer;
use ferrograd_nn::optim::{Adam, AdamConfig, Schedule};
use ferrograd_nn::trainer::{Epochs, Metrics};
use ferrograd_nn::{
    check_resumable, load_checkpoint, thousands, Every, Module, ParamStore, QuestionAnswering,
    Trainer,
};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct TrainQaArgs {
    /// A Hugging Face BERT directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// SQuAD-format JSON; the last 10% of the questions (at most 500) are held out.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 2)]
    epochs: u64,
    #[arg(long, default_value_t = 16, value_parser = between(BATCH))]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Tokens per question + context (Hugging Face's default 384); longer contexts are cut at
    /// the end, and a question whose answer is cut off is not trained on.
    #[arg(long, default_value_t = 384, value_parser = between(LENGTH))]
    max_len: usize,
    /// The longest answer considered, in tokens.
    #[arg(long, default_value_t = 30)]
    max_answer_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// --checkpoint holds the fine-tuned model, for `ferrograd qa --checkpoint`.
    #[command(flatten)]
    run: RunArgs,
}

/// The model of a directory and its tokenizer.
fn load(dir: &Path, store: &ParamStore) -> CliResult<(QuestionAnswering, BertTokenizer)> {
    let model = QuestionAnswering::from_pretrained(dir, store)?;
    let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"))?;
    Ok((model, tokenizer))
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
        let (_, spans) = encode_examples(&tok, &refs, a.max_len)?;
        usable.extend(chunk.iter().zip(spans).filter(|(_, s)| s.is_some()).map(|(e, _)| e));
    }
    if usable.is_empty() {
        return Err(format!("no training answer fits in --max-len {}", a.max_len).into());
    }
    say!(
        "{} — {} parameters; {} questions to train on ({} cut off by --max-len), {} held out",
        model.describe(),
        thousands(store.num_params()),
        usable.len(),
        train_set.len() - usable.len(),
        held_set.len()
    );
    let config = serde_json::json!({"task": "qa", "bert": model.bert.config});
    if a.run.resume {
        let path = a.run.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        check_resumable(path, "question answering", |c: &serde_json::Value| *c == config)?;
    }
    let trainer = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adamw(a.lr))?)
        .epochs(a.epochs)
        .clip_grad_norm(1.0)
        .describe("qa", "questions")
        .data_settings(
            serde_json::json!({"batch_size": a.batch_size, "max_len": a.max_len, "seed": a.seed}),
        );
    let inputs = [a.data.as_path(), a.model.as_path()];
    let mut trainer = a.run.apply(trainer, "qa", Every::End, config, &inputs);
    let mut data = Epochs::shuffled(usable.len(), a.batch_size, a.seed);
    // Warm-up over the first tenth, then cosine decay to zero.
    let total = trainer.total_steps(&data)?;
    let warmup = (total / 10).max(1).min(total);
    trainer = trainer.schedule(Schedule::Warmup {
        steps: warmup,
        then: Box::new(Schedule::Cosine { total: total - warmup, min_lr: 0.0 }),
    });
    let step = |rows: Vec<usize>, m: &mut Metrics| -> CliResult<Tensor> {
        let chunk: Vec<&QaExample> = rows.iter().map(|&i| usable[i]).collect();
        let (batch, spans) = encode_examples(&tok, &chunk, a.max_len)?;
        let (starts, ends): (Vec<i64>, Vec<i64>) =
            spans.iter().map(|s| s.map_or((0, 0), |(s, e)| (s as i64, e as i64))).unzip();
        let n = chunk.len();
        m.count(n);
        Ok(model.loss(
            &batch.ids,
            &batch.token_types,
            &batch.mask,
            &batch.context_mask()?,
            &Tensor::from_vec(starts, &[n])?,
            &Tensor::from_vec(ends, &[n])?,
        )?)
    };
    let evaluate = |_step, m: &mut Metrics| -> CliResult<()> {
        for chunk in held_set.chunks(32) {
            let refs: Vec<&QaExample> = chunk.iter().collect();
            let (batch, _) = encode_examples(&tok, &refs, a.max_len)?;
            let contexts: Vec<&str> = chunk.iter().map(|e| e.context.as_str()).collect();
            let found = model.answers(&batch, &contexts, a.max_answer_len)?;
            for (got, e) in found.iter().zip(chunk) {
                let text = got.as_ref().map_or("", |(t, _)| t.as_str());
                let (em, f1) = squad_scores(text, &e.answer);
                m.add("exact_match", em, 1.0);
                m.add("f1", f1, 1.0);
            }
        }
        Ok(())
    };
    let report = trainer.fit_evaluating(&mut data, step, Some(evaluate))?;
    if report.stopped() {
        say!("stopped after step {} of {}; continue with --resume", report.end, report.total);
        return Ok(());
    }
    let (exact, f1) = (report.eval["exact_match"], report.eval["f1"]);
    say!(
        "held-out: exact match {:.1}%, F1 {:.1}% after {} steps in {:.0} s",
        100.0 * exact,
        100.0 * f1,
        report.end,
        report.seconds
    );
    if let Some(path) = &a.run.checkpoint {
        say!("saved {}", path.display());
    }
    if a.run.json {
        say!(
            "{}",
            serde_json::json!({"task": "qa", "steps": report.end, "exact_match": exact, "f1": f1})
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
    #[arg(long, default_value_t = 384, value_parser = between(LENGTH))]
    max_len: usize,
    #[arg(long, default_value_t = 30)]
    max_answer_len: usize,
    #[command(flatten)]
    dtype: crate::DtypeArg,
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
    a.dtype.apply(&store)?;
    let example = QaExample {
        question: a.question.clone(),
        context: a.context.clone(),
        answer: String::new(),
        answer_start: 0,
    };
    let (batch, _) = encode_examples(&tok, &[&example], a.max_len)?;
    let answers = model.answers(&batch, &[a.context.as_str()], a.max_answer_len.max(1))?;
    match answers.into_iter().next().flatten() {
        Some((text, score)) => say!("{text}\t(score {score:.2})"),
        None => return Err(format!(
            "no answer: either no context tokens are left after the question within --max-len {} (raise it), or no span has a finite score (are the checkpoint's weights finite?)",
            a.max_len
        )
        .into()),
    }
    Ok(())
}
