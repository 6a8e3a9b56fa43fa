//! The comparison page in a real browser: headless Chromium loads the page
//! written by `grid_html` and we check the DOM it builds (column names, one
//! `<img>` per photo, tile and colour bar), that every embedded PNG decodes
//! to its size, and that in a 1400 px wide window nothing is cut off with
//! eleven columns (the photo and the ten default analyzers). Skipped (passing) when no Chromium is on PATH, except
//! with `CI=true`, where `.ci/run` has installed it and its absence fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::app::html::{encode_png, grid_html, HtmlBar, HtmlRow, HtmlTile};
use image::{Rgb, RgbImage};
use lrp_heatmap::render::{colour_bar, render_map, Style};
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
    dump_dom_sized(browser, page, work, (1400, 900))
}

/// [`dump_dom`] in a window of `size` (width, height) px.
fn dump_dom_sized(browser: &Path, page: &Path, work: &Path, size: (u32, u32)) -> String {
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
        .arg(format!("--window-size={},{}", size.0, size.1))
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
    (sample_rows(&columns, 40, 2), columns)
}

/// `rows` images with one `tile` px tile per column; the second column is
/// unsigned (no relevance sum), the first evaluated (as `compare
/// --evaluate`), the third a concept with its caption.
fn sample_rows(columns: &[String], tile: u32, rows: usize) -> Vec<HtmlRow> {
    let style = Style::default();
    (0..rows)
        .map(|r| {
            let photo = RgbImage::from_fn(48, 32, |x, y| Rgb([x as u8 * 5, y as u8 * 7, 90]));
            let tiles = columns
                .iter()
                .enumerate()
                .map(|(c, name)| {
                    let map = Array2::from_shape_fn((8, 8), |(y, x)| {
                        (x as f32 - 3.5) * (c + 1) as f32 + (y * r) as f32
                    });
                    let signed = c != 1;
                    let img = render_map(&map, tile, tile, &style, signed);
                    HtmlTile {
                        name: name.clone(),
                        caption: if c == 2 {
                            format!("ch {} 7%", 90 + r)
                        } else {
                            String::new()
                        },
                        png: encode_png(&img).unwrap(),
                        logit: 10.0 + r as f32,
                        relevance_sum: signed.then_some(0.5 * c as f32),
                        bar: Some(HtmlBar {
                            png: encode_png(&colour_bar(tile, 10, &style, signed)).unwrap(),
                            labels: if signed {
                                ["-1.25".into(), "0".into(), "+1.25".into()]
                            } else {
                                ["0".into(), String::new(), "1.25".into()]
                            },
                            title: "colour scale".into(),
                        }),
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
        .collect()
}

/// The browser, or `None` (after printing why) when the test is skipped.
fn browser_or_skip() -> Option<PathBuf> {
    let browser = find_browser();
    if browser.is_none() {
        // on CI (`.ci/run` installs Chromium) a missing browser is a failure,
        // not a skip: a test that cannot fail there tests nothing
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but no Chromium on PATH ({BROWSERS:?}): .ci/run installs it"
        );
        println!("skipped: no Chromium found");
    }
    browser
}

/// The value of the attribute `name` of the DOM's body, set by a probe.
fn probe_value<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("probe did not run: {dom}"))
        + key.len();
    &dom[start..dom[start..].find('"').unwrap() + start]
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

    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dom = dump_dom(&browser, &path, dir.path());
    assert!(dom.contains("<div class=\"tiles\">"), "{dom}");
    // photo, tiles and the tiles' colour bars
    let images = rows.len() * (1 + 2 * columns.len());
    assert_eq!(dom.matches("<img ").count(), images);
    // a name per column and the photo's, in each row
    assert_eq!(
        dom.matches("<div class=\"analyzer\">").count(),
        rows.len() * (1 + columns.len())
    );
    // The browser re-serialises text: < > & escaped, quotes as they are.
    for text in [
        "<div class=\"analyzer\">epsilon-plus-flat</div>",
        "<div class=\"analyzer\">&lt;grad&gt; &amp; \"co\"</div>",
        "<div class=\"analyzer\">zplus</div>",
        // the concept's channel, visible
        "<div class=\"caption\">ch 91 7%</div>",
        "<span>-1.25</span><span>0</span><span>+1.25</span>",
        "images/img0's &lt;photo&gt;.jpg",
        "281 label 1",
        "logit 11.0000<br><span class=\"sum\">relevance sum 1.0000</span>",
        // every evaluated tile shows its AOPC
        "<span class=\"aopc\">AOPC MoRF 1.5000</span>",
        "<span class=\"aopc\">AOPC MoRF 2.5000</span>",
        "lrp-heatmap compare --rule 'a&lt;b' \"x&amp;y\"",
    ] {
        assert!(dom.contains(text), "{text} not in {dom}");
    }
    // the unsigned column shows no relevance sum: 2 of 3 tiles per row
    assert_eq!(dom.matches("relevance sum").count(), 2 * rows.len());
    assert!(!dom.contains("<grad>"), "unescaped name became markup");

    let dom = dump_dom(&browser, &probe_path, dir.path());
    let start = dom.find("data-decoded=\"").expect("probe did not run") + 14;
    let decoded: Vec<&str> = dom[start..dom[start..].find('"').unwrap() + start]
        .split(',')
        .collect();
    let want: Vec<&str> = (0..rows.len())
        .flat_map(|_| std::iter::once("true:48x32").chain(["true:40x10", "true:40x40"].repeat(3)))
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

#[test]
fn eleven_columns_fit_a_1400_px_window() {
    // the photo and the ten default analyzers of `compare` at the default
    // 160 px: 11 x 160 px = 1760 px, more than the window; the page used to
    // cut off the last three columns
    let columns: Vec<String> = crate::app::commands::compare::DEFAULT_ANALYZERS
        .split(',')
        .map(|s| s.to_string())
        .collect();
    let rows = sample_rows(&columns, 160, 2);
    let page = grid_html(&rows, &columns, "lrp-heatmap compare images/cat.jpg");
    // a probe recording the window's width, the page's scroll width and
    // every element of a column whose right edge is beyond the window
    let probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load', () => { const w = window.innerWidth; \
         const parts = Array.from(document.querySelectorAll('figure.column, figure.column img, \
         figure.column .analyzer, figure.column .caption, figure.column .ticks, svg.curves')); \
         const cut = parts.filter(e => e.getBoundingClientRect().right > w + 0.5 || \
         e.getBoundingClientRect().width <= 0).map(e => e.tagName + '.' + e.getAttribute('class')); \
         document.body.setAttribute('data-width', w); \
         document.body.setAttribute('data-scroll', document.documentElement.scrollWidth); \
         document.body.setAttribute('data-parts', parts.length); \
         document.body.setAttribute('data-lines', new Set(Array.from(document.querySelectorAll(\
         'img.tile')).map(i => Math.round(i.getBoundingClientRect().top))).size); \
         document.body.setAttribute('data-cut', cut.join(' ')); });</script>\n</body>",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.html");
    std::fs::write(&path, &probe).unwrap();
    let Some(browser) = browser_or_skip() else {
        return;
    };
    let dom = dump_dom_sized(&browser, &path, dir.path(), (1400, 900));
    let width: u32 = probe_value(&dom, "data-width").parse().unwrap();
    assert_eq!(width, 1400, "the window is 1400 px wide");
    let scroll: u32 = probe_value(&dom, "data-scroll").parse().unwrap();
    assert!(scroll <= width, "the page scrolls sideways: {scroll} px");
    // per row: 11 figures, 21 images (photo, 10 tiles, 10 bars), 11 names,
    // 11 captions, 10 tick lines; the first column's curves
    let parts: usize = probe_value(&dom, "data-parts").parse().unwrap();
    assert_eq!(parts, 2 * (11 + 21 + 11 + 11 + 10 + 1));
    assert_eq!(probe_value(&dom, "data-cut"), "", "cut off at 1400 px");
    // the tiles wrapped: 1400 px hold 8 columns of 160 px and 8 px gaps
    // (plus the body's margins), so each image's 11 take two lines
    let lines: usize = probe_value(&dom, "data-lines").parse().unwrap();
    assert_eq!(lines, 2 * 2);
}
