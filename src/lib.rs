#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
pub mod app;
pub mod canon;
pub mod composite;
pub mod explain;
pub mod graph;
pub mod labels;
pub mod linalg;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod output;
pub mod preprocess;
pub mod render;
pub mod rules;
pub mod synth;
