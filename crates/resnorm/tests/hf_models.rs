//! Parity with Hugging Face `transformers` on tiny random checkpoints of every architecture
//! resnorm reads (written by tools/fixtures/hf_models.py): logits on fixed tokens within
//! 1e-4, greedy continuations token for token, the tokenizer's ids; and the errors of a
//! directory that cannot be read.

mod common;

use common::TempDir;
use resnorm::hf::{self, export, HfModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

const ARCHES: [&str; 7] = [
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "olmo2",
];

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/hf/{arch}"))
}

fn expected(arch: &str) -> Value {
    let text = std::fs::read_to_string(fixture(arch).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn logits_match_transformers() {
    for arch in ARCHES {
        let want = expected(arch);
        let mut checkpoint = hf::load(&fixture(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let rows = want["tokens"].as_array().unwrap();
        let tokens: Vec<u32> = rows.iter().flat_map(ids).collect();
        let logits = checkpoint.model.logits(&tokens, rows.len()).unwrap();
        let reference: Vec<f32> = want["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(logits.len(), reference.len(), "{arch}");
        let worst = logits
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{arch}: largest logit difference {worst:e}");
        assert!(worst < 1e-4, "{arch}: logits differ by up to {worst}");
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for arch in ARCHES {
        let want = expected(arch);
        let mut checkpoint = hf::load(&fixture(arch)).unwrap();
        let greedy = ids(&want["greedy"]);
        let got = checkpoint
            .model
            .greedy(&ids(&want["prompt"]), greedy.len())
            .unwrap();
        assert_eq!(got, greedy, "{arch}");
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let want = expected("llama");
    let checkpoint = hf::load(&fixture("llama")).unwrap();
    let tokenizer = checkpoint
        .tokenizer
        .expect("the fixture has tokenizer.json");
    let encoding = tokenizer
        .encode(want["text"].as_str().unwrap(), false)
        .unwrap();
    assert_eq!(encoding.get_ids(), &ids(&want["text_ids"])[..]);
}

#[test]
fn architectures_load_as_their_models() {
    let gpt = hf::load(&fixture("gpt2")).unwrap();
    assert!(matches!(gpt.model, HfModel::Gpt(_)));
    let gemma = hf::load(&fixture("gemma2")).unwrap();
    assert_eq!(gemma.architecture, "Gemma2ForCausalLM");
    assert!(matches!(gemma.model, HfModel::Llama(_)));
}

/// A copy of the `arch` fixture with `config.json` edited by `edit`.
fn edited(test: &str, arch: &str, edit: impl FnOnce(&mut Value)) -> TempDir {
    let dir = TempDir::new(test);
    for entry in std::fs::read_dir(fixture(arch)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        dir.write(&name, &std::fs::read(&path).unwrap());
    }
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.0.as_path().join("config.json")).unwrap(),
    )
    .unwrap();
    edit(&mut config);
    dir.write("config.json", config.to_string().as_bytes());
    dir
}

fn load_error(dir: &TempDir) -> String {
    hf::load(&dir.0).unwrap_err().to_string()
}

#[test]
fn unsupported_configs_are_refused_by_name() {
    let dir = edited("hf_arch", "qwen2", |c| {
        c["architectures"] = serde_json::json!(["MambaForCausalLM"])
    });
    assert!(load_error(&dir).contains("unsupported architecture `MambaForCausalLM`"));
    let dir = edited("hf_softcap", "gemma2", |c| {
        c["attn_logit_softcapping"] = 50.0.into()
    });
    assert!(load_error(&dir).contains("`attn_logit_softcapping`"));
    let dir = edited("hf_rope", "llama", |c| {
        c["rope_parameters"]["rope_type"] = "llama3".into()
    });
    assert!(load_error(&dir).contains("llama3"));
    let dir = edited("hf_unknown", "olmo2", |c| c["clip_qkv"] = 8.0.into());
    assert!(load_error(&dir).contains("`clip_qkv`"));
}

#[test]
fn a_missing_tensor_is_named() {
    // OLMo 2 without QK-norm would be another model: its q_norm must be there.
    let dir = edited("hf_missing", "mistral", |c| {
        c["architectures"] = serde_json::json!(["Olmo2ForCausalLM"])
    });
    assert!(load_error(&dir).contains("missing tensor `layers.0.self_attn.q_norm.weight`"));
}

#[test]
fn sliding_windows_cap_the_context() {
    let dir = edited("hf_window", "mistral", |c| c["sliding_window"] = 16.into());
    let checkpoint = hf::load(&dir.0).unwrap();
    assert_eq!(checkpoint.model.context(), 16);
}

#[test]
fn exported_checkpoints_read_back_exactly() {
    for arch in ARCHES {
        let mut checkpoint = hf::load(&fixture(arch)).unwrap();
        let dir = TempDir::new(&format!("hf_export_{arch}"));
        let written = match &checkpoint.model {
            HfModel::Gpt(gpt) => {
                export::write_gpt(gpt, &dir.0).unwrap();
                "GPT2LMHeadModel"
            }
            HfModel::Llama(llama) => export::write_llama(llama, &dir.0).unwrap(),
        };
        // Mistral without a sliding window computes what Llama does.
        if arch != "mistral" {
            assert_eq!(written, checkpoint.architecture, "{arch}");
        }
        let mut back = hf::load(&dir.0).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let tokens: Vec<u32> = (0..10).map(|t| (t * 7 + 3) % 128).collect();
        let want = checkpoint.model.logits(&tokens, 1).unwrap().to_vec();
        assert_eq!(back.model.logits(&tokens, 1).unwrap(), &want[..], "{arch}");
    }
}

#[test]
fn placements_without_an_architecture_are_refused() {
    use resnorm::models::gpt::{Gpt, GptConfig, Placement};
    use resnorm::models::llama::{Llama, LlamaConfig, LlamaPlacement};
    let config = GptConfig {
        layers: 1,
        heads: 2,
        width: 8,
        context: 4,
        vocab: 5,
        placement: Placement::PostLn,
        ..GptConfig::default()
    };
    let dir = TempDir::new("hf_export_refused");
    let error = export::write_gpt(&Gpt::new(config, 0).unwrap(), &dir.0).unwrap_err();
    assert!(error.to_string().contains("pre-ln"), "{error}");
    let config = LlamaConfig {
        placement: LlamaPlacement::PeriLn,
        norm_offset: 0.0,
        ..LlamaConfig::tiny(LlamaPlacement::PeriLn)
    };
    let error = export::write_llama(&Llama::new(config, 0).unwrap(), &dir.0).unwrap_err();
    assert!(error.to_string().contains("Gemma 2"), "{error}");
}
