//! `ferrograd tour`: the lecture as a program, chapter by chapter, on built-in data.

use crate::features::{feature_maps, save_filters_png, save_gray_png};
use crate::CliResult;
use ferrograd::{gradcheck, no_grad, DType, Result, Rng, Tensor};
use ferrograd_data::synthetic::spirals;
use ferrograd_data::{glyphs, Batches};
use ferrograd_nn::optim::{Adam, AdamConfig, Optimizer};
use ferrograd_nn::{
    formula, models, Activation, Conv, ConvOptions, FeedForward, Flatten, MaxPool, Module,
    ParamStore, Sequential,
};
use std::path::Path;
use std::time::Instant;

pub fn run(out: &Path) -> CliResult<()> {
    let start = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    println!(
        "ferrograd tour: differentiable programming, chapter by chapter (pictures go to {})\n",
        out.display()
    );
    chapter("1. Feedforward networks: score = FeedForward^3(φ(x))", || Ok(feedforward()?))?;
    chapter(
        "2. Convolutional networks: AlexNet(x) = FeedForward^3(MaxPool(Conv^3(...(Conv(x)))))",
        || images(out),
    )?;
    chapter(
        "3. Sequences: score = w · Collapse(SequenceModel(EmbedToken(x))), and a LanguageModel",
        sequences,
    )?;
    chapter("4. Attention: a Transformer LanguageModel, GenerateToken(TransformerBlock^2(EmbedToken(x)))", || {
        attention(out)
    })?;
    chapter(
        "5. BERT: question answering, Span(TransformerBlock^2(EmbedToken(x)))",
        question_answering,
    )?;
    chapter(
        "6. Sequence to sequence: semantic parsing, English to code, with a SequenceToSequence",
        parsing,
    )?;
    println!("tour finished in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn chapter(title: &str, body: impl FnOnce() -> CliResult<()>) -> CliResult<()> {
    let t = Instant::now();
    println!("{title}\n{}", "─".repeat(title.chars().count()));
    body()?;
    println!("   (chapter took {:.1} s)\n", t.elapsed().as_secs_f64());
    Ok(())
}

/// The parameters of three FeedForward layers: (V, b) for each.
struct Mlp {
    layers: Vec<(Tensor, Tensor)>,
}

impl Mlp {
    fn new(sizes: &[usize], rng: &mut Rng, dtype: DType) -> Result<Mlp> {
        let layers = sizes
            .windows(2)
            .map(|w| {
                let v = Tensor::randn(&[w[0], w[1]], 0.0, (1.0 / w[0] as f64).sqrt(), dtype, rng)?;
                Ok((v.requiring_grad(), Tensor::zeros(&[w[1]], dtype)?.requiring_grad()))
            })
            .collect::<Result<_>>()?;
        Ok(Mlp { layers })
    }

    /// score = b3 + V3 σ(b2 + V2 σ(b1 + V1 φ(x))), σ = tanh, φ(x) = x: the lecture's formula.
    fn score(&self, x: &Tensor) -> Result<Tensor> {
        score(x, &self.params())
    }

    fn params(&self) -> Vec<Tensor> {
        self.layers.iter().flat_map(|(v, b)| [v.clone(), b.clone()]).collect()
    }
}

/// The lecture's score, written as an ordinary program over (V, b) pairs.
fn score(x: &Tensor, params: &[Tensor]) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, vb) in params.chunks(2).enumerate() {
        if i > 0 {
            h = h.tanh()?; // σ
        }
        h = h.matmul(&vb[0])?.add(&vb[1])?; // b + V h
    }
    Ok(h)
}

