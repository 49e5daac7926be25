//! Attention, LayerNorm and TransformerBlock against PyTorch (`scripts/torch_reference_bert.py`
//! wrote the values), gradchecks, and BERT against sentence-transformers and Hugging Face's
//! BertModel with the real all-MiniLM-L6-v2 weights.

use ferrograd::{gradcheck, DType, Rng, Tensor};
use ferrograd_nn::*;

mod common;
use common::{assert_close, check_torch_grads, fixture, load_torch, tensor, token_mask};

fn close(a: &Tensor, b: &Tensor, atol: f64, what: &str) {
    assert_close(a, b, atol, 1e-4, what);
}

#[test]
fn attention_matches_pytorch_with_padding_and_causal_masks() {
    let f = fixture("transformer.json");
    for (case, causal) in [("mha_key_padding", false), ("mha_causal", true)] {
        let c = &f[case];
        let store = ParamStore::new(0);
        let a = Attention::new(&store, 8, 2, causal).unwrap();
        load_torch(&a, &c["params"]);
        let x = tensor(&c["input"]).requiring_grad();
        let mask = (!causal).then(|| token_mask(&tensor(&c["key_padding_mask"])));
        let out = a.forward_masked(&x, mask.as_ref()).unwrap();
        close(&out, &tensor(&c["output"]), 1e-5, case);
        let g = out.mul(&tensor(&c["r"])).unwrap().sum_all().unwrap().backward().unwrap();
        close(
            g.get(&x).unwrap(),
            &tensor(&c["grads"]["input"]),
            1e-5,
            &format!("{case} grad input"),
        );
        check_torch_grads(&a, &g, &c["grads"], 1e-5, case);
    }
}

#[test]
fn layer_norm_matches_pytorch() {
    let c = &fixture("transformer.json")["layer_norm"];
    let ln = LayerNorm::new(ParamStore::new(0), 8, 1e-5).unwrap();
    ln.weight.set(&tensor(&c["params"]["weight"])).unwrap();
    ln.bias.set(&tensor(&c["params"]["bias"])).unwrap();
    let x = tensor(&c["input"]).requiring_grad();
    let out = ln.forward(&x).unwrap();
    close(&out, &tensor(&c["output"]), 1e-5, "layer norm");
    let g = out.mul(&tensor(&c["r"])).unwrap().sum_all().unwrap().backward().unwrap();
    close(g.get(&x).unwrap(), &tensor(&c["grads"]["input"]), 1e-5, "grad input");
    close(g.get(&ln.weight.get()).unwrap(), &tensor(&c["grads"]["weight"]), 1e-5, "grad weight");
}

#[test]
fn transformer_block_matches_pytorch_encoder_layer() {
    let f = fixture("transformer.json");
    for (case, pre) in [("encoder_layer_post_norm", false), ("encoder_layer_pre_norm", true)] {
        let c = &f[case];
        let store = ParamStore::new(0);
        let block = TransformerBlock::new(&store, 8, 2, 16, false, pre).unwrap();
        load_torch(&block, &c["params"]);
        let x = tensor(&c["input"]).requiring_grad();
        let out =
            block.forward_masked(&x, Some(&token_mask(&tensor(&c["key_padding_mask"])))).unwrap();
        close(&out, &tensor(&c["output"]), 1e-5, case);
        let g = out.mul(&tensor(&c["r"])).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = &c["grads"];
        close(g.get(&x).unwrap(), &tensor(&grads["input"]), 1e-5, &format!("{case} grad input"));
        check_torch_grads(&block, &g, grads, 1e-5, case);
    }
}

