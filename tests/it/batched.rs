//! Batches: several inputs explained in one forward and one backward pass
//! give each input the explanation it gets alone (the map to float
//! rounding, the ledger's sums, the warnings, the top classes), for every
//! LRP composite and the one-pass gradients; models that cannot take a
//! batch say why.
//!
//! Expected figures are the single-input runs of the same library: the
//! batch must not change any explanation beyond the order of float sums
//! (1e-4 of the map's largest value; sums 1e-4 relative).

use lrp_heatmap::analyzers::lrp::{Explanation, Probes};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::composite::NAMES;
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use ndarray::{concatenate, ArrayD, Axis};

use crate::support::repo;

/// Two photos and a third input that is the first one flipped and darker,
/// so every row differs.
fn inputs(model: &Model, norm: &Normalization) -> Vec<ArrayD<f32>> {
    let mut out = Vec::new();
    for p in ["cat", "rocket"] {
        let img = image::open(repo(&format!("images/{p}.jpg")))
            .expect("photo")
            .to_rgb8();
        out.push(model.tensor(&img, norm).unwrap());
    }
    let mut third = out[0].clone();
    third.invert_axis(Axis(3));
    third.mapv_inplace(|v| 0.7 * v - 0.2);
    out.push(third);
    out
}

/// The forward pass of `xs` stacked on axis 0.
fn forward_batch(model: &Model, xs: &[ArrayD<f32>]) -> lrp_heatmap::model::Forward {
    let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
    let stacked = concatenate(Axis(0), &views).unwrap();
    model.forward_batch(stacked).unwrap()
}

fn close(what: &str, got: &Explanation, want: &Explanation, fails: &mut Vec<String>) {
    let scale = want.relevance.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let worst = (got.relevance.iter().zip(want.relevance.iter()))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    if got.relevance.shape() != want.relevance.shape() || worst > 1e-4 * scale {
        fails.push(format!("{what}: map off by {worst:e} (scale {scale:e})"));
    }
    let rel = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1e-3);
    if got.class != want.class || !rel(got.logit as f64, want.logit as f64) {
        fails.push(format!(
            "{what}: class/logit {} {} vs {} {}",
            got.class, got.logit, want.class, want.logit
        ));
    }
    if got.warnings.len() != want.warnings.len() {
        fails.push(format!(
            "{what}: warnings {:?} vs {:?}",
            got.warnings, want.warnings
        ));
    }
    match (&got.ledger, &want.ledger) {
        (Some(g), Some(w)) => {
            if g.nodes.len() != w.nodes.len() {
                fails.push(format!(
                    "{what}: {} ledger entries vs {}",
                    g.nodes.len(),
                    w.nodes.len()
                ));
                return;
            }
            let mass = w
                .nodes
                .iter()
                .map(|e| e.r_in.abs())
                .fold(w.logit.abs(), f64::max);
            for (a, b) in g.nodes.iter().zip(&w.nodes) {
                let pairs = [
                    ("in", a.r_in, b.r_in),
                    ("out", a.out, b.out),
                    ("bias", a.bias, b.bias),
                    ("stabilizer", a.stabilizer, b.stabilizer),
                    ("dropped", a.dropped, b.dropped),
                    ("sign", a.sign, b.sign),
                ];
                for (field, x, y) in pairs {
                    if a.node != b.node || (x - y).abs() > 1e-4 * mass {
                        fails.push(format!("{what}: ledger {} {field}: {x} vs {y}", b.node));
                    }
                }
            }
            if let Err(m) = g.check(1e-4) {
                fails.push(format!("{what}: batched ledger does not balance: {m}"));
            }
        }
        (None, None) => {}
        _ => fails.push(format!("{what}: ledger present in one run only")),
    }
}

