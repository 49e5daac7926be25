//! Valid files of every kind the targets read, small so that mutations stay fast.

use ferrograd::{DType, Tensor};
use ferrograd_nn::optim::Optimizer;
use ferrograd_nn::{Bert, BertConfig, ParamStore};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The bytes `save` writes to a file.
fn saved(save: impl FnOnce(&Path)) -> Vec<u8> {
    let path = super::scratch("seed");
    save(&path);
    std::fs::read(&path).expect("the seed was written")
}

pub fn safetensors() -> Vec<Vec<u8>> {
    let tensor = |dims: &[usize], dtype| {
        let n = dims.iter().product::<usize>();
        Tensor::from_vec((0..n).map(|i| i as f64 * 0.25).collect::<Vec<_>>(), dims)
            .and_then(|t| t.to_dtype(dtype))
            .expect("a seed tensor")
    };
    let files: [Vec<(String, Tensor)>; 3] = [
        vec![("w".into(), tensor(&[2, 3], DType::F32)), ("b".into(), tensor(&[3], DType::F64))],
        vec![("ids".into(), tensor(&[4], DType::I64)), ("scalar".into(), tensor(&[], DType::F32))],
        vec![("empty".into(), tensor(&[0, 5], DType::F32))],
    ];
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|tensors| {
            saved(|p| ferrograd::io::save_safetensors(p, tensors, &meta).expect("a seed file"))
        })
        .collect();
    seeds.push(half_precision());
    seeds
}

/// A file of one bf16 and one f16 tensor, as Hugging Face checkpoints hold.
fn half_precision() -> Vec<u8> {
    let header = r#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"g":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x00, 0x40]); // 1, -2; 1, 2
    bytes
}

pub fn checkpoint() -> Vec<Vec<u8>> {
    let (store, _, adam) = super::small_model();
    let config = serde_json::json!({"task": "fuzz", "sizes": [3, 4]});
    let with_state = saved(|p| {
        ferrograd_nn::save_checkpoint(p, &store, Some(&adam as &dyn Optimizer), 5, &config)
            .expect("a seed checkpoint")
    });
    vec![with_state]
}

pub fn idx() -> Vec<Vec<u8>> {
    let images =
        [&[0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2][..], &[0, 255, 51, 102, 7, 8, 9, 10]]
            .concat();
    let labels = vec![0u8, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1];
    let gzip = |bytes: &[u8]| {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(bytes).expect("in memory");
        z.finish().expect("in memory")
    };
    vec![gzip(&images), gzip(&labels), images, labels]
}

pub fn tsv() -> Vec<Vec<u8>> {
    vec![
        b"pos\ta fine film\nneg\ta dull one\npos\tgood\n".to_vec(),
        "one plus two\t3\ntwo times café\tquatre\n".as_bytes().to_vec(),
    ]
}

pub fn squad() -> Vec<Vec<u8>> {
    let doc = serde_json::json!({"version": "1.1", "data": [{"title": "Rain", "paragraphs": [{
    "context": "Rain falls because of gravity. Snow is cold.",
    "qas": [
        {"id": "q1", "question": "Why does rain fall?", "answers": [{"text": "gravity", "answer_start": 22}]},
        {"id": "q2", "question": "What is cold?", "answers": [{"text": "Snow", "answer_start": 31}]}
    ]}]}]});
    vec![doc.to_string().into_bytes()]
}

/// The model of the `bert_config` target: the seed is its `config.json`.
pub fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 30,
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
    }
}

pub fn write_tiny_bert_weights(path: &Path) {
    let store = ParamStore::new(1);
    Bert::new(&store, &tiny_bert()).expect("the tiny BERT");
    let tensors: Vec<(String, Tensor)> =
        store.params().iter().map(|p| (p.name().to_string(), p.get())).collect();
    ferrograd::io::save_safetensors(path, &tensors, &BTreeMap::new()).expect("its weights");
}

pub fn bert_config() -> Vec<Vec<u8>> {
    let mut hugging_face = serde_json::to_value(tiny_bert()).expect("a config");
    hugging_face["architectures"] = serde_json::json!(["BertModel"]);
    hugging_face["model_type"] = serde_json::json!("bert");
    vec![
        serde_json::to_vec_pretty(&tiny_bert()).expect("a config"),
        hugging_face.to_string().into_bytes(),
    ]
}

/// The small GPT-2 that scripts/torch_reference_gpt2.py wrote for ferrograd-nn's tests.
pub const GPT2_WEIGHTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../ferrograd-nn/tests/fixtures/gpt2/model.safetensors");

/// Its `config.json` as transformers wrote it, and with only the fields that shape the model.
pub fn gpt2_config() -> Vec<Vec<u8>> {
    let written = include_bytes!("../../ferrograd-nn/tests/fixtures/gpt2/config.json").to_vec();
    let shaping =
        br#"{"vocab_size": 400, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4}"#;
    vec![written, shaping.to_vec()]
}

/// A WordPiece `tokenizer.json` of Hugging Face's BERT layout with 20 pieces.
pub fn tokenizer_json() -> Vec<Vec<u8>> {
    let pieces = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "the", "a", "cafe",
        "na", "##ive", ",", "?", "東", "京", "##l", "##o", "h",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> =
        pieces.iter().enumerate().map(|(i, p)| (p.to_string(), i.into())).collect();
    let special = |id: usize| {
        serde_json::json!({"id": id, "content": pieces[id], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let token =
        |t: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence =
        |s: &str, type_id: u32| serde_json::json!({"Sequence": {"id": s, "type_id": type_id}});
    let doc = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": (0..5).map(special).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0)],
            "pair": [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0), sequence("B", 1), token("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    });
    vec![serde_json::to_vec_pretty(&doc).expect("a tokenizer")]
}
