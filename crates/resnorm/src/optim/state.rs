//! Optimizer state: per-parameter buffers bound to the parameters by order and name, and
//! their round trip through a checkpoint file.
//!
//! An optimizer creates its buffers (zeros, shaped like the parameters) at its first step
//! and from then on expects the same parameters, in the same order, with the same names and
//! shapes; anything else is an error rather than a buffer silently applied to the wrong
//! tensor. [`OptimizerState`] is the exported form: buffers named `<buffer>.<param name>`
//! (`m.h.0.attn.c_attn.weight`), the step count and the parameter order, stored as a
//! safetensors file whose metadata holds `optimizer`, `step` and `params` (a JSON list).
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! use resnorm::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState};
//!
//! let mut w = Param::filled("w", vec![2], ParamKind::Weight, 1.0);
//! w.grad.copy_from_slice(&[0.5, -0.5]);
//! let mut adamw = AdamW::new(AdamWConfig::default()).unwrap();
//! adamw.step(&mut [&mut w], 1e-2).unwrap();
//!
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-state-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("optimizer.safetensors");
//! adamw.state().save(&path).unwrap();
//!
//! let mut resumed = AdamW::new(AdamWConfig::default()).unwrap();
//! resumed.load_state(OptimizerState::load(&path).unwrap()).unwrap();
//! assert_eq!(resumed.state(), adamw.state());
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpoint::{
    check_finite, read_tensors, write_atomic_with, Checkpoint, TensorFile, TensorRef,
};
use crate::nn::Param;
use crate::{Error, Result, Tensor};

/// An optimizer's state, as saved in and loaded from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Which optimizer it belongs to: `adamw` or `sgd`.
    pub optimizer: String,
    /// Steps taken so far.
    pub step: u64,
    /// Names of the parameters the buffers belong to, in the order the optimizer saw them.
    pub params: Vec<String>,
    /// Buffers named `<buffer>.<param name>`.
    pub tensors: BTreeMap<String, Tensor>,
}

impl OptimizerState {
    /// Writes the state to a safetensors file at `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = self.tensor_file()?;
        write_atomic_with(path, |out| {
            let mut out = std::io::BufWriter::new(out);
            file.write_to(&mut out)?;
            std::io::Write::flush(&mut out)
        })
    }

    /// The state as a safetensors file, ready to be written anywhere.
    pub fn tensor_file(&self) -> Result<TensorFile<'_>> {
        let params = serde_json::to_string(&self.params)
            .map_err(|e| Error::invalid("OptimizerState::save", e.to_string()))?;
        let metadata = BTreeMap::from([
            ("optimizer".to_string(), self.optimizer.clone()),
            ("step".to_string(), self.step.to_string()),
            ("params".to_string(), params),
        ]);
        let tensors: Vec<TensorRef<'_>> = (self.tensors.iter())
            .map(|(name, tensor)| TensorRef::named(name, tensor))
            .collect();
        TensorFile::new(&tensors, &metadata)
    }

    /// Reads a state written by [`OptimizerState::save`].
    ///
    /// Besides the errors of [`read_tensors`], a file without the `optimizer`, `step` or
    /// `params` metadata, with unparsable values there, or with a NaN or infinite value in a
    /// buffer is an [`Error::Format`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_checkpoint(path, read_tensors(path)?)
    }

    /// The state in `checkpoint`, a file read from `path` (named in errors); the checks of
    /// [`OptimizerState::load`].
    pub fn from_checkpoint(path: &Path, checkpoint: Checkpoint) -> Result<Self> {
        let format = |detail: String| Error::Format {
            path: path.to_path_buf(),
            detail,
        };
        let field = |key: &str| {
            checkpoint
                .metadata
                .get(key)
                .ok_or_else(|| format(format!("missing optimizer metadata `{key}`")))
        };
        let optimizer = field("optimizer")?.clone();
        let step = field("step")?;
        let step = step
            .parse()
            .map_err(|_| format(format!("metadata `step` is `{step}`, not a step count")))?;
        let params = serde_json::from_str(field("params")?).map_err(|e| {
            format(format!(
                "metadata `params` is not a JSON list of names: {e}"
            ))
        })?;
        for (name, tensor) in &checkpoint.tensors {
            check_finite(path, name, tensor.data())?;
        }
        Ok(OptimizerState {
            optimizer,
            step,
            params,
            tensors: checkpoint.tensors,
        })
    }
}

/// The buffers of one parameter.
#[derive(Clone, Debug)]
pub(crate) struct Slot<const N: usize> {
    /// Name of the parameter they belong to.
    pub(crate) name: String,
    /// One tensor per buffer kind, shaped like the parameter.
    pub(crate) buffers: [Tensor; N],
}

