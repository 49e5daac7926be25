//! Inputs the fuzz runs found, each once a panic: now refused with a message.

use ferrograd_data::BertTokenizer;

fn tokenizer_seed() -> serde_json::Value {
    let seed = (ferrograd_fuzz::target("tokenizer_json").unwrap().seeds)().remove(0);
    serde_json::from_slice(&seed).unwrap()
}

/// `from_file` on `text` (written to a file named after `test`): its error message.
fn refused(test: &str, text: &str) -> String {
    let name = format!("ferrograd-regression-{test}-{}.json", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, text).unwrap();
    let result = BertTokenizer::from_file(&path);
    let _ = std::fs::remove_file(&path);
    result.err().expect("refused").to_string()
}

#[test]
fn a_tokenizer_json_cut_inside_its_decoder_is_refused() {
    let text = serde_json::to_string(&tokenizer_seed()).unwrap();
    let cut = &text[..text.find("\"decoder\"").unwrap() + 20];
    let err = refused("cut", cut);
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn a_template_placing_an_undefined_special_token_is_refused() {
    let mut json = tokenizer_seed();
    json["post_processor"]["special_tokens"].as_object_mut().unwrap().remove("[SEP]");
    let err = refused("undefined", &json.to_string());
    assert!(err.contains("\"[SEP]\"") && err.contains("special_tokens"), "{err}");
}

#[test]
fn a_template_without_its_type_is_checked_all_the_same() {
    let mut json = tokenizer_seed();
    let processor = json["post_processor"].as_object_mut().unwrap();
    processor.remove("type");
    processor["single"][2]["SpecialToken"]["id"] = "[S#P]".into();
    let err = refused("untyped", &json.to_string());
    assert!(err.contains("\"[S#P]\""), "{err}");
}

#[test]
fn a_template_for_one_text_that_places_a_second_is_refused() {
    let mut json = tokenizer_seed();
    json["post_processor"]["single"][1]["Sequence"]["id"] = "B".into();
    let err = refused("second", &json.to_string());
    assert!(err.contains("(B)"), "{err}");
}
