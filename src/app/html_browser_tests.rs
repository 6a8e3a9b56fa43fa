//! The comparison page in a real browser: headless Chromium loads the page
//! written by `grid_html` and we check the DOM it builds (table, header
//! names, one `<img>` per photo and tile) and that every embedded PNG
//! decodes to its size. Skipped (passing) when no Chromium is on PATH, except
//! with `CI=true`, where `.ci/run` has installed it and its absence fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::app::html::{encode_png, grid_html, HtmlRow, HtmlTile};
use image::{Rgb, RgbImage};
use lrp_heatmap::render::{render_map, Style};
use ndarray::Array2;

use lrp_testkit::process::wait_or_kill;

const BROWSERS: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// The first Chromium-like executable on PATH.
fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in BROWSERS {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs the browser headless on `page` and returns the dumped DOM.
fn dump_dom(browser: &Path, page: &Path, work: &Path) -> String {
    let profile = work.join("profile");
    let out_path = work.join("dom.txt");
    let err_path = work.join("stderr.txt");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot start the browser");
    let what = browser.display().to_string();
    let status = wait_or_kill(&mut child, &what, Duration::from_millis(50));
    let dom = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "{status}: {err}");
    assert!(!dom.is_empty(), "empty DOM; stderr: {err}");
    dom
}

/// Two images, three analyzers, with names that need escaping.
fn sample() -> (Vec<HtmlRow>, Vec<String>) {
    let columns = vec![
        "epsilon-plus-flat".to_string(),
        "<grad> & \"co\"".to_string(),
        "zplus".to_string(),
    ];
    let style = Style::default();
    let rows = (0..2)
        .map(|r| {
            let photo = RgbImage::from_fn(48, 32, |x, y| Rgb([x as u8 * 5, y as u8 * 7, 90]));
            let tiles = columns
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    let map = Array2::from_shape_fn((8, 8), |(y, x)| {
                        (x as f32 - 3.5) * (c + 1) as f32 + (y * r) as f32
                    });
                    let img = render_map(&map, 40, 40, &style, c != 1);
                    HtmlTile {
                        name: name.clone(),
                        png: encode_png(&img).unwrap(),
                        logit: 10.0 + r as f32,
                        relevance_sum: 0.5 * c as f32,
                        // the first column evaluated, as `compare --evaluate`
                        evaluation: (c == 0).then(|| crate::app::html::TileEvaluation {
                            aopc_morf: 1.5 + r as f64,
                            morf: vec![10.0, 8.0, 5.0, 4.0],
                            lerf: vec![10.0, 9.9, 9.7, 9.0],
                        }),
                    }
                })
                .collect();
            HtmlRow {
                input: format!("images/img{r}'s <photo>.jpg"),
                label: format!("{} label {r}", 280 + r),
                photo_png: encode_png(&photo).unwrap(),
                tiles,
            }
        })
        .collect();
    (rows, columns)
}

#[test]
fn page_in_headless_chromium() {
    let (rows, columns) = sample();
    let command = "lrp-heatmap compare --rule 'a<b' \"x&y\"";
    let page = grid_html(&rows, &columns, command);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compare.html");
    std::fs::write(&path, &page).unwrap();
    // A copy with a probe that records, after load, whether every image
    // decoded and its natural size (the page itself has no scripts).
    let probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load', () => { document.body.setAttribute(\
         'data-decoded', Array.from(document.images).map(i => i.complete + ':' + \
         i.naturalWidth + 'x' + i.naturalHeight).join(',')); \
         document.body.setAttribute('data-curves', Array.from(document.querySelectorAll(\
         'svg.curves polyline')).map(p => p.getTotalLength() > 0 && \
         p.getBoundingClientRect().width > 0).join(',')); });</script>\n</body>",
    );
    let probe_path = dir.path().join("probe.html");
    std::fs::write(&probe_path, &probe).unwrap();

    let Some(browser) = find_browser() else {
        // on CI (`.ci/run` installs Chromium) a missing browser is a failure,
        // not a skip: a test that cannot fail there tests nothing
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but no Chromium on PATH ({BROWSERS:?}): .ci/run installs it"
        );
        println!("skipped: no Chromium found");
        return;
    };
    let dom = dump_dom(&browser, &path, dir.path());
    assert!(dom.contains("<table class=\"grid\">"), "{dom}");
    let images = rows.len() * (1 + columns.len());
    assert_eq!(dom.matches("<img ").count(), images);
    assert_eq!(
        dom.matches("<th class=\"analyzer\">").count(),
        columns.len()
    );
    // The browser re-serialises text: < > & escaped, quotes as they are.
    for text in [
        "<th class=\"analyzer\">epsilon-plus-flat</th>",
        "<th class=\"analyzer\">&lt;grad&gt; &amp; \"co\"</th>",
        "<th class=\"analyzer\">zplus</th>",
        "images/img0's &lt;photo&gt;.jpg",
        "281 label 1",
        "logit 11.0000<br>relevance sum 1.0000",
        // every evaluated tile shows its AOPC
        "<span class=\"aopc\">AOPC MoRF 1.5000</span>",
        "<span class=\"aopc\">AOPC MoRF 2.5000</span>",
        "lrp-heatmap compare --rule 'a&lt;b' \"x&amp;y\"",
    ] {
        assert!(dom.contains(text), "{text} not in {dom}");
    }
    assert!(!dom.contains("<grad>"), "unescaped name became markup");

    let dom = dump_dom(&browser, &probe_path, dir.path());
    let start = dom.find("data-decoded=\"").expect("probe did not run") + 14;
    let decoded: Vec<&str> = dom[start..dom[start..].find('"').unwrap() + start]
        .split(',')
        .collect();
    let want: Vec<&str> = (0..rows.len())
        .flat_map(|_| std::iter::once("true:48x32").chain(["true:40x40"; 3]))
        .collect();
    assert_eq!(decoded, want);
    // every evaluated tile's curves are drawn (MoRF and LeRF, a row each)
    let start = dom.find("data-curves=\"").expect("probe did not run") + 13;
    let curves: Vec<&str> = dom[start..dom[start..].find('"').unwrap() + start]
        .split(',')
        .collect();
    assert_eq!(curves, vec!["true"; 2 * rows.len()]);
    println!("checked with {}", browser.display());
}
