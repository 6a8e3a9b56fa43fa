//! `lrp-heatmap check MODEL [IMAGE]`: the backward passes checked against the
//! forward pass, on the model and one input.
//!
//! Figures (one line each in the report):
//!
//! 1. **gradient vs finite differences.** The exact input gradient `g` (as
//!    `--rule gradient` computes it: [`crate::engine::walk::walk_back`] with each
//!    operator's gradient) against central differences of the forward pass
//!    along [`DIRECTIONS`] random directions `v` (N(0, 1) on
//!    [`DIRECTION_SUPPORT`] random input elements, zero elsewhere):
//!    `(f(x + h v) - f(x - h v)) / 2h` against `<g, v>`, accumulated in `f64`.
//!    Error model: the `f32` forward pass is exact to a few ulps of the logit,
//!    so a quotient carries up to `8 eps |f| / h` of rounding; a kink of a
//!    ReLU or a max pool crossed on `[x - h v, x + h v]` makes the quotient
//!    meaningless. So every piecewise operator's piece (each element's side of
//!    each kink, each max pool's winners) is recorded at `x` and `x +- h v`,
//!    and only the steps [`STEPS`] (times the RMS of the input) with no piece
//!    changed are used: there the logit is linear (up to smooth operators) and
//!    the quotient exact up to rounding. Each step `h` gives the quotients at
//!    `h` and `h / 2` and their Richardson extrapolation `(4 q(h/2) - q(h)) /
//!    3`, whose truncation is of order `h^4` (the curvature of smooth
//!    operators, SiLU and sigmoid gates, adds `h^2 f''' / 6` to `q(h)`
//!    itself). The tolerance of a step is derived from the model at this
//!    input: [`GRADIENT_TOL`] of the standard deviation of `<g, v>`, plus
//!    twice the extrapolation's rounding bound, plus `|q(h/2) - q(h)|` (an
//!    upper bound of the truncation left); a wrong gradient misses by O(1)
//!    of the standard deviation at every step, far above all three. Of the
//!    usable steps the one of least error / tolerance counts (tried from the
//!    largest, stopping below a quarter of the tolerance). A step whose
//!    rounding bound exceeds half of [`GRADIENT_TOL`] is never used (a wrong
//!    gradient could hide in it); a direction without a usable step is drawn
//!    again (at most 4x [`DIRECTIONS`] in all). The figure is the error
//!    divided by the standard deviation of `<g, v>` of the worst direction,
//!    **at most its tolerance**. Deep rectifier networks in `f32` (EfficientNet-Lite0
//!    at 224x224, a reduced VGG16) flip hundreds of ReLUs for any step large
//!    enough against the rounding: the figure is then "not applicable"
//!    (inconclusive) and the per-operator check (4) carries the proof, by the
//!    chain rule.
//! 2. **LRP-0 vs gradient x input**, only where every operator on the path is
//!    piecewise linear through the origin (ReLU, LeakyReLU, PReLU, max and
//!    average pools, linear layers with or without bias, BatchNorm, sums,
//!    concatenation, data movement, products by constants): then
//!    `R_j = z_j dF/dz_j` for every tensor by induction (Ancona et al. 2018)
//!    and the maps are equal, but for LRP-0's stabiliser (Zennit's `1e-6`
//!    added to every denominator): the reference is gradient x input with
//!    the gradient at the output `z` of each sum or average pool (which share
//!    in proportion over `stab(z)`; LRP-0's linear layers divide by `z`)
//!    multiplied by `z / stab(z)` (LRP-0 exactly; without it, a residual
//!    `Add` of two nearly cancelling branches of a ResNet50 at a photo gives
//!    cosine 0.998). Otherwise "not applicable" with the first
//!    operator that breaks it. Figure: their cosine, **at least
//!    [`LRP0_MIN_COSINE`]** (LRP-0 divides by the layer outputs, so near-zero
//!    outputs amplify `f32` rounding).
//! 3. **z-plus conservation per linear layer**: with the z-plus rule (biases
//!    excluded, so it holds for every linear layer) the relevance leaving a
//!    layer equals `sum_j R_j s_j / stab(s_j)`, `s_j` the sum of the positive
//!    contributions to output `j` (zero where an output has none). Figure:
//!    the largest `|sum R_in - that| / sum |R_out|` over the layers, **at most
//!    [`ZPLUS_TOL`]**.
//! 4. **per-operator check**, walking back from the output: every node is run
//!    forward alone (the native engine's `NativePlan::run_node`) on its input
//!    activations; its output must equal the forward pass's (the same shape,
//!    relative L2 at most [`FORWARD_TOL`]), and for random `u`, `v` its
//!    backward pass must satisfy `<u, J v> = <J^T u, v>` with `J v` from
//!    central differences of the node's forward pass (error divided by the
//!    standard deviation of `<J^T u, v>`, **at most [`NODE_TOL`] plus the
//!    node's own rounding and truncation at this input**, derived as for
//!    figure 1 with the Richardson extrapolation; the rounding of the
//!    elements added in quadrature). Directions are zero where a node is not differentiable or
//!    the largest step would cross a kink (elementwise activations), and move
//!    only the untied winners of a max pool (a smaller step where a winner
//!    changes). Where LRP-0 applies, each node must also map relevance
//!    `z * u` to `x * J^T u`, the stabiliser's factor `z / stab(z)` on `u`
//!    for sums and average pools (relative L2 at most
//!    [`NODE_LRP0_TOL`]). The
//!    first node that fails is printed as
//!    `first disagreeing operator: <OpType> node '<name>'`. A node without a
//!    native forward pass, or where every step crosses a kink, is listed as
//!    not checked.
//! 5. **max-pool near-ties**: the share of the gradient that passes max-pool
//!    windows whose two largest inputs differ by less than [`TIE_TOL`] of the
//!    pool input's largest value. Such a window's winner is decided by f32
//!    rounding: the backward pass follows the forward pass's winner, as it
//!    must, but another implementation (PyTorch; this one in f64) picks the
//!    other one and hands the gradient elsewhere. Above [`TIE_SHARE`] the
//!    report warns (verdict `warn`, not a failure). A torchvision GoogLeNet
//!    with its own initialisation (weights of 0.01) and randomised BatchNorm
//!    statistics has channels that are nearly constant, so nearly every pool
//!    window is a near-tie there: PyTorch's own f32 and f64 gradients have
//!    cosine 0.66, ours and PyTorch's f32 one 0.75 to 0.87. With
//!    [`CheckOptions::maxpool_ties`] `split` such windows share their
//!    gradient among their near-maxima, which no rounding decides: the figure
//!    passes, figure 1 checks the gradient of `first` ties (finite
//!    differences measure the derivative, which the split replaces in
//!    near-tied windows), and the per-operator check moves only the inputs of
//!    windows with one clear winner.
//!
//! Thresholds from measurement (`cargo test --lib selfcheck -- --nocapture`,
//! `tests/it/check.rs`, `tests/it/exporters.rs`): on correct small ReLU nets the
//! gradient errors are 1e-4 to 6e-4, on the 28 files of PyTorch's two
//! exporters (`tests/fixtures/exporters`: SiLU, HardSwish and sigmoid gates
//! among them) 5e-4 to 1.4e-2 where conclusive; LRP-0 has cosine 1.000000
//! (relative L2 1e-7 to 9e-5), z-plus errors are below 1.3e-7 and every
//! operator passes; on the bundled model 94 of 94 nodes pass. A ReLU that
//! passes every gradient gives a gradient error of 1.7 and a node error of
//! 0.43; a max pool spreading its gradient like an average pool 6.5 and 2.2;
//! a `ceil_mode` max pool run in floor mode is named by the shape of its
//! output.
//!
//! [`check_with`] takes the per-node gradient as a parameter, so the tests can
//! break one operator's backward pass on purpose and see the check name it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, ensure, Context, Result};
use ndarray::{ArrayD, IxDyn, Zip};
use serde::Serialize;

use crate::analyzers::gradient::{GradientMode, GradientOptions, MaxPoolTies};
use crate::composite::{Composite, RuleParams};
use crate::engine::native::NativePlan;
use crate::graph::Node;
use crate::model::{Forward, InputSpec, Model};
use crate::ops;
use crate::preprocess::{DecodeLimits, Layout, Normalization};
use crate::rng::Rng;
use crate::rules::{stabilize, Modifier, Rule, STABILIZER};

