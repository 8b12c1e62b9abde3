//! The image-classification training loop: seeded shuffling and augmentation, SGD with
//! momentum and weight decay under a warm-up + cosine or step schedule, per-batch reports
//! for a progress bar, and per-epoch training and test loss and error.
//!
//! One step: fill a batch (augmented), zero the gradients, forward, mean cross-entropy,
//! backward, `Sgd::step` at the scheduled rate. The last incomplete batch of an epoch is
//! dropped, so every step sees `batch_size` images (BatchNorm statistics stay comparable).
//! Evaluation switches BatchNorm to its running statistics and walks the set in order.
//! [`Trainer::train_epoch_until`] can stop between two steps (on a signal) and keeps its place
//! in the epoch ([`EpochProgress`], saved with the checkpoint), so a resumed run continues
//! mid-epoch bit for bit.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::data::{take, ImageSplits};
use crate::data::image::{Augmentation, ImageDataset, Normalization};
use crate::kernels::{cross_entropy_backward, cross_entropy_forward};
use crate::models::ImageClassifier;
use crate::nn::ImageShape;
use crate::optim::{DecayScope, Optimizer, Sgd, SgdConfig};
use crate::rng::Rng;
use crate::{Error, Result};

/// Seeds of the data order and augmentation are the run's seed xor this.
const DATA_SEED_SALT: u64 = 0xDA7A;

/// What a progress bar needs after every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchReport {
    /// Epoch being trained, from 1.
    pub epoch: usize,
    /// Batch within the epoch, from 1.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Optimizer steps so far, this one included.
    pub step: u64,
    /// The batch's mean loss.
    pub loss: f32,
    /// The batch's fraction of correct predictions.
    pub accuracy: f32,
    /// The learning rate of this step.
    pub lr: f32,
}

/// Loss and accuracy over a whole data set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction of correct predictions.
    pub accuracy: f32,
}

/// One line of `metrics.jsonl`: an epoch's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Steps so far.
    pub step: u64,
    /// Mean training loss over the epoch's batches (train mode, augmented).
    pub train_loss: f32,
    /// Training error over the epoch's batches.
    pub train_error: f32,
    /// Test loss (evaluation mode).
    pub test_loss: f32,
    /// Test error (evaluation mode).
    pub test_error: f32,
    /// Learning rate of the last step.
    pub lr: f32,
    /// Wall-clock seconds of the training part of the epoch.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// How far an interrupted epoch got: enough to continue it bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochProgress {
    /// The data generator's state before the epoch's shuffle (replayed to rebuild the order).
    pub(crate) order_rng: [u64; 4],
    /// Batches of the epoch already trained.
    batches: usize,
    /// Sum of their losses.
    loss_sum: f64,
    /// Images they classified correctly.
    correct: usize,
    /// Seconds they took.
    seconds: f64,
    /// Learning rate of the last of them.
    lr: f32,
}

/// A training run in progress.
pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) model: Box<dyn ImageClassifier + Send>,
    pub(super) optimizer: Sgd,
    pub(super) train: ImageDataset,
    pub(super) test: ImageDataset,
    pub(super) normalization: Option<Normalization>,
    pub(super) rng: Rng,
    pub(super) epoch: usize,
    pub(super) step: u64,
    pub(super) history: Vec<EpochReport>,
    pub(super) progress: Option<EpochProgress>,
    pub(super) threads_saved: usize,
    images: Vec<f32>,
    labels: Vec<u32>,
    losses: Vec<f32>,
    logsumexp: Vec<f32>,
    dlogits: Vec<f32>,
}

