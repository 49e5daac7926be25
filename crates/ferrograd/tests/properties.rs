//! Random shapes, strides, paddings, indices and dtypes thrown at every op family, forward and
//! backward: each call must return `Ok` or `Err`, never panic. The inputs are small (at most
//! four dimensions of at most four), so a fixed seed covers many combinations in a second.
//!
//! `FERROGRAD_PROPERTY_CASES=N` runs N cases instead of the default; `FERROGRAD_PROPERTY_SEED`
//! changes them.

use ferrograd::{DType, RecurrentCell, Rng, Shape, Tensor};

/// Draws the arguments of one case: mostly of one dtype, so that ops get past their dtype
/// checks to the shapes.
struct Draw(Rng, DType);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }

    /// Mostly 0 to 4, sometimes far beyond any size.
    fn size(&mut self) -> usize {
        match self.below(20) {
            0 => usize::MAX,
            1 => 1 << 40,
            _ => self.below(5),
        }
    }

    /// A dimension index, in range or out of it, negative or not.
    fn dim(&mut self) -> isize {
        self.below(11) as isize - 5
    }

    fn dims(&mut self) -> Vec<usize> {
        (0..self.below(5)).map(|_| self.below(5)).collect()
    }

    fn dtype(&mut self) -> DType {
        match self.below(8) {
            0 => DType::F64,
            1 => DType::I64,
            _ => self.1,
        }
    }

    /// A tensor of random dims and dtype, often a view with other strides (a transpose, a
    /// narrowing or a broadcast), and for floats often requiring a gradient.
    fn tensor(&mut self) -> Tensor {
        let dims = self.dims();
        self.shaped(&dims)
    }

    /// Mostly `dims`, sometimes one dimension off: the shapes structured ops expect.
    fn near(&mut self, dims: &[usize]) -> Tensor {
        let mut dims = dims.to_vec();
        if !dims.is_empty() && self.below(4) == 0 {
            let i = self.below(dims.len());
            dims[i] = self.below(5);
        }
        self.shaped(&dims)
    }

    fn shaped(&mut self, dims: &[usize]) -> Tensor {
        let dims = dims.to_vec();
        let dtype = self.dtype();
        let mut t = Tensor::randn(&dims, 0.0, 2.0, DType::F64, &mut self.0)
            .and_then(|t| t.to_dtype(dtype))
            .expect("a small tensor");
        if dtype != DType::I64 && self.coin() {
            t = t.requiring_grad();
        }
        let rank = dims.len();
        let view = match self.below(4) {
            0 if rank >= 2 => t.transpose(0, rank as isize - 1),
            1 if rank >= 1 && dims[0] > 0 => {
                let start = self.below(dims[0]);
                t.narrow(0, start, dims[0] - start)
            }
            2 => {
                let mut wider = vec![self.below(3)];
                wider.extend(&dims);
                t.broadcast_to(&wider)
            }
            _ => Ok(t.clone()),
        };
        view.unwrap_or(t)
    }

    /// Ids for index ops: in range, negative or past the end.
    fn ids(&mut self) -> Tensor {
        let dims = self.dims();
        let n = dims.iter().product();
        let v: Vec<i64> = (0..n).map(|_| self.below(9) as i64 - 2).collect();
        Tensor::from_vec(v, &dims).expect("ids")
    }

    fn pair(&mut self) -> (usize, usize) {
        (self.below(4), self.below(4))
    }

    fn dim_list(&mut self) -> Vec<isize> {
        (0..self.below(4)).map(|_| self.dim()).collect()
    }
}

