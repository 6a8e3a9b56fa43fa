//! Builds the relevance [`Graph`] from an ONNX `ModelProto`.
//!
//! Every node whose output depends on the image input becomes a graph node,
//! its operator built by the family of `ops/` that reads its type (the
//! [`registry`]); nodes computed from shapes (tf2onnx's dynamic flatten)
//! are left to tract.
//! Weights come from initializers and `Constant` nodes; nodes computed from
//! constants only (`Identity` of a shared initializer, `DequantizeLinear` of
//! int8 weights...) were evaluated before by [`fold::fold_constants`].

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ndarray::ArrayD;
use tract_onnx::pb::{self, type_proto, NodeProto, TensorProto};

pub mod fold;
mod gates;

use crate::graph::{Graph, Node};
use crate::ops::registry::{self, Imported, Operand};

/// Loads a tensor (raw, typed or external data) as `f32`.
pub type TensorLoader<'a> = dyn Fn(&TensorProto) -> Result<ArrayD<f32>> + 'a;

/// Operators whose output never depends on the values of their input.
const SHAPE_OF: &[&str] = &["Shape", "Size"];

/// Declared dims of a value: `None` where symbolic or unknown.
pub fn value_dims(v: &pb::ValueInfoProto) -> Vec<Option<usize>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return vec![];
    };
    let Some(shape) = &t.shape else { return vec![] };
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => {
                Some(*v as usize)
            }
            _ => None,
        })
        .collect()
}

/// Builds the relevance graph of `model`.
pub fn build_graph(model: &pb::ModelProto, load: &TensorLoader) -> Result<Graph> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the file holds no graph"))?;
    let init: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !init.contains(i.name.as_str()))
        .collect();
    ensure!(
        inputs.len() == 1,
        "expected one image input, the model has {} ({})",
        inputs.len(),
        inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    ensure!(!g.output.is_empty(), "the model declares no output");
    let input = inputs[0].name.clone();
    let input_dims = value_dims(inputs[0]);

    let consts = constants(g);
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    let is_const = |name: &str| consts.contains_key(name);
    let constant = |name: &str| -> Result<ArrayD<f32>> {
        let t = consts.get(name).ok_or_else(|| {
            anyhow!("parameter '{name}' is not a constant (computed weights are not supported)")
        })?;
        load(t).with_context(|| format!("loading tensor '{name}'"))
    };

    let nodes = topo_sort(&g.node, &input, &init)?;
    // the decomposed forms of operators (LayerNorm, GELU as the TorchScript
    // exporter writes them) become the operators' own nodes
    let nodes = fuse(nodes.into_iter().cloned().collect(), g, &consts, load)?;

    // which tensors carry the image signal
    let mut active: HashSet<String> = HashSet::from([input.clone()]);
    let mut out_nodes = Vec::new();
    for (ix, n) in nodes.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{ix}", n.op_type)
        } else {
            n.name.clone()
        };
        let acts: Vec<String> = n
            .input
            .iter()
            .filter(|i| active.contains(i.as_str()))
            .cloned()
            .collect();
        if acts.is_empty() || SHAPE_OF.contains(&n.op_type.as_str()) {
            continue;
        }
        // a Split becomes one node per output it computes
        let outputs: Vec<(usize, String)> = if n.op_type == "Split" {
            n.output
                .iter()
                .enumerate()
                .filter(|(_, o)| !o.is_empty())
                .map(|(k, o)| (k, o.clone()))
                .collect()
        } else {
            let output = n
                .output
                .first()
                .cloned()
                .ok_or_else(|| anyhow!("node '{name}' has no output"))?;
            vec![(0, output)]
        };
        let several = n.output.len() > 1 && n.op_type == "Split";
        for (k, output) in outputs {
            let name = if several {
                format!("{name}:{k}")
            } else {
                name.clone()
            };
            active.insert(output.clone());
            let imported = convert(
                n,
                &name,
                &acts,
                opset,
                k,
                &Constants {
                    constant: &constant,
                    is_const: &is_const,
                },
            )?;
            // the parameters the model computes are read from the forward pass
            let mut acts = acts.clone();
            acts.extend(
                imported
                    .runtime
                    .iter()
                    .filter_map(|&i| n.input.get(i).cloned()),
            );
            out_nodes.push(Node {
                name,
                op_type: n.op_type.clone(),
                op: imported.op,
                inputs: acts,
                output,
                first: false,
            });
        }
    }
    gates::resolve_gates(&mut out_nodes);

    // logits: the declared output, or the input of a trailing softmax
    let mut logits = g.output[0].name.clone();
    let mut skipped_softmax = false;
    if let Some(pos) = out_nodes.iter().position(|n| n.output == logits) {
        if matches!(out_nodes[pos].op_type.as_str(), "Softmax" | "LogSoftmax") {
            logits = out_nodes[pos].inputs[0].clone();
            skipped_softmax = true;
            out_nodes.remove(pos);
        }
    } else {
        bail!("the model output '{logits}' does not depend on the image input '{input}'");
    }
    let nodes = prune(out_nodes, &logits);
    let graph = Graph {
        input,
        input_dims,
        logits,
        skipped_softmax,
        nodes,
    };
    for n in &graph.nodes {
        if n.op_type == "LogSoftmax" {
            return Err(crate::Error::Unsupported {
                op_type: n.op_type.clone(),
                node: n.name.clone(),
                message: format!(
                    "unsupported operator '{}' (node '{}') inside the network",
                    n.op_type, n.name
                ),
            }
            .into());
        }
    }
    Ok(graph)
}

