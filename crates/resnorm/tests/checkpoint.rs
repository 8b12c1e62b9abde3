//! Checkpoint files: bit-exact round trips, atomic replacement, and every defect a file can
//! have reported as a typed error naming the file.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use resnorm::checkpoint::{
    load_params, read_tensors, save_params, write_atomic, write_atomic_with, write_json_atomic,
    write_tensors, TensorRef,
};
use resnorm::nn::{Param, ParamKind};
use resnorm::Error;

/// A fresh, empty directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoint-tests")
        .join(test);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Values whose bits a lossy path would change: signed zero, infinities, a NaN with a
/// payload, subnormals, extremes.
fn awkward_values() -> Vec<f32> {
    vec![
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(1),
        f32::MAX,
        f32::MIN_POSITIVE,
        std::f32::consts::PI,
    ]
}

#[test]
fn tensors_and_metadata_round_trip_bit_exact() {
    let dir = scratch_dir("round_trip");
    let path = dir.join("t.safetensors");
    let awkward = awkward_values();
    let scalar = [42.5f32];
    let written = [
        TensorRef {
            name: "z.awkward",
            shape: &[2, 4],
            data: &awkward,
        },
        TensorRef {
            name: "a.scalar",
            shape: &[],
            data: &scalar,
        },
        TensorRef {
            name: "m.empty",
            shape: &[0, 3],
            data: &[],
        },
    ];
    let meta = metadata(&[("step", "7"), ("note", "ünïcode \" quotes")]);
    write_tensors(&path, &written, &meta).unwrap();

    let read = read_tensors(&path).unwrap();
    assert_eq!(read.metadata, meta);
    assert_eq!(
        read.tensors.keys().collect::<Vec<_>>(),
        ["a.scalar", "m.empty", "z.awkward"]
    );
    for tensor in &written {
        let back = &read.tensors[tensor.name];
        assert_eq!(back.shape(), tensor.shape, "{}", tensor.name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back.data()), bits(tensor.data), "{}", tensor.name);
    }
    assert_eq!(entries(&dir), ["t.safetensors"], "no temporary file left");
}

#[test]
fn the_same_tensors_give_the_same_bytes() {
    let dir = scratch_dir("deterministic");
    let a = [1.0f32, 2.0];
    let b = [3.0f32];
    let meta = metadata(&[("z", "1"), ("a", "2"), ("m", "3"), ("k", "4")]);
    let forward = [
        TensorRef {
            name: "b",
            shape: &[1],
            data: &b,
        },
        TensorRef {
            name: "a",
            shape: &[2],
            data: &a,
        },
    ];
    let backward = [forward[1], forward[0]];
    write_tensors(dir.join("1"), &forward, &meta).unwrap();
    write_tensors(dir.join("2"), &backward, &meta).unwrap();
    let first = std::fs::read(dir.join("1")).unwrap();
    assert_eq!(first, std::fs::read(dir.join("2")).unwrap());
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0, "header padded to 8 bytes");
    assert_eq!(first.len(), 8 + header_len + 4 * 3);
}

#[test]
fn reads_a_file_written_by_pytorch_safetensors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim.safetensors");
    let read = read_tensors(&path).unwrap();
    let fixture = common::Fixture::load("optim");
    assert_eq!(read.tensors.len(), fixture.tensors.len());
    for (name, tensor) in &fixture.tensors {
        assert_eq!(
            read.tensors[name].shape(),
            tensor.shape.as_slice(),
            "{name}"
        );
        assert_eq!(read.tensors[name].data(), tensor.data.as_slice(), "{name}");
    }
    assert_eq!(read.metadata["steps"], "5");
}

fn model_params() -> Vec<Param> {
    let mut w = Param::zeros("h.0.fc.weight", vec![3, 2], ParamKind::Weight);
    let mut b = Param::zeros("h.0.fc.bias", vec![2], ParamKind::Bias);
    w.value = vec![0.1, -0.2, 0.3, -0.4, 0.5, -0.6].into();
    b.value = vec![1e-3, -1e3].into();
    vec![w, b]
}

fn zeroed(params: &[Param]) -> Vec<Param> {
    params
        .iter()
        .map(|p| Param::zeros(p.name.clone(), p.shape.clone(), p.kind))
        .collect()
}

