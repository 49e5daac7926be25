//! The lecture's transformer blocks: Attention, AddNorm (with LayerNorm), TransformerBlock,
//! and BERT built from them.

mod attention;
mod bert;
mod block;
mod layer_norm;
mod positions;
mod qa;

pub use attention::Attention;
pub use bert::{Bert, BertConfig};
pub use block::{AddNorm, TransformerBlock};
pub use layer_norm::LayerNorm;
pub use positions::Positions;
pub use qa::{QuestionAnswering, Span};
