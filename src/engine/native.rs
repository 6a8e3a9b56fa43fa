//! The forward pass on the relevance graph itself.
//!
//! For the operators of plain CNNs (convolutions, dense and per-channel
//! layers, pools, activations, residual sums, arithmetic with constants,
//! reshapes and transposes of any rank, `Concat` and the copying operators
//! of [`crate::ops::movement`] with constant parameters, gates (a product of
//! two activations, squeeze-excitation and SiLU) and reductions) the forward pass
//! runs on the same layers and weights as the backward pass: one copy of the
//! weights in memory, no conversion between tensor types, and the same tiled
//! GEMM convolution. A model with any other operator runs its forward pass
//! in tract instead ([`NativePlan::new`] says why). Both are checked against
//! each other in the tests.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ndarray::{ArrayD, IxDyn, Zip};
use rayon::prelude::*;
use tract_onnx::pb::{self, ModelProto, NodeProto, TensorProto};

use crate::graph::{ArithKind, Graph, Node, Op};
use crate::rules::{LinearLayer, Modifier};

/// How a shape-only node computes its output shape from its input shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ReshapeRule {
    /// `Flatten(axis)`: `[prod(d[..axis]), prod(d[axis..])]`.
    Flatten(i64),
    /// `Squeeze(axes)` (all axes of size 1 when `None`).
    Squeeze(Option<Vec<i64>>),
    /// `Unsqueeze(axes)`.
    Unsqueeze(Vec<i64>),
    /// `Reshape(shape)` with ONNX's `0` (copy, unless `allowzero`) and `-1`.
    Reshape {
        /// The target shape.
        shape: Vec<i64>,
        /// `allowzero = 1`: a 0 is a zero-sized dimension.
        allowzero: bool,
    },
}

impl ReshapeRule {
    /// The output shape for an input of shape `d`.
    pub fn apply(&self, d: &[usize]) -> Result<Vec<usize>> {
        let axis = |a: i64, rank: usize| -> Result<usize> {
            let r = rank as i64;
            ensure!(a >= -r && a < r, "axis {a} out of range for rank {rank}");
            Ok(if a < 0 { (a + r) as usize } else { a as usize })
        };
        let size: usize = d.iter().product();
        let out = match self {
            ReshapeRule::Flatten(a) => {
                let a = if *a == d.len() as i64 {
                    d.len()
                } else {
                    axis(*a, d.len())?
                };
                vec![d[..a].iter().product(), d[a..].iter().product()]
            }
            ReshapeRule::Squeeze(None) => d.iter().copied().filter(|&v| v != 1).collect(),
            ReshapeRule::Squeeze(Some(axes)) => {
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, d.len()))
                    .collect::<Result<HashSet<_>>>()?;
                for &a in &axes {
                    ensure!(d[a] == 1, "Squeeze of axis {a} of size {}", d[a]);
                }
                (0..d.len())
                    .filter(|i| !axes.contains(i))
                    .map(|i| d[i])
                    .collect()
            }
            ReshapeRule::Unsqueeze(axes) => {
                let rank = d.len() + axes.len();
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, rank))
                    .collect::<Result<HashSet<_>>>()?;
                let mut src = d.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            src.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
            ReshapeRule::Reshape { shape, allowzero } => {
                let mut out = Vec::with_capacity(shape.len());
                let mut infer = None;
                for (i, &s) in shape.iter().enumerate() {
                    match s {
                        -1 => {
                            ensure!(infer.is_none(), "Reshape with two -1 dimensions");
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if !allowzero => out.push(
                            *d.get(i)
                                .ok_or_else(|| anyhow!("Reshape copies a missing axis {i}"))?,
                        ),
                        s if s >= 0 => out.push(s as usize),
                        s => bail!("Reshape to a dimension of {s}"),
                    }
                }
                if let Some(i) = infer {
                    let known: usize = out.iter().product();
                    ensure!(
                        known > 0 && size.is_multiple_of(known),
                        "Reshape of {d:?} to {shape:?}"
                    );
                    out[i] = size / known;
                }
                out
            }
        };
        ensure!(
            out.iter().product::<usize>() == size,
            "cannot reshape {d:?} to {out:?}"
        );
        Ok(out)
    }
}

