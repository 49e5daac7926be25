//! A byte-level BPE trained on a corpus: any text round-trips, the vocabulary is the size asked
//! for, training is deterministic, and its tokenizer.json reads back to the same ids.

use ferrograd_data::corpora::TINY_CORPUS;
use ferrograd_data::PretrainedTokenizer;

#[test]
fn a_bpe_trained_on_a_corpus_round_trips_any_text_and_compresses_its_own() {
    let tok = PretrainedTokenizer::train_bpe(TINY_CORPUS, 300).unwrap();
    assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 257, "{}", tok.vocab_size());
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    for text in [TINY_CORPUS, "naïve 東京 🙂\n\ttabs", " leading space", "x"] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    let ids = tok.encode(TINY_CORPUS).unwrap();
    assert!(
        ids.len() * 3 < TINY_CORPUS.len() * 2,
        "{} ids for {} bytes",
        ids.len(),
        TINY_CORPUS.len()
    );

    let json = tok.to_json().unwrap();
    let again = PretrainedTokenizer::train_bpe(TINY_CORPUS, 300).unwrap();
    assert_eq!(again.to_json().unwrap(), json, "the same text gives the same tokenizer");
    let read = PretrainedTokenizer::from_json(&json, "trained").unwrap();
    assert_eq!(read.encode(TINY_CORPUS).unwrap(), ids);

    for bad in [0, 256, usize::MAX] {
        let e = PretrainedTokenizer::train_bpe(TINY_CORPUS, bad).err().unwrap();
        assert!(e.to_string().contains(&format!("got {bad}")), "{e}");
    }
}
