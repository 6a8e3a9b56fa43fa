//! `--maxpool-ties split`: maps that float rounding does not decide.
//!
//! Fixture: `tests/fixtures/ties/googlenet_ties.*` (`scripts/export_ties.py`):
//! the GoogLeNet of `tests/fixtures/exporters` (torchvision's, channels / 16,
//! random weights, TorchScript exporter) at 224x224 on `images/astronaut.jpg`,
//! whose black background is flat. There a max pool's inputs are equal, and
//! once the input moves by a relative 1e-7 they are within rounding of each
//! other: the first maximum, which gets the window's whole gradient, is then
//! decided by rounding. PyTorch's own float32 gradient at the input and at the
//! input times (1 + 1e-7 noise) differ by relative L2 4.3e-2 (the fixture's
//! `.json`); ours with `first` ties likewise (printed below). With `split`, every
//! input within 1e-5 (relative) of a window's maximum gets an equal share,
//! which no rounding change of 1e-7 moves.

use std::path::PathBuf;

use lrp_heatmap::analyzers::selfcheck::{check, cosine, rel_l2, CheckOptions, Verdict};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::Model;
use lrp_heatmap::ops::MaxPoolTies;
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::npy::read_npy_f32;
use lrp_testkit::synth::Rng;
use ndarray::{ArrayD, IxDyn};

use crate::support::run;

fn fixture(name: &str) -> PathBuf {
    crate::support::repo("tests/fixtures/ties").join(name)
}

fn npy(name: &str) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(&fixture(name)).expect("fixture reads");
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

/// The fixture's input times (1 + 1e-7 N(0, 1)), elementwise.
fn nudged(x: &ArrayD<f32>) -> ArrayD<f32> {
    let mut rng = Rng::new(7);
    x.mapv(|v| v * (1.0 + 1e-7 * rng.normal()))
}

fn analyzer(name: &str, ties: MaxPoolTies) -> Analyzer {
    let params = AnalyzerParams {
        maxpool_ties: ties,
        ..Default::default()
    };
    Analyzer::from_name(name, &params).expect("known analyzer")
}

/// The analyzers compared, and whether their `first` maps follow the
/// rounding on this fixture: the gradient family does (the flat background's
/// windows hand their whole gradient to whichever input rounding makes
/// largest); LRP's maps hardly move there (relative L2 1e-6: the relevance
/// of the flat regions is small), with either setting.
const ANALYZERS: [(&str, bool); 4] = [
    ("gradient", true),
    ("gradient-x-input", true),
    ("zplus", false),
    ("epsilon-plus-flat", false),
];

