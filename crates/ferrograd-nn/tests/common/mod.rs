//! Shared by the test files: reading the PyTorch fixtures and comparing tensors.

use ferrograd::Tensor;
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
