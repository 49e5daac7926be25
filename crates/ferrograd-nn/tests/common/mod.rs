//! Shared by the test files: reading the PyTorch fixtures and comparing tensors.

use ferrograd::{Gradients, Tensor};
use ferrograd_nn::{pytorch, Module};
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

/// A fixture's `params`, a PyTorch `state_dict`, loaded into `module` by PyTorch's names.
#[allow(dead_code)] // not every test file loads PyTorch weights
pub fn load_torch(module: &dyn Module, params: &Value) {
    let tensors = params.as_object().unwrap().iter().map(|(k, v)| (k.clone(), tensor(v))).collect();
    pytorch::load_state_dict(module, &tensors, "the fixture").unwrap();
}

/// Our gradients under PyTorch's names against a fixture's `grads`: every parameter's.
#[allow(dead_code)]
pub fn check_torch_grads(module: &dyn Module, g: &Gradients, grads: &Value, atol: f64, what: &str) {
    let names = module.torch_names();
    assert!(!names.is_empty());
    for n in names {
        let parts: Vec<Tensor> = n.parts.iter().map(|p| g.get(&p.get()).unwrap().clone()).collect();
        let ours = Tensor::concat(&parts, 0).unwrap();
        assert_close(
            &ours,
            &tensor(&grads[&n.name]),
            atol,
            1e-4,
            &format!("{what} grad {}", n.name),
        );
    }
}

/// PyTorch's key padding mask (1 = padding) as ours (1 = token).
#[allow(dead_code)]
pub fn token_mask(padding: &Tensor) -> Tensor {
    pytorch::token_mask(padding).unwrap()
}