/// The constant tensors of `g`: its initializers and the values of its
/// `Constant` nodes, by name.
fn constants(g: &pb::GraphProto) -> HashMap<&str, &TensorProto> {
    let mut consts: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in &g.node {
        if n.op_type == "Constant" {
            if let (Some(out), Some(t)) = (
                n.output.first(),
                (n.attribute.iter())
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref()),
            ) {
                consts.insert(out.as_str(), t);
            }
        }
    }
    consts
}

/// `nodes` (of `g`) with the decomposed forms of operators that exporters
/// write (LayerNorm, GELU chains) fused into the operators' own nodes (each
/// family's [`crate::ops::registry::Fuse`]).
fn fuse(
    nodes: Vec<NodeProto>,
    g: &pb::GraphProto,
    consts: &HashMap<&str, &TensorProto>,
    load: &TensorLoader,
) -> Result<Vec<NodeProto>> {
    let value = |name: &str| consts.get(name).and_then(|t| load(t).ok());
    let mut fused = crate::ops::registry::ProtoGraph {
        nodes,
        constant: &value,
        outputs: g.output.iter().map(|o| o.name.clone()).collect(),
    };
    crate::ops::registry::fuse_all(&mut fused)?;
    Ok(fused.nodes)
}

/// The nodes of `g` as the import sees them, the exporters' decomposed
/// operators fused (the fuses of [`crate::ops::registry`]); `inspect` counts these. The nodes as they
/// are where a fuse fails.
pub fn fused_nodes(g: &pb::GraphProto, load: &TensorLoader) -> Vec<NodeProto> {
    fuse(g.node.clone(), g, &constants(g), load).unwrap_or_else(|_| g.node.clone())
}

/// Keeps only the nodes the tensor `target` depends on.
fn prune(nodes: Vec<Node>, target: &str) -> Vec<Node> {
    let mut needed: HashSet<String> = HashSet::from([target.to_string()]);
    let mut keep = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate().rev() {
        if needed.contains(&n.output) {
            keep[i] = true;
            needed.extend(n.inputs.iter().cloned());
        }
    }
    nodes
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(n, _)| n)
        .collect()
}

/// Orders nodes so that each comes after the producers of its inputs.
fn topo_sort<'a>(
    nodes: &'a [NodeProto],
    input: &str,
    init: &HashSet<&str>,
) -> Result<Vec<&'a NodeProto>> {
    let mut known: HashSet<&str> = init.iter().copied().collect();
    known.insert(input);
    known.insert("");
    let mut done = vec![false; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    loop {
        let mut progress = false;
        for (i, n) in nodes.iter().enumerate() {
            if !done[i] && n.input.iter().all(|x| known.contains(x.as_str())) {
                done[i] = true;
                progress = true;
                out.push(n);
                known.extend(n.output.iter().map(|s| s.as_str()));
            }
        }
        if out.len() == nodes.len() {
            return Ok(out);
        }
        if !progress {
            let stuck = nodes.iter().zip(&done).find(|(_, d)| !**d).map(|(n, _)| n);
            let (name, missing) = stuck
                .map(|n| {
                    let m = n
                        .input
                        .iter()
                        .find(|x| !known.contains(x.as_str()))
                        .cloned()
                        .unwrap_or_default();
                    (n.name.clone(), m)
                })
                .unwrap_or_default();
            bail!("the graph has a cycle or a missing tensor: node '{name}' reads '{missing}', which nothing produces");
        }
    }
}

/// Access to the constant tensors of the model.
struct Constants<'a> {
    /// Loads the constant `tensor`.
    constant: &'a dyn Fn(&str) -> Result<ArrayD<f32>>,
    /// Whether a tensor is a constant (initializer or `Constant` node).
    is_const: &'a dyn Fn(&str) -> bool,
}

