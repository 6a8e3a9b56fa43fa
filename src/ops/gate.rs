//! `Mul` of an activation by a gate: squeeze-excitation (`x * sigmoid(fc(gap(x)))`,
//! MobileNetV3 / EfficientNet), swish written as `x * sigmoid(x)` and hard-swish
//! as `x * HardSigmoid(x)`. As for the gates of LSTMs (Arras et al.,
//! "signal-take-all"), the gated activation gets all the relevance and the
//! gate none: the gate only rescales the signal. The gradient is the exact
//! product rule.

use anyhow::{bail, Result};
use ndarray::{ArrayD, Zip};

use super::structural::unbroadcast;
use crate::graph::{Node, Op};

/// Operators whose output is a gate (values in [0, 1]).
const GATE_OPS: &[&str] = &["Sigmoid", "HardSigmoid"];

/// Nodes that only move or copy values: a gate stays a gate through them.
fn is_shape_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape | Op::Transpose(_) | Op::Activation(crate::graph::Act::Identity)
    )
}

/// Whether the tensor `name` is the output of a gate operator, possibly
/// reshaped, among `nodes`.
fn is_gate(nodes: &[Node], name: &str) -> bool {
    let mut name = name;
    while let Some(p) = nodes.iter().find(|n| n.output == name) {
        if GATE_OPS.contains(&p.op_type.as_str()) {
            return true;
        }
        if !is_shape_only(&p.op) || p.inputs.is_empty() {
            return false;
        }
        name = &p.inputs[0];
    }
    false
}

/// Decides which input of every [`Op::Gate`] node is the gate: the one that
/// comes from a `Sigmoid` / `HardSigmoid`; with none or both, the decision is
/// left to run time (the input broadcast to the output is the gate).
pub fn resolve_gates(nodes: &mut [Node]) {
    for k in 0..nodes.len() {
        if !matches!(nodes[k].op, Op::Gate { .. }) {
            continue;
        }
        let flags: Vec<bool> = nodes[k]
            .inputs
            .iter()
            .map(|i| is_gate(&nodes[..k], i))
            .collect();
        let gate = match flags.as_slice() {
            [true, false] => Some(0),
            [false, true] => Some(1),
            _ => None,
        };
        nodes[k].op = Op::Gate { gate };
    }
}

/// The index of the gate among `inputs` for the output of shape `out`.
fn which(gate: Option<usize>, inputs: &[&ArrayD<f32>], out: &[usize]) -> Result<usize> {
    if inputs.len() != 2 {
        bail!("a gate multiplies two tensors, got {}", inputs.len());
    }
    if let Some(g) = gate {
        return Ok(g);
    }
    let full = |k: usize| inputs[k].shape() == out;
    match (full(0), full(1)) {
        (true, false) => Ok(1),
        (false, true) => Ok(0),
        _ => bail!(
            "Mul of two activations of shapes {:?} and {:?}: neither is a gate (a Sigmoid / \
             HardSigmoid output, or a per-channel factor broadcast over the other)",
            inputs[0].shape(),
            inputs[1].shape()
        ),
    }
}

/// Relevance: all of `r` to the gated input, zero to the gate.
pub fn relevance(
    gate: Option<usize>,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
) -> Result<Vec<ArrayD<f32>>> {
    let g = which(gate, inputs, r.shape())?;
    let signal = 1 - g;
    let mut out = vec![
        ArrayD::zeros(inputs[0].shape()),
        ArrayD::zeros(inputs[1].shape()),
    ];
    out[signal] = unbroadcast(r.clone(), inputs[signal].shape())?;
    Ok(out)
}

/// Gradient of `a * b`: `g b` to `a`, `g a` to `b` (summed over broadcast axes).
pub fn gradient(inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    if inputs.len() != 2 {
        bail!("a gate multiplies two tensors, got {}", inputs.len());
    }
    let shape = g.shape();
    let mut out = Vec::with_capacity(2);
    for k in 0..2 {
        let Some(other) = inputs[1 - k].broadcast(shape) else {
            bail!(
                "{:?} does not broadcast to the output {shape:?}",
                inputs[1 - k].shape()
            );
        };
        let local = Zip::from(g).and(&other).map_collect(|&g, &o| g * o);
        out.push(unbroadcast(local, inputs[k].shape())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op_type: &str, op: Op, inputs: &[&str], output: &str) -> Node {
        Node {
            name: format!("{op_type}_{output}"),
            op_type: op_type.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.into(),
            first: false,
        }
    }

    #[test]
    fn the_sigmoid_input_is_the_gate_even_through_a_reshape() {
        let act = |a| Op::Activation(a);
        let mut nodes = vec![
            node("Relu", act(crate::graph::Act::Relu), &["in"], "x"),
            node("GlobalAveragePool", Op::GlobalAvgPool, &["x"], "p"),
            node("Sigmoid", act(crate::graph::Act::Sigmoid), &["p"], "s"),
            node("Reshape", Op::Reshape, &["s"], "s2"),
            node("Mul", Op::Gate { gate: None }, &["s2", "x"], "y"),
            // swish: x * sigmoid(x), same shapes
            node("Sigmoid", act(crate::graph::Act::Sigmoid), &["y"], "t"),
            node("Mul", Op::Gate { gate: None }, &["y", "t"], "z"),
            // two plain activations: undecided until run time
            node("Mul", Op::Gate { gate: None }, &["x", "y"], "w"),
        ];
        resolve_gates(&mut nodes);
        assert!(matches!(nodes[4].op, Op::Gate { gate: Some(0) }));
        assert!(matches!(nodes[6].op, Op::Gate { gate: Some(1) }));
        assert!(matches!(nodes[7].op, Op::Gate { gate: None }));
    }

    #[test]
    fn relevance_goes_to_the_signal_and_the_gradient_is_the_product_rule() {
        let x = ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![1.0f32, 2., 3., 4.]).unwrap();
        let s = ArrayD::from_shape_vec(vec![1, 2, 1, 1], vec![0.5f32, 0.25]).unwrap();
        let r = ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![0.5f32, 1., 0.75, 1.]).unwrap();
        // gate decided by shape: s is broadcast
        let out = relevance(None, &[&x, &s], &r).unwrap();
        assert_eq!(out[0], r);
        assert_eq!(out[1].sum(), 0.0);
        assert_eq!(out[1].shape(), &[1, 2, 1, 1]);
        let g = gradient(&[&x, &s], &r).unwrap();
        // d/dx = g s: [0.25, 0.5, 0.1875, 0.25]; d/ds = sum over the plane of g x
        assert_eq!(g[0].as_slice().unwrap(), &[0.25, 0.5, 0.1875, 0.25]);
        assert_eq!(g[1].as_slice().unwrap(), &[2.5, 6.25]);
        // two full-size activations with no known gate: an error naming the shapes
        let e = relevance(None, &[&x, &x], &r).unwrap_err();
        assert!(e.to_string().contains("neither is a gate"), "{e}");
    }
}
