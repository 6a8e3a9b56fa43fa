//! Builds the relevance [`Graph`] from an ONNX `ModelProto`.
//!
//! Every node whose output depends on the image input becomes a graph node;
//! nodes computed from shapes (tf2onnx's dynamic flatten) are left to tract.
//! Weights come from initializers and `Constant` nodes; nodes computed from
//! constants only (`Identity` of a shared initializer, `DequantizeLinear` of
//! int8 weights...) were evaluated before by [`fold::fold_constants`].

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ndarray::ArrayD;
use tract_onnx::pb::{self, type_proto, NodeProto, TensorProto};

mod attrs;
mod elementwise;
pub mod fold;
mod gates;
mod movement;
mod structure;

use attrs::{attr, attr_f, attr_i, attr_ints, pool, window};
use elementwise::{Operand, ACTIVATION_OPS};

use crate::graph::{Graph, Node, Op};
use crate::ops::conv::Conv;
use crate::ops::dense::Dense;
use crate::ops::structural::ReshapeRule;

/// Loads a tensor (raw, typed or external data) as `f32`.
pub type TensorLoader<'a> = dyn Fn(&TensorProto) -> Result<ArrayD<f32>> + 'a;

/// Shape-only operators.
const RESHAPE_OPS: &[&str] = &["Flatten", "Reshape", "Squeeze", "Unsqueeze"];

/// Operators whose output never depends on the values of their input.
const SHAPE_OF: &[&str] = &["Shape", "Size"];

