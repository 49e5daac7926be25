//! Bad input to every op family gets a clear error naming the op and what was wrong, never a
//! panic.

use ferrograd::{DType, ErrorKind, Tensor};

fn t(dims: &[usize]) -> Tensor {
    Tensor::ones(dims, DType::F32).unwrap()
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

/// Asserts `r` failed with `kind` and a message holding every one of `words`.
fn fails<T: std::fmt::Debug>(r: ferrograd::Result<T>, kind: ErrorKind, words: &[&str]) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind, kind, "{e}");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message {msg:?} lacks {w:?}");
    }
}

#[test]
fn creation() {
    fails(
        Tensor::from_vec(vec![1.0f32; 5], &[2, 3]),
        ErrorKind::Shape,
        &["from_vec", "5 values", "[2, 3]"],
    );
    fails(Tensor::from_vec(vec![1.0f32], &[usize::MAX, 2]), ErrorKind::Value, &["shape"]);
    fails(Tensor::arange(0.0, 1.0, 0.0, DType::F32), ErrorKind::Value, &["arange", "step"]);
    let mut rng = ferrograd::Rng::seed(0);
    fails(
        Tensor::rand_uniform(&[2], 1.0, 1.0, DType::F32, &mut rng),
        ErrorKind::Value,
        &["low < high"],
    );
    fails(t(&[2]).item(), ErrorKind::Shape, &["item", "[2]"]);
    fails(t(&[2]).to_vec::<i64>(), ErrorKind::DType, &["f32", "i64"]);
}

#[test]
fn element_wise() {
    fails(t(&[3]).add(&t(&[4])), ErrorKind::Shape, &["add", "[3]", "[4]", "broadcast"]);
    fails(
        t(&[2]).mul(&t(&[2]).to_dtype(DType::F64).unwrap()),
        ErrorKind::DType,
        &["mul", "f32", "f64"],
    );
    fails(ids(&[1, 2]).exp(), ErrorKind::DType, &["exp", "i64"]);
    fails(ids(&[1, 2]).add(&ids(&[1, 2])), ErrorKind::DType, &["add", "i64"]);
    fails(t(&[2]).lt(&t(&[3])), ErrorKind::Shape, &["lt"]);
    fails(t(&[2, 3]).masked_fill(&ids(&[1, 0, 1, 0]), 0.0), ErrorKind::Shape, &["where_cond"]);
    fails(t(&[2]).where_cond(&t(&[3]), &t(&[2])), ErrorKind::Shape, &["where_cond"]);
}

#[test]
fn reductions() {
    fails(t(&[2, 3]).sum(&[2], false), ErrorKind::Index, &["sum", "dimension 2", "[2, 3]"]);
    fails(t(&[2, 3]).sum(&[1, -1], false), ErrorKind::Index, &["twice"]);
    fails(t(&[2, 0]).max(&[1], false), ErrorKind::Value, &["max", "empty"]);
    fails(t(&[0]).mean(&[0], false), ErrorKind::Value, &["mean", "empty"]);
    fails(t(&[2, 3]).softmax(-3), ErrorKind::Index, &["softmax"]);
    fails(ids(&[1]).softmax(0), ErrorKind::DType, &["softmax", "i64"]);
}

#[test]
fn matmul_and_losses() {
    fails(
        t(&[2, 3]).matmul(&t(&[4, 5])),
        ErrorKind::Shape,
        &["matmul", "[2, 3] × [4, 5]", "3 vs 4"],
    );
    fails(t(&[3]).matmul(&t(&[3, 2])), ErrorKind::Shape, &["matmul", "rank 2"]);
    fails(t(&[2, 2, 3]).matmul(&t(&[3, 3, 1])), ErrorKind::Shape, &["matmul", "broadcast"]);
    fails(
        t(&[2, 3]).cross_entropy(&ids(&[0, 3]), None),
        ErrorKind::Index,
        &["cross_entropy", "target 3", "3 classes"],
    );
    fails(t(&[2, 3]).cross_entropy(&ids(&[0]), None), ErrorKind::Shape, &["targets must be (2,)"]);
    fails(t(&[2, 3]).cross_entropy(&t(&[2]), None), ErrorKind::DType, &["i64"]);
    fails(t(&[2, 3, 4]).cross_entropy(&ids(&[0, 1]), None), ErrorKind::Shape, &["(N, C)"]);
    fails(t(&[2, 3]).mse_loss(&t(&[3, 2])), ErrorKind::Shape, &["mse_loss"]);
}

