//! Helpers shared by the end-to-end tests of the `resnorm` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod corpora;

/// A model and corpus small enough that a debug binary trains it in well under a second.
const TINY_MODEL: &str =
    "--layers 1 --heads 2 --width 16 --context 16 --batch 4 --corpus-chars 5000";

/// The flags of [`TINY_MODEL`] followed by `extra` (space-separated).
pub fn tiny(extra: &'static str) -> Vec<&'static str> {
    TINY_MODEL
        .split(' ')
        .chain(extra.split_whitespace())
        .collect()
}

/// A fresh, empty directory for the test `name` of `suite`.
pub fn temp_dir(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnorm-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary with `args`, run in `dir`.
pub fn command(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resnorm"));
    command.args(args).current_dir(dir);
    command
}

/// Runs the binary with `args` in `dir` to its end.
pub fn resnorm(args: &[&str], dir: &Path) -> Output {
    command(args, dir).output().expect("the binary runs")
}

/// Runs the binary with `args` in `dir` to its end, `input` on its standard input.
pub fn resnorm_with_stdin(args: &[&str], dir: &Path, input: &[u8]) -> Output {
    let mut child = command(args, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary with `--threads 1` and `args` in the current directory to its end.
pub fn one_thread(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnorm"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 2 and exactly one line on stderr, an `error:` containing every one of `expected`.
pub fn assert_one_line_error(out: &Output, expected: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for part in expected {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
}

/// An IDX file of unsigned bytes: magic, big-endian sizes, `data`.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    bytes.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    bytes.extend_from_slice(data);
    bytes
}