impl Trainer {
    /// A fresh run of `config` on `splits` (the model initialized from `config.seed`).
    pub fn new(config: TrainConfig, splits: ImageSplits) -> Result<Self> {
        config.validate()?;
        let ImageSplits {
            mut train,
            mut test,
        } = splits;
        if let Some(limit) = config.train_limit {
            train = take(&train, 0..limit.min(train.len()))?;
        }
        if let Some(limit) = config.test_limit {
            test = take(&test, 0..limit.min(test.len()))?;
        }
        if train.len() < config.batch_size {
            return Err(Error::Config(format!(
                "{} training images do not fill one batch of {}",
                train.len(),
                config.batch_size
            )));
        }
        let normalization = config.normalize.then(|| Normalization::measure(&train));
        let num_classes = [&train.labels, &test.labels]
            .iter()
            .flat_map(|l| l.iter())
            .max()
            .map_or(0, |&m| m as usize + 1);
        let image = train.shape;
        let model = config
            .model
            .build(image, num_classes, &mut Rng::new(config.seed))?;
        let decay = if config.decay_norms {
            DecayScope::All
        } else {
            DecayScope::WeightsOnly
        };
        let optimizer = Sgd::new(SgdConfig {
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            decay,
        })?;
        Ok(Trainer {
            rng: Rng::new(config.seed ^ DATA_SEED_SALT),
            model,
            optimizer,
            train: ImageDataset::new(train, normalization.as_ref())?,
            test: ImageDataset::new(test, normalization.as_ref())?,
            normalization,
            config,
            epoch: 0,
            step: 0,
            history: Vec::new(),
            progress: None,
            threads_saved: crate::threads::num_threads(),
            images: Vec::new(),
            labels: Vec::new(),
            losses: Vec::new(),
            logsumexp: Vec::new(),
            dlogits: Vec::new(),
        })
    }

    /// Kernel threads the run had when it was last saved (now, for a fresh run): results
    /// are bit-identical only with the same count.
    pub fn threads_saved(&self) -> usize {
        self.threads_saved
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Every completed epoch's report.
    pub fn history(&self) -> &[EpochReport] {
        &self.history
    }

    /// The network.
    pub fn model(&mut self) -> &mut dyn ImageClassifier {
        self.model.as_mut()
    }

    /// The normalized training set.
    pub fn train_set(&self) -> &ImageDataset {
        &self.train
    }

    /// The normalized test set.
    pub fn test_set(&self) -> &ImageDataset {
        &self.test
    }

    /// Optimizer steps in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.train.len() / self.config.batch_size
    }

    /// Trains one epoch, calling `on_batch` after every step, then evaluates on the test
    /// set; returns (and records) the epoch's report.
    pub fn train_epoch(&mut self, on_batch: &mut dyn FnMut(&BatchReport)) -> Result<EpochReport> {
        self.train_epoch_until(on_batch, &|| false)?
            .ok_or_else(|| Error::invalid("Trainer::train_epoch", "the epoch stopped unasked"))
    }

