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
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::engine::profile::{self, Phase};
use crate::graph::{Graph, Node};
use crate::ops::activation::Act;
use crate::ops::conv::Conv;
use crate::ops::structural::Reshape;

/// What the graph-native forward pass needs beyond the graph.
#[derive(Clone, Debug)]
pub struct NativePlan {
    /// Tensors kept for the backward pass.
    keep: HashSet<String>,
    /// Inputs stacked on axis 0 (1: the model's own input): reshapes then
    /// apply their rule to one sample and put the batch in front.
    batch: usize,
}

/// The result of [`NativePlan::run`].
pub struct NativeOutput {
    /// The logits tensor.
    pub logits: ArrayD<f32>,
    /// The kept activations by name.
    pub activations: HashMap<String, ArrayD<f32>>,
    /// Whether each kept activation has values above and below zero (found
    /// by the finiteness check of every output).
    pub signs: HashMap<String, (bool, bool)>,
}

/// Why a node cannot run natively, or `None` if it can.
fn unsupported(node: &Node) -> Option<&'static str> {
    node.op.native()
}

impl NativePlan {
    /// A plan for `graph` (built from `model`), or why its forward pass must
    /// run in tract.
    pub fn new(graph: &Graph) -> Result<NativePlan> {
        for node in &graph.nodes {
            if let Some(why) = unsupported(node) {
                bail!("{} node '{}' is {why}", node.op_type, node.name);
            }
        }
        let keep = graph.needed_activations().into_iter().collect();
        Ok(NativePlan { keep, batch: 1 })
    }

    /// Bytes of all tensors one forward pass on an input of `input_shape`
    /// computes (a shape-only pass: nothing is allocated), saturating.
    pub fn forward_bytes(&self, graph: &Graph, input_shape: &[usize]) -> Result<u64> {
        let shapes = self.shapes(graph, input_shape)?;
        Ok(shapes
            .values()
            .fold(0u64, |t, s| t.saturating_add(bytes(s))))
    }

    /// Bytes of the tensors one forward pass on an input of `input_shape`
    /// keeps for the backward pass (the input and logits included).
    pub fn kept_bytes(&self, graph: &Graph, input_shape: &[usize]) -> Result<u64> {
        let shapes = self.shapes(graph, input_shape)?;
        Ok(shapes
            .iter()
            .filter(|(n, _)| self.keep.contains(**n) || **n == graph.input || **n == graph.logits)
            .fold(0u64, |t, (_, s)| t.saturating_add(bytes(s))))
    }

    /// Why inputs stacked on axis 0 cannot run through `graph` in one pass
    /// (forward and backward) as if each ran alone, or `None` if they can:
    /// every tensor must hold the samples on axis 0 (1 of them for an input
    /// of `input_shape`) and every operator keep them apart.
    pub fn batch_blocker(&self, graph: &Graph, input_shape: &[usize]) -> Option<String> {
        if input_shape.len() < 2 || input_shape[0] != 1 {
            return Some(format!(
                "the model input {input_shape:?} has no batch axis of 1"
            ));
        }
        let shapes = match self.shapes(graph, input_shape) {
            Ok(s) => s,
            Err(e) => return Some(format!("{e:#}")),
        };
        let batched = |n: &str| shapes.get(n).is_some_and(|s| s.len() >= 2 && s[0] == 1);
        for node in &graph.nodes {
            let first = node.inputs.first().and_then(|i| shapes.get(i.as_str()));
            let rank = first.map_or(0, Vec::len);
            let why = if !node.inputs.iter().chain([&node.output]).all(|n| batched(n)) {
                Some("has a tensor without the batch axis 0 of 1")
            } else {
                (!node.op.keeps_samples_apart(rank)).then_some("may mix the samples")
            };
            if let Some(why) = why {
                return Some(format!("{} node '{}' {why}", node.op_type, node.name));
            }
        }
        None
    }

