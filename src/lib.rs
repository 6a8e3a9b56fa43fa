#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// Layers of the library, each importing only the ones above it in this list
// (scripts/modgraph.py draws the graph; README "Layout"):
pub mod analyzers;
pub mod composite;
pub mod engine;
pub mod graph;
pub mod guard;
pub(crate) mod kernels;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod render;
pub mod rng;
pub mod rules;
