//! The autodiff machinery: accumulation, detach, no_grad, shared subgraphs, and memory that
//! does not grow with the number of steps run.

use ferrograd::{live_bytes, no_grad, DType, Rng, Tensor};

fn v(x: &Tensor) -> Vec<f64> {
    x.to_vec_f64().unwrap()
}

#[test]
fn gradients_of_a_reused_tensor_add_up() {
    let x = Tensor::from_vec(vec![2.0f64, -1.0], &[2]).unwrap().requiring_grad();
    // y = x·x + 3x, used twice through different paths: dy/dx = 2x + 3
    let y = x.mul(&x).unwrap().add(&x.mul_scalar(3.0).unwrap()).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(v(g.get(&x).unwrap()), vec![7.0, 1.0]);
}

#[test]
fn gradients_accumulate_across_passes() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap().requiring_grad();
    let mut total = x.mul_scalar(2.0).unwrap().sum_all().unwrap().backward().unwrap();
    total.accumulate(x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
    assert_eq!(v(total.get(&x).unwrap()), vec![4.0, 6.0]);
}

#[test]
fn sums_of_gradients_never_write_into_a_tensor_someone_still_holds() {
    // Gradient sums reuse a buffer only when nothing else holds it: the copies kept here, the
    // incoming gradient given to backward_with and a tensor used twice stay as they were.
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().requiring_grad();
    let seed = Tensor::from_vec(vec![1.0f32, 10.0, 100.0], &[3]).unwrap();
    let y = x.add(&x).unwrap().mul_scalar(2.0).unwrap();
    let mut total = y.backward_with(&seed).unwrap();
    assert_eq!(v(total.get(&x).unwrap()), vec![4.0, 40.0, 400.0]);
    assert_eq!(v(&seed), vec![1.0, 10.0, 100.0]);
    let kept = total.clone();
    let held = total.get(&x).unwrap().clone();
    total.accumulate(x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
    assert_eq!(v(total.get(&x).unwrap()), vec![6.0, 44.0, 406.0]);
    assert_eq!(v(&held), vec![4.0, 40.0, 400.0]);
    assert_eq!(v(kept.get(&x).unwrap()), vec![4.0, 40.0, 400.0]);
}

#[test]
fn detach_stops_the_gradient_and_no_grad_records_nothing() {
    let x = Tensor::from_vec(vec![3.0f64], &[1]).unwrap().requiring_grad();
    let y = x.mul(&x.detach()).unwrap().sum_all().unwrap();
    assert_eq!(v(y.backward().unwrap().get(&x).unwrap()), vec![3.0]);
    let z = {
        let _g = no_grad();
        assert!(!ferrograd::is_grad_enabled());
        x.mul(&x).unwrap()
    };
    assert!(ferrograd::is_grad_enabled());
    assert!(!z.requires_grad());
    assert!(z.sum_all().unwrap().backward().is_err());
}

#[test]
fn only_inputs_that_need_gradients_record() {
    let a = Tensor::ones(&[2], DType::F32).unwrap();
    let b = Tensor::ones(&[2], DType::F32).unwrap();
    assert!(!a.add(&b).unwrap().requires_grad());
    let w = b.requiring_grad();
    let g = a.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.len(), 1);
    assert!(g.get(&a).is_none());
}

#[test]
fn deep_graphs_do_not_overflow_the_stack() {
    let x = Tensor::from_vec(vec![1.0f64], &[1]).unwrap().requiring_grad();
    let mut y = x.clone();
    for _ in 0..20_000 {
        y = y.mul_scalar(1.0).unwrap();
    }
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(v(g.get(&x).unwrap()), vec![1.0]);
    // Nor does dropping a long chain that backward never freed.
    let mut z = x.clone();
    for _ in 0..200_000 {
        z = z.mul_scalar(1.0).unwrap();
    }
    std::thread::Builder::new().stack_size(1 << 16).spawn(move || drop(z)).unwrap().join().unwrap();
}

/// One training step of a small MLP; returns the loss.
fn step(params: &mut [Tensor], x: &Tensor, y: &Tensor) -> f64 {
    let h = x.matmul(&params[0]).unwrap().relu().unwrap();
    let loss = h.matmul(&params[1]).unwrap().cross_entropy(y, None).unwrap();
    let g = loss.backward().unwrap();
    for p in params.iter_mut() {
        *p = p.sub(&g.get(p).unwrap().mul_scalar(0.1).unwrap()).unwrap().detach().requiring_grad();
    }
    loss.item().unwrap()
}