    /// The shape of every tensor of one forward pass on an input of
    /// `input_shape` (a shape-only pass: nothing is allocated).
    fn shapes<'g>(
        &self,
        graph: &'g Graph,
        input_shape: &[usize],
    ) -> Result<HashMap<&'g str, Vec<usize>>> {
        let mut shapes: HashMap<&str, Vec<usize>> = HashMap::new();
        shapes.insert(graph.input.as_str(), input_shape.to_vec());
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
            ensure!(
                !ins.is_empty(),
                "{} node '{}' has no input",
                node.op_type,
                node.name
            );
            let out = self
                .node_shape(node, &ins)
                .with_context(|| format!("{} node '{}'", node.op_type, node.name))?;
            shapes.insert(node.output.as_str(), out);
        }
        Ok(shapes)
    }

    /// [`NativePlan::run`] keeping the activations `keep` (all those the
    /// backward pass reads if `None`), on inputs stacked on axis 0 if
    /// `batch` (for a graph without [`NativePlan::batch_blocker`]).
    pub fn run_keeping(
        &self,
        graph: &Graph,
        input: &ArrayD<f32>,
        keep: Option<&[String]>,
        batch: bool,
    ) -> Result<NativeOutput> {
        let plan = NativePlan {
            keep: keep.map_or_else(|| self.keep.clone(), |k| k.iter().cloned().collect()),
            batch: if batch {
                input.shape().first().copied().unwrap_or(1)
            } else {
                1
            },
        };
        plan.run(graph, input)
    }

    fn node_shape(&self, node: &Node, ins: &[Vec<usize>]) -> Result<Vec<usize>> {
        let shapes: Vec<&[usize]> = ins.iter().map(Vec::as_slice).collect();
        node.op.output_shape(&shapes)
    }

    /// Runs one node forward natively on its input activations (in the
    /// order of `node.inputs`), outside any plan: a shape-only node takes
    /// `out_shape`, its output shape in the forward pass. An error for a node
    /// without a native forward pass. Used by the self-check.
    /// The logits of a batch of inputs stacked on axis 0 (`[N, ...]`), in one
    /// pass that keeps no activation; rows in order. Errors where an
    /// operator cannot take a batch (the caller then runs them one by one).
    pub fn logits_batch(graph: &Graph, input: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let plan = NativePlan {
            keep: HashSet::new(),
            batch: input.shape().first().copied().unwrap_or(1),
        };
        Ok(plan.run(graph, input)?.logits)
    }

    pub fn run_node(
        node: &Node,
        inputs: &[&ArrayD<f32>],
        out_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        if let Some(why) = unsupported(node) {
            bail!("{why}");
        }
        let plan = NativePlan {
            keep: HashSet::new(),
            batch: 1,
        };
        if node.op.downcast::<Reshape>().is_some() {
            // the shape the forward pass produced, whatever the rule
            let x = *inputs.first().ok_or_else(|| anyhow!("no input"))?;
            return Ok(x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(out_shape))?);
        }
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
        let mut signs: HashMap<String, (bool, bool)> = HashMap::new();
        // the activation run inside the convolution before it
        let mut fused_next = None;
        for (i, node) in graph.nodes.iter().enumerate() {
            if fused_next.take() == Some(i) {
                continue;
            }
            // a pointwise or depthwise convolution and the ReLU / ReLU6 that
            // alone reads it: one pass, the clamp in the convolution's output
            // loop (the convolution's own output is never stored)
            if let (Some(conv), Some((act, lo, hi)), [name]) = (
                node.op.downcast::<Conv>(),
                self.clamp_after(graph, i, &readers),
                node.inputs.as_slice(),
            ) {
                let x = if *name == graph.input {
                    Some(input)
                } else {
                    values.get(name.as_str()).or_else(|| activations.get(name))
                };
                let fused = x.and_then(|x| {
                    profile::timed(Phase::Forward, &node.op_type, &node.name, || {
                        conv.forward_clamped(x, lo, hi)
                    })
                });
                if let Some(fused) = fused {
                    let (out, finite) = fused.with_context(|| {
                        format!("forward through {} node '{}'", node.op_type, node.name)
                    })?;
                    ensure!(
                        finite,
                        "{} node '{}' produced NaN or Inf",
                        node.op_type,
                        node.name
                    );
                    let (_, pos, neg) = scan(&out);
                    if let Some(c) = readers.get_mut(name.as_str()) {
                        *c -= 1;
                        if *c == 0 {
                            values.remove(name.as_str());
                        }
                    }
                    readers.insert(node.output.as_str(), 0);
                    if self.keep.contains(&act.output) {
                        signs.insert(act.output.clone(), (pos, neg));
                        activations.insert(act.output.clone(), out);
                    } else {
                        values.insert(act.output.as_str(), out);
                    }
                    fused_next = Some(i + 1);
                    continue;
                }
            }
            // an activation whose input nothing else reads or keeps: in place
            if let (Some(act), [name]) = (node.op.downcast::<Act>(), node.inputs.as_slice()) {
                let dead = *name != graph.input
                    && *name != graph.logits
                    && readers.get(name.as_str()) == Some(&1)
                    && !self.keep.contains(name);
                if let Some(mut x) = dead.then(|| values.remove(name.as_str())).flatten() {
                    let done = profile::timed(Phase::Forward, &node.op_type, &node.name, || {
                        act.apply_in_place(&mut x)
                    });
                    if !done {
                        values.insert(name.as_str(), x);
                    } else {
                        let (finite, pos, neg) = scan(&x);
                        ensure!(
                            node.output == graph.logits || finite,
                            "{} node '{}' produced NaN or Inf",
                            node.op_type,
                            node.name
                        );
                        readers.insert(name.as_str(), 0);
                        if self.keep.contains(&node.output) {
                            signs.insert(node.output.clone(), (pos, neg));
                            activations.insert(node.output.clone(), x);
                        } else {
                            values.insert(node.output.as_str(), x);
                        }
                        continue;
                    }
                }
            }
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
            let out = profile::timed(Phase::Forward, &node.op_type, &node.name, || {
                self.node(node, &inputs)
            })
            .with_context(|| format!("forward through {} node '{}'", node.op_type, node.name))?;
            let (finite, pos, neg) = scan(&out);
            ensure!(
                node.output == graph.logits || finite,
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
                signs.insert(node.output.clone(), (pos, neg));
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
            signs,
        })
    }

    /// The node after node `i` and its bounds, where it is a ReLU or Clip
    /// that alone reads node `i`'s output, an output neither kept nor the
    /// logits: the two can run as one pass.
    fn clamp_after<'g>(
        &self,
        graph: &'g Graph,
        i: usize,
        readers: &HashMap<&str, usize>,
    ) -> Option<(&'g Node, f32, f32)> {
        let (node, next) = (graph.nodes.get(i)?, graph.nodes.get(i + 1)?);
        let (lo, hi) = next.op.downcast::<Act>()?.clamp()?;
        let alone = next.inputs == [node.output.as_str()]
            && readers.get(node.output.as_str()) == Some(&1)
            && !self.keep.contains(&node.output)
            && node.output != graph.logits
            && node.output != graph.input;
        alone.then_some((next, lo, hi))
    }

    fn node(&self, node: &Node, inputs: &[&ArrayD<f32>]) -> Result<ArrayD<f32>> {
        ensure!(!inputs.is_empty(), "no input");
        node.op.forward(inputs, self.batch)
    }
}