#[test]
fn movement_and_indexing() {
    fails(t(&[2, 3]).reshape(&[4, 2]), ErrorKind::Shape, &["reshape", "6 elements", "8 elements"]);
    fails(t(&[2, 3]).permute(&[0, 0]), ErrorKind::Shape, &["permute", "[0, 0]"]);
    fails(t(&[2, 3]).transpose(0, 5), ErrorKind::Index, &["transpose"]);
    fails(t(&[2, 3]).narrow(1, 2, 2), ErrorKind::Index, &["narrow", "2..4", "size 3"]);
    fails(t(&[2, 3]).narrow(1, usize::MAX, 2), ErrorKind::Index, &["narrow"]);
    fails(Tensor::concat(&[], 0), ErrorKind::Value, &["concat", "none"]);
    fails(Tensor::concat(&[t(&[2, 3]), t(&[3, 3])], 1), ErrorKind::Shape, &["concat", "tensor 1"]);
    fails(Tensor::stack(&[t(&[2]), t(&[3])], 0), ErrorKind::Shape, &["stack"]);
    fails(
        t(&[2, 3]).broadcast_to(&[3, 3]),
        ErrorKind::Shape,
        &["broadcast_to", "[2, 3]", "[3, 3]"],
    );
    fails(t(&[2, 3]).squeeze(1), ErrorKind::Shape, &["squeeze", "not 1"]);
    fails(
        t(&[3, 2]).index_select(0, &ids(&[0, 3])),
        ErrorKind::Index,
        &["index_select", "index 3", "size 3"],
    );
    fails(t(&[3, 2]).index_select(0, &ids(&[-1])), ErrorKind::Index, &["index -1"]);
    fails(t(&[3, 2]).index_select(0, &t(&[1])), ErrorKind::DType, &["i64", "f32"]);
    let bad = Tensor::from_vec(vec![0i64, 9], &[1, 2]).unwrap();
    fails(t(&[3, 2]).gather(0, &bad), ErrorKind::Index, &["gather", "index 9"]);
    fails(t(&[3, 2]).gather(0, &ids(&[0])), ErrorKind::Shape, &["gather"]);
    fails(t(&[3, 2]).scatter_add(0, &bad, &t(&[2, 1])), ErrorKind::Shape, &["scatter_add", "src"]);
}

#[test]
fn empty_tensors_work_or_fail_cleanly() {
    let e = t(&[0, 3]);
    assert_eq!(e.exp().unwrap().dims(), &[0, 3]);
    assert_eq!(e.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    assert_eq!(e.matmul(&t(&[3, 2])).unwrap().dims(), &[0, 2]);
    assert_eq!(t(&[2, 0]).matmul(&t(&[0, 2])).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 4]);
    // No input features: the bias on every row, as in PyTorch, with or without a gradient.
    for x in [t(&[2, 0]), t(&[2, 0]).requiring_grad()] {
        let y = x.linear(&t(&[3, 0]), Some(&t(&[3]))).unwrap();
        assert_eq!((y.dims(), y.to_vec::<f32>().unwrap()), (&[2, 3][..], vec![1.0; 6]));
    }
    assert_eq!(e.softmax(1).unwrap().dims(), &[0, 3]);
    fails(t(&[2, 0]).cross_entropy(&ids(&[0, 0]), None), ErrorKind::Shape, &["zero classes"]);
    // No outputs, no channels, no sequences: empty results and gradients, not a panic.
    let (x, w, b) = (t(&[3, 4]).requiring_grad(), t(&[0, 4]).requiring_grad(), t(&[0]));
    let y = x.linear(&w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[3, 0]);
    assert_eq!(y.sum_all().unwrap().backward().unwrap().get(&x).unwrap().dims(), &[3, 4]);
    let x = t(&[1, 0, 4, 4]).requiring_grad();
    let y = x.conv2d(&t(&[2, 0, 3, 3]), None, (1, 1), (1, 1)).unwrap();
    assert_eq!(y.dims(), &[1, 2, 4, 4]);
    y.sum_all().unwrap().backward().unwrap();
    for cell in [ferrograd::RecurrentCell::Lstm, ferrograd::RecurrentCell::Tanh] {
        let g = if cell == ferrograd::RecurrentCell::Lstm { 4 } else { 1 };
        let (x, w_hh) = (t(&[0, 3, g * 2]).requiring_grad(), t(&[g * 2, 2]).requiring_grad());
        let r = x.recurrence(cell, &w_hh, &t(&[0, 2]), &t(&[0, 2]), None).unwrap();
        let grads = r.outputs.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&w_hh).unwrap().to_vec::<f32>().unwrap(), vec![0.0; g * 4]);
    }
}

