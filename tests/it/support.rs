//! What several test modules use: running the binary and checking its
//! output, paths of the repository, tiny models and image files written at
//! test time (nothing is downloaded, nothing binary is committed), a builder
//! of small networks, and numeric helpers.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use image::{ImageFormat, Rgb, RgbImage, RgbaImage};
use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

// ------------------------------------------------------------- the binary

pub const BIN: &str = env!("CARGO_BIN_EXE_lrp-heatmap");

/// Analyzer used by the tests (the default one, so outputs are named
/// `<stem>.epsilon-plus-flat.png`).
pub const RULE: &str = "epsilon-plus-flat";

/// `p` in the repository (`images/cat.jpg`, `models/...`).
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the binary with `args` in the test's own current folder (the
/// package's root) and waits for it, however long it takes.
pub fn lrp<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

pub use lrp_testkit::process::wait_or_kill;

/// Runs the binary in `dir` with a deadline ([`wait_or_kill`]).
pub fn run_in(dir: &Path, args: &[&OsStr]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    // drain the pipes on threads so a chatty child cannot block on them
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let what = format!("lrp-heatmap {args:?}");
    let status = wait_or_kill(&mut child, &what, Duration::from_millis(20));
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// [`run_in`] with string arguments.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_in(dir, &a)
}

/// No panic message on the binary's stderr.
pub fn assert_no_panic(o: &Output) {
    let e = text(&o.stderr);
    assert!(!e.contains("panicked"), "panic: {e}");
}

/// The binary's stdout as JSON lines (`--json`), one object a line.
pub fn json_lines(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The checks of every failing case: the exit code, no panic, every stderr
/// line a known kind (so no error spills over several lines), and for each
/// name in `bad` exactly one `error:` line naming it. Returns stderr.
pub fn check_errors(o: &Output, code: i32, bad: &[&str]) -> String {
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "panic:\n{err}");
    assert_eq!(o.status.code(), Some(code), "stderr:\n{err}");
    for line in err.lines() {
        assert!(
            ["error: ", "done ", "failed: ", "note: "]
                .iter()
                .any(|p| line.starts_with(p)),
            "unexpected stderr line (a multi-line error?): {line:?}\n{err}"
        );
    }
    for b in bad {
        let n = err
            .lines()
            .filter(|l| l.starts_with("error: ") && l.contains(b))
            .count();
        assert_eq!(n, 1, "expected one error line naming {b}:\n{err}");
    }
    let errors = err.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, bad.len(), "unexpected error lines:\n{err}");
    err
}

/// A usage or model error: exit 2, one line, naming `what`.
pub fn check_usage_error(o: &Output, what: &str) -> String {
    let err = check_errors(o, 2, &[what]);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// File names (relative, sorted) below `dir`, temporary files included.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// No temporary file of an atomic write was left below `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<String> = files_below(dir)
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "left-over temporary files: {temps:?}");
}

/// The heatmap written for `input` (next to it or in `dir`) with its size.
pub fn heatmap_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// Runs the binary on one good image with the model file `model` (in `t`)
/// and expects a model error naming the model's file name and containing
/// every one of `words`. Returns stderr.
pub fn model_error(t: &Path, model: &Path, words: &[&str]) -> String {
    let img = good_png(t, "good.png");
    let o = run(t, &[img.to_str().unwrap(), "-m", model.to_str().unwrap()]);
    let name = model.file_name().unwrap().to_str().unwrap();
    let err = check_usage_error(&o, name);
    println!("{err}");
    for w in words {
        assert!(err.contains(w), "expected '{w}' in: {err}");
    }
    err
}

// ----------------------------------------------------------------- models

/// Writes the model of `b` as `dir/name`.
pub fn save_model(dir: &Path, name: &str, b: &OnnxBuilder) -> PathBuf {
    let p = dir.join(name);
    b.save(&p).expect("save model");
    p
}

