//! Fuzz targets for every reader of a user's files: checkpoints and safetensors files, IDX
//! images and labels, TSV data, SQuAD, BERT's `config.json` and `tokenizer.json`. Each target
//! takes arbitrary bytes and must accept or refuse them: never panic, hang or allocate what the
//! bytes merely claim.
//!
//! `tests/fuzz.rs` runs every target over seeded mutations of valid files as part of the test
//! suite, and for longer when `FERROGRAD_FUZZ_SECONDS` is set; `fuzz/` at the repository root
//! runs the same targets under cargo-fuzz (libFuzzer, coverage-guided).

pub mod mutate;
mod seeds;

use ferrograd::{io, Tensor};
use ferrograd_data::{mnist, qa, text, wordpiece::BertTokenizer, PretrainedTokenizer};
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::{gpt2, Activation, Bert, FeedForward, Module, ParamStore};
use std::path::PathBuf;

/// A reader under test: `run` returns whether it accepted the bytes.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
    /// Valid files to mutate; every one must be accepted.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

pub const TARGETS: &[Target] = &[
    Target { name: "safetensors", run: safetensors, seeds: seeds::safetensors },
    Target { name: "checkpoint", run: checkpoint, seeds: seeds::checkpoint },
    Target { name: "idx", run: idx, seeds: seeds::idx },
    Target { name: "tsv", run: tsv, seeds: seeds::tsv },
    Target { name: "squad", run: squad, seeds: seeds::squad },
    Target { name: "bert_config", run: bert_config, seeds: seeds::bert_config },
    Target { name: "tokenizer_json", run: tokenizer_json, seeds: seeds::tokenizer_json },
    Target { name: "gpt2_config", run: gpt2_config, seeds: seeds::gpt2_config },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The readers take paths, as users give them: each input goes through a file of this
/// process and thread.
fn scratch(name: &str) -> PathBuf {
    thread_local! {
        static DIR: PathBuf = {
            let dir = std::env::temp_dir().join(format!(
                "ferrograd-fuzz-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).expect("a scratch folder");
            dir
        };
    }
    DIR.with(|d| d.join(name))
}

fn written(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("the scratch folder is writable");
    path
}

fn safetensors(bytes: &[u8]) -> bool {
    let path = written("file.safetensors", bytes);
    if let Ok(header) = io::read_safetensors_header(&path) {
        let _ = header.check_sizes("fuzz", &[("size", header.largest_dim())], &[("layers", 1)]);
    }
    io::load_safetensors(&path).is_ok()
}

/// The model whose checkpoints the `checkpoint` target reads, with its optimizer.
fn small_model() -> (ParamStore, FeedForward, Adam) {
    let store = ParamStore::new(0);
    let net = FeedForward::new(store.sub("net"), 3, 4, Activation::Relu).expect("a small model");
    let adam = Adam::new(store.params(), AdamConfig::adam(1e-3)).expect("a small optimizer");
    (store, net, adam)
}

fn checkpoint(bytes: &[u8]) -> bool {
    let path = written("checkpoint.safetensors", bytes);
    let _ = ferrograd_nn::inspect_checkpoint(&path);
    let (store, net, mut adam) = small_model();
    let loaded = ferrograd_nn::load_checkpoint(&path, &store, Some(&mut adam)).is_ok();
    // A model that loaded must run.
    let x = Tensor::ones(&[2, 3], ferrograd::DType::F32).expect("a small input");
    loaded && net.forward(&x).is_ok()
}

fn idx(bytes: &[u8]) -> bool {
    let path = written("data-idx-ubyte", bytes);
    mnist::read_images(&path).is_ok() | mnist::read_labels(&path).is_ok()
}

fn tsv(bytes: &[u8]) -> bool {
    let path = written("data.tsv", bytes);
    text::read_labeled(&path).is_ok() | text::read_pairs(&path).is_ok()
}

fn squad(bytes: &[u8]) -> bool {
    qa::read_squad(&written("squad.json", bytes)).is_ok()
}

/// A model folder: the weights of [`seeds::tiny_bert`] and `bytes` as its `config.json`.
fn bert_config(bytes: &[u8]) -> bool {
    let dir = scratch("bert");
    if !dir.join("model.safetensors").exists() {
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        seeds::write_tiny_bert_weights(&dir.join("model.safetensors"));
    }
    std::fs::write(dir.join("config.json"), bytes).expect("the scratch folder is writable");
    let store = ParamStore::new(0);
    let Ok(bert) = Bert::from_pretrained(&dir, &store) else { return false };
    let ids = Tensor::from_vec(vec![1i64, 2, 3], &[1, 3]).expect("ids");
    bert.forward(&ids, None, None).is_ok()
}

/// A GPT-2 `config.json` beside the weights of the small GPT-2 of ferrograd-nn's fixtures.
fn gpt2_config(bytes: &[u8]) -> bool {
    let dir = scratch("gpt2");
    if !dir.join("model.safetensors").exists() {
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        std::fs::copy(seeds::GPT2_WEIGHTS, dir.join("model.safetensors")).expect("the weights");
    }
    std::fs::write(dir.join("config.json"), bytes).expect("the scratch folder is writable");
    let Ok((lm, _)) = gpt2::from_pretrained(&dir, &ParamStore::new(0)) else { return false };
    let ids = Tensor::from_vec(vec![1i64, 2, 3], &[1, 3]).expect("ids");
    lm.scores(&ids, None).is_ok()
}

fn tokenizer_json(bytes: &[u8]) -> bool {
    let path = written("tokenizer.json", bytes);
    let texts = ["hello worlds", "naïve café, 東京?", ""];
    // Any tokenizer.json, as GPT-2's is read; then as BERT's, which needs a template.
    let general = PretrainedTokenizer::from_file(&path).is_ok_and(|t| {
        texts.iter().all(|text| t.encode(text).and_then(|ids| t.decode(&ids)).is_ok())
    });
    let Ok(tokenizer) = BertTokenizer::from_file(&path) else {
        return false;
    };
    general
        && tokenizer.encode_batch(&texts, 16).is_ok()
        && tokenizer.encode_pairs(&[("the hello", "a world")], 8).is_ok()
}

/// Removes this thread's scratch files.
pub fn clean_up() {
    let _ = std::fs::remove_dir_all(scratch("").as_path());
}
