//! `evaluate`: region perturbation against definitions computed here.
//!
//! - A linear model `f(x) = w . x` (Flatten + Gemm, no bias), where
//!   gradient x input is each input's exact contribution: with `--perturb
//!   mean` (replace by 0) removing a patch lowers the logit by exactly its
//!   score, so the MoRF curve is `f(x_0)` minus the running sum of the
//!   largest scores and its AOPC has a closed form (checked to 1e-5); the
//!   random order is worse and the least-relevant-first order worst.
//! - On the bundled model, an independent loop written here (its own patch
//!   scores, order, replacement and forward passes) gives the command's
//!   curves to 1e-3 relative, and a second run gives the same numbers.

use lrp_heatmap::analyzers::evaluate::{
    aopc, random_curve, region_perturbation, Perturb, Perturbation,
};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use lrp_testkit::synth::{Attr, OnnxBuilder, Rng};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

use crate::support::{repo, run, save_model, text};

/// `[1, 3, 8, 8]` -> Flatten -> Gemm to 2 classes, no bias; class 0 has
/// weights uniform in [-1, 1), class 1 zeros.
fn linear_model(dir: &std::path::Path) -> (std::path::PathBuf, Vec<f32>) {
    let mut rng = Rng::new(11);
    let w0: Vec<f32> = (0..192).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    let mut w = w0.clone();
    w.extend(std::iter::repeat_n(0.0, 192));
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.node("Flatten", &["x"], &["f"], vec![]);
    b.initializer("w", &[2, 192], &w);
    b.node("Gemm", &["f", "w"], &["y"], vec![Attr::Int("transB", 1)]);
    b.output("y", &[1, 2]);
    (save_model(dir, "linear.onnx", &b), w0)
}

