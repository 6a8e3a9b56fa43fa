//! End-to-end tests of the `lrp-heatmap` binary, run in temporary folders.

use std::path::{Path, PathBuf};

use lrp_testkit::npy::read_npy_f32;
use lrp_testkit::synth::{vgg16, VggSpec, VggStyle};

use crate::support::{assert_no_panic, json_lines, lrp, repo, save_model, text};

/// Copies a photo of the repository into `dir`.
fn photo(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(repo(&format!("images/{name}")), &dst).expect("copy photo");
    dst
}

/// Writes a reduced-width VGG16 (13 conv, 5 max-pool, 3 dense, 32x32 input, 10 classes).
fn tiny_vgg(dir: &Path, style: VggStyle) -> PathBuf {
    let name = format!("vgg16-tiny-{style:?}.onnx");
    save_model(dir, &name, &vgg16(&VggSpec::tiny(style)))
}

#[test]
fn bundled_model_explains_the_cat_as_egyptian_cat() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let o = lrp(&[cat.to_str().unwrap()]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // top-1 of the reference (onnxruntime) run in models/README.md
    let first = out.lines().nth(1).unwrap();
    assert!(
        first.contains("285") && first.contains("Egyptian cat"),
        "{out}"
    );
    assert!(out.contains("relevance sum = "), "{out}");
    let png = dir.path().join("cat.epsilon-plus-flat.png");
    let img = image::open(&png).expect("heatmap written next to the input");
    // cat.jpg is 451x300 (images/LICENSES.md)
    assert_eq!((img.width(), img.height()), (451, 300));
}

#[test]
fn json_report_has_every_field_and_raw_relevance_matches_it() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let out = dir.path().join("out");
    let o = lrp(&[
        cat.to_str().unwrap(),
        "--json",
        "--raw",
        "-r",
        "zplus",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = &json_lines(&o)[0];
    for key in [
        "input",
        "model",
        "rule",
        "class",
        "label",
        "logit",
        "top5",
        "relevance_sum",
        "png",
        "npy",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["class"], 285);
    assert_eq!(v["label"], "Egyptian cat");
    assert_eq!(v["rule"], "zplus");
    assert_eq!(v["top5"].as_array().unwrap().len(), 5);
    assert_eq!(v["top5"][0]["index"], 285);
    let npy = PathBuf::from(v["npy"].as_str().unwrap());
    assert_eq!(npy, out.join("cat.zplus.npy"));
    let (shape, data) = read_npy_f32(&npy).unwrap();
    assert_eq!(shape, vec![3, 224, 224]);
    assert!(data.iter().all(|x| x.is_finite()));
    let sum: f64 = data.iter().map(|&x| x as f64).sum();
    let reported = v["relevance_sum"].as_f64().unwrap();
    assert!(
        (sum - reported).abs() <= 1e-3 * reported.abs().max(1.0),
        "{sum} vs {reported}"
    );
    assert!(out.join("cat.zplus.png").exists());
    assert!(
        !dir.path().join("cat.zplus.png").exists(),
        "--out puts outputs in DIR only"
    );
}

#[test]
fn class_by_label_substring() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let o = lrp(&[cat.to_str().unwrap(), "--json", "--class", "tabby"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(json_lines(&o)[0]["class"], 281);
}

#[test]
fn every_rule_runs_on_vgg16_shaped_models_of_both_exporters() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    for style in [VggStyle::Torchvision, VggStyle::Zoo] {
        let model = tiny_vgg(dir.path(), style);
        for (rule, _) in lrp_heatmap::composite::NAMES {
            let out = dir.path().join(format!("{style:?}"));
            let o = lrp(&[
                cat.to_str().unwrap(),
                "-m",
                model.to_str().unwrap(),
                "-r",
                rule,
                "--json",
                "--raw",
                "-o",
                out.to_str().unwrap(),
            ]);
            assert_no_panic(&o);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{style:?} {rule}: {}",
                text(&o.stderr)
            );
            let v = &json_lines(&o)[0];
            assert!(v["relevance_sum"].as_f64().unwrap().is_finite());
            let (shape, data) = read_npy_f32(&out.join(format!("cat.{rule}.npy"))).unwrap();
            assert_eq!(shape, vec![3, 32, 32], "model input resolution");
            assert!(data.iter().all(|x| x.is_finite()), "{style:?} {rule}");
            let img = image::open(out.join(format!("cat.{rule}.png"))).unwrap();
            assert_eq!((img.width(), img.height()), (451, 300));
        }
    }
}

#[test]
fn zplus_conserves_relevance_on_a_vgg16_shaped_model() {
    // VGG has no bias-absorbing shortcut for z+ (bias excluded, ReLU passes, max pool
    // winner takes all), so the input relevance sums to the logit.
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let model = tiny_vgg(dir.path(), VggStyle::Torchvision);
    let o = lrp(&[
        cat.to_str().unwrap(),
        "-m",
        model.to_str().unwrap(),
        "-r",
        "zplus",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v = &json_lines(&o)[0];
    let (sum, logit) = (
        v["relevance_sum"].as_f64().unwrap(),
        v["logit"].as_f64().unwrap(),
    );
    assert!(
        (sum - logit).abs() <= 1e-4 * logit.abs(),
        "sum {sum} logit {logit}"
    );
}

#[test]
fn a_bad_input_fails_alone_and_the_others_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"this is not a jpeg").unwrap();
    let missing = dir.path().join("missing.png");
    let o = lrp(&[
        bad.to_str().unwrap(),
        missing.to_str().unwrap(),
        cat.to_str().unwrap(),
    ]);
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("broken.jpg") && err.contains("missing.png"),
        "{err}"
    );
    assert!(dir.path().join("cat.epsilon-plus-flat.png").exists());
    assert!(!dir.path().join("broken.epsilon-plus-flat.png").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
}

#[test]
fn usage_and_model_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cat = photo(dir.path(), "cat.jpg");
    let c = cat.to_str().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, [0xffu8, 0x13, 0x00, 0x42, 0x99]).unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![c, "-r", "nonsense"], "unknown rule"),
        (vec![c, "--epsilon", "0"], "--epsilon"),
        (vec![c, "--epsilon", "NaN"], "--epsilon"),
        (vec![c, "--mean", "1,2"], "--mean"),
        (vec![c, "--std", "0.2,0,0.2"], "--std"),
        (vec![c, "--class", "1000"], "out of range"),
        (vec![c, "--class", "no such label"], "no class label"),
        (vec![c, "-m", "does-not-exist.onnx"], "does-not-exist.onnx"),
        (vec![c, "-m", junk.to_str().unwrap()], "junk.onnx"),
        (vec![c, "-m", empty.to_str().unwrap()], "empty.onnx"),
    ];
    for (args, needle) in cases {
        let o = lrp(&args);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(!dir.path().join("cat.epsilon-plus-flat.png").exists());
}
