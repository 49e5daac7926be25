//! The `ferrograd` binary as a person runs it.

use std::process::Command;

fn ferrograd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrograd")).args(args).output().expect("the binary runs")
}

#[test]
fn tour_runs_to_the_end_and_learns() {
    let out = ferrograd(&["tour"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tour failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("FeedForward^3"), "{text}");
    assert!(text.contains("tour finished"), "{text}");
    let acc: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("held-out accuracy: "))
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .expect("the tour prints its held-out accuracy");
    assert!(acc >= 90.0, "spirals held-out accuracy {acc}%");
}

#[test]
fn bench_w1_prints_its_keys_as_json() {
    let out = ferrograd(&["bench", "W1", "--json", "--quick"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    for key in ["gflops_256", "gflops_1024", "gflops_2048"] {
        assert!(v[key].as_f64().is_some_and(|g| g > 0.0), "{key} missing in {line}");
    }
}

#[test]
fn unknown_workload_is_a_clear_error() {
    let out = ferrograd(&["bench", "W99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown workload \"W99\"") && err.contains("available"), "{err}");
}
