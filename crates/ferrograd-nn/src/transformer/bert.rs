//! BERT = TransformerBlock^L(EmbedToken(x)) with position and segment embeddings, loading
//! Hugging Face checkpoints (`config.json` + `model.safetensors`) by parameter name.

use super::{AddNorm, Attention, LayerNorm, TransformerBlock};
use crate::sequence::SequenceModel;
use crate::{Activation, FeedForward, Init, Module, Param, ParamStore};
use ferrograd::{no_grad, DType, Error, Result, Tensor};
use std::path::Path;

/// The fields of a Hugging Face BERT `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// A BERT encoder: token + position + segment embeddings, LayerNorm, then L post-norm
/// TransformerBlocks.
pub struct Bert {
    pub config: BertConfig,
    pub word_embeddings: Param,
    pub position_embeddings: Param,
    pub token_type_embeddings: Param,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<TransformerBlock>,
}

impl Bert {
    /// A freshly initialized BERT with Hugging Face's parameter names under `store`.
    pub fn new(store: &ParamStore, config: &BertConfig) -> Result<Bert> {
        let c = config;
        let act = Activation::hugging_face("Bert", &c.hidden_act)?;
        let e = store.sub("embeddings");
        let normal = Init::Normal { mean: 0.0, std: 0.02 };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = store.sub("encoder.layer").sub(i);
            let names = [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
            ];
            layers.push(TransformerBlock {
                attention: Attention::with_names(
                    &l,
                    names,
                    c.hidden_size,
                    c.num_attention_heads,
                    false,
                )?,
                attention_norm: AddNorm::new(
                    LayerNorm::new(
                        l.sub("attention.output.LayerNorm"),
                        c.hidden_size,
                        c.layer_norm_eps,
                    )?,
                    false,
                ),
                ff_in: FeedForward::new(
                    l.sub("intermediate.dense"),
                    c.hidden_size,
                    c.intermediate_size,
                    act,
                )?,
                ff_out: FeedForward::new(
                    l.sub("output.dense"),
                    c.intermediate_size,
                    c.hidden_size,
                    Activation::Identity,
                )?,
                ff_norm: AddNorm::new(
                    LayerNorm::new(l.sub("output.LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
                    false,
                ),
                ff_dropout: None,
            });
        }
        Ok(Bert {
            config: config.clone(),
            word_embeddings: e.param(
                "word_embeddings.weight",
                &[c.vocab_size, c.hidden_size],
                normal,
            )?,
            position_embeddings: e.param(
                "position_embeddings.weight",
                &[c.max_position_embeddings, c.hidden_size],
                normal,
            )?,
            token_type_embeddings: e.param(
                "token_type_embeddings.weight",
                &[c.type_vocab_size, c.hidden_size],
                normal,
            )?,
            embeddings_norm: LayerNorm::new(e.sub("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            layers,
        })
    }

    /// Reads `config.json` and `model.safetensors` from a Hugging Face model directory. Every
    /// parameter must be in the file with its shape and dtype; an error names the one that is
    /// not. Tensors the encoder does not use (the pooler, `position_ids`) are skipped.
    pub fn from_pretrained(dir: &Path, store: &ParamStore) -> Result<Bert> {
        const OP: &str = "Bert::from_pretrained";
        let config_path = dir.join("config.json");
        let text = ferrograd::io::read_text(&config_path, OP)?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| {
            Error::value(OP, format!("{}: not a BERT config: {e}", config_path.display()))
        })?;
        let weights = dir.join("model.safetensors");
        let c = &config;
        let header = ferrograd::io::read_safetensors_header(&weights)?;
        header.check_sizes(
            &config_path.display().to_string(),
            &[
                ("vocab_size", c.vocab_size),
                ("hidden_size", c.hidden_size),
                ("num_attention_heads", c.num_attention_heads),
                ("intermediate_size", c.intermediate_size),
                ("max_position_embeddings", c.max_position_embeddings),
                ("type_vocab_size", c.type_vocab_size),
            ],
            &[("num_hidden_layers", c.num_hidden_layers)],
        )?;
        if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
            return Err(Error::value(
                OP,
                format!(
                    "{}: layer_norm_eps = {} must be finite and > 0",
                    config_path.display(),
                    c.layer_norm_eps
                ),
            ));
        }
        let source = weights.display().to_string();
        let bert = store.within(header.elements(), &source, || Bert::new(store, &config))?;
        let (tensors, _) = ferrograd::io::load_safetensors(&weights)?;
        let find = |name: &str| {
            tensors
                .iter()
                .find(|(k, _)| k == name || k.strip_prefix("bert.") == Some(name))
                .map(|(_, t)| t)
        };
        let values = store.match_tensors(OP, &weights.display().to_string(), find)?;
        for (p, t) in values {
            p.set(&t)?;
        }
        Ok(bert)
    }

    /// Token-level hidden states (B, T, D) for (B, T) ids, segment ids and mask (1 = token).
    pub fn forward(
        &self,
        ids: &Tensor,
        token_types: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        const OP: &str = "Bert";
        if ids.rank() != 2 || ids.dtype() != DType::I64 {
            return Err(Error::shape(
                OP,
                format!("ids must be (B, T) i64, got {} {}", ids.dtype(), ids.shape()),
            ));
        }
        let (b, t) = (ids.dims()[0], ids.dims()[1]);
        if t > self.config.max_position_embeddings {
            return Err(Error::shape(
                OP,
                format!(
                    "{t} tokens exceed the model's {} positions",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let v = self.config.vocab_size;
        if let Some(bad) = ids.as_slice::<i64>(OP)?.iter().find(|&&i| i < 0 || i as usize >= v) {
            return Err(Error::index(
                OP,
                format!("token id {bad} is outside the vocabulary of {v}"),
            ));
        }
        let embed = |table: &Param, idx: &Tensor| -> Result<Tensor> {
            table.get().index_select(0, &idx.reshape(&[idx.numel()])?)?.reshape(&[
                b,
                t,
                self.config.hidden_size,
            ])
        };
        let positions = Tensor::arange(0.0, t as f64, 1.0, DType::I64)?
            .reshape(&[1, t])?
            .broadcast_to(&[b, t])?;
        let types = match token_types {
            Some(tt) if tt.dims() != [b, t] => {
                return Err(Error::shape(
                    OP,
                    format!("token types must be ({b}, {t}), got {}", tt.shape()),
                ))
            }
            Some(tt) => tt.clone(),
            None => Tensor::zeros(&[b, t], DType::I64)?,
        };
        let x = embed(&self.word_embeddings, ids)?
            .add(&embed(&self.position_embeddings, &positions)?)?
            .add(&embed(&self.token_type_embeddings, &types)?)?;
        let mut h = self.embeddings_norm.forward(&x)?;
        for layer in &self.layers {
            h = layer.forward_masked(&h, mask)?;
        }
        Ok(h)
    }

    /// Sentence embeddings as sentence-transformers computes them for this kind of model: the
    /// mean of the token states over real tokens, scaled to unit length.
    pub fn sentence_embeddings(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let _g = no_grad();
        let h = self.forward(ids, None, Some(mask))?;
        let m = mask.to_dtype(h.dtype())?.unsqueeze(-1)?; // (B, T, 1)
        let mean = h
            .mul(&m)?
            .sum(&[1], false)?
            .div(&m.sum(&[1], false)?.affine(1.0, 0.0)?.add_scalar(1e-9)?)?;
        let norm = mean.mul(&mean)?.sum(&[-1], true)?.sqrt()?.add_scalar(1e-12)?;
        mean.div(&norm)
    }
}

impl Module for Bert {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Bert::forward(self, ids, None, None)
    }
    fn describe(&self) -> String {
        crate::formula(self)
    }
    fn blocks(&self) -> Vec<&'static str> {
        let mut b = vec!["EmbedToken"];
        b.extend(self.layers.iter().flat_map(|l| l.blocks()));
        b
    }
    fn params(&self) -> Vec<Param> {
        let mut p = vec![
            self.word_embeddings.clone(),
            self.position_embeddings.clone(),
            self.token_type_embeddings.clone(),
        ];
        p.extend(self.embeddings_norm.params());
        p.extend(self.layers.iter().flat_map(|l| l.params()));
        p
    }
}
