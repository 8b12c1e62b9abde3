//! An independent reader of the built-in corpus grammar (`resnorm::data::text::Corpus`): it
//! parses the text back, checks agreement and references on the way, and recomputes the entropy.

use resnorm::data::text::lexicon::*;
use resnorm::data::text::*;

/// Grammatical number, as read back from the text.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
    Singular,
    Plural,
}

/// An independent recursive-descent reader of the corpus grammar (see `data::Corpus`). It
/// decides every alternative from the words ahead, so a successful parse of the whole text is
/// the text's one derivation; it adds up `-ln p` of the choices it recognizes and counts the
/// agreement it checks on the way.
pub struct CorpusReader<'a> {
    text: &'a str,
    pos: usize,
    pub nats: f64,
    pub singular_phrases: usize,
    pub plural_phrases: usize,
    pub relative_clauses: usize,
}

impl<'a> CorpusReader<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn context(&self) -> String {
        let end = (self.pos + 60).min(self.text.len());
        format!("at byte {}: {:?}", self.pos, &self.text[self.pos..end])
    }

    fn literal(&mut self, expected: &str) {
        assert!(
            self.rest().starts_with(expected),
            "expected {expected:?} {}",
            self.context()
        );
        self.pos += expected.len();
    }

    fn peek_word(&self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        &rest[..end]
    }

    fn word(&mut self) -> &'a str {
        let word = self.peek_word();
        assert!(!word.is_empty(), "expected a word {}", self.context());
        self.pos += word.len();
        word
    }

    fn uniform(&mut self, n: usize) {
        self.nats += (n as f64).ln();
    }

    fn probability(&mut self, p: f64) {
        self.nats -= p.ln();
    }

    fn story(&mut self) {
        self.literal("Once there was a ");
        assert!(ROLES.contains(&self.word()), "role {}", self.context());
        self.uniform(ROLES.len());
        self.literal(" named ");
        let name = self.word();
        let &(name, pronoun) = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a known name");
        self.uniform(NAMES.len());
        self.literal(".");
        let mut sentences = 0;
        loop {
            self.literal(" ");
            if self.peek_word() == "That" {
                break;
            }
            self.sentence(name, pronoun);
            sentences += 1;
        }
        assert!(
            (MIN_SENTENCES..=MAX_SENTENCES).contains(&sentences),
            "{sentences} sentences"
        );
        self.uniform(MAX_SENTENCES - MIN_SENTENCES + 1);
        // The long-range dependency: the closing sentence repeats the hero's name.
        self.literal("That is the story of ");
        self.literal(name);
        self.literal(".");
    }

    fn sentence(&mut self, name: &str, pronoun: &str) {
        let capitalized_pronoun = format!("{}{}", pronoun[..1].to_uppercase(), &pronoun[1..]);
        let first = self.peek_word();
        if first == name && self.rest()[name.len()..].starts_with(" said, \"") {
            self.probability(SENTENCE_WEIGHTS[2]);
            self.literal(name);
            self.literal(" said, \"");
            self.clause(true);
            self.literal(".\"");
        } else if first == name || first == capitalized_pronoun {
            self.probability(SENTENCE_WEIGHTS[1]);
            self.uniform(2);
            self.word();
            self.literal(" ");
            self.verb_phrase(Number::Singular, 0);
            self.literal(".");
        } else {
            self.probability(SENTENCE_WEIGHTS[0]);
            self.clause(true);
            if self.rest().starts_with(" (and ") {
                self.probability(ASIDE_PROBABILITY);
                self.literal(" (and ");
                // The pronoun agrees with the hero's name, introduced sentences before.
                self.literal(pronoun);
                self.literal(" ");
                self.transitive_verb(Number::Singular);
                self.literal(" ");
                self.noun_phrase(1, false);
                self.literal(")");
            } else {
                self.probability(1.0 - ASIDE_PROBABILITY);
            }
            self.literal(".");
        }
    }

    fn clause(&mut self, capitalized: bool) {
        let number = self.noun_phrase(0, capitalized);
        self.literal(" ");
        self.verb_phrase(number, 0);
    }

    fn noun_phrase(&mut self, depth: usize, capitalized: bool) -> Number {
        self.uniform(2); // the phrase's number
        let written = self.word();
        let determiner = if capitalized {
            assert!(
                written.starts_with(|c: char| c.is_ascii_uppercase()),
                "capital {}",
                self.context()
            );
            written.to_lowercase()
        } else {
            written.to_string()
        };
        self.literal(" ");
        let mut noun = self.word();
        if ADJECTIVES.contains(&noun) {
            self.probability(ADJECTIVE_PROBABILITY);
            self.uniform(ADJECTIVES.len());
            self.literal(" ");
            noun = self.word();
        } else {
            self.probability(1.0 - ADJECTIVE_PROBABILITY);
        }
        let (number, determiners) = if NOUNS.contains(&noun) {
            (Number::Singular, &DETERMINERS_SINGULAR)
        } else {
            let stem = noun
                .strip_suffix('s')
                .unwrap_or_else(|| panic!("noun {noun:?} {}", self.context()));
            assert!(NOUNS.contains(&stem), "noun {noun:?} {}", self.context());
            (Number::Plural, &DETERMINERS_PLURAL)
        };
        match number {
            Number::Singular => self.singular_phrases += 1,
            Number::Plural => self.plural_phrases += 1,
        }
        assert!(
            determiners.contains(&determiner.as_str()),
            "{determiner} {noun} {}",
            self.context()
        );
        self.uniform(determiners.len());
        self.uniform(NOUNS.len());
        if let Some(&(subject, object)) = RELATIVE_CLAUSE_PROBABILITIES.get(depth) {
            if self.rest().starts_with(" that ") {
                self.literal(" that ");
                self.relative_clauses += 1;
                let next = self.peek_word();
                if DETERMINERS_SINGULAR.contains(&next) || DETERMINERS_PLURAL.contains(&next) {
                    self.probability(object);
                    let inner = self.noun_phrase(depth + 1, false);
                    self.literal(" ");
                    self.transitive_verb(inner);
                } else {
                    self.probability(subject);
                    self.verb_phrase(number, depth + 1);
                }
            } else {
                self.probability(1.0 - subject - object);
            }
        }
        number
    }

    /// A verb of `verbs` in the form that agrees with `number`.
    fn verb(&mut self, verbs: &[&str], number: Number) -> bool {
        let written = self.peek_word();
        let stem = match number {
            Number::Singular => written.strip_suffix('s').unwrap_or(""),
            Number::Plural => written,
        };
        if !verbs.contains(&stem) {
            return false;
        }
        self.word();
        self.uniform(verbs.len());
        true
    }

    fn transitive_verb(&mut self, number: Number) {
        assert!(
            self.verb(&TRANSITIVE_VERBS, number),
            "{number:?} transitive verb {}",
            self.context()
        );
    }

    fn verb_phrase(&mut self, number: Number, depth: usize) {
        self.uniform(2);
        if !self.verb(&INTRANSITIVE_VERBS, number) {
            self.transitive_verb(number);
            self.literal(" ");
            self.noun_phrase(depth + 1, false);
        }
    }
}

pub fn read_corpus(text: &str) -> CorpusReader<'_> {
    let mut reader = CorpusReader {
        text,
        pos: 0,
        nats: 0.0,
        singular_phrases: 0,
        plural_phrases: 0,
        relative_clauses: 0,
    };
    loop {
        reader.story();
        if reader.pos == text.len() {
            return reader;
        }
        reader.literal("\n");
    }
}
