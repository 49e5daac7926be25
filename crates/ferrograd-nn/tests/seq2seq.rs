//! SequenceToSequence: the decoder block and a whole encoder–decoder against PyTorch
//! (`scripts/torch_reference_seq2seq.py` wrote the values), gradchecks, cached decoding against
//! the full pass, and beam search against exhaustive search.

use ferrograd::{gradcheck, DType, Rng, Tensor};
use ferrograd_nn::*;

mod common;
use common::{assert_close, check_torch_grads, fixture, load_torch, tensor, token_mask};

fn close(a: &Tensor, b: &Tensor, what: &str) {
    assert_close(a, b, 2e-5, 1e-4, what);
}

#[test]
fn decoder_block_matches_pytorch_decoder_layer() {
    let f = fixture("seq2seq.json");
    for (case, pre) in [("decoder_layer_post_norm", false), ("decoder_layer_pre_norm", true)] {
        let c = &f[case];
        let block = DecoderBlock::new(&ParamStore::new(0), 8, 2, 16, pre).unwrap();
        load_torch(&block, &c["params"]);
        let x = tensor(&c["input"]).requiring_grad();
        let memory = Memory {
            states: tensor(&c["memory"]).requiring_grad(),
            mask: Some(token_mask(&tensor(&c["memory_key_padding_mask"]))),
        };
        let mask = token_mask(&tensor(&c["tgt_key_padding_mask"]));
        let out = block.forward_masked(&x, Some(&mask), &memory).unwrap();
        close(&out, &tensor(&c["output"]), case);
        let g = out.mul(&tensor(&c["r"])).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = &c["grads"];
        close(g.get(&x).unwrap(), &tensor(&grads["input"]), &format!("{case} grad input"));
        close(
            g.get(&memory.states).unwrap(),
            &tensor(&grads["memory"]),
            &format!("{case} grad memory"),
        );
        check_torch_grads(&block, &g, grads, 2e-5, case);
    }
}

/// `nn.Transformer` as a user would write it: an encoder stack and a decoder stack, each ending
/// in a LayerNorm, built under PyTorch's names so that its state_dict loads in one call.
struct Transformer {
    encoder: SequenceStack,
    decoder: DecoderStack,
}

impl Module for Transformer {
    fn forward(&self, x: &Tensor) -> ferrograd::Result<Tensor> {
        self.encoder.forward(x)
    }
    fn describe(&self) -> String {
        "Transformer".into()
    }
    fn params(&self) -> Vec<Param> {
        [self.encoder.params(), self.decoder.params()].concat()
    }
    fn torch_names(&self) -> Vec<pytorch::TorchName> {
        [self.encoder.torch_names(), self.decoder.torch_names()].concat()
    }
}

#[test]
fn encoder_decoder_matches_pytorch_transformer() {
    let c = &fixture("seq2seq.json")["transformer"];
    let store = ParamStore::new(0);
    let (enc, dec) = (store.sub("encoder"), store.sub("decoder"));
    let mut encoder: Vec<Box<dyn SequenceModel>> = Vec::new();
    let mut decoder = Vec::new();
    for i in 0..2 {
        let layer = enc.sub("layers").sub(i);
        encoder.push(Box::new(TransformerBlock::new(&layer, 8, 2, 16, false, false).unwrap()));
        let layer = dec.sub("layers").sub(i);
        let block = DecoderBlock::new(&layer, 8, 2, 16, false).unwrap();
        decoder.push(DecoderLayer::Attending(Box::new(block)));
    }
    encoder.push(Box::new(LayerNorm::new(enc.sub("norm"), 8, 1e-5).unwrap()));
    decoder.push(DecoderLayer::Plain(Box::new(LayerNorm::new(dec.sub("norm"), 8, 1e-5).unwrap())));
    let model = Transformer {
        encoder: SequenceStack { layers: encoder },
        decoder: DecoderStack { layers: decoder },
    };
    load_torch(&model, &c["params"]);

    let (src, tgt) = (tensor(&c["src"]).requiring_grad(), tensor(&c["tgt"]).requiring_grad());
    let src_mask = token_mask(&tensor(&c["src_key_padding_mask"]));
    let tgt_mask = token_mask(&tensor(&c["tgt_key_padding_mask"]));
    let memory = Memory {
        states: model.encoder.forward_masked(&src, Some(&src_mask)).unwrap(),
        mask: Some(src_mask),
    };
    let out = model.decoder.forward_masked(&tgt, Some(&tgt_mask), &memory).unwrap();
    close(&out, &tensor(&c["output"]), "nn.Transformer output");
    let g = out.mul(&tensor(&c["r"])).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = &c["grads"];
    close(g.get(&src).unwrap(), &tensor(&grads["src"]), "grad src");
    close(g.get(&tgt).unwrap(), &tensor(&grads["tgt"]), "grad tgt");
    check_torch_grads(&model, &g, grads, 2e-5, "nn.Transformer");
}

