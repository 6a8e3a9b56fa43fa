//! The class labels: [`lrp_heatmap::labels`], shared with the Python package.

pub use lrp_heatmap::labels::*;
