//! The lecture's blocks, one file each.

mod conv;
mod feed_forward;
mod glue;
mod max_pool;

pub use conv::{Conv, ConvOptions};
pub use feed_forward::FeedForward;
pub use glue::{Activation, Dropout, Flatten};
pub use max_pool::MaxPool;
