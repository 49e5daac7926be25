//! GPT-2 from a Hugging Face model directory, as the lecture's LanguageModel built from the
//! library's own blocks: GenerateToken(LayerNorm(TransformerBlock^L(Positions(EmbedToken(x)))))
//! with pre-norm causal blocks, GELU (tanh), and GenerateToken tied to EmbedToken.
//!
//! Hugging Face stores GPT-2's projections as `Conv1D`, whose weight is (in, out): the
//! transpose of a FeedForward's (out, in); and the query, key and value projections as one
//! (D, 3D) `c_attn`. Both are converted on loading.

use crate::models::{lm_of_shape, LmShape};
use crate::{Activation, LanguageModel, ParamStore};
use ferrograd::{Error, Result, Tensor};
use std::path::Path;

const OP: &str = "gpt2";

/// The fields of a Hugging Face GPT-2 `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// The context: prompt and continuation together.
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// The FeedForward's hidden size; `4 · n_embd` when absent or null.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "gelu_new")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The end-of-text token, where generation stops.
    #[serde(default)]
    pub eos_token_id: Option<i64>,
    /// Dropout in fine-tuning on each sublayer's output (Hugging Face's default 0.1, as for
    /// the next two).
    #[serde(default = "one_tenth")]
    pub resid_pdrop: f64,
    /// On the attention weights.
    #[serde(default = "one_tenth")]
    pub attn_pdrop: f64,
    /// On the embeddings with their positions.
    #[serde(default = "one_tenth")]
    pub embd_pdrop: f64,
}

fn one_tenth() -> f64 {
    0.1
}

fn gelu_new() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

