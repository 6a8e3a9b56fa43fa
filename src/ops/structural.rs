//! Nodes that move relevance without weights: elementwise pass-through,
//! shape changes, transposes and the sum of two activations (residual `Add`,
//! Zennit's `Norm` rule on a `SumSingle`); and the gradients of the sum and of
//! arithmetic with constants. (Reshape and transpose move gradients exactly as
//! they move relevance.)

use anyhow::{ensure, Result};
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
