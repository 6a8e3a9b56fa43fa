//! `lrp-heatmap compare`: one grid per run, rows x (1 + analyzers) tiles.

use crate::support::{lrp, repo, text};

#[test]
fn compare_grid_has_a_row_per_image_and_a_tile_per_analyzer() {
    let tmp = tempfile::tempdir().unwrap();
    let images = repo("images");
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let out = tmp.path().join("grid");
    let o = lrp(&[
        "compare",
        images.join("cat.jpg").to_str().unwrap(),
        images.join("coffee.jpg").to_str().unwrap(),
        bad.to_str().unwrap(),
        "--rules",
        "epsilon,zplus,gradient",
        "--tile",
        "64",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // the bad file is reported and left out; the grid is still written
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.png"), "{err}");
    let img = image::open(out.join("compare.png"))
        .expect("grid written")
        .to_rgb8();
    // 2 rows (cat, coffee), 1 photo + 3 analyzer columns of 64 px tiles:
    // src/app/grid.rs puts 4 px gaps left of, between and right of the
    // columns (one more gap on the right), a 48 px header above the rows and
    // a 24 px label band under each row
    let (width, height) = (4 * 64 + 5 * 4, 48 + 2 * (64 + 24));
    assert_eq!((img.width(), img.height()), (width, height));
    // the photo tile of the first row is the cat, not background
    let (x, y) = (4 + 32, 48 + 32);
    let p = img.get_pixel(x, y);
    assert!(p.0 != [255, 255, 255], "photo tile drawn at ({x}, {y})");
}

#[test]
fn compare_html_page_lists_every_analyzer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("page");
    let o = lrp(&[
        "compare",
        repo("images/cat.jpg").to_str().unwrap(),
        "--format",
        "html",
        "--tile",
        "48",
        "--rules",
        "epsilon-plus-flat,smoothgrad,integrated-gradients",
        "--samples",
        "4",
        "--steps",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    for name in [
        "epsilon-plus-flat",
        "smoothgrad",
        "integrated-gradients",
        "Egyptian cat",
    ] {
        assert!(page.contains(name), "{name} missing");
    }
    // one photo + 3 tiles and their 3 colour bars, all embedded
    assert_eq!(page.matches("<img").count(), 7);
    assert_eq!(page.matches("<img class=\"tile\"").count(), 3);
    assert_eq!(page.matches("<img class=\"bar\"").count(), 3);
    assert!(page.contains("data:image/png;base64,"));
    // smoothgrad is shown as |R|: no relevance sum under it, one under each
    // of the two signed maps
    assert_eq!(page.matches("relevance sum ").count(), 2);
}

#[test]
fn unknown_analyzer_is_a_usage_error() {
    let o = lrp(&["compare", "x.jpg", "--rules", "epsilon,nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nonsense"));
}
