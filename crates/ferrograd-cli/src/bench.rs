//! `ferrograd bench`: the workloads of WORKLOADS.md, steady state, all cores, f32. The PyTorch
//! side is `bench/torch_workloads.py`, measured the same way (median of timed repetitions).

use crate::CliResult;
use ferrograd::{no_grad, DType, Precision, Rng, Tensor};
use ferrograd_nn::distributed::{self, Collective, SingleProcess};
use ferrograd_nn::optim::{Adam, AdamConfig, Optimizer};
use ferrograd_nn::trainer::{Cycle, Data, Epochs, Flow, Log, Metrics, StepInfo};
use ferrograd_nn::{models, Module, ParamStore, Progress, Trainer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(
    workload: &str,
    json: bool,
    quick: bool,
    data: Option<&Path>,
    distributed: Option<Ranks>,
    dtype: Option<Precision>,
) -> CliResult<()> {
    let min_time = if quick { Duration::ZERO } else { Duration::from_millis(3000) };
    let workload = workload.to_ascii_uppercase();
    let precision = dtype.unwrap_or_default();
    if precision != Precision::F32 && !["W5", "W6", "W8"].contains(&workload.as_str()) {
        return Err(format!(
            "--dtype {precision} measures inference: W5's and W8's generation, and W6; {workload} trains, in f32"
        )
        .into());
    }
    let group = if let Some(ranks) = distributed {
        if !["W2", "W3", "W7", "ALLREDUCE"].contains(&workload.as_str()) {
            return Err(format!(
                "--distributed measures the training workloads W2, W3 and W7, and allreduce; not {workload}"
            )
            .into());
        }
        let collective = crate::training::group().unwrap_or_else(|| Arc::new(SingleProcess));
        Some(Group { collective, overlap: ranks.overlap })
    } else {
        None
    };
    let group = group.as_ref();
    let results: Vec<(String, f64)> = match workload.as_str() {
        "W1" => w1_matmul(min_time)?,
        "W2" => {
            let store = ParamStore::new(0);
            let net = models::feed_forward3(&store, [784, 256, 256, 10])?;
            train_images_per_s(&store, &net, 128, data, min_time, group)?
        }
        "W3" => {
            let store = ParamStore::new(0);
            let net = models::cnn(&store, 1, 10)?;
            train_images_per_s(&store, &net, 64, data, min_time, group)?
        }
        "W4" => vec![("train_tokens_per_s".into(), w4_lstm_lm(data, min_time)?)],
        "W5" => w5_transformer_lm(data, min_time, precision)?,
        "W6" => match dtype {
            Some(precision) => w6_bert(data, min_time, &[precision])?,
            None => w6_bert(data, min_time, &[Precision::F32, Precision::Int8, Precision::Bf16])?,
        },
        "W7" => w7_seq2seq(min_time, group)?,
        "W8" => w8_gpt2(data, min_time, precision)?,
        "ALLREDUCE" => all_reduce_times(min_time, group)?,
        other => {
            return Err(format!(
                "unknown workload {other:?}; available: W1, W2, W3, W4, W5, W6, W7, W8, allreduce"
            )
            .into())
        }
    };
    if !crate::training::lead() {
        return Ok(());
    }
    let ranks = group.map_or(1, |g| g.collective.size());
    if json {
        let mut map: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!((v * 10.0).round() / 10.0)))
            .collect();
        map.insert("ranks".into(), ranks.into());
        if let Some(g) = group {
            map.insert("overlap_communication".into(), g.overlap.into());
        }
        map.insert("threads_per_rank".into(), rayon::current_num_threads().into());
        println!("{}", serde_json::Value::Object(map));
    } else {
        let threads = rayon::current_num_threads();
        match group {
            Some(_) => println!("{workload} ({ranks} ranks × {threads} threads)"),
            None => println!("{workload} ({threads} threads)"),
        }
        for (k, v) in &results {
            println!("  {k:<32} {v:>10.1}");
        }
    }
    Ok(())
}

