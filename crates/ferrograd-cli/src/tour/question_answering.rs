//! Chapter 5: BERT — extractive question answering on the lecture's paragraph.

use crate::CliResult;
use ferrograd::{no_grad, Precision, Rng, Tensor};
use ferrograd_nn::optim::{Adam, AdamConfig, Schedule};
use ferrograd_nn::trainer::{Metrics, Sampled};
use ferrograd_nn::{Module, ParamStore, Progress, Trainer};

/// Chapter 5: the lecture's question answering — `[CLS] question [SEP] context [SEP]` through a
/// small BERT trained from scratch on generated paragraphs shaped like the lecture's, with a span
/// head; then the lecture's own three questions about precipitation.
pub fn chapter() -> CliResult<()> {
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
    let steps = 400;
    let mut trainer = Trainer::new(&store, Adam::new(store.params(), AdamConfig::adamw(2e-3))?)
        .steps(steps)
        .schedule(Schedule::Cosine { total: steps, min_lr: 1e-4 })
        .progress(Progress::Quiet)
        .after_step(super::print_loss(100, ""));
    trainer.fit(&mut Sampled::new(43), |mut rng: Rng, _: &mut Metrics| {
        let rows: Vec<Encoded> = (0..24)
            .map(|_| {
                let e = &train[rng.below(train.len())];
                Encoded { ids: e.ids.clone(), context_start: e.context_start, answer: e.answer }
            })
            .collect();
        let [ids, types, mask, context, starts, ends] = batch(&rows)?;
        model.loss(&ids, &types, &mask, &context, &starts, &ends)
    })?;
    let _g = no_grad();
    let answer = |rows: &[Encoded]| -> ferrograd::Result<Vec<Option<(usize, usize)>>> {
        let [ids, types, mask, context, _, _] = batch(rows)?;
        let (s, e) = model.scores(&ids, &types, &mask, &context)?;
        Ok(QuestionAnswering::best_spans(&s, &e, 8)?
            .into_iter()
            .map(|o| o.map(|sp| (sp.start, sp.end)))
            .collect())
    };
    let lecture: Vec<Encoded> = PRECIPITATION_QUESTIONS
        .iter()
        .map(|(question, truth)| encode(question, PRECIPITATION, truth))
        .collect();
    // Every held-out answer, then the lecture's.
    let all_answers = || -> ferrograd::Result<Vec<Option<(usize, usize)>>> {
        let mut spans = Vec::new();
        for chunk in held.chunks(64) {
            spans.extend(answer(chunk)?);
        }
        for row in &lecture {
            spans.extend(answer(std::slice::from_ref(row))?);
        }
        Ok(spans)
    };
    let spans = all_answers()?;
    let right = spans.iter().zip(&held).filter(|(got, want)| **got == want.answer).count();
    println!("     held out: exact match {:.1}%", 100.0 * right as f64 / held.len() as f64);
    println!("   the lecture's paragraph: {PRECIPITATION:?}");
    for ((question, _), (row, span)) in
        PRECIPITATION_QUESTIONS.iter().zip(lecture.iter().zip(&spans[held.len()..]))
    {
        let text = span.map(|(s, e)| tok.decode(&row.ids[s..=e])).transpose()?.unwrap_or_default();
        let mark = if *span == row.answer { "right" } else { "wrong" };
        println!("     {question:<90} → {text:?} ({mark})");
    }
    // The same model with bf16 products (inference only): the answers should not move.
    store.set_precision(Precision::Bf16)?;
    let bf16 = all_answers()?;
    store.set_precision(Precision::F32)?;
    let same = bf16.iter().zip(&spans).filter(|(a, b)| a == b).count();
    let right_bf16 = bf16.iter().zip(&held).filter(|(got, want)| **got == want.answer).count();
    let lecture_same = bf16[held.len()..] == spans[held.len()..];
    println!(
        "   with bf16 products: held out exact match {:.1}%, {same} of {} answers as in f32; the lecture's {}",
        100.0 * right_bf16 as f64 / held.len() as f64,
        spans.len(),
        if lecture_same { "unchanged" } else { "changed" },
    );
    Ok(())
}
