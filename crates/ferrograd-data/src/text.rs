//! Text to ids and back: char and word tokenizers, labeled-text files, padded batches, LM windows.
//!
//! Dimension names: B = batch, T = time (tokens per sequence).

use crate::vocab::Vocab;
use ferrograd::{Error, Result, Rng, Tensor};
use std::path::Path;

/// Each Unicode char a token: for character language models.
///
/// ```
/// use ferrograd_data::text::CharTokenizer;
/// let tok = CharTokenizer::from_text("hello");
/// assert_eq!(tok.vocab().tokens(), ["<pad>", "<unk>", "l", "e", "h", "o"]);
/// let ids = tok.encode("hole!"); // '!' is not in the corpus: <unk>
/// assert_eq!(ids, vec![4, 5, 2, 3, 1]);
/// assert_eq!(tok.decode(&ids).unwrap(), "hole<unk>");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharTokenizer {
    vocab: Vocab,
}

impl CharTokenizer {
    /// A tokenizer over `vocab`, e.g. one loaded from a checkpoint with [`Vocab::from_json`].
    pub fn new(vocab: Vocab) -> CharTokenizer {
        CharTokenizer { vocab }
    }

    /// A tokenizer whose vocabulary is exactly the chars of `text` (most frequent first) after
    /// `<pad>` and `<unk>`: Tiny Shakespeare's 65 chars give 67 tokens.
    pub fn from_text(text: &str) -> CharTokenizer {
        let mut buf = [0u8; 4];
        let chars = text.chars().map(|c| c.encode_utf8(&mut buf).to_string());
        CharTokenizer::new(Vocab::build(chars, 1, None).expect("no size limit"))
    }

    /// The vocabulary: its `len()` is the embedding table's row count.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The id of each char of `text`; chars the vocabulary does not hold become `<unk>`.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut buf = [0u8; 4];
        text.chars().map(|c| self.vocab.id(c.encode_utf8(&mut buf))).collect()
    }

    /// The chars of `ids`, concatenated; `<pad>`, `<bos>` and `<eos>` are left out, `<unk>` is
    /// written `<unk>`; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let mut text = String::with_capacity(ids.len());
        for token in visible_tokens(&self.vocab, ids) {
            text.push_str(token?);
        }
        Ok(text)
    }
}

/// Lowercase words, and each punctuation char a token of its own: for classification and word
/// language models. A word is a run of letters and digits; an apostrophe between two of them
/// belongs to the word (`don't`).
///
/// ```
/// use ferrograd_data::text::WordTokenizer;
/// let tokens = WordTokenizer::split("Don't stop, (Bob)!");
/// assert_eq!(tokens, ["don't", "stop", ",", "(", "bob", ")", "!"]);
/// let tok = WordTokenizer::from_texts(["The cat sat.", "The dog sat!"], 1, None).unwrap();
/// let ids = tok.encode("the cow sat.");
/// assert_eq!(ids[1], tok.vocab().unk_id());
/// assert_eq!(tok.decode(&ids).unwrap(), "the <unk> sat.");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordTokenizer {
    vocab: Vocab,
}

impl WordTokenizer {
    /// A tokenizer over `vocab`, e.g. one loaded from a checkpoint with [`Vocab::from_json`].
    pub fn new(vocab: Vocab) -> WordTokenizer {
        WordTokenizer { vocab }
    }

    /// A tokenizer whose vocabulary holds the tokens of `texts` seen at least `min_count` times,
    /// at most `max_size` in all (as [`Vocab::build`]).
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        min_count: usize,
        max_size: Option<usize>,
    ) -> Result<WordTokenizer> {
        let tokens = texts.into_iter().flat_map(WordTokenizer::split);
        Ok(WordTokenizer::new(Vocab::build(tokens, min_count, max_size)?))
    }

    /// The vocabulary: its `len()` is the embedding table's row count.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The tokens of `text`, lowercased, without looking them up.
    pub fn split(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.to_lowercase().chars().collect();
        let mut tokens = Vec::new();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let inner_apostrophe = c == '\''
                && !word.is_empty()
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
            if c.is_alphanumeric() || inner_apostrophe {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
        if !word.is_empty() {
            tokens.push(word);
        }
        tokens
    }

    /// The id of each token of `text`; tokens the vocabulary does not hold become `<unk>`.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        WordTokenizer::split(text).iter().map(|t| self.vocab.id(t)).collect()
    }

    /// The tokens of `ids` joined by spaces, with none before punctuation or after an opening
    /// bracket; `<pad>`, `<bos>` and `<eos>` are left out, `<unk>` is written `<unk>`; an id
    /// outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let mut text = String::new();
        let mut after_opening = true; // no space at the start either
        for token in visible_tokens(&self.vocab, ids) {
            let token = token?;
            let mut chars = token.chars();
            let opening = matches!(token, "(" | "[" | "{");
            let attached = match (chars.next(), chars.next()) {
                (Some(c), None) => !c.is_alphanumeric() && !opening, // punctuation
                _ => false,
            };
            if !after_opening && !attached {
                text.push(' ');
            }
            text.push_str(token);
            after_opening = opening;
        }
        Ok(text)
    }
}

