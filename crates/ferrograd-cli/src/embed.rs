//! `ferrograd embed`: sentence embeddings from a sentence-transformers BERT directory.

use crate::CliResult;
use clap::Args;
use ferrograd::{no_grad, Tensor};
use ferrograd_data::BertTokenizer;
use ferrograd_nn::{Bert, ParamStore};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EmbedArgs {
    /// A sentence-transformers model directory (config.json, model.safetensors,
    /// tokenizer.json, modules.json), e.g. all-MiniLM-L6-v2.
    #[arg(long)]
    model: PathBuf,
    /// Print the vectors as a JSON array of arrays, in input order.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dtype: crate::DtypeArg,
    /// The sentences.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// How the model's modules.json pools token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

/// A loaded sentence-embedding model.
pub struct SentenceModel {
    pub bert: Bert,
    pub tokenizer: BertTokenizer,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_len: usize,
}

impl SentenceModel {
    pub fn load(dir: &Path, dtype: crate::DtypeArg) -> CliResult<SentenceModel> {
        let store = ParamStore::new(0);
        let bert = Bert::from_pretrained(dir, &store)?;
        dtype.apply(&store)?;
        let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"))?;
        // modules.json lists the pipeline; its Pooling module's config says how to pool.
        let modules: serde_json::Value =
            read_json(&dir.join("modules.json")).unwrap_or(serde_json::json!([]));
        let kinds: Vec<String> = modules
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["type"].as_str().map(String::from))
            .collect();
        let pooling_dir = modules
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["type"].as_str().is_some_and(|t| t.ends_with("Pooling")))
            .and_then(|m| m["path"].as_str())
            .map(|p| dir.join(p).join("config.json"));
        let pooling = match pooling_dir.map(|p| read_json(&p)).transpose()? {
            Some(c) if c["pooling_mode_cls_token"] == true => Pooling::Cls,
            Some(c) if c["pooling_mode_max_tokens"] == true => Pooling::Max,
            _ => Pooling::Mean,
        };
        let max_len = read_json(&dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|c| c["max_seq_length"].as_u64())
            .unwrap_or(512) as usize;
        Ok(SentenceModel {
            bert,
            tokenizer,
            pooling,
            normalize: kinds.iter().any(|k| k.ends_with("Normalize")),
            max_len,
        })
    }

    /// (N, D) embeddings of `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> CliResult<Tensor> {
        let _g = no_grad();
        let batch = self
            .tokenizer
            .encode_batch(texts, self.max_len.min(self.bert.config.max_position_embeddings))?;
        let h = self.bert.forward(&batch.ids, Some(&batch.token_types), Some(&batch.mask))?;
        let m = batch.mask.to_dtype(h.dtype())?.unsqueeze(-1)?; // (B, T, 1)
        let pooled = match self.pooling {
            Pooling::Mean => {
                h.mul(&m)?.sum(&[1], false)?.div(&m.sum(&[1], false)?.add_scalar(1e-9)?)?
            }
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => {
                h.masked_fill(&m.eq(&Tensor::zeros(&[], h.dtype())?)?, -1e9)?.max(&[1], false)?
            }
        };
        if !self.normalize {
            return Ok(pooled);
        }
        let norm = pooled.mul(&pooled)?.sum(&[-1], true)?.sqrt()?.add_scalar(1e-12)?;
        Ok(pooled.div(&norm)?)
    }
}

fn read_json(path: &Path) -> CliResult<serde_json::Value> {
    let text = ferrograd::io::read_text(path, "embed")?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?)
}

pub fn run(a: &EmbedArgs) -> CliResult<()> {
    let model = SentenceModel::load(&a.model, a.dtype)?;
    let texts: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let emb = model.embed(&texts)?;
    let d = emb.dims()[1];
    let v = emb.to_vec::<f32>()?;
    if a.json {
        let rows: Vec<&[f32]> = v.chunks(d).collect();
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{} sentences, {d}-dimensional embeddings ({:?} pooling{}); cosine similarities:",
        texts.len(),
        model.pooling,
        if model.normalize { ", normalized" } else { "" }
    );
    let sim = emb.matmul(&emb.transpose(0, 1)?)?.to_vec::<f32>()?;
    let n = texts.len();
    let label = |i: usize| {
        let t: String = texts[i].chars().take(28).collect();
        format!("{}. {t}", i + 1)
    };
    print!("{:32}", "");
    for j in 0..n {
        print!("{:>7}", j + 1);
    }
    println!();
    for i in 0..n {
        print!("{:32}", label(i));
        for j in 0..n {
            let norms =
                if model.normalize { 1.0 } else { (sim[i * n + i] * sim[j * n + j]).sqrt() };
            print!("{:>7.3}", sim[i * n + j] / norms);
        }
        println!();
    }
    Ok(())
}
