//! The copying operators (`Slice`, `Split`, `Gather`, `GatherElements`,
//! `Expand`, `Tile`, `DepthToSpace`, `SpaceToDepth`, 5-D `Reshape` and
//! `Transpose` of a channel shuffle) inside small ReLU networks written as
//! ONNX files:
//! - the native forward pass against tract's (an independent implementation
//!   of every operator);
//! - the gradient against central differences of the forward pass along
//!   random unit directions `v` (tract, `f32`): `(f(x + h v) - f(x - h v)) /
//!   2h` against `g . v`. Rounding gives about `8 eps |f| / h` (2e-3 at
//!   h = 4e-4, |f| ~ 1); ReLU kinks crossed by the step give errors of the
//!   order of the gradient (seen at h = 1e-2 and 1e-3), so a direction
//!   passes when one of h = 1e-2, 2e-3, 4e-4 agrees within
//!   `1e-3 |g| + 16 eps max(|f|, 1) / h`. A copy scattered back to the
//!   wrong element gives errors of the order of `|g|`;
//! - LRP-0 against gradient x input, equal on ReLU networks whose other
//!   layers are linear or copy (Ancona et al. 2018), to 1e-4 of max |R|.

use std::path::Path;

use lrp_heatmap::analyzers::gradient::{input_gradient, GradientMode};
use lrp_heatmap::analyzers::lrp::explain;
use lrp_heatmap::composite::Composite;
use lrp_heatmap::model::{Engine, Model};
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::synth::{he_normal, Attr, Rng};

use crate::support::{dot, max_abs, normal, Net};

/// Makers of layers for the networks below.
impl Net {
    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.name("i");
        self.b.initializer_i64(&name, &[v.len()], v)
    }

    fn outputs(&mut self, op: &str, inputs: &[&str], k: usize, attrs: Vec<Attr>) -> Vec<String> {
        let outs: Vec<String> = (0..k).map(|_| self.name("t")).collect();
        let refs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
        self.b.node(op, inputs, &refs, attrs);
        outs
    }

    /// He-initialised `Conv` (3x3, padding 1, or 1x1) with bias, then ReLU.
    fn conv_relu(&mut self, x: &str, cin: usize, cout: usize, k: usize, stride: i64) -> String {
        let fan_in = cin * k * k;
        let w = he_normal(&mut self.rng, fan_in, cout * fan_in);
        let wn = self.name("w");
        let w = self.b.initializer(&wn, &[cout, cin, k, k], &w);
        let bias: Vec<f32> = (0..cout).map(|_| self.rng.normal() * 0.1).collect();
        let bn = self.name("b");
        let bias = self.b.initializer(&bn, &[cout], &bias);
        let p = (k / 2) as i64;
        let attrs = vec![
            Attr::Ints("pads", vec![p; 4]),
            Attr::Ints("strides", vec![stride, stride]),
        ];
        let c = self.op("Conv", &[x, &w, &bias], attrs);
        self.op("Relu", &[&c], vec![])
    }

    fn head(&mut self, x: &str, k: usize, m: usize) -> String {
        let f = self.op("Flatten", &[x], vec![]);
        let w = he_normal(&mut self.rng, k, m * k);
        let wn = self.name("w");
        let w = self.b.initializer(&wn, &[m, k], &w);
        let bias: Vec<f32> = (0..m).map(|_| self.rng.normal() * 0.1).collect();
        let bn = self.name("b");
        let bias = self.b.initializer(&bn, &[m], &bias);
        self.op("Gemm", &[&f, &w, &bias], vec![Attr::Int("transB", 1)])
    }

    /// ShuffleNet's channel shuffle: Reshape to 5-D, Transpose, Reshape back.
    fn shuffle(&mut self, x: &str, groups: i64, c: i64, h: i64, w: i64) -> String {
        let s5 = self.ints(&[1, groups, c / groups, h, w]);
        let r = self.op("Reshape", &[x, &s5], vec![]);
        let t = self.op(
            "Transpose",
            &[&r],
            vec![Attr::Ints("perm", vec![0, 2, 1, 3, 4])],
        );
        let s4 = self.ints(&[1, c, h, w]);
        self.op("Reshape", &[&t, &s4], vec![])
    }
}

