//! Every op proved two ways: against PyTorch (outputs and the gradients of Σ output ⊙ upstream,
//! from values that `scripts/torch_reference.py` wrote) and against central finite differences
//! in f64 on the same inputs.

mod common;
use common::*;
use ferrograd::gradcheck;

#[test]
fn every_op_matches_pytorch_forward_and_backward() {
    let cases = cases();
    assert!(cases.len() >= 50, "fixtures hold {} cases", cases.len());
    let mut failures = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        let leaves: Vec<_> = c
            .inputs
            .iter()
            .map(|t| if t.dtype().is_float() { t.requiring_grad() } else { t.clone() })
            .collect();
        let out = apply(&c.name, &c.params, &leaves)
            .unwrap_or_else(|e| panic!("case {n} ({}): {e}", c.name));
        assert_eq!(out.dims(), c.output.dims(), "case {n} ({}) shape", c.name);
        let r =
            worst_ratio(&out.to_vec_f64().unwrap(), &c.output.to_vec_f64().unwrap(), 1e-6, 1e-5);
        if r > 1.0 {
            failures.push(format!("case {n} ({}) forward off by {r:.2}× the tolerance", c.name));
        }
        let Some(up) = &c.upstream else { continue };
        let grads = out.mul(up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, expected) in c.grads.iter().enumerate() {
            let Some(expected) = expected else { continue };
            let got = grads
                .get(&leaves[i])
                .unwrap_or_else(|| panic!("case {n} ({}) input {i}: no gradient", c.name));
            assert_eq!(got.dims(), expected.dims(), "case {n} ({}) grad {i} shape", c.name);
            let r = worst_ratio(
                &got.to_vec_f64().unwrap(),
                &expected.to_vec_f64().unwrap(),
                1e-6,
                1e-5,
            );
            if r > 1.0 {
                failures.push(format!(
                    "case {n} ({}) gradient of input {i} off by {r:.2}× the tolerance",
                    c.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tiny_mlp_trains_like_pytorch_for_200_steps() {
    let f = fixture("tiny_mlp.json");
    let (x, y) = (tensor(&f["x"]), tensor(&f["y"]));
    let mut params: Vec<ferrograd::Tensor> =
        ["w1", "b1", "w2", "b2"].iter().map(|k| tensor(&f["init"][k]).requiring_grad()).collect();
    let lr = f["lr"].as_f64().unwrap();
    let expected: Vec<f64> =
        f["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (step, want) in expected.iter().enumerate() {
        let [w1, b1, w2, b2] = &params[..] else { unreachable!() };
        let hidden = x.matmul(w1).unwrap().add(b1).unwrap().relu().unwrap();
        let loss = hidden.matmul(w2).unwrap().add(b2).unwrap().cross_entropy(&y, None).unwrap();
        let got = loss.item().unwrap();
        assert!((got - want).abs() < 1e-4, "step {step}: loss {got} vs PyTorch {want}");
        let grads = loss.backward().unwrap();
        params = params
            .iter()
            .map(|p| {
                p.sub(&grads.get(p).unwrap().mul_scalar(lr).unwrap())
                    .unwrap()
                    .detach()
                    .requiring_grad()
            })
            .collect();
    }
    assert!(expected[199] < expected[0] * 0.7, "the reference run should learn");
}

#[test]
fn every_op_passes_gradcheck() {
    let mut checked = std::collections::BTreeSet::new();
    for c in cases() {
        if c.upstream.is_none() || c.inputs.iter().map(|t| t.numel()).sum::<usize>() > 2000 {
            continue;
        }
        gradcheck(|xs| apply(&c.name, &c.params, xs), &c.inputs, 1e-6, 1e-5)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        checked.insert(c.name.clone());
    }
    assert!(checked.len() >= 35, "gradchecked {} ops: {checked:?}", checked.len());
}

#[test]
fn gradcheck_catches_a_wrong_gradient() {
    // x·x computed as a fresh leaf product through detach has the wrong derivative (x, not 2x).
    let x = ferrograd::Tensor::from_vec(vec![0.5f64, -1.5], &[2]).unwrap();
    let err = gradcheck(|xs| xs[0].mul(&xs[0].detach()), &[x], 1e-6, 1e-5).unwrap_err();
    assert!(err.to_string().contains("analytic gradient"), "{err}");
}

#[test]
fn convolution_in_image_groups_equals_one_image_at_a_time() {
    use ferrograd::{DType, Rng, Tensor};
    let mut rng = Rng::seed(4);
    // (input, filters, stride, padding): K·P = 1,600 · 1,024 is over the im2col group budget,
    // so every image is its own group; 8·9 · 8·8 lets groups of several images form, and 11
    // images split into uneven parts across threads. Both are large enough for parts.
    let cases: [([usize; 4], [usize; 4], usize, usize); 2] =
        [([3, 64, 32, 32], [2, 64, 5, 5], 1, 2), ([11, 8, 16, 16], [16, 8, 3, 3], 2, 1)];
    for (xs, ws, s, p) in cases {
        let x = Tensor::randn(&xs, 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
        let w = Tensor::randn(&ws, 0.0, 0.1, DType::F64, &mut rng).unwrap().requiring_grad();
        let b = Tensor::randn(&[ws[0]], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
        let y = x.conv2d(&w, Some(&b), (s, s), (p, p)).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let (mut dw, mut db) = (Tensor::zeros(&ws, DType::F64).unwrap(), 0.0);
        let close = |a: Vec<f64>, b: Vec<f64>| a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9);
        for n in 0..xs[0] {
            let xi = x.detach().narrow(0, n, 1).unwrap().requiring_grad();
            let (wi, bi) = (w.detach().requiring_grad(), b.detach().requiring_grad());
            let yi = xi.conv2d(&wi, Some(&bi), (s, s), (p, p)).unwrap();
            let gi = yi.sum_all().unwrap().backward().unwrap();
            assert!(
                close(yi.to_vec().unwrap(), y.narrow(0, n, 1).unwrap().to_vec().unwrap()),
                "{xs:?}: output of image {n}"
            );
            assert!(close(
                gi.get(&xi).unwrap().to_vec().unwrap(),
                g.get(&x).unwrap().narrow(0, n, 1).unwrap().to_vec().unwrap()
            ));
            dw = dw.add(gi.get(&wi).unwrap()).unwrap();
            db += gi.get(&bi).unwrap().to_vec::<f64>().unwrap()[0];
        }
        let (a, want) = (dw.to_vec::<f64>().unwrap(), g.get(&w).unwrap().to_vec::<f64>().unwrap());
        assert!(
            a.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-8),
            "{xs:?}: filter gradient summed over groups"
        );
        assert!((g.get(&b).unwrap().to_vec::<f64>().unwrap()[0] - db).abs() < 1e-8);
    }
}

#[test]
fn conv2d_relu_equals_conv2d_then_relu_and_passes_gradcheck() {
    use ferrograd::{DType, Rng, Tensor};
    let mut rng = Rng::seed(6);
    // (input, filters, stride, padding, bias): filter sizes K = 27 and 144 (both sides of the
    // transposed-product threshold), one with stride 2 and no bias.
    type Case = ([usize; 4], [usize; 4], usize, usize, bool);
    let cases: [Case; 3] = [
        ([2, 3, 9, 8], [4, 3, 3, 3], 1, 1, true),
        ([3, 16, 8, 8], [5, 16, 3, 3], 1, 1, true),
        ([2, 4, 9, 9], [3, 4, 5, 5], 2, 2, false),
    ];
    for (xs, ws, s, p, with_bias) in cases {
        let x = Tensor::randn(&xs, 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
        let w = Tensor::randn(&ws, 0.0, 0.3, DType::F64, &mut rng).unwrap().requiring_grad();
        let b = Tensor::randn(&[ws[0]], 0.0, 0.5, DType::F64, &mut rng).unwrap().requiring_grad();
        let bias = with_bias.then_some(&b);
        let fused = x.conv2d_relu(&w, bias, (s, s), (p, p)).unwrap();
        let composed = x.conv2d(&w, bias, (s, s), (p, p)).unwrap().relu().unwrap();
        assert_eq!(fused.to_vec::<f64>().unwrap(), composed.to_vec::<f64>().unwrap(), "{xs:?}");
        let up = Tensor::randn(fused.dims(), 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let g1 = fused.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = composed.mul(&up).unwrap().sum_all().unwrap().backward().unwrap();
        let mut leaves = vec![&x, &w];
        leaves.extend(bias);
        for t in leaves {
            let (a, want) = (g1.get(t).unwrap().to_vec::<f64>().unwrap(), g2.get(t).unwrap());
            let want = want.to_vec::<f64>().unwrap();
            assert!(a.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{xs:?} gradient");
        }
        let mut inputs = vec![x.detach(), w.detach()];
        inputs.extend(bias.map(|b| b.detach()));
        let f = |t: &[Tensor]| t[0].conv2d_relu(&t[1], t.get(2), (s, s), (p, p));
        ferrograd::gradcheck(f, &inputs, 1e-6, 1e-5).unwrap_or_else(|e| panic!("{xs:?}: {e}"));
    }
}

#[test]
fn convolution_with_no_filters_has_an_empty_output_and_zero_input_gradient() {
    use ferrograd::{DType, Tensor};
    let x = Tensor::ones(&[3, 2, 5, 5], DType::F32).unwrap().requiring_grad();
    let w = Tensor::ones(&[0, 2, 3, 3], DType::F32).unwrap().requiring_grad();
    let y = x.conv2d(&w, None, (1, 1), (1, 1)).unwrap();
    assert_eq!(y.dims(), [3, 0, 5, 5]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 150]);
    assert_eq!(g.get(&w).unwrap().dims(), [0, 2, 3, 3]);
}

#[test]
fn convolution_backward_in_another_thread_pool_than_forward() {
    // Image groups and parts depend on the pool's threads: the gradients must not.
    use ferrograd::{DType, Rng, Tensor};
    let mut rng = Rng::seed(5);
    let x = Tensor::randn(&[16, 8, 16, 16], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let w = Tensor::randn(&[16, 8, 3, 3], 0.0, 0.1, DType::F64, &mut rng).unwrap();
    let run = |forward_threads: usize, backward_threads: usize| {
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        let (x, w) = (x.requiring_grad(), w.requiring_grad());
        let loss = pool(forward_threads)
            .install(|| x.conv2d(&w, None, (1, 1), (1, 1)).unwrap().sum_all().unwrap());
        let g = pool(backward_threads).install(|| loss.backward().unwrap());
        let grad = |t: &Tensor| g.get(t).unwrap().to_vec::<f64>().unwrap();
        (grad(&x), grad(&w))
    };
    let (dx, dw) = run(2, 2);
    for (f, b) in [(1, 3), (4, 1)] {
        let (dx2, dw2) = run(f, b);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
        assert!(close(&dx, &dx2) && close(&dw, &dw2), "forward on {f} threads, backward on {b}");
    }
}

#[test]
fn fused_attention_passes_gradcheck_with_masks_and_causality() {
    let mut rng = ferrograd::Rng::seed(17);
    let mut randn = |dims: &[usize]| {
        ferrograd::Tensor::randn(dims, 0.0, 1.0, ferrograd::DType::F64, &mut rng).unwrap()
    };
    // Cross-attention shape (T = 3 queries, S = 4 keys), 2 heads of 2; row 1 has 2 real keys.
    let (q, k, v) = (randn(&[2, 3, 4]), randn(&[2, 4, 4]), randn(&[2, 4, 4]));
    let mask = ferrograd::Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 0, 0], &[2, 4]).unwrap();
    for causal in [false, true] {
        for m in [None, Some(&mask)] {
            ferrograd::gradcheck(
                |x| x[0].attention(&x[1], &x[2], 2, m, causal),
                &[q.clone(), k.clone(), v.clone()],
                1e-6,
                1e-6,
            )
            .unwrap_or_else(|e| panic!("causal {causal}, mask {}: {e}", m.is_some()));
        }
    }
    // No keys: every query gets 0 and no gradient flows; no queries: empty output, zero dK, dV.
    let (none, no_queries) = (randn(&[2, 0, 4]), randn(&[2, 0, 4]));
    let out = q.requiring_grad().attention(&none, &none, 2, None, false).unwrap();
    assert_eq!(out.to_vec::<f64>().unwrap(), vec![0.0; 24]);
    let qg = q.requiring_grad();
    let g = qg.attention(&none, &none, 2, None, false).unwrap().sum_all().unwrap().backward();
    assert_eq!(g.unwrap().get(&qg).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 24]);
    let (kg, vg) = (k.requiring_grad(), v.requiring_grad());
    let out = no_queries.attention(&kg, &vg, 2, None, true).unwrap();
    assert_eq!(out.dims(), [2, 0, 4]);
    let g = out.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&kg).unwrap().to_vec::<f64>().unwrap(), vec![0.0; 32]);
    let e = q.attention(&k, &v, 3, None, false).unwrap_err().to_string();
    assert!(e.contains("3 heads cannot split D = 4"), "{e}");
    let e = q.attention(&k, &v, 2, Some(&mask.narrow(1, 0, 3).unwrap()), false).unwrap_err();
    assert!(e.to_string().contains("key mask must be (2, 4)"), "{e}");
}

/// `append` gives what `concat` gives: in place for memory of its own over many steps (a
/// growing cache), by concatenation where another handle shares the memory (which keeps its
/// old values) or a dimension before the joined one exceeds 1; mismatched shapes are errors.
#[test]
fn append_equals_concat_in_place_or_not() {
    use ferrograd::{DType, Tensor};
    let ramp = |n: usize, shape: &[usize]| {
        Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), shape).unwrap()
    };
    let step = Tensor::from_vec(vec![9.0f32, 8.0, 7.0], &[1, 1, 3]).unwrap();
    let mut own = ramp(6, &[1, 2, 3]);
    let mut want = own.clone().detach();
    for _ in 0..20 {
        own.append(&step, 1).unwrap();
        want = Tensor::concat(&[want, step.clone()], 1).unwrap();
        assert_eq!(own.dims(), want.dims());
        assert_eq!(own.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    }
    let kept = ramp(6, &[1, 2, 3]);
    let mut shared = kept.clone();
    shared.append(&step, 1).unwrap();
    assert_eq!(shared.dims(), &[1, 3, 3]);
    assert_eq!(kept.dims(), &[1, 2, 3]);
    assert_eq!(kept.to_vec::<f32>().unwrap(), ramp(6, &[1, 2, 3]).to_vec::<f32>().unwrap());
    let mut rows = ramp(6, &[2, 1, 3]);
    let other = ramp(6, &[2, 1, 3]);
    let joined = Tensor::concat(&[rows.clone(), other.clone()], 1).unwrap();
    rows.append(&other, 1).unwrap();
    assert_eq!(rows.to_vec::<f32>().unwrap(), joined.to_vec::<f32>().unwrap());
    let wrong = Tensor::zeros(&[1, 1, 4], DType::F32).unwrap();
    let err = own.append(&wrong, 1).unwrap_err().to_string();
    assert!(err.contains("concat") && err.contains("[1, 1, 4]"), "{err}");
}