#[test]
fn split_maps_do_not_follow_rounding_where_first_maps_do() {
    let model = Model::load(fixture("googlenet_ties.onnx")).expect("fixture loads");
    let x = npy("googlenet_ties.input.npy");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("googlenet_ties.json")).unwrap())
            .unwrap();
    let top = meta["top"].as_u64().unwrap() as usize;
    let norm = Normalization::default();
    let f0 = model.forward(x.clone()).expect("forward");
    let f1 = model
        .forward(nudged(&x))
        .expect("forward of the nudged input");
    assert_eq!(f0.top_k(1)[0].0, top, "the top class is PyTorch's");

    // ours with first ties is PyTorch's float32 gradient where rounding
    // agrees (the flat regions may pick other winners)
    let g32 = npy("googlenet_ties.grad32.npy");
    let g = analyzer("gradient", MaxPoolTies::First)
        .explain(&model, &f0, top, &norm)
        .unwrap()
        .relevance;
    let c = cosine(&g, &g32);
    println!("gradient (first) vs PyTorch's float32 gradient: cosine {c:.6}");
    assert!(c > 0.9, "cosine {c}");

    let mut fails = vec![];
    for (name, fragile) in ANALYZERS {
        let mut moved = [0.0; 2];
        for (i, ties) in [MaxPoolTies::First, MaxPoolTies::Split]
            .into_iter()
            .enumerate()
        {
            let a = analyzer(name, ties);
            let e0 = a.explain(&model, &f0, top, &norm).unwrap();
            let e1 = a.explain(&model, &f1, top, &norm).unwrap();
            assert!(e0.relevance.iter().all(|v| v.is_finite()), "{name} {ties}");
            moved[i] = rel_l2(&e1.relevance, &e0.relevance);
        }
        println!(
            "{name:>18}: input vs input (1 + 1e-7 noise): relative L2 {:.2e} with first, {:.2e} with split",
            moved[0], moved[1]
        );
        if moved[1] > 1e-4 {
            fails.push(format!("{name} split moved by {:.2e}", moved[1]));
        }
        if fragile && moved[0] <= 1e-4 {
            fails.push(format!(
                "{name} first moved by only {:.2e}: the fixture has no rounding-decided windows",
                moved[0]
            ));
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}

#[test]
fn split_conserves_relevance_in_each_max_pool_as_first_does() {
    // LRP-0 (epsilon 0): every max pool hands on exactly what it receives;
    // the whole map's sum differs between the settings only by the biases'
    // share of the layers after the pools
    let model = Model::load(fixture("googlenet_ties.onnx")).expect("fixture loads");
    let x = npy("googlenet_ties.input.npy");
    let f0 = model.forward(x).expect("forward");
    let top = f0.top_k(1)[0].0;
    let norm = Normalization::default();
    for ties in [MaxPoolTies::First, MaxPoolTies::Split] {
        let a = analyzer("zplus", ties);
        let e = a.explain(&model, &f0, top, &norm).unwrap();
        let ledger = e.ledger.as_ref().expect("LRP keeps a ledger");
        let mut pools = 0;
        for entry in &ledger.nodes {
            if entry.op == "MaxPool" {
                pools += 1;
                let gap = (entry.r_in - entry.out).abs();
                let scale = entry.r_in.abs().max(1e-12);
                assert!(
                    gap <= 1e-5 * scale,
                    "{ties}: MaxPool '{}' takes {} and hands on {}",
                    entry.node,
                    entry.r_in,
                    entry.out
                );
            }
        }
        assert!(pools >= 4, "{ties}: {pools} max pools in the ledger");
    }
}

#[test]
fn check_passes_with_either_setting() {
    let model = Model::load(fixture("googlenet_ties.onnx")).expect("fixture loads");
    let x = npy("googlenet_ties.input.npy");
    for ties in [MaxPoolTies::First, MaxPoolTies::Split] {
        let opts = CheckOptions {
            maxpool_ties: ties,
            ..Default::default()
        };
        let report = check(&model, x.clone(), &opts).expect("check runs");
        let mut text = vec![];
        report.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        println!("--maxpool-ties {ties}:\n{text}");
        assert!(report.passed(), "{ties}:\n{text}");
        let ties_fig = report
            .figures
            .iter()
            .find(|f| f.what.contains("near-ties"))
            .expect("the near-tie figure");
        if ties == MaxPoolTies::Split {
            assert_eq!(ties_fig.verdict, Verdict::Pass, "{text}");
        }
    }
}

#[test]
fn the_flag_reaches_the_maps() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("astronaut.jpg");
    std::fs::copy(crate::support::repo("images/astronaut.jpg"), &img).unwrap();
    let model = fixture("googlenet_ties.onnx");
    let model = model.to_str().unwrap();
    let img_s = img.to_str().unwrap();
    let mut sums = vec![];
    for ties in ["first", "split"] {
        let o = run(
            t.path(),
            &[
                img_s,
                "--model",
                model,
                "--rule",
                "gradient",
                "--maxpool-ties",
                ties,
                "--input-size",
                "224x224",
                "--raw",
                "--json",
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{ties}: {err}");
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let record: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(record["warnings"], serde_json::json!([]), "{ties}: {out}");
        let npy = std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "npy"))
            .expect("an .npy written");
        let (_, v) = read_npy_f32(&npy).unwrap();
        sums.push(v);
        std::fs::remove_file(npy).unwrap();
    }
    assert_ne!(sums[0], sums[1], "split changes the map on this model");
    let o = run(
        t.path(),
        &[img_s, "--model", model, "--maxpool-ties", "random"],
    );
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("first or split"), "{err}");
}
