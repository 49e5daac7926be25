//! Corpus BLEU as sacreBLEU computes it by default (`corpus_bleu(hyps, [refs])`: 13a
//! tokenization, n-grams up to 4, exponential smoothing, one reference per sentence), so that
//! scores here and in papers that quote sacreBLEU are the same number.
//!
//! Written here because no maintained Rust crate reproduces sacreBLEU's tokenizer and smoothing.

use ferrograd::{Error, Result};
use std::collections::HashMap;

const MAX_ORDER: usize = 4;

/// A corpus BLEU score and what it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Bleu {
    /// 0–100.
    pub score: f64,
    /// Clipped n-gram matches and n-gram totals of the hypotheses, n = 1..4.
    pub counts: [usize; MAX_ORDER],
    pub totals: [usize; MAX_ORDER],
    pub brevity_penalty: f64,
    pub hypothesis_len: usize,
    pub reference_len: usize,
}

/// sacreBLEU's `13a` tokenizer (mteval-v13a): punctuation and symbols become tokens of their
/// own, except `.` and `,` between digits, `-` unless after a digit, and `'`.
///
/// ```
/// use ferrograd_data::bleu::tokenize_13a;
/// assert_eq!(tokenize_13a("7+12*3"), "7 + 12 * 3");
/// assert_eq!(tokenize_13a("It costs $3.99, isn't it?"), "It costs $ 3.99 , isn't it ?");
/// ```
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let symbol =
        |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in format!(" {line} ").chars() {
        if symbol(c) {
            spaced.extend([' ', c, ' ']);
        } else {
            spaced.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period = |c: char| c == '.' || c == ',';
    // The three rules are Python `re.sub`s: each rewrites non-overlapping pairs left to right.
    let s = rewrite_pairs(&spaced, |a, b| !digit(a) && period(b), |a, b| [a, ' ', b, ' '].to_vec());
    let s = rewrite_pairs(&s, |a, b| period(a) && !digit(b), |a, b| [' ', a, ' ', b].to_vec());
    let s = rewrite_pairs(&s, |a, b| digit(a) && b == '-', |a, b| [a, ' ', b, ' '].to_vec());
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Scans `s` left to right; where `hit(a, b)` holds for the next two chars, writes `with(a, b)`
/// and moves past both.
fn rewrite_pairs(
    s: &str,
    hit: impl Fn(char, char) -> bool,
    with: impl Fn(char, char) -> Vec<char>,
) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && hit(chars[i], chars[i + 1]) {
            out.extend(with(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for w in tokens.windows(n) {
        *counts.entry(w.iter().map(|t| t.to_string()).collect()).or_insert(0) += 1;
    }
    counts
}

/// Corpus BLEU of `hypotheses` against one reference each.
///
/// ```
/// use ferrograd_data::bleu::corpus_bleu;
/// let b = corpus_bleu(&["the cat sat on the mat"], &["the cat sat on the mat"]).unwrap();
/// assert!((b.score - 100.0).abs() < 1e-9);
/// assert!(corpus_bleu(&["a"], &[] as &[&str]).is_err());
/// ```
pub fn corpus_bleu(hypotheses: &[impl AsRef<str>], references: &[impl AsRef<str>]) -> Result<Bleu> {
    if hypotheses.len() != references.len() {
        return Err(Error::value(
            "corpus_bleu",
            format!(
                "{} hypotheses but {} references: each hypothesis needs one reference",
                hypotheses.len(),
                references.len()
            ),
        ));
    }
    let (mut counts, mut totals) = ([0usize; MAX_ORDER], [0usize; MAX_ORDER]);
    let (mut hyp_len, mut ref_len) = (0, 0);
    for (h, r) in hypotheses.iter().zip(references) {
        let (h, r) = (tokenize_13a(h.as_ref()), tokenize_13a(r.as_ref()));
        let (h, r): (Vec<&str>, Vec<&str>) = (
            h.split(' ').filter(|t| !t.is_empty()).collect(),
            r.split(' ').filter(|t| !t.is_empty()).collect(),
        );
        hyp_len += h.len();
        ref_len += r.len();
        for n in 1..=MAX_ORDER {
            let reference = ngrams(&r, n);
            for (gram, c) in ngrams(&h, n) {
                counts[n - 1] += c.min(reference.get(&gram).copied().unwrap_or(0));
            }
            totals[n - 1] += h.len().saturating_sub(n - 1);
        }
    }
    // sacreBLEU's `exp` smoothing: the k-th order without a match counts as 1 / 2^k matches.
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0;
    for n in 0..MAX_ORDER {
        if totals[n] == 0 {
            break;
        }
        precisions[n] = if counts[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * totals[n] as f64)
        } else {
            100.0 * counts[n] as f64 / totals[n] as f64
        };
    }
    let brevity_penalty = match hyp_len {
        0 => 0.0,
        h if h < ref_len => (1.0 - ref_len as f64 / h as f64).exp(),
        _ => 1.0,
    };
    // sacreBLEU's log of 0 is −9999999999: a corpus without some order scores ~0.
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    let mean_log = precisions.iter().map(|&p| log(p)).sum::<f64>() / MAX_ORDER as f64;
    Ok(Bleu {
        score: brevity_penalty * mean_log.exp(),
        counts,
        totals,
        brevity_penalty,
        hypothesis_len: hyp_len,
        reference_len: ref_len,
    })
}
