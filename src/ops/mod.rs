//! Relevance propagation and exact gradients through each operator family.

pub mod activation;
pub mod concat;
pub mod conv;
pub mod dense;
pub mod gate;
#[cfg(test)]
mod geometry_tests;
pub mod movement;
pub mod pad;
pub mod pool;
pub mod pool_grad;
pub mod reduce;
pub mod resize;
pub mod structural;

use anyhow::{anyhow, ensure, Context, Result};
use ndarray::ArrayD;

use crate::graph::{Node, Op};
use crate::rules::cache::{Cached, WeightCache};
use crate::rules::{Bounds, Rule};

/// How rectifiers pass gradients back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GradientMode {
    /// The exact gradient.
    #[default]
    Plain,
    /// Guided backprop: `Relu` (and `Clip` with lower bound 0, i.e. ReLU6)
    /// pass only positive gradients, and only where their input was positive.
    Guided,
}

/// What the relevance pass of a linear layer may reuse.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reuse<'a> {
    /// Modified weights kept across images.
    pub cache: Option<&'a WeightCache>,
    /// The layer's output `W x + b` from the forward pass, if it was kept.
    pub output: Option<&'a ArrayD<f32>>,
}

/// Propagates the relevance `r` at `node`'s output to each of its inputs.
///
/// `inputs` are the node's input activations, in the order of `node.inputs`;
/// `rule` is the rule for linear layers (with the input bounds for z^B).
pub fn relevance(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    rule: Rule,
    bounds: Option<&Bounds>,
    reuse: Reuse,
) -> Result<Vec<ArrayD<f32>>> {
    ensure!(
        inputs.len() == node.inputs.len(),
        "node '{}': activations missing",
        node.name
    );
    let x = inputs[0];
    let one = |a: ArrayD<f32>| vec![a];
    let out = match &node.op {
        Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => {
            let layer = node.op.linear().expect("linear op");
            one(match reuse.cache {
                Some(cache) => {
                    let name = &node.output;
                    let cached = Cached { layer, cache, name };
                    rule.propagate_with(&cached, x, reuse.output, r, bounds)?
                }
                None => rule.propagate_with(layer, x, reuse.output, r, bounds)?,
            })
        }
        Op::MaxPool(p) => one(pool::max_pool(p, x, r)?),
        Op::AvgPool(p) => one(pool::avg_pool(p, x, r)?),
        Op::GlobalAvgPool => one(pool::global_pool(x, r, false)?),
        Op::GlobalMaxPool => one(pool::global_pool(x, r, true)?),
        Op::Sum => structural::sum(inputs, r)?,
        Op::Activation(_) | Op::Arith { .. } => one(structural::pass(x, r)?),
        Op::Reshape => one(structural::reshape(x, r)?),
        Op::Transpose(perm) => one(structural::transpose(perm, x, r)?),
        Op::Move(m) => m.backward(inputs, r)?,
        Op::BatchNorm { .. } | Op::AddConst(_) => {
            return Err(anyhow!("node '{}' was not canonized", node.name));
        }
        Op::Concat { .. } | Op::Pad(_) | Op::Resize(_) | Op::Gate { .. } | Op::Reduce(_) => {
            copies(node, inputs, r, false)?
        }
    };
    Ok(out)
}

/// The operators that copy, select or gate values (concat, pad, resize,
/// gate, reductions): relevance (`gradient == false`) or gradient. Inputs
/// read at run time as parameters (computed pads or scales) get zeros.
fn copies(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    gradient: bool,
) -> Result<Vec<ArrayD<f32>>> {
    let x = inputs[0];
    let with_param = |a: ArrayD<f32>| {
        let mut v = vec![a];
        v.extend(inputs[1..].iter().map(|p| ArrayD::zeros(p.shape())));
        v
    };
    Ok(match &node.op {
        Op::Concat { axis } => concat::split(*axis, inputs, r)?,
        Op::Pad(spec) => {
            let pads = match (&spec.pads, inputs.get(1)) {
                (Some(p), _) => p.clone(),
                (None, Some(t)) => pad::runtime_pads(t)?,
                (None, None) => return Err(anyhow!("the pads of the node are missing")),
            };
            with_param(pad::back(spec, &pads, x, r)?)
        }
        Op::Resize(spec) => with_param(resize::back(spec, inputs.get(1).copied(), x, r)?),
        Op::Gate { .. } if gradient => gate::gradient(inputs, r)?,
        Op::Gate { gate } => gate::relevance(*gate, inputs, r)?,
        Op::Reduce(spec) if gradient => vec![reduce::gradient(spec, x, r)?],
        Op::Reduce(spec) => vec![reduce::relevance(spec, x, r)?],
        _ => return Err(anyhow!("not a copying operator")),
    })
}

/// [`relevance`] with the node named in errors.
pub fn relevance_of(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    rule: Rule,
    bounds: Option<&Bounds>,
    reuse: Reuse,
) -> Result<Vec<ArrayD<f32>>> {
    relevance(node, inputs, r, rule, bounds, reuse)
        .with_context(|| format!("relevance through {} node '{}'", node.op_type, node.name))
}

/// The gradient at each of `node`'s inputs for the gradient `g` at its output
/// (the chain rule through one node, exact).
///
/// `inputs` are the node's input activations, in the order of `node.inputs`.
pub fn gradient(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    g: &ArrayD<f32>,
    mode: GradientMode,
) -> Result<Vec<ArrayD<f32>>> {
    ensure!(
        inputs.len() == node.inputs.len(),
        "node '{}': activations missing",
        node.name
    );
    let x = inputs[0];
    let one = |a: ArrayD<f32>| vec![a];
    let out = match &node.op {
        Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => {
            let layer = node.op.linear().expect("linear op");
            one(layer.backward(g, layer.weight(), x.shape())?)
        }
        // the max pools' relevance rule is their gradient
        Op::MaxPool(p) => one(pool::max_pool(p, x, g)?),
        Op::GlobalMaxPool => one(pool::global_pool(x, g, true)?),
        Op::AvgPool(p) => one(pool_grad::avg_pool(p, x.shape(), g)?),
        Op::GlobalAvgPool => one(pool_grad::global_avg_pool(x.shape(), g)?),
        Op::Sum => structural::sum_gradient(inputs, g)?,
        Op::Activation(act) => one(act.gradient(x, g, mode == GradientMode::Guided)?),
        Op::Arith {
            kind,
            constant,
            constant_first,
        } => one(structural::arith_gradient(
            *kind,
            constant,
            *constant_first,
            x,
            g,
        )?),
        Op::Reshape => one(structural::reshape(x, g)?),
        Op::Transpose(perm) => one(structural::transpose(perm, x, g)?),
        Op::Move(m) => m.backward(inputs, g)?,
        Op::BatchNorm { .. } | Op::AddConst(_) => {
            return Err(anyhow!("node '{}' was not canonized", node.name));
        }
        Op::Concat { .. } | Op::Pad(_) | Op::Resize(_) | Op::Gate { .. } | Op::Reduce(_) => {
            copies(node, inputs, g, true)?
        }
    };
    Ok(out)
}

/// [`gradient`] with the operator and node named in errors.
pub fn gradient_of(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    g: &ArrayD<f32>,
    mode: GradientMode,
) -> Result<Vec<ArrayD<f32>>> {
    gradient(node, inputs, g, mode)
        .with_context(|| format!("gradient through {} node '{}'", node.op_type, node.name))
}
