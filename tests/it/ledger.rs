//! The relevance ledger, the guard rails, inner layers, concepts and starts
//! on the bundled model (real ImageNet weights) and the four photos, through
//! the library and through the command.
//!
//! Expected figures come from the definitions, not from earlier runs: the
//! bounds of the sums are the issue's (`[-0.1, 2] x logit`), and the ledger's
//! books balance by construction of the rules' accounts (1e-4 relative).

use std::path::PathBuf;

use lrp_heatmap::analyzers::lrp::{Channels, Probes};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::composite::NAMES;
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use ndarray::ArrayD;
use serde_json::Value;

use crate::support::{check_usage_error, json_lines, repo, run, text};

const PHOTOS: [&str; 4] = ["astronaut", "cat", "coffee", "rocket"];

/// A late layer of the bundled model: the head's activation `[1280, 7, 7]`.
const LATE: &str = "/_swish_1/Clip";

fn photo(name: &str) -> PathBuf {
    repo(&format!("images/{name}.jpg"))
}

fn bundled() -> Model {
    Model::load("efficientnet-lite0").expect("the bundled model loads")
}

/// LRP-0 (and epsilon with Zennit's 1e-6) is gradient x input: its sum is
/// the logit minus the biases' shares, which on this network can exceed the
/// logit (the astronaut: -1.43 x the logit, the rocket: -0.31 x). Every other
/// rule and composite stays within `[-0.1, 2] x logit` without a warning.
// (`attnlrp` and `cp-lrp` are epsilon on every layer of a CNN)
const GRADIENT_LIKE: [&str; 4] = ["lrp0", "epsilon", "attnlrp", "cp-lrp"];

