//! The shape of a ResNet: its stem, stages and shortcuts, and the named architectures.
//!
//! | name | stem | blocks per stage | channels |
//! |---|---|---|---|
//! | `resnet18` | 7x7/2 conv, BN, ReLU, 3x3/2 max pool | 2, 2, 2, 2 | 64, 128, 256, 512 |
//! | `resnet34` | as `resnet18` | 3, 4, 6, 3 | 64, 128, 256, 512 |
//! | `resnet{6n+2}` (20, 32, 44, 56) | 3x3/1 conv, BN, ReLU | n, n, n | 16, 32, 64 |
//! | `plain{6n+2}` | as `resnet{6n+2}`, every shortcut removed | n, n, n | 16, 32, 64 |
//!
//! The first block of every stage after the first halves the resolution (stride 2).
//! torchvision-style nets can take the small-image stem (3x3/1 conv, no max pool) for
//! 28x28 or 32x32 inputs.

use crate::{Error, Result};

/// How the network turns an image into the first stage's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// ImageNet: 7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2 max pool (4x smaller).
    ImageNet,
    /// Small images: 3x3 stride-1 convolution, BN, ReLU, no pooling.
    Small,
}

/// Everything that decides a ResNet's layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// The stem.
    pub stem: Stem,
    /// Channels of the input images.
    pub in_channels: usize,
    /// Blocks in each stage.
    pub stage_blocks: Vec<usize>,
    /// Channels of each stage; the stem outputs `stage_channels[0]`.
    pub stage_channels: Vec<usize>,
    /// Whether blocks have shortcuts (`false`: the plain network).
    pub shortcuts: bool,
    /// Start every block's last BN weight at 0.
    pub zero_init_residual: bool,
    /// Outputs of the final layer.
    pub num_classes: usize,
}

/// Every architecture name [`ResNetConfig::named`] knows.
pub const ARCHITECTURES: [&str; 10] = [
    "resnet18", "resnet34", "resnet20", "resnet32", "resnet44", "resnet56", "plain20", "plain32",
    "plain44", "plain56",
];

impl ResNetConfig {
    /// The architecture called `name` (see [`ARCHITECTURES`]) for `in_channels`-channel
    /// images and `num_classes` classes, without zero-initialized residuals.
    pub fn named(name: &str, in_channels: usize, num_classes: usize) -> Result<Self> {
        let torchvision = |stage_blocks: Vec<usize>| ResNetConfig {
            stem: Stem::ImageNet,
            in_channels,
            stage_blocks,
            stage_channels: vec![64, 128, 256, 512],
            shortcuts: true,
            zero_init_residual: false,
            num_classes,
        };
        let cifar = |depth: usize, shortcuts: bool| ResNetConfig {
            stem: Stem::Small,
            in_channels,
            stage_blocks: vec![(depth - 2) / 6; 3],
            stage_channels: vec![16, 32, 64],
            shortcuts,
            zero_init_residual: false,
            num_classes,
        };
        let config = match name {
            "resnet18" => torchvision(vec![2, 2, 2, 2]),
            "resnet34" => torchvision(vec![3, 4, 6, 3]),
            _ => {
                let (prefix, depth) = name
                    .strip_prefix("resnet")
                    .map(|d| ("resnet", d))
                    .or_else(|| name.strip_prefix("plain").map(|d| ("plain", d)))
                    .ok_or_else(|| unknown(name))?;
                let depth: usize = depth.parse().map_err(|_| unknown(name))?;
                if !ARCHITECTURES.contains(&name) {
                    return Err(unknown(name));
                }
                cifar(depth, prefix == "resnet")
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that every size is positive and the stage lists agree.
    pub fn validate(&self) -> Result<()> {
        let ok = self.in_channels > 0
            && self.num_classes > 0
            && !self.stage_blocks.is_empty()
            && self.stage_blocks.len() == self.stage_channels.len()
            && self.stage_blocks.iter().all(|&b| b > 0)
            && self.stage_channels.iter().all(|&c| c > 0);
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "ResNet needs positive channels and classes and one positive block count and \
                 width per stage, got {self:?}"
            )))
        }
    }

    /// Number of weighted layers (convolutions on the main path plus the classifier), the
    /// number in a name like `resnet56`.
    pub fn depth(&self) -> usize {
        2 + 2 * self.stage_blocks.iter().sum::<usize>()
    }
}

fn unknown(name: &str) -> Error {
    Error::Config(format!(
        "unknown model `{name}`; known: {}",
        ARCHITECTURES.join(", ")
    ))
}
