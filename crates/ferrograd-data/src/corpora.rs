//! Built-in text, no download: a tiny English corpus for language models, a sentiment task,
//! and English arithmetic to parse into code.

use ferrograd::Rng;

/// The labels of [`sentiment_task`], by class index: example `i` has label `SENTIMENT[i % 2]`.
pub const SENTIMENT: [&str; 2] = ["negative", "positive"];

const GOOD: [&str; 12] = [
    "good",
    "great",
    "excellent",
    "wonderful",
    "lovely",
    "pleasant",
    "fantastic",
    "superb",
    "delightful",
    "fine",
    "nice",
    "brilliant",
];
const BAD: [&str; 12] = [
    "bad",
    "awful",
    "terrible",
    "poor",
    "dull",
    "boring",
    "horrible",
    "bland",
    "disappointing",
    "weak",
    "dreadful",
    "mediocre",
];
const NOUNS: [&str; 16] = [
    "food", "film", "book", "service", "hotel", "music", "room", "story", "coffee", "show", "game",
    "trip", "staff", "ending", "plot", "concert",
];
const VERY: [&str; 6] = ["", "", "very ", "really ", "quite ", "truly "];
const OPENERS: [&str; 6] = ["", "", "", "Honestly, ", "Overall, ", "I think "];

/// `n` short English sentences, each labeled "positive" or "negative" ([`SENTIMENT`]), balanced:
/// example `i` has label `SENTIMENT[i % 2]`. Same seed, same sentences.
///
/// Some labels hang on word order, which a bag of words does not see: four in ten sentences
/// are plain ("The food was very good."), three in ten negate ("The film was not bad.",
/// "I did not love the show." — an XOR of "not" and the adjective, beyond a linear bag of
/// words), and two in ten contrast two clauses whose second one decides ("The room was dull,
/// but the staff was lovely."); its mirror sentence has the same words and the other label, so
/// no bag-of-words model can get more than half of those right: at most about 90% in all,
/// where a sequence model can reach 100%.
///
/// ```
/// let data = ferrograd_data::corpora::sentiment_task(6, &mut ferrograd::Rng::seed(0));
/// assert_eq!(data.len(), 6);
/// assert_eq!((data[0].0.as_str(), data[1].0.as_str()), ("negative", "positive"));
/// assert!(data.iter().all(|(_, text)| text.ends_with('.')));
/// ```
pub fn sentiment_task(n: usize, rng: &mut Rng) -> Vec<(String, String)> {
    let mut pick = |words: &[&'static str]| words[rng.below(words.len())];
    (0..n)
        .map(|i| {
            let positive = i % 2 == 1;
            let (same, other) = if positive { (&GOOD, &BAD) } else { (&BAD, &GOOD) };
            let kind = pick(&[
                "plain", "plain", "plain", "plain", "not", "not", "verb", "not verb", "but",
                "although",
            ]);
            let (is, very, noun) = (pick(&["was", "is"]), pick(&VERY), pick(&NOUNS));
            let sentence = match kind {
                "plain" => format!("the {noun} {is} {very}{}.", pick(same)),
                "not" => match pick(&["not", "n't"]) {
                    "not" => format!("the {noun} {is} not {very}{}.", pick(other)),
                    _ => format!("the {noun} {is}n't {}.", pick(other)),
                },
                "verb" | "not verb" => {
                    let loved = (kind == "verb") == positive;
                    let verb = match (kind, loved) {
                        ("verb", true) => pick(&["loved", "liked", "enjoyed"]),
                        ("verb", false) => pick(&["hated", "disliked", "regretted"]),
                        (_, true) => pick(&["love", "like", "enjoy"]),
                        (_, false) => pick(&["hate", "dislike", "regret"]),
                    };
                    let not = if kind == "verb" { "" } else { "did not " };
                    format!("I {not}{verb} the {noun}.")
                }
                _ => {
                    let (first, second) = (pick(other), pick(same));
                    let mut noun2 = pick(&NOUNS);
                    while noun2 == noun {
                        noun2 = pick(&NOUNS);
                    }
                    match kind {
                        "but" => format!("the {noun} {is} {first}, but the {noun2} {is} {second}."),
                        _ => format!(
                            "although the {noun} {is} {first}, the {noun2} {is} {very}{second}."
                        ),
                    }
                }
            };
            let text = format!("{}{sentence}", pick(&OPENERS));
            let mut chars = text.chars();
            let text =
                chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
            (SENTIMENT[usize::from(positive)].to_string(), text)
        })
        .collect()
}

/// A small English text of our own (about 4.5 KB) for language-model examples: plain, repetitive
/// sentences about a village, its weather and its animals, so that a small char LSTM learns to
/// write recognisable words from it in seconds.
///
/// ```
/// let tok = ferrograd_data::text::CharTokenizer::from_text(ferrograd_data::corpora::TINY_CORPUS);
/// assert!(tok.vocab().len() < 64); // lowercase and uppercase letters, a little punctuation
/// ```
pub const TINY_CORPUS: &str = "\
The village sits by a slow river. In the morning the sun comes up over the hill, and the \
light falls on the roofs and the green fields. The baker opens his door first. He puts the \
warm bread on the shelf, and the smell goes down the street. The children wake up and run to \
the window. They look at the sky and ask if it will rain.

The sky is blue today. The wind is soft and the air is warm. The farmer walks to the field \
with his dog. The dog runs ahead and barks at the birds. The birds fly up into the trees and \
sing. The farmer laughs and calls the dog back. The cows stand by the fence and watch them go. \
The cows are brown and white, and they eat the long grass all day.

In the afternoon the clouds come in from the sea. The sky turns grey and the wind grows cold. \
The women take the washing in from the line. The men close the gates and bring the sheep down \
from the hill. The first drops of rain fall on the dry road. Then the rain comes down hard, \
and the river runs fast and loud. The ducks do not mind the rain. They swim on the river and \
shake the water from their backs.

The old cat sleeps by the fire. She does not like the rain. She likes the warm stone and the \
soft chair. When the door opens, she lifts her head and looks at the cold wind. Then she puts \
her head down and goes back to sleep. The little girl sits next to the cat and reads a book. \
The book is about a fox who lives in the wood. The fox is clever and quick, and he is always \
hungry.

At night the rain stops. The moon comes out from behind the clouds, and the stars shine over \
the village. The owl wakes up in the old tree by the church. The owl is grey and wise, and \
she has big round eyes. She flies over the fields without a sound. A mouse runs under the \
hedge. The owl sees the mouse, but the mouse is fast, and it gets away. The owl goes back to \
her tree and waits.

In the morning the fields are wet and the road is full of mud. The sun comes out again, and \
the water shines on the grass. The farmer looks at the river. The river is high, but it does \
not come over the bank. The farmer is glad. He goes to the barn to feed the horses. The horses \
are tall and strong. They eat the hay and drink the cold water, and then they go out into the \
field to run.

In the spring the trees are full of white flowers, and the lambs play in the grass. In the \
summer the days are long and hot, and the children swim in the river. In the autumn the \
leaves turn red and gold and fall from the trees, and the farmer brings in the corn. In the \
winter the snow comes, and the hill is white, and the river is slow and dark under the ice. \
The people stay by the fire and tell old stories.

The mill stands at the end of the village, where the river turns. The miller is a tall man \
with a white beard. Every day the farmers bring him their corn, and the big wheel turns in the \
water, and the stones grind the corn into flour. The flour goes to the baker, and the baker \
makes the bread. The miller says that the river works harder than any man in the village.

One cold morning the fox comes out of the wood. He is red and thin, and his eyes are bright. \
He walks along the hedge and looks at the hens by the barn. The hens see the fox and make a \
great noise. The farmer's dog hears them and runs out of the barn. The fox turns and runs back \
to the wood. The dog stops at the edge of the trees and barks. The hens are safe, and the fox \
is still hungry.

The baker has a small brown dog. The dog sits by the door of the shop and waits for the \
children. The children give the dog a piece of bread, and the dog wags its tail. The baker \
says that the dog eats more bread than the whole village. The children laugh. They like the \
baker, and they like his dog, and they like his bread most of all.

On market day the people come from the farms and the hills. They bring eggs and apples and \
cheese, and they sell them in the square. The square is loud and busy. The old men sit under \
the tree and talk about the weather. They say that the winter will be cold this year. They \
say that every year. The women buy cloth and salt and look at the new pots. The children run \
between the tables and eat the apples when no one is looking.

When the sun goes down, the market ends. The people pack their carts and go home along the \
road. The sky is red and gold over the hill. The birds fly home to the trees. The cows walk \
slowly to the barn. The dog lies down by the door. The lights come on in the windows, one by \
one, and the village is quiet again. The river runs on in the dark, slow and soft, as it \
always does.
";

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];
const OPERATORS: [(&str, &str); 4] =
    [("plus", "+"), ("minus", "-"), ("times", "*"), ("divided by", "/")];
