//! Recurrent networks: the lecture's `RNN` type as the trait `Rnn` (one step: a new hidden state
//! from the old state and one input), its cells SimpleRNN and LSTM, and SequenceRNN, which runs
//! a cell over a batch of padded sequences, optionally in both directions.
//!
//! Legend: B batch, T time, D input size, H hidden size.

use super::{check_mask, SequenceModel};
use crate::{Dropout, Init, Module, Param, ParamStore};
use ferrograd::{DType, Error, RecurrentCell, Result, Tensor};

/// The state a cell carries from step to step: h, and c for an LSTM (zeros for SimpleRNN).
#[derive(Debug, Clone)]
pub struct RnnState {
    pub h: Tensor,
    pub c: Tensor,
}

/// One recurrent cell: `step` is the lecture's definition, written with primitive ops; `run`
/// is the whole sequence at once, through a fused kernel that must agree with looping `step`.
pub trait Rnn: Send + Sync + Sized {
    /// Parameters under `store` named as PyTorch's `nn.RNN`/`nn.LSTM` name them, with `suffix`
    /// `l0`, `l0_reverse`, `l1`, … (so `weight_ih_l0`).
    fn new(store: &ParamStore, input: usize, hidden: usize, suffix: &str) -> Result<Self>;
    fn name() -> &'static str;
    fn input_size(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn params(&self) -> Vec<Param>;
    /// The next state from `state` and a (B, D) input.
    fn step(&self, state: &RnnState, x: &Tensor) -> Result<RnnState>;
    /// (B, T, D) inputs from `state` → (B, T, H) outputs (zero at padding) and the final state.
    fn run(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        state: &RnnState,
    ) -> Result<(Tensor, RnnState)>;

    fn zero_state(&self, batch: usize, dtype: DType) -> Result<RnnState> {
        let z = Tensor::zeros(&[batch, self.hidden_size()], dtype)?;
        Ok(RnnState { h: z.clone(), c: z })
    }

    /// `run` by looping `step`: the composed reference the fused kernel is tested against.
    fn run_stepwise(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        state: &RnnState,
    ) -> Result<(Tensor, RnnState)> {
        let t = x.dims()[1];
        let mut s = state.clone();
        let mut outputs = Vec::with_capacity(t);
        for i in 0..t {
            let next = self.step(&s, &x.narrow(1, i, 1)?.squeeze(1)?)?;
            match mask {
                None => s = next,
                Some(m) => {
                    // Padding: keep the old state, output zero.
                    let keep = m.narrow(1, i, 1)?.to_dtype(x.dtype())?; // (B, 1)
                    let mix = |new: &Tensor, old: &Tensor| {
                        new.mul(&keep)?.add(&old.mul(&keep.neg()?.add_scalar(1.0)?)?)
                    };
                    s = RnnState { h: mix(&next.h, &s.h)?, c: mix(&next.c, &s.c)? };
                    outputs.push(next.h.mul(&keep)?);
                    continue;
                }
            }
            outputs.push(s.h.clone());
        }
        Ok((Tensor::stack(&outputs, 1)?, s))
    }
}

/// The weights every cell here has, in PyTorch's layout: W_ih (G·H, D), W_hh (G·H, H) and two
/// biases (G·H).
struct CellWeights {
    w_ih: Param,
    w_hh: Param,
    b_ih: Param,
    b_hh: Param,
}

impl CellWeights {
    fn new(
        store: &ParamStore,
        input: usize,
        hidden: usize,
        gates: usize,
        suffix: &str,
    ) -> Result<CellWeights> {
        if input == 0 || hidden == 0 {
            return Err(Error::value(
                "Rnn",
                format!("sizes must be positive, got input {input}, hidden {hidden}"),
            ));
        }
        // PyTorch initializes every RNN weight U(−1/√H, 1/√H).
        let init = Init::pytorch_default(hidden);
        Ok(CellWeights {
            w_ih: store.param(&format!("weight_ih_{suffix}"), &[gates * hidden, input], init)?,
            w_hh: store.param(&format!("weight_hh_{suffix}"), &[gates * hidden, hidden], init)?,
            b_ih: store.param(&format!("bias_ih_{suffix}"), &[gates * hidden], init)?,
            b_hh: store.param(&format!("bias_hh_{suffix}"), &[gates * hidden], init)?,
        })
    }
    fn params(&self) -> Vec<Param> {
        vec![self.w_ih.clone(), self.w_hh.clone(), self.b_ih.clone(), self.b_hh.clone()]
    }
    /// W_ih x + b_ih + W_hh h + b_hh for one step.
    fn pre_activation(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        x.linear(&self.w_ih.get(), Some(&self.b_ih.get()))?
            .add(&h.linear(&self.w_hh.get(), Some(&self.b_hh.get()))?)
    }
    /// The fused path: every step's input projection in one product, then the recurrence.
    fn run(
        &self,
        cell: RecurrentCell,
        x: &Tensor,
        mask: Option<&Tensor>,
        s: &RnnState,
    ) -> Result<(Tensor, RnnState)> {
        let d = self.w_ih.get().dims()[1];
        if x.rank() != 3 || x.dims()[2] != d {
            return Err(Error::shape(
                "Rnn",
                format!("input must be (B, T, {d}), got {}", x.shape()),
            ));
        }
        let xproj = x.linear(&self.w_ih.get(), Some(&self.b_ih.get()))?.add(&self.b_hh.get())?; // (B, T, G·H)
        let r = xproj.recurrence(cell, &self.w_hh.get(), &s.h, &s.c, mask)?;
        Ok((r.outputs, RnnState { h: r.h_n, c: r.c_n }))
    }
}

/// The Elman RNN: `h′ = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
pub struct SimpleRNN {
    w: CellWeights,
}

impl Rnn for SimpleRNN {
    fn new(store: &ParamStore, input: usize, hidden: usize, suffix: &str) -> Result<Self> {
        Ok(SimpleRNN { w: CellWeights::new(store, input, hidden, 1, suffix)? })
    }
    fn name() -> &'static str {
        "SimpleRNN"
    }
    fn input_size(&self) -> usize {
        self.w.w_ih.get().dims()[1]
    }
    fn hidden_size(&self) -> usize {
        self.w.w_hh.get().dims()[1]
    }
    fn params(&self) -> Vec<Param> {
        self.w.params()
    }
    fn step(&self, s: &RnnState, x: &Tensor) -> Result<RnnState> {
        Ok(RnnState { h: self.w.pre_activation(x, &s.h)?.tanh()?, c: s.c.clone() })
    }
    fn run(&self, x: &Tensor, mask: Option<&Tensor>, s: &RnnState) -> Result<(Tensor, RnnState)> {
        self.w.run(RecurrentCell::Tanh, x, mask, s)
    }
}

