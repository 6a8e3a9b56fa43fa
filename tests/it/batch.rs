//! Folders of images: bad files are reported and skipped, outputs mirrored
//! with `--out`, `--skip-existing` resumes, JSON lines as images finish.

use std::path::{Path, PathBuf};

use crate::support::{files_below, json_lines, lrp, repo, text};

/// A folder with two photos (one in a sub-folder), a corrupt JPEG, a truncated
/// JPEG, a text file named like an image, a text file, a hidden image and an
/// output of an earlier run.
fn messy_folder(root: &Path) -> PathBuf {
    let dir = root.join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let images = repo("images");
    std::fs::copy(images.join("cat.jpg"), dir.join("cat.jpg")).unwrap();
    std::fs::copy(images.join("coffee.jpg"), dir.join("sub/coffee.JPG")).unwrap();
    std::fs::copy(images.join("cat.jpg"), dir.join(".hidden.jpg")).unwrap();
    std::fs::copy(images.join("cat.jpg"), dir.join("old.zplus.png")).unwrap();
    std::fs::write(dir.join("corrupt.jpg"), [0xFFu8, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();
    let cat = std::fs::read(images.join("cat.jpg")).unwrap();
    std::fs::write(dir.join("truncated.jpg"), &cat[..cat.len() / 2]).unwrap();
    std::fs::write(dir.join("letter.png"), b"Dear reader, this is not a PNG.").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
    dir
}

#[test]
fn a_folder_with_bad_files_goes_on_and_mirrors_below_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = messy_folder(tmp.path());
    let out = tmp.path().join("out");
    let o = lrp(&[
        dir.to_str().unwrap(),
        "--recursive",
        "-r",
        "zplus",
        "-o",
        out.to_str().unwrap(),
        "--json",
        "-j",
        "2",
    ]);
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    // one error line per bad file, naming it
    for bad in ["corrupt.jpg", "truncated.jpg", "letter.png"] {
        assert_eq!(
            err.lines()
                .filter(|l| l.starts_with("error:") && l.contains(bad))
                .count(),
            1,
            "{bad}: {err}"
        );
    }
    assert!(err.contains("done 2, skipped 0, failed 3"), "{err}");
    // every good file has its output, mirrored below out/<folder name>/, and nothing else is there
    assert_eq!(
        files_below(&out),
        vec!["photos/cat.zplus.png", "photos/sub/coffee.zplus.png"]
    );
    // one JSON object per line, errors included
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines.iter().filter(|v| v.get("error").is_some()).count(), 3);
    let cat = lines
        .iter()
        .find(|v| v["input"].as_str().is_some_and(|s| s.ends_with("cat.jpg")))
        .unwrap();
    assert_eq!(cat["class"], 285);
    // without --recursive the sub-folder is left alone
    let flat_out = tmp.path().join("flat");
    let o = lrp(&[
        dir.to_str().unwrap(),
        "-r",
        "zplus",
        "-o",
        flat_out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(files_below(&flat_out), vec!["photos/cat.zplus.png"]);
}

#[test]
fn skip_existing_resumes_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["cat.jpg", "coffee.jpg"] {
        std::fs::copy(repo(&format!("images/{f}")), dir.join(f)).unwrap();
    }
    let o = lrp(&[dir.join("cat.jpg").to_str().unwrap(), "-r", "epsilon-plus"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let before = std::fs::metadata(dir.join("cat.epsilon-plus.png"))
        .unwrap()
        .modified()
        .unwrap();
    let o = lrp(&[
        dir.to_str().unwrap(),
        "-r",
        "epsilon-plus",
        "--skip-existing",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("done 1, skipped 1, failed 0"),
        "{}",
        text(&o.stderr)
    );
    // the skipped input has its record too, first (before any explanation)
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["input"].as_str().unwrap().ends_with("cat.jpg"));
    assert_eq!(lines[0]["status"], "skipped");
    assert!(lines[1]["input"].as_str().unwrap().ends_with("coffee.jpg"));
    assert_eq!(lines[1]["status"], "done");
    let after = std::fs::metadata(dir.join("cat.epsilon-plus.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the existing output was not rewritten");
    assert!(dir.join("coffee.epsilon-plus.png").exists());
}

/// Reads `<stem>.<rule>.npy` below `dir`.
fn npy(dir: &Path, stem: &str, rule: &str) -> Vec<f32> {
    lrp_testkit::npy::read_npy_f32(&dir.join(format!("{stem}.{rule}.npy")))
        .unwrap()
        .1
}

#[test]
fn batches_write_what_one_image_at_a_time_writes_and_go_on_past_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let images = repo("images");
    for p in ["astronaut", "cat", "coffee", "rocket"] {
        std::fs::copy(
            images.join(format!("{p}.jpg")),
            dir.join(format!("{p}.jpg")),
        )
        .unwrap();
    }
    // a bad file sorted between the photos: the batch it falls in goes on
    std::fs::write(dir.join("broken.jpg"), [0xFFu8, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();
    let run = |batch: &str, rule: &str, out: &Path| {
        let o = lrp(&[
            dir.to_str().unwrap(),
            "-r",
            rule,
            "-o",
            out.to_str().unwrap(),
            "--raw",
            "--json",
            "--batch",
            batch,
        ]);
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("done 4, skipped 0, failed 1"), "{err}");
        let bad: Vec<_> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(bad.len() == 1 && bad[0].contains("broken.jpg"), "{err}");
        (json_lines(&o), err)
    };
    for rule in ["epsilon-plus-flat", "gradient"] {
        let (one, two) = (
            tmp.path().join(format!("one-{rule}")),
            tmp.path().join(format!("three-{rule}")),
        );
        let (a, _) = run("1", rule, &one);
        let (b, _) = run("3", rule, &two);
        assert_eq!(files_below(&one), files_below(&two));
        for p in ["astronaut", "cat", "coffee", "rocket"] {
            let pick = |lines: &[serde_json::Value]| {
                lines
                    .iter()
                    .find(|v| {
                        v["input"]
                            .as_str()
                            .is_some_and(|s| s.ends_with(&format!("{p}.jpg")))
                    })
                    .cloned()
                    .unwrap()
            };
            let (x, y) = (pick(&a), pick(&b));
            assert_eq!(x["class"], y["class"], "{rule} {p}");
            assert_eq!(x["top5"].as_array().map(|t| t.len()), Some(5));
            // the same map up to the order of float sums
            let (u, v) = (npy(&one.join("in"), p, rule), npy(&two.join("in"), p, rule));
            let scale = u.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
            let worst = u
                .iter()
                .zip(&v)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                u.len() == v.len() && worst <= 1e-4 * scale,
                "{rule} {p}: {worst} of {scale}"
            );
        }
    }
    // a multi-pass analyzer takes one image per pass, and says so
    let (_, err) = run("3", "integrated-gradients", &tmp.path().join("ig"));
    assert!(
        err.contains(
            "note: --batch 3: one image per pass: integrated-gradients runs passes of its own"
        ),
        "{err}"
    );
}

#[test]
fn zero_batches_jobs_and_runs_are_one_line_usage_errors() {
    let cat = repo("images/cat.jpg");
    let cat = cat.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&[cat, "--batch", "0"], "--batch: at least 1 image, got 0"),
        (&[cat, "-j", "0"], "'0' for '--jobs <N>'"),
        (
            &["evaluate", cat, "--perturb-batch", "0"],
            "'0' for '--perturb-batch <N>'",
        ),
        (&["bench", "--runs", "0"], "'0' for '--runs <RUNS>'"),
        (&[cat, "--alpha", "x"], "'x' for '--alpha <ALPHA>'"),
    ];
    for (args, want) in cases {
        let o = lrp(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}