#[test]
fn sizes_too_large_for_memory_are_errors() {
    fails(Tensor::zeros(&[1 << 40, 1 << 40], DType::F32), ErrorKind::Value, &["shape", "memory"]);
    // 2^50 f64 elements fit in usize, not in memory: an error instead of an abort.
    fails(
        Tensor::full(&[1 << 25, 1 << 25], 1.0, DType::F64),
        ErrorKind::Value,
        &["full", "memory"],
    );
    fails(Tensor::arange(0.0, 1e30, 1.0, DType::F32), ErrorKind::Value, &["arange", "too many"]);
    let mut rng = ferrograd::Rng::seed(0);
    fails(
        Tensor::randn(&[1 << 31, 1 << 31], 0.0, 1.0, DType::F32, &mut rng),
        ErrorKind::Value,
        &["randn"],
    );
}

#[test]
fn results_too_large_for_memory_are_errors_not_aborts() {
    let big = 1usize << 40;
    // Summing away an empty dimension leaves 2^40 zeros; a broadcast, an outer product, a
    // gather of many rows and a sum of a column and a row grow past their inputs.
    fails(t(&[big, 0]).sum(&[1], false), ErrorKind::Value, &["sum", "memory"]);
    assert_eq!(t(&[big, 0]).sum_all().unwrap().item().unwrap(), 0.0);
    fails(t(&[2]).broadcast_to(&[big, 2]), ErrorKind::Value, &["broadcast_to", "memory"]);
    fails(t(&[1 << 20, 1]).matmul(&t(&[1, 1 << 20])), ErrorKind::Value, &["matmul", "memory"]);
    let rows = Tensor::zeros(&[1 << 22], DType::I64).unwrap();
    fails(t(&[1, 1 << 20]).index_select(0, &rows), ErrorKind::Value, &["index_select", "memory"]);
    let (tall, wide) = (t(&[1 << 20, 1]), t(&[1, 1 << 20]));
    fails(tall.add(&wide), ErrorKind::Value, &["add", "memory"]);
    // Padding that no input could need, for convolution and its unfolded patches.
    fails(
        t(&[1, 1, 1, 1]).conv2d(&t(&[1, 1, 1, 1]), None, (1, 1), (1 << 20, 1 << 20)),
        ErrorKind::Value,
        &["conv", "memory"],
    );
    fails(
        t(&[1, 1, 1, 1]).conv2d(&t(&[1, 1, 1, 1]), None, (1, 1), (usize::MAX / 2 + 1, 0)),
        ErrorKind::Value,
        &["conv", "padding"],
    );
}

