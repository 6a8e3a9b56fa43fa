//! The graph-native forward pass against tract's, on the same models: logits,
//! and the relevance computed from each pass (tract's activations feed the same
//! backward code, so any difference comes from the forward pass).

use std::path::Path;

use lrp_heatmap::analyzers::lrp::explain;
use lrp_heatmap::composite::Composite;
use lrp_heatmap::model::{Engine, Model, BUNDLED_NAME};
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::synth::{he_normal, vgg16, Attr, OnnxBuilder, Rng, VggSpec, VggStyle};
use ndarray::{ArrayD, IxDyn};

use crate::support::{max_abs, save_model};

fn image(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = Rng::new(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.uniform_range(-2.0, 2.5))
}

/// Loads `path` with both engines and compares logits and relevance.
fn check(path: &Path, rules: &[&str]) {
    let native = Model::load(path).expect("native load");
    assert_eq!(native.engine(), "native", "{}", path.display());
    let tract = Model::options()
        .engine(Engine::Tract)
        .load(path)
        .expect("tract load");
    assert!(tract.engine().starts_with("tract"));
    for seed in 0..2 {
        let x = image(&native.input.shape, seed);
        let fa = native.forward(x.clone()).unwrap();
        let fb = tract.forward(x).unwrap();
        let scale = fb
            .logits
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(1e-3);
        for (a, b) in fa.logits.iter().zip(&fb.logits) {
            // f32 sums in another order: a few ulps per layer
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{}: logit {a} vs {b}",
                path.display()
            );
        }
        let class = fb.top_k(1)[0].0;
        for rule in rules {
            let c = Composite::from_name(rule, &Default::default()).unwrap();
            let norm = Normalization::default();
            let ra = explain(&native.graph, &fa, class, &c, &norm, 3).unwrap();
            let rb = explain(&tract.graph, &fb, class, &c, &norm, 3).unwrap();
            let diff = (&ra.relevance - &rb.relevance).mapv(f32::abs);
            let tol = 1e-3 * max_abs(&rb.relevance).max(1e-6);
            assert!(
                max_abs(&diff) <= tol,
                "{} {rule}: relevance differs by {} (max |R| {})",
                path.display(),
                max_abs(&diff),
                max_abs(&rb.relevance)
            );
        }
    }
}

#[test]
fn bundled_efficientnet_same_in_both_engines() {
    check(Path::new(BUNDLED_NAME), &["zplus", "epsilon-plus-flat"]);
}

#[test]
fn vgg_styles_same_in_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    for (i, style) in [VggStyle::Torchvision, VggStyle::Zoo]
        .into_iter()
        .enumerate()
    {
        let mut spec = VggSpec::tiny(style);
        spec.batchnorm = i == 0;
        let p = save_model(dir.path(), &format!("vgg{i}.onnx"), &vgg16(&spec));
        check(&p, &["zplus", "epsilon"]);
    }
}

/// Every operator family of the native pass in one small net: normalisation
/// by constants, convolutions (plain, strided depthwise), activations,
/// a residual sum, both pools, a transpose, a reshape by a constant shape and
/// dense layers as Gemm and MatMul + Add.
#[test]
fn every_native_operator_same_in_both_engines() {
    let mut rng = Rng::new(7);
    let mut b = OnnxBuilder::new(13);
    b.input("img", &[1, 3, 16, 16]);
    let mean = b.initializer("mean", &[1, 3, 1, 1], &[0.4, 0.5, 0.6]);
    let std = b.initializer("std", &[1, 3, 1, 1], &[0.2, 0.25, 0.3]);
    b.node("Sub", &["img", &mean], &["s"], vec![]);
    b.node("Div", &["s", &std], &["n"], vec![]);
    let w1 = b.initializer("w1", &[8, 3, 3, 3], &he_normal(&mut rng, 27, 216));
    let b1 = b.initializer("b1", &[8], &[0.01; 8]);
    b.node(
        "Conv",
        &["n", &w1, &b1],
        &["c1"],
        vec![Attr::Ints("pads", vec![1; 4])],
    );
    b.node(
        "LeakyRelu",
        &["c1"],
        &["a1"],
        vec![Attr::Float("alpha", 0.1)],
    );
    let w2 = b.initializer("w2", &[8, 8, 3, 3], &he_normal(&mut rng, 72, 576));
    b.node(
        "Conv",
        &["a1", &w2],
        &["c2"],
        vec![Attr::Ints("pads", vec![1; 4])],
    );
    b.node("Add", &["c2", "a1"], &["r"], vec![]);
    b.node("HardSwish", &["r"], &["a2"], vec![]);
    let wd = b.initializer("wd", &[8, 1, 3, 3], &he_normal(&mut rng, 9, 72));
    b.node(
        "Conv",
        &["a2", &wd],
        &["dw"],
        vec![
            Attr::Int("group", 8),
            Attr::Ints("strides", vec![2, 2]),
            Attr::Ints("pads", vec![1, 1, 0, 0]),
        ],
    );
    b.node("Clip", &["dw"], &["a3"], vec![]);
    b.node("Elu", &["a3"], &["a4"], vec![]);
    b.node(
        "MaxPool",
        &["a4"],
        &["mp"],
        vec![
            Attr::Ints("kernel_shape", vec![2, 2]),
            Attr::Ints("strides", vec![1, 1]),
        ],
    );
    b.node(
        "AveragePool",
        &["mp"],
        &["ap"],
        vec![
            Attr::Ints("kernel_shape", vec![3, 3]),
            Attr::Ints("pads", vec![1; 4]),
            Attr::Int("count_include_pad", 0),
        ],
    );
    b.node("Sigmoid", &["ap"], &["sg"], vec![]);
    let gain = b.initializer(
        "gain",
        &[8, 1, 1],
        &[0.5, 1.0, 1.5, 2.0, -1.0, 0.7, 1.1, 0.9],
    );
    b.node("Mul", &["sg", &gain], &["sc"], vec![]);
    b.node(
        "Transpose",
        &["sc"],
        &["t"],
        vec![Attr::Ints("perm", vec![0, 2, 3, 1])],
    );
    let shape = b.initializer_i64("shape", &[2], &[1, -1]);
    b.node("Reshape", &["t", &shape], &["flat"], vec![]);
    // 16x16 -> 8x8 by the depthwise conv ((16 + 1 - 3) / 2 + 1), 7x7 after
    // the 2x2 max pool of stride 1, 7x7 after the padded 3x3 average pool
    let k = 8 * 7 * 7;
    let wf = b.initializer("wf", &[16, k], &he_normal(&mut rng, k, 16 * k));
    let bf = b.initializer("bf", &[16], &[0.02; 16]);
    b.node(
        "Gemm",
        &["flat", &wf, &bf],
        &["f1"],
        vec![Attr::Int("transB", 1)],
    );
    b.node("Tanh", &["f1"], &["a5"], vec![]);
    let wm = b.initializer("wm", &[16, 5], &he_normal(&mut rng, 16, 80));
    let bm = b.initializer("bm", &[5], &[0.1, -0.1, 0.0, 0.2, 0.3]);
    b.node("MatMul", &["a5", &wm], &["mm"], vec![]);
    b.node("Add", &["mm", &bm], &["logits"], vec![]);
    b.output("logits", &[1, 5]);
    let dir = tempfile::tempdir().unwrap();
    let p = save_model(dir.path(), "ops.onnx", &b);
    check(&p, &["epsilon", "zplus"]);
}
