//! What a vision training run is: the model, the optimizer and its schedule, the data
//! pipeline and the seed, as one serializable [`TrainConfig`] kept in every checkpoint.

use serde::{Deserialize, Serialize};

use crate::memory::{product, sum, MemoryEstimate, Workload};
use crate::models::mlp::{Mlp, MlpConfig, MlpNorm};
use crate::models::resnet::{ResNet, ResNetConfig, Stem};
use crate::models::ImageClassifier;
use crate::nn::ImageShape;
use crate::optim::{StepDecay, WarmupCosine};
use crate::rng::Rng;
use crate::{Error, Result};

/// Which network to train.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// A ResNet or plain network named in [`crate::models::resnet::ARCHITECTURES`].
    Resnet {
        /// `resnet20`, `plain56`, `resnet18`, ...
        arch: String,
        /// torchvision nets only: the 3x3/1 stem without max pooling, for small images.
        small_stem: bool,
        /// Zero every block's last BatchNorm weight at initialization.
        zero_init_residual: bool,
    },
    /// The feed-forward network of [`crate::models::mlp`].
    Mlp {
        /// Number of blocks.
        depth: usize,
        /// Hidden width.
        width: usize,
        /// `layer`, `rms`, `batch` or `none`.
        norm: String,
        /// Skip connection around every block.
        residual: bool,
    },
}

impl ModelSpec {
    /// A short name for reports: `resnet20`, `mlp-d32-layer-res`.
    pub fn label(&self) -> String {
        match self {
            ModelSpec::Resnet { arch, .. } => arch.clone(),
            ModelSpec::Mlp {
                depth,
                norm,
                residual,
                ..
            } => {
                let skip = if *residual { "skip" } else { "noskip" };
                format!("mlp-d{depth}-{norm}-{skip}")
            }
        }
    }

    /// Exactly the number of parameters of the network [`ModelSpec::build`] makes for
    /// `[channels, height, width]` images and `num_classes` classes; an error for an unknown
    /// model or sizes that overflow.
    pub fn num_params(&self, image: [usize; 3], num_classes: usize) -> Result<u64> {
        match self {
            ModelSpec::Resnet {
                arch, small_stem, ..
            } => {
                let mut config = ResNetConfig::named(arch, image[0], num_classes)?;
                if *small_stem {
                    config.stem = Stem::Small;
                }
                config.num_params()
            }
            ModelSpec::Mlp {
                depth,
                width,
                norm,
                residual,
            } => MlpConfig {
                in_features: product("mlp's input features", &image.map(|x| x as u64))?
                    .try_into()
                    .map_err(|_| Error::Config(format!("images of {image:?} are too large")))?,
                depth: *depth,
                width: *width,
                num_classes,
                norm: norm.parse::<MlpNorm>()?,
                residual: *residual,
            }
            .num_params(),
        }
    }

    /// Floats of activations and gradients one image keeps through a forward and backward
    /// pass: an upper bound counted from the layers' buffers (for a ResNet, 24 maps of each
    /// block's output size and the stem's 7x7 unfolding; for an MLP, 8 per hidden unit).
    fn activations_per_image(&self, image: [usize; 3], num_classes: usize) -> Result<u64> {
        let what = "activation sizes";
        let [c, h, w] = image.map(|x| x as u64);
        let k = num_classes as u64;
        let base = sum(
            what,
            &[product(what, &[2, c, h, w])?, product(what, &[3, k])?],
        )?;
        let body = match self {
            ModelSpec::Resnet { arch, .. } => {
                let config = ResNetConfig::named(arch, image[0], num_classes)?;
                // The stem unfolds up to 7x7 windows of every input channel at full size.
                let mut floats = product(what, &[c, 49, h, w])?;
                let first = config.stage_channels.first().copied().unwrap_or(0) as u64;
                floats = sum(what, &[floats, product(what, &[6, first, h, w])?])?;
                let (mut sh, mut sw) = (h, w);
                for (stage, (&blocks, &channels)) in config
                    .stage_blocks
                    .iter()
                    .zip(&config.stage_channels)
                    .enumerate()
                {
                    if stage > 0 {
                        (sh, sw) = (sh.div_ceil(2), sw.div_ceil(2));
                    }
                    let block = product(what, &[24, channels as u64, sh, sw])?;
                    floats = sum(what, &[floats, product(what, &[blocks as u64, block])?])?;
                }
                floats
            }
            ModelSpec::Mlp { depth, width, .. } => {
                product(what, &[8, sum(what, &[*depth as u64, 1])?, *width as u64])?
            }
        };
        sum(what, &[base, body])
    }