fn feedforward() -> Result<()> {
    let mut rng = Rng::seed(7);
    println!("   score = b3 + V3 σ(b2 + V2 σ(b1 + V1 φ(x)))   as a program:");
    println!("       for (V, b) in layers {{ h = σ(h); h = h.matmul(V)?.add(b)?; }}   // σ skipped first\n");

    // Differentiate it: backward gives every ∂score/∂parameter; gradcheck confirms them.
    let small = Mlp::new(&[2, 4, 4, 1], &mut rng, DType::F64)?;
    let x = Tensor::from_vec(vec![0.5f64, -0.3], &[1, 2])?;
    let s = small.score(&x)?;
    let grads = s.sum_all()?.backward()?;
    let dv1 =
        grads.get(&small.layers[0].0).map(|g| g.to_vec_f64()).transpose()?.unwrap_or_default();
    println!("   score(φ(x) = (0.5, -0.3)) = {:.6}", s.item()?);
    println!("   ∂score/∂V1 by backward   = {}", fmt_vec(&dv1));
    let report = gradcheck(|p| score(&x, p), &small.params(), 1e-7, 1e-6)?;
    println!(
        "   finite differences agree with backward to {:.1e} (gradcheck, f64)\n",
        report.max_abs_error
    );

    // Fit FeedForward^3 to three interleaved spirals with gradient descent (momentum 0.9).
    let (x, y) = spirals(720, 3, 0.03, &mut rng)?;
    let (train_x, test_x) = (x.narrow(0, 0, 600)?, x.narrow(0, 600, 120)?);
    let (train_y, test_y) = (y.narrow(0, 0, 600)?, y.narrow(0, 600, 120)?);
    let mut mlp = Mlp::new(&[2, 64, 64, 3], &mut rng, DType::F32)?;
    let mut velocity: Vec<Tensor> =
        mlp.params().iter().map(|p| p.zeros_like()).collect::<Result<_>>()?;
    let (lr, momentum, steps) = (0.1, 0.9, 1500);
    println!("   fitting FeedForward^3 (2→64→64→3, tanh) to 3 spirals: 600 points, 120 held out");
    for step in 0..=steps {
        let loss = mlp.score(&train_x)?.cross_entropy(&train_y, None)?;
        if step % 250 == 0 {
            println!("     step {step:>5}   loss {:.4}", loss.item()?);
        }
        if step == steps {
            break;
        }
        let grads = loss.backward()?;
        let _g = no_grad();
        let params = mlp.params();
        let mut new = Vec::with_capacity(params.len());
        for (p, v) in params.iter().zip(velocity.iter_mut()) {
            let g = grads.get(p).cloned().unwrap_or(p.zeros_like()?);
            *v = v.mul_scalar(momentum)?.add(&g)?;
            new.push(p.sub(&v.mul_scalar(lr)?)?.requiring_grad());
        }
        mlp.layers = new.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
    }
    let _g = no_grad();
    let acc = accuracy(&mlp.score(&test_x)?, &test_y)?;
    println!("   held-out accuracy: {:.1}%\n", 100.0 * acc);
    draw_regions(&mlp, &test_x, &test_y)?;
    Ok(())
}

fn accuracy(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    let hits = scores.argmax(-1, false)?.eq(labels)?.to_dtype(DType::F64)?.mean_all()?;
    hits.item()
}

