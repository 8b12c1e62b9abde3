//! The degradation study: does depth help or hurt, with and without shortcuts?
//!
//! **Residual panel** (He et al., 2015, Figures 6 and 7): plain and residual CIFAR-style nets
//! (default `plain20`, `plain56`, `resnet20`, `resnet56`) trained with the same budget
//! (epochs, images, batch size, schedule, seed). For each: the training-error curve (mean
//! error of the training batches over windows of `log_every` steps, BatchNorm in training
//! mode, as the paper plots), the final test error, and the standard deviation of every
//! residual-branch BatchNorm output (the paper's "layer responses") on a fixed batch of
//! test images in evaluation mode.
//!
//! **Feed-forward panel**: [`crate::models::mlp`] networks at several depths, with and
//! without skip connections and with and without LayerNorm. For each: the gradient norm of
//! every weight matrix at initialization (one batch) and the training-loss curve. A run whose
//! loss diverges is recorded as such, with its curve up to that point.

use serde::{Deserialize, Serialize};

use super::config::{ModelSpec, TrainConfig};
use super::data::ImageSplits;
use super::trainer::{BatchReport, Trainer};
use crate::kernels::{cross_entropy_backward, cross_entropy_forward};
use crate::nn::ParamKind;
use crate::Result;

/// The budget and models of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyConfig {
    /// Residual-panel models (names in [`crate::models::resnet::ARCHITECTURES`]).
    pub resnet_models: Vec<String>,
    /// Epochs of every residual-panel run.
    pub resnet_epochs: usize,
    /// Training images of every residual-panel run (`None`: all).
    pub resnet_train_limit: Option<usize>,
    /// Random crops of the residual panel's training images, padded by this many pixels (0:
    /// none), as He et al. train on CIFAR-10 (4).
    #[serde(default)]
    pub resnet_crop_padding: usize,
    /// Random horizontal flips of the residual panel's training images.
    #[serde(default)]
    pub resnet_flip: bool,
    /// Test images every run is evaluated on (`None`: all).
    pub test_limit: Option<usize>,
    /// Feed-forward depths.
    pub mlp_depths: Vec<usize>,
    /// Feed-forward hidden width.
    pub mlp_width: usize,
    /// Epochs of every feed-forward run.
    pub mlp_epochs: usize,
    /// Training images of every feed-forward run.
    pub mlp_train_limit: Option<usize>,
    /// Peak learning rate of the feed-forward runs.
    pub mlp_lr: f32,
    /// Batch size of every run.
    pub batch_size: usize,
    /// Peak learning rate of the residual-panel runs.
    pub lr: f32,
    /// Steps per point of the curves.
    pub log_every: usize,
    /// Test images the layer responses are measured on.
    pub response_images: usize,
    /// Seed of every run.
    pub seed: u64,
}

/// One point of a curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimizer steps taken.
    pub step: u64,
    /// Mean over the window that ends at `step`.
    pub value: f32,
}

/// One residual-panel model's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetResult {
    /// `plain56`, ...
    pub model: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Training error per window of steps.
    pub train_error_curve: Vec<CurvePoint>,
    /// Training error over the last epoch's batches.
    pub final_train_error: f32,
    /// Test error at the end.
    pub test_error: f32,
    /// Test loss at the end.
    pub test_loss: f32,
    /// Training images per second.
    pub images_per_second: f64,
    /// `(layer, std)` of every residual-branch BatchNorm output, in depth order.
    pub response_std: Vec<(String, f32)>,
}

/// One feed-forward model's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpResult {
    /// `mlp-d32-layer-skip`, ...
    pub model: String,
    /// Number of blocks.
    pub depth: usize,
    /// `layer` or `none`.
    pub norm: String,
    /// Whether blocks have skips.
    pub residual: bool,
    /// `(weight, gradient norm)` at initialization, input layer first.
    pub grad_norms_at_init: Vec<(String, f32)>,
    /// Training loss per window of steps.
    pub loss_curve: Vec<CurvePoint>,
    /// Test error at the end (absent when training failed).
    pub test_error: Option<f32>,
    /// Why training stopped early, if it did (a diverging loss).
    pub failure: Option<String>,
}

/// Everything a study measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyResults {
    /// The budget.
    pub config: StudyConfig,
    /// Residual panel, in `resnet_models` order.
    pub resnets: Vec<ResNetResult>,
    /// Feed-forward panel.
    pub mlps: Vec<MlpResult>,
}

