//! Hostile and unusual inputs, flags and output locations, run through the
//! real binary in temporary folders. Every case checks the exit code, one
//! error line per bad file naming it, no panic, and that the good files of
//! the same batch still came out. Models: see `hostile_models.rs`.

use std::path::{Path, PathBuf};
use std::process::Output;

use image::{ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
use lrp_testkit::npy::read_npy_f32;
use serde_json::Value;

use crate::support::*;

fn out_name(stem: &str) -> String {
    format!("{stem}.{RULE}.png")
}

/// A temporary folder with the tiny model in it and an empty input folder
/// `in`, where most cases start.
struct Scratch {
    tmp: tempfile::TempDir,
    model: PathBuf,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model(tmp.path());
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        Scratch { tmp, model, dir }
    }

    /// The temporary folder (the binary's current folder).
    fn t(&self) -> &Path {
        self.tmp.path()
    }

    /// Runs the binary on the input folder with the tiny model and `args`.
    fn run_dir(&self, args: &[&str]) -> Output {
        let mut all = vec![
            self.dir.to_str().unwrap(),
            "-m",
            self.model.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run(self.t(), &all)
    }
}

/// The JSON report of the input whose file name is `name`.
fn report<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| {
            v["input"]
                .as_str()
                .is_some_and(|s| Path::new(s).file_name().unwrap() == name)
        })
        .unwrap_or_else(|| panic!("no report for {name}: {lines:?}"))
}

/// Softmax probabilities of the report's top-5, by class index.
fn probabilities(v: &Value) -> Vec<f64> {
    let mut p = vec![0.0; 3];
    for t in v["top5"].as_array().unwrap() {
        p[t["index"].as_u64().unwrap() as usize] = t["probability"].as_f64().unwrap();
    }
    p
}

#[test]
fn broken_image_files_fail_alone_and_the_good_ones_come_out() {
    let s = Scratch::new();
    let dir = &s.dir;
    good_png(dir, "good.png");
    let png = encode(&quadrants(24, 16), ImageFormat::Png);
    let jpeg = encode(&quadrants(24, 16), ImageFormat::Jpeg);
    let bmp = encode(&quadrants(24, 16), ImageFormat::Bmp);
    let gif = encode(
        &RgbaImage::from_pixel(8, 8, Rgba([9, 9, 9, 255])),
        ImageFormat::Gif,
    );
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.join("headonly.jpg"), &jpeg[..200]).unwrap();
    std::fs::write(dir.join("cutgif.gif"), &gif[..gif.len() - 10]).unwrap();
    std::fs::write(dir.join("random.jpg"), junk(4096, 1)).unwrap();
    std::fs::write(dir.join("random-w.webp"), junk(100, 2)).unwrap();
    std::fs::write(dir.join("letter.png"), b"Dear reader, this is not a PNG.\n").unwrap();
    // extensions that lie about the format: decoded by content
    std::fs::write(dir.join("png-named.jpg"), &png).unwrap();
    std::fs::write(dir.join("jpeg-named.png"), &jpeg).unwrap();
    std::fs::write(dir.join("bmp-named.webp"), &bmp).unwrap();
    let o = s.run_dir(&["-q"]);
    let bad = [
        "empty.png",
        "truncated.png",
        "headonly.jpg",
        "cutgif.gif",
        "random.jpg",
        "random-w.webp",
        "letter.png",
    ];
    let err = check_errors(&o, 1, &bad);
    assert!(err.contains("done 4, skipped 0, failed 7"), "{err}");
    let mut expected: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
    for good in ["good", "png-named", "jpeg-named", "bmp-named"] {
        expected.push(out_name(good));
    }
    expected.extend(
        [
            "good.png",
            "png-named.jpg",
            "jpeg-named.png",
            "bmp-named.webp",
        ]
        .map(String::from),
    );
    expected.sort();
    // outputs of the good files only, no partial or temporary files
    assert_eq!(files_below(dir), expected);
    assert_eq!(heatmap_size(&dir.join(out_name("jpeg-named"))), (24, 16));
}

