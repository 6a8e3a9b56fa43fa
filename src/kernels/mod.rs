//! Numerical kernels behind the operators: matrix products, im2col and
//! direct convolutions, Winograd, depthwise and dense layers. Crate-private:
//! their functions trust the shapes and strides they are given, which the
//! operators check first.

pub(crate) mod conv;
pub(crate) mod dense;
pub(crate) mod depthwise;
pub(crate) mod linalg;
pub(crate) mod math;
pub(crate) mod winograd;
