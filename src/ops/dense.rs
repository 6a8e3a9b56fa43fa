//! Dense layers (`Gemm`, `MatMul` + bias) and per-channel affine layers
//! (a `BatchNormalization` with nothing to fold into) as linear layers.

use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, Axis};

use crate::kernels::dense as dense_kernels;
use crate::kernels::linalg::{matmul, Mat};
use super::registry::{Imported, OnnxNode};
use super::{Operator, Parameters};
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

    fn dense(&self) -> bool {
        true
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
        // only the outputs whose gradient is not zero in every row: under
        // CP-LRP the queries' and keys' thirds of an attention's packed
        // in-projection get none
        let (lo, hi) = nonzero_columns(gs, m);
        if lo < hi {
            matmul(
                &mut out,
                Mat::strided(&gs[lo..], rows, hi - lo, m, 1),
                Mat::row_major(&ws[lo * k..hi * k], hi - lo, k),
                false,
                true,
            );
        }
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

    fn dense(&self) -> bool {
        false
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

impl Operator for Dense {
    super::linear_layer!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let mut s = inputs[0].to_vec();
        let last = s
            .last_mut()
            .ok_or_else(|| anyhow::anyhow!("dense input of rank 0"))?;
        *last = *self.weight.shape().first().unwrap_or(&0);
        Ok(s)
    }

    /// The weights as they are (no copy).
    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        self.forward_mod(inputs[0], Modifier::Identity, true)
    }

    fn kind(&self) -> Option<&'static str> {
        Some("dense layer")
    }

    fn parameters_mut(&mut self) -> Option<Parameters<'_>> {
        let fan_in = self.weight.shape().get(1).copied().unwrap_or(1);
        Some(Parameters {
            weight: &mut self.weight,
            bias: self.bias.as_mut(),
            fan_in,
        })
    }

    fn channel_affine(&self, _m: usize, _from_end: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }

    /// Outputs on the last axis.
    fn fold(&mut self, next: &dyn Operator) -> bool {
        fold_affine(&mut self.weight, &mut self.bias, 0, next)
    }
}

impl Operator for Affine {
    super::linear_layer!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        LinearLayer::forward(self, inputs[0], &self.weight, true)
    }

    fn kind(&self) -> Option<&'static str> {
        Some("per-channel affine layer")
    }

    fn parameters_mut(&mut self) -> Option<Parameters<'_>> {
        Some(Parameters {
            weight: &mut self.weight,
            bias: Some(&mut self.bias),
            fan_in: 1,
        })
    }

    /// A batch norm folds into the layer before it when it has one scale
    /// per output channel.
    fn channel_affine(&self, m: usize, _from_end: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        (self.weight.len() == m && self.bias.len() == m).then(|| {
            (
                self.weight.iter().copied().collect(),
                self.bias.iter().copied().collect(),
            )
        })
    }

    /// Not a canonization target (a per-channel layer folds into a
    /// convolution or a dense layer only).
    fn fold(&mut self, _: &dyn Operator) -> bool {
        false
    }
}

/// The columns `lo..hi` of a row-major matrix with `m` columns outside
/// which every value is zero (`lo >= hi`: all are).
fn nonzero_columns(g: &[f32], m: usize) -> (usize, usize) {
    let (mut lo, mut hi) = (m, 0);
    for row in g.chunks(m.max(1)) {
        if let Some(p) = row[..lo.min(row.len())].iter().position(|&v| v != 0.0) {
            lo = p;
        }
        if let Some(q) = row[hi.min(row.len())..].iter().rposition(|&v| v != 0.0) {
            hi = hi + q + 1;
        }
        if lo == 0 && hi == m {
            break;
        }
    }
    (lo, hi)
}

/// Folds the per-channel affine map `next` into a layer's `weight` (output
/// channels on axis 0) and `bias`, the output channels `from_end` axes
/// before the last of its output: `W' = diag(scale) W`, `b' = b * scale +
/// shift`. `false`, nothing changed, where `next` is no such map.
pub fn fold_affine(
    weight: &mut ArrayD<f32>,
    bias: &mut Option<ArrayD<f32>>,
    from_end: usize,
    next: &dyn Operator,
) -> bool {
    let Some(&m) = weight.shape().first() else {
        return false;
    };
    let Some((scale, shift)) = next.channel_affine(m, from_end) else {
        return false;
    };
    let old: Vec<f32> = bias
        .as_ref()
        .map_or(vec![0.0; m], |b| b.iter().copied().collect());
    // the graph builder checks these lengths; a mismatch is not folded
    // (and nothing is modified) rather than a panic
    if scale.len() != m || shift.len() != m || old.len() != m {
        return false;
    }
    for (mut row, s) in weight.axis_iter_mut(Axis(0)).zip(&scale) {
        row.mapv_inplace(|v| v * s);
    }
    let new: Vec<f32> = old
        .iter()
        .zip(&scale)
        .zip(&shift)
        .map(|((b, s), t)| b * s + t)
        .collect();
    *bias = Some(ndarray::Array1::from(new).into_dyn());
    true
}

