//! PyTorch's names: a `state_dict` saved as safetensors loads into the library's blocks, and
//! their parameters save as one, under the names PyTorch's equivalent modules give them.
//!
//! Most blocks name their parameters as PyTorch does already (FeedForward as `nn.Linear`, Conv
//! as `nn.Conv2d`, EmbedToken as `nn.Embedding`, LayerNorm, the RNNs as `nn.LSTM`). Attention
//! keeps query, key and value apart where `nn.MultiheadAttention` packs them in one
//! `in_proj_weight`, and the Transformer blocks name their sublayers for what they do
//! (`ff_in`, not `linear1`): those blocks say how their parameters map
//! ([`Module::torch_names`]).
//!
//! ```
//! use ferrograd_nn::{pytorch, Attention, ParamStore};
//! let store = ParamStore::new(0);
//! let attention = Attention::new(&store.sub("self_attn"), 8, 2, false).unwrap();
//! let names: Vec<String> =
//!     pytorch::state_dict(&attention).unwrap().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names[0], "self_attn.in_proj_weight");
//! ```

use crate::{Module, Param};
use ferrograd::{Error, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const OP: &str = "pytorch::load_state_dict";

/// One tensor of a PyTorch `state_dict` and the parameters it holds, stacked along dimension 0
/// (one parameter, or query, key and value for a packed `in_proj_weight`).
#[derive(Clone, Debug)]
pub struct TorchName {
    pub name: String,
    pub parts: Vec<Param>,
}

impl TorchName {
    /// A parameter under its own name.
    pub fn same(p: Param) -> TorchName {
        TorchName { name: p.name().to_string(), parts: vec![p] }
    }

    /// The shape of the whole tensor, or an error when its parts cannot stack.
    fn dims(&self) -> Result<Vec<usize>> {
        let first = self
            .parts
            .first()
            .ok_or_else(|| Error::value(OP, format!("{} stands for no parameter", self.name)))?;
        let mut dims = first.get().dims().to_vec();
        if self.parts.len() > 1 && dims.is_empty() {
            return Err(Error::shape(OP, format!("{}: scalars cannot stack", self.name)));
        }
        for p in &self.parts[1..] {
            let d = p.get().dims().to_vec();
            if d.len() != dims.len() || d.get(1..) != dims.get(1..) {
                return Err(Error::shape(
                    OP,
                    format!("{}: parts {:?} and {d:?} do not stack", self.name, dims),
                ));
            }
            dims[0] += d[0];
        }
        Ok(dims)
    }
}

/// The scope a block was built under, from one of its parameters, named `{scope}{tail}`; `None`
/// when it was built under other names, which then stay as they are.
pub(crate) fn scope_of(p: &Param, tail: &str) -> Option<String> {
    p.name().strip_suffix(tail).map(str::to_string)
}

/// `names` with each `{scope}{ours}` prefix replaced by `{scope}{theirs}`, first match wins:
/// a block's own sublayer names turned into PyTorch's.
pub(crate) fn renamed(
    names: Vec<TorchName>,
    scope: &str,
    table: &[(&str, &str)],
) -> Vec<TorchName> {
    names
        .into_iter()
        .map(|mut t| {
            if let Some(rest) = t.name.strip_prefix(scope) {
                if let Some((ours, theirs)) = table.iter().find(|(o, _)| rest.starts_with(o)) {
                    t.name = format!("{scope}{theirs}{}", &rest[ours.len()..]);
                }
            }
            t
        })
        .collect()
}

/// `names`, or an error naming one that two parameters share (blocks of two stores built under
/// the same names).
fn distinct(names: Vec<TorchName>) -> Result<Vec<TorchName>> {
    let mut seen = std::collections::HashSet::new();
    match names.iter().find(|n| !seen.insert(n.name.as_str())) {
        Some(n) => Err(Error::value(
            OP,
            format!("two parameters of the model are both named {} in PyTorch's names", n.name),
        )),
        None => Ok(names),
    }
}

/// Loads a PyTorch `state_dict` (`tensors`, read from `source`) into `module`, strictly, as
/// PyTorch's `load_state_dict` does: every tensor the module needs must be there with its
/// shape, and a tensor it does not use is an error too. Floating-point tensors are converted
/// to the parameters' dtype. Nothing is set unless everything matches.
pub fn load_state_dict(
    module: &dyn Module,
    tensors: &HashMap<String, Tensor>,
    source: &str,
) -> Result<()> {
    let names = distinct(module.torch_names())?;
    let mut updates = Vec::new();
    for n in &names {
        let t = tensors.get(&n.name).ok_or_else(|| {
            let ours: Vec<&str> = n.parts.iter().map(|p| p.name()).collect();
            Error::value(
                OP,
                format!("{source}: tensor {} (for {}) is missing", n.name, ours.join(", ")),
            )
        })?;
        let want = n.dims()?;
        if t.dims() != want.as_slice() || !t.dtype().is_float() {
            return Err(Error::shape(
                OP,
                format!(
                    "{source}: tensor {} is {} {} in the file, the model expects a float {:?}",
                    n.name,
                    t.dtype(),
                    t.shape(),
                    want
                ),
            ));
        }
        if let [p] = n.parts.as_slice() {
            updates.push((p.clone(), t.to_dtype(p.get().dtype())?));
            continue;
        }
        let mut offset = 0;
        for p in &n.parts {
            let rows = p.get().dims()[0];
            updates.push((p.clone(), t.narrow(0, offset, rows)?.to_dtype(p.get().dtype())?));
            offset += rows;
        }
    }
    let used: std::collections::HashSet<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let mut unused: Vec<&str> =
        tensors.keys().map(String::as_str).filter(|k| !used.contains(k)).collect();
    if !unused.is_empty() {
        unused.sort_unstable();
        let shown = unused.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        let more =
            if unused.len() > 5 { format!(" and {} more", unused.len() - 5) } else { "".into() };
        return Err(Error::value(
            OP,
            format!(
                "{source}: the model has no parameter for {shown}{more} (of {} tensors; the \
                 model takes {})",
                tensors.len(),
                names.len()
            ),
        ));
    }
    for (p, t) in updates {
        p.set(&t)?;
    }
    Ok(())
}

/// [`load_state_dict`] from a safetensors file (PyTorch's
/// `safetensors.torch.save_file(model.state_dict(), path)`).
pub fn load_file(module: &dyn Module, path: &Path) -> Result<()> {
    let (tensors, _) = ferrograd::io::load_safetensors(path)?;
    load_state_dict(module, &tensors.into_iter().collect(), &path.display().to_string())
}

/// The module's parameters under PyTorch's names, packed where PyTorch packs them, in the
/// module's order.
pub fn state_dict(module: &dyn Module) -> Result<Vec<(String, Tensor)>> {
    distinct(module.torch_names())?
        .into_iter()
        .map(|n| {
            let parts: Vec<Tensor> = n.parts.iter().map(|p| p.get().detach()).collect();
            let t = if parts.len() == 1 { parts[0].clone() } else { Tensor::concat(&parts, 0)? };
            Ok((n.name, t))
        })
        .collect()
}

/// [`state_dict`] written as a safetensors file that `safetensors.torch.load_file` and then
/// PyTorch's `load_state_dict` read.
pub fn save_file(module: &dyn Module, path: &Path) -> Result<()> {
    ferrograd::io::save_safetensors(path, &state_dict(module)?, &BTreeMap::new())
}

/// PyTorch's key padding mask (`true` = padding, as `src_key_padding_mask` takes it) as the
/// library's (1 = token, 0 = padding).
pub fn token_mask(key_padding_mask: &Tensor) -> Result<Tensor> {
    key_padding_mask.eq(&Tensor::scalar(0i64).to_dtype(key_padding_mask.dtype())?)
}
