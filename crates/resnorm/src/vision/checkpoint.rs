//! Vision checkpoints: a folder that resumes a run exactly or serves evaluation.
//!
//! ```text
//! DIR/model.safetensors      parameters and BatchNorm running statistics (torchvision names
//!                            for ResNets), metadata: config, num_classes, image, normalization
//! DIR/optimizer.safetensors  SGD momentum buffers and step count
//! DIR/trainer.json           epoch, step, data generator state, every epoch's report
//! ```
//!
//! Each file is written atomically, in the order model, optimizer, trainer; a resume checks
//! that the optimizer's step count equals the trainer's, so a save interrupted between two
//! files is refused rather than resumed from a mixture. Loading checks the model card's
//! settings and sizes against the tensors before building the network, and refuses NaN or
//! infinite values and an all-zero generator state.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::data::ImageSplits;
use super::trainer::{EpochReport, Trainer};
use crate::checkpoint::{check_finite, read_tensors, write_json_atomic, write_tensors, TensorRef};
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
struct TrainerState {
    epoch: usize,
    step: u64,
    rng_state: [u64; 4],
    history: Vec<EpochReport>,
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

/// Writes `model`'s parameters and buffers with `card` to `path`, atomically.
pub fn save_model(path: &Path, model: &dyn ImageClassifier, card: &ModelCard) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut push = |p: &Param| tensors.push((p.name.clone(), p.shape.clone(), p.value.to_vec()));
    model.visit_params(&mut push);
    model.visit_buffers(&mut push);
    let refs: Vec<TensorRef<'_>> = tensors
        .iter()
        .map(|(name, shape, data)| TensorRef { name, shape, data })
        .collect();
    let card_json =
        serde_json::to_string(card).map_err(|e| Error::invalid("save_model", e.to_string()))?;
    let metadata = BTreeMap::from([("card".to_string(), card_json)]);
    write_tensors(path, &refs, &metadata)
}

/// Reads the card of the model file at `path`, checking its settings and that the file
/// holds at least as many values as the model it describes has parameters.
pub fn read_card(path: &Path) -> Result<(ModelCard, BTreeMap<String, Tensor>)> {
    let checkpoint = read_tensors(path)?;
    let card = checkpoint
        .metadata
        .get("card")
        .ok_or_else(|| format_error(path, "no `card` metadata: not a resnorm vision model"))?;
    let card: ModelCard = serde_json::from_str(card)
        .map_err(|e| format_error(path, format!("unreadable model card: {e}")))?;
    card.config
        .validate()
        .map_err(|e| format_error(path, format!("model card: {e}")))?;
    // The card's sizes decide what `build` allocates: it must not exceed what the file holds
    // (parameters plus BatchNorm statistics).
    let stored: u64 = checkpoint.tensors.values().map(|t| t.len() as u64).sum();
    let needed = card
        .config
        .model
        .num_params(card.image, card.num_classes)
        .map_err(|e| format_error(path, format!("model card: {e}")))?;
    if needed > stored {
        return Err(format_error(
            path,
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

/// Loads the model folder `dir` (as written by [`Trainer::save`]) for evaluation.
pub fn load_model(dir: &Path) -> Result<(ModelCard, Box<dyn ImageClassifier + Send>)> {
    let path = dir.join(MODEL_FILE);
    let (card, tensors) = read_card(&path)?;
    let mut model = card.build()?;
    assign_model(&path, model.as_mut(), &tensors)?;
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

    /// Writes the run to the folder `dir` (created if needed): model, optimizer, trainer.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_model(&dir.join(MODEL_FILE), self.model.as_ref(), &self.card())?;
        self.optimizer.state().save(dir.join(OPTIMIZER_FILE))?;
        let state = TrainerState {
            epoch: self.epoch,
            step: self.step,
            rng_state: self.rng.state(),
            history: self.history.clone(),
        };
        write_json_atomic(dir.join(TRAINER_FILE), &state)
    }

    /// Continues the run saved in `dir` on `splits`; `epochs`, when given, replaces the
    /// planned number of epochs (to extend a finished run).
    pub fn resume(dir: &Path, splits: ImageSplits, epochs: Option<usize>) -> Result<Self> {
        let path = dir.join(MODEL_FILE);
        let (card, tensors) = read_card(&path)?;
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
        trainer
            .optimizer
            .load_state(OptimizerState::load(dir.join(OPTIMIZER_FILE))?)?;
        let trainer_path = dir.join(TRAINER_FILE);
        let text =
            std::fs::read_to_string(&trainer_path).map_err(|e| Error::io(&trainer_path, e))?;
        let state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| format_error(&trainer_path, format!("unreadable trainer state: {e}")))?;
        if state.step != trainer.optimizer.steps() {
            return Err(format_error(
                &trainer_path,
                format!(
                    "step {} but the optimizer has taken {}",
                    state.step,
                    trainer.optimizer.steps()
                ),
            ));
        }
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        trainer.rng = Rng::from_state(state.rng_state)
            .map_err(|e| format_error(&trainer_path, format!("`rng_state`: {e}")))?;
        trainer.history = state.history;
        Ok(trainer)
    }
}