/// Progress of a study, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum StudyEvent<'a> {
    /// A run starts: its label and its total number of steps.
    Start(&'a str, usize),
    /// A step finished.
    Batch(&'a BatchReport),
}

/// Means of `value` over consecutive windows of `every` steps.
struct Windows {
    every: usize,
    sum: f64,
    count: usize,
    points: Vec<CurvePoint>,
}

impl Windows {
    fn new(every: usize) -> Self {
        Windows {
            every: every.max(1),
            sum: 0.0,
            count: 0,
            points: Vec::new(),
        }
    }

    fn add(&mut self, step: u64, value: f32) {
        self.sum += value as f64;
        self.count += 1;
        if self.count == self.every {
            self.points.push(CurvePoint {
                step,
                value: (self.sum / self.count as f64) as f32,
            });
            self.sum = 0.0;
            self.count = 0;
        }
    }
}

fn run_config(study: &StudyConfig, model: ModelSpec, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: study.batch_size,
        lr: study.lr,
        test_limit: study.test_limit,
        seed: study.seed,
        ..TrainConfig::new(model)
    }
}

impl StudyConfig {
    /// The settings of every run, residual panel first, then the feed-forward panel (for
    /// each depth: layer norm and none, each with and without skips).
    fn runs(&self) -> (Vec<TrainConfig>, Vec<TrainConfig>) {
        let resnets = self
            .resnet_models
            .iter()
            .map(|arch| {
                let model = ModelSpec::Resnet {
                    arch: arch.clone(),
                    small_stem: false,
                    zero_init_residual: false,
                };
                TrainConfig {
                    train_limit: self.resnet_train_limit,
                    crop_padding: self.resnet_crop_padding,
                    flip: self.resnet_flip,
                    ..run_config(self, model, self.resnet_epochs)
                }
            })
            .collect();
        let mut mlps = Vec::new();
        for &depth in &self.mlp_depths {
            for norm in ["layer", "none"] {
                for residual in [true, false] {
                    let model = ModelSpec::Mlp {
                        depth,
                        width: self.mlp_width,
                        norm: norm.to_string(),
                        residual,
                    };
                    mlps.push(TrainConfig {
                        lr: self.mlp_lr,
                        train_limit: self.mlp_train_limit,
                        ..run_config(self, model, self.mlp_epochs)
                    });
                }
            }
        }
        (resnets, mlps)
    }

    /// Checks the settings of every run (model names among them), so that a bad one is
    /// refused before hours of training the ones before it.
    pub fn validate(&self) -> Result<()> {
        let (resnets, mlps) = self.runs();
        resnets
            .iter()
            .chain(&mlps)
            .try_for_each(TrainConfig::validate)
    }
}

/// Runs the whole study on `splits`, reporting progress to `on_event`; every run's settings
/// are checked ([`StudyConfig::validate`]) before the first starts.
pub fn run_study(
    splits: &ImageSplits,
    study: &StudyConfig,
    on_event: &mut dyn FnMut(StudyEvent),
) -> Result<StudyResults> {
    study.validate()?;
    let (resnet_runs, mlp_runs) = study.runs();
    let mut resnets = Vec::new();
    for config in resnet_runs {
        resnets.push(residual_run(splits, study, config, on_event)?);
    }
    let mut mlps = Vec::new();
    for config in mlp_runs {
        mlps.push(feed_forward_run(splits, study, config, on_event)?);
    }
    Ok(StudyResults {
        config: study.clone(),
        resnets,
        mlps,
    })
}

fn residual_run(
    splits: &ImageSplits,
    study: &StudyConfig,
    config: TrainConfig,
    on_event: &mut dyn FnMut(StudyEvent),
) -> Result<ResNetResult> {
    let label = config.model.label();
    let mut trainer = Trainer::new(config, splits.clone())?;
    on_event(StudyEvent::Start(
        &label,
        trainer.batches_per_epoch() * study.resnet_epochs,
    ));
    let mut windows = Windows::new(study.log_every);
    let mut last = None;
    for _ in 0..study.resnet_epochs {
        let report = trainer.train_epoch(&mut |b| {
            windows.add(b.step, 1.0 - b.accuracy);
            on_event(StudyEvent::Batch(b));
        })?;
        last = Some(report);
    }
    let last = last.expect("at least one epoch");
    let mut parameters = 0;
    trainer.model().visit_params(&mut |p| parameters += p.len());
    Ok(ResNetResult {
        model: label,
        parameters,
        train_error_curve: windows.points,
        final_train_error: last.train_error,
        test_error: last.test_error,
        test_loss: last.test_loss,
        images_per_second: trainer
            .history()
            .iter()
            .map(|r| r.images_per_second)
            .sum::<f64>()
            / trainer.history().len() as f64,
        response_std: response_std(&mut trainer, study.response_images)?,
    })
}