#[test]
fn every_composite_on_the_photos_is_finite_bounded_balanced_and_unwarned() {
    let model = bundled();
    let norm = Normalization::default();
    let params = AnalyzerParams::default();
    let mut fails = Vec::new();
    for p in PHOTOS {
        let img = image::open(photo(p)).expect("photo").to_rgb8();
        let fwd = model.forward(model.tensor(&img, &norm).unwrap()).unwrap();
        let class = fwd.top_k(1)[0].0;
        for (name, _) in NAMES {
            let a = Analyzer::from_name(name, &params).unwrap();
            let e = a.explain(&model, &fwd, class, &norm).unwrap();
            let ledger = e.ledger.as_ref().expect("LRP has a ledger");
            let what = format!("{p} / {name}");
            if let Err(m) = ledger.check(1e-4) {
                fails.push(format!("{what}: {m}"));
            }
            if !e.relevance.iter().all(|v| v.is_finite()) {
                fails.push(format!("{what}: non-finite map"));
            }
            let ratio = e.ratio();
            if GRADIENT_LIKE.contains(&name) {
                // what is not passed on goes to the biases
                let gap = ledger.logit - ledger.input_sum;
                let bias: f64 = ledger.nodes.iter().map(|n| n.bias).sum();
                if (bias - gap).abs() > 0.05 * gap.abs().max(0.01 * ledger.logit.abs()) {
                    fails.push(format!("{what}: biases take {bias} of the gap {gap}"));
                }
                for w in &e.warnings {
                    if !(w.contains("node '") && w.contains(&format!("({})", rule_words(name)))) {
                        fails.push(format!("{what}: a warning naming no node or rule: {w}"));
                    }
                }
                continue;
            }
            if !(-0.1..=2.0).contains(&ratio) {
                fails.push(format!("{what}: relevance sum {ratio} x the logit"));
            }
            if !e.warnings.is_empty() {
                fails.push(format!("{what}: warnings {:?}", e.warnings));
            }
            if e.relevance.iter().all(|&v| v == 0.0) {
                fails.push(format!("{what}: an empty map"));
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// How the ledger names the rule of an LRP-0 / epsilon layer.
fn rule_words(name: &str) -> &'static str {
    match name {
        "lrp0" => "lrp0",
        _ => "epsilon(0.000001)",
    }
}

#[test]
fn the_gamma_rule_is_stable_and_its_bias_absorbs_what_it_does_not_pass_on() {
    // Before the bias was part of the gamma denominator, the cat's sum was
    // -3.2e29 (issue 16). With it, the denominator of a positive output is at
    // least the output itself: no denominator near zero, no sign flipped.
    let model = bundled();
    let norm = Normalization::default();
    let img = image::open(photo("cat")).unwrap().to_rgb8();
    let fwd = model.forward(model.tensor(&img, &norm).unwrap()).unwrap();
    for name in ["gamma", "epsilon-gamma-box"] {
        let a = Analyzer::from_name(name, &AnalyzerParams::default()).unwrap();
        let e = a.explain(&model, &fwd, 285, &norm).unwrap();
        let l = e.ledger.as_ref().unwrap();
        assert!(
            (0.0..1.0).contains(&e.ratio()),
            "{name}: ratio {}",
            e.ratio()
        );
        assert!(e.warnings.is_empty(), "{name}: {:?}", e.warnings);
        for n in l.nodes.iter().filter(|n| n.rule.starts_with("gamma")) {
            // bias and stabiliser shares, and outputs with z = 0: nothing
            // created by signs
            assert_eq!(n.sign, 0.0, "{name}: {n:?}");
            assert!(n.gain(0.1 * l.logit.abs()) < 2.0, "{name}: {n:?}");
        }
        // the rendered tile is not blank (the compare column was empty)
        let chw = e.relevance.index_axis(ndarray::Axis(0), 0).to_owned();
        let map = lrp_heatmap::render::channel_sum(chw.view().into_dimensionality().unwrap());
        let tile = lrp_heatmap::render::render_map(&map, 64, 64, &Default::default(), true);
        let coloured = tile.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(
            coloured > 64 * 64 / 10,
            "{name}: {coloured} coloured pixels"
        );
    }
}

#[test]
fn the_zplus_ledger_names_the_depthwise_convolutions() {
    let model = bundled();
    let e = model.explain(&photo("cat"), "zplus").unwrap();
    let l = e.ledger.unwrap();
    let summary = l.summary().expect("the ratio is 0.05");
    assert!(
        summary.starts_with("lost: ")
            && summary.contains(
                "dropped at 16 depthwise convolutions (outputs without positive contribution)"
            ),
        "{summary}"
    );
    let depthwise: f64 = (l.nodes.iter())
        .filter(|n| n.kind == "depthwise convolution")
        .map(|n| n.dropped)
        .sum();
    assert!(
        depthwise > 0.9 * (l.logit - l.input_sum),
        "{depthwise} of {l:?}"
    );
}

#[test]
fn layers_concepts_and_starts_on_the_bundled_model() {
    let model = bundled();
    let norm = Normalization::default();
    let img = image::open(photo("cat")).unwrap().to_rgb8();
    let fwd = model.forward(model.tensor(&img, &norm).unwrap()).unwrap();
    let a = Analyzer::from_name("epsilon-plus-flat", &AnalyzerParams::default()).unwrap();
    let plain = a.explain(&model, &fwd, 285, &norm).unwrap();
    let probes = Probes {
        layers: vec![LATE.into(), "/_fc/Gemm".into(), "data".into()],
        ..Default::default()
    };
    let e = a.explain_probed(&model, &fwd, 285, &norm, &probes).unwrap();
    assert_eq!(
        e.relevance, plain.relevance,
        "asking for layers changes nothing"
    );
    assert_eq!(e.layers[0].relevance.shape(), &[1280, 7, 7]);
    // the logit node's relevance is the logit on the class
    assert_eq!(e.layers[1].relevance.shape(), &[1000]);
    assert_eq!(e.layers[1].relevance[[285]], plain.logit);
    // the model input's relevance is the map
    assert_eq!(e.layers[2].relevance.shape(), &[3, 224, 224]);
    let ranked = e.layers[0].channel_sums();
    assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1));
    // the conditional maps of the five top channels are their shares: each
    // sums to what its channel holds at the layer times what reaches the
    // input from there, and together they are part of the whole map
    let mut five = ArrayD::<f32>::zeros(plain.relevance.raw_dim());
    for &(k, _) in &ranked[..5] {
        let c = Probes {
            concept: Some(Channels {
                layer: LATE.into(),
                channels: vec![k],
            }),
            ..Default::default()
        };
        let e = a.explain_probed(&model, &fwd, 285, &norm, &c).unwrap();
        assert!(e.relevance.iter().any(|&v| v != 0.0));
        e.ledger.unwrap().check(1e-4).unwrap();
        five += &e.relevance;
    }
    let all = Probes {
        concept: Some(Channels {
            layer: LATE.into(),
            channels: ranked[..5].iter().map(|c| c.0).collect(),
        }),
        ..Default::default()
    };
    let together = a.explain_probed(&model, &fwd, 285, &norm, &all).unwrap();
    let d = (&together.relevance - &five)
        .mapv(f32::abs)
        .fold(0f32, |m, &v| m.max(v));
    let scale = five.mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
    assert!(
        d <= 1e-4 * scale,
        "a set of channels is the sum of its channels: {d} / {scale}"
    );
    // a start at a channel: its activation sum is the relevance put on it
    let s = Probes {
        start: Some(Channels {
            layer: LATE.into(),
            channels: vec![ranked[0].0],
        }),
        ..Default::default()
    };
    let e = a.explain_probed(&model, &fwd, 285, &norm, &s).unwrap();
    let act = fwd.activations[&model.graph.resolve(LATE).unwrap().to_string()]
        .index_axis(ndarray::Axis(1), ranked[0].0)
        .sum();
    assert!(
        (e.logit - act).abs() <= 1e-4 * act.abs(),
        "{} vs {act}",
        e.logit
    );
    e.ledger.unwrap().check(1e-4).unwrap();
    // names and channels are checked before anything runs
    for (p, words) in [
        (
            Probes {
                layers: vec!["nope".into()],
                ..Default::default()
            },
            "'nope' names no node or tensor",
        ),
        (
            Probes {
                concept: Some(Channels {
                    layer: LATE.into(),
                    channels: vec![1280],
                }),
                ..Default::default()
            },
            "channel 1280 out of range: '/_swish_1/Clip' has 1280 channels",
        ),
        (
            Probes {
                start: Some(Channels {
                    layer: "data".into(),
                    channels: vec![0],
                }),
                ..Default::default()
            },
            "not the model input",
        ),
    ] {
        let err = p.check(&model).unwrap_err().to_string();
        assert!(err.contains(words), "{err}");
    }
    let g = Analyzer::from_name("gradient", &AnalyzerParams::default()).unwrap();
    let err = g
        .explain_probed(&model, &fwd, 285, &norm, &probes)
        .unwrap_err();
    assert!(format!("{err:#}").contains("works with LRP rules and composites"));
}

fn json(dir: &std::path::Path, name: &str) -> Value {
    let t = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&t).unwrap()
}

