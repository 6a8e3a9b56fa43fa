//! `--layer`, `--concept` and `--start` on the token tensors of vision
//! transformers (`[batch, T, D]`, `T = P * P` patch tokens after 0 to 2
//! class or distillation tokens): the relevance per token, the `[P, P]` map
//! of the patch tokens, the embedding dimensions as channels. The reduced
//! torchvision ViT of `tests/fixtures/vit/` (224 x 224, patches of 16: 196
//! patch tokens and a class token of width 48) from both PyTorch exporters,
//! through the command in a temporary folder and through the library.
//!
//! Expected figures come from the definitions (sums, reshapes, masks), and
//! the two exporters' files of one network must agree with each other.

use std::path::{Path, PathBuf};

use lrp_heatmap::analyzers::lrp::{Channels, LayerRelevance, Probes, Tokens};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::npy::read_npy_f32;
use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::Value;

use crate::support::{check_usage_error, json_lines, repo, run, text};

const RULE: &str = "cp-lrp";

/// A block's output in each file: the residual stream after block 0.
fn block(exporter: &str) -> &'static str {
    match exporter {
        "dynamo" => "node_add_2",
        _ => "/encoder/layers/encoder_layer_0/Add_1",
    }
}

/// A tensor inside the attention, tokens first and the batch on axis 1.
fn inside_attention(exporter: &str) -> &'static str {
    match exporter {
        "dynamo" => "transpose_6",
        _ => "/encoder/layers/encoder_layer_1/self_attention/MatMul",
    }
}

fn vit(exporter: &str) -> PathBuf {
    repo(&format!("tests/fixtures/vit/vit_tv.{exporter}.onnx"))
}

fn cat() -> String {
    repo("images/cat.jpg").display().to_string()
}

fn npy(path: &Path) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

fn sum(a: &ArrayD<f32>) -> f64 {
    a.iter().map(|&v| v as f64).sum()
}

fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0f32, |m, &v| m.max(v.abs()))
}

/// `|a - b| <= tol * scale` elementwise; panics naming `what`.
fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let scale = max_abs(a).max(max_abs(b)).max(f32::MIN_POSITIVE);
    let d = (a - b).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
    assert!(d <= tol * scale, "{what}: max difference {d} of {scale}");
}

/// The `[P, P]` map of a `[T, D]` relevance by the definition: the last
/// `P * P` rows, each summed over `D` (in f64), reshaped row-major.
fn patch_map(r: &ArrayD<f32>, grid: usize) -> ArrayD<f32> {
    let t = r.shape()[0];
    let rows: Vec<f32> = (t - grid * grid..t)
        .map(|i| {
            r.index_axis(Axis(0), i)
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>() as f32
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[grid, grid]), rows).expect("P * P values")
}

/// The command in a temporary folder on the cat with `--json` and `args`;
/// returns the folder (outputs in `out/`) and the JSON report.
fn command(exporter: &str, args: &[&str]) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = vit(exporter).display().to_string();
    let cat = cat();
    let mut all = vec![
        cat.as_str(),
        "-m",
        &model,
        "-r",
        RULE,
        "--json",
        "-q",
        "-o",
        "out",
    ];
    all.extend_from_slice(args);
    let o = run(dir.path(), &all);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let mut v = json_lines(&o);
    assert_eq!(v.len(), 1);
    (dir, v.remove(0))
}