const QUESTIONS: [&str; 4] = ["what is", "compute", "calculate", "how much is"];

/// English arithmetic and its code, the lecture's semantic parsing ("sentence to code"):
/// `("what is seven plus twelve times three", "7+12*3")` — numbers 0 to 20, one to three of
/// plus, minus, times and "divided by". `n` pairs, no sentence twice, so that any split of them
/// holds out sentences never trained on. Same seed, same pairs.
///
/// ```
/// let pairs = ferrograd_data::corpora::arithmetic_task(100, &mut ferrograd::Rng::seed(0));
/// assert_eq!(pairs.len(), 100);
/// let (english, code) = &pairs[0];
/// assert!(english.split(' ').count() >= 4 && !code.contains(' '));
/// ```
pub fn arithmetic_task(n: usize, rng: &mut Rng) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::with_capacity(n);
    while pairs.len() < n {
        let (mut english, mut code) =
            (QUESTIONS[rng.below(QUESTIONS.len())].to_string(), String::new());
        let operators = 1 + rng.below(3);
        for i in 0..=operators {
            let number = rng.below(NUMBER_WORDS.len());
            english += " ";
            english += NUMBER_WORDS[number];
            code += &number.to_string();
            if i < operators {
                let (word, symbol) = OPERATORS[rng.below(OPERATORS.len())];
                english += " ";
                english += word;
                code += symbol;
            }
        }
        if seen.insert(english.clone()) {
            pairs.push((english, code));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::WordTokenizer;

    #[test]
    fn sentiment_is_balanced_deterministic_and_sometimes_needs_word_order() {
        let data = sentiment_task(1001, &mut Rng::seed(7));
        assert_eq!(data, sentiment_task(1001, &mut Rng::seed(7)));
        assert_ne!(data, sentiment_task(1001, &mut Rng::seed(8)));
        let positive = data.iter().filter(|(label, _)| label == "positive").count();
        assert_eq!((positive, data.len() - positive), (500, 501));
        let count = |word: fn(&str) -> bool| {
            data.iter().filter(|(_, t)| WordTokenizer::split(t).iter().any(|w| word(w))).count()
        };
        let negations = count(|w| w == "not" || w.ends_with("n't"));
        let contrasts = count(|w| w == "but" || w == "although");
        assert!((250..350).contains(&negations), "{negations} negations");
        assert!((150..250).contains(&contrasts), "{contrasts} contrasts");
        let labeled =
            |text: &str| data.iter().find(|(_, t)| t.ends_with(text)).map(|(l, _)| l.as_str());
        for (text, label) in [("not bad.", "positive"), ("not good.", "negative")] {
            assert!(labeled(text).is_none_or(|l| l == label), "{text}");
        }
        for (label, text) in &data {
            let words = WordTokenizer::split(text);
            let comma = words.iter().rposition(|w| w == ",");
            if words.iter().any(|w| w == "but" || w == "although") {
                let after = &words[comma.unwrap()..];
                let good = after.iter().any(|w| GOOD.contains(&w.as_str()));
                assert_eq!(good, label == "positive", "{text}");
            }
        }
    }

    #[test]
    fn tiny_corpus_is_a_few_kilobytes_of_plain_ascii() {
        assert!((3000..6500).contains(&TINY_CORPUS.len()), "{} bytes", TINY_CORPUS.len());
        assert!(TINY_CORPUS.is_ascii());
        assert!(!TINY_CORPUS.contains("  ") && !TINY_CORPUS.contains('\\'));
    }
}
