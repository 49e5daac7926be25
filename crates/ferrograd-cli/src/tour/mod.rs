//! `ferrograd tour`: the lecture as a program, chapter by chapter, on built-in data. Each
//! chapter is a file; every model but the first trains through the library's Trainer (the
//! first shows `backward` and the update by hand, on purpose).

mod attention;
mod feedforward;
mod images;
mod parsing;
mod question_answering;
mod sequences;

use crate::CliResult;
use ferrograd::Result;
use ferrograd_nn::trainer::{Flow, Log, StepInfo};
use std::path::Path;
use std::time::Instant;

pub fn run(out: &Path) -> CliResult<()> {
    let start = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    println!(
        "ferrograd tour: differentiable programming, chapter by chapter (pictures go to {})\n",
        out.display()
    );
    chapter("1. Feedforward networks: score = FeedForward^3(φ(x))", || {
        Ok(feedforward::chapter()?)
    })?;
    chapter(
        "2. Convolutional networks: AlexNet(x) = FeedForward^3(MaxPool(Conv^3(...(Conv(x)))))",
        || images::chapter(out),
    )?;
    chapter(
        "3. Sequences: score = w · Collapse(SequenceModel(EmbedToken(x))), and a LanguageModel",
        sequences::chapter,
    )?;
    chapter("4. Attention: a Transformer LanguageModel, GenerateToken(TransformerBlock^2(EmbedToken(x)))", || {
        attention::chapter(out)
    })?;
    chapter(
        "5. BERT: question answering, Span(TransformerBlock^2(EmbedToken(x)))",
        question_answering::chapter,
    )?;
    chapter(
        "6. Sequence to sequence: semantic parsing, English to code, with a SequenceToSequence",
        parsing::chapter,
    )?;
    println!("tour finished in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn chapter(title: &str, body: impl FnOnce() -> CliResult<()>) -> CliResult<()> {
    let t = Instant::now();
    println!("{title}\n{}", "─".repeat(title.chars().count()));
    body()?;
    println!("   (chapter took {:.1} s)\n", t.elapsed().as_secs_f64());
    Ok(())
}

/// A hook that prints the loss at the first step and every `every` steps (`unit` after it):
/// the tour's Trainers are quiet otherwise.
fn print_loss(
    every: u64,
    unit: &'static str,
) -> impl FnMut(&StepInfo, &mut Log) -> Result<Flow> + Send {
    move |info, _| {
        if info.step == 1 || info.step.is_multiple_of(every) {
            println!("     step {:>4}   loss {:.3}{unit}", info.step, info.loss);
        }
        Ok(Flow::Continue)
    }
}

/// `steps` steps of next-character training on random windows (Adam), the loss printed every
/// 100.
fn train_lm(
    store: &ferrograd_nn::ParamStore,
    lm: &ferrograd_nn::LanguageModel,
    batches: &ferrograd_data::LmBatches,
    adam: ferrograd_nn::optim::Adam,
    seed: u64,
    steps: u64,
) -> CliResult<()> {
    use ferrograd_nn::trainer::{Metrics, Sampled};
    let mut trainer = ferrograd_nn::Trainer::new(store, adam)
        .steps(steps)
        .progress(ferrograd_nn::Progress::Quiet)
        .after_step(print_loss(100, " nats/char"));
    trainer.fit(
        &mut Sampled::new(seed),
        |mut rng, _: &mut Metrics| -> CliResult<ferrograd::Tensor> {
            let (x, y) = batches.sample(&mut rng)?;
            Ok(lm.loss(&x, &y, None)?)
        },
    )?;
    Ok(())
}