fn path_of(dir: &Path, v: &Value) -> PathBuf {
    let p = PathBuf::from(v.as_str().expect("a path"));
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

#[test]
fn a_block_output_gives_tokens_by_dimension_and_the_patch_map() {
    let mut maps = Vec::new();
    for exporter in ["dynamo", "ts"] {
        let layer = block(exporter);
        let (dir, v) = command(exporter, &["--layer", layer, "--ledger"]);
        let l = &v["layers"][0];
        assert_eq!(l["shape"], serde_json::json!([197, 48]), "{exporter}");
        let r = npy(&path_of(dir.path(), &l["npy"]));
        assert_eq!(r.shape(), &[197, 48], "{exporter}");
        let tokens = &l["tokens"];
        assert_eq!(tokens["grid"], serde_json::json!([14, 14]), "{exporter}");
        let file = path_of(dir.path(), &tokens["npy"]);
        let stem = format!("cat.{RULE}.{}.tokens.npy", lrp_heatmap_file_part(layer));
        assert_eq!(file.file_name().unwrap().to_str().unwrap(), stem);
        let map = npy(&file);
        assert_eq!(map.shape(), &[14, 14], "{exporter}");
        // the map is the sum over D of the last 196 tokens, row-major
        assert_close(&map, &patch_map(&r, 14), 1e-6, "token map");
        // the class token is row 0; with the patches it is the whole layer
        let class: f64 = r.index_axis(Axis(0), 0).iter().map(|&v| v as f64).sum();
        let total = sum(&r);
        let cls = tokens["class_token"].as_f64().expect("class_token");
        let patches = tokens["patches"].as_f64().expect("patches");
        assert!(
            (cls - class).abs() <= 1e-6 * class.abs().max(1.0),
            "{cls} vs {class}"
        );
        assert!(
            (patches - sum(&map)).abs() <= 1e-5,
            "{patches} vs {}",
            sum(&map)
        );
        let scale = r.iter().map(|&v| v.abs() as f64).sum::<f64>();
        assert!(
            (cls + patches - total).abs() <= 1e-6 * scale,
            "{exporter}: class token {cls} + patches {patches} != layer {total}"
        );
        assert!((l["sum"].as_f64().unwrap() - total).abs() <= 1e-6 * scale);
        // ... and the layer holds what the backward pass brought to that
        // tensor (cp-lrp conserves it up to the biases, which the ledger
        // books): the relevance arriving at the block's Add
        let ledger: Value = serde_json::from_str(
            &std::fs::read_to_string(path_of(dir.path(), &v["ledger"]["file"])).unwrap(),
        )
        .unwrap();
        let node = (ledger["nodes"].as_array().unwrap().iter())
            .find(|n| n["node"] == layer)
            .unwrap_or_else(|| panic!("{exporter}: {layer} in the ledger"));
        let arrived = node["in"].as_f64().unwrap();
        assert!(
            (arrived - total).abs() <= 1e-5 * scale,
            "{exporter}: the ledger has {arrived} arriving at {layer}, the layer holds {total}"
        );
        // the channels are the 48 dimensions, each summed over the tokens
        let ch = l["channels"].as_array().unwrap();
        assert_eq!(ch.len(), 48, "{exporter}");
        let by_dim: Vec<f64> = (r.axis_iter(Axis(1)))
            .map(|c| c.iter().map(|&v| v as f64).sum())
            .collect();
        for c in ch {
            let k = c["channel"].as_u64().unwrap() as usize;
            let got = c["relevance"].as_f64().unwrap();
            assert!((got - by_dim[k]).abs() <= 1e-9 * scale, "dimension {k}");
        }
        let ranked: Vec<f64> = ch
            .iter()
            .map(|c| c["relevance"].as_f64().unwrap())
            .collect();
        assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "highest first");
        eprintln!(
            "{exporter}: {layer} total {total:.6} = class token {cls:.6} + patches {patches:.6}, logit {}",
            v["logit"]
        );
        maps.push(map);
    }
    // one network, two exporters: the same maps
    assert_close(&maps[0], &maps[1], 1e-4, "dynamo vs TorchScript token map");
}

/// `file_part` of the command (`/a/b` -> `a_b`), restated.
fn lrp_heatmap_file_part(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                ' '
            }
        })
        .collect();
    s.trim().replace(' ', "_")
}

