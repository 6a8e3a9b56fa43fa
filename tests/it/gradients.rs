//! The gradient family against finite differences of the model itself.
//!
//! Small networks are written as ONNX files (`synth::OnnxBuilder`) and loaded
//! like any model; the library's gradient is compared, for every input element,
//! with central differences of the logit computed by `Model::forward` (tract,
//! `f32`), so the reference shares no code with the backward pass.
//!
//! Error model of the central differences `(f(x + h e_i) - f(x - h e_i)) / 2h`
//! (`f` the logit):
//! - rounding: the `f32` forward pass is exact to a few ulps of |f| (~2e-7 at
//!   |f| ~ 5 observed), so a difference quotient carries up to
//!   `8 eps |f| / h` (eps = 2^-23);
//! - truncation: `h^2 f''' / 6` on a smooth piece, ~1e-5 here;
//! - kinks (ReLU, Clip, LeakyReLU, HardSigmoid, max pools...): a central
//!   difference across one is meaningless, so the pieces every piecewise
//!   activation and max pool is on are recorded at `x` and `x +- h e_i`, and
//!   the comparison uses the first step of h = 1e-2, 2.5e-3, 6.25e-4 with no
//!   piece changed. An element where every step crosses a kink is only checked
//!   to lie between the one-sided slopes of the smallest step (true for one
//!   kink: the gradient is the slope on the kink-free side), and such elements
//!   may be at most 5% of all (none observed).
//!
//! Tolerance per element: `2e-3 max_i |g_i| + 2e-3 |g_i| + 8 eps |f| / h`
//! (several times the errors above for gradients of O(0.01..1); a wrong
//! derivative, divisor, sign or index gives errors of O(|g_i|): replacing the
//! average-pool divisor, the sign of `c - x` or 10% of the `x phi(x)` term of
//! Gelu's derivative all fail). Observed: max error / max |g| from 6e-5 to
//! 1e-2 (the last where max |g| is small against |f| and the rounding term
//! dominates), printed by each test.

use std::path::Path;

use lrp_heatmap::analyzers::gradient::{
    input_gradient, integrated_gradients, smoothgrad, GradientMode,
};
use lrp_heatmap::analyzers::{all_names, black, Analyzer, AnalyzerParams, GRADIENT_NAMES};
use lrp_heatmap::composite::NAMES;
use lrp_heatmap::graph::Act;
use lrp_heatmap::model::Model;
use lrp_heatmap::ops::pool;
use lrp_heatmap::ops::MaxPoolTies::First;
use lrp_heatmap::preprocess::Normalization;
use lrp_heatmap::rules::Rule;
use lrp_testkit::synth::{he_normal, Attr, Rng};
use ndarray::ArrayD;

use crate::support::{max_abs, normal, Net};

/// Makers of weights and layers, and loading, for the networks below.
impl Net {
    /// A constant of normal values times `scale`.
    fn param(&mut self, dims: &[usize], scale: f32) -> String {
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.normal() * scale).collect();
        let name = self.name("p");
        self.b.initializer(&name, dims, &v)
    }

    fn constant(&mut self, dims: &[usize], v: &[f32]) -> String {
        let name = self.name("c");
        self.b.initializer(&name, dims, v)
    }

    /// He-initialised `Conv` with bias.
    fn conv(&mut self, x: &str, cin: usize, cout: usize, k: usize, attrs: Vec<Attr>) -> String {
        let group = attrs
            .iter()
            .find_map(|a| match a {
                Attr::Int("group", g) => Some(*g as usize),
                _ => None,
            })
            .unwrap_or(1);
        let fan_in = cin / group * k * k;
        let w = he_normal(&mut self.rng, fan_in, cout * fan_in);
        let wn = self.name("w");
        let w = self.b.initializer(&wn, &[cout, cin / group, k, k], &w);
        let bias = self.param(&[cout], 0.1);
        self.op("Conv", &[x, &w, &bias], attrs)
    }

    fn gemm(&mut self, x: &str, k: usize, m: usize) -> String {
        let w = he_normal(&mut self.rng, k, m * k);
        let wn = self.name("w");
        let w = self.b.initializer(&wn, &[m, k], &w);
        let bias = self.param(&[m], 0.1);
        self.op("Gemm", &[x, &w, &bias], vec![Attr::Int("transB", 1)])
    }

    /// Declares `out` the output, writes the file and loads it.
    fn load(self, dir: &Path, file: &str, out: &str) -> Model {
        let path = self.save(dir, file, out);
        Model::load(&path).unwrap_or_else(|e| panic!("{file}: {e:#}"))
    }
}

