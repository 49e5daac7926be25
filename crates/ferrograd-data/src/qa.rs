//! Question answering data: SQuAD-format JSON files, and a built-in generated set shaped like
//! the lecture's precipitation paragraph, with that paragraph and its three questions.

use crate::{BertBatch, BertTokenizer};
use ferrograd::{Error, Result, Rng};
use std::path::Path;

/// A question about a context and its answer, a span of the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaExample {
    pub question: String,
    pub context: String,
    pub answer: String,
    /// The answer's byte offset in the context: `&context[answer_start..][..answer.len()]`.
    pub answer_start: usize,
}

/// The examples of a SQuAD-format file (`{"data": [{"paragraphs": [{"context", "qas":
/// [{"question", "answers": [{"text", "answer_start"}]}]}]}]}`), the first answer of each
/// question. Offsets are SQuAD's character offsets, turned into bytes and checked against the
/// text; a question without answers (SQuAD 2's unanswerable ones) is skipped.
pub fn read_squad(path: &Path) -> Result<Vec<QaExample>> {
    let text = ferrograd::io::read_text(path, "read_squad")?;
    parse_squad(&text, &path.display().to_string())
}

/// [`read_squad`] of a string; `source_name` names it in errors.
///
/// ```
/// let json = r#"{"data": [{"paragraphs": [{"context": "Rain falls under gravity.",
///   "qas": [{"question": "Why does rain fall?", "answers": [{"text": "gravity", "answer_start": 17}]}]}]}]}"#;
/// let examples = ferrograd_data::qa::parse_squad(json, "tiny").unwrap();
/// assert_eq!(examples[0].answer, "gravity");
/// assert_eq!(&examples[0].context[examples[0].answer_start..][..7], "gravity");
/// ```
pub fn parse_squad(text: &str, source_name: &str) -> Result<Vec<QaExample>> {
    let fail = |m: String| Error::value("SQuAD", format!("{source_name}: {m}"));
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let data = root["data"].as_array().ok_or_else(|| fail("no \"data\" array".into()))?;
    let mut out = Vec::new();
    for (a, article) in data.iter().enumerate() {
        let paragraphs = article["paragraphs"]
            .as_array()
            .ok_or_else(|| fail(format!("data[{a}] has no \"paragraphs\" array")))?;
        for (p, para) in paragraphs.iter().enumerate() {
            let at = format!("data[{a}].paragraphs[{p}]");
            let context = para["context"]
                .as_str()
                .ok_or_else(|| fail(format!("{at} has no \"context\" string")))?;
            let qas = para["qas"].as_array().ok_or_else(|| fail(format!("{at} has no \"qas\"")))?;
            for (q, qa) in qas.iter().enumerate() {
                let at = format!("{at}.qas[{q}]");
                let question = qa["question"]
                    .as_str()
                    .ok_or_else(|| fail(format!("{at} has no \"question\" string")))?;
                let Some(answer) = qa["answers"].as_array().and_then(|a| a.first()) else {
                    continue;
                };
                let (Some(answer_text), Some(chars)) =
                    (answer["text"].as_str(), answer["answer_start"].as_u64())
                else {
                    return Err(fail(format!(
                        "{at}: an answer needs \"text\" and \"answer_start\""
                    )));
                };
                let start = context
                    .char_indices()
                    .nth(chars as usize)
                    .map(|(b, _)| b)
                    .filter(|&b| context[b..].starts_with(answer_text))
                    .ok_or_else(|| {
                        fail(format!(
                            "{at}: the answer {answer_text:?} is not at character {chars} of its context"
                        ))
                    })?;
                out.push(QaExample {
                    question: question.to_string(),
                    context: context.to_string(),
                    answer: answer_text.to_string(),
                    answer_start: start,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(fail("no answered questions".into()));
    }
    Ok(out)
}

/// SQuAD's answer normalization: lowercase, no punctuation, no articles, single spaces.
pub fn normalize(text: &str) -> Vec<String> {
    let lower: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(String::from)
        .collect()
}

/// SQuAD's exact match and token F1 of a predicted answer.
pub fn squad_scores(predicted: &str, truth: &str) -> (f64, f64) {
    let (p, t) = (normalize(predicted), normalize(truth));
    let exact = f64::from(u8::from(p == t));
    let mut pool = t.clone();
    let common = p
        .iter()
        .filter(|w| match pool.iter().position(|x| x == *w) {
            Some(i) => {
                pool.swap_remove(i);
                true
            }
            None => false,
        })
        .count();
    if common == 0 {
        return (exact, 0.0);
    }
    let (precision, recall) = (common as f64 / p.len() as f64, common as f64 / t.len() as f64);
    (exact, 2.0 * precision * recall / (precision + recall))
}

/// The first and last token of an answer; `None` where `max_len` cut it off.
pub type TokenSpan = Option<(usize, usize)>;

/// A batch of examples, `[CLS] question [SEP] context [SEP]` cut to `max_len`, and the token
/// span of each answer.
pub fn encode_examples(
    tok: &BertTokenizer,
    examples: &[&QaExample],
    max_len: usize,
) -> Result<(BertBatch, Vec<TokenSpan>)> {
    let pairs: Vec<(&str, &str)> =
        examples.iter().map(|e| (e.question.as_str(), e.context.as_str())).collect();
    let batch = tok.encode_pairs(&pairs, max_len)?;
    let spans = examples
        .iter()
        .enumerate()
        .map(|(i, e)| batch.token_span(i, e.answer_start, e.answer_start + e.answer.len()))
        .collect::<Result<_>>()?;
    Ok((batch, spans))
}

/// The lecture's paragraph about precipitation.
pub const PRECIPITATION: &str = "In meteorology, precipitation is any product of the \
condensation of atmospheric water vapor that falls under gravity. The main forms of \
precipitation include drizzle, rain, sleet, snow, graupel and hail. Precipitation forms as \
smaller droplets coalesce via collision with other rain drops or ice crystals within a cloud. \
Short, intense periods of rain in scattered locations are called showers.";

/// The lecture's three questions about [`PRECIPITATION`] and their answers.
pub const PRECIPITATION_QUESTIONS: [(&str, &str); 3] = [
    ("What causes precipitation to fall?", "gravity"),
    (
        "What is another main form of precipitation besides drizzle, rain, snow, sleet and hail?",
        "graupel",
    ),
    ("Where do water droplets collide with ice crystals to form precipitation?", "within a cloud"),
];

const FIELDS: [&str; 5] = ["meteorology", "climatology", "hydrology", "geography", "physics"];
const THINGS: [&str; 4] = ["precipitation", "rainfall", "moisture", "weather"];
const VAPORS: [&str; 4] = ["water vapor", "steam", "moist air", "cloud water"];
const CAUSES: [&str; 10] = [
    "gravity",
    "wind",
    "pressure",
    "heat",
    "cold",
    "weight",
    "friction",
    "magnetism",
    "cooling",
    "lightning",
];
const FORMS: [&str; 14] = [
    "drizzle", "rain", "sleet", "snow", "graupel", "hail", "fog", "dew", "frost", "mist", "ice",
    "slush", "spray", "haze",
];
const DROPLETS: [&str; 4] = ["droplets", "particles", "crystals", "drops"];
const PARTNERS: [&str; 5] = ["ice crystals", "dust grains", "snow flakes", "salt grains", "ash"];
const PLACES: [&str; 8] = [
    "within a cloud",
    "near the ground",
    "over the sea",
    "inside a storm",
    "above the mountains",
    "under the ice",
    "within a storm",
    "over a lake",
];

/// `n` generated paragraphs shaped like [`PRECIPITATION`] — a cause, six forms, a place — each
/// with one of the lecture's three kinds of question ("What causes … to fall?", "What is
/// another main form of … besides …?", "Where do … collide with … to form …?"). The lecture's
/// own paragraph is one of the shapes, so a model trained on these can be asked its questions.
///
/// ```
/// let set = ferrograd_data::qa::precipitation_qa(30, &mut ferrograd::Rng::seed(0));
/// assert!(set.iter().all(|e| e.context[e.answer_start..].starts_with(&e.answer)));
/// ```
pub fn precipitation_qa(n: usize, rng: &mut Rng) -> Vec<QaExample> {
    fn pick(rng: &mut Rng, words: &[&'static str]) -> &'static str {
        words[rng.below(words.len())]
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (field, thing) = (pick(rng, &FIELDS), pick(rng, &THINGS));
        let (vapor, cause) = (pick(rng, &VAPORS), pick(rng, &CAUSES));
        let mut forms: Vec<&str> = FORMS.to_vec();
        rng.shuffle(&mut forms);
        forms.truncate(6);
        let (droplets, partner, place) =
            (pick(rng, &DROPLETS), pick(rng, &PARTNERS), pick(rng, &PLACES));
        let mut chars = thing.chars();
        let thing_cap: String =
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
        let f = &forms;
        let context = format!(
            "In {field}, {thing} is any product of the condensation of atmospheric {vapor} that \
falls under {cause}. The main forms of {thing} include {}, {}, {}, {}, {} and {}. {thing_cap} \
forms as smaller {droplets} coalesce via collision with other {} drops or {partner} {place}. \
Short, intense periods of {} in scattered locations are called showers.",
            f[0], f[1], f[2], f[3], f[4], f[5], f[1], f[1]
        );
        let (question, answer, anchor) = match i % 3 {
            0 => (format!("What causes {thing} to fall?"), cause, "falls under "),
            1 => {
                let answer = forms[rng.below(6)];
                let mut others: Vec<&str> =
                    forms.iter().copied().filter(|&f| f != answer).collect();
                rng.shuffle(&mut others);
                let last = others.pop().unwrap_or_default();
                let besides = others.join(", ");
                (
                    format!("What is another main form of {thing} besides {besides} and {last}?"),
                    answer,
                    "include ",
                )
            }
            _ => (
                format!("Where do water {droplets} collide with {partner} to form {thing}?"),
                place,
                partner,
            ),
        };
        let from = context.find(anchor).unwrap_or(0);
        let answer_start = from + context[from..].find(answer).unwrap_or(0);
        out.push(QaExample { question, context, answer: answer.to_string(), answer_start });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_squad_files_are_clear_errors() {
        let e = parse_squad("{", "f.json").unwrap_err().to_string();
        assert!(e.contains("f.json: not JSON"), "{e}");
        let e = parse_squad(r#"{"data": [{"paragraphs": [{"qas": []}]}]}"#, "f.json").unwrap_err();
        assert!(e.to_string().contains("data[0].paragraphs[0] has no \"context\""), "{e}");
        let wrong = r#"{"data": [{"paragraphs": [{"context": "Rain falls.", "qas": [
            {"question": "What falls?", "answers": [{"text": "Rain", "answer_start": 3}]}]}]}]}"#;
        let e = parse_squad(wrong, "f.json").unwrap_err().to_string();
        assert!(e.contains("the answer \"Rain\" is not at character 3"), "{e}");
        let none = r#"{"data": [{"paragraphs": [{"context": "x", "qas": [
            {"question": "?", "answers": []}]}]}]}"#;
        assert!(parse_squad(none, "f.json").unwrap_err().to_string().contains("no answered"));
    }

    #[test]
    fn character_offsets_become_byte_offsets() {
        let json = r#"{"data": [{"paragraphs": [{"context": "Café crème falls under gravity.",
            "qas": [{"question": "Why?", "answers": [{"text": "gravity", "answer_start": 23}]}]}]}]}"#;
        let e = &parse_squad(json, "t").unwrap()[0];
        assert_eq!(e.answer_start, 25); // two 2-byte chars before it
        assert_eq!(&e.context[e.answer_start..], "gravity.");
    }

    #[test]
    fn the_generated_set_holds_the_lectures_shapes() {
        let set = precipitation_qa(300, &mut Rng::seed(5));
        for e in &set {
            assert_eq!(&e.context[e.answer_start..e.answer_start + e.answer.len()], e.answer);
        }
        // The lecture's paragraph is one of the generator's own shapes.
        let (first, _) = PRECIPITATION.split_once(" that").unwrap();
        assert!(set.iter().any(|e| e.context.starts_with(first)));
    }
}
