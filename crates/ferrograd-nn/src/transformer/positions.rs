//! Learned position embeddings, added to a sequence: how a transformer knows token order.

use crate::sequence::{check_mask, Padding, SequenceModel};
use crate::{Dropout, Init, Module, Param, ParamStore};
use ferrograd::{DType, Error, Result, Tensor};

/// `x + P[position]` for (B, T, D) sequences, with a (max_positions, D) table `weight`.
pub struct Positions {
    pub weight: Param,
    /// On the sum, in training (GPT-2's `embd_pdrop`).
    pub dropout: Option<Dropout>,
}

impl Positions {
    pub fn new(store: ParamStore, max_positions: usize, dim: usize) -> Result<Positions> {
        Ok(Positions {
            weight: store.param(
                "weight",
                &[max_positions, dim],
                Init::Normal { mean: 0.0, std: 0.02 },
            )?,
            dropout: None,
        })
    }

    fn add(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (t, max) = (x.dims()[1], self.weight.get().dims()[0]);
        if start + t > max {
            return Err(Error::shape(
                "Positions",
                format!("position {} is beyond the model's {max} positions", start + t),
            ));
        }
        x.add(&self.weight.get().narrow(0, start, t)?)
    }
}

impl Module for Positions {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        format!("Positions({})", self.weight.get().dims()[0])
    }
    fn params(&self) -> Vec<Param> {
        vec![self.weight.clone()]
    }
}

/// The positions an incremental state has seen (none at the start), after checking `x`.
fn seen(x: &Tensor, state: &[Tensor]) -> Result<usize> {
    check_mask("Positions", x, None)?;
    Ok(state.first().map(|s| s.item()).transpose()?.unwrap_or(0.0) as usize)
}

impl SequenceModel for Positions {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        check_mask("Positions", x, mask)?;
        let y = self.add(x, 0)?;
        match &self.dropout {
            Some(d) => d.forward(&y),
            None => Ok(y),
        }
    }
    /// The state is the number of positions seen so far.
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor> {
        let start = seen(x, state)?;
        let out = self.add(x, start)?;
        *state = vec![Tensor::full(&[], (start + x.dims()[1]) as f64, DType::I64)?];
        Ok(out)
    }
    fn forward_incremental_padded(
        &self,
        x: &Tensor,
        state: &mut Vec<Tensor>,
        pad: &Padding,
    ) -> Result<Tensor> {
        let start = seen(x, state)?;
        let (b, t, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        if pad.lead.len() != b {
            return Err(Error::shape(
                "Positions",
                format!("{} rows of padding for a batch of {b}", pad.lead.len()),
            ));
        }
        // Row r's slot j holds its position j − lead[r] (padding slots take position 0).
        let slots = pad
            .lead
            .iter()
            .flat_map(|&n| (start..start + t).map(move |j| j.saturating_sub(n) as i64));
        let slots: Vec<i64> = slots.collect();
        let max = self.weight.get().dims()[0];
        if let Some(&p) = slots.iter().find(|&&p| p as usize >= max) {
            return Err(Error::shape(
                "Positions",
                format!("position {} is beyond the model's {max} positions", p + 1),
            ));
        }
        let positions = self.weight.get().index_select(0, &Tensor::from_vec(slots, &[b * t])?)?;
        let out = x.add(&positions.reshape(&[b, t, d])?)?;
        *state = vec![Tensor::full(&[], (start + t) as f64, DType::I64)?];
        Ok(out)
    }
    fn state_len(&self) -> usize {
        1
    }
    fn context(&self) -> Option<usize> {
        Some(self.weight.get().dims()[0])
    }
    fn output_size(&self) -> usize {
        self.weight.get().dims()[1]
    }
}

impl SequenceModel for super::LayerNorm {
    fn forward_masked(&self, x: &Tensor, _mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward(x)
    }
    fn forward_incremental(&self, x: &Tensor, _state: &mut Vec<Tensor>) -> Result<Tensor> {
        self.forward(x)
    }
    fn forward_incremental_padded(
        &self,
        x: &Tensor,
        _state: &mut Vec<Tensor>,
        _pad: &Padding,
    ) -> Result<Tensor> {
        self.forward(x)
    }
    fn state_len(&self) -> usize {
        0
    }
    fn output_size(&self) -> usize {
        self.weight.get().dims()[0]
    }
}
