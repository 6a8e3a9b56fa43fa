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

use ndarray::{ArrayD, IxDyn, Zip};

use crate::graph::{Act, ArithKind, Graph, Node, Op};
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
        // a Pad may read its pads at run time as a second input
        let inputs_ok = p.inputs.len() == 1 || (p.inputs.len() == 2 && matches!(p.op, Op::Pad(_)));
        if p.op.linear().is_some() || !inputs_ok {
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

/// `x op c` elementwise with `c` broadcast to `x`.
fn apply(kind: ArithKind, c: &ArrayD<f32>, first: bool, x: &ArrayD<f32>) -> Option<ArrayD<f32>> {
    let out_shape = broadcast_shape(x.shape(), c.shape())?;
    let xb = x.broadcast(out_shape.clone())?;
    let cb = c.broadcast(out_shape)?;
    Some(Zip::from(&xb).and(&cb).map_collect(|&x, &c| {
        let (a, b) = if first { (c, x) } else { (x, c) };
        match kind {
            ArithKind::Add => a + b,
            ArithKind::Sub => a - b,
            ArithKind::Mul => a * b,
            ArithKind::Div => a / b,
        }
    }))
}

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], k: usize| (k + s.len()).checked_sub(n).map_or(1, |i| s[i]);
    (0..n)
        .map(|k| match (get(a, k), get(b, k)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
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
    if !path
        .iter()
        .any(|n| matches!(n.op, Op::Arith { .. } | Op::Pad(_)))
    {
        return None;
    }
    let (mut low, mut high) = raw_bounds(fwd.input.shape(), norm, channels);
    for p in path {
        let out_shape = fwd.get(graph, &p.output).ok()?.shape().to_vec();
        match &p.op {
            Op::Arith {
                kind,
                constant,
                constant_first,
            } => {
                if *kind == ArithKind::Div && *constant_first {
                    // c / x is not monotonic across 0
                    return None;
                }
                let a = apply(*kind, constant, *constant_first, &low)?;
                let b = apply(*kind, constant, *constant_first, &high)?;
                low = Zip::from(&a).and(&b).map_collect(|&a, &b| a.min(b));
                high = Zip::from(&a).and(&b).map_collect(|&a, &b| a.max(b));
            }
            Op::Transpose(perm) => {
                let perm: Vec<usize> = if perm.is_empty() {
                    (0..low.ndim()).rev().collect()
                } else {
                    perm.clone()
                };
                if perm.len() != low.ndim() {
                    return None;
                }
                low = low
                    .permuted_axes(perm.clone())
                    .as_standard_layout()
                    .into_owned();
                high = high.permuted_axes(perm).as_standard_layout().into_owned();
            }
            Op::Reshape(_) => {
                low = low.into_shape_with_order(IxDyn(&out_shape)).ok()?;
                high = high.into_shape_with_order(IxDyn(&out_shape)).ok()?;
            }
            Op::Pad(spec) => {
                let pads = match (&spec.pads, p.inputs.get(1)) {
                    (Some(v), _) => v.clone(),
                    (None, Some(t)) => {
                        crate::ops::pad::runtime_pads(fwd.get(graph, t).ok()?).ok()?
                    }
                    (None, None) => return None,
                };
                low = crate::ops::pad::forward(spec, &pads, &low, &out_shape).ok()?;
                high = crate::ops::pad::forward(spec, &pads, &high, &out_shape).ok()?;
            }
            Op::Move(m) => {
                low = m.forward(&[&low]).ok()?;
                high = m.forward(&[&high]).ok()?;
            }
            Op::Activation(Act::Identity) => {}
            _ => return None,
        }
        if low.shape() != out_shape.as_slice() {
            return None;
        }
    }
    Some(Bounds { low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(
            broadcast_shape(&[1, 3, 4, 4], &[3, 1, 1]),
            Some(vec![1, 3, 4, 4])
        );
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
    }

    #[test]
    fn an_interval_is_mapped_through_arithmetic_and_flipped_by_negative_factors() {
        let lo = ArrayD::from_shape_vec(vec![1, 2], vec![0.0f32, 0.0]).unwrap();
        let c = ArrayD::from_shape_vec(vec![2], vec![2.0f32, -4.0]).unwrap();
        let a = apply(ArithKind::Mul, &c, false, &lo).unwrap();
        let hi = ArrayD::from_shape_vec(vec![1, 2], vec![1.0f32, 1.0]).unwrap();
        let b = apply(ArithKind::Mul, &c, false, &hi).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[0.0, 0.0]);
        assert_eq!(b.as_slice().unwrap(), &[2.0, -4.0]);
        // c - x with c = [1, 1]: [0, 1] -> [0, 1] with the ends swapped
        let one = ArrayD::from_shape_vec(vec![1], vec![1.0f32]).unwrap();
        let s = apply(ArithKind::Sub, &one, true, &hi).unwrap();
        assert_eq!(s.as_slice().unwrap(), &[0.0, 0.0]);
    }
}