#[test]
fn fused_layer_norm_equals_its_composed_twin_and_passes_gradcheck() {
    let store = ParamStore::with_dtype(3, DType::F64);
    let mut rng = Rng::seed(7);
    // Rows of 6 (shorter than the kernel's 16 lanes), and rows of 37 (two full lane chunks
    // and a tail) in a tensor large enough to be split across threads.
    let mut small = None; // the rows of 6, for the gradcheck
    for (d, rows) in [(6, 4), (37, 300)] {
        let ln = LayerNorm::new(store.sub(format!("ln{d}")), d, 1e-5).unwrap();
        ln.weight.set(&Tensor::randn(&[d], 1.0, 0.3, DType::F64, &mut rng).unwrap()).unwrap();
        ln.bias.set(&Tensor::randn(&[d], 0.0, 0.3, DType::F64, &mut rng).unwrap()).unwrap();
        let shape = [3, rows, d];
        let x = Tensor::randn(&shape, 0.5, 2.0, DType::F64, &mut rng).unwrap().requiring_grad();
        let r = Tensor::randn(&shape, 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let mut got = Vec::new();
        for fused in [true, false] {
            let y = if fused { ln.forward(&x) } else { ln.forward_composed(&x) }.unwrap();
            let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            got.push([
                y,
                g.get(&x).unwrap().clone(),
                g.get(&ln.weight.get()).unwrap().clone(),
                g.get(&ln.bias.get()).unwrap().clone(),
            ]);
        }
        for (a, b) in got[0].iter().zip(&got[1]) {
            close(a, b, 1e-12, &format!("d {d}: fused vs composed"));
        }
        small.get_or_insert((ln, x));
    }
    let (ln, x) = small.unwrap();
    let (w, b) = (ln.weight.get(), ln.bias.get());
    gradcheck(
        |v| v[0].layer_norm(&v[1], &v[2], 1e-5),
        &[x.detach(), w.detach(), b.detach()],
        1e-6,
        1e-5,
    )
    .unwrap();
}

#[test]
fn attention_and_blocks_pass_gradcheck() {
    let store = ParamStore::with_dtype(2, DType::F64);
    let block = TransformerBlock::new(&store, 4, 2, 8, true, true).unwrap();
    let post = TransformerBlock::new(&store.sub("post"), 4, 2, 8, false, false).unwrap();
    let x = Tensor::randn(&[2, 3, 4], 0.0, 1.0, DType::F64, &mut Rng::seed(1)).unwrap();
    let mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 0], &[2, 3]).unwrap();
    gradcheck(|v| block.forward_masked(&v[0], None), std::slice::from_ref(&x), 1e-6, 1e-5).unwrap();
    gradcheck(|v| post.forward_masked(&v[0], Some(&mask)), std::slice::from_ref(&x), 1e-6, 1e-5)
        .unwrap();
    let ln = LayerNorm::new(store.sub("ln"), 4, 1e-5).unwrap();
    gradcheck(|v| ln.forward(&v[0]), &[x], 1e-6, 1e-5).unwrap();
}

#[test]
fn incremental_decoding_equals_the_full_pass() {
    let store = ParamStore::new(5);
    let lm = models::transformer_lm(&store, 11, 16, 2, 2, 32).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 4, 2, 9, 3, 7], &[1, 6]).unwrap();
    let full = lm.scores(&ids, None).unwrap();
    let mut state = Vec::new();
    let first = lm
        .body
        .forward_incremental(&lm.embed.forward(&ids.narrow(1, 0, 4).unwrap()).unwrap(), &mut state)
        .unwrap();
    let next = lm
        .body
        .forward_incremental(&lm.embed.forward(&ids.narrow(1, 4, 2).unwrap()).unwrap(), &mut state)
        .unwrap();
    let inc = lm.head.forward(&Tensor::concat(&[first, next], 1).unwrap()).unwrap();
    close(&inc, &full, 1e-5, "cached vs full");
    assert_eq!(formula(&lm), "GenerateToken(TransformerBlock^2(EmbedToken(x)))");
}