#[test]
fn unusual_but_valid_images_are_explained_at_their_own_size() {
    let s = Scratch::new();
    let dir = &s.dir;
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    w(
        "cmyk.jpg",
        cmyk_jpeg(&[[255, 255, 255, 255], [255, 0, 255, 255], [0, 255, 255, 255]]),
    );
    w(
        "grey.png",
        encode(
            &image::ImageBuffer::<Luma<u8>, _>::from_fn(20, 12, |x, y| Luma([(x * 12 + y) as u8])),
            ImageFormat::Png,
        ),
    );
    w(
        "grey16.png",
        encode(
            &image::ImageBuffer::<Luma<u16>, _>::from_fn(20, 12, |x, _| Luma([x as u16 * 3000])),
            ImageFormat::Png,
        ),
    );
    w(
        "rgb16.png",
        encode(
            &image::ImageBuffer::<Rgb<u16>, _>::from_fn(20, 12, |x, y| {
                Rgb([x as u16 * 3000, y as u16 * 5000, 65535])
            }),
            ImageFormat::Png,
        ),
    );
    w(
        "rgba.png",
        encode(
            &RgbaImage::from_fn(20, 12, |x, _| Rgba([200, 10, 10, (x * 12) as u8])),
            ImageFormat::Png,
        ),
    );
    w(
        "grey-alpha.png",
        encode(
            &image::ImageBuffer::<LumaA<u8>, _>::from_pixel(20, 12, LumaA([90, 0])),
            ImageFormat::Png,
        ),
    );
    w(
        "palette.png",
        palette_png(
            20,
            12,
            &[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]],
            |x, y| ((x / 10) + 2 * (y / 6)) as u8,
        ),
    );
    w(
        "one.png",
        encode(
            &RgbImage::from_pixel(1, 1, Rgb([1, 2, 3])),
            ImageFormat::Png,
        ),
    );
    w(
        "three-by-two.png",
        encode(&quadrants(3, 2), ImageFormat::Png),
    );
    w(
        "three-by-two-j.jpg",
        encode(&quadrants(3, 2), ImageFormat::Jpeg),
    );
    w("one-b.bmp", encode(&quadrants(1, 1), ImageFormat::Bmp));
    w("tall.tif", encode(&quadrants(2, 40), ImageFormat::Tiff));
    w("wide.webp", encode(&quadrants(40, 1), ImageFormat::WebP));
    let o = s.run_dir(&["--json", "-q"]);
    check_errors(&o, 0, &[]);
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 13);
    for (stem, size) in [
        ("cmyk", (24, 8)),
        ("grey", (20, 12)),
        ("grey16", (20, 12)),
        ("rgb16", (20, 12)),
        ("rgba", (20, 12)),
        ("grey-alpha", (20, 12)),
        ("palette", (20, 12)),
        ("one", (1, 1)),
        ("three-by-two", (3, 2)),
        ("three-by-two-j", (3, 2)),
        ("one-b", (1, 1)),
        ("tall", (2, 40)),
        ("wide", (40, 1)),
    ] {
        assert_eq!(heatmap_size(&dir.join(out_name(stem))), size, "{stem}");
    }
    for v in &lines {
        assert!(v["relevance_sum"].as_f64().unwrap().is_finite(), "{v}");
    }
}

