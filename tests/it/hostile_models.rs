//! Hostile and unsuitable model files, run through the real binary: each is a
//! model error (exit 2) on one line naming the model file, without a panic,
//! and nothing is written. Models are written at test time with
//! `synth::OnnxBuilder`.

use std::path::Path;

use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};

use crate::support::{self, *};

/// [`support::model_error`] (a model error naming `model` and every one of
/// `words`), and nothing was written.
fn model_error(t: &Path, model: &Path, words: &[&str]) -> String {
    good_png(t, "good.png");
    let before = files_below(t);
    let err = support::model_error(t, model, words);
    assert_eq!(files_below(t), before, "something was written: {err}");
    err
}

#[test]
fn unreadable_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let good = tiny_model_builder().to_bytes();
    model_error(t, &t.join("missing.onnx"), &["no such file"]);
    std::fs::write(t.join("empty.onnx"), b"").unwrap();
    model_error(t, &t.join("empty.onnx"), &["empty"]);
    std::fs::write(t.join("truncated.onnx"), &good[..good.len() / 2]).unwrap();
    model_error(t, &t.join("truncated.onnx"), &[]);
    std::fs::write(t.join("random.onnx"), junk(4096, 3)).unwrap();
    model_error(t, &t.join("random.onnx"), &[]);
    std::fs::write(t.join("text.onnx"), b"ir_version: 7\ngraph { }\n").unwrap();
    model_error(t, &t.join("text.onnx"), &[]);
    std::fs::create_dir(t.join("folder.onnx")).unwrap();
    model_error(t, &t.join("folder.onnx"), &[]);
    // a valid protobuf that is an ONNX model without a graph
    std::fs::write(t.join("nograph.onnx"), [0x08, 0x07]).unwrap();
    model_error(t, &t.join("nograph.onnx"), &["graph"]);
}