fn pads(p: [i64; 4]) -> Attr {
    Attr::Ints("pads", p.to_vec())
}

fn kernel(k: i64) -> Attr {
    Attr::Ints("kernel_shape", vec![k, k])
}

fn strides(s: i64) -> Attr {
    Attr::Ints("strides", vec![s, s])
}

/// Conv + ReLU, padded max pools, average pools with and without the padding
/// counted, a grouped dilated conv, Gemm and a trailing Softmax.
fn pooling_net(dir: &Path, seed: u64) -> Model {
    let mut n = Net::new(13, seed, &[1, 3, 12, 12]);
    let c = n.conv("x", 3, 4, 3, vec![pads([1; 4])]);
    let r = n.op("Relu", &[&c], vec![]);
    let p = n.op("MaxPool", &[&r], vec![kernel(2), strides(2)]);
    let dil = vec![
        pads([2; 4]),
        Attr::Ints("dilations", vec![2, 2]),
        Attr::Int("group", 2),
    ];
    let c = n.conv(&p, 4, 6, 3, dil);
    let r = n.op("Relu", &[&c], vec![]);
    let incl = vec![
        kernel(3),
        strides(2),
        pads([1; 4]),
        Attr::Int("count_include_pad", 1),
    ];
    let a = n.op("AveragePool", &[&r], incl);
    let a = n.op("AveragePool", &[&a], vec![kernel(2), pads([0, 0, 1, 1])]);
    let m = n.op("MaxPool", &[&a], vec![kernel(2), pads([1, 1, 0, 0])]);
    let f = n.op("Flatten", &[&m], vec![]);
    let logits = n.gemm(&f, 54, 5);
    let prob = n.op("Softmax", &[&logits], vec![Attr::Int("axis", 1)]);
    n.load(dir, "pooling.onnx", &prob)
}

/// A residual block, global average and max pools added, MatMul + bias.
fn residual_net(dir: &Path, seed: u64) -> Model {
    let mut n = Net::new(13, seed, &[1, 3, 8, 8]);
    let c = n.conv("x", 3, 4, 3, vec![pads([1; 4])]);
    let a = n.op("Relu", &[&c], vec![]);
    let c = n.conv(&a, 4, 4, 3, vec![pads([1; 4])]);
    let c = n.op("Relu", &[&c], vec![]);
    let b = n.conv(&c, 4, 4, 1, vec![]);
    let s = n.op("Add", &[&a, &b], vec![]);
    let s = n.op("Relu", &[&s], vec![]);
    let gap = n.op("GlobalAveragePool", &[&s], vec![]);
    let gmp = n.op("GlobalMaxPool", &[&a], vec![]);
    let g = n.op("Add", &[&gap, &gmp], vec![]);
    let f = n.op("Flatten", &[&g], vec![]);
    let w = n.param(&[4, 3], 0.7);
    let m = n.op("MatMul", &[&f, &w], vec![]);
    let bias = n.param(&[3], 0.1);
    let logits = n.op("Add", &[&m, &bias], vec![]);
    n.load(dir, "residual.onnx", &logits)
}

/// BatchNormalization with random statistics on `c` channels.
fn batchnorm(n: &mut Net, x: &str, c: usize) -> String {
    let scale = n.param(&[c], 0.5);
    let shift = n.param(&[c], 0.2);
    let mean = n.param(&[c], 0.2);
    let var: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
    let var = n.constant(&[c], &var);
    n.op(
        "BatchNormalization",
        &[x, &scale, &shift, &mean, &var],
        vec![],
    )
}