/// Bytes of an f32 tensor of shape `s`, saturating.
fn bytes(s: &[usize]) -> u64 {
    s.iter()
        .try_fold(4u64, |a, &d| a.checked_mul(d as u64))
        .unwrap_or(u64::MAX)
}

/// Whether no element is NaN or infinite, whether one is above zero and
/// whether one is below (large tensors on all threads).
fn scan(x: &ArrayD<f32>) -> (bool, bool, bool) {
    let all = |a: (bool, bool, bool), b: (bool, bool, bool)| (a.0 && b.0, a.1 || b.1, a.2 || b.2);
    match x.as_slice_memory_order() {
        Some(s) if s.len() >= 1 << 16 => s
            .par_chunks(1 << 15)
            .map(scan_slice)
            .reduce(|| (true, false, false), all),
        Some(s) => scan_slice(s),
        None => x.iter().fold((true, false, false), |a, &v| {
            all(a, (v.is_finite(), v > 0.0, v < 0.0))
        }),
    }
}

/// [`scan`] of a slice in float lanes, which vectorise (no early exit):
/// `v * 0` turns a lane's sum into NaN at the first NaN or infinite value,
/// and the lanes' minimum and maximum tell the signs (`-0.0` is not below
/// zero; a NaN, already caught, may be skipped). Compiled for AVX2 too,
/// chosen at run time.
fn scan_slice(s: &[f32]) -> (bool, bool, bool) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { scan_slice_avx2(s) };
    }
    scan_lanes(s)
}