/// Random directions of the gradient check.
pub const DIRECTIONS: usize = 8;
/// Finite-difference steps, relative to the RMS of the perturbed tensor, tried in order.
pub const STEPS: [f64; 5] = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4];
/// Largest error of a directional derivative, relative to `|g|`.
pub const GRADIENT_TOL: f64 = 3e-2;
/// Smallest cosine between LRP-0 and gradient x input.
pub const LRP0_MIN_COSINE: f64 = 0.999;
/// Largest z-plus conservation error of a layer, relative to its sum of |R|.
pub const ZPLUS_TOL: f64 = 1e-3;
/// Largest error of a node's `<u, J v>`, relative to the std of `<J^T u, v>`.
pub const NODE_TOL: f64 = 1e-2;
/// Largest relative L2 difference of a node's native output from the forward
/// pass's. Not smaller: where the forward pass runs in tract, its f32 sigmoid
/// saturates at |x| = 14.5 (4.8e-7 instead of e^x below), so a SiLU layer
/// whose inputs reach -100 differs from the exact function by up to 5e-5 per
/// element (relative L2 1.1e-3 measured on a random-weight EfficientNet-B0 at
/// a random input); a node computing something else, or on other shapes,
/// differs by O(1).
pub const FORWARD_TOL: f64 = 1e-2;
/// The output RMS below which [`FORWARD_TOL`] is taken as absolute.
pub const FORWARD_FLOOR: f64 = 1e-4;
/// Smallest Jacobian scale a node's check measures against.
pub const JACOBIAN_FLOOR: f64 = 1e-6;
/// Largest relative L2 error of a node's LRP-0 relevance against `x * J^T u`.
pub const NODE_LRP0_TOL: f64 = 1e-3;

/// The gradient through one node: `(node, input activations, gradient at
/// its output)` to the gradient at each input.
pub type NodeGradient<'a> =
    dyn Fn(&Node, &[&ArrayD<f32>], &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> + 'a;

/// The library's exact gradient through one node ([`Node::gradient`](crate::graph::Node::gradient)).
pub fn exact_gradient(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    g: &ArrayD<f32>,
) -> Result<Vec<ArrayD<f32>>> {
    node.gradient(inputs, g, GradientMode::Plain)
}

/// The library's gradient through one node with max-pool ties handled by `ties`.
pub fn gradient_with_ties(ties: MaxPoolTies) -> Box<NodeGradient<'static>> {
    Box::new(move |node, inputs, g| {
        let how = GradientOptions {
            mode: GradientMode::Plain,
            ties,
        };
        node.gradient(inputs, g, how)
    })
}

/// Outcome of one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Within the threshold.
    Pass,
    /// Outside the threshold.
    Fail,
    /// The check does not apply to this model (see the note).
    NotApplicable,
    /// Outside the threshold, but not a disagreement of the backward pass
    /// with the forward pass (max-pool near-ties): reported, not failed.
    Warn,
}

/// One checked figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What was compared.
    pub what: String,
    /// The measured figure (`None` when not applicable).
    pub value: Option<f64>,
    /// `"<="` or `">="`: how `value` must compare with `threshold`.
    pub comparison: &'static str,
    /// The threshold.
    pub threshold: f64,
    /// Pass, fail or not applicable.
    pub verdict: Verdict,
    /// Details (the reason when not applicable).
    pub note: String,
}

impl Figure {
    fn measured(what: &str, value: f64, comparison: &'static str, threshold: f64) -> Figure {
        let ok = match comparison {
            ">=" => value >= threshold,
            _ => value <= threshold,
        };
        Figure {
            what: what.to_string(),
            value: Some(value),
            comparison,
            threshold,
            verdict: if ok && value.is_finite() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            note: String::new(),
        }
    }
}

/// The first node whose backward pass disagrees with its forward pass.
#[derive(Clone, Debug, Serialize)]
pub struct NodeFinding {
    /// ONNX operator type.
    pub op_type: String,
    /// Node name.
    pub name: String,
    /// What disagreed.
    pub detail: String,
}

/// The result of [`check`].
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The explained class.
    pub class: usize,
    /// Its logit.
    pub logit: f32,
    /// The figures, in the order of the module documentation.
    pub figures: Vec<Figure>,
    /// The first disagreeing node walking back from the output, if any.
    pub first_disagreeing: Option<NodeFinding>,
    /// Nodes checked one by one.
    pub nodes_checked: usize,
    /// Nodes not checked one by one, as `OpType 'name' (why)`: no native
    /// forward pass, or every finite-difference step crossed a kink.
    pub nodes_unchecked: Vec<String>,
}

impl Report {
    /// Whether no figure failed and no node disagreed.
    pub fn passed(&self) -> bool {
        self.first_disagreeing.is_none() && self.figures.iter().all(|f| f.verdict != Verdict::Fail)
    }

    /// The report as text, one line per figure.
    pub fn write_text(&self, out: &mut dyn Write) -> Result<()> {
        writeln!(out, "class {}, logit {:.4}", self.class, self.logit)?;
        for f in &self.figures {
            let (value, verdict) = match (f.value, f.verdict) {
                (Some(v), Verdict::Pass) => (number(v), "pass"),
                (Some(v), Verdict::Warn) => (number(v), "WARNING"),
                (Some(v), _) => (number(v), "FAIL"),
                (None, _) => ("-".to_string(), "not applicable"),
            };
            let mut line = format!(
                "  {:<42} {:>10}  {} {:<8} {verdict}",
                f.what,
                value,
                f.comparison,
                number(f.threshold)
            );
            if !f.note.is_empty() {
                line += &format!(" ({})", f.note);
            }
            writeln!(out, "{line}")?;
        }
        if !self.nodes_unchecked.is_empty() {
            writeln!(
                out,
                "  not checked one by one: {}",
                self.nodes_unchecked.join(", ")
            )?;
        }
        if let Some(n) = &self.first_disagreeing {
            writeln!(
                out,
                "first disagreeing operator: {} node '{}': {}",
                n.op_type, n.name, n.detail
            )?;
        }
        writeln!(
            out,
            "check: {}",
            if self.passed() { "passed" } else { "FAILED" }
        )?;
        Ok(())
    }
}

/// A figure for the report: integers as they are, 0.01 and above in fixed
/// notation, smaller ones in scientific notation.
fn number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e6 {
        format!("{v}")
    } else if v.abs() >= 0.01 {
        format!("{v:.6}")
    } else {
        format!("{v:.2e}")
    }
}

/// Options of [`check`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Class to check (`None`: the top-1 class).
    pub class: Option<usize>,
    /// Random directions of the gradient check.
    pub directions: usize,
    /// Seed of the directions.
    pub seed: u64,
    /// Input normalisation (bounds of the default input).
    pub norm: Normalization,
    /// Where max pools hand near-tied windows' gradient and relevance (the
    /// maps checked are those of this setting).
    pub maxpool_ties: MaxPoolTies,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            class: None,
            directions: DIRECTIONS,
            seed: 0,
            norm: Normalization::default(),
            maxpool_ties: MaxPoolTies::First,
        }
    }
}

/// A seeded random input in the model's input range: every element uniform
/// between the normalised images of pixel values 0 and 1 of its channel.
pub fn random_input(spec: &InputSpec, norm: &Normalization, seed: u64) -> ArrayD<f32> {
    let (lo, hi) = norm.bounds();
    let axis = match spec.layout {
        Layout::Nchw => 1,
        Layout::Nhwc => spec.shape.len().saturating_sub(1),
    };
    let mut rng = Rng::new(seed);
    let mut x = ArrayD::zeros(IxDyn(&spec.shape));
    for (ix, v) in x.indexed_iter_mut() {
        let c = if spec.channels == 3 {
            ix[axis].min(2)
        } else {
            0
        };
        *v = rng.uniform_range(lo[c], hi[c]);
    }
    x
}

fn normal(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal())
}

/// The dot product of two arrays of the same shape, summed in `f64`.
pub fn dot(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    Zip::from(a)
        .and(b)
        .fold(0.0f64, |s, &x, &y| s + x as f64 * y as f64)
}

/// The L2 norm, in `f64`.
pub fn norm2(a: &ArrayD<f32>) -> f64 {
    a.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

fn rms(a: &ArrayD<f32>) -> f64 {
    if a.is_empty() {
        0.0
    } else {
        norm2(a) / (a.len() as f64).sqrt()
    }
}

/// Relative L2 distance `|a - b| / |b|` (0 when both are zero), in `f64`.
pub fn rel_l2(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let d = Zip::from(a).and(b).fold(0.0f64, |s, &x, &y| {
        let d = x as f64 - y as f64;
        s + d * d
    });
    let n = norm2(b);
    if d == 0.0 {
        0.0
    } else {
        d.sqrt() / n.max(f64::MIN_POSITIVE)
    }
}

/// Cosine similarity of two arrays of the same shape, in `f64` (1 when
/// both are zero).
pub fn cosine(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let (na, nb) = (norm2(a), norm2(b));
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    dot(a, b) / (na * nb).max(f64::MIN_POSITIVE)
}

/// Why LRP-0 through `node` is not `x * gradient`, or `None` if it is.
pub fn lrp0_breaker(node: &Node) -> Option<String> {
    if is_fake_quantizer(node) {
        return Some(format!(
            "{} node '{}' rounds its input to a grid (fake quantization)",
            node.op_type, node.name
        ));
    }
    let why = match node.op.lrp0() {
        ops::Lrp0::Exact | ops::Lrp0::Modified(_) => return None,
        ops::Lrp0::Differs(why) => why,
    };
    Some(format!("{} node '{}' {why}", node.op_type, node.name))
}

/// The gradient LRP-0 follows through `node` ([`crate::ops::Op::lrp0_gradient_or`], with
/// `grad` for the operator's own gradient).
fn lrp0_gradient(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    g: &ArrayD<f32>,
    grad: &NodeGradient,
) -> Result<Vec<ArrayD<f32>>> {
    node.op
        .lrp0_gradient_or(inputs, g, |g| grad(node, inputs, g))
}

/// Whether LRP-0 through `node` follows a modified gradient.
fn lrp0_modified(node: &Node) -> bool {
    matches!(node.op.lrp0(), ops::Lrp0::Modified(_))
}

/// What the nodes on `path` whose LRP-0 follows a modified gradient are
/// (in words, once each), for the figure's note.
fn modified(graph: &crate::graph::Graph, path: &Shapes) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for n in graph.nodes.iter().filter(|n| path.contains_key(&n.output)) {
        if let ops::Lrp0::Modified(w) = n.op.lrp0() {
            if !v.contains(&w) {
                v.push(w);
            }
        }
    }
    v
}

