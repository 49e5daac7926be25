//! Data for ferrograd: built-in data sets that need no download, MNIST from its files, batching.

pub mod batches;
pub mod glyphs;
pub mod mnist;
pub mod synthetic;

pub use batches::Batches;
