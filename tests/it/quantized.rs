//! Models quantized by onnxruntime's own quantizer (`quantize_static`, QDQ):
//! per tensor and per channel, int8 and uint8 weights, uint8 and int8
//! activations. Their int8 weights are folded at load into float weights
//! (per-channel ones used to be refused by the size guard of constant
//! folding, which broadcast a `[C]` scale onto the last axis of the weight),
//! and the fake-quantized activations run in tract.
//!
//! Fixtures: `tests/fixtures/quantized/` (`scripts/export_quantized.py`):
//! torchvision's resnet18 with channels / 8 at 64x64, its input and
//! onnxruntime's logits on it; `blocked.onnx`, a small classifier whose dense
//! weight is blocked-quantized (opset 21, `block_size`), which is refused.

use std::path::PathBuf;

use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::npy::read_npy_f32;
use ndarray::{ArrayD, IxDyn};

use crate::support::{good_png, model_error, run, text};

/// The variants of `scripts/export_quantized.py`.
const VARIANTS: [&str; 5] = [
    "tensor_s8",
    "tensor_u8",
    "channel_s8",
    "channel_u8",
    "channel_s8_s8act",
];

fn fixture(name: &str) -> PathBuf {
    crate::support::repo("tests/fixtures/quantized").join(name)
}