#[test]
fn params_round_trip_through_save_and_load() {
    let dir = scratch_dir("params");
    let path = dir.join("model.safetensors");
    let params = model_params();
    save_params(&path, &params, &metadata(&[("arch", "mlp")])).unwrap();
    let mut restored = zeroed(&params);
    let meta = load_params(&path, &mut restored).unwrap();
    assert_eq!(meta["arch"], "mlp");
    assert_eq!(restored, params);
}

/// Loads `path` into fresh copies of `model_params()`, expects a Format error mentioning
/// every needle, and checks that no parameter changed.
fn expect_load_error(path: &Path, mut params: Vec<Param>, needles: &[&str]) {
    let before = params.clone();
    let err = load_params(path, &mut params).unwrap_err();
    match &err {
        Error::Format { path: p, .. } => assert_eq!(p, path),
        other => panic!("expected a format error, got {other:?}"),
    }
    for needle in needles {
        assert!(err.to_string().contains(needle), "`{needle}` not in: {err}");
    }
    assert_eq!(params, before, "a refused load changed parameters");
}

#[test]
fn load_params_names_missing_extra_and_misshapen_tensors() {
    let dir = scratch_dir("load_errors");
    let path = dir.join("model.safetensors");
    let params = model_params();
    save_params(&path, &params, &BTreeMap::new()).unwrap();

    let mut with_extra_param = zeroed(&params);
    with_extra_param.push(Param::zeros("h.1.fc.bias", vec![2], ParamKind::Bias));
    expect_load_error(&path, with_extra_param, &["missing tensor `h.1.fc.bias`"]);

    expect_load_error(
        &path,
        zeroed(&params[..1]),
        &["unexpected tensor `h.0.fc.bias`"],
    );

    let mut transposed = zeroed(&params);
    transposed[0].shape = vec![2, 3];
    expect_load_error(&path, transposed, &["`h.0.fc.weight`", "[3, 2]", "[2, 3]"]);

    let mut inconsistent = zeroed(&params);
    inconsistent[1].value = vec![0.0; 3].into();
    expect_load_error(&path, inconsistent, &["`h.0.fc.bias`", "3 values"]);
}

