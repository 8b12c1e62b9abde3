//! Parallel data: line-aligned files and TSV (every defect one line naming the file and line,
//! on tiny files in a temp folder), batches by token count (budget, coverage, greedy filling,
//! seeded order), and the real corpus when ../shared/data is present.

mod common;

use std::collections::HashSet;

use common::TempDir;
use resnorm::translate::{EncodedPair, ParallelCorpus, TokenBatches};
use resnorm::Error;

fn format_error<T: std::fmt::Debug>(result: resnorm::Result<T>) -> String {
    match result {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn line_aligned_files_are_read() {
    let dir = TempDir::new("aligned");
    dir.write("train.en", b"Hello.\r\nThe house.");
    dir.write("train.es", "Hola.\n¿La casa?\n".as_bytes());
    let corpus = ParallelCorpus::read(&dir.0, "train", "en", "es").unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus.pair(0), ("Hello.", "Hola."));
    assert_eq!(corpus.pair(1), ("The house.", "¿La casa?"));
    assert_eq!(corpus.source().len(), corpus.target().len());
}

#[test]
fn every_defect_is_one_line_naming_the_file() {
    let dir = TempDir::new("defects");
    dir.write("a.en", b"one\ntwo\nthree\n");
    dir.write("a.es", b"uno\ndos\n");
    let err = format_error(ParallelCorpus::read(&dir.0, "a", "en", "es"));
    let (en, es) = (dir.0.join("a.en"), dir.0.join("a.es"));
    assert_eq!(
        err,
        format!("{}: 3 lines, but {} has 2", en.display(), es.display())
    );

    dir.write("b.en", b"one\n\nthree\n");
    dir.write("b.es", b"uno\ndos\ntres\n");
    let err = format_error(ParallelCorpus::read(&dir.0, "b", "en", "es"));
    assert!(
        err.ends_with("b.en: line 2 is empty (every line must hold a sentence)"),
        "{err}"
    );

    dir.write("c.en", b"one\ntwo\n");
    dir.write("c.es", b"uno\nd\xf3s\n");
    let err = format_error(ParallelCorpus::read(&dir.0, "c", "en", "es"));
    assert!(
        err.ends_with("c.es: line 2 is not UTF-8 (invalid byte at column 2)"),
        "{err}"
    );

    dir.write("d.en", b"");
    dir.write("d.es", b"uno\n");
    let err = format_error(ParallelCorpus::read(&dir.0, "d", "en", "es"));
    assert!(err.ends_with("d.en: is empty: no sentences"), "{err}");

    dir.write("e.en", b"one\n  \t\n");
    dir.write("e.es", b"uno\ndos\n");
    let err = format_error(ParallelCorpus::read(&dir.0, "e", "en", "es"));
    assert!(
        err.ends_with("e.en: line 2 is empty (every line must hold a sentence)"),
        "{err}"
    );

    let missing = ParallelCorpus::read(&dir.0, "missing", "en", "es");
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
}

#[test]
fn tsv_pairs_are_read_and_checked() {
    let dir = TempDir::new("tsv");
    let good = dir.write("pairs.tsv", "The house.\tLa casa.\nYes.\t¡Sí!\n".as_bytes());
    let corpus = ParallelCorpus::read_tsv(&good).unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(corpus.pair(1), ("Yes.", "¡Sí!"));
    for (content, needle) in [
        (
            &b"a\tb\nc\n"[..],
            "line 2: 1 tab-separated columns, expected 2 (source<TAB>target)",
        ),
        (
            b"a\tb\tc\n",
            "line 1: 3 tab-separated columns, expected 2 (source<TAB>target)",
        ),
        (
            b"a\tb\n \tc\n",
            "line 2: the source is empty (target \"c\")",
        ),
        (b"a\t\n", "line 1: the target is empty (source \"a\")"),
        (
            b"a\tb\n\n",
            "line 2 is empty (every line must hold a sentence)",
        ),
        (
            b"a\t\xff\n",
            "line 1 is not UTF-8 (invalid byte at column 3)",
        ),
    ] {
        let path = dir.write("bad.tsv", content);
        let err = format_error(ParallelCorpus::read_tsv(&path));
        assert!(err.contains("bad.tsv: ") && err.ends_with(needle), "{err}");
    }
}

#[test]
fn pairs_in_memory_are_checked() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    common::assert_invalid(
        ParallelCorpus::from_pairs(s(&["a", "b"]), s(&["a"])),
        "2 source sentences but 1 target",
    );
    common::assert_invalid(
        ParallelCorpus::from_pairs(s(&["a", "b"]), s(&["a", " "])),
        "pair 1 has an empty sentence",
    );
    assert!(ParallelCorpus::from_pairs(vec![], vec![])
        .unwrap()
        .is_empty());
}