/// The raw relevance of `name`'s `.npy` output.
fn raw(dir: &Path, stem: &str) -> Vec<f32> {
    let (shape, data) = read_npy_f32(&dir.join(format!("{stem}.{RULE}.npy"))).unwrap();
    assert_eq!(shape, vec![3, 8, 8]);
    data
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exif_rotated_jpegs_are_explained_as_displayed() {
    let s = Scratch::new();
    let dir = &s.dir;
    // The image as displayed: 32 wide, 64 high, four 16x32 quadrants, so
    // every 16x16 JPEG block is one colour (no chroma bleeding: stored and
    // rotated encodings decode to the same colours).
    let upright = quadrants(32, 64);
    let jpeg = |img: &RgbImage| encode(img, ImageFormat::Jpeg);
    std::fs::write(dir.join("upright.jpg"), jpeg(&upright)).unwrap();
    // Orientation 6: the viewer rotates the stored image 90 degrees
    // clockwise, so it is stored rotated 90 degrees counter-clockwise (270
    // clockwise). 8: the other way; 3: upside down.
    let stored6 = image::imageops::rotate270(&upright);
    let stored8 = image::imageops::rotate90(&upright);
    let stored3 = image::imageops::rotate180(&upright);
    std::fs::write(
        dir.join("o6.jpg"),
        jpeg_with_orientation(&jpeg(&stored6), 6),
    )
    .unwrap();
    std::fs::write(
        dir.join("o8.jpg"),
        jpeg_with_orientation(&jpeg(&stored8), 8),
    )
    .unwrap();
    std::fs::write(
        dir.join("o3.jpg"),
        jpeg_with_orientation(&jpeg(&stored3), 3),
    )
    .unwrap();
    // control: the stored pixels of o6 without the tag
    std::fs::write(dir.join("stored.jpg"), jpeg(&stored6)).unwrap();
    let o = s.run_dir(&["--raw", "-q"]);
    check_errors(&o, 0, &[]);
    for stem in ["upright", "o6", "o8", "o3"] {
        assert_eq!(heatmap_size(&dir.join(out_name(stem))), (32, 64), "{stem}");
    }
    assert_eq!(heatmap_size(&dir.join(out_name("stored"))), (64, 32));
    // The relevance of each rotated file is that of the upright image (up to
    // JPEG rounding); the untagged control differs at the scale of the map.
    let reference = raw(dir, "upright");
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for stem in ["o6", "o8", "o3"] {
        let d = max_abs_diff(&raw(dir, stem), &reference);
        assert!(d < 0.05 * scale, "{stem}: differs by {d} (scale {scale})");
    }
    let d = max_abs_diff(&raw(dir, "stored"), &reference);
    assert!(d > 0.2 * scale, "control too close: {d} (scale {scale})");
}

#[test]
fn animated_gif_and_webp_are_explained_by_their_first_frame() {
    let s = Scratch::new();
    let dir = &s.dir;
    let red = RgbaImage::from_pixel(8, 8, Rgba([255, 0, 0, 255]));
    let blue = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 255, 255]));
    std::fs::write(dir.join("red.png"), encode(&red, ImageFormat::Png)).unwrap();
    std::fs::write(dir.join("blue.png"), encode(&blue, ImageFormat::Png)).unwrap();
    let frames = [red.clone(), blue.clone(), blue.clone()];
    std::fs::write(dir.join("anim.gif"), animated_gif(&frames)).unwrap();
    std::fs::write(dir.join("anim-w.webp"), animated_webp(&frames)).unwrap();
    let o = s.run_dir(&["--json", "-q"]);
    check_errors(&o, 0, &[]);
    let lines = json_lines(&o);
    let p_red = probabilities(report(&lines, "red.png"));
    let p_blue = probabilities(report(&lines, "blue.png"));
    let diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert!(diff(&p_red, &p_blue) > 1e-3, "{p_red:?} {p_blue:?}");
    for anim in ["anim.gif", "anim-w.webp"] {
        let p = probabilities(report(&lines, anim));
        assert!(diff(&p, &p_red) < 1e-6, "{anim}: {p:?} vs red {p_red:?}");
        assert_eq!(
            heatmap_size(&dir.join(out_name(anim.split('.').next().unwrap()))),
            (8, 8)
        );
    }
}

#[test]
fn huge_dimensions_are_refused_before_decoding() {
    let s = Scratch::new();
    let dir = &s.dir;
    good_png(dir, "good.png");
    let small = quadrants(8, 8);
    // PNG header claiming 100000 x 100000 (10^10 pixels)
    let png = encode(&small, ImageFormat::Png);
    std::fs::write(
        dir.join("huge-png.png"),
        png_with_dims(&png, 100_000, 100_000),
    )
    .unwrap();
    // BMP header claiming 60000 x 60000
    let mut bmp = encode(&small, ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&60_000i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&60_000i32.to_le_bytes());
    std::fs::write(dir.join("huge-bmp.bmp"), bmp).unwrap();
    // JPEG frame header claiming 16000 x 16000
    let mut jpeg = encode(&small, ImageFormat::Jpeg);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 7].copy_from_slice(&16_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&16_000u16.to_be_bytes());
    std::fs::write(dir.join("huge-jpg.jpg"), jpeg).unwrap();
    // GIF logical screen of 65535 x 65535
    let mut gif = encode(
        &RgbaImage::from_pixel(8, 8, Rgba([1, 2, 3, 255])),
        ImageFormat::Gif,
    );
    gif[6..10].copy_from_slice(&[0xFF; 4]);
    std::fs::write(dir.join("huge-gif.gif"), gif).unwrap();
    let o = s.run_dir(&["-q"]);
    let bad = [
        "huge-png.png",
        "huge-bmp.bmp",
        "huge-jpg.jpg",
        "huge-gif.gif",
    ];
    let err = check_errors(&o, 1, &bad);
    for line in err.lines().filter(|l| l.starts_with("error: ")) {
        assert!(
            line.contains("--max-pixels"),
            "the error names the limit: {line}"
        );
    }
    assert!(dir.join(out_name("good")).exists());
    assert_no_temp_files(dir);
}

