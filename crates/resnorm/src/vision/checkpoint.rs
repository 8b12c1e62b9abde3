//! Vision checkpoints: a [checkpoint set](crate::checkpoint_set) that resumes a run exactly,
//! even from the middle of an epoch, or serves evaluation.
//!
//! ```text
//! RUN/checkpoint/model.safetensors      parameters and BatchNorm running statistics
//!                                       (torchvision names for ResNets), metadata: card
//!                                       (config, num_classes, image, normalization), step
//! RUN/checkpoint/optimizer.safetensors  SGD momentum buffers and step count
//! RUN/checkpoint/trainer.json           epoch, step, data generator state, every epoch's
//!                                       report, the progress through an unfinished epoch,
//!                                       kernel threads
//! RUN/checkpoint/set.json               the manifest: step, each file's length and checksum
//! ```
//!
//! The set appears complete or not at all; loading checks every file against the manifest
//! and the step recorded in each of the three files, so a torn set is refused by file. It
//! also checks the model card's settings and sizes against the tensors before building the
//! network, and refuses NaN or infinite values and an all-zero generator state.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::data::ImageSplits;
use super::trainer::{EpochProgress, EpochReport, Trainer};
use crate::checkpoint::{check_finite, TensorFile, TensorRef};
use crate::checkpoint_set::{save_set, CheckpointSet};
use crate::data::image::Normalization;
use crate::models::ImageClassifier;
use crate::nn::{ImageShape, Param};
use crate::optim::{Optimizer, OptimizerState};
use crate::rng::Rng;
use crate::{Error, Result, Tensor};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const TRAINER_FILE: &str = "trainer.json";

/// `trainer.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerState {
    epoch: usize,
    step: u64,
    rng_state: [u64; 4],
    history: Vec<EpochReport>,
    progress: Option<EpochProgress>,
    threads: usize,
}

/// What `model.safetensors`'s metadata records about the network and its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The run's settings (the model among them).
    pub config: TrainConfig,
    /// Number of classes.
    pub num_classes: usize,
    /// `[channels, height, width]` of an image.
    pub image: [usize; 3],
    /// Per-channel mean and std the inputs were standardized with, if any.
    pub normalization: Option<(Vec<f32>, Vec<f32>)>,
}

impl ModelCard {
    /// The normalization to apply to new images.
    pub fn normalization(&self) -> Result<Option<Normalization>> {
        self.normalization
            .clone()
            .map(|(mean, std)| Normalization::new(mean, std))
            .transpose()
    }

    /// The network this card describes, with fresh weights.
    pub fn build(&self) -> Result<Box<dyn ImageClassifier + Send>> {
        let [c, h, w] = self.image;
        self.config.model.build(
            ImageShape::new(1, c, h, w),
            self.num_classes,
            &mut Rng::new(self.config.seed),
        )
    }
}

fn format_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Copies of `model`'s parameters and buffers: (name, shape, values).
type OwnedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn model_tensors(model: &dyn ImageClassifier) -> OwnedTensors {
    let mut tensors = Vec::new();
    let mut push = |p: &Param| tensors.push((p.name.clone(), p.shape.clone(), p.value.to_vec()));
    model.visit_params(&mut push);
    model.visit_buffers(&mut push);
    tensors
}

/// The card and tensors of the model file of `set`, its step checked, its settings checked,
/// and that the file holds at least as many values as the model it describes has parameters.
fn read_card(set: &CheckpointSet) -> Result<(ModelCard, BTreeMap<String, Tensor>)> {
    let path = set.dir().join(MODEL_FILE);
    let checkpoint = set.read_tensors(MODEL_FILE)?;
    let step = checkpoint.metadata.get("step").and_then(|s| s.parse().ok());
    set.check_step(MODEL_FILE, step)?;
    let card = checkpoint
        .metadata
        .get("card")
        .ok_or_else(|| format_error(&path, "no `card` metadata: not a resnorm vision model"))?;
    let card: ModelCard = serde_json::from_str(card)
        .map_err(|e| format_error(&path, format!("unreadable model card: {e}")))?;
    card.config
        .validate()
        .map_err(|e| format_error(&path, format!("model card: {e}")))?;
    // The card's sizes decide what `build` allocates: it must not exceed what the file holds
    // (parameters plus BatchNorm statistics).
    let stored: u64 = checkpoint.tensors.values().map(|t| t.len() as u64).sum();
    let needed = card
        .config
        .model
        .num_params(card.image, card.num_classes)
        .map_err(|e| format_error(&path, format!("model card: {e}")))?;
    if needed > stored {
        return Err(format_error(
            &path,
            format!("holds {stored} values, but the model of its card has {needed} parameters"),
        ));
    }
    Ok((card, checkpoint.tensors))
}

