//! The fused optimizer updates against their composed twins (the same formula written with
//! element-wise ops), in f64 and f32, and their in-place semantics.

use ferrograd::{DType, Rng, Tensor, Update};

fn randn(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(dims, 0.0, 1.0, dtype, &mut Rng::seed(seed)).unwrap()
}

/// The rule written with ops: the new weights and slots.
fn composed(w: &Tensor, g: &Tensor, slots: &[Tensor], rule: &Update) -> (Tensor, Vec<Tensor>) {
    match *rule {
        Update::Sgd { lr, weight_decay } => {
            let d = g.add(&w.mul_scalar(weight_decay).unwrap()).unwrap();
            (w.sub(&d.mul_scalar(lr).unwrap()).unwrap(), vec![])
        }
        Update::Momentum { lr, momentum, nesterov, weight_decay, first } => {
            let d = g.add(&w.mul_scalar(weight_decay).unwrap()).unwrap();
            let buf = if first {
                d.clone()
            } else {
                slots[0].mul_scalar(momentum).unwrap().add(&d).unwrap()
            };
            let step = if nesterov {
                d.add(&buf.mul_scalar(momentum).unwrap()).unwrap()
            } else {
                buf.clone()
            };
            (w.sub(&step.mul_scalar(lr).unwrap()).unwrap(), vec![buf])
        }
        Update::Adam { beta1, beta2, scale, eps_c2s, decay, l2 } => {
            let wd = w.mul_scalar(decay).unwrap();
            let gi = g.add(&wd.mul_scalar(l2).unwrap()).unwrap();
            let m = slots[0]
                .mul_scalar(beta1)
                .unwrap()
                .add(&gi.mul_scalar(1.0 - beta1).unwrap())
                .unwrap();
            let v = slots[1]
                .mul_scalar(beta2)
                .unwrap()
                .add(&gi.mul(&gi).unwrap().mul_scalar(1.0 - beta2).unwrap())
                .unwrap();
            let denom = v.sqrt().unwrap().add_scalar(eps_c2s).unwrap();
            let w = wd.sub(&m.mul_scalar(scale).unwrap().div(&denom).unwrap()).unwrap();
            (w, vec![m, v])
        }
    }
}

fn rules() -> Vec<Update> {
    vec![
        Update::Sgd { lr: 0.1, weight_decay: 0.0 },
        Update::Sgd { lr: 0.05, weight_decay: 0.01 },
        Update::Momentum {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            first: true,
        },
        Update::Momentum {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.01,
            first: false,
        },
        Update::Momentum {
            lr: 0.1,
            momentum: 0.8,
            nesterov: true,
            weight_decay: 0.0,
            first: false,
        },
        // Adam (L2 folded into the gradient) and AdamW (decoupled decay), step 3's constants.
        Update::Adam { beta1: 0.9, beta2: 0.999, scale: 0.01, eps_c2s: 1e-8, decay: 1.0, l2: 0.01 },
        Update::Adam { beta1: 0.8, beta2: 0.99, scale: 0.02, eps_c2s: 1e-7, decay: 0.999, l2: 0.0 },
    ]
}

#[test]
fn fused_updates_equal_their_composed_twins() {
    // 40,000 elements: more than one chunk, so the threaded path runs too.
    for (dtype, tol) in [(DType::F64, 1e-14), (DType::F32, 2e-6)] {
        for (r, rule) in rules().iter().enumerate() {
            for n in [7, 40_000] {
                let seed = 10 * r as u64;
                let w0 = randn(&[n], dtype, seed);
                let g = randn(&[n], dtype, seed + 1);
                let slots0: Vec<Tensor> = (0..rule.slots())
                    .map(|i| randn(&[n], dtype, seed + 2 + i as u64).abs().unwrap())
                    .collect();
                let (want_w, want_slots) = composed(&w0, &g, &slots0, rule);
                let mut w = w0.to_dtype(dtype).unwrap().mul_scalar(1.0).unwrap().detach();
                let mut slots: Vec<Tensor> =
                    slots0.iter().map(|s| s.mul_scalar(1.0).unwrap()).collect();
                w.update(&g, &mut slots, rule).unwrap();
                let close = |a: &Tensor, b: &Tensor, what: &str| {
                    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
                    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                        assert!(
                            (x - y).abs() <= tol * (1.0 + y.abs()),
                            "{rule:?} {dtype} {what}[{i}]: {x} vs {y}"
                        );
                    }
                };
                close(&w, &want_w, "w");
                for (s, want) in slots.iter().zip(&want_slots) {
                    close(s, want, "slot");
                }
                // The weights given were not changed behind anyone's back.
                assert_eq!(
                    w0.to_vec_f64().unwrap(),
                    randn(&[n], dtype, seed).to_vec_f64().unwrap()
                );
            }
        }
    }
}