/// A tiny classifier: `[1,3,8,8]` -> 3x3 conv (4 channels) -> ReLU -> global
/// average pool -> flatten -> dense to 3 classes. Random (seeded) weights.
pub fn tiny_model_builder() -> OnnxBuilder {
    let mut rng = Rng::new(7);
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 4 * 27));
    b.initializer("b", &[4], &[0.1, -0.1, 0.05, 0.0]);
    b.node(
        "Conv",
        &["x", "w", "b"],
        &["c"],
        vec![
            Attr::Ints("kernel_shape", vec![3, 3]),
            Attr::Ints("pads", vec![1, 1, 1, 1]),
        ],
    );
    b.node("Relu", &["c"], &["r"], vec![]);
    b.node("GlobalAveragePool", &["r"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.initializer("wd", &[3, 4], &he_normal(&mut rng, 4, 12));
    b.initializer("bd", &[3], &[0.0, 0.1, -0.1]);
    b.node(
        "Gemm",
        &["f", "wd", "bd"],
        &["y"],
        vec![Attr::Int("transB", 1)],
    );
    b.output("y", &[1, 3]);
    b
}

/// Writes [`tiny_model_builder`] as `dir/tiny.onnx`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    save_model(dir, "tiny.onnx", &tiny_model_builder())
}

/// `[1, 3, 8, 8]` -> Conv 3x3 (4 channels, padded, He-normal weights from
/// `Rng::new(seed)`, no bias) writing `r` -> `middle` (reads `r`, writes
/// `m`) -> GlobalAveragePool -> Flatten -> Gemm to 3 classes without bias,
/// whose weight `wd` ([3, 4]) `dense` declares, given its values.
pub fn conv_classifier(
    seed: u64,
    opset: i64,
    middle: impl FnOnce(&mut OnnxBuilder),
    dense: impl FnOnce(&mut OnnxBuilder, Vec<f32>),
) -> OnnxBuilder {
    let mut rng = Rng::new(seed);
    let mut b = OnnxBuilder::new(opset);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
    b.node(
        "Conv",
        &["x", "w"],
        &["r"],
        vec![Attr::Ints("pads", vec![1, 1, 1, 1])],
    );
    middle(&mut b);
    b.node("GlobalAveragePool", &["m"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    dense(&mut b, he_normal(&mut rng, 4, 12));
    b.node("Gemm", &["f", "wd"], &["y"], vec![Attr::Int("transB", 1)]);
    b.output("y", &[1, 3]);
    b
}

/// A model under construction: builder, weight generator, fresh names.
pub struct Net {
    pub b: OnnxBuilder,
    pub rng: Rng,
    n: usize,
}

impl Net {
    /// Opset `opset`, input `x` of shape `input`, weights from
    /// `Rng::new(seed)`.
    pub fn new(opset: i64, seed: u64, input: &[i64]) -> Net {
        let mut b = OnnxBuilder::new(opset);
        b.input("x", input);
        Net {
            b,
            rng: Rng::new(seed),
            n: 0,
        }
    }

    /// A fresh name: `what` and a number.
    pub fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}", self.n)
    }

    /// Adds an `op` node on `inputs`; returns its output.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let out = self.name("t");
        self.b.node(op, inputs, &[&out], attrs);
        out
    }

    /// Declares `out` the output and writes the model as `dir/file`.
    pub fn save(mut self, dir: &Path, file: &str, out: &str) -> PathBuf {
        self.b.output(out, &[]);
        let path = dir.join(file);
        self.b.save(&path).expect("save");
        path
    }
}

// ----------------------------------------------------------------- images

/// An image with a different colour in each quadrant (so rotations and
/// flips change it).
pub fn quadrants(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| match (x < w / 2, y < h / 2) {
        (true, true) => Rgb([230, 20, 20]),
        (false, true) => Rgb([20, 20, 230]),
        (true, false) => Rgb([20, 200, 20]),
        (false, false) => Rgb([250, 250, 250]),
    })
}

pub use lrp_testkit::images::encode;