#[test]
fn an_operator_without_an_lrp_rule_is_named_with_its_node() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // LRN (AlexNet, GoogLeNet) after the ReLU: tract runs it, LRP has no rule
    let mut rng = Rng::new(1);
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("Relu", &["c"], &["r"], vec![]);
    b.node("LRN", &["r"], &["n"], vec![Attr::Int("size", 3)]);
    b.node("GlobalAveragePool", &["n"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.initializer("wd", &[4, 3], &he_normal(&mut rng, 4, 12));
    b.node("MatMul", &["f", "wd"], &["y"], vec![]);
    b.output("y", &[1, 3]);
    let p = save_model(t, "lrn.onnx", &b);
    model_error(t, &p, &["'LRN'", "'LRN_2'"]);
}

#[test]
fn models_that_are_not_image_classifiers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut rng = Rng::new(2);
    // input of rank 2
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 12]);
    b.initializer("w", &[12, 3], &he_normal(&mut rng, 12, 36));
    b.node("MatMul", &["x", "w"], &["y"], vec![]);
    b.output("y", &[1, 3]);
    model_error(t, &save_model(t, "rank2.onnx", &b), &["rank 2"]);
    // 5 channels
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 5, 8, 8]);
    b.node("GlobalAveragePool", &["x"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["y"], vec![]);
    b.output("y", &[1, 5]);
    model_error(t, &save_model(t, "five.onnx", &b), &["channels"]);
    // a batch of 4
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[4, 3, 8, 8]);
    b.node("GlobalAveragePool", &["x"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["y"], vec![]);
    b.output("y", &[4, 3]);
    model_error(t, &save_model(t, "batch4.onnx", &b), &["batch"]);
    // an absurd input size: refused before anything is allocated for it
    // (tract's optimisation of the conv alone would allocate 80 GB: a fuzz
    // finding)
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 100_000, 100_000]);
    b.initializer("w", &[3, 3, 3, 3], &he_normal(&mut rng, 27, 81));
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("GlobalAveragePool", &["c"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["y"], vec![]);
    b.output("y", &[1, 3]);
    model_error(t, &save_model(t, "vast.onnx", &b), &["100000", "GB"]);
    // a segmentation-like output (a map, not a vector of scores)
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
    b.node("Conv", &["x", "w"], &["y"], vec![]);
    b.output("y", &[1, 4, 6, 6]);
    model_error(
        t,
        &save_model(t, "map.onnx", &b),
        &["not a vector of class scores"],
    );
    // a single score
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.node("GlobalAveragePool", &["x"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.initializer("w", &[3, 1], &[1.0, 2.0, 3.0]);
    b.node("MatMul", &["f", "w"], &["y"], vec![]);
    b.output("y", &[1, 1]);
    model_error(
        t,
        &save_model(t, "one-score.onnx", &b),
        &["not a vector of class scores"],
    );
    // an output that does not depend on the image
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("k", &[1, 3], &[1.0, 2.0, 3.0]);
    b.node("Identity", &["k"], &["y"], vec![]);
    b.output("y", &[1, 3]);
    model_error(t, &save_model(t, "constant.onnx", &b), &["does not depend"]);
}

/// The tiny classifier of [`conv_classifier`] (seed 7, opset 13, a ReLU in
/// the middle) with its dense weight `wd` ([3, 4]) in `weights.bin` at
/// `location`; returns the builder and the weight file's content.
fn external_model(location: &str, offset: usize) -> (OnnxBuilder, Vec<u8>) {
    let mut data = vec![0u8; offset];
    let relu = |b: &mut OnnxBuilder| b.node("Relu", &["r"], &["m"], vec![]);
    let b = conv_classifier(7, 13, relu, |b, wd| {
        b.initializer_external("wd", &[3, 4], location, offset, 48);
        data.extend(OnnxBuilder::external_bytes(&wd));
    });
    (b, data)
}

#[test]
fn external_data_is_read_next_to_the_model_and_its_absence_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // present: the model works
    let (b, data) = external_model("weights.bin", 16);
    let model = save_model(t, "ext.onnx", &b);
    std::fs::write(t.join("weights.bin"), &data).unwrap();
    let img = good_png(t, "good.png");
    let o = run(t, &[img.to_str().unwrap(), "-m", "ext.onnx", "-q"]);
    check_errors(&o, 0, &[]);
    assert!(t.join(format!("good.{RULE}.png")).is_file());
    std::fs::remove_file(t.join(format!("good.{RULE}.png"))).unwrap();
    // too short
    std::fs::write(t.join("weights.bin"), &data[..30]).unwrap();
    model_error(t, &model, &["weights.bin"]);
    // missing
    std::fs::remove_file(t.join("weights.bin")).unwrap();
    model_error(t, &model, &["weights.bin"]);
    // outside the model's folder
    std::fs::write(t.join("outside.bin"), &data).unwrap();
    std::fs::create_dir(t.join("sub")).unwrap();
    let (b, _) = external_model("../outside.bin", 16);
    let model = save_model(&t.join("sub"), "escape.onnx", &b);
    model_error(t, &model, &["outside.bin"]);
}

#[test]
fn initializers_that_lie_about_their_size() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // dims claim 2^40 elements, 12 floats stored
    let mut b = tiny_model_builder().to_model_proto();
    let g = b.graph.as_mut().unwrap();
    let wd = g.initializer.iter_mut().find(|i| i.name == "wd").unwrap();
    wd.dims = vec![1 << 20, 1 << 20];
    let p = t.join("liar.onnx");
    std::fs::write(&p, prost::Message::encode_to_vec(&b)).unwrap();
    model_error(t, &p, &["wd"]);
    // negative dims
    let g = b.graph.as_mut().unwrap();
    let wd = g.initializer.iter_mut().find(|i| i.name == "wd").unwrap();
    wd.dims = vec![-3, 4];
    std::fs::write(&p, prost::Message::encode_to_vec(&b)).unwrap();
    model_error(t, &p, &["wd"]);
}