/// The tokens of `ids` other than `<pad>`, `<bos>` and `<eos>`.
fn visible_tokens<'a>(vocab: &'a Vocab, ids: &'a [i64]) -> impl Iterator<Item = Result<&'a str>> {
    let hidden = [Some(vocab.pad_id()), vocab.bos_id(), vocab.eos_id()];
    ids.iter().filter(move |&&id| !hidden.contains(&Some(id))).map(|&id| vocab.token(id))
}

/// The (label, text) pairs of a file of `label<TAB>text` lines, in order; see [`parse_labeled`].
///
/// ```
/// # let path = std::env::temp_dir().join(format!("ferrograd-doc-labeled-{}", std::process::id()));
/// std::fs::write(&path, "positive\tA fine day.\nnegative\tA dull, grey day.\n").unwrap();
/// let examples = ferrograd_data::text::read_labeled(&path).unwrap();
/// assert_eq!(examples[1], ("negative".to_string(), "A dull, grey day.".to_string()));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_labeled(path: &Path) -> Result<Vec<(String, String)>> {
    let content = ferrograd::io::read_text(path, "read_labeled")?;
    parse_labeled(&content, &path.display().to_string())
}

/// The (label, text) pairs of `label<TAB>text` lines (`\n` or `\r\n`); the text is everything
/// after the first tab. An empty line, a line without a tab, an empty label or a blank text is an
/// error naming `source_name` and the 1-based line number.
///
/// ```
/// use ferrograd_data::text::parse_labeled;
/// let pairs = parse_labeled("pos\tgood\nneg\tbad", "reviews").unwrap();
/// assert_eq!(pairs[0], ("pos".to_string(), "good".to_string()));
/// let e = parse_labeled("pos\tgood\nneg bad\n", "reviews").unwrap_err();
/// let says = "labeled text: reviews:2: no tab between label and text in \"neg bad\"";
/// assert_eq!(e.to_string(), says);
/// ```
pub fn parse_labeled(content: &str, source_name: &str) -> Result<Vec<(String, String)>> {
    parse_tab_pairs(content, source_name, "labeled text", ["label", "text"])
}

/// The (source, target) pairs of a file of `source<TAB>target` lines, for sequence-to-sequence
/// tasks; errors as [`parse_labeled`]'s, with the line number.
///
/// ```
/// use ferrograd_data::text::parse_pairs;
/// let pairs = parse_pairs("one plus two\t1+2\n", "sums").unwrap();
/// assert_eq!(pairs[0], ("one plus two".to_string(), "1+2".to_string()));
/// let e = parse_pairs("one plus two\t1+2\n\nthree\t3", "sums").unwrap_err();
/// assert_eq!(e.to_string(), "source-target pairs: sums:2: empty line");
/// ```
pub fn parse_pairs(content: &str, source_name: &str) -> Result<Vec<(String, String)>> {
    parse_tab_pairs(content, source_name, "source-target pairs", ["source", "target"])
}

/// [`parse_pairs`] of a file.
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let content = ferrograd::io::read_text(path, "read_pairs")?;
    parse_pairs(&content, &path.display().to_string())
}