/// The plane as characters: each cell the class the network picks (a, b, c), held-out points
/// drawn as their true class in capitals.
fn draw_regions(mlp: &Mlp, x: &Tensor, y: &Tensor) -> Result<()> {
    let (rows, cols) = (21usize, 57usize);
    let mut grid = Vec::with_capacity(rows * cols * 2);
    for r in 0..rows {
        for c in 0..cols {
            grid.push(-1.1 + 2.2 * c as f32 / (cols - 1) as f32);
            grid.push(1.1 - 2.2 * r as f32 / (rows - 1) as f32);
        }
    }
    let pred = mlp
        .score(&Tensor::from_vec(grid, &[rows * cols, 2])?)?
        .argmax(-1, false)?
        .to_vec::<i64>()?;
    let mut canvas: Vec<Vec<char>> = (0..rows)
        .map(|r| (0..cols).map(|c| ['·', '░', '▒'][pred[r * cols + c] as usize % 3]).collect())
        .collect();
    let (pts, labels) = (x.to_vec::<f32>()?, y.to_vec::<i64>()?);
    for (p, &l) in pts.chunks(2).zip(&labels) {
        let c = (((p[0] + 1.1) / 2.2) * (cols - 1) as f32).round() as isize;
        let r = (((1.1 - p[1]) / 2.2) * (rows - 1) as f32).round() as isize;
        if (0..rows as isize).contains(&r) && (0..cols as isize).contains(&c) {
            canvas[r as usize][c as usize] = ['A', 'B', 'C'][l as usize % 3];
        }
    }
    println!("   decision regions (· ░ ▒ = regions of classes A B C; letters = held-out points):");
    for row in canvas {
        println!("     │{}│", row.into_iter().collect::<String>());
    }
    Ok(())
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
    format!("[{}{}]", parts.join(", "), if v.len() > 4 { ", ..." } else { "" })
}

/// Chapter 2: the lecture's convolution and pooling examples, feature maps of a built-in
/// picture, then FeedForward³ against a CNN on generated shape images.
fn images(out: &Path) -> CliResult<()> {
    // The lecture's worked examples, computed.
    let image = Tensor::from_vec(
        vec![
            1.0f32, 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 1., 1., 0., 0.,
            1., 1., 0., 0.,
        ],
        &[1, 1, 5, 5],
    )?;
    let filter = Tensor::from_vec(vec![1.0f32, 0., 1., 0., 1., 0., 1., 0., 1.], &[1, 1, 3, 3])?;
    let map = image.conv2d(&filter, None, (1, 1), (0, 0))?;
    println!("   the 5×5 image ⋆ the 3×3 filter = feature map {}", rows(&map)?);
    let x = Tensor::from_vec(
        vec![1.0f32, 1., 2., 4., 5., 6., 7., 8., 3., 2., 1., 0., 1., 2., 3., 4.],
        &[1, 1, 4, 4],
    )?;
    println!(
        "   max pool (2×2 filters, stride 2) of the 4×4 input = {}",
        rows(&MaxPool::new(2, 2)?.forward(&x)?)?
    );

    // Producing feature maps: the lecture's filters on a built-in picture.
    let picture = glyphs::picture(96).reshape(&[1, 1, 96, 96])?;
    let mut written = Vec::new();
    for (name, m) in feature_maps(&picture)? {
        let file = format!("{name}.png");
        save_gray_png(&m.abs()?, &out.join(&file))?; // |response|: edges of both signs show
        written.push(file);
    }
    println!("   feature maps of a built-in picture: {}", written.join(", "));

    // Six kinds of shapes at random places, sizes and brightness; 20×20 pixels.
    let mut rng = Rng::seed(11);
    let (x, y) = glyphs::shapes(3600, 20, &mut rng)?;
    let (train_x, test_x, train_y, test_y) = (
        x.narrow(0, 0, 3000)?,
        x.narrow(0, 3000, 600)?,
        y.narrow(0, 0, 3000)?,
        y.narrow(0, 3000, 600)?,
    );
    println!(
        "\n   classifying 6 kinds of shapes ({}): 3,000 training images, 600 held out",
        glyphs::SHAPES.join(", ")
    );

    let ff_store = ParamStore::new(1);
    let ff = models::feed_forward3(&ff_store, [400, 128, 64, 6])?;
    let acc = fit(&ff_store, &ff, (&train_x, &train_y), (&test_x, &test_y), 4)?;
    println!("     {:<48} held-out accuracy {:5.1}%", formula(&ff), 100.0 * acc);

    let cnn_store = ParamStore::new(2);
    let relu =
        |padding| ConvOptions { padding, activation: Activation::Relu, ..Default::default() };
    let cnn = Sequential::new()
        .then(Conv::new(cnn_store.sub(0), 1, 8, 5, relu(2))?)
        .then(MaxPool::new(2, 2)?)
        .then(Conv::new(cnn_store.sub(3), 8, 16, 3, relu(1))?)
        .then(MaxPool::new(2, 2)?)
        .then(Flatten)
        .then(FeedForward::new(cnn_store.sub(7), 16 * 5 * 5, 64, Activation::Relu)?)
        .then(FeedForward::new(cnn_store.sub(9), 64, 6, Activation::Identity)?);
    let acc = fit(&cnn_store, &cnn, (&train_x, &train_y), (&test_x, &test_y), 4)?;
    println!("     {:<48} held-out accuracy {:5.1}%", formula(&cnn), 100.0 * acc);
    let first = cnn_store
        .params()
        .into_iter()
        .find(|p| p.name() == "0.weight")
        .ok_or("the CNN has no first filters")?;
    save_filters_png(&first.get(), &out.join("cnn_filters.png"), 8)?;
    println!("   the CNN's 8 learned 5×5 filters: cnn_filters.png");
    Ok(())
}