#[test]
fn decompression_bombs_are_bounded_by_max_pixels() {
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    good_png(dir, "good.png");
    // 2048 x 2048 grey zeros: 4 megapixels in a few kilobytes
    let bomb = encode(
        &image::ImageBuffer::<Luma<u8>, _>::new(2048, 2048),
        ImageFormat::Png,
    );
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    std::fs::write(dir.join("bomb.png"), &bomb).unwrap();
    let m = model.to_str().unwrap();
    let o = s.run_dir(&["-q", "--max-pixels", "1000000"]);
    let err = check_errors(&o, 1, &["bomb.png"]);
    assert!(
        err.contains("--max-pixels") && err.contains("2048x2048"),
        "{err}"
    );
    assert!(dir.join(out_name("good")).exists());
    assert!(!dir.join(out_name("bomb")).exists());
    // a higher limit lets it through; a suffix is accepted
    let o = run(
        t,
        &[
            dir.join("bomb.png").to_str().unwrap(),
            "-m",
            m,
            "-q",
            "--max-pixels",
            "5M",
        ],
    );
    check_errors(&o, 0, &[]);
    assert_eq!(heatmap_size(&dir.join(out_name("bomb"))), (2048, 2048));
}

/// Runs `args` (plus the tiny model and one good image) and expects a usage
/// error naming `what`, with nothing written.
fn usage_error(what: &str, args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = tiny_model(t);
    let img = good_png(t, "good.png");
    let before = files_below(t);
    let mut all = vec![img.to_str().unwrap(), "-m", model.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = run(t, &all);
    let err = check_usage_error(&o, what);
    assert_eq!(files_below(t), before, "{args:?} wrote something: {err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    // the tiny model has 3 classes
    usage_error("--class 3", &["--class", "3"]);
    usage_error(
        "--class 99999999999999999999",
        &["--class", "99999999999999999999"],
    );
    usage_error("--class zebra", &["--class", "zebra"]);
    usage_error("--class", &["--class", ""]);
    usage_error("--class class", &["--class", "class"]);
    for eps in ["0", "-1", "NaN", "inf", "-0"] {
        usage_error("--epsilon", &["--epsilon", eps]);
        usage_error("--epsilon", &["-r", "epsilon", "--epsilon", eps]);
    }
    for mean in ["1,2", "1,2,3,4", "a,b,c", "nan,0,0", "", "1,,2"] {
        usage_error("--mean", &["--mean", mean]);
    }
    for std in ["0,1,1", "-1,1,1", "1,2", "x", "inf,1,1"] {
        usage_error("--std", &["--std", std]);
    }
    for max in ["0", "-5", "lots", "1.5", "99999999999999999999999G"] {
        usage_error("--max-pixels", &["--max-pixels", max]);
    }
}

#[test]
fn an_out_folder_that_cannot_be_created_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = tiny_model(t);
    let img = good_png(t, "good.png");
    std::fs::write(t.join("plain-file"), b"x").unwrap();
    for out in ["plain-file", "plain-file/sub"] {
        let o = run(
            t,
            &[
                img.to_str().unwrap(),
                "-m",
                model.to_str().unwrap(),
                "-o",
                out,
            ],
        );
        check_usage_error(&o, out);
    }
    assert_eq!(std::fs::read(t.join("plain-file")).unwrap(), b"x");
    assert!(!t.join(out_name("good")).exists());
}

#[test]
fn an_output_that_cannot_be_written_fails_that_input_only() {
    let s = Scratch::new();
    let dir = &s.dir;
    good_png(dir, "a.png");
    good_png(dir, "b.png");
    // a folder (with a file in it) where b's heatmap should go
    std::fs::create_dir(dir.join(out_name("b"))).unwrap();
    std::fs::write(dir.join(out_name("b")).join("keep"), b"k").unwrap();
    let o = s.run_dir(&["-q"]);
    let err = check_errors(&o, 1, &["b.png"]);
    assert!(err.contains(&out_name("b")), "{err}");
    assert!(dir.join(out_name("a")).is_file());
    assert_eq!(
        std::fs::read(dir.join(out_name("b")).join("keep")).unwrap(),
        b"k"
    );
    assert_no_temp_files(dir);
}

#[cfg(unix)]
#[test]
fn sockets_fifos_devices_and_dangling_links_are_refused_without_hanging() {
    use std::os::unix::fs::symlink;
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    good_png(dir, "good.png");
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("socket.png")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("fifo.jpg"))
        .status()
        .unwrap();
    assert!(status.success());
    // reading this one would never end
    symlink("/dev/zero", dir.join("zero.png")).unwrap();
    symlink(t.join("nowhere.png"), dir.join("dangling.png")).unwrap();
    let m = model.to_str().unwrap();
    let bad = ["socket.png", "fifo.jpg", "zero.png", "dangling.png"];
    // found in a folder
    let o = s.run_dir(&["-q"]);
    check_errors(&o, 1, &bad);
    assert!(dir.join(out_name("good")).is_file());
    // given one by one
    let mut args: Vec<String> = bad.iter().map(|b| format!("in/{b}")).collect();
    args.push("in/good.png".into());
    args.extend(["-m", m, "-q"].map(String::from));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(t, &a);
    check_errors(&o, 1, &bad);
    // nothing written for them
    for b in bad {
        let stem = b.split('.').next().unwrap();
        assert!(!dir.join(out_name(stem)).exists(), "{b}");
    }
}