/// What the graph-native forward pass needs beyond the graph.
#[derive(Clone, Debug)]
pub struct NativePlan {
    /// Output shape rules of the shape-only nodes, by output name.
    reshapes: HashMap<String, ReshapeRule>,
    /// Tensors kept for the backward pass.
    keep: HashSet<String>,
}

/// The result of [`NativePlan::run`].
pub struct NativeOutput {
    /// The logits tensor.
    pub logits: ArrayD<f32>,
    /// The kept activations by name.
    pub activations: HashMap<String, ArrayD<f32>>,
}

fn int_tensor(t: &TensorProto) -> Option<Vec<i64>> {
    use pb::tensor_proto::DataType;
    let ty = t.data_type;
    if ty == DataType::Int64 as i32 {
        if !t.raw_data.is_empty() {
            return Some(
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            );
        }
        return Some(t.int64_data.clone());
    }
    if ty == DataType::Int32 as i32 {
        if !t.raw_data.is_empty() {
            return Some(
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                    .collect(),
            );
        }
        return Some(t.int32_data.iter().map(|&v| v as i64).collect());
    }
    None
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// Integer constants of a model: initializers and `Constant` nodes.
fn int_constants(model: &ModelProto) -> HashMap<&str, Vec<i64>> {
    let mut out = HashMap::new();
    let Some(g) = model.graph.as_ref() else {
        return out;
    };
    for t in &g.initializer {
        if let Some(v) = int_tensor(t) {
            out.insert(t.name.as_str(), v);
        }
    }
    for n in &g.node {
        if n.op_type == "Constant" {
            if let (Some(out_name), Some(t)) = (n.output.first(), attr(n, "value")) {
                if let Some(v) = t.t.as_ref().and_then(int_tensor) {
                    out.insert(out_name.as_str(), v);
                }
            }
        }
    }
    out
}

fn reshape_rule(n: &NodeProto, consts: &HashMap<&str, Vec<i64>>) -> Result<ReshapeRule> {
    let input = |i: usize| {
        n.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|s| consts.get(s.as_str()).cloned())
    };
    let ints = |name: &str| attr(n, name).map(|a| a.ints.clone());
    Ok(match n.op_type.as_str() {
        "Flatten" => ReshapeRule::Flatten(attr(n, "axis").map_or(1, |a| a.i)),
        "Squeeze" => ReshapeRule::Squeeze(ints("axes").or_else(|| input(1))),
        "Unsqueeze" => ReshapeRule::Unsqueeze(
            ints("axes")
                .or_else(|| input(1))
                .ok_or_else(|| anyhow!("Unsqueeze axes computed at run time"))?,
        ),
        "Reshape" => ReshapeRule::Reshape {
            shape: input(1).ok_or_else(|| anyhow!("Reshape to a shape computed at run time"))?,
            allowzero: attr(n, "allowzero").is_some_and(|a| a.i != 0),
        },
        o => bail!("shape-only operator {o}"),
    })
}

/// Why a node cannot run natively, or `None` if it can.
fn unsupported(node: &Node) -> Option<&'static str> {
    match &node.op {
        Op::Activation(crate::graph::Act::Opaque) => {
            Some("an elementwise operator without a formula")
        }
        Op::BatchNorm { .. } | Op::AddConst(_) => Some("a node left by canonization"),
        Op::Move(m) if !m.runtime_inputs().is_empty() => {
            Some("a copying operator with parameters computed at run time")
        }
        Op::Conv(_)
        | Op::Dense(_)
        | Op::Affine(_)
        | Op::MaxPool(_)
        | Op::AvgPool(_)
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool
        | Op::Sum
        | Op::Activation(_)
        | Op::Arith { .. }
        | Op::Reshape
        | Op::Transpose(_)
        | Op::Concat { .. }
        | Op::Move(_)
        | Op::Gate { .. }
        | Op::Reduce(_) => None,
        #[allow(unreachable_patterns)]
        _ => Some("an operator without a native forward pass"),
    }
}

