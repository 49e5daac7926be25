//! `ferrograd train classify`: the lecture's text classifier,
//! `score = w · Collapse(SequenceModel^k(EmbedToken(x)))`, on label<TAB>text lines.

use crate::training::{between, BATCH, LAYERS, LENGTH, VOCAB, WIDTH};
use crate::training::{RunArgs, Tokens};
use crate::CliResult;
use clap::Args;
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_data::text::{pad_batch, read_labeled};
use ferrograd_data::Tokenizer;
use ferrograd_nn::losses::accuracy;
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::trainer::{Epochs, Metrics};
use ferrograd_nn::{
    check_resumable, formula, thousands, Every, ParamStore, TextClassifier, Trainer,
};
use std::path::PathBuf;

/// Token ids, mask and label ids of a batch of texts.
type Encoded = (Tensor, Tensor, Tensor);
/// Turns labeled texts into a batch.
type Encoder<'a> = &'a dyn Fn(&[(String, String)]) -> CliResult<Encoded>;

/// What a classifier checkpoint needs to be rebuilt: the vocabulary and the labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ClassifyConfig {
    task: String,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    dim: usize,
    hidden: usize,
    layers: usize,
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// label<TAB>text, one example a line; the last 10% (after a seeded shuffle) is held out.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "word")]
    tokenizer: Tokens,
    /// Pieces to learn for --tokenizer wordpiece or bpe.
    #[arg(long, default_value_t = 4000, value_parser = between(VOCAB))]
    vocab_size: usize,
    #[arg(long, default_value_t = 5)]
    epochs: u64,
    #[arg(long, default_value_t = 32, value_parser = between(BATCH))]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 64, value_parser = between(WIDTH))]
    dim: usize,
    #[arg(long, default_value_t = 64, value_parser = between(WIDTH))]
    hidden: usize,
    /// Stacked bidirectional LSTM layers: SequenceModel^k.
    #[arg(long, default_value_t = 1, value_parser = between(LAYERS))]
    layers: usize,
    /// Longest text in tokens; longer ones are cut.
    #[arg(long, default_value_t = 256, value_parser = between(LENGTH))]
    max_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    run: RunArgs,
}

pub fn train(a: &ClassifyArgs) -> CliResult<()> {
    if a.batch_size == 0 || a.epochs == 0 || a.max_len == 0 {
        return Err("--batch-size, --epochs and --max-len must be positive".into());
    }
    let mut rows = read_labeled(&a.data)?;
    if rows.len() < 2 {
        return Err(format!(
            "{}: needs at least 2 examples, found {}",
            a.data.display(),
            rows.len()
        )
        .into());
    }
    let mut labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    labels.sort();
    labels.dedup();
    let mut rng = Rng::seed(a.seed);
    rng.shuffle(&mut rows);
    let held = (rows.len() / 10).max(1);
    let (train, test) = rows.split_at(rows.len() - held);
    let tok =
        Tokenizer::build(a.tokenizer.into(), train.iter().map(|(_, t)| t.as_str()), a.vocab_size)?;
    let config = ClassifyConfig {
        task: "classify".into(),
        tokenizer: tok.clone(),
        labels: labels.clone(),
        dim: a.dim,
        hidden: a.hidden,
        layers: a.layers.max(1),
    };
    let store = ParamStore::new(a.seed);
    let clf = TextClassifier::lstm(
        &store,
        tok.vocab_size(),
        a.dim,
        a.hidden,
        config.layers,
        labels.len(),
    )?;
    if a.run.resume {
        let path = a.run.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        check_resumable(path, "classifier", |c: &ClassifyConfig| *c == config)?;
    }
    let encode = |rows: &[(String, String)]| -> CliResult<Encoded> {
        let seqs: Vec<Vec<i64>> = rows.iter().map(|(_, t)| tok.encode(t)).collect();
        let (ids, mask) = pad_batch(&seqs, 0, Some(a.max_len))?;
        let y: Vec<i64> = rows
            .iter()
            .map(|(l, _)| labels.iter().position(|k| k == l).unwrap_or(0) as i64)
            .collect();
        Ok((ids, mask, Tensor::from_vec(y, &[rows.len()])?))
    };
    say!(
        "{} — {} parameters; {} labels, {} training and {} held-out texts, vocabulary {}",
        formula(&clf),
        thousands(store.num_params()),
        labels.len(),
        train.len(),
        test.len(),
        tok.vocab_size()
    );
    let trainer = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(a.lr))?)
        .epochs(a.epochs)
        .describe("classify", "texts")
        .data_settings(
            serde_json::json!({"batch_size": a.batch_size, "max_len": a.max_len, "seed": a.seed}),
        );
    let config = serde_json::to_value(&config)?;
    let mut trainer =
        a.run.apply(trainer, "classify", Every::Epochs(1), config, &[a.data.as_path()]);
    let step = |rows: Vec<usize>, m: &mut Metrics| -> CliResult<Tensor> {
        let rows: Vec<(String, String)> = rows.iter().map(|&i| train[i].clone()).collect();
        let (ids, mask, y) = encode(&rows)?;
        m.count(rows.len());
        Ok(clf.scores(&ids, &mask)?.cross_entropy(&y, None)?)
    };
    let evaluate = |_step, m: &mut Metrics| -> CliResult<()> {
        m.add("accuracy", held_out_accuracy(&clf, test, &encode)?, 1.0);
        Ok(())
    };
    let mut data = Epochs::shuffled(train.len(), a.batch_size, a.seed.wrapping_add(1));
    let report = trainer.fit_evaluating(&mut data, step, Some(evaluate))?;
    if report.stopped() {
        say!("stopped after step {} of {}; continue with --resume", report.end, report.total);
    }
    if a.run.json {
        say!(
            "{}",
            serde_json::json!({"task": "classify", "epochs": a.epochs, "steps": report.end, "eval_accuracy": report.eval.get("accuracy"), "labels": labels})
        );
    }
    Ok(())
}

fn held_out_accuracy(
    clf: &TextClassifier,
    rows: &[(String, String)],
    encode: Encoder,
) -> CliResult<f64> {
    let _g = no_grad();
    let (mut hits, mut n) = (0.0, 0usize);
    for chunk in rows.chunks(256) {
        let (ids, mask, y) = encode(chunk)?;
        hits += accuracy(&clf.scores(&ids, &mask)?, &y)? * chunk.len() as f64;
        n += chunk.len();
    }
    Ok(hits / n.max(1) as f64)
}
