//! `lrp-heatmap inspect MODEL` (or `--list-ops MODEL`): the model's input,
//! output, operator counts and how each operator is handled, and whether the
//! whole model loads for explanation, before anything is run.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use tract_onnx::pb::{self, type_proto};
use tract_onnx::prelude::Framework;

use lrp_heatmap::model::{Model, BUNDLED_MODEL, BUNDLED_NAME};

/// What to inspect.
#[derive(Clone, Debug)]
pub struct InspectConfig {
    /// ONNX file (or the bundled model's name).
    pub model: PathBuf,
    /// Height and width for symbolic spatial dims (`None`: 224).
    pub input_size: Option<[usize; 2]>,
    /// List the relevance nodes with their output tensors and shapes.
    pub layers: bool,
}

/// The relevance nodes in order: name, operator, output tensor and its
/// shape (from a forward pass on a zero input).
fn list_layers(m: &Model, out: &mut dyn Write) -> Result<()> {
    let fwd = m.forward(ndarray::ArrayD::zeros(m.input.shape.clone()))?;
    writeln!(
        out,
        "\nlayers (node, operator, output tensor, shape; channels on axis 1):"
    )?;
    writeln!(
        out,
        "  {:<40} {:<18} {} {:?}",
        m.graph.input, "(input)", m.graph.input, m.input.shape
    )?;
    for n in &m.graph.nodes {
        let shape = if n.output == m.graph.logits {
            Some(fwd.logits_tensor.shape().to_vec())
        } else {
            fwd.activations.get(&n.output).map(|a| a.shape().to_vec())
        };
        let shape = shape.map_or("?".to_string(), |s| format!("{s:?}"));
        writeln!(
            out,
            "  {:<40} {:<18} {} {shape}",
            n.name, n.op_type, n.output
        )?;
    }
    Ok(())
}

/// Dims of a value, symbols by name (`?` when unknown).
fn dims(v: &pb::ValueInfoProto) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return "(no tensor type)".into();
    };
    let Some(shape) = &t.shape else {
        return "(unknown shape)".into();
    };
    let d: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) => v.to_string(),
            Some(Value::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// Operator counts of the nodes that depend on the image input (`active`)
/// and of those computed from constants and shapes only.
struct Census {
    active: BTreeMap<String, Vec<String>>,
    constant: BTreeMap<String, usize>,
}

fn census(nodes: &[pb::NodeProto], input: &str) -> Census {
    let mut live: HashSet<&str> = HashSet::from([input]);
    let mut is_active = vec![false; nodes.len()];
    // fixpoint: nodes need not be stored in topological order
    loop {
        let mut changed = false;
        for (k, n) in nodes.iter().enumerate() {
            if is_active[k] || matches!(n.op_type.as_str(), "Shape" | "Size") {
                continue;
            }
            if n.input.iter().any(|i| live.contains(i.as_str())) {
                is_active[k] = true;
                changed = true;
                live.extend(n.output.iter().map(String::as_str));
            }
        }
        if !changed {
            break;
        }
    }
    let mut c = Census {
        active: BTreeMap::new(),
        constant: BTreeMap::new(),
    };
    for (k, n) in nodes.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{k}", n.op_type)
        } else {
            n.name.clone()
        };
        if is_active[k] {
            c.active.entry(n.op_type.clone()).or_default().push(name);
        } else {
            *c.constant.entry(n.op_type.clone()).or_default() += 1;
        }
    }
    c
}

