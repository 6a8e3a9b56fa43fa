//! Nodes that move relevance without weights: elementwise pass-through,
//! shape changes, transposes and the sum of two activations (residual `Add`,
//! Zennit's `Norm` rule on a `SumSingle`); and the gradients of the sum and of
//! arithmetic with constants. (Reshape and transpose move gradients exactly as
//! they move relevance.)

use std::collections::HashSet;

use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, Axis, Zip};

use super::ArithKind;
use crate::rules::{stabilize, STABILIZER};

/// Elementwise nodes (activations, dropout, identity, arithmetic with
/// constants): relevance unchanged.
pub fn pass(x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x.shape() == r.shape(),
        "elementwise node changes the shape {:?} to {:?}",
        x.shape(),
        r.shape()
    );
    Ok(r.clone())
}

/// Shape-only nodes: the relevance takes the input's shape.
pub fn reshape(x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x.len() == r.len(),
        "reshape from {:?} to {:?} changes the size",
        x.shape(),
        r.shape()
    );
    Ok(r.as_standard_layout()
        .into_owned()
        .into_shape_with_order(x.shape())?)
}

/// `Transpose`: the inverse permutation (an empty `perm` reverses the axes).
pub fn transpose(perm: &[usize], x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let n = r.ndim();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..n).rev().collect()
    } else {
        perm.to_vec()
    };
    ensure!(perm.len() == n, "Transpose perm {perm:?} for rank {n}");
    let mut inv = vec![0; n];
    for (i, &p) in perm.iter().enumerate() {
        ensure!(p < n, "Transpose perm {perm:?} out of range");
        inv[p] = i;
    }
    let out = r
        .clone()
        .permuted_axes(inv)
        .as_standard_layout()
        .into_owned();
    ensure!(
        out.shape() == x.shape(),
        "Transpose relevance {:?} vs input {:?}",
        out.shape(),
        x.shape()
    );
    Ok(out)
}

/// `Add` of activations: each input gets its share, `R_a = a R / stab(a + b)`.
pub fn sum(inputs: &[&ArrayD<f32>], r: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    for x in inputs {
        ensure!(
            x.shape() == r.shape(),
            "Add with broadcasting ({:?} to {:?}) is not supported",
            x.shape(),
            r.shape()
        );
    }
    let mut z = ArrayD::<f32>::zeros(r.shape());
    for x in inputs {
        z += *x;
    }
    let s = Zip::from(r)
        .and(&z)
        .map_collect(|&r, &z| r / stabilize(z, STABILIZER));
    Ok(inputs.iter().map(|x| &s * *x).collect())
}

/// Sums a gradient of a broadcast result back to the operand's `shape`
/// (numpy broadcasting: leading axes added, size-1 axes stretched).
pub fn unbroadcast(g: ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    if g.shape() == shape {
        return Ok(g);
    }
    ensure!(
        g.ndim() >= shape.len(),
        "an operand of shape {shape:?} does not broadcast to {:?}",
        g.shape()
    );
    let mut g = g;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (k, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[k] != 1 {
            g = g.sum_axis(Axis(k)).insert_axis(Axis(k));
        }
    }
    ensure!(
        g.shape() == shape,
        "an operand of shape {shape:?} does not broadcast to {:?}",
        g.shape()
    );
    Ok(g)
}

/// Gradient through the `Add` of activations: each input gets `g` (summed
/// over the axes it was broadcast along).
pub fn sum_gradient(inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    inputs
        .iter()
        .map(|x| unbroadcast(g.clone(), x.shape()))
        .collect()
}

/// Gradient through `x op c` (or `c op x` when `constant_first`) at the input
/// `x`: `g` for `+` and `-` (negated for `c - x`), `g c` for `*`, `g / c` for
/// `x / c` and `-g c / x^2` for `c / x`.
pub fn arith_gradient(
    kind: ArithKind,
    constant: &ArrayD<f32>,
    constant_first: bool,
    x: &ArrayD<f32>,
    g: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    let shape = g.shape();
    let c = constant.broadcast(shape).ok_or_else(|| {
        anyhow::anyhow!(
            "constant {:?} does not broadcast to the output {shape:?}",
            constant.shape()
        )
    })?;
    let local = match (kind, constant_first) {
        (ArithKind::Add, _) | (ArithKind::Sub, false) => g.clone(),
        (ArithKind::Sub, true) => g.mapv(|v| -v),
        (ArithKind::Mul, _) => Zip::from(g).and(&c).map_collect(|&g, &c| g * c),
        (ArithKind::Div, false) => Zip::from(g).and(&c).map_collect(|&g, &c| g / c),
        (ArithKind::Div, true) => {
            let xb = x.broadcast(shape).ok_or_else(|| {
                anyhow::anyhow!("input {:?} does not broadcast to {shape:?}", x.shape())
            })?;
            Zip::from(g)
                .and(&c)
                .and(&xb)
                .map_collect(|&g, &c, &x| -g * (c / x) / x)
        }
    };
    unbroadcast(local, x.shape())
}