/// The operator of the node `n` (named `name`; `acts` its inputs that carry
/// the image signal; `output` which of its outputs this graph node
/// computes), built by the family that reads its operator type, with the
/// inputs it reads at run time as parameters.
fn convert(
    n: &NodeProto,
    name: &str,
    acts: &[String],
    opset: i64,
    output: usize,
    k: &Constants,
) -> Result<Imported> {
    let op = n.op_type.as_str();
    // typed, so that `Model::load` can return `Error::Unsupported`
    let unsupported = |why: &str| {
        anyhow::Error::new(crate::Error::Unsupported {
            op_type: op.to_string(),
            node: name.to_string(),
            message: format!("unsupported operator '{op}' (node '{name}'): {why}"),
        })
    };
    let Some(import) = registry::importer(op) else {
        return Err(unsupported(match op {
            "Upsample" => {
                "Upsample (opset 7-9) is not supported by the tract runtime; export with opset >= 10 (Resize)"
            }
            _ => "LRP has no rule for it",
        }));
    };
    let is_act = |i: usize| n.input.get(i).is_some_and(|x| acts.contains(x));
    // a constant that cannot be loaded is a fault of the file, not an
    // operator without support: kept apart to be returned as it is
    let broken: std::cell::RefCell<Option<anyhow::Error>> = Default::default();
    let load = |x: &str| -> Result<ArrayD<f32>> {
        (k.constant)(x).map_err(|e| {
            let message = format!("{e:#}");
            if (k.is_const)(x) {
                *broken.borrow_mut() = Some(e);
            }
            anyhow!(message)
        })
    };
    let operand = |i: usize| -> Result<Operand> {
        Ok(match n.input.get(i) {
            Some(x) if x.is_empty() => Operand::Absent,
            Some(x) if (k.is_const)(x) => Operand::Const(load(x)?),
            Some(_) => Operand::Computed,
            None => Operand::Absent,
        })
    };
    let node = registry::OnnxNode {
        node: n,
        is_activation: (0..n.input.len()).map(is_act).collect(),
        operand: &operand,
        opset,
        output,
    };
    import(&node).map_err(|e| match broken.take() {
        Some(load) => load.context(format!("{op} node '{name}'")),
        None => unsupported(&format!("{e:#}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y = Conv(x, w)`, `x` the image input of `[1, 1, 4, 4]` and `w` an
    /// initializer (when `w_is_constant`) or a graph input computed elsewhere.
    fn conv_model(w_is_constant: bool) -> pb::ModelProto {
        let value = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        let w = TensorProto {
            name: "w".into(),
            dims: vec![1, 1, 1, 1],
            data_type: 1,
            float_data: vec![2.0],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![NodeProto {
                name: "c".into(),
                op_type: "Conv".into(),
                input: vec!["x".into(), "w2".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: if w_is_constant { vec![w] } else { vec![] },
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        };
        let mut graph = graph;
        // the weight through an Identity: from the initializer, or from the
        // image's own shape (computed, not a constant)
        let source = if w_is_constant { "w" } else { "x" };
        graph.node.insert(
            0,
            NodeProto {
                name: "wid".into(),
                op_type: if w_is_constant { "Identity" } else { "Shape" }.into(),
                input: vec![source.into()],
                output: vec!["w2".into()],
                ..Default::default()
            },
        );
        if w_is_constant {
            // as constant folding leaves it: the Identity's output a constant
            graph.initializer[0].name = "w2".into();
            graph.node.remove(0);
        }
        pb::ModelProto {
            graph: Some(graph),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_constant_that_cannot_be_loaded_is_a_fault_of_the_file_not_an_unsupported_operator() {
        let broken = |_: &TensorProto| -> Result<ArrayD<f32>> { bail!("the bytes are corrupt") };
        let e = build_graph(&conv_model(true), &broken).unwrap_err();
        let msg = format!("{e:#}");
        assert!(crate::Error::find(&e).is_none(), "{msg}");
        assert!(
            msg.contains("Conv node 'c'") && msg.contains("loading tensor 'w2'"),
            "{msg}"
        );
        assert!(msg.contains("the bytes are corrupt"), "{msg}");
        // loaded, the same model imports
        let fine = |t: &TensorProto| -> Result<ArrayD<f32>> {
            Ok(ArrayD::from_shape_vec(
                vec![1, 1, 1, 1],
                t.float_data.clone(),
            )?)
        };
        assert_eq!(
            build_graph(&conv_model(true), &fine).unwrap().nodes.len(),
            1
        );
        // a weight the model computes is an operator use we do not support,
        // typed so, naming the operator and the node
        let e = build_graph(&conv_model(false), &fine).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            matches!(
                crate::Error::find(&e),
                Some(crate::Error::Unsupported { .. })
            ),
            "{msg}"
        );
        assert!(
            msg.contains("unsupported operator 'Conv' (node 'c')"),
            "{msg}"
        );
    }
}
