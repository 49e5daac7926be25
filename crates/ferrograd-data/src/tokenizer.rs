//! One tokenizer for every task: characters, words, WordPiece (BERT's kind) or byte-level BPE
//! (GPT-2's kind), each built from a corpus, turning text into ids and back, and saved in a
//! checkpoint's config so that a model is always read with the tokenizer it was trained with.
//!
//! ```
//! use ferrograd_data::{TokenKind, Tokenizer};
//! let texts = ["one plus two", "two plus three", "three plus one"];
//! for kind in [TokenKind::Char, TokenKind::Word, TokenKind::WordPiece, TokenKind::Bpe] {
//!     let tok = Tokenizer::build(kind, texts, 300).unwrap();
//!     let ids = tok.encode("two plus one");
//!     assert_eq!(tok.decode(&ids).unwrap(), "two plus one", "{kind:?}");
//!     assert_eq!((tok.pad_id(), tok.bos_id(), tok.eos_id()), (0, 2, 3));
//!     let saved = serde_json::to_string(&tok).unwrap();
//!     assert_eq!(serde_json::from_str::<Tokenizer>(&saved).unwrap(), tok);
//! }
//! ```

use crate::text::{CharTokenizer, WordTokenizer};
use crate::Vocab;
use ferrograd::{Error, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// Which kind of tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Each character (code, spelling).
    Char,
    /// Lowercased words, punctuation apart.
    Word,
    /// Lowercased word pieces (`play`, `##ing`), learned from the corpus as BERT's were.
    WordPiece,
    /// Byte-level BPE, learned from the corpus as GPT-2's was: any text, no unknown tokens.
    Bpe,
}

/// Ids 0–3 of every kind: `<pad>`, `<unk>`, `<bos>`, `<eos>`.
const SPECIALS: [&str; 4] = ["<pad>", "<unk>", "<bos>", "<eos>"];

#[derive(Debug, Clone)]
pub enum Tokenizer {
    Char(CharTokenizer),
    Word(WordTokenizer),
    /// WordPiece or BPE, through the `tokenizers` crate.
    Subword(TokenKind, Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// A tokenizer of `kind` for `texts`: a vocabulary of every character or word they hold,
    /// or (for WordPiece and BPE) one of about `vocab_size` pieces learned from them.
    pub fn build<'a>(
        kind: TokenKind,
        texts: impl IntoIterator<Item = &'a str>,
        vocab_size: usize,
    ) -> Result<Tokenizer> {
        let texts: Vec<&str> = texts.into_iter().collect();
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
            Error::value("Tokenizer::build", format!("cannot learn a {kind:?} vocabulary: {e}"))
        };
        let specials: Vec<AddedToken> =
            SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
        let split = |t: &&str| -> Vec<String> {
            match kind {
                TokenKind::Char => t.chars().map(String::from).collect(),
                _ => WordTokenizer::split(t),
            }
        };
        Ok(match kind {
            TokenKind::Char | TokenKind::Word => {
                let vocab = Vocab::build_with_bos_eos(texts.iter().flat_map(split), 1, None)?;
                Tokenizer::from_vocab(kind, vocab)?
            }
            TokenKind::WordPiece => {
                let model = WordPiece::builder().unk_token("<unk>".into()).build().map_err(fail)?;
                let mut inner = tokenizers::Tokenizer::new(model);
                inner.with_normalizer(Some(BertNormalizer::default())).map_err(fail)?;
                inner.with_pre_tokenizer(Some(BertPreTokenizer));
                inner.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
                let trainer = WordPieceTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .special_tokens(specials)
                    .show_progress(false)
                    .build();
                let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
                inner.train(&mut trainer, texts.iter()).map_err(fail)?;
                Tokenizer::Subword(kind, Box::new(inner))
            }
            TokenKind::Bpe => {
                let mut inner = tokenizers::Tokenizer::new(BPE::default());
                inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
                inner.with_decoder(Some(ByteLevel::default()));
                let trainer = BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build();
                let mut trainer = TrainerWrapper::BpeTrainer(trainer);
                inner.train(&mut trainer, texts.iter()).map_err(fail)?;
                Tokenizer::Subword(kind, Box::new(inner))
            }
        })
    }

    /// A character or word tokenizer over `vocab`, built with `<bos>` and `<eos>`
    /// ([`Vocab::build_with_bos_eos`]).
    pub fn from_vocab(kind: TokenKind, vocab: Vocab) -> Result<Tokenizer> {
        if vocab.bos_id() != Some(2) || vocab.eos_id() != Some(3) {
            return Err(Error::value(
                "Tokenizer",
                "the vocabulary's ids 2 and 3 must be <bos> and <eos>",
            ));
        }
        match kind {
            TokenKind::Char => Ok(Tokenizer::Char(CharTokenizer::new(vocab))),
            TokenKind::Word => Ok(Tokenizer::Word(WordTokenizer::new(vocab))),
            _ => {
                Err(Error::value("Tokenizer", format!("a {kind:?} tokenizer is not a vocabulary")))
            }
        }
    }

    pub fn kind(&self) -> TokenKind {
        match self {
            Tokenizer::Char(_) => TokenKind::Char,
            Tokenizer::Word(_) => TokenKind::Word,
            Tokenizer::Subword(kind, _) => *kind,
        }
    }

    /// The number of ids: the embedding table's rows.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab().len(),
            Tokenizer::Word(t) => t.vocab().len(),
            Tokenizer::Subword(_, t) => t.get_vocab_size(true),
        }
    }

    pub fn pad_id(&self) -> i64 {
        0
    }
    pub fn unk_id(&self) -> i64 {
        1
    }
    pub fn bos_id(&self) -> i64 {
        2
    }
    pub fn eos_id(&self) -> i64 {
        3
    }

    pub fn encode(&self, text: &str) -> Vec<i64> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Word(t) => t.encode(text),
            Tokenizer::Subword(_, t) => t
                .encode(text, false)
                .map(|e| e.get_ids().iter().map(|&i| i as i64).collect())
                .unwrap_or_default(),
        }
    }

    /// The text of `ids`, special tokens left out; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        match self {
            Tokenizer::Char(t) => t.decode(ids),
            Tokenizer::Word(t) => t.decode(ids),
            Tokenizer::Subword(_, t) => {
                let n = t.get_vocab_size(true);
                if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= n) {
                    return Err(Error::index(
                        "Tokenizer::decode",
                        format!("id {bad} is not in 0..{n}"),
                    ));
                }
                let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
                t.decode(&ids, true).map_err(|e| Error::value("Tokenizer::decode", e.to_string()))
            }
        }
    }

    /// The pieces of `text` the vocabulary does not hold (they read as `<unk>`).
    pub fn unknown(&self, text: &str) -> Vec<String> {
        let pieces: Vec<String> = match self {
            Tokenizer::Char(_) => text.chars().map(String::from).collect(),
            Tokenizer::Word(_) => WordTokenizer::split(text),
            Tokenizer::Subword(_, t) => {
                let Ok(e) = t.encode(text, false) else { return vec![] };
                let unk = self.unk_id() as u32;
                let spans = e.get_offsets().iter().zip(e.get_ids()).filter(|(_, &id)| id == unk);
                return spans
                    .map(|(&(a, b), _)| text.get(a..b).unwrap_or("").to_string())
                    .collect();
            }
        };
        let vocab = match self {
            Tokenizer::Char(t) => t.vocab(),
            Tokenizer::Word(t) => t.vocab(),
            Tokenizer::Subword(..) => unreachable!("returned above"),
        };
        pieces.into_iter().filter(|p| !vocab.contains(p)).collect()
    }
}

