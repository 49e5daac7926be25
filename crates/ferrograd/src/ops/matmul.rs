//! Matrix products: 2-D and batched, batch dimensions broadcast. Backward passes read their
//! operands transposed through strides, with no copy.

use super::float_dtype;
use crate::backend::cpu;
use crate::backend::{BackendStorage, Products};
use crate::shape::{broadcast_shapes, broadcast_strides};
use crate::{Error, Result, Shape, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

impl Tensor {
    /// `self · rhs` over the last two dimensions: (…, m, k) · (…, k, n) → (…, m, n), with the
    /// leading (batch) dimensions broadcast.
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    /// let c = Tensor::zeros(&[3, 5], ferrograd::DType::F32).unwrap();
    /// let err = a.matmul(&c).unwrap_err().to_string();
    /// assert_eq!(err, "matmul: [2, 2] × [3, 5]: inner dimensions differ (2 vs 3)");
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = product(self, false, rhs, false, true)?;
        let (a, b) = (self.clone(), rhs.clone());
        Ok(out.with_history("matmul", &[self, rhs], move |g| {
            let (ga, gb) = side_by_side(
                a.requires_grad(),
                |threads| product(g, false, &b, true, threads)?.sum_to_shape(a.shape()),
                b.requires_grad(),
                |threads| product(&a, true, g, false, threads)?.sum_to_shape(b.shape()),
            )?;
            Ok(vec![ga, gb])
        }))
    }
}

/// The two gradients of a product, each only when `needed`. When both are, they run side by
/// side, each on its share of the threads: two products of equal work balance better than
/// gemm's split of each (whose blocks leave a thread waiting at 128-wide outputs: W7's
/// projections used two threads at 70–85%).
fn side_by_side<A: Send, B: Send>(
    a_needed: bool,
    a: impl FnOnce(bool) -> Result<A> + Send,
    b_needed: bool,
    b: impl FnOnce(bool) -> Result<B> + Send,
) -> Result<(Option<A>, Option<B>)> {
    match (a_needed, b_needed) {
        (true, true) => {
            // Two threads: one each. More: each product may still split. The other thread
            // records a graph, or not, as this one does.
            let threads = rayon::current_num_threads() > 2;
            let recording = crate::is_grad_enabled();
            let (ga, gb) = cpu::join_polling(
                || a(threads),
                || {
                    let _off = (!recording).then(crate::no_grad);
                    b(threads)
                },
            );
            Ok((Some(ga?), Some(gb?)))
        }
        (true, false) => Ok((Some(a(true)?), None)),
        (false, true) => Ok((None, Some(b(true)?))),
        (false, false) => Ok((None, None)),
    }
}

/// `op(a) · op(b)` where `op` transposes the last two dimensions when asked, on all threads
/// or only this one; no history.
fn product(a: &Tensor, a_t: bool, b: &Tensor, b_t: bool, threads: bool) -> Result<Tensor> {
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            "matmul",
            format!(
                "needs operands of rank 2 or more, got {} and {}; unsqueeze a vector first",
                a.shape(),
                b.shape()
            ),
        ));
    }
    // Logical (rows, cols) of each operand after the optional transpose, and their strides.
    let view = |t: &Tensor, tr: bool| {
        let (r, c) = (t.dims()[t.rank() - 2], t.dims()[t.rank() - 1]);
        if tr {
            (c, r, 1, c)
        } else {
            (r, c, c, 1)
        }
    };
    let (m, k, a_rs, a_cs) = view(a, a_t);
    let (k2, n, b_rs, b_cs) = view(b, b_t);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("{} × {}: inner dimensions differ ({k} vs {k2})", a.shape(), b.shape()),
        ));
    }
    let batch_a = Shape::from_vec(a.dims()[..a.rank() - 2].to_vec());
    let batch_b = Shape::from_vec(b.dims()[..b.rank() - 2].to_vec());
    let batch = broadcast_shapes("matmul", &batch_a, &batch_b)?;
    let offsets = |own: &Shape, size: usize| -> Vec<usize> {
        let strides = broadcast_strides(own, &batch);
        (0..batch.numel())
            .map(|mut i| {
                let mut off = 0;
                for d in (0..batch.rank()).rev() {
                    off += (i % batch.dims()[d]) * strides[d];
                    i /= batch.dims()[d];
                }
                off * size
            })
            .collect()
    };
    float_dtype("matmul", &[a, b])?;
    let mut dims = batch.dims().to_vec();
    dims.extend([m, n]);
    let shape = crate::shape::output_shape("matmul", dims)?;
    let products = Products {
        m,
        k,
        n,
        a_strides: (a_rs, a_cs),
        b_strides: (b_rs, b_cs),
        a_offsets: offsets(&batch_a, m * k),
        b_offsets: offsets(&batch_b, k * n),
        threads,
    };
    let data = a.storage().matmul(b.storage(), &products)?;
    Ok(Tensor::from_storage(data, shape))
}