/// A step of one token through a pre-norm block as one fused op (`Tensor::block_step`, which
/// generation takes) against the same step through the ops one by one (a padding of no slots
/// takes that path): the outputs and the caches are the same to the bit, on one thread (a
/// small block) and in pools of 2 and 3 threads (W5's size), in f32 and f64.
#[test]
fn a_fused_step_of_one_token_equals_the_ops_one_by_one() {
    let cases = [
        (12, 3, 20, 1, DType::F32),
        (128, 4, 512, 2, DType::F32),
        (128, 4, 512, 3, DType::F32),
        (96, 4, 200, 2, DType::F64),
    ];
    for (dim, heads, ff, threads, dtype) in cases {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let _warm = ferrograd::KeepWarm::new();
            let store = ParamStore::with_dtype(3, dtype);
            let block = TransformerBlock::new(&store, dim, heads, ff, true, true).unwrap();
            let mut rng = Rng::seed(1);
            // Layer norms away from (1, 0), biases away from 0: every parameter counts.
            for p in block.params() {
                let t = p.get();
                p.set(&Tensor::randn(t.dims(), 0.1, 0.3, dtype, &mut rng).unwrap()).unwrap();
            }
            let _g = ferrograd::no_grad();
            let prompt = Tensor::randn(&[1, 3, dim], 0.0, 1.0, dtype, &mut rng).unwrap();
            let (mut fused, mut composed) = (Vec::new(), Vec::new());
            block.forward_incremental(&prompt, &mut fused).unwrap();
            block.forward_incremental(&prompt, &mut composed).unwrap();
            let no_padding = Padding { lead: vec![0] };
            for step in 0..5 {
                let x = Tensor::randn(&[1, 1, dim], 0.0, 1.0, dtype, &mut rng).unwrap();
                let a = block.forward_incremental(&x, &mut fused).unwrap();
                let mut caches = [composed[0].clone(), composed[1].clone()];
                let b = block.forward_incremental_padded(&x, &mut composed, &no_padding).unwrap();
                // The op itself, called directly.
                let pair = |f: &FeedForward| (f.weight.get(), f.bias.get());
                let norm = |n: &AddNorm| (n.norm.weight.get(), n.norm.bias.get(), n.norm.eps);
                let at = &block.attention;
                let (q, k, v, o) =
                    (pair(&at.query), pair(&at.key), pair(&at.value), pair(&at.output));
                let (f1, f2, n1, n2) = (
                    pair(&block.ff_in),
                    pair(&block.ff_out),
                    norm(&block.attention_norm),
                    norm(&block.ff_norm),
                );
                let direct = ferrograd::PreNormBlock {
                    heads,
                    attention_norm: (&n1.0, &n1.1, n1.2),
                    query: (&q.0, &q.1),
                    key: (&k.0, &k.1),
                    value: (&v.0, &v.1),
                    output: (&o.0, &o.1),
                    ff_norm: (&n2.0, &n2.1, n2.2),
                    ff_in: (&f1.0, &f1.1),
                    activation: block.ff_in.activation,
                    ff_out: (&f2.0, &f2.1),
                };
                let c = x.block_step(&[direct], &mut caches).unwrap();
                assert_eq!(c.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "block_step");
                for (mine, theirs) in caches.iter().zip(&composed) {
                    assert_eq!(mine.to_vec_f64().unwrap(), theirs.to_vec_f64().unwrap(), "caches");
                }
                let what = format!("{dim}/{heads}/{ff} on {threads} threads, {dtype}, step {step}");
                assert_eq!(a.dims(), [1, 1, dim], "{what}");
                assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "{what}: output");
                for (c, (f, o)) in fused.iter().zip(&composed).enumerate() {
                    assert_eq!(f.dims(), [1, 4 + step, dim], "{what}: cache {c}");
                    assert_eq!(
                        f.to_vec_f64().unwrap(),
                        o.to_vec_f64().unwrap(),
                        "{what}: cache {c}"
                    );
                }
            }
        });
    }
}

