//! `GlobalAveragePool` and `GlobalMaxPool`: `[N, C, ...]` to `[N, C, 1, ...]`.
//! The average gives each input its share of the plane's sum (Zennit's
//! `Norm` rule, stabilised by 1e-6); the maximum gives the plane's relevance
//! to its first arg-max, which is also its gradient. An [`Operator`]: import,
//! shape, forward, relevance and gradient are all in this file.

use anyhow::{ensure, Result};
use ndarray::ArrayD;

use super::registry::{Family, Imported, OnnxNode};
use super::Operator;
use crate::rules::{stabilize, STABILIZER};

/// The registry's entry.
pub const FAMILY: Family = Family {
    name: "global_pool",
    onnx: &[
        ("GlobalAveragePool", "proportional (Norm rule)"),
        ("GlobalMaxPool", "winner takes all"),
    ],
    import,
    fuse: None,
};

/// A global pool over every axis after the channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalPool {
    /// `GlobalMaxPool` (else `GlobalAveragePool`).
    pub max: bool,
}

fn import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.is_activation.first() == Some(&true),
        "only the pooling of an activation is supported"
    );
    Ok(GlobalPool {
        max: n.node.op_type == "GlobalMaxPool",
    }.into())
}

impl Operator for GlobalPool {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let mut s = inputs[0].to_vec();
        s.iter_mut().skip(2).for_each(|d| *d = 1);
        Ok(s)
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        forward(inputs[0], self.max)
    }

    /// It pools the axes after the channels.
    fn keeps_samples_apart(&self, rank: usize) -> bool {
        rank >= 2
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![relevance(inputs[0], r, self.max)?], None))
    }

    /// The average hands relevance in proportion over the mean; the
    /// maximum all to the winner.
    fn flow(&self) -> super::Flow {
        if self.max {
            super::Flow::Conserving
        } else {
            super::Flow::Proportional { per_input: false }
        }
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let x = inputs[0];
        Ok(vec![if self.max {
            // the winner-takes-all rule is the gradient
            relevance(x, g, true)?
        } else {
            avg_gradient(x.shape(), g)?
        }])
    }

    /// Both are positively homogeneous: the average is linear, the maximum
    /// is linear on each piece and hands relevance along its gradient.
    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
    ) -> Result<Vec<ArrayD<f32>>> {
        self.gradient(inputs, g, Default::default())
    }

    fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        Some(if self.max { "global max pool" } else { "global average pool" })
    }

    fn takes_maxima(&self) -> bool {
        self.max
    }
}

/// `GlobalMaxPool` / `GlobalAveragePool`: `[N, C, ...]` to `[N, C, 1, ...]`.
fn forward(x: &ArrayD<f32>, max: bool) -> Result<ArrayD<f32>> {
    ensure!(
        x.ndim() >= 3,
        "global pooling needs [N, C, ...], got {:?}",
        x.shape()
    );
    let mut shape = x.shape().to_vec();
    let planes = shape[0] * shape[1];
    let x = x.as_standard_layout();
    let xs = x.as_slice().unwrap_or(&[]);
    let size = xs.len() / planes.max(1);
    let out: Vec<f32> = (0..planes)
        .map(|c| {
            let p = &xs[c * size..(c + 1) * size];
            if max {
                p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                p.iter().sum::<f32>() / size.max(1) as f32
            }
        })
        .collect();
    shape[2..].iter_mut().for_each(|d| *d = 1);
    Ok(ArrayD::from_shape_vec(shape, out)?)
}

/// Relevance through `GlobalAveragePool` (`Norm` rule) or `GlobalMaxPool` (arg-max).
fn relevance(x: &ArrayD<f32>, r: &ArrayD<f32>, max: bool) -> Result<ArrayD<f32>> {
    ensure!(
        x.ndim() >= 3,
        "global pooling needs [N, C, ...], got {:?}",
        x.shape()
    );
    let planes = x.shape()[0] * x.shape()[1];
    ensure!(
        r.len() == planes,
        "global pooling output {:?} for input {:?}",
        r.shape(),
        x.shape()
    );
    let x = x.as_standard_layout();
    let r = r.as_standard_layout();
    let (xs, rs) = (x.as_slice().unwrap_or(&[]), r.as_slice().unwrap_or(&[]));
    let size = xs.len() / planes.max(1);
    let mut out = vec![0.0f32; xs.len()];
    for c in 0..planes {
        let xp = &xs[c * size..(c + 1) * size];
        let op = &mut out[c * size..(c + 1) * size];
        if max {
            let mut best = 0;
            for (i, &v) in xp.iter().enumerate() {
                if v > xp[best] {
                    best = i;
                }
            }
            if size > 0 {
                op[best] = rs[c];
            }
        } else {
            let inv = 1.0 / size as f32;
            let z = xp.iter().sum::<f32>() * inv;
            let s = rs[c] / stabilize(z, STABILIZER) * inv;
            op.iter_mut().zip(xp).for_each(|(o, &v)| *o = v * s);
        }
    }
    Ok(ArrayD::from_shape_vec(x.shape(), out)?)
}

/// Gradient through `GlobalAveragePool`: `g / (H W)` to every position.
fn avg_gradient(x_shape: &[usize], g: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x_shape.len() >= 3,
        "global pooling needs [N, C, ...], got {x_shape:?}"
    );
    let planes = x_shape[0] * x_shape[1];
    ensure!(
        g.len() == planes,
        "global pooling output {:?} for input {x_shape:?}",
        g.shape()
    );
    let size: usize = x_shape[2..].iter().product();
    let inv = 1.0 / size.max(1) as f32;
    let mut out = Vec::with_capacity(planes * size);
    for &v in g.as_standard_layout().iter() {
        out.extend(std::iter::repeat_n(v * inv, size));
    }
    Ok(ArrayD::from_shape_vec(x_shape.to_vec(), out)?)
}