/// NHWC input, Transpose, normalisation by Sub/Div, Conv + folded BN, Sigmoid,
/// Mul (constant first), strided Conv, Tanh, Add, standalone BN, `c - x`,
/// Transpose back, Reshape, Div, Gemm. With `kinks`: Clip (opset-11 inputs,
/// the upper one absent) and LeakyReLU after the standalone BN.
fn mixed_net(dir: &Path, seed: u64, kinks: bool) -> Model {
    let mut n = Net::new(13, seed, &[1, 6, 6, 3]);
    let t = n.op(
        "Transpose",
        &["x"],
        vec![Attr::Ints("perm", vec![0, 3, 1, 2])],
    );
    let mean = n.constant(&[1, 3, 1, 1], &[0.1, -0.2, 0.3]);
    let t = n.op("Sub", &[&t, &mean], vec![]);
    let std = n.constant(&[1, 3, 1, 1], &[0.9, 1.3, 0.7]);
    let t = n.op("Div", &[&t, &std], vec![]);
    let c = n.conv(&t, 3, 4, 3, vec![pads([1; 4])]);
    let c = batchnorm(&mut n, &c, 4);
    let s = n.op("Sigmoid", &[&c], vec![]);
    let k = n.constant(&[4, 1, 1], &[2.0, -1.5, 3.0, 1.0]);
    let s = n.op("Mul", &[&k, &s], vec![]);
    let c = n.conv(&s, 4, 4, 3, vec![pads([1; 4]), strides(2)]);
    let t = n.op("Tanh", &[&c], vec![]);
    let k = n.constant(&[1], &[0.25]);
    let t = n.op("Add", &[&t, &k], vec![]);
    let mut t = batchnorm(&mut n, &t, 4);
    if kinks {
        let lo = n.constant(&[], &[-0.3]);
        t = n.op("Clip", &[&t, &lo, ""], vec![]);
        t = n.op("LeakyRelu", &[&t], vec![Attr::Float("alpha", 0.2)]);
    }
    let k = n.constant(&[], &[0.5]);
    let t = n.op("Sub", &[&k, &t], vec![]);
    let t = n.op(
        "Transpose",
        &[&t],
        vec![Attr::Ints("perm", vec![0, 2, 3, 1])],
    );
    let shape = n.b.initializer_i64("shape", &[2], &[1, 36]);
    let t = n.op("Reshape", &[&t, &shape], vec![]);
    let k = n.constant(&[], &[0.5]);
    let t = n.op("Div", &[&t, &k], vec![]);
    let logits = n.gemm(&t, 36, 4);
    n.load(dir, &format!("mixed-{kinks}.onnx"), &logits)
}

/// The other activations: Elu, HardSigmoid, HardSwish, Selu, Softplus, Celu,
/// Mish, PRelu, Gelu (exact and tanh), Identity, Dropout, a float Cast, and
/// `c / x` of a positive activation.
fn activations_net(dir: &Path, seed: u64) -> Model {
    let mut n = Net::new(20, seed, &[1, 3, 5, 5]);
    let mut t = n.conv("x", 3, 4, 3, vec![pads([1; 4])]);
    let acts: Vec<(&str, Vec<Attr>)> = vec![
        ("Elu", vec![Attr::Float("alpha", 0.7)]),
        (
            "HardSigmoid",
            vec![Attr::Float("alpha", 0.3), Attr::Float("beta", 0.4)],
        ),
        ("HardSwish", vec![]),
        ("Selu", vec![]),
        ("Softplus", vec![]),
        // alpha = 1: tract 0.23.9 computes min(0, exp(x / alpha) - 1) for the
        // negative part, without the factor alpha of the ONNX definition (which
        // the derivative follows); both agree at alpha = 1
        ("Celu", vec![Attr::Float("alpha", 1.0)]),
        ("Mish", vec![]),
        ("PRelu", vec![]),
        ("Gelu", vec![]),
        ("Gelu", vec![Attr::Str("approximate", "tanh".into())]),
        ("Identity", vec![]),
        ("Dropout", vec![]),
        ("Cast", vec![Attr::Int("to", 1)]),
    ];
    for (op, attrs) in acts {
        let mut t2 = if op == "PRelu" {
            let slope = n.constant(&[4, 1, 1], &[0.1, -0.2, 0.3, 0.05]);
            n.op(op, &[&t, &slope], attrs)
        } else {
            n.op(op, &[&t], attrs)
        };
        if op == "Softplus" {
            // c / x of a positive input
            let k = n.constant(&[], &[0.8]);
            t2 = n.op("Div", &[&k, &t2], vec![]);
        }
        // a 1x1 conv between activations keeps every one of them in use
        t = n.conv(&t2, 4, 4, 1, vec![]);
    }
    let f = n.op("Flatten", &[&t], vec![]);
    let logits = n.gemm(&f, 100, 3);
    n.load(dir, "activations.onnx", &logits)
}

