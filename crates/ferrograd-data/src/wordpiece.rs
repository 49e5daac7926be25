//! BERT's WordPiece tokenizer, read from a Hugging Face `tokenizer.json`: texts and text pairs to
//! padded (B, T) id, token-type and mask tensors, with each token's byte span in its text.
//!
//! Dimension names: B = batch, T = tokens per sequence (the longest in the batch, ≤ `max_len`).

use crate::pretrained::{contained, read_tokenizer_json};
use ferrograd::{Error, Result, Tensor};
use std::path::Path;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

/// A BERT tokenizer (normalizer, WordPiece vocabulary, `[CLS] a [SEP] b [SEP]` template) as the
/// model's `tokenizer.json` describes it; it gives the ids Hugging Face's `BertTokenizerFast`
/// gives.
///
/// ```
/// use ferrograd_data::BertTokenizer;
/// use std::path::Path;
/// let path = Path::new("all-MiniLM-L6-v2/tokenizer.json");
/// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/all-MiniLM-L6-v2");
/// # let path = &Path::new(dir).join("tokenizer.json");
/// # if !path.is_file() { return; } // the model is not in this checkout
/// let tok = BertTokenizer::from_file(path).unwrap();
/// let batch = tok.encode_batch(&["Hello, world!", "Hi"], 128).unwrap();
/// assert_eq!(batch.ids.dims(), &[2, 6]); // [CLS] hello , world ! [SEP]; "Hi" is padded
/// assert_eq!(batch.ids.to_vec::<i64>().unwrap()[..6], [101, 7592, 1010, 2088, 999, 102]);
/// assert_eq!(batch.mask.to_vec::<i64>().unwrap()[6..], [1, 1, 1, 0, 0, 0]);
/// assert_eq!(&"Hello, world!"[batch.offsets[0][3].0..batch.offsets[0][3].1], "world");
/// assert_eq!(tok.decode(&[101, 7592, 1010, 2088, 999, 102]).unwrap(), "hello, world!");
/// ```
#[derive(Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    pad_id: i64,
}

/// A padded batch of token sequences; row b, column t of every field is the same token.
#[derive(Clone, Debug)]
pub struct BertBatch {
    /// Token ids, `[PAD]` after the end: (B, T) i64.
    pub ids: Tensor,
    /// 0 for `[CLS]`, the first text and its `[SEP]`; 1 for the second text of a pair and its
    /// `[SEP]`; 0 on padding: (B, T) i64.
    pub token_types: Tensor,
    /// 1 = a token, 0 = padding: (B, T) i64.
    pub mask: Tensor,
    /// The byte span `start..end` of each token in its own text (the first or the second of a
    /// pair), for answer spans: `&text[start..end]`. Special tokens and padding have `(0, 0)`.
    /// B rows of T spans.
    pub offsets: Vec<Vec<(usize, usize)>>,
}

impl BertBatch {
    /// 1 on the tokens of each pair's second text (the context of a question), 0 on the question,
    /// the special tokens and padding: where an answer may lie. (B, T) i64.
    pub fn context_mask(&self) -> Result<Tensor> {
        let types = self.token_types.as_slice::<i64>("BertBatch::context_mask")?;
        let t = self.ids.dims()[1];
        let mask: Vec<i64> = types
            .iter()
            .enumerate()
            .map(|(i, &ty)| i64::from(ty == 1 && self.offsets[i / t][i % t] != (0, 0)))
            .collect();
        Tensor::from_vec(mask, self.ids.dims())
    }

    /// The first and last context tokens of row `row` that overlap the bytes `start..end` of
    /// its context, or `None` when none do (the answer was cut off).
    pub fn token_span(
        &self,
        row: usize,
        start: usize,
        end: usize,
    ) -> Result<Option<(usize, usize)>> {
        let types = self.token_types.to_vec::<i64>()?;
        let t = self.ids.dims()[1];
        let inside: Vec<usize> = (0..t)
            .filter(|&i| {
                let (s, e) = self.offsets[row][i];
                types[row * t + i] == 1 && (s, e) != (0, 0) && s < end && e > start
            })
            .collect();
        Ok(inside.first().zip(inside.last()).map(|(&a, &b)| (a, b)))
    }
}

