//! CPU kernels over plain slices: element-wise maps, strided copies, reductions and matmul.
//! Large work is split across threads with rayon; small work stays on the calling thread.

mod conv;
mod copy;
mod elementwise;
mod matmul;
mod recurrent;
mod reduce;

pub use conv::*;
pub use copy::*;
pub use elementwise::*;
pub use matmul::*;
pub use recurrent::{
    recurrence_backward, recurrence_forward, Cell, Dims as RecurrentDims, Saved as RecurrentSaved,
};
pub use reduce::*;

use crate::Element;

/// Below this many elements a kernel runs on one thread: spawning costs more than it saves.
pub const PARALLEL_MIN: usize = 1 << 15;

/// Elements split into chunks of this size when run in parallel.
pub const CHUNK: usize = 1 << 13;

/// Floating-point element types (f32, f64) with what kernels need.
pub trait Float:
    num_traits::Float + Element + Default + std::iter::Sum + std::ops::AddAssign + std::fmt::Debug
{
}
impl Float for f32 {}
impl Float for f64 {}