#[test]
fn on_a_linear_model_gradient_x_input_gives_the_closed_form_and_the_steepest_curve() {
    let t = tempfile::tempdir().unwrap();
    let (path, w) = linear_model(t.path());
    let model = Model::load(&path).unwrap();
    let mut rng = Rng::new(5);
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 3, 8, 8]), |_| rng.uniform_range(-2.0, 2.0));
    let norm = Normalization::default();
    let e = model
        .explainer("gradient-x-input")
        .class(0)
        .explain(&x)
        .unwrap();
    // patches of 2: 16 patches, all removed
    let spec = Perturbation {
        patch: 2,
        steps: 16,
        mode: Perturb::Mean,
        seed: 1,
        batch: 4,
    };
    let c = region_perturbation(&model, &x, 0, &e.relevance, &norm, &spec).unwrap();
    // the closed form: contribution of each patch = sum of w_i x_i over it
    let mut contrib = vec![0f64; 16];
    for ch in 0..3 {
        for y in 0..8 {
            for xx in 0..8 {
                let i = (ch * 8 + y) * 8 + xx;
                contrib[(y / 2) * 4 + xx / 2] += w[i] as f64 * x[[0, ch, y, xx]] as f64;
            }
        }
    }
    let f0: f64 = contrib.iter().sum();
    let mut sorted = contrib.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut expect = vec![f0];
    let mut f = f0;
    for s in &sorted {
        f -= s;
        expect.push(f);
    }
    let scale = contrib.iter().map(|v| v.abs()).sum::<f64>();
    for (k, (got, want)) in c.morf.iter().zip(&expect).enumerate() {
        assert!(
            (*got as f64 - want).abs() <= 1e-5 * scale,
            "step {k}: {got} vs {want}"
        );
    }
    let closed: f64 = expect.iter().map(|fk| f0 - fk).sum::<f64>() / expect.len() as f64;
    assert!(
        (aopc(&c.morf) - closed).abs() <= 1e-5 * scale,
        "{} vs {closed}",
        aopc(&c.morf)
    );
    // the steepest: no order does better; random is worse, the reverse worst
    let random = random_curve(&model, &x, 0, &norm, &spec).unwrap();
    let (m, r, l) = (aopc(&c.morf), aopc(&random), aopc(&c.lerf));
    assert!(m > r && r > l, "MoRF {m}, random {r}, LeRF {l}");
}

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn curve(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn the_command_matches_an_independent_loop_and_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().to_str().unwrap();
    let cat = repo("images/cat.jpg");
    let args = [
        "evaluate",
        cat.to_str().unwrap(),
        "--rules",
        "zplus",
        "--perturb-steps",
        "6",
        "--patch",
        "16",
        "--perturb",
        "mean",
        "-o",
        out,
    ];
    let o = run(t.path(), &args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("AOPC MoRF") && stdout.contains("zplus"),
        "{stdout}"
    );
    let doc = json(&t.path().join("evaluate.json"));
    let a = &doc["images"][0]["analyzers"][0];
    for k in ["aopc_morf", "aopc_lerf"] {
        assert!(a[k].is_f64(), "{k}");
    }
    let (morf, lerf) = (curve(&a["curves"]["morf"]), curve(&a["curves"]["lerf"]));
    assert_eq!((morf.len(), lerf.len()), (7, 7));
    assert_eq!(curve(&a["curves"]["random"]).len(), 7);
    // the independent loop: the map from the library, everything else here
    let model = Model::load("efficientnet-lite0").unwrap();
    let img = image::open(&cat).unwrap().to_rgb8();
    let x = model.tensor(&img, &Normalization::default()).unwrap();
    let class = doc["images"][0]["class"].as_u64().unwrap() as usize;
    let e = model.explainer("zplus").class(class).explain(&x).unwrap();
    // 224 / 16 = 14 patches a side
    let mut score = vec![0f64; 14 * 14];
    for ((_, _, y, xx), &v) in e
        .relevance
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        score[(y / 16) * 14 + xx / 16] += v as f64;
    }
    for (most_first, got) in [(true, &morf), (false, &lerf)] {
        let mut idx: Vec<usize> = (0..score.len()).collect();
        idx.sort_by(|&a, &b| {
            let c = if most_first {
                score[b].total_cmp(&score[a])
            } else {
                score[a].total_cmp(&score[b])
            };
            c.then(a.cmp(&b))
        });
        let mut xk = x.clone();
        let mut mine = vec![model.forward(xk.clone()).unwrap().logits[class] as f64];
        for &p in idx.iter().take(6) {
            let (py, px) = (p / 14 * 16, p % 14 * 16);
            for c in 0..3 {
                for y in py..py + 16 {
                    for xx in px..px + 16 {
                        xk[[0, c, y, xx]] = 0.0;
                    }
                }
            }
            mine.push(model.forward(xk.clone()).unwrap().logits[class] as f64);
        }
        for (k, (a, b)) in got.iter().zip(&mine).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "most first {most_first}, step {k}: command {a} vs loop {b}"
            );
        }
    }
    // same seed, same numbers, on one thread as on all of them
    let one_thread: Vec<&str> = args.iter().copied().chain(["--jobs", "1"]).collect();
    let o = run(t.path(), &one_thread);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        json(&t.path().join("evaluate.json"))["images"],
        doc["images"]
    );
}

/// Seeded noise: the curves of one thread and of three are the same
/// numbers (each patch's noise is drawn from the seed and the patch, not
/// from the order in which threads reach it).
#[test]
fn noise_curves_do_not_depend_on_the_threads() {
    let t = tempfile::tempdir().unwrap();
    let cat = repo("images/cat.jpg");
    let docs: Vec<serde_json::Value> = ["1", "3"]
        .iter()
        .map(|jobs| {
            let dir = t.path().join(format!("jobs{jobs}"));
            let o = run(
                t.path(),
                &[
                    "evaluate",
                    cat.to_str().unwrap(),
                    "--rules",
                    "gradient",
                    "--perturb-steps",
                    "5",
                    "--patch",
                    "32",
                    "--seed",
                    "7",
                    "--jobs",
                    jobs,
                    "-o",
                    dir.to_str().unwrap(),
                ],
            );
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            json(&dir.join("evaluate.json"))
        })
        .collect();
    assert_eq!(docs[0]["images"], docs[1]["images"]);
    let morf = curve(&docs[0]["images"][0]["analyzers"][0]["curves"]["morf"]);
    assert_eq!(morf.len(), 6);
    assert!(morf[5] != morf[0], "the perturbation changes the logit");
}