/// Long short-term memory, gates in PyTorch's order (input, forget, cell, output):
/// `c′ = σ(f)·c + σ(i)·tanh(g)`, `h′ = σ(o)·tanh(c′)`.
pub struct LSTM {
    w: CellWeights,
}

impl Rnn for LSTM {
    fn new(store: &ParamStore, input: usize, hidden: usize, suffix: &str) -> Result<Self> {
        Ok(LSTM { w: CellWeights::new(store, input, hidden, 4, suffix)? })
    }
    fn name() -> &'static str {
        "LSTM"
    }
    fn input_size(&self) -> usize {
        self.w.w_ih.get().dims()[1]
    }
    fn hidden_size(&self) -> usize {
        self.w.w_hh.get().dims()[1]
    }
    fn params(&self) -> Vec<Param> {
        self.w.params()
    }
    fn step(&self, s: &RnnState, x: &Tensor) -> Result<RnnState> {
        let h = self.hidden_size();
        let z = self.w.pre_activation(x, &s.h)?; // (B, 4H)
        let gate = |k: usize| z.narrow(-1, k * h, h);
        let (i, f, g, o) =
            (gate(0)?.sigmoid()?, gate(1)?.sigmoid()?, gate(2)?.tanh()?, gate(3)?.sigmoid()?);
        let c = f.mul(&s.c)?.add(&i.mul(&g)?)?;
        Ok(RnnState { h: o.mul(&c.tanh()?)?, c })
    }
    fn run(&self, x: &Tensor, mask: Option<&Tensor>, s: &RnnState) -> Result<(Tensor, RnnState)> {
        self.w.run(RecurrentCell::Lstm, x, mask, s)
    }
}

/// Runs a cell over a batch of sequences of different lengths (padding on the right, marked by
/// the mask), optionally also right-to-left, concatenating both directions' outputs.
pub struct SequenceRNN<R: Rnn> {
    pub forward_cell: R,
    pub backward_cell: Option<R>,
}

impl<R: Rnn> SequenceRNN<R> {
    /// Layer `layer` of a stack, parameters named as PyTorch's (`weight_ih_l{layer}`, and
    /// `…_reverse` for the backward direction).
    pub fn new(
        store: &ParamStore,
        input: usize,
        hidden: usize,
        layer: usize,
        bidirectional: bool,
    ) -> Result<Self> {
        let suffix = format!("l{layer}");
        Ok(SequenceRNN {
            forward_cell: R::new(store, input, hidden, &suffix)?,
            backward_cell: if bidirectional {
                Some(R::new(store, input, hidden, &format!("{suffix}_reverse"))?)
            } else {
                None
            },
        })
    }