/// `first<TAB>second` lines; `names` says what the two are, for the errors.
fn parse_tab_pairs(
    content: &str,
    source_name: &str,
    what: &str,
    [first, second]: [&str; 2],
) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let fail = |m: String| Error::value(what, format!("{source_name}:{}: {m}", i + 1));
        let shown: String = line.chars().take(60).collect();
        let (a, b) = match line.split_once('\t') {
            _ if line.trim().is_empty() => return Err(fail("empty line".into())),
            None => return Err(fail(format!("no tab between {first} and {second} in {shown:?}"))),
            Some(pair) => pair,
        };
        if a.trim().is_empty() {
            return Err(fail(format!("empty {first} in {shown:?}")));
        }
        if b.trim().is_empty() {
            return Err(fail(format!("empty {second} after {first} {a:?}")));
        }
        pairs.push((a.to_string(), b.to_string()));
    }
    Ok(pairs)
}

/// A sequence-to-sequence batch from (source ids, target ids) pairs: (B, S) sources, (B, T)
/// target inputs `<bos> y…` and (B, T) target outputs `y… <eos>`, each padded with `pad_id`.
///
/// ```
/// let (s, t_in, t_out) = ferrograd_data::text::seq2seq_batch(&[(vec![7, 8], vec![5])], 0, 2, 3).unwrap();
/// assert_eq!(s.to_vec::<i64>().unwrap(), vec![7, 8]);
/// assert_eq!(t_in.to_vec::<i64>().unwrap(), vec![2, 5]);
/// assert_eq!(t_out.to_vec::<i64>().unwrap(), vec![5, 3]);
/// ```
pub fn seq2seq_batch(
    pairs: &[(Vec<i64>, Vec<i64>)],
    pad_id: i64,
    bos_id: i64,
    eos_id: i64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let sources: Vec<Vec<i64>> = pairs.iter().map(|(s, _)| s.clone()).collect();
    let inputs: Vec<Vec<i64>> = pairs
        .iter()
        .map(|(_, t)| std::iter::once(bos_id).chain(t.iter().copied()).collect())
        .collect();
    let outputs: Vec<Vec<i64>> = pairs
        .iter()
        .map(|(_, t)| t.iter().copied().chain(std::iter::once(eos_id)).collect())
        .collect();
    Ok((
        pad_batch(&sources, pad_id, None)?.0,
        pad_batch(&inputs, pad_id, None)?.0,
        pad_batch(&outputs, pad_id, None)?.0,
    ))
}

/// Sequences of ids as a (B, T) i64 tensor padded on the right with `pad_id`, and a (B, T) i64
/// mask, 1 on real tokens and 0 on padding. T is the longest sequence's length, at most
/// `max_len`: longer sequences keep their first `max_len` ids. No sequences, an empty one or
/// `max_len` 0 is an error.
///
/// ```
/// let (ids, mask) = ferrograd_data::text::pad_batch(&[vec![5, 6, 7], vec![8]], 0, None).unwrap();
/// assert_eq!(ids.dims(), &[2, 3]); // (B, T)
/// assert_eq!(ids.to_vec::<i64>().unwrap(), vec![5, 6, 7, 8, 0, 0]);
/// assert_eq!(mask.to_vec::<i64>().unwrap(), vec![1, 1, 1, 1, 0, 0]);
/// ```
pub fn pad_batch(
    seqs: &[Vec<i64>],
    pad_id: i64,
    max_len: Option<usize>,
) -> Result<(Tensor, Tensor)> {
    if seqs.is_empty() {
        return Err(Error::value("pad_batch", "no sequences to pad; expected at least one"));
    }
    if let Some(i) = seqs.iter().position(Vec::is_empty) {
        return Err(Error::value(
            "pad_batch",
            format!("sequence {i} of {} is empty; each needs at least one id", seqs.len()),
        ));
    }
    if max_len == Some(0) {
        return Err(Error::value("pad_batch", "max_len must be at least 1, got 0"));
    }
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let t = longest.min(max_len.unwrap_or(usize::MAX));
    let (mut ids, mut mask) = (vec![pad_id; seqs.len() * t], vec![0i64; seqs.len() * t]);
    for (b, seq) in seqs.iter().enumerate() {
        let n = seq.len().min(t);
        ids[b * t..b * t + n].copy_from_slice(&seq[..n]);
        mask[b * t..b * t + n].fill(1);
    }
    let dims = [seqs.len(), t]; // (B, T)
    Ok((Tensor::from_vec(ids, &dims)?, Tensor::from_vec(mask, &dims)?))
}

