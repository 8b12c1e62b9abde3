//! The tiny data sets the translation and classification tests train on, written into a
//! test's directory.

use std::path::Path;

const EN: [&str; 8] = [
    "the house",
    "the dog",
    "a house",
    "a dog",
    "the red house",
    "the big dog",
    "a red dog",
    "the house is big",
];
const ES: [&str; 8] = [
    "la casa",
    "el perro",
    "una casa",
    "un perro",
    "la casa roja",
    "el perro grande",
    "un perro rojo",
    "la casa es grande",
];

/// Writes `data/{train,valid,test}.{en,es}` in `dir`.
pub fn write_parallel_corpus(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train", "valid", "test"] {
        let n = if split == "train" { 8 } else { 3 };
        std::fs::write(data.join(format!("{split}.en")), EN[..n].join("\n") + "\n").unwrap();
        std::fs::write(data.join(format!("{split}.es")), ES[..n].join("\n") + "\n").unwrap();
    }
}

/// 120 sentences; the class is told by one word (`lovely` / `awful`), the score follows it.
pub fn write_sentiment_tsv(dir: &Path) {
    let mut text = String::from("domain\tscore\tlabel\ttext\n");
    for i in 0..120 {
        let (label, word, score) = [("neg", "awful", -2.0), ("pos", "lovely", 2.0)][i % 2];
        let domain = ["web", "news"][i % 3 % 2];
        let filler = ["the film", "a plot", "it was so", "and then"][i / 2 % 4];
        let score = score + (i % 5) as f64 * 0.1;
        text.push_str(&format!(
            "{domain}\t{score}\t{label}\t{filler} {word} {}\n",
            i % 7
        ));
    }
    std::fs::write(dir.join("s.tsv"), text).unwrap();
}