/// [`scan_lanes`] with AVX2: four vectors of eight lanes at a time, so
/// that the minimum, maximum and NaN test of one vector do not wait for the
/// previous one's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_slice_avx2(s: &[f32]) -> (bool, bool, bool) {
    use std::arch::x86_64::*;
    let n = s.len() / 32 * 32;
    let zero = _mm256_setzero_ps();
    let (mut bad, mut lo, mut hi) = ([zero; 4], [zero; 4], [zero; 4]);
    let mut i = 0;
    while i < n {
        for k in 0..4 {
            let v = _mm256_loadu_ps(s.as_ptr().add(i + 8 * k));
            // v * 0 is NaN exactly where v is NaN or infinite
            let t = _mm256_mul_ps(v, zero);
            bad[k] = _mm256_or_ps(bad[k], _mm256_cmp_ps::<_CMP_UNORD_Q>(t, t));
            lo[k] = _mm256_min_ps(lo[k], v);
            hi[k] = _mm256_max_ps(hi[k], v);
        }
        i += 32;
    }
    let mut lanes = [[0f32; 8]; 3];
    for k in 1..4 {
        bad[0] = _mm256_or_ps(bad[0], bad[k]);
        lo[0] = _mm256_min_ps(lo[0], lo[k]);
        hi[0] = _mm256_max_ps(hi[0], hi[k]);
    }
    _mm256_storeu_ps(lanes[0].as_mut_ptr(), bad[0]);
    _mm256_storeu_ps(lanes[1].as_mut_ptr(), lo[0]);
    _mm256_storeu_ps(lanes[2].as_mut_ptr(), hi[0]);
    let (finite, pos, neg) = scan_lanes(&s[n..]);
    (
        finite && lanes[0].iter().all(|&b| b.to_bits() == 0),
        pos || lanes[2].iter().any(|&h| h > 0.0),
        neg || lanes[1].iter().any(|&l| l < 0.0),
    )
}

