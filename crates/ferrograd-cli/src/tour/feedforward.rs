//! Chapter 1: feedforward networks, with `backward` and the update written out by hand.

use ferrograd::{gradcheck, no_grad, DType, Result, Rng, Tensor};
use ferrograd_data::synthetic::spirals;
use ferrograd_nn::losses::accuracy;

/// The parameters of three FeedForward layers: (V, b) for each.
struct Mlp {
    layers: Vec<(Tensor, Tensor)>,
}

impl Mlp {
    fn new(sizes: &[usize], rng: &mut Rng, dtype: DType) -> Result<Mlp> {
        let layers = sizes
            .windows(2)
            .map(|w| {
                let v = Tensor::randn(&[w[0], w[1]], 0.0, (1.0 / w[0] as f64).sqrt(), dtype, rng)?;
                Ok((v.requiring_grad(), Tensor::zeros(&[w[1]], dtype)?.requiring_grad()))
            })
            .collect::<Result<_>>()?;
        Ok(Mlp { layers })
    }

    /// score = b3 + V3 σ(b2 + V2 σ(b1 + V1 φ(x))), σ = tanh, φ(x) = x: the lecture's formula.
    fn score(&self, x: &Tensor) -> Result<Tensor> {
        score(x, &self.params())
    }

    fn params(&self) -> Vec<Tensor> {
        self.layers.iter().flat_map(|(v, b)| [v.clone(), b.clone()]).collect()
    }
}

/// The lecture's score, written as an ordinary program over (V, b) pairs.
fn score(x: &Tensor, params: &[Tensor]) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, vb) in params.chunks(2).enumerate() {
        if i > 0 {
            h = h.tanh()?; // σ
        }
        h = h.matmul(&vb[0])?.add(&vb[1])?; // b + V h
    }
    Ok(h)
}

/// Chapter 1: the lecture's score as a program, its gradient by `backward` checked against
/// finite differences, and FeedForward³ fitted to spirals by gradient descent written out.
pub fn chapter() -> Result<()> {
    let mut rng = Rng::seed(7);
    println!("   score = b3 + V3 σ(b2 + V2 σ(b1 + V1 φ(x)))   as a program:");
    println!("       for (V, b) in layers {{ h = σ(h); h = h.matmul(V)?.add(b)?; }}   // σ skipped first\n");

    // Differentiate it: backward gives every ∂score/∂parameter; gradcheck confirms them.
    let small = Mlp::new(&[2, 4, 4, 1], &mut rng, DType::F64)?;
    let x = Tensor::from_vec(vec![0.5f64, -0.3], &[1, 2])?;
    let s = small.score(&x)?;
    let grads = s.sum_all()?.backward()?;
    let dv1 =
        grads.get(&small.layers[0].0).map(|g| g.to_vec_f64()).transpose()?.unwrap_or_default();
    println!("   score(φ(x) = (0.5, -0.3)) = {:.6}", s.item()?);
    println!("   ∂score/∂V1 by backward   = {}", fmt_vec(&dv1));
    let report = gradcheck(|p| score(&x, p), &small.params(), 1e-7, 1e-6)?;
    println!(
        "   finite differences agree with backward to {:.1e} (gradcheck, f64)\n",
        report.max_abs_error
    );

    // Fit FeedForward^3 to three interleaved spirals with gradient descent (momentum 0.9).
    let (x, y) = spirals(720, 3, 0.03, &mut rng)?;
    let (train_x, test_x) = (x.narrow(0, 0, 600)?, x.narrow(0, 600, 120)?);
    let (train_y, test_y) = (y.narrow(0, 0, 600)?, y.narrow(0, 600, 120)?);
    let mut mlp = Mlp::new(&[2, 64, 64, 3], &mut rng, DType::F32)?;
    let mut velocity: Vec<Tensor> =
        mlp.params().iter().map(|p| p.zeros_like()).collect::<Result<_>>()?;
    let (lr, momentum, steps) = (0.1, 0.9, 1500);
    println!("   fitting FeedForward^3 (2→64→64→3, tanh) to 3 spirals: 600 points, 120 held out");
    for step in 0..=steps {
        let loss = mlp.score(&train_x)?.cross_entropy(&train_y, None)?;
        if step % 250 == 0 {
            println!("     step {step:>5}   loss {:.4}", loss.item()?);
        }
        if step == steps {
            break;
        }
        let grads = loss.backward()?;
        let _g = no_grad();
        let params = mlp.params();
        let mut new = Vec::with_capacity(params.len());
        for (p, v) in params.iter().zip(velocity.iter_mut()) {
            let g = grads.get(p).cloned().unwrap_or(p.zeros_like()?);
            *v = v.mul_scalar(momentum)?.add(&g)?;
            new.push(p.sub(&v.mul_scalar(lr)?)?.requiring_grad());
        }
        mlp.layers = new.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
    }
    let _g = no_grad();
    let acc = accuracy(&mlp.score(&test_x)?, &test_y)?;
    println!("   held-out accuracy: {:.1}%\n", 100.0 * acc);
    draw_regions(&mlp, &test_x, &test_y)?;
    Ok(())
}

/// The plane as characters: each cell the class the network picks (a, b, c), held-out points
/// drawn as their true class in capitals.
fn draw_regions(mlp: &Mlp, x: &Tensor, y: &Tensor) -> Result<()> {
    let (rows, cols) = (21usize, 57usize);
    let mut grid = Vec::with_capacity(rows * cols * 2);
    for r in 0..rows {
        for c in 0..cols {
            grid.push(-1.1 + 2.2 * c as f32 / (cols - 1) as f32);
            grid.push(1.1 - 2.2 * r as f32 / (rows - 1) as f32);
        }
    }
    let pred = mlp
        .score(&Tensor::from_vec(grid, &[rows * cols, 2])?)?
        .argmax(-1, false)?
        .to_vec::<i64>()?;
    let mut canvas: Vec<Vec<char>> = (0..rows)
        .map(|r| (0..cols).map(|c| ['·', '░', '▒'][pred[r * cols + c] as usize % 3]).collect())
        .collect();
    let (pts, labels) = (x.to_vec::<f32>()?, y.to_vec::<i64>()?);
    for (p, &l) in pts.chunks(2).zip(&labels) {
        let c = (((p[0] + 1.1) / 2.2) * (cols - 1) as f32).round() as isize;
        let r = (((1.1 - p[1]) / 2.2) * (rows - 1) as f32).round() as isize;
        if (0..rows as isize).contains(&r) && (0..cols as isize).contains(&c) {
            canvas[r as usize][c as usize] = ['A', 'B', 'C'][l as usize % 3];
        }
    }
    println!("   decision regions (· ░ ▒ = regions of classes A B C; letters = held-out points):");
    for row in canvas {
        println!("     │{}│", row.into_iter().collect::<String>());
    }
    Ok(())
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
    format!("[{}{}]", parts.join(", "), if v.len() > 4 { ", ..." } else { "" })
}
