//! End-to-end tests of the `lrp-heatmap` binary, run in temporary folders.

use std::path::{Path, PathBuf};

use lrp_testkit::npy::read_npy_f32;
use lrp_testkit::synth::{vgg16, VggSpec, VggStyle};

use crate::support::{assert_no_panic, json_lines, lrp, repo, run, save_model, text};

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

/// The heatmap files (`*.png` but the photo) in `dir`, sorted.
fn heatmaps(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    v.sort();
    v
}

#[test]
fn explanations_that_differ_are_named_apart_and_skipped_by_those_names() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    let runs: [&[&str]; 5] = [
        &["cat.jpg"],
        &["cat.jpg", "--class", "tabby"],
        &["cat.jpg", "--overlay"],
        &["cat.jpg", "--cmap", "seismic"],
        // a parameter does not change the name (said in --help): this one
        // replaces the first map
        &["cat.jpg", "--epsilon", "0.01"],
    ];
    for args in runs {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    }
    // tabby is class 281 (class_by_label_substring)
    assert_eq!(
        heatmaps(dir.path()),
        [
            "cat.epsilon-plus-flat.class-281.png",
            "cat.epsilon-plus-flat.overlay.png",
            "cat.epsilon-plus-flat.png",
            "cat.epsilon-plus-flat.seismic.png",
        ]
    );
    let help = text(&lrp(&["--help"]).stdout);
    assert!(
        help.contains("parameters (--epsilon, --steps, --clip, --level, ...) do not change names"),
        "{help}"
    );
    // --skip-existing looks for the class's own file: written first, then skipped
    let args = ["cat.jpg", "-r", "zplus", "--class", "tabby", "--json"];
    let skip = [&args[..], &["--skip-existing"]].concat();
    let first = run(dir.path(), &skip);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let v = &json_lines(&first)[0];
    assert_eq!(v["status"], "done");
    assert_eq!(v["class"], 281);
    assert!(dir.path().join("cat.zplus.class-281.png").exists());
    let again = run(dir.path(), &skip);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let v = json_lines(&again);
    assert_eq!(v.len(), 1, "one record for the skipped input: {v:?}");
    assert_eq!(v[0]["status"], "skipped");
    assert_eq!(v[0]["input"], "cat.jpg");
    assert_eq!(v[0]["outputs"][0], "cat.zplus.class-281.png");
}

