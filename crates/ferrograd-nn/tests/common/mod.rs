//! Shared by the test files: reading the PyTorch fixtures and comparing tensors.

use ferrograd::{Gradients, Tensor};
use ferrograd_nn::{Attention, FeedForward};
use serde_json::Value;

/// A fixture tensor: `{"shape": [...], "dtype": "f32" | "i64", "data": [...]}`.
pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = v["data"].as_array().unwrap();
    if v["dtype"] == "i64" {
        Tensor::from_vec(data.iter().map(|x| x.as_i64().unwrap()).collect(), &shape).unwrap()
    } else {
        Tensor::from_vec(data.iter().map(|x| x.as_f64().unwrap() as f32).collect(), &shape).unwrap()
    }
}

/// `tests/fixtures/<name>`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts |a − b| ≤ atol + rtol·|b| element by element, naming the first that is not.
pub fn assert_close(a: &Tensor, b: &Tensor, atol: f64, rtol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= atol + rtol * y.abs(), "{what}[{i}]: {x} vs reference {y}");
    }
}

/// PyTorch's packed in_proj (3D, …) into our query, key and value projections.
#[allow(dead_code)] // not every test file loads attention
pub fn load_attention(a: &Attention, p: &Value, prefix: &str) {
    let w = tensor(&p[format!("{prefix}in_proj_weight")]);
    let b = tensor(&p[format!("{prefix}in_proj_bias")]);
    let d = w.dims()[1];
    for (i, proj) in [&a.query, &a.key, &a.value].iter().enumerate() {
        proj.weight.set(&w.narrow(0, i * d, d).unwrap()).unwrap();
        proj.bias.set(&b.narrow(0, i * d, d).unwrap()).unwrap();
    }
    a.output.weight.set(&tensor(&p[format!("{prefix}out_proj.weight")])).unwrap();
    a.output.bias.set(&tensor(&p[format!("{prefix}out_proj.bias")])).unwrap();
}

#[allow(dead_code)]
pub fn attention_grads(a: &Attention, g: &Gradients) -> (Tensor, Tensor) {
    let cat = |f: &dyn Fn(&FeedForward) -> Tensor| {
        Tensor::concat(&[f(&a.query), f(&a.key), f(&a.value)], 0).unwrap()
    };
    (
        cat(&|p| g.get(&p.weight.get()).unwrap().clone()),
        cat(&|p| g.get(&p.bias.get()).unwrap().clone()),
    )
}

/// PyTorch's key padding mask (1 = padding) as ours (1 = token).
#[allow(dead_code)]
pub fn token_mask(padding: &Tensor) -> Tensor {
    padding.eq(&Tensor::scalar(0i64)).unwrap()
}