/// An image of uniformly random pixels from `Rng::new(seed)`.
pub fn random_rgb(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::from_fn(w, h, |_, _| {
        Rgb([0, 1, 2].map(|_| (rng.uniform() * 256.0) as u8))
    })
}

/// A good photo-like PNG.
pub fn good_png(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, encode(&quadrants(24, 16), ImageFormat::Png)).unwrap();
    p
}

/// Deterministic pseudo-random bytes (xorshift32).
pub fn junk(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect()
}

/// CRC-32 (IEEE, as PNG uses), bitwise.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG chunk: length, type, data, CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_in = kind.to_vec();
    crc_in.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    out
}

/// Replaces the IHDR width and height of a PNG (with a correct CRC).
pub fn png_with_dims(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    assert_eq!(&png[12..16], b"IHDR");
    let mut ihdr = png[16..29].to_vec();
    ihdr[0..4].copy_from_slice(&w.to_be_bytes());
    ihdr[4..8].copy_from_slice(&h.to_be_bytes());
    let mut out = png[..8].to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend_from_slice(&png[33..]);
    out
}

/// A palette (indexed colour) PNG with a 4-entry palette, written by hand:
/// signature, IHDR (colour type 3, 8 bits), PLTE, one IDAT holding a zlib
/// stream of stored (uncompressed) deflate blocks, IEND.
pub fn palette_png(w: u32, h: u32, palette: &[[u8; 3]], index: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0u8); // filter type None
        for x in 0..w {
            raw.push(index(x, y));
        }
    }
    let mut z = vec![0x78, 0x01]; // zlib header, no compression preset
    for (i, block) in raw.chunks(65535).enumerate() {
        let last = (i + 1) * 65535 >= raw.len();
        z.push(last as u8);
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &v in &raw {
        a = (a + v as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    let plte: Vec<u8> = palette.iter().flatten().copied().collect();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"PLTE", &plte));
    out.extend(png_chunk(b"IDAT", &z));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// Inserts an APP1 Exif segment with `Orientation = orientation` after the
/// SOI marker of a JPEG.
pub fn jpeg_with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut tiff = b"II*\0".to_vec(); // little-endian TIFF header
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 at offset 8
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count 1
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // padding to 4 bytes
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A baseline CMYK JPEG (4 components, no subsampling, Adobe APP14 marker
/// with transform 0, i.e. plain CMYK, stored inverted as Photoshop does),
/// written by hand because the `image` crate's encoder has no CMYK.
///
/// The image is one row of 8x8 blocks, each of one colour `blocks[i]` (the
/// stored C, M, Y, K bytes). A constant block has only a DC coefficient:
/// with all quantizers 1, DC = 8 (v - 128). Huffman tables: DC categories
/// 0..11 all with 4-bit codes (0000..1011), AC with the single symbol EOB
/// (code `0`).
pub fn cmyk_jpeg(blocks: &[[u8; 4]]) -> Vec<u8> {
    let seg = |out: &mut Vec<u8>, marker: u8, body: &[u8]| {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    };
    let w = 8 * blocks.len() as u16;
    let mut out = vec![0xFF, 0xD8];
    // APP14 Adobe: version 100, flags 0, 0, transform 0 (CMYK, no YCCK)
    seg(&mut out, 0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00");
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&[1u8; 64]);
    seg(&mut out, 0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&8u16.to_be_bytes());
    sof.extend_from_slice(&w.to_be_bytes());
    sof.push(4);
    for id in 1..=4u8 {
        sof.extend_from_slice(&[id, 0x11, 0]);
    }
    seg(&mut out, 0xC0, &sof);
    let mut dht_dc = vec![0x00];
    let mut counts = [0u8; 16];
    counts[3] = 12;
    dht_dc.extend_from_slice(&counts);
    dht_dc.extend(0..12u8);
    seg(&mut out, 0xC4, &dht_dc);
    let mut dht_ac = vec![0x10];
    let mut counts = [0u8; 16];
    counts[0] = 1;
    dht_ac.extend_from_slice(&counts);
    dht_ac.push(0x00);
    seg(&mut out, 0xC4, &dht_ac);
    let mut sos = vec![4];
    for id in 1..=4u8 {
        sos.extend_from_slice(&[id, 0x00]);
    }
    sos.extend_from_slice(&[0, 63, 0]);
    seg(&mut out, 0xDA, &sos);
    // entropy-coded data
    let mut bits: Vec<bool> = Vec::new();
    let put = |v: u32, n: u32, bits: &mut Vec<bool>| {
        for i in (0..n).rev() {
            bits.push((v >> i) & 1 == 1);
        }
    };
    let mut pred = [0i32; 4];
    for block in blocks {
        for c in 0..4 {
            let dc = 8 * (block[c] as i32 - 128);
            let diff = dc - pred[c];
            pred[c] = dc;
            let cat = 32 - diff.unsigned_abs().leading_zeros();
            put(cat, 4, &mut bits);
            let v = if diff < 0 {
                diff + (1 << cat) - 1
            } else {
                diff
            };
            put(v as u32, cat, &mut bits);
            put(0, 1, &mut bits); // EOB
        }
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    for byte in bits.chunks(8) {
        let b = byte.iter().fold(0u8, |a, &bit| (a << 1) | bit as u8);
        out.push(b);
        if b == 0xFF {
            out.push(0);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The `VP8L` chunk (header and padding included) of a lossless WebP of `img`.
fn vp8l_chunk(img: &RgbaImage) -> Vec<u8> {
    let webp = encode(img, ImageFormat::WebP);
    assert_eq!(
        &webp[12..16],
        b"VP8L",
        "the encoder writes a simple lossless WebP"
    );
    let len = u32::from_le_bytes(webp[16..20].try_into().unwrap()) as usize;
    let mut chunk = webp[12..20 + len].to_vec();
    if len % 2 == 1 {
        chunk.push(0);
    }
    chunk
}

fn u24(v: u32) -> [u8; 3] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// An animated WebP (VP8X + ANIM + one ANMF per frame, each frame a
/// lossless bitstream from the `image` encoder), all frames full-canvas.
pub fn animated_webp(frames: &[RgbaImage]) -> Vec<u8> {
    let (w, h) = frames[0].dimensions();
    let chunk = |kind: &[u8; 4], body: &[u8]| {
        let mut c = kind.to_vec();
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let mut vp8x = vec![0x02 | 0x10, 0, 0, 0]; // animation, alpha
    vp8x.extend_from_slice(&u24(w - 1));
    vp8x.extend_from_slice(&u24(h - 1));
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ANIM", &[255, 255, 255, 255, 0, 0]));
    for f in frames {
        let mut anmf = Vec::new();
        anmf.extend_from_slice(&u24(0)); // x / 2
        anmf.extend_from_slice(&u24(0)); // y / 2
        anmf.extend_from_slice(&u24(w - 1));
        anmf.extend_from_slice(&u24(h - 1));
        anmf.extend_from_slice(&u24(100)); // duration ms
        anmf.push(0x02); // no blending, no disposal
        anmf.extend(vp8l_chunk(f));
        body.extend(chunk(b"ANMF", &anmf));
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// An animated GIF of full-frame, single-colour frames.
pub fn animated_gif(frames: &[RgbaImage]) -> Vec<u8> {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        let frames: Vec<Frame> = frames
            .iter()
            .map(|f| Frame::from_parts(f.clone(), 0, 0, Delay::from_numer_denom_ms(100, 1)))
            .collect();
        enc.encode_frames(frames).unwrap();
    }
    bytes
}

// ---------------------------------------------------------------- numbers

/// An array of standard normal values from `rng`.
pub fn normal(rng: &mut Rng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal())
}

pub fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The dot product, summed in `f64` (the library's, as `check` uses it).
pub use lrp_heatmap::analyzers::selfcheck::dot;
