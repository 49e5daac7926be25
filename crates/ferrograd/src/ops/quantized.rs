//! Products with weights in low precision, for inference: a weight is packed once
//! ([`Tensor::quantize`]) and every product with it ([`Tensor::linear_packed`]) reads the
//! packed form. There is no gradient through them; training keeps f32.

use crate::backend::{BackendStorage, Saved};
use crate::storage::Storage;
use crate::{DType, Device, Error, Nonlinearity, Result, Shape, Tensor};
use std::fmt;
use std::str::FromStr;

/// The precision products with a weight run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Plain f32 products.
    #[default]
    F32,
    /// int8 weights, one scale per output channel (symmetric), against activations quantized
    /// per row at every call; exact i32 sums (VNNI where the processor has it).
    Int8,
    /// bf16 weights and activations (rounded to nearest even), products summed in f32
    /// (AVX512-BF16 where the processor has it).
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            "bf16" => Ok(Precision::Bf16),
            other => {
                Err(Error::value("precision", format!("{other:?} is not one of f32, int8, bf16")))
            }
        }
    }
}

/// An (out, in) weight packed for products in a low [`Precision`], on its device.
pub struct PackedWeight {
    precision: Precision,
    dims: [usize; 2],
    device: Device,
    data: Saved,
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedWeight({}, {:?}, {})", self.precision, self.dims, self.device)
    }
}

impl PackedWeight {
    pub fn precision(&self) -> Precision {
        self.precision
    }
    /// (out, in), as the weight it was packed from.
    pub fn dims(&self) -> [usize; 2] {
        self.dims
    }
    /// The weight the products use (the quantized values times their scales), as f32.
    pub fn dequantize(&self) -> Result<Tensor> {
        let data = Storage::unpack_weight(&self.data, self.device)?;
        Ok(Tensor::from_storage(data, Shape::from_vec(self.dims.to_vec())))
    }
}

impl Tensor {
    /// This (out, in) f32 weight packed for products in `precision` (not f32: that needs no
    /// packing). The packed copy does not follow later changes to the weight.
    ///
    /// ```
    /// use ferrograd::{DType, Precision, Rng, Tensor};
    /// let mut rng = Rng::seed(0);
    /// let w = Tensor::randn(&[8, 16], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    /// let x = Tensor::randn(&[4, 16], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    /// let packed = w.quantize(Precision::Int8).unwrap();
    /// let (exact, int8) = (x.linear(&w, None).unwrap(), x.linear_packed(&packed, None).unwrap());
    /// let diff = exact.sub(&int8).unwrap().to_vec::<f32>().unwrap();
    /// assert!(diff.iter().all(|d| d.abs() < 0.2), "{diff:?}");
    /// ```
    pub fn quantize(&self, precision: Precision) -> Result<PackedWeight> {
        const OP: &str = "quantize";
        if self.rank() != 2 {
            return Err(Error::shape(
                OP,
                format!("takes an (out, in) weight, got {}", self.shape()),
            ));
        }
        if self.dtype() != DType::F32 {
            return Err(Error::dtype(OP, format!("takes an f32 weight, got {}", self.dtype())));
        }
        if precision == Precision::F32 {
            return Err(Error::value(OP, "f32 products use the weight itself: nothing to pack"));
        }
        let dims = [self.dims()[0], self.dims()[1]];
        let data = self.storage().pack_weight(precision, dims[0], dims[1])?;
        Ok(PackedWeight { precision, dims, device: self.device(), data })
    }

    /// `x · Wᵀ + b` for `self` = x (…, in) f32 and a packed (out, in) weight: (…, out) f32.
    /// Inference only: it records no gradient, so it refuses an input or bias that would
    /// want one (run it under [`crate::no_grad`]).
    pub fn linear_packed(&self, weight: &PackedWeight, bias: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "linear_packed";
        let m = self.check_packed(OP, weight, bias)?;
        let data = self.storage().packed_affine(&weight.data, bias.map(|b| b.storage()), m)?;
        Ok(self.with_features(data, weight.dims[0]))
    }

