//! The Trainer: accumulation, schedule, sinks, output checks and exact resume.

use ferrograd::{DType, Rng, Tensor};
use ferrograd_nn::optim::{Adam, AdamConfig, Schedule, Sgd, SgdConfig};
use ferrograd_nn::trainer::tensorboard::read_events;
use ferrograd_nn::trainer::{Cycle, Epochs, Flow, Metrics, Sampled};
use ferrograd_nn::{models, Every, Module, ParamStore, Progress, Sequential, Trainer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrograd-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 64 random 2-feature points in 3 classes.
fn points(dtype: DType) -> (Tensor, Tensor) {
    let mut rng = Rng::seed(1);
    let x = Tensor::randn(&[64, 2], 0.0, 1.0, dtype, &mut rng).unwrap();
    let y: Vec<i64> = (0..64).map(|_| rng.below(3) as i64).collect();
    (x, Tensor::from_vec(y, &[64]).unwrap())
}

fn mlp(store: &ParamStore) -> Sequential {
    models::feed_forward3(store, [2, 16, 16, 3]).unwrap()
}

/// The cross-entropy of the rows `rows` of the points.
fn loss_of(
    net: &Sequential,
    data: &(Tensor, Tensor),
    rows: &[usize],
    m: &mut Metrics,
) -> ferrograd::Result<Tensor> {
    let ids = Tensor::from_vec(rows.iter().map(|&i| i as i64).collect(), &[rows.len()])?;
    m.count(rows.len());
    net.forward(&data.0.index_select(0, &ids)?)?.cross_entropy(&data.1.index_select(0, &ids)?, None)
}

fn values(store: &ParamStore) -> Vec<Vec<f64>> {
    store.params().iter().map(|p| p.get().to_vec_f64().unwrap()).collect()
}

#[test]
fn four_accumulated_micro_batches_equal_one_batch_four_times_as_large() {
    let data = points(DType::F64);
    let run = |batch: usize, accumulate: usize| {
        let store = ParamStore::with_dtype(3, DType::F64);
        let net = mlp(&store);
        let sgd =
            Sgd::new(store.params(), SgdConfig { lr: 0.5, momentum: 0.9, ..Default::default() })
                .unwrap();
        let mut t =
            Trainer::new(&store, sgd).steps(3).accumulate(accumulate).progress(Progress::Quiet);
        let report = t
            .fit(&mut Epochs::in_order(64, batch), |rows, m| loss_of(&net, &data, &rows, m))
            .unwrap();
        (values(&store), report.train["loss"])
    };
    let (big, big_loss) = run(16, 1);
    let (micro, micro_loss) = run(4, 4);
    for (a, b) in big.iter().zip(&micro) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
    assert!((big_loss - micro_loss).abs() < 1e-12, "{big_loss} vs {micro_loss}");
    // The parameters moved: the comparison is not between two untouched models.
    let store = ParamStore::with_dtype(3, DType::F64);
    mlp(&store);
    assert_ne!(values(&store), big);
}

#[test]
fn the_schedule_sets_the_rate_of_every_step() {
    let data = points(DType::F32);
    let store = ParamStore::new(0);
    let net = mlp(&store);
    let schedule =
        Schedule::Warmup { steps: 3, then: Box::new(Schedule::Cosine { total: 7, min_lr: 1e-4 }) };
    let seen = std::sync::Mutex::new(Vec::new());
    let mut t = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
        .steps(10)
        .schedule(schedule.clone())
        .progress(Progress::Quiet)
        .after_step(|info, _| {
            seen.lock().unwrap().push((info.step, info.lr));
            Ok(Flow::Continue)
        });
    t.fit(&mut Epochs::shuffled(64, 16, 0), |rows, m| loss_of(&net, &data, &rows, m)).unwrap();
    assert_eq!(t.optimizer().lr(), schedule.lr(1e-2, 9));
    drop(t);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 10);
    for (step, lr) in seen {
        assert_eq!(lr, schedule.lr(1e-2, step - 1), "step {step}");
    }
    assert!((schedule.lr(1e-2, 0) - 1e-2 / 3.0).abs() < 1e-15);
}

