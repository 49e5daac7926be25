//! Data for ferrograd: built-in data sets that need no download, MNIST from its files, text and
//! BERT WordPiece tokenization, batching, and corpus BLEU.

pub mod batches;
pub mod bleu;
pub mod corpora;
pub mod glyphs;
pub mod mnist;
pub mod qa;
pub mod synthetic;
pub mod text;
pub mod vocab;
pub mod wordpiece;

pub use batches::Batches;
pub use text::{CharTokenizer, LmBatches, WordTokenizer};
pub use vocab::Vocab;
pub use wordpiece::{BertBatch, BertTokenizer};