impl PartialEq for Tokenizer {
    fn eq(&self, other: &Tokenizer) -> bool {
        match (self, other) {
            (Tokenizer::Char(a), Tokenizer::Char(b)) => a == b,
            (Tokenizer::Word(a), Tokenizer::Word(b)) => a == b,
            (Tokenizer::Subword(k, a), Tokenizer::Subword(l, b)) => {
                k == l && a.to_string(false).ok() == b.to_string(false).ok()
            }
            _ => false,
        }
    }
}

/// How a tokenizer is saved: `{"tokens": "word", "vocab": …}` for characters and words,
/// `{"tokens": "bpe", "tokenizer": "<tokenizer.json>"}` for learned pieces.
#[derive(serde::Serialize, serde::Deserialize)]
struct TokenizerFile {
    tokens: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vocab: Option<Vocab>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokenizer: Option<String>,
}

impl serde::Serialize for Tokenizer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let file = match self {
            Tokenizer::Char(t) => TokenizerFile {
                tokens: TokenKind::Char,
                vocab: Some(t.vocab().clone()),
                tokenizer: None,
            },
            Tokenizer::Word(t) => TokenizerFile {
                tokens: TokenKind::Word,
                vocab: Some(t.vocab().clone()),
                tokenizer: None,
            },
            Tokenizer::Subword(kind, t) => {
                let json = t.to_string(false).map_err(serde::ser::Error::custom)?;
                TokenizerFile { tokens: *kind, vocab: None, tokenizer: Some(json) }
            }
        };
        file.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Tokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Tokenizer, D::Error> {
        use serde::de::Error as _;
        let file = TokenizerFile::deserialize(d)?;
        match (file.tokens, file.vocab, file.tokenizer) {
            (kind @ (TokenKind::Char | TokenKind::Word), Some(vocab), _) => {
                Tokenizer::from_vocab(kind, vocab).map_err(D::Error::custom)
            }
            (kind @ (TokenKind::WordPiece | TokenKind::Bpe), _, Some(json)) => {
                let inner: tokenizers::Tokenizer = json.parse().map_err(D::Error::custom)?;
                let specials_in_place = SPECIALS
                    .iter()
                    .enumerate()
                    .all(|(i, s)| inner.token_to_id(s) == Some(i as u32));
                if !specials_in_place {
                    return Err(D::Error::custom(
                        "the tokenizer's ids 0–3 are not <pad> <unk> <bos> <eos>",
                    ));
                }
                Ok(Tokenizer::Subword(kind, Box::new(inner)))
            }
            (kind, _, _) => {
                Err(D::Error::custom(format!("a {kind:?} tokenizer without its vocabulary")))
            }
        }
    }
}
