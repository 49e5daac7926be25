//! The flags every `train` command shares, and the Trainer they configure.

use clap::{Args, ValueEnum};
use ferrograd_data::TokenKind;
use ferrograd_nn::distributed::Collective;
use ferrograd_nn::{Every, Trainer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The data-parallel group of this process, when it was started by an MPI launcher; every
/// Trainer joins it.
static GROUP: Mutex<Option<Arc<dyn Collective>>> = Mutex::new(None);

/// Joins the MPI job this process was started in (`mpirun -np N ferrograd train …`); nothing
/// without one. Call [`leave`] at the end: MPI is finalized when the group is dropped.
pub fn join() -> crate::CliResult<()> {
    #[cfg(feature = "mpi")]
    if ferrograd_nn::distributed::Mpi::launched() {
        let mpi: Arc<dyn Collective> = Arc::new(ferrograd_nn::distributed::Mpi::init()?);
        *GROUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(mpi);
    }
    Ok(())
}

pub fn leave() {
    GROUP.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// This process's data-parallel group, if it has one.
pub fn group() -> Option<Arc<dyn Collective>> {
    GROUP.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Worker threads for this process: `RAYON_NUM_THREADS` if set; else, when an MPI launcher
/// started several ranks on this machine, the cores shared among them (as torchrun sets
/// `OMP_NUM_THREADS`), so that ranks do not fight over cores; else 0, every core.
pub fn threads_per_process() -> usize {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    if var("RAYON_NUM_THREADS").is_some() {
        return 0; // rayon reads it itself
    }
    let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"]
        .iter()
        .find_map(|v| var(v))
        .filter(|&n| n > 1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    local.map_or(0, |n| (cores / n).max(1))
}

/// Whether this process reports for the job: rank 0, or a process on its own.
pub fn lead() -> bool {
    group().is_none_or(|g| g.rank() == 0)
}

/// Bounds on the size flags: sizes of 10^9 would abort on allocation or run for days, and no
/// model this command line trains comes near these.
pub const WIDTH: u64 = 1 << 16;
pub const LAYERS: u64 = 256;
pub const HEADS: u64 = 1024;
pub const BATCH: u64 = 1 << 20;
pub const LENGTH: u64 = 1 << 16;
pub const VOCAB: u64 = 1 << 20;
pub const BEAM: u64 = 1024;

/// A size flag's parser: 1 to `max`, else clap's error naming the flag, the value and the
/// range.
pub fn between(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=max)
}

#[derive(Args)]
pub struct RunArgs {
    /// Save a checkpoint here (atomically) at every evaluation and at the end.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from --checkpoint; with the same settings the run ends as a straight one
    /// would, to the bit.
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// Stop after this step, as an interrupted run would (the checkpoint is saved); finish
    /// later with --resume.
    #[arg(long, requires = "checkpoint")]
    pub stop_after: Option<u64>,
    /// Sum the gradients of this many batches of --batch-size before each step: the step of
    /// a batch this many times as large.
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    /// Where the metrics (CSV, JSON lines, TensorBoard) and curves go [default: runs/TASK].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// End with one JSON line of results.
    #[arg(long)]
    pub json: bool,
    /// Under mpirun: sum each piece of the gradients while backward computes the rest (pays
    /// when ranks talk over a network and a core is free for it).
    #[arg(long)]
    pub overlap_communication: bool,
}

impl RunArgs {
    pub fn out_dir(&self, task: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| Path::new("runs").join(task))
    }

    /// `trainer` with these flags: checkpoints `every` so often (with `config`, what rebuilds
    /// the model), resume, stop, accumulation, the outputs of `task`, and `inputs` never
    /// written over.
    pub fn apply<'a>(
        &self,
        trainer: Trainer<'a>,
        task: &str,
        every: Every,
        config: serde_json::Value,
        inputs: &[&Path],
    ) -> Trainer<'a> {
        let mut t = trainer
            .accumulate(self.accumulate)
            .evaluate_every(every)
            .out(self.out_dir(task))
            .inputs(inputs.iter().copied())
            .stop_after(self.stop_after);
        if let Some(c) = group() {
            t = t.distributed(c).overlap_communication(self.overlap_communication);
        }
        if let Some(path) = &self.checkpoint {
            t = t.checkpoint(path, every, config);
            if self.resume {
                t = t.resume(path);
            }
        }
        t
    }
}

/// How one side's text becomes tokens.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// Lowercased words, punctuation apart (sentences).
    Word,
    /// Each character (code, spelling).
    Char,
    /// Word pieces learned from the training text (about --vocab-size of them).
    Wordpiece,
    /// Byte-level BPE learned from the training text (about --vocab-size pieces).
    Bpe,
}

impl From<Tokens> for TokenKind {
    fn from(t: Tokens) -> TokenKind {
        match t {
            Tokens::Word => TokenKind::Word,
            Tokens::Char => TokenKind::Char,
            Tokens::Wordpiece => TokenKind::WordPiece,
            Tokens::Bpe => TokenKind::Bpe,
        }
    }
}
