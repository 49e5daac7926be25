//! A Hugging Face `tokenizer.json` of any kind (GPT-2's byte-level BPE, …), read with the
//! checks the `tokenizers` crate leaves out: text to ids and back, and a stream of generated
//! ids to text.

use ferrograd::{Error, Result};
use std::path::Path;

/// A tokenizer as its `tokenizer.json` describes it, giving the ids Hugging Face's fast
/// tokenizer gives (special tokens added as the file's post-processor says).
///
/// ```
/// use ferrograd_data::PretrainedTokenizer;
/// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ferrograd-nn/tests/fixtures/gpt2");
/// let tok = PretrainedTokenizer::from_file(&std::path::Path::new(dir).join("tokenizer.json")).unwrap();
/// let ids = tok.encode("ROMEO: naïve 東京").unwrap();
/// assert_eq!(tok.decode(&ids).unwrap(), "ROMEO: naïve 東京");
/// assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
/// ```
#[derive(Clone)]
pub struct PretrainedTokenizer {
    inner: tokenizers::Tokenizer,
}

impl PretrainedTokenizer {
    /// Reads a `tokenizer.json`; its padding and truncation settings are ignored.
    pub fn from_file(path: &Path) -> Result<PretrainedTokenizer> {
        const OP: &str = "PretrainedTokenizer::from_file";
        PretrainedTokenizer::new(read_tokenizer_json(path, OP)?, &path.display().to_string(), OP)
    }

    /// A `tokenizer.json`'s text (as a checkpoint keeps it), read from `source`.
    pub fn from_json(text: &str, source: &str) -> Result<PretrainedTokenizer> {
        const OP: &str = "PretrainedTokenizer::from_json";
        PretrainedTokenizer::new(parse_tokenizer_json(text, source, OP)?, source, OP)
    }

    fn new(
        mut inner: tokenizers::Tokenizer,
        source: &str,
        op: &str,
    ) -> Result<PretrainedTokenizer> {
        inner
            .with_padding(None)
            .with_truncation(None)
            .map_err(|e| Error::io(op, format!("{source}: {e}")))?;
        Ok(PretrainedTokenizer { inner })
    }

    /// A byte-level BPE (GPT-2's kind: any text encodes, nothing is unknown) of at most
    /// `vocab_size` ids learned from `text`'s lines, with `<|endoftext|>` as id 0. The same text
    /// gives the same tokenizer.
    pub fn train_bpe(text: &str, vocab_size: usize) -> Result<PretrainedTokenizer> {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        const OP: &str = "PretrainedTokenizer::train_bpe";
        // 256 bytes and the special token come first; merges take the rest.
        const BYTES: usize = 257;
        if !(BYTES..=1 << 20).contains(&vocab_size) {
            return Err(Error::value(
                OP,
                format!("a byte-level BPE needs {BYTES} to 1048576 ids, got {vocab_size}"),
            ));
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![tokenizers::AddedToken::from("<|endoftext|>", true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(ByteLevel::default().trim_offsets(false)))
            .with_decoder(Some(ByteLevel::default()));
        contained(OP, || {
            inner
                .train(&mut trainer, text.split_inclusive('\n'))
                .map_err(|e| Error::value(OP, e.to_string()))?;
            Ok(())
        })?;
        Ok(PretrainedTokenizer { inner })
    }

    /// Its `tokenizer.json` text, which Hugging Face's `tokenizers` and `transformers` read.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| Error::value("PretrainedTokenizer::to_json", e.to_string()))
    }

    /// The number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token (`<|endoftext|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        const OP: &str = "PretrainedTokenizer::encode";
        let encoding = contained(OP, || {
            self.inner.encode(text, true).map_err(|e| Error::value(OP, e.to_string()))
        })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The text of `ids`, special tokens left out. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        const OP: &str = "PretrainedTokenizer::decode";
        let n = self.vocab_size();
        let ids = ids
            .iter()
            .map(|&id| match u32::try_from(id) {
                Ok(id) if (id as usize) < n => Ok(id),
                _ => Err(Error::index(OP, format!("id {id} is outside the vocabulary 0..{n}"))),
            })
            .collect::<Result<Vec<u32>>>()?;
        contained(OP, || self.inner.decode(&ids, true).map_err(|e| Error::value(OP, e.to_string())))
    }
}