/// Adam (lr 2e-3) over shuffled batches of 32 for `epochs`; returns held-out accuracy.
fn fit(
    store: &ParamStore,
    net: &dyn Module,
    train: (&Tensor, &Tensor),
    test: (&Tensor, &Tensor),
    epochs: u64,
) -> CliResult<f64> {
    let mut opt = Adam::new(store.params(), AdamConfig::adam(2e-3))?;
    let mut rng = Rng::seed(5);
    for _ in 0..epochs {
        for batch in Batches::new(train.0, train.1, 32, Some(&mut rng))? {
            let (x, y) = batch?;
            opt.step(&net.forward(&x)?.cross_entropy(&y, None)?.backward()?)?;
        }
    }
    let _g = no_grad();
    Ok(accuracy(&net.forward(test.0)?, test.1)?)
}

/// A small 2-D result on one line: [[4, 3, 4], [2, 4, 3], [2, 3, 4]].
fn rows(t: &Tensor) -> Result<String> {
    let d = t.dims();
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    let v = t.to_vec_f64()?;
    let row = |r: usize| {
        format!("[{}]", (0..w).map(|c| format!("{}", v[r * w + c])).collect::<Vec<_>>().join(", "))
    };
    Ok(format!("[{}]", (0..h).map(row).collect::<Vec<_>>().join(", ")))
}

