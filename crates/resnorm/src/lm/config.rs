//! Every setting of a training run, as one struct that reads from TOML and is stored with each
//! checkpoint (`train.json`).
//!
//! A TOML file names any subset of the fields below, with the same spellings; the rest keep
//! their defaults, which are the run of the README's main command (a 4-layer pre-LN GPT on the
//! built-in corpus, character tokens). Unknown keys are an error, so a typo cannot pass
//! silently.
//!
//! ```
//! use resnorm::models::gpt::Placement;
//! use resnorm::lm::{TokenizerKind, TrainConfig};
//! let config = TrainConfig::from_toml_str("placement = \"post-ln\"\nsteps = 50\nlr = 1e-3").unwrap();
//! assert_eq!((config.placement, config.steps, config.lr), (Placement::PostLn, 50, 1e-3));
//! assert_eq!(config.tokenizer, TokenizerKind::Char);
//! assert!(TrainConfig::from_toml_str("stepz = 5").unwrap_err().to_string().contains("stepz"));
//! let resumed = config.with_toml_str("lr = 2e-3").unwrap();
//! assert_eq!((resumed.steps, resumed.lr), (50, 2e-3));
//! let gpt = config.gpt_config(65);
//! assert_eq!((gpt.vocab, gpt.context), (65, config.context));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::data::text::{Tokenizer, DEFAULT_CORPUS_CHARS};
use crate::kernels::NormKind;
use crate::models::gpt::{GptConfig, Placement};
use crate::optim::{AdamWConfig, DecayScope, WarmupCosine};
use crate::{Error, Result};

/// Which tokenizer a run builds (a character vocabulary is taken from the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One id per character of the data's vocabulary.
    Char,
    /// One id per UTF-8 byte.
    Byte,
    /// GPT-2's byte-pair encoding.
    Gpt2,
    /// The `tokenizer.json` of the Hugging Face model a run starts from (`init_from`).
    Hf,
}

