//! Constant folding at load: every node whose inputs are all constants is
//! evaluated once (by tract), and its output becomes an initializer, so that
//! the relevance graph, the native forward pass and tract all see plain
//! weights.
//!
//! This is what real exporters need: PyTorch's TorchScript exporter
//! de-duplicates initializers with equal values and reads the copies through
//! `Identity` nodes; QDQ-quantized models (onnxruntime's quantizer, the ONNX
//! model zoo's `-int8` files) store int8 weights behind `DequantizeLinear`;
//! other exporters `Cast`, `Reshape`, `Transpose` or `Concat` constants, or
//! compute with them. Values derived from `Shape` of an activation depend on
//! the activation and are left alone (they are not all-constant). Only
//! operators whose output is no larger than what their inputs broadcast to are
//! folded ([`FOLDABLE`]): an `Expand` or `ConstantOfShape` of a constant shape
//! could ask for any amount of memory and stays with tract as before.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use tract_onnx::prelude::*;

/// Operators evaluated when all their inputs are constants.
pub const FOLDABLE: &[&str] = &[
    "Identity",
    "Cast",
    "CastLike",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Slice",
    "Gather",
    "Split",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Pow",
    "Exp",
    "Log",
    "Min",
    "Max",
    "Sum",
    "Mean",
    "Clip",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Relu",
    "Sigmoid",
    "Tanh",
    "MatMul",
    "Shape",
    "Size",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// What folding did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Nodes evaluated and removed.
    pub nodes: usize,
    /// Their operator types, sorted and de-duplicated.
    pub op_types: Vec<String>,
}

/// Whether `n` is a `Constant` node holding its tensor in `value`, the form
/// the relevance graph reads directly.
fn has_value(n: &NodeProto) -> bool {
    n.op_type == "Constant"
        && n.attribute
            .iter()
            .any(|a| a.name == "value" && a.t.is_some())
}

/// The nodes of `g` computed from constants only, in an order where each
/// comes after the nodes it reads: their indices.
fn constant_nodes(g: &pb::GraphProto) -> Vec<usize> {
    let mut known: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    for n in &g.node {
        if has_value(n) {
            known.extend(n.output.iter().map(String::as_str));
        }
    }
    let mut done = vec![false; g.node.len()];
    let mut order = Vec::new();
    // a fixpoint (nodes need not be stored in topological order); plain
    // models end after one pass that finds nothing
    loop {
        let before = order.len();
        for (i, n) in g.node.iter().enumerate() {
            // a Constant given as `value_float`, `value_ints`... is
            // evaluated too, so that readers see a plain tensor
            let source = n.op_type == "Constant" && !has_value(n);
            if done[i] || !(source || FOLDABLE.contains(&n.op_type.as_str()) && !n.input.is_empty())
            {
                continue;
            }
            if n.input
                .iter()
                .all(|x| x.is_empty() || known.contains(x.as_str()))
            {
                done[i] = true;
                order.push(i);
                known.extend(n.output.iter().map(String::as_str));
            }
        }
        if order.len() == before {
            return order;
        }
    }
}

/// ONNX data type of a tract datum type.
fn onnx_type(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        DatumType::F16 => DataType::Float16,
        DatumType::I8 => DataType::Int8,
        DatumType::U8 => DataType::Uint8,
        DatumType::I16 => DataType::Int16,
        DatumType::U16 => DataType::Uint16,
        DatumType::I32 => DataType::Int32,
        DatumType::U32 => DataType::Uint32,
        DatumType::I64 => DataType::Int64,
        DatumType::U64 => DataType::Uint64,
        DatumType::Bool => DataType::Bool,
        _ => return None,
    })
}

/// A tract tensor as an ONNX tensor named `name` (raw little-endian data).
fn to_proto(name: &str, t: Tensor) -> Result<TensorProto> {
    ensure!(
        cfg!(target_endian = "little"),
        "constant folding needs a little-endian machine"
    );
    // shapes computed from constants come out as symbolic dims
    let t = if t.datum_type() == DatumType::TDim {
        t.cast_to::<i64>()
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("tensor '{name}' holds symbolic values"))?
            .into_owned()
    } else {
        t
    };
    let dt = onnx_type(t.datum_type()).ok_or_else(|| {
        anyhow!(
            "tensor '{name}' has type {:?}, which cannot be stored",
            t.datum_type()
        )
    })?;
    let bytes = t
        .try_as_plain_ram()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("tensor '{name}'"))?
        .as_bytes()
        .to_vec();
    Ok(TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        raw_data: bytes,
        ..Default::default()
    })
}

