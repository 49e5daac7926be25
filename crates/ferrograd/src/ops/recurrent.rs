//! A recurrent cell run over whole sequences as one op: forward and backward through time in
//! fused kernels. Its composed twin — the same cell written step by step with primitive ops —
//! lives in ferrograd-nn and the tests hold the two together.

use crate::backend::{BackendStorage, RecurrentDims};
use crate::{Error, Result, Shape, Tensor};

pub use crate::backend::Cell as RecurrentCell;

/// A recurrence's results: outputs for every step, and the final states.
#[derive(Debug, Clone)]
pub struct Recurrence {
    /// (B, T, H): the hidden state after each step; zero at padded steps.
    pub outputs: Tensor,
    /// (B, H): the hidden state after each sequence's last real step.
    pub h_n: Tensor,
    /// (B, H): the LSTM cell state after the last real step (a tanh RNN passes c0 through).
    pub c_n: Tensor,
}

impl Tensor {
    /// Runs `cell` over (B, T, G·H) input projections `self` (G = 4 gates i, f, g, o for an
    /// LSTM, 1 for tanh) with recurrent weights `w_hh` (G·H, H), from states `h0`, `c0` (B, H).
    /// Where the optional (B, T) `mask` is 0 the step is padding: the state carries over and
    /// the output is zero. Differentiable in the projections, `w_hh`, `h0` and `c0`.
    pub fn recurrence(
        &self,
        cell: RecurrentCell,
        w_hh: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Recurrence> {
        const OP: &str = "recurrence";
        let g = cell.gates();
        if self.rank() != 3 || w_hh.rank() != 2 || w_hh.dims()[0] != g * w_hh.dims()[1] {
            return Err(Error::shape(
                OP,
                format!("needs projections (B, T, {g}·H) and recurrent weights ({g}·H, H), got {} and {}", self.shape(), w_hh.shape()),
            ));
        }
        let (b, t, h) = (self.dims()[0], self.dims()[1], w_hh.dims()[1]);
        if self.dims()[2] != g * h {
            return Err(Error::shape(
                OP,
                format!(
                    "projections {} must end in {g}·{h} = {} for hidden size {h}",
                    self.shape(),
                    g * h
                ),
            ));
        }
        for (name, s) in [("h0", h0), ("c0", c0)] {
            if s.dims() != [b, h] {
                return Err(Error::shape(
                    OP,
                    format!("{name} must be ({b}, {h}), got {}", s.shape()),
                ));
            }
        }
        if let Some(m) = mask.filter(|m| m.dims() != [b, t]) {
            return Err(Error::shape(
                OP,
                format!("mask must be ({b}, {t}) for input {}, got {}", self.shape(), m.shape()),
            ));
        }
        super::float_operands(
            OP,
            &[self, w_hh, h0, c0],
            "projections, weights and states must share one float dtype",
        )?;
        let d = RecurrentDims { b, t, h };
        let mask = mask.map(|m| m.storage());
        let (packed, saved) =
            self.storage().recurrence(cell, w_hh.storage(), h0.storage(), c0.storage(), mask, d)?;
        let (x_shape, w_shape, w) = (self.shape().clone(), w_hh.shape().clone(), w_hh.detach());
        let packed = Tensor::from_op(
            packed,
            Shape::from_vec(vec![b, t + 2, h]),
            OP,
            &[self, w_hh, h0, c0],
            move |grad| {
                let (dx, dw, dh, dc) =
                    grad.storage().recurrence_backward(cell, w.storage(), &saved, d)?;
                Ok(vec![
                    Some(Tensor::from_storage(dx, x_shape)),
                    Some(Tensor::from_storage(dw, w_shape)),
                    Some(Tensor::from_storage(dh, Shape::from_vec(vec![b, h]))),
                    Some(Tensor::from_storage(dc, Shape::from_vec(vec![b, h]))),
                ])
            },
        );
        Ok(Recurrence {
            outputs: packed.narrow(1, 0, t)?,
            h_n: packed.narrow(1, t, 1)?.squeeze(1)?,
            c_n: packed.narrow(1, t + 1, 1)?.squeeze(1)?,
        })
    }
}