/// Copies `tensors` into `model`'s parameters and buffers by name, after checking that
/// names and shapes match one to one and every value is finite (nothing is changed on a
/// mismatch).
pub fn assign_model(
    path: &Path,
    model: &mut dyn ImageClassifier,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let mut problem = None;
    let mut count = 0;
    let mut check = |p: &Param| {
        count += 1;
        match tensors.get(&p.name) {
            Some(t) if t.shape() == p.shape.as_slice() => {}
            Some(t) => {
                problem.get_or_insert(format!(
                    "tensor `{}` has shape {:?}, the model needs {:?}",
                    p.name,
                    t.shape(),
                    p.shape
                ));
            }
            None => {
                problem.get_or_insert(format!("missing tensor `{}`", p.name));
            }
        }
    };
    model.visit_params(&mut check);
    model.visit_buffers(&mut check);
    if let Some(detail) = problem {
        return Err(format_error(path, detail));
    }
    if count != tensors.len() {
        return Err(format_error(
            path,
            format!("{} tensors for a model of {count}", tensors.len()),
        ));
    }
    for (name, tensor) in tensors {
        check_finite(path, name, tensor.data())?;
    }
    for p in model.params_mut() {
        p.value.copy_from_slice(tensors[&p.name].data());
    }
    model.visit_buffers_mut(&mut |p| p.value.copy_from_slice(tensors[&p.name].data()));
    Ok(())
}

/// The card of the checkpoint that `dir` names (a run or a set directory), its settings and
/// sizes checked against the model file, without building the model.
pub fn load_card(dir: &Path) -> Result<ModelCard> {
    Ok(read_card(&CheckpointSet::open(dir)?)?.0)
}

/// Loads the model of the checkpoint that `dir` names (a run directory written by
/// [`Trainer::save`], or its `checkpoint/` set) for evaluation.
pub fn load_model(dir: &Path) -> Result<(ModelCard, Box<dyn ImageClassifier + Send>)> {
    let set = CheckpointSet::open(dir)?;
    let (card, tensors) = read_card(&set)?;
    let mut model = card.build()?;
    assign_model(&set.dir().join(MODEL_FILE), model.as_mut(), &tensors)?;
    Ok((card, model))
}

impl Trainer {
    fn card(&self) -> ModelCard {
        let shape = self.train.shape();
        ModelCard {
            config: self.config.clone(),
            num_classes: self.model.num_classes(),
            image: [shape.channels, shape.height, shape.width],
            normalization: self
                .normalization
                .as_ref()
                .map(|n| (n.mean.clone(), n.std.clone())),
        }
    }

    /// Saves the run, between two steps, as the live set of the run directory `dir`
    /// (created if needed), replacing the previous one atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let card = serde_json::to_string(&self.card())
            .map_err(|e| Error::invalid("Trainer::save", e.to_string()))?;
        let metadata = BTreeMap::from([
            ("card".to_string(), card),
            ("step".to_string(), self.step.to_string()),
        ]);
        let tensors = model_tensors(self.model.as_ref());
        let refs: Vec<TensorRef<'_>> = tensors
            .iter()
            .map(|(name, shape, data)| TensorRef { name, shape, data })
            .collect();
        let model_file = TensorFile::new(&refs, &metadata)?;
        let optimizer = self.optimizer.state();
        let optimizer_file = optimizer.tensor_file()?;
        let state = TrainerState {
            epoch: self.epoch,
            step: self.step,
            rng_state: self.rng.state(),
            history: self.history.clone(),
            progress: self.progress.clone(),
            threads: crate::threads::num_threads(),
        };
        save_set(dir, self.step, |set| {
            set.file(MODEL_FILE, |out| model_file.write_to(out))?;
            set.file(OPTIMIZER_FILE, |out| optimizer_file.write_to(out))?;
            set.json(TRAINER_FILE, &state)
        })
    }

    /// Continues the run saved in the checkpoint that `dir` names, on `splits`, with the
    /// saved settings; `epochs`, when given, replaces the planned number of epochs (to extend
    /// a finished run).
    pub fn resume(dir: &Path, splits: ImageSplits, epochs: Option<usize>) -> Result<Self> {
        let set = CheckpointSet::open(dir)?;
        let path = set.dir().join(MODEL_FILE);
        let (card, tensors) = read_card(&set)?;
        let mut config = card.config.clone();
        if let Some(epochs) = epochs {
            config.epochs = epochs;
        }
        let mut trainer = Trainer::new(config, splits)?;
        if trainer.card().image != card.image || trainer.card().normalization != card.normalization
        {
            return Err(format_error(
                &path,
                "the data differ from the run's (image size or normalization statistics)",
            ));
        }
        assign_model(&path, trainer.model.as_mut(), &tensors)?;
        let optimizer_path = set.dir().join(OPTIMIZER_FILE);
        let optimizer =
            OptimizerState::from_checkpoint(&optimizer_path, set.read_tensors(OPTIMIZER_FILE)?)?;
        set.check_step(OPTIMIZER_FILE, Some(optimizer.step))?;
        trainer.optimizer.load_state(optimizer)?;
        let state: TrainerState = set.read_json(TRAINER_FILE)?;
        set.check_step(TRAINER_FILE, Some(state.step))?;
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        trainer.rng = Rng::from_state(state.rng_state).map_err(|e| {
            format_error(&set.dir().join(TRAINER_FILE), format!("`rng_state`: {e}"))
        })?;
        trainer.history = state.history;
        if let Some(progress) = &state.progress {
            Rng::from_state(progress.order_rng).map_err(|e| {
                format_error(&set.dir().join(TRAINER_FILE), format!("`order_rng`: {e}"))
            })?;
        }
        trainer.progress = state.progress;
        trainer.threads_saved = state.threads;
        Ok(trainer)
    }
}