/// Chapter 3: an LSTM text classifier on generated sentences where word order matters, then a
/// character LSTM language model on a built-in text, generating as it goes.
fn sequences() -> CliResult<()> {
    use ferrograd_data::corpora::{sentiment_task, SENTIMENT, TINY_CORPUS};
    use ferrograd_data::text::pad_batch;
    use ferrograd_data::{CharTokenizer, LmBatches, WordTokenizer};
    use ferrograd_nn::{
        EmbedToken, GenerateToken, LanguageModel, Sampling, SequenceRNN, SequenceStack,
        TextClassifier, LSTM,
    };

    let mut rng = Rng::seed(21);
    let data = sentiment_task(2400, &mut rng);
    let tok = WordTokenizer::from_texts(data.iter().map(|(_, t)| t.as_str()), 1, None)?;
    let encode = |rows: &[(String, String)]| -> CliResult<(Tensor, Tensor, Tensor)> {
        let seqs: Vec<Vec<i64>> = rows.iter().map(|(_, t)| tok.encode(t)).collect();
        let (ids, mask) = pad_batch(&seqs, 0, None)?;
        let labels: Vec<i64> = rows
            .iter()
            .map(|(l, _)| SENTIMENT.iter().position(|s| s == l).unwrap_or(0) as i64)
            .collect();
        Ok((ids, mask, Tensor::from_vec(labels, &[rows.len()])?))
    };
    let (train, test) = data.split_at(2000);
    let store = ParamStore::new(3);
    let clf = TextClassifier::lstm(&store, tok.vocab().len(), 32, 32, 1, 2)?;
    println!("   sentiment of generated sentences (negations, \"but\" clauses): 2,000 to train, 400 held out");
    let mut opt = Adam::new(store.params(), AdamConfig::adam(5e-3))?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    for _ in 0..4 {
        rng.shuffle(&mut order);
        for chunk in order.chunks(32) {
            let rows: Vec<(String, String)> = chunk.iter().map(|&i| train[i].clone()).collect();
            let (ids, mask, y) = encode(&rows)?;
            opt.step(&clf.scores(&ids, &mask)?.cross_entropy(&y, None)?.backward()?)?;
        }
    }
    let _g = no_grad();
    let (ids, mask, y) = encode(test)?;
    let scores = clf.scores(&ids, &mask)?;
    println!(
        "     {:<48} held-out accuracy {:5.1}%",
        formula(&clf),
        100.0 * accuracy(&scores, &y)?
    );
    let pred = scores.argmax(-1, false)?.to_vec::<i64>()?;
    for (i, (label, text)) in test.iter().enumerate().take(3) {
        println!("       {:<9} {text:?} (truly {label})", SENTIMENT[pred[i] as usize]);
    }
    drop(_g);

    // A character LSTM language model on a built-in text.
    let chars = CharTokenizer::from_text(TINY_CORPUS);
    let batches = LmBatches::new(chars.encode(TINY_CORPUS), 16, 64)?;
    let store = ParamStore::new(4);
    let v = chars.vocab().len();
    let lm = LanguageModel {
        embed: EmbedToken::new(store.sub("embed"), v, 32, None)?,
        body: Box::new(SequenceStack {
            layers: vec![Box::new(SequenceRNN::<LSTM>::new(&store.sub("rnn"), 32, 128, 0, false)?)],
        }),
        head: GenerateToken::untied(store.sub("head"), 128, v)?,
    };
    println!(
        "\n   a character language model on a built-in text of {} characters",
        TINY_CORPUS.len()
    );
    let mut opt = Adam::new(store.params(), AdamConfig::adam(1e-2))?;
    train_lm(&lm, &batches, &mut opt, &mut rng, 400)?;
    print!("     {} generates: \"The ", formula(&lm));
    let sampling = Sampling { temperature: 0.6, top_k: 0, top_p: 1.0 };
    let mut out = String::new();
    lm.generate(&chars.encode("The "), 160, sampling, &[], &mut Rng::seed(8), |t| {
        out.push_str(&chars.decode(&[t]).unwrap_or_default());
        Ok(())
    })?;
    println!("{}\"", out.replace('\n', " "));
    Ok(())
}

/// `steps` steps of next-character training on random windows, the loss printed every 100.
fn train_lm(
    lm: &ferrograd_nn::LanguageModel,
    batches: &ferrograd_data::LmBatches,
    opt: &mut Adam,
    rng: &mut Rng,
    steps: usize,
) -> CliResult<()> {
    for step in 0..=steps {
        let (x, y) = batches.sample(rng)?;
        let loss = lm.loss(&x, &y, None)?;
        if step % 100 == 0 {
            println!("     step {step:>4}   loss {:.3} nats/char", loss.item()?);
        }
        if step < steps {
            opt.step(&loss.backward()?)?;
        }
    }
    Ok(())
}