/// Opset 13: Split (sizes as an input), Slice (negative step, INT64 extremes),
/// Concat, channel shuffle, Gather, SpaceToDepth, DepthToSpace (CRD), Tile,
/// Slice + Expand added back, GatherElements.
fn net13(dir: &Path) -> std::path::PathBuf {
    let mut n = Net::new(13, 1, &[1, 3, 8, 8]);
    let r1 = n.conv_relu("x", 3, 8, 3, 1);
    let sizes = n.ints(&[3, 5]);
    let s = n.outputs("Split", &[&r1, &sizes], 2, vec![Attr::Int("axis", 1)]);
    // channels 4, 2, 0 of the second piece
    let (st, en, ax, sp) = (
        n.ints(&[-1]),
        n.ints(&[i64::MIN]),
        n.ints(&[1]),
        n.ints(&[-2]),
    );
    let u = n.op("Slice", &[&s[1], &st, &en, &ax, &sp], vec![]);
    let cat = n.op("Concat", &[&s[0], &u], vec![Attr::Int("axis", 1)]);
    let sh = n.shuffle(&cat, 2, 6, 8, 8);
    let idx = n.ints(&[5, 0, 0, -3]);
    let g = n.op("Gather", &[&sh, &idx], vec![Attr::Int("axis", 1)]);
    let d = n.op("SpaceToDepth", &[&g], vec![Attr::Int("blocksize", 2)]);
    let r2 = n.conv_relu(&d, 16, 8, 3, 1);
    let e = n.op(
        "DepthToSpace",
        &[&r2],
        vec![Attr::Int("blocksize", 2), Attr::Str("mode", "CRD".into())],
    );
    let reps = n.ints(&[1, 2, 1, 1]);
    let tl = n.op("Tile", &[&e, &reps], vec![]);
    // row 2 (of 8) through to the end with step 100: one row, expanded back
    let (st, en, ax, sp) = (
        n.ints(&[2]),
        n.ints(&[i64::MAX]),
        n.ints(&[-2]),
        n.ints(&[100]),
    );
    let row = n.op("Slice", &[&tl, &st, &en, &ax, &sp], vec![]);
    let shape = n.ints(&[1, 4, 8, 1]);
    let ex = n.op("Expand", &[&row, &shape], vec![]);
    let sum = n.op("Add", &[&tl, &ex], vec![]);
    let mut rng = Rng::new(7);
    let ind: Vec<i64> = (0..4 * 8 * 8)
        .map(|_| (rng.uniform() * 16.0) as i64 - 8)
        .collect();
    let ind = n.b.initializer_i64("gather_idx", &[1, 4, 8, 8], &ind);
    let ge = n.op("GatherElements", &[&sum, &ind], vec![Attr::Int("axis", 3)]);
    let r3 = n.conv_relu(&ge, 4, 4, 3, 2);
    let logits = n.head(&r3, 64, 5);
    n.save(dir, "move13.onnx", &logits)
}

/// Opset 18: Split by `num_outputs` (8 channels into 3, 3, 2) put back in
/// another order, a second Split with an unused output, a channel shuffle.
fn net18(dir: &Path) -> std::path::PathBuf {
    let mut n = Net::new(18, 2, &[1, 3, 6, 6]);
    let r1 = n.conv_relu("x", 3, 8, 3, 1);
    let s = n.outputs(
        "Split",
        &[&r1],
        3,
        vec![Attr::Int("axis", 1), Attr::Int("num_outputs", 3)],
    );
    let cat = n.op("Concat", &[&s[2], &s[0], &s[1]], vec![Attr::Int("axis", 1)]);
    let sh = n.shuffle(&cat, 4, 8, 6, 6);
    let h = n.outputs(
        "Split",
        &[&sh],
        2,
        vec![Attr::Int("axis", -1), Attr::Int("num_outputs", 2)],
    );
    let r2 = n.conv_relu(&h[1], 8, 4, 3, 1);
    let logits = n.head(&r2, 4 * 6 * 3, 4);
    n.save(dir, "move18.onnx", &logits)
}

/// Opset 9: Slice and Split with attributes.
fn net9(dir: &Path) -> std::path::PathBuf {
    let mut n = Net::new(9, 3, &[1, 3, 6, 6]);
    let r1 = n.conv_relu("x", 3, 6, 3, 1);
    let s = n.outputs(
        "Split",
        &[&r1],
        2,
        vec![Attr::Int("axis", 1), Attr::Ints("split", vec![2, 4])],
    );
    let sl = n.op(
        "Slice",
        &[&s[1]],
        vec![
            Attr::Ints("starts", vec![1]),
            Attr::Ints("ends", vec![1000]),
            Attr::Ints("axes", vec![1]),
        ],
    );
    let cat = n.op("Concat", &[&s[0], &sl], vec![Attr::Int("axis", 1)]);
    // columns 1..5 of 6, axes defaulting to the first ones
    let cat = n.op(
        "Slice",
        &[&cat],
        vec![
            Attr::Ints("starts", vec![0, 0, 0, -5]),
            Attr::Ints("ends", vec![1, 5, 6, -1]),
        ],
    );
    let r2 = n.conv_relu(&cat, 5, 4, 3, 1);
    let logits = n.head(&r2, 4 * 6 * 4, 3);
    n.save(dir, "move9.onnx", &logits)
}

