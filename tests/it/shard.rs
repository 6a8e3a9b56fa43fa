//! `--shard K/N`, one task of a job array: the parts 0..N-1 together explain
//! every input exactly once (folders expanded, `--recursive`), the output
//! collision check sees the whole list, `--skip-existing` resumes a part,
//! and bad values are one-line usage errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{
    check_usage_error, files_below, good_png, json_lines, repo, run, text, tiny_model, RULE,
};

/// A folder `photos` with images at three depths (and a non-image and a
/// hidden image, which no part takes), and an image outside it given as a
/// file. Returns the inputs to pass and the relative names of the heatmaps
/// that a run with `--recursive` (`true`) or without writes below `--out`.
fn tree(t: &Path) -> (Vec<PathBuf>, [Vec<String>; 2]) {
    let photos = t.join("photos");
    std::fs::create_dir_all(photos.join("sub/deeper")).unwrap();
    for f in [
        "b.png",
        "a.png",
        "c.png",
        "sub/d.png",
        "sub/e.png",
        "sub/deeper/f.png",
    ] {
        good_png(&photos, f);
    }
    good_png(&photos, ".hidden.png");
    std::fs::write(photos.join("notes.txt"), b"not an image").unwrap();
    std::fs::create_dir_all(t.join("extra")).unwrap();
    let extra = good_png(&t.join("extra"), "g.png");
    let png = |p: &str| format!("{p}.{RULE}.png");
    let flat: Vec<String> = ["g", "photos/a", "photos/b", "photos/c"]
        .iter()
        .map(|p| png(p))
        .collect();
    let mut deep = flat.clone();
    deep.extend(["photos/sub/d", "photos/sub/e", "photos/sub/deeper/f"].map(png));
    deep.sort();
    (vec![photos, extra], [flat, deep])
}

/// Runs part `k` of `n` over `inputs` into `out` with `--json`; returns the
/// exit code, the JSON records by status, and stderr.
fn part(
    t: &Path,
    model: &Path,
    inputs: &[PathBuf],
    out: &Path,
    shard: &str,
    more: &[&str],
) -> (Option<i32>, BTreeMap<String, Vec<String>>, String) {
    let mut args: Vec<&str> = inputs.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend([
        "-m",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
        "-q",
        "--shard",
        shard,
    ]);
    args.extend(more);
    let o = run(t, &args);
    let mut by_status: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in json_lines(&o) {
        let input = v["input"].as_str().unwrap();
        let name = Path::new(input).file_name().unwrap().to_str().unwrap();
        let status = v["status"].as_str().unwrap().to_string();
        by_status.entry(status).or_default().push(name.to_string());
    }
    (o.status.code(), by_status, text(&o.stderr))
}

#[test]
fn the_parts_explain_every_input_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let (inputs, expected) = tree(t.path());
    for (recursive, expected) in [false, true].into_iter().zip(expected) {
        let more: &[&str] = if recursive { &["--recursive"] } else { &[] };
        let total = expected.len();
        for n in 1..=5usize {
            let out = t.path().join(format!("out-{recursive}-{n}"));
            let mut explained: Vec<String> = Vec::new();
            for k in 0..n {
                let (code, by_status, err) =
                    part(t.path(), &model, &inputs, &out, &format!("{k}/{n}"), more);
                assert_eq!(code, Some(0), "{k}/{n}: {err}");
                // explanations only: nothing failed, skipped or refused
                assert!(by_status.keys().all(|s| s == "done"), "{by_status:?}");
                let done = by_status.get("done").cloned().unwrap_or_default();
                // round robin: the parts' sizes differ by at most one
                let size = total / n + usize::from(k < total % n);
                assert_eq!(done.len(), size, "{k}/{n}: {done:?}");
                assert!(
                    err.contains(&format!("note: shard {k}/{n}: {size} of {total} inputs")),
                    "{err}"
                );
                explained.extend(done);
            }
            explained.sort();
            let mut want: Vec<String> = expected
                .iter()
                .map(|p| {
                    let name = Path::new(p).file_name().unwrap().to_str().unwrap();
                    name.replace(&format!(".{RULE}.png"), ".png")
                })
                .collect();
            want.sort();
            // each input once in the union of the parts' records ...
            assert_eq!(explained, want, "recursive {recursive}, N = {n}");
            // ... and its heatmap where a run without --shard puts it, nothing else
            assert_eq!(
                files_below(&out),
                expected,
                "recursive {recursive}, N = {n}"
            );
        }
    }
}

#[test]
fn the_split_follows_the_paths_not_the_argument_order() {
    // the same inputs named in another order: the parts are the same
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let (inputs, _) = tree(t.path());
    let reversed: Vec<PathBuf> = inputs.iter().rev().cloned().collect();
    for k in 0..3 {
        let shard = format!("{k}/3");
        let a = part(
            t.path(),
            &model,
            &inputs,
            &t.path().join("o1"),
            &shard,
            &["--recursive"],
        );
        let b = part(
            t.path(),
            &model,
            &reversed,
            &t.path().join("o2"),
            &shard,
            &["--recursive"],
        );
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(
            sorted(a.1["done"].clone()),
            sorted(b.1["done"].clone()),
            "{shard}"
        );
    }
}

