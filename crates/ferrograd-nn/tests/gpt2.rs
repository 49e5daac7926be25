//! GPT-2 from a Hugging Face directory against transformers' GPT2LMHeadModel: a small random
//! model written by scripts/torch_reference_gpt2.py.

mod common;

use common::{assert_close, fixture, tensor};
use ferrograd::{Rng, Tensor};
use ferrograd_nn::{formula, gpt2, Module, ParamStore, Sampling};
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2")
}

fn reference() -> Value {
    fixture("gpt2/reference.json")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// |a − b| ≤ 1e-4 · (|b| + the largest |b|): relative to the scores' scale.
fn close_relative(a: &Tensor, b: &Tensor, what: &str) {
    let scale = b.to_vec_f64().unwrap().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert_close(a, b, 1e-4 * scale, 1e-4, what);
}

#[test]
fn gpt2_matches_transformers_logits_and_greedy_continuation() {
    let store = ParamStore::new(0);
    let (lm, config) = gpt2::from_pretrained(&fixture_dir(), &store).unwrap();
    assert_eq!(formula(&lm), "GenerateToken(TransformerBlock^2(EmbedToken(x)))");
    let reference = reference();
    let eos = reference["eos"].as_i64().unwrap();
    assert_eq!(config.eos_token_id, Some(eos));
    for case in reference["cases"].as_array().unwrap() {
        let prompt = ids(&case["ids"]);
        let what = case["prompt"].as_str().unwrap();
        let x = Tensor::from_vec(prompt.clone(), &[1, prompt.len()]).unwrap();
        let scores = lm.scores(&x, None).unwrap();
        let v = scores.dims()[2];
        let scores = scores.reshape(&[prompt.len(), v]).unwrap();
        close_relative(&scores, &tensor(&case["logits"]), what);

        let greedy =
            lm.generate(&prompt, 20, Sampling::greedy(), &[eos], &mut Rng::seed(0), |_| Ok(()));
        assert_eq!(greedy.unwrap(), ids(&case["greedy"]), "{what}");
    }
    // Loaded for evaluation, as transformers loads it; in training its config's dropout acts.
    assert!(!store.is_training());
    assert_eq!((config.resid_pdrop, config.attn_pdrop, config.embd_pdrop), (0.1, 0.1, 0.1));
    let x = Tensor::from_vec(ids(&reference["cases"][0]["ids"]), &[1, 6]).unwrap();
    let evaluated = lm.scores(&x, None).unwrap().to_vec_f64().unwrap();
    store.train();
    let (a, b) = (lm.scores(&x, None).unwrap(), lm.scores(&x, None).unwrap());
    assert_ne!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_ne!(a.to_vec_f64().unwrap(), evaluated);
    store.eval();
    assert_eq!(lm.scores(&x, None).unwrap().to_vec_f64().unwrap(), evaluated);
}

#[test]
fn gpt2_cached_scores_equal_the_full_pass() {
    let store = ParamStore::new(0);
    let (lm, _) = gpt2::from_pretrained(&fixture_dir(), &store).unwrap();
    let reference = reference();
    let case = &reference["cases"][1];
    let mut tokens = ids(&case["ids"]);
    tokens.extend(ids(&case["greedy"]));
    let n = tokens.len();
    let x = Tensor::from_vec(tokens.clone(), &[1, n]).unwrap();
    let full = lm.scores(&x, None).unwrap();
    // The prompt at once, then one token at a time through the key/value cache.
    let mut state = Vec::new();
    let p = ids(&case["ids"]).len();
    let mut parts = vec![lm
        .body
        .forward_incremental(&lm.embed.forward(&x.narrow(1, 0, p).unwrap()).unwrap(), &mut state)
        .unwrap()];
    for t in p..n {
        let one = x.narrow(1, t, 1).unwrap();
        parts.push(
            lm.body.forward_incremental(&lm.embed.forward(&one).unwrap(), &mut state).unwrap(),
        );
    }
    let cached = lm.head.forward(&Tensor::concat(&parts, 1).unwrap()).unwrap();
    close_relative(&cached, &full, "cached vs full");
}

#[test]
fn a_gpt2_config_claiming_absurd_sizes_is_refused_by_field_before_allocating() {
    let dir = std::env::temp_dir().join(format!("ferrograd-gpt2-sizes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_dir().join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("config.json")).unwrap())
            .unwrap();
    let with = |field: &str, value: Value| {
        let mut c = config.clone();
        c[field] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let start = std::time::Instant::now();
        let r = gpt2::from_pretrained(&dir, &ParamStore::new(0)).map(|_| ());
        assert!(start.elapsed().as_secs_f64() < 1.0, "{field}");
        r.err().map(|e| e.to_string())
    };
    assert_eq!(with("n_inner", Value::Null), None, "the true config loads");
    for field in ["n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "n_inner"] {
        let e = with(field, 1_000_000_000u64.into()).expect(field);
        assert!(e.contains("config.json") && e.contains(&format!("{field} = 1000000000")), "{e}");
    }
    let e = with("n_layer", 0.into()).unwrap();
    assert!(e.contains("n_layer = 0"), "{e}");
    // Within every bound, but more layers than the file holds: refused as the model is built.
    let e = with("n_layer", 3.into()).unwrap();
    assert!(e.contains("model.safetensors") && e.contains("does not describe"), "{e}");
    let e = with("n_head", 3.into()).unwrap();
    assert!(e.contains("n_head = 3 does not divide n_embd = 32"), "{e}");
    let e = with("activation_function", "swish".into()).unwrap();
    assert!(e.contains("\"swish\" is not supported"), "{e}");
    let e = with("n_inner", 64.into()).unwrap();
    assert!(e.contains("blocks.0.ff_in.weight") && e.contains("[128, 32]"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gpt2_continues_prompts_of_different_lengths_as_one_padded_batch() {
    let store = ParamStore::new(0);
    let (lm, _) = gpt2::from_pretrained(&fixture_dir(), &store).unwrap();
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let prompts: Vec<Vec<i64>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    assert!(prompts.iter().map(Vec::len).min() < prompts.iter().map(Vec::len).max());
    let eos = reference["eos"].as_i64().unwrap();
    let batch =
        lm.generate_batch(&prompts, 20, Sampling::greedy(), &[eos], &mut Rng::seed(0)).unwrap();
    for (got, case) in batch.iter().zip(cases) {
        assert_eq!(got, &ids(&case["greedy"]), "{}", case["prompt"]);
    }
    let e = lm.generate_batch(&prompts, 60, Sampling::greedy(), &[], &mut Rng::seed(0));
    assert!(e.unwrap_err().to_string().contains("context of 64 positions"));
}