#[test]
fn memory_stays_flat_over_many_steps() {
    let mut rng = Rng::seed(3);
    let x = Tensor::randn(&[64, 32], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let y = Tensor::from_vec((0..64).map(|i| i % 4).collect::<Vec<i64>>(), &[64]).unwrap();
    let mut params = vec![
        Tensor::randn(&[32, 64], 0.0, 0.2, DType::F32, &mut rng).unwrap().requiring_grad(),
        Tensor::randn(&[64, 4], 0.0, 0.2, DType::F32, &mut rng).unwrap().requiring_grad(),
    ];
    // Other tests in this binary allocate concurrently, so compare this thread's steady state
    // with generous slack: a leak of one step's graph (~30 KB) per step would add up to MBs.
    for _ in 0..5 {
        step(&mut params, &x, &y);
    }
    let before = live_bytes();
    let first = step(&mut params, &x, &y);
    let mut last = first;
    for _ in 0..300 {
        last = step(&mut params, &x, &y);
    }
    let after = live_bytes();
    assert!(last < first, "training should lower the loss");
    assert!(
        after < before + 2_000_000,
        "live tensor bytes grew from {before} to {after} over 300 steps"
    );
}

#[test]
fn streamed_pieces_are_the_final_gradients_each_once_the_last_layers_first() {
    use ferrograd::PieceSizes;
    let mut rng = Rng::seed(4);
    let mut leaf = |dims: &[usize]| {
        Tensor::randn(dims, 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad()
    };
    // Two layers, the second weight used twice, a bias the loss never reaches.
    let (w1, w2, unused) = (leaf(&[5, 7]), leaf(&[7, 3]), leaf(&[4]));
    let x = Tensor::randn(&[6, 5], 0.0, 1.0, DType::F64, &mut Rng::seed(5)).unwrap();
    let loss = || {
        let h = x.matmul(&w1).unwrap().tanh().unwrap();
        let y = h.matmul(&w2).unwrap();
        y.add(&h.matmul(&w2).unwrap().mul_scalar(0.5).unwrap()).unwrap().sum_all().unwrap()
    };
    let leaves = [w1.clone(), w2.clone(), unused.clone()];
    let whole = loss().backward_for(&leaves).unwrap();
    let mut pieces = Vec::new();
    let sizes = PieceSizes { first: 6, rest: 10 };
    let streamed = loss()
        .backward_streaming(&leaves, sizes, &mut |p| {
            pieces.push(p);
            Ok(())
        })
        .unwrap();
    let all = v(&whole.buckets()[0]);
    assert_eq!(v(&streamed.buckets()[0]), all);
    // w1 (35), w2 (21), the bias (4): pieces from the end, [54, 60) first, then 10 at a time,
    // tiling the bucket once, in that order.
    let ranges: Vec<_> = pieces.iter().map(|p| p.range.clone()).collect();
    assert_eq!(ranges, vec![54..60, 44..54, 34..44, 24..34, 14..24, 4..14, 0..4]);
    for p in &pieces {
        assert_eq!(p.bucket, 0);
        assert_eq!(v(&p.values), all[p.range.clone()].to_vec(), "{:?}", p.range);
    }
    let mut sums = loss().backward_for(&leaves).unwrap();
    for p in &pieces {
        sums.write_piece(p.bucket, p.range.start, &p.values.mul_scalar(2.0).unwrap()).unwrap();
    }
    assert_eq!(v(sums.get(&w2).unwrap()), v(&whole.get(&w2).unwrap().mul_scalar(2.0).unwrap()));
    assert!(sums.write_piece(0, 55, &pieces[0].values).is_err(), "past the bucket's end");
}

#[test]
fn piece_sizes_tile_a_bucket_from_its_end() {
    use ferrograd::PieceSizes;
    let sizes = PieceSizes { first: 3, rest: 4 };
    assert_eq!(sizes.cuts(12), vec![9..12, 5..9, 1..5, 0..1]);
    assert_eq!(sizes.cuts(2), vec![0..2]);
    assert!(sizes.cuts(0).is_empty());
    assert_eq!(PieceSizes { first: 0, rest: 0 }.cuts(2), vec![1..2, 0..1], "at least 1 a piece");
}
