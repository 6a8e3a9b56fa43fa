//! The error of the library's public entry points ([`crate::Model::load`],
//! [`crate::Model::explain`], [`crate::Explainer`]).
//!
//! Messages speak of the library's parameters (`epsilon`, `steps`,
//! `max_pixels`), never of command-line flags: the command maps
//! [`Error::InvalidParameter`] and [`Error::LimitExceeded`] to its flags.
//! Internal code works with `anyhow`; what reaches the boundary without a
//! variant of its own is [`Error::Other`], with its whole chain of causes.
//!
//! ```
//! use lrp_heatmap::{Error, Model};
//!
//! let model = Model::load("efficientnet-lite0")?;
//! match model.explainer("epsilon").epsilon(-1.0).explain(&image::DynamicImage::new_rgb8(8, 8)) {
//!     Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "epsilon"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Error>(())
//! ```

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file that cannot be read, decoded or prepared.
    #[error("{message}")]
    Model {
        /// The file (or the bundled model's name).
        path: PathBuf,
        /// What is wrong with it, all causes joined by `": "`.
        message: String,
    },
    /// A model with an operator the relevance graph does not handle.
    #[error("{message}")]
    Unsupported {
        /// The ONNX operator, e.g. `LSTM`.
        op_type: String,
        /// The node's name.
        node: String,
        /// The whole message, naming the model.
        message: String,
    },
    /// An image file that cannot be read or decoded.
    #[error("{message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, all causes joined by `": "`.
        message: String,
    },
    /// An input beyond a bound on decoding or memory (the image's pixels,
    /// the file's size); raising the parameter `name` lets it through.
    #[error("{message}")]
    LimitExceeded {
        /// The parameter that sets the bound, e.g. `max_pixels`.
        name: &'static str,
        /// What exceeds it.
        message: String,
    },
    /// A parameter outside its domain; shown as `"{name} {message}"`, e.g.
    /// `epsilon must be a finite number > 0, got -1`.
    #[error("{name} {message}")]
    InvalidParameter {
        /// The parameter, e.g. `epsilon`, `steps`, `std`.
        name: &'static str,
        /// What is wrong, starting with a verb (`must be ...`).
        message: String,
    },
    /// A name that is no rule, composite or gradient-family analyzer.
    #[error("unknown rule or analyzer '{name}'; known: {}", .known.join(", "))]
    UnknownAnalyzer {
        /// The name asked for.
        name: String,
        /// Every known name.
        known: Vec<&'static str>,
    },
    /// A class index the model does not have.
    #[error("class {class} out of range: the model has {classes} classes")]
    ClassOutOfRange {
        /// The index asked for.
        class: usize,
        /// The model's number of classes.
        classes: usize,
    },
    /// Anything else, with its chain of causes (`{:#}` prints them all).
    #[error(transparent)]
    Other(anyhow::Error),
}

/// `std::result::Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<anyhow::Error> for Error {
    /// The [`Error`] inside `e` when it is one without added context (an
    /// error of ours passed through `anyhow`), else [`Error::Other`].
    fn from(e: anyhow::Error) -> Self {
        e.downcast::<Error>().unwrap_or_else(Error::Other)
    }
}

impl Error {
    /// [`Error::InvalidParameter`] unless `ok`.
    pub(crate) fn check(
        ok: bool,
        name: &'static str,
        message: impl FnOnce() -> String,
    ) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidParameter {
                name,
                message: message(),
            })
        }
    }

    /// The first [`Error`] in the chain of `e` (context added on top of it
    /// by `anyhow` or not).
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        e.chain().find_map(|c| c.downcast_ref::<Error>())
    }
}