/// Most elements a folded tensor may have (1 GiB of `f32`): the constants
/// of a hostile file could broadcast to any size (`[N, 1] + [1, N]`).
pub const MAX_FOLDED_ELEMENTS: u64 = 1 << 28;

/// Elementwise operators whose output has the broadcast shape of their inputs.
const BROADCASTING: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Min",
    "Max",
    "Sum",
    "Mean",
    "Identity",
    "Cast",
    "CastLike",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Clip",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Relu",
    "Sigmoid",
    "Tanh",
    "QuantizeLinear",
    "DequantizeLinear",
];

/// The shape of the output of node `n` of an elementwise operator
/// ([`BROADCASTING`]) from the shapes of its inputs (`None`: an input's shape
/// is not known). `QuantizeLinear` / `DequantizeLinear` keep their input's
/// shape: their scale and zero point are a scalar, one value per index of
/// `axis` (per channel) or per block, never broadcast against the input the
/// numpy way (a per-channel scale `[C]` of a weight `[C, K, 1, 1]` would land on
/// the last axis: `[C, K, 1, C]`); the others broadcast as numpy does.
fn output_shape(n: &NodeProto, shapes: &HashMap<&str, Vec<u64>>) -> Option<Vec<u64>> {
    let inputs = if is_quantizer(&n.op_type) {
        &n.input[..n.input.len().min(1)]
    } else {
        &n.input[..]
    };
    let known: Vec<&Vec<u64>> = inputs
        .iter()
        .filter(|x| !x.is_empty())
        .map(|x| shapes.get(x.as_str()))
        .collect::<Option<_>>()?;
    let rank = known.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1u64; rank];
    for s in &known {
        for (k, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + k];
            *o = if *o == 1 { d } else { (*o).max(d) };
        }
    }
    Some(out)
}

/// Whether `op_type` is `QuantizeLinear` or `DequantizeLinear`.
fn is_quantizer(op_type: &str) -> bool {
    matches!(op_type, "QuantizeLinear" | "DequantizeLinear")
}