impl TokenizerKind {
    /// The spellings accepted by [`FromStr`], in order.
    pub const NAMES: [&'static str; 4] = ["char", "byte", "gpt2", "hf"];

    /// The kind of an existing tokenizer.
    pub fn of(tokenizer: &Tokenizer) -> TokenizerKind {
        match tokenizer {
            Tokenizer::Char { .. } => TokenizerKind::Char,
            Tokenizer::Byte => TokenizerKind::Byte,
            Tokenizer::Gpt2 => TokenizerKind::Gpt2,
            Tokenizer::Hf { .. } => TokenizerKind::Hf,
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

impl FromStr for TokenizerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "char" => Ok(TokenizerKind::Char),
            "byte" => Ok(TokenizerKind::Byte),
            "gpt2" => Ok(TokenizerKind::Gpt2),
            "hf" => Ok(TokenizerKind::Hf),
            _ => Err(Error::Config(format!(
                "unknown tokenizer '{s}'; expected one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// The default length of the training windows when fine-tuning: long enough for text to
/// matter, short enough for a CPU.
pub const FINE_TUNE_CONTEXT: usize = 256;

/// The settings of one training run; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Blocks `L`.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Width `C` of the residual stream.
    pub width: usize,
    /// Context window `T` in tokens (the length of every training window).
    pub context: usize,
    /// Residual/normalization wiring.
    pub placement: Placement,
    /// A Hugging Face checkpoint directory whose model and `tokenizer.json` the run
    /// fine-tunes (see [`crate::hf`]); `layers`, `heads`, `width`, `placement`, `norm` and
    /// `tokenizer` then come from it, and `context` is the length of the training windows.
    pub init_from: Option<PathBuf>,
    /// LayerNorm or RMSNorm.
    pub norm: NormKind,
    /// A text file, a folder of text files, a token `.bin` file or a folder of them; `None`
    /// is the built-in corpus.
    pub data: Option<PathBuf>,
    /// Characters of the built-in corpus (used when `data` is `None`).
    pub corpus_chars: usize,
    /// The tokenizer built for the data.
    pub tokenizer: TokenizerKind,
    /// Windows per micro-batch.
    pub batch: usize,
    /// Micro-batches whose gradients are averaged into one step (`batch · accum` windows).
    pub accum: usize,
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Peak learning rate, reached after the warm-up.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warm-up (cut to `steps` when longer).
    pub warmup: u64,
    /// AdamW's decoupled weight decay `λ`.
    pub weight_decay: f32,
    /// Decay every parameter, not only the matrices (norm gains, biases, ReZero gates and
    /// embeddings are exempt by default).
    pub decay_all: bool,
    /// AdamW's `β₁`.
    pub beta1: f32,
    /// AdamW's `β₂`.
    pub beta2: f32,
    /// Largest global gradient norm; 0 turns clipping off.
    pub grad_clip: f32,
    /// Seeds the weights and the order of training windows.
    pub seed: u64,
    /// Steps between validation evaluations (and metric lines carrying `val_loss`); 0 = only
    /// at the end.
    pub eval_every: u64,
    /// Most validation windows per evaluation during training (spread evenly over the
    /// split); 0 = all of them. The end of a run and `resnorm eval` always use all.
    pub eval_windows: usize,
    /// Steps between checkpoints; 0 = only at the end.
    pub save_every: u64,
    /// Steps between per-layer diagnostics in `metrics.jsonl` (see [`crate::diagnostics`]);
    /// 0 = none.
    pub diagnostics_every: u64,
    /// ZeRO stage under MPI: 0, every rank holds the whole AdamW state; 1, each holds its
    /// `1/N` share (see [`super::OptimizerShard`]). The same training either way.
    pub zero: u8,
}

impl Default for TrainConfig {
    /// The README's main run: about three minutes on two cores in a release build.
    fn default() -> Self {
        TrainConfig {
            layers: 4,
            heads: 4,
            width: 128,
            context: 64,
            placement: Placement::PreLn,
            init_from: None,
            norm: NormKind::Layer,
            data: None,
            corpus_chars: DEFAULT_CORPUS_CHARS,
            tokenizer: TokenizerKind::Char,
            batch: 16,
            accum: 1,
            steps: 1000,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 50,
            weight_decay: 0.1,
            decay_all: false,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            seed: 1337,
            eval_every: 100,
            eval_windows: 64,
            save_every: 500,
            diagnostics_every: 0,
            zero: 0,
        }
    }
}

impl TrainConfig {
    /// Reads the fields a TOML document sets over the defaults.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        TrainConfig::default().with_toml_str(text)
    }

    /// These settings with the fields a TOML document sets replaced (a resumed run starts
    /// from its checkpoint's settings, not the defaults).
    pub fn with_toml_str(&self, text: &str) -> Result<Self> {
        let bad = |e: &dyn fmt::Display| Error::Config(one_line(&e.to_string()));
        let overrides: toml::Table = toml::from_str(text).map_err(|e| bad(&e))?;
        let mut merged = toml::Table::try_from(self).map_err(|e| bad(&e))?;
        merged.extend(overrides);
        merged.try_into().map_err(|e: toml::de::Error| bad(&e))
    }

    /// [`TrainConfig::with_toml_str`] with the contents of a file; errors name the file.
    pub fn with_toml_file(&self, path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        self.with_toml_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// The defaults of a run fine-tuning the Hugging Face checkpoint in `dir`, whose model
    /// runs on at most `positions` tokens: windows of `min(positions, 256)` tokens, batch 8,
    /// 200 steps at a peak learning rate of 1e-4 (a pretrained model needs small steps),
    /// the directory's tokenizer; other settings as [`TrainConfig::default`].
    pub fn fine_tune(dir: PathBuf, positions: usize) -> Self {
        TrainConfig {
            init_from: Some(dir),
            tokenizer: TokenizerKind::Hf,
            context: positions.min(FINE_TUNE_CONTEXT),
            batch: 8,
            steps: 200,
            lr: 1e-4,
            min_lr: 1e-5,
            warmup: 20,
            eval_every: 50,
            eval_windows: 16,
            save_every: 100,
            ..TrainConfig::default()
        }
    }

    /// With `init_from`, refuses the settings that describe a model to build (the model is
    /// the checkpoint's), naming the first one set, and any tokenizer but the directory's.
    pub fn check_fine_tune(&self) -> Result<()> {
        let Some(dir) = &self.init_from else {
            return Ok(());
        };
        let default = TrainConfig::default();
        let set = [
            ("layers", self.layers != default.layers),
            ("heads", self.heads != default.heads),
            ("width", self.width != default.width),
            ("placement", self.placement != default.placement),
            ("norm", self.norm != default.norm),
            ("tokenizer", self.tokenizer != TokenizerKind::Hf),
        ];
        match set.iter().find(|(_, differs)| *differs) {
            Some((name, _)) => Err(Error::Config(format!(
                "`{name}` cannot be set when fine-tuning: the model and its tokenizer come from {}",
                dir.display()
            ))),
            None => Ok(()),
        }
    }

    /// The model these settings describe for a vocabulary of `vocab` ids.
    pub fn gpt_config(&self, vocab: usize) -> GptConfig {
        GptConfig {
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
            vocab,
            placement: self.placement,
            norm: self.norm,
            ..GptConfig::default()
        }
    }

    /// AdamW's hyperparameters.
    pub fn adamw_config(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
            decay: if self.decay_all {
                DecayScope::All
            } else {
                DecayScope::WeightsOnly
            },
            ..AdamWConfig::default()
        }
    }

    /// The learning-rate schedule: `min(warmup, steps)` linear steps to `lr`, cosine to
    /// `min_lr` at `steps`.
    pub fn schedule(&self) -> Result<WarmupCosine> {
        WarmupCosine::for_run(self.lr, self.min_lr, self.warmup, self.steps)
    }

    /// Checks every setting that the model, optimizer and schedule do not check themselves.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.batch == 0 || self.accum == 0 {
            return fail(format!(
                "batch and accum must be at least 1, got {} and {}",
                self.batch, self.accum
            ));
        }
        if self.steps == 0 {
            return fail("steps must be at least 1".into());
        }
        if self.zero > 1 {
            return fail(format!(
                "zero must be 0 or 1 (ZeRO stage), got {}",
                self.zero
            ));
        }
        if self.corpus_chars == 0 {
            return fail("corpus_chars must be at least 1".into());
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return fail(format!(
                "grad_clip must be finite and zero (off) or positive, got {}",
                self.grad_clip
            ));
        }
        self.schedule()?;
        crate::optim::AdamW::new(self.adamw_config()).map_err(|e| Error::Config(e.to_string()))?;
        self.gpt_config(1).validate()
    }
}

/// The toml crate's messages span several lines (with a source excerpt); a CLI wants one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}