/// Generated ids as text, piece by piece: a byte-level token can end inside a character, so
/// text is given out only up to where it decodes whole.
pub struct TextStream<'t> {
    tokenizer: &'t PretrainedTokenizer,
    ids: Vec<i64>,
    shown: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t PretrainedTokenizer) -> TextStream<'t> {
        TextStream { tokenizer, ids: Vec::new(), shown: 0 }
    }

    /// Adds `id`; the text it completes (often empty inside a character).
    pub fn push(&mut self, id: i64) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.shown {
            return Ok(String::new());
        }
        let new = text.get(self.shown..).unwrap_or_default().to_string();
        self.shown = text.len();
        Ok(new)
    }

    /// What is left once the last id is in: the text held back, even if it ends inside a
    /// character (shown as U+FFFD, as decoding all the ids would).
    pub fn finish(self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids)?;
        Ok(text.get(self.shown..).unwrap_or_default().to_string())
    }
}

/// A `tokenizer.json` as the tokenizers crate reads it, after the checks of what it would
/// panic on (a syntax error inside a decoder, templates it does not check).
pub(crate) fn read_tokenizer_json(path: &Path, op: &str) -> Result<tokenizers::Tokenizer> {
    let text = ferrograd::io::read_text(path, op)?;
    parse_tokenizer_json(&text, &path.display().to_string(), op)
}

/// [`read_tokenizer_json`] of text already read from `source`.
fn parse_tokenizer_json(text: &str, source: &str, op: &str) -> Result<tokenizers::Tokenizer> {
    let fail = |why: String| Error::io(op, format!("{source}: {why}"));
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| fail(format!("not a tokenizer.json (not JSON: {e})")))?;
    check_post_processor(&json["post_processor"]).map_err(fail)?;
    contained(op, || {
        serde_json::from_value(json).map_err(|e| fail(format!("not a tokenizer.json ({e})")))
    })
}

/// Every special token a template places (in `single` or `pair`, also inside a `Sequence` of
/// processors) must be one of its `special_tokens`, with as many ids as tokens, and the
/// template of a single text cannot place a second. Checked whatever the `type` says: the
/// crate also reads a processor without one by its fields.
fn check_post_processor(processor: &serde_json::Value) -> std::result::Result<(), String> {
    if let Some(inner) = processor["processors"].as_array() {
        inner.iter().try_for_each(check_post_processor)?;
    }
    let single = processor["single"].as_array().into_iter().flatten();
    if single.filter_map(|piece| piece.get("Sequence")).any(|s| s["id"] != "A") {
        return Err("post_processor's template for one text places a second (B)".into());
    }
    let defined = &processor["special_tokens"];
    let placed = ["single", "pair"].into_iter().flat_map(|t| {
        processor[t].as_array().into_iter().flatten().filter_map(|piece| {
            piece.get("SpecialToken").map(|s| s["id"].as_str().unwrap_or_default())
        })
    });
    for token in placed {
        let entry = &defined[token];
        let (ids, tokens) = (entry["ids"].as_array(), entry["tokens"].as_array());
        if ids.zip(tokens).is_none_or(|(i, t)| i.len() != t.len()) {
            return Err(format!(
                "post_processor places the special token {token:?}, but its special_tokens do \
                 not define it with as many ids as tokens"
            ));
        }
    }
    Ok(())
}

/// Runs a call into the tokenizers crate, which panics on some files it reads without
/// complaint (those known are checked in `from_file`): a panic becomes an error naming `op`.
pub(crate) fn contained<T>(op: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(Error::value(op, "the tokenizers crate failed on this tokenizer.json: it is malformed"))
    })
}
