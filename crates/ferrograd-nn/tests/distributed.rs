//! Data-parallel training over the threaded Collective: what MPI runs across processes, tested
//! in one.

use ferrograd::{DType, Rng, Tensor};
use ferrograd_nn::distributed::{Collective, Pending, Threads};
use ferrograd_nn::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use ferrograd_nn::trainer::{Epochs, Metrics};
use ferrograd_nn::{models, Every, Module, ParamStore, Progress, Sequential, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-ddp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 64 points in 3 classes, f64.
fn points() -> (Tensor, Tensor) {
    let mut rng = Rng::seed(1);
    let x = Tensor::randn(&[64, 2], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let y: Vec<i64> = (0..64).map(|_| rng.below(3) as i64).collect();
    (x, Tensor::from_vec(y, &[64]).unwrap())
}

struct Run<'p> {
    hidden: usize,
    /// Fails at this step, as a rank that dies would.
    fail_at: Option<u64>,
    checkpoint: Option<&'p Path>,
    stop_after: Option<u64>,
    resume: bool,
    overlap: bool,
    shard: bool,
    /// SGD with Nesterov momentum instead of Adam.
    sgd: bool,
    /// A parameter the loss does not use (no gradient, no optimizer state).
    unused: bool,
    /// Example i counts 1 + i mod 4 times in the loss's mean; `Some(true)` says so to the
    /// Trainer (`mean_over`), `Some(false)` does not.
    items: Option<bool>,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            hidden: 16,
            fail_at: None,
            checkpoint: None,
            stop_after: None,
            resume: false,
            overlap: false,
            shard: true,
            sgd: false,
            unused: false,
            items: None,
        }
    }
}

/// 20 steps of Adam on batches of 15 (shards of 8 and 7, and 2 and 2 at each epoch's end),
/// each rank's model started from its own seed (rank 0's is sent to all); the parameters after.
fn train(c: Option<Arc<dyn Collective>>, run: &Run) -> ferrograd::Result<Vec<Vec<f64>>> {
    let rank = c.as_ref().map_or(0, |c| c.rank());
    let store = ParamStore::with_dtype(3 + rank as u64, DType::F64);
    let net: Sequential = models::feed_forward3(&store, [2, run.hidden, 16, 3])?;
    if run.unused {
        store.param("unused", &[5], ferrograd_nn::Init::Zeros)?;
    }
    let data = points();
    let mut t = if run.sgd {
        let config = SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-3 };
        Trainer::new(&store, Sgd::new(store.params(), config)?)
    } else {
        Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2))?)
    };
    t = t.steps(20).progress(Progress::Quiet);
    if let Some(c) = c {
        t = t.distributed(c).overlap_communication(run.overlap).shard_optimizer(run.shard);
    }
    if let Some(path) = run.checkpoint {
        t = t.checkpoint(path, Every::Steps(5), serde_json::Value::Null).stop_after(run.stop_after);
        if run.resume {
            t = t.resume(path);
        }
    }
    let mut step = 0;
    t.fit(&mut Epochs::shuffled(64, 15, 0), |rows: Vec<usize>, m: &mut Metrics| {
        step += 1;
        if Some(step) == run.fail_at {
            return Err(ferrograd::Error::value("test", "this rank died"));
        }
        let mut ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        if let Some(say) = run.items {
            ids = rows.iter().flat_map(|&i| vec![i as i64; 1 + i % 4]).collect();
            if say {
                m.mean_over(ids.len());
            }
        }
        let ids = Tensor::from_vec(ids.clone(), &[ids.len()])?;
        m.count(rows.len());
        net.forward(&data.0.index_select(0, &ids)?)?
            .cross_entropy(&data.1.index_select(0, &ids)?, None)
    })?;
    // The parameters, then the optimizer's state, which a sharded run gathers at the end.
    let mut values: Vec<Vec<f64>> =
        store.params().iter().map(|p| p.get().to_vec_f64().unwrap()).collect();
    let (mut state, _) = t.optimizer().state();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    values.extend(state.iter().map(|(_, t)| t.to_vec_f64().unwrap()));
    Ok(values)
}

/// Each rank of a group of `n` threads trains with its own `Run`.
fn ranks(runs: &[Run]) -> Vec<ferrograd::Result<Vec<Vec<f64>>>> {
    ranks_counting(runs).0
}