    /// Outputs and final states (forward direction first), from zero states.
    pub fn run(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Vec<RnnState>)> {
        self.run_from(x, mask, None)
    }

    /// 2 when it also runs right to left, else 1.
    pub fn directions(&self) -> usize {
        if self.backward_cell.is_some() {
            2
        } else {
            1
        }
    }

    /// [`SequenceRNN::run`] from `initial` states, one (B, H) state per direction (forward
    /// first); the backward direction starts from its state at each row's last token.
    pub fn run_from(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        initial: Option<&[RnnState]>,
    ) -> Result<(Tensor, Vec<RnnState>)> {
        check_mask(R::name(), x, mask)?;
        let (b, t) = (x.dims()[0], x.dims()[1]);
        let h = self.forward_cell.hidden_size();
        let starts = match initial {
            Some(states) => {
                let fits = |s: &RnnState| s.h.dims() == [b, h] && s.c.dims() == [b, h];
                if states.len() != self.directions() || !states.iter().all(fits) {
                    let given: Vec<String> = states
                        .iter()
                        .map(|s| format!("h {} c {}", s.h.shape(), s.c.shape()))
                        .collect();
                    return Err(Error::shape(
                        R::name(),
                        format!(
                            "initial states must be {} of ({b}, {h}) (one per direction), got [{}]",
                            self.directions(),
                            given.join(", ")
                        ),
                    ));
                }
                states.to_vec()
            }
            None => vec![self.forward_cell.zero_state(b, x.dtype())?; self.directions()],
        };
        let (out, fs) = self.forward_cell.run(x, mask, &starts[0])?;
        let Some(cell) = &self.backward_cell else { return Ok((out, vec![fs])) };
        // Reverse each sequence within its own length; padding stays where it is.
        let lengths = super::lengths(mask, b, t)?;
        let reversed = |y: &Tensor| -> Result<Tensor> {
            let d = y.dims()[2];
            let mut idx = Vec::with_capacity(b * t * d);
            for &len in &lengths {
                for ti in 0..t {
                    let src = if ti < len { len - 1 - ti } else { ti };
                    idx.extend(std::iter::repeat_n(src as i64, d));
                }
            }
            y.gather(1, &Tensor::from_vec(idx, &[b, t, d])?)
        };
        let (back, bs) = cell.run(&reversed(x)?, mask, &starts[1])?;
        Ok((Tensor::concat(&[out, reversed(&back)?], 2)?, vec![fs, bs]))
    }
}

impl<R: Rnn> Module for SequenceRNN<R> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        let dir = if self.backward_cell.is_some() { ", both directions" } else { "" };
        format!(
            "SequenceRNN<{}>({}→{}{dir})",
            R::name(),
            self.forward_cell.input_size(),
            self.forward_cell.hidden_size()
        )
    }
    fn blocks(&self) -> Vec<&'static str> {
        vec!["SequenceModel"]
    }
    fn params(&self) -> Vec<Param> {
        let mut p = self.forward_cell.params();
        if let Some(c) = &self.backward_cell {
            p.extend(c.params());
        }
        p
    }
}

impl<R: Rnn> SequenceModel for SequenceRNN<R> {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.run(x, mask)?.0)
    }
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor> {
        if self.backward_cell.is_some() {
            return Err(Error::value(
                R::name(),
                "a bidirectional RNN sees the future: it cannot generate step by step",
            ));
        }
        check_mask(R::name(), x, None)?;
        let s = match state.as_slice() {
            [h, c] => RnnState { h: h.clone(), c: c.clone() },
            _ => self.forward_cell.zero_state(x.dims()[0], x.dtype())?,
        };
        let (out, next) = self.forward_cell.run(x, None, &s)?;
        *state = vec![next.h, next.c];
        Ok(out)
    }
    fn state_len(&self) -> usize {
        2
    }
    fn output_size(&self) -> usize {
        self.forward_cell.hidden_size() * if self.backward_cell.is_some() { 2 } else { 1 }
    }
}

/// SequenceRNN^k: `layers` SequenceRNNs, each reading the outputs of the one before, with
/// PyTorch's `nn.RNN`/`nn.LSTM` names (`weight_ih_l1_reverse`) and states in its
/// (layers·directions, B, H) layout.
pub struct RnnStack<R: Rnn> {
    pub layers: Vec<SequenceRNN<R>>,
    /// Between layers, in training (PyTorch's `dropout`).
    pub dropout: Option<Dropout>,
}

