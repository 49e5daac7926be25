//! The blocks, losses and optimizers against PyTorch (values from
//! `scripts/torch_reference_nn.py`) and finite differences; the lecture's worked examples;
//! checkpoints that resume exactly and refuse bad files.

use ferrograd::{gradcheck, DType, Gradients, Tensor};
use ferrograd_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use ferrograd_nn::*;
use serde_json::Value;

mod common;
use common::{assert_close, fixture, tensor};

fn close(a: &Tensor, b: &Tensor, what: &str) {
    assert_close(a, b, 1e-6, 1e-5, what);
}

fn loss_fn<'a>(
    name: &str,
    p: &'a Value,
) -> impl Fn(&Tensor, &Tensor) -> ferrograd::Result<Tensor> + 'a {
    let name = name.to_string();
    move |s, t| match name.as_str() {
        "cross_entropy" => losses::cross_entropy(
            s,
            t,
            p["smoothing"].as_f64().unwrap(),
            p["ignore_index"].as_i64(),
        ),
        "mse" => losses::mse(s, t),
        "bce_with_logits" => losses::binary_cross_entropy_with_logits(s, t),
        "hinge" => losses::hinge(s, t),
        other => panic!("no loss {other}"),
    }
}

#[test]
fn losses_match_pytorch_and_gradcheck() {
    for c in fixture("nn.json")["losses"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let f = loss_fn(name, &c["params"]);
        let (s, t) = (tensor(&c["scores"]).requiring_grad(), tensor(&c["target"]));
        let loss = f(&s, &t).unwrap();
        let want = c["loss"].as_f64().unwrap();
        assert!(
            (loss.item().unwrap() - want).abs() < 1e-5 * want.abs().max(1.0),
            "{name}: {} vs {want}",
            loss.item().unwrap()
        );
        close(loss.backward().unwrap().get(&s).unwrap(), &tensor(&c["grad"]), name);
        let t64 = if t.dtype() == DType::I64 { t.clone() } else { t.to_dtype(DType::F64).unwrap() };
        gradcheck(|x| f(&x[0], &t64), &[s.detach()], 1e-6, 1e-5)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn optimizers_match_pytorch_over_three_steps() {
    let f = fixture("nn.json");
    for c in f["optimizers"].as_array().unwrap() {
        let store = ParamStore::new(0);
        let w = store.param("w", &[3, 4], Init::Zeros).unwrap();
        let b = store.param("b", &[4], Init::Zeros).unwrap();
        w.set(&tensor(&f["w0"])).unwrap();
        b.set(&tensor(&f["b0"])).unwrap();
        let p = &c["params"];
        let num = |k: &str| p[k].as_f64().unwrap_or(0.0);
        let name = c["name"].as_str().unwrap();
        let mut opt: Box<dyn Optimizer> = match name {
            "sgd" => Box::new(
                Sgd::new(
                    store.params(),
                    SgdConfig {
                        lr: num("lr"),
                        momentum: num("momentum"),
                        nesterov: p["nesterov"].as_bool().unwrap_or(false),
                        weight_decay: num("weight_decay"),
                    },
                )
                .unwrap(),
            ),
            "adam" => Box::new(
                Adam::new(
                    store.params(),
                    AdamConfig { weight_decay: num("weight_decay"), ..AdamConfig::adam(num("lr")) },
                )
                .unwrap(),
            ),
            _ => Box::new(
                Adam::new(
                    store.params(),
                    AdamConfig {
                        weight_decay: num("weight_decay"),
                        ..AdamConfig::adamw(num("lr"))
                    },
                )
                .unwrap(),
            ),
        };
        for (step, (g, after)) in
            f["grads"].as_array().unwrap().iter().zip(c["after"].as_array().unwrap()).enumerate()
        {
            let mut grads = Gradients::default();
            grads.set(&w.get(), tensor(&g[0]));
            grads.set(&b.get(), tensor(&g[1]));
            opt.step(&grads).unwrap();
            close(&w.get(), &tensor(&after[0]), &format!("{name} {p} step {step} w"));
            close(&b.get(), &tensor(&after[1]), &format!("{name} {p} step {step} b"));
        }
    }
}

/// Conv+ReLU, MaxPool, Flatten, FeedForward named as PyTorch's Sequential.
fn small_net(store: &ParamStore) -> Sequential {
    let opts = ConvOptions { padding: 1, activation: Activation::Relu, ..Default::default() };
    Sequential::new()
        .then(Conv::new(store.sub(0), 2, 3, 3, opts).unwrap())
        .then(MaxPool::new(2, 2).unwrap())
        .then(Flatten)
        .then(FeedForward::new(store.sub(4), 27, 4, Activation::Identity).unwrap())
}

#[test]
fn a_composed_network_loads_pytorch_weights_by_name_and_matches() {
    let c = &fixture("nn.json")["composed"];
    let store = ParamStore::new(0);
    let net = small_net(&store);
    for p in store.params() {
        p.set(&tensor(&c["state"][p.name()])).unwrap_or_else(|e| panic!("{}: {e}", p.name()));
    }
    let loss =
        net.forward(&tensor(&c["x"])).unwrap().cross_entropy(&tensor(&c["y"]), None).unwrap();
    assert!((loss.item().unwrap() - c["loss"].as_f64().unwrap()).abs() < 1e-5);
    let grads = loss.backward().unwrap();
    for p in store.params() {
        close(grads.get(&p.get()).unwrap(), &tensor(&c["grads"][p.name()]), p.name());
    }
    assert_eq!(formula(&net), "FeedForward(MaxPool(Conv(x)))");
}

#[test]
fn every_block_passes_gradcheck() {
    let store = ParamStore::with_dtype(1, DType::F64);
    let net = small_net(&store);
    let x =
        Tensor::randn(&[2, 2, 6, 6], 0.0, 1.0, DType::F64, &mut ferrograd::Rng::seed(2)).unwrap();
    let params = store.params();
    let mut inputs = vec![x];
    inputs.extend(params.iter().map(|p| p.get()));
    gradcheck(
        |xs| {
            for (p, v) in params.iter().zip(&xs[1..]) {
                p.set(v).unwrap();
            }
            // Route the gradient to the inputs gradcheck differentiates, not the stored leaves.
            let h = xs[0].conv2d(&xs[1], Some(&xs[2]), (1, 1), (1, 1))?.relu()?.max_pool2d(
                (2, 2),
                (2, 2),
                (0, 0),
            )?;
            h.flatten_from(1)?.linear(&xs[3], Some(&xs[4]))
        },
        &inputs,
        1e-6,
        1e-5,
    )
    .unwrap();
    // And the modules themselves compute exactly that composition.
    let x = &inputs[0];
    let direct = x
        .conv2d(&params[0].get(), Some(&params[1].get()), (1, 1), (1, 1))
        .unwrap()
        .relu()
        .unwrap()
        .max_pool2d((2, 2), (2, 2), (0, 0))
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .linear(&params[2].get(), Some(&params[3].get()))
        .unwrap();
    assert_eq!(net.forward(x).unwrap().to_vec::<f64>().unwrap(), direct.to_vec::<f64>().unwrap());
}

#[test]
fn the_lectures_worked_examples_to_the_digit() {
    let store = ParamStore::new(0);
    let conv =
        Conv::new(store.sub("c"), 1, 1, 3, ConvOptions { bias: false, ..Default::default() })
            .unwrap();
    conv.weight
        .set(
            &Tensor::from_vec(vec![1.0f32, 0., 1., 0., 1., 0., 1., 0., 1.], &[1, 1, 3, 3]).unwrap(),
        )
        .unwrap();
    let image = Tensor::from_vec(
        vec![
            1.0f32, 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 1., 1., 0., 0.,
            1., 1., 0., 0.,
        ],
        &[1, 1, 5, 5],
    )
    .unwrap();
    assert_eq!(
        conv.forward(&image).unwrap().to_vec::<f32>().unwrap(),
        vec![4., 3., 4., 2., 4., 3., 2., 3., 4.]
    );
    let x = Tensor::from_vec(
        vec![1.0f32, 1., 2., 4., 5., 6., 7., 8., 3., 2., 1., 0., 1., 2., 3., 4.],
        &[1, 1, 4, 4],
    )
    .unwrap();
    assert_eq!(
        MaxPool::new(2, 2).unwrap().forward(&x).unwrap().to_vec::<f32>().unwrap(),
        vec![6., 8., 3., 4.]
    );
}

#[test]
fn alexnet_prints_the_lectures_formula_and_a_parameter_table() {
    let store = ParamStore::new(0);
    let net = models::alexnet(&store, &models::AlexNetConfig::imagenet()).unwrap();
    let names: Vec<String> = store.params().iter().map(|p| p.name().to_string()).collect();
    assert_eq!(names[0], "features.0.weight");
    assert_eq!(names.last().unwrap(), "classifier.6.bias");
    assert_eq!(store.num_params(), 61_100_840, "torchvision's AlexNet has 61,100,840 parameters");
    let small = ParamStore::new(0);
    let net_small = models::alexnet(&small, &models::AlexNetConfig::mnist()).unwrap();
    let table = summary(&net_small, &[1, 1, 28, 28]).unwrap();
    assert!(
        table.starts_with("FeedForward^3(MaxPool(Conv^3(MaxPool(Conv(MaxPool(Conv(x)))))))"),
        "{table}"
    );
    assert!(
        table.contains("Conv(1→32, 3×3, pad 1) + ReLU") && table.contains("[1, 10]"),
        "{table}"
    );
    drop(net);
    let zero_stride = models::AlexNetConfig { first_stride: 0, ..models::AlexNetConfig::mnist() };
    let e = models::alexnet(&ParamStore::new(0), &zero_stride).err().unwrap().to_string();
    assert!(e.contains("stride must be positive"), "{e}");
}

#[test]
fn dropout_drops_only_while_training() {
    let store = ParamStore::new(5);
    let d = Dropout::new(&store, 0.5).unwrap();
    let x = Tensor::ones(&[1000], DType::F32).unwrap();
    let y = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!(
        (400..600).contains(&zeros) && y.iter().all(|&v| v == 0.0 || v == 2.0),
        "{zeros} zeros"
    );
    store.eval();
    assert_eq!(d.forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 1000]);
    assert!(Dropout::new(&store, 1.0).is_err());
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-nn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("model.safetensors")
}

/// Trains the small net with Adam on fixed data (with dropout for the RNG's sake).
fn train(store: &ParamStore, net: &Sequential, opt: &mut dyn Optimizer, steps: usize) {
    let x =
        Tensor::randn(&[4, 2, 6, 6], 0.0, 1.0, DType::F32, &mut ferrograd::Rng::seed(11)).unwrap();
    let y = Tensor::from_vec(vec![0i64, 1, 2, 3], &[4]).unwrap();
    let drop = Dropout::new(store, 0.2).unwrap();
    for _ in 0..steps {
        let loss =
            drop.forward(&net.forward(&x).unwrap()).unwrap().cross_entropy(&y, None).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
}

#[test]
fn resume_continues_exactly_to_the_bit() {
    let config = serde_json::json!({"model": "small"});
    // 20 steps straight.
    let s1 = ParamStore::new(3);
    let n1 = small_net(&s1);
    let mut o1 = Adam::new(s1.params(), AdamConfig::adamw(0.01)).unwrap();
    train(&s1, &n1, &mut o1, 20);
    // 10 steps, save, load into a fresh model and optimizer, 10 more.
    let path = temp("resume");
    let s2 = ParamStore::new(3);
    let n2 = small_net(&s2);
    let mut o2 = Adam::new(s2.params(), AdamConfig::adamw(0.01)).unwrap();
    train(&s2, &n2, &mut o2, 10);
    save_checkpoint(&path, &s2, Some(&o2), 10, &config).unwrap();
    let s3 = ParamStore::new(99);
    let n3 = small_net(&s3);
    let mut o3 = Adam::new(s3.params(), AdamConfig::adamw(0.01)).unwrap();
    let info = load_checkpoint(&path, &s3, Some(&mut o3)).unwrap();
    assert_eq!((info.step, info.config), (10, config));
    train(&s3, &n3, &mut o3, 10);
    for (a, b) in s1.params().iter().zip(s3.params()) {
        assert_eq!(
            a.get().to_vec::<f32>().unwrap(),
            b.get().to_vec::<f32>().unwrap(),
            "{}",
            a.name()
        );
    }
}

#[test]
fn optimizer_state_is_kept_in_the_parameters_dtype_and_older_f64_state_loads() {
    let s1 = ParamStore::new(3);
    let n1 = small_net(&s1);
    let mut o1 = Adam::new(s1.params(), AdamConfig::adamw(0.01)).unwrap();
    train(&s1, &n1, &mut o1, 3);
    let (state, steps) = o1.state();
    assert!(state.iter().all(|(_, t)| t.dtype() == DType::F32), "f32 parameters, f32 state");
    // The same state widened to f64, as checkpoints before this change hold it.
    let wide: Vec<(String, Tensor)> =
        state.iter().map(|(k, t)| (k.clone(), t.to_dtype(DType::F64).unwrap())).collect();
    // A twin run to the same point (parameters and dropout's generator), with a fresh optimizer
    // that takes the widened state.
    let s2 = ParamStore::new(3);
    let n2 = small_net(&s2);
    train(&s2, &n2, &mut Adam::new(s2.params(), AdamConfig::adamw(0.01)).unwrap(), 3);
    let mut o2 = Adam::new(s2.params(), AdamConfig::adamw(0.01)).unwrap();
    o2.load_state(&wide, steps).unwrap();
    train(&s1, &n1, &mut o1, 2);
    train(&s2, &n2, &mut o2, 2);
    for (a, b) in s1.params().iter().zip(s2.params()) {
        assert_eq!(a.get().to_vec::<f32>().unwrap(), b.get().to_vec::<f32>().unwrap());
    }
    // Integer state is refused, naming the slot.
    let ints: Vec<(String, Tensor)> =
        state.iter().map(|(k, t)| (k.clone(), t.to_dtype(DType::I64).unwrap())).collect();
    let e = o2.load_state(&ints, steps).unwrap_err().to_string();
    assert!(e.contains("exp_avg/") && e.contains("i64"), "{e}");
}

#[test]
fn bad_checkpoints_are_refused_and_nothing_is_lost() {
    let path = temp("bad");
    let store = ParamStore::new(1);
    let _net = small_net(&store);
    save_checkpoint(&path, &store, None, 7, &serde_json::json!({})).unwrap();
    let good = std::fs::read(&path).unwrap();
    let before: Vec<Vec<f32>> = store.params().iter().map(|p| p.get().to_vec().unwrap()).collect();
    let other = ParamStore::new(2);
    let _other_net = small_net(&other);
    let unchanged = |s: &ParamStore| {
        s.params().iter().map(|p| p.get().to_vec::<f32>().unwrap()).collect::<Vec<_>>()
    };
    let other_before = unchanged(&other);

    // Truncated.
    let cut = path.with_file_name("cut.safetensors");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let e = load_checkpoint(&cut, &other, None).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    // Corrupt header.
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    std::fs::write(&cut, &bad).unwrap();
    assert!(load_checkpoint(&cut, &other, None).is_err());
    // Another model's shapes: named tensor in the message.
    let wide = ParamStore::new(1);
    let _ = Conv::new(wide.sub(0), 2, 5, 3, ConvOptions::default()).unwrap();
    let e = load_checkpoint(&path, &wide, None).unwrap_err().to_string();
    assert!(e.contains("0.weight") && e.contains("[5, 2, 3, 3]"), "{e}");
    // A model with a parameter the file lacks.
    let more = ParamStore::new(1);
    let _ = small_net(&more);
    more.param("extra", &[1], Init::Zeros).unwrap();
    assert!(load_checkpoint(&path, &more, None)
        .unwrap_err()
        .to_string()
        .contains("extra is missing"));
    // Resuming an optimizer from a file without optimizer state.
    let mut opt =
        Sgd::new(other.params(), SgdConfig { momentum: 0.9, ..Default::default() }).unwrap();
    assert!(load_checkpoint(&path, &other, Some(&mut opt))
        .unwrap_err()
        .to_string()
        .contains("no optimizer state"));
    assert_eq!(unchanged(&other), other_before, "a refused load changes nothing");
    // The good file is still there and still loads.
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(load_checkpoint(&path, &other, None).unwrap().step, 7);
    assert_eq!(unchanged(&other), before);
}

#[test]
fn schedules_and_clipping() {
    use ferrograd_nn::optim::{clip_grad_norm, clip_grad_value, Schedule};
    assert_eq!(Schedule::Step { every: 10, gamma: 0.5 }.lr(1.0, 25), 0.25);
    assert!((Schedule::Cosine { total: 100, min_lr: 0.1 }.lr(1.0, 50) - 0.55).abs() < 1e-12);
    let store = ParamStore::new(0);
    let p = store.param("p", &[2], Init::Zeros).unwrap();
    let mut g = Gradients::default();
    g.set(&p.get(), Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap());
    let norm = clip_grad_norm(&mut g, &store.params(), 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-9);
    close(g.get(&p.get()).unwrap(), &Tensor::from_vec(vec![0.6f32, 0.8], &[2]).unwrap(), "clipped");
    g.set(&p.get(), Tensor::from_vec(vec![3.0f32, -0.5], &[2]).unwrap());
    clip_grad_value(&mut g, &store.params(), 1.0).unwrap();
    assert_eq!(g.get(&p.get()).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -0.5]);
    assert!(clip_grad_norm(&mut g, &store.params(), 0.0).is_err());
}

/// `loss` of the model in f64, with the store's flat gradients checked per parameter: in
/// every layout alike (store order, reversed, creation order), each a view of its bucket, and
/// each against central differences of the loss in a few of its elements.
fn check_flat_gradients(store: &ParamStore, loss: impl Fn() -> Tensor, what: &str) {
    let params = store.params();
    let values: Vec<Tensor> = params.iter().map(|p| p.get()).collect();
    let flat = store.backward(&loss()).unwrap();
    let mut reversed_order = values.clone();
    reversed_order.reverse();
    let reversed = loss().backward_for(&reversed_order).unwrap();
    let by_creation = loss().backward().unwrap();
    assert_eq!(flat.buckets().len(), 1, "{what}: one f64 bucket");
    let bucket = flat.buckets()[0].to_vec::<f64>().unwrap();
    let mut next = 0;
    for (p, v) in params.iter().zip(&values) {
        let g = flat.get(v).unwrap_or_else(|| panic!("{what}: {} has no gradient", p.name()));
        let (b, range) = flat.bucket_range(v).unwrap();
        assert_eq!((b, range.start), (0, next), "{what}: {} in creation order", p.name());
        next = range.end;
        assert!(g.shares_memory(&flat.buckets()[0]), "{what}: {} is a view", p.name());
        let gv = g.to_vec::<f64>().unwrap();
        assert_eq!(gv, bucket[range.clone()], "{what}: {} in its bucket", p.name());
        for other in [&reversed, &by_creation] {
            assert_eq!(other.get(v).unwrap().to_vec::<f64>().unwrap(), gv, "{what}: {}", p.name());
        }
        // Central differences at a few elements of this parameter alone.
        let base = v.to_vec::<f64>().unwrap();
        for i in [0, base.len() / 2, base.len() - 1] {
            let at = |delta: f64| {
                let mut moved = base.clone();
                moved[i] += delta;
                p.set(&Tensor::from_vec(moved, v.dims()).unwrap()).unwrap();
                let l = loss().item().unwrap();
                p.set(v).unwrap();
                l
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            let scale = 1.0 + numeric.abs().max(gv[i].abs());
            assert!(
                (numeric - gv[i]).abs() <= 1e-5 * scale,
                "{what}: {}[{i}]: flat store {} against finite differences {numeric}",
                p.name(),
                gv[i]
            );
        }
    }
    assert_eq!(next, bucket.len(), "{what}: the bucket holds exactly the parameters");
}

#[test]
fn the_flat_gradient_store_matches_per_tensor_finite_differences_on_every_block() {
    let rng = |s| ferrograd::Rng::seed(s);
    // Conv, MaxPool and FeedForward.
    let store = ParamStore::with_dtype(1, DType::F64);
    let net = small_net(&store);
    let x = Tensor::randn(&[2, 2, 6, 6], 0.0, 1.0, DType::F64, &mut rng(2)).unwrap();
    check_flat_gradients(
        &store,
        || net.forward(&x).unwrap().pow(2.0).unwrap().sum_all().unwrap(),
        "cnn",
    );
    // Attention, AddNorm and FeedForward in a TransformerBlock, pre- and post-norm.
    for pre in [false, true] {
        let store = ParamStore::with_dtype(3, DType::F64);
        let block = TransformerBlock::new(&store, 8, 2, 16, true, pre).unwrap();
        let x = Tensor::randn(&[2, 5, 8], 0.0, 1.0, DType::F64, &mut rng(4)).unwrap();
        let loss = || block.forward(&x).unwrap().pow(2.0).unwrap().sum_all().unwrap();
        check_flat_gradients(&store, loss, "transformer block");
    }
    // SimpleRNN and LSTM run over a sequence, both directions.
    let x = Tensor::randn(&[2, 4, 3], 0.0, 1.0, DType::F64, &mut rng(5)).unwrap();
    let store = ParamStore::with_dtype(6, DType::F64);
    let rnn = SequenceRNN::<SimpleRNN>::new(&store, 3, 5, 0, true).unwrap();
    check_flat_gradients(
        &store,
        || rnn.forward(&x).unwrap().pow(2.0).unwrap().sum_all().unwrap(),
        "rnn",
    );
    let store = ParamStore::with_dtype(7, DType::F64);
    let lstm = SequenceRNN::<LSTM>::new(&store, 3, 5, 0, true).unwrap();
    check_flat_gradients(
        &store,
        || lstm.forward(&x).unwrap().pow(2.0).unwrap().sum_all().unwrap(),
        "lstm",
    );
    // EmbedToken and GenerateToken sharing one table: two gradients summed into one slot.
    let store = ParamStore::with_dtype(8, DType::F64);
    let table = store.param("embed.weight", &[7, 4], Init::Normal { mean: 0.0, std: 1.0 }).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 3, 3, 6], &[4]).unwrap();
    let targets = Tensor::from_vec(vec![3i64, 0, 6, 1], &[4]).unwrap();
    let loss = || {
        let w = table.get();
        let h = w.index_select(0, &ids).unwrap().tanh().unwrap();
        h.matmul(&w.transpose(0, 1).unwrap()).unwrap().cross_entropy(&targets, None).unwrap()
    };
    check_flat_gradients(&store, loss, "tied embedding");
}

