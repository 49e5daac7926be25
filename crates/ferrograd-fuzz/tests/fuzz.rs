//! Every fuzz target over seeded mutations of its seeds: each input must be accepted or
//! refused, without a panic, and without allocating more than a small bound beyond its size.
//!
//! `FERROGRAD_FUZZ_SECONDS=300` runs each target for that long instead of a fixed count;
//! `FERROGRAD_FUZZ_TARGET=name` runs one; `FERROGRAD_FUZZ_SEED` changes the mutations.

use ferrograd_fuzz::{mutate::mutate, Target, TARGETS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes held and the most held since the last reset.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            PEAK.fetch_max(HELD.fetch_add(layout.size(), Relaxed) + layout.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        HELD.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            let held = HELD.fetch_add(new_size, Relaxed) + new_size;
            PEAK.fetch_max(held, Relaxed);
            HELD.fetch_sub(layout.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one input may allocate beyond what was held before it: the model, tokenizer or tensors
/// the seeds describe take well under a megabyte, so anything near this bound was claimed by
/// the bytes, not held in them.
fn allowance(input: &[u8]) -> usize {
    (16 << 20) + 8 * input.len()
}

struct Outcome {
    inputs: usize,
    accepted: usize,
    most: usize,
    failures: Vec<String>,
}

/// Runs `target` on `input`, catching a panic and measuring what it allocated.
fn try_one(target: &Target, input: &[u8], out: &mut Outcome, kept: &std::path::Path) {
    let before = HELD.load(Relaxed);
    PEAK.store(before, Relaxed);
    let result = std::panic::catch_unwind(|| (target.run)(input));
    let grew = PEAK.load(Relaxed).saturating_sub(before);
    out.inputs += 1;
    out.most = out.most.max(grew);
    let keep = |why: String, out: &mut Outcome| {
        let file = kept.join(format!("{}-{}", target.name, out.failures.len()));
        let _ = std::fs::write(&file, input);
        out.failures.push(format!("{}: {why} (input kept in {})", target.name, file.display()));
    };
    match result {
        Ok(accepted) => out.accepted += usize::from(accepted),
        Err(_) => keep("panicked".into(), out),
    }
    if grew > allowance(input) {
        keep(format!("allocated {grew} bytes for {} bytes of input", input.len()), out);
    }
}

#[test]
fn every_reader_refuses_mutated_files_without_a_panic_or_a_claimed_allocation() {
    let env = |k: &str| std::env::var(k).ok();
    let seconds = env("FERROGRAD_FUZZ_SECONDS").and_then(|s| s.parse::<f64>().ok());
    let only = env("FERROGRAD_FUZZ_TARGET");
    let seed = env("FERROGRAD_FUZZ_SEED").and_then(|s| s.parse().ok()).unwrap_or(20);
    let kept = std::env::temp_dir().join("ferrograd-fuzz-failures");
    std::fs::create_dir_all(&kept).unwrap();
    let mut failures = Vec::new();
    for target in TARGETS.iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name)) {
        let mut out = Outcome { inputs: 0, accepted: 0, most: 0, failures: Vec::new() };
        let seeds = (target.seeds)();
        for s in &seeds {
            assert!(
                (target.run)(s),
                "{}: a seed is refused; the target tests nothing",
                target.name
            );
        }
        if let Some(file) = env("FERROGRAD_FUZZ_INPUT") {
            try_one(target, &std::fs::read(&file).unwrap(), &mut out, &kept);
            eprintln!("{file}: accepted {}, {} bytes allocated", out.accepted, out.most);
            failures.extend(out.failures);
            continue;
        }
        let mut rng = ferrograd::Rng::seed(seed);
        let start = Instant::now();
        let more = |n: usize| match seconds {
            Some(s) => start.elapsed() < Duration::from_secs_f64(s),
            None => n < 3000,
        };
        while more(out.inputs) {
            let (a, b) = (rng.below(seeds.len()), rng.below(seeds.len()));
            let input = mutate(&seeds[a], &seeds[b], &mut rng);
            try_one(target, &input, &mut out, &kept);
        }
        eprintln!(
            "{:>15}: {} inputs in {:.1} s, {} accepted, {} refused; at most {:.1} MiB allocated",
            target.name,
            out.inputs,
            start.elapsed().as_secs_f64(),
            out.accepted,
            out.inputs - out.accepted,
            out.most as f64 / (1 << 20) as f64
        );
        assert!(out.accepted < out.inputs, "{}: no mutation was refused", target.name);
        failures.extend(out.failures);
    }
    ferrograd_fuzz::clean_up();
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