/// W2/W3: images per second of Adam (lr 1e-3) training steps with cross-entropy on MNIST
/// batches (the first 8,000 images, shuffled once) or random images of the same shape.
fn train_images_per_s(
    store: &ParamStore,
    net: &dyn Module,
    batch: usize,
    data: Option<&Path>,
    min_time: Duration,
    group: Option<&Group>,
) -> CliResult<Vec<(String, f64)>> {
    let (images, labels) = match data {
        Some(dir) => {
            let m = ferrograd_data::mnist::load(dir)?;
            (
                m.images.narrow(0, 0, 8000.min(m.images.dims()[0]))?,
                m.labels.narrow(0, 0, 8000.min(m.labels.dims()[0]))?,
            )
        }
        None => {
            let mut rng = Rng::seed(1);
            let x = Tensor::rand_uniform(&[8000, 1, 28, 28], 0.0, 1.0, DType::F32, &mut rng)?;
            let y: Vec<i64> = (0..8000).map(|_| rng.below(10) as i64).collect();
            (x, Tensor::from_vec(y, &[8000])?)
        }
    };
    let n = images.dims()[0];
    let mut order: Vec<usize> = (0..n).collect();
    Rng::seed(2).shuffle(&mut order);
    let order = Tensor::from_vec(order.iter().map(|&i| i as i64).collect(), &[n])?;
    let (images, labels) = (images.index_select(0, &order)?, labels.index_select(0, &order)?);
    let adam = Adam::new(store.params(), AdamConfig::adam(1e-3))?;
    let mut batches = Epochs::in_order(n / batch * batch, batch);
    let secs = trainer_step_seconds(store, adam, &mut batches, min_time, group, |rows| {
        // Rows of one batch, or a rank's share of it: consecutive, so a view.
        let (x, y) =
            (images.narrow(0, rows[0], rows.len())?, labels.narrow(0, rows[0], rows.len())?);
        net.forward(&x)?.cross_entropy(&y, None)
    })?;
    Ok(throughput("train_images_per_s", batch, secs, group)?)
}

/// How a data-parallel bench runs (`mpirun -np N ferrograd bench W2 --distributed`).
#[derive(Clone, Copy)]
pub struct Ranks {
    pub overlap: bool,
}

/// The ranks of a data-parallel bench.
struct Group {
    collective: Arc<dyn Collective>,
    overlap: bool,
}

/// `key` = `per_step` units over `secs` a step; in a data-parallel run also each rank's own
/// rate (its share of the batch over its step time), rank by rank.
fn throughput(
    key: &str,
    per_step: usize,
    secs: f64,
    group: Option<&Group>,
) -> ferrograd::Result<Vec<(String, f64)>> {
    let mut out = vec![(key.to_string(), per_step as f64 / secs)];
    if let Some(g) = group.map(|g| &g.collective) {
        let (rank, ranks) = (g.rank(), g.size());
        let share = per_step / ranks + usize::from(rank < per_step % ranks);
        let mut each = vec![0.0; ranks];
        each[rank] = share as f64 / secs;
        distributed::all_reduce_values(&mut each, &**g)?;
        for (r, v) in each.into_iter().enumerate() {
            out.push((format!("rank{r}_{key}"), v));
        }
    }
    Ok(out)
}