/// TorchScript's channel split: the Slice bounds computed from the shape of
/// the activation (Shape, Gather, Div, Unsqueeze) at run time.
fn net_runtime(dir: &Path) -> std::path::PathBuf {
    let mut n = Net::new(13, 4, &[1, 3, 6, 6]);
    let r1 = n.conv_relu("x", 3, 8, 3, 1);
    let shape = n.op("Shape", &[&r1], vec![]);
    let one = n.b.initializer_i64("one", &[], &[1]);
    let c = n.op("Gather", &[&shape, &one], vec![Attr::Int("axis", 0)]);
    let two = n.b.initializer_i64("two", &[], &[2]);
    let half = n.op("Div", &[&c, &two], vec![]);
    let zero = n.ints(&[0]);
    let half1 = n.op("Unsqueeze", &[&half, &zero], vec![]);
    let c1 = n.op("Unsqueeze", &[&c, &zero], vec![]);
    let (st, ax) = (n.ints(&[0]), n.ints(&[1]));
    let a = n.op("Slice", &[&r1, &st, &half1, &ax], vec![]);
    let b = n.op("Slice", &[&r1, &half1, &c1, &ax], vec![]);
    let rb = n.conv_relu(&b, 4, 4, 3, 1);
    let cat = n.op("Concat", &[&a, &rb], vec![Attr::Int("axis", 1)]);
    let sh = n.shuffle(&cat, 2, 8, 6, 6);
    let r2 = n.conv_relu(&sh, 8, 4, 3, 2);
    let logits = n.head(&r2, 4 * 3 * 3, 3);
    n.save(dir, "move-runtime.onnx", &logits)
}

/// The checks of the top of the file on the model at `path`.
fn check(path: &Path, native: bool) {
    let what = path.file_name().unwrap().to_string_lossy().into_owned();
    let auto = Model::load(path).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert_eq!(
        auto.engine() == "native",
        native,
        "{what}: {}",
        auto.engine()
    );
    let tract = Model::options().engine(Engine::Tract).load(path).unwrap();
    let mut rng = Rng::new(5);
    for _ in 0..2 {
        let x = normal(&mut rng, &tract.input.shape);
        let fa = auto.forward(x.clone()).unwrap();
        let fb = tract.forward(x.clone()).unwrap();
        let scale = fb.logits.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (a, b) in fa.logits.iter().zip(&fb.logits) {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}: logit {a} vs tract {b}"
            );
        }
        for class in [0, tract.classes - 1] {
            let g = input_gradient(&auto.graph, &fa, class, GradientMode::Plain).unwrap();
            let gnorm = dot(&g, &g).sqrt();
            assert!(gnorm > 0.0, "{what}: zero gradient");
            let f0 = fb.logits[class].abs().max(1.0);
            for _ in 0..4 {
                // a unit direction
                let v = normal(&mut rng, x.shape());
                let v = &v / dot(&v, &v).sqrt() as f32;
                let want = dot(&g, &v);
                let errs: Vec<f64> = [1e-2f32, 2e-3, 4e-4]
                    .iter()
                    .map(|&h| {
                        let at = |s: f32| {
                            let xs = &x + &(&v * s);
                            tract.forward(xs).unwrap().logits[class] as f64
                        };
                        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
                        let tol = 1e-3 * gnorm + 16.0 * f32::EPSILON as f64 * f0 as f64 / h as f64;
                        (fd - want).abs() / tol
                    })
                    .collect();
                assert!(
                    errs.iter().any(|&e| e <= 1.0),
                    "{what}, class {class}: g.v = {want}, finite differences off by {errs:?} tolerances"
                );
            }
            // LRP-0 = gradient x input on these ReLU networks
            let c = Composite::from_name("lrp0", &Default::default()).unwrap();
            let e = explain(&auto.graph, &fa, class, &c, &Normalization::default(), 3).unwrap();
            let gx = &g * &x;
            let diff = max_abs(&(&e.relevance - &gx));
            assert!(
                diff <= 1e-4 * max_abs(&gx).max(1e-6),
                "{what}, class {class}: LRP-0 differs from gradient x input by {diff} (max {})",
                max_abs(&gx)
            );
        }
    }
}

#[test]
fn copying_operators_agree_with_tract_finite_differences_and_gradient_x_input() {
    let dir = tempfile::tempdir().unwrap();
    check(&net13(dir.path()), true);
    check(&net18(dir.path()), true);
    check(&net9(dir.path()), true);
}

#[test]
fn slice_bounds_computed_at_run_time_are_read_from_the_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = net_runtime(dir.path());
    check(&path, false);
    let m = Model::load(&path).unwrap();
    assert!(
        m.engine().contains("computed at run time"),
        "{}",
        m.engine()
    );
}

#[test]
fn a_gather_of_indices_from_the_image_is_refused_with_the_node_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Net::new(13, 6, &[1, 3, 4, 4]);
    let r = n.conv_relu("x", 3, 4, 3, 1);
    let table = n.b.initializer("table", &[10, 4], &[0.5; 40]);
    let g = n.op("Gather", &[&table, &r], vec![Attr::Int("axis", 0)]);
    let logits = n.head(&g, 4 * 4 * 4 * 4, 2);
    let path = n.save(dir.path(), "bad.onnx", &logits);
    let e = format!("{:#}", Model::load(&path).err().expect("refused"));
    assert!(
        e.contains("unsupported operator 'Gather'") && e.contains("indices"),
        "{e}"
    );
}