fn npy(name: &str) -> ArrayD<f32> {
    let (shape, data) = read_npy_f32(&fixture(name)).expect("fixture reads");
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape fits")
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn onnxruntime_quantized_models_match_onnxruntime_and_explain() {
    let x = npy("input.npy");
    let norm = Normalization::default();
    let mut fails = vec![];
    for name in VARIANTS {
        let model =
            Model::load(fixture(&format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = npy(&format!("{name}.logits.npy"));
        let want = want.as_slice().unwrap();
        let fwd = model.forward(x.clone()).expect("forward");
        let got = &fwd.logits;
        assert_eq!(got.len(), want.len(), "{name}");
        // onnxruntime's top class has a margin of at least 1.4 over the
        // second (manifest.json: the input was chosen for it), so rounding
        // cannot decide it
        let (top, top_ort) = (argmax(got), argmax(want));
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!(
            "{name:>16} ({}): top {top} (onnxruntime {top_ort}), max |logit diff| {diff:.2e} = {:.2}% of max |logit| {scale:.3}",
            model.engine(),
            100.0 * diff / scale
        );
        if top != top_ort {
            fails.push(format!("{name}: top {top}, onnxruntime's {top_ort}"));
        }
        // 2%: a step or two of the quantized output (its scale is about
        // 0.03 for logits within +-4), where tract's float rounding puts a
        // value on the other side of a quantization boundary
        if diff > 0.02 * scale {
            fails.push(format!(
                "{name}: logits differ by {diff} (max |logit| {scale})"
            ));
        }
        for analyzer in ["gradient", "zplus", "epsilon-plus-flat"] {
            let a = Analyzer::from_name(analyzer, &AnalyzerParams::default()).unwrap();
            let e = a
                .explain(&model, &fwd, top, &norm)
                .unwrap_or_else(|e| panic!("{name} {analyzer}: {e:#}"));
            let finite = e.relevance.iter().all(|v| v.is_finite());
            let nonzero = e.relevance.iter().any(|&v| v != 0.0);
            println!(
                "{name:>16} {analyzer:>18}: relevance sum {:.4}, finite {finite}, nonzero {nonzero}",
                e.relevance_sum
            );
            if !finite || !nonzero {
                fails.push(format!(
                    "{name} {analyzer}: finite {finite}, nonzero {nonzero}"
                ));
            }
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}

/// x [1, 3, 8, 8] -> Conv 1x1 (512 channels) -> Relu -> Conv 1x1 (1024
/// channels, weight `w2`) -> GlobalAveragePool -> Flatten -> Gemm (10
/// classes): ResNet50's [1024, 512, 1, 1] weight. With `quantized` the
/// weight is DequantizeLinear(int8 `wq`, per-channel `scale`, `zp`, axis 0),
/// else the float weight `w2` given.
fn wide_model(quantized: Option<(&[i8], &[f32], &[i8])>, w2: &[f32]) -> Vec<u8> {
    use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};
    use prost::Message;
    use tract_onnx::pb::tensor_proto::DataType;
    use tract_onnx::pb::TensorProto;

    let mut rng = Rng::new(26);
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w1", &[512, 3, 1, 1], &he_normal(&mut rng, 3, 512 * 3));
    b.initializer("w3", &[10, 1024], &he_normal(&mut rng, 1024, 10 * 1024));
    b.node("Conv", &["x", "w1"], &["c1"], vec![]);
    b.node("Relu", &["c1"], &["r1"], vec![]);
    if quantized.is_some() {
        b.node(
            "DequantizeLinear",
            &["wq", "scale", "zp"],
            &["w2"],
            vec![Attr::Int("axis", 0)],
        );
    } else {
        b.initializer("w2", &[1024, 512, 1, 1], w2);
    }
    b.node("Conv", &["r1", "w2"], &["c2"], vec![]);
    b.node("GlobalAveragePool", &["c2"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.node("Gemm", &["f", "w3"], &["y"], vec![Attr::Int("transB", 1)]);
    b.output("y", &[1, 10]);
    let mut p = b.to_model_proto();
    if let Some((wq, scale, zp)) = quantized {
        let t = |name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>| TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt as i32,
            raw_data: raw,
            ..Default::default()
        };
        let bytes = |v: &[i8]| v.iter().map(|&q| q as u8).collect::<Vec<u8>>();
        let g = p.graph.as_mut().unwrap();
        g.initializer
            .push(t("wq", &[1024, 512, 1, 1], DataType::Int8, bytes(wq)));
        let s = scale.iter().flat_map(|v| v.to_le_bytes()).collect();
        g.initializer.push(t("scale", &[1024], DataType::Float, s));
        g.initializer
            .push(t("zp", &[1024], DataType::Int8, bytes(zp)));
    }
    p.encode_to_vec()
}

#[test]
fn a_per_channel_weight_as_wide_as_resnet50s_loads() {
    // the weight that was refused: its scale [1024] broadcast onto the last
    // axis made [1024, 512, 1, 1024], 2^29 elements, over the 2^28 allowed
    let mut rng = lrp_testkit::synth::Rng::new(7);
    let wq: Vec<i8> = (0..1024 * 512)
        .map(|_| (rng.normal() * 40.0).clamp(-128.0, 127.0) as i8)
        .collect();
    let scale: Vec<f32> = (0..1024).map(|c| 0.001 + 0.00002 * c as f32).collect();
    let zp: Vec<i8> = (0..1024).map(|c| (c % 7) as i8 - 3).collect();
    // the dequantized weight by hand, (q - zero point) * scale of its output
    // channel, in f32 as DequantizeLinear computes it
    let w2: Vec<f32> = (0..1024 * 512)
        .map(|i| (wq[i] as f32 - zp[i / 512] as f32) * scale[i / 512])
        .collect();
    let opts = Model::options();
    let load = |bytes: Vec<u8>, name: &str| {
        opts.from_bytes(&bytes, std::path::Path::new(name), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let q = load(wide_model(Some((&wq, &scale, &zp)), &[]), "wide_q.onnx");
    let f = load(wide_model(None, &w2), "wide_f.onnx");
    let x = ArrayD::from_shape_fn(vec![1, 3, 8, 8], |i| {
        ((i[1] * 64 + i[2] * 8 + i[3]) as f32 * 0.37).sin()
    });
    let (lq, lf) = (
        q.forward(x.clone()).unwrap().logits,
        f.forward(x).unwrap().logits,
    );
    let diff = lq
        .iter()
        .zip(&lf)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = lf.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("quantized vs float weights: max |logit diff| {diff:.2e} of max |logit| {scale:.3}");
    // the same f32 weights through the same engine: equal up to rounding of
    // the dequantization (1e-6 relative)
    assert!(diff <= 1e-5 * scale, "{lq:?} vs {lf:?}");
}

#[test]
fn the_binary_explains_a_per_channel_quantized_model() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let img = good_png(t, "good.png");
    let model = fixture("channel_s8.onnx");
    let o = run(
        t,
        &[
            img.to_str().unwrap(),
            "-m",
            model.to_str().unwrap(),
            "-r",
            "epsilon-plus-flat",
            "--json",
        ],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("note: the model's weights are quantized"),
        "{err}"
    );
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        line["relevance_sum"].as_f64().unwrap().is_finite(),
        "{line}"
    );
}

#[test]
fn blocked_quantization_is_refused_naming_the_node() {
    let path = fixture("blocked.onnx");
    match Model::load(&path) {
        Err(lrp_heatmap::Error::Unsupported {
            op_type,
            node,
            message,
        }) => {
            assert_eq!(op_type, "DequantizeLinear");
            assert_eq!(node, "dense_weight_dq");
            assert!(message.contains("blocked.onnx"), "{message}");
            assert!(
                message.contains("blocked quantization (block_size 2) is not supported"),
                "{message}"
            );
        }
        Err(e) => panic!("not Unsupported: {e:?}"),
        Ok(_) => panic!("blocked quantization loaded"),
    }
    // the binary: exit 2, one line naming the file, the node and the reason
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    model_error(
        t,
        &path,
        &[
            "DequantizeLinear",
            "dense_weight_dq",
            "blocked quantization",
        ],
    );
}
