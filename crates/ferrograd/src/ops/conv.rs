//! Convolution and max pooling over (N, C, H, W) images, forward and backward.

use crate::backend::{BackendStorage, Window};
use crate::{Error, Result, Shape, Tensor};

/// Output size along one axis, or an error naming the axis when the window does not fit.
fn out_size(
    op: &str,
    axis: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        return Err(Error::value(
            op,
            format!(
                "kernel and stride must be positive, got kernel {kernel}, stride {stride} ({axis})"
            ),
        ));
    }
    let padded = pad.checked_mul(2).and_then(|p| p.checked_add(input)).ok_or_else(|| {
        Error::value(op, format!("{axis}: padding {pad} is larger than any input"))
    })?;
    if padded < kernel {
        return Err(Error::shape(
            op,
            format!("{axis}: input of size {input} with padding {pad} is smaller than the kernel ({kernel})"),
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

fn window(
    op: &str,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Window> {
    if x.rank() != 4 {
        return Err(Error::shape(op, format!("input must be (N, C, H, W), got {}", x.shape())));
    }
    let d = x.dims();
    Ok(Window {
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
        kh: kernel.0,
        kw: kernel.1,
        sh: stride.0,
        sw: stride.1,
        ph: padding.0,
        pw: padding.1,
        oh: out_size(op, "height", d[2], kernel.0, stride.0, padding.0)?,
        ow: out_size(op, "width", d[3], kernel.1, stride.1, padding.1)?,
    })
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as in PyTorch) of (N, C, H, W) images with
    /// (O, C, KH, KW) filters and an optional (O,) bias → (N, O, OH, OW).
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// // The lecture's example: a 5×5 image, a 3×3 filter, the 3×3 feature map.
    /// let image = Tensor::from_vec(vec![1.0f32, 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 0., 1., 1., 1.,
    ///                                   0., 0., 1., 1., 0., 0., 1., 1., 0., 0.], &[1, 1, 5, 5]).unwrap();
    /// let filter = Tensor::from_vec(vec![1.0f32, 0., 1., 0., 1., 0., 1., 0., 1.], &[1, 1, 3, 3]).unwrap();
    /// let map = image.conv2d(&filter, None, (1, 1), (0, 0)).unwrap();
    /// assert_eq!(map.to_vec::<f32>().unwrap(), vec![4., 3., 4., 2., 4., 3., 2., 3., 4.]);
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        self.convolve(weight, bias, stride, padding, false)
    }

    /// `relu(conv2d(...))` as one op (the lecture's Conv with σ = ReLU): the ReLU is applied as
    /// the output is written, and its gradient mask as backward reorders the gradient, instead
    /// of two more passes over the output (W3: 2.4M elements a step). `conv2d` then `relu` is
    /// its composed twin, which the tests compare it with.
    pub fn conv2d_relu(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        self.convolve(weight, bias, stride, padding, true)
    }

    fn convolve(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
        relu: bool,
    ) -> Result<Tensor> {
        const OP: &str = "conv";
        if weight.rank() != 4 {
            return Err(Error::shape(
                OP,
                format!("filters must be (O, C, KH, KW), got {}", weight.shape()),
            ));
        }
        let wd = weight.dims();
        let g = window(OP, self, (wd[2], wd[3]), stride, padding)?;
        if g.c != wd[1] {
            return Err(Error::shape(
                OP,
                format!("input has {} channels, the filter expects {}", g.c, wd[1]),
            ));
        }
        let o = wd[0];
        if let Some(b) = bias {
            if b.dims() != [o] {
                return Err(Error::shape(
                    OP,
                    format!("bias must be ({o},) for {o} filters, got {}", b.shape()),
                ));
            }
        }
        if !self.dtype().is_float() {
            return Err(Error::dtype(OP, format!("takes float images, got {}", self.dtype())));
        }
        if let Some(t) =
            [Some(weight), bias].into_iter().flatten().find(|t| t.dtype() != self.dtype())
        {
            return Err(Error::dtype(
                OP,
                format!("expects {} like the input, got {}", self.dtype(), t.dtype()),
            ));
        }
        let x_needs = self.requires_grad();
        let shape = crate::shape::output_shape(OP, vec![g.n, o, g.oh, g.ow])?;
        // The padded images, and the unfolded patches: C·KH·KW values for each of the N·OH·OW
        // outputs.
        let padded = [g.n, g.c, g.h + 2 * g.ph, g.w + 2 * g.pw];
        for buffer in [&padded[..], &[g.c, g.kh, g.kw, g.n, g.oh, g.ow]] {
            let bytes = buffer.iter().try_fold(8usize, |n, &d| n.checked_mul(d));
            crate::shape::room(OP, bytes, buffer)?;
        }
        let out =
            self.storage().conv2d(weight.storage(), bias.map(|b| b.storage()), o, &g, relu)?;
        let y = Tensor::from_storage(out, shape);
        // Backward makes im2col's columns again from the input (cheaper than keeping them: the
        // CPU backend's conv2d).
        let (x, w, w_shape) = (self.detach(), weight.detach(), weight.shape().clone());
        let rectified = relu.then(|| y.detach());
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        let n_inputs = inputs.len();
        Ok(y.with_history(OP, &inputs, move |grad| {
            let relu_out = rectified.as_ref().map(|y| y.storage());
            let (dx, dw, db) = grad.storage().conv2d_backward(
                x.storage(),
                w.storage(),
                o,
                &g,
                x_needs,
                relu_out,
            )?;
            let mut grads = vec![
                dx.map(|d| Tensor::from_storage(d, x.shape().clone())),
                Some(Tensor::from_storage(dw, w_shape)),
                Some(Tensor::from_storage(db, Shape::from_vec(vec![o]))),
            ];
            grads.truncate(n_inputs);
            Ok(grads)
        }))
    }

    /// Max pooling of (N, C, H, W) images over `kernel` windows; the gradient goes to each
    /// window's maximum (overlapping windows add up).
    ///
    /// ```
    /// use ferrograd::Tensor;
    /// // The lecture's example: 4×4, 2×2 filters, stride 2.
    /// let x = Tensor::from_vec(vec![1.0f32, 1., 2., 4., 5., 6., 7., 8., 3., 2., 1., 0., 1., 2., 3., 4.],
    ///                          &[1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![6., 8., 3., 4.]);
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "max_pool";
        let g = window(OP, self, kernel, stride, padding)?;
        if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
            return Err(Error::value(
                OP,
                format!("padding {padding:?} must be at most half the kernel {kernel:?}"),
            ));
        }
        if !self.dtype().is_float() {
            return Err(Error::dtype(OP, format!("takes float images, got {}", self.dtype())));
        }
        let out_shape = crate::shape::output_shape(OP, vec![g.n, g.c, g.oh, g.ow])?;
        let (out, saved) = self.storage().max_pool(&g)?;
        let in_shape = self.shape().clone();
        Ok(Tensor::from_op(out, out_shape, OP, &[self], move |grad| {
            let dx = grad.storage().max_pool_backward(&saved, &g)?;
            Ok(vec![Some(Tensor::from_storage(dx, in_shape))])
        }))
    }
}
