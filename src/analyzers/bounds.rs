//! z^B bounds of a first layer that reads the image through normalisation
//! nodes of the model itself (`Sub` / `Div` / `Mul` / `Add` by constants,
//! Keras' `Rescaling` and `Normalization` layers, `(x - mean) / std` written
//! into a PyTorch export) or through a `Pad` (whose border is a constant:
//! its bounds are that constant, as for the implicit padding of a `Conv`).
//!
//! Relevance passes such nodes unchanged (each output element has exactly one
//! input element), so it reaches the raw input as it is. The bounds of the
//! first layer's input, however, are those of the raw input (`norm`: what the
//! command feeds the model) pushed through the nodes: each node maps the
//! interval `[low, high]` of each element to the interval of its output.

use ndarray::{ArrayD, IxDyn};

use crate::graph::{Graph, Node};
use crate::model::Forward;
use crate::preprocess::Normalization;
use crate::rules::Bounds;

/// The nodes between the model input and `node`'s first input, in forward
/// order, when that path is a chain of single-input, non-linear nodes.
fn raw_path<'g>(graph: &'g Graph, node: &Node) -> Option<Vec<&'g Node>> {
    let mut path = vec![];
    let mut name = node.inputs.first()?.as_str();
    while name != graph.input {
        let p = graph.nodes.iter().find(|n| n.output == name)?;
        // the other inputs must be parameters (a Pad's pads read at run time)
        let data = p.op.data_inputs(p.inputs.len());
        if p.op.linear().is_some() || p.inputs.is_empty() || data != 1 {
            return None;
        }
        path.push(p);
        name = &p.inputs[0];
    }
    path.reverse();
    Some(path)
}

/// Per-element bounds of the raw model input of `shape` (NCHW when axis 1
/// holds the channels, else NHWC).
fn raw_bounds(
    shape: &[usize],
    norm: &Normalization,
    channels: usize,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let (lo, hi) = norm.bounds();
    let axis = if shape.len() == 4 && shape[1] == channels {
        1
    } else {
        shape.len().saturating_sub(1)
    };
    let ch = |ix: &IxDyn| if channels == 3 { ix[axis] } else { 0 };
    (
        ArrayD::from_shape_fn(IxDyn(shape), |ix| lo[ch(&ix)]),
        ArrayD::from_shape_fn(IxDyn(shape), |ix| hi[ch(&ix)]),
    )
}

/// The z^B bounds of the input of the first layer `node` when normalisation
/// nodes sit between it and the model input; `None` when there are none (or
/// the path holds other operators): the caller's usual bounds apply.
pub fn through_normalisation(
    graph: &Graph,
    node: &Node,
    fwd: &Forward,
    norm: &Normalization,
    channels: usize,
) -> Option<Bounds> {
    let path = raw_path(graph, node)?;
    let (mut low, mut high) = raw_bounds(fwd.input.shape(), norm, channels);
    let mut normalises = false;
    for p in path {
        let out_shape = fwd.get(graph, &p.output).ok()?.shape().to_vec();
        let params = (p.inputs[1..].iter())
            .map(|t| fwd.get(graph, t).ok())
            .collect::<Option<Vec<_>>>()?;
        let (l, h, changed) = p.op.bounds(&low, &high, &params, &out_shape)?;
        (low, high) = (l, h);
        normalises |= changed;
        if low.shape() != out_shape.as_slice() {
            return None;
        }
    }
    // nodes that only move values: the caller's usual bounds are the same
    normalises.then_some(Bounds { low, high })
}
