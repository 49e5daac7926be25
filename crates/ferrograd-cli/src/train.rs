//! `ferrograd train`: training runs with a progress bar, held-out evaluation, a metrics file,
//! a plot of the curves, and checkpoints that resume exactly.

use crate::plot::{line_chart, Series};
use crate::CliResult;
use clap::{Args, Subcommand, ValueEnum};
use ferrograd::{no_grad, DType, Rng, Tensor};
use ferrograd_data::{mnist, Batches};
use ferrograd_nn::optim::{Adam, AdamConfig, Optimizer, Schedule};
use ferrograd_nn::{
    formula, load_checkpoint, models, save_checkpoint, thousands, Module, ParamStore, Sequential,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand)]
pub enum Task {
    /// Classify MNIST digits: trains on the first 8,000 images of DIR, evaluates on the rest.
    Mnist(MnistArgs),
    /// A character language model: GenerateToken(SequenceModel(EmbedToken(x))).
    Lm(crate::lm::LmArgs),
    /// A text classifier on label<TAB>text lines: w · Collapse(SequenceModel(EmbedToken(x))).
    Classify(crate::classify::ClassifyArgs),
    /// Sequence to sequence on source<TAB>target lines: GenerateToken(Decoder(EmbedToken(y),
    /// Encoder(EmbedToken(x)))).
    Seq2seq(crate::seq2seq::Seq2SeqArgs),
    /// Question answering: fine-tune a BERT directory with a span head on SQuAD-format JSON.
    Qa(crate::qa::TrainQaArgs),
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum ImageModel {
    /// FeedForward³ (784→256→256→10): reaches ≥ 95% held-out in 3 epochs.
    Feedforward,
    /// FeedForward²(MaxPool(Conv(MaxPool(Conv(x))))): reaches ≥ 98% held-out in 3 epochs.
    Cnn,
    /// The lecture's AlexNet, narrowed for 28×28 digits.
    Alexnet,
}

#[derive(Args)]
pub struct MnistArgs {
    #[arg(long, value_enum, default_value = "cnn")]
    model: ImageModel,
    /// Directory with the MNIST IDX files (raw or gzip).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam's learning rate (cosine-decayed to 0); 2e-3 for feedforward, 1e-3 otherwise.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images used for training; the rest are held out.
    #[arg(long, default_value_t = 8000)]
    train_images: usize,
    /// Save a checkpoint here after every epoch.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from --checkpoint (with the same --epochs, the run continues exactly).
    #[arg(long, requires = "checkpoint")]
    resume: bool,
    /// Stop after this epoch, as an interrupted run would; finish later with --resume.
    #[arg(long, requires = "checkpoint")]
    stop_after: Option<usize>,
    /// Where the metrics file and plots go.
    #[arg(long, default_value = "runs/mnist")]
    out: PathBuf,
    /// End with one JSON line of results.
    #[arg(long)]
    json: bool,
}

pub fn run(task: Task) -> CliResult<()> {
    match task {
        Task::Mnist(args) => train_mnist(&args),
        Task::Lm(args) => crate::lm::train(&args),
        Task::Classify(args) => crate::classify::train(&args),
        Task::Seq2seq(args) => crate::seq2seq::train(&args),
        Task::Qa(args) => crate::qa::train(&args),
    }
}

fn build(model: ImageModel, store: &ParamStore) -> ferrograd::Result<Sequential> {
    match model {
        ImageModel::Feedforward => models::feed_forward3(store, [784, 256, 256, 10]),
        ImageModel::Cnn => models::cnn(store, 1, 10),
        ImageModel::Alexnet => models::alexnet(store, &models::AlexNetConfig::mnist()),
    }
}

/// One epoch's numbers.
struct EpochMetrics {
    epoch: usize,
    train_loss: f64,
    train_accuracy: f64,
    eval_accuracy: f64,
    images_per_s: f64,
}

fn train_mnist(a: &MnistArgs) -> CliResult<()> {
    if a.batch_size == 0 || a.epochs == 0 {
        return Err("--batch-size and --epochs must be positive".into());
    }
    let data = mnist::load(&a.data)?;
    if a.train_images == 0 || a.train_images >= data.len() {
        return Err(format!(
            "--train-images must be between 1 and {} (the file has {} images)",
            data.len() - 1,
            data.len()
        )
        .into());
    }
    let (train, held_out) = data.split(a.train_images)?;
    let lr = a.lr.unwrap_or(if a.model == ImageModel::Feedforward { 2e-3 } else { 1e-3 });
    let store = ParamStore::new(a.seed);
    let net = build(a.model, &store)?;
    let mut opt = Adam::new(store.params(), AdamConfig::adam(lr))?;
    let config = serde_json::json!({"task": "mnist", "model": format!("{:?}", a.model).to_lowercase(), "batch_size": a.batch_size, "lr": lr, "seed": a.seed});
    let per_epoch = a.train_images.div_ceil(a.batch_size) as u64;
    let mut first_epoch = 0;
    if a.resume {
        let path = a.checkpoint.as_deref().expect("clap requires --checkpoint with --resume");
        let info = load_checkpoint(path, &store, Some(&mut opt))?;
        if info.config["model"] != config["model"] {
            return Err(format!(
                "{} holds a {} model, not {}",
                path.display(),
                info.config["model"],
                config["model"]
            )
            .into());
        }
        first_epoch = (info.step / per_epoch) as usize;
        eprintln!("resuming from {} at epoch {first_epoch} (step {})", path.display(), info.step);
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    println!(
        "{} — {} parameters, {} training images, {} held out",
        formula(&net),
        thousands(store.num_params()),
        train.len(),
        held_out.len()
    );

    // Cosine decay to zero over the whole run: the last epoch settles instead of bouncing.
    let schedule = Schedule::Cosine { total: per_epoch * a.epochs as u64, min_lr: 0.0 };
    let mut history = Vec::new();
    let mut total_images = 0usize;
    let mut total_secs = 0.0;
    let last_epoch = a.stop_after.map_or(a.epochs, |k| k.min(a.epochs));
    for epoch in first_epoch..last_epoch {
        let started = Instant::now();
        store.train();
        // The shuffle depends only on the seed and the epoch, so a resumed run sees the same order.
        let mut shuffle = Rng::seed(a.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let batches = Batches::new(&train.images, &train.labels, a.batch_size, Some(&mut shuffle))?;
        let bar = progress(batches.len() as u64, &format!("epoch {}/{}", epoch + 1, a.epochs));
        let (mut loss_sum, mut hits, mut seen) = (0.0, 0.0, 0usize);
        for batch in batches {
            let (x, y) = batch?;
            opt.set_lr(schedule.lr(lr, opt.steps()));
            let scores = net.forward(&x)?;
            let loss = scores.cross_entropy(&y, None)?;
            opt.step(&loss.backward()?)?;
            let n = y.dims()[0];
            loss_sum += loss.item()? * n as f64;
            hits += accuracy(&scores, &y)? * n as f64;
            seen += n;
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.4}  accuracy {:.1}%  {rate:.0} images/s",
                loss_sum / seen as f64,
                100.0 * hits / seen as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        total_images += seen;
        total_secs += secs;
        let eval_accuracy = evaluate(&store, &net, &held_out.images, &held_out.labels)?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_accuracy: hits / seen as f64,
            eval_accuracy,
            images_per_s: seen as f64 / secs,
        };
        println!(
            "epoch {:>2}  loss {:.4}  train {:.2}%  held-out {:.2}%  {:.0} images/s",
            m.epoch,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.eval_accuracy,
            m.images_per_s
        );
        if let Some(path) = &a.checkpoint {
            save_checkpoint(path, &store, Some(&opt), opt.steps(), &config)?;
        }
        history.push(m);
    }
    if history.is_empty() {
        println!("nothing to do: the checkpoint is already at epoch {first_epoch} of {}", a.epochs);
        return Ok(());
    }
    write_metrics(&a.out, &history)?;
    let last = history.last().expect("checked non-empty");
    println!(
        "held-out accuracy: {:.2}%  (metrics and plots in {})",
        100.0 * last.eval_accuracy,
        a.out.display()
    );
    if a.json {
        let out = serde_json::json!({
            "task": "mnist",
            "model": config["model"],
            "epochs": a.epochs,
            "eval_accuracy": last.eval_accuracy,
            "train_loss": last.train_loss,
            "train_images_per_s": total_images as f64 / total_secs,
        });
        println!("{out}");
    }
    Ok(())
}

/// Loads a `--resume` checkpoint into `store` and `opt` once its config shows it was written
/// by the same kind of run (`C`, `what` in errors) with the same settings (`same`); nothing is
/// loaded otherwise. Returns the step to continue from.
pub fn resume<C: serde::de::DeserializeOwned>(
    path: &Path,
    store: &ParamStore,
    opt: &mut dyn Optimizer,
    what: &str,
    same: impl FnOnce(&C) -> bool,
) -> CliResult<u64> {
    let info = ferrograd_nn::inspect_checkpoint(path)?;
    let saved: C = serde_json::from_value(info.config)
        .map_err(|e| format!("{}: not a {what} checkpoint: {e}", path.display()))?;
    if !same(&saved) {
        return Err(format!(
            "{} was trained on other data or another model; it cannot resume here",
            path.display()
        )
        .into());
    }
    let step = load_checkpoint(path, store, Some(opt))?.step;
    eprintln!("resuming from {} at step {step}", path.display());
    Ok(step)
}

/// A progress bar `prefix [=====>    ] pos/len message`, shared by every training command.
pub fn progress(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(prefix.to_string());
    bar
}

/// Fraction of rows whose highest score is the label.
pub fn accuracy(scores: &Tensor, labels: &Tensor) -> ferrograd::Result<f64> {
    let _g = no_grad();
    scores.argmax(-1, false)?.eq(labels)?.to_dtype(DType::F64)?.mean_all()?.item()
}

/// Held-out accuracy in evaluation mode, in batches, recording no graph.
fn evaluate(
    store: &ParamStore,
    net: &dyn Module,
    images: &Tensor,
    labels: &Tensor,
) -> CliResult<f64> {
    let _g = no_grad();
    store.eval();
    let (mut hits, mut n) = (0.0, 0usize);
    for batch in Batches::new(images, labels, 500, None)? {
        let (x, y) = batch?;
        let k = y.dims()[0];
        hits += accuracy(&net.forward(&x)?, &y)? * k as f64;
        n += k;
    }
    store.train();
    Ok(hits / n.max(1) as f64)
}

fn write_metrics(out: &Path, history: &[EpochMetrics]) -> CliResult<()> {
    let path = out.join("metrics.csv");
    let mut f = std::fs::File::create(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(f, "epoch,train_loss,train_accuracy,eval_accuracy,images_per_s")?;
    for m in history {
        writeln!(
            f,
            "{},{:.6},{:.6},{:.6},{:.1}",
            m.epoch, m.train_loss, m.train_accuracy, m.eval_accuracy, m.images_per_s
        )?;
    }
    let points =
        |f: &dyn Fn(&EpochMetrics) -> f64| history.iter().map(|m| (m.epoch as f64, f(m))).collect();
    line_chart(
        &out.join("loss.svg"),
        "training loss",
        "epoch",
        "cross-entropy",
        &[Series { name: "train".into(), points: points(&|m| m.train_loss) }],
    )?;
    line_chart(
        &out.join("accuracy.svg"),
        "accuracy",
        "epoch",
        "fraction correct",
        &[
            Series { name: "train".into(), points: points(&|m| m.train_accuracy) },
            Series { name: "held-out".into(), points: points(&|m| m.eval_accuracy) },
        ],
    )?;
    Ok(())
}