#[test]
fn a_folder_without_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    photo(&photos.join("sub"), "cat.jpg");
    for args in [
        &["photos"][..],
        &["compare", "photos"],
        &["evaluate", "photos"],
    ] {
        let o = run(dir.path(), args);
        let err = crate::support::check_usage_error(&o, "photos");
        assert!(
            err.contains("no images found in photos (sub-folders need --recursive)"),
            "{args:?}: {err}"
        );
    }
    let o = run(dir.path(), &["photos", "--recursive", "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(photos.join("sub/cat.epsilon-plus-flat.png").exists());
}

#[test]
fn a_colour_map_is_drawn_or_refused_never_ignored() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    for (args, kind) in [
        (&["cat.jpg", "--cmap", "viridis"][..], "signed"),
        (&["cat.jpg", "-r", "gradient", "--cmap", "bwr"], "unsigned"),
        (
            &["compare", "cat.jpg", "--rules", "zplus", "--cmap", "hot"],
            "signed",
        ),
    ] {
        let o = run(dir.path(), args);
        let err = crate::support::check_usage_error(&o, "--cmap");
        assert!(err.contains(&format!("draws {kind} maps")), "{err}");
        assert!(
            err.contains("unsigned maps (gradient, smoothgrad, guided-backprop) take hot, viridis"),
            "{err}"
        );
    }
    assert!(heatmaps(dir.path()).is_empty());
    for args in [
        &["cat.jpg", "-r", "gradient"][..],
        &["cat.jpg", "-r", "gradient", "--cmap", "viridis"],
    ] {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let hot = std::fs::read(dir.path().join("cat.gradient.png")).unwrap();
    let viridis = std::fs::read(dir.path().join("cat.gradient.viridis.png")).unwrap();
    assert_ne!(hot, viridis, "viridis is drawn");
}

#[test]
fn flags_that_do_nothing_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["cat.jpg", "-r", "zplus", "--epsilon", "0.1", "--gamma", "1"],
            &[
                "--epsilon does nothing with zplus",
                "--gamma does nothing with zplus",
            ],
        ),
        (
            &[
                "cat.jpg",
                "-r",
                "smoothgrad",
                "--steps",
                "5",
                "--samples",
                "2",
            ],
            &["--steps does nothing with smoothgrad"],
        ),
        (
            &["cat.jpg", "--start", "/_fc/Gemm:3", "--class", "5"],
            &["--class does nothing with --start"],
        ),
    ];
    for (args, warnings) in cases {
        let o = run(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
        assert_eq!(lines.len(), warnings.len(), "{args:?}: {err}");
        for w in warnings {
            assert!(err.contains(&format!("warning: {w}")), "{args:?}: {err}");
        }
    }
    // the start explains its channels: no class in the name
    assert!(dir
        .path()
        .join("cat.epsilon-plus-flat.start-_fc_Gemm-3.png")
        .exists());
    // a used parameter is not warned about
    let o = run(
        dir.path(),
        &["cat.jpg", "-r", "epsilon", "--epsilon", "0.1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    // logit 3 of the classifier is not the explained class (285): its
    // channel receives no relevance, the heatmap is blank and says so
    let o = run(dir.path(), &["cat.jpg", "--concept", "/_fc/Gemm:3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("warning: cat.jpg: the concept received no relevance"),
        "{}",
        text(&o.stderr)
    );
}

/// Runs the binary in `dir` with its stdout a pipe closed before it writes.
fn with_closed_stdout(dir: &Path, args: &[&str]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    drop(child.stdout.take());
    child.wait_with_output().expect("binary ends")
}

#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    for args in [
        &["inspect", "efficientnet-lite0", "--layers"][..],
        &["cat.jpg", "-q"],
        &["cat.jpg", "-q", "--json"],
    ] {
        let o = with_closed_stdout(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
}

#[test]
fn labels_and_limits_in_the_words_of_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    // check takes a label as the main command does: tabby is 281
    let o = run(
        dir.path(),
        &[
            "check",
            "efficientnet-lite0",
            "--class",
            "tabby",
            "--directions",
            "1",
            "--json",
        ],
    );
    assert_ne!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(json_lines(&o)[0]["class"], 281);
    // "tiger" names 292 exactly (models/imagenet_synset.txt) and is part of
    // 3, 282 and 300: the exact name wins, the others are listed
    let o = run(dir.path(), &["cat.jpg", "--class", "tiger", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(json_lines(&o)[0]["class"], 292);
    let err = text(&o.stderr);
    assert!(
        err.contains("note: --class tiger: class 292 (tiger, Panthera tigris) matches exactly")
            && err.contains("282 (tiger cat)"),
        "{err}"
    );
    // cat.jpg is 451x300 (images/LICENSES.md)
    let o = run(dir.path(), &["cat.jpg", "--max-pixels", "100"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("more than the --max-pixels limit of 100 pixels"),
        "{err}"
    );
    assert!(!err.contains("max_pixels"), "{err}");
}

#[test]
fn one_meaning_per_flag_across_commands() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    for (args, want) in [
        (
            &["evaluate", "cat.jpg", "--ig-steps", "4"][..],
            "--ig-steps is now --steps",
        ),
        (
            &["evaluate", "cat.jpg", "--batch", "4"],
            "--batch is now --perturb-batch",
        ),
    ] {
        let o = run(dir.path(), args);
        crate::support::check_usage_error(&o, want);
    }
    let o = run(dir.path(), &["evaluate", "cat.jpg", "--cmap", "hot"]);
    assert_eq!(o.status.code(), Some(2), "evaluate draws no maps");
    let help = text(&lrp(&["evaluate", "--help"]).stdout);
    assert!(
        help.contains("--perturb-steps") && help.contains("--perturb-batch"),
        "{help}"
    );
    assert!(
        !help.contains("--ig-steps") && !help.contains("--cmap"),
        "{help}"
    );
    // comma-separated defaults, as the flag parses them
    assert!(
        help.contains("[default: gradient,smoothgrad,epsilon,zplus,"),
        "{help}"
    );
    assert!(help.contains("also of the perturbation's noise"), "{help}");
    let top = text(&lrp(&["--help"]).stdout);
    assert!(!top.contains("default model"), "{top}");
}

#[test]
fn evaluate_says_when_its_ranking_is_weak() {
    let dir = tempfile::tempdir().unwrap();
    photo(dir.path(), "cat.jpg");
    let o = run(
        dir.path(),
        &[
            "evaluate",
            "cat.jpg",
            "--rules",
            "gradient,zplus",
            "--perturb-steps",
            "10",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("note: 1 image: the +- is no spread"), "{out}");
    // with noise on the cat (seed 0, 10 steps): random order 0.408, gradient
    // -0.036, zplus 0.463 (a run of this command)
    assert!(
        out.contains("note: the random order's MoRF AOPC (0.408) beats gradient's"),
        "{out}"
    );
}