/// What LRP-0's stabiliser makes of the gradient at the output `z` of
/// `node`: for the nodes that share relevance in proportion over a
/// stabilised denominator ([`ops::Flow::Proportional`]: sums, average pools)
/// relevance `R = z g` becomes `R / stab(z)`, i.e. `g z / stab(z)` (Zennit's
/// `1e-6`; the output times the number of inputs where the denominator is
/// that); `None` for the nodes that pass relevance on as it comes and for
/// linear layers, whose LRP-0 (the epsilon rule at 0) divides by `z` itself. Then LRP-0 is exactly x times the
/// gradient with these factors, by induction: where a residual `Add` of two
/// nearly cancelling branches has `|z|` near 1e-6, x * gradient alone
/// differs from LRP-0 by the stabiliser's share (cosine 0.998 measured on a
/// ResNet50 at a photo).
fn stabiliser_factor(node: &Node, z: &ArrayD<f32>) -> Option<ArrayD<f32>> {
    let n = match node.op.flow() {
        ops::Flow::Proportional { per_input: false } => 1.0,
        ops::Flow::Proportional { per_input: true } => node.inputs.len().max(1) as f32,
        ops::Flow::Linear | ops::Flow::Conserving | ops::Flow::Crops => return None,
    };
    Some(z.mapv(|z| n * z / stabilize(n * z, STABILIZER)))
}

/// Nodes the backward pass reaches from the logits, by output name, with
/// their output shapes (from the gradient that reaches them).
type Shapes = HashMap<String, Vec<usize>>;

/// The input gradient of the logit of `class` with `grad` through each node,
/// and the output shapes of the nodes it passes.
fn gradient_with(
    model: &Model,
    fwd: &Forward,
    class: usize,
    grad: &NodeGradient,
) -> Result<(ArrayD<f32>, Shapes)> {
    let mut shapes = Shapes::new();
    let g = crate::analyzers::gradient::input_gradient_with(
        &model.graph,
        fwd,
        class,
        |node, inputs, g| {
            shapes.insert(node.output.clone(), g.shape().to_vec());
            grad(node, inputs, g)
        },
    )?;
    Ok((g, shapes))
}

/// Which linear piece the model is on at the forward pass `fwd`: for every
/// kinked activation the side of each kink of each input element, for every
/// max pool and max reduction how often each input element wins. Equal
/// signatures at both ends of a segment: the logit is linear on it (up to
/// the smooth operators).
fn signature(model: &Model, fwd: &Forward, shapes: &Shapes) -> Result<Vec<u8>> {
    let graph = &model.graph;
    let mut sig = vec![];
    for node in &graph.nodes {
        let Some(out) = shapes.get(&node.output) else {
            continue;
        };
        let x = fwd.get(graph, &node.inputs[0])?;
        let k = node.op.kinks();
        if !k.is_empty() {
            sig.extend(
                x.iter()
                    .map(|&v| k.iter().filter(|&&k| v > k).count() as u8),
            );
        } else if node.op.takes_maxima() {
            let w = winners(node, &[x], out, MaxPoolTies::First)?;
            sig.extend(w.iter().map(|&w| w as u8));
        }
    }
    Ok(sig)
}

/// How many outputs each input element of a max node wins (winner takes all
/// of a relevance of ones, or with [`MaxPoolTies::Split`] near-tied windows
/// share it).
fn winners(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    out: &[usize],
    ties: MaxPoolTies,
) -> Result<ArrayD<f32>> {
    let ones = ArrayD::ones(IxDyn(out));
    let rule = Rule::Epsilon { epsilon: 0.0 };
    let reuse = ops::Reuse {
        ties,
        ..Default::default()
    };
    let mut r = node.relevance(inputs, &ones, rule, None, reuse)?;
    Ok(r.swap_remove(0))
}

/// Elements perturbed by one direction of the gradient check: few, so that
/// a small step crosses no kink of the network.
pub const DIRECTION_SUPPORT: usize = 64;