#[test]
fn a_batch_explains_each_input_as_it_is_explained_alone() {
    let model = Model::load("efficientnet-lite0").expect("bundled");
    assert_eq!(model.batch_blocker(), None);
    let norm = Normalization::default();
    let xs = inputs(&model, &norm);
    let batch = forward_batch(&model, &xs);
    assert_eq!(batch.rows(), 3);
    let alone: Vec<_> = xs
        .iter()
        .map(|x| model.forward(x.clone()).unwrap())
        .collect();
    // the rows' own top classes, and one row explained for another class
    let mut classes: Vec<usize> = alone.iter().map(|f| f.top_k(1)[0].0).collect();
    for (row, f) in alone.iter().enumerate() {
        let want = f.top_k(5);
        let got = batch.top_k_row(row, 5);
        assert_eq!(
            got.iter().map(|p| p.0).collect::<Vec<_>>(),
            want.iter().map(|p| p.0).collect::<Vec<_>>(),
            "top-5 of row {row}"
        );
    }
    classes[2] = 7;
    let params = AnalyzerParams::default();
    let mut fails = Vec::new();
    let names = NAMES.iter().map(|(n, _)| *n);
    for name in names.chain(["gradient", "gradient-x-input", "guided-backprop"]) {
        let a = Analyzer::from_name(name, &params).unwrap();
        assert!(a.batches(), "{name}");
        let got = a
            .explain_rows(&model, &batch, &classes, &norm, &Probes::default())
            .unwrap();
        assert_eq!(got.len(), 3);
        for (row, (g, f)) in got.iter().zip(&alone).enumerate() {
            let want = a.explain(&model, f, classes[row], &norm).unwrap();
            close(&format!("{name} row {row}"), g, &want, &mut fails);
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn probed_layers_and_concepts_are_per_input_in_a_batch() {
    let model = Model::load("efficientnet-lite0").expect("bundled");
    let norm = Normalization::default();
    let xs = inputs(&model, &norm);
    let batch = forward_batch(&model, &xs);
    let probes = Probes {
        layers: vec![
            "/_swish_1/Clip".into(),
            "/_blocks.15/_project_conv/Conv".into(),
        ],
        concept: Some("/_swish_1/Clip:3,1156".parse().unwrap()),
        ..Default::default()
    };
    let a = Analyzer::from_name("epsilon-plus-flat", &AnalyzerParams::default()).unwrap();
    let classes = [281, 812, 281];
    let got = a
        .explain_rows(&model, &batch, &classes, &norm, &probes)
        .unwrap();
    let mut fails = Vec::new();
    for (row, g) in got.iter().enumerate() {
        let f = model.forward(xs[row].clone()).unwrap();
        let want = a
            .explain_probed(&model, &f, classes[row], &norm, &probes)
            .unwrap();
        close(&format!("row {row}"), g, &want, &mut fails);
        assert_eq!(g.layers.len(), 2);
        for (l, w) in g.layers.iter().zip(&want.layers) {
            assert_eq!(l.relevance.shape(), w.relevance.shape(), "{}", l.layer);
            let scale = w.relevance.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
            for (x, y) in l.relevance.iter().zip(w.relevance.iter()) {
                assert!(
                    (x - y).abs() <= 1e-4 * scale,
                    "{} row {row}: {x} vs {y}",
                    l.layer
                );
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    // a start inside the graph and the multi-pass analyzers take one input
    let start = Probes {
        start: Some("/_swish_1/Clip:3".parse().unwrap()),
        ..Default::default()
    };
    assert!(a
        .explain_rows(&model, &batch, &classes, &norm, &start)
        .is_err());
    let ig = Analyzer::from_name("integrated-gradients", &AnalyzerParams::default()).unwrap();
    assert!(!ig.batches());
    assert!(ig
        .explain_rows(&model, &batch, &classes, &norm, &Probes::default())
        .is_err());
}

#[test]
fn the_lean_forward_pass_of_each_analyzer_gives_the_same_explanations() {
    // Analyzer::forward drops the inputs of ReLU6 (Clip) nodes unless the
    // rule reuses them as a convolution's output (epsilon, gamma): the
    // explanations must not change by a bit, and z-plus and the gradient
    // must keep fewer tensors than the full pass
    let model = Model::load("efficientnet-lite0").expect("bundled");
    let norm = Normalization::default();
    let x = inputs(&model, &norm).remove(1);
    let full = model.forward(x.clone()).unwrap();
    let class = full.top_k(1)[0].0;
    let params = AnalyzerParams::default();
    let names = NAMES.iter().map(|(n, _)| *n);
    let mut fails = Vec::new();
    for name in names.chain([
        "gradient",
        "gradient-x-input",
        "guided-backprop",
        "smoothgrad",
    ]) {
        let a = Analyzer::from_name(name, &params).unwrap();
        let lean = a
            .forward(&model, x.clone(), &Probes::default(), false)
            .unwrap();
        assert_eq!(lean.logits, full.logits, "{name}");
        if ["zplus", "gradient"].contains(&name) {
            assert!(
                lean.activations.len() + 30 <= full.activations.len(),
                "{name}: {} of {} tensors kept",
                lean.activations.len(),
                full.activations.len()
            );
        }
        let got = a.explain(&model, &lean, class, &norm).unwrap();
        let want = a.explain(&model, &full, class, &norm).unwrap();
        if got.relevance != want.relevance {
            fails.push(format!("{name}: the map changed"));
        }
        // the ledger's f64 sums of parallel blocks may be added in another
        // order from one run to the next: equal to 1e-9 of the books' scale
        if got.warnings != want.warnings {
            fails.push(format!("{name}: the warnings changed"));
        }
        match (&got.ledger, &want.ledger) {
            (Some(g), Some(w)) => {
                let mass = (w.nodes.iter()).fold(w.logit.abs(), |m, e| m.max(e.mass));
                let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * mass;
                let ok = g.nodes.len() == w.nodes.len()
                    && same(g.input_sum, w.input_sum)
                    && g.nodes.iter().zip(&w.nodes).all(|(a, b)| {
                        a.node == b.node
                            && [
                                (a.r_in, b.r_in),
                                (a.out, b.out),
                                (a.bias, b.bias),
                                (a.stabilizer, b.stabilizer),
                                (a.dropped, b.dropped),
                                (a.sign, b.sign),
                            ]
                            .iter()
                            .all(|&(x, y)| same(x, y))
                    });
                if !ok {
                    fails.push(format!("{name}: the ledger changed"));
                }
            }
            (None, None) => {}
            _ => fails.push(format!("{name}: a ledger in one run only")),
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    // a probed layer is kept even where the rule would drop it
    let a = Analyzer::from_name("zplus", &params).unwrap();
    let probes = Probes {
        layers: vec![
            "/_blocks.15/_project_conv/Conv".into(),
            "/_conv_head/Conv".into(),
        ],
        ..Default::default()
    };
    let lean = a.forward(&model, x, &probes, false).unwrap();
    let got = a
        .explain_probed(&model, &lean, class, &norm, &probes)
        .unwrap();
    let want = a
        .explain_probed(&model, &full, class, &norm, &probes)
        .unwrap();
    assert_eq!(got.layers, want.layers);
}

/// The real exporters' fixtures (`tests/fixtures/exporters`, PyTorch's two
/// exporters and timm): the lean forward pass of each analyzer gives the
/// map of the full pass, bit for bit; a model that takes a batch explains
/// two inputs in one pass as it explains each alone (1e-4 of the map's
/// largest value), and one that does not says why.
#[test]
fn every_exported_architecture_is_explained_the_same_lean_and_batched() {
    let dir = repo("tests/fixtures/exporters");
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let archs = manifest["models"].as_object().expect("models");
    let params = AnalyzerParams::default();
    let norm = Normalization::default();
    let (mut fails, mut batched, mut blocked) = (Vec::new(), 0, Vec::new());
    for arch in archs.keys() {
        let (shape, data) =
            lrp_testkit::npy::read_npy_f32(&dir.join(format!("{arch}.input.npy"))).expect("input");
        let x = ArrayD::from_shape_vec(shape, data).expect("shape");
        for exporter in ["ts", "dynamo"] {
            let what = format!("{arch}.{exporter}");
            let model = Model::load(dir.join(format!("{arch}.{exporter}.onnx"))).expect(&what);
            let full = model.forward(x.clone()).expect(&what);
            let class = full.top_k(1)[0].0;
            let mut other = x.clone();
            other.invert_axis(Axis(3));
            other.mapv_inplace(|v| 0.5 * v + 0.1);
            let both = concatenate(Axis(0), &[x.view(), other.view()]).unwrap();
            let can = model.batch_blocker();
            for name in ["zplus", "epsilon-plus-flat", "epsilon", "gradient"] {
                let a = Analyzer::from_name(name, &params).unwrap();
                let want = a.explain(&model, &full, class, &norm).expect(&what);
                let lean = a.forward(&model, x.clone(), &Probes::default(), false);
                let got = lean.and_then(|f| a.explain(&model, &f, class, &norm));
                match got {
                    Ok(g) if g.relevance == want.relevance => {}
                    Ok(_) => fails.push(format!("{what} {name}: the lean pass changed the map")),
                    Err(e) => fails.push(format!("{what} {name}: lean: {e:#}")),
                }
                if can.is_some() {
                    continue;
                }
                let fwd = a.forward(&model, both.clone(), &Probes::default(), true);
                let rows = fwd.and_then(|f| {
                    let c2 = f.top_k_row(1, 1)[0].0;
                    let e = a.explain_rows(&model, &f, &[class, c2], &norm, &Probes::default())?;
                    let alone = model.forward(other.clone())?;
                    Ok((e, a.explain(&model, &alone, c2, &norm)?))
                });
                match rows {
                    Ok((e, second)) => {
                        for (g, w) in e.iter().zip([&want, &second]) {
                            let scale = w.relevance.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
                            let worst = (g.relevance.iter().zip(w.relevance.iter()))
                                .map(|(a, b)| (a - b).abs())
                                .fold(0f32, f32::max);
                            if g.relevance.shape() != w.relevance.shape() || worst > 1e-4 * scale {
                                fails.push(format!(
                                    "{what} {name}: batched map off by {worst:e} of {scale:e}"
                                ));
                            }
                        }
                    }
                    Err(e) => fails.push(format!("{what} {name}: batch: {e:#}")),
                }
            }
            match can {
                None => batched += 1,
                Some(why) => blocked.push(format!("{what}: {why}")),
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    // the exports keep the samples apart, but for the one that runs in
    // tract (a reshape to a shape computed at run time) and the dynamo
    // exports that pool as ReduceMean, Reshape to [-1] (the batch axis
    // flattened away), Gather: explained one input at a time
    assert_eq!(
        blocked,
        [
            "convnext_atto.dynamo: Reshape node 'node_Reshape_160' has a tensor without the batch axis 0 of 1",
            "convnext_tiny.dynamo: Reshape node 'node_Reshape_202' has a tensor without the batch axis 0 of 1",
            "ln_mlp.dynamo: Reshape node 'node_Reshape_15' has a tensor without the batch axis 0 of 1",
            "shufflenet_v2_x1_0.ts: the forward pass runs in tract"
        ]
    );
    assert_eq!(batched, 30);
}