/// [`ranks`], and how many reduce-scatters (sharded steps' sums) the ranks made.
fn ranks_counting(runs: &[Run]) -> (Vec<ferrograd::Result<Vec<Vec<f64>>>>, usize) {
    let scatters = Arc::new(AtomicUsize::new(0));
    let group = Threads::group(runs.len());
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(runs)
            .map(|(c, run)| {
                let c = Arc::new(Counting { inner: c, scatters: scatters.clone() });
                s.spawn(move || train(Some(c), run))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    (results, scatters.load(Ordering::Relaxed))
}

/// A rank that counts its reduce-scatters.
struct Counting {
    inner: Threads,
    scatters: Arc<AtomicUsize>,
}

impl Collective for Counting {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> ferrograd::Result<()> {
        self.inner.all_reduce_sum(t)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> ferrograd::Result<()> {
        self.inner.broadcast(t, root)
    }
    fn start_all_reduce_sum(&self, t: Tensor) -> ferrograd::Result<Pending> {
        self.inner.start_all_reduce_sum(t)
    }
    fn reduce_scatter_sum(
        &self,
        t: &Tensor,
        counts: &[usize],
        out: &mut Tensor,
    ) -> ferrograd::Result<()> {
        self.scatters.fetch_add(1, Ordering::Relaxed);
        self.inner.reduce_scatter_sum(t, counts, out)
    }
    fn all_gather(
        &self,
        part: &Tensor,
        counts: &[usize],
        out: &mut Tensor,
    ) -> ferrograd::Result<()> {
        self.inner.all_gather(part, counts, out)
    }
    fn barrier(&self) -> ferrograd::Result<()> {
        self.inner.barrier()
    }
    fn abort(&self, message: &str) {
        self.inner.abort(message)
    }
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], rel: f64) {
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= rel * (1.0 + x.abs()), "{x} vs {y}");
    }
}

#[test]
fn two_ranks_end_bit_identical_and_equal_to_one_process_on_the_same_global_batches() {
    let results = ranks(&[Run::default(), Run::default()]);
    let (a, b) = (results[0].as_ref().unwrap(), results[1].as_ref().unwrap());
    let bits = |v: &[Vec<f64>]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "the ranks' parameters differ");
    let single = train(None, &Run::default()).unwrap();
    assert_close(a, &single, 1e-9);
    // Summing pieces while backward goes on adds the same numbers in the same order.
    let overlapped =
        ranks(&[Run { overlap: true, ..Run::default() }, Run { overlap: true, ..Run::default() }]);
    assert_eq!(bits(overlapped[0].as_ref().unwrap()), bits(a));
    assert_eq!(bits(overlapped[1].as_ref().unwrap()), bits(a));
    // Rank 1 started elsewhere (seed 4) and still ended with rank 0: the parameters were sent.
    let untrained = ParamStore::with_dtype(3, DType::F64);
    models::feed_forward3(&untrained, [2, 16, 16, 3]).unwrap();
    assert_ne!(
        bits(a),
        bits(&untrained.params().iter().map(|p| p.get().to_vec_f64().unwrap()).collect::<Vec<_>>())
    );
}