/// Standard deviation of every layer response on the first `images` test images, in
/// evaluation mode.
fn response_std(trainer: &mut Trainer, images: usize) -> Result<Vec<(String, f32)>> {
    let test = trainer.test_set();
    let count = images.clamp(1, test.len());
    let shape = crate::nn::ImageShape {
        batch: count,
        ..test.shape()
    };
    let batch = test.images()[..shape.len()].to_vec();
    let model = trainer.model();
    model.set_training(false);
    let stds = model.forward(&batch, shape).map(|_| ()).and_then(|()| {
        Ok(model
            .responses()?
            .into_iter()
            .map(|(name, values)| (name.trim_end_matches(".weight").to_string(), std(&values)))
            .collect())
    });
    model.set_training(true);
    stds
}

fn std(values: &[f32]) -> f32 {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    var.sqrt() as f32
}

fn feed_forward_run(
    splits: &ImageSplits,
    study: &StudyConfig,
    config: TrainConfig,
    on_event: &mut dyn FnMut(StudyEvent),
) -> Result<MlpResult> {
    let label = config.model.label();
    let (depth, norm, residual) = match &config.model {
        ModelSpec::Mlp {
            depth,
            norm,
            residual,
            ..
        } => (*depth, norm.clone(), *residual),
        ModelSpec::Resnet { .. } => unreachable!("feed-forward runs are built as MLPs"),
    };
    let mut trainer = Trainer::new(config, splits.clone())?;
    let grad_norms_at_init = grad_norms_at_init(&mut trainer, study.batch_size)?;
    on_event(StudyEvent::Start(
        &label,
        trainer.batches_per_epoch() * study.mlp_epochs,
    ));
    let mut windows = Windows::new(study.log_every);
    let mut failure = None;
    let mut test_error = None;
    for _ in 0..study.mlp_epochs {
        let outcome = trainer.train_epoch(&mut |b| {
            windows.add(b.step, b.loss);
            on_event(StudyEvent::Batch(b));
        });
        match outcome {
            Ok(report) => test_error = Some(report.test_error),
            Err(e) => {
                failure = Some(e.to_string());
                test_error = None;
                break;
            }
        }
    }
    Ok(MlpResult {
        model: label,
        depth,
        norm,
        residual,
        grad_norms_at_init,
        loss_curve: windows.points,
        test_error,
        failure,
    })
}

/// The gradient norm of every weight matrix after one forward and backward pass over the
/// first `batch` training images, at initialization.
fn grad_norms_at_init(trainer: &mut Trainer, batch: usize) -> Result<Vec<(String, f32)>> {
    let train = trainer.train_set();
    let shape = crate::nn::ImageShape {
        batch,
        ..train.shape()
    };
    let images = train.images()[..shape.len()].to_vec();
    let labels = train.labels()[..batch].to_vec();
    let model = trainer.model();
    let classes = model.num_classes();
    let (mut losses, mut lse) = (vec![0.0; batch], vec![0.0; batch]);
    let mut dlogits = vec![0.0; batch * classes];
    model.zero_grad();
    let logits = model.forward(&images, shape)?;
    cross_entropy_forward(logits, &labels, classes, &mut losses, &mut lse)?;
    cross_entropy_backward(&mut dlogits, logits, &lse, &labels, classes, 1.0)?;
    model.backward(&images, &dlogits)?;
    let mut norms = Vec::new();
    model.visit_params(&mut |p| {
        if p.kind == ParamKind::Weight {
            let norm = p
                .grad
                .iter()
                .map(|&g| (g as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            norms.push((p.name.clone(), norm as f32));
        }
    });
    model.zero_grad();
    Ok(norms)
}
