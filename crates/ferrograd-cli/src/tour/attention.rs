//! Chapter 4: attention — a Transformer language model and one head's attention drawn.

use super::train_lm;
use crate::CliResult;
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::trainer::plot::heatmap;
use ferrograd_nn::{models, Module, ParamStore};
use std::path::Path;

/// Chapter 4: a small pre-norm Transformer language model on the built-in text, generating with
/// its KV cache, and one head's attention weights drawn as a picture.
pub fn chapter(out: &Path) -> CliResult<()> {
    use ferrograd_data::corpora::TINY_CORPUS;
    use ferrograd_data::{CharTokenizer, LmBatches};
    use ferrograd_nn::Sampling;

    let chars = CharTokenizer::from_text(TINY_CORPUS);
    let batches = LmBatches::new(chars.encode(TINY_CORPUS), 16, 64)?;
    let store = ParamStore::new(9);
    let lm = models::transformer_lm(&store, chars.vocab().len(), 64, 4, 2, 64)?;
    train_lm(&store, &lm, &batches, Adam::new(store.params(), AdamConfig::adamw(3e-3))?, 10, 300)?;
    let mut text = String::new();
    let sampling = Sampling { temperature: 0.6, top_k: 0, top_p: 1.0 };
    lm.generate(&chars.encode("The "), 56, sampling, &[], &mut Rng::seed(3), |t| {
        text.push_str(&chars.decode(&[t]).unwrap_or_default());
        Ok(())
    })?;
    println!("     generates (keys and values cached: one position per new token, up to its 64):");
    println!("       \"The {}\"", text.replace('\n', " "));

    // Where each position looks: head 0 of the first block, for one sentence.
    let sentence = "The owl goes back to sleep.";
    let ids = Tensor::from_vec(chars.encode(sentence), &[1, sentence.chars().count()])?;
    let _g = no_grad();
    let weights = lm
        .body
        .attention_weights(&lm.embed.forward(&ids)?, None)
        .ok_or("the model has no attention")??;
    let t = ids.dims()[1];
    let head = weights.narrow(1, 0, 1)?.reshape(&[t, t])?.to_vec::<f32>()?;
    let tokens: Vec<String> = sentence.chars().map(String::from).collect();
    let title = format!("head 0 of block 1 over {sentence:?}");
    heatmap(&out.join("attention.svg"), &title, ("query", &tokens), ("key", &tokens), &head)?;
    println!(
        "   head 0's attention over {sentence:?}, each row a query and each column a key, named"
    );
    println!("   by their characters (causal: nothing above the diagonal): attention.svg");
    Ok(())
}