/// Refuses blocked quantization (`QuantizeLinear` / `DequantizeLinear` with
/// a `block_size` attribute, opset 21): neither our import nor tract
/// computes it, and read as per-axis it would give wrong weights.
fn refuse_blocked(g: &pb::GraphProto) -> Result<()> {
    for n in g.node.iter().filter(|n| is_quantizer(&n.op_type)) {
        let block = n
            .attribute
            .iter()
            .find(|a| a.name == "block_size")
            .map_or(0, |a| a.i);
        if block != 0 {
            return Err(crate::Error::Unsupported {
                op_type: n.op_type.clone(),
                node: n.name.clone(),
                message: format!(
                    "unsupported operator '{}' (node '{}'): blocked quantization (block_size {block}) is not supported",
                    n.op_type, n.name
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// Refuses a fold whose output would exceed [`MAX_FOLDED_ELEMENTS`], before
/// anything is evaluated: shapes are followed from the initializers through
/// the elementwise operators ([`output_shape`]); a node whose input shape
/// is not known that way is not checked here (tract's own evaluation is then
/// bounded by its inputs, which were).
fn check_sizes(g: &pb::GraphProto, order: &[usize]) -> Result<()> {
    let mut shapes: HashMap<&str, Vec<u64>> = g
        .initializer
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.dims.iter().map(|&d| d.max(0) as u64).collect(),
            )
        })
        .collect();
    for &i in order {
        let n = &g.node[i];
        if !BROADCASTING.contains(&n.op_type.as_str()) {
            continue;
        }
        let Some(out) = output_shape(n, &shapes) else {
            continue;
        };
        let size = out.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if size.is_none_or(|s| s > MAX_FOLDED_ELEMENTS) {
            bail!(
                "{} node '{}' computes from constants a tensor of shape {out:?}, more than {} elements",
                n.op_type,
                n.name,
                MAX_FOLDED_ELEMENTS
            );
        }
        for o in &n.output {
            shapes.insert(o.as_str(), out.clone());
        }
    }
    Ok(())
}

/// Evaluates the constant-only nodes of `model` and replaces them by
/// initializers holding their outputs; initializers and `Constant` nodes that
/// nothing reads any more are dropped. `dir` is where external data files are
/// looked up. Does nothing (and copies nothing) when no node is constant-only.
/// Blocked quantization is refused, whether of a constant or not.
pub fn fold_constants(model: &mut ModelProto, dir: Option<&str>) -> Result<Folded> {
    let Some(g) = model.graph.as_mut() else {
        return Ok(Folded::default());
    };
    refuse_blocked(g)?;
    let order = constant_nodes(g);
    if order.is_empty() {
        return Ok(Folded::default());
    }
    check_sizes(g, &order)?;
    let folded: HashSet<usize> = order.iter().copied().collect();
    // tensors the remaining graph reads: the folded outputs among them are
    // the results of the evaluation
    let mut read_after: HashSet<&str> = g
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| !folded.contains(i))
        .flat_map(|(_, n)| n.input.iter().map(String::as_str))
        .collect();
    read_after.extend(g.output.iter().map(|o| o.name.as_str()));
    let mut wanted: Vec<String> = Vec::new();
    for &i in &order {
        for o in &g.node[i].output {
            if !o.is_empty() && read_after.contains(o.as_str()) {
                wanted.push(o.clone());
            }
        }
    }
    // the sub-model: the folded nodes, the Constant nodes and initializers they read
    let read_by_folded: HashSet<&str> = order
        .iter()
        .flat_map(|&i| g.node[i].input.iter().map(String::as_str))
        .collect();
    let mut nodes: Vec<NodeProto> = g
        .node
        .iter()
        .filter(|n| has_value(n) && n.output.iter().any(|o| read_by_folded.contains(o.as_str())))
        .cloned()
        .collect();
    nodes.extend(order.iter().map(|&i| g.node[i].clone()));
    let sub = ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        graph: Some(pb::GraphProto {
            name: "constants".into(),
            node: nodes,
            initializer: g
                .initializer
                .iter()
                .filter(|t| read_by_folded.contains(t.name.as_str()))
                .cloned()
                .collect(),
            output: wanted
                .iter()
                .map(|w| ValueInfoProto {
                    name: w.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let describe = |i: usize| {
        let n = &g.node[i];
        format!("{} node '{}'", n.op_type, n.name)
    };
    let what = order
        .iter()
        .take(3)
        .map(|&i| describe(i))
        .collect::<Vec<_>>()
        .join(", ");
    let values = if wanted.is_empty() {
        vec![]
    } else {
        crate::guard::third_party("tract", || evaluate(&sub, dir)).with_context(|| {
            format!(
                "cannot evaluate the {} nodes computed from constants only ({what}{})",
                order.len(),
                if order.len() > 3 { ", ..." } else { "" }
            )
        })?
    };
    drop(sub);
    ensure!(
        values.len() == wanted.len(),
        "constant folding gave {} tensors for {}",
        values.len(),
        wanted.len()
    );
    let mut op_types: Vec<String> = order.iter().map(|&i| g.node[i].op_type.clone()).collect();
    op_types.sort();
    op_types.dedup();
    let mut new_init = Vec::with_capacity(values.len());
    for (name, t) in wanted.iter().zip(values) {
        new_init.push(to_proto(name, t)?);
    }
    // drop the folded nodes, then whatever only they read
    let mut i = 0;
    g.node.retain(|_| {
        i += 1;
        !folded.contains(&(i - 1))
    });
    let still_read: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .chain(g.input.iter().map(|o| o.name.clone()))
        .collect();
    g.node
        .retain(|n| n.op_type != "Constant" || n.output.iter().any(|o| still_read.contains(o)));
    g.initializer.retain(|t| still_read.contains(&t.name));
    g.initializer.extend(new_init);
    Ok(Folded {
        nodes: order.len(),
        op_types,
    })
}

/// Runs the constant-only sub-model, returning its outputs in order.
fn evaluate(sub: &ModelProto, dir: Option<&str>) -> Result<Vec<Tensor>> {
    let onnx = tract_onnx::onnx();
    let parsed = onnx.parse(sub, dir).map_err(|e| anyhow!("{e:#}"))?;
    let typed = parsed.model.into_typed().map_err(|e| anyhow!("{e:#}"))?;
    let plan = typed
        .into_runnable_with_options(&RunOptions::default())
        .map_err(|e| anyhow!("{e:#}"))?;
    let outs = plan.run(tvec!()).map_err(|e| anyhow!("{e:#}"))?;
    Ok(outs.into_iter().map(|v| v.into_tensor()).collect())
}

/// Whether the relevance graph holds fake quantization of activations
/// (`QuantizeLinear` / `DequantizeLinear` on the path from the image).
pub fn fake_quantized(nodes: &[crate::graph::Node]) -> bool {
    nodes.iter().any(|n| is_quantizer(&n.op_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lrp_testkit::synth::{Attr, OnnxBuilder};
    use prost::Message;

    fn raw(name: &str, dims: &[i64], dt: DataType, bytes: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt as i32,
            raw_data: bytes,
            ..Default::default()
        }
    }

    /// int8 weight [2, 3, 1, 1], per output channel scale and zero point.
    const WQ: [i8; 6] = [-128, 5, 127, 0, -7, 33];
    const SCALE: [f32; 2] = [0.02, 0.5];
    const ZP: [i8; 2] = [3, -1];
    const BIAS: [f32; 2] = [0.25, -1.5];
    const M1: [f32; 3] = [1.0, -2.0, 0.5];
    const M2: [f32; 3] = [3.0, 0.25, -1.0];

    /// x [1, 3, 4, 4] -> Conv 1x1 (weight DequantizeLinear(int8, per-axis),
    /// bias Identity(initializer), as the TorchScript exporter writes shared
    /// biases) -> GlobalAveragePool -> Flatten -> Gemm with the weight
    /// Mul(Transpose(Reshape(Concat(m1, m2), [3, 2])), Cast(2.0 as f64)).
    fn model() -> ModelProto {
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 3, 4, 4]);
        b.initializer("b", &[2], &BIAS);
        b.initializer("m1", &[3], &M1);
        b.initializer("m2", &[3], &M2);
        b.initializer_i64("shape", &[2], &[3, 2]);
        b.node(
            "DequantizeLinear",
            &["wq", "scale", "zp"],
            &["w"],
            vec![Attr::Int("axis", 0)],
        );
        b.node("Identity", &["b"], &["b2"], vec![]);
        b.node("Conv", &["x", "w", "b2"], &["c"], vec![]);
        b.node("GlobalAveragePool", &["c"], &["g"], vec![]);
        b.node("Flatten", &["g"], &["f"], vec![]);
        b.node("Concat", &["m1", "m2"], &["m"], vec![Attr::Int("axis", 0)]);
        b.node("Reshape", &["m", "shape"], &["mr"], vec![]);
        b.node(
            "Transpose",
            &["mr"],
            &["mt"],
            vec![Attr::Ints("perm", vec![1, 0])],
        );
        b.node("Cast", &["two64"], &["two"], vec![Attr::Int("to", 1)]);
        b.node("Mul", &["mt", "two"], &["w2"], vec![]);
        b.node("Gemm", &["f", "w2"], &["y"], vec![]);
        b.output("y", &[1, 3]);
        let mut p = b.to_model_proto();
        let g = p.graph.as_mut().unwrap();
        let bytes = |v: &[i8]| v.iter().map(|&q| q as u8).collect::<Vec<u8>>();
        g.initializer
            .push(raw("wq", &[2, 3, 1, 1], DataType::Int8, bytes(&WQ)));
        let s: Vec<u8> = SCALE.iter().flat_map(|v| v.to_le_bytes()).collect();
        g.initializer.push(raw("scale", &[2], DataType::Float, s));
        g.initializer
            .push(raw("zp", &[2], DataType::Int8, bytes(&ZP)));
        let two = 2.0f64.to_le_bytes().to_vec();
        g.initializer.push(raw("two64", &[], DataType::Double, two));
        p
    }

    /// The dequantized weight, by hand: (q - zero point) * scale of its row.
    fn weight_f64() -> Vec<f64> {
        (0..6)
            .map(|i| (WQ[i] as f64 - ZP[i / 3] as f64) * SCALE[i / 3] as f64)
            .collect()
    }

    /// The Gemm weight [2, 3] by hand: m = m1 ++ m2 read as [3, 2], transposed, doubled.
    fn gemm_f64() -> Vec<f64> {
        let m: Vec<f64> = M1.iter().chain(&M2).map(|&v| v as f64).collect();
        let mut out = vec![0.0; 6];
        for r in 0..3 {
            for c in 0..2 {
                out[c * 3 + r] = 2.0 * m[r * 2 + c];
            }
        }
        out
    }

    fn floats(g: &pb::GraphProto, name: &str) -> (Vec<i64>, Vec<f64>) {
        let t = g.initializer.iter().find(|t| t.name == name).unwrap();
        assert_eq!(t.data_type, DataType::Float as i32, "{name}");
        let v = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect();
        (t.dims.clone(), v)
    }

    #[test]
    fn constant_only_nodes_become_initializers() {
        let mut p = model();
        let f = fold_constants(&mut p, None).unwrap();
        assert_eq!(f.nodes, 7);
        assert!(f.op_types.contains(&"DequantizeLinear".to_string()));
        let g = p.graph.as_ref().unwrap();
        let left: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(left, ["Conv", "GlobalAveragePool", "Flatten", "Gemm"]);
        let (dims, w) = floats(g, "w");
        assert_eq!(dims, [2, 3, 1, 1]);
        for (a, e) in w.iter().zip(weight_f64()) {
            assert!((a - e).abs() <= 1e-6 * e.abs().max(1.0), "{a} vs {e}");
        }
        let (dims, w2) = floats(g, "w2");
        assert_eq!(dims, [2, 3]);
        assert_eq!(w2, gemm_f64(), "exact: copies and a doubling");
        assert_eq!(floats(g, "b2").1, [0.25, -1.5]);
        // what only the folded nodes read is gone
        for gone in ["wq", "scale", "zp", "m1", "m2", "shape", "two64", "b"] {
            assert!(g.initializer.iter().all(|t| t.name != gone), "{gone}");
        }
    }

    #[test]
    fn a_broadcast_bomb_is_refused_before_it_is_evaluated() {
        // [65536, 1] + [1, 65536] would be 2^32 elements (16 GiB): refused
        // from the shapes, nothing allocated
        let n = 1 << 16;
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 3, 4, 4]);
        b.initializer("a", &[n, 1], &vec![1.0; n]);
        b.initializer("c", &[1, n], &vec![1.0; n]);
        b.node("Add", &["a", "c"], &["big"], vec![]);
        b.node("Identity", &["big"], &["big2"], vec![]);
        b.node("Add", &["x", "big2"], &["y"], vec![]);
        b.output("y", &[1, 3, 4, 4]);
        let mut p = b.to_model_proto();
        let e = fold_constants(&mut p, None).unwrap_err().to_string();
        assert!(
            e.contains("Add node") && e.contains("[65536, 65536]"),
            "{e}"
        );
    }

    /// A graph of one node `op(inputs)` with `axis`, its initializers of the
    /// given shapes (no data: only the shapes are read).
    fn shapes_only(
        op: &str,
        inits: &[(&str, &[i64])],
        attrs: Vec<pb::AttributeProto>,
    ) -> pb::GraphProto {
        pb::GraphProto {
            node: vec![NodeProto {
                op_type: op.into(),
                name: "n".into(),
                input: inits.iter().map(|(n, _)| n.to_string()).collect(),
                output: vec!["y".into()],
                attribute: attrs,
                ..Default::default()
            }],
            initializer: inits
                .iter()
                .map(|(n, d)| raw(n, d, DataType::Float, vec![]))
                .collect(),
            ..Default::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            i,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        }
    }

    fn shape_of(g: &pb::GraphProto) -> Option<Vec<u64>> {
        let shapes = g
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t.dims.iter().map(|&d| d as u64).collect()))
            .collect();
        output_shape(&g.node[0], &shapes)
    }

    #[test]
    fn a_per_channel_dequantized_weight_keeps_the_weights_shape() {
        // ResNet50's last 1x1 conv quantized per channel by onnxruntime:
        // weight [1024, 512, 1, 1], scale and zero point [1024], axis 0. Read
        // as numpy broadcasting the scale would land on the last axis,
        // [1024, 512, 1, 1024] = 2^29 elements, over the limit: the file was
        // refused
        let inits: [(&str, &[i64]); 3] =
            [("wq", &[1024, 512, 1, 1]), ("s", &[1024]), ("z", &[1024])];
        for op in ["DequantizeLinear", "QuantizeLinear"] {
            let g = shapes_only(op, &inits, vec![int_attr("axis", 0)]);
            assert_eq!(shape_of(&g), Some(vec![1024, 512, 1, 1]), "{op}");
            check_sizes(&g, &[0]).unwrap();
        }
        // per tensor, and without a zero point
        let g = shapes_only(
            "DequantizeLinear",
            &[("wq", &[8, 3, 3, 3]), ("s", &[])],
            vec![],
        );
        assert_eq!(shape_of(&g), Some(vec![8, 3, 3, 3]));
        // other elementwise operators still broadcast as numpy does
        let g = shapes_only("Mul", &inits[..2], vec![]);
        assert_eq!(shape_of(&g), Some(vec![1024, 512, 1, 1024]));
        let e = check_sizes(&g, &[0]).unwrap_err().to_string();
        assert!(
            e.contains("Mul node 'n'") && e.contains("[1024, 512, 1, 1024]"),
            "{e}"
        );
    }

    #[test]
    fn blocked_quantization_is_refused_naming_the_node() {
        let inits: [(&str, &[i64]); 2] = [("wq", &[8, 64]), ("s", &[8, 2])];
        let mut p = ModelProto {
            graph: Some(shapes_only(
                "DequantizeLinear",
                &inits,
                vec![int_attr("axis", 1), int_attr("block_size", 32)],
            )),
            ..Default::default()
        };
        let e = fold_constants(&mut p, None).unwrap_err();
        match crate::Error::find(&e) {
            Some(crate::Error::Unsupported {
                op_type,
                node,
                message,
            }) => {
                assert_eq!((op_type.as_str(), node.as_str()), ("DequantizeLinear", "n"));
                assert!(
                    message.contains("blocked quantization (block_size 32)"),
                    "{message}"
                );
            }
            other => panic!("{other:?}: {e:#}"),
        }
        // block_size 0 is the default: per axis, folded
        let g = shapes_only("DequantizeLinear", &inits, vec![int_attr("block_size", 0)]);
        refuse_blocked(&g).unwrap();
    }

    #[test]
    fn a_plain_model_is_left_alone() {
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 3, 4, 4]);
        b.initializer("w", &[2, 3, 1, 1], &[0.5; 6]);
        b.node("Conv", &["x", "w"], &["y"], vec![]);
        b.output("y", &[1, 2, 4, 4]);
        let mut p = b.to_model_proto();
        let before = p.encode_to_vec();
        assert_eq!(fold_constants(&mut p, None).unwrap(), Folded::default());
        assert_eq!(p.encode_to_vec(), before);
    }

    #[test]
    fn the_folded_model_computes_the_naive_logits() {
        let bytes = model().encode_to_vec();
        let m = crate::model::Model::options()
            .from_bytes(&bytes, std::path::Path::new("fold.onnx"), None)
            .unwrap();
        assert_eq!(m.engine(), "native");
        let x = ndarray::ArrayD::from_shape_fn(vec![1, 3, 4, 4], |i| {
            ((i[1] * 16 + i[2] * 4 + i[3]) as f32 * 0.37).sin()
        });
        let fwd = m.forward(x.clone()).unwrap();
        // naive f64: mean over pixels commutes with the 1x1 conv
        let w = weight_f64();
        let mean: Vec<f64> = (0..3)
            .map(|c| {
                let s: f64 = x.iter().skip(c * 16).take(16).map(|&v| v as f64).sum();
                s / 16.0
            })
            .collect();
        let g: Vec<f64> = (0..2)
            .map(|o| BIAS[o] as f64 + (0..3).map(|c| w[o * 3 + c] * mean[c]).sum::<f64>())
            .collect();
        let w2 = gemm_f64();
        for k in 0..3 {
            let want = g[0] * w2[k] + g[1] * w2[3 + k];
            let got = fwd.logits[k] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "logit {k}: {got} vs {want}"
            );
        }
    }
}