#[test]
fn bad_evaluate_arguments_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    let cat = repo("images/cat.jpg");
    let o = run(
        t.path(),
        &[
            "evaluate",
            cat.to_str().unwrap(),
            "--perturb-steps",
            "1000",
            "--patch",
            "16",
        ],
    );
    crate::support::check_usage_error(
        &o,
        "--perturb-steps must be between 1 and the number of patches (196",
    );
    let o = run(
        t.path(),
        &["evaluate", cat.to_str().unwrap(), "--perturb", "salt"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("expected noise, mean or blur"));
    let o = run(
        t.path(),
        &["evaluate", cat.to_str().unwrap(), "--jobs", "0"],
    );
    crate::support::check_usage_error(&o, "--jobs: at least 1 thread, got 0");
}

#[test]
fn the_randomisation_check_replaces_one_more_layer_per_step_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let model = crate::support::tiny_model(t.path());
    let cat = repo("images/cat.jpg");
    let o = run(
        t.path(),
        &[
            "evaluate",
            cat.to_str().unwrap(),
            "-m",
            model.to_str().unwrap(),
            "--rules",
            "zplus,gradient",
            "--patch",
            "2",
            "--perturb-steps",
            "4",
            "--randomize",
            "-o",
            t.path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc = json(&t.path().join("evaluate.json"));
    for a in doc["images"][0]["analyzers"].as_array().unwrap() {
        // two linear layers (the Gemm, then the Conv; generated node
        // names), from the output down
        let r = a["randomization"].as_array().unwrap();
        assert_eq!(r.len(), 2, "{a}");
        assert!(r[0]["layer"].as_str().unwrap().starts_with("Gemm"), "{a}");
        assert!(r[1]["layer"].as_str().unwrap().starts_with("Conv"), "{a}");
        assert!(r
            .iter()
            .all(|s| s["spearman"].as_f64().unwrap().abs() <= 1.0));
    }
    let stdout = text(&o.stdout);
    for name in ["zplus", "gradient"] {
        assert!(
            stdout.contains(&format!("{name}: passes the randomisation check"))
                || stdout.contains(&format!("{name}: fails the randomisation check")),
            "{stdout}"
        );
    }
}

#[test]
fn compare_evaluate_puts_each_tiles_aopc_on_the_grid_and_the_page() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().to_str().unwrap();
    let cat = repo("images/cat.jpg");
    let o = run(
        t.path(),
        &[
            "compare",
            cat.to_str().unwrap(),
            "--rules",
            "zplus,gradient",
            "--evaluate",
            "--format",
            "html",
            "-o",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = std::fs::read_to_string(t.path().join("compare.html")).unwrap();
    // one AOPC and two curves per tile, equal to what `evaluate` computes
    assert_eq!(page.matches("<span class=\"aopc\">AOPC MoRF ").count(), 2);
    assert_eq!(page.matches("<polyline ").count(), 4);
    let o = run(
        t.path(),
        &[
            "evaluate",
            cat.to_str().unwrap(),
            "--rules",
            "zplus",
            "-o",
            out,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let doc = json(&t.path().join("evaluate.json"));
    let want = doc["images"][0]["analyzers"][0]["aopc_morf"]
        .as_f64()
        .unwrap();
    assert!(
        page.contains(&format!("AOPC MoRF {want:.4}")),
        "{want} not on the page"
    );
}

#[test]
fn batched_logits_equal_one_by_one_and_the_curves_do_not_depend_on_the_batch() {
    let model = Model::load("efficientnet-lite0").unwrap();
    let mut rng = Rng::new(9);
    let copies: Vec<ArrayD<f32>> = (0..5)
        .map(|_| ArrayD::from_shape_fn(IxDyn(&model.input.shape), |_| rng.uniform_range(-2.0, 2.0)))
        .collect();
    let one = model.logits_of(&copies, 1).unwrap();
    for batch in [2, 4, 8] {
        let b = model.logits_of(&copies, batch).unwrap();
        assert_eq!(b.len(), 5);
        for (x, y) in one.iter().zip(&b) {
            let d = x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let scale = x.iter().fold(1f32, |m, a| m.max(a.abs()));
            // the same kernels on the same rows: equal up to rounding
            assert!(d <= 1e-5 * scale, "batch {batch}: {d}");
        }
    }
    // and through the command: the same curves at --batch 1 and 3
    let t = tempfile::tempdir().unwrap();
    let cat = repo("images/cat.jpg");
    let mut docs = Vec::new();
    for batch in ["1", "3"] {
        let out = t.path().join(batch);
        let o = run(
            t.path(),
            &[
                "evaluate",
                cat.to_str().unwrap(),
                "--rules",
                "zplus",
                "--perturb-steps",
                "7",
                "--perturb-batch",
                batch,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        docs.push(json(&out.join("evaluate.json"))["images"].clone());
    }
    assert_eq!(docs[0], docs[1]);
}

/// The contents of an SVG's `<text>` elements, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// The points of each curve of an SVG plot: its polylines 2 px wide (the
/// axes, ticks and dashed lines are 1 px).
fn curves_of(svg: &str) -> Vec<usize> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"2\""))
        .map(|l| {
            let pts = l.split("points=\"").nth(1).unwrap();
            pts[..pts.find('"').unwrap()].split_whitespace().count()
        })
        .collect()
}

/// A decoded plot: its size and how many pixels have each of `colours`.
fn plot_png(path: &std::path::Path, colours: &[[u8; 3]]) -> ((u32, u32), usize, Vec<usize>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    let counts = colours
        .iter()
        .map(|c| img.pixels().filter(|p| p.0 == *c).count())
        .collect();
    (img.dimensions(), distinct.len(), counts)
}

#[test]
fn the_plots_draw_every_curve_and_name_every_analyzer() {
    let t = tempfile::tempdir().unwrap();
    let model = crate::support::tiny_model(t.path());
    let cat = repo("images/cat.jpg");
    let out = t.path().join("out");
    let args = |randomize: bool| {
        let mut a = vec![
            "evaluate",
            cat.to_str().unwrap(),
            "-m",
            model.to_str().unwrap(),
            "--rules",
            "zplus,gradient",
            "--patch",
            "2",
            "--perturb-steps",
            "4",
            "-o",
            out.to_str().unwrap(),
        ];
        if randomize {
            a.push("--randomize");
        }
        a
    };
    let o = run(t.path(), &args(false));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // the files written, one a line, after the table
    let stdout = text(&o.stdout);
    let listed: Vec<&str> = stdout.lines().rev().take(3).collect();
    for name in [
        "evaluate.json",
        "evaluate-curves.png",
        "evaluate-curves.svg",
    ] {
        assert!(
            listed.contains(&out.join(name).to_str().unwrap()),
            "{name} not listed: {stdout}"
        );
    }
    assert!(!out.join("evaluate-randomization.png").exists());
    // the PNG: its size, drawn in more than one colour, with the first
    // analyzer's (blue) and the random order's (grey) lines
    let (size, distinct, counts) = plot_png(
        &out.join("evaluate-curves.png"),
        &[[78, 121, 167], [150, 150, 150]],
    );
    assert_eq!(size, (1200, 500));
    assert!(distinct > 10, "{distinct} colours");
    assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    // the SVG: two panels of (two analyzers + the random order), each
    // curve one polyline of 5 points; every analyzer named in the legend
    // with its mean AOPC from evaluate.json
    let svg = std::fs::read_to_string(out.join("evaluate-curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(curves_of(&svg), vec![5; 6], "{svg}");
    let texts = svg_texts(&svg);
    let doc = json(&out.join("evaluate.json"));
    for s in doc["summary"].as_array().unwrap() {
        let name = s["analyzer"].as_str().unwrap();
        assert!(texts.iter().any(|t| t == name), "{name} not in {texts:?}");
        let m = s["aopc_morf"]["mean"].as_f64().unwrap();
        let l = s["aopc_lerf"]["mean"].as_f64().unwrap();
        let numbers = format!("MoRF {m:.3}   LeRF {l:.3}");
        assert!(texts.contains(&numbers), "{numbers} not in {texts:?}");
    }
    for words in [
        "1 image, noise perturbation, patches of 2 px, 4 steps",
        "random order",
        "patches perturbed",
        "logit of the explained class",
    ] {
        assert!(
            texts.iter().any(|t| t.starts_with(words)),
            "{words} not in {texts:?}"
        );
    }
    crate::support::assert_no_temp_files(&out);

    // with --randomize: the randomisation plot, its two layers named on
    // the axis, a line per analyzer
    let o = run(t.path(), &args(true));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    for name in ["evaluate-randomization.png", "evaluate-randomization.svg"] {
        assert!(
            stdout
                .lines()
                .any(|l| l == out.join(name).to_str().unwrap()),
            "{name} not listed: {stdout}"
        );
    }
    let (size, distinct, _) = plot_png(&out.join("evaluate-randomization.png"), &[]);
    assert_eq!(size, (1100, 500));
    assert!(distinct > 10, "{distinct} colours");
    let svg = std::fs::read_to_string(out.join("evaluate-randomization.svg")).unwrap();
    assert_eq!(curves_of(&svg), vec![2; 2], "{svg}");
    let texts = svg_texts(&svg);
    let doc = json(&out.join("evaluate.json"));
    for a in doc["images"][0]["analyzers"].as_array().unwrap() {
        let name = a["analyzer"].as_str().unwrap();
        assert!(texts.iter().any(|t| t == name), "{name} not in {texts:?}");
        for layer in a["randomization"].as_array().unwrap() {
            let layer = layer["layer"].as_str().unwrap();
            assert!(texts.iter().any(|t| t == layer), "{layer} not in {texts:?}");
        }
    }
    crate::support::assert_no_temp_files(&out);
}

#[test]
fn a_folder_evaluated_into_itself_never_reads_its_plots() {
    let t = tempfile::tempdir().unwrap();
    let model = crate::support::tiny_model(t.path());
    let dir = t.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(repo("images/cat.jpg"), dir.join("cat.jpg")).unwrap();
    let d = dir.to_str().unwrap();
    let args = [
        "evaluate",
        d,
        "-m",
        model.to_str().unwrap(),
        "--rules",
        "zplus",
        "--patch",
        "2",
        "--perturb-steps",
        "3",
        "-o",
        d,
    ];
    for round in 0..2 {
        let o = run(t.path(), &args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let doc = json(&dir.join("evaluate.json"));
        let inputs: Vec<&str> = doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["input"].as_str().unwrap())
            .collect();
        assert_eq!(inputs.len(), 1, "round {round}: {inputs:?}");
        assert!(inputs[0].ends_with("cat.jpg"), "{inputs:?}");
        if round == 1 {
            assert!(
                text(&o.stderr).contains("evaluate-curves.png, an output of this run"),
                "{}",
                text(&o.stderr)
            );
        }
    }
}