/// Random windows of one long sequence of token ids for a language model: each sample is
/// (B, T) inputs and (B, T) targets, the same windows shifted one token on, so that
/// `targets[b, t]` is the token after `inputs[b, t]`.
///
/// ```
/// use ferrograd::Rng;
/// use ferrograd_data::text::LmBatches;
/// let ids: Vec<i64> = (0..100).collect();
/// let (train, held_out) = LmBatches::split(&ids, 0.1).unwrap(); // the last 10 held out
/// assert_eq!((train.len(), held_out[0]), (90, 90));
/// let batches = LmBatches::new(train, 4, 8).unwrap(); // B = 4, T = 8
/// let (x, y) = batches.sample(&mut Rng::seed(0)).unwrap(); // (B, T), (B, T)
/// let (x, y) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
/// assert!(x.iter().zip(&y).all(|(a, b)| b - a == 1)); // here each id is its position
/// ```
#[derive(Clone, Debug)]
pub struct LmBatches {
    ids: Vec<i64>,
    batch_size: usize,
    context: usize,
}

impl LmBatches {
    /// Windows of `context` (T) tokens from `ids`, `batch_size` (B) of them a sample; `ids`
    /// needs at least T + 1 tokens, so that every input has its target.
    pub fn new(ids: Vec<i64>, batch_size: usize, context: usize) -> Result<LmBatches> {
        if batch_size == 0 || context == 0 {
            return Err(Error::value(
                "LmBatches",
                format!(
                    "batch size and context must be at least 1, got {batch_size} and {context}"
                ),
            ));
        }
        if ids.len() < context + 1 {
            return Err(Error::value(
                "LmBatches",
                format!(
                    "a corpus of {} tokens is too short for a context of {context}: \
                     it needs at least {} (context + 1)",
                    ids.len(),
                    context + 1
                ),
            ));
        }
        Ok(LmBatches { ids, batch_size, context })
    }

    /// The first `1 - held_out_fraction` of `ids` and the rest (the last part of the corpus,
    /// so that held-out text is not seen in training): the held-out part has
    /// `round(len × held_out_fraction)` tokens; the fraction must be in [0, 1).
    pub fn split(ids: &[i64], held_out_fraction: f64) -> Result<(Vec<i64>, Vec<i64>)> {
        if !(0.0..1.0).contains(&held_out_fraction) {
            return Err(Error::value(
                "LmBatches::split",
                format!("the held-out fraction must be in [0, 1), got {held_out_fraction}"),
            ));
        }
        let held_out = (ids.len() as f64 * held_out_fraction).round() as usize;
        let (train, rest) = ids.split_at(ids.len() - held_out.min(ids.len()));
        Ok((train.to_vec(), rest.to_vec()))
    }

    /// B windows at random starts (same `rng` state, same windows): inputs (B, T) i64 and
    /// targets (B, T) i64, the inputs shifted one token on.
    pub fn sample(&self, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let mut rows = Rows::default();
        for _ in 0..self.batch_size {
            self.window(rng, &mut rows);
        }
        rows.tensors(self.context)
    }

    /// One window for each generator (a batch of as many rows), each drawn with its own: the
    /// rows of a data-parallel rank's share of a batch.
    pub fn windows(&self, generators: impl IntoIterator<Item = Rng>) -> Result<(Tensor, Tensor)> {
        let mut rows = Rows::default();
        for mut rng in generators {
            self.window(&mut rng, &mut rows);
        }
        rows.tensors(self.context)
    }

    fn window(&self, rng: &mut Rng, rows: &mut Rows) {
        let t = self.context;
        let start = rng.below(self.ids.len() - t); // start + t is the last target
        rows.inputs.extend_from_slice(&self.ids[start..start + t]);
        rows.targets.extend_from_slice(&self.ids[start + 1..start + t + 1]);
    }

    /// The corpus's token ids.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// B: windows per sample.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// T: tokens per window.
    pub fn context(&self) -> usize {
        self.context
    }
}

/// Windows gathered row by row: inputs and the same shifted one token on.
#[derive(Default)]
struct Rows {
    inputs: Vec<i64>,
    targets: Vec<i64>,
}