#[test]
fn a_sharded_step_gives_the_bits_of_the_whole_step_on_two_and_three_ranks() {
    let bits = |r: &ferrograd::Result<Vec<Vec<f64>>>| {
        r.as_ref().unwrap().iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    for (sgd, unused) in [(false, false), (true, false), (false, true)] {
        for n in [2, 3] {
            // 371 parameters: the thirds cut through weights.
            let run = |shard| Run { shard, sgd, unused, ..Run::default() };
            let (whole, none) = ranks_counting(&(0..n).map(|_| run(false)).collect::<Vec<_>>());
            let (sharded, scatters) =
                ranks_counting(&(0..n).map(|_| run(true)).collect::<Vec<_>>());
            assert_eq!((none, scatters), (0, 20 * n), "one reduce-scatter a step and rank");
            // Parameters and the optimizer's state, gathered at the end.
            for (r, result) in sharded.iter().enumerate() {
                assert_eq!(bits(result), bits(&whole[0]), "rank {r} of {n}, {sgd} {unused}");
            }
        }
    }
    // A sharded run resumes sharded from a checkpoint written mid-way, unused parameter and all.
    let dir = scratch("sharded-resume");
    let path = dir.join("half.safetensors");
    let at = |stop_after, resume| Run {
        checkpoint: Some(&path),
        stop_after,
        resume,
        unused: true,
        ..Run::default()
    };
    let straight = ranks(&[at(None, false), at(None, false)]);
    assert!(ranks(&[at(Some(10), false), at(Some(10), false)]).iter().all(|r| r.is_ok()));
    let resumed = ranks(&[at(None, true), at(None, true)]);
    assert_eq!(bits(&resumed[0]), bits(&straight[0]));
    assert_eq!(bits(&resumed[1]), bits(&straight[0]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_two_rank_checkpoint_resumes_in_one_process_as_the_two_ranks_continue() {
    let dir = scratch("resume");
    let (two, one) = (dir.join("two.safetensors"), dir.join("one.safetensors"));
    // Every rank is given the path; rank 0 writes it.
    let at = |path| Run { checkpoint: Some(path), ..Run::default() };
    let straight = ranks(&[at(&two), at(&two)]);
    let straight = straight[0].as_ref().unwrap();
    let stopped = ranks(&[
        Run { checkpoint: Some(&one), stop_after: Some(10), ..Run::default() },
        Run { checkpoint: Some(&one), stop_after: Some(10), ..Run::default() },
    ]);
    assert!(stopped.iter().all(|r| r.is_ok()));
    assert_eq!(ferrograd_nn::inspect_checkpoint(&one).unwrap().step, 10);
    let resumed =
        train(None, &Run { checkpoint: Some(&one), resume: true, ..Run::default() }).unwrap();
    assert_close(straight, &resumed, 1e-9);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_rank_ends_every_rank_with_its_name_and_disagreement_is_refused() {
    let start = std::time::Instant::now();
    let results = ranks(&[Run::default(), Run { fail_at: Some(6), ..Run::default() }]);
    assert!(start.elapsed().as_secs() < 30);
    let err = results[0].as_ref().expect_err("rank 0 stops too").to_string();
    assert!(err.contains("rank 1 failed") && err.contains("this rank died"), "{err}");
    assert!(results[1].as_ref().err().unwrap().to_string().contains("this rank died"));
    let results = ranks(&[Run::default(), Run { hidden: 8, ..Run::default() }]);
    let results = [
        results,
        ranks(&[Run::default(), Run { checkpoint: Some(Path::new("/tmp/x")), ..Run::default() }]),
    ]
    .concat();
    for r in results {
        let err = r.expect_err("refused").to_string();
        assert!(err.contains("rank(s) [1] have another model"), "{err}");
    }
}

#[test]
fn a_loss_averaged_over_items_weights_each_rank_by_its_items() {
    let run = |items| Run { items: Some(items), ..Run::default() };
    let single = train(None, &run(true)).unwrap();
    let told = ranks(&[run(true), run(true)]);
    assert_close(told[0].as_ref().unwrap(), &single, 1e-9);
    // Weighted by examples instead, the ranks' shares of the mean are off.
    let untold = ranks(&[run(false), run(false)]);
    let differs = untold[0].as_ref().unwrap().iter().flatten().zip(single.iter().flatten());
    assert!(differs.map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) > 1e-6);
}

#[test]
fn a_bucket_of_more_than_25_mib_is_summed_in_pieces_and_ends_as_one_process() {
    // 3.6 M f64 parameters, 29 MiB: summed in a 1 MiB piece and 25 MiB pieces, after backward
    // and while it runs.
    let big = Run { hidden: 200_000, ..Run::default() };
    let single = train(None, &big).unwrap();
    assert!(single.iter().map(Vec::len).sum::<usize>() * 8 > 25 << 20);
    for overlap in [false, true] {
        let run = || Run { overlap, ..big };
        let results = ranks(&[run(), run()]);
        let (a, b) = (results[0].as_ref().unwrap(), results[1].as_ref().unwrap());
        assert!(a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_close(a, &single, 1e-9);
    }
}

#[test]
fn a_reduce_scatter_or_gather_that_does_not_fit_its_counts_is_refused() {
    use ferrograd_nn::distributed::SingleProcess;
    let v = |n: usize| Tensor::from_vec(vec![1.0f32; n], &[n]).unwrap();
    let one = SingleProcess;
    let mut out = v(3);
    let e = one.reduce_scatter_sum(&v(4), &[3], &mut out).unwrap_err().to_string();
    assert!(e.contains("counts [3]") && e.contains("[4]"), "{e}");
    let e = one.all_gather(&v(3), &[3, 0], &mut out).unwrap_err().to_string();
    assert!(e.contains("1 ranks") && e.contains("one per rank"), "{e}");
    one.all_gather(&v(3), &[3], &mut out).unwrap();
    // Threaded ranks: rank 1 gives another count than the counts say. It is refused; it tells
    // the others, as the Trainer does with any error, and rank 0 stops instead of waiting.
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = Threads::group(2)
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let mut out = v(4);
                    let mine = if c.rank() == 0 { 2 } else { 3 };
                    let e = c.all_gather(&v(mine), &[2, 2], &mut out).unwrap_err().to_string();
                    c.abort(&e);
                    e
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results[1].contains("rank 1 of 2") && results[1].contains("[3]"), "{}", results[1]);
    assert!(
        results[0].contains("rank 1 failed") || results[0].contains("rank 1"),
        "{}",
        results[0]
    );
}