#[test]
fn tensorboard_csv_jsonl_and_curves_are_written_and_read_back() {
    let dir = scratch("sinks");
    let data = points(DType::F32);
    let store = ParamStore::new(0);
    let net = mlp(&store);
    let mut t = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
        .epochs(3)
        .evaluate_every(Every::Epochs(1))
        .log_every(2)
        .out(&dir)
        .progress(Progress::Quiet)
        .on_evaluate(|_, _, log| {
            log.image(
                "weights",
                &Tensor::rand_uniform(&[4, 6], 0.0, 1.0, DType::F32, &mut Rng::seed(0))?,
            )
        });
    let evaluate = |_step, m: &mut Metrics| -> ferrograd::Result<()> {
        m.add("accuracy", 0.5, 1.0);
        Ok(())
    };
    let report = t
        .fit_evaluating(
            &mut Epochs::shuffled(64, 16, 0),
            |rows, m| loss_of(&net, &data, &rows, m),
            Some(evaluate),
        )
        .unwrap();
    assert_eq!((report.end, report.eval["accuracy"]), (12, 0.5));
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .expect("an event file");
    let events = read_events(&file).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let scalars = |tag: &str| -> Vec<(i64, f32)> {
        events
            .iter()
            .flat_map(|e| {
                e.scalars.iter().filter(|(t, _)| t == tag).map(move |(_, v)| (e.step, *v))
            })
            .collect()
    };
    assert_eq!(
        scalars("train/loss").iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10, 12]
    );
    assert_eq!(scalars("eval/accuracy"), vec![(4, 0.5), (8, 0.5), (12, 0.5)]);
    assert_eq!(scalars("lr").len(), 6);
    let images: Vec<_> =
        events.iter().flat_map(|e| e.images.iter().map(move |i| (e.step, i))).collect();
    assert_eq!(images.len(), 3);
    let (step, im) = images[0];
    assert_eq!(
        (step, im.tag.as_str(), im.height, im.width, im.colorspace),
        (4, "weights", 4, 6, 1)
    );
    assert!(im.png.starts_with(b"\x89PNG"));
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("step,epoch,eval_accuracy,examples_per_s,loss,lr\n"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 6 + 3);
    let jsonl = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["step"], 2);
    for svg in ["loss.svg", "accuracy.svg", "lr.svg"] {
        assert!(std::fs::read_to_string(dir.join(svg)).unwrap().contains("</svg>"), "{svg}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_output_paths_are_refused_before_the_first_step() {
    let dir = scratch("paths");
    let input = dir.join("data.txt");
    std::fs::write(&input, "keep me").unwrap();
    let file_as_parent = input.join("ck.safetensors");
    let cases: Vec<(PathBuf, &str)> = vec![
        (PathBuf::from("/nonexistent/folder/ck.safetensors"), "is not a folder"),
        (dir.clone(), "is a folder"),
        (file_as_parent, "is not a folder"),
        (input.clone(), "is the input"),
    ];
    for (path, why) in cases {
        let store = ParamStore::new(0);
        let net = mlp(&store);
        let data = points(DType::F32);
        let steps = AtomicUsize::new(0);
        let mut t =
            Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
                .steps(5)
                .checkpoint(&path, Every::End, serde_json::Value::Null)
                .inputs([&input])
                .progress(Progress::Quiet);
        let err = t
            .fit(&mut Epochs::shuffled(64, 16, 0), |rows, m| {
                steps.fetch_add(1, Ordering::Relaxed);
                loss_of(&net, &data, &rows, m)
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(why),
            "{}: {err}",
            path.display()
        );
        assert_eq!(steps.load(Ordering::Relaxed), 0, "{}: trained before refusing", path.display());
    }
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "keep me");
    let out_in_file =
        Trainer::new(&ParamStore::new(0), Sgd::new(vec![], SgdConfig::default()).unwrap())
            .steps(1)
            .out(input.join("runs"))
            .progress(Progress::Quiet)
            .fit(&mut Cycle::new(1), |_, _| Tensor::zeros(&[], DType::F32))
            .unwrap_err();
    assert!(out_in_file.to_string().contains("cannot create the output folder"), "{out_in_file}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A small Transformer LM trained with clipping and a schedule, checkpointed every 3 steps.
fn lm_run(
    ck: &std::path::Path,
    stop_after: Option<u64>,
    resume: bool,
    accumulate: usize,
) -> ferrograd::Result<ParamStore> {
    let store = ParamStore::new(5);
    let lm = models::transformer_lm(&store, 20, 16, 2, 1, 12)?;
    let ids: Vec<i64> = (0..400).map(|i| (i * 7 % 20) as i64).collect();
    let batches = windows(&ids);
    let mut t = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adamw(3e-3))?)
        .steps(8)
        .accumulate(accumulate)
        .clip_grad_norm(1.0)
        .schedule(Schedule::Cosine { total: 8, min_lr: 0.0 })
        .checkpoint(ck, Every::Steps(3), serde_json::json!({"model": "tiny"}))
        .stop_after(stop_after)
        .progress(Progress::Quiet);
    if resume {
        t = t.resume(ck);
    }
    t.fit(&mut Sampled::new(9), |mut rng: Rng, m| {
        let (x, y) = batches(&mut rng)?;
        m.count(x.numel());
        lm.loss(&x, &y, None)
    })?;
    Ok(store)
}

/// Random windows of 12 tokens, 4 to a batch, and the same shifted by one.
fn windows(ids: &[i64]) -> impl Fn(&mut Rng) -> ferrograd::Result<(Tensor, Tensor)> + '_ {
    move |rng| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let s = rng.below(ids.len() - 13);
            x.extend_from_slice(&ids[s..s + 12]);
            y.extend_from_slice(&ids[s + 1..s + 13]);
        }
        Ok((Tensor::from_vec(x, &[4, 12])?, Tensor::from_vec(y, &[4, 12])?))
    }
}

