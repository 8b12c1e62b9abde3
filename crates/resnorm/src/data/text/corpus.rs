//! A built-in training corpus with known entropy: short stories from a probabilistic grammar.
//!
//! The default data when the user names none. It is generated in code from a seed, so it
//! needs no download, and it has structure that a language model must learn step by step:
//!
//! - **Agreement.** Every verb agrees in number with its subject (`the dog sees`, `the dogs
//!   see`), also across relative clauses in between (`the dogs that the cat sees run`).
//! - **Nesting.** Noun phrases take subject or object relative clauses, up to two deep.
//! - **Long-range dependencies.** A story introduces its hero by name, refers to the hero by
//!   name or by the pronoun the name implies (`she` / `he`) in later sentences, quotes the
//!   hero by name, and closes with the name again; asides open a parenthesis that is closed
//!   later; quotations open and close quote marks.
//!
//! # Grammar
//! ```text
//! corpus      = story ("\n" story)*               until at least `target_chars` characters
//! story       = "Once there was a " ROLE " named " NAME "." (" " sentence){k}
//!               " That is the story of " NAME "."  k uniform in MIN_SENTENCES..=MAX_SENTENCES
//! sentence    = declarative (1/2) | about_hero (1/4) | quote (1/4)
//! declarative = Cap(clause) aside? "."            aside with probability 1/4
//! aside       = " (and " pronoun " " VT[sg] " " NP(m, 1) ")"
//! about_hero  = (NAME (1/2) | Cap(pronoun) (1/2)) " " VP(sg, 0) "."
//! quote       = NAME " said, \"" Cap(clause) ".\""
//! clause      = NP(n, 0) " " VP(n, 0)
//! NP(n, d)    = DET[n] " " (ADJ " ")? NOUN[n] RC(n, d)?      adjective with probability 1/4
//! RC(n, d)    = " that " VP(n, d + 1)                 subject relative
//!             | " that " NP(m, d + 1) " " VT[m]       object relative
//! VP(n, d)    = VI[n] (1/2) | VT[n] " " NP(m, d + 1) (1/2)
//! ```
//! Every noun phrase's number is drawn uniformly from {singular, plural}: `n` in a clause, a
//! fresh `m` for objects and asides; `[n]` means the form that agrees with `n`. `d` is the
//! nesting depth: a relative clause follows with probability
//! [`RELATIVE_CLAUSE_PROBABILITIES`]`[d]` (subject, object), and none at depth 2 or deeper.
//! All other choices (ROLE, NAME, DET, ADJ, NOUN, VI, VT) are uniform over the word lists in
//! [`lexicon`]. The pronoun is fixed by the hero's name, `Cap` capitalizes the first letter.
//!
//! # Entropy
//! The grammar is unambiguous: every choice shows in the text (word classes are disjoint, and
//! each alternative starts with a different word), so a text has exactly one derivation and
//! its probability is the product of the probabilities of the choices made. The generator
//! adds up `-ln p` of each choice; [`Corpus::nats_per_char`] is that sum divided by the number
//! of characters: the exact information content of this sample under its source, i.e. the
//! cross-entropy that a model knowing the grammar would reach on it (about 0.29 nats, 0.42
//! bits, per character). A trained model's validation loss per character can be read
//! against it: the gap is what the model has not learned.
//!
//! ```
//! use resnorm::data::text::Corpus;
//! let corpus = Corpus::generate(1, 2_000).unwrap();
//! assert!(corpus.text.starts_with("Once there was a "));
//! assert!(corpus.text.len() >= 2_000);
//! assert!(corpus.nats_per_char > 0.2 && corpus.nats_per_char < 0.4);
//! assert_eq!(corpus, Corpus::generate(1, 2_000).unwrap());
//! ```

use crate::memory::{product, MemoryEstimate};
use crate::rng::Rng;
use crate::{Error, Result};

/// Size of the built-in corpus when the user asks for none in particular (about 1 MB).
pub const DEFAULT_CORPUS_CHARS: usize = 1_000_000;
/// Fewest sentences between a story's introduction and its closing sentence.
pub const MIN_SENTENCES: usize = 2;
/// Most sentences between a story's introduction and its closing sentence.
pub const MAX_SENTENCES: usize = 5;
/// Weights of the sentence kinds: declarative, about the hero, quote.
pub const SENTENCE_WEIGHTS: [f64; 3] = [0.5, 0.25, 0.25];
/// Probability that a declarative sentence has a parenthetical aside.
pub const ASIDE_PROBABILITY: f64 = 0.25;
/// Probability that a noun phrase has an adjective.
pub const ADJECTIVE_PROBABILITY: f64 = 0.25;
/// Probability of a (subject, object) relative clause after a noun phrase at depth 0, 1.
pub const RELATIVE_CLAUSE_PROBABILITIES: [(f64, f64); 2] = [(0.25, 0.125), (0.125, 0.0625)];

