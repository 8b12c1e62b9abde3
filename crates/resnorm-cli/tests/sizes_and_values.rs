//! Sizes beyond the machine and values that would poison a run are one `error:` line and
//! exit 2: huge widths, batches, corpora and benchmark shapes (checked before allocating), `bench
//! train --steps 0`, a checkpoint holding NaN, an IDX label of 200, a bad model name in a
//! study; the byte tokenizer trains on bytes that are not UTF-8.

mod common;

use common::{assert_one_line_error, idx, resnorm, temp_dir, tiny};

use resnorm::checkpoint::read_tensors;
use resnorm::checkpoint_set::{save_set, CheckpointSet, MANIFEST_FILE};

#[test]
fn sizes_beyond_the_machine_are_refused_before_allocating() {
    let dir = temp_dir("sizes", "huge");
    let train = |extra: &[&str]| {
        let mut args = vec!["train"];
        args.extend(tiny("--sample-tokens 0"));
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--steps", "1", "--out", "run"]);
        resnorm(&args, &dir)
    };
    let beyond = ["needs about", "GiB", "available on this machine"];
    assert_one_line_error(&train(&["--width", "1000000"]), &beyond);
    assert_one_line_error(&train(&["--batch", "100000000"]), &beyond);
    assert_one_line_error(&train(&["--corpus-chars", "100000000000"]), &beyond);
    assert_one_line_error(
        &resnorm(
            &["study", "--corpus-chars", "100000000000", "--out", "study"],
            &dir,
        ),
        &beyond,
    );
    assert_one_line_error(
        &resnorm(&["bench", "norms", "--shape", "100000000x100000000"], &dir),
        &beyond,
    );
    assert_one_line_error(
        &resnorm(&["bench", "train", "--width", "1000000"], &dir),
        &beyond,
    );
    assert_one_line_error(
        &resnorm(&["bench", "train", "--steps", "0"], &dir),
        &["--steps must be at least 1"],
    );
    assert_one_line_error(
        &resnorm(&["--threads", "1000000", "bench", "norms"], &dir),
        &["at most 1024"],
    );
    assert!(!dir.join("run").exists(), "nothing was written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_holding_nan_is_refused_by_eval() {
    let dir = temp_dir("sizes", "nan");
    let mut args = vec!["train"];
    args.extend(tiny("--sample-tokens 0"));
    args.extend_from_slice(&["--steps", "2", "--out", "run"]);
    assert_eq!(resnorm(&args, &dir).status.code(), Some(0));
    let run = dir.join("run");
    let set = CheckpointSet::open(&run).unwrap();
    let model = set.dir().join("model.safetensors");
    let mut checkpoint = read_tensors(&model).unwrap();
    checkpoint
        .tensors
        .get_mut("ln_f.weight")
        .unwrap()
        .data_mut()[7] = f32::NAN;
    checkpoint.write(&model).unwrap();
    // Saved again as a consistent set, as another writer could: the value check, not the
    // manifest's checksum, must refuse it.
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(set.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != MANIFEST_FILE)
        .map(|f| (f.clone(), std::fs::read(set.dir().join(&f)).unwrap()))
        .collect();
    save_set(&run, set.step(), |w| {
        (files.iter()).try_for_each(|(f, bytes)| w.file(f, |out| out.write_all(bytes)))
    })
    .unwrap();
    assert_one_line_error(
        &resnorm(&["eval", "--checkpoint", "run", "--json"], &dir),
        &[
            "model.safetensors",
            "`ln_f.weight` holds NaN at flat index 7",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_byte_tokenizer_trains_on_bytes_that_are_not_utf8() {
    let dir = temp_dir("sizes", "latin1");
    let text: Vec<u8> = b"caf\xE9 au lait, cr\xE8me br\xFBl\xE9e. "
        .iter()
        .copied()
        .cycle()
        .take(3000)
        .collect();
    std::fs::write(dir.join("latin1.txt"), text).unwrap();
    let mut args = vec!["train"];
    args.extend(tiny("--sample-tokens 0"));
    args.extend_from_slice(&[
        "--data",
        "latin1.txt",
        "--tokenizer",
        "byte",
        "--steps",
        "2",
        "--out",
        "run",
    ]);
    let out = resnorm(&args, &dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vision_refuses_bad_labels_and_bad_model_names_before_training() {
    let dir = temp_dir("sizes", "vision");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for split in ["train", "t10k"] {
        let images = idx(&[8, 4, 4], &[128; 8 * 16]);
        std::fs::write(data.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        let labels = idx(&[8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        std::fs::write(data.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
    // A bad name is refused before the data are even read, let alone resnet20 trained.
    let study = resnorm(
        &[
            "vision",
            "study",
            "--data",
            "data",
            "--models",
            "resnet20,bogus",
            "--out",
            "study",
        ],
        &dir,
    );
    assert_one_line_error(&study, &["bogus"]);
    assert!(!dir.join("study").exists());
    let labels = idx(&[8], &[0, 1, 2, 3, 200, 5, 6, 7]);
    std::fs::write(data.join("train-labels-idx1-ubyte"), labels).unwrap();
    let train = resnorm(
        &[
            "vision", "train", "--data", "data", "--model", "mlp", "--out", "run",
        ],
        &dir,
    );
    assert_one_line_error(
        &train,
        &["train-labels-idx1-ubyte", "label 200 of record 4"],
    );
    let labels = idx(&[8], &[0, 1, 2, 3, 4, 5, 6, 7]);
    std::fs::write(data.join("train-labels-idx1-ubyte"), labels).unwrap();
    let wide = resnorm(
        &[
            "vision", "train", "--data", "data", "--model", "mlp", "--width", "10000000", "--out",
            "run",
        ],
        &dir,
    );
    assert_one_line_error(
        &wide,
        &["training needs about", "available on this machine"],
    );
    assert!(!dir.join("run").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
