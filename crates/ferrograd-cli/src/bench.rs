//! `ferrograd bench`: the workloads of WORKLOADS.md, steady state, all cores, f32. The PyTorch
//! side is `bench/torch_workloads.py`, measured the same way (median of timed repetitions).

use ferrograd::{no_grad, DType, Rng, Tensor};
use std::time::{Duration, Instant};

pub fn run(workload: &str, json: bool, quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let min_time = if quick { Duration::ZERO } else { Duration::from_millis(1500) };
    let results: Vec<(String, f64)> = match workload.to_ascii_uppercase().as_str() {
        "W1" => w1_matmul(min_time)?,
        other => return Err(format!("unknown workload {other:?}; available: W1").into()),
    };
    if json {
        let map: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!((v * 10.0).round() / 10.0)))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        println!("{workload} ({} threads)", rayon_threads());
        for (k, v) in &results {
            println!("  {k:<24} {v:>10.1}");
        }
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Median seconds per call of `f`, after a warm-up, over at least `min_time` and 3 calls.
pub fn median_seconds(min_time: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || start.elapsed() < min_time {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// W1: C = A·B for square n = 256, 1024, 2048; GFLOP/s = 2n³ / seconds.
fn w1_matmul(min_time: Duration) -> ferrograd::Result<Vec<(String, f64)>> {
    let _g = no_grad();
    let mut rng = Rng::seed(0);
    let mut out = Vec::new();
    for n in [256usize, 1024, 2048] {
        let a = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut rng)?;
        let b = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut rng)?;
        let mut failed = None;
        let secs = median_seconds(min_time, || {
            if let Err(e) = a.matmul(&b) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        out.push((format!("gflops_{n}"), 2.0 * (n as f64).powi(3) / secs / 1e9));
    }
    Ok(out)
}
