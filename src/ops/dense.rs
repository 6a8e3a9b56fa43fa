//! Dense layers (`Gemm`, `MatMul` + bias) and per-channel affine layers
//! (a `BatchNormalization` with nothing to fold into) as linear layers.

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Axis};

use crate::kernels::dense as dense_kernels;
use crate::kernels::linalg::{matmul, Mat};
use crate::rules::{LinearLayer, Modifier};

/// Up to this many rows (images) the transposed pass runs on the kernel that
/// reads each live weight row once for all rows (memory-bound); more go to
/// the GEMM. (The forward pass is as fast on the GEMM, measured.)
const FEW_ROWS: usize = 16;

/// `z = x W^T + b` on the last axis, weights `[M, K]` (PyTorch's layout).
#[derive(Clone, Debug)]
pub struct Dense {
    /// Weights `[M, K]`.
    pub weight: ArrayD<f32>,
    /// Bias `[M]`.
    pub bias: Option<ArrayD<f32>>,
}

impl Dense {
    fn dims(&self, w: &ArrayD<f32>) -> Result<(usize, usize)> {
        ensure!(
            w.ndim() == 2,
            "dense weight must be [M, K], got {:?}",
            w.shape()
        );
        Ok((w.shape()[0], w.shape()[1]))
    }
}

impl Dense {
    /// Adds the bias (if asked) and shapes the output of the forward pass.
    fn finish(
        &self,
        shape: &[usize],
        mut out: Vec<f32>,
        m: usize,
        with_bias: bool,
    ) -> Result<ArrayD<f32>> {
        if with_bias {
            if let Some(b) = &self.bias {
                ensure!(
                    b.len() == m,
                    "dense bias has {} values for {m} outputs",
                    b.len()
                );
                let b: Vec<f32> = b.iter().copied().collect();
                for row in out.chunks_mut(m) {
                    row.iter_mut().zip(&b).for_each(|(o, b)| *o += b);
                }
            }
        }
        let mut out_shape = shape.to_vec();
        *out_shape.last_mut().expect("rank >= 1") = m;
        Ok(ArrayD::from_shape_vec(out_shape, out)?)
    }
}

impl LinearLayer for Dense {
    fn weight(&self) -> &ArrayD<f32> {
        &self.weight
    }

    fn bias(&self, out_ndim: usize) -> Option<(&ArrayD<f32>, usize)> {
        (self.bias.as_ref()).map(|b| (b, out_ndim.saturating_sub(1)))
    }

    fn forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, with_bias: bool) -> Result<ArrayD<f32>> {
        let (m, k) = self.dims(w)?;
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&k),
            "dense layer expects {k} input features, got shape {shape:?}"
        );
        let rows = x.len() / k.max(1);
        let x = x.as_standard_layout();
        let w = w.as_standard_layout();
        let (xs, ws) = (x.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        let mut out = vec![0.0f32; rows * m];
        matmul(
            &mut out,
            Mat::row_major(xs, rows, k),
            Mat::row_major(ws, m, k).t(),
            false,
            true,
        );
        self.finish(shape, out, m, with_bias)
    }

    fn backward(
        &self,
        g: &ArrayD<f32>,
        w: &ArrayD<f32>,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        let (m, k) = self.dims(w)?;
        ensure!(
            g.shape().last() == Some(&m),
            "dense relevance of shape {:?} for {m} outputs",
            g.shape()
        );
        let rows = g.len() / m.max(1);
        ensure!(
            rows * k == input_shape.iter().product::<usize>(),
            "dense input shape {input_shape:?}"
        );
        let g = g.as_standard_layout();
        let w = w.as_standard_layout();
        let (gs, ws) = (g.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        if rows <= FEW_ROWS {
            // each weight row read once, and not at all where its gradient
            // is zero in every row (behind a ReLU, most of them)
            let out = dense_kernels::transposed(ws, m, k, gs, rows, Modifier::Identity);
            return Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?);
        }
        let mut out = vec![0.0f32; rows * k];
        matmul(
            &mut out,
            Mat::row_major(gs, rows, m),
            Mat::row_major(ws, m, k),
            false,
            true,
        );
        Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?)
    }

    fn forward_mod(&self, x: &ArrayD<f32>, m: Modifier, with_bias: bool) -> Result<ArrayD<f32>> {
        let (mo, k) = self.dims(&self.weight)?;
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&k),
            "dense layer expects {k} input features, got shape {shape:?}"
        );
        let rows = x.len() / k.max(1);
        let (x, w) = (x.as_standard_layout(), self.weight.as_standard_layout());
        let (xs, ws) = (x.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        let out = dense_kernels::forward(ws, mo, k, xs, rows, m);
        self.finish(shape, out, mo, with_bias)
    }

    fn backward_mod(
        &self,
        g: &ArrayD<f32>,
        m: Modifier,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        let (mo, k) = self.dims(&self.weight)?;
        ensure!(
            g.shape().last() == Some(&mo),
            "dense relevance of shape {:?} for {mo} outputs",
            g.shape()
        );
        let rows = g.len() / mo.max(1);
        ensure!(
            rows * k == input_shape.iter().product::<usize>(),
            "dense input shape {input_shape:?}"
        );
        let (g, w) = (g.as_standard_layout(), self.weight.as_standard_layout());
        let (gs, ws) = (g.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        let out = dense_kernels::transposed(ws, mo, k, gs, rows, m);
        Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?)
    }

    fn modifies_on_the_fly(&self) -> bool {
        true
    }
}