#[inline(always)]
fn scan_lanes(s: &[f32]) -> (bool, bool, bool) {
    let (mut bad, mut lo, mut hi) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut chunks = s.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            let v = c[l];
            bad[l] += v * 0.0;
            lo[l] = if v < lo[l] { v } else { lo[l] };
            hi[l] = if v > hi[l] { v } else { hi[l] };
        }
    }
    for &v in chunks.remainder() {
        bad[0] += v * 0.0;
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let finite = bad.iter().all(|&b| b == 0.0);
    let pos = hi.iter().any(|&h| h > 0.0);
    let neg = lo.iter().any(|&l| l < 0.0);
    (finite, pos, neg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Op;
    use crate::ops::conv::{Padding, Window};

    fn node(name: &str, op: Op, input: &str, output: &str) -> Node {
        Node {
            name: name.into(),
            op_type: if op.downcast::<Conv>().is_some() {
                "Conv"
            } else {
                "Clip"
            }
            .into(),
            op,
            inputs: vec![input.into()],
            output: output.into(),
            first: false,
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let k = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2654435761);
                ((k >> 8) % 2000) as f32 / 500.0 - 2.0
            })
            .collect()
    }

    fn conv(m: usize, cg: usize, k: usize, stride: usize, group: usize, seed: u32) -> Op {
        let p = k / 2;
        Op::new(Conv {
            weight: ArrayD::from_shape_vec(vec![m, cg, k, k], values(m * cg * k * k, seed))
                .unwrap(),
            bias: Some(ArrayD::from_shape_vec(vec![m], values(m, seed + 1)).unwrap()),
            window: Window {
                kernel: [k, k],
                strides: [stride, stride],
                dilations: [1, 1],
                padding: Padding::Explicit([p, p, p, p]),
            },
            group,
        })
    }

    /// x [1, 8, 9, 10] -> pointwise conv -> ReLU6 -> depthwise 3x3 stride 2
    /// -> ReLU -> pointwise conv (the logits): both convolutions before an
    /// activation can fuse it.
    fn block(pw: Op) -> Graph {
        Graph {
            input: "x".into(),
            input_dims: vec![],
            logits: "y".into(),
            skipped_softmax: false,
            nodes: vec![
                node("expand", pw, "x", "e"),
                node(
                    "relu6",
                    Op::new(Act::Clip { min: 0.0, max: 6.0 }),
                    "e",
                    "e6",
                ),
                node("dw", conv(16, 1, 3, 2, 16, 3), "e6", "d"),
                node("relu", Op::new(Act::Relu), "d", "dr"),
                node("project", conv(4, 16, 1, 1, 1, 5), "dr", "y"),
            ],
        }
    }

    #[test]
    fn a_convolution_and_its_activation_fused_give_the_values_of_the_two_apart() {
        let graph = block(conv(16, 8, 1, 1, 1, 1));
        let x = ArrayD::from_shape_vec(vec![1, 8, 9, 10], values(720, 7)).unwrap();
        let plan = NativePlan::new(&graph).unwrap();
        // nothing kept: both pairs fuse; the convolutions' outputs kept: none
        let fused = plan.run_keeping(&graph, &x, Some(&[]), false).unwrap();
        let keep = ["e".to_string(), "d".to_string(), "e6".into(), "dr".into()];
        let apart = plan.run_keeping(&graph, &x, Some(&keep), false).unwrap();
        assert_eq!(fused.logits, apart.logits);
        // and by hand: each layer's forward pass, then the activation
        use crate::rules::LinearLayer;
        let layer = |i: usize| graph.nodes[i].op.downcast::<Conv>().unwrap().clone();
        let e = LinearLayer::forward(&layer(0), &x, &layer(0).weight, true).unwrap();
        assert_eq!(apart.activations["e"], e);
        let e6 = e.mapv(|v| v.clamp(0.0, 6.0));
        assert_eq!(apart.activations["e6"], e6);
        let d = LinearLayer::forward(&layer(2), &e6, &layer(2).weight, true).unwrap();
        assert_eq!(apart.activations["dr"], d.mapv(|v| v.max(0.0)));
        // kept activations after a fused pair, with their signs
        let kept = plan
            .run_keeping(&graph, &x, Some(&["e6".to_string(), "dr".into()]), false)
            .unwrap();
        assert_eq!(kept.activations["e6"], e6);
        assert_eq!(kept.signs["e6"], (true, false));
        assert_eq!(kept.logits, apart.logits);
    }

    #[test]
    fn a_convolution_that_overflows_is_named_whether_fused_or_not() {
        // overflows the clamp after them would hide (ReLU6 makes Inf 6): the
        // pointwise convolution (node 0) from 1e30 * 1e30, the depthwise
        // one (node 2) from f32::MAX weights; each fused (nothing kept) and
        // apart (its output kept)
        for (at, name, big, input) in [(0, "expand", 1e30, 1e30f32), (2, "dw", f32::MAX, 1.0)] {
            let mut graph = block(conv(16, 8, 1, 1, 1, 1));
            if let Some(c) = graph.nodes[at].op.downcast_mut::<Conv>() {
                c.weight.fill(big);
            }
            let x = ArrayD::from_elem(vec![1, 8, 9, 10], input);
            let plan = NativePlan::new(&graph).unwrap();
            for keep in [vec![], vec![graph.nodes[at].output.clone()]] {
                let err = plan
                    .run_keeping(&graph, &x, Some(&keep), false)
                    .err()
                    .expect("an error");
                assert_eq!(
                    format!("{err:#}"),
                    format!("Conv node '{name}' produced NaN or Inf"),
                    "keeping {keep:?}"
                );
            }
        }
    }

    #[test]
    fn scan_finds_nan_inf_and_signs_anywhere() {
        let finite = |s: &[f32]| super::scan_slice(s).0;
        for len in [1usize, 15, 16, 17, 31, 32, 33, 64, 100, 1000] {
            let ok = vec![-3.3e38f32; len];
            assert!(finite(&ok), "{len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in [0, len / 2, len - 1] {
                    let mut v = ok.clone();
                    v[at] = bad;
                    assert!(!finite(&v), "{bad} at {at} of {len}");
                }
            }
            // one value of a sign among zeros of both signs
            for (v, want) in [(1e-45f32, (true, false)), (-1e-45, (false, true))] {
                for at in [0, len / 2, len - 1] {
                    let mut s: Vec<f32> = (0..len)
                        .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
                        .collect();
                    assert_eq!(super::scan_slice(&s), (true, false, false), "{len}");
                    s[at] = v;
                    let (f, p, n) = super::scan_slice(&s);
                    assert_eq!((f, p, n), (true, want.0, want.1), "{v} at {at} of {len}");
                }
            }
        }
        assert_eq!(super::scan_slice(&[]), (true, false, false));
        assert!(finite(&[f32::MAX, f32::MIN_POSITIVE, 0.0, -0.0, 1e-45]));
    }
}