impl Tensor {
    /// `x · Wᵀ + b` for (…, in) `x`, an (out, in) weight and an optional (out,) bias: PyTorch's
    /// `F.linear`, the affine map of FeedForward. The weight is read transposed in place.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "linear";
        if weight.rank() != 2 {
            return Err(Error::shape(
                OP,
                format!("weight must be (out, in), got {}", weight.shape()),
            ));
        }
        let (out_f, in_f) = (weight.dims()[0], weight.dims()[1]);
        if self.rank() == 0 || self.dims()[self.rank() - 1] != in_f {
            return Err(Error::shape(
                OP,
                format!(
                    "input {} must end in {in_f} features for weight {}",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        if let Some(b) = bias {
            if b.dims() != [out_f] {
                return Err(Error::shape(
                    OP,
                    format!("bias must be ({out_f},), got {}", b.shape()),
                ));
            }
        }
        let m = self.dims()[..self.rank() - 1].iter().product();
        let mut dims = self.dims().to_vec();
        *dims.last_mut().expect("rank checked above") = out_f;
        let recorded = crate::is_grad_enabled()
            && (self.requires_grad()
                || weight.requires_grad()
                || bias.is_some_and(Tensor::requires_grad));
        if let (Some(b), false) = (bias, recorded) {
            // No history to keep: the product straight from the input, in the output's shape
            // (a step of generation runs dozens of these on one row each).
            return affine(self, (m, in_f), weight, b, dims);
        }
        let x2 = self.detach().reshape(&[m, in_f])?;
        let y = match bias {
            None => product(&x2, false, weight, true, true)?,
            Some(b) => affine(&x2, (m, in_f), weight, b, vec![m, out_f])?,
        };
        let y = y.reshape(&dims)?.detach();
        let (w, x_needs, w_needs) = (weight.detach(), self.requires_grad(), weight.requires_grad());
        let has_bias = bias.is_some();
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        let n_inputs = inputs.len();
        let x_shape = self.shape().clone();
        Ok(y.with_history(OP, &inputs, move |g| {
            let g2 = g.reshape(&[m, out_f])?;
            // The bias gradient, a sum over rows on one thread, goes to whichever product ends
            // first (the weight's, given it, ended 60 µs after the input's on average in W7).
            let bias_taken = AtomicBool::new(!has_bias);
            let bias_grad = || -> Result<Option<Tensor>> {
                match bias_taken.swap(true, Ordering::AcqRel) {
                    true => Ok(None),
                    false => g2.sum(&[0], false).map(Some),
                }
            };
            let (dx_db, dw_db) = side_by_side(
                x_needs,
                |threads| {
                    let dx = product(&g2, false, &w, false, threads)?.reshape(x_shape.dims())?;
                    Ok((dx, bias_grad()?))
                },
                w_needs || has_bias,
                |threads| {
                    let dw =
                        w_needs.then(|| product(&g2, true, &x2, false, threads)).transpose()?;
                    Ok((dw, bias_grad()?))
                },
            )?;
            let (dx, db_a) = dx_db.map_or((None, None), |(dx, db)| (Some(dx), db));
            let (dw, db_b) = dw_db.unwrap_or((None, None));
            let mut grads = vec![dx, dw, db_a.or(db_b)];
            grads.truncate(n_inputs);
            Ok(grads)
        }))
    }
}

/// `x · Wᵀ + b` for `x` holding (m, k) rows, in one product (gemm adds onto rows holding `b`),
/// shaped `dims`; no history.
fn affine(
    x: &Tensor,
    (m, k): (usize, usize),
    weight: &Tensor,
    bias: &Tensor,
    dims: Vec<usize>,
) -> Result<Tensor> {
    const OP: &str = "linear";
    float_dtype(OP, &[x, weight])?;
    if bias.dtype() != x.dtype() {
        return Err(Error::dtype(
            OP,
            format!("bias must be {} like the input, got {}", x.dtype(), bias.dtype()),
        ));
    }
    let shape = crate::shape::output_shape(OP, dims)?;
    let data = x.storage().affine(weight.storage(), bias.storage(), m, k)?;
    Ok(Tensor::from_storage(data, shape))
}
