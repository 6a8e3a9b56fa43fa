//! Exact input gradients of a logit, and the methods built on them:
//! integrated gradients and SmoothGrad.
//!
//! The backward walk mirrors [`crate::analyzers::lrp::explain`] with the chain rule in
//! place of the LRP rules (see [`crate::ops::gradient`] for each operator); it
//! starts from a one-hot at the logit (pre-softmax, like relevance).

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Zip};

use crate::graph::Graph;
use crate::model::{Forward, Model};
use crate::ops;
use crate::rng::Rng;

pub use crate::ops::{GradientMode, GradientOptions, MaxPoolTies};

/// The gradient of the logit of `class` with respect to the model input
/// `fwd.input` (same shape), at the point of the forward pass `fwd`.
pub fn input_gradient(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    how: impl Into<GradientOptions>,
) -> Result<ArrayD<f32>> {
    let how = how.into();
    let g = crate::engine::walk::walk_back_owned(graph, fwd, class, 1.0, |node, inputs, g| {
        node.gradient_owned(inputs, g, how)
    })?;
    checked(fwd, g)
}

/// [`input_gradient`] of each input of a forward pass on a batch
/// ([`Model::forward_batch`]), the logit of `classes[i]` for input `i`, in
/// one backward pass: `[N, ...]` like the batch.
pub fn input_gradient_rows(
    graph: &Graph,
    fwd: &Forward,
    classes: &[usize],
    how: impl Into<GradientOptions>,
) -> Result<ArrayD<f32>> {
    let how = how.into();
    let n = fwd.logits.len() / classes.len().max(1);
    let mut start = ArrayD::<f32>::zeros(fwd.logits_tensor.shape());
    for (row, &class) in classes.iter().enumerate() {
        ensure!(
            class < n,
            "class {class} out of range: the model has {n} classes"
        );
        if let Some(v) = start.iter_mut().nth(row * n + class) {
            *v = 1.0;
        }
    }
    let none = |_: &str, _: &mut ArrayD<f32>| Ok(());
    let g = crate::engine::walk::walk_from_owned(graph, fwd, &graph.logits, start, none, {
        |node, inputs, g| node.gradient_owned(inputs, g, how)
    })?;
    checked(fwd, g)
}

/// [`input_gradient`] with `step` as the gradient through each node (the
/// self-check substitutes a broken one, or records what passes).
pub fn input_gradient_with(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    step: impl FnMut(&crate::graph::Node, &[&ArrayD<f32>], &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
) -> Result<ArrayD<f32>> {
    let g = crate::engine::walk::walk_back(graph, fwd, class, 1.0, step)?;
    checked(fwd, g)
}

/// `g` if it has the input's shape and is finite.
fn checked(fwd: &Forward, g: ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        g.shape() == fwd.input.shape(),
        "input gradient of shape {:?} for an input of shape {:?}",
        g.shape(),
        fwd.input.shape()
    );
    ensure!(
        g.iter().all(|v| v.is_finite()),
        "the gradient contains NaN or Inf"
    );
    Ok(g)
}

/// Near-ties of every `MaxPool` for the gradient of the logit of `class`
/// ([`ops::pool::max_pool_ties`] with `rel_tol`), by node name, in backward
/// order. Where a sizeable share of the gradient passes near-tied windows, the
/// gradient (and every map routed through the same windows: LRP's max pools
/// are winner-takes-all too) is decided by float rounding: an f32 and an f64
/// run of the same model, in any framework, disagree there.
pub fn max_pool_ties(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    rel_tol: f32,
) -> Result<Vec<(String, ops::pool::Ties)>> {
    let mut ties = Vec::new();
    crate::engine::walk::walk_back(graph, fwd, class, 1.0, |node, inputs, g| {
        if let Some(ops::pool::MaxPool(p)) = node.op.downcast() {
            ties.push((
                node.name.clone(),
                ops::pool::max_pool_ties(p, inputs[0], g, rel_tol)?,
            ));
        }
        node.gradient(inputs, g, GradientMode::Plain)
    })?;
    Ok(ties)
}

/// Mean of the gradients at `points`, accumulated in `f64` (so identical
/// gradients average to exactly themselves).
fn mean_gradient(
    model: &Model,
    class: usize,
    ties: MaxPoolTies,
    count: usize,
    mut point: impl FnMut(usize) -> ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    let mut sum = ArrayD::<f64>::zeros(model.input.shape.clone());
    for k in 0..count {
        // a gradient reuses no layer output: the lean pass
        let lean = crate::model::Lean {
            reuses: &|_| false,
            keep: &[],
        };
        let fwd = model.forward_lean(point(k), Some(lean), false)?;
        let how = GradientOptions {
            mode: GradientMode::Plain,
            ties,
        };
        let g = input_gradient(&model.graph, &fwd, class, how)?;
        Zip::from(&mut sum).and(&g).for_each(|s, &g| *s += g as f64);
    }
    Ok(sum.mapv(|s| (s / count as f64) as f32))
}

/// Integrated gradients of the logit of `class` from `baseline` to `input`:
/// `(input - baseline) * mean_k grad(baseline + k / steps (input - baseline))`,
/// `k = 1..=steps` (the right Riemann sum of the path integral; its sum
/// approaches `logit(input) - logit(baseline)` with an error of order
/// `1 / steps`). Runs `steps` forward and backward passes; `ties` says where
/// the max pools hand their gradient.
pub fn integrated_gradients(
    model: &Model,
    input: &ArrayD<f32>,
    baseline: &ArrayD<f32>,
    class: usize,
    steps: usize,
    ties: MaxPoolTies,
) -> Result<ArrayD<f32>> {
    ensure!(steps >= 1, "integrated gradients need steps >= 1");
    ensure!(
        input.shape() == baseline.shape(),
        "baseline of shape {:?} for an input of shape {:?}",
        baseline.shape(),
        input.shape()
    );
    let delta = input - baseline;
    let mean = mean_gradient(model, class, ties, steps, |k| {
        if k + 1 == steps {
            // alpha = 1: the input itself (b + (x - b) may differ in the last bit)
            return input.clone();
        }
        let alpha = (k + 1) as f32 / steps as f32;
        Zip::from(baseline)
            .and(&delta)
            .map_collect(|&b, &d| b + alpha * d)
    })?;
    Ok(delta * mean)
}

/// SmoothGrad: the mean gradient of the logit of `class` over `samples` copies
/// of `input` with Gaussian noise of standard deviation `noise * (max - min)`
/// of `input` added to every element (drawn from [`Rng`] seeded with `seed`,
/// so the result is reproducible). `noise = 0` gives the plain gradient.
/// `ties` says where the max pools hand their gradient.
pub fn smoothgrad(
    model: &Model,
    input: &ArrayD<f32>,
    class: usize,
    samples: usize,
    noise: f32,
    seed: u64,
    ties: MaxPoolTies,
) -> Result<ArrayD<f32>> {
    ensure!(samples >= 1, "SmoothGrad needs samples >= 1");
    ensure!(
        noise.is_finite() && noise >= 0.0,
        "the SmoothGrad noise must be a finite number >= 0, got {noise}"
    );
    let (lo, hi) = input
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let sigma = if input.is_empty() {
        0.0
    } else {
        noise * (hi - lo)
    };
    let mut rng = Rng::new(seed);
    mean_gradient(model, class, ties, samples, |_| {
        input.mapv(|v| v + sigma * rng.normal())
    })
}