/// Calls one op of family `family` on random arguments.
fn call(family: usize, d: &mut Draw) -> ferrograd::Result<Tensor> {
    let x = d.tensor();
    match family {
        0 => [Tensor::exp, Tensor::log, Tensor::sqrt, Tensor::abs, Tensor::tanh, Tensor::sigmoid]
            [d.below(6)](&x),
        1 => [Tensor::relu, Tensor::gelu, Tensor::gelu_tanh, Tensor::neg][d.below(4)](&x),
        2 => match d.below(4) {
            0 => x.pow([0.5, 2.0, -1.0, f64::NAN][d.below(4)]),
            1 => x.affine(2.0, -1.0),
            2 => x.add_scalar(f64::INFINITY),
            _ => x.mul_scalar(0.5),
        },
        3 => [Tensor::add, Tensor::sub, Tensor::mul, Tensor::div][d.below(4)](&x, &d.tensor()),
        4 => [Tensor::eq, Tensor::ne, Tensor::lt, Tensor::le, Tensor::gt, Tensor::ge][d.below(6)](
            &x,
            &d.tensor(),
        ),
        5 => x.where_cond(&d.tensor(), &d.tensor()),
        6 => x.masked_fill(&d.tensor(), -1e9),
        7 => x.to_dtype(d.dtype()),
        8 => {
            let (n, c, h, w) = (d.below(3), 1 + d.below(3), d.below(6), d.below(6));
            let x = d.near(&[n, c, h, w]);
            let o = d.below(3);
            let kernel = [o, c, 1 + d.below(3), 1 + d.below(3)];
            let w = d.near(&kernel);
            let b = d.coin().then(|| d.near(&[o]));
            let (stride, padding) = (d.pair(), d.pair());
            match d.coin() {
                true => x.conv2d(&w, b.as_ref(), stride, padding),
                false => x.conv2d_relu(&w, b.as_ref(), stride, padding),
            }
        }
        9 => {
            let dims = [d.below(3), d.below(3), d.below(6), d.below(6)];
            let x = d.near(&dims);
            x.max_pool2d(d.pair(), d.pair(), d.pair())
        }
        10 => match d.coin() {
            true => x.softmax(d.dim()),
            false => x.log_softmax(d.dim()),
        },
        11 => {
            let (n, c) = (d.below(4), d.below(4));
            let scores = d.near(&[n, c]);
            let targets: Vec<i64> = (0..n).map(|_| d.below(c + 2) as i64 - 1).collect();
            let targets = Tensor::from_vec(targets, &[n]).expect("targets");
            scores.cross_entropy(&targets, d.coin().then_some(-1))
        }
        12 => x.mse_loss(&d.tensor()),
        13 => {
            let mut dims = x.dims().to_vec();
            dims.reverse();
            x.matmul(&d.near(&dims))
        }
        14 => {
            let (inputs, outputs) = (x.dims().last().copied().unwrap_or(0), d.below(4));
            let (w, b) = (d.near(&[outputs, inputs]), d.coin().then(|| d.near(&[outputs])));
            x.linear(&w, b.as_ref())
        }
        15 => {
            let dims: Vec<usize> = (0..d.below(4)).map(|_| d.size()).collect();
            x.reshape(&dims)
        }
        16 => {
            let perm: Vec<usize> = (0..d.below(5)).map(|_| d.below(5)).collect();
            x.permute(&perm)
        }
        17 => match d.below(4) {
            0 => x.transpose(d.dim(), d.dim()),
            1 => x.unsqueeze(d.dim()),
            2 => x.squeeze(d.dim()),
            _ => x.flatten_from(d.dim()),
        },
        18 => x.narrow(d.dim(), d.size(), d.size()),
        19 => {
            let all: Vec<Tensor> =
                std::iter::once(x).chain((0..d.below(3)).map(|_| d.tensor())).collect();
            match d.coin() {
                true => Tensor::concat(&all, d.dim()),
                false => Tensor::stack(&all, d.dim()),
            }
        }
        20 => {
            let dims: Vec<usize> = (0..d.below(5)).map(|_| d.size()).collect();
            x.broadcast_to(&dims)
        }
        21 => match d.below(3) {
            0 => x.index_select(d.dim(), &d.ids()),
            1 => x.gather(d.dim(), &d.ids()),
            _ => x.scatter_add(d.dim(), &d.ids(), &d.tensor()),
        },
        22 => {
            let last = x.dims().last().copied().unwrap_or(0);
            x.layer_norm(&d.near(&[last]), &d.near(&[last]), [1e-5, 0.0, -1.0][d.below(3)])
        }
        23 => {
            let (cell, gates) =
                if d.coin() { (RecurrentCell::Tanh, 1) } else { (RecurrentCell::Lstm, 4) };
            let (b, t, h) = (d.below(3), d.below(4), d.below(4));
            let x = d.near(&[b, t, gates * h]);
            let mask = d.coin().then(|| d.near(&[b, t]));
            let (w, h0, c0) = (d.near(&[gates * h, h]), d.near(&[b, h]), d.near(&[b, h]));
            x.recurrence(cell, &w, &h0, &c0, mask.as_ref())
                .and_then(|r| r.outputs.add(&r.h_n.sum_all()?)?.add(&r.c_n.sum_all()?))
        }
        24 => {
            let (dims, keep) = (d.dim_list(), d.coin());
            [Tensor::sum, Tensor::mean, Tensor::max, Tensor::min][d.below(4)](&x, &dims, keep)
        }
        25 => match d.below(4) {
            0 => x.argmax(d.dim(), d.coin()),
            1 => x.argmin(d.dim(), d.coin()),
            2 => x.sum_all(),
            _ => x.mean_all(),
        },
        26 => {
            let dims = d.dims();
            x.sum_to_shape(&Shape::from(&dims[..]))
        }
        _ => {
            let heads = d.below(3);
            let (b, t, s, e) = (d.below(3), d.below(4), d.below(4), heads * d.below(3));
            let (q, k, v) = (d.near(&[b, t, e]), d.near(&[b, s, e]), d.near(&[b, s, e]));
            let mask = d.coin().then(|| d.near(&[b, s]));
            q.attention(&k, &v, heads, mask.as_ref(), d.coin())
        }
    }
}

