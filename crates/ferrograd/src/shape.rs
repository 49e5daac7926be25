//! Shapes: dimension sizes, contiguous strides, broadcasting and dimension lookup.

use crate::{Error, Result};
use std::fmt;

/// The sizes of a tensor's dimensions, outermost first. Data is always row-major contiguous.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// A shape from its dimension sizes; fails when the element count overflows `usize`.
    pub fn new(dims: &[usize]) -> Result<Shape> {
        dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
            Error::value("shape", format!("{dims:?} has more elements than fit in memory"))
        })?;
        Ok(Shape(dims.to_vec()))
    }
    pub(crate) fn from_vec(dims: Vec<usize>) -> Shape {
        Shape(dims)
    }
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }
    /// Resolves a possibly negative dimension (`-1` is the last) against this shape.
    pub fn dim(&self, op: &str, d: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let r = if d < 0 { d + rank } else { d };
        if r < 0 || r >= rank {
            return Err(Error::index(
                op,
                format!("dimension {d} is out of range for a tensor of shape {self} (rank {rank})"),
            ));
        }
        Ok(r as usize)
    }
    /// Sizes before, at and after dimension `d`: the (outer, n, inner) view most kernels use.
    pub(crate) fn split_at_dim(&self, d: usize) -> (usize, usize, usize) {
        let outer = self.0[..d].iter().product();
        let inner = self.0[d + 1..].iter().product();
        (outer, self.0[d], inner)
    }
}

/// `dims` as the shape of a result `op` is about to allocate (elements of up to 8 bytes): an
/// error instead of an abort where their count overflows or memory cannot hold them. Only
/// results of 64 MiB and more are probed, with an allocation that is released at once.
pub(crate) fn output_shape(op: &str, dims: Vec<usize>) -> Result<Shape> {
    let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    room(op, n.and_then(|n| n.checked_mul(8)), &dims)?;
    Ok(Shape(dims))
}

/// Whether `bytes` (None: more than a usize counts) can be allocated, for a result of `dims`.
pub(crate) fn room(op: &str, bytes: Option<usize>, dims: &[usize]) -> Result<()> {
    let refuse = || Error::value(op, format!("a result of shape {dims:?} does not fit in memory"));
    let bytes = bytes.ok_or_else(refuse)?;
    if bytes >= 64 << 20 {
        Vec::<u8>::new().try_reserve_exact(bytes).map_err(|_| refuse())?;
    }
    Ok(())
}

/// The shape two shapes broadcast to, NumPy's rule: align on the right, sizes equal or one is 1.
pub fn broadcast_shapes(op: &str, a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let mut out = vec![0; rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = if i < rank - a.rank() { 1 } else { a.0[i - (rank - a.rank())] };
        let db = if i < rank - b.rank() { 1 } else { b.0[i - (rank - b.rank())] };
        *slot = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("shapes {a} and {b} do not broadcast: dimension {i} is {da} vs {db}"),
                ))
            }
        };
    }
    output_shape(op, out)
}

/// Strides that read `from` as if it had shape `to` (0 along broadcast dimensions).
pub(crate) fn broadcast_strides(from: &Shape, to: &Shape) -> Vec<usize> {
    let offset = to.rank() - from.rank();
    let own = from.strides();
    (0..to.rank())
        .map(|i| if i < offset || from.0[i - offset] == 1 { 0 } else { own[i - offset] })
        .collect()
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let s = |d: &[usize]| Shape::new(d).unwrap();
        assert_eq!(broadcast_shapes("t", &s(&[3, 1, 5]), &s(&[4, 1])).unwrap(), s(&[3, 4, 5]));
        assert_eq!(broadcast_shapes("t", &s(&[]), &s(&[2])).unwrap(), s(&[2]));
        let e = broadcast_shapes("add", &s(&[3]), &s(&[4])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: shapes [3] and [4] do not broadcast: dimension 0 is 3 vs 4"
        );
        assert_eq!(broadcast_strides(&s(&[4, 1]), &s(&[3, 4, 5])), vec![0, 1, 0]);
    }

    #[test]
    fn negative_dims_count_from_the_end() {
        let s = Shape::new(&[2, 3, 4]).unwrap();
        assert_eq!(s.dim("t", -1).unwrap(), 2);
        assert!(s.dim("t", 3).is_err());
        assert!(Shape::new(&[usize::MAX, 3]).is_err());
    }
}
