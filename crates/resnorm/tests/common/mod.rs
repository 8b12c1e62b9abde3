//! Helpers shared by the integration tests: fixture loading and tolerant comparison.
#![allow(dead_code)] // each test binary uses a different subset

pub mod attention;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One tensor read from a fixture: shape and values (integers are converted to f32).
#[derive(Clone, Debug)]
pub struct FixtureTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A fixture file written by `tools/make_fixtures.py`.
pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, FixtureTensor>,
    pub metadata: HashMap<String, String>,
}

impl Fixture {
    /// Reads `tests/fixtures/{name}.safetensors`.
    pub fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run tools/make_fixtures.py)", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture body");
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::I64 => raw
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("{name}/{key}: unsupported dtype {other:?}"),
            };
            tensors.insert(
                key,
                FixtureTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Fixture {
            name: name.to_string(),
            tensors,
            metadata,
        }
    }

    /// The tensor called `key`; panics with the fixture's name if it is missing.
    pub fn get(&self, key: &str) -> &FixtureTensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture {} has no tensor {key}", self.name))
    }

    /// A metadata value parsed as f32 (eps, momentum, ...).
    pub fn meta_f32(&self, key: &str) -> f32 {
        self.metadata
            .get(key)
            .unwrap_or_else(|| panic!("fixture {} has no metadata {key}", self.name))
            .parse()
            .expect("numeric metadata")
    }
}

/// Asserts `|actual - expected| <= atol + rtol * |expected|` element-wise, naming the first
/// element that fails.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], rtol: f32, atol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let bound = atol + rtol * e.abs();
        assert!(
            (a - e).abs() <= bound && a.is_finite(),
            "{what}[{i}]: got {a}, expected {e} (|diff| {} > {bound})",
            (a - e).abs()
        );
    }
}

/// Path of the shared real data folder (`../shared/data` next to the project), if present.
pub fn shared_data() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: ../shared/data is absent (see the shared data README for how to obtain it)"
        );
        None
    }
}

/// A fresh, empty folder for one test (named after the test binary and the test), removed
/// when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let name = format!(
            "resnorm-{}-{test}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        );
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `bytes` to a file called `name` in the folder and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts a shape error whose message contains `needle`.
pub fn assert_shape_error<T: std::fmt::Debug>(result: resnorm::Result<T>, needle: &str) {
    match result {
        Err(e @ resnorm::Error::Shape { .. }) => {
            assert!(e.to_string().contains(needle), "{e}")
        }
        other => panic!("expected a shape error containing {needle:?}, got {other:?}"),
    }
}

/// Asserts an invalid-argument error whose message contains `needle`.
pub fn assert_invalid<T: std::fmt::Debug>(result: resnorm::Result<T>, needle: &str) {
    match result {
        Err(e @ resnorm::Error::InvalidArgument { .. }) => {
            assert!(e.to_string().contains(needle), "{e}")
        }
        other => panic!("expected an invalid-argument error containing {needle:?}, got {other:?}"),
    }
}

/// `len` draws from `N(0, 1)`, seeded.
pub fn normal(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = resnorm::rng::Rng::new(seed);
    (0..len).map(|_| rng.normal()).collect()
}

/// Whether `r` is a shape error.
pub fn is_shape(r: resnorm::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(resnorm::Error::Shape { .. }))
}

/// Whether `r` is an invalid-argument error.
pub fn is_invalid(r: resnorm::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(resnorm::Error::InvalidArgument { .. }))
}

/// Rewrites the manifest (`set.json`) of the checkpoint set in the directory `set` to the
/// files as they now are, as another writer could: tests that damage a file's contents use it
/// so that the loaders' own checks, not the manifest's checksum, must answer.
pub fn reseal_set(set: &Path) {
    let manifest = set.join(resnorm::checkpoint_set::MANIFEST_FILE);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for (name, digest) in json["files"].as_object_mut().unwrap() {
        let bytes = std::fs::read(set.join(name)).unwrap();
        // FNV-1a 64, the manifest's checksum.
        let fnv1a64 = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        *digest = serde_json::json!({ "bytes": bytes.len(), "fnv1a64": fnv1a64 });
    }
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
}

/// Trains a one-layer GPT of `width` (two heads, context `width`, batch 2, `steps` steps
/// planned, a built-in corpus of `250·width` characters) for one step and saves it as the
/// run `dir`; returns its settings.
pub fn saved_tiny_run(dir: &Path, width: usize, steps: u64) -> resnorm::lm::TrainConfig {
    use resnorm::lm::{load_data, TrainConfig, Trainer};
    let config = TrainConfig {
        layers: 1,
        heads: 2,
        width,
        context: width,
        batch: 2,
        steps,
        warmup: 1,
        corpus_chars: 250 * width,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(config.clone(), load_data(&config, None).unwrap()).unwrap();
    trainer.step().unwrap();
    trainer.save(dir).unwrap();
    config
}

/// Trains a residual MLP (depth 2, width 8, BatchNorm) for one of `epochs` planned epochs on
/// 8 tiny images of 3 classes (4 test images), saves it as the run `dir`, and returns its data.
pub fn saved_tiny_vision_run(dir: &Path, epochs: usize) -> resnorm::vision::ImageSplits {
    use resnorm::data::image::LabeledImages;
    use resnorm::nn::ImageShape;
    use resnorm::vision::{ImageSplits, ModelSpec, TrainConfig, Trainer};
    let images = |count: usize| {
        let labels = (0..count).map(|i| (i % 3) as u32).collect();
        let pixels = (0..count * 16).map(|i| (i % 7) as f32 / 7.0).collect();
        LabeledImages::new(ImageShape::new(count, 1, 4, 4), pixels, labels).unwrap()
    };
    let splits = ImageSplits {
        train: images(8),
        test: images(4),
    };
    let mut config = TrainConfig::new(ModelSpec::Mlp {
        depth: 2,
        width: 8,
        norm: "batch".into(),
        residual: true,
    });
    (config.batch_size, config.epochs) = (4, epochs);
    let mut trainer = Trainer::new(config, splits.clone()).unwrap();
    trainer.train_epoch(&mut |_| {}).unwrap();
    trainer.save(dir).unwrap();
    splits
}

/// An IDX file of unsigned bytes: magic, big-endian sizes, `data`.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    bytes.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    bytes.extend_from_slice(data);
    bytes
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