/// Pairs of the given (source, target) lengths.
fn pairs(lengths: &[(usize, usize)]) -> Vec<EncodedPair> {
    lengths
        .iter()
        .map(|&(s, t)| EncodedPair {
            source: vec![5; s],
            target: vec![6; t],
        })
        .collect()
}

/// Checks the budget, that every kept pair is in exactly one batch, and that the batches
/// are filled greedily (the next batch's first pair would not have fitted).
fn check_batches(pairs: &[EncodedPair], batches: &TokenBatches, max_tokens: usize, max_len: usize) {
    let mut seen = HashSet::new();
    let cost =
        |batch: &[usize]| batch.len() * batch.iter().map(|&i| pairs[i].size()).max().unwrap();
    for b in 0..batches.len() {
        let batch = batches.batch(b);
        assert!(!batch.is_empty());
        assert!(cost(batch) <= max_tokens, "batch {b} costs {}", cost(batch));
        for &i in batch {
            assert!(seen.insert(i), "pair {i} is in two batches");
        }
        if b + 1 < batches.len() {
            let mut grown = batch.to_vec();
            grown.push(batches.batch(b + 1)[0]);
            assert!(
                cost(&grown) > max_tokens,
                "batch {b} could have taken one more"
            );
        }
    }
    let fits = |p: &EncodedPair| p.size() <= max_len.min(max_tokens);
    assert_eq!(seen.len() + batches.skipped(), pairs.len());
    assert_eq!(batches.skipped(), pairs.iter().filter(|p| !fits(p)).count());
}

#[test]
fn batches_respect_the_budget_and_are_seeded() {
    let mut rng = resnorm::rng::Rng::new(3);
    let lengths: Vec<(usize, usize)> = (0..500)
        .map(|_| (1 + rng.below(60), 1 + rng.below(60)))
        .collect();
    let pairs = pairs(&lengths);
    let batches = TokenBatches::new(&pairs, 256, 50, 7).unwrap();
    check_batches(&pairs, &batches, 256, 50);
    assert!(batches.skipped() > 0);
    assert_eq!(batches, TokenBatches::new(&pairs, 256, 50, 7).unwrap());
    let other_seed = TokenBatches::new(&pairs, 256, 50, 8).unwrap();
    check_batches(&pairs, &other_seed, 256, 50);
    assert_ne!(
        batches, other_seed,
        "ties between equal lengths follow the seed"
    );

    let order = batches.epoch_order(0);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..batches.len()).collect::<Vec<_>>());
    assert_eq!(order, batches.epoch_order(0));
    assert_ne!(order, batches.epoch_order(1));
    assert_ne!(order, other_seed.epoch_order(0));
}

#[test]
fn over_long_pairs_and_bad_limits() {
    let pairs = pairs(&[(3, 3), (10, 2), (2, 10), (4, 4)]);
    let batches = TokenBatches::new(&pairs, 8, 100, 0).unwrap();
    assert_eq!(batches.skipped(), 2, "longer than max_tokens");
    check_batches(&pairs, &batches, 8, 100);
    let batches = TokenBatches::new(&pairs, 100, 9, 0).unwrap();
    assert_eq!(batches.skipped(), 2, "longer than max_len");
    let none = TokenBatches::new(&pairs, 1, 1, 0).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.skipped(), 4);
    assert!(none.epoch_order(3).is_empty());
    common::assert_invalid(TokenBatches::new(&pairs, 0, 9, 0), "must be positive");
    common::assert_invalid(TokenBatches::new(&pairs, 9, 0, 0), "must be positive");
}

#[test]
fn the_real_corpus() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("translation");
    for (split, pairs) in [("train", 28_656), ("valid", 1_000), ("test", 1_000)] {
        let corpus = ParallelCorpus::read(&dir, split, "en", "es").unwrap();
        assert_eq!(corpus.len(), pairs, "{split}");
    }
    let test = ParallelCorpus::read(&dir, "test", "en", "es").unwrap();
    let words = |s: &str| vec![0u32; s.split_whitespace().count() + 1];
    let encoded: Vec<EncodedPair> = (0..test.len())
        .map(|i| EncodedPair {
            source: words(test.pair(i).0),
            target: words(test.pair(i).1),
        })
        .collect();
    let batches = TokenBatches::new(&encoded, 1024, 64, 1).unwrap();
    check_batches(&encoded, &batches, 1024, 64);
    assert!(batches.skipped() < 20, "{} skipped", batches.skipped());
}
