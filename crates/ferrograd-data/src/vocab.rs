//! A vocabulary: token strings ↔ i64 ids; `<pad>` = 0, `<unk>` = 1, optionally `<bos>`, `<eos>`.

use ferrograd::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The padding token, id 0.
pub const PAD: &str = "<pad>";
/// The token of everything the vocabulary does not hold, id 1.
pub const UNK: &str = "<unk>";
/// The begin-of-sequence token, id 2 when the vocabulary has it.
pub const BOS: &str = "<bos>";
/// The end-of-sequence token, id 3 when the vocabulary has it.
pub const EOS: &str = "<eos>";

/// Token strings ↔ ids. Ids 0 and 1 are `<pad>` and `<unk>`; with [`Vocab::build_with_bos_eos`]
/// ids 2 and 3 are `<bos>` and `<eos>`; the corpus's tokens follow, most frequent first. It
/// serializes (serde, or [`Vocab::to_json`]) as its tokens in id order, so that it can be saved
/// in a checkpoint's metadata.
///
/// ```
/// use ferrograd_data::Vocab;
/// let vocab = Vocab::build("b a b c b a".split(' '), 1, None).unwrap();
/// assert_eq!(vocab.tokens(), ["<pad>", "<unk>", "b", "a", "c"]); // by count, then a–z
/// assert_eq!((vocab.id("a"), vocab.id("zebra")), (3, vocab.unk_id()));
/// assert_eq!(vocab.token(4).unwrap(), "c");
/// assert_eq!(Vocab::from_json(&vocab.to_json()).unwrap(), vocab);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct Vocab {
    tokens: Vec<String>,
    ids: HashMap<String, i64>,
}

/// What a vocabulary serializes as: `{"tokens": ["<pad>", "<unk>", ...]}`.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    tokens: Vec<String>,
}