#[test]
fn a_run_stopped_between_steps_and_resumed_ends_as_the_straight_run_to_the_bit() {
    let dir = scratch("resume");
    let (straight, resumed) = (dir.join("straight.safetensors"), dir.join("resumed.safetensors"));
    lm_run(&straight, None, false, 1).unwrap();
    lm_run(&resumed, Some(5), false, 1).unwrap();
    let at5 = ferrograd_nn::inspect_checkpoint(&resumed).unwrap();
    assert_eq!(at5.step, 5);
    lm_run(&resumed, None, true, 1).unwrap();
    let (a, ma) = ferrograd::io::load_safetensors(&straight).unwrap();
    let (b, mb) = ferrograd::io::load_safetensors(&resumed).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(n, _)| n.starts_with("optim/")));
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let bits =
            |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(ta), bits(tb), "{na} differs after resuming");
    }
    assert_eq!(ma["rng"], mb["rng"]);
    // Another accumulation maps steps to other data: refused, and the checkpoint unchanged.
    let before = std::fs::read(&resumed).unwrap();
    let err = lm_run(&resumed, None, true, 2).err().expect("refused").to_string();
    assert!(err.contains("another training") && err.contains("accumulate"), "{err}");
    assert_eq!(std::fs::read(&resumed).unwrap(), before);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_hook_can_stop_the_run_and_epochs_need_data_with_epochs() {
    let data = points(DType::F32);
    let store = ParamStore::new(0);
    let net = mlp(&store);
    let mut t = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
        .steps(100)
        .progress(Progress::Quiet)
        .after_step(|info, _| Ok(if info.step == 7 { Flow::Stop } else { Flow::Continue }));
    let report =
        t.fit(&mut Epochs::shuffled(64, 16, 0), |rows, m| loss_of(&net, &data, &rows, m)).unwrap();
    assert_eq!((report.end, report.total), (7, 100));
    assert!(report.stopped());
    let err = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
        .epochs(2)
        .progress(Progress::Quiet)
        .fit(&mut Sampled::new(0), |_, _| Tensor::zeros(&[], DType::F32))
        .unwrap_err();
    assert!(err.to_string().contains("endless stream"), "{err}");
}

#[test]
fn a_loss_that_is_not_finite_stops_the_run_and_so_is_an_infinite_rate_refused() {
    let data = points(DType::F32);
    let store = ParamStore::new(0);
    let net = mlp(&store);
    let mut step = 0;
    let err = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adam(1e-2)).unwrap())
        .steps(10)
        .progress(Progress::Quiet)
        .fit(&mut Epochs::shuffled(64, 16, 0), |rows, m| {
            step += 1;
            let l = loss_of(&net, &data, &rows, m)?;
            if step == 3 {
                l.mul_scalar(f64::NAN)
            } else {
                Ok(l)
            }
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss at step 3 is NaN"), "{err}");
    assert!(store.params().iter().all(|p| p
        .get()
        .to_vec_f64()
        .unwrap()
        .iter()
        .all(|x| x.is_finite())));
    for lr in [f64::INFINITY, f64::NAN] {
        let e = Adam::new(store.params(), AdamConfig::adam(lr)).err().unwrap().to_string();
        assert!(e.contains("finite lr"), "{e}");
    }
}
