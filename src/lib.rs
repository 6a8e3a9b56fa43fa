#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// The modules import each other in layers, without cycles:
// `python3 scripts/modgraph.py` prints them (README, "Layout").
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
