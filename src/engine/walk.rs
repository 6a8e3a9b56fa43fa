//! The one backward walk: from a value put on one logit, through the graph in
//! reverse topological order, to the model input. LRP, gradients, the
//! self-check and the near-tie scan all walk with it, each with its own step
//! per node.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use ndarray::ArrayD;

use crate::engine::profile::{self, Phase};
use crate::engine::Forward;
use crate::graph::{Graph, Node};

/// The activation `name` that `node` reads; for the input of a ReLU or Clip
/// that a lean forward pass dropped ([`crate::Model::forward_lean`]), the
/// node's output, which tells the same derivative
/// ([`crate::graph::Act::mask_from_output`]).
fn input_of<'f>(
    graph: &Graph,
    fwd: &'f Forward,
    node: &Node,
    name: &str,
) -> Result<&'f ArrayD<f32>> {
    fwd.get(graph, name).or_else(|e| {
        if node.op.derivative_from_output() {
            fwd.get(graph, &node.output).map_err(|_| e)
        } else {
            Err(e)
        }
    })
}

/// Walks `graph` backwards from `value` put on the logit of `class` (zero
/// elsewhere), summing what `step` returns for each node's inputs where a
/// tensor feeds several nodes; returns what reaches the model input (zeros if
/// nothing does). Shared by relevance and gradients.
pub fn walk_back(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    value: f32,
    mut step: impl FnMut(&Node, &[&ArrayD<f32>], &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
) -> Result<ArrayD<f32>> {
    walk_back_owned(graph, fwd, class, value, |node, inputs, r| {
        step(node, inputs, &r)
    })
}

/// [`walk_back`] whose `step` owns the value at the node's output
/// ([`walk_from_owned`]).
pub fn walk_back_owned(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    value: f32,
    step: impl FnMut(&Node, &[&ArrayD<f32>], ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
) -> Result<ArrayD<f32>> {
    ensure!(
        class < fwd.logits.len(),
        "class {class} out of range: the model has {} classes",
        fwd.logits.len()
    );
    let mut start = ArrayD::<f32>::zeros(fwd.logits_tensor.shape());
    if let Some(v) = start.iter_mut().nth(class) {
        *v = value;
    }
    walk_from_owned(graph, fwd, &graph.logits, start, |_, _| Ok(()), step)
}

/// Walks `graph` backwards from `start` put on `tensor` (the logits, or any
/// tensor inside the graph). Before the node writing a tensor is stepped
/// through (and at the end for the model input), `at` sees the complete
/// value arrived at that tensor and may change it (keep it, mask channels).
/// `step` owns the value at the node's output (and may reuse its memory, as
/// an activation's gradient does in place). Returns what reaches the model
/// input (zeros if nothing does).
pub fn walk_from_owned(
    graph: &Graph,
    fwd: &Forward,
    tensor: &str,
    start: ArrayD<f32>,
    mut at: impl FnMut(&str, &mut ArrayD<f32>) -> Result<()>,
    mut step: impl FnMut(&Node, &[&ArrayD<f32>], ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
) -> Result<ArrayD<f32>> {
    let mut acc: HashMap<&str, ArrayD<f32>> = HashMap::new();
    acc.insert(tensor, start);
    for node in graph.nodes.iter().rev() {
        let Some(mut r) = acc.remove(node.output.as_str()) else {
            continue;
        };
        at(&node.output, &mut r)?;
        let inputs = node
            .inputs
            .iter()
            .map(|n| input_of(graph, fwd, node, n))
            .collect::<Result<Vec<_>>>()?;
        profile::timed(Phase::Backward, &node.op_type, &node.name, || {
            for (name, ri) in node.inputs.iter().zip(step(node, &inputs, r)?) {
                match acc.get_mut(name.as_str()) {
                    Some(a) => crate::elementwise::add_into(a, &ri),
                    None => {
                        acc.insert(name.as_str(), ri);
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        })?;
    }
    let mut input = acc
        .remove(graph.input.as_str())
        .unwrap_or_else(|| ArrayD::zeros(fwd.input.shape()));
    at(&graph.input, &mut input)?;
    Ok(input)
}