#[test]
fn decoders_pass_gradcheck() {
    let store = ParamStore::with_dtype(4, DType::F64);
    let mut rng = Rng::seed(3);
    let x = Tensor::randn(&[2, 3, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let m = Tensor::randn(&[2, 4, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let memory_mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 0, 0], &[2, 4]).unwrap();
    let target_mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 0], &[2, 3]).unwrap();
    let post = DecoderBlock::new(&store.sub("post"), 4, 2, 8, false).unwrap();
    let pre = DecoderBlock::new(&store.sub("pre"), 4, 2, 8, true).unwrap();
    let rnn = RnnDecoder::new(&store.sub("rnn"), 4, 1, 0).unwrap();
    let decoders: [&dyn Decoder; 3] = [&post, &pre, &rnn];
    for decoder in decoders {
        let run = |v: &[Tensor]| {
            let memory = Memory { states: v[1].clone(), mask: Some(memory_mask.clone()) };
            decoder.forward_masked(&v[0], Some(&target_mask), &memory)
        };
        gradcheck(run, &[x.clone(), m.clone()], 1e-6, 1e-5)
            .unwrap_or_else(|e| panic!("{}: {e}", decoder.describe()));
    }
}

#[test]
fn whole_encoder_decoders_pass_gradcheck() {
    // The model's encoder and decoder stacks in f64, from source and target embeddings (ids
    // have no gradient) to the decoder's output, for both kinds.
    for kind in [Seq2SeqKind::Transformer, Seq2SeqKind::Rnn] {
        let config = Seq2SeqConfig {
            kind,
            source_vocab: 7,
            target_vocab: 7,
            dim: 4,
            heads: 2,
            ff: 8,
            max_positions: 6,
            ..Seq2SeqConfig::small_transformer()
        };
        let model =
            SequenceToSequence::new(&ParamStore::with_dtype(8, DType::F64), &config).unwrap();
        let mut rng = Rng::seed(9);
        let src = Tensor::randn(&[2, 4, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let tgt = Tensor::randn(&[2, 3, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let src_mask = Tensor::from_vec(vec![1i64, 1, 1, 1, 1, 1, 0, 0], &[2, 4]).unwrap();
        let run = |v: &[Tensor]| {
            let memory = Memory {
                states: model.encoder.forward_masked(&v[0], Some(&src_mask))?,
                mask: Some(src_mask.clone()),
            };
            model.decoder.forward_masked(&v[1], None, &memory)
        };
        gradcheck(run, &[src, tgt], 1e-6, 1e-5).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

fn tiny(kind: Seq2SeqKind, vocab: usize, seed: u64) -> SequenceToSequence {
    let config = Seq2SeqConfig {
        kind,
        source_vocab: vocab,
        target_vocab: vocab,
        dim: 8,
        heads: 2,
        ff: 16,
        max_positions: 12,
        ..Seq2SeqConfig::small_transformer()
    };
    let model = SequenceToSequence::new(&ParamStore::new(seed), &config).unwrap();
    // Larger weights than the initialization's, so that the scores differ clearly.
    for p in model.params() {
        p.set(&p.get().mul_scalar(3.0).unwrap()).unwrap();
    }
    model
}

#[test]
fn cached_decoding_equals_the_full_pass() {
    for kind in [Seq2SeqKind::Transformer, Seq2SeqKind::Rnn] {
        let model = tiny(kind, 9, 1);
        let source = Tensor::from_vec(vec![4i64, 5, 6, 7, 8, 4, 0, 0], &[2, 4]).unwrap();
        let target = Tensor::from_vec(vec![2i64, 5, 6, 7, 2, 8, 4, 4], &[2, 4]).unwrap();
        let full = model.scores(&source, &target).unwrap().log_softmax(-1).unwrap();
        let memory = model.encode(&source).unwrap();
        let mut state = Vec::new();
        let h1 = model
            .decoder
            .forward_incremental(
                &model.target_embed.forward(&target.narrow(1, 0, 3).unwrap()).unwrap(),
                &memory,
                &mut state,
            )
            .unwrap();
        let h2 = model
            .decoder
            .forward_incremental(
                &model.target_embed.forward(&target.narrow(1, 3, 1).unwrap()).unwrap(),
                &memory,
                &mut state,
            )
            .unwrap();
        let cached = model
            .head
            .forward(&Tensor::concat(&[h1, h2], 1).unwrap())
            .unwrap()
            .log_softmax(-1)
            .unwrap();
        assert_close(&cached, &full, 1e-5, 1e-5, &format!("{kind:?}: cached vs full"));
    }
}

/// Every output of at most `max_len` tokens (`<eos>` included, or cut at `max_len`), scored by
/// full teacher-forced passes: the exhaustive search beam search must agree with.
fn exhaustive_best(
    model: &SequenceToSequence,
    source: &[i64],
    max_len: usize,
    alpha: f64,
) -> Vec<i64> {
    let c = &model.config;
    let words: Vec<i64> =
        (0..c.target_vocab as i64).filter(|&t| t != c.pad && t != c.bos && t != c.eos).collect();
    let src = Tensor::from_vec(source.to_vec(), &[1, source.len()]).unwrap();
    let mut prefixes: Vec<Vec<i64>> = vec![Vec::new()];
    let (mut best, mut best_score) = (Vec::new(), f64::NEG_INFINITY);
    for len in 1..=max_len {
        let mut longer = Vec::new();
        for prefix in &prefixes {
            let input: Vec<i64> = std::iter::once(c.bos).chain(prefix.iter().copied()).collect();
            let target = Tensor::from_vec(input.clone(), &[1, input.len()]).unwrap();
            let logp = model.scores(&src, &target).unwrap().log_softmax(-1).unwrap();
            let logp = logp.to_vec_f64().unwrap();
            let v = c.target_vocab;
            // Log-probability of the prefix itself, then of each next token.
            let prefix_lp: f64 =
                prefix.iter().enumerate().map(|(i, &t)| logp[i * v + t as usize]).sum();
            let last = &logp[prefix.len() * v..];
            let mut consider = |tokens: Vec<i64>, lp: f64, n: usize| {
                let score = lp / (n as f64).powf(alpha);
                if score > best_score {
                    (best, best_score) = (tokens, score);
                }
            };
            consider(prefix.clone(), prefix_lp + last[c.eos as usize], len);
            for &w in &words {
                let mut next = prefix.clone();
                next.push(w);
                if len == max_len {
                    consider(next, prefix_lp + last[w as usize], len);
                } else {
                    longer.push(next);
                }
            }
        }
        prefixes = longer;
    }
    best
}

#[test]
fn beam_search_finds_the_exhaustive_best_and_width_one_is_greedy() {
    // Vocabulary: <pad> <unk> <bos> <eos> and two words; outputs of up to 3 tokens.
    let mut bests = std::collections::HashSet::new();
    for (seed, alpha) in [(1, 0.0), (2, 0.0), (3, 1.0), (4, 0.6), (6, 0.0), (7, 1.0)] {
        let model = tiny(Seq2SeqKind::Transformer, 6, seed);
        let source = [4i64, 5, 4];
        let src = Tensor::from_vec(source.to_vec(), &[1, 3]).unwrap();
        let wide = BeamOptions { width: 64, length_penalty: alpha, max_len: 3 };
        let found = &model.beam_search(&src, &wide).unwrap()[0];
        assert_eq!(
            found[0].tokens,
            exhaustive_best(&model, &source, 3, alpha),
            "seed {seed}, α {alpha}"
        );
        assert!(found.windows(2).all(|w| w[0].score >= w[1].score), "n-best in order");
        bests.insert(found[0].tokens.clone());
    }
    assert!(bests.len() >= 3, "the tiny models should disagree: {bests:?}");
    let model = tiny(Seq2SeqKind::Transformer, 9, 5);
    let src = Tensor::from_vec(vec![4i64, 5, 6, 7, 8, 8, 7, 0], &[2, 4]).unwrap();
    let greedy = model.generate(&src, 8, Sampling::greedy(), &mut Rng::seed(0)).unwrap();
    let one = BeamOptions { width: 1, length_penalty: 0.0, max_len: 8 };
    let beams: Vec<Vec<i64>> =
        model.beam_search(&src, &one).unwrap().into_iter().map(|h| h[0].tokens.clone()).collect();
    assert_eq!(beams, greedy);
    // A wider beam never finds a worse best (α = 0: total log-probability).
    let four = BeamOptions { width: 4, ..one };
    for (b1, b4) in
        model.beam_search(&src, &one).unwrap().iter().zip(model.beam_search(&src, &four).unwrap())
    {
        assert!(b4[0].log_prob >= b1[0].log_prob - 1e-9);
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let model = tiny(Seq2SeqKind::Transformer, 9, 1);
    let long = Tensor::from_vec(vec![4i64; 13], &[1, 13]).unwrap();
    let e = model.encode(&long).unwrap_err().to_string();
    assert!(e.contains("the source has 13 tokens; the model takes at most 12"), "{e}");
    let unknown = Tensor::from_vec(vec![4i64, 99], &[1, 2]).unwrap();
    let e = model.encode(&unknown).unwrap_err().to_string();
    assert!(e.contains("token id 99 is outside the vocabulary of 9"), "{e}");
    let empty = Tensor::from_vec(Vec::<i64>::new(), &[1, 0]).unwrap();
    assert!(model.encode(&empty).unwrap_err().to_string().contains("T ≥ 1"));
    let e = model.beam_search(
        &long.narrow(1, 0, 2).unwrap(),
        &BeamOptions { width: 0, length_penalty: 0.0, max_len: 4 },
    );
    assert!(e.unwrap_err().to_string().contains("beam width must be at least 1"));
    let bad = Seq2SeqConfig { shared_vocab: true, target_vocab: 7, ..model.config.clone() };
    let e = SequenceToSequence::new(&ParamStore::new(0), &bad).err().unwrap().to_string();
    assert!(e.contains("shared vocabulary needs one size"), "{e}");
    let e = model.decoder.forward(&Tensor::zeros(&[1, 2, 8], DType::F32).unwrap()).unwrap_err();
    assert!(e.to_string().contains("needs the encoder's output"), "{e}");
}

#[test]
fn dropout_acts_in_training_only() {
    let config = Seq2SeqConfig { dropout: 0.3, ..tiny(Seq2SeqKind::Transformer, 9, 1).config };
    let store = ParamStore::new(2);
    let model = SequenceToSequence::new(&store, &config).unwrap();
    let plain = SequenceToSequence::new(
        &ParamStore::new(2),
        &Seq2SeqConfig { dropout: 0.0, ..config.clone() },
    )
    .unwrap();
    let source = Tensor::from_vec(vec![4i64, 5, 6, 7], &[1, 4]).unwrap();
    let target = Tensor::from_vec(vec![2i64, 5, 6], &[1, 3]).unwrap();
    let scores = |m: &SequenceToSequence| m.scores(&source, &target).unwrap();
    assert_ne!(scores(&model).to_vec_f64().unwrap(), scores(&model).to_vec_f64().unwrap());
    store.eval();
    assert_close(&scores(&model), &scores(&plain), 1e-6, 1e-6, "eval mode: no dropout");
    let bad = Seq2SeqConfig { dropout: 1.0, ..config };
    assert!(SequenceToSequence::new(&ParamStore::new(0), &bad).is_err());
}