const FAMILIES: usize = 28;

/// The forward call, then backward through it when it gave a float tensor.
fn case(family: usize, d: &mut Draw) -> (bool, bool) {
    let Ok(y) = call(family, d) else { return (false, false) };
    let backward = y.requires_grad() && y.sum_all().and_then(|s| s.backward()).is_ok();
    let _ = y.to_vec_f64();
    (true, backward)
}

#[test]
fn random_arguments_to_every_op_family_give_ok_or_err_never_a_panic() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("FERROGRAD_PROPERTY_CASES").unwrap_or(40_000) as usize;
    let seed = env("FERROGRAD_PROPERTY_SEED").unwrap_or(21);
    let mut d = Draw(Rng::seed(seed), DType::F32);
    let (mut ok, mut backward, mut panics) = (vec![0usize; FAMILIES], 0, Vec::new());
    for i in 0..cases {
        let family = i % FAMILIES;
        // Each case draws from its own generator, so a failing one can be rerun alone.
        let case_seed = d.0.next_u64();
        let mut draw = Draw(Rng::seed(case_seed), DType::F32);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(family, &mut draw))) {
            Ok((forward, back)) => {
                ok[family] += usize::from(forward);
                backward += usize::from(back);
            }
            Err(_) => panics.push(format!("family {family}, case seed {case_seed}")),
        }
    }
    eprintln!(
        "{cases} cases over {FAMILIES} op families: {} Ok forward ({backward} with a backward \
         pass), the rest Err",
        ok.iter().sum::<usize>()
    );
    assert!(panics.is_empty(), "{} panics:\n{}", panics.len(), panics.join("\n"));
    // Each family must have been reached with arguments it accepts, or the draws test nothing.
    eprintln!("Ok forward by family: {ok:?}");
    for (family, &n) in ok.iter().enumerate() {
        assert!(n > 0, "family {family} never returned Ok");
    }
}