/// Found by fuzz.rs: a pooling node whose input has another rank
/// than its kernel (here after an `Unsqueeze`) made tract panic with an
/// index out of bounds while preparing the model. It is now an error.
#[test]
fn a_model_on_which_tract_panics_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let unsqueezed = |via_tract: bool| {
        let mut rng = Rng::new(5);
        let mut b = OnnxBuilder::new(11);
        b.input("x", &[1, 3, 8, 8]);
        b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
        b.node("Conv", &["x", "w"], &["c0"], vec![]);
        if via_tract {
            // a Pad of nothing: the graph-native forward has no Pad, so
            // this model runs in tract
            b.initializer_i64("pads", &[8], &[0; 8]);
            b.node("Pad", &["c0", "pads"], &["c"], vec![]);
        } else {
            b.node("Identity", &["c0"], &["c"], vec![]);
        }
        b.node(
            "Unsqueeze",
            &["c"],
            &["u"],
            vec![Attr::Ints("axes", vec![0])],
        );
        b.node(
            "MaxPool",
            &["u"],
            &["p"],
            vec![
                Attr::Ints("kernel_shape", vec![2, 2]),
                Attr::Ints("strides", vec![2, 2]),
            ],
        );
        b.node("Flatten", &["p"], &["f"], vec![]);
        b.initializer("wd", &[4 * 3 * 3, 3], &he_normal(&mut rng, 36, 108));
        b.node("MatMul", &["f", "wd"], &["y"], vec![]);
        b.output("y", &[1, 3]);
        b
    };
    // tract panics; the guard turns the panic into an error
    model_error(
        t,
        &save_model(t, "unsqueezed.onnx", &unsqueezed(true)),
        &["internal error in tract", "padding.rs"],
    );
    // the graph-native forward's shape pass refuses it before tract
    model_error(
        t,
        &save_model(t, "unsqueezed-native.onnx", &unsqueezed(false)),
        &["MaxPool", "pooling needs [N, C, H, W]"],
    );
}

/// Found by fuzz.rs: a conv bias with another number of values than
/// output channels, or a batch norm whose parameters differ in length,
/// panicked while the batch norm was folded into the conv (before tract ever
/// saw the model).
#[test]
fn parameters_of_the_wrong_length_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Conv (4 outputs, optional bias of `bias` values) -> BatchNormalization
    // (shift of `shift` values, the others 4) -> pool -> MatMul
    let conv_bn = |bias: Option<usize>, shift: usize| {
        let mut rng = Rng::new(6);
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 3, 8, 8]);
        b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
        match bias {
            Some(len) => {
                b.initializer("b", &[len], &vec![0.1; len]);
                b.node("Conv", &["x", "w", "b"], &["c"], vec![]);
            }
            None => b.node("Conv", &["x", "w"], &["c"], vec![]),
        }
        for (n, v, len) in [
            ("s", 1.5f32, 4),
            ("bb", 0.1, shift),
            ("m", 0.2, 4),
            ("v", 2.0, 4),
        ] {
            b.initializer(n, &[len], &vec![v; len]);
        }
        b.node(
            "BatchNormalization",
            &["c", "s", "bb", "m", "v"],
            &["n"],
            vec![],
        );
        b.node("GlobalAveragePool", &["n"], &["g"], vec![]);
        b.node("Flatten", &["g"], &["f"], vec![]);
        b.initializer("wd", &[4, 3], &he_normal(&mut rng, 4, 12));
        b.node("MatMul", &["f", "wd"], &["y"], vec![]);
        b.output("y", &[1, 3]);
        b
    };
    model_error(
        t,
        &save_model(t, "bias.onnx", &conv_bn(Some(3), 4)),
        &["'Conv_0'", "bias of 3 values"],
    );
    // the batch norm's shift shorter than its scale
    model_error(
        t,
        &save_model(t, "bn.onnx", &conv_bn(None, 2)),
        &["'BatchNormalization_1'", "[4, 2, 4, 4]"],
    );
}

/// Found by fuzz.rs: a `Transpose` whose `perm` is not a permutation
/// (one flipped bit in the file) made tract loop and allocate until the
/// memory ran out while importing the model.
#[test]
fn a_transpose_that_is_not_a_permutation_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut b = tiny_model_builder();
    b.node(
        "Transpose",
        &["y"],
        &["yt"],
        vec![Attr::Ints("perm", vec![1, 1])],
    );
    model_error(
        t,
        &save_model(t, "perm.onnx", &b),
        &["'Transpose_5'", "not a permutation"],
    );
}
