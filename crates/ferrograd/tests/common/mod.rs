//! Shared by the parity and gradcheck tests: the PyTorch fixtures and one function that runs
//! any fixture case's op on ferrograd tensors.

use ferrograd::{Result, Tensor};
use serde_json::Value;

pub struct Case {
    pub name: String,
    pub params: Value,
    pub inputs: Vec<Tensor>,
    pub output: Tensor,
    pub upstream: Option<Tensor>,
    pub grads: Vec<Option<Tensor>>,
}

pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = v["data"].as_array().unwrap();
    match v["dtype"].as_str().unwrap() {
        "i64" => Tensor::from_vec(data.iter().map(|x| x.as_i64().unwrap()).collect(), &shape),
        "f64" => Tensor::from_vec(data.iter().map(|x| x.as_f64().unwrap()).collect(), &shape),
        _ => Tensor::from_vec(data.iter().map(|x| x.as_f64().unwrap() as f32).collect(), &shape),
    }
    .unwrap()
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn cases() -> Vec<Case> {
    let all = fixture("ops.json");
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            params: c["params"].clone(),
            inputs: c["inputs"].as_array().unwrap().iter().map(tensor).collect(),
            output: tensor(&c["output"]),
            upstream: (!c["upstream"].is_null()).then(|| tensor(&c["upstream"])),
            grads: c["grads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| (!g.is_null()).then(|| tensor(g)))
                .collect(),
        })
        .collect()
}

fn dims_isize(v: &Value) -> Vec<isize> {
    v.as_array().unwrap().iter().map(|d| d.as_i64().unwrap() as isize).collect()
}

fn dims_usize(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

fn pair(v: &Value) -> (usize, usize) {
    let d = dims_usize(v);
    (d[0], d[1])
}

/// Runs the op a fixture case names, with its parameters, on `x`.
pub fn apply(name: &str, p: &Value, x: &[Tensor]) -> Result<Tensor> {
    let dim = || p["dim"].as_i64().unwrap() as isize;
    let keep = || p["keepdim"].as_bool().unwrap();
    match name {
        "add" => x[0].add(&x[1]),
        "sub" => x[0].sub(&x[1]),
        "mul" => x[0].mul(&x[1]),
        "div" => x[0].div(&x[1]),
        "neg" => x[0].neg(),
        "exp" => x[0].exp(),
        "log" => x[0].log(),
        "sqrt" => x[0].sqrt(),
        "abs" => x[0].abs(),
        "tanh" => x[0].tanh(),
        "sigmoid" => x[0].sigmoid(),
        "relu" => x[0].relu(),
        "gelu" => x[0].gelu(),
        "gelu_tanh" => x[0].gelu_tanh(),
        "pow" => x[0].pow(p["p"].as_f64().unwrap()),
        "affine" => x[0].affine(p["a"].as_f64().unwrap(), p["b"].as_f64().unwrap()),
        "sum" => x[0].sum(&dims_isize(&p["dims"]), keep()),
        "mean" => x[0].mean(&dims_isize(&p["dims"]), keep()),
        "max" => x[0].max(&dims_isize(&p["dims"]), keep()),
        "min" => x[0].min(&dims_isize(&p["dims"]), keep()),
        "softmax" => x[0].softmax(dim()),
        "log_softmax" => x[0].log_softmax(dim()),
        "cross_entropy" => x[0].cross_entropy(&x[1], p["ignore_index"].as_i64()),
        "mse_loss" => x[0].mse_loss(&x[1]),
        "matmul" => x[0].matmul(&x[1]),
        "reshape" => x[0].reshape(&dims_usize(&p["dims"])),
        "permute" => x[0].permute(&dims_usize(&p["perm"])),
        "transpose" => {
            x[0].transpose(p["d0"].as_i64().unwrap() as isize, p["d1"].as_i64().unwrap() as isize)
        }
        "narrow" => x[0].narrow(
            dim(),
            p["start"].as_u64().unwrap() as usize,
            p["len"].as_u64().unwrap() as usize,
        ),
        "concat" => Tensor::concat(&x[..2], dim()),
        "stack" => Tensor::stack(&x[..2], dim()),
        "broadcast_to" => x[0].broadcast_to(&dims_usize(&p["dims"])),
        "index_select" => x[0].index_select(dim(), &x[1]),
        "gather" if dim() == 0 => {
            let rows = x[1].narrow(0, 0, 1)?;
            x[0].gather(0, &Tensor::concat(&[x[1].clone(), rows], 0)?)
        }
        "gather" => x[0].gather(dim(), &x[1]),
        "scatter_add" => x[0].scatter_add(dim(), &x[1], &x[2]),
        "where_cond" => x[0].where_cond(&x[1], &x[2]),
        "masked_fill" => x[0].masked_fill(&x[1], p["value"].as_f64().unwrap()),
        "linear" => x[0].linear(&x[1], x.get(2)),
        "eq" => x[0].eq(&x[1]),
        "ne" => x[0].ne(&x[1]),
        "lt" => x[0].lt(&x[1]),
        "le" => x[0].le(&x[1]),
        "gt" => x[0].gt(&x[1]),
        "ge" => x[0].ge(&x[1]),
        "to_dtype" => x[0].to_dtype(ferrograd::DType::F64),
        "conv2d" => x[0].conv2d(&x[1], x.get(2), pair(&p["stride"]), pair(&p["padding"])),
        "max_pool2d" => {
            x[0].max_pool2d(pair(&p["kernel"]), pair(&p["stride"]), pair(&p["padding"]))
        }
        other => panic!("no ferrograd op for fixture case {other}"),
    }
}

/// Largest violation of |a − b| ≤ atol + rtol·|b|, as a multiple of the allowance (≤ 1 passes).
pub fn worst_ratio(a: &[f64], b: &[f64], atol: f64, rtol: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (atol + rtol * y.abs())).fold(0.0, f64::max)
}