/// Opset 10: Clip with `min`/`max` attributes (ReLU6 and a two-sided one).
fn clip_attr_net(dir: &Path, seed: u64) -> Model {
    let mut n = Net::new(10, seed, &[1, 3, 6, 6]);
    let c = n.conv("x", 3, 4, 3, vec![pads([1; 4])]);
    let attrs = vec![Attr::Float("min", -0.4), Attr::Float("max", 0.5)];
    let t = n.op("Clip", &[&c], attrs);
    let c = n.conv(&t, 4, 4, 3, vec![pads([1; 4])]);
    let attrs = vec![Attr::Float("min", 0.0), Attr::Float("max", 6.0)];
    let t = n.op("Clip", &[&c], attrs);
    let f = n.op("Flatten", &[&t], vec![]);
    let logits = n.gemm(&f, 144, 3);
    n.load(dir, "clip10.onnx", &logits)
}

/// The input goes through `act` first: guided gradients at the input are
/// the guided gradients at a rectifier's input.
fn rectified_input_net(dir: &Path, seed: u64, act: &str) -> Model {
    let opset = if act == "Clip" { 10 } else { 13 };
    let mut n = Net::new(opset, seed, &[1, 3, 6, 6]);
    let attrs = if act == "Clip" {
        vec![Attr::Float("min", 0.0), Attr::Float("max", 6.0)]
    } else {
        vec![]
    };
    let r = n.op(act, &["x"], attrs);
    let c = n.conv(&r, 3, 4, 3, vec![pads([1; 4])]);
    let r = n.op("Relu", &[&c], vec![]);
    let c = n.conv(&r, 4, 4, 3, vec![pads([1; 4])]);
    let f = n.op("Flatten", &[&c], vec![]);
    let logits = n.gemm(&f, 144, 4);
    n.load(dir, &format!("rectified-{act}.onnx"), &logits)
}

/// Finite-difference steps, tried in order (see the top of the file).
const STEPS: [f32; 3] = [1e-2, 2.5e-3, 6.25e-4];

fn input(model: &Model, seed: u64) -> ArrayD<f32> {
    normal(&mut Rng::new(seed), &model.input.shape)
}

fn logit(model: &Model, x: &ArrayD<f32>, class: usize) -> f32 {
    model.forward(x.clone()).expect("forward").logits[class]
}

/// The logit of `class` at `x`, and which linear piece every piecewise
/// activation and max pool of `model` is on (the piece index of each element,
/// and for max pools how many windows each input wins).
fn eval(model: &Model, x: &ArrayD<f32>, class: usize) -> (f32, Vec<u8>) {
    let fwd = model.forward(x.clone()).expect("forward");
    let graph = &model.graph;
    let mut pieces = vec![];
    for node in &graph.nodes {
        let a = fwd.get(graph, &node.inputs[0]).expect("input");
        let out = || {
            let o = fwd.get(graph, &node.output).unwrap_or(&fwd.logits_tensor);
            ArrayD::<f32>::ones(o.shape())
        };
        let wins = if let Some(pool::MaxPool(p)) = node.op.downcast() {
            pool::max_pool(p, a, &out(), First).unwrap()
        } else if node.op.takes_maxima() {
            // GlobalMaxPool, ReduceMax: their relevance is the winners' mask
            let eps0 = Rule::Epsilon { epsilon: 0.0 };
            let r = node.relevance(&[a], &out(), eps0, None, Default::default());
            r.unwrap().swap_remove(0)
        } else {
            ArrayD::zeros(vec![0])
        };
        pieces.extend(wins.iter().map(|&w| w as u8));
        let Some(act) = node.op.downcast::<Act>() else {
            continue;
        };
        let two = |v: f32, lo: f32, hi: f32| u8::from(v > lo) + u8::from(v >= hi);
        pieces.extend(a.iter().map(|&v| match act {
            Act::Clip { min, max } => two(v, *min, *max),
            Act::HardSigmoid { alpha, beta } => two(alpha * v + beta, 0.0, 1.0),
            Act::HardSwish => two(v, -3.0, 3.0),
            Act::Sigmoid | Act::Tanh | Act::Softplus | Act::Mish | Act::Gelu { .. } => 0,
            _ => u8::from(v > 0.0), // ReLU-like: kink at 0
        }));
    }
    (fwd.logits[class], pieces)
}