/// Chapter 4: a small pre-norm Transformer language model on the built-in text, generating with
/// its KV cache, and one head's attention weights drawn as a picture.
fn attention(out: &Path) -> CliResult<()> {
    use ferrograd_data::corpora::TINY_CORPUS;
    use ferrograd_data::{CharTokenizer, LmBatches};
    use ferrograd_nn::Sampling;

    let chars = CharTokenizer::from_text(TINY_CORPUS);
    let batches = LmBatches::new(chars.encode(TINY_CORPUS), 16, 64)?;
    let store = ParamStore::new(9);
    let lm = models::transformer_lm(&store, chars.vocab().len(), 64, 4, 2, 64)?;
    let mut opt = Adam::new(store.params(), AdamConfig::adamw(3e-3))?;
    let mut rng = Rng::seed(10);
    train_lm(&lm, &batches, &mut opt, &mut rng, 300)?;
    let mut text = String::new();
    let sampling = Sampling { temperature: 0.6, top_k: 0, top_p: 1.0 };
    lm.generate(&chars.encode("The "), 56, sampling, &[], &mut Rng::seed(3), |t| {
        text.push_str(&chars.decode(&[t]).unwrap_or_default());
        Ok(())
    })?;
    println!("     generates (keys and values cached: one position per new token, up to its 64):");
    println!("       \"The {}\"", text.replace('\n', " "));

    // Where each position looks: head 0 of the first block, for one sentence.
    let sentence = "The owl goes back to sleep.";
    let ids = Tensor::from_vec(chars.encode(sentence), &[1, sentence.chars().count()])?;
    let _g = no_grad();
    let weights = lm
        .body
        .attention_weights(&lm.embed.forward(&ids)?, None)
        .ok_or("the model has no attention")??;
    let t = ids.dims()[1];
    let head = weights.narrow(1, 0, 1)?.reshape(&[t, t])?.to_vec::<f32>()?;
    let scale = 12;
    let mut pixels = Vec::with_capacity(t * t * scale * scale);
    for row in 0..t * scale {
        for col in 0..t * scale {
            pixels.push(head[(row / scale) * t + col / scale].sqrt()); // √ so small weights show
        }
    }
    save_gray_png(&Tensor::from_vec(pixels, &[t * scale, t * scale])?, &out.join("attention.png"))?;
    println!(
        "   head 0's attention over {sentence:?} (row = query, column = key; causal, so the upper"
    );
    println!("   right is black): attention.png");
    Ok(())
}

/// Chapter 5: the lecture's "sentence to code" — a small encoder–decoder Transformer learns to
/// turn English arithmetic into code, and beam search writes its parses of held-out sentences.
fn parsing() -> CliResult<()> {
    use crate::seq2seq::{evaluate, Side, TokenKind, Training};
    use ferrograd_data::corpora::arithmetic_task;
    use ferrograd_nn::{Seq2SeqConfig, Seq2SeqKind, SequenceToSequence};

    let pairs = arithmetic_task(6500, &mut Rng::seed(30));
    let (held_text, train_text) = pairs.split_at(500);
    let source = Side::build(TokenKind::Word, train_text.iter().map(|(s, _)| s.as_str()))?;
    let target = Side::build(TokenKind::Char, train_text.iter().map(|(_, t)| t.as_str()))?;
    let task = crate::seq2seq::Seq2SeqTask {
        task: "seq2seq".into(),
        model: Seq2SeqConfig {
            kind: Seq2SeqKind::Transformer,
            source_vocab: source.vocab().len(),
            target_vocab: target.vocab().len(),
            shared_vocab: false,
            dim: 64,
            heads: 4,
            ff: 256,
            encoder_layers: 2,
            decoder_layers: 2,
            max_positions: 24,
            pad: target.vocab().pad_id(),
            bos: target.vocab().bos_id().unwrap_or(2),
            eos: target.vocab().eos_id().unwrap_or(3),
            dropout: 0.0,
        },
        source,
        target,
    };
    let (train, held) =
        (task.encode_pairs(train_text, "training")?, task.encode_pairs(held_text, "held-out")?);
    let store = ParamStore::new(31);
    let model = SequenceToSequence::new(&store, &task.model)?;
    println!("   {}", model.describe());
    println!(
        "   English arithmetic to code, e.g. {:?} → {:?}: {} pairs to train on, {} held out",
        train_text[0].0,
        train_text[0].1,
        train.len(),
        held.len()
    );
    let training = Training {
        batch_size: 64,
        lr: 2e-3,
        warmup: 20,
        steps: 300,
        label_smoothing: 0.1,
        seed: 32,
    };
    let params = store.params();
    let mut opt = Adam::new(params.clone(), ferrograd_nn::optim::AdamConfig::adamw(training.lr))?;
    training.run(&model, &mut opt, &params, &train, 0..training.steps, |step, loss, _| {
        if step == 0 || (step + 1) % 100 == 0 {
            println!("     step {:>4}   loss {loss:.3} nats/token", step + 1);
        }
        Ok(())
    })?;
    let e = evaluate(&model, &task.target, &held, 4)?;
    println!(
        "     held out: exact match {:.1}% (beam search, width 4), token accuracy {:.1}%, BLEU {:.1}",
        100.0 * e.exact_match,
        100.0 * e.token_accuracy,
        e.bleu
    );
    let wrong = (0..held.len()).find(|&i| e.outputs[i] != held[i].1);
    for i in (0..3).chain(wrong) {
        let (english, code) = &held_text[i];
        let parse = task.target.decode(&e.outputs[i])?;
        let mark =
            if parse == *code { "right".to_string() } else { format!("wrong: the code is {code}") };
        println!("       {english:<58} → {parse:<12} ({mark})");
    }
    if wrong.is_none() {
        println!("       (every held-out sentence parsed right)");
    }
    Ok(())
}