impl NativePlan {
    /// A plan for `graph` (built from `model`), or why its forward pass must
    /// run in tract.
    pub fn new(model: &ModelProto, graph: &Graph) -> Result<NativePlan> {
        let consts = int_constants(model);
        let by_output: HashMap<&str, &NodeProto> = model
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .filter_map(|n| n.output.first().map(|o| (o.as_str(), n)))
            .collect();
        let mut reshapes = HashMap::new();
        for node in &graph.nodes {
            if let Some(why) = unsupported(node) {
                bail!("{} node '{}' is {why}", node.op_type, node.name);
            }
            let proto = || {
                by_output
                    .get(node.output.as_str())
                    .ok_or_else(|| anyhow!("node '{}' not found in the model", node.name))
            };
            if matches!(node.op, Op::Reshape) {
                let proto = proto()?;
                let rule = reshape_rule(proto, &consts)
                    .with_context(|| format!("{} node '{}'", node.op_type, node.name))?;
                reshapes.insert(node.output.clone(), rule);
            }
        }
        let keep = graph.needed_activations().into_iter().collect();
        Ok(NativePlan { reshapes, keep })
    }

    /// Bytes of all tensors one forward pass on an input of `input_shape`
    /// computes (a shape-only pass: nothing is allocated), saturating.
    pub fn forward_bytes(&self, graph: &Graph, input_shape: &[usize]) -> Result<u64> {
        let size = |s: &[usize]| {
            s.iter()
                .try_fold(4u64, |a, &d| a.checked_mul(d as u64))
                .unwrap_or(u64::MAX)
        };
        let mut shapes: HashMap<&str, Vec<usize>> = HashMap::new();
        shapes.insert(graph.input.as_str(), input_shape.to_vec());
        let mut total = size(input_shape);
        for node in &graph.nodes {
            let ins = node
                .inputs
                .iter()
                .map(|n| {
                    shapes
                        .get(n.as_str())
                        .cloned()
                        .ok_or_else(|| anyhow!("tensor '{n}' is not computed"))
                })
                .collect::<Result<Vec<_>>>()?;
            let x = ins.first().ok_or_else(|| anyhow!("no input"))?;
            let out = self
                .node_shape(node, x, &ins)
                .with_context(|| format!("{} node '{}'", node.op_type, node.name))?;
            total = total.saturating_add(size(&out));
            shapes.insert(node.output.as_str(), out);
        }
        Ok(total)
    }

    fn node_shape(&self, node: &Node, x: &[usize], ins: &[Vec<usize>]) -> Result<Vec<usize>> {
        let broadcast = crate::ops::movement::broadcast;
        Ok(match &node.op {
            Op::Conv(c) => c.output_shape(x)?,
            Op::Dense(d) => {
                let mut s = x.to_vec();
                let last = s
                    .last_mut()
                    .ok_or_else(|| anyhow!("dense input of rank 0"))?;
                *last = *d.weight.shape().first().unwrap_or(&0);
                s
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                ensure!(x.len() == 4, "pooling needs [N, C, H, W], got {x:?}");
                let [oh, ow] = p.output_size(x[2], x[3])?;
                vec![x[0], x[1], oh, ow]
            }
            Op::GlobalAvgPool | Op::GlobalMaxPool => {
                let mut s = x.to_vec();
                s.iter_mut().skip(2).for_each(|d| *d = 1);
                s
            }
            Op::Sum => ins[1..]
                .iter()
                .try_fold(x.to_vec(), |acc, s| broadcast(&acc, s))?,
            Op::Arith { constant, .. } => broadcast(x, constant.shape())?,
            Op::Move(m) => m.output_shape(x)?,
            Op::Gate { .. } => {
                let other = ins
                    .get(1)
                    .ok_or_else(|| anyhow!("a gate needs two inputs"))?;
                broadcast(x, other)?
            }
            Op::Reduce(spec) => crate::ops::reduce::output_shape(spec, x)?,
            Op::Concat { axis } => {
                crate::ops::movement::Movement::Concat { axis: *axis }.output_shape_of(ins)?
            }
            Op::Reshape => self
                .reshapes
                .get(&node.output)
                .ok_or_else(|| anyhow!("no output shape"))?
                .apply(x)?,
            Op::Transpose(perm) => {
                if perm.is_empty() {
                    x.iter().rev().copied().collect()
                } else {
                    ensure!(perm.len() == x.len(), "permutation {perm:?} for {x:?}");
                    perm.iter()
                        .map(|&p| x.get(p).copied().unwrap_or(1))
                        .collect()
                }
            }
            _ => x.to_vec(),
        })
    }