/// Builds a dense layer (`Gemm`, `MatMul` of an activation by a constant)
/// or a per-channel affine layer (`BatchNormalization`, which
/// canonization folds into the layer before it where there is one).
fn import(n: &OnnxNode) -> Result<Imported> {
    match n.op_type() {
        "Gemm" => {
            ensure!(
                n.is_act(0) && !n.is_act(1),
                "only activation x constant is supported"
            );
            ensure!(n.attr_int("transA", 0) == 0, "transA = 1");
            let b = n.constant(1)?.ok_or_else(|| anyhow!("no weight"))?;
            ensure!(b.ndim() == 2, "weight must be 2-D");
            let alpha = n.attr_float("alpha", 1.0);
            let beta = n.attr_float("beta", 1.0);
            let w = if n.attr_int("transB", 0) != 0 {
                b
            } else {
                b.t().as_standard_layout().into_owned()
            };
            let w = if alpha != 1.0 {
                w.mapv(|v| v * alpha)
            } else if w.is_standard_layout() {
                // no copy of what is often the largest weight of the model
                w
            } else {
                w.as_standard_layout().into_owned()
            };
            let m = w.shape()[0];
            let bias = match n.constant(2)? {
                None => None,
                Some(c) => {
                    let c = c.mapv(|v| v * beta);
                    let c = c
                        .broadcast(vec![m])
                        .or_else(|| c.broadcast(vec![1, m]))
                        .map(|v| v.to_owned());
                    let c = c.ok_or_else(|| anyhow!("bias C must broadcast to [M]"))?;
                    Some(c.into_shape_with_order(vec![m])?)
                }
            };
            Ok(Dense { weight: w, bias }.into())
        }
        "MatMul" if n.activations() == 2 => super::attention::import_product(n),
        "MatMul" => {
            ensure!(
                n.is_act(0) && !n.is_act(1),
                "only activation x constant is supported"
            );
            let b = n.constant(1)?.ok_or_else(|| anyhow!("no weight"))?;
            ensure!(b.ndim() == 2, "weight must be 2-D");
            Ok(Dense {
                weight: b.t().as_standard_layout().into_owned(),
                bias: None,
            }
            .into())
        }
        "BatchNormalization" => {
            let get = |i| n.constant(i)?.ok_or_else(|| anyhow!("missing parameter"));
            let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
            let lens = [gamma.len(), beta.len(), mean.len(), var.len()];
            ensure!(
                lens.iter().all(|&l| l == lens[0]),
                "scale, bias, mean and variance of different lengths {lens:?}"
            );
            let eps = n.attr_float("epsilon", 1e-5);
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var.iter())
                .map(|(g, v)| g / (v + eps).sqrt())
                .collect();
            let shift: Vec<f32> = beta
                .iter()
                .zip(mean.iter())
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            let c = scale.len();
            Ok(Affine {
                weight: ArrayD::from_shape_vec(vec![c], scale)?,
                bias: ArrayD::from_shape_vec(vec![c], shift)?,
            }
            .into())
        }
        other => bail!("'{other}' is not a dense or per-channel layer"),
    }
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "dense",
    onnx: &[
        (
            "Gemm",
            "linear layer, dense rule (alpha, beta, transB; transA = 0)",
        ),
        (
            "MatMul",
            "activation x constant: linear layer, dense rule (a following Add is its bias); two activations (attention): AttnLRP's epsilon and uniform rules (cp-lrp: the attention weights are constants)",
        ),
        (
            "BatchNormalization",
            "folded into the Conv / Gemm before it; else a per-channel linear layer (conv rule)",
        ),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_columns_bound_every_row() {
        let g = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        assert_eq!(nonzero_columns(&g, 4), (1, 3));
        let (lo, hi) = nonzero_columns(&[0.0; 8], 4);
        assert!(lo >= hi);
        assert_eq!(nonzero_columns(&[1.0, 0.0, 0.0, 1.0], 4), (0, 4));
    }

    #[test]
    fn transposed_pass_skips_columns_without_gradient_exactly() {
        // a [40, 12] gradient that is zero outside columns 8..12 (the values
        // third of a packed projection), against the naive sum
        let (rows, m, k) = (40, 12, 5);
        let w = ArrayD::from_shape_fn(vec![m, k], |d| ((d[0] * 7 + d[1] * 3) % 11) as f32 - 5.0);
        let g = ArrayD::from_shape_fn(vec![rows, m], |d| {
            if d[1] >= 8 {
                ((d[0] * 5 + d[1]) % 13) as f32 - 6.0
            } else {
                0.0
            }
        });
        let layer = Dense { weight: w.clone(), bias: None };
        let got = layer.backward(&g, &w, &[rows, k]).unwrap();
        for r in 0..rows {
            for c in 0..k {
                let want: f32 = (0..m).map(|j| g[[r, j]] * w[[j, c]]).sum();
                assert_eq!(got[[r, c]], want, "({r}, {c})");
            }
        }
    }
}
