//! Products with weights in low precision, for inference: a weight is packed once
//! ([`Tensor::quantize`]) and every product with it ([`Tensor::linear_packed`]) reads the
//! packed form. There is no gradient through them; training keeps f32.

use crate::backend::{BackendStorage, Saved};
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Shape, Tensor};
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
        let [out_f, in_f] = weight.dims;
        if self.rank() == 0 || self.dims()[self.rank() - 1] != in_f {
            return Err(Error::shape(
                OP,
                format!(
                    "input {} must end in {in_f} features for weight {:?}",
                    self.shape(),
                    weight.dims
                ),
            ));
        }
        if self.dtype() != DType::F32 || bias.is_some_and(|b| b.dtype() != DType::F32) {
            return Err(Error::dtype(OP, "takes an f32 input and bias"));
        }
        if let Some(b) = bias.filter(|b| b.dims() != [out_f]) {
            return Err(Error::shape(OP, format!("bias must be ({out_f},), got {}", b.shape())));
        }
        if crate::is_grad_enabled()
            && (self.requires_grad() || bias.is_some_and(Tensor::requires_grad))
        {
            return Err(Error::autograd(
                OP,
                format!(
                    "{} products have no gradient; run them under no_grad, or train in f32",
                    weight.precision
                ),
            ));
        }
        let m = self.numel() / in_f.max(1);
        let data = self.storage().packed_affine(&weight.data, bias.map(|b| b.storage()), m)?;
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked above") = out_f;
        Ok(Tensor::from_storage(data, Shape::from_vec(dims)))
    }
}