impl Rows {
    /// (B, T) inputs and targets.
    fn tensors(self, t: usize) -> Result<(Tensor, Tensor)> {
        let b = self.inputs.len() / t;
        Ok((Tensor::from_vec(self.inputs, &[b, t])?, Tensor::from_vec(self.targets, &[b, t])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrograd::ErrorKind;

    #[test]
    fn chars_round_trip_and_unknown_chars_become_unk() {
        let text = "Über naïve café — 12 €!\n\ttab";
        let tok = CharTokenizer::from_text(text);
        assert_eq!(
            tok.vocab().len(),
            2 + text.chars().collect::<std::collections::HashSet<_>>().len()
        );
        let ids = tok.encode(text);
        assert_eq!(ids.len(), text.chars().count());
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.encode("Üx"), vec![tok.vocab().id("Ü"), 1]);
        let mut padded = ids.clone();
        padded.extend([0, 0]);
        assert_eq!(tok.decode(&padded).unwrap(), text);
        let e = tok.decode(&[2, 999]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Index);
        assert!(e.to_string().contains("id 999 is out of range"), "{e}");
        let again = CharTokenizer::new(Vocab::from_json(&tok.vocab().to_json()).unwrap());
        assert_eq!(again, tok);
    }

    #[test]
    fn words_split_on_whitespace_and_punctuation_and_decode_without_space_before_it() {
        assert_eq!(
            WordTokenizer::split("  It's NOT bad...  'quoted' (yes)\tok?"),
            ["it's", "not", "bad", ".", ".", ".", "'", "quoted", "'", "(", "yes", ")", "ok", "?"]
        );
        assert_eq!(
            WordTokenizer::split("l'été 3.5 x--y"),
            ["l'été", "3", ".", "5", "x", "-", "-", "y"]
        );
        assert!(WordTokenizer::split(" \n ").is_empty());
        let text = "the film was not good, but the music (mostly) was fine!";
        let tok = WordTokenizer::from_texts([text], 1, None).unwrap();
        assert_eq!(tok.decode(&tok.encode(text)).unwrap(), text);
        assert_eq!(tok.decode(&tok.encode("The FILM was great!")).unwrap(), "the film was <unk>!");
        let capped = WordTokenizer::from_texts([text, "the the was"], 2, None).unwrap();
        assert_eq!(capped.vocab().tokens(), ["<pad>", "<unk>", "the", "was"]);
    }

    #[test]
    fn decode_leaves_out_bos_eos_and_pad() {
        let vocab = Vocab::build_with_bos_eos(["hi", "!"], 1, None).unwrap();
        let tok = WordTokenizer::new(vocab.clone());
        let ids = [2, vocab.id("hi"), vocab.id("!"), 3, 0, 0];
        assert_eq!(tok.decode(&ids).unwrap(), "hi!");
        assert_eq!(CharTokenizer::new(vocab).decode(&ids).unwrap(), "hi!");
    }

    #[test]
    fn labeled_lines_parse_and_errors_name_the_source_and_line() {
        let pairs = parse_labeled("a\tone two\r\nb\tthree\tfour\n", "mem").unwrap();
        assert_eq!(pairs, [("a".into(), "one two".into()), ("b".into(), "three\tfour".into())]);
        assert!(parse_labeled("", "mem").unwrap().is_empty());
        for (content, says) in [
            ("a\tx\n\nb\ty\n", "f.tsv:2: empty line"),
            ("a\tx\nb\ty\nc z\n", "f.tsv:3: no tab between label and text in \"c z\""),
            ("a\t  \n", "f.tsv:1: empty text after label \"a\""),
            ("a\tx\n\ty\n", "f.tsv:2: empty label"),
        ] {
            let e = parse_labeled(content, "f.tsv").unwrap_err();
            assert!(e.to_string().contains(says), "{content:?}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("ferrograd-text-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labeled.tsv");
        std::fs::write(&path, "pos\tgood\nneg\n").unwrap();
        let e = read_labeled(&path).unwrap_err();
        assert!(e.to_string().contains(&format!("{}:2: no tab", path.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = read_labeled(&dir.join("missing.tsv")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.to_string().contains("cannot read") && e.to_string().contains("missing.tsv"));
    }

    #[test]
    fn pad_batch_pads_right_masks_and_truncates() {
        let seqs = [vec![3, 4], vec![5, 6, 7, 8], vec![9]];
        let (ids, mask) = pad_batch(&seqs, -1, None).unwrap();
        assert_eq!((ids.dims(), mask.dims()), (&[3, 4][..], &[3, 4][..]));
        assert_eq!(ids.to_vec::<i64>().unwrap(), [3, 4, -1, -1, 5, 6, 7, 8, 9, -1, -1, -1]);
        assert_eq!(mask.to_vec::<i64>().unwrap(), [1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]);
        let (ids, mask) = pad_batch(&seqs, 0, Some(3)).unwrap();
        assert_eq!(ids.to_vec::<i64>().unwrap(), [3, 4, 0, 5, 6, 7, 9, 0, 0]);
        assert_eq!(mask.to_vec::<i64>().unwrap(), [1, 1, 0, 1, 1, 1, 1, 0, 0]);
        assert_eq!(pad_batch(&seqs, 0, Some(10)).unwrap().0.dims(), &[3, 4]);
        let e = pad_batch(&[], 0, None).unwrap_err();
        assert!(e.to_string().contains("no sequences"), "{e}");
        let e = pad_batch(&[vec![1], vec![]], 0, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pad_batch: sequence 1 of 2 is empty; each needs at least one id"
        );
        assert!(pad_batch(&seqs, 0, Some(0)).is_err());
    }

    #[test]
    fn lm_targets_are_inputs_shifted_by_one_and_same_seed_same_windows() {
        let ids: Vec<i64> = (0..50).map(|i| (i * 7) % 13).collect();
        let batches = LmBatches::new(ids.clone(), 6, 5).unwrap();
        let (x, y) = batches.sample(&mut Rng::seed(3)).unwrap();
        assert_eq!((x.dims(), y.dims()), (&[6, 5][..], &[6, 5][..]));
        let (x, y) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
        let (x2, _) = batches.sample(&mut Rng::seed(3)).unwrap();
        assert_eq!(x2.to_vec::<i64>().unwrap(), x);
        for b in 0..6 {
            let (xr, yr) = (&x[b * 5..b * 5 + 5], &y[b * 5..b * 5 + 5]);
            assert_eq!(xr[1..], yr[..4]);
            let start = ids.windows(5).position(|w| w == xr).unwrap();
            assert_eq!(yr[4], ids[start + 5]);
        }
        // every start, the last included, is reachable: a corpus of exactly T + 1 tokens
        let (x, y) =
            LmBatches::new(vec![1, 2, 3], 2, 2).unwrap().sample(&mut Rng::seed(0)).unwrap();
        assert_eq!(
            (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap()),
            (vec![1, 2, 1, 2], vec![2, 3, 2, 3])
        );
        let e = LmBatches::new(vec![1, 2, 3], 2, 3).unwrap_err();
        assert!(e.to_string().contains("3 tokens is too short for a context of 3"), "{e}");
        assert!(LmBatches::new(ids.clone(), 0, 3).is_err() && LmBatches::new(ids, 3, 0).is_err());
    }

    #[test]
    fn split_holds_out_the_end_deterministically() {
        let ids: Vec<i64> = (0..10).collect();
        assert_eq!(LmBatches::split(&ids, 0.2).unwrap(), ((0..8).collect(), vec![8, 9]));
        assert_eq!(LmBatches::split(&ids, 0.0).unwrap(), (ids.clone(), vec![]));
        assert_eq!(LmBatches::split(&[], 0.5).unwrap(), (vec![], vec![]));
        for bad in [1.0, -0.1, f64::NAN] {
            assert!(LmBatches::split(&ids, bad).is_err(), "{bad}");
        }
    }

    /// Tiny Shakespeare from ../shared (see its README): 65 distinct chars, so 67 tokens.
    #[test]
    fn tiny_shakespeare_has_65_chars() {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/text/tinyshakespeare.txt");
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} is not there");
            return;
        };
        assert_eq!(text.chars().count(), 1_115_394);
        let tok = CharTokenizer::from_text(&text);
        assert_eq!(tok.vocab().len(), 65 + 2);
        assert_eq!(tok.vocab().token(2).unwrap(), " "); // the most frequent char
        let ids = tok.encode(&text);
        assert!(ids.iter().all(|&id| id >= 2));
        assert_eq!(tok.decode(&ids[..200]).unwrap(), text.chars().take(200).collect::<String>());
    }
}