    /// `between(x · W₁ᵀ + b₁) · W₂ᵀ + b₂`, a FeedForward pair (a Transformer block's): the
    /// values of [`Tensor::linear_packed`], `between`, [`Tensor::linear_packed`], computed
    /// in blocks of rows so that the hidden values stay in cache between the products.
    ///
    /// ```
    /// use ferrograd::{no_grad, DType, Nonlinearity, Precision, Rng, Tensor};
    /// let mut rng = Rng::seed(0);
    /// let mut randn = |dims: &[usize]| Tensor::randn(dims, 0.0, 1.0, DType::F32, &mut rng).unwrap();
    /// let (x, w1, w2) = (randn(&[300, 16]), randn(&[32, 16]), randn(&[8, 32]));
    /// let (p1, p2) = (w1.quantize(Precision::Int8).unwrap(), w2.quantize(Precision::Int8).unwrap());
    /// let _g = no_grad();
    /// let fused = x.feed_forward_packed((&p1, None), Nonlinearity::Gelu, (&p2, None)).unwrap();
    /// let steps = x.linear_packed(&p1, None).unwrap().gelu().unwrap().linear_packed(&p2, None).unwrap();
    /// assert_eq!(fused.to_vec::<f32>().unwrap(), steps.to_vec::<f32>().unwrap());
    /// ```
    pub fn feed_forward_packed(
        &self,
        first: (&PackedWeight, Option<&Tensor>),
        between: Nonlinearity,
        second: (&PackedWeight, Option<&Tensor>),
    ) -> Result<Tensor> {
        const OP: &str = "feed_forward_packed";
        let m = self.check_packed(OP, first.0, first.1)?;
        let ([hidden, _], [out_f, inner]) = (first.0.dims, second.0.dims);
        if inner != hidden {
            return Err(Error::shape(
                OP,
                format!(
                    "the first weight {:?} gives {hidden} features, the second {:?} takes {inner}",
                    first.0.dims, second.0.dims
                ),
            ));
        }
        if second.0.precision != first.0.precision {
            return Err(Error::value(
                OP,
                format!(
                    "weights in {} and {}: pack both alike",
                    first.0.precision, second.0.precision
                ),
            ));
        }
        check_bias(OP, second.1, out_f)?;
        let data = self.storage().packed_feed_forward(
            (&first.0.data, first.1.map(|b| b.storage())),
            between.unary(),
            (&second.0.data, second.1.map(|b| b.storage())),
            m,
        )?;
        Ok(self.with_features(data, out_f))
    }

    /// The checks of a product with a packed weight; the number of rows.
    fn check_packed(
        &self,
        op: &str,
        weight: &PackedWeight,
        bias: Option<&Tensor>,
    ) -> Result<usize> {
        let [out_f, in_f] = weight.dims;
        if self.rank() == 0 || self.dims()[self.rank() - 1] != in_f {
            return Err(Error::shape(
                op,
                format!(
                    "input {} must end in {in_f} features for weight {:?}",
                    self.shape(),
                    weight.dims
                ),
            ));
        }
        if self.dtype() != DType::F32 {
            return Err(Error::dtype(op, format!("takes an f32 input, got {}", self.dtype())));
        }
        check_bias(op, bias, out_f)?;
        if crate::is_grad_enabled() && self.requires_grad() {
            return Err(Error::autograd(
                op,
                format!(
                    "{} products have no gradient; run them under no_grad, or train in f32",
                    weight.precision
                ),
            ));
        }
        Ok(self.numel() / in_f.max(1))
    }

    /// `data` in this tensor's shape with the last dimension `features` long.
    fn with_features(&self, data: Storage, features: usize) -> Tensor {
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked") = features;
        Tensor::from_storage(data, Shape::from_vec(dims))
    }
}

/// A bias for `features` outputs: f32, (features,), wanting no gradient when one is recorded.
fn check_bias(op: &str, bias: Option<&Tensor>, features: usize) -> Result<()> {
    let Some(b) = bias else { return Ok(()) };
    if b.dtype() != DType::F32 {
        return Err(Error::dtype(op, format!("takes an f32 bias, got {}", b.dtype())));
    }
    if b.dims() != [features] {
        return Err(Error::shape(op, format!("bias must be ({features},), got {}", b.shape())));
    }
    if crate::is_grad_enabled() && b.requires_grad() {
        return Err(Error::autograd(
            op,
            "packed products have no gradient; run them under no_grad, or train in f32",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{no_grad, Rng};

    #[test]
    fn packed_products_name_what_does_not_fit() {
        let mut rng = Rng::seed(1);
        let mut randn =
            |dims: &[usize]| Tensor::randn(dims, 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let (x, w1, w2) = (randn(&[4, 6]), randn(&[10, 6]), randn(&[3, 10]));
        let int8 = |w: &Tensor| w.quantize(Precision::Int8).unwrap();
        let (p1, p2) = (int8(&w1), int8(&w2));
        let message = |r: Result<Tensor>| r.unwrap_err().to_string();
        let _g = no_grad();
        let crossed = x.feed_forward_packed((&p1, None), Nonlinearity::Relu, (&p1, None));
        assert!(message(crossed).contains("gives 10 features, the second [10, 6] takes 6"));
        let bf16 = w2.quantize(Precision::Bf16).unwrap();
        let mixed = x.feed_forward_packed((&p1, None), Nonlinearity::Relu, (&bf16, None));
        assert!(message(mixed).contains("int8 and bf16"));
        let bias = Tensor::zeros(&[4], DType::F32).unwrap();
        let wrong_bias = x.feed_forward_packed((&p1, None), Nonlinearity::Gelu, (&p2, Some(&bias)));
        assert!(message(wrong_bias).contains("bias must be (3,), got [4]"));
        let narrow =
            randn(&[4, 5]).feed_forward_packed((&p1, None), Nonlinearity::Gelu, (&p2, None));
        assert!(message(narrow).contains("must end in 6 features"));
        drop(_g);
        let wants_grad = x.requiring_grad();
        assert!(message(wants_grad.linear_packed(&p1, None)).contains("no gradient"));
        let pair = wants_grad.feed_forward_packed((&p1, None), Nonlinearity::Gelu, (&p2, None));
        assert!(message(pair).contains("no gradient"));
    }
}
