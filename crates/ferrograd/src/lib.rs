//! ferrograd: differentiable programming in Rust — tensors, reverse-mode autodiff and fast CPU
//! kernels, the ground the lecture's blocks (FeedForward, Conv, LSTM, Attention, ...) stand on.
//!
//! ```
//! use ferrograd::{DType, Rng, Tensor};
//! let mut rng = Rng::seed(0);
//! let x = Tensor::randn(&[4, 3], 0.0, 1.0, DType::F32, &mut rng).unwrap();
//! let w = Tensor::randn(&[3, 2], 0.0, 1.0, DType::F32, &mut rng).unwrap().requiring_grad();
//! let score = x.matmul(&w).unwrap().relu().unwrap().sum_all().unwrap();
//! let grads = score.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap().dims(), &[3, 2]);
//! ```

mod autograd;
mod backend;
mod device;
mod dtype;
mod error;
mod gradcheck;
pub mod io;
mod ops;
mod optim;
mod rng;
mod shape;
mod storage;
mod tensor;

pub use autograd::{is_grad_enabled, no_grad, GradientPiece, Gradients, NoGradGuard, PieceSizes};
pub use backend::cpu::KeepWarm;
pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Error, ErrorKind, Result};
pub use gradcheck::{gradcheck, GradcheckReport};
pub use ops::block_step::PreNormBlock;
pub use ops::quantized::{PackedWeight, Precision};
pub use ops::recurrent::{Recurrence, RecurrentCell};
pub use ops::unary::Nonlinearity;
pub use optim::Update;
pub use rng::Rng;
pub use shape::{broadcast_shapes, Shape};
pub use storage::live_bytes;
pub use tensor::{Tensor, TensorId};