impl Vocab {
    /// The tokens seen at least `min_count` times, most frequent first, ties in byte order of
    /// the strings (deterministic), after `<pad>` and `<unk>`; at most `max_size` tokens in all,
    /// specials included. Tokens equal to a special's name are counted as that special.
    pub fn build<I, S>(tokens: I, min_count: usize, max_size: Option<usize>) -> Result<Vocab>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Vocab::build_after(&[PAD, UNK], tokens, min_count, max_size)
    }

    /// As [`Vocab::build`], with `<bos>` = 2 and `<eos>` = 3 before the corpus's tokens.
    ///
    /// ```
    /// use ferrograd_data::Vocab;
    /// let vocab = Vocab::build_with_bos_eos(["hi", "hi", "yo"], 1, Some(5)).unwrap();
    /// assert_eq!(vocab.tokens(), ["<pad>", "<unk>", "<bos>", "<eos>", "hi"]); // capped at 5
    /// assert_eq!((vocab.bos_id(), vocab.eos_id()), (Some(2), Some(3)));
    /// ```
    pub fn build_with_bos_eos<I, S>(
        tokens: I,
        min_count: usize,
        max_size: Option<usize>,
    ) -> Result<Vocab>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Vocab::build_after(&[PAD, UNK, BOS, EOS], tokens, min_count, max_size)
    }

    fn build_after<I, S>(
        specials: &[&str],
        tokens: I,
        min_count: usize,
        max_size: Option<usize>,
    ) -> Result<Vocab>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let max_size = max_size.unwrap_or(usize::MAX);
        if max_size < specials.len() {
            return Err(Error::value(
                "Vocab::build",
                format!(
                    "max_size {max_size} cannot hold the {} special tokens {specials:?}",
                    specials.len()
                ),
            ));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for token in tokens {
            let token = token.as_ref();
            if !is_special(token) {
                match counts.get_mut(token) {
                    Some(count) => *count += 1,
                    None => _ = counts.insert(token.to_string(), 1),
                }
            }
        }
        let mut counted: Vec<(String, usize)> =
            counts.into_iter().filter(|&(_, c)| c >= min_count).collect();
        counted.sort_by(|(a, ca), (b, cb)| cb.cmp(ca).then_with(|| a.cmp(b)));
        let corpus = counted.into_iter().map(|(t, _)| t).take(max_size - specials.len());
        Vocab::from_tokens(specials.iter().map(|s| s.to_string()).chain(corpus).collect())
    }

    /// A vocabulary of `tokens` in id order, as [`Vocab::tokens`] gives them: `<pad>`, `<unk>`,
    /// optionally `<bos>`, `<eos>`, then distinct tokens that are no special's name.
    ///
    /// ```
    /// let tokens = ["<pad>", "<unk>", "x"].map(String::from).to_vec();
    /// assert_eq!(ferrograd_data::Vocab::from_tokens(tokens).unwrap().id("x"), 2);
    /// assert!(ferrograd_data::Vocab::from_tokens(vec!["x".into()]).is_err());
    /// ```
    pub fn from_tokens(tokens: Vec<String>) -> Result<Vocab> {
        let fail = |m: String| Err(Error::value("Vocab", m));
        if tokens.len() < 2 || tokens[0] != PAD || tokens[1] != UNK {
            return fail(format!(
                "the tokens must begin with {PAD:?}, {UNK:?}; got {:?}",
                &tokens[..tokens.len().min(2)]
            ));
        }
        let bos_eos = tokens.get(2).is_some_and(|t| t == BOS);
        if bos_eos && tokens.get(3).is_none_or(|t| t != EOS) {
            return fail(format!("{BOS:?} at id 2 must be followed by {EOS:?} at id 3"));
        }
        let specials = if bos_eos { 4 } else { 2 };
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            if id >= specials && is_special(token) {
                return fail(format!("special token {token:?} at id {id}, out of its place"));
            }
            if ids.insert(token.clone(), id as i64).is_some() {
                return fail(format!("token {token:?} appears twice (again at id {id})"));
            }
        }
        Ok(Vocab { tokens, ids })
    }

    /// The id of `token`, or [`Vocab::unk_id`] when the vocabulary does not hold it.
    pub fn id(&self, token: &str) -> i64 {
        self.ids.get(token).copied().unwrap_or(1)
    }

    /// Whether the vocabulary holds `token`.
    pub fn contains(&self, token: &str) -> bool {
        self.ids.contains_key(token)
    }

    /// The token of `id`; an id outside `0..len()` is an error.
    pub fn token(&self, id: i64) -> Result<&str> {
        usize::try_from(id).ok().and_then(|i| self.tokens.get(i)).map(String::as_str).ok_or_else(
            || {
                Error::index(
                    "Vocab::token",
                    format!("id {id} is out of range for a vocabulary of {} tokens", self.len()),
                )
            },
        )
    }

    /// Every token, in id order (specials first).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The number of tokens, specials included: the row count of an embedding table.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: a vocabulary holds at least `<pad>` and `<unk>`.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `<pad>`: 0.
    pub fn pad_id(&self) -> i64 {
        0
    }

    /// The id of `<unk>`: 1.
    pub fn unk_id(&self) -> i64 {
        1
    }

    /// The id of `<bos>` (2), when the vocabulary has it.
    pub fn bos_id(&self) -> Option<i64> {
        self.ids.get(BOS).copied()
    }

    /// The id of `<eos>` (3), when the vocabulary has it.
    pub fn eos_id(&self) -> Option<i64> {
        self.ids.get(EOS).copied()
    }

    /// Whether `id` is one of the special tokens (`<pad>`, `<unk>`, `<bos>`, `<eos>`).
    pub fn is_special_id(&self, id: i64) -> bool {
        self.token(id).is_ok_and(is_special)
    }

    /// The vocabulary as JSON, `{"tokens":["<pad>","<unk>",...]}`, e.g. for checkpoint metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a list of strings always serializes")
    }

    /// A vocabulary from [`Vocab::to_json`]'s text.
    pub fn from_json(json: &str) -> Result<Vocab> {
        serde_json::from_str(json)
            .map_err(|e| Error::value("Vocab::from_json", format!("not a saved vocabulary: {e}")))
    }
}

