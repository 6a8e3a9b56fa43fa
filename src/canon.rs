//! Canonization: function-preserving rewrites of the graph before relevance
//! propagation (Zennit's canonizers).
//!
//! - a `BatchNormalization` right after a `Conv` or dense layer is folded into
//!   its weights and bias (Zennit's `MergeBatchNorm`); one with nothing to fold
//!   into becomes a per-channel affine linear layer;
//! - an `Add` of a constant right after a `Conv` or dense layer becomes its bias
//!   (`MatMul` + `Add` from Keras exports); elsewhere it passes relevance on.

use anyhow::Result;
use ndarray::{ArrayD, Axis};

use crate::graph::{Graph, Op};
use crate::ops::dense::Affine;

/// Applies all canonizations in place.
pub fn canonize(graph: &mut Graph) -> Result<()> {
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let (Op::BatchNorm { .. } | Op::AddConst(_)) = &node.op else {
            i += 1;
            continue;
        };
        let src = node.inputs[0].clone();
        let producer = graph.nodes[..i].iter().position(|p| p.output == src);
        let foldable = producer.filter(|&p| {
            matches!(graph.nodes[p].op, Op::Conv(_) | Op::Dense(_))
                && graph.consumers(&src) == 1
                && src != graph.logits
        });
        let node = graph.nodes[i].clone();
        if let Some(p) = foldable {
            if fold(&mut graph.nodes[p].op, &node.op) {
                graph.nodes[p].output = node.output.clone();
                graph.nodes.remove(i);
                continue;
            }
        }
        graph.nodes[i].op = match node.op {
            Op::BatchNorm { scale, shift } => Op::Affine(Affine {
                weight: ArrayD::from_shape_vec(vec![scale.len()], scale)?,
                bias: ArrayD::from_shape_vec(vec![shift.len()], shift)?,
            }),
            _ => Op::Pass,
        };
        i += 1;
    }
    graph.mark_first_layers();
    Ok(())
}

/// Per-output-channel values of a constant added to a layer with `m` outputs
/// whose channel axis is `from_end` axes before the last (numpy broadcasting
/// aligns shapes at the end): `None` when it varies along another axis.
fn per_channel(c: &ArrayD<f32>, m: usize, from_end: usize) -> Option<Vec<f32>> {
    let rank = c.ndim();
    for (k, &d) in c.shape().iter().enumerate() {
        if d != 1 && !(rank - 1 - k == from_end && d == m) {
            return None;
        }
    }
    let v: Vec<f32> = c.iter().copied().collect();
    match v.len() {
        1 => Some(vec![v[0]; m]),
        n if n == m => Some(v),
        _ => None,
    }
}

/// Folds a batch norm or a constant addition into the layer `into`.
fn fold(into: &mut Op, what: &Op) -> bool {
    let (weight, bias, from_end) = match into {
        Op::Conv(c) => (&mut c.weight, &mut c.bias, 2),
        Op::Dense(d) => (&mut d.weight, &mut d.bias, 0),
        _ => return false,
    };
    let m = weight.shape()[0];
    let (scale, shift) = match what {
        Op::BatchNorm { scale, shift } if scale.len() == m => (scale.clone(), shift.clone()),
        Op::AddConst(c) => match per_channel(c, m, from_end) {
            Some(shift) => (vec![1.0; m], shift),
            None => return false,
        },
        _ => return false,
    };
    for (mut row, s) in weight.axis_iter_mut(Axis(0)).zip(&scale) {
        row.mapv_inplace(|v| v * s);
    }
    let old: Vec<f32> = bias
        .as_ref()
        .map_or(vec![0.0; m], |b| b.iter().copied().collect());
    let new: Vec<f32> = old
        .iter()
        .zip(&scale)
        .zip(&shift)
        .map(|((b, s), t)| b * s + t)
        .collect();
    *bias = Some(ArrayD::from_shape_vec(vec![m], new).expect("m values"));
    true
}