/// Figure 1: the gradient against finite differences of the model.
fn gradient_figure(
    model: &Model,
    fwd: &Forward,
    class: usize,
    g: &ArrayD<f32>,
    opts: &CheckOptions,
    shapes: &Shapes,
) -> Result<Figure> {
    let x = &fwd.input;
    let n = x.len();
    let sig0 = signature(model, fwd, shapes)?;
    let gs = g.as_standard_layout();
    let gs = gs.as_slice().unwrap_or(&[]);
    let gnorm = norm2(g);
    let scale = rms(x).max(1e-3);
    let m = DIRECTION_SUPPORT.min(n);
    let mut rng = Rng::new(opts.seed ^ 0x9e37_79b9);
    let (mut worst, mut conclusive, mut tried) = (None::<(f64, f64)>, 0, 0);
    while conclusive < opts.directions && tried < 4 * opts.directions {
        tried += 1;
        // m distinct random elements, N(0, 1) each
        let mut v = ArrayD::<f32>::zeros(x.raw_dim());
        let vs = v
            .as_slice_mut()
            .ok_or_else(|| anyhow!("non-contiguous direction"))?;
        let mut picked = 0;
        while picked < m {
            let i = (rng.next_u64() % n as u64) as usize;
            if vs[i] == 0.0 {
                vs[i] = rng.normal();
                picked += (vs[i] != 0.0) as usize;
            }
        }
        // the standard deviation of <g, v> over the values on these elements
        let sd_s = vs
            .iter()
            .zip(gs)
            .filter(|(v, _)| **v != 0.0)
            .map(|(_, &g)| (g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let sd = sd_s
            .max(gnorm * (m as f64 / n as f64).sqrt())
            .max(f64::MIN_POSITIVE);
        let d = dot(g, &v);
        // the smallest error over the usable steps: the curvature of a
        // smooth operator may spoil the largest steps, a wrong gradient
        // spoils every one
        // the central quotient at step h with the bound of its rounding;
        // `None` where a kink lies on the segment
        let quotient = |hf: f32| -> Result<Option<(f64, f64)>> {
            let fp = model
                .forward(x + &(&v * hf))
                .context("finite differences")?;
            let fm = model
                .forward(x - &(&v * hf))
                .context("finite differences")?;
            if signature(model, &fp, shapes)? != sig0 || signature(model, &fm, shapes)? != sig0 {
                return Ok(None);
            }
            let (lp, lm) = (fp.logits[class] as f64, fm.logits[class] as f64);
            let rounding = 8.0 * f32::EPSILON as f64 * lp.abs().max(lm.abs()) / hf as f64;
            Ok(Some(((lp - lm) / (2.0 * hf as f64), rounding)))
        };
        // the least error over the usable steps, each the Richardson
        // extrapolation of the quotients at h and h / 2 (truncation of order
        // h^4: the curvature of smooth operators, SiLU and sigmoid gates,
        // spoils q(h) itself), against a tolerance of GRADIENT_TOL plus the
        // extrapolation's own rounding and remaining truncation (see
        // `check_node`); a wrong gradient misses at every step
        let mut best: Option<(f64, f64)> = None;
        let mut previous = None;
        for rel in STEPS {
            let hf = (rel * scale) as f32;
            let (Some((q1, r1)), Some((q2, r2))) = (quotient(hf)?, quotient(hf / 2.0)?) else {
                continue; // a kink on the segment: a smaller step
            };
            let rounding = (4.0 * r2 + r1) / 3.0;
            if rounding / sd > GRADIENT_TOL / 2.0 {
                // rounding would hide a disagreement: smaller steps say nothing
                break;
            }
            let fd = (4.0 * q2 - q1) / 3.0;
            let err = (fd - d).abs() / sd;
            // the truncation left: at most the term removed, or, where the
            // quotients are not yet in their h^2 regime (a deep SiLU
            // network: an EfficientNet-B0 at a random input), the change of
            // the extrapolation from the previous step
            let moved = previous.map_or(0.0, |p: f64| (fd - p).abs());
            previous = Some(fd);
            let tol = GRADIENT_TOL + (2.0 * rounding + (q2 - q1).abs().max(moved)) / sd;
            if best.is_none_or(|(e, t)| err / tol < e / t) {
                best = Some((err, tol));
            }
            if err <= tol / 4.0 {
                break;
            }
        }
        if let Some((err, tol)) = best {
            if worst.is_none_or(|(e, t)| err / tol > e / t) {
                worst = Some((err, tol));
            }
            conclusive += 1;
        }
    }
    let (worst, tol) = worst.unwrap_or((0.0, GRADIENT_TOL));
    let mut f = Figure::measured("gradient vs finite differences", worst, "<=", tol);
    f.note = format!(
        "max error / std of <grad, v> (tolerance: {GRADIENT_TOL} and the quotients' f32 rounding and truncation at this input); {conclusive} directions of {DIRECTION_SUPPORT} elements free of kinks, {tried} tried"
    );
    if conclusive == 0 {
        // deep rectifier nets in f32: every step large enough against the
        // rounding flips some ReLU; the operators are then proven one by one
        f.value = None;
        f.verdict = Verdict::NotApplicable;
        f.note = format!(
            "inconclusive: each of {tried} directions crosses kinks of the network at every step \
             large enough against f32 rounding; the operators are checked one by one below"
        );
    }
    Ok(f)
}

/// Max-pool inputs closer than this, relative to the pool input's largest
/// value, are near-ties ([`ops::pool::max_pool_ties`]): about the relative
/// rounding of a convolution's outputs after a few layers in f32.
pub const TIE_TOL: f32 = ops::pool::NEAR_TIE;
/// Largest share of a max pool's gradient through near-tied windows before
/// the report warns.
pub const TIE_SHARE: f64 = 1e-2;

/// Share of a max pool's windows that may be near-ties before an
/// explanation warns ([`near_tie_warnings`]).
pub const TIE_WINDOWS: f64 = 1e-2;

/// Warnings for the max pools of `model` at the forward pass `fwd` more than
/// [`TIE_WINDOWS`] of whose windows are near-ties (two largest inputs within
/// [`TIE_TOL`] of the pool input's largest, winners decided by rounding):
/// every map routed through them (LRP's max pools are winner-takes-all, as
/// is the gradient) is then as much a product of float rounding as of the
/// model. One pass over each max pool's input, no backward pass; `check`
/// weighs the same windows by the gradient they pass.
pub fn near_tie_warnings(model: &Model, fwd: &Forward, ties: MaxPoolTies) -> Result<Vec<String>> {
    Ok(near_tie_warnings_rows(model, fwd, ties)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// [`near_tie_warnings`] of each input of a forward pass on a batch
/// ([`Model::forward_batch`]), in order.
pub fn near_tie_warnings_rows(
    model: &Model,
    fwd: &Forward,
    ties: MaxPoolTies,
) -> Result<Vec<Vec<String>>> {
    let graph = &model.graph;
    let rows = fwd.rows();
    if ties == MaxPoolTies::Split {
        // near-tied windows share: the map does not depend on the rounding
        return Ok(vec![vec![]; rows]);
    }
    // per input: max pools, tied ones, the worst
    let mut found = vec![(0, 0, None::<(String, f64)>); rows];
    for node in &graph.nodes {
        let Some(ops::pool::MaxPool(p)) = node.op.downcast() else {
            continue;
        };
        let x = fwd.get(graph, &node.inputs[0])?;
        if x.ndim() != 4 {
            continue;
        }
        let [oh, ow] = p.output_size(x.shape()[2], x.shape()[3])?;
        for (row, (pools, tied, worst)) in found.iter_mut().enumerate() {
            let one;
            let x = if rows == 1 {
                x
            } else {
                one = x
                    .slice_axis(ndarray::Axis(0), (row..row + 1).into())
                    .to_owned();
                &one
            };
            let ones = ArrayD::ones(IxDyn(&[x.shape()[0], x.shape()[1], oh, ow]));
            let t = ops::pool::max_pool_ties(p, x, &ones, TIE_TOL)?;
            *pools += 1;
            if t.share > TIE_WINDOWS {
                *tied += 1;
                if worst.as_ref().is_none_or(|(_, w)| t.share > *w) {
                    *worst = Some((node.name.clone(), t.share));
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(pools, tied, worst)| tie_warning(pools, tied, worst))
        .collect())
}

/// The near-tie warning of one input: `tied` of `pools` max pools, the worst.
fn tie_warning(pools: usize, tied: usize, worst: Option<(String, f64)>) -> Vec<String> {
    worst
        .map(|(name, share)| {
            format!(
                "{tied} of {pools} max pools have more than {:.0}% of their windows with the two \
                 largest inputs within {TIE_TOL:.0e} of the largest value (MaxPool '{name}': \
                 {:.1}%): where their relevance goes follows float rounding, and another \
                 implementation picks other winners; maxpool_ties split (`--maxpool-ties split`) \
                 shares such windows for a map independent of rounding, and `lrp-heatmap check` \
                 measures how much of the map it moves",
                100.0 * TIE_WINDOWS,
                100.0 * share
            )
        })
        .into_iter()
        .collect()
}

/// Figure 5: how much of the gradient passes max-pool windows whose winner
/// f32 rounding decides. Not a disagreement (the backward pass follows the
/// forward pass's winners exactly), but where it is large another
/// implementation (PyTorch, or this one in f64) picks other winners and gets
/// another map.
fn ties_figure(model: &Model, fwd: &Forward, class: usize, how: MaxPoolTies) -> Result<Figure> {
    let ties = crate::analyzers::gradient::max_pool_ties(&model.graph, fwd, class, TIE_TOL)?;
    let what = "max-pool gradient through near-ties";
    let Some((name, worst)) = ties.iter().max_by(|a, b| a.1.share.total_cmp(&b.1.share)) else {
        return Ok(Figure {
            what: what.into(),
            value: None,
            comparison: "<=",
            threshold: TIE_SHARE,
            verdict: Verdict::NotApplicable,
            note: "no max pool".into(),
        });
    };
    let mut f = Figure::measured(what, worst.share, "<=", TIE_SHARE);
    let near: usize = ties.iter().map(|(_, t)| t.near).sum();
    let windows: usize = ties.iter().map(|(_, t)| t.windows).sum();
    f.note = format!(
        "{near} of {windows} windows have their two largest inputs within {TIE_TOL:.0e} of the \
         layer's largest; worst MaxPool '{name}'"
    );
    if how == MaxPoolTies::Split {
        // the near-maxima share: no winner for rounding to pick
        f.verdict = Verdict::Pass;
        f.note += "; maxpool_ties split: they share their gradient equally, whatever the rounding";
    } else if f.verdict == Verdict::Fail {
        f.verdict = Verdict::Warn;
        f.note += ": there the map follows f32 rounding, and PyTorch (or any f32 / f64 run) \
                   picks other winners; maxpool_ties split gives a map independent of it";
    }
    Ok(f)
}

/// Figure 2: LRP-0 against gradient x input, where it applies.
fn lrp0_figure(
    model: &Model,
    fwd: &Forward,
    class: usize,
    g: &ArrayD<f32>,
    opts: &CheckOptions,
    path: &Shapes,
    grad: &NodeGradient,
) -> Result<Figure> {
    let what = "LRP-0 vs gradient x input";
    let breaker = model
        .graph
        .nodes
        .iter()
        .rev()
        .filter(|n| path.contains_key(&n.output))
        .find_map(lrp0_breaker);
    if let Some(why) = breaker {
        return Ok(Figure {
            what: what.into(),
            value: None,
            comparison: ">=",
            threshold: LRP0_MIN_COSINE,
            verdict: Verdict::NotApplicable,
            note: why,
        });
    }
    let lrp0 =
        Composite::from_name("lrp0", &RuleParams::default())?.with_max_pool_ties(opts.maxpool_ties);
    let e = crate::analyzers::lrp::explain(
        &model.graph,
        fwd,
        class,
        &lrp0,
        &opts.norm,
        model.input.channels,
    )?;
    // x times the gradient with the stabiliser's factors (LRP-0 exactly, in
    // exact arithmetic; see `stabiliser_factor`)
    let graph = &model.graph;
    let g_stab =
        crate::analyzers::gradient::input_gradient_with(graph, fwd, class, |node, inputs, g| {
            let z = if node.output == graph.logits {
                Some(&fwd.logits_tensor)
            } else {
                fwd.activations.get(&node.output)
            };
            match z.and_then(|z| stabiliser_factor(node, z)) {
                Some(f) if f.shape() == g.shape() => lrp0_gradient(node, inputs, &(g * &f), grad),
                _ => lrp0_gradient(node, inputs, g, grad),
            }
        })?;
    let want = &g_stab * &fwd.input;
    let gxi = g * &fwd.input;
    let mut f = Figure::measured(what, cosine(&e.relevance, &want), ">=", LRP0_MIN_COSINE);
    let rules = modified(graph, path);
    f.note = format!(
        "cosine, the stabiliser included{}; relative L2 {:.1e}; against plain gradient x input cosine {:.6}",
        if rules.is_empty() {
            String::new()
        } else {
            format!(", of the network with {}", rules.join(" and "))
        },
        rel_l2(&e.relevance, &want),
        cosine(&e.relevance, &gxi)
    );
    Ok(f)
}

/// Figure 3: z-plus conservation per linear layer.
fn zplus_figure(model: &Model, fwd: &Forward, class: usize) -> Result<Figure> {
    let graph = &model.graph;
    let mut worst = (0.0f64, String::new());
    let mut layers = 0;
    let logit = fwd.logits[class];
    crate::engine::walk::walk_back(graph, fwd, class, logit, |node, inputs, r| {
        let out = node.relevance(inputs, r, Rule::ZPlus, None, ops::Reuse::default())?;
        if let Some(layer) = node.op.linear() {
            let x = inputs[0];
            let s = layer.forward_mod(&x.mapv(|v| v.max(0.0)), Modifier::Pos, false)?
                + layer.forward_mod(&x.mapv(|v| v.min(0.0)), Modifier::Neg, false)?;
            let expected = Zip::from(r).and(&s).fold(0.0f64, |a, &r, &s| {
                a + r as f64 * s as f64 / stabilize(s, STABILIZER) as f64
            });
            let total: f64 = r.iter().map(|v| v.abs() as f64).sum();
            let got: f64 = out[0].iter().map(|&v| v as f64).sum();
            if total > 0.0 {
                layers += 1;
                let err = (got - expected).abs() / total;
                if err >= worst.0 {
                    worst = (err, format!("{} node '{}'", node.op_type, node.name));
                }
            }
        }
        Ok(out)
    })?;
    let mut f = Figure::measured(
        "z-plus conservation per linear layer",
        worst.0,
        "<=",
        ZPLUS_TOL,
    );
    f.note = if layers == 0 {
        "no linear layer receives relevance".into()
    } else {
        format!("{layers} layers, worst {}", worst.1)
    };
    Ok(f)
}

/// Where finite differences of `node` may perturb its input `k` (1) or not
/// (0) along `v`: not where it is not differentiable or a step of at most
/// `STEPS[0]` crosses a kink (elementwise activations); for max pools only
/// the winners that are not tied (the winner of a tie is a convention).
fn differentiable_mask(
    node: &Node,
    k: usize,
    x: &ArrayD<f32>,
    v: &ArrayD<f32>,
    out_shape: &[usize],
    ties: MaxPoolTies,
) -> Option<ArrayD<f32>> {
    // runtime parameters (pads, scales) are not perturbed
    if k >= node.op.data_inputs(node.inputs.len()) {
        return Some(ArrayD::zeros(x.shape()));
    }
    if node.op.elements() == ops::Elements::Activation {
        let points = node.op.kinks();
        if points.is_empty() {
            return None;
        }
        let reach = 1.5 * STEPS[0] as f32;
        return Some(Zip::from(x).and(v).map_collect(|&x, &v| {
            let near = points
                .iter()
                .any(|&p| (x - p).abs() <= reach * v.abs() || x == p);
            if near {
                0.0
            } else {
                1.0
            }
        }));
    }
    if !is_max(node) {
        return None;
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for v in x.iter() {
        *counts.entry(v.to_bits()).or_default() += 1;
    }
    // only the winners move (the others matter only where a step would
    // change a winner), and no tied value
    let wins = winners(node, &[x], out_shape, MaxPoolTies::First).ok()?;
    // with split ties, no input of a window whose near-maxima share (there
    // the gradient is a chosen subgradient, not the derivative): those are
    // the inputs whose share differs from the first maximum's
    let shares = match ties {
        MaxPoolTies::First => wins.clone(),
        MaxPoolTies::Split => winners(node, &[x], out_shape, ties).ok()?,
    };
    Some(
        Zip::from(x)
            .and(&wins)
            .and(&shares)
            .map_collect(|&v, &w, &s| {
                let tied = counts.get(&v.to_bits()).copied().unwrap_or(0) > 1;
                if tied || w == 0.0 || s != w {
                    0.0
                } else {
                    1.0
                }
            }),
    )
}

/// Whether `node` is a `QuantizeLinear` / `DequantizeLinear` of an activation
/// (an identity in the relevance graph).
fn is_fake_quantizer(node: &Node) -> bool {
    matches!(node.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear")
}

/// Whether `node` takes maxima (its derivative depends on the winners).
fn is_max(node: &Node) -> bool {
    node.op.takes_maxima()
}

/// Checks one node: forward against the model's, `<u, J v>` against
/// `<J^T u, v>`, LRP-0 against `x J^T u` where `lrp0` (see the module doc).
/// `Ok(None)` when it agrees; `Err` when it has no native forward pass.
#[allow(clippy::too_many_arguments)]
fn check_node(
    node: &Node,
    inputs: &[&ArrayD<f32>],
    out_shape: &[usize],
    model_out: Option<&ArrayD<f32>>,
    grad: &NodeGradient,
    lrp0: bool,
    ties: MaxPoolTies,
    rng: &mut Rng,
) -> Result<Option<String>> {
    let y0 = NativePlan::run_node(node, inputs, out_shape)?;
    if y0.shape() != out_shape {
        return Ok(Some(format!(
            "its forward output has shape {:?}, the model's forward pass {:?}",
            y0.shape(),
            out_shape
        )));
    }
    if let Some(m) = model_out {
        // relative to the output's RMS, but at least FORWARD_FLOOR: tract's
        // f32 sigmoid gives 4.8e-7 for inputs below -14.5, where e^x is 1e-20
        let floor = FORWARD_FLOOR * (m.len().max(1) as f64).sqrt();
        let d = Zip::from(&y0)
            .and(m)
            .fold(0.0f64, |s, &a, &b| s + (a as f64 - b as f64).powi(2));
        let e = d.sqrt() / norm2(m).max(floor);
        if e > FORWARD_TOL {
            return Ok(Some(format!(
                "its forward output differs from the model's forward pass (relative L2 {e:.2e})"
            )));
        }
    }
    let u = normal(rng, out_shape);
    let jt = match grad(node, inputs, &u) {
        Ok(j) => j,
        Err(e) => return Ok(Some(format!("its backward pass failed: {e:#}"))),
    };
    if jt.len() != inputs.len() || jt.iter().zip(inputs).any(|(j, x)| j.shape() != x.shape()) {
        return Ok(Some("its backward pass returned wrong shapes".into()));
    }
    // directions: N(0, 1) times the input's RMS, zero where not differentiable;
    // at least 1 for an elementwise activation, whose curvature has the scale
    // 1 whatever its input's (a sigmoid of inputs of 1e-5 moved by 1e-7 would
    // change its outputs of 0.5 by less than their f32 rounding)
    let mut dirs = vec![];
    let (mut an, mut var, mut scale) = (0.0f64, 0.0f64, 0.0f64);
    for (k, x) in inputs.iter().enumerate() {
        let s = if node.op.elements() == ops::Elements::Activation {
            rms(x).max(1.0) as f32
        } else {
            rms(x) as f32
        };
        let mut v = normal(rng, x.shape()) * s;
        let mut sd = ArrayD::from_elem(x.shape(), s);
        if let Some(mask) = differentiable_mask(node, k, x, &v, out_shape, ties) {
            v *= &mask;
            sd *= &mask;
        }
        an += dot(&jt[k], &v);
        var += Zip::from(&jt[k])
            .and(&sd)
            .fold(0.0, |a, &j, &s| a + (j as f64 * s as f64).powi(2));
        scale = scale.max(s as f64);
        dirs.push(v);
    }
    // at least the std for a Jacobian of JACOBIAN_FLOOR times the identity:
    // a node whose derivatives are all smaller (a sigmoid of inputs below
    // -30, with derivatives of 1e-13 down to f32's denormals) carries no
    // gradient worth checking, and its f32 quotients no precision
    let sd = var
        .sqrt()
        .max(JACOBIAN_FLOOR * norm2(&u) * scale)
        .max(f64::MIN_POSITIVE);
    // the central quotient of <u, y> at step h, with the bound of its f32
    // rounding; `None` where a max node's winner changes on the segment
    let quotient = |hf: f32| -> Result<Option<(f64, f64)>> {
        let moved = |sign: f32| -> Result<ArrayD<f32>> {
            let xs: Vec<ArrayD<f32>> = inputs
                .iter()
                .zip(&dirs)
                .map(|(x, v)| *x + &(v * (sign * hf)))
                .collect();
            let refs: Vec<&ArrayD<f32>> = xs.iter().collect();
            NativePlan::run_node(node, &refs, out_shape)
        };
        let (yp, ym) = (moved(1.0)?, moved(-1.0)?);
        if is_max(node) {
            // a winner changed on the segment: a smaller step
            // (with split ties: or the near-maxima that share a window)
            let moved_winners = |sign: f32, ties: MaxPoolTies| -> Result<ArrayD<f32>> {
                let xs = inputs[0] + &(&dirs[0] * (sign * hf));
                winners(node, &[&xs], out_shape, ties)
            };
            for t in [MaxPoolTies::First, ties] {
                let w0 = winners(node, &[inputs[0]], out_shape, t)?;
                if moved_winners(1.0, t)? != w0 || moved_winners(-1.0, t)? != w0 {
                    return Ok(None);
                }
            }
        }
        let fd = (dot(&u, &yp) - dot(&u, &ym)) / (2.0 * hf as f64);
        // rounding errors of the elements add up in quadrature; an element
        // of an elementwise activation whose input does not move (masked at
        // a kink) is exactly unchanged and adds nothing
        let term = |u: f32, p: f32, m: f32| (u as f64 * p.abs().max(m.abs()) as f64).powi(2);
        let activation = node.op.elements() == ops::Elements::Activation;
        let moved = dirs
            .first()
            .filter(|v| activation && v.shape() == u.shape());
        let mag = match moved {
            Some(v) => Zip::from(&u)
                .and(&yp)
                .and(&ym)
                .and(v)
                .fold(
                    0.0f64,
                    |a, &u, &p, &m, &v| {
                        if v == 0.0 {
                            a
                        } else {
                            a + term(u, p, m)
                        }
                    },
                ),
            None => Zip::from(&u)
                .and(&yp)
                .and(&ym)
                .fold(0.0f64, |a, &u, &p, &m| a + term(u, p, m)),
        };
        Ok(Some((
            fd,
            8.0 * f32::EPSILON as f64 * mag.sqrt() / hf as f64,
        )))
    };
    // Each step h gives two quotients, at h and h / 2, and their Richardson
    // extrapolation (4 q(h/2) - q(h)) / 3, whose truncation error is of
    // order h^4 (the curvature of a sigmoid or SiLU spoils q(h) itself at
    // h^2). The error of a correct operator is then bounded by the
    // operator's own figures at this input: the f32 rounding of the
    // extrapolation ((4 r(h/2) + r(h)) / 3, r the bound above) and what is
    // left of the truncation (at most |q(h/2) - q(h)|, the size of the term
    // removed); NODE_TOL of the std is allowed on top. A wrong derivative
    // misses by O(1) of the std at every step, far above all three.
    // (best error / std, its tolerance / std), at the step of least ratio
    // A max node is linear between its winner changes: its quotient is
    // exact up to rounding, with nothing to extrapolate (and the half step
    // would double the rounding).
    let linear = is_max(node);
    let mut best: Option<(f64, f64)> = None;
    for rel in STEPS {
        let hf = rel as f32;
        let Some((q1, r1)) = quotient(hf)? else {
            continue; // a winner changed: a smaller step
        };
        let (fd, rounding, truncation) = if linear {
            (q1, r1, 0.0)
        } else {
            let Some((q2, r2)) = quotient(hf / 2.0)? else {
                continue;
            };
            (
                (4.0 * q2 - q1) / 3.0,
                (4.0 * r2 + r1) / 3.0,
                (q2 - q1).abs(),
            )
        };
        if rounding / sd > NODE_TOL / 2.0 {
            // rounding would hide a disagreement: smaller steps say nothing
            break;
        }
        let err = (fd - an).abs() / sd;
        let tol = NODE_TOL + (2.0 * rounding + truncation) / sd;
        if best.is_none_or(|(e, t)| err / tol < e / t) {
            best = Some((err, tol));
        }
        if err <= tol / 4.0 {
            break;
        }
    }
    let Some((err, tol)) = best else {
        anyhow::bail!("no step is free of kinks and large enough against f32 rounding");
    };
    if err > tol {
        return Ok(Some(format!(
            "its gradient disagrees with finite differences of its forward pass: \
             |<u, J v> - <J^T u, v>| / std = {err:.2e} > {tol:.2e} (its tolerance at this input: \
             {NODE_TOL:.0e} and the f32 rounding and truncation of the quotients)"
        )));
    }
    if lrp0 && lrp0_breaker(node).is_none() {
        // the node's own output, which its relevance pass computes again
        // here (no kept output is handed to it): where the model's forward
        // pass runs in tract, its output may differ in the last bits, and
        // by more where a decomposed LayerNorm's f32 chain cancels (DeiT's
        // TorchScript export: 1e-3 relative at outputs near zero)
        let z = &y0;
        let r = z * &u;
        let rule = Rule::Epsilon { epsilon: 0.0 };
        // LRP-0 on every node, the normalisations' epsilon rule included
        let reuse = ops::Reuse {
            ties,
            norm: Some(rule),
            ..Default::default()
        };
        let rel = node.relevance(inputs, &r, rule, None, reuse)?;
        // the reference: x * J^T u, with the stabiliser's factor on u for
        // the nodes whose rule divides by a stabilised output (see
        // `stabiliser_factor`: a residual Add of two nearly cancelling
        // branches differs from x * J^T u by relative L2 1.6e-2 measured,
        // from this reference by 5e-8)
        let stab_u = stabiliser_factor(node, z).map(|f| &u * &f);
        let jt_ref = match &stab_u {
            Some(su) => lrp0_gradient(node, inputs, su, grad)?,
            None if lrp0_modified(node) => lrp0_gradient(node, inputs, &u, grad)?,
            None => jt.clone(),
        };
        for (k, x) in inputs.iter().enumerate() {
            let e = rel_l2(&rel[k], &(*x * &jt_ref[k]));
            if e > NODE_LRP0_TOL {
                return Ok(Some(format!(
                    "its LRP-0 relevance of input {k} differs from x * gradient (relative L2 \
                     {e:.2e}{})",
                    if stab_u.is_some() {
                        ", the stabiliser included"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    Ok(None)
}

/// [`check_with`] with the library's exact gradients.
pub fn check(model: &Model, input: ArrayD<f32>, opts: &CheckOptions) -> Result<Report> {
    check_with(model, input, opts, &*gradient_with_ties(opts.maxpool_ties))
}

/// Checks the backward passes of `model` at `input` (see the module doc),
/// with `grad` as the gradient through each node.
pub fn check_with(
    model: &Model,
    input: ArrayD<f32>,
    opts: &CheckOptions,
    grad: &NodeGradient,
) -> Result<Report> {
    ensure!(
        opts.directions >= 1,
        "the check needs at least one direction"
    );
    let fwd = model.forward(input)?;
    let class = match opts.class {
        Some(c) => {
            ensure!(
                c < fwd.logits.len(),
                "class {c} out of range: the model has {} classes",
                fwd.logits.len()
            );
            c
        }
        None => fwd.top_k(1)[0].0,
    };
    let (g, shapes) = gradient_with(model, &fwd, class, grad)?;
    // finite differences measure the derivative, which split max-pool ties
    // replace by a chosen subgradient in near-tied windows: figure 1 checks
    // the gradient of `first` ties then (the split windows are checked node
    // by node, on their untied inputs, and by LRP-0 vs gradient x input)
    let first = match opts.maxpool_ties {
        MaxPoolTies::First => None,
        MaxPoolTies::Split => Some(gradient_with(model, &fwd, class, &exact_gradient)?.0),
    };
    let mut figures = vec![
        if crate::model::onnx::fold::fake_quantized(&model.graph.nodes) {
            Figure {
                what: "gradient vs finite differences".into(),
                value: None,
                comparison: "<=",
                threshold: GRADIENT_TOL,
                verdict: Verdict::NotApplicable,
                note: "the activations are fake-quantized: the forward pass is a staircase, whose \
                   gradient is zero almost everywhere; relevance and gradient pass the \
                   quantizers straight through by convention"
                    .into(),
            }
        } else {
            let mut f = gradient_figure(
                model,
                &fwd,
                class,
                first.as_ref().unwrap_or(&g),
                opts,
                &shapes,
            )?;
            if first.is_some() {
                f.note +=
                    "; of the gradient with maxpool_ties first (finite differences measure the \
                           derivative, which split ties replace in near-tied windows)";
            }
            f
        },
    ];
    let lrp0 = lrp0_figure(model, &fwd, class, &g, opts, &shapes, grad)?;
    let lrp0_applies = lrp0.verdict != Verdict::NotApplicable;
    figures.push(lrp0);
    figures.push(zplus_figure(model, &fwd, class)?);
    figures.push(ties_figure(model, &fwd, class, opts.maxpool_ties)?);

    // per-node checks, walking back from the output
    let graph = &model.graph;
    let mut rng = Rng::new(opts.seed ^ 0x5eed_c0de);
    let (mut checked, mut unchecked, mut first) = (0, vec![], None);
    for node in graph.nodes.iter().rev() {
        let Some(shape) = shapes.get(&node.output) else {
            continue;
        };
        if is_fake_quantizer(node) {
            unchecked.push(format!(
                "{} '{}' (fake quantization: a staircase forward, passed straight through by convention)",
                node.op_type, node.name
            ));
            continue;
        }
        let inputs = node
            .inputs
            .iter()
            .map(|n| fwd.get(graph, n))
            .collect::<Result<Vec<_>>>()?;
        let model_out = if node.output == graph.logits {
            Some(&fwd.logits_tensor)
        } else {
            fwd.activations.get(&node.output)
        };
        match check_node(
            node,
            &inputs,
            shape,
            model_out,
            grad,
            lrp0_applies,
            opts.maxpool_ties,
            &mut rng,
        ) {
            Ok(None) => checked += 1,
            Ok(Some(detail)) => {
                checked += 1;
                first = Some(NodeFinding {
                    op_type: node.op_type.clone(),
                    name: node.name.clone(),
                    detail,
                });
                break;
            }
            Err(e) => unchecked.push(format!("{} '{}' ({e})", node.op_type, node.name)),
        }
    }
    let mut f = Figure::measured(
        "operators checked one by one (failures)",
        if first.is_some() { 1.0 } else { 0.0 },
        "<=",
        0.0,
    );
    f.note = format!("{checked} nodes checked, {} not", unchecked.len());
    figures.push(f);
    Ok(Report {
        class,
        logit: fwd.logits[class],
        figures,
        first_disagreeing: first,
        nodes_checked: checked,
        nodes_unchecked: unchecked,
    })
}

/// What `lrp-heatmap check` runs.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// ONNX file (or the bundled model's name).
    pub model: PathBuf,
    /// Image to check at (`None`: a seeded random input).
    pub image: Option<PathBuf>,
    /// Height and width for symbolic spatial dims.
    pub input_size: Option<[usize; 2]>,
    /// Check options.
    pub options: CheckOptions,
    /// Print the report as one JSON object.
    pub json: bool,
}

/// Loads the model and the input, runs [`check`] and prints the report;
/// returns whether the check passed. Errors are model or input errors.
pub fn run_check(cfg: &CheckConfig, out: &mut dyn Write) -> Result<bool> {
    let model = crate::model::LoadOptions {
        size: cfg.input_size,
        ..Default::default()
    }
    .load(&cfg.model)?;
    run_check_on(&model, cfg, out)
}

/// [`run_check`] on a loaded model.
pub fn run_check_on(model: &Model, cfg: &CheckConfig, out: &mut dyn Write) -> Result<bool> {
    let spec = &model.input;
    let norm = &cfg.options.norm;
    let input = match &cfg.image {
        Some(path) => {
            let img = crate::preprocess::load_image_with(path, &DecodeLimits::default())?;
            crate::preprocess::to_tensor(
                &img,
                spec.height,
                spec.width,
                spec.channels,
                spec.layout,
                norm,
            )
            .with_context(|| format!("cannot prepare {}", path.display()))?
        }
        None => random_input(spec, norm, cfg.options.seed),
    };
    let report = check(model, input, &cfg.options)
        .with_context(|| format!("cannot check model {}", cfg.model.display()))?;
    if cfg.json {
        let mut v = serde_json::to_value(&report)?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| anyhow!("report is not an object"))?;
        obj.insert("model".into(), cfg.model.display().to_string().into());
        obj.insert("passed".into(), report.passed().into());
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "check {} at {}",
            cfg.model.display(),
            cfg.image.as_ref().map_or_else(
                || format!("a random input (seed {})", cfg.options.seed),
                |p| p.display().to_string()
            )
        )?;
        report.write_text(out)?;
    }
    Ok(report.passed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Act, ArithKind};
    use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};
    use std::path::Path;

    /// A small ONNX model under construction.
    struct Net {
        b: OnnxBuilder,
        rng: Rng,
        n: usize,
    }

    impl Net {
        fn new(seed: u64, input: &[i64]) -> Net {
            let mut b = OnnxBuilder::new(13);
            b.input("x", input);
            Net {
                b,
                rng: Rng::new(seed),
                n: 0,
            }
        }

        fn name(&mut self, what: &str) -> String {
            self.n += 1;
            format!("{what}{}", self.n)
        }

        fn param(&mut self, dims: &[usize], scale: f32, offset: f32) -> String {
            let n = dims.iter().product();
            let v: Vec<f32> = (0..n).map(|_| self.rng.normal() * scale + offset).collect();
            let name = self.name("p");
            self.b.initializer(&name, dims, &v)
        }

        fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
            let out = self.name(&op.to_lowercase());
            self.b.node(op, inputs, &[&out], attrs);
            out
        }

        /// 3x3 Conv (padding 1) with a bias.
        fn conv(&mut self, x: &str, cin: usize, cout: usize) -> String {
            let w = he_normal(&mut self.rng, cin * 9, cout * cin * 9);
            let wn = self.name("w");
            let w = self.b.initializer(&wn, &[cout, cin, 3, 3], &w);
            let bias = self.param(&[cout], 0.1, 0.0);
            self.op(
                "Conv",
                &[x, &w, &bias],
                vec![Attr::Ints("pads", vec![1; 4])],
            )
        }

        /// BatchNormalization with random statistics.
        fn bn(&mut self, x: &str, c: usize) -> String {
            let scale = self.param(&[c], 0.3, 1.0);
            let shift = self.param(&[c], 0.2, 0.0);
            let mean = self.param(&[c], 0.2, 0.0);
            let var = self.param(&[c], 0.1, 1.0);
            self.op(
                "BatchNormalization",
                &[x, &scale, &shift, &mean, &var],
                vec![],
            )
        }

        fn model(mut self, out: &str) -> Model {
            self.b.output(out, &[]);
            let bytes = self.b.to_bytes();
            Model::options()
                .from_bytes(&bytes, Path::new("test.onnx"), None)
                .expect("model loads")
        }
    }

    fn pool(kind: &str, k: i64, s: i64, pads: i64) -> Vec<Attr> {
        let _ = kind;
        vec![
            Attr::Ints("kernel_shape", vec![k, k]),
            Attr::Ints("strides", vec![s, s]),
            Attr::Ints("pads", vec![pads; 4]),
        ]
    }

    /// Conv + BN + ReLU, max pool, a residual block, an average pool, a
    /// global average pool, Gemm; with `concat` a Concat of two branches
    /// (then the forward pass runs in tract). ReLU only: LRP-0 applies.
    fn relu_net(seed: u64, concat: bool) -> Model {
        let mut n = Net::new(seed, &[1, 3, 12, 12]);
        let c = n.conv("x", 3, 4);
        let c = n.bn(&c, 4);
        let a = n.op("Relu", &[&c], vec![]);
        let p = n.op("MaxPool", &[&a], pool("max", 3, 2, 1));
        let c = n.conv(&p, 4, 4);
        let c = n.op("Relu", &[&c], vec![]);
        let c = n.conv(&c, 4, 4);
        let s = n.op("Add", &[&p, &c], vec![]);
        let mut t = n.op("Relu", &[&s], vec![]);
        let mut ch = 4;
        if concat {
            let b = n.conv(&t, 4, 2);
            let b = n.op("Relu", &[&b], vec![]);
            t = n.op("Concat", &[&t, &b], vec![Attr::Int("axis", 1)]);
            ch = 6;
        }
        let t = n.op("AveragePool", &[&t], pool("avg", 2, 2, 0));
        let t = n.conv(&t, ch, 5);
        let t = n.op("Relu", &[&t], vec![]);
        let g = n.op("GlobalAveragePool", &[&t], vec![]);
        let f = n.op("Flatten", &[&g], vec![]);
        let w = he_normal(&mut n.rng, 5, 5 * 4);
        let w = n.b.initializer("fc_w", &[4, 5], &w);
        let b = n.param(&[4], 0.1, 0.0);
        let logits = n.op("Gemm", &[&f, &w, &b], vec![Attr::Int("transB", 1)]);
        n.model(&logits)
    }

    fn print(what: &str, r: &Report) {
        let mut s = Vec::new();
        r.write_text(&mut s).unwrap();
        eprintln!("{what}:\n{}", String::from_utf8_lossy(&s));
    }

    fn run(model: &Model, grad: &NodeGradient) -> Report {
        let opts = CheckOptions::default();
        let x = random_input(&model.input, &opts.norm, 7);
        check_with(model, x, &opts, grad).expect("check runs")
    }

    /// MaxPool 2x2 / 2 of a [1, 3, 4, 4] input, flattened, a Gemm of 3 classes.
    fn pool_net() -> Model {
        let mut n = Net::new(5, &[1, 3, 4, 4]);
        let p = n.op("MaxPool", &["x"], pool("max", 2, 2, 0));
        let f = n.op("Flatten", &[&p], vec![]);
        let w = n.param(&[3, 12], 1.0, 0.0);
        let b = n.param(&[3], 0.1, 0.0);
        let logits = n.op("Gemm", &[&f, &w, &b], vec![Attr::Int("transB", 1)]);
        n.model(&logits)
    }

    /// Every window of [`pool_net`] near-tied: its largest two inputs 3e-6
    /// apart (below 1e-5 of the largest |x|, 1.0 + 3e-6), the rest clear.
    fn near_tied_input() -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(&[1, 3, 4, 4]), |ix| {
            let (c, y, x) = (ix[1], ix[2], ix[3]);
            let base = 0.5 + 0.1 * (c * 4 + (y / 2) * 2 + x / 2) as f32 / 12.0;
            match (y % 2, x % 2) {
                (0, 0) => base,
                (0, 1) => base + 3e-6,
                _ => base - 0.3,
            }
        })
    }

    #[test]
    fn the_near_tie_warning_names_split_and_split_silences_it() {
        let model = pool_net();
        let fwd = model.forward(near_tied_input()).unwrap();
        let w = near_tie_warnings(&model, &fwd, MaxPoolTies::First).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--maxpool-ties split"), "{}", w[0]);
        assert!(
            w[0].contains("100.0%"),
            "every window is near-tied: {}",
            w[0]
        );
        let w = near_tie_warnings(&model, &fwd, MaxPoolTies::Split).unwrap();
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn check_passes_near_ties_with_either_setting() {
        let model = pool_net();
        for ties in [MaxPoolTies::First, MaxPoolTies::Split] {
            let opts = CheckOptions {
                maxpool_ties: ties,
                ..Default::default()
            };
            let r = check(&model, near_tied_input(), &opts).unwrap();
            print(&format!("near ties, {ties}"), &r);
            assert!(r.passed(), "{ties}");
            let lrp0 = &r.figures[1];
            assert_eq!(lrp0.verdict, Verdict::Pass, "{ties}: LRP-0 applies");
            let t = r
                .figures
                .iter()
                .find(|f| f.what.contains("near-ties"))
                .unwrap();
            // first: all of the gradient through near-ties, a warning;
            // split: the same windows, shared, a pass
            let want = match ties {
                MaxPoolTies::First => Verdict::Warn,
                MaxPoolTies::Split => Verdict::Pass,
            };
            assert_eq!(t.verdict, want, "{ties}");
        }
    }

    #[test]
    fn correct_relu_nets_pass_with_lrp0_equal_to_gradient_x_input() {
        for (seed, concat) in [(1, false), (2, false), (3, true)] {
            let model = relu_net(seed, concat);
            let r = run(&model, &exact_gradient);
            print(&format!("relu net {seed} concat {concat}"), &r);
            assert!(r.passed(), "seed {seed}");
            // every figure measured, none skipped: LRP-0 applies to ReLU nets
            assert!(r.figures.iter().all(|f| f.verdict == Verdict::Pass));
            assert!(r.first_disagreeing.is_none());
            // without Concat every node runs natively and is checked
            if !concat {
                assert!(r.nodes_unchecked.is_empty(), "{:?}", r.nodes_unchecked);
            }
            assert!(r.nodes_checked >= 10, "{}", r.nodes_checked);
        }
    }

    #[test]
    fn a_broken_relu_gradient_fails_and_is_named() {
        let model = relu_net(1, false);
        // a bug: ReLU passes every gradient, also where its input was negative
        let broken = |node: &Node, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>| {
            if node.op_type == "Relu" {
                return Ok(vec![g.clone()]);
            }
            exact_gradient(node, inputs, g)
        };
        let r = run(&model, &broken);
        print("broken relu", &r);
        assert!(!r.passed());
        let first = r.first_disagreeing.as_ref().expect("a node is named");
        assert_eq!(first.op_type, "Relu");
        let (err, tol) = node_error(&r);
        assert!(err > 10.0 * tol, "{err} against {tol}");
        // walking back from the output, the last ReLU of the graph is met first
        let last_relu = model
            .graph
            .nodes
            .iter()
            .rev()
            .find(|n| n.op_type == "Relu")
            .unwrap();
        assert_eq!(first.name, last_relu.name);
        let grad = &r.figures[0];
        assert_eq!(grad.verdict, Verdict::Fail, "{grad:?}");
        let mut text = Vec::new();
        r.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(&format!(
                "first disagreeing operator: Relu node '{}'",
                last_relu.name
            )),
            "{text}"
        );
    }

    #[test]
    fn a_max_pool_passing_gradient_to_the_window_mean_is_named() {
        let model = relu_net(2, false);
        // a bug: the max pool's gradient spread like an average pool's
        let broken = |node: &Node, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>| {
            if let Some(ops::pool::MaxPool(p)) = node.op.downcast() {
                let p = crate::graph::Pool {
                    window: p.window.clone(),
                    count_include_pad: true,
                    ceil_mode: p.ceil_mode,
                };
                return Ok(vec![ops::pool_grad::avg_pool(&p, inputs[0].shape(), g)?]);
            }
            exact_gradient(node, inputs, g)
        };
        let r = run(&model, &broken);
        print("broken max pool", &r);
        assert!(!r.passed());
        let first = r.first_disagreeing.as_ref().expect("a node is named");
        assert_eq!(first.op_type, "MaxPool", "{first:?}");
        let (err, tol) = node_error(&r);
        assert!(err > 10.0 * tol, "{err} against {tol}");
    }

    /// Conv, a squeeze-and-excitation gate (GlobalAveragePool, Conv,
    /// Sigmoid, Mul) and SiLU (x * Sigmoid(x)), GlobalAveragePool, Gemm: the
    /// smooth operators of an EfficientNet.
    fn gated_net(seed: u64) -> Model {
        let mut n = Net::new(seed, &[1, 3, 8, 8]);
        let c = n.conv("x", 3, 4);
        let s = n.op("Sigmoid", &[&c], vec![]);
        let c = n.op("Mul", &[&c, &s], vec![]);
        let g = n.op("GlobalAveragePool", &[&c], vec![]);
        let w = he_normal(&mut n.rng, 4, 16);
        let w = n.b.initializer("se_w", &[4, 4, 1, 1], &w);
        let g = n.op("Conv", &[&g, &w], vec![]);
        let gate = n.op("Sigmoid", &[&g], vec![]);
        let c = n.op("Mul", &[&c, &gate], vec![]);
        let g = n.op("GlobalAveragePool", &[&c], vec![]);
        let f = n.op("Flatten", &[&g], vec![]);
        let w = n.param(&[3, 4], 0.5, 0.0);
        let logits = n.op("Gemm", &[&f, &w], vec![Attr::Int("transB", 1)]);
        n.model(&logits)
    }

    /// The node error of a failed check's message (`... / std = E > T ...`).
    fn node_error(r: &Report) -> (f64, f64) {
        let detail = &r
            .first_disagreeing
            .as_ref()
            .expect("a node is named")
            .detail;
        let num = |after: &str| -> f64 {
            let rest = detail.split(after).nth(1).expect("the figure");
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        (num("/ std = "), num(" > "))
    }

    #[test]
    fn a_broken_sigmoid_gradient_fails_by_orders_of_magnitude() {
        for seed in [1, 2, 3] {
            let model = gated_net(seed);
            let r = run(&model, &exact_gradient);
            print(&format!("gated net {seed}"), &r);
            assert!(r.passed(), "seed {seed}");
            // a bug: the sigmoid's derivative without its factor (1 - s)
            let broken = |node: &Node, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>| {
                if node.op_type == "Sigmoid" {
                    let s = inputs[0].mapv(|x| 1.0 / (1.0 + (-x).exp()));
                    return Ok(vec![g * &s]);
                }
                exact_gradient(node, inputs, g)
            };
            let r = run(&model, &broken);
            print(&format!("broken sigmoid {seed}"), &r);
            assert!(!r.passed(), "seed {seed}");
            let first = r.first_disagreeing.as_ref().unwrap();
            assert_eq!(first.op_type, "Sigmoid", "{first:?}");
            let (err, tol) = node_error(&r);
            eprintln!("broken sigmoid {seed}: node error {err:.2e}, tolerance {tol:.2e}");
            assert!(err > 10.0 * tol, "seed {seed}: {err} against {tol}");
        }
    }

    #[test]
    fn relu6_makes_lrp0_not_applicable() {
        let mut n = Net::new(4, &[1, 3, 8, 8]);
        let c = n.conv("x", 3, 4);
        let lo = n.b.initializer("lo", &[], &[0.0]);
        let hi = n.b.initializer("hi", &[], &[6.0]);
        let t = n.op("Clip", &[&c, &lo, &hi], vec![]);
        let g = n.op("GlobalAveragePool", &[&t], vec![]);
        let f = n.op("Flatten", &[&g], vec![]);
        let w = n.param(&[3, 4], 0.5, 0.0);
        let logits = n.op("Gemm", &[&f, &w], vec![Attr::Int("transB", 1)]);
        let model = n.model(&logits);
        let r = run(&model, &exact_gradient);
        print("relu6", &r);
        assert!(r.passed());
        let lrp0 = &r.figures[1];
        assert_eq!(lrp0.verdict, Verdict::NotApplicable);
        assert!(lrp0.note.contains("ReLU6 clips at 6"), "{}", lrp0.note);
    }

    #[test]
    fn lrp0_breakers() {
        use crate::ops::gate::Gate;
        use crate::ops::structural::{Arith, Sum};
        use crate::ops::Op;
        let node = |op: Op| Node {
            name: "n".into(),
            op_type: "T".into(),
            op,
            inputs: vec!["a".into()],
            output: "b".into(),
            first: false,
        };
        assert!(lrp0_breaker(&node(Op::new(Act::Relu))).is_none());
        assert!(lrp0_breaker(&node(Op::new(Sum))).is_none());
        let sig = lrp0_breaker(&node(Op::new(Act::Sigmoid))).unwrap();
        assert!(sig.contains("Sigmoid"), "{sig}");
        let add = |c: f32| {
            Op::new(Arith {
                kind: ArithKind::Add,
                constant: ArrayD::from_elem(vec![1], c),
                constant_first: false,
                bias: false,
                runtime: false,
            })
        };
        assert!(lrp0_breaker(&node(add(0.0))).is_none());
        assert!(lrp0_breaker(&node(add(0.5))).is_some());
        assert!(lrp0_breaker(&node(Op::new(Gate { gate: None }))).is_some());
    }

    #[test]
    fn random_input_lies_in_the_normalised_pixel_range() {
        let model = relu_net(1, false);
        let norm = Normalization::default();
        let x = random_input(&model.input, &norm, 3);
        let (lo, hi) = norm.bounds();
        for (ix, &v) in x.indexed_iter() {
            assert!(v >= lo[ix[1]] && v <= hi[ix[1]], "{v} at {ix:?}");
        }
        assert_eq!(x, random_input(&model.input, &norm, 3));
        assert_ne!(x, random_input(&model.input, &norm, 4));
    }
}