#[test]
fn an_update_writes_in_place_keeps_the_id_and_never_changes_a_shared_handle() {
    let rule = Update::Sgd { lr: 1.0, weight_decay: 0.0 };
    let g = Tensor::from_vec(vec![1.0f32, 1.0], &[2]).unwrap();
    let mut w = Tensor::from_vec(vec![5.0f32, 6.0], &[2]).unwrap().requiring_grad();
    let id = w.id();
    w.update(&g, &mut [], &rule).unwrap();
    assert_eq!((w.id(), w.requires_grad()), (id, true));
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![4.0, 5.0]);
    let seen = w.clone();
    w.update(&g, &mut [], &rule).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    assert_eq!(seen.to_vec::<f32>().unwrap(), vec![4.0, 5.0], "a clone keeps its values");
    assert!(!w.shares_memory(&seen));
    // Bad calls are errors naming what was given.
    let adam =
        Update::Adam { beta1: 0.9, beta2: 0.999, scale: 0.1, eps_c2s: 1e-8, decay: 1.0, l2: 0.0 };
    let e = w.update(&g, &mut [], &adam).unwrap_err().to_string();
    assert!(e.contains("2 state slots, got 0"), "{e}");
    let e = w.update(&Tensor::ones(&[3], DType::F32).unwrap(), &mut [], &rule).unwrap_err();
    assert!(e.to_string().contains("[3]"), "{e}");
    let mut ids = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    assert!(ids.update(&Tensor::from_vec(vec![1i64, 2], &[2]).unwrap(), &mut [], &rule).is_err());
}

#[test]
fn every_leaf_gradient_is_a_view_into_its_dtypes_bucket() {
    let a = randn(&[3, 2], DType::F32, 1).requiring_grad();
    let b = randn(&[4], DType::F32, 2).requiring_grad();
    let c = randn(&[2], DType::F64, 3).requiring_grad();
    let unused = randn(&[5], DType::F32, 4).requiring_grad();
    let loss = a
        .sum_all()
        .unwrap()
        .mul(&b.pow(2.0).unwrap().sum_all().unwrap())
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .add(&c.exp().unwrap().sum_all().unwrap())
        .unwrap();
    let grads = loss.backward_for(&[b.clone(), unused.clone(), a.clone()]).unwrap();
    // f32 first (b, unused, a in the order given), then f64 (c, not listed).
    assert_eq!(grads.buckets().len(), 2);
    assert_eq!(grads.buckets()[0].dims(), &[4 + 5 + 6]);
    assert_eq!(grads.bucket_range(&b), Some((0, 0..4)));
    assert_eq!(grads.bucket_range(&unused), Some((0, 4..9)));
    assert_eq!(grads.bucket_range(&a), Some((0, 9..15)));
    assert_eq!(grads.bucket_range(&c), Some((1, 0..2)));
    assert!(grads.get(&unused).is_none(), "a listed leaf the loss does not use has no entry");
    let bucket = grads.buckets()[0].to_vec::<f32>().unwrap();
    assert_eq!(&bucket[4..9], &[0.0; 5]);
    for (t, b) in [(&a, 0), (&b, 0), (&c, 1)] {
        let g = grads.get(t).unwrap();
        assert!(g.shares_memory(&grads.buckets()[b]), "the gradient is the bucket's memory");
        assert_eq!(g.dims(), t.dims());
    }
    assert_eq!(grads.get(&a).unwrap().to_vec::<f32>().unwrap(), bucket[9..15]);
    // Writing the buckets shows through every view.
    let mut grads = grads;
    grads.with_buckets_mut(|b| b.iter_mut().try_for_each(|t| t.scale_in_place(2.0))).unwrap();
    let doubled: Vec<f32> = bucket[9..15].iter().map(|x| 2.0 * x).collect();
    assert_eq!(grads.get(&a).unwrap().to_vec::<f32>().unwrap(), doubled);
    assert!(grads.get(&a).unwrap().shares_memory(&grads.buckets()[0]));
}

#[test]
fn accumulated_gradients_stay_flat_and_add_up() {
    let w = randn(&[3], DType::F64, 5).requiring_grad();
    let x1 = randn(&[3], DType::F64, 6);
    let x2 = randn(&[3], DType::F64, 7);
    let mut total = ferrograd::Gradients::default();
    for x in [&x1, &x2] {
        total.accumulate(w.mul(x).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
    }
    let want = x1.add(&x2).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(total.get(&w).unwrap().to_vec::<f64>().unwrap(), want);
    assert!(total.get(&w).unwrap().shares_memory(&total.buckets()[0]));
}

#[test]
fn removed_and_replaced_gradients_leave_no_trace_in_the_buckets() {
    let a = randn(&[2], DType::F32, 8).requiring_grad();
    let b = randn(&[3], DType::F32, 9).requiring_grad();
    let loss = a.sum_all().unwrap().add(&b.mul_scalar(2.0).unwrap().sum_all().unwrap()).unwrap();
    let mut grads = loss.backward_for(&[a.clone(), b.clone()]).unwrap();
    // Removed: absent, and zeros in its bucket (norms and sums over buckets see nothing).
    grads.remove(&a);
    assert!(grads.get(&a).is_none());
    assert_eq!(grads.buckets()[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0, 2.0, 2.0, 2.0]);
    // A gradient that does not fit its slot is kept beside the buckets, through later writes.
    grads.set(&b, Tensor::ones(&[3], DType::F64).unwrap());
    grads.set(&a, Tensor::ones(&[2], DType::F32).unwrap());
    assert_eq!(grads.get(&b).unwrap().dtype(), DType::F64);
    assert_eq!(grads.buckets()[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0, 0.0, 0.0, 0.0]);
    // A bucket replaced by one of another size is refused, not a panic.
    let e = grads
        .with_buckets_mut(|b| {
            b[0] = Tensor::zeros(&[4], DType::F32)?;
            Ok(())
        })
        .unwrap_err();
    assert!(e.to_string().contains("bucket 0 must stay f32 [5]"), "{e}");
    assert!(grads.get(&a).is_none());
}