    /// [`Trainer::train_epoch`] that checks `stop` before every step: once it says true, the
    /// trainer keeps its place in the epoch (saved by [`Trainer::save`]) and returns `None`;
    /// the next call, here or after a resume, continues the epoch exactly where it stopped.
    pub fn train_epoch_until(
        &mut self,
        on_batch: &mut dyn FnMut(&BatchReport),
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<EpochReport>> {
        let batch_size = self.config.batch_size;
        let batches = self.batches_per_epoch();
        let augmentation = Augmentation {
            crop_padding: self.config.crop_padding,
            horizontal_flip: self.config.flip,
        };
        let shape = ImageShape {
            batch: batch_size,
            ..self.train.shape()
        };
        let classes = self.model.num_classes();
        self.images.resize(shape.len(), 0.0);
        self.labels.resize(batch_size, 0);
        self.losses.resize(batch_size, 0.0);
        self.logsumexp.resize(batch_size, 0.0);
        self.dlogits.resize(batch_size * classes, 0.0);
        self.model.set_training(true);
        let (mut progress, order) = match self.progress.take() {
            Some(progress) => {
                let order = (self.train).shuffled_order(&mut Rng::from_state(progress.order_rng)?);
                (progress, order)
            }
            None => {
                let order_rng = self.rng.state();
                let progress = EpochProgress {
                    order_rng,
                    batches: 0,
                    loss_sum: 0.0,
                    correct: 0,
                    seconds: 0.0,
                    lr: 0.0,
                };
                (progress, self.train.shuffled_order(&mut self.rng))
            }
        };
        let started = Instant::now();
        for (index, indices) in order
            .chunks_exact(batch_size)
            .enumerate()
            .skip(progress.batches)
        {
            if stop() {
                progress.seconds += started.elapsed().as_secs_f64();
                self.progress = Some(progress);
                return Ok(None);
            }
            self.train.fill_batch(
                indices,
                &augmentation,
                &mut self.rng,
                &mut self.images,
                &mut self.labels,
            )?;
            let lr = self.config.lr_at(self.step, batches as u64)?;
            let (loss, correct) = crate::threads::busy(|| self.train_batch(shape, lr))?;
            if !loss.is_finite() {
                return Err(Error::invalid(
                    "Trainer::train_epoch",
                    format!("the loss diverged to {loss} at step {}", self.step),
                ));
            }
            self.step += 1;
            progress.batches = index + 1;
            progress.loss_sum += loss as f64;
            progress.correct += correct;
            progress.lr = lr;
            on_batch(&BatchReport {
                epoch: self.epoch + 1,
                batch: index + 1,
                batches,
                step: self.step,
                loss,
                accuracy: correct as f32 / batch_size as f32,
                lr,
            });
        }
        let seconds = progress.seconds + started.elapsed().as_secs_f64();
        let test = self.evaluate_test()?;
        self.epoch += 1;
        let seen = batches * batch_size;
        let report = EpochReport {
            epoch: self.epoch,
            step: self.step,
            train_loss: (progress.loss_sum / batches as f64) as f32,
            train_error: 1.0 - progress.correct as f32 / seen as f32,
            test_loss: test.loss,
            test_error: 1.0 - test.accuracy,
            lr: progress.lr,
            seconds,
            images_per_second: seen as f64 / seconds,
        };
        self.history.push(report.clone());
        Ok(Some(report))
    }

    /// One SGD step on the batch in `images`/`labels`; returns its mean loss and how many
    /// images it classified correctly (before the update).
    fn train_batch(&mut self, shape: ImageShape, lr: f32) -> Result<(f32, usize)> {
        let classes = self.model.num_classes();
        self.model.zero_grad();
        let logits = self.model.forward(&self.images, shape)?;
        let loss = cross_entropy_forward(
            logits,
            &self.labels,
            classes,
            &mut self.losses,
            &mut self.logsumexp,
        )?;
        let correct = count_correct(logits, &self.labels, classes);
        cross_entropy_backward(
            &mut self.dlogits,
            logits,
            &self.logsumexp,
            &self.labels,
            classes,
            1.0,
        )?;
        self.model.backward(&self.images, &self.dlogits)?;
        self.optimizer.step(&mut self.model.params_mut(), lr)?;
        Ok((loss, correct))
    }

    /// Loss and accuracy on the test set, in evaluation mode.
    pub fn evaluate_test(&mut self) -> Result<Evaluation> {
        evaluate(self.model.as_mut(), &self.test, self.config.batch_size)
    }

    /// Loss and accuracy on the (unaugmented) training set, in evaluation mode.
    pub fn evaluate_train(&mut self) -> Result<Evaluation> {
        evaluate(self.model.as_mut(), &self.train, self.config.batch_size)
    }
}

/// Loss and accuracy of `model` on `dataset` in evaluation mode, `batch_size` images at a
/// time in order; the model is left in training mode.
pub fn evaluate(
    model: &mut dyn ImageClassifier,
    dataset: &ImageDataset,
    batch_size: usize,
) -> Result<Evaluation> {
    if dataset.is_empty() || batch_size == 0 {
        return Err(Error::invalid(
            "evaluate",
            "needs at least one image and a batch size of at least 1",
        ));
    }
    let classes = model.num_classes();
    let image_len = dataset.shape().image_len();
    let mut losses = vec![0.0; batch_size];
    let mut logsumexp = vec![0.0; batch_size];
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    model.set_training(false);
    let batches = dataset
        .images()
        .chunks(batch_size * image_len)
        .zip(dataset.labels().chunks(batch_size));
    let outcome = crate::threads::busy(|| {
        batches.into_iter().try_for_each(|(images, labels)| {
            let shape = ImageShape {
                batch: labels.len(),
                ..dataset.shape()
            };
            let n = labels.len();
            let logits = model.forward(images, shape)?;
            let mean = cross_entropy_forward(
                logits,
                labels,
                classes,
                &mut losses[..n],
                &mut logsumexp[..n],
            )?;
            loss_sum += mean as f64 * n as f64;
            correct += count_correct(logits, labels, classes);
            Ok::<(), Error>(())
        })
    });
    model.set_training(true);
    outcome?;
    Ok(Evaluation {
        loss: (loss_sum / dataset.len() as f64) as f32,
        accuracy: correct as f32 / dataset.len() as f32,
    })
}

/// How many rows of `logits` have their largest value (the first, on ties) at the label.
pub fn count_correct(logits: &[f32], labels: &[u32], classes: usize) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
            best == label as usize
        })
        .count()
}
