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
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["input"].as_str().unwrap().ends_with("coffee.jpg"));
    let after = std::fs::metadata(dir.join("cat.epsilon-plus.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the existing output was not rewritten");
    assert!(dir.join("coffee.epsilon-plus.png").exists());
}