/// The word lists. Spelling follows two rules that make agreement visible in the text:
/// plural nouns are the singular plus `s`, singular verbs are the plural plus `s`.
pub mod lexicon {
    /// The hero's occupation in the introduction.
    pub const ROLES: [&str; 6] = ["baker", "farmer", "painter", "sailor", "teacher", "weaver"];
    /// Hero names, with the pronoun each implies.
    pub const NAMES: [(&str, &str); 8] = [
        ("Anna", "she"),
        ("Clara", "she"),
        ("Maria", "she"),
        ("Rosa", "she"),
        ("Boris", "he"),
        ("Hugo", "he"),
        ("Oskar", "he"),
        ("Victor", "he"),
    ];
    /// Determiners of singular noun phrases.
    pub const DETERMINERS_SINGULAR: [&str; 4] = ["the", "a", "this", "every"];
    /// Determiners of plural noun phrases.
    pub const DETERMINERS_PLURAL: [&str; 4] = ["the", "some", "these", "many"];
    /// Adjectives.
    pub const ADJECTIVES: [&str; 6] = ["big", "small", "quiet", "happy", "clever", "brave"];
    /// Nouns (singular); the plural adds `s`.
    pub const NOUNS: [&str; 8] = [
        "dog", "cat", "bird", "horse", "king", "girl", "boy", "friend",
    ];
    /// Intransitive verbs (plural form); the singular adds `s`.
    pub const INTRANSITIVE_VERBS: [&str; 5] = ["sleep", "run", "sing", "wait", "laugh"];
    /// Transitive verbs (plural form); the singular adds `s`.
    pub const TRANSITIVE_VERBS: [&str; 6] = ["see", "like", "chase", "help", "follow", "find"];
}

use lexicon::*;

/// Generated text and its exact entropy under the grammar.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// The stories, one per line (ASCII).
    pub text: String,
    /// `-ln P(text)` under the grammar, divided by the number of characters of `text`.
    pub nats_per_char: f64,
}

impl Corpus {
    /// The memory a corpus of `target_chars` characters takes once tokenized and split: the
    /// text, its `u32` tokens and their split, at most 16 bytes per character.
    pub fn memory_estimate(target_chars: usize) -> Result<MemoryEstimate> {
        MemoryEstimate::new(0, 0, product("corpus size", &[target_chars as u64, 4])?)
    }

    /// Whole stories from the grammar, seeded by `seed`, until the text holds at least
    /// `target_chars` characters.
    pub fn generate(seed: u64, target_chars: usize) -> Result<Corpus> {
        if target_chars == 0 {
            return Err(Error::invalid(
                "Corpus::generate",
                "target size must be at least 1 character",
            ));
        }
        let mut text = String::new();
        // A size from a flag: refused with an error where the allocator cannot serve it,
        // instead of aborting (callers compare `memory_estimate` with the machine first).
        text.try_reserve(target_chars.saturating_add(1024))
            .map_err(|e| {
                Error::invalid(
                    "Corpus::generate",
                    format!("cannot hold {target_chars} characters: {e}"),
                )
            })?;
        let mut source = Source {
            rng: Rng::new(seed),
            nats: 0.0,
            text,
        };
        while source.text.len() < target_chars {
            if !source.text.is_empty() {
                source.text.push('\n');
            }
            source.story();
        }
        let nats_per_char = source.nats / source.text.len() as f64;
        Ok(Corpus {
            text: source.text,
            nats_per_char,
        })
    }

    /// [`Corpus::nats_per_char`] in bits.
    pub fn bits_per_char(&self) -> f64 {
        self.nats_per_char / std::f64::consts::LN_2
    }
}

/// Grammatical number of a noun phrase and the words that agree with it.
#[derive(Clone, Copy)]
enum Number {
    Singular,
    Plural,
}

/// The generator: random choices, the `-ln p` they add up to, and the text written so far.
struct Source {
    rng: Rng,
    nats: f64,
    text: String,
}

impl Source {
    /// A uniform choice among `n` alternatives.
    fn pick(&mut self, n: usize) -> usize {
        self.nats += (n as f64).ln();
        self.rng.below(n)
    }