/// A stack's run of blocks takes a step of one token as one fused op (one team of threads for
/// all four blocks): the outputs and every cache equal those of the ops one by one (a padding
/// of no slots takes that path), token after token.
#[test]
fn a_stack_of_blocks_steps_fused_as_the_ops_one_by_one() {
    let store = ParamStore::new(9);
    let lm = models::transformer_lm(&store, 65, 128, 4, 4, 32).unwrap();
    let _g = ferrograd::no_grad();
    let ids = Tensor::from_vec(vec![3i64, 1, 4, 1, 5, 9, 2, 6], &[1, 8]).unwrap();
    let (mut fused, mut composed) = (Vec::new(), Vec::new());
    let no_padding = Padding { lead: vec![0] };
    let prompt = lm.embed.forward(&ids.narrow(1, 0, 3).unwrap()).unwrap();
    lm.body.forward_incremental(&prompt, &mut fused).unwrap();
    lm.body.forward_incremental_padded(&prompt, &mut composed, &no_padding).unwrap();
    for t in 3..8 {
        let x = lm.embed.forward(&ids.narrow(1, t, 1).unwrap()).unwrap();
        let a = lm.body.forward_incremental(&x, &mut fused).unwrap();
        let b = lm.body.forward_incremental_padded(&x, &mut composed, &no_padding).unwrap();
        assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "token {t}");
        assert_eq!(fused.len(), composed.len());
        for (i, (f, c)) in fused.iter().zip(&composed).enumerate() {
            assert_eq!(f.to_vec_f64().unwrap(), c.to_vec_f64().unwrap(), "token {t}, state {i}");
        }
    }
}

fn minilm_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/models/all-MiniLM-L6-v2 is absent (see DATA.md)");
        None
    }
}

