//! The `ferrograd` command: how a person meets the library.

/// `println!` on rank 0 alone of a data-parallel job (every rank runs the same command, and
/// one report is enough); `println!` without one.
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::training::lead() {
            println!($($arg)*);
        }
    };
}

mod bench;
mod classify;
mod embed;
mod features;
mod lm;
mod mnist;
mod qa;
mod seq2seq;
mod summary;
mod tour;
mod train;
mod training;

use clap::{Parser, Subcommand};

/// What a command returns: its error is printed for the person, so any error will do.
type CliResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `--dtype`: the precision of products with a model's weights when it runs (not trains).
#[derive(clap::Args, Clone, Copy)]
struct DtypeArg {
    /// Products with the model's weights (every FeedForward and GenerateToken, so every
    /// Transformer projection) in f32, int8 (weights per channel, activations per row) or
    /// bf16; the rest of the model stays f32.
    #[arg(long = "dtype", value_name = "DTYPE", default_value_t = ferrograd::Precision::F32)]
    precision: ferrograd::Precision,
}

impl DtypeArg {
    fn apply(self, store: &ferrograd_nn::ParamStore) -> CliResult<()> {
        Ok(store.set_precision(self.precision)?)
    }
}

// Training allocates and frees the same large buffers (im2col columns, activations) every
// step; glibc's malloc hands those back to the kernel each time and pays page faults to get
// them again. mimalloc, told not to purge (below), keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ferrograd", version, about = "Differentiable programming in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk through the lecture on built-in data: each chapter builds, differentiates and
    /// trains a model and prints what it learned (about a minute in all).
    Tour {
        /// Where the pictures (feature maps, learned filters) are written.
        #[arg(long, default_value = "tour")]
        out: PathBuf,
    },
    /// Measure a workload of WORKLOADS.md on this machine (bench/compare.py runs PyTorch's
    /// side beside it).
    Bench {
        /// W1 matrix products (n = 256, 1024, 2048); W2 FeedForward³ training on MNIST
        /// batches of 128; W3 CNN training, batches of 64; W4 LSTM character LM training;
        /// W5 Transformer character LM training and generation; W6 all-MiniLM-L6-v2
        /// sentence embeddings (needs --data); W7 Transformer encoder–decoder training; W8
        /// GPT-2 small generation (random weights, or --data with a Hugging Face directory).
        workload: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Three timed repetitions per measurement instead of ~3 s of them (a smoke test, not a
        /// measurement).
        #[arg(long)]
        quick: bool,
        /// Train data-parallel over the ranks of `mpirun -np N` (W2, W3, W7), the batch split
        /// among them: prints each rank's throughput and the job's.
        #[arg(long)]
        distributed: bool,
        /// With --distributed: sum gradient pieces while backward goes on.
        #[arg(long, requires = "distributed")]
        overlap_communication: bool,
        /// MNIST directory (IDX files) for W2/W3, a text file for W4/W5 (random data of the same
        /// shape without it), the model directory for W6.
        #[arg(long)]
        data: Option<PathBuf>,
        /// W6 alone in this precision (it measures f32, int8 and bf16 without it); W5's and
        /// W8's generation in it, their keys marked with it.
        #[arg(long)]
        dtype: Option<ferrograd::Precision>,
    },
    /// Train a model.
    #[command(subcommand)]
    Train(train::Task),
    /// Sentence embeddings from a sentence-transformers BERT model, as a similarity table.
    Embed(embed::EmbedArgs),
    /// Continue a prompt with a trained language model, streaming the text.
    Generate(lm::GenerateArgs),
    /// Answer a question about a context with a BERT span model (`train qa` makes one).
    Qa(qa::QaArgs),
    /// Translate text with a `train seq2seq` checkpoint (beam search).
    Translate(seq2seq::TranslateArgs),
    /// Print a model in the lecture's notation with a table of its layers.
    Summary {
        /// alexnet, alexnet-imagenet, cnn or feedforward.
        model: String,
    },
    /// Apply the lecture's filters (sharpen, edge detect, strong edge detect) to an image and
    /// write the feature maps as PNG files.
    Features {
        /// A PNG or JPEG image.
        #[arg(long)]
        image: PathBuf,
        /// Where to write the maps.
        #[arg(long, default_value = "features")]
        out: PathBuf,
    },
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed memory instead of returning it to the OS after 10 ms: a training step frees
    // and reallocates the same buffers, and every return costs page faults and zeroing
    // (a third of W5's time, measured with perf).
    // SAFETY: setting a documented option; mimalloc reads it at its next purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    // Run on a rayon worker, not beside the pool: a parallel op then splits work with the
    // other workers directly, instead of handing it over and sleeping until it comes back (two
    // context switches per op; a sixth of W2's time in the kernel's scheduler, by perf).
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .num_threads(training::threads_per_process())
        .build();
    let result = match pool {
        Ok(pool) => pool.install(|| {
            let _warm = ferrograd::KeepWarm::new();
            // MPI is joined and left on the thread that trains: the one that calls it.
            let result = training::join().and_then(|()| dispatch(cli));
            training::leave();
            result.map_err(|e| e.to_string())
        }),
        Err(e) => Err(format!("cannot start worker threads: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Tour { out } => tour::run(&out),
        Command::Bench {
            workload,
            json,
            quick,
            distributed,
            overlap_communication,
            data,
            dtype,
        } => {
            let ranks = distributed.then_some(bench::Ranks { overlap: overlap_communication });
            bench::run(&workload, json, quick, data.as_deref(), ranks, dtype)
        }
        Command::Train(task) => train::run(task),
        Command::Summary { model } => summary::run(&model),
        Command::Generate(args) => lm::generate(&args),
        Command::Translate(args) => seq2seq::translate(&args),
        Command::Qa(args) => qa::answer(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Features { image, out } => features::run(&image, &out),
    }
}
