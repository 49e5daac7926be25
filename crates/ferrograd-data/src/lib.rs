//! Data for ferrograd: built-in data sets that need no download, MNIST from its files,
//! tokenizers (characters, words, WordPiece, byte-level BPE), batching, and corpus BLEU.

pub mod batches;
pub mod bleu;
pub mod corpora;
pub mod glyphs;
pub mod mnist;
pub mod pretrained;
pub mod qa;
pub mod synthetic;
pub mod text;
pub mod tokenizer;
pub mod vocab;
pub mod wordpiece;

pub use batches::Batches;
pub use pretrained::{PretrainedTokenizer, TextStream};
pub use text::{CharTokenizer, LmBatches, WordTokenizer};
pub use tokenizer::{TokenKind, Tokenizer};
pub use vocab::Vocab;
pub use wordpiece::{BertBatch, BertTokenizer};