#[test]
fn convolution_where_padding_is_all_a_kernel_column_sees_runs_both_ways() {
    // Images of zero width or height are all padding; a kernel of width 5 over a padded
    // 1-pixel row has columns that see only padding (they get no gradient from the image);
    // images of no channels give zeros.
    for (dims, kernel, padding) in [
        ([1, 1, 2, 0], [1, 1, 3, 4], (1, 2)),
        ([1, 1, 0, 2], [1, 1, 2, 3], (1, 2)),
        ([2, 1, 1, 1], [1, 1, 1, 5], (0, 2)),
        ([1, 0, 3, 3], [2, 0, 2, 2], (1, 1)),
    ] {
        let x = Tensor::randn(&dims, 0.0, 1.0, DType::F64, &mut ferrograd::Rng::seed(1))
            .unwrap()
            .requiring_grad();
        let w = Tensor::ones(&kernel, DType::F64).unwrap().requiring_grad();
        let y = x.conv2d(&w, None, (1, 1), padding).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&w).unwrap().dims(), &kernel);
        assert_eq!(g.get(&x).map(|g| g.dims().to_vec()).unwrap_or(dims.to_vec()), dims);
    }
}

#[test]
fn a_file_with_two_tensors_of_one_name_is_refused_before_writing() {
    let path =
        std::env::temp_dir().join(format!("ferrograd-dup-{}.safetensors", std::process::id()));
    let tensors = [("w".to_string(), t(&[2])), ("w".to_string(), t(&[3]))];
    let r = ferrograd::io::save_safetensors(&path, &tensors, &Default::default());
    fails(r, ErrorKind::Value, &["save_safetensors", "\"w\""]);
    assert!(!path.exists());
}

#[test]
fn a_saved_file_is_the_same_bytes_every_time_and_reads_back() {
    let dir = std::env::temp_dir();
    let path =
        |i: usize| dir.join(format!("ferrograd-bytes-{}-{i}.safetensors", std::process::id()));
    let meta: std::collections::BTreeMap<String, String> =
        (0..24).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
    let tensors = [("b".to_string(), t(&[3])), ("a".to_string(), t(&[2, 2]))];
    for i in 0..2 {
        ferrograd::io::save_safetensors(&path(i), &tensors, &meta).unwrap();
    }
    let (a, b) = (std::fs::read(path(0)).unwrap(), std::fs::read(path(1)).unwrap());
    assert_eq!(a, b, "two saves of the same tensors and metadata differ");
    let (loaded, read_meta) = ferrograd::io::load_safetensors(&path(0)).unwrap();
    assert_eq!(read_meta, meta);
    assert_eq!(
        loaded.iter().map(|(n, t)| (n.as_str(), t.dims())).collect::<Vec<_>>(),
        [("a", &[2, 2][..]), ("b", &[3][..])]
    );
    for i in 0..2 {
        let _ = std::fs::remove_file(path(i));
    }
}

#[test]
fn autograd_misuse() {
    let x = t(&[2]).requiring_grad();
    fails(x.mul(&x).unwrap().backward(), ErrorKind::Autograd, &["scalar", "[2]"]);
    fails(t(&[1]).backward(), ErrorKind::Autograd, &["does not require a gradient"]);
    let loss = x.mul(&x).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    fails(loss.backward(), ErrorKind::Autograd, &["already used", "freed"]);
}

#[test]
fn a_pipe_or_a_device_given_as_a_file_is_refused_without_waiting() {
    let fifo = std::env::temp_dir().join(format!("ferrograd-fifo-{}", std::process::id()));
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no mkfifo here");
        return;
    }
    // Opening a pipe nobody writes to would wait forever.
    for path in [fifo.as_path(), std::path::Path::new("/dev/zero")] {
        let e = ferrograd::io::read_text(path, "read").expect_err("refused");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = ferrograd::io::load_safetensors(path).expect_err("refused");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    }
    let _ = std::fs::remove_file(fifo);
}