#[cfg(unix)]
#[test]
fn non_utf8_file_names_keep_their_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    let name = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    // Latin-1 names that differ only in their non-UTF-8 byte
    good_png(dir, "caf\u{e9}-utf8.png");
    let e9 = dir.join(name(b"caf\xe9.png"));
    let e8 = dir.join(name(b"caf\xe8.png"));
    std::fs::copy(dir.join("caf\u{e9}-utf8.png"), &e9).unwrap();
    std::fs::copy(dir.join("caf\u{e9}-utf8.png"), &e8).unwrap();
    std::fs::write(dir.join(name(b"bad\xff.jpg")), junk(300, 5)).unwrap();
    let m = model.as_os_str();
    let o = run_in(t, &[dir.as_os_str(), OsStr::new("-m"), m, OsStr::new("-q")]);
    check_errors(&o, 1, &["bad\u{fffd}.jpg"]);
    for stem in [&b"caf\xe9"[..], b"caf\xe8", "caf\u{e9}-utf8".as_bytes()] {
        let mut out = stem.to_vec();
        out.extend_from_slice(format!(".{RULE}.png").as_bytes());
        assert!(
            dir.join(name(&out)).is_file(),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // given directly, into another folder
    let o = run_in(
        t,
        &[
            e9.as_os_str(),
            OsStr::new("-m"),
            m,
            OsStr::new("-o"),
            OsStr::new("out"),
            OsStr::new("-q"),
        ],
    );
    check_errors(&o, 0, &[]);
    let mut out = b"caf\xe9".to_vec();
    out.extend_from_slice(format!(".{RULE}.png").as_bytes());
    assert!(t.join("out").join(name(&out)).is_file());
}

#[test]
fn an_input_given_twice_is_explained_once() {
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    good_png(dir, "cat.png");
    let o = run(
        t,
        &[
            "in/cat.png",
            "in/cat.png",
            "./in/cat.png",
            "in/../in/cat.png",
            "in",
            "-m",
            model.to_str().unwrap(),
            "--json",
        ],
    );
    check_errors(&o, 0, &[]);
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        files_below(dir),
        vec![out_name("cat"), "cat.png".to_string()]
    );
}

#[test]
fn two_inputs_with_one_output_name_are_not_both_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = tiny_model(t);
    for d in ["in", "a", "b"] {
        std::fs::create_dir(t.join(d)).unwrap();
    }
    good_png(&t.join("in"), "cat.png");
    std::fs::write(
        t.join("in/cat.jpg"),
        encode(&quadrants(10, 10), ImageFormat::Jpeg),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    // same stem in one folder: the first (sorted) wins, the other is refused
    let o = run(t, &["in", "-m", m, "-q"]);
    let err = check_errors(&o, 1, &["in/cat.png"]);
    assert!(
        err.contains("in/cat.jpg"),
        "the error names the other input: {err}"
    );
    assert_eq!(heatmap_size(&t.join("in").join(out_name("cat"))), (10, 10));
    // same file name in two folders, one --out
    good_png(&t.join("a"), "dog.png");
    good_png(&t.join("b"), "dog.png");
    let o = run(t, &["a/dog.png", "b/dog.png", "-m", m, "-o", "out", "-q"]);
    check_errors(&o, 1, &["b/dog.png"]);
    assert!(t.join("out").join(out_name("dog")).is_file());
}

