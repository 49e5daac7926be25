//! Corpus BLEU against sacreBLEU's own numbers (`scripts/torch_reference_seq2seq.py` wrote them):
//! the 13a tokenization of every sentence, the n-gram counts, the lengths and the score.

use ferrograd_data::bleu::{corpus_bleu, tokenize_13a};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let path = format!("{}/tests/fixtures/bleu.json", env!("CARGO_MANIFEST_DIR"));
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_object().unwrap();
    assert!(cases.len() >= 4);
    for (name, c) in cases {
        let (hyps, refs) = (strings(&c["hypotheses"]), strings(&c["references"]));
        for key in ["hypotheses", "references"] {
            if let Some(tokenized) = c.get(format!("tokenized_{key}")) {
                for (text, want) in strings(&c[key]).iter().zip(strings(tokenized)) {
                    assert_eq!(tokenize_13a(text), want, "{name}: 13a of {text:?}");
                }
            }
        }
        let b = corpus_bleu(&hyps, &refs).unwrap();
        let ints = |v: &Value| -> Vec<usize> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
        };
        assert_eq!(b.counts.to_vec(), ints(&c["counts"]), "{name}: counts");
        assert_eq!(b.totals.to_vec(), ints(&c["totals"]), "{name}: totals");
        assert_eq!(b.hypothesis_len, c["sys_len"].as_u64().unwrap() as usize, "{name}");
        assert_eq!(b.reference_len, c["ref_len"].as_u64().unwrap() as usize, "{name}");
        assert!((b.brevity_penalty - c["bp"].as_f64().unwrap()).abs() < 1e-12, "{name}: bp");
        let want = c["score"].as_f64().unwrap();
        assert!((b.score - want).abs() < 1e-9, "{name}: BLEU {} vs sacreBLEU {want}", b.score);
    }
}

#[test]
fn bleu_of_nothing_is_zero_and_mismatched_corpora_are_refused() {
    assert_eq!(corpus_bleu(&[""], &["a reference"]).unwrap().score, 0.0);
    let e = corpus_bleu(&["a", "b"], &["a"]).unwrap_err().to_string();
    assert!(e.contains("2 hypotheses but 1 references"), "{e}");
}