#[test]
fn a_concept_keeps_one_embedding_dimension_of_every_token() {
    for exporter in ["dynamo", "ts"] {
        let layer = block(exporter);
        let (dir, plain) = command(exporter, &["--layer", layer, "--raw"]);
        let r = npy(&path_of(dir.path(), &plain["layers"][0]["npy"]));
        let whole = npy(&path_of(dir.path(), &plain["npy"]));
        let k = 5;
        let concept = format!("{layer}:{k}");
        let (cdir, c) = command(exporter, &["--concept", &concept, "--raw", "--ledger"]);
        let map = npy(&path_of(cdir.path(), &c["npy"]));
        assert!(map.iter().all(|v| v.is_finite()), "{exporter}: finite");
        assert!(map.iter().any(|&v| v != 0.0), "{exporter}: not blank");
        assert_eq!(c["concept"]["channels"], serde_json::json!([k]));
        // the mask at the layer hands on dimension k of every token, no more
        let ledger: Value = serde_json::from_str(
            &std::fs::read_to_string(path_of(cdir.path(), &c["ledger"]["file"])).unwrap(),
        )
        .unwrap();
        let mask = (ledger["nodes"].as_array().unwrap().iter())
            .find(|n| n["op"] == "concept")
            .expect("the concept's mask in the ledger");
        let dim_k: f64 = r.index_axis(Axis(1), k).iter().map(|&v| v as f64).sum();
        let scale = r.iter().map(|&v| v.abs() as f64).sum::<f64>();
        let (m_in, m_out) = (mask["in"].as_f64().unwrap(), mask["out"].as_f64().unwrap());
        assert!(
            (m_in - sum(&r)).abs() <= 1e-5 * scale,
            "{m_in} vs {}",
            sum(&r)
        );
        assert!(
            (m_out - dim_k).abs() <= 1e-5 * scale,
            "{exporter}: the mask passes on {m_out}, dimension {k} holds {dim_k}"
        );
        // dimension k and all the others are the whole map (the block's
        // output is a cut of the graph, the rules linear in the relevance)
        let others: Vec<String> = (0..48).filter(|&d| d != k).map(|d| d.to_string()).collect();
        let rest = format!("{layer}:{}", others.join(","));
        let (rdir, rv) = command(exporter, &["--concept", &rest, "--raw"]);
        let rest_map = npy(&path_of(rdir.path(), &rv["npy"]));
        assert_close(&(&map + &rest_map), &whole, 1e-4, "concept k + the others");
        eprintln!(
            "{exporter}: concept {concept}: sum {} (dimension {k} holds {dim_k:.6} of {:.6})",
            c["relevance_sum"],
            sum(&r)
        );
    }
}

#[test]
fn out_of_range_dimensions_and_token_first_layouts_are_clear_errors() {
    for exporter in ["dynamo", "ts"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = vit(exporter).display().to_string();
        let cat = cat();
        for flag in ["--concept", "--start"] {
            let bad = format!("{}:48", block(exporter));
            let o = run(dir.path(), &[&cat, "-m", &model, "-r", RULE, flag, &bad]);
            let err = check_usage_error(&o, "48 embedding dimensions");
            assert!(err.contains(flag) && err.contains("channel 48"), "{err}");
            let inside = format!("{}:0", inside_attention(exporter));
            let o = run(dir.path(), &[&cat, "-m", &model, "-r", RULE, flag, &inside]);
            let err = check_usage_error(&o, "holds the batch on axis 1");
            assert!(err.contains("no channel axis"), "{err}");
        }
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }
}

fn explain(model: &Model, probes: &Probes) -> lrp_heatmap::Explanation {
    let norm = Normalization::default();
    let img = image::open(repo("images/cat.jpg")).unwrap().to_rgb8();
    let fwd = model.forward(model.tensor(&img, &norm).unwrap()).unwrap();
    let top = (0..fwd.logits.len())
        .max_by(|&a, &b| fwd.logits[a].total_cmp(&fwd.logits[b]))
        .unwrap();
    let a = Analyzer::from_name(RULE, &AnalyzerParams::default()).unwrap();
    a.explain_probed(model, &fwd, top, &norm, probes).unwrap()
}

