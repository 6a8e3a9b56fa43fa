//! Nodes that move relevance without weights: elementwise pass-through,
//! shape changes, transposes and the sum of two activations (residual `Add`,
//! Zennit's `Norm` rule on a `SumSingle`).

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Zip};

use crate::rules::{stabilize, STABILIZER};

/// Elementwise nodes (activations, dropout, identity): relevance unchanged.
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
