//! Vision transformers from the real exporters: a reduced-width torchvision
//! ViT (`vit_tv`: the `vit_b_16` class with 2 blocks, 3 heads, width 48), a
//! reduced timm DeiT (`deit`: `deit_tiny_patch16_224` with width 48, 2
//! blocks) at 224 x 224, and a tiny torchvision ViT (`vit_tiny`: 32 x 32
//! pixels, patches of 8, 2 blocks, 2 heads, width 16), each exported by
//! PyTorch's TorchScript exporter (opset 14: LayerNorm and GELU decomposed,
//! dynamic batch) and its dynamo exporter (opset 18), with PyTorch's logits
//! and autograd gradient (float64), LXT's CP-LRP map of `vit_tv` and an
//! independent dense float64 reference of the four transformer composites
//! on `vit_tiny` (numpy, explicit matrices, proved by the script against
//! autograd of the modified networks). `scripts/export_vit.py` made
//! `tests/fixtures/vit/` (see its docstring for the command and versions);
//! nothing here runs Python.
//!
//! Measured figures are printed (`cargo test --test it -- vit:: --nocapture`).

use std::path::PathBuf;

use lrp_heatmap::analyzers::gradient::{input_gradient, GradientMode};
use lrp_heatmap::analyzers::selfcheck::{check, cosine, rel_l2, CheckOptions, Verdict};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::npy::read_npy_f32;
use ndarray::{ArrayD, IxDyn};

use crate::support::repo;

fn fixtures() -> PathBuf {
    repo("tests/fixtures/vit")
}

fn npy(name: &str) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(&fixtures().join(name)).expect("fixture reads");
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

fn top_of(arch: &str) -> usize {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    v["models"][arch]["top"].as_u64().expect("top") as usize
}

/// The relevance map of composite `name` for the top class.
fn map(model: &Model, input: &ArrayD<f32>, top: usize, name: &str) -> ArrayD<f32> {
    let fwd = model.forward(input.clone()).expect("forward");
    let analyzer = Analyzer::from_name(name, &AnalyzerParams::default()).expect("known");
    let e = analyzer
        .explain(model, &fwd, top, &Normalization::default())
        .expect("explains");
    e.relevance
}

/// Logits, gradient, every composite's ledger and `check`, for one file;
/// returns the failures.
fn check_file(arch: &str, exporter: &str) -> Vec<String> {
    let path = fixtures().join(format!("{arch}.{exporter}.onnx"));
    let top = top_of(arch);
    let mut fails = Vec::new();
    let model = match Model::load(&path) {
        Ok(m) => m,
        Err(e) => return vec![format!("{arch}.{exporter}: load: {e:#}")],
    };
    let input = npy(&format!("{arch}.input.npy"));
    let want_logits = npy(&format!("{arch}.logits.npy"));
    let want_grad = npy(&format!("{arch}.grad.npy"));
    let fwd = match model.forward(input.clone()) {
        Ok(f) => f,
        Err(e) => return vec![format!("{arch}.{exporter}: forward: {e:#}")],
    };
    let scale = want_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err =
        (fwd.logits.iter().zip(&want_logits)).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    if fwd.logits.len() != want_logits.len() || err > 1e-3 {
        fails.push(format!(
            "{arch}.{exporter}: logits differ from PyTorch's by {err:.1e} of max |logit|"
        ));
    }
    let mut line = format!("{arch:>10}.{exporter:<6} logits {err:.1e}");
    match input_gradient(&model.graph, &fwd, top, GradientMode::Plain) {
        Ok(g) => {
            let (c, r) = (cosine(&g, &want_grad), rel_l2(&g, &want_grad));
            line += &format!("  gradient cos {c:.6} rel {r:.1e}");
            if c.is_nan() || c < 0.9999 {
                fails.push(format!(
                    "{arch}.{exporter}: gradient cosine {c:.6}, relative L2 {r:.1e} against autograd"
                ));
            }
        }
        Err(e) => fails.push(format!("{arch}.{exporter}: gradient: {e:#}")),
    }
    // every rule and composite: a finite map and a ledger that balances
    let norm = Normalization::default();
    let params = AnalyzerParams::default();
    let mut worst = (0.0f64, String::new());
    for (name, _) in lrp_heatmap::composite::NAMES {
        let analyzer = Analyzer::from_name(name, &params).expect("known composite");
        match analyzer.explain(&model, &fwd, top, &norm) {
            Ok(e) => {
                let ledger = e.ledger.expect("LRP has a ledger");
                let (m, at) = ledger.worst_mismatch();
                if m > worst.0 {
                    worst = (m, format!("{name} at {at}"));
                }
                if let Err(m) = ledger.check(1e-4) {
                    fails.push(format!("{arch}.{exporter}: {name}: {m}"));
                }
                if !e.relevance.iter().all(|v| v.is_finite()) {
                    fails.push(format!("{arch}.{exporter}: {name} map is not finite"));
                }
            }
            Err(e) => fails.push(format!("{arch}.{exporter}: {name}: {e:#}")),
        }
    }
    line += &format!("  ledgers within {:.0e} ({})", worst.0, worst.1);
    let opts = CheckOptions {
        class: Some(top),
        ..CheckOptions::default()
    };
    match check(&model, input, &opts) {
        Ok(report) => {
            let warned = report.figures.iter().any(|f| f.verdict == Verdict::Warn);
            line += &format!(
                "  check {} ({} nodes one by one)",
                if report.passed() { "passed" } else { "FAILED" },
                report.nodes_checked
            );
            if !report.passed() || warned {
                let mut text = Vec::new();
                report.write_text(&mut text).expect("report writes");
                fails.push(format!(
                    "{arch}.{exporter}: check:\n{}",
                    String::from_utf8_lossy(&text)
                ));
            }
        }
        Err(e) => fails.push(format!("{arch}.{exporter}: check: {e:#}")),
    }
    println!("{line}");
    fails
}

