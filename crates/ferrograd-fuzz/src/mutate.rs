//! A small mutator over seed files, for the fixed-seed fuzz runs of the test suite (stable
//! Rust has no coverage-guided fuzzer; cargo-fuzz in `fuzz/` is the guided one).

use ferrograd::Rng;

/// Bytes that change what a parser sees: structure, separators, signs and extremes.
const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\"{}[],:\t\n -9e.\\";

/// Numbers that sit on the edges sizes and offsets are checked against.
const WORDS: &[u64] =
    &[0, 1, 7, 8, 255, 1 << 16, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 53, u64::MAX];

/// Texts to put where a number or a value was, for JSON and TSV.
const TEXTS: &[&str] = &[
    "0",
    "-1",
    "1e9",
    "1000000000",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "NaN",
    "0.5",
    "null",
    "\"\"",
    "[]",
    "{}",
    "\"\\ud800\"",
];

/// `seed` changed in one to four places, or spliced with `other`.
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(&mut out, other, rng);
    }
    out
}

fn mutate_once(out: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let at = |rng: &mut Rng, len: usize| rng.below(len + 1);
    match rng.below(9) {
        0 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] ^= 1 << rng.below(8);
        }
        1 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] = BYTES[rng.below(BYTES.len())];
        }
        2 if out.len() >= 8 => {
            let (i, word) = (rng.below(out.len() - 7), WORDS[rng.below(WORDS.len())]);
            let bytes = if rng.below(2) == 0 { word.to_le_bytes() } else { word.to_be_bytes() };
            let width = [1, 2, 4, 8][rng.below(4)];
            out[i..i + width].copy_from_slice(&bytes[8 - width..]);
        }
        3 => replace_a_number(out, rng),
        4 if !out.is_empty() => {
            let start = rng.below(out.len());
            let end = (start + 1 + rng.below(64)).min(out.len());
            out.drain(start..end);
        }
        5 if !out.is_empty() => {
            let start = rng.below(out.len());
            let end = (start + 1 + rng.below(256)).min(out.len());
            let piece = out[start..end].to_vec();
            let i = at(rng, out.len());
            out.splice(i..i, piece);
        }
        6 => out.truncate(at(rng, out.len())),
        7 => {
            let i = at(rng, out.len());
            let piece: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
            out.splice(i..i, piece);
        }
        _ => {
            let (head, tail) = (at(rng, out.len()), at(rng, other.len()));
            out.truncate(head);
            out.extend_from_slice(&other[tail..]);
        }
    }
}

/// Replaces a run of digits (a size, an offset, a count) with one of [`TEXTS`].
fn replace_a_number(out: &mut Vec<u8>, rng: &mut Rng) {
    let digits: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_ascii_digit()).collect();
    let text = TEXTS[rng.below(TEXTS.len())].as_bytes();
    let Some(&start) = digits.get(rng.below(digits.len().max(1))) else {
        let i = rng.below(out.len() + 1);
        out.splice(i..i, text.iter().copied());
        return;
    };
    let end = (start..out.len()).find(|&i| !out[i].is_ascii_digit()).unwrap_or(out.len());
    out.splice(start..end, text.iter().copied());
}