/// Prints the report on `out`; returns whether the model can be explained.
pub fn run_inspect(cfg: &InspectConfig, out: &mut dyn Write) -> Result<bool> {
    let path = cfg.model.as_path();
    let bytes = if path == Path::new(BUNDLED_NAME) && !path.exists() {
        BUNDLED_MODEL.to_vec()
    } else {
        std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?
    };
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{} is not a valid ONNX model", path.display()))?;
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("model {}: the file holds no graph", path.display()))?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    writeln!(out, "model:    {}", path.display())?;
    let producer = format!("{} {}", proto.producer_name, proto.producer_version);
    writeln!(
        out,
        "format:   ONNX IR {}, opset {opset}, producer {}",
        proto.ir_version,
        if producer.trim().is_empty() {
            "unknown"
        } else {
            producer.trim()
        }
    )?;
    let init: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !init.contains(i.name.as_str()))
        .collect();
    for i in &inputs {
        writeln!(out, "input:    {} {}", i.name, dims(i))?;
    }
    for o in &g.output {
        writeln!(out, "output:   {} {}", o.name, dims(o))?;
    }
    let params: usize = g
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>().max(0) as usize)
        .sum();
    writeln!(
        out,
        "nodes:    {} ({} weights in {} initializers)",
        g.node.len(),
        params,
        g.initializer.len()
    )?;
    // the operators as the import sees them: the exporters' LayerNorm and
    // GELU chains fused
    let dir = path.parent().and_then(|d| d.to_str());
    let load = lrp_heatmap::model::tensor_loader(dir);
    let nodes = lrp_heatmap::model::fused_nodes(g, &load);
    let c = census(&nodes, inputs.first().map_or("", |i| i.name.as_str()));
    writeln!(out, "\noperators on the image path:")?;
    let mut missing = vec![];
    for (op, nodes) in &c.active {
        let how = match lrp_heatmap::ops::registry::handling(op) {
            Some(h) => h.to_string(),
            None => {
                missing.push(op.clone());
                let mut names = nodes.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
                if nodes.len() > 3 {
                    names += ", ...";
                }
                format!("NO LRP HANDLING (nodes {names})")
            }
        };
        writeln!(out, "  {:>5}  {:<20} {how}", nodes.len(), op)?;
    }
    if !c.constant.is_empty() {
        writeln!(
            out,
            "\nshape and constant computations (run by tract, no relevance):"
        )?;
        for (op, count) in &c.constant {
            writeln!(out, "  {count:>5}  {op}")?;
        }
    }
    writeln!(out)?;
    if !missing.is_empty() {
        writeln!(
            out,
            "operators without an LRP handling: {}",
            missing.join(", ")
        )?;
    }
    match lrp_heatmap::guard::boundary(&format!("model {}", path.display()), || {
        lrp_heatmap::model::LoadOptions {
            size: cfg.input_size,
            ..Default::default()
        }
        .load(path)
        .map_err(Into::into)
    }) {
        Ok(m) => {
            let layers = m
                .graph
                .nodes
                .iter()
                .filter(|n| n.op.linear().is_some())
                .count();
            writeln!(
                out,
                "supported: yes ({} relevance nodes, {layers} linear layers after canonization; \
                 input {:?} {}{}; {} classes from '{}'{})",
                m.graph.nodes.len(),
                m.input.shape,
                match m.input.layout {
                    lrp_heatmap::preprocess::Layout::Nchw => "NCHW",
                    lrp_heatmap::preprocess::Layout::Nhwc => "NHWC",
                },
                if m.input.fixed_dims {
                    ", symbolic dims fixed"
                } else {
                    ""
                },
                m.classes,
                m.graph.logits,
                if m.graph.skipped_softmax {
                    ", trailing softmax skipped"
                } else {
                    ""
                }
            )?;
            if cfg.layers {
                list_layers(&m, out)?;
            }
            if normalises_itself(&m) {
                writeln!(
                    out,
                    "note: the model normalises its input itself (Sub / Div / Mul before the first \
                     layer): run with --mean 0,0,0 --std 1,1,1 if it expects pixels in [0, 1]"
                )?;
            }
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "supported: no: {e:#}")?;
            Ok(false)
        }
    }
}

/// Whether arithmetic with constants sits between the input and a first layer.
fn normalises_itself(m: &Model) -> bool {
    let g = &m.graph;
    let mut raw: HashSet<&str> = HashSet::from([g.input.as_str()]);
    for n in &g.nodes {
        if n.op.linear().is_some() || !n.inputs.iter().any(|i| raw.contains(i.as_str())) {
            continue;
        }
        if n.op.elements() == lrp_heatmap::ops::Elements::Arithmetic {
            return true;
        }
        raw.insert(n.output.as_str());
    }
    false
}