#[test]
fn writes_and_partial_updates_outside_the_tensor_are_refused_and_change_nothing() {
    use ferrograd::Update;
    let sgd = Update::Sgd { lr: 0.1, weight_decay: 0.0 };
    let mut w = t(&[2, 3]);
    fails(w.update_part(5, &t(&[2]), &mut [], &sgd), ErrorKind::Shape, &["element 5", "[2, 3]"]);
    let f64s = Tensor::ones(&[2], DType::F64).unwrap();
    fails(w.update_part(0, &f64s, &mut [], &sgd), ErrorKind::Shape, &["f64", "f32"]);
    let adam =
        Update::Adam { beta1: 0.9, beta2: 0.999, scale: 1e-3, eps_c2s: 1e-8, decay: 1.0, l2: 0.0 };
    fails(
        w.update_part(0, &t(&[2]), &mut [t(&[6]), t(&[2, 3])], &adam),
        ErrorKind::Shape,
        &["state slot 0", "[6]"],
    );
    fails(w.update_part(0, &t(&[2]), &mut [], &adam), ErrorKind::Value, &["2 state slots, got 0"]);
    fails(w.update(&t(&[6]), &mut [], &sgd), ErrorKind::Shape, &["gradient", "[6]", "[2, 3]"]);
    fails(w.write_at(usize::MAX, &t(&[1])), ErrorKind::Shape, &["write_at", "[2, 3]"]);
    fails(w.write_at(0, &f64s), ErrorKind::Shape, &["write_at", "f64"]);
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0; 6]);
}

/// A fused block step given misfit sizes, another dtype, the wrong number of caches or
/// tensors that record gradients is refused, naming what it got, and the caches keep their
/// length.
#[test]
fn a_block_step_that_does_not_fit_is_refused_and_leaves_the_caches() {
    let (d, f) = (8, 12);
    let (w, b, w_in, b_in, w_out) = (t(&[d, d]), t(&[d]), t(&[f, d]), t(&[f]), t(&[d, f]));
    let wrong = t(&[d, 3]);
    let block = |heads: usize, query: &'static str| {
        let q = if query == "wrong" { &wrong } else { &w };
        ferrograd::PreNormBlock {
            heads,
            attention_norm: (&b, &b, 1e-5),
            query: (q, &b),
            key: (&w, &b),
            value: (&w, &b),
            output: (&w, &b),
            ff_norm: (&b, &b, 1e-5),
            ff_in: (&w_in, &b_in),
            activation: ferrograd::Nonlinearity::Gelu,
            ff_out: (&w_out, &b),
        }
    };
    let mut caches = [t(&[1, 3, d]), t(&[1, 3, d])];
    let x = t(&[1, 1, d]);
    let ok = [block(2, "ok")];
    fails(
        t(&[1, 2, d]).block_step(&ok, &mut caches),
        ErrorKind::Shape,
        &["block_step", "(1, 1, D)"],
    );
    fails(
        x.block_step(&[block(2, "wrong")], &mut caches),
        ErrorKind::Shape,
        &["block 0", "query", "(8, 8)", "[8, 3]"],
    );
    fails(
        x.block_step(&[block(2, "ok"), block(2, "ok")], &mut caches),
        ErrorKind::Value,
        &["2 blocks", "2 caches"],
    );
    let mut short = [t(&[1, 3, 4]), t(&[1, 3, 4])];
    fails(x.block_step(&ok, &mut short), ErrorKind::Shape, &["block_step", "[1, 3, 4]"]);
    fails(
        x.block_step(&[block(3, "ok")], &mut caches),
        ErrorKind::Value,
        &["3 heads", "8 features"],
    );
    let x64 = Tensor::ones(&[1, 1, d], DType::F64).unwrap();
    fails(x64.block_step(&ok, &mut caches), ErrorKind::DType, &["block_step"]);
    let learning = x.requiring_grad();
    fails(learning.block_step(&ok, &mut caches), ErrorKind::Autograd, &["no_grad"]);
    assert!(caches.iter().all(|c| c.dims() == [1, 3, d]));
    // And one that fits grows both caches by its row.
    let _g = ferrograd::no_grad();
    let y = learning.block_step(&ok, &mut caches).unwrap();
    assert_eq!(y.dims(), [1, 1, d]);
    assert!(caches.iter().all(|c| c.dims() == [1, 4, d]));
}