/// Compares `g` with finite differences of the logit of `class` at `x` (see
/// the top of the file). Returns the largest error relative to max |g| over the
/// checked elements; panics on a failure.
fn check_fd(what: &str, model: &Model, x: &ArrayD<f32>, class: usize, g: &ArrayD<f32>) -> f32 {
    let (f0, p0) = eval(model, x, class);
    let gmax = max_abs(g);
    assert!(gmax > 0.0, "{what}: all-zero gradient");
    let (mut worst, mut kinked) = (0.0f32, 0);
    for i in 0..x.len() {
        let gi = g.as_slice().unwrap()[i];
        let mut slopes = (0.0, 0.0, 0.0);
        let mut smooth = false;
        for h in STEPS {
            let shifted = |d: f32| {
                let mut xs = x.clone();
                xs.as_slice_mut().unwrap()[i] += d;
                eval(model, &xs, class)
            };
            let ((fp, pp), (fm, pm)) = (shifted(h), shifted(-h));
            // tolerance: see the top of the file
            let tol = 2e-3 * gmax + 2e-3 * gi.abs() + 8.0 * f32::EPSILON * f0.abs().max(1.0) / h;
            let (fwd, bwd) = ((fp - f0) / h, (f0 - fm) / h);
            slopes = (fwd.min(bwd), fwd.max(bwd), tol);
            if pp == p0 && pm == p0 {
                smooth = true;
                let central = (fp - fm) / (2.0 * h);
                let err = (central - gi).abs();
                assert!(
                    err <= tol,
                    "{what}: element {i}: gradient {gi} vs central difference {central} (h {h}, tol {tol})"
                );
                worst = worst.max(err / gmax);
                break;
            }
        }
        if !smooth {
            kinked += 1;
            let (lo, hi, tol) = slopes;
            assert!(
                gi >= lo - tol && gi <= hi + tol,
                "{what}: element {i}: gradient {gi} outside the one-sided slopes [{lo}, {hi}]"
            );
        }
    }
    eprintln!(
        "{what}: max |g| {gmax:.3e}, max error / max |g| {worst:.1e}, {kinked} of {} elements near a kink",
        x.len()
    );
    assert!(
        kinked * 20 <= x.len(),
        "{what}: {kinked} of {} elements near a kink",
        x.len()
    );
    worst
}

/// Checks the gradient of two classes of `model` at two inputs.
fn check_model(what: &str, model: &Model) {
    for seed in [11, 12] {
        let x = input(model, seed);
        let fwd = model.forward(x.clone()).expect("forward");
        for class in [0, model.classes - 1] {
            let g = input_gradient(&model.graph, &fwd, class, GradientMode::Plain)
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            check_fd(
                &format!("{what}, input {seed}, class {class}"),
                model,
                &x,
                class,
                &g,
            );
        }
    }
}

#[test]
fn gradient_matches_finite_differences_on_a_pooling_network() {
    let dir = tempfile::tempdir().unwrap();
    check_model("pooling", &pooling_net(dir.path(), 1));
}

#[test]
fn gradient_matches_finite_differences_on_a_residual_network() {
    let dir = tempfile::tempdir().unwrap();
    check_model("residual", &residual_net(dir.path(), 2));
}

#[test]
fn gradient_matches_finite_differences_through_activations_and_arithmetic() {
    let dir = tempfile::tempdir().unwrap();
    check_model("mixed, smooth", &mixed_net(dir.path(), 3, false));
    check_model("mixed, with kinks", &mixed_net(dir.path(), 3, true));
    check_model("activations", &activations_net(dir.path(), 4));
    check_model("clip opset 10", &clip_attr_net(dir.path(), 5));
}

#[test]
fn gradient_x_input_and_gradient_analyzers_agree_with_input_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let model = residual_net(dir.path(), 6);
    let x = input(&model, 21);
    let fwd = model.forward(x.clone()).unwrap();
    let norm = Normalization::default();
    let p = AnalyzerParams::default();
    let g = input_gradient(&model.graph, &fwd, 1, GradientMode::Plain).unwrap();
    let e = Analyzer::from_name("gradient", &p).unwrap();
    let e = e.explain(&model, &fwd, 1, &norm).unwrap();
    assert_eq!(e.relevance, g);
    assert_eq!((e.class, e.logit), (1, fwd.logits[1]));
    let gxi = Analyzer::from_name("gradient-x-input", &p).unwrap();
    let gxi = gxi.explain(&model, &fwd, 1, &norm).unwrap();
    // elementwise f32 products, so exactly equal
    assert_eq!(gxi.relevance, &x * &g);
    let sum: f64 = gxi.relevance.iter().map(|&v| v as f64).sum();
    assert_eq!(gxi.relevance_sum, sum as f32);
}