fn is_special(token: &str) -> bool {
    [PAD, UNK, BOS, EOS].contains(&token)
}

impl TryFrom<VocabFile> for Vocab {
    type Error = Error;
    fn try_from(file: VocabFile) -> Result<Vocab> {
        Vocab::from_tokens(file.tokens)
    }
}

impl From<Vocab> for VocabFile {
    fn from(vocab: Vocab) -> VocabFile {
        VocabFile { tokens: vocab.tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_count_then_alphabetically_and_applies_min_count_and_max_size() {
        let words = "the cat and the dog and the bird saw a cat".split(' ');
        let vocab = Vocab::build(words.clone(), 1, None).unwrap();
        assert_eq!(
            vocab.tokens(),
            ["<pad>", "<unk>", "the", "and", "cat", "a", "bird", "dog", "saw"]
        );
        let frequent = Vocab::build(words.clone(), 2, None).unwrap();
        assert_eq!(frequent.tokens(), ["<pad>", "<unk>", "the", "and", "cat"]);
        assert_eq!(frequent.id("dog"), frequent.unk_id());
        let capped = Vocab::build(words.clone(), 0, Some(4)).unwrap();
        assert_eq!(capped.tokens(), ["<pad>", "<unk>", "the", "and"]);
        assert_eq!(Vocab::build(words.clone(), 1, Some(2)).unwrap().len(), 2);
        let e = Vocab::build_with_bos_eos(words, 1, Some(3)).unwrap_err();
        assert!(e.to_string().contains("max_size 3 cannot hold the 4 special tokens"), "{e}");
        assert_eq!(Vocab::build(Vec::<String>::new(), 1, None).unwrap().len(), 2);
    }

    #[test]
    fn ids_and_tokens_round_trip_and_unknowns_map_to_unk() {
        let vocab = Vocab::build_with_bos_eos(["x", "y", "<eos>", "<pad>"], 1, None).unwrap();
        assert_eq!(vocab.tokens(), ["<pad>", "<unk>", "<bos>", "<eos>", "x", "y"]);
        for id in 0..vocab.len() as i64 {
            assert_eq!(vocab.id(vocab.token(id).unwrap()), id);
        }
        assert_eq!((vocab.pad_id(), vocab.unk_id(), vocab.id("never seen")), (0, 1, 1));
        assert!(vocab.is_special_id(3) && !vocab.is_special_id(4) && !vocab.is_special_id(99));
        assert_eq!(Vocab::build(["x"], 1, None).unwrap().bos_id(), None);
        let e = vocab.token(6).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Vocab::token: id 6 is out of range for a vocabulary of 6 tokens"
        );
        assert!(vocab.token(-1).is_err());
    }

    #[test]
    fn json_round_trips_and_bad_json_is_refused() {
        let vocab = Vocab::build_with_bos_eos("é a \" b".split(' '), 1, None).unwrap();
        let json = vocab.to_json();
        assert_eq!(json, r#"{"tokens":["<pad>","<unk>","<bos>","<eos>","\"","a","b","é"]}"#);
        assert_eq!(Vocab::from_json(&json).unwrap(), vocab);
        for (bad, says) in [
            ("{", "not a saved vocabulary"),
            (r#"{"tokens":["<unk>","<pad>"]}"#, "must begin with"),
            (r#"{"tokens":["<pad>","<unk>","a","a"]}"#, "\"a\" appears twice (again at id 3)"),
            (r#"{"tokens":["<pad>","<unk>","<bos>","a"]}"#, "must be followed by"),
            (r#"{"tokens":["<pad>","<unk>","a","<eos>"]}"#, "out of its place"),
        ] {
            let e = Vocab::from_json(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