#[test]
fn minilm_matches_sentence_transformers_and_bert_model() {
    let Some(dir) = minilm_dir() else { return };
    let f = fixture("minilm.json");
    let store = ParamStore::new(0);
    let bert = Bert::from_pretrained(&dir, &store).unwrap();
    // Token-level hidden states of Hugging Face's BertModel, padded batch.
    let t = &f["token_level"];
    let h = bert
        .forward(
            &tensor(&t["input_ids"]),
            Some(&tensor(&t["token_type_ids"])),
            Some(&tensor(&t["attention_mask"])),
        )
        .unwrap();
    let (mask, want) =
        (tensor(&t["attention_mask"]).to_vec::<i64>().unwrap(), tensor(&t["last_hidden_state"]));
    let (hv, wv) = (h.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let mut worst = 0.0f64;
    for (i, m) in mask.iter().enumerate() {
        if *m == 1 {
            for k in 0..384 {
                worst = worst.max((hv[i * 384 + k] - wv[i * 384 + k]).abs());
            }
        }
    }
    assert!(worst < 1e-4, "hidden states differ by up to {worst}");
    // A question/context pair: segment embeddings.
    let p = &f["pair"];
    let h = bert
        .forward(
            &tensor(&p["input_ids"]),
            Some(&tensor(&p["token_type_ids"])),
            Some(&tensor(&p["attention_mask"])),
        )
        .unwrap();
    close(&h, &tensor(&p["last_hidden_state"]), 1e-4, "pair hidden states");
    // Sentence embeddings of every sentence, one at a time and as one padded batch.
    let sentences: Vec<Vec<i64>> = f["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect())
        .collect();
    let (ids, mask) = ferrograd_data_free_pad(&sentences);
    let emb = bert.sentence_embeddings(&ids, &mask).unwrap();
    let want = tensor(&f["embeddings"]);
    let worst = emb.sub(&want).unwrap().abs().unwrap().max(&[0, 1], false).unwrap().item().unwrap();
    assert!(worst < 1e-5, "sentence embeddings differ by up to {worst} (max abs)");
}

/// Right-pads id lists with 0 and builds the mask (ferrograd-nn does not depend on the data crate).
fn ferrograd_data_free_pad(seqs: &[Vec<i64>]) -> (Tensor, Tensor) {
    let t = seqs.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for s in seqs {
        ids.extend(s.iter().copied().chain(std::iter::repeat_n(0, t - s.len())));
        mask.extend(std::iter::repeat_n(1i64, s.len()).chain(std::iter::repeat_n(0, t - s.len())));
    }
    (
        Tensor::from_vec(ids, &[seqs.len(), t]).unwrap(),
        Tensor::from_vec(mask, &[seqs.len(), t]).unwrap(),
    )
}

#[test]
fn mismatched_bert_checkpoints_name_the_tensor() {
    let Some(dir) = minilm_dir() else { return };
    let tmp = std::env::temp_dir().join(format!("ferrograd-bert-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(dir.join("model.safetensors"), tmp.join("model.safetensors")).unwrap();
    // One more layer than the file has: more values than it holds, refused as it is built.
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 7");
    std::fs::write(tmp.join("config.json"), config).unwrap();
    let e = Bert::from_pretrained(&tmp, &ParamStore::new(0)).err().unwrap().to_string();
    assert!(e.contains("model.safetensors holds") && e.contains("does not describe"), "{e}");
    // A wider model: the first tensor whose shape differs is named with both shapes.
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024");
    std::fs::write(tmp.join("config.json"), config).unwrap();
    let e = Bert::from_pretrained(&tmp, &ParamStore::new(0)).err().unwrap().to_string();
    assert!(e.contains("intermediate.dense.weight") && e.contains("[1536, 384]"), "{e}");
    std::fs::write(tmp.join("config.json"), "{\"hidden_size\": 3}").unwrap();
    assert!(Bert::from_pretrained(&tmp, &ParamStore::new(0))
        .err()
        .unwrap()
        .to_string()
        .contains("not a BERT config"));
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn span_head_picks_the_best_allowed_span_and_trains() {
    // Scores over 6 tokens; token 0 is blocked (outside the context). Best: start 2, end 3
    // (1.0 + 3.0); the higher end at 1 comes before any allowed start.
    let blocked = -1e9f32;
    let start = Tensor::from_vec(vec![blocked, 0.5, 1.0, 0.0, -1.0, 0.2], &[1, 6]).unwrap();
    let end = Tensor::from_vec(vec![blocked, 9.0, 0.0, 3.0, 1.0, 2.9], &[1, 6]).unwrap();
    let spans = QuestionAnswering::best_spans(&start, &end, 8).unwrap();
    assert_eq!((spans[0].unwrap().start, spans[0].unwrap().end), (1, 1)); // 0.5 + 9.0
    let spans = QuestionAnswering::best_spans(&start, &end.narrow(1, 0, 6).unwrap(), 1).unwrap();
    assert_eq!((spans[0].unwrap().start, spans[0].unwrap().end), (1, 1));
    let no_nine = Tensor::from_vec(vec![blocked, 0.0, 0.0, 3.0, 1.0, 2.9], &[1, 6]).unwrap();
    let s = QuestionAnswering::best_spans(&start, &no_nine, 8).unwrap()[0].unwrap();
    assert_eq!((s.start, s.end, s.score), (2, 3, 4.0));
    let s = QuestionAnswering::best_spans(&start, &no_nine, 1).unwrap()[0].unwrap();
    assert_eq!((s.start, s.end), (5, 5)); // one-token answers only: 0.2 + 2.9 beats 1.0 + 0.0

    // A tiny model: the loss reaches every parameter, blocked tokens get no probability, and
    // the whole thing passes a gradcheck in f64 (through the token states).
    let config = tiny_bert();
    let store = ParamStore::with_dtype(3, DType::F64);
    let qa = QuestionAnswering::new(&store, &config).unwrap();
    let ids = Tensor::from_vec(vec![2i64, 5, 3, 7, 8, 9, 3], &[1, 7]).unwrap();
    let types = Tensor::from_vec(vec![0i64, 0, 0, 1, 1, 1, 1], &[1, 7]).unwrap();
    let mask = Tensor::ones(&[1, 7], DType::I64).unwrap();
    let context = Tensor::from_vec(vec![0i64, 0, 0, 1, 1, 1, 0], &[1, 7]).unwrap();
    let (s, _) = qa.scores(&ids, &types, &mask, &context).unwrap();
    let p = s.softmax(-1).unwrap().to_vec_f64().unwrap();
    assert!(p[0] == 0.0 && p[6] == 0.0 && (p[3] + p[4] + p[5] - 1.0).abs() < 1e-12);
    let (starts, ends) =
        (Tensor::from_vec(vec![4i64], &[1]).unwrap(), Tensor::from_vec(vec![5i64], &[1]).unwrap());
    let g = qa.loss(&ids, &types, &mask, &context, &starts, &ends).unwrap().backward().unwrap();
    for p in qa.params() {
        assert!(g.get(&p.get()).is_some(), "no gradient for {}", p.name());
    }
    let h = Tensor::randn(&[1, 7, 4], 0.0, 1.0, DType::F64, &mut Rng::seed(2)).unwrap();
    gradcheck(|v| qa.span.forward(&v[0]), &[h], 1e-6, 1e-5).unwrap();
    let e = qa.scores(&ids, &types, &mask, &context.narrow(1, 0, 6).unwrap()).unwrap_err();
    assert!(e.to_string().contains("context mask must be [1, 7]"), "{e}");
}

#[test]
fn fused_attention_equals_its_composed_twin() {
    let store = ParamStore::with_dtype(11, DType::F64);
    let mut rng = Rng::seed(12);
    let x = Tensor::randn(&[2, 5, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
    let c = Tensor::randn(&[2, 7, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
    let mask =
        Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], &[2, 7]).unwrap();
    let r = Tensor::randn(&[2, 5, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    for causal in [false, true] {
        let a = Attention::new(&store.sub(format!("a{causal}")), 8, 2, causal).unwrap();
        for (context, m) in
            [(&x, None), (&x, Some(mask.narrow(1, 0, 5).unwrap())), (&c, Some(mask.clone()))]
        {
            let mut got = Vec::new();
            for fused in [true, false] {
                let out = if fused {
                    a.attend(&x, context, m.as_ref())
                } else {
                    a.attend_composed(&x, context, m.as_ref()).map(|(o, _)| o)
                }
                .unwrap();
                let g = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
                let mut all = vec![out.clone(), g.get(&x).unwrap().clone()];
                if !std::ptr::eq(context, &x) {
                    all.push(g.get(context).unwrap().clone());
                }
                all.extend(a.params().iter().map(|p| g.get(&p.get()).unwrap().clone()));
                got.push(all);
            }
            for (f, c) in got[0].iter().zip(&got[1]) {
                close(f, c, 1e-10, &format!("causal {causal}: fused vs composed"));
            }
        }
    }
}

#[test]
fn fused_causal_attention_in_query_blocks_equals_its_composed_twin() {
    // 70 queries: causal attention runs in blocks of 32, the last one ragged; with 75 keys the
    // queries sit at positions 5..75 (a cache's case), and padding hides keys 0..3 of one row.
    let store = ParamStore::with_dtype(13, DType::F64);
    let mut rng = Rng::seed(14);
    let a = Attention::new(&store.sub("a"), 8, 2, true).unwrap();
    let x = Tensor::randn(&[2, 70, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
    let c = Tensor::randn(&[2, 75, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap().requiring_grad();
    let r = Tensor::randn(&[2, 70, 8], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let keep: Vec<i64> = (0..150).map(|i| i64::from(!(75..78).contains(&i))).collect();
    let mask = Tensor::from_vec(keep, &[2, 75]).unwrap();
    for (context, m) in [(&x, None), (&c, Some(&mask))] {
        let run = |fused: bool| {
            let out = if fused {
                a.attend(&x, context, m).unwrap()
            } else {
                a.attend_composed(&x, context, m).unwrap().0
            };
            let g = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gc) = (g.get(&x).unwrap().clone(), g.get(context).unwrap().clone());
            let mut all = vec![out.clone(), gx, gc];
            all.extend(a.params().iter().map(|p| g.get(&p.get()).unwrap().clone()));
            all
        };
        for (f, c) in run(true).iter().zip(&run(false)) {
            close(f, c, 1e-10, "blocked causal: fused vs composed");
        }
    }
}

#[test]
fn a_bert_config_claiming_absurd_sizes_is_refused_by_field_before_allocating() {
    let dir = std::env::temp_dir().join(format!("ferrograd-bert-sizes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = tiny_bert();
    let store = ParamStore::new(0);
    Bert::new(&store, &config).unwrap();
    let tensors: Vec<(String, Tensor)> =
        store.params().iter().map(|p| (p.name().to_string(), p.get())).collect();
    ferrograd::io::save_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default())
        .unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut c = serde_json::to_value(&config).unwrap();
        c[field] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let start = std::time::Instant::now();
        let r = Bert::from_pretrained(&dir, &ParamStore::new(0)).map(|_| ());
        assert!(start.elapsed().as_secs_f64() < 1.0, "{field}");
        r.err().map(|e| e.to_string())
    };
    assert_eq!(with("hidden_size", 4.into()), None, "the true config loads");
    for field in [
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "type_vocab_size",
    ] {
        let e = with(field, 1_000_000_000u64.into()).expect(field);
        assert!(e.contains("config.json") && e.contains(&format!("{field} = 1000000000")), "{e}");
    }
    let e = with("num_hidden_layers", 0.into()).unwrap();
    assert!(e.contains("num_hidden_layers = 0"), "{e}");
    // Within every bound, but a model larger than the file holds: refused as it is built.
    let e = with("num_hidden_layers", 2.into()).unwrap();
    assert!(e.contains("model.safetensors") && e.contains("does not describe"), "{e}");
    let e = with("layer_norm_eps", (-1.0).into()).unwrap();
    assert!(e.contains("layer_norm_eps = -1"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A BERT of 12 tokens, width 4, one layer.
fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 12,
        hidden_size: 4,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 8,
        max_position_embeddings: 8,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
    }
}

#[test]
fn pytorch_state_dicts_that_do_not_fit_are_refused_by_name_and_set_nothing() {
    let store = ParamStore::new(0);
    let block = TransformerBlock::new(&store.sub("layers").sub(0), 8, 2, 16, false, false).unwrap();
    let good: std::collections::HashMap<String, Tensor> =
        pytorch::state_dict(&block).unwrap().into_iter().collect();
    assert!(good.contains_key("layers.0.self_attn.in_proj_weight"));
    assert_eq!(good["layers.0.self_attn.in_proj_weight"].dims(), &[24, 8]);
    let before = pytorch::state_dict(&block).unwrap();
    let refused = |edit: &dyn Fn(&mut std::collections::HashMap<String, Tensor>), says: &str| {
        let mut t = good.clone();
        edit(&mut t);
        // A value that would show if anything were set before the error.
        t.insert("layers.0.linear1.bias".into(), Tensor::ones(&[16], DType::F32).unwrap());
        let e = pytorch::load_state_dict(&block, &t, "model.safetensors").unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.to_string().contains("model.safetensors"), "{e}");
        for ((_, a), (_, b)) in pytorch::state_dict(&block).unwrap().iter().zip(&before) {
            assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        }
    };
    refused(
        &|t| {
            t.remove("layers.0.norm2.weight");
        },
        "tensor layers.0.norm2.weight (for layers.0.ff_norm.weight) is missing",
    );
    refused(
        &|t| {
            t.insert("layers.0.self_attn.in_proj_weight".into(), Tensor::zeros(&[8, 8], DType::F32).unwrap());
        },
        "layers.0.self_attn.in_proj_weight is f32 [8, 8] in the file, the model expects a float [24, 8]",
    );
    refused(
        &|t| {
            t.insert(
                "layers.0.linear1.weight".into(),
                Tensor::zeros(&[16, 8], DType::I64).unwrap(),
            );
        },
        "layers.0.linear1.weight is i64",
    );
    refused(
        &|t| {
            t.insert("layers.0.norm3.weight".into(), Tensor::zeros(&[8], DType::F32).unwrap());
        },
        "the model has no parameter for layers.0.norm3.weight",
    );
    // What state_dict writes loads back (f64 values converted to the model's f32).
    let mut t = good.clone();
    t.insert("layers.0.linear1.bias".into(), Tensor::full(&[16], 0.5, DType::F64).unwrap());
    pytorch::load_state_dict(&block, &t, "edited").unwrap();
    assert_eq!(block.ff_in.bias.get().to_vec_f64().unwrap(), vec![0.5; 16]);
    let dir = std::env::temp_dir().join(format!("ferrograd-torch-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    pytorch::save_file(&block, &dir.join("block.safetensors")).unwrap();
    let copy =
        TransformerBlock::new(&ParamStore::new(9).sub("layers").sub(0), 8, 2, 16, false, false)
            .unwrap();
    pytorch::load_file(&copy, &dir.join("block.safetensors")).unwrap();
    for ((na, a), (nb, b)) in
        pytorch::state_dict(&copy).unwrap().iter().zip(&pytorch::state_dict(&block).unwrap())
    {
        assert_eq!(na, nb);
        assert_eq!(a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap(), "{na}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model of one's own: a learned scalar beside an Attention, and a second Attention whose
/// PyTorch names collide with the first's.
struct Scaled {
    scale: Param,
    attention: Attention,
    twin: Option<Attention>,
}

impl Module for Scaled {
    fn forward(&self, x: &Tensor) -> ferrograd::Result<Tensor> {
        self.attention.forward(x)?.mul(&self.scale.get())
    }
    fn describe(&self) -> String {
        "Scaled".into()
    }
    fn params(&self) -> Vec<Param> {
        let mut p = vec![self.scale.clone()];
        p.extend(self.attention.params());
        p.extend(self.twin.iter().flat_map(|t| t.params()));
        p
    }
    fn torch_names(&self) -> Vec<pytorch::TorchName> {
        let mut n = vec![pytorch::TorchName::same(self.scale.clone())];
        n.extend(self.attention.torch_names());
        n.extend(self.twin.iter().flat_map(|t| t.torch_names()));
        n
    }
}

#[test]
fn pytorch_names_keep_berts_own_take_scalars_and_refuse_twins() {
    // BERT's attention is named as Hugging Face names it, not packed.
    let store = ParamStore::new(0);
    let bert = Bert::new(&store, &tiny_bert()).unwrap();
    let names: Vec<String> =
        pytorch::state_dict(&bert).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.ends_with("attention.self.query.weight")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("in_proj")), "{names:?}");

    let store = ParamStore::new(0);
    let model = Scaled {
        scale: store.param("scale", &[], Init::Ones).unwrap(),
        attention: Attention::new(&store.sub("attn"), 4, 2, false).unwrap(),
        twin: None,
    };
    let mut tensors: std::collections::HashMap<String, Tensor> =
        pytorch::state_dict(&model).unwrap().into_iter().collect();
    tensors.insert("scale".into(), Tensor::full(&[], 3.0, DType::F32).unwrap());
    pytorch::load_state_dict(&model, &tensors, "scaled").unwrap();
    assert_eq!(model.scale.get().item().unwrap(), 3.0);

    let other = ParamStore::new(1);
    let twins =
        Scaled { twin: Some(Attention::new(&other.sub("attn"), 4, 2, false).unwrap()), ..model };
    let e = pytorch::state_dict(&twins).unwrap_err();
    assert!(e.to_string().contains("both named attn.in_proj_weight"), "{e}");
    assert!(pytorch::load_state_dict(&twins, &tensors, "scaled").is_err());
}
