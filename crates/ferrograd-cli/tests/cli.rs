//! The `ferrograd` binary as a person runs it.

use std::process::Command;

fn ferrograd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrograd")).args(args).output().expect("the binary runs")
}

#[test]
fn tour_runs_to_the_end_and_learns() {
    // Pictures go to a scratch folder, not into the source tree.
    let pictures = std::env::temp_dir().join(format!("ferrograd-tour-{}", std::process::id()));
    let out = ferrograd(&["tour", "--out", pictures.to_str().expect("a UTF-8 temp path")]);
    let _ = std::fs::remove_dir_all(&pictures);
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
    // Exact match held out: question answering (chapter 5), then semantic parsing (6).
    let exact: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("held out: exact match "))
        .filter_map(|v| v.split('%').next()?.parse().ok())
        .collect();
    assert_eq!(exact.len(), 2, "{text}");
    assert!(exact[0] >= 50.0, "question answering exact match {}%", exact[0]);
    assert!(exact[1] >= 95.0, "semantic parsing exact match {}%", exact[1]);
    // bf16 products leave the lecture's answers where f32 put them, and held-out exact match
    // within a point (a near-tie between two spans may swap).
    let bf16 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("with bf16 products: held out exact match "))
        .expect("the tour compares bf16 answers");
    let exact_bf16: f64 = bf16.split('%').next().and_then(|v| v.parse().ok()).expect("a %");
    assert!((exact_bf16 - exact[0]).abs() <= 1.0, "bf16 {exact_bf16}% vs f32 {}%", exact[0]);
    assert!(bf16.ends_with("the lecture's unchanged"), "{bf16}");
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
    let out = ferrograd(&["bench", "W2", "--dtype", "int8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("W2 trains, in f32"), "{err}");
}

#[test]
fn a_device_as_checkpoint_and_an_infinite_rate_are_refused_by_name() {
    if std::path::Path::new("/dev/zero").exists() {
        let out = ferrograd(&["generate", "--checkpoint", "/dev/zero", "--prompt", "a"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains("not a regular file"), "{err}");
    }
    let text = std::env::temp_dir().join(format!("ferrograd-cli-inf-{}.txt", std::process::id()));
    std::fs::write(&text, "abc abc abc abc abc abc abc abc\n".repeat(200)).unwrap();
    let out = ferrograd(&["train", "lm", "--data", text.to_str().unwrap(), "--lr", "inf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("finite lr"), "{err}");
    // A count of zero (--sample-every 0 once panicked) is refused by name.
    for flag in ["--sample-every", "--batch-size", "--context", "--steps"] {
        let out = ferrograd(&["train", "lm", "--data", text.to_str().unwrap(), flag, "0"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1 | 2)) && err.contains(flag), "{flag}: {err}");
    }
    let _ = std::fs::remove_file(text);
}

#[test]
fn a_checkpoint_whose_config_claims_absurd_sizes_is_refused_by_field_in_under_a_second() {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-sizes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "to be or not to be\n".repeat(100)).unwrap();
    let ck = dir.join("lm.safetensors");
    let (t, c, o) = (text.to_str().unwrap(), ck.to_str().unwrap(), dir.join("run"));
    let args = ["train", "lm", "--data", t, "--steps", "2", "--hidden", "8", "--embed", "4"];
    let out = ferrograd(&[&args[..], &["--checkpoint", c, "--out", o.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (tensors, meta) = ferrograd::io::load_safetensors(&ck).unwrap();
    // Each size out of the file's bounds, then as many layers as the file has tensors: within
    // that bound, but more values than the file holds.
    let most = tensors.len() as u64;
    for (field, value) in
        [("embed", 1_000_000_000u64), ("layers", 1_000_000_000), ("hidden", 0), ("layers", most)]
    {
        let mut config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
        config[field] = value.into();
        let mut meta = meta.clone();
        meta.insert("config".into(), config.to_string());
        let bad = dir.join(format!("{field}.safetensors"));
        ferrograd::io::save_safetensors(&bad, &tensors, &meta).unwrap();
        let start = std::time::Instant::now();
        let out = ferrograd(&["generate", "--checkpoint", bad.to_str().unwrap(), "--prompt", "to"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(start.elapsed().as_secs_f64() < 1.0, "{field}: {err}");
        let said = match value == most {
            true => "its config does not describe these weights".to_string(),
            false => format!("{field} = {value} does not fit the weights"),
        };
        assert!(out.status.code() == Some(1) && err.contains(&said), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn summary_writes_alexnet_in_the_lectures_notation() {
    let out = ferrograd(&["summary", "alexnet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("FeedForward^3(MaxPool(Conv^3(MaxPool(Conv(MaxPool(Conv(x)))))))"),
        "{text}"
    );
    assert!(text.contains("total parameters"), "{text}");
    let out = ferrograd(&["summary", "resnet"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model \"resnet\""));
}

fn shared_mnist() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
    if dir.join("t10k-images-idx3-ubyte.gz").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/data/mnist is absent (see DATA.md)");
        None
    }
}

/// Both checkpoints hold the same tensors (parameters and optimizer state), to the bit, and
/// are the same bytes, header included.
fn assert_same_checkpoints(pa: &std::path::Path, pb: &std::path::Path) {
    let (a, _) = ferrograd::io::load_safetensors(pa).unwrap();
    let (b, _) = ferrograd::io::load_safetensors(pb).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(n, _)| n.starts_with("optim/")), "no optimizer state saved");
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let bits = |t: &ferrograd::Tensor| -> Vec<u64> {
            t.to_vec_f64().unwrap().iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(ta), bits(tb), "{na} differs after resuming");
    }
    let (ma, mb) = (std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
    assert!(
        ma == mb,
        "same tensors, but the headers of {} and {} differ",
        pa.display(),
        pb.display()
    );
}

/// Runs `args` + `--checkpoint` twice: straight, then stopped after step `stop` and resumed;
/// the two final checkpoints must be the same to the bit.
fn assert_resumes_exactly(dir: &std::path::Path, args: &[&str], stop: &str) {
    let (straight, resumed) = (dir.join("straight.safetensors"), dir.join("resumed.safetensors"));
    let run = |ck: &std::path::Path, extra: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--checkpoint", ck.to_str().unwrap()]);
        all.extend(extra);
        let out = ferrograd(&all);
        assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&straight, &[]);
    let stopped = run(&resumed, &["--stop-after", stop]);
    assert!(stopped.contains(&format!("stopped after step {stop}")), "{stopped}");
    run(&resumed, &["--resume"]);
    assert_same_checkpoints(&straight, &resumed);
}

/// The last line of a `--json` run as JSON.
fn json_result(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn train_mnist_learns_and_resumes_exactly() {
    let Some(data) = shared_mnist() else { return };
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-train-{}", std::process::id()));
    let (data, out) = (data.to_str().unwrap(), dir.to_str().unwrap());
    let ck = dir.join("ck.safetensors");
    let ck = ck.to_str().unwrap();
    let base = [
        "train",
        "mnist",
        "--model",
        "feedforward",
        "--data",
        data,
        "--train-images",
        "2000",
        "--out",
        out,
        "--json",
    ];
    let run = |extra: &[&str]| json_result(&ferrograd(&[&base[..], extra].concat()));
    let whole = dir.join("straight.safetensors");
    let straight = run(&["--epochs", "2", "--checkpoint", whole.to_str().unwrap()]);
    assert!(straight["eval_accuracy"].as_f64().unwrap() > 0.85, "{straight}");
    assert!(straight["train_images_per_s"].as_f64().unwrap() > 0.0);
    assert!(dir.join("metrics.csv").exists() && dir.join("accuracy.svg").exists());
    run(&["--epochs", "2", "--checkpoint", ck, "--stop-after", "1"]);
    // Another batch size would put the saved step in another epoch: refused.
    let other = ferrograd(
        &[&base[..], &["--epochs", "2", "--checkpoint", ck, "--resume", "--batch-size", "50"]]
            .concat(),
    );
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("another training"), "{err}");
    let resumed = run(&["--epochs", "2", "--checkpoint", ck, "--resume"]);
    assert_eq!(resumed["eval_accuracy"], straight["eval_accuracy"], "resume must continue exactly");
    assert_eq!(resumed["train_loss"], straight["train_loss"]);
    assert_same_checkpoints(&whole, std::path::Path::new(ck));
    // A corrupt checkpoint is refused with a message, and the run does not start.
    std::fs::write(ck, b"not a checkpoint").unwrap();
    let bad = ferrograd(&[&base[..], &["--epochs", "2", "--checkpoint", ck, "--resume"]].concat());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid safetensors"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_mnist_explains_bad_data() {
    let out = ferrograd(&["train", "mnist", "--data", "/nonexistent/mnist", "--epochs", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/mnist"), "{err}");
}

#[test]
fn embed_gives_sentence_transformers_embeddings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        eprintln!("skipped: ../shared/models/all-MiniLM-L6-v2 is absent (see DATA.md)");
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ferrograd-nn/tests/fixtures/minilm.json");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sentences: Vec<&str> =
        f["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(sentences.len() >= 20);
    let mut args = vec!["embed", "--model", dir.to_str().unwrap(), "--json"];
    args.extend(&sentences);
    let out = ferrograd(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).expect("a JSON array of arrays");
    let want = f["embeddings"]["data"].as_array().unwrap();
    assert_eq!(got.len(), sentences.len());
    let mut worst = 0.0f64;
    for (i, row) in got.iter().enumerate() {
        assert_eq!(row.len(), 384);
        for (k, v) in row.iter().enumerate() {
            worst = worst.max((v - want[i * 384 + k].as_f64().unwrap()).abs());
        }
    }
    assert!(worst < 1e-5, "embeddings differ from sentence-transformers by up to {worst}");
    // In low precision every sentence (accents, CJK, emoji, one letter, 546 characters) keeps
    // its direction.
    for (dtype, least) in [("int8", 0.995), ("bf16", 0.9999)] {
        let out = ferrograd(&[&args[..], &["--dtype", dtype]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let low: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).expect("JSON");
        for (i, (a, b)) in low.iter().zip(&got).enumerate() {
            let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(x, y)| x * y).sum::<f64>();
            let cos = dot(a, b) / (dot(a, a) * dot(b, b)).sqrt();
            assert!(cos >= least, "{dtype} sentence {i} {:?}: cosine {cos}", sentences[i]);
        }
    }
    let bad = ferrograd(&["embed", "--model", "/nonexistent", "hello"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/config.json"));
    let bad = ferrograd(&["embed", "--model", dir.to_str().unwrap(), "--dtype", "int4", "hi"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("\"int4\" is not one of f32, int8, bf16"),
        "{err}"
    );
}

#[test]
fn train_classify_learns_and_names_bad_lines() {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-classify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("sentiment.tsv");
    let rows = ferrograd_data::corpora::sentiment_task(600, &mut ferrograd::Rng::seed(1));
    std::fs::write(&data, rows.iter().map(|(l, t)| format!("{l}\t{t}\n")).collect::<String>())
        .unwrap();
    let out = ferrograd(&[
        "train",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "4",
        "--out",
        dir.join("run").to_str().unwrap(),
        "--json",
    ]);
    let result = json_result(&out);
    assert!(result["eval_accuracy"].as_f64().unwrap() > 0.8, "{result}");
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "positive\tgood\n\nnegative bad\n").unwrap();
    let out = ferrograd(&["train", "classify", "--data", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.tsv:2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_seq2seq_learns_translates_and_names_bad_input() {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-seq2seq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("arithmetic.tsv");
    let rows = ferrograd_data::corpora::arithmetic_task(2200, &mut ferrograd::Rng::seed(4));
    std::fs::write(&data, rows.iter().map(|(s, t)| format!("{s}\t{t}\n")).collect::<String>())
        .unwrap();
    let checkpoint = dir.join("parser.safetensors");
    let common = [
        "train",
        "seq2seq",
        "--data",
        data.to_str().unwrap(),
        "--target-tokens",
        "char",
        "--dim",
        "64",
        "--ff",
        "128",
        "--lr",
        "2e-3",
        "--beam",
        "2",
        "--max-positions",
        "24",
        "--json",
        "--out",
    ];
    let mut args = common.to_vec();
    let out_dir = dir.join("run");
    args.extend([out_dir.to_str().unwrap(), "--steps", "250", "--checkpoint"]);
    args.push(checkpoint.to_str().unwrap());
    let result = json_result(&ferrograd(&args));
    assert!(result["exact_match"].as_f64().unwrap() > 0.8, "{result}");
    assert!(out_dir.join("loss.svg").exists());

    let out = ferrograd(&[
        "translate",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--beam",
        "3",
        "what is seven plus twelve times three",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("what is seven plus twelve times three → "), "{text}");
    let long = "one ".repeat(30);
    let out = ferrograd(&["translate", "--checkpoint", checkpoint.to_str().unwrap(), &long]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("the source has 30 tokens; the model takes at most 24"),
        "{err}"
    );

    // NaN weights: beam search finds nothing, and translate says so instead of panicking.
    let (tensors, meta) = ferrograd::io::load_safetensors(&checkpoint).unwrap();
    let nan: Vec<(String, ferrograd::Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let t = if n.starts_with("param/") { t.mul_scalar(f64::NAN).unwrap() } else { t };
            (n, t)
        })
        .collect();
    let broken = dir.join("nan.safetensors");
    ferrograd::io::save_safetensors(&broken, &nan, &meta).unwrap();
    let out = ferrograd(&["translate", "--checkpoint", broken.to_str().unwrap(), "one plus two"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("no translation"), "{err}");
    for (flag, value) in [("--ff", "0"), ("--dim", "1000000000"), ("--layers", "1000000000")] {
        let out = ferrograd(&["train", "seq2seq", "--data", data.to_str().unwrap(), flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(flag) && err.contains("1..="), "{err}");
    }
    let out = ferrograd(&[
        "translate",
        "--checkpoint",
        &checkpoint.to_string_lossy(),
        "--beam",
        "1000000",
        "x",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--beam") && err.contains("1..=1024"), "{err}");

    // 20 steps straight equal 10, an interruption, and 10 more resumed: to the bit.
    let straight = dir.join("straight.safetensors");
    let resumed = dir.join("resumed.safetensors");
    let run = |ckpt: &std::path::Path, extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend([out_dir.to_str().unwrap(), "--steps", "20", "--eval-every", "10"]);
        args.extend(["--checkpoint", ckpt.to_str().unwrap()]);
        args.extend(extra);
        let out = ferrograd(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(&straight, &[]);
    run(&resumed, &["--stop-after", "10"]);
    run(&resumed, &["--resume"]);
    assert_same_checkpoints(&straight, &resumed);

    // The RNN encoder–decoder trains through the same command.
    let mut args = common.to_vec();
    args.extend([out_dir.to_str().unwrap(), "--steps", "60", "--model", "rnn"]);
    let result = json_result(&ferrograd(&args));
    assert!(result["token_accuracy"].as_f64().unwrap() > 0.3, "{result}");

    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "one plus two\t1+2\n\nthree\t3\n").unwrap();
    let out = ferrograd(&["train", "seq2seq", "--data", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.tsv:2: empty line"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_qa_fine_tunes_bert_and_qa_answers() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/all-MiniLM-L6-v2");
    if !model.join("model.safetensors").is_file() {
        eprintln!("skipped: no all-MiniLM-L6-v2 at {}", model.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-qa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = ferrograd_data::qa::precipitation_qa(40, &mut ferrograd::Rng::seed(6));
    let paragraphs: Vec<serde_json::Value> = set
        .iter()
        .map(|e| {
            let chars = e.context[..e.answer_start].chars().count();
            serde_json::json!({"context": e.context, "qas": [{"question": e.question,
                "answers": [{"text": e.answer, "answer_start": chars}]}]})
        })
        .collect();
    let data = dir.join("squad.json");
    let json = serde_json::json!({"data": [{"paragraphs": paragraphs}]});
    std::fs::write(&data, json.to_string()).unwrap();
    let checkpoint = dir.join("qa.safetensors");
    let (m, d, c) = (model.to_str().unwrap(), data.to_str().unwrap(), checkpoint.to_str().unwrap());
    let run_dir = dir.join("run");
    let args = [
        "train",
        "qa",
        "--model",
        m,
        "--data",
        d,
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--max-len",
        "128",
        "--out",
        run_dir.to_str().unwrap(),
    ];
    let out = ferrograd(&[&args[..], &["--checkpoint", c, "--json"]].concat());
    let result = json_result(&out);
    assert!(result["exact_match"].as_f64().is_some() && result["f1"].as_f64().is_some());
    let out = ferrograd(&[
        "qa",
        "--model",
        m,
        "--checkpoint",
        c,
        "--question",
        "What causes precipitation to fall?",
        "--context",
        ferrograd_data::qa::PRECIPITATION,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (answer, score) = text.trim().split_once('\t').expect("answer<TAB>(score …)");
    assert!(ferrograd_data::qa::PRECIPITATION.contains(answer) && score.starts_with("(score"));
    // A stop between steps and a resume end as the straight run, to the bit.
    assert_resumes_exactly(&dir, &args, "1");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"data\": 3}").unwrap();
    let out = ferrograd(&["train", "qa", "--model", m, "--data", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.json: no \"data\" array"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A scratch folder for test `name` holding the built-in tiny corpus: (folder, corpus file).
fn tiny_corpus(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("corpus.txt");
    std::fs::write(&data, ferrograd_data::corpora::TINY_CORPUS).unwrap();
    (dir, data)
}

#[test]
fn train_lm_resumes_exactly_and_checks_its_outputs_before_training() {
    let (dir, data) = tiny_corpus("lm");
    let out = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "train",
        "lm",
        "--data",
        d,
        "--out",
        o,
        "--steps",
        "12",
        "--sample-every",
        "5",
        "--embed",
        "16",
        "--hidden",
        "32",
        "--batch-size",
        "4",
        "--context",
        "16",
    ];
    assert_resumes_exactly(&dir, &args, "7");
    assert!(out.join("metrics.jsonl").exists() && out.join("loss.svg").exists());
    // Outputs that cannot be written, or that are the input, are refused before any step.
    for (checkpoint, why) in [
        ("/nonexistent/folder/lm.safetensors", "is not a folder"),
        (o, "is a folder"),
        (d, "is the input"),
    ] {
        let mut bad = args.to_vec();
        bad.extend(["--checkpoint", checkpoint]);
        let run = ferrograd(&bad);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(checkpoint) && err.contains(why), "{err}");
        assert!(!String::from_utf8_lossy(&run.stdout).contains("held-out"), "trained first");
    }
    let text = std::fs::read_to_string(&data).unwrap();
    assert_eq!(text, ferrograd_data::corpora::TINY_CORPUS, "the input was written over");
    // Resuming with another batch size would map steps to other data: refused.
    let ck = dir.join("resumed.safetensors");
    let mut other = args.to_vec();
    other[15] = "8"; // --batch-size
    other.extend(["--checkpoint", ck.to_str().unwrap(), "--resume"]);
    let run = ferrograd(&other);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("another training"), "{err}");
    // Text with other characters has another vocabulary: refused.
    let shouted = dir.join("shouted.txt");
    std::fs::write(&shouted, ferrograd_data::corpora::TINY_CORPUS.to_uppercase()).unwrap();
    let mut other = args.to_vec();
    other[3] = shouted.to_str().unwrap(); // --data
    other.extend(["--checkpoint", ck.to_str().unwrap(), "--resume"]);
    let run = ferrograd(&other);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("other data"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_classify_resumes_exactly_mid_epoch() {
    let dir =
        std::env::temp_dir().join(format!("ferrograd-cli-classify-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("sentiment.tsv");
    let rows = ferrograd_data::corpora::sentiment_task(200, &mut ferrograd::Rng::seed(2));
    std::fs::write(&data, rows.iter().map(|(l, t)| format!("{l}\t{t}\n")).collect::<String>())
        .unwrap();
    let out = dir.join("run");
    let args = [
        "train",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--dim",
        "16",
        "--hidden",
        "16",
    ];
    // 180 texts in batches of 32: 6 steps an epoch; stop in the middle of the first.
    assert_resumes_exactly(&dir, &args, "4");
    // As many texts with every word spelled backwards: another vocabulary, refused.
    let backwards = dir.join("backwards.tsv");
    let reverse =
        |t: &str| t.split(' ').map(|w| w.chars().rev().collect()).collect::<Vec<String>>();
    let text: String =
        rows.iter().map(|(l, t)| format!("{l}\t{}\n", reverse(t).join(" "))).collect();
    std::fs::write(&backwards, text).unwrap();
    let mut other = args.to_vec();
    other[3] = backwards.to_str().unwrap(); // --data
    let ck = dir.join("resumed.safetensors");
    other.extend(["--checkpoint", ck.to_str().unwrap(), "--resume"]);
    let run = ferrograd(&other);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("other data"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `mpirun -np N` with what Open MPI needs as root and in a container.
#[cfg(feature = "mpi")]
fn mpirun(n: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &n.to_string(), "--oversubscribe", env!("CARGO_BIN_EXE_ferrograd")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    cmd
}

/// Every parameter of two checkpoints agrees within `rel`: ‖a − b‖ ≤ rel · ‖a‖, tensor by
/// tensor (f32 sums in another order differ in the last bits, element by element).
#[cfg(feature = "mpi")]
fn assert_close_checkpoints(a: &std::path::Path, b: &std::path::Path, rel: f64) {
    let (a, _) = ferrograd::io::load_safetensors(a).unwrap();
    let (b, _) = ferrograd::io::load_safetensors(b).unwrap();
    for ((na, ta), (_, tb)) in a.iter().zip(&b).filter(|((n, _), _)| n.starts_with("param/")) {
        let (x, y) = (ta.to_vec_f64().unwrap(), tb.to_vec_f64().unwrap());
        let diff = x.iter().zip(&y).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt();
        let norm = x.iter().map(|p| p * p).sum::<f64>().sqrt();
        assert!(diff <= rel * norm, "{na}: ‖a − b‖ = {diff:e}, ‖a‖ = {norm:e}");
    }
}

#[cfg(feature = "mpi")]
#[test]
fn two_mpi_ranks_train_as_one_process_resume_in_one_and_a_killed_rank_ends_the_job() {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("sentiment.tsv");
    let rows = ferrograd_data::corpora::sentiment_task(500, &mut ferrograd::Rng::seed(5));
    std::fs::write(&data, rows.iter().map(|(l, t)| format!("{l}\t{t}\n")).collect::<String>())
        .unwrap();
    let out = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    // 450 texts in global batches of 22: 21 steps; each rank takes 11.
    let args = [
        "train",
        "classify",
        "--data",
        d,
        "--out",
        o,
        "--epochs",
        "1",
        "--batch-size",
        "22",
        "--dim",
        "16",
        "--hidden",
        "16",
    ];
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let ck = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (one, two, split) = (ck("one.safetensors"), ck("two.safetensors"), ck("split.safetensors"));
    run(Command::new(env!("CARGO_BIN_EXE_ferrograd")).args(args).args(["--checkpoint", &one]));
    // The run itself checks that both ranks end with the same bits (it fails otherwise).
    run(mpirun(2, &args).args(["--checkpoint", &two]));
    assert_close_checkpoints(one.as_ref(), two.as_ref(), 1e-5);
    run(mpirun(2, &args).args(["--checkpoint", &split, "--stop-after", "10"]));
    run(Command::new(env!("CARGO_BIN_EXE_ferrograd")).args(args).args([
        "--checkpoint",
        &split,
        "--resume",
    ]));
    assert_close_checkpoints(two.as_ref(), split.as_ref(), 1e-5);

    // A rank killed mid-run ends the whole job, named.
    let long =
        ["train", "classify", "--data", d, "--out", o, "--epochs", "200", "--batch-size", "22"];
    let mut job = mpirun(2, &long).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let rank1 = (0..200).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        rank_pid(job.id(), "1")
    });
    let rank1 = rank1.expect("rank 1 started");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let started = std::time::Instant::now();
    Command::new("kill").args(["-9", &rank1.to_string()]).status().unwrap();
    let status = loop {
        if let Some(s) = job.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed().as_secs() < 30, "the job still runs 30 s after rank 1 died");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(feature = "mpi")]
#[test]
fn two_mpi_ranks_draw_a_language_models_windows_as_one_process_and_report_once() {
    let dir = std::env::temp_dir().join(format!("ferrograd-cli-mpi-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "to be or not to be, that is the question.\n".repeat(60)).unwrap();
    let (one, two) = (dir.join("one.safetensors"), dir.join("two.safetensors"));
    let args = |ck: &std::path::Path| -> Vec<String> {
        ["train", "lm", "--data", text.to_str().unwrap(), "--steps", "20", "--batch-size", "7"]
            .into_iter()
            .chain(["--hidden", "16", "--embed", "8", "--context", "12", "--sample-every", "10"])
            .chain(["--out", dir.join("run").to_str().unwrap()])
            .chain(["--checkpoint", ck.to_str().unwrap()])
            .map(String::from)
            .collect()
    };
    let a = args(&one);
    let out = Command::new(env!("CARGO_BIN_EXE_ferrograd")).args(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = args(&two);
    let out = mpirun(2, &b.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // 7 windows a step, 4 drawn by rank 0 and 3 by rank 1: the same 7 one process draws.
    assert_close_checkpoints(&one, &two, 1e-5);
    assert_eq!(stdout.matches("held-out loss").count(), 1, "rank 0 alone reports:\n{stdout}");
    // Gradient pieces summed on MPI's thread while backward goes on: the same sums.
    let overlapped = dir.join("overlapped.safetensors");
    let mut c = args(&overlapped);
    c.push("--overlap-communication".into());
    let out = mpirun(2, &c.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_close_checkpoints(&two, &overlapped, 0.0);
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid of the process below `parent` whose MPI rank is `rank`.
#[cfg(feature = "mpi")]
fn rank_pid(parent: u32, rank: &str) -> Option<u32> {
    let mut below = vec![parent];
    let mut found = None;
    for _ in 0..4 {
        let mut next = Vec::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid.is_some_and(|p| below.contains(&p)) {
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let want = format!("OMPI_COMM_WORLD_RANK={rank}");
                if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
                    found = Some(pid);
                }
                next.push(pid);
            }
        }
        if found.is_some() {
            return found;
        }
        below = next;
    }
    None
}

/// The temporary files saves leave in `dir` (`.NAME.tmp-PID`).
fn temporaries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn a_run_killed_at_random_points_while_it_checkpoints_never_leaves_a_bad_checkpoint() {
    let (dir, data) = tiny_corpus("kill");
    let ck = dir.join("lm.safetensors");
    let (d, c, o) = (data.to_str().unwrap(), ck.to_str().unwrap(), dir.join("run"));
    // A checkpoint of a few MB at every step, so that many kills land inside a save.
    let args = [
        "train",
        "lm",
        "--data",
        d,
        "--checkpoint",
        c,
        "--out",
        o.to_str().unwrap(),
        "--steps",
        "100000",
        "--sample-every",
        "1",
        "--embed",
        "32",
        "--hidden",
        "256",
        "--batch-size",
        "2",
        "--context",
        "8",
    ];
    let mut rng = ferrograd::Rng::seed(7);
    let (trials, mut inside_a_save) = (24, 0);
    for trial in 0..trials {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrograd"));
        cmd.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if ck.exists() {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        let wait = 100 + (rng.uniform() * 500.0) as u64;
        std::thread::sleep(std::time::Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        inside_a_save +=
            usize::from(temporaries(&dir).iter().any(|n| n.ends_with(&child.id().to_string())));
        if ck.exists() {
            let info = ferrograd_nn::inspect_checkpoint(&ck)
                .unwrap_or_else(|e| panic!("trial {trial}, killed after {wait} ms: {e}"));
            ferrograd::io::load_safetensors(&ck)
                .unwrap_or_else(|e| panic!("trial {trial}, step {}: {e}", info.step));
        }
    }
    eprintln!("{inside_a_save} of {trials} kills left a half-written temporary file");
    assert!(ck.exists(), "no run got as far as its first checkpoint");
    // The next run resumes from what the kills left, and its first save clears their files.
    let mut next = args.to_vec();
    let step = ferrograd_nn::inspect_checkpoint(&ck).unwrap().step + 2;
    let step = step.to_string();
    next.extend(["--resume", "--stop-after", &step]);
    let out = ferrograd(&next);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(temporaries(&dir), Vec::<String>::new(), "temporary files left");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generate_continues_prompts_with_gpt2_as_transformers_does() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ferrograd-nn/tests/fixtures/gpt2");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/reference.json")).expect("the fixture"),
    )
    .expect("JSON");
    let cases = reference["cases"].as_array().expect("cases");
    let mut args = vec!["generate", "--model", dir, "--tokens", "20", "--temperature", "0"];
    for case in cases {
        args.extend(["--prompt", case["prompt"].as_str().expect("a prompt")]);
    }
    let out = ferrograd(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("GenerateToken(TransformerBlock^2(EmbedToken(x)))"), "{stderr}");
    let expected: Vec<String> = cases
        .iter()
        .map(|c| {
            format!("{}{}\n", c["prompt"].as_str().unwrap(), c["greedy_text"].as_str().unwrap())
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected.join("\n"), "as one batch");
    // One prompt is streamed; its continuation ends inside characters (U+FFFD) on the way.
    let prompt = cases[1]["prompt"].as_str().unwrap();
    let one =
        ["generate", "--model", dir, "--prompt", prompt, "--tokens", "20", "--temperature", "0"];
    let out = ferrograd(&one);
    let out_text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out_text, expected[1], "streamed");

    // Past the 64 positions one prompt slides its window; a padded batch is refused.
    let long = ["generate", "--model", dir, "--prompt", "ROMEO:", "--tokens", "70"];
    let out = ferrograd(&long);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("the window slides"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).len() > 70, "70 tokens of at least a byte each");
    let out = ferrograd(&[&long[..], &["--prompt", "JULIET:"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot slide past"), "{stderr}");
    let out = ferrograd(&["generate", "--model", dir, "--checkpoint", "lm.safetensors"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn train_lm_transformer_learns_resumes_exactly_and_generates_past_its_context() {
    let (dir, data) = tiny_corpus("lm-transformer");
    let out = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", "lm", "--model", "transformer", "--data", d, "--out", o];
    args.extend(["--steps", "30", "--sample-every", "10", "--embed", "16", "--hidden", "32"]);
    args.extend(["--layers", "2", "--heads", "2", "--batch-size", "4", "--context", "16"]);
    args.extend(["--dropout", "0.1", "--lr", "3e-3"]);
    assert_resumes_exactly(&dir, &args, "13");
    // The loss falls from the uniform guess's ln(vocabulary).
    let first = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = first
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["train/loss"].as_f64().or(v["loss"].as_f64()))
        .collect();
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "{losses:?}");
    // 40 new characters from a model of 16 positions: the window slides.
    let ck = dir.join("straight.safetensors");
    let run = ferrograd(&["generate", "--checkpoint", ck.to_str().unwrap(), "--tokens", "40"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).chars().count() >= 41);
    let mut bad = args.clone();
    let at = bad.len() - 3;
    bad[at] = "1.5"; // --dropout
    let run = ferrograd(&bad);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("--dropout must be in [0, 1), got 1.5"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_lm_with_a_learned_bpe_saves_its_tokenizer_resumes_exactly_and_generates() {
    let (dir, data) = tiny_corpus("lm-bpe");
    let out = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", "lm", "--model", "transformer", "--data", d, "--out", o];
    args.extend(["--tokenizer", "bpe", "--vocab-size", "300", "--steps", "20"]);
    args.extend(["--sample-every", "10", "--embed", "16", "--hidden", "32", "--heads", "2"]);
    args.extend(["--batch-size", "4", "--context", "16", "--lr", "3e-3"]);
    assert_resumes_exactly(&dir, &args, "7");
    // Beside the checkpoints, a tokenizer.json that Hugging Face's reader takes, learned from
    // the text before the held-out tenth.
    let tok = ferrograd_data::PretrainedTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    assert!(tok.vocab_size() > 257 && tok.vocab_size() <= 300, "{}", tok.vocab_size());
    let text = ferrograd_data::corpora::TINY_CORPUS;
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    let ck = dir.join("straight.safetensors");
    let run = ferrograd(&[
        "generate",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--prompt",
        "The",
        "--tokens",
        "30",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.starts_with("The") && said.len() > 3 + 30, "{said}");
    let mut bad = args.clone();
    bad[11] = "100"; // --vocab-size
    let run = ferrograd(&bad);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("257 to 1048576 ids, got 100"), "{err}");
    // Another BPE beside the same checkpoints does not replace the first's tokenizer.json.
    let mut other = args.clone();
    other[11] = "280";
    let ck = dir.join("other.safetensors");
    other.extend(["--checkpoint", ck.to_str().unwrap()]);
    let run = ferrograd(&other);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("holds another tokenizer"), "{err}");
    let mut chars = args.clone();
    chars[9] = "char";
    let run = ferrograd(&chars);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("give it with --tokenizer bpe"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_lm_fine_tunes_gpt2_resumes_exactly_and_its_checkpoint_generates() {
    let (dir, data) = tiny_corpus("lm-gpt2");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../ferrograd-nn/tests/fixtures/gpt2");
    let out = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", "lm", "--init", model, "--data", d, "--out", o, "--lr", "1e-3"];
    args.extend(["--steps", "16", "--sample-every", "8", "--batch-size", "4", "--context", "16"]);
    assert_resumes_exactly(&dir, &args, "9");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
        .collect();
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "{losses:?}");
    // The checkpoint holds the tokenizer: it continues text without the model directory.
    let ck = dir.join("straight.safetensors");
    let args =
        ["generate", "--checkpoint", ck.to_str().unwrap(), "--prompt", "the", "--tokens", "8"];
    let run = ferrograd(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("the"));
    // --dropout replaces GPT-2's three rates; the checkpoint keeps them.
    let ck = dir.join("no-dropout.safetensors");
    let args = ["train", "lm", "--init", model, "--data", d, "--out", o, "--steps", "2"];
    let run =
        ferrograd(&[&args[..], &["--dropout", "0", "--checkpoint", ck.to_str().unwrap()]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let config = ferrograd_nn::inspect_checkpoint(&ck).unwrap().config;
    assert_eq!(config["gpt2"]["attn_pdrop"], 0.0, "{config}");
    let run = ferrograd(&["train", "lm", "--init", model, "--data", d, "--embed", "8"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("cannot be used with"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
