//! Ops that move elements without arithmetic: reshape, permute, narrow, concat, stack,
//! broadcast, and the index-driven gathers and scatters.

use super::{check_indices, float_dtype};
use crate::backend::{around, Around, BackendStorage};
use crate::shape::broadcast_strides;
use crate::storage::Storage;
use crate::{Error, Result, Shape, Tensor};

/// The dimension `dim` names and the shape of `tensors` joined along it: concat's checks
/// (at least one tensor, one dtype, every other dimension equal).
fn joined_shape(tensors: &[&Tensor], dim: isize) -> Result<(usize, Shape)> {
    let first = tensors
        .first()
        .ok_or_else(|| Error::value("concat", "needs at least one tensor, got none"))?;
    let d = first.dim("concat", dim)?;
    for (i, t) in tensors.iter().enumerate() {
        let same_rest = t.rank() == first.rank()
            && t.dims().iter().zip(first.dims()).enumerate().all(|(j, (a, b))| j == d || a == b);
        if !same_rest {
            return Err(Error::shape(
                "concat",
                format!(
                    "tensor {i} has shape {}, tensor 0 has {}: only dimension {dim} may differ",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        if t.dtype() != first.dtype() {
            return Err(Error::dtype(
                "concat",
                format!("tensor {i} is {}, tensor 0 is {}", t.dtype(), first.dtype()),
            ));
        }
    }
    let mut dims = first.dims().to_vec();
    dims[d] = tensors.iter().map(|t| t.dims()[d]).sum();
    Ok((d, Shape::new(&dims)?))
}

impl Tensor {
    /// The same elements under a new shape with as many elements; shares the data.
    pub fn reshape(&self, dims: &[usize]) -> Result<Tensor> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot view {} ({} elements) as {shape} ({} elements)",
                    self.shape(),
                    self.numel(),
                    shape.numel()
                ),
            ));
        }
        let from = self.shape().clone();
        Ok(self
            .with_shape(shape)
            .with_history("reshape", &[self], move |g| Ok(vec![Some(g.reshape(from.dims())?)])))
    }

    /// Dimensions reordered: output dimension i is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::shape(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} dimensions of {}",
                    self.shape()
                ),
            ));
        }
        let strides = self.shape().strides();
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims()[p]).collect();
        let pstrides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let data = self.storage().strided(&dims, &pstrides)?;
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(Tensor::from_op(data, Shape::from_vec(dims), "permute", &[self], move |g| {
            Ok(vec![Some(g.permute(&inverse)?)])
        }))
    }

    /// Two dimensions swapped.
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let (a, b) = (self.dim("transpose", d0)?, self.dim("transpose", d1)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// A new dimension of size 1 at `dim` (`dim` may be `rank`, meaning last).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank + 1 } else { dim };
        if !(0..=rank).contains(&d) {
            return Err(Error::index(
                "unsqueeze",
                format!("dimension {dim} is out of range for rank {rank}"),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.insert(d as usize, 1);
        self.reshape(&dims)
    }

    /// Dimension `dim`, which must have size 1, removed.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim("squeeze", dim)?;
        if self.dims()[d] != 1 {
            return Err(Error::shape(
                "squeeze",
                format!("dimension {dim} of {} has size {}, not 1", self.shape(), self.dims()[d]),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(d);
        self.reshape(&dims)
    }

    /// Dimensions from `start` on merged into one: (B, C, H, W).flatten_from(1) is (B, C·H·W).
    pub fn flatten_from(&self, start: isize) -> Result<Tensor> {
        let d = self.dim("flatten_from", start)?;
        let mut dims = self.dims()[..d].to_vec();
        dims.push(self.dims()[d..].iter().product());
        self.reshape(&dims)
    }

    /// `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.dim("narrow", dim)?;
        let at = around(self.shape(), d);
        let n = at.n;
        if start.checked_add(len).is_none_or(|end| end > n) {
            return Err(Error::index(
                "narrow",
                format!(
                    "range {start}..{} is out of bounds for dimension {dim} of size {n}",
                    start.saturating_add(len)
                ),
            ));
        }
        // A range of whole rows is a view of memory that views share (a gradient bucket).
        let data = if at.outer == 1 {
            self.storage().view(start * at.inner, len * at.inner)
        } else {
            self.storage().narrow(at, start, len)?
        };
        let mut dims = self.dims().to_vec();
        dims[d] = len;
        let in_shape = self.shape().clone();
        Ok(Tensor::from_op(data, Shape::from_vec(dims), "narrow", &[self], move |g| {
            let data = g.storage().pad(at, start, len)?;
            Ok(vec![Some(Tensor::from_storage(data, in_shape))])
        }))
    }

    /// `self` becomes `Tensor::concat(&[self, other], dim)`. Where nothing else holds its
    /// memory, it has no history, `other` needs no gradient and every dimension before `dim`
    /// is 1, `other` is written after it in place, the memory growing as a `Vec` grows: a
    /// key/value cache then costs each step of generation its new position, where
    /// concatenation copies the whole cache.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let mut cache = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 1, 2])?;
    /// cache.append(&Tensor::from_vec(vec![3.0f32, 4.0], &[1, 1, 2])?, 1)?;
    /// assert_eq!(cache.dims(), &[1, 2, 2]);
    /// assert_eq!(cache.to_vec::<f32>()?, [1.0, 2.0, 3.0, 4.0]);
    /// # Ok::<(), ferrograd::Error>(())
    /// ```
    pub fn append(&mut self, other: &Tensor, dim: isize) -> Result<()> {
        let (d, shape) = joined_shape(&[self, other], dim)?;
        if self.dims()[..d].iter().all(|&n| n == 1) && !other.requires_grad() {
            if let Some((storage, old)) = self.unique_parts_mut() {
                if storage.append(other.storage())? {
                    *old = shape;
                    return Ok(());
                }
            }
        }
        *self = Tensor::concat(&[self.clone(), other.clone()], dim)?;
        Ok(())
    }

    /// Tensors joined along `dim`; all other dimensions and the dtype must agree.
    pub fn concat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let inputs: Vec<&Tensor> = tensors.iter().collect();
        let (d, out_shape) = joined_shape(&inputs, dim)?;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[d]).collect();
        let (outer, _, inner) = tensors[0].shape().split_at_dim(d);
        let parts: Vec<&Storage> = tensors.iter().map(|t| t.storage()).collect();
        let data = Storage::concat(&parts, outer, &sizes, inner)?;
        Ok(Tensor::from_op(data, out_shape, "concat", &inputs, move |g| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&n| {
                    let part = g.narrow(d as isize, start, n);
                    start += n;
                    part.map(Some)
                })
                .collect()
        }))
    }

    /// Tensors of one shape stacked along a new dimension `dim`.
    pub fn stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::value("stack", "needs at least one tensor, got none"))?;
        if let Some((i, t)) = tensors.iter().enumerate().find(|(_, t)| t.shape() != first.shape()) {
            return Err(Error::shape(
                "stack",
                format!("tensor {i} has shape {}, tensor 0 has {}", t.shape(), first.shape()),
            ));
        }
        let parts = tensors.iter().map(|t| t.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::concat(&parts, dim)
    }

    /// Copies along dimensions of size 1 (and new leading ones) to reach `dims`.
    pub fn broadcast_to(&self, dims: &[usize]) -> Result<Tensor> {
        let target = crate::shape::output_shape("broadcast_to", dims.to_vec())?;
        if &target == self.shape() {
            return Ok(self.clone());
        }
        let fits = target.rank() >= self.rank()
            && self
                .dims()
                .iter()
                .rev()
                .zip(target.dims().iter().rev())
                .all(|(&s, &t)| s == t || s == 1);
        if !fits {
            return Err(Error::shape(
                "broadcast_to",
                format!("cannot broadcast {} to {target}", self.shape()),
            ));
        }
        let strides = broadcast_strides(self.shape(), &target);
        let data = self.storage().strided(target.dims(), &strides)?;
        let from = self.shape().clone();
        Ok(Tensor::from_op(data, target, "broadcast_to", &[self], move |g| {
            Ok(vec![Some(g.sum_to_shape(&from)?)])
        }))
    }

    /// Entries `ids` (a 1-D i64 tensor) of dimension `dim`, in that order; repeats allowed.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let table = Tensor::from_vec(vec![0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0], &[3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2i64, 0], &[2]).unwrap();
    /// let rows = table.index_select(0, &ids).unwrap();
    /// assert_eq!(rows.to_vec::<f32>().unwrap(), vec![2.0, 2.0, 0.0, 0.0]);
    /// ```
    pub fn index_select(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        let d = self.dim("index_select", dim)?;
        if ids.rank() != 1 {
            return Err(Error::shape(
                "index_select",
                format!("indices must be 1-D, got shape {}", ids.shape()),
            ));
        }
        let at = around(self.shape(), d);
        check_indices("index_select", ids, at.n)?;
        let mut dims = self.dims().to_vec();
        dims[d] = ids.numel();
        let dims = crate::shape::output_shape("index_select", dims)?.dims().to_vec();
        let data = self.storage().index_select(ids.storage(), at)?;
        let (in_shape, ids) = (self.shape().clone(), ids.detach());
        Ok(Tensor::from_op(data, Shape::from_vec(dims), "index_select", &[self], move |g| {
            let data = g.storage().index_add(ids.storage(), at)?;
            Ok(vec![Some(Tensor::from_storage(data, in_shape))])
        }))
    }

    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]` along `dim`; `index` has self's rank
    /// and self's sizes in every other dimension (as PyTorch's gather, without its subsetting).
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let (_, at, m) = self.index_args("gather", dim, index)?;
        let data = self.storage().gather(index.storage(), at, m)?;
        let (in_shape, ids) = (self.shape().clone(), index.detach());
        Ok(Tensor::from_op(data, index.shape().clone(), "gather", &[self], move |g| {
            let base = g.storage().zeros(in_shape.numel(), g.dtype())?;
            let data = base.scatter_add(ids.storage(), g.storage(), at, m)?;
            Ok(vec![Some(Tensor::from_storage(data, in_shape))])
        }))
    }

    /// `self` with `src` added at the positions `index` names along `dim` (gather's adjoint):
    /// `out[.., index[.., j, ..], ..] += src[.., j, ..]`; `index` and `src` share a shape.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        if src.shape() != index.shape() {
            return Err(Error::shape(
                "scatter_add",
                format!(
                    "src has shape {}, index has {}: they must match",
                    src.shape(),
                    index.shape()
                ),
            ));
        }
        let (d, at, m) = self.index_args("scatter_add", dim, index)?;
        float_dtype("scatter_add", &[self])?;
        if src.dtype() != self.dtype() {
            return Err(Error::dtype(
                "scatter_add",
                format!("src is {}, the tensor is {}", src.dtype(), self.dtype()),
            ));
        }
        let data = self.storage().scatter_add(index.storage(), src.storage(), at, m)?;
        let index = index.clone();
        Ok(Tensor::from_op(data, self.shape().clone(), "scatter_add", &[self, src], move |g| {
            Ok(vec![Some(g.clone()), Some(g.gather(d as isize, &index)?)])
        }))
    }

    /// Checks an index tensor for gather/scatter along `dim` and splits the shapes.
    fn index_args(&self, op: &str, dim: isize, index: &Tensor) -> Result<(usize, Around, usize)> {
        let d = self.dim(op, dim)?;
        let same_rest = index.rank() == self.rank()
            && index.dims().iter().zip(self.dims()).enumerate().all(|(j, (a, b))| j == d || a == b);
        if !same_rest {
            return Err(Error::shape(
                op,
                format!(
                    "index has shape {}, the tensor {}: they must agree except in dimension {dim}",
                    index.shape(),
                    self.shape()
                ),
            ));
        }
        let at = around(self.shape(), d);
        check_indices(op, index, at.n)?;
        Ok((d, at, index.dims()[d]))
    }
}
