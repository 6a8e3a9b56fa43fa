//! Layer-wise Relevance Propagation heatmaps for ONNX image classifiers.
//!
//! Load a model once, explain images (or ready tensors) by rule, composite or
//! gradient-family analyzer name:
//!
//! ```rust
//! let model = lrp_heatmap::Model::load("efficientnet-lite0")?;   // the bundled model, or a path
//! let image = image::open("images/cat.jpg").expect("the photo");
//! let e = model.explain(&image, "epsilon-plus-flat")?;
//! println!("class {} relevance sum {} for logit {}", e.class, e.relevance_sum, e.logit);
//! let e = model.explainer("epsilon").class(281).epsilon(0.1).explain(&image)?;  // options
//! let all = model.explainer("zplus").explain_batch(&[&image, &image.fliph()])?; // a batch
//! # assert_eq!((e.class, all.len()), (281, 2));
//! # Ok::<(), lrp_heatmap::Error>(())
//! ```
//!
//! `e.relevance` is the relevance at the model input (its layout), `e.ledger`
//! where the relevance went node by node; [`render::heatmap_image`] draws it.
//!
//! # The pieces
//!
//! As Zennit keeps them apart:
//!
//! - **rules** ([`rules`], [`Rule`]): the math on one linear layer (modify the
//!   weights and inputs, forward, stabilise, divide, multiply back), with the
//!   account of what a rule does not pass on;
//! - **composites** ([`Composite`]): data, which rule for the first layer, the
//!   convolutions, the dense layers and the normalisations;
//! - **canonization** (in [`model`]): function-preserving rewrites at load time
//!   (BatchNorm folded into the preceding convolution, biases merged), checked
//!   by output equality.
//!
//! Each ONNX operator family is one file under [`ops`] (import, shape, forward,
//! relevance, gradient, what `check` and batching need), registered once
//! ([`ops::registry`]). [`analyzers`] holds LRP, the gradient family, the
//! evaluation report ([`analyzers::report`]) and the self-check
//! ([`analyzers::selfcheck`]); [`Explainer`] is the builder behind
//! [`Model::explain`].
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]: `InvalidParameter { name, .. }` (the
//! parameter named as here, `epsilon`, never a command-line flag),
//! `UnknownAnalyzer`, `ClassOutOfRange`, `Model`, `Unsupported { op_type, node,
//! .. }`, `Image`, `LimitExceeded`. A panic inside tract, an image decoder or this
//! crate becomes an error ([`guard`]).
//!
//! # Features
//!
//! - `bundled` (default): EfficientNet-Lite0 compiled in, so
//!   `Model::load("efficientnet-lite0")` needs no file.
//! - `cli` (default): the command `lrp-heatmap` and what only it needs (clap,
//!   downloads, progress bars, plots). A program that uses only the library
//!   depends on `lrp-heatmap = { version = "0.1", default-features = false }`.
//!
//! The README describes the command, the rules, the models and the measured
//! speed; `docs/ARCHITECTURE.md` where things live and how to add an operator,
//! a rule, a composite or a subcommand.

#![warn(missing_docs)]
// The modules import each other in layers, without cycles:
// `python3 scripts/modgraph.py` prints them (docs/ARCHITECTURE.md).
pub mod analyzers;
pub mod composite;
pub(crate) mod elementwise;
pub mod engine;
pub mod error;
pub mod explainer;
pub mod graph;
pub mod guard;
pub(crate) mod kernels;
pub mod labels;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod render;
pub mod rng;
pub mod rules;

// The public API in a handful of types: load a model, explain an image.
pub use analyzers::lrp::Explanation;
pub use analyzers::Analyzer;
pub use composite::Composite;
pub use error::{Error, Result};
pub use explainer::{Explainer, Input};
pub use model::Model;
pub use rules::Rule;
