//! Inputs the fuzz runs found, each once a panic: now refused with a message.

use ferrograd_data::BertTokenizer;

fn tokenizer_seed() -> serde_json::Value {
    let seed = (ferrograd_fuzz::target("tokenizer_json").unwrap().seeds)().remove(0);
    serde_json::from_slice(&seed).unwrap()
}

/// `from_file` on `text`: its error message.
fn refused(text: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("ferrograd-regression-{}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let result = BertTokenizer::from_file(&path);
    let _ = std::fs::remove_file(&path);
    result.err().expect("refused").to_string()
}

#[test]
fn a_tokenizer_json_cut_inside_its_decoder_is_refused() {
    let text = serde_json::to_string(&tokenizer_seed()).unwrap();
    let cut = &text[..text.find("\"decoder\"").unwrap() + 20];
    assert!(refused(cut).contains("not JSON"), "{}", refused(cut));
}

#[test]
fn a_template_placing_an_undefined_special_token_is_refused() {
    let mut json = tokenizer_seed();
    json["post_processor"]["special_tokens"].as_object_mut().unwrap().remove("[SEP]");
    let err = refused(&json.to_string());
    assert!(err.contains("\"[SEP]\"") && err.contains("special_tokens"), "{err}");
}