/// `N` buffers per parameter (AdamW: `m` and `v`), in parameter order.
#[derive(Clone, Debug)]
pub(crate) struct Slots<const N: usize> {
    kinds: [&'static str; N],
    slots: Vec<Slot<N>>,
}

impl<const N: usize> Slots<N> {
    /// No buffers yet; `kinds` names them in exported state (`["m", "v"]`).
    pub(crate) fn new(kinds: [&'static str; N]) -> Self {
        Slots {
            kinds,
            slots: Vec::new(),
        }
    }

    /// Checks `params` against the buffers, creating zero buffers on first use, and hands
    /// out the slots in parameter order. Nothing changes when an error is returned.
    pub(crate) fn bind(
        &mut self,
        op: &'static str,
        params: &[&mut Param],
    ) -> Result<&mut [Slot<N>]> {
        check_params(op, params)?;
        if self.slots.is_empty() {
            self.slots = params
                .iter()
                .map(|p| Slot {
                    name: p.name.clone(),
                    buffers: std::array::from_fn(|_| Tensor::zeros(p.shape.clone())),
                })
                .collect();
        }
        if self.slots.len() != params.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "{} parameters given, the optimizer state holds {}",
                    params.len(),
                    self.slots.len()
                ),
            ));
        }
        for (i, (param, slot)) in params.iter().zip(&self.slots).enumerate() {
            let shape = slot.buffers.first().map(Tensor::shape);
            if param.name != slot.name || shape.is_some_and(|s| s != param.shape.as_slice()) {
                return Err(Error::invalid(
                    op,
                    format!(
                        "parameter {i} is `{}` {:?}, the optimizer state holds `{}` {:?} there \
                         (pass the same parameters in the same order every step)",
                        param.name,
                        param.shape,
                        slot.name,
                        shape.unwrap_or(&[])
                    ),
                ));
            }
        }
        Ok(&mut self.slots)
    }

    /// True before the first step (or after importing an empty state).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The exported form, for optimizer `optimizer` after `step` steps.
    pub(crate) fn export(&self, optimizer: &str, step: u64) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for slot in &self.slots {
            for (kind, buffer) in self.kinds.iter().zip(&slot.buffers) {
                tensors.insert(format!("{kind}.{}", slot.name), buffer.clone());
            }
        }
        OptimizerState {
            optimizer: optimizer.to_string(),
            step,
            params: self.slots.iter().map(|s| s.name.clone()).collect(),
            tensors,
        }
    }

    /// Rebuilds the buffers from `state`, which must belong to `optimizer` and hold exactly
    /// one tensor per buffer kind and parameter, of equal shapes per parameter.
    pub(crate) fn import(
        &self,
        op: &'static str,
        optimizer: &str,
        mut state: OptimizerState,
    ) -> Result<Self> {
        if state.optimizer != optimizer {
            return Err(Error::invalid(
                op,
                format!("the state belongs to optimizer `{}`", state.optimizer),
            ));
        }
        let mut slots = Vec::with_capacity(state.params.len());
        for name in &state.params {
            let mut buffers = Vec::with_capacity(N);
            for kind in self.kinds {
                let key = format!("{kind}.{name}");
                let Some(tensor) = state.tensors.remove(&key) else {
                    return Err(Error::invalid(op, format!("missing state tensor `{key}`")));
                };
                if let Some(first) = buffers.first().map(Tensor::shape) {
                    if first != tensor.shape() {
                        return Err(Error::invalid(
                            op,
                            format!(
                                "state tensor `{key}` has shape {:?}, `{}.{name}` has {first:?}",
                                tensor.shape(),
                                self.kinds[0]
                            ),
                        ));
                    }
                }
                buffers.push(tensor);
            }
            let Ok(buffers) = buffers.try_into() else {
                return Err(Error::invalid(op, "buffer count differs from buffer kinds"));
            };
            slots.push(Slot {
                name: name.clone(),
                buffers,
            });
        }
        if let Some(extra) = state.tensors.keys().next() {
            return Err(Error::invalid(
                op,
                format!("unexpected state tensor `{extra}`"),
            ));
        }
        Ok(Slots {
            kinds: self.kinds,
            slots,
        })
    }
}

/// Checks that every parameter's value and gradient hold the product of its shape.
pub(crate) fn check_params(op: &'static str, params: &[&mut Param]) -> Result<()> {
    for param in params {
        let len: usize = param.shape.iter().product();
        if param.value.len() != len || param.grad.len() != len {
            return Err(Error::shape(
                op,
                format!(
                    "parameter `{}` has shape {:?} ({len} elements), {} values and {} gradients",
                    param.name,
                    param.shape,
                    param.value.len(),
                    param.grad.len()
                ),
            ));
        }
    }
    Ok(())
}
