//! The joint BPE tokenizer: deterministic training, exact round trips, the committed
//! `tokenizer.json` reproduced byte for byte, the same ids as Python's `tokenizers` on it
//! (fixture of tools/fixtures/bpe.py), bad files refused, and an 8k vocabulary on the real
//! corpus when ../shared/data is present (saved to `$RESNORM_SAVE_BPE` when that is set).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use resnorm::translate::{Bpe, ParallelCorpus, BOS, EOS, PAD, UNK};

/// The training text of the committed fixture `bpe_tokenizer.json`.
const ENGLISH: [&str; 8] = [
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
    "And the evening and the morning were the first day.",
    "Where is the child? There, with the lady!",
    "The houses of the city are white; the city is old.",
    "He said: \"yes,\" (twice) and 1,000 cats came in 2019-2020.",
    "And he went up into the mountain, and called unto him whom he would.",
    "The  double  spaces stay,\tand so does a tab.",
];
const SPANISH: [&str; 8] = [
    "EN el principio crió Dios los cielos y la tierra.",
    "Y dijo Dios: Sea la luz: y fué la luz.",
    "Y fué la tarde y la mañana un día.",
    "¿Dónde está el niño? ¡Allí, junto a la señora!",
    "Las casas de la ciudad son blancas; la ciudad es antigua.",
    "Él dijo: «sí» (dos veces) y 1.000 gatos vinieron en 2019-2020.",
    "Y subió al monte, y llamó á sí á los que él quiso.",
    "Los  espacios  dobles quedan,\ty también un tabulador.",
];
const FIXTURE_VOCAB: usize = 160;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture_corpus() -> ParallelCorpus {
    ParallelCorpus::from_pairs(
        ENGLISH.map(String::from).to_vec(),
        SPANISH.map(String::from).to_vec(),
    )
    .unwrap()
}

#[test]
fn training_is_deterministic_and_reproduces_the_committed_tokenizer() {
    let corpus = fixture_corpus();
    let json = Bpe::train(&corpus, FIXTURE_VOCAB)
        .unwrap()
        .to_json()
        .unwrap();
    assert_eq!(
        json,
        Bpe::train(&corpus, FIXTURE_VOCAB)
            .unwrap()
            .to_json()
            .unwrap()
    );
    let path = fixture_path("bpe_tokenizer.json");
    if std::env::var_os("RESNORM_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        json == committed,
        "training on the fixture lines no longer gives tests/fixtures/bpe_tokenizer.json"
    );
}

#[test]
fn special_tokens_vocabulary_and_round_trips() {
    let bpe = Bpe::train(&fixture_corpus(), FIXTURE_VOCAB).unwrap();
    assert_eq!(bpe.vocab_size(), FIXTURE_VOCAB);
    for (id, token) in [(PAD, "<pad>"), (BOS, "<s>"), (EOS, "</s>"), (UNK, "<unk>")] {
        assert_eq!(bpe.token_to_id(token), Some(id));
    }
    for line in ENGLISH.iter().chain(&SPANISH) {
        let ids = bpe.encode(line).unwrap();
        assert!(!ids.contains(&UNK), "{line}");
        assert_eq!(bpe.decode(&ids).unwrap(), *line);
        let mut wrapped = vec![BOS];
        wrapped.extend(&ids);
        wrapped.extend([EOS, PAD, PAD]);
        assert_eq!(bpe.decode(&wrapped).unwrap(), *line);
    }
    // A character never seen in training becomes <unk>, which decoding drops.
    let ids = bpe.encode("the ✓ earth").unwrap();
    assert!(ids.contains(&UNK));
    assert_eq!(bpe.decode(&ids).unwrap(), "the  earth");
    common::assert_invalid(
        bpe.decode(&[5, 160]),
        "id 160 is outside the vocabulary of 160",
    );
    common::assert_invalid(Bpe::train(&fixture_corpus(), 4), "no room");
}

#[test]
fn python_tokenizers_encodes_identically() {
    let bpe = Bpe::load(&fixture_path("bpe_tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(fixture_path("bpe_python.json")).unwrap();
    let python: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = python["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let sentence = case["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(bpe.encode(sentence).unwrap(), ids, "{sentence:?}");
        assert_eq!(
            bpe.decode(&ids).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{sentence:?}"
        );
    }
}

#[test]
fn save_load_and_bad_files() {
    let dir = common::TempDir::new("bpe_files");
    let bpe = Bpe::train(&fixture_corpus(), FIXTURE_VOCAB).unwrap();
    let path = dir.0.join("tokenizer.json");
    bpe.save(&path).unwrap();
    assert_eq!(
        Bpe::load(&path).unwrap().to_json().unwrap(),
        bpe.to_json().unwrap()
    );
    let garbage = dir.write("garbage.json", b"{\"kind\":\"gpt2\"}");
    let err = Bpe::load(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("garbage.json") && err.contains("not a tokenizer.json"),
        "{err}"
    );
    // A valid tokenizer.json of another layout: <unk> first, no <pad>.
    let other = bpe.to_json().unwrap().replace("\"<pad>\"", "\"<other>\"");
    let other = dir.write("other.json", other.as_bytes());
    let err = Bpe::load(&other).unwrap_err().to_string();
    assert!(err.contains("<pad> is not id 0"), "{err}");
    let missing = dir.0.join("missing.json");
    assert!(matches!(
        Bpe::load(&missing),
        Err(resnorm::Error::Io { .. })
    ));
}

#[test]
fn an_8k_vocabulary_on_the_real_corpus() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("translation");
    let train = ParallelCorpus::read(&dir, "train", "en", "es").unwrap();
    let start = Instant::now();
    let bpe = Bpe::train(&train, 8000).unwrap();
    eprintln!(
        "BPE 8k on {} pairs: {:.2} s",
        train.len(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(bpe.vocab_size(), 8000);
    if let Some(out) = std::env::var_os("RESNORM_SAVE_BPE") {
        // For tools/check_bpe_twin.py, which compares it with Python's training.
        bpe.save(std::path::Path::new(&out)).unwrap();
    }
    let test = ParallelCorpus::read(&dir, "test", "en", "es").unwrap();
    let (mut ids, mut unknown) = (0, 0);
    for line in test.source().iter().chain(test.target()) {
        let encoded = bpe.encode(line).unwrap();
        ids += encoded.len();
        unknown += encoded.iter().filter(|&&id| id == UNK).count();
        if !encoded.contains(&UNK) {
            assert_eq!(&bpe.decode(&encoded).unwrap(), line);
        }
    }
    eprintln!("test split: {ids} ids for 2,000 sentences, {unknown} <unk>");
    assert!(unknown * 1000 < ids, "{unknown} <unk> of {ids} ids");
}