/// `z[n, c, ...] = x[n, c, ...] * w[c] + b[c]`: a per-channel affine map on axis 1.
#[derive(Clone, Debug)]
pub struct Affine {
    /// Scale per channel `[C]`.
    pub weight: ArrayD<f32>,
    /// Shift per channel `[C]`.
    pub bias: ArrayD<f32>,
}

impl Affine {
    fn per_channel(
        &self,
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        bias: Option<&ArrayD<f32>>,
    ) -> Result<ArrayD<f32>> {
        ensure!(
            x.ndim() >= 2,
            "per-channel layer needs a channel axis, got {:?}",
            x.shape()
        );
        let c = x.shape()[1];
        ensure!(
            w.len() == c,
            "per-channel layer has {} scales for {c} channels",
            w.len()
        );
        let mut out = x.to_owned();
        for (ch, mut lane) in out.axis_iter_mut(Axis(1)).enumerate() {
            let s = w.as_slice_memory_order().map_or(0.0, |s| s[ch]);
            let b = bias
                .and_then(|b| b.as_slice_memory_order())
                .map_or(0.0, |b| b[ch]);
            lane.mapv_inplace(|v| v * s + b);
        }
        Ok(out)
    }
}

impl LinearLayer for Affine {
    fn weight(&self) -> &ArrayD<f32> {
        &self.weight
    }

    fn bias(&self, _: usize) -> Option<(&ArrayD<f32>, usize)> {
        Some((&self.bias, 1))
    }

    fn forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, with_bias: bool) -> Result<ArrayD<f32>> {
        self.per_channel(x, w, with_bias.then_some(&self.bias))
    }

    fn backward(
        &self,
        g: &ArrayD<f32>,
        w: &ArrayD<f32>,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        ensure!(
            g.shape() == input_shape,
            "per-channel relevance {:?} vs input {input_shape:?}",
            g.shape()
        );
        self.per_channel(g, w, None)
    }
}

/// The registry's entry: the ONNX operators this family reads (imported in
/// `model/onnx`, run natively in `engine/native.rs`).
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "dense",
    onnx: &[
        (
            "Gemm",
            "linear layer, dense rule (alpha, beta, transB; transA = 0)",
        ),
        (
            "MatMul",
            "linear layer, dense rule (activation x constant); a following Add is its bias",
        ),
        (
            "BatchNormalization",
            "folded into the Conv / Gemm before it; else a per-channel linear layer (conv rule)",
        ),
    ],
    import: None,
    fuse: None,
};