#[test]
fn clipping_scales_the_flat_buckets_in_place() {
    let store = ParamStore::new(0);
    let a = store.param("a", &[2], Init::Constant(1.0)).unwrap();
    let b = store.param("b", &[1], Init::Constant(1.0)).unwrap();
    // Gradients 3, 3 (a) and 4·… (b): norm √(9 + 9 + 16) = √34.
    let loss = a
        .get()
        .sum_all()
        .unwrap()
        .mul_scalar(3.0)
        .unwrap()
        .add(&b.get().sum_all().unwrap().mul_scalar(4.0).unwrap())
        .unwrap();
    let mut grads = store.backward(&loss).unwrap();
    let before = grads.buckets()[0].clone();
    let norm = optim::clip_grad_norm(&mut grads, &store.params(), 1.0).unwrap();
    assert!((norm - 34f64.sqrt()).abs() < 1e-5);
    let scaled = grads.buckets()[0].to_vec::<f32>().unwrap();
    let want: Vec<f32> = [3.0f32, 3.0, 4.0].iter().map(|g| g / (34f32.sqrt() + 1e-6)).collect();
    for (s, w) in scaled.iter().zip(&want) {
        assert!((s - w).abs() < 1e-6, "{scaled:?} against {want:?}");
    }
    assert!(grads.get(&a.get()).unwrap().shares_memory(&grads.buckets()[0]));
    assert_eq!(grads.get(&b.get()).unwrap().to_vec::<f32>().unwrap(), vec![scaled[2]]);
    // A handle taken before keeps the values it saw.
    assert_eq!(before.to_vec::<f32>().unwrap(), vec![3.0, 3.0, 4.0]);
}