impl Gpt2Config {
    /// Reads and checks a `config.json`; the sizes are checked against the weights later, by
    /// [`from_pretrained`].
    pub fn read(path: &Path) -> Result<Gpt2Config> {
        let text = ferrograd::io::read_text(path, OP)?;
        let config: Gpt2Config = serde_json::from_str(&text).map_err(|e| {
            Error::value(OP, format!("{}: not a GPT-2 config: {e}", path.display()))
        })?;
        let bad = |why: String| Err(Error::value(OP, format!("{}: {why}", path.display())));
        let c = &config;
        if !(c.layer_norm_epsilon.is_finite() && c.layer_norm_epsilon > 0.0) {
            return bad(format!(
                "layer_norm_epsilon = {} must be finite and > 0",
                c.layer_norm_epsilon
            ));
        }
        if c.n_head == 0 || !c.n_embd.is_multiple_of(c.n_head) {
            return bad(format!("n_head = {} does not divide n_embd = {}", c.n_head, c.n_embd));
        }
        if !c.tie_word_embeddings {
            return bad("tie_word_embeddings = false: only GPT-2's tied output is supported".into());
        }
        if !c.scale_attn_weights || c.scale_attn_by_inverse_layer_idx {
            return bad("only scale_attn_weights = true, scale_attn_by_inverse_layer_idx = false (GPT-2's) are supported".into());
        }
        for (name, p) in [
            ("resid_pdrop", c.resid_pdrop),
            ("attn_pdrop", c.attn_pdrop),
            ("embd_pdrop", c.embd_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        Activation::hugging_face(OP, &c.activation_function)?;
        Ok(config)
    }

    /// The LanguageModel's sizes.
    pub fn shape(&self) -> Result<LmShape> {
        Ok(LmShape {
            vocab: self.vocab_size,
            dim: self.n_embd,
            heads: self.n_head,
            layers: self.n_layer,
            context: self.n_positions,
            ff: self.n_inner.unwrap_or(4 * self.n_embd),
            activation: Activation::hugging_face(OP, &self.activation_function)?,
            eps: self.layer_norm_epsilon,
            dropout: self.resid_pdrop,
            attention_dropout: self.attn_pdrop,
            embed_dropout: self.embd_pdrop,
        })
    }
}

/// GPT-2 from `dir` (`config.json`, `model.safetensors`) under `store`. The config's sizes are
/// checked against the weights file before anything is allocated; every parameter must be in
/// the file with its shape (an error names the one that is not). The causal-mask buffers of
/// older files and a tied `lm_head.weight` are skipped. The store is left in evaluation mode,
/// as Hugging Face's `from_pretrained` leaves its model (a Trainer switches dropout on).
pub fn from_pretrained(dir: &Path, store: &ParamStore) -> Result<(LanguageModel, Gpt2Config)> {
    let config = Gpt2Config::read(&dir.join("config.json"))?;
    Ok((load(dir, &config, store)?, config))
}

/// [`from_pretrained`] with `config` in place of `dir`'s own (read from it, then edited: a
/// fine-tuning run's dropout).
pub fn load(dir: &Path, config: &Gpt2Config, store: &ParamStore) -> Result<LanguageModel> {
    let config_path = dir.join("config.json");
    let weights = dir.join("model.safetensors");
    let c = config;
    let header = ferrograd::io::read_safetensors_header(&weights)?;
    header.check_sizes(
        &config_path.display().to_string(),
        &[
            ("vocab_size", c.vocab_size),
            ("n_positions", c.n_positions),
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("n_inner", c.n_inner.unwrap_or(1)),
        ],
        &[("n_layer", c.n_layer)],
    )?;
    let source = weights.display().to_string();
    let shape = config.shape()?;
    let lm = store.within(header.elements(), &source, || lm_of_shape(store, &shape))?;
    let (tensors, _) = ferrograd::io::load_safetensors(&weights)?;
    let ours = ours(tensors, &source)?;
    let find = |name: &str| ours.iter().find(|(k, _)| k == name).map(|(_, t)| t);
    for (p, t) in store.match_tensors(OP, &source, find)? {
        p.set(&t)?;
    }
    store.eval();
    Ok(lm)
}

/// Hugging Face's GPT-2 tensors under the names [`lm_of_shape`] gives them, Conv1D weights
/// transposed and `c_attn` split into query, key and value.
fn ours(tensors: Vec<(String, Tensor)>, source: &str) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::with_capacity(tensors.len() + 2 * tensors.len() / 6);
    for (name, t) in tensors {
        let short = name.strip_prefix("transformer.").unwrap_or(&name);
        let parts: Vec<&str> = short.split('.').collect();
        // Conv1D (in, out) → FeedForward (out, in); biases as they are.
        let linear = |t: &Tensor, kind: &str| -> Result<Tensor> {
            match (kind, t.rank()) {
                ("weight", 2) => t.transpose(0, 1),
                ("bias", 1) => Ok(t.clone()),
                _ => Err(Error::shape(
                    OP,
                    format!("{source}: tensor {name} is {}, not a Conv1D {kind}", t.shape()),
                )),
            }
        };
        match parts[..] {
            ["wte", "weight"] => out.push(("embed.weight".to_string(), t)),
            ["wpe", "weight"] => out.push(("positions.weight".to_string(), t)),
            ["ln_f", w] => out.push((format!("final_norm.{w}"), t)),
            ["h", i, "ln_1", w] => out.push((format!("blocks.{i}.attention_norm.{w}"), t)),
            ["h", i, "ln_2", w] => out.push((format!("blocks.{i}.ff_norm.{w}"), t)),
            ["h", i, "attn", "c_attn", w] => {
                let packed = linear(&t, w)?; // (3D, D) or (3D)
                let d = packed.dims()[0] / 3;
                if packed.dims()[0] != 3 * d {
                    return Err(Error::shape(
                        OP,
                        format!("{source}: {name} is {}: its outputs are not 3 equal parts (query, key, value)", t.shape()),
                    ));
                }
                for (k, part) in ["query", "key", "value"].iter().enumerate() {
                    let piece = packed.narrow(0, k * d, d)?;
                    out.push((format!("blocks.{i}.attention.{part}.{w}"), piece));
                }
            }
            ["h", i, "attn", "c_proj", w] => {
                out.push((format!("blocks.{i}.attention.output.{w}"), linear(&t, w)?))
            }
            ["h", i, "mlp", "c_fc", w] => {
                out.push((format!("blocks.{i}.ff_in.{w}"), linear(&t, w)?))
            }
            ["h", i, "mlp", "c_proj", w] => {
                out.push((format!("blocks.{i}.ff_out.{w}"), linear(&t, w)?))
            }
            // Tied to wte; the causal masks are rebuilt, not read.
            _ => {}
        }
    }
    Ok(out)
}
