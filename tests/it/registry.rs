//! An operator added through the operator registry (`Mean`, `src/ops/mean.rs`
//! and its one line in `ops::registry::FAMILIES`) runs end to end: import,
//! native forward pass, gradient and relevance, and the self-check. The
//! fixture is written by the `onnx` package's own helpers with PyTorch's
//! float64 numbers for the same network (`scripts/export_mean.py`).

use std::path::{Path, PathBuf};

use lrp_heatmap::analyzers::gradient::{input_gradient, GradientMode};
use lrp_heatmap::analyzers::selfcheck::{check, CheckOptions, Verdict};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::{Engine, Model};
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::npy::read_npy_f32;
use ndarray::{ArrayD, IxDyn};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry")
        .join(name)
}

fn npy(name: &str) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(&fixture(name)).expect("fixture reads");
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn mean_from_the_registry_matches_pytorch() {
    let path = fixture("mean.onnx");
    let model = Model::load(&path).expect("loads");
    assert_eq!(
        model.engine(),
        "native",
        "a registered operator runs natively"
    );
    assert!(model
        .graph
        .nodes
        .iter()
        .any(|n| n.op_type == "Mean" && n.op.downcast::<lrp_heatmap::ops::mean::Mean>().is_some()));
    let input = npy("mean.input.npy");
    let fwd = model.forward(input.clone()).expect("forward");
    // PyTorch's float64 logits: top class 1 (scripts/export_mean.py prints them)
    let want = npy("mean.logits.npy");
    let err = max_rel(&fwd.logits, want.as_slice().unwrap());
    assert!(err < 1e-5, "logits differ from PyTorch's by {err:.1e}");
    // tract runs the same file to the same logits
    let tract = Model::options()
        .engine(Engine::Tract)
        .load(&path)
        .expect("tract loads");
    let t = tract.forward(input.clone()).expect("tract forward");
    assert!(max_rel(&fwd.logits, &t.logits) < 1e-5);
    // the gradient equals autograd's
    let g = input_gradient(&model.graph, &fwd, 1, GradientMode::Plain).expect("gradient");
    let err = max_rel(
        g.as_slice().unwrap(),
        npy("mean.grad.npy").as_slice().unwrap(),
    );
    assert!(err < 1e-4, "gradient differs from autograd's by {err:.1e}");
    // the maps of three rules are finite
    let params = AnalyzerParams::default();
    for rule in ["lrp0", "zplus", "epsilon-plus-flat"] {
        let a = Analyzer::from_name(rule, &params).expect("known rule");
        let e = a
            .explain(&model, &fwd, 1, &Normalization::default())
            .expect(rule);
        assert!(
            e.relevance.iter().all(|v| v.is_finite()),
            "{rule} map finite"
        );
    }
    // every node's backward pass agrees with its forward pass, and LRP-0
    // equals gradient x input through the Mean (its lrp0_breaker is None)
    let opts = CheckOptions {
        class: Some(1),
        ..CheckOptions::default()
    };
    let report = check(&model, input, &opts).expect("check runs");
    assert!(report.passed(), "self-check of the Mean model fails");
    let lrp0 = report
        .figures
        .iter()
        .find(|f| f.what.starts_with("LRP-0"))
        .expect("an LRP-0 figure");
    assert_eq!(lrp0.verdict, Verdict::Pass, "{lrp0:?}");
}
