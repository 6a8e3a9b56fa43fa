//! Which input of a `Mul` of two activations is the gate: the one computed
//! by a `Sigmoid` / `HardSigmoid`, possibly reshaped (squeeze-excitation,
//! swish, hard-swish). Decided once at import; see [`crate::ops::gate`] for
//! what a gate does to relevance and gradients.

use crate::graph::{Act, Node, Op};
use crate::ops::gate::Gate;
use crate::ops::Elements;

/// Operators whose output is a gate (values in [0, 1]).
const GATE_OPS: &[&str] = &["Sigmoid", "HardSigmoid"];

/// Nodes that only move or copy values: a gate stays a gate through them.
fn is_shape_only(op: &Op) -> bool {
    op.elements() == Elements::Rearranged || op.downcast::<Act>() == Some(&Act::Identity)
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

/// Decides which input of every [`Gate`] node is the gate: the one that
/// comes from a `Sigmoid` / `HardSigmoid`; with none or both, the decision is
/// left to run time (the input broadcast to the output is the gate).
pub fn resolve_gates(nodes: &mut [Node]) {
    for k in 0..nodes.len() {
        if nodes[k].op.downcast::<Gate>().is_none() {
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
        nodes[k].op = Op::new(Gate { gate });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::global_pool::GlobalPool;

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
        use crate::ops::structural::Reshape;
        let act = |a: Act| Op::new(a);
        let mut nodes = vec![
            node("Relu", act(Act::Relu), &["in"], "x"),
            node(
                "GlobalAveragePool",
                Op::new(GlobalPool { max: false }),
                &["x"],
                "p",
            ),
            node("Sigmoid", act(Act::Sigmoid), &["p"], "s"),
            node("Reshape", Op::new(Reshape(None)), &["s"], "s2"),
            node("Mul", Op::new(Gate { gate: None }), &["s2", "x"], "y"),
            // swish: x * sigmoid(x), same shapes
            node("Sigmoid", act(Act::Sigmoid), &["y"], "t"),
            node("Mul", Op::new(Gate { gate: None }), &["y", "t"], "z"),
            // two plain activations: undecided until run time
            node("Mul", Op::new(Gate { gate: None }), &["x", "y"], "w"),
        ];
        resolve_gates(&mut nodes);
        let gate = |k: usize| nodes[k].op.downcast::<Gate>().unwrap().gate;
        assert_eq!(gate(4), Some(0));
        assert_eq!(gate(6), Some(1));
        assert_eq!(gate(7), None);
    }
}
