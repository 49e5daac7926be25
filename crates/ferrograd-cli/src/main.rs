//! The `ferrograd` command: how a person meets the library.

mod bench;
mod tour;

use clap::{Parser, Subcommand};
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
    Tour,
    /// Measure a workload of WORKLOADS.md (W1: matrix product) on this machine.
    Bench {
        /// Workload id, e.g. W1.
        workload: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// One timed repetition per measurement instead of ~1.5 s of them (a smoke test, not a
        /// measurement).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tour => tour::run(),
        Command::Bench { workload, json, quick } => bench::run(&workload, json, quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