/// Chapter 5: the lecture's question answering — `[CLS] question [SEP] context [SEP]` through a
/// small BERT trained from scratch on generated paragraphs shaped like the lecture's, with a span
/// head; then the lecture's own three questions about precipitation.
fn question_answering() -> CliResult<()> {
    use ferrograd_data::qa::{precipitation_qa, QaExample, PRECIPITATION, PRECIPITATION_QUESTIONS};
    use ferrograd_data::{Vocab, WordTokenizer};
    use ferrograd_nn::{BertConfig, QuestionAnswering};

    let train = precipitation_qa(3000, &mut Rng::seed(40));
    let held = precipitation_qa(300, &mut Rng::seed(41));
    // Words of every text the chapter shows the model, after the specials.
    let texts = train.iter().chain(&held).flat_map(|e| [e.question.as_str(), e.context.as_str()]);
    let lecture = PRECIPITATION_QUESTIONS.iter().map(|(q, _)| *q).chain([PRECIPITATION]);
    let words = Vocab::build(texts.chain(lecture).flat_map(WordTokenizer::split), 1, None)?;
    let mut tokens: Vec<String> = words.tokens().to_vec();
    tokens.splice(2..2, ["[CLS]".to_string(), "[SEP]".to_string()]);
    let tok = WordTokenizer::new(Vocab::from_tokens(tokens)?);
    let (cls, sep) = (tok.vocab().id("[CLS]"), tok.vocab().id("[SEP]"));

    // One example as ids, segment ids, the context mask, and the answer's token span.
    struct Encoded {
        ids: Vec<i64>,
        context_start: usize,
        answer: Option<(usize, usize)>,
    }
    let encode = |question: &str, context: &str, answer: &str| {
        let (q, c, a) = (tok.encode(question), tok.encode(context), tok.encode(answer));
        let context_start = q.len() + 2;
        let found = (0..c.len().saturating_sub(a.len()) + 1).find(|&i| c[i..].starts_with(&a));
        let ids = [vec![cls], q, vec![sep], c, vec![sep]].concat();
        Encoded {
            ids,
            context_start,
            answer: found.map(|i| (context_start + i, context_start + i + a.len() - 1)),
        }
    };
    let batch = |rows: &[Encoded]| -> ferrograd::Result<[Tensor; 6]> {
        let (b, t) = (rows.len(), rows.iter().map(|r| r.ids.len()).max().unwrap_or(1));
        let (mut ids, mut types, mut mask, mut context) =
            (vec![0i64; b * t], vec![0i64; b * t], vec![0i64; b * t], vec![0i64; b * t]);
        let (mut starts, mut ends) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for (r, row) in rows.iter().enumerate() {
            let n = row.ids.len();
            for i in 0..n {
                ids[r * t + i] = row.ids[i];
                mask[r * t + i] = 1;
                types[r * t + i] = i64::from(i >= row.context_start);
                context[r * t + i] = i64::from(i >= row.context_start && i + 1 < n);
            }
            let (s, e) = row.answer.unwrap_or((row.context_start, row.context_start));
            starts.push(s as i64);
            ends.push(e as i64);
        }
        Ok([
            Tensor::from_vec(ids, &[b, t])?,
            Tensor::from_vec(types, &[b, t])?,
            Tensor::from_vec(mask, &[b, t])?,
            Tensor::from_vec(context, &[b, t])?,
            Tensor::from_vec(starts, &[b])?,
            Tensor::from_vec(ends, &[b])?,
        ])
    };
    let encode_all = |set: &[QaExample]| -> Vec<Encoded> {
        set.iter()
            .map(|e| encode(&e.question, &e.context, &e.answer))
            .filter(|e| e.answer.is_some())
            .collect()
    };
    let (train, held) = (encode_all(&train), encode_all(&held));

    let config = BertConfig {
        vocab_size: tok.vocab().len(),
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        max_position_embeddings: 128,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
    };
    let store = ParamStore::new(42);
    let model = QuestionAnswering::new(&store, &config)?;
    println!(
        "   {} — {} parameters",
        model.describe(),
        ferrograd_nn::thousands(store.num_params())
    );
    println!(
        "   generated paragraphs shaped like the lecture's, each with one of its three kinds of question: {} to train on, {} held out",
        train.len(),
        held.len()
    );
    let mut opt = Adam::new(store.params(), AdamConfig::adamw(2e-3))?;
    let mut rng = Rng::seed(43);
    let steps = 400;
    let schedule = ferrograd_nn::optim::Schedule::Cosine { total: steps, min_lr: 1e-4 };
    for step in 0..steps {
        opt.set_lr(schedule.lr(2e-3, step));
        let rows: Vec<Encoded> = (0..24)
            .map(|_| {
                let e = &train[rng.below(train.len())];
                Encoded { ids: e.ids.clone(), context_start: e.context_start, answer: e.answer }
            })
            .collect();
        let [ids, types, mask, context, starts, ends] = batch(&rows)?;
        let loss = model.loss(&ids, &types, &mask, &context, &starts, &ends)?;
        if step == 0 || (step + 1) % 100 == 0 {
            println!("     step {:>4}   loss {:.3}", step + 1, loss.item()?);
        }
        opt.step(&loss.backward()?)?;
    }
    let _g = no_grad();
    let answer = |rows: &[Encoded]| -> ferrograd::Result<Vec<Option<(usize, usize)>>> {
        let [ids, types, mask, context, _, _] = batch(rows)?;
        let (s, e) = model.scores(&ids, &types, &mask, &context)?;
        Ok(QuestionAnswering::best_spans(&s, &e, 8)?
            .into_iter()
            .map(|o| o.map(|sp| (sp.start, sp.end)))
            .collect())
    };
    let mut right = 0;
    for chunk in held.chunks(64) {
        right +=
            answer(chunk)?.iter().zip(chunk).filter(|(got, want)| **got == want.answer).count();
    }
    println!("     held out: exact match {:.1}%", 100.0 * right as f64 / held.len() as f64);
    println!("   the lecture's paragraph: {PRECIPITATION:?}");
    for (question, truth) in PRECIPITATION_QUESTIONS {
        let row = encode(question, PRECIPITATION, truth);
        let span = answer(std::slice::from_ref(&row))?[0];
        let text = span.map(|(s, e)| tok.decode(&row.ids[s..=e])).transpose()?.unwrap_or_default();
        let mark = if span == row.answer { "right" } else { "wrong" };
        println!("     {question:<90} → {text:?} ({mark})");
    }
    Ok(())
}