    /// Builds the network for images of shape `image` (batch ignored) and `num_classes`
    /// classes, initialized from `rng`.
    pub fn build(
        &self,
        image: ImageShape,
        num_classes: usize,
        rng: &mut Rng,
    ) -> Result<Box<dyn ImageClassifier + Send>> {
        match self {
            ModelSpec::Resnet {
                arch,
                small_stem,
                zero_init_residual,
            } => {
                let mut config = ResNetConfig::named(arch, image.channels, num_classes)?;
                if *small_stem {
                    config.stem = Stem::Small;
                }
                config.zero_init_residual = *zero_init_residual;
                Ok(Box::new(ResNet::new(&config, rng)?))
            }
            ModelSpec::Mlp {
                depth,
                width,
                norm,
                residual,
            } => {
                let config = MlpConfig {
                    in_features: image.image_len(),
                    depth: *depth,
                    width: *width,
                    num_classes,
                    norm: norm.parse::<MlpNorm>()?,
                    residual: *residual,
                };
                Ok(Box::new(Mlp::new(&config, rng)?))
            }
        }
    }
}

/// How the learning rate moves over training (after a linear warm-up).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Cosine decay from the peak to 0 at the last step.
    Cosine,
    /// Multiply by `gamma` every `every_epochs` epochs (PyTorch's `StepLR`).
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Factor per decay.
        gamma: f32,
    },
}

/// One training run's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub model: ModelSpec,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay (SGD adds `weight_decay·w` to the gradient).
    pub weight_decay: f32,
    /// Also decay normalization gains/shifts and biases (off by default, as is common).
    pub decay_norms: bool,
    /// Decay of the learning rate.
    pub schedule: LrSchedule,
    /// Epochs of linear warm-up (may be fractional).
    pub warmup_epochs: f32,
    /// Random-crop padding (0: no cropping).
    pub crop_padding: usize,
    /// Random horizontal flips.
    pub flip: bool,
    /// Standardize each channel with the training set's mean and std.
    pub normalize: bool,
    /// Train on only the first this many training images (a smaller budget).
    pub train_limit: Option<usize>,
    /// Evaluate on only the first this many test images.
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Seed of the initialization, the data order and the augmentation.
    pub seed: u64,
}

impl TrainConfig {
    /// Defaults for `model`: 3 epochs of batch 128, SGD (lr 0.1, momentum 0.9, weight decay
    /// 5e-4 on weights only), cosine schedule after a warm-up of a tenth of an epoch,
    /// normalized inputs, no augmentation, seed 0.
    pub fn new(model: ModelSpec) -> Self {
        TrainConfig {
            model,
            epochs: 3,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            decay_norms: false,
            schedule: LrSchedule::Cosine,
            warmup_epochs: 0.1,
            crop_padding: 0,
            flip: false,
            normalize: true,
            train_limit: None,
            test_limit: None,
            seed: 0,
        }
    }

    /// Checks every value before a run starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::Config(detail));
        match &self.model {
            ModelSpec::Resnet { arch, .. } => {
                ResNetConfig::named(arch, 1, 1)?;
            }
            ModelSpec::Mlp { norm, width, .. } => {
                norm.parse::<MlpNorm>()?;
                if *width == 0 {
                    return bad("mlp width must be at least 1".to_string());
                }
            }
        }
        if self.epochs == 0 || self.batch_size < 2 {
            return bad(format!(
                "epochs ({}) must be at least 1 and batch size ({}) at least 2 (BatchNorm)",
                self.epochs, self.batch_size
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be finite and > 0", self.lr));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0)
            || self.warmup_epochs > self.epochs as f32
        {
            return bad(format!(
                "warm-up of {} epochs must be in [0, epochs = {}]",
                self.warmup_epochs, self.epochs
            ));
        }
        if let LrSchedule::Step {
            every_epochs,
            gamma,
        } = self.schedule
        {
            StepDecay::new(self.lr, gamma, every_epochs as u64)?;
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("train and test limits must be at least 1 image".to_string());
        }
        Ok(())
    }

    /// The memory training (values, gradients, SGD momentum; activations of one batch) or
    /// evaluating (no momentum) this run's network needs for `[channels, height, width]`
    /// images and `num_classes` classes; see [`crate::memory`].
    pub fn memory_estimate(
        &self,
        image: [usize; 3],
        num_classes: usize,
        workload: Workload,
    ) -> Result<MemoryEstimate> {
        let parameters = self.model.num_params(image, num_classes)?;
        let per_image = self.model.activations_per_image(image, num_classes)?;
        let activations = product("activation sizes", &[self.batch_size as u64, per_image])?;
        let per_parameter = match workload {
            Workload::Evaluate => 2,
            Workload::Train => 3,
        };
        MemoryEstimate::new(parameters, per_parameter, activations)
    }

    /// The learning rate at `step` of a run of `steps_per_epoch` steps per epoch.
    pub fn lr_at(&self, step: u64, steps_per_epoch: u64) -> Result<f32> {
        let total = steps_per_epoch * self.epochs as u64;
        let warmup =
            ((self.warmup_epochs as f64 * steps_per_epoch as f64).round() as u64).min(total);
        if step < warmup {
            return Ok(self.lr * (step + 1) as f32 / warmup as f32);
        }
        match self.schedule {
            LrSchedule::Cosine => Ok(WarmupCosine::new(self.lr, 0.0, warmup, total)?.lr_at(step)),
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => {
                let every = (every_epochs as u64 * steps_per_epoch).max(1);
                Ok(StepDecay::new(self.lr, gamma, every)?.lr_at(step))
            }
        }
    }
}