/// Median seconds of one Trainer step (Quiet, no files) over `data` in turn, `loss(batch)` the
/// loss of a batch: timed from the end of one step to the end of the next, after a warm-up
/// step, over at least `min_time` and 3 steps. With a group, data-parallel over its ranks.
fn trainer_step_seconds<D: Data>(
    store: &ParamStore,
    optimizer: impl Optimizer + Send,
    data: &mut D,
    min_time: Duration,
    group: Option<&Group>,
    mut loss: impl FnMut(D::Batch) -> ferrograd::Result<Tensor> + Send,
) -> CliResult<f64> {
    let (mut times, mut last, mut started) = (Vec::new(), None::<Instant>, None::<Instant>);
    let timer = |_: &StepInfo, _: &mut Log| {
        let now = Instant::now();
        if let Some(prev) = last {
            times.push((now - prev).as_secs_f64());
        }
        last = Some(now);
        let since = *started.get_or_insert(now);
        let enough = times.len() >= 3 && now - since >= min_time;
        Ok(if enough { Flow::Stop } else { Flow::Continue })
    };
    let mut trainer =
        Trainer::new(store, optimizer).steps(u64::MAX).progress(Progress::Quiet).after_step(timer);
    if let Some(g) = group {
        trainer = trainer.distributed(g.collective.clone()).overlap_communication(g.overlap);
    }
    trainer.fit(data, |b, _: &mut Metrics| loss(b))?;
    drop(trainer);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The first 200,000 characters of a text as char ids, or random ids of a 65-symbol vocabulary.
fn char_ids(data: Option<&Path>) -> CliResult<Vec<i64>> {
    use ferrograd_data::CharTokenizer;
    Ok(match data {
        Some(path) => {
            let text = ferrograd::io::read_text(path, "bench")?;
            let text: String = text.chars().take(200_000).collect();
            CharTokenizer::from_text(&text).encode(&text)
        }
        None => {
            let mut rng = Rng::seed(1);
            (0..200_000).map(|_| rng.below(65) as i64).collect()
        }
    })
}

/// Median seconds of one training step of `lm` over fixed batches of `batch` × `context`.
fn lm_step_seconds(
    store: &ParamStore,
    lm: &ferrograd_nn::LanguageModel,
    optimizer: impl Optimizer + Send,
    ids: Vec<i64>,
    batch: usize,
    context: usize,
    min_time: Duration,
) -> CliResult<f64> {
    let batches = ferrograd_data::LmBatches::new(ids, batch, context)?;
    let mut rng = Rng::seed(2);
    let samples: Vec<(Tensor, Tensor)> =
        (0..64).map(|_| batches.sample(&mut rng)).collect::<ferrograd::Result<_>>()?;
    trainer_step_seconds(store, optimizer, &mut Cycle::new(samples.len()), min_time, None, |i| {
        let (x, y) = &samples[i];
        lm.loss(x, y, None)
    })
}

/// W5: a character Transformer LM (4 pre-norm blocks, d 128, 4 heads, FeedForward 512 GELU,
/// learned positions, context 128, tied GenerateToken), batches of 16 × 128, AdamW 1e-3; then
/// greedy generation of 127 tokens from one, batch 1, with the KV cache.
fn w5_transformer_lm(
    data: Option<&Path>,
    min_time: Duration,
    precision: Precision,
) -> CliResult<Vec<(String, f64)>> {
    use ferrograd_nn::Sampling;
    let ids = char_ids(data)?;
    let vocab = (ids.iter().copied().max().unwrap_or(0) + 1).max(65) as usize;
    let store = ParamStore::new(0);
    let lm = models::transformer_lm(&store, vocab, 128, 4, 4, 128)?;
    let adamw = Adam::new(store.params(), AdamConfig::adamw(1e-3))?;
    let train = (16 * 128) as f64 / lm_step_seconds(&store, &lm, adamw, ids, 16, 128, min_time)?;
    store.set_precision(precision)?;
    let mut failed = None;
    let secs = median_seconds(min_time, || {
        if let Err(e) =
            lm.generate(&[1], 127, Sampling::greedy(), &[], &mut Rng::seed(0), |_| Ok(()))
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(vec![
        ("train_tokens_per_s".into(), train),
        (in_precision("generate_tokens_per_s", precision), 127.0 / secs),
    ])
}

/// W8: GPT-2 small (124M: 12 layers, d 768, 12 heads, vocabulary 50,257, context 1024) from
/// `--data`'s Hugging Face directory, or with random weights (speed does not depend on them):
/// batch 1, a 32-token prompt, 128 new tokens greedy with the key/value cache. Prefill is the
/// prompt's pass to its first new token; generation counts the whole call, prefill included.
fn w8_gpt2(
    model: Option<&Path>,
    min_time: Duration,
    precision: Precision,
) -> CliResult<Vec<(String, f64)>> {
    use ferrograd_nn::models::{lm_of_shape, LmShape};
    use ferrograd_nn::{gpt2, Activation, Sampling};
    let store = ParamStore::new(0);
    let lm = match model {
        Some(dir) => gpt2::from_pretrained(dir, &store)?.0,
        None => {
            let (vocab, dim, heads, layers, context) = (50_257, 768, 12, 12, 1024);
            let activation = Activation::GeluTanh;
            let (ff, eps) = (4 * dim, 1e-5);
            let shape = LmShape {
                vocab,
                dim,
                heads,
                layers,
                context,
                ff,
                activation,
                eps,
                ..LmShape::NO_DROPOUT
            };
            lm_of_shape(&store, &shape)?
        }
    };
    store.set_precision(precision)?;
    let mut rng = Rng::seed(8);
    let vocab = lm.embed.vocab();
    let prompt: Vec<i64> = (0..32).map(|_| rng.below(vocab) as i64).collect();
    let mut failed = None;
    let mut timed = |tokens: usize| {
        median_seconds(min_time, || {
            let r = lm.generate(
                &prompt,
                tokens,
                Sampling::greedy(),
                &[],
                &mut Rng::seed(0),
                |_| Ok(()),
            );
            if let Err(e) = r {
                failed = Some(e);
            }
        })
    };
    let prefill = timed(1);
    let generate = timed(128);
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(vec![
        (in_precision("prefill_tokens_per_s", precision), 32.0 / prefill),
        (in_precision("generate_tokens_per_s", precision), 128.0 / generate),
    ])
}

/// A result's key, marked with the precision it was measured in unless that is f32.
fn in_precision(key: &str, precision: Precision) -> String {
    match precision {
        Precision::F32 => key.to_string(),
        other => format!("{key}_{other}"),
    }
}

/// W7: target tokens per second of training a Transformer encoder–decoder (2 + 2 layers, d 128,
/// 4 heads, FeedForward 512, shared tied vocabulary of 1000) on batches of 32 random source and
/// target sequences of 32 tokens, AdamW 1e-3.
fn w7_seq2seq(min_time: Duration, group: Option<&Group>) -> CliResult<Vec<(String, f64)>> {
    use ferrograd_nn::{Seq2SeqConfig, SequenceToSequence};
    let store = ParamStore::new(0);
    let config = Seq2SeqConfig::small_transformer();
    let model = SequenceToSequence::new(&store, &config)?;
    let adamw = Adam::new(store.params(), AdamConfig::adamw(1e-3))?;
    let mut rng = Rng::seed(2);
    // 16 batches of ordinary tokens (not pad, unk, bos or eos), 33 target ids a row: 32 in,
    // the same shifted out.
    let mut ids = |n: usize| -> ferrograd::Result<Tensor> {
        let v: Vec<i64> =
            (0..16 * 32 * n).map(|_| 4 + rng.below(config.source_vocab - 4) as i64).collect();
        Tensor::from_vec(v, &[16 * 32, n])
    };
    let (sources, targets) = (ids(32)?, ids(33)?);
    let mut batches = Epochs::in_order(16 * 32, 32);
    let secs = trainer_step_seconds(&store, adamw, &mut batches, min_time, group, |rows| {
        let (source, target) =
            (sources.narrow(0, rows[0], rows.len())?, targets.narrow(0, rows[0], rows.len())?);
        let (t_in, t_out) = (target.narrow(1, 0, 32)?, target.narrow(1, 1, 32)?);
        model.loss(&source, &t_in, &t_out, 0.0)
    })?;
    Ok(throughput("train_tokens_per_s", 32 * 32, secs, group)?)
}

/// W6: all-MiniLM-L6-v2 inference, batches of 32 sentences × 128 tokens, no padding, with
/// products in each of `precisions`.
fn w6_bert(
    model: Option<&Path>,
    min_time: Duration,
    precisions: &[Precision],
) -> CliResult<Vec<(String, f64)>> {
    let dir = model.ok_or("W6 needs --data pointing at the all-MiniLM-L6-v2 directory")?;
    let store = ParamStore::new(0);
    let bert = ferrograd_nn::Bert::from_pretrained(dir, &store)?;
    let mut rng = Rng::seed(3);
    // Ordinary word pieces (ids 1,000 and up), [CLS] first and [SEP] last.
    let ids: Vec<i64> = (0..32 * 128)
        .map(|i| match i % 128 {
            0 => 101,
            127 => 102,
            _ => 1000 + rng.below(29_000) as i64,
        })
        .collect();
    let ids = Tensor::from_vec(ids, &[32, 128])?;
    let mask = Tensor::ones(&[32, 128], DType::I64)?;
    let _g = no_grad();
    let mut results = Vec::new();
    for &precision in precisions {
        store.set_precision(precision)?;
        let mut failed = None;
        let secs = median_seconds(min_time, || {
            if let Err(e) = bert.sentence_embeddings(&ids, &mask) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        results.push((in_precision("sentences_per_s_b32_t128", precision), 32.0 / secs));
    }
    Ok(results)
}

/// W4: an LSTM character language model, EmbedToken(65→64)·LSTM(64→256)·GenerateToken
/// (untied, 256→65) at every position; batches of 32 × 64 tokens; Adam lr 2e-3.
fn w4_lstm_lm(data: Option<&Path>, min_time: Duration) -> CliResult<f64> {
    use ferrograd_nn::{EmbedToken, GenerateToken, LanguageModel, SequenceRNN, LSTM};
    let ids = char_ids(data)?;
    let vocab = (ids.iter().copied().max().unwrap_or(0) + 1).max(65) as usize;
    let store = ParamStore::new(0);
    let lm = LanguageModel {
        embed: EmbedToken::new(store.sub("embed"), vocab, 64, None)?,
        body: Box::new(SequenceRNN::<LSTM>::new(&store.sub("lstm"), 64, 256, 0, false)?),
        head: GenerateToken::untied(store.sub("head"), 256, vocab)?,
    };
    let adam = Adam::new(store.params(), AdamConfig::adam(2e-3))?;
    Ok((32 * 64) as f64 / lm_step_seconds(&store, &lm, adam, ids, 32, 64, min_time)?)
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

/// allreduce: the ranks' all-reduce (sum) of f32 buffers of 1 KiB to 64 MiB, as the
/// gradient buckets make it: the median seconds of one (`us_<bytes>`, in microseconds) and
/// the bus bandwidth of ring all-reduce, 2(N−1)/N · bytes / seconds (`gbps_<bytes>`, GB/s).
fn all_reduce_times(min_time: Duration, group: Option<&Group>) -> CliResult<Vec<(String, f64)>> {
    let g = &group.ok_or("allreduce needs --distributed (and mpirun -np N)")?.collective;
    let n = g.size() as f64;
    let mut out = Vec::new();
    for log2 in (10..=26).step_by(2) {
        let bytes = 1usize << log2;
        // Zeros: repeated sums of anything else grow to infinity.
        let mut t = Tensor::zeros(&[bytes / 4], DType::F32)?;
        // Every rank times the same calls: a fixed count, from the first rank's budget.
        let mut reps = [0.0f64];
        if g.rank() == 0 {
            let once = Instant::now();
            g.all_reduce_sum(&mut t)?;
            reps[0] = (min_time.as_secs_f64() / 9.0 / once.elapsed().as_secs_f64().max(1e-7))
                .clamp(5.0, 10_000.0)
                .round();
        } else {
            g.all_reduce_sum(&mut t)?;
        }
        distributed::all_reduce_values(&mut reps, &**g)?;
        let mut times = Vec::new();
        for _ in 0..reps[0] as usize {
            g.barrier()?;
            let start = Instant::now();
            g.all_reduce_sum(&mut t)?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let secs = times[times.len() / 2];
        out.push((format!("us_{bytes}"), secs * 1e6));
        out.push((format!("gbps_{bytes}"), 2.0 * (n - 1.0) / n * bytes as f64 / secs / 1e9));
    }
    Ok(out)
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