/// Every operator type this importer converts itself (checked against the
/// operator registry by a test).
#[cfg(test)]
fn imported_ops() -> Vec<&'static str> {
    let mut v = vec![
        "Conv",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "Transpose",
        "Softmax",
        "LogSoftmax",
    ];
    v.extend_from_slice(ACTIVATION_OPS);
    v.extend_from_slice(RESHAPE_OPS);
    v.extend_from_slice(movement::MOVEMENT_OPS);
    v.extend(
        structure::STRUCTURE_OPS
            .iter()
            .filter(|o| **o != "Upsample"),
    );
    v
}

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
    let constant = |name: &str, node: &str| -> Result<ArrayD<f32>> {
        let t = consts
            .get(name)
            .ok_or_else(|| anyhow!("node '{node}': parameter '{name}' is not a constant (computed weights are not supported)"))?;
        load(t).with_context(|| format!("loading tensor '{name}' of node '{node}'"))
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
            let op = convert(
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
            let mut acts = acts.clone();
            acts.extend(structure::runtime_operands(n, &op, opset));
            acts.extend(movement::runtime_operands(n, &op));
            out_nodes.push(Node {
                name,
                op_type: n.op_type.clone(),
                op,
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
        if matches!(n.op_type.as_str(), "Softmax" | "LogSoftmax") {
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
                attr(n, "value").and_then(|a| a.t.as_ref()),
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
/// operators fused ([`fuse`]); `inspect` counts these. The nodes as they
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
    /// Loads the constant `tensor` read by `node`.
    constant: &'a dyn Fn(&str, &str) -> Result<ArrayD<f32>>,
    /// Whether a tensor is a constant (initializer or `Constant` node).
    is_const: &'a dyn Fn(&str) -> bool,
}

fn convert(
    n: &NodeProto,
    name: &str,
    acts: &[String],
    opset: i64,
    output: usize,
    k: &Constants,
) -> Result<Op> {
    let op = n.op_type.as_str();
    let is_act = |i: usize| n.input.get(i).is_some_and(|x| acts.contains(x));
    let opt_const = |i: usize| -> Result<Option<ArrayD<f32>>> {
        match n.input.get(i) {
            Some(x) if !x.is_empty() => (k.constant)(x, name).map(Some),
            _ => Ok(None),
        }
    };
    let operand = |i: usize| -> Result<Operand> {
        Ok(match n.input.get(i) {
            Some(x) if x.is_empty() => Operand::Absent,
            Some(x) if (k.is_const)(x) => Operand::Const((k.constant)(x, name)?),
            Some(_) => Operand::Computed,
            None => Operand::Absent,
        })
    };
    // typed, so that `Model::load` can return `Error::Unsupported`
    let unsupported = |why: &str| {
        anyhow::Error::new(crate::Error::Unsupported {
            op_type: op.to_string(),
            node: name.to_string(),
            message: format!("unsupported operator '{op}' (node '{name}'): {why}"),
        })
    };
    if let Some(import) = crate::ops::registry::importer(op) {
        let constant = |i: usize| -> Result<Option<ArrayD<f32>>> {
            if is_act(i) {
                return Ok(None);
            }
            opt_const(i)
        };
        let node = crate::ops::registry::OnnxNode {
            node: n,
            is_activation: (0..n.input.len()).map(is_act).collect(),
            constant: &constant,
            opset,
        };
        return import(&node)
            .map(Op::Registered)
            .map_err(|e| unsupported(&format!("{e:#}")));
    }
    Ok(match op {
        "Conv" => {
            ensure!(
                is_act(0) && !is_act(1),
                unsupported("only a constant weight on an activation is supported")
            );
            let weight = opt_const(1)?.ok_or_else(|| unsupported("no weight"))?;
            ensure!(
                weight.ndim() == 4,
                unsupported(&format!(
                    "only 2-D convolutions, weight {:?}",
                    weight.shape()
                ))
            );
            let kernel = [weight.shape()[2], weight.shape()[3]];
            let bias = opt_const(2)?;
            if let Some(b) = &bias {
                ensure!(
                    b.len() == weight.shape()[0],
                    unsupported(&format!(
                        "bias of {} values for {} output channels",
                        b.len(),
                        weight.shape()[0]
                    ))
                );
            }
            Op::Conv(Conv {
                weight,
                bias,
                window: window(n, name, kernel)?,
                group: attr_i(n, "group", 1).max(1) as usize,
            })
        }
        "Gemm" => {
            ensure!(
                is_act(0) && !is_act(1),
                unsupported("only activation x constant is supported")
            );
            ensure!(attr_i(n, "transA", 0) == 0, unsupported("transA = 1"));
            let b = opt_const(1)?.ok_or_else(|| unsupported("no weight"))?;
            ensure!(b.ndim() == 2, unsupported("weight must be 2-D"));
            let alpha = attr_f(n, "alpha", 1.0);
            let beta = attr_f(n, "beta", 1.0);
            let w = if attr_i(n, "transB", 0) != 0 {
                b
            } else {
                b.t().as_standard_layout().into_owned()
            };
            let w = if alpha != 1.0 {
                w.mapv(|v| v * alpha)
            } else if w.is_standard_layout() {
                // no copy of what is often the largest weight of the model
                w
            } else {
                w.as_standard_layout().into_owned()
            };
            let m = w.shape()[0];
            let bias = match opt_const(2)? {
                None => None,
                Some(c) => {
                    let c = c.mapv(|v| v * beta);
                    let c = c
                        .broadcast(vec![m])
                        .or_else(|| c.broadcast(vec![1, m]))
                        .map(|v| v.to_owned());
                    let c = c.ok_or_else(|| unsupported("bias C must broadcast to [M]"))?;
                    Some(c.into_shape_with_order(vec![m])?)
                }
            };
            Op::Dense(Dense { weight: w, bias })
        }
        "MatMul" => {
            ensure!(
                is_act(0) && !is_act(1),
                unsupported("only activation x constant is supported")
            );
            let b = opt_const(1)?.ok_or_else(|| unsupported("no weight"))?;
            ensure!(b.ndim() == 2, unsupported("weight must be 2-D"));
            Op::Dense(Dense {
                weight: b.t().as_standard_layout().into_owned(),
                bias: None,
            })
        }
        "Add" if acts.len() == 2 => Op::Sum,
        "Mul" if acts.len() == 2 => structure::convert(n, acts, opset, &operand)
            .map_err(|e| unsupported(&format!("{e:#}")))?,
        "Add" | "Sub" | "Mul" | "Div" => {
            ensure!(
                acts.len() == 1,
                unsupported("only an activation combined with a constant is supported")
            );
            elementwise::arith(n, &acts[0], &operand).map_err(|e| unsupported(&format!("{e:#}")))?
        }
        "BatchNormalization" => {
            let get = |i| opt_const(i)?.ok_or_else(|| unsupported("missing parameter"));
            let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
            let lens = [gamma.len(), beta.len(), mean.len(), var.len()];
            ensure!(
                lens.iter().all(|&l| l == lens[0]),
                unsupported(&format!(
                    "scale, bias, mean and variance of different lengths {lens:?}"
                ))
            );
            let eps = attr_f(n, "epsilon", 1e-5);
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var.iter())
                .map(|(g, v)| g / (v + eps).sqrt())
                .collect();
            let shift = beta
                .iter()
                .zip(mean.iter())
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            Op::BatchNorm { scale, shift }
        }
        "MaxPool" => {
            ensure!(
                n.output.len() == 1 || n.output[1].is_empty(),
                unsupported("the Indices output")
            );
            Op::MaxPool(pool(n, name)?)
        }
        "AveragePool" => Op::AvgPool(pool(n, name)?),
        "Transpose" => Op::Transpose(
            attr_ints(n, "perm")
                .unwrap_or_default()
                .into_iter()
                .map(|p| p as usize)
                .collect(),
        ),
        // fake quantization of an activation (QDQ models): relevance passes
        // unchanged, the gradient is straight-through; the forward pass runs
        // in tract (see `Model`)
        "QuantizeLinear" | "DequantizeLinear" if is_act(0) && acts.len() == 1 => {
            Op::Activation(crate::graph::Act::Identity)
        }
        // only allowed as the last node (checked by the caller), then removed
        "Softmax" | "LogSoftmax" => Op::Activation(crate::graph::Act::Opaque),
        o if ACTIVATION_OPS.contains(&o) => {
            // an activation reading the image anywhere but in its first input
            // has no derivative here; relevance still passes from the first
            let act = if acts.len() == 1 && is_act(0) {
                elementwise::activation(n, opset, &operand)
                    .map_err(|e| unsupported(&format!("{e:#}")))?
            } else {
                crate::graph::Act::Opaque
            };
            Op::Activation(act)
        }
        o if RESHAPE_OPS.contains(&o) => {
            // the target shape when the file fixes it (an attribute or a
            // constant input); `None` leaves the forward pass to tract
            let ints = |i: usize| -> Option<Vec<i64>> {
                if is_act(i) {
                    return None;
                }
                let c = opt_const(i).ok()??;
                Some(c.iter().map(|&v| v as i64).collect())
            };
            let attr_ints = |a: &str| attr(n, a).map(|a| a.ints.clone());
            Op::Reshape(match o {
                "Flatten" => Some(ReshapeRule::Flatten(attr(n, "axis").map_or(1, |a| a.i))),
                "Squeeze" => match (attr_ints("axes"), n.input.get(1).filter(|s| !s.is_empty())) {
                    (Some(axes), _) => Some(ReshapeRule::Squeeze(Some(axes))),
                    (None, None) => Some(ReshapeRule::Squeeze(None)),
                    (None, Some(_)) => ints(1).map(|axes| ReshapeRule::Squeeze(Some(axes))),
                },
                "Unsqueeze" => attr_ints("axes")
                    .or_else(|| ints(1))
                    .map(ReshapeRule::Unsqueeze),
                _ => ints(1).map(|shape| ReshapeRule::Reshape {
                    shape,
                    allowzero: attr(n, "allowzero").is_some_and(|a| a.i != 0),
                }),
            })
        }
        o if movement::MOVEMENT_OPS.contains(&o) => {
            movement::convert(n, acts, opset, &operand, output)
                .map_err(|e| unsupported(&format!("{e:#}")))?
        }
        o if structure::STRUCTURE_OPS.contains(&o) => structure::convert(n, acts, opset, &operand)
            .map_err(|e| unsupported(&format!("{e:#}")))?,
        _ => return Err(unsupported("LRP has no rule for it")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::registry;

    #[test]
    fn the_registry_describes_exactly_the_operators_that_are_imported() {
        let imported = imported_ops();
        for o in &imported {
            assert!(registry::handling(o).is_some(), "{o} has no registry entry");
        }
        for (o, _) in registry::operators() {
            let by_family = registry::importer(o).is_some();
            assert!(
                by_family || imported.contains(&o),
                "{o} is in the registry but nothing imports it"
            );
        }
    }
}
