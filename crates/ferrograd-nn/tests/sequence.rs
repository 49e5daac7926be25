//! The sequence blocks against PyTorch (values from `scripts/torch_reference_seq.py`): RNN and
//! LSTM on padded batches in both directions, EmbedToken with padding, Collapse; the fused
//! recurrence against its step-by-step twin; gradchecks; bad input.

use ferrograd::{gradcheck, DType, Rng, Tensor};
use ferrograd_nn::*;
use serde_json::Value;

mod common;
use common::{assert_close, fixture, tensor};

fn close(a: &Tensor, b: &Tensor, what: &str) {
    assert_close(a, b, 1e-5, 1e-4, what);
}

/// Runs a fixture case through SequenceRNN<R>: outputs and final states (stacked as PyTorch's).
fn run_case<R: Rnn>(
    c: &Value,
    store: &ParamStore,
) -> (SequenceRNN<R>, Tensor, Tensor, Tensor, Tensor) {
    let bi = c["bidirectional"].as_bool().unwrap();
    let x = tensor(&c["x"]).requiring_grad();
    let net =
        SequenceRNN::<R>::new(store, x.dims()[2], c["hidden"].as_u64().unwrap() as usize, 0, bi)
            .unwrap();
    for p in store.params() {
        p.set(&tensor(&c["params"][p.name()])).unwrap_or_else(|e| panic!("{}: {e}", p.name()));
    }
    let (out, states) = net.run(&x, Some(&tensor(&c["mask"]))).unwrap();
    let h_n = Tensor::stack(&states.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 0).unwrap();
    let c_n = Tensor::stack(&states.iter().map(|s| s.c.clone()).collect::<Vec<_>>(), 0).unwrap();
    (net, x, out, h_n, c_n)
}