impl<R: Rnn> RnnStack<R> {
    /// `nn.LSTM(input, hidden, num_layers=layers, bidirectional=…)` for `R = LSTM`.
    pub fn new(
        store: &ParamStore,
        input: usize,
        hidden: usize,
        layers: usize,
        bidirectional: bool,
    ) -> Result<Self> {
        if layers == 0 {
            return Err(Error::value(R::name(), "an RNN stack needs at least one layer, got 0"));
        }
        let dirs = if bidirectional { 2 } else { 1 };
        let layers = (0..layers)
            .map(|l| {
                let d = if l == 0 { input } else { dirs * hidden };
                SequenceRNN::new(store, d, hidden, l, bidirectional)
            })
            .collect::<Result<_>>()?;
        Ok(RnnStack { layers, dropout: None })
    }

    /// Dropout with probability `p` on every layer's outputs but the last, in training.
    pub fn with_dropout(mut self, store: &ParamStore, p: f64) -> Result<Self> {
        self.dropout = Some(Dropout::new(store, p)?);
        Ok(self)
    }

    /// PyTorch's `lstm(x, (h_0, c_0))`: the last layer's outputs (B, T, directions·H) and the
    /// final states, both from and to (layers·directions, B, H) tensors. SimpleRNN carries its
    /// c through unchanged: give it zeros (PyTorch's `nn.RNN` has h only). Without `initial`,
    /// the states start at zero.
    pub fn run(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        initial: Option<&RnnState>,
    ) -> Result<(Tensor, RnnState)> {
        check_mask(R::name(), x, mask)?;
        let first = self.layers.first().ok_or_else(|| {
            Error::value(R::name(), "an RNN stack needs at least one layer, got 0")
        })?;
        let dirs = first.directions();
        let n = self.layers.len() * dirs;
        let (b, h) = (x.dims()[0], first.forward_cell.hidden_size());
        let starts = match initial {
            Some(s) => {
                if s.h.dims() != [n, b, h] || s.c.dims() != [n, b, h] {
                    return Err(Error::shape(
                        R::name(),
                        format!(
                            "initial states must be ({n}, {b}, {h}) (layers·directions, B, H), \
                             got h {} and c {}",
                            s.h.shape(),
                            s.c.shape()
                        ),
                    ));
                }
                let at = |t: &Tensor, i: usize| t.narrow(0, i, 1)?.squeeze(0);
                let states = (0..n)
                    .map(|i| Ok(RnnState { h: at(&s.h, i)?, c: at(&s.c, i)? }))
                    .collect::<Result<Vec<_>>>()?;
                Some(states)
            }
            None => None,
        };
        let mut h_x = x.clone();
        let mut finals = Vec::with_capacity(n);
        for (l, layer) in self.layers.iter().enumerate() {
            if l > 0 {
                if let Some(d) = &self.dropout {
                    h_x = d.forward(&h_x)?;
                }
            }
            let start = starts.as_ref().map(|s| &s[l * dirs..(l + 1) * dirs]);
            let (out, states) = layer.run_from(&h_x, mask, start)?;
            h_x = out;
            finals.extend(states);
        }
        let stacked = |f: fn(&RnnState) -> Tensor| {
            Tensor::stack(&finals.iter().map(f).collect::<Vec<_>>(), 0)
        };
        Ok((h_x, RnnState { h: stacked(|s| s.h.clone())?, c: stacked(|s| s.c.clone())? }))
    }
}

impl<R: Rnn> Module for RnnStack<R> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn describe(&self) -> String {
        match self.layers.first() {
            Some(l) => format!("{}^{}", l.describe(), self.layers.len()),
            None => "RnnStack(no layers)".into(),
        }
    }
    fn blocks(&self) -> Vec<&'static str> {
        self.layers.iter().flat_map(|l| l.blocks()).collect()
    }
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
}

impl<R: Rnn> SequenceModel for RnnStack<R> {
    fn forward_masked(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.run(x, mask, None)?.0)
    }
    fn forward_incremental(&self, x: &Tensor, state: &mut Vec<Tensor>) -> Result<Tensor> {
        super::incremental_layers(
            &self.layers,
            x,
            state,
            |l| l.state_len(),
            |l, h, s| l.forward_incremental(h, s),
        )
    }
    fn state_len(&self) -> usize {
        self.layers.iter().map(|l| l.state_len()).sum()
    }
    fn output_size(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_size())
    }
}
