//! The lecture's blocks for ferrograd: modules (FeedForward, Conv, MaxPool, …) over a store of
//! named parameters, the models composed from them (AlexNet), losses, optimizers and
//! checkpoints.
//!
//! ```
//! use ferrograd::{DType, Tensor};
//! use ferrograd_nn::{formula, models, Module, ParamStore};
//! let store = ParamStore::new(0);
//! let net = models::alexnet(&store, &models::AlexNetConfig::mnist()).unwrap();
//! assert_eq!(formula(&net), "FeedForward^3(MaxPool(Conv^3(MaxPool(Conv(MaxPool(Conv(x)))))))");
//! let scores = net.forward(&Tensor::zeros(&[2, 1, 28, 28], DType::F32).unwrap()).unwrap();
//! assert_eq!(scores.dims(), &[2, 10]);
//! ```

mod blocks;
pub mod checkpoint;
pub mod distributed;
pub mod losses;
pub mod models;
mod module;
pub mod optim;
pub mod pytorch;
mod seq2seq;
mod sequence;
mod store;
pub mod trainer;
mod transformer;

pub use blocks::*;
pub use checkpoint::{
    check_resumable, inspect_checkpoint, load_checkpoint, save_checkpoint, CheckpointInfo,
};
pub use module::{formula, summary, thousands, Module, Sequential};
pub use seq2seq::*;
pub use sequence::*;
pub use store::{Init, Param, ParamStore};
pub use trainer::{Every, Progress, Trainer};
pub use transformer::*;

/// The README's code runs as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
