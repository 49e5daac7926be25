//! Chapter 6: sequence to sequence — English arithmetic parsed into code.

use crate::CliResult;
use ferrograd::Rng;
use ferrograd_nn::{Module, ParamStore, Progress};

/// Chapter 6: the lecture's "sentence to code" — a small encoder–decoder Transformer learns to
/// turn English arithmetic into code, and beam search writes its parses of held-out sentences.
pub fn chapter() -> CliResult<()> {
    use crate::seq2seq::Training;
    use ferrograd_data::corpora::arithmetic_task;
    use ferrograd_data::{TokenKind, Tokenizer};
    use ferrograd_nn::evaluate;
    use ferrograd_nn::{Seq2SeqConfig, Seq2SeqKind, SequenceToSequence};

    let pairs = arithmetic_task(6500, &mut Rng::seed(30));
    let (held_text, train_text) = pairs.split_at(500);
    let source = Tokenizer::build(TokenKind::Word, train_text.iter().map(|(s, _)| s.as_str()), 0)?;
    let target = Tokenizer::build(TokenKind::Char, train_text.iter().map(|(_, t)| t.as_str()), 0)?;
    let task = crate::seq2seq::Seq2SeqTask {
        task: "seq2seq".into(),
        model: Seq2SeqConfig {
            kind: Seq2SeqKind::Transformer,
            source_vocab: source.vocab_size(),
            target_vocab: target.vocab_size(),
            shared_vocab: false,
            dim: 64,
            heads: 4,
            ff: 256,
            encoder_layers: 2,
            decoder_layers: 2,
            max_positions: 24,
            pad: target.pad_id(),
            bos: target.bos_id(),
            eos: target.eos_id(),
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
    let mut trainer = training
        .trainer(&store)?
        .progress(Progress::Quiet)
        .after_step(super::print_loss(100, " nats/token"));
    trainer.fit(&mut training.data(), training.loss(&model, &train))?;
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