impl BertTokenizer {
    /// Reads a `tokenizer.json`; its own truncation and padding settings are ignored (each call
    /// says `max_len`; a batch pads to its longest sequence).
    pub fn from_file(path: &Path) -> Result<BertTokenizer> {
        const OP: &str = "BertTokenizer::from_file";
        let fail = |why: String| Error::io(OP, format!("{}: {why}", path.display()));
        let mut inner = read_tokenizer_json(path, OP)?;
        if inner.get_post_processor().is_none() {
            return Err(fail("no post_processor: cannot add [CLS] and [SEP]".into()));
        }
        let pad_id = match inner.get_padding() {
            Some(p) => p.pad_id,
            None => inner.token_to_id("[PAD]").unwrap_or(0),
        };
        inner.with_padding(None).with_truncation(None).map_err(|e| fail(e.to_string()))?;
        Ok(BertTokenizer { inner, pad_id: pad_id as i64 })
    }

    /// The number of ids, special tokens included (30522 for uncased BERT): the embedding
    /// table's row count.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `[CLS] text [SEP]` for each text, the text cut to `max_len - 2` tokens.
    pub fn encode_batch(&self, texts: &[&str], max_len: usize) -> Result<BertBatch> {
        let (pieces, budget) = self.pieces("encode_batch", texts, max_len, false)?;
        let rows = pieces.into_iter().map(|mut a| {
            a.truncate(budget, 0, TruncationDirection::Right);
            self.template(a, None)
        });
        self.pad(rows.collect::<Result<_>>()?)
    }

