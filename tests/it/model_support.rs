//! What a user learns about a model before and while running it: `inspect`
//! (`--list-ops`), errors naming unsupported operators and their nodes, and
//! symbolic input dimensions fixed by the command.

use std::path::{Path, PathBuf};

use lrp_testkit::npy::read_npy_f32;
use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};

use crate::support::{lrp, random_rgb, save_model, text};

fn conv(b: &mut OnnxBuilder, rng: &mut Rng, x: &str, cin: usize, cout: usize, out: &str) {
    let w = he_normal(rng, cin * 9, cout * cin * 9);
    let w = b.initializer(&format!("{out}_w"), &[cout, cin, 3, 3], &w);
    b.node(
        "Conv",
        &[x, &w],
        &[out],
        vec![
            Attr::Ints("kernel_shape", vec![3, 3]),
            Attr::Ints("pads", vec![1; 4]),
        ],
    );
}

fn head(b: &mut OnnxBuilder, rng: &mut Rng, x: &str, cin: usize, out: &str) {
    b.node("GlobalAveragePool", &[x], &["gap"], vec![]);
    b.node("Flatten", &["gap"], &["flat"], vec![Attr::Int("axis", 1)]);
    let w = he_normal(rng, cin, 3 * cin);
    let w = b.initializer("fc_w", &[3, cin], &w);
    b.node("Gemm", &["flat", &w], &[out], vec![Attr::Int("transB", 1)]);
}

/// Input `input` [N, 3, H, W] -> Conv + Relu = a -> Conv + Relu = b -> Concat(a, b)
/// -> a Reshape to itself with its shape computed at run time (Shape, Gather, Concat)
/// -> GlobalAveragePool -> Flatten -> Gemm -> Softmax.
fn symbolic_model(dir: &Path) -> PathBuf {
    let mut rng = Rng::new(5);
    let mut b = OnnxBuilder::new(13);
    b.input_named_dims("input", &["N", "3", "H", "W"]);
    conv(&mut b, &mut rng, "input", 3, 2, "c1");
    b.node("Relu", &["c1"], &["a"], vec![]);
    conv(&mut b, &mut rng, "a", 2, 2, "c2");
    b.node("Relu", &["c2"], &["b"], vec![]);
    b.node("Concat", &["a", "b"], &["cat"], vec![Attr::Int("axis", 1)]);
    b.node("Shape", &["cat"], &["shape"], vec![]);
    let idx = b.initializer_i64("idx", &[3], &[0, 1, 2]);
    b.node(
        "Gather",
        &["shape", &idx],
        &["nch"],
        vec![Attr::Int("axis", 0)],
    );
    let last = b.initializer_i64("last", &[1], &[-1]);
    b.node(
        "Concat",
        &["nch", &last],
        &["newshape"],
        vec![Attr::Int("axis", 0)],
    );
    b.node("Reshape", &["cat", "newshape"], &["same"], vec![]);
    head(&mut b, &mut rng, "same", 4, "logits");
    b.node(
        "Softmax",
        &["logits"],
        &["probs"],
        vec![Attr::Int("axis", 1)],
    );
    b.output("probs", &[]);
    save_model(dir, "symbolic.onnx", &b)
}

/// Input `x` [1, 3, 8, 8] -> Conv + Relu [-> LRN] -> GlobalAveragePool -> Flatten -> Gemm.
fn fixed_model(dir: &Path, lrn: bool) -> PathBuf {
    let mut rng = Rng::new(6);
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    conv(&mut b, &mut rng, "x", 3, 2, "c1");
    b.node("Relu", &["c1"], &["r"], vec![]);
    if lrn {
        b.node("LRN", &["r"], &["n"], vec![Attr::Int("size", 3)]);
    } else {
        b.node("Identity", &["r"], &["n"], vec![]);
    }
    head(&mut b, &mut rng, "n", 2, "y");
    b.output("y", &[]);
    save_model(dir, &format!("fixed_{lrn}.onnx"), &b)
}

fn png(dir: &Path, w: u32, h: u32) -> PathBuf {
    let p = dir.join("photo.png");
    random_rgb(w, h, 7).save(&p).unwrap();
    p
}