#[test]
fn the_library_names_the_tokens_of_each_layer() {
    let model = Model::load(vit("dynamo")).unwrap();
    let probes = Probes {
        layers: vec!["node_add_2".into(), "node_conv2d".into(), "linear_2".into()],
        ..Default::default()
    };
    let e = explain(&model, &probes);
    let [add, conv, mlp] = &e.layers[..] else {
        panic!("three layers")
    };
    assert_eq!(add.tokens, Some(Tokens { grid: 14, extra: 1 }));
    assert_eq!(add.relevance.shape(), &[197, 48]);
    let map = add.token_map().expect("a token map").into_dyn();
    assert_close(&map, &patch_map(&add.relevance, 14), 1e-6, "token_map");
    let extra = add.extra_tokens();
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0].0, "class_token");
    let row0: f64 = add
        .relevance
        .index_axis(Axis(0), 0)
        .iter()
        .map(|&v| v as f64)
        .sum();
    assert!((extra[0].1 - row0).abs() <= 1e-9);
    assert_eq!(add.channel_sums().len(), 48);
    // the MLP's hidden layer: tokens of width 96
    assert_eq!(mlp.tokens, Some(Tokens { grid: 14, extra: 1 }));
    assert_eq!(mlp.channel_sums().len(), 96);
    // the patch embedding is a CNN feature map [48, 14, 14]: channels on axis 1
    assert_eq!(conv.tokens, None);
    assert_eq!(conv.token_map(), None);
    assert!(conv.extra_tokens().is_empty());
    let ch = conv.channel_sums();
    assert_eq!(ch.len(), 48);
    let c0: f64 = conv
        .relevance
        .index_axis(Axis(0), ch[0].0)
        .iter()
        .map(|&v| v as f64)
        .sum();
    assert!((ch[0].1 - c0).abs() <= 1e-9);
    // the patch embedding's relevance is the patches' share of the block's
    // input, in the same order: its [14, 14] map against the token map of
    // the tokens before the class token is concatenated ('permute')
    let e2 = explain(
        &model,
        &Probes {
            layers: vec!["permute".into(), "node_conv2d".into()],
            ..Default::default()
        },
    );
    let (permute, conv) = (&e2.layers[0], &e2.layers[1]);
    assert_eq!(permute.tokens, Some(Tokens { grid: 14, extra: 0 }));
    assert!(permute.extra_tokens().is_empty());
    let conv_map = conv.relevance.sum_axis(Axis(0));
    let token_map = permute.token_map().unwrap().into_dyn();
    assert_close(
        &token_map,
        &conv_map,
        1e-5,
        "patch order = the convolution's pixels",
    );
}

#[test]
fn a_start_at_a_dimension_starts_from_its_activations_on_every_token() {
    let model = Model::load(vit("ts")).unwrap();
    let layer = block("ts");
    let k = 3;
    let e = explain(
        &model,
        &Probes {
            layers: vec![layer.into()],
            start: Some(Channels {
                layer: layer.into(),
                channels: vec![k],
            }),
            ..Default::default()
        },
    );
    let l: &LayerRelevance = &e.layers[0];
    assert_eq!(l.relevance.shape(), &[197, 48]);
    for (d, col) in l.relevance.axis_iter(Axis(1)).enumerate() {
        if d != k {
            assert!(col.iter().all(|&v| v == 0.0), "dimension {d} is not zero");
        }
    }
    let col: f64 = l
        .relevance
        .index_axis(Axis(1), k)
        .iter()
        .map(|&v| v as f64)
        .sum();
    assert!(col != 0.0);
    assert!(
        (col - e.logit as f64).abs() <= 1e-4 * col.abs(),
        "{col} vs {}",
        e.logit
    );
    assert!(e.relevance.iter().all(|v| v.is_finite()));
}

#[test]
fn other_vision_transformers_have_their_own_grids() {
    for (file, layer, grid, width) in [
        ("vit_tiny.dynamo.onnx", "node_add_2", 4, 16),
        ("deit.ts.onnx", "/blocks/blocks.0/Add_1", 14, 48),
    ] {
        let model = Model::load(repo(&format!("tests/fixtures/vit/{file}"))).unwrap();
        let e = explain(
            &model,
            &Probes {
                layers: vec![layer.into()],
                ..Default::default()
            },
        );
        let l = &e.layers[0];
        assert_eq!(l.relevance.shape(), &[grid * grid + 1, width], "{file}");
        assert_eq!(l.tokens, Some(Tokens { grid, extra: 1 }), "{file}");
        let map = l.token_map().unwrap().into_dyn();
        assert_close(&map, &patch_map(&l.relevance, grid), 1e-6, file);
    }
}