/// `(sum of IG - (logit(x) - logit(baseline)), leading error term)`: the right
/// Riemann sum over `steps` points overshoots the path integral by
/// `(F'(1) - F'(0)) / (2 steps) + O(1 / steps^2)`, `F'(a)` the directional
/// derivative `g(b + a (x - b)) . (x - b)`.
fn ig_error(
    model: &Model,
    x: &ArrayD<f32>,
    b: &ArrayD<f32>,
    class: usize,
    steps: usize,
) -> (f64, f64) {
    let ig = integrated_gradients(model, x, b, class, steps, First).unwrap();
    let sum: f64 = ig.iter().map(|&v| v as f64).sum();
    let delta = logit(model, x, class) as f64 - logit(model, b, class) as f64;
    let d = x - b;
    let slope = |p: &ArrayD<f32>| -> f64 {
        let fwd = model.forward(p.clone()).unwrap();
        let g = input_gradient(&model.graph, &fwd, class, GradientMode::Plain).unwrap();
        g.iter()
            .zip(d.iter())
            .map(|(&g, &d)| g as f64 * d as f64)
            .sum()
    };
    (sum - delta, (slope(x) - slope(b)) / (2.0 * steps as f64))
}

#[test]
fn integrated_gradients_are_complete_on_a_smooth_network() {
    let dir = tempfile::tempdir().unwrap();
    let model = mixed_net(dir.path(), 7, false);
    let x = input(&model, 31);
    let norm = Normalization::default();
    let b = black(&model.input, &model.input.shape, &norm);
    // NHWC: the channel is the last axis
    assert_eq!(b[[0, 2, 3, 1]], -0.456 / 0.224);
    let class = 2;
    let (e32, lead32) = ig_error(&model, &x, &b, class, 32);
    let (e256, lead256) = ig_error(&model, &x, &b, class, 256);
    eprintln!("IG completeness error: 32 steps {e32:.3e} (leading term {lead32:.3e}), 256 steps {e256:.3e} (leading term {lead256:.3e})");
    // What remains after the leading term is O(1 / steps^2) plus f32 rounding
    // of the logits and the summed attributions (~1e-5 here): 10% of the
    // leading term at 32 steps plus 1e-4 bounds it comfortably.
    assert!(
        (e32 - lead32).abs() <= 0.1 * lead32.abs() + 1e-4,
        "{e32} vs {lead32}"
    );
    assert!(
        (e256 - lead256).abs() <= 0.1 * lead256.abs() + 1e-4,
        "{e256} vs {lead256}"
    );
    // so the error shrinks like 1 / steps
    assert!(
        e256.abs() <= lead32.abs() / 8.0 * 1.2 + 1e-4,
        "{e256} vs {e32}"
    );
    // the analyzer: black baseline, the same numbers
    let fwd = model.forward(x.clone()).unwrap();
    let p = AnalyzerParams {
        steps: 256,
        ..AnalyzerParams::default()
    };
    let a = Analyzer::from_name("integrated-gradients", &p).unwrap();
    let e = a.explain(&model, &fwd, class, &norm).unwrap();
    assert_eq!(
        e.relevance,
        integrated_gradients(&model, &x, &b, class, 256, First).unwrap()
    );
    // one step: the gradient at the input times (x - baseline), exactly
    let one = integrated_gradients(&model, &x, &b, class, 1, First).unwrap();
    let g = input_gradient(&model.graph, &fwd, class, GradientMode::Plain).unwrap();
    assert_eq!(one, (&x - &b) * &g);
}