#[test]
fn inspect_lists_input_output_operators_and_support() {
    let dir = tempfile::tempdir().unwrap();
    let model = symbolic_model(dir.path());
    let o = lrp(&["inspect", model.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("input:    input [N, 3, H, W]"), "{out}");
    assert!(out.contains("output:   probs"), "{out}");
    assert!(out.contains("opset 13"), "{out}");
    // counts of the nodes on the image path, with their handling
    for line in [
        "      2  Conv                 linear layer",
        "      2  Relu                 activation: relevance passes",
        "      1  Concat               each input gets its slice back",
        "      1  Softmax              as the last node: skipped",
        "      1  GlobalAveragePool    proportional",
        "      1  Reshape              shape only",
    ] {
        assert!(out.contains(line), "missing '{line}' in\n{out}");
    }
    // the shape computation is listed apart: Shape, Gather and one Concat
    let shapes = out
        .split("shape and constant computations")
        .nth(1)
        .expect("section");
    for op in ["Shape", "Gather", "Concat"] {
        assert!(shapes.contains(op), "{op} in\n{out}");
    }
    assert!(
        out.contains("supported: yes") && out.contains("[1, 3, 224, 224]"),
        "{out}"
    );
    assert!(out.contains("trailing softmax skipped"), "{out}");
    // --list-ops is the same command, and --input-size fixes H and W
    let o2 = lrp(&[
        "--list-ops",
        model.to_str().unwrap(),
        "--input-size",
        "16x20",
    ]);
    assert_eq!(o2.status.code(), Some(0), "{}", text(&o2.stderr));
    assert!(
        text(&o2.stdout).contains("[1, 3, 16, 20]"),
        "{}",
        text(&o2.stdout)
    );
}

#[test]
fn unsupported_operators_are_named_with_their_node() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixed_model(dir.path(), true);
    let o = lrp(&["inspect", model.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("LRN                  NO LRP HANDLING (nodes LRN_2)"),
        "{out}"
    );
    assert!(
        out.contains("operators without an LRP handling: LRN"),
        "{out}"
    );
    assert!(
        out.contains("supported: no") && out.contains("unsupported operator 'LRN' (node 'LRN_2')"),
        "{out}"
    );
    // running it fails before any image, exit code 2, one line naming the node
    let photo = png(dir.path(), 8, 8);
    let o = lrp(&[photo.to_str().unwrap(), "-m", model.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unsupported operator 'LRN' (node 'LRN_2')"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn symbolic_spatial_dims_default_to_224_or_the_input_size_and_the_command_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let model = symbolic_model(dir.path());
    let photo = png(dir.path(), 12, 10);
    let out = dir.path().join("out");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            photo.to_str().unwrap(),
            "-m",
            model.to_str().unwrap(),
            "--raw",
            "--json",
            "-r",
            "zplus",
            "-o",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let npy = out.join("photo.zplus.npy");
    for (extra, shape) in [
        (vec![], [3, 224, 224]),
        (vec!["--input-size", "16x20"], [3, 16, 20]),
    ] {
        let a = args(&extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = lrp(&a);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        let note = format!(
            "note: the model input has symbolic dimensions; using [1, {}, {}, {}]",
            shape[0], shape[1], shape[2]
        );
        assert!(err.contains(&note), "{err}");
        let (s, r) = read_npy_f32(&npy).unwrap();
        assert_eq!(s, shape);
        // no biases, ReLU after every conv: z+ conserves the logit
        let v: serde_json::Value =
            serde_json::from_str(text(&o.stdout).lines().next().unwrap()).unwrap();
        let logit = v["logit"].as_f64().unwrap();
        let sum: f64 = r.iter().map(|&x| x as f64).sum();
        assert!(
            (sum - logit).abs() <= 1e-3 * logit.abs(),
            "{sum} vs {logit}"
        );
    }
    // a fixed input cannot be resized
    let fixed = fixed_model(dir.path(), false);
    let o = lrp(&["inspect", fixed.to_str().unwrap(), "--input-size", "16x20"]);
    assert!(
        text(&o.stdout).contains("is fixed to 8x8"),
        "{}",
        text(&o.stdout)
    );
    let o = lrp(&[photo.to_str().unwrap(), "--input-size", "0x3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--input-size"),
        "{}",
        text(&o.stderr)
    );
}

/// The copy map of a nearest `Resize` (what relevance and gradients are summed
/// back along) against tract's forward pass, for every coordinate
/// transformation and rounding mode, up- and downsampling: the input holds its
/// own flat index, so each output element shows which input it copied.
#[test]
fn resize_nearest_copy_maps_agree_with_tract_for_every_mode() {
    use lrp_heatmap::ops::resize::{axis_map, CoordMode, NearestMode};
    use tract_onnx::prelude::*;
    let (h, w) = (5usize, 6usize);
    let mut failures = vec![];
    for coord in [
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
    ] {
        for nearest in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"] {
            for (sh, sw) in [(2.0f32, 3.0f32), (1.5, 0.5), (0.6, 1.75)] {
                let mut b = OnnxBuilder::new(13);
                b.input("x", &[1, 1, h as i64, w as i64]);
                let sc = b.initializer("scales", &[4], &[1.0, 1.0, sh, sw]);
                let attrs = vec![
                    Attr::Str("coordinate_transformation_mode", coord.into()),
                    Attr::Str("mode", "nearest".into()),
                    Attr::Str("nearest_mode", nearest.into()),
                ];
                b.node("Resize", &["x", "", &sc], &["y"], attrs);
                b.output("y", &[]);
                let bytes = b.to_bytes();
                let x = tract_ndarray::Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| {
                    (y * w + x) as f32
                });
                let y = tract_onnx::onnx()
                    .model_for_read(&mut &bytes[..])
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .and_then(|p| p.run(tvec!(x.into_tensor().into_tvalue())))
                    .unwrap_or_else(|e| panic!("{coord} {nearest}: {e:#}"));
                let y = y[0].to_plain_array_view::<f32>().unwrap().to_owned();
                let (oh, ow) = (y.shape()[2], y.shape()[3]);
                let c = CoordMode::parse(coord).unwrap();
                let n = NearestMode::parse(nearest).unwrap();
                let rows = axis_map(c, n, sh, h, oh);
                let cols = axis_map(c, n, sw, w, ow);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let got = y[[0, 0, oy, ox]] as usize;
                        let want = rows[oy] * w + cols[ox];
                        if got != want {
                            failures.push(format!(
                                "{coord} {nearest} scales {sh} {sw}: output ({oy}, {ox}) copies {got}, map says {want}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