#[test]
fn the_command_writes_ledgers_layers_concepts_and_warns_on_stderr() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().to_str().unwrap();
    let cat = photo("cat");
    let cat = cat.to_str().unwrap();
    // --ledger: the file, the JSON summary and the human line
    let o = run(t.path(), &[cat, "-r", "zplus", "--ledger", "-o", out]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("  lost: 95% dropped at 16 depthwise convolutions (outputs without positive contribution)"),
        "{stdout}"
    );
    let l = json(t.path(), "cat.zplus.ledger.json");
    let nodes = l["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 94, "one entry per relevance node");
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let mut lost = 0.0;
    for n in nodes {
        for k in ["node", "op", "rule"] {
            assert!(n[k].is_string(), "{k} in {n}");
        }
        let d = f(n, "in") - f(n, "out");
        let causes = f(n, "bias") + f(n, "stabilizer") + f(n, "dropped") - f(n, "sign");
        assert!(
            (d - causes).abs() <= 1e-4 * f(n, "in").abs().max(f(n, "out").abs()).max(1e-6),
            "{n}"
        );
        lost += d;
    }
    let (logit, input) = (f(&l, "logit"), f(&l, "input_sum"));
    assert!(
        (logit - input - lost).abs() <= 1e-4 * logit.abs(),
        "{logit} {input} {lost}"
    );
    // --json: warnings, the ledger's summary, layers ranked
    let o = run(
        t.path(),
        &[
            cat,
            "-r",
            "zplus",
            "--json",
            "--layer",
            LATE,
            "--layer",
            "/_fc/Gemm",
            "-o",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = &json_lines(&o)[0];
    assert_eq!(v["warnings"], Value::Array(vec![]));
    assert!(v["ledger"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("lost: 95% dropped"));
    assert_eq!(v["layers"][0]["layer"], LATE);
    assert_eq!(v["layers"][0]["shape"], serde_json::json!([1280, 7, 7]));
    let ch = v["layers"][0]["channels"].as_array().unwrap();
    assert_eq!(ch.len(), 1280);
    assert!(ch
        .windows(2)
        .all(|w| f(&w[0], "relevance") >= f(&w[1], "relevance")));
    let npy = t.path().join("cat.zplus._swish_1_Clip.npy");
    let (shape, data) = lrp_testkit::npy::read_npy_f32(&npy).unwrap();
    assert_eq!(shape, vec![1280, 7, 7]);
    let top = f(&ch[0], "channel") as usize;
    let plane: f64 = data[top * 49..(top + 1) * 49]
        .iter()
        .map(|&v| v as f64)
        .sum();
    assert!((plane - f(&ch[0], "relevance")).abs() <= 1e-5 * plane.abs().max(1e-6));
    assert!(t.path().join("cat.zplus._fc_Gemm.npy").exists());
    // --concept and --start write files of their own, not over the plain map
    let concept = format!("{LATE}:{top}");
    for (flag, file) in [
        (
            "--concept",
            format!("cat.zplus.concept-_swish_1_Clip-{top}.png"),
        ),
        (
            "--start",
            format!("cat.zplus.start-_swish_1_Clip-{top}.png"),
        ),
    ] {
        let o = run(t.path(), &[cat, "-r", "zplus", flag, &concept, "-o", out]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(t.path().join(&file).exists(), "{file}");
    }
    // a rule that amplifies relevance on this photo: warned on stderr, in
    // the JSON, and the map is still written
    let astronaut = photo("astronaut");
    let o = run(
        t.path(),
        &[
            astronaut.to_str().unwrap(),
            "-r",
            "lrp0",
            "--json",
            "-o",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(
        err.lines().any(|l| l.starts_with("warning: ")
            && l.contains("astronaut.jpg: Conv node '")
            && l.contains("(lrp0) passes on")),
        "{err}"
    );
    assert!(!json_lines(&o)[0]["warnings"].as_array().unwrap().is_empty());
    assert!(t.path().join("astronaut.lrp0.png").exists());
    // bad names: usage errors before any image, in the flags' words
    let o = run(t.path(), &[cat, "--layer", "nope", "-o", out]);
    check_usage_error(&o, "--layer 'nope' names no node or tensor of the graph");
    let o = run(
        t.path(),
        &[cat, "--concept", &format!("{LATE}:9999"), "-o", out],
    );
    check_usage_error(&o, "--concept channel 9999 out of range");
    let o = run(
        t.path(),
        &[cat, "-r", "gradient", "--layer", LATE, "-o", out],
    );
    check_usage_error(
        &o,
        "--layer works with LRP rules and composites, not with gradient",
    );
    let o = run(t.path(), &[cat, "-r", "gradient", "--ledger", "-o", out]);
    check_usage_error(&o, "--ledger works with LRP rules and composites");
    let o = run(t.path(), &[cat, "--start", "x", "-o", out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("expected NODE:K[,K...]"));
}

#[test]
fn compare_draws_the_top_concepts_of_a_layer() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().to_str().unwrap();
    let cat = photo("cat");
    let o = run(
        t.path(),
        &[
            "compare",
            cat.to_str().unwrap(),
            "--rules",
            "zplus",
            "--concepts",
            &format!("{LATE}:top3"),
            "--tile",
            "64",
            "-o",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // input + zplus + 3 concepts
    let img = image::open(t.path().join("compare.png")).unwrap();
    // width: (columns + 1) tiles and (columns + 2) gaps of 4 px (grid.rs)
    assert_eq!(
        img.width(),
        5 * 64 + 6 * 4,
        "input, zplus and three concepts"
    );
    let o = run(
        t.path(),
        &[
            "compare",
            cat.to_str().unwrap(),
            "--rules",
            "gradient",
            "--concepts",
            &format!("{LATE}:top3"),
            "-o",
            out,
        ],
    );
    check_usage_error(&o, "--concepts needs an LRP rule");
    let o = run(
        t.path(),
        &[
            "compare",
            cat.to_str().unwrap(),
            "--rules",
            "zplus",
            "--concepts",
            "nope:top3",
            "-o",
            out,
        ],
    );
    check_usage_error(&o, "--concepts 'nope' names no node or tensor");
}

/// `[1, 3, 2, 2]` -> Flatten -> Gemm to 2 classes, class 0 reading only the
/// first red pixel with weight 1e37: a red pixel of 20 (in the normalised
/// space) gives the logit 2e38, finite; alpha-beta (alpha 2) hands on twice
/// the relevance of an output with only positive contributions: 4e38,
/// beyond f32. (Its beta part, without negative contributions, divides by
/// the stabiliser alone: `2e38 / 1e-6` overflows too, and the zero weights
/// times that infinity make every input NaN.)
fn overflowing_model(dir: &std::path::Path) -> PathBuf {
    use lrp_testkit::synth::{Attr, OnnxBuilder};
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 2, 2]);
    b.node("Flatten", &["x"], &["f"], vec![]);
    let mut w = vec![0f32; 24];
    w[0] = 1e37;
    w[12 + 1] = 1.0;
    b.initializer("w", &[2, 12], &w);
    b.node("Gemm", &["f", "w"], &["y"], vec![Attr::Int("transB", 1)]);
    b.output("y", &[1, 2]);
    crate::support::save_model(dir, "overflow.onnx", &b)
}

#[test]
fn non_finite_relevance_is_warned_about_and_the_map_still_written() {
    let t = tempfile::tempdir().unwrap();
    let model_path = overflowing_model(t.path());
    // through the library: the tensor as it is
    let model = Model::load(&model_path).unwrap();
    let mut x = ArrayD::<f32>::zeros(vec![1, 3, 2, 2]);
    x[[0, 0, 0, 0]] = 20.0;
    let e = model.explainer("alpha-beta").class(0).explain(&x).unwrap();
    assert_eq!(e.logit, 2e38);
    assert!(
        e.relevance.iter().all(|v| v.is_finite()),
        "{:?}",
        e.relevance
    );
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].starts_with("non-finite relevance (NaN or Inf), first at Gemm node")
            && e.warnings[0].ends_with("(alpha2-beta1): 12 values of the map set to 0"),
        "{}",
        e.warnings[0]
    );
    // through the command: a 2x2 photo whose first pixel is red, normalised
    // with std 0.05 (1 / 0.05 = 20)
    let png = t.path().join("red.png");
    let mut img = image::RgbImage::new(2, 2);
    img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
    img.save(&png).unwrap();
    let o = run(
        t.path(),
        &[
            png.to_str().unwrap(),
            "-m",
            model_path.to_str().unwrap(),
            "-r",
            "alpha-beta",
            "--mean",
            "0,0,0",
            "--std",
            "0.05,0.05,0.05",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: ") && l.contains("red.png: non-finite relevance")),
        "{err}"
    );
    assert_eq!(json_lines(&o)[0]["warnings"].as_array().unwrap().len(), 1);
    assert!(t.path().join("red.alpha-beta.png").exists());
}
