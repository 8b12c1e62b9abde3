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

    /// Exactly the number of parameters [`super::ResNet::new`] allocates (convolutions, BN
    /// weights and biases, the classifier), or an error when it overflows 64 bits.
    pub fn num_params(&self) -> Result<u64> {
        use crate::memory::{product, sum};
        let what = "ResNet's parameters";
        // A convolution without bias and its BatchNorm.
        let conv_bn = |cin: usize, cout: usize, k: u64| {
            sum(
                what,
                &[
                    product(what, &[cin as u64, cout as u64, k, k])?,
                    product(what, &[2, cout as u64])?,
                ],
            )
        };
        let first = self.stage_channels.first().copied().unwrap_or(0);
        let stem_kernel = match self.stem {
            Stem::ImageNet => 7,
            Stem::Small => 3,
        };
        let mut total = conv_bn(self.in_channels, first, stem_kernel)?;
        let mut cin = first;
        for (stage, (&blocks, &cout)) in self
            .stage_blocks
            .iter()
            .zip(&self.stage_channels)
            .enumerate()
        {
            for index in 0..blocks {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let projection = if self.shortcuts && (stride != 1 || cin != cout) {
                    conv_bn(cin, cout, 1)?
                } else {
                    0
                };
                let block = sum(
                    what,
                    &[conv_bn(cin, cout, 3)?, conv_bn(cout, cout, 3)?, projection],
                )?;
                total = sum(what, &[total, block])?;
                cin = cout;
            }
        }
        let classifier = product(what, &[cin as u64 + 1, self.num_classes as u64])?;
        sum(what, &[total, classifier])
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
