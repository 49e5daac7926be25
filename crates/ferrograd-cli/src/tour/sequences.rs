//! Chapter 3: sequences — an LSTM text classifier and a character LSTM language model.

use super::train_lm;
use crate::CliResult;
use ferrograd::{no_grad, Rng, Tensor};
use ferrograd_nn::losses::accuracy;
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::trainer::{Epochs, Metrics};
use ferrograd_nn::{formula, ParamStore, Progress, Trainer};

/// Chapter 3: an LSTM text classifier on generated sentences where word order matters, then a
/// character LSTM language model on a built-in text, generating as it goes.
pub fn chapter() -> CliResult<()> {
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
    let adam = Adam::new(store.params(), AdamConfig::adam(5e-3))?;
    let mut trainer = Trainer::new(&store, adam).epochs(4).progress(Progress::Quiet);
    let mut data = Epochs::shuffled(train.len(), 32, 22);
    trainer.fit(&mut data, |rows: Vec<usize>, _: &mut Metrics| -> CliResult<Tensor> {
        let rows: Vec<(String, String)> = rows.iter().map(|&i| train[i].clone()).collect();
        let (ids, mask, y) = encode(&rows)?;
        Ok(clf.scores(&ids, &mask)?.cross_entropy(&y, None)?)
    })?;
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
    train_lm(&store, &lm, &batches, Adam::new(store.params(), AdamConfig::adam(1e-2))?, 23, 400)?;
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
