//! Finite-difference gradient checking in f64, for users and for every op and block here.

use crate::{DType, Error, Result, Rng, Tensor};

/// How a gradcheck went: the largest disagreement found, and where.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    /// (input number, element index) of the worst disagreement.
    pub worst: (usize, usize),
}

/// Compares the analytic gradient of `f` at `inputs` with central differences.
///
/// `f` maps the inputs to any tensor; both sides differentiate `Σ f(x) ⊙ r` for a fixed
/// random `r`, which checks the whole Jacobian against one random direction per output.
/// Inputs are converted to f64 first; i64 inputs (ids) are passed through undifferentiated.
/// Fails with an error naming the input and element when any gradient element disagrees by
/// more than `atol + rtol·|numeric|`.
///
/// ```
/// use ferrograd::{gradcheck, Tensor};
/// let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], &[3]).unwrap();
/// gradcheck(|xs| xs[0].tanh()?.mul(&xs[0]), &[x], 1e-6, 1e-6).unwrap();
/// ```
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    atol: f64,
    rtol: f64,
) -> Result<GradcheckReport> {
    let eps = 1e-6;
    let base: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                t.to_dtype(DType::F64).map(|t| t.detach())
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<_>>()?;
    let leaves: Vec<Tensor> = base
        .iter()
        .map(|t| if t.dtype().is_float() { t.requiring_grad() } else { t.clone() })
        .collect();
    let out = f(&leaves)?;
    let mut rng = Rng::seed(0x5eed);
    let r = Tensor::randn(out.dims(), 0.0, 1.0, DType::F64, &mut rng)?;
    let objective = |xs: &[Tensor]| -> Result<f64> {
        let _g = crate::no_grad();
        f(xs)?.to_dtype(DType::F64)?.mul(&r)?.sum_all()?.item()
    };
    let grads = out.to_dtype(DType::F64)?.mul(&r)?.sum_all()?.backward()?;
    let mut report = GradcheckReport { max_abs_error: 0.0, max_rel_error: 0.0, worst: (0, 0) };
    for (i, leaf) in leaves.iter().enumerate() {
        if !leaf.dtype().is_float() {
            continue;
        }
        let analytic = match grads.get(leaf) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; leaf.numel()],
        };
        let values = base[i].to_vec::<f64>()?;
        for j in 0..values.len() {
            let probe = |delta: f64| -> Result<f64> {
                let mut v = values.clone();
                v[j] += delta;
                let mut xs = base.clone();
                xs[i] = Tensor::from_vec(v, base[i].dims())?;
                objective(&xs)
            };
            let numeric = (probe(eps)? - probe(-eps)?) / (2.0 * eps);
            let abs = (analytic[j] - numeric).abs();
            let rel = abs / numeric.abs().max(1e-12);
            if abs > report.max_abs_error {
                report = GradcheckReport { max_abs_error: abs, max_rel_error: rel, worst: (i, j) };
            }
            if abs > atol + rtol * numeric.abs() {
                return Err(Error::value(
                    "gradcheck",
                    format!("input {i}, element {j}: analytic gradient {} vs numeric {numeric} (difference {abs:e})", analytic[j]),
                ));
            }
        }
    }
    Ok(report)
}
