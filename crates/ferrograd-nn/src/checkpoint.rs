//! Checkpoints: a model's parameters, its optimizer's state, the step, the random generator's
//! state and the model's config in one safetensors file, written atomically. Loading checks
//! everything before it changes anything.

use crate::optim::Optimizer;
use crate::ParamStore;
use ferrograd::io::{load_safetensors, save_safetensors};
use ferrograd::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

const FORMAT: &str = "ferrograd-checkpoint-1";

/// What a checkpoint says about itself besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    pub step: u64,
    pub config: serde_json::Value,
    /// How the Trainer that wrote it mapped steps to data (steps, accumulation, batches per
    /// epoch), if a Trainer wrote it.
    pub trainer: Option<serde_json::Value>,
}

/// Writes the store's parameters and RNG state, the optimizer's state (if given), `step` and
/// `config` to `path`. A crash during the write leaves any earlier file at `path` intact.
pub fn save_checkpoint(
    path: &Path,
    store: &ParamStore,
    optimizer: Option<&dyn Optimizer>,
    step: u64,
    config: &serde_json::Value,
) -> Result<()> {
    write(path, store, optimizer, step, config, None)
}

/// [`save_checkpoint`] with the shape of the training that wrote it, which a resume checks.
pub(crate) fn save_training_checkpoint(
    path: &Path,
    store: &ParamStore,
    optimizer: Option<&dyn Optimizer>,
    step: u64,
    config: &serde_json::Value,
    trainer: &serde_json::Value,
) -> Result<()> {
    write(path, store, optimizer, step, config, Some(trainer))
}

fn write(
    path: &Path,
    store: &ParamStore,
    optimizer: Option<&dyn Optimizer>,
    step: u64,
    config: &serde_json::Value,
    trainer: Option<&serde_json::Value>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> =
        store.params().iter().map(|p| (format!("param/{}", p.name()), p.get())).collect();
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), step.to_string()),
        ("rng".to_string(), store.rng_state()),
        ("config".to_string(), config.to_string()),
    ]);
    if let Some(t) = trainer {
        meta.insert("trainer".into(), t.to_string());
    }
    if let Some(opt) = optimizer {
        let (state, steps) = opt.state();
        tensors.extend(state.into_iter().map(|(k, t)| (format!("optim/{k}"), t)));
        meta.insert("optimizer_steps".into(), steps.to_string());
    }
    save_safetensors(path, &tensors, &meta)
}

/// Reads only the metadata: to rebuild the model from its config before loading into it.
pub fn inspect_checkpoint(path: &Path) -> Result<CheckpointInfo> {
    info(path, &ferrograd::io::load_safetensors_metadata(path)?)
}

fn info(path: &Path, meta: &BTreeMap<String, String>) -> Result<CheckpointInfo> {
    let bad = |what: &str| Error::io("load_checkpoint", format!("{}: {what}", path.display()));
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(&format!(
            "not a ferrograd checkpoint (format {:?}, expected {FORMAT})",
            meta.get("format")
        )));
    }
    let step = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad("no step"))?;
    let config = meta
        .get("config")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| bad("no readable config"))?;
    let trainer = meta.get("trainer").and_then(|t| serde_json::from_str(t).ok());
    Ok(CheckpointInfo { step, config, trainer })
}

/// Loads a checkpoint into `store` (and `optimizer`): every parameter must be in the file with
/// its shape and dtype, and the file must hold nothing the model lacks; otherwise an error
/// names the tensor and nothing is changed.
pub fn load_checkpoint(
    path: &Path,
    store: &ParamStore,
    optimizer: Option<&mut dyn Optimizer>,
) -> Result<CheckpointInfo> {
    const OP: &str = "load_checkpoint";
    let (tensors, meta) = load_safetensors(path)?;
    let info = info(path, &meta)?;
    let params = store.params();
    let find = |name: &str| {
        tensors.iter().find(|(k, _)| k.strip_prefix("param/") == Some(name)).map(|(_, t)| t)
    };
    let values = store.match_tensors(OP, &path.display().to_string(), find)?;
    if let Some((k, _)) = tensors.iter().find(|(k, _)| {
        k.strip_prefix("param/").is_some_and(|n| !params.iter().any(|p| p.name() == n))
    }) {
        return Err(Error::value(
            OP,
            format!("{}: {k} is not a parameter of this model", path.display()),
        ));
    }
    let rng = meta
        .get("rng")
        .ok_or_else(|| Error::io(OP, format!("{}: no rng state", path.display())))?;
    ferrograd::Rng::from_state(rng)?;
    if let Some(opt) = optimizer {
        let steps = meta.get("optimizer_steps").and_then(|s| s.parse().ok()).ok_or_else(|| {
            Error::value(OP, format!("{}: holds no optimizer state to resume from", path.display()))
        })?;
        let state: Vec<(String, Tensor)> = tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("optim/").map(|k| (k.to_string(), t.clone())))
            .collect();
        opt.load_state(&state, steps)?; // validates before it changes anything
    }
    for (p, v) in &values {
        p.set(v)?;
    }
    store.set_rng_state(rng)?;
    Ok(info)
}

/// Checks, before a run resumes from `path`, that the checkpoint's config reads as a `C` (else
/// it is not a `what` checkpoint) and that `same` accepts it (else it was trained on other
/// data or another model); returns that config.
pub fn check_resumable<C: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    same: impl FnOnce(&C) -> bool,
) -> Result<C> {
    let info = inspect_checkpoint(path)?;
    let saved: C = serde_json::from_value(info.config).map_err(|e| {
        Error::value("resume", format!("{}: not a {what} checkpoint: {e}", path.display()))
    })?;
    if !same(&saved) {
        return Err(Error::value(
            "resume",
            format!(
                "{} was trained on other data or another model; it cannot resume here",
                path.display()
            ),
        ));
    }
    Ok(saved)
}
