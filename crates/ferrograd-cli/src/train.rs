//! `ferrograd train`: each task's flags, dispatched to the module that trains it.

use crate::CliResult;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Task {
    /// Classify MNIST digits: trains on the first 8,000 images of DIR, evaluates on the rest.
    Mnist(crate::mnist::MnistArgs),
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

pub fn run(task: Task) -> CliResult<()> {
    match task {
        Task::Mnist(args) => crate::mnist::train(&args),
        Task::Lm(args) => crate::lm::train(&args),
        Task::Classify(args) => crate::classify::train(&args),
        Task::Seq2seq(args) => crate::seq2seq::train(&args),
        Task::Qa(args) => crate::qa::train(&args),
    }
}