    /// `[CLS] a [SEP] b [SEP]` for each (a, b) = (question, context) pair. A pair longer than
    /// `max_len` loses tokens from the end of b first, and from the end of a only once b is
    /// empty.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)], max_len: usize) -> Result<BertBatch> {
        let texts: Vec<&str> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let (pieces, budget) = self.pieces("encode_pairs", &texts, max_len, true)?;
        let (mut pieces, mut rows) = (pieces.into_iter(), Vec::with_capacity(pairs.len()));
        while let (Some(mut a), Some(mut b)) = (pieces.next(), pieces.next()) {
            b.truncate(b.len().min(budget.saturating_sub(a.len())), 0, TruncationDirection::Right);
            a.truncate(budget - b.len(), 0, TruncationDirection::Right);
            rows.push(self.template(a, Some(b))?);
        }
        self.pad(rows)
    }

    /// The text of `ids`: word pieces joined, special tokens and padding left out. An id outside
    /// the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let n = self.vocab_size();
        let ids = ids
            .iter()
            .map(|&id| match u32::try_from(id) {
                Ok(id) if (id as usize) < n => Ok(id),
                _ => Err(Error::index(
                    "BertTokenizer::decode",
                    format!("id {id} is outside the vocabulary 0..{n}"),
                )),
            })
            .collect::<Result<Vec<u32>>>()?;
        self.inner
            .decode(&ids, true)
            .map_err(|e| Error::value("BertTokenizer::decode", e.to_string()))
    }

    /// The word pieces of each text, no special tokens, not truncated; and how many of them fit
    /// in `max_len` next to the special tokens (2 for a text, 3 for a pair).
    fn pieces(
        &self,
        op: &str,
        texts: &[&str],
        max_len: usize,
        pair: bool,
    ) -> Result<(Vec<Encoding>, usize)> {
        let specials = self.processor().added_tokens(pair);
        if max_len <= specials {
            return Err(Error::value(
                op,
                format!(
                    "max_len {max_len} leaves no room for text (at least {} needed)",
                    specials + 1
                ),
            ));
        }
        if texts.is_empty() {
            return Err(Error::value(op, "no texts: a batch needs at least one"));
        }
        let pieces = contained(op, || {
            self.inner
                .encode_batch(texts.to_vec(), false)
                .map_err(|e| Error::value(op, e.to_string()))
        })?;
        Ok((pieces, max_len - specials))
    }

    fn processor(&self) -> &impl PostProcessor {
        self.inner.get_post_processor().expect("checked in from_file")
    }

    /// Adds `[CLS]`/`[SEP]` and token types as the tokenizer.json's template says.
    fn template(&self, a: Encoding, b: Option<Encoding>) -> Result<Encoding> {
        contained("BertTokenizer", || {
            self.processor()
                .process(a, b, true)
                .map_err(|e| Error::value("BertTokenizer", e.to_string()))
        })
    }

    /// Right-pads the sequences to the longest into (B, T) tensors.
    fn pad(&self, rows: Vec<Encoding>) -> Result<BertBatch> {
        let (b, t) = (rows.len(), rows.iter().map(Encoding::len).max().unwrap_or(0));
        let (mut ids, mut token_types, mut mask) =
            (vec![self.pad_id; b * t], vec![0i64; b * t], vec![0i64; b * t]);
        let mut offsets = Vec::with_capacity(b);
        for (row, enc) in rows.iter().enumerate() {
            let at = row * t;
            for (i, (&id, &ty)) in enc.get_ids().iter().zip(enc.get_type_ids()).enumerate() {
                (ids[at + i], token_types[at + i], mask[at + i]) = (id as i64, ty as i64, 1);
            }
            let mut spans = enc.get_offsets().to_vec();
            spans.resize(t, (0, 0));
            offsets.push(spans);
        }
        Ok(BertBatch {
            ids: Tensor::from_vec(ids, &[b, t])?,                 // (B, T)
            token_types: Tensor::from_vec(token_types, &[b, t])?, // (B, T)
            mask: Tensor::from_vec(mask, &[b, t])?,               // (B, T)
            offsets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/all-MiniLM-L6-v2");

    fn tokenizer() -> Option<BertTokenizer> {
        let path = Path::new(MODEL).join("tokenizer.json");
        if !path.is_file() {
            eprintln!("skipped: no all-MiniLM-L6-v2 tokenizer at {}", path.display());
            return None;
        }
        Some(BertTokenizer::from_file(&path).unwrap())
    }

    fn rows(t: &Tensor) -> Vec<Vec<i64>> {
        let v = t.to_vec::<i64>().unwrap();
        v.chunks(t.dims()[1]).map(<[i64]>::to_vec).collect()
    }

    // Expected ids, types, masks and offsets below came from transformers 5.24 AutoTokenizer
    // (BertTokenizer, tokenizers-backed = BertTokenizerFast) on all-MiniLM-L6-v2:
    // tok(texts, padding=True, return_offsets_mapping=True).

    #[test]
    fn batch_matches_transformers() {
        let Some(tok) = tokenizer() else { return };
        assert_eq!(tok.vocab_size(), 30522);
        let texts = [
            "Hello, world!",
            "The quick brown fox jumps over the lazy dog.",
            "Héllo Wörld — naïve café, 3.14159 × 2 = 6.28!",
            "unaffable tokenization",
        ];
        let batch = tok.encode_batch(&texts, 128).unwrap();
        let ids = [
            vec![101, 7592, 1010, 2088, 999, 102],
            vec![101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102],
            vec![
                101, 7592, 2088, 1517, 15743, 7668, 1010, 1017, 1012, 15471, 28154, 1095, 1016,
                1027, 1020, 1012, 2654, 999, 102,
            ],
            vec![101, 14477, 20961, 3468, 19204, 3989, 102],
        ];
        assert_eq!(batch.ids.dims(), &[4, 19]);
        let (got, mask) = (rows(&batch.ids), rows(&batch.mask));
        for (row, want) in ids.iter().enumerate() {
            let n = want.len();
            assert_eq!(got[row][..n], want[..], "row {row}");
            assert!(got[row][n..].iter().all(|&id| id == 0), "row {row}: [PAD] is 0");
            assert_eq!(mask[row], (0..19).map(|i| (i < n) as i64).collect::<Vec<_>>(), "row {row}");
        }
        assert!(rows(&batch.token_types).iter().flatten().all(|&t| t == 0));
        // Offsets: transformers' char offsets, here in bytes; the accented words keep their accents.
        assert_eq!(batch.offsets[1][..4], [(0, 0), (0, 3), (4, 9), (10, 15)]);
        assert_eq!(batch.offsets[0][5..], [(0, 0); 14]);
        let text = texts[2];
        let spans: Vec<&str> = batch.offsets[2][1..7].iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(spans, ["Héllo", "Wörld", "—", "naïve", "café", ","]);
        let spans: Vec<&str> =
            batch.offsets[3][1..6].iter().map(|&(s, e)| &texts[3][s..e]).collect();
        // transformers: (0, 3) (3, 6) (6, 9) (10, 15) (15, 22)
        assert_eq!(spans, ["una", "ffa", "ble", "token", "ization"]);
        assert_eq!(tok.decode(&ids[2]).unwrap(), "hello world — naive cafe, 3. 14159 × 2 = 6. 28!");
    }

    #[test]
    fn pairs_match_transformers() {
        let Some(tok) = tokenizer() else { return };
        let (q, c) = (
            "What is the capital of France?",
            "Paris is the capital and most populous city of France.",
        );
        let batch = tok.encode_pairs(&[(q, c), ("Who?", "Me.")], 128).unwrap();
        let full = [
            101, 2054, 2003, 1996, 3007, 1997, 2605, 1029, 102, 3000, 2003, 1996, 3007, 1998, 2087,
            20151, 2103, 1997, 2605, 1012, 102,
        ];
        assert_eq!(rows(&batch.ids)[0], full);
        let types: Vec<i64> = (0..21).map(|i| (i >= 9) as i64).collect();
        assert_eq!(rows(&batch.token_types)[0], types);
        let (s, e) = batch.offsets[0][15]; // "populous": (30, 38) in the context
        assert_eq!(&c[s..e], "populous");
        assert_eq!(rows(&batch.mask)[1].iter().sum::<i64>(), 7); // [CLS] who ? [SEP] me . [SEP]
        assert_eq!(rows(&batch.token_types)[1][..8], [0, 0, 0, 0, 1, 1, 1, 0]);

        // truncation="only_second", max_length=14 in transformers: the context loses its end.
        let cut = tok.encode_pairs(&[(q, c)], 14).unwrap();
        assert_eq!(
            rows(&cut.ids)[0],
            [101, 2054, 2003, 1996, 3007, 1997, 2605, 1029, 102, 3000, 2003, 1996, 3007, 102]
        );
        assert_eq!(
            tok.decode(&rows(&cut.ids)[0]).unwrap(),
            "what is the capital of france? paris is the capital"
        );
        // Once the context is empty, the question is cut: [CLS] what is [SEP] [SEP].
        let cut = tok.encode_pairs(&[(q, c)], 5).unwrap();
        assert_eq!(rows(&cut.ids)[0], [101, 2054, 2003, 102, 102]);
        assert_eq!(rows(&cut.token_types)[0], [0, 0, 0, 0, 1]);
        // Singles keep [CLS] … [SEP] when cut.
        let cut = tok.encode_batch(&[q], 4).unwrap();
        assert_eq!(rows(&cut.ids)[0], [101, 2054, 2003, 102]);
    }

    #[test]
    fn errors_name_the_problem() {
        let missing = Path::new("/nonexistent/tokenizer.json");
        let err = BertTokenizer::from_file(missing).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
        let bad = std::env::temp_dir()
            .join(format!("ferrograd-bad-tokenizer-{}.json", std::process::id()));
        std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
        let err = BertTokenizer::from_file(&bad).err().unwrap().to_string();
        std::fs::remove_file(&bad).unwrap();
        assert!(
            err.contains(&*bad.to_string_lossy()) && err.contains("not a tokenizer.json"),
            "{err}"
        );

        let Some(tok) = tokenizer() else { return };
        assert!(tok.encode_batch(&["a"], 2).unwrap_err().to_string().contains("max_len 2"));
        assert!(tok.encode_pairs(&[("a", "b")], 3).is_err());
        assert!(tok.encode_batch(&[], 8).is_err());
        assert!(tok.decode(&[101, 30522]).unwrap_err().to_string().contains("30522"));
        assert!(tok.decode(&[-1]).is_err());
    }
}