#[test]
fn outputs_never_overwrite_an_input() {
    let s = Scratch::new();
    let (t, dir) = (s.t(), &s.dir);
    let m = s.model.to_str().unwrap();
    good_png(dir, "cat.png");
    // a photo whose name is cat.png's output name
    let photo = encode(&quadrants(12, 12), ImageFormat::Png);
    std::fs::write(dir.join(out_name("cat")), &photo).unwrap();
    let o = run(
        t,
        &[
            "in/cat.png",
            &format!("in/{}", out_name("cat")),
            "-m",
            m,
            "-q",
        ],
    );
    let err = check_errors(&o, 1, &["in/cat.png"]);
    assert!(err.contains("input"), "{err}");
    assert_eq!(std::fs::read(dir.join(out_name("cat"))).unwrap(), photo);
    // the photo itself was explained
    let twice = format!("cat.{RULE}.{RULE}.png");
    assert!(dir.join(&twice).is_file());
    // the same through --out pointing at the photo's folder
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    good_png(&src, "cat.png");
    let o = run(
        t,
        &[
            "src/cat.png",
            &format!("in/{}", out_name("cat")),
            "-m",
            m,
            "-o",
            "in",
            "-q",
        ],
    );
    check_errors(&o, 1, &["src/cat.png"]);
    assert_eq!(std::fs::read(dir.join(out_name("cat"))).unwrap(), photo);
    // and with --raw: an input named like the .npy output
    std::fs::write(dir.join(format!("dog.{RULE}.npy")), b"not yours").unwrap();
    good_png(dir, "dog.png");
    let o = run(
        t,
        &[
            "in/dog.png",
            &format!("in/dog.{RULE}.npy"),
            "-m",
            m,
            "--raw",
            "-q",
        ],
    );
    // dog.png must not overwrite the .npy input, which fails to decode
    let err = check_errors(
        &o,
        1,
        &["error: in/dog.png: ", &format!("decode in/dog.{RULE}.npy")],
    );
    assert!(err.contains("would overwrite the input"), "{err}");
    assert_eq!(
        std::fs::read(dir.join(format!("dog.{RULE}.npy"))).unwrap(),
        b"not yours"
    );
    assert_no_temp_files(t);
}

#[cfg(unix)]
#[test]
fn an_existing_output_is_replaced_atomically() {
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    good_png(dir, "cat.png");
    // the old output, hard-linked: writing in place would change the link too
    std::fs::write(dir.join(out_name("cat")), b"old heatmap").unwrap();
    std::fs::hard_link(dir.join(out_name("cat")), t.join("old-link")).unwrap();
    let o = run(t, &["in/cat.png", "-m", model.to_str().unwrap(), "-q"]);
    check_errors(&o, 0, &[]);
    assert_eq!(heatmap_size(&dir.join(out_name("cat"))), (24, 16));
    assert_eq!(std::fs::read(t.join("old-link")).unwrap(), b"old heatmap");
    assert_eq!(
        files_below(dir),
        vec![out_name("cat"), "cat.png".to_string()]
    );
}

#[test]
fn a_file_larger_than_the_decoding_limit_is_not_read() {
    let s = Scratch::new();
    let dir = &s.dir;
    good_png(dir, "good.png");
    // 600 MB (sparse: takes no disk space), over the 512 MiB default
    let f = std::fs::File::create(dir.join("big.tif")).unwrap();
    f.set_len(600_000_000).unwrap();
    let o = s.run_dir(&["-q"]);
    let err = check_errors(&o, 1, &["big.tif"]);
    assert!(
        err.contains("600 MB") && err.contains("--max-pixels"),
        "{err}"
    );
    assert!(dir.join(out_name("good")).is_file());
}

#[test]
fn compare_never_reads_its_own_grid_and_goes_on_past_bad_files() {
    let s = Scratch::new();
    let (t, model, dir) = (s.t(), &s.model, &s.dir);
    good_png(dir, "good.png");
    std::fs::write(dir.join("bad.jpg"), junk(500, 9)).unwrap();
    let args = [
        "compare",
        "in",
        "-m",
        model.to_str().unwrap(),
        "--rules",
        "epsilon,gradient",
        "-o",
        "in",
    ];
    // twice: the second run finds the first run's compare.png in the folder
    let mut sizes = Vec::new();
    for round in 0..2 {
        let o = run(t, &args);
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains("bad.jpg"), "{err}");
        let skipped = err.contains("note: skipping") && err.contains("compare.png");
        assert_eq!(skipped, round == 1, "{err}");
        sizes.push(heatmap_size(&dir.join("compare.png")));
    }
    // the grid still has one row of photos (a second would make it taller)
    assert_eq!(sizes[0], sizes[1]);
    assert_no_temp_files(t);
}