    /// A choice among alternatives with the given probabilities (summing to 1); the last
    /// alternative takes whatever rounding leaves.
    fn choose(&mut self, probabilities: &[f64]) -> usize {
        let u = self.rng.uniform_f64();
        let mut cumulative = 0.0;
        let last = probabilities.len() - 1;
        let chosen = probabilities[..last]
            .iter()
            .position(|&p| {
                cumulative += p;
                u < cumulative
            })
            .unwrap_or(last);
        self.nats -= probabilities[chosen].ln();
        chosen
    }

    fn coin(&mut self, probability: f64) -> bool {
        self.choose(&[probability, 1.0 - probability]) == 0
    }

    fn number(&mut self) -> Number {
        if self.pick(2) == 0 {
            Number::Singular
        } else {
            Number::Plural
        }
    }

    fn push(&mut self, words: &str) {
        self.text.push_str(words);
    }

    /// Writes one of `words`, chosen uniformly.
    fn push_one_of(&mut self, words: &[&str]) {
        let word = words[self.pick(words.len())];
        self.text.push_str(word);
    }

    /// Writes `words` with its first letter in upper case.
    fn push_capitalized(&mut self, words: &str) {
        let start = self.text.len();
        self.text.push_str(words);
        self.text[start..start + 1].make_ascii_uppercase();
    }

    fn story(&mut self) {
        let role = ROLES[self.pick(ROLES.len())];
        let (name, pronoun) = NAMES[self.pick(NAMES.len())];
        self.push("Once there was a ");
        self.push(role);
        self.push(" named ");
        self.push(name);
        self.push(".");
        let sentences = MIN_SENTENCES + self.pick(MAX_SENTENCES - MIN_SENTENCES + 1);
        for _ in 0..sentences {
            self.push(" ");
            match self.choose(&SENTENCE_WEIGHTS) {
                0 => self.declarative(pronoun),
                1 => self.about_hero(name, pronoun),
                _ => self.quote(name),
            }
        }
        self.push(" That is the story of ");
        self.push(name);
        self.push(".");
    }

    fn declarative(&mut self, pronoun: &str) {
        let start = self.text.len();
        self.clause();
        self.text[start..start + 1].make_ascii_uppercase();
        if self.coin(ASIDE_PROBABILITY) {
            self.push(" (and ");
            self.push(pronoun);
            self.push(" ");
            self.transitive_verb(Number::Singular);
            self.push(" ");
            let number = self.number();
            self.noun_phrase(number, 1);
            self.push(")");
        }
        self.push(".");
    }

    fn about_hero(&mut self, name: &str, pronoun: &str) {
        if self.pick(2) == 0 {
            self.push(name);
        } else {
            self.push_capitalized(pronoun);
        }
        self.push(" ");
        self.verb_phrase(Number::Singular, 0);
        self.push(".");
    }

    fn quote(&mut self, name: &str) {
        self.push(name);
        self.push(" said, \"");
        let start = self.text.len();
        self.clause();
        self.text[start..start + 1].make_ascii_uppercase();
        self.push(".\"");
    }

    fn clause(&mut self) {
        let number = self.number();
        self.noun_phrase(number, 0);
        self.push(" ");
        self.verb_phrase(number, 0);
    }

    fn noun_phrase(&mut self, number: Number, depth: usize) {
        let determiners = match number {
            Number::Singular => &DETERMINERS_SINGULAR,
            Number::Plural => &DETERMINERS_PLURAL,
        };
        self.push_one_of(determiners);
        self.push(" ");
        if self.coin(ADJECTIVE_PROBABILITY) {
            self.push_one_of(&ADJECTIVES);
            self.push(" ");
        }
        self.push_one_of(&NOUNS);
        if let Number::Plural = number {
            self.push("s");
        }
        if let Some(&(subject, object)) = RELATIVE_CLAUSE_PROBABILITIES.get(depth) {
            match self.choose(&[subject, object, 1.0 - subject - object]) {
                0 => {
                    self.push(" that ");
                    self.verb_phrase(number, depth + 1);
                }
                1 => {
                    self.push(" that ");
                    let inner = self.number();
                    self.noun_phrase(inner, depth + 1);
                    self.push(" ");
                    self.transitive_verb(inner);
                }
                _ => {}
            }
        }
    }

    fn verb_phrase(&mut self, number: Number, depth: usize) {
        if self.pick(2) == 0 {
            self.verb(&INTRANSITIVE_VERBS, number);
        } else {
            self.transitive_verb(number);
            self.push(" ");
            let object = self.number();
            self.noun_phrase(object, depth + 1);
        }
    }

    fn transitive_verb(&mut self, number: Number) {
        self.verb(&TRANSITIVE_VERBS, number);
    }

    fn verb(&mut self, verbs: &[&str], number: Number) {
        self.push_one_of(verbs);
        if let Number::Singular = number {
            self.push("s");
        }
    }
}
