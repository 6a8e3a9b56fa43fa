//! Loading what real exporters write: constants behind `Identity` and
//! `DequantizeLinear` nodes are folded at load, fake-quantized activations
//! pass, and operators we cannot explain are refused with the operator and
//! node named (exit 2, one line, no panic).

use std::path::{Path, PathBuf};

use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::TensorProto;

use crate::support::*;

/// [`conv_classifier`] (seed 3, opset 17) with `middle` (writes `m` from
/// `r`), written as `t/name`.
fn model_with(name: &str, t: &Path, middle: impl FnOnce(&mut OnnxBuilder)) -> PathBuf {
    let b = conv_classifier(3, 17, middle, |b, wd| {
        b.initializer("wd", &[3, 4], &wd);
    });
    save_model(t, name, &b)
}

#[test]
fn operators_we_cannot_explain_are_refused_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // a normalisation without a rule here (LayerNormalization has one:
    // src/ops/layer_norm.rs)
    let inorm = model_with("instancenorm.onnx", t, |b| {
        b.initializer("in_s", &[8], &[1.0; 8]);
        b.initializer("in_b", &[8], &[0.0; 8]);
        b.node(
            "InstanceNormalization",
            &["r", "in_s", "in_b"],
            &["m"],
            vec![],
        );
    });
    model_error(
        t,
        &inorm,
        &["InstanceNormalization", "InstanceNormalization_1"],
    );
    // a log-softmax inside the network (a Softmax there is attention's,
    // tests/it/vit.rs)
    let sm = model_with("logsoftmax.onnx", t, |b| {
        b.node("LogSoftmax", &["r"], &["m"], vec![Attr::Int("axis", 1)]);
    });
    model_error(
        t,
        &sm,
        &["LogSoftmax", "LogSoftmax_1", "inside the network"],
    );
}

fn tensor(name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

#[test]
fn shared_constants_and_quantized_models_load_and_explain() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let img = good_png(t, "good.png");
    // TorchScript's de-duplicated bias: an Identity of an initializer, read
    // by two layers; before folding, "parameter 'b2' is not a constant"
    let shared = model_with("shared.onnx", t, |b| {
        b.initializer("b", &[4], &[0.0; 4]);
        b.node("Identity", &["b"], &["b2"], vec![]);
        b.node("Relu", &["r"], &["r1"], vec![]);
        b.initializer("w2", &[4, 4, 1, 1], &[0.25; 16]);
        b.node("Conv", &["r1", "w2", "b2"], &["m"], vec![]);
    });
    for rule in ["gradient", "lrp0", "zplus", "epsilon-plus-flat"] {
        let o = run(
            t,
            &[
                img.to_str().unwrap(),
                "-m",
                shared.to_str().unwrap(),
                "-r",
                rule,
                "--json",
            ],
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{rule}: {err}");
        let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            line["relevance_sum"].as_f64().unwrap().is_finite(),
            "{line}"
        );
    }
    // QDQ: int8 weights behind DequantizeLinear, and the activation after
    // the first conv fake-quantized (QuantizeLinear -> DequantizeLinear)
    let path = t.join("qdq.onnx");
    let mut b = OnnxBuilder::new(13);
    let mut rng = Rng::new(4);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
    b.node(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![Attr::Ints("pads", vec![1, 1, 1, 1])],
    );
    b.node("QuantizeLinear", &["c", "as", "az"], &["cq"], vec![]);
    b.node("DequantizeLinear", &["cq", "as", "az"], &["cd"], vec![]);
    b.node("Relu", &["cd"], &["r"], vec![]);
    b.node("GlobalAveragePool", &["r"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.node(
        "DequantizeLinear",
        &["wq", "ws", "wz"],
        &["wd"],
        vec![Attr::Int("axis", 0)],
    );
    b.node("Gemm", &["f", "wd"], &["y"], vec![Attr::Int("transB", 1)]);
    b.output("y", &[1, 3]);
    let mut p = b.to_model_proto();
    let g = p.graph.as_mut().unwrap();
    g.initializer.push(tensor(
        "as",
        &[],
        DataType::Float,
        0.05f32.to_le_bytes().to_vec(),
    ));
    g.initializer
        .push(tensor("az", &[], DataType::Uint8, vec![128]));
    let wq: Vec<u8> = (0..12).map(|i| (i * 37 % 255) as u8).collect();
    g.initializer
        .push(tensor("wq", &[3, 4], DataType::Int8, wq));
    let ws: Vec<u8> = [0.01f32, 0.02, 0.03]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    g.initializer.push(tensor("ws", &[3], DataType::Float, ws));
    g.initializer
        .push(tensor("wz", &[3], DataType::Int8, vec![0, 1, 255]));
    std::fs::write(&path, p.encode_to_vec()).unwrap();
    for rule in ["gradient", "lrp0", "epsilon-plus-flat"] {
        let o = run(
            t,
            &[
                img.to_str().unwrap(),
                "-m",
                path.to_str().unwrap(),
                "-r",
                rule,
                "--json",
            ],
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{rule}: {err}");
        assert!(
            err.contains("note: the model fake-quantizes its activations"),
            "{err}"
        );
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
}