/// How a shape-only node computes its output shape from its input shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ReshapeRule {
    /// `Flatten(axis)`: `[prod(d[..axis]), prod(d[axis..])]`.
    Flatten(i64),
    /// `Squeeze(axes)` (all axes of size 1 when `None`).
    Squeeze(Option<Vec<i64>>),
    /// `Unsqueeze(axes)`.
    Unsqueeze(Vec<i64>),
    /// `Reshape(shape)` with ONNX's `0` (copy, unless `allowzero`) and `-1`.
    Reshape {
        /// The target shape.
        shape: Vec<i64>,
        /// `allowzero = 1`: a 0 is a zero-sized dimension.
        allowzero: bool,
    },
}

impl ReshapeRule {
    /// The output shape for an input of shape `d`.
    pub fn apply(&self, d: &[usize]) -> Result<Vec<usize>> {
        let axis = |a: i64, rank: usize| -> Result<usize> {
            let r = rank as i64;
            ensure!(a >= -r && a < r, "axis {a} out of range for rank {rank}");
            Ok(if a < 0 { (a + r) as usize } else { a as usize })
        };
        // sizes from a hostile file may overflow: checked products
        let product = |v: &[usize]| -> Result<usize> {
            v.iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or_else(|| anyhow!("a tensor of shape {v:?} has more elements than fit in memory"))
        };
        let size = product(d)?;
        let out = match self {
            ReshapeRule::Flatten(a) => {
                let a = if *a == d.len() as i64 {
                    d.len()
                } else {
                    axis(*a, d.len())?
                };
                vec![product(&d[..a])?, product(&d[a..])?]
            }
            ReshapeRule::Squeeze(None) => d.iter().copied().filter(|&v| v != 1).collect(),
            ReshapeRule::Squeeze(Some(axes)) => {
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, d.len()))
                    .collect::<Result<HashSet<_>>>()?;
                for &a in &axes {
                    ensure!(d[a] == 1, "Squeeze of axis {a} of size {}", d[a]);
                }
                (0..d.len())
                    .filter(|i| !axes.contains(i))
                    .map(|i| d[i])
                    .collect()
            }
            ReshapeRule::Unsqueeze(axes) => {
                let rank = d.len() + axes.len();
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, rank))
                    .collect::<Result<HashSet<_>>>()?;
                let mut src = d.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            src.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
            ReshapeRule::Reshape { shape, allowzero } => {
                let mut out = Vec::with_capacity(shape.len());
                let mut infer = None;
                for (i, &s) in shape.iter().enumerate() {
                    match s {
                        -1 => {
                            ensure!(infer.is_none(), "Reshape with two -1 dimensions");
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if !allowzero => out.push(
                            *d.get(i)
                                .ok_or_else(|| anyhow!("Reshape copies a missing axis {i}"))?,
                        ),
                        s if s >= 0 => out.push(s as usize),
                        s => bail!("Reshape to a dimension of {s}"),
                    }
                }
                if let Some(i) = infer {
                    let known = product(&out)?;
                    ensure!(
                        known > 0 && size.is_multiple_of(known),
                        "Reshape of {d:?} to {shape:?}"
                    );
                    out[i] = size / known;
                }
                out
            }
        };
        ensure!(
            product(&out)? == size,
            "cannot reshape {d:?} to {out:?}"
        );
        Ok(out)
    }
}

/// The registry's entry: the ONNX operators this family reads (imported in
/// `model/onnx`, run natively in `engine/native.rs`).
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "structural",
    onnx: &[
        ("Add", "two activations: proportional split (residual); a constant: folded bias, else passes"),
        ("Sum", "proportional split between the activations"),
        ("Sub", "by a constant: folded into the layer before, else passes (normalisation: z^B bounds mapped)"),
        ("Div", "by a constant: as Sub"),
        ("Transpose", "shape only (any rank)"),
        ("Flatten", "shape only"),
        ("Reshape", "shape only (also with a shape computed at run time)"),
        ("Squeeze", "shape only"),
        ("Unsqueeze", "shape only"),
        ("Softmax", "only as the last node: skipped, its input (the logits) is explained"),
        ("LogSoftmax", "only as the last node: skipped, its input (the logits) is explained"),
    ],
    import: None,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rules_compute_shapes_and_refuse_overflowing_sizes() {
        let flat = ReshapeRule::Flatten(1);
        assert_eq!(flat.apply(&[2, 3, 4]).unwrap(), [2, 12]);
        let reshape = ReshapeRule::Reshape {
            shape: vec![0, -1],
            allowzero: false,
        };
        assert_eq!(reshape.apply(&[2, 3, 4]).unwrap(), [2, 12]);
        // dims from a hostile file: an error, not an overflow
        let huge = [usize::MAX / 2, 3, 1];
        for rule in [flat, reshape, ReshapeRule::Squeeze(None)] {
            let e = rule.apply(&huge).unwrap_err().to_string();
            assert!(e.contains("more elements than fit"), "{e}");
        }
    }
}