fn check_case<R: Rnn>(c: &Value) {
    let store = ParamStore::new(0);
    let (_net, x, out, h_n, c_n) = run_case::<R>(c, &store);
    let what = format!("{} bidirectional={}", c["kind"], c["bidirectional"]);
    close(&out, &tensor(&c["out"]), &format!("{what} outputs"));
    close(&h_n, &tensor(&c["h_n"]), &format!("{what} h_n"));
    if c["kind"] == "lstm" {
        close(&c_n, &tensor(&c["c_n"]), &format!("{what} c_n"));
    }
    let mut loss = out.mul(&tensor(&c["r_out"])).unwrap().sum_all().unwrap();
    loss = loss.add(&h_n.mul(&tensor(&c["r_h"])).unwrap().sum_all().unwrap()).unwrap();
    if c["kind"] == "lstm" {
        loss = loss.add(&c_n.mul(&tensor(&c["r_c"])).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    close(grads.get(&x).unwrap(), &tensor(&c["grad_x"]), &format!("{what} grad x"));
    for p in store.params() {
        close(
            grads.get(&p.get()).unwrap(),
            &tensor(&c["grads"][p.name()]),
            &format!("{what} grad {}", p.name()),
        );
    }
}

#[test]
fn rnn_and_lstm_match_pytorch_on_padded_batches_in_both_directions() {
    let f = fixture("seq.json");
    for c in f["rnn"].as_array().unwrap() {
        if c["kind"] == "lstm" {
            check_case::<LSTM>(c);
        } else {
            check_case::<SimpleRNN>(c);
        }
    }
}

/// A stacked `nn.LSTM` / `nn.RNN` from initial states: its state_dict file loads by PyTorch's
/// names in one call, and outputs, final states (layers·directions, B, H) and the gradients of
/// inputs, initial states and every weight agree.
fn check_stack<R: Rnn>(c: &Value) {
    let store = ParamStore::new(0);
    let (x, h0, c0) = (
        tensor(&c["x"]).requiring_grad(),
        tensor(&c["h0"]).requiring_grad(),
        tensor(&c["c0"]).requiring_grad(),
    );
    let hidden = c["hidden"].as_u64().unwrap() as usize;
    let layers = c["layers"].as_u64().unwrap() as usize;
    let net = RnnStack::<R>::new(
        &store,
        x.dims()[2],
        hidden,
        layers,
        c["bidirectional"].as_bool().unwrap(),
    )
    .unwrap();
    let file =
        format!("{}/tests/fixtures/{}", env!("CARGO_MANIFEST_DIR"), c["file"].as_str().unwrap());
    pytorch::load_file(&net, std::path::Path::new(&file)).unwrap();
    let lstm = c["kind"] == "lstm";
    // nn.RNN has no c: ours starts from zeros and stays there.
    let c_start = if lstm { c0.clone() } else { Tensor::zeros(h0.dims(), DType::F32).unwrap() };
    let (out, fin) = net
        .run(&x, Some(&tensor(&c["mask"])), Some(&RnnState { h: h0.clone(), c: c_start }))
        .unwrap();
    let what = format!("stacked {}", c["kind"]);
    close(&out, &tensor(&c["out"]), &format!("{what} outputs"));
    close(&fin.h, &tensor(&c["h_n"]), &format!("{what} h_n"));
    let mut loss = out.mul(&tensor(&c["r_out"])).unwrap().sum_all().unwrap();
    loss = loss.add(&fin.h.mul(&tensor(&c["r_h"])).unwrap().sum_all().unwrap()).unwrap();
    if lstm {
        close(&fin.c, &tensor(&c["c_n"]), &format!("{what} c_n"));
        loss = loss.add(&fin.c.mul(&tensor(&c["r_c"])).unwrap().sum_all().unwrap()).unwrap();
    }
    let g = loss.backward().unwrap();
    close(g.get(&x).unwrap(), &tensor(&c["grad_x"]), &format!("{what} grad x"));
    close(g.get(&h0).unwrap(), &tensor(&c["grad_h0"]), &format!("{what} grad h0"));
    if lstm {
        close(g.get(&c0).unwrap(), &tensor(&c["grad_c0"]), &format!("{what} grad c0"));
    }
    let grads = c["grads"].as_object().unwrap();
    assert_eq!(grads.len(), store.params().len(), "{what}: every PyTorch parameter is ours");
    for p in store.params() {
        close(
            g.get(&p.get()).unwrap(),
            &tensor(&grads[p.name()]),
            &format!("{what} grad {}", p.name()),
        );
    }
    // Saved under PyTorch's names, the weights are the file's.
    let (file_tensors, _) = ferrograd::io::load_safetensors(std::path::Path::new(&file)).unwrap();
    let ours = pytorch::state_dict(&net).unwrap();
    assert_eq!(ours.len(), file_tensors.len());
    for (name, t) in &file_tensors {
        let mine = &ours.iter().find(|(n, _)| n == name).unwrap().1;
        close(mine, t, &format!("{what} saved {name}"));
    }
}

#[test]
fn stacked_rnns_load_pytorch_state_dicts_and_match_from_initial_states() {
    let f = fixture("seq.json");
    let stacks = f["stacks"].as_array().unwrap();
    check_stack::<LSTM>(&stacks[0]);
    check_stack::<SimpleRNN>(&stacks[1]);
}

#[test]
fn rnn_initial_states_of_the_wrong_shape_are_refused_by_layout() {
    let store = ParamStore::new(0);
    let net = RnnStack::<LSTM>::new(&store, 3, 4, 2, true).unwrap();
    let x = Tensor::zeros(&[2, 5, 3], DType::F32).unwrap();
    let s = Tensor::zeros(&[2, 2, 4], DType::F32).unwrap();
    let e = net.run(&x, None, Some(&RnnState { h: s.clone(), c: s })).unwrap_err();
    assert!(e.to_string().contains("(4, 2, 4) (layers·directions, B, H)"), "{e}");
    let layer = &net.layers[0];
    let one = RnnState {
        h: Tensor::zeros(&[2, 4], DType::F32).unwrap(),
        c: Tensor::zeros(&[2, 4], DType::F32).unwrap(),
    };
    let e = layer.run_from(&x, None, Some(&[one])).unwrap_err();
    assert!(e.to_string().contains("2 of (2, 4) (one per direction)"), "{e}");
    assert!(RnnStack::<LSTM>::new(&store.sub("b"), 3, 4, 0, false).is_err());
}

/// The fused whole-sequence kernel against the lecture's step-by-step definition.
fn fused_equals_stepwise<R: Rnn>() {
    let store = ParamStore::with_dtype(4, DType::F64);
    let cell = R::new(&store, 3, 5, "l0").unwrap();
    let mut rng = Rng::seed(9);
    let x = Tensor::randn(&[4, 6, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
    let mask = Tensor::from_vec(
        (0..24).map(|i| ((i % 6) < [6, 4, 1, 5][i / 6]) as i64).collect::<Vec<_>>(),
        &[4, 6],
    )
    .unwrap();
    let s0 = RnnState {
        h: Tensor::randn(&[4, 5], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad(),
        c: Tensor::randn(&[4, 5], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad(),
    };
    let r = Tensor::randn(&[4, 6, 5], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let mut results = Vec::new();
    for fused in [true, false] {
        let (out, s) = if fused {
            cell.run(&x, Some(&mask), &s0)
        } else {
            cell.run_stepwise(&x, Some(&mask), &s0)
        }
        .unwrap();
        let loss = out
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .add(&s.h.sum_all().unwrap())
            .unwrap()
            .add(&s.c.mul_scalar(0.5).unwrap().sum_all().unwrap())
            .unwrap();
        let g = loss.backward().unwrap();
        let mut v =
            vec![out.to_vec_f64().unwrap(), s.h.to_vec_f64().unwrap(), s.c.to_vec_f64().unwrap()];
        v.push(g.get(&x).unwrap().to_vec_f64().unwrap());
        v.push(g.get(&s0.h).unwrap().to_vec_f64().unwrap());
        v.push(g.get(&s0.c).map(|t| t.to_vec_f64().unwrap()).unwrap_or(vec![0.0; 20]));
        for p in cell.params() {
            v.push(g.get(&p.get()).unwrap().to_vec_f64().unwrap());
        }
        results.push(v);
    }
    for (k, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-10, "{} item {k}: fused {x} vs stepwise {y}", R::name());
        }
    }
}

#[test]
fn fused_recurrence_equals_the_stepwise_definition() {
    fused_equals_stepwise::<LSTM>();
    fused_equals_stepwise::<SimpleRNN>();
}

#[test]
fn recurrence_passes_gradcheck() {
    let mut rng = Rng::seed(3);
    for (cell, g) in [(ferrograd::RecurrentCell::Lstm, 4), (ferrograd::RecurrentCell::Tanh, 1)] {
        let xproj = Tensor::randn(&[2, 4, g * 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let w = Tensor::randn(&[g * 3, 3], 0.0, 0.5, DType::F64, &mut rng).unwrap();
        let h0 = Tensor::randn(&[2, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let c0 = Tensor::randn(&[2, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 0, 0], &[2, 4]).unwrap();
        gradcheck(
            |v| {
                let r = v[0].recurrence(cell, &v[1], &v[2], &v[3], Some(&mask))?;
                Tensor::concat(
                    &[r.outputs.flatten_from(0)?, r.h_n.flatten_from(0)?, r.c_n.flatten_from(0)?],
                    0,
                )
            },
            &[xproj, w, h0, c0],
            1e-6,
            1e-5,
        )
        .unwrap_or_else(|e| panic!("{cell:?}: {e}"));
    }
}

#[test]
fn stacked_bidirectional_lstm_from_initial_states_passes_gradcheck() {
    let store = ParamStore::with_dtype(5, DType::F64);
    let net = RnnStack::<LSTM>::new(&store, 3, 2, 2, true).unwrap();
    let mut rng = Rng::seed(6);
    let x = Tensor::randn(&[2, 4, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let h0 = Tensor::randn(&[4, 2, 2], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let c0 = Tensor::randn(&[4, 2, 2], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 0, 0], &[2, 4]).unwrap();
    gradcheck(
        |v| {
            let initial = RnnState { h: v[1].clone(), c: v[2].clone() };
            let (out, fin) = net.run(&v[0], Some(&mask), Some(&initial))?;
            Tensor::concat(
                &[out.flatten_from(0)?, fin.h.flatten_from(0)?, fin.c.flatten_from(0)?],
                0,
            )
        },
        &[x, h0, c0],
        1e-6,
        1e-5,
    )
    .unwrap();
}

#[test]
fn embed_token_and_collapse_match_pytorch() {
    let f = &fixture("seq.json")["embed"];
    let store = ParamStore::new(0);
    let embed = EmbedToken::new(store.sub("e"), 7, 3, Some(0)).unwrap();
    embed.weight.set(&tensor(&f["weight"])).unwrap();
    let (ids, mask) = (tensor(&f["ids"]), tensor(&f["mask"]));
    let e = embed.forward(&ids).unwrap();
    close(&e, &tensor(&f["embedded"]), "embedded");
    let mean = Collapse::Mean.apply(&e, Some(&mask)).unwrap();
    let max = Collapse::Max.apply(&e, Some(&mask)).unwrap();
    let last = Collapse::Last.apply(&e, Some(&mask)).unwrap();
    close(&mean, &tensor(&f["mean"]), "mean");
    close(&max, &tensor(&f["max"]), "max");
    close(&last, &tensor(&f["last"]), "last");
    let loss = [(&mean, "r_mean"), (&max, "r_max"), (&last, "r_last")]
        .iter()
        .map(|(t, r)| t.mul(&tensor(&f[*r])).unwrap().sum_all().unwrap())
        .reduce(|a, b| a.add(&b).unwrap())
        .unwrap();
    close(
        loss.backward().unwrap().get(&embed.weight.get()).unwrap(),
        &tensor(&f["grad_weight"]),
        "embedding gradient",
    );
}

#[test]
fn embed_collapse_generate_gradcheck() {
    let store = ParamStore::with_dtype(1, DType::F64);
    let embed = EmbedToken::new(store.sub("e"), 6, 4, Some(0)).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 5, 2, 0, 3, 3, 0, 0], &[2, 4]).unwrap();
    let mask = ids.ne(&Tensor::scalar(0i64)).unwrap();
    for collapse in [Collapse::First, Collapse::Last, Collapse::Mean, Collapse::Max] {
        gradcheck(
            |w| {
                embed.weight.set(&w[0]).unwrap();
                // Through the block's own ops with the gradcheck input as its weight.
                let e = w[0].index_select(0, &ids.reshape(&[8]).unwrap())?.reshape(&[2, 4, 4])?;
                let e = e.mul(&mask.to_dtype(DType::F64)?.unsqueeze(-1)?)?;
                let v = collapse.apply(&e, Some(&mask))?;
                v.linear(&w[0], None) // GenerateToken, tied: x · E(y) for every y
            },
            &[embed.weight.get().detach()],
            1e-6,
            1e-5,
        )
        .unwrap_or_else(|e| panic!("{collapse:?}: {e}"));
    }
}

#[test]
fn bad_sequence_input_gets_clear_errors() {
    let store = ParamStore::new(0);
    let embed = EmbedToken::new(store.sub("e"), 5, 2, None).unwrap();
    let e =
        embed.forward(&Tensor::from_vec(vec![0i64, 9], &[1, 2]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("token id 9 is outside the vocabulary of 5"), "{e}");
    assert!(embed
        .forward(&Tensor::from_vec(vec![0.0f32], &[1]).unwrap())
        .unwrap_err()
        .to_string()
        .contains("i64"));
    let lstm = SequenceRNN::<LSTM>::new(&store, 2, 3, 0, false).unwrap();
    let empty = Tensor::zeros(&[2, 0, 2], DType::F32).unwrap();
    assert!(lstm.forward(&empty).unwrap_err().to_string().contains("empty"));
    let x = Tensor::zeros(&[2, 4, 2], DType::F32).unwrap();
    let bad_mask = Tensor::ones(&[2, 3], DType::I64).unwrap();
    let e = lstm.forward_masked(&x, Some(&bad_mask)).unwrap_err().to_string();
    assert!(e.contains("mask must be [2, 4]"), "{e}");
    let wrong = Tensor::zeros(&[2, 4, 7], DType::F32).unwrap();
    assert!(lstm.forward(&wrong).unwrap_err().to_string().contains("(B, T, 2)"));
    let all_pad = Tensor::zeros(&[2, 4], DType::I64).unwrap();
    assert!(Collapse::Mean
        .apply(&x, Some(&all_pad))
        .unwrap_err()
        .to_string()
        .contains("all padding"));
}

#[test]
fn a_language_model_learns_and_generates() {
    let store = ParamStore::new(0);
    let embed = EmbedToken::new(store.sub("embed"), 5, 8, None).unwrap();
    let body = SequenceRNN::<LSTM>::new(&store.sub("lstm"), 8, 16, 0, false).unwrap();
    let head = GenerateToken::untied(store.sub("head"), 16, 5).unwrap();
    let lm = LanguageModel { embed, body: Box::new(body), head };
    assert_eq!(formula(&lm), "GenerateToken(SequenceModel(EmbedToken(x)))");
    // The sequence 1 2 3 4 1 2 3 4 …: each token determines the next.
    let seq: Vec<i64> = (0..33).map(|i| 1 + i % 4).collect();
    let ids = Tensor::from_vec(seq[..32].to_vec(), &[1, 32]).unwrap();
    let targets = Tensor::from_vec(seq[1..].to_vec(), &[1, 32]).unwrap();
    let mut opt = optim::Adam::new(store.params(), optim::AdamConfig::adam(0.05)).unwrap();
    for _ in 0..60 {
        optim::Optimizer::step(
            &mut opt,
            &lm.loss(&ids, &targets, None).unwrap().backward().unwrap(),
        )
        .unwrap();
    }
    assert!(lm.loss(&ids, &targets, None).unwrap().item().unwrap() < 0.1);
    let mut streamed = Vec::new();
    let out = lm.generate(&[2, 3], 6, Sampling::greedy(), &[], &mut Rng::seed(0), |t| {
        streamed.push(t);
        Ok(())
    });
    assert_eq!(out.unwrap(), vec![4, 1, 2, 3, 4, 1]);
    assert_eq!(streamed, vec![4, 1, 2, 3, 4, 1]);
    // Stop tokens end generation; an empty prompt is an error.
    let out =
        lm.generate(&[2], 10, Sampling::greedy(), &[1], &mut Rng::seed(0), |_| Ok(())).unwrap();
    assert_eq!(out, vec![3, 4, 1]);
    assert!(lm.generate(&[], 3, Sampling::greedy(), &[], &mut Rng::seed(0), |_| Ok(())).is_err());
    // Sampling at a temperature is seeded: same seed, same text.
    let s = Sampling { temperature: 1.0, top_k: 3, top_p: 0.9 };
    let a = lm.generate(&[1], 8, s, &[], &mut Rng::seed(4), |_| Ok(())).unwrap();
    let b = lm.generate(&[1], 8, s, &[], &mut Rng::seed(4), |_| Ok(())).unwrap();
    assert_eq!(a, b);
}

#[test]
fn an_empty_rnn_stack_is_an_error_not_a_panic() {
    let stack = RnnStack::<LSTM> { layers: Vec::new(), dropout: None };
    let x = Tensor::zeros(&[1, 2, 3], DType::F32).unwrap();
    let e = stack.run(&x, None, None).unwrap_err();
    assert!(e.to_string().contains("at least one layer"), "{e}");
    assert_eq!(stack.describe(), "RnnStack(no layers)");
}
