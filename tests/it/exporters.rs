//! Models from the real exporters: small versions of 16 common CNN
//! architectures (ConvNeXt among them: LayerNorm and GELU) and a small
//! LayerNorm MLP, (torchvision and timm constructors with divided widths,
//! random weights, BatchNorm statistics that are not the identity), each
//! exported by PyTorch's TorchScript exporter (opset 13, dynamic batch) and by
//! its dynamo exporter (opset 18, external weights), with PyTorch's own
//! logits and autograd input gradient, computed in float64 from the float32
//! weights (PyTorch's float32 gradient carries rounding of its own where many
//! activations sit near a ReLU kink). `scripts/export_zoo.py` made
//! `tests/fixtures/exporters/` (see its docstring for the command and
//! versions); nothing here runs Python.
//!
//! For every file:
//! - the logits equal PyTorch's: max |ours - torch| <= 1e-3 max |torch|;
//! - `gradient` equals autograd's: cosine >= 0.999 and relative L2 error
//!   <= 1e-3 (measured: 2e-7 to 2e-5; an operator with a wrong derivative
//!   gives errors of order 1);
//! - on the nets whose nonlinearities are all piecewise linear through the
//!   origin (ReLU, max pool), `lrp0` equals gradient x input (Ancona et al.
//!   2018; with the biases too, since LRP-0 hands each pre-activation its
//!   `z_j dF/dz_j`): cosine >= 0.99 against PyTorch's gradient x input;
//! - on the nets with LayerNorm and GELU (`lrp0ref` in the manifest),
//!   `lrp0` equals PyTorch's gradient x input of the network with each
//!   LayerNorm's standard deviation detached and each GELU's derivative
//!   replaced by `gelu(x) / x` (AttnLRP's rules; `NAME.lrp0ref.npy`, see the
//!   script): cosine >= 0.999;
//! - `zplus` and `epsilon-plus-flat` maps are finite;
//! - every rule and composite gives a finite map whose relevance ledger
//!   balances to 1e-4 relative, per node and over the graph;
//! - `check` passes at the fixture's input (`selfcheck::check`: gradient
//!   against finite differences, LRP-0 against gradient x input, z-plus
//!   conservation, every operator's backward pass against its forward pass)
//!   and finds no max pool whose gradient follows float rounding.
//!
//! Measured figures are printed (`cargo test --test it -- exporters:: --nocapture`).

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
    repo("tests/fixtures/exporters")
}

fn npy(name: &str) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(&fixtures().join(name)).expect("fixture reads");
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

/// What LRP-0 must equal on an architecture.
#[derive(Clone, Copy, PartialEq)]
enum Lrp0Ref {
    /// Nothing checked here (smooth gates: `check` says why).
    None,
    /// PyTorch's gradient x input (every nonlinearity piecewise linear
    /// through the origin).
    GradientXInput,
    /// `NAME.lrp0ref.npy`: gradient x input of the modified network.
    Modified,
}

/// The architectures of the manifest with their top class and what LRP-0
/// must equal.
fn manifest() -> Vec<(String, usize, Lrp0Ref)> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let models = v["models"].as_object().expect("models");
    let out: Vec<_> = models
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                m["top"].as_u64().expect("top") as usize,
                if m["relu_only"].as_bool().expect("relu_only") {
                    Lrp0Ref::GradientXInput
                } else if m["lrp0ref"].as_bool() == Some(true) {
                    Lrp0Ref::Modified
                } else {
                    Lrp0Ref::None
                },
            )
        })
        .collect();
    assert_eq!(out.len(), 17, "the manifest lists the 17 architectures");
    out
}

/// Checks one exported file against PyTorch's numbers; returns the failures.
fn check_file(arch: &str, exporter: &str, top: usize, reference: Lrp0Ref) -> Vec<String> {
    let path = fixtures().join(format!("{arch}.{exporter}.onnx"));
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
    let err = fwd
        .logits
        .iter()
        .zip(&want_logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    if fwd.logits.len() != want_logits.len() || err > 1e-3 {
        fails.push(format!(
            "{arch}.{exporter}: logits differ from PyTorch's by {err:.1e} of max |logit|"
        ));
    }
    let mut line = format!("{arch:>28}.{exporter:<6} logits {err:.1e}");
    match input_gradient(&model.graph, &fwd, top, GradientMode::Plain) {
        Ok(g) => {
            let (c, r) = (cosine(&g, &want_grad), rel_l2(&g, &want_grad));
            line += &format!("  gradient cos {c:.6} rel {r:.1e}");
            if !(c >= 0.999 && r <= 1e-3) {
                fails.push(format!(
                    "{arch}.{exporter}: gradient cosine {c:.6}, relative L2 {r:.1e} against autograd"
                ));
            }
        }
        Err(e) => fails.push(format!("{arch}.{exporter}: gradient: {e:#}")),
    }
    let norm = Normalization::default();
    let params = AnalyzerParams::default();
    for rule in ["lrp0", "zplus", "epsilon-plus-flat"] {
        let analyzer = Analyzer::from_name(rule, &params).expect("known rule");
        let e = match analyzer.explain(&model, &fwd, top, &norm) {
            Ok(e) => e,
            Err(e) => {
                fails.push(format!("{arch}.{exporter}: {rule}: {e:#}"));
                continue;
            }
        };
        if !e.relevance.iter().all(|v| v.is_finite()) {
            fails.push(format!("{arch}.{exporter}: {rule} map is not finite"));
        }
        if rule == "lrp0" && reference == Lrp0Ref::GradientXInput {
            let gxi = &want_grad * &input;
            let c = cosine(&e.relevance, &gxi);
            line += &format!("  lrp0 vs gxi cos {c:.6}");
            if c < 0.99 {
                fails.push(format!(
                    "{arch}.{exporter}: lrp0 has cosine {c:.6} with gradient x input"
                ));
            }
        }
        if rule == "lrp0" && reference == Lrp0Ref::Modified {
            let want = npy(&format!("{arch}.lrp0ref.npy"));
            let c = cosine(&e.relevance, &want);
            line += &format!("  lrp0 vs modified gxi cos {c:.6}");
            if c < 0.999 {
                fails.push(format!(
                    "{arch}.{exporter}: lrp0 has cosine {c:.6} with PyTorch's gradient x input \
                     of the modified network"
                ));
            }
        }
    }
    // every rule and composite: a finite map and a ledger that balances
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
    for (arch, top, reference) in manifest() {
        fails.extend(check_file(&arch, exporter, top, reference));
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