#[test]
fn collisions_are_checked_over_the_whole_list() {
    // cat.jpg and cat.png both write cat.<rule>.png: the first in the list
    // (cat.jpg) keeps it. Sorted, the list is a.png, cat.jpg, cat.png,
    // d.png: with N = 2, cat.jpg (rank 1) is part 1's and cat.png (rank 2)
    // part 0's. A part that looked only at its own inputs would explain
    // both, and the two tasks would write one file.
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let dir = t.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo("images/cat.jpg"), dir.join("cat.jpg")).unwrap();
    for f in ["a.png", "cat.png", "d.png"] {
        good_png(&dir, f);
    }
    let out = t.path().join("out");
    let inputs = [dir.clone()];
    let (code, zero, err) = part(t.path(), &model, &inputs, &out, "0/2", &[]);
    // part 0 refuses cat.png (once, naming cat.jpg) and explains a.png
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(zero["done"], ["a.png"]);
    assert_eq!(zero["failed"], ["cat.png"]);
    let refusal = err
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>();
    assert_eq!(refusal.len(), 1, "{err}");
    assert!(refusal[0].contains("already the output of"), "{err}");
    assert!(refusal[0].contains("cat.jpg"), "{err}");
    // part 1 explains cat.jpg and d.png and reports no refusal: the refused
    // job is its own part's to report
    let (code, one, err) = part(t.path(), &model, &inputs, &out, "1/2", &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(one["done"].len(), 2);
    assert!(one["done"].contains(&"cat.jpg".to_string()), "{one:?}");
    assert!(!one.contains_key("failed"), "{one:?}");
    // cat.jpg's heatmap is cat.jpg's: the size of the photo, not of cat.png
    let cat = image::open(out.join(format!("in/cat.{RULE}.png"))).unwrap();
    let photo = image::open(repo("images/cat.jpg")).unwrap();
    assert_eq!((cat.width(), cat.height()), (photo.width(), photo.height()));
}

#[test]
fn skip_existing_resumes_a_failed_part() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let dir = t.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"] {
        good_png(&dir, f);
    }
    // sorted a..f; part 1 of 2 holds b, d, f: d is corrupt on the first run
    std::fs::write(dir.join("d.png"), b"not a PNG at all").unwrap();
    let out = t.path().join("out");
    let inputs = [dir.clone()];
    let (code, first, err) = part(t.path(), &model, &inputs, &out, "1/2", &[]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(first["done"].len(), 2, "{first:?}");
    assert_eq!(first["failed"], ["d.png"]);
    let written = out.join(format!("in/b.{RULE}.png"));
    let before = std::fs::metadata(&written).unwrap().modified().unwrap();
    // the file repaired, the part rerun: only d.png is explained
    good_png(&dir, "d.png");
    let (code, again, err) = part(t.path(), &model, &inputs, &out, "1/2", &["--skip-existing"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again["done"], ["d.png"]);
    let mut skipped = again["skipped"].clone();
    skipped.sort();
    assert_eq!(skipped, ["b.png", "f.png"]);
    assert_eq!(
        std::fs::metadata(&written).unwrap().modified().unwrap(),
        before,
        "an existing output was rewritten"
    );
    // part 0's inputs were never touched by part 1
    let names: Vec<String> = ["b", "d", "f"]
        .iter()
        .map(|s| format!("in/{s}.{RULE}.png"))
        .collect();
    assert_eq!(files_below(&out), names);
}

#[test]
fn bad_values_are_usage_errors_naming_the_flag() {
    let t = tempfile::tempdir().unwrap();
    let img = good_png(t.path(), "a.png");
    let img = img.to_str().unwrap();
    for (value, why) in [
        ("4/4", "K must be below N"),
        ("5/2", "K must be below N"),
        ("0/0", "N must be at least 1"),
        ("x/2", "'x' is not a whole number"),
        ("1/two", "'two' is not a whole number"),
        ("-1/2", "'-1' is not a whole number"),
        ("3", "expected K/N"),
        ("", "expected K/N"),
    ] {
        let o = run(t.path(), &[img, "--shard", value]);
        let err = check_usage_error(&o, "--shard");
        assert!(err.contains(why), "{value}: {err}");
        // nothing was written
        assert_eq!(files_below(t.path()), ["a.png"], "{value}");
    }
    // compare and evaluate make one grid or report of all their inputs:
    // the flag is the main command's only
    for sub in ["compare", "evaluate"] {
        let o = run(t.path(), &[sub, img, "--shard", "0/2"]);
        assert_eq!(o.status.code(), Some(2), "{sub}");
        let err = text(&o.stderr);
        assert!(err.contains("--shard"), "{sub}: {err}");
    }
}
