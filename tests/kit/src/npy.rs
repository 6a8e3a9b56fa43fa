//! Reading `.npy` files in tests (the outputs of `--raw` and the fixtures
//! `scripts/export_zoo.py` writes), through `ndarray-npy`.

use std::path::Path;

use anyhow::Context;
use ndarray::ArrayD;

/// Reads a little-endian `f32` `.npy` file: its shape and its data in C order.
/// Errors name the file.
pub fn read_npy_f32(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let a: ArrayD<f32> = ndarray_npy::read_npy(path)
        .with_context(|| format!("invalid .npy file {}", path.display()))?;
    let shape = a.shape().to_vec();
    let data = a.as_standard_layout().iter().copied().collect();
    Ok((shape, data))
}
