//! The lecture's transformer blocks: Attention, AddNorm (with LayerNorm), TransformerBlock,
//! and BERT and GPT-2 built from them.

mod attention;
mod bert;
mod block;
pub mod gpt2;
mod layer_norm;
mod positions;
mod qa;

pub use attention::Attention;
pub use bert::{Bert, BertConfig};
pub(crate) use block::feed_forward;
pub(crate) use block::fused_steps;
pub use block::{AddNorm, TransformerBlock};
pub use gpt2::Gpt2Config;
pub use layer_norm::LayerNorm;
pub use positions::Positions;
pub use qa::{QuestionAnswering, Span};