fn check_exporter(exporter: &str) {
    let mut fails = Vec::new();
    for arch in ["vit_tv", "deit", "vit_tiny"] {
        fails.extend(check_file(arch, exporter));
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn torchscript_exports_match_pytorch() {
    check_exporter("ts");
}

#[test]
fn dynamo_exports_match_pytorch() {
    check_exporter("dynamo");
}

#[test]
fn cp_lrp_equals_lxt_on_the_torchvision_vit() {
    // LXT: gradient x input of the model patched with lxt.efficient's
    // vit_torch.cp_LRP (LRP-0 on linear layers, where ours has epsilon 1e-6)
    let want = npy("vit_tv.cp_lrp.npy");
    let input = npy("vit_tv.input.npy");
    for exporter in ["ts", "dynamo"] {
        let model = Model::load(fixtures().join(format!("vit_tv.{exporter}.onnx"))).expect("loads");
        let got = map(&model, &input, top_of("vit_tv"), "cp-lrp");
        let want = want
            .clone()
            .into_shape_with_order(got.shape())
            .expect("same size");
        let c = cosine(&got, &want);
        println!(
            "vit_tv.{exporter}: cp-lrp vs LXT cosine {c:.7}, relative L2 {:.1e}",
            rel_l2(&got, &want)
        );
        assert!(
            c >= 0.999,
            "vit_tv.{exporter}: cp-lrp has cosine {c} with LXT's"
        );
    }
}

#[test]
fn transformer_composites_equal_the_dense_f64_reference() {
    // vit_tiny.<composite>.npy: the script's numpy float64 implementation of
    // each rule on explicit matrices (epsilon 1e-6, gamma 0.25); ours runs in
    // float32. Measured: relative L2 0.8e-6 to 2.0e-6, largest difference
    // 0.5e-6 to 1.9e-6 of the largest value (float32 rounding through two
    // blocks: the reference in float32 would differ as much); a wrong rule
    // anywhere gives errors of order 1e-2 and more (the four composites
    // differ from each other by cosines of 0.2 to 0.9)
    let input = npy("vit_tiny.input.npy");
    let top = top_of("vit_tiny");
    for exporter in ["ts", "dynamo"] {
        let model =
            Model::load(fixtures().join(format!("vit_tiny.{exporter}.onnx"))).expect("loads");
        for (name, file) in [
            ("attnlrp", "attnlrp"),
            ("attnlrp-gamma", "attnlrp_gamma"),
            ("cp-lrp", "cp_lrp"),
            ("cp-lrp-gamma", "cp_lrp_gamma"),
        ] {
            let got = map(&model, &input, top, name);
            let want = npy(&format!("vit_tiny.{file}.npy"));
            let want = want.into_shape_with_order(got.shape()).expect("same size");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = (got.iter().zip(&want)).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            let rel = rel_l2(&got, &want);
            println!(
                "vit_tiny.{exporter} {name}: relative L2 {rel:.1e}, max |ours - ref| / max |ref| {err:.1e}"
            );
            assert!(
                rel <= 3e-6 && err <= 3e-6,
                "vit_tiny.{exporter} {name}: relative L2 {rel:.1e}, largest difference {err:.1e}"
            );
        }
    }
}