#[test]
fn smoothgrad_is_the_mean_gradient_over_seeded_noise() {
    let dir = tempfile::tempdir().unwrap();
    let model = mixed_net(dir.path(), 8, true);
    let x = input(&model, 41);
    let fwd = model.forward(x.clone()).unwrap();
    let g = input_gradient(&model.graph, &fwd, 0, GradientMode::Plain).unwrap();
    // noise 0: every sample is the input; the f64 mean of equal values is exact
    assert_eq!(smoothgrad(&model, &x, 0, 5, 0.0, 1, First).unwrap(), g);
    let a = smoothgrad(&model, &x, 0, 4, 0.2, 9, First).unwrap();
    assert_eq!(
        a,
        smoothgrad(&model, &x, 0, 4, 0.2, 9, First).unwrap(),
        "deterministic"
    );
    assert_ne!(
        a,
        smoothgrad(&model, &x, 0, 4, 0.2, 10, First).unwrap(),
        "seeded"
    );
    // the definition: sigma = noise * (max - min), normals drawn in order
    let (lo, hi) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let sigma = 0.2 * (hi - lo);
    let mut rng = Rng::new(9);
    let mut want = ArrayD::<f64>::zeros(x.shape());
    for _ in 0..4 {
        let xn = x.mapv(|v| v + sigma * rng.normal());
        let f = model.forward(xn).unwrap();
        let gk = input_gradient(&model.graph, &f, 0, GradientMode::Plain).unwrap();
        want += &gk.mapv(|v| v as f64 / 4.0);
    }
    // same sums in another order: f32 rounding of the mean, ~1e-7 relative
    let scale = max_abs(&a);
    for (p, q) in a.iter().zip(want.iter()) {
        assert!((*p as f64 - q).abs() <= 1e-6 * scale as f64, "{p} vs {q}");
    }
    assert_ne!(a, g, "noise changes the gradient");
}

#[test]
fn guided_backprop_is_never_negative_at_a_rectifier_input() {
    let dir = tempfile::tempdir().unwrap();
    for act in ["Relu", "Clip"] {
        let model = rectified_input_net(dir.path(), 9, act);
        let x = input(&model, 51);
        let fwd = model.forward(x.clone()).unwrap();
        for class in 0..model.classes {
            let guided = input_gradient(&model.graph, &fwd, class, GradientMode::Guided).unwrap();
            let plain = input_gradient(&model.graph, &fwd, class, GradientMode::Plain).unwrap();
            for ((&gd, &p), &v) in guided.iter().zip(plain.iter()).zip(x.iter()) {
                assert!(gd >= 0.0, "{act}: guided gradient {gd} < 0");
                if v <= 0.0 {
                    assert_eq!(gd, 0.0, "{act}: the rectifier was off");
                }
                assert!(p.is_finite());
            }
            assert!(
                plain.iter().any(|&p| p < 0.0),
                "{act}: the test needs negative gradients"
            );
            assert!(
                guided.iter().any(|&p| p > 0.0),
                "{act}: some guided gradient passes"
            );
        }
        let e = Analyzer::GuidedBackprop { ties: First }
            .explain(&model, &fwd, 0, &Normalization::default())
            .unwrap();
        assert_eq!(
            e.relevance,
            input_gradient(&model.graph, &fwd, 0, GradientMode::Guided).unwrap()
        );
    }
}

#[test]
fn a_gradient_through_an_operator_without_derivative_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Net::new(13, 10, &[1, 3, 4, 4]);
    let c = n.conv("x", 3, 2, 3, vec![pads([1; 4])]);
    let t = n.op("Cast", &[&c], vec![Attr::Int("to", 6)]); // int32
    let t = n.op("Cast", &[&t], vec![Attr::Int("to", 1)]); // float
    let f = n.op("Flatten", &[&t], vec![]);
    let logits = n.gemm(&f, 32, 2);
    let model = n.load(dir.path(), "cast.onnx", &logits);
    let x = input(&model, 61);
    let fwd = model.forward(x).unwrap();
    let norm = Normalization::default();
    // relevance passes as before
    let lrp = Analyzer::from_name("epsilon", &AnalyzerParams::default()).unwrap();
    lrp.explain(&model, &fwd, 0, &norm).unwrap();
    let err = Analyzer::Gradient { ties: First }
        .explain(&model, &fwd, 0, &norm)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("Cast node 'Cast_1'") && msg.contains("not implemented"),
        "{msg}"
    );
}