    /// Runs one node forward natively on its input activations (in the
    /// order of `node.inputs`), outside any plan: a shape-only node takes
    /// `out_shape`, its output shape in the forward pass. An error for a node
    /// without a native forward pass. Used by the self-check.
    pub fn run_node(
        node: &Node,
        inputs: &[&ArrayD<f32>],
        out_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        if let Some(why) = unsupported(node) {
            bail!("{why}");
        }
        let shape = out_shape.iter().map(|&d| d as i64).collect();
        let rule = ReshapeRule::Reshape {
            shape,
            allowzero: true,
        };
        let plan = NativePlan {
            reshapes: HashMap::from([(node.output.clone(), rule)]),
            keep: HashSet::new(),
        };
        plan.node(node, inputs)
    }

    /// Runs the forward pass of `graph` on `input`.
    pub fn run(&self, graph: &Graph, input: &ArrayD<f32>) -> Result<NativeOutput> {
        // how many nodes still have to read each tensor
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for n in &graph.nodes {
            for i in &n.inputs {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        let mut values: HashMap<&str, ArrayD<f32>> = HashMap::new();
        let mut activations: HashMap<String, ArrayD<f32>> = HashMap::new();
        for node in &graph.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|name| {
                    if *name == graph.input {
                        Ok(input)
                    } else {
                        values
                            .get(name.as_str())
                            .or_else(|| activations.get(name))
                            .ok_or_else(|| anyhow!("tensor '{name}' is not computed"))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self.node(node, &inputs).with_context(|| {
                format!("forward through {} node '{}'", node.op_type, node.name)
            })?;
            ensure!(
                node.output == graph.logits || all_finite(&out),
                "{} node '{}' produced NaN or Inf",
                node.op_type,
                node.name
            );
            for name in &node.inputs {
                if let Some(c) = readers.get_mut(name.as_str()) {
                    *c -= 1;
                    if *c == 0 {
                        values.remove(name.as_str());
                    }
                }
            }
            if self.keep.contains(&node.output) {
                activations.insert(node.output.clone(), out);
            } else {
                values.insert(node.output.as_str(), out);
            }
        }
        let logits = values
            .remove(graph.logits.as_str())
            .or_else(|| activations.get(&graph.logits).cloned())
            .ok_or_else(|| anyhow!("the logits '{}' were not computed", graph.logits))?;
        Ok(NativeOutput {
            logits,
            activations,
        })
    }

    fn node(&self, node: &Node, inputs: &[&ArrayD<f32>]) -> Result<ArrayD<f32>> {
        let x = *inputs.first().ok_or_else(|| anyhow!("no input"))?;
        Ok(match &node.op {
            Op::Conv(l) => l.forward(x, &l.weight, true)?,
            Op::Dense(l) => l.forward_mod(x, Modifier::Identity, true)?,
            Op::Affine(l) => l.forward(x, &l.weight, true)?,
            Op::MaxPool(p) => crate::ops::pool::forward(p, x, true)?,
            Op::AvgPool(p) => crate::ops::pool::forward(p, x, false)?,
            Op::GlobalAvgPool => global_pool(x, false)?,
            Op::GlobalMaxPool => global_pool(x, true)?,
            Op::Sum => {
                let mut acc = x.clone();
                for other in &inputs[1..] {
                    acc = broadcast_with(&acc, other, |a, b| a + b)?;
                }
                acc
            }
            Op::Activation(act) => act.apply(x)?,
            Op::Gate { .. } => {
                let other = inputs
                    .get(1)
                    .ok_or_else(|| anyhow!("a gate needs two inputs"))?;
                broadcast_with(x, other, |a, b| a * b)?
            }
            Op::Reduce(spec) => crate::ops::reduce::forward(spec, x)?,
            Op::Arith {
                kind,
                constant,
                constant_first,
            } => arith(*kind, x, constant, *constant_first)?,
            Op::Reshape => {
                let rule = self
                    .reshapes
                    .get(&node.output)
                    .ok_or_else(|| anyhow!("no output shape"))?;
                let shape = rule.apply(x.shape())?;
                x.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))?
            }
            Op::Transpose(perm) => {
                let perm: Vec<usize> = if perm.is_empty() {
                    (0..x.ndim()).rev().collect()
                } else {
                    perm.clone()
                };
                ensure!(
                    perm.len() == x.ndim(),
                    "permutation {perm:?} for {:?}",
                    x.shape()
                );
                x.view()
                    .permuted_axes(IxDyn(&perm))
                    .as_standard_layout()
                    .into_owned()
            }
            Op::Move(m) => m.forward(inputs)?,
            Op::Concat { axis } => {
                crate::ops::movement::Movement::Concat { axis: *axis }.forward(inputs)?
            }
            Op::BatchNorm { .. } | Op::AddConst(_) => bail!("node was not canonized"),
            #[allow(unreachable_patterns)]
            _ => bail!("no native forward pass"),
        })
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; an error where the shapes
/// do not broadcast.
fn broadcast_with(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32,
) -> Result<ArrayD<f32>> {
    let (sa, sb) = (a.shape(), b.shape());
    let rank = sa.len().max(sb.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    let shape = (0..rank)
        .map(|i| match (dim(sa, i), dim(sb, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(anyhow!("shapes {sa:?} and {sb:?} do not broadcast")),
        })
        .collect::<Result<Vec<_>>>()?;
    let (va, vb) = (
        a.broadcast(IxDyn(&shape))
            .ok_or_else(|| anyhow!("cannot broadcast {sa:?}"))?,
        b.broadcast(IxDyn(&shape))
            .ok_or_else(|| anyhow!("cannot broadcast {sb:?}"))?,
    );
    Ok(Zip::from(&va).and(&vb).map_collect(|&x, &y| f(x, y)))
}

fn arith(
    kind: ArithKind,
    x: &ArrayD<f32>,
    c: &ArrayD<f32>,
    constant_first: bool,
) -> Result<ArrayD<f32>> {
    let (a, b) = if constant_first { (c, x) } else { (x, c) };
    match kind {
        ArithKind::Add => broadcast_with(a, b, |x, y| x + y),
        ArithKind::Sub => broadcast_with(a, b, |x, y| x - y),
        ArithKind::Mul => broadcast_with(a, b, |x, y| x * y),
        ArithKind::Div => broadcast_with(a, b, |x, y| x / y),
    }
}

/// Whether no element is NaN or infinite (large tensors on all threads).
fn all_finite(x: &ArrayD<f32>) -> bool {
    match x.as_slice_memory_order() {
        Some(s) if s.len() >= 1 << 15 => s
            .par_chunks(1 << 14)
            .all(|c| c.iter().all(|v| v.is_finite())),
        _ => x.iter().all(|v| v.is_finite()),
    }
}

/// `GlobalMaxPool` / `GlobalAveragePool`: `[N, C, ...]` to `[N, C, 1, ...]`.
fn global_pool(x: &ArrayD<f32>, max: bool) -> Result<ArrayD<f32>> {
    ensure!(
        x.ndim() >= 3,
        "global pooling needs [N, C, ...], got {:?}",
        x.shape()
    );
    let mut shape = x.shape().to_vec();
    let planes = shape[0] * shape[1];
    let x = x.as_standard_layout();
    let xs = x.as_slice().unwrap_or(&[]);
    let size = xs.len() / planes.max(1);
    let out: Vec<f32> = (0..planes)
        .map(|c| {
            let p = &xs[c * size..(c + 1) * size];
            if max {
                p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                p.iter().sum::<f32>() / size.max(1) as f32
            }
        })
        .collect();
    shape[2..].iter_mut().for_each(|d| *d = 1);
    Ok(ArrayD::from_shape_vec(shape, out)?)
}
