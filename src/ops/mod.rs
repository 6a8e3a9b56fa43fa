//! Relevance propagation through each operator family.

pub mod conv;
pub mod dense;
pub mod pool;
pub mod structural;

use anyhow::{anyhow, ensure, Context, Result};
use ndarray::ArrayD;

use crate::graph::{Node, Op};
use crate::rules::{Bounds, Rule};

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
            one(rule.propagate(layer, x, r, bounds)?)
        }
        Op::MaxPool(p) => one(pool::max_pool(p, x, r)?),
        Op::AvgPool(p) => one(pool::avg_pool(p, x, r)?),
        Op::GlobalAvgPool => one(pool::global_pool(x, r, false)?),
        Op::GlobalMaxPool => one(pool::global_pool(x, r, true)?),
        Op::Sum => structural::sum(inputs, r)?,
        Op::Pass => one(structural::pass(x, r)?),
        Op::Reshape => one(structural::reshape(x, r)?),
        Op::Transpose(perm) => one(structural::transpose(perm, x, r)?),
        Op::BatchNorm { .. } | Op::AddConst(_) => {
            return Err(anyhow!("node '{}' was not canonized", node.name));
        }
    };
    Ok(out)
}

/// [`relevance`] with the node named in errors.
pub fn relevance_of(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    rule: Rule,
    bounds: Option<&Bounds>,
) -> Result<Vec<ArrayD<f32>>> {
    relevance(node, inputs, r, rule, bounds)
        .with_context(|| format!("relevance through {} node '{}'", node.op_type, node.name))
}
