//! GFLOP/s of `backend::cpu::matmul` at the workloads' product shapes, for each layout of the
//! operands (N: row-major, T: transposed through strides), as training calls them: x·Wᵀ is NT,
//! dY·W is NN, dYᵀ·X is TN. Run with `cargo run --release --example gemm_layouts`.
//! Numbers move with the machine's load; compare columns of one run.

use ferrograd::backend::cpu::{matmul, MatRef};
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn seconds_per_call(mut f: impl FnMut()) -> f64 {
    (0..20).for_each(|_| f());
    let reps = 200;
    let t = Instant::now();
    (0..reps).for_each(|_| f());
    t.elapsed().as_secs_f64() / reps as f64
}

fn operand(data: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, f32> {
    if transposed {
        MatRef { data, row_stride: 1, col_stride: rows }
    } else {
        MatRef { data, row_stride: cols, col_stride: 1 }
    }
}

fn main() {
    let shapes = [
        ("W2 layer 1", 128, 784, 256),
        ("W2 layer 2", 128, 256, 256),
        ("W3 dense", 64, 3136, 256),
        ("W4 step", 32, 256, 1024),
        ("W5 QKV", 2048, 128, 384),
        ("W5 FF up", 2048, 128, 512),
        ("W7 FF up", 1024, 128, 512),
        ("W7 FF down", 1024, 512, 128),
        ("W7 head QKᵀ", 32, 32, 32),
        ("W5 head QKᵀ", 128, 32, 128),
        ("W5 head PV", 128, 128, 32),
    ];
    println!("{:12} {:>16}  {:>6} {:>6} {:>6} {:>6}", "", "m×k×n", "NN", "NT", "TN", "TT");
    for (name, m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mut row = String::new();
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (am, bm) = (operand(&a, m, k, ta), operand(&b, k, n, tb));
            let t = seconds_per_call(|| matmul(am, bm, m, k, n, &mut out, m * k * n > 1 << 20));
            row += &format!(" {:6.1}", flops / t / 1e9);
        }
        println!("{name:12} {:>16} {row}", format!("{m}×{k}×{n}"));
    }
}