#[test]
fn invalid_tensors_are_refused_before_touching_the_file() {
    let dir = scratch_dir("invalid_write");
    let path = dir.join("t.safetensors");
    let two = [1.0f32, 2.0];
    let cases: [(&[TensorRef], &str); 4] = [
        (
            &[TensorRef {
                name: "a",
                shape: &[3],
                data: &two,
            }],
            "shape mismatch",
        ),
        (
            &[
                TensorRef {
                    name: "a",
                    shape: &[2],
                    data: &two,
                },
                TensorRef {
                    name: "a",
                    shape: &[2],
                    data: &two,
                },
            ],
            "two tensors are named `a`",
        ),
        (
            &[TensorRef {
                name: "",
                shape: &[2],
                data: &two,
            }],
            "cannot name",
        ),
        (
            &[TensorRef {
                name: "__metadata__",
                shape: &[2],
                data: &two,
            }],
            "cannot name",
        ),
    ];
    for (tensors, needle) in cases {
        let err = write_tensors(&path, tensors, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let mut duplicate = model_params();
    duplicate[1].name = duplicate[0].name.clone();
    duplicate[1].shape = duplicate[0].shape.clone();
    duplicate[1].value = duplicate[0].value.clone();
    assert!(save_params(&path, &duplicate, &BTreeMap::new()).is_err());
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

#[test]
fn overwriting_replaces_the_file_whole() {
    let dir = scratch_dir("overwrite");
    let path = dir.join("model.safetensors");
    let params = model_params();
    save_params(&path, &params[..1], &metadata(&[("step", "1")])).unwrap();
    save_params(&path, &params, &metadata(&[("step", "2")])).unwrap();
    let read = read_tensors(&path).unwrap();
    assert_eq!(read.metadata["step"], "2");
    assert_eq!(read.tensors.len(), 2);
    assert_eq!(entries(&dir), ["model.safetensors"]);
}

#[test]
fn a_failing_write_leaves_the_old_file_and_no_temporary_file() {
    let dir = scratch_dir("failing_write");
    let path = dir.join("model.safetensors");
    let params = model_params();
    save_params(&path, &params, &metadata(&[("step", "1")])).unwrap();
    let old = std::fs::read(&path).unwrap();

    let err = write_atomic_with(&path, |file| {
        file.write_all(b"half of a new checkpoint")?;
        Err(std::io::Error::other("disk full (injected)"))
    })
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("disk full (injected)"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), old);
    assert_eq!(entries(&dir), ["model.safetensors"]);
    let mut restored = zeroed(&params);
    load_params(&path, &mut restored).unwrap();
    assert_eq!(restored, params);
}

#[test]
fn a_failing_rename_removes_the_temporary_file() {
    let dir = scratch_dir("failing_rename");
    let target = dir.join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = write_atomic(&target, b"new contents").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(entries(&dir), ["occupied"]);
    assert_eq!(entries(&target), ["keep"]);
}

#[test]
fn writing_into_a_missing_directory_or_to_no_file_name_is_an_error() {
    let dir = scratch_dir("missing_dir");
    let err = write_atomic(dir.join("absent/model.safetensors"), b"x").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let err = write_atomic(dir.join(".."), b"x").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn json_is_written_atomically_and_reads_back() {
    let dir = scratch_dir("json");
    let path = dir.join("run.json");
    let value = serde_json::json!({"step": 3, "loss": 2.5, "tags": ["a", "b"]});
    write_json_atomic(&path, &value).unwrap();
    write_json_atomic(&path, &value).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        value
    );
    assert_eq!(entries(&dir), ["run.json"]);
}

#[test]
fn a_missing_file_is_an_io_error() {
    let dir = scratch_dir("missing_file");
    let path = dir.join("nothing.safetensors");
    match read_tensors(&path).unwrap_err() {
        Error::Io { path: p, source } => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an io error, got {other:?}"),
    }
}

/// A safetensors file with header `json` (padded) followed by `data`.
fn raw_file(json: &str, data: &[u8]) -> Vec<u8> {
    let mut header = json.as_bytes().to_vec();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    bytes
}

/// Writes `bytes` and expects reading them to fail with a Format error mentioning `needle`.
fn expect_format_error(dir: &Path, name: &str, bytes: &[u8], needle: &str) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = read_tensors(&path).unwrap_err();
    match &err {
        Error::Format { path: p, detail } => {
            assert_eq!(p, &path);
            assert!(
                detail.contains(needle),
                "{name}: `{needle}` not in `{detail}`"
            );
        }
        other => panic!("{name}: expected a format error, got {other:?}"),
    }
}

#[test]
fn every_defect_of_a_file_is_a_format_error() {
    let dir = scratch_dir("defects");
    let path = dir.join("good.safetensors");
    save_params(&path, &model_params(), &metadata(&[("step", "1")])).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;

    expect_format_error(&dir, "empty", &[], "truncated: 0 bytes");
    expect_format_error(&dir, "five_bytes", &good[..5], "truncated: 5 bytes");
    expect_format_error(
        &dir,
        "cut_in_header",
        &good[..8 + header_len / 2],
        "truncated: the header declares",
    );
    expect_format_error(
        &dir,
        "cut_in_data",
        &good[..good.len() - 4],
        "truncated or padded",
    );
    let mut padded = good.clone();
    padded.extend([0u8; 4]);
    expect_format_error(&dir, "trailing_bytes", &padded, "truncated or padded");

    let mut garbled = good.clone();
    garbled[8] = b'#';
    expect_format_error(&dir, "garbled_json", &garbled, "corrupt header");
    let mut not_utf8 = good.clone();
    not_utf8[9] = 0xff;
    expect_format_error(&dir, "not_utf8", &not_utf8, "corrupt header");
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_format_error(&dir, "huge_header", &huge, "corrupt header");

    let f64_file = raw_file(
        r#"{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#,
        &[0u8; 16],
    );
    expect_format_error(
        &dir,
        "f64",
        &f64_file,
        "tensor `x` has dtype F64, expected F32",
    );
    let i64_file = raw_file(
        r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
        &[0u8; 8],
    );
    expect_format_error(&dir, "i64", &i64_file, "dtype I64");
    let wrong_size = raw_file(
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0u8; 8],
    );
    expect_format_error(
        &dir,
        "shape_vs_offsets",
        &wrong_size,
        "not a valid safetensors file",
    );
    let bad_offsets = raw_file(
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0u8; 8],
    );
    expect_format_error(
        &dir,
        "bad_offsets",
        &bad_offsets,
        "not a valid safetensors file",
    );
    let not_an_object = raw_file(r#"[1, 2, 3]"#, &[]);
    expect_format_error(&dir, "not_an_object", &not_an_object, "corrupt header");

    // load_params reports the same defects.
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    expect_load_error(&path, model_params(), &["truncated"]);
}
