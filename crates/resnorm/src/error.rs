//! The one error type of the library.
//!
//! Every fallible function returns [`Result<T>`]. Messages name the operation and the
//! offending shapes or values, so that a command-line tool can print them as one line.

use std::path::PathBuf;

/// Everything that can go wrong in resnorm.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Buffers whose lengths do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The operation that refused the input, e.g. `layer_norm_forward`.
        op: &'static str,
        /// What was expected and what was given.
        detail: String,
    },
    /// A value outside its allowed range (a non-finite eps, zero columns, ...).
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument {
        /// The operation that refused the input.
        op: &'static str,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// A model or training configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying operating-system error.
        source: std::io::Error,
    },
    /// A file that was read but whose contents are not what they must be.
    #[error("{path}: {detail}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Training produced a loss or gradient that is not finite; the model was not updated.
    #[error("training diverged at step {step}: the loss is {loss}{}", match last_finite_loss {
        Some(last) => format!(" (last finite loss {last})"),
        None => String::new(),
    })]
    Diverged {
        /// The step (from 0) whose loss or gradient norm was NaN or infinite.
        step: u64,
        /// That step's loss (NaN, inf, or finite when only the gradient norm was not).
        loss: f32,
        /// The loss of the last step that was finite, if any.
        last_finite_loss: Option<f32>,
    },
    /// The thread pool could not be built or was already built with another size.
    #[error("thread pool: {0}")]
    Threads(String),
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Shape`] for operation `op`.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }

    /// An [`Error::InvalidArgument`] for operation `op`.
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