#[test]
fn every_analyzer_name_round_trips_and_bad_names_and_parameters_are_rejected() {
    let p = AnalyzerParams::default();
    assert_eq!((p.steps, p.samples, p.noise, p.seed), (32, 32, 0.1, 0));
    assert_eq!(all_names().count(), NAMES.len() + GRADIENT_NAMES.len());
    for (name, _) in all_names() {
        let a = Analyzer::from_name(name, &p).unwrap();
        assert_eq!(a.name(), *name);
        assert_eq!(Analyzer::from_name(&a.name(), &p).unwrap(), a);
        let unsigned = ["gradient", "smoothgrad", "guided-backprop"].contains(name);
        assert_eq!(a.signed(), !unsigned, "{name}");
    }
    assert_eq!(
        Analyzer::from_name("integrated-gradients", &AnalyzerParams { steps: 7, ..p }).unwrap(),
        Analyzer::IntegratedGradients {
            steps: 7,
            ties: First
        }
    );
    let err = Analyzer::from_name("saliency", &p).unwrap_err().to_string();
    for (name, _) in all_names() {
        assert!(err.contains(name), "{err}");
    }
    let bad = [
        AnalyzerParams { steps: 0, ..p },
        AnalyzerParams { samples: 0, ..p },
        AnalyzerParams { noise: -0.1, ..p },
        AnalyzerParams {
            noise: f32::NAN,
            ..p
        },
    ];
    for q in bad {
        assert!(Analyzer::from_name("smoothgrad", &q).is_err(), "{q:?}");
    }
}

/// Concat of three Pads (constant, reflect, edge), a strided Conv, swish as
/// `Mul(x, Sigmoid(x))`, Resize nearest x2, a squeeze-excitation gate
/// (HardSigmoid, gate first), Sum of three activations, ReduceMean and
/// ReduceSum (axes as an input) over H, W, Gemm.
fn structural_net(dir: &Path, seed: u64) -> Model {
    let mut n = Net::new(13, seed, &[1, 3, 6, 6]);
    let c = n.conv("x", 3, 4, 3, vec![pads([1; 4])]);
    let t = n.op("Tanh", &[&c], vec![]);
    let pad = |n: &mut Net, p: [i64; 8], mode: &str| {
        let name = n.name("pads");
        let pn = n.b.initializer_i64(&name, &[8], &p);
        n.op("Pad", &[&t, &pn], vec![Attr::Str("mode", mode.into())])
    };
    let p1 = pad(&mut n, [0, 0, 1, 0, 0, 0, 0, 1], "constant");
    let p2 = pad(&mut n, [0, 0, 1, 1, 0, 0, 0, 0], "reflect");
    let p3 = pad(&mut n, [0, 0, 0, 0, 0, 0, 1, 1], "edge");
    let cat = n.op("Concat", &[&p1, &p2, &p3], vec![Attr::Int("axis", 1)]);
    let c2 = n.conv(&cat, 12, 4, 3, vec![pads([1; 4]), strides(2)]);
    let s = n.op("Sigmoid", &[&c2], vec![]);
    let sw = n.op("Mul", &[&c2, &s], vec![]);
    let scales = n.constant(&[4], &[1.0, 1.0, 2.0, 2.0]);
    let resize = vec![
        Attr::Str("coordinate_transformation_mode", "asymmetric".into()),
        Attr::Str("mode", "nearest".into()),
        Attr::Str("nearest_mode", "floor".into()),
    ];
    let up = n.op("Resize", &[&sw, "", &scales], resize);
    let gap = n.op("GlobalAveragePool", &[&up], vec![]);
    let e = n.conv(&gap, 4, 4, 1, vec![]);
    let hs = n.op("HardSigmoid", &[&e], vec![]);
    let g = n.op("Mul", &[&hs, &up], vec![]);
    let th = n.op("Tanh", &[&up], vec![]);
    let sum = n.op("Sum", &[&g, &up, &th], vec![]);
    let axes = vec![Attr::Ints("axes", vec![2, 3]), Attr::Int("keepdims", 0)];
    let rm = n.op("ReduceMean", &[&sum], axes);
    let an = n.name("axes");
    let ax = n.b.initializer_i64(&an, &[2], &[2, 3]);
    let rs = n.op("ReduceSum", &[&g, &ax], vec![Attr::Int("keepdims", 0)]);
    let a = n.op("Add", &[&rm, &rs], vec![]);
    let logits = n.gemm(&a, 4, 3);
    n.load(dir, "structural.onnx", &logits)
}

#[test]
fn gradient_matches_finite_differences_through_concat_pad_resize_gates_and_reductions() {
    let dir = tempfile::tempdir().unwrap();
    check_model("structural", &structural_net(dir.path(), 6));
}
