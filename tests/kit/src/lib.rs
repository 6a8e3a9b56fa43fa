//! Test and example support for `lrp-heatmap`, a dev-dependency only: the
//! library and the binary never link it.
//!
//! - [`synth`]: a small ONNX writer and generated VGG16s (random He weights);
//! - [`init`]: seeded weight initialisers (Glorot, He, LeCun);
//! - [`deep_taylor`]: the deep Taylor decomposition's worked example, run on
//!   the library's graph walk and rules (`cargo run --example deep_taylor`);
//! - [`npy`]: reading `.npy` outputs and fixtures;
//! - [`images`]: encoding test images;
//! - [`http`]: a local HTTP server for the download tests;
//! - [`process`]: waiting for a child process with a deadline.
#![warn(missing_docs)]

pub mod deep_taylor;
pub mod http;
pub mod images;
pub mod init;
pub mod npy;
pub mod process;
pub mod synth;
