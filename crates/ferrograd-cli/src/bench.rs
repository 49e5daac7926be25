//! `ferrograd bench`: the workloads of WORKLOADS.md, steady state, all cores, f32. The PyTorch
//! side is `bench/torch_workloads.py`, measured the same way (median of timed repetitions).

use crate::CliResult;
use ferrograd::{no_grad, DType, Rng, Tensor};
use ferrograd_nn::optim::{Adam, AdamConfig, Optimizer};
use ferrograd_nn::trainer::{Cycle, Flow, Log, Metrics, StepInfo};
use ferrograd_nn::{models, Module, ParamStore, Progress, Trainer};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn run(workload: &str, json: bool, quick: bool, data: Option<&Path>) -> CliResult<()> {
    let min_time = if quick { Duration::ZERO } else { Duration::from_millis(3000) };
    let results: Vec<(String, f64)> = match workload.to_ascii_uppercase().as_str() {
        "W1" => w1_matmul(min_time)?,
        "W2" => {
            let store = ParamStore::new(0);
            let net = models::feed_forward3(&store, [784, 256, 256, 10])?;
            vec![(
                "train_images_per_s".into(),
                train_images_per_s(&store, &net, 128, data, min_time)?,
            )]
        }
        "W3" => {
            let store = ParamStore::new(0);
            let net = models::cnn(&store, 1, 10)?;
            vec![(
                "train_images_per_s".into(),
                train_images_per_s(&store, &net, 64, data, min_time)?,
            )]
        }
        "W4" => vec![("train_tokens_per_s".into(), w4_lstm_lm(data, min_time)?)],
        "W5" => w5_transformer_lm(data, min_time)?,
        "W6" => vec![("sentences_per_s_b32_t128".into(), w6_bert(data, min_time)?)],
        "W7" => vec![("train_tokens_per_s".into(), w7_seq2seq(min_time)?)],
        other => {
            return Err(format!(
                "unknown workload {other:?}; available: W1, W2, W3, W4, W5, W6, W7"
            )
            .into())
        }
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

/// W2/W3: images per second of Adam (lr 1e-3) training steps with cross-entropy on MNIST
/// batches (the first 8,000 images) or random images of the same shape.
fn train_images_per_s(
    store: &ParamStore,
    net: &dyn Module,
    batch: usize,
    data: Option<&Path>,
    min_time: Duration,
) -> CliResult<f64> {
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
    let batches: Vec<(Tensor, Tensor)> =
        ferrograd_data::Batches::new(&images, &labels, batch, Some(&mut Rng::seed(2)))?
            .drop_last(true)
            .collect::<ferrograd::Result<_>>()?;
    let adam = Adam::new(store.params(), AdamConfig::adam(1e-3))?;
    let secs = trainer_step_seconds(store, adam, batches.len(), min_time, |i| {
        let (x, y) = &batches[i];
        net.forward(x)?.cross_entropy(y, None)
    })?;
    Ok(batch as f64 / secs)
}

/// Median seconds of one Trainer step (Quiet, no files) over `n` prepared batches in turn,
/// `loss(i)` the loss of batch `i`: timed from the end of one step to the end of the next,
/// after a warm-up step, over at least `min_time` and 3 steps.
fn trainer_step_seconds(
    store: &ParamStore,
    optimizer: impl Optimizer + Send,
    n: usize,
    min_time: Duration,
    mut loss: impl FnMut(usize) -> ferrograd::Result<Tensor> + Send,
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
    trainer.fit(&mut Cycle::new(n), |i, _: &mut Metrics| loss(i))?;
    drop(trainer);
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The first 200,000 characters of a text as char ids, or random ids of a 65-symbol vocabulary.
fn char_ids(data: Option<&Path>) -> CliResult<Vec<i64>> {
    use ferrograd_data::CharTokenizer;
    Ok(match data {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
    trainer_step_seconds(store, optimizer, samples.len(), min_time, |i| {
        let (x, y) = &samples[i];
        lm.loss(x, y, None)
    })
}

/// W5: a character Transformer LM (4 pre-norm blocks, d 128, 4 heads, FeedForward 512 GELU,
/// learned positions, context 128, tied GenerateToken), batches of 16 × 128, AdamW 1e-3; then
/// greedy generation of 127 tokens from one, batch 1, with the KV cache.
fn w5_transformer_lm(data: Option<&Path>, min_time: Duration) -> CliResult<Vec<(String, f64)>> {
    use ferrograd_nn::Sampling;
    let ids = char_ids(data)?;
    let vocab = (ids.iter().copied().max().unwrap_or(0) + 1).max(65) as usize;
    let store = ParamStore::new(0);
    let lm = models::transformer_lm(&store, vocab, 128, 4, 4, 128)?;
    let adamw = Adam::new(store.params(), AdamConfig::adamw(1e-3))?;
    let train = (16 * 128) as f64 / lm_step_seconds(&store, &lm, adamw, ids, 16, 128, min_time)?;
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
    Ok(vec![("train_tokens_per_s".into(), train), ("generate_tokens_per_s".into(), 127.0 / secs)])
}

/// W7: target tokens per second of training a Transformer encoder–decoder (2 + 2 layers, d 128,
/// 4 heads, FeedForward 512, shared tied vocabulary of 1000) on batches of 32 random source and
/// target sequences of 32 tokens, AdamW 1e-3.
fn w7_seq2seq(min_time: Duration) -> CliResult<f64> {
    use ferrograd_nn::{Seq2SeqConfig, SequenceToSequence};
    let store = ParamStore::new(0);
    let config = Seq2SeqConfig::small_transformer();
    let model = SequenceToSequence::new(&store, &config)?;
    let adamw = Adam::new(store.params(), AdamConfig::adamw(1e-3))?;
    let mut rng = Rng::seed(2);
    // Ordinary tokens (not pad, unk, bos or eos), 33 target ids: 32 in, the same shifted out.
    let mut ids = |n: usize| -> ferrograd::Result<Tensor> {
        let v: Vec<i64> =
            (0..32 * n).map(|_| 4 + rng.below(config.source_vocab - 4) as i64).collect();
        Tensor::from_vec(v, &[32, n])
    };
    let batches: Vec<(Tensor, Tensor)> =
        (0..16).map(|_| Ok((ids(32)?, ids(33)?))).collect::<ferrograd::Result<_>>()?;
    let secs = trainer_step_seconds(&store, adamw, batches.len(), min_time, |i| {
        let (source, target) = &batches[i];
        let (t_in, t_out) = (target.narrow(1, 0, 32)?, target.narrow(1, 1, 32)?);
        model.loss(source, &t_in, &t_out, 0.0)
    })?;
    Ok((32 * 32) as f64 / secs)
}

/// W6: all-MiniLM-L6-v2 inference, batches of 32 sentences × 128 tokens, no padding.
fn w6_bert(model: Option<&Path>, min_time: Duration) -> CliResult<f64> {
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
    let mut failed = None;
    let secs = median_seconds(min_time, || {
        if let Err(e) = bert.sentence_embeddings(&ids, &mask) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(32.0 / secs)
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
