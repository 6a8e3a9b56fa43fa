//! Mutation fuzzing of the decode and model-load paths (proptest).
//!
//! Small valid seeds (images in every supported format, tiny ONNX models
//! covering the supported operators) are mutated and fed to
//! `preprocess::decode_bytes`, and to `Model::options().from_bytes` followed by a
//! forward pass and an explanation when the model loads. Any outcome is fine
//! but a panic, an abort (a huge allocation fails under the memory limit set
//! below), a hang (more than [`SLOW`]) or an image over the pixel limit.
//!
//! Models are mutated twice over: as bytes (the protobuf parser) and as a
//! `ModelProto` (op types, attributes, wiring, dims, data types, weight
//! sizes), which gets past the parser into graph building, canonization,
//! tract and the relevance pass.
//!
//! `cargo test` runs a fixed-seed handful of cases ([`DEFAULT_CASES`]). A
//! longer run: `LRP_FUZZ_CASES=20000 cargo test --test it -- fuzz::`
//! (random seed unless `LRP_FUZZ_SEED` is set; each case then runs in a
//! forked process with a timeout, so a crash or hang is reported with its
//! input rather than ending the run).
//!
//! Each fuzz target runs in a child process of the test binary, the only
//! process with the memory limit ([`under_memory_limit`]): the other tests
//! share the test binary's process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::{ImageFormat, Luma, Rgb, Rgba, RgbaImage};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::{decode_bytes, DecodeLimits, Normalization};
use lrp_testkit::synth::{he_normal, vgg16, Attr, OnnxBuilder, Rng, VggSpec, VggStyle};
use ndarray::ArrayD;
use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, Config, RngSeed, TestCaseResult, TestRunner};
use prost::Message;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, ModelProto};

use crate::support::*;

/// Cases per target in a plain `cargo test`.
const DEFAULT_CASES: u32 = 64;
/// Longest a single case may take.
const SLOW: Duration = Duration::from_secs(20);
/// Pixel limit of the decode target (kept small so cases stay fast).
const MAX_PIXELS: u64 = 4_000_000;
/// Address-space limit of the fuzzing process: a mutated model that gets an
/// allocation past it aborts the process, which is a finding.
const MEMORY_LIMIT: u64 = 6 << 30;
/// Set, to the test's name, in the child process that runs a fuzz target
/// under the memory limit (and so in the processes proptest forks from it).
const CHILD: &str = "LRP_FUZZ_CHILD";

fn config() -> Config {
    let cases = std::env::var("LRP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    let seed = std::env::var("LRP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let long = cases.is_some();
    Config {
        cases: cases.unwrap_or(DEFAULT_CASES),
        rng_seed: match seed {
            Some(s) => RngSeed::Fixed(s),
            None if long => RngSeed::Random,
            None => RngSeed::Fixed(0x1a2b_3c4d),
        },
        fork: long,
        timeout: if long { 2 * SLOW.as_millis() as u32 } else { 0 },
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

#[cfg(unix)]
fn limit_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let lim = libc::rlimit {
            rlim_cur: MEMORY_LIMIT,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit only reads the struct passed by reference.
        let r = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        assert_eq!(r, 0, "setrlimit");
    });
}

#[cfg(not(unix))]
fn limit_memory() {}

/// Runs `target`, the work of the test `name` (its path, crate first), under
/// [`MEMORY_LIMIT`]: in a child process of the test binary that runs this
/// test alone. The limit holds for a whole process and all it starts, so set
/// in the test binary's own process it would also bind the tests running
/// beside the target (and the binaries they run), and an abort there would
/// end them all; in the child it fails this test only, with the child's
/// output.
fn under_memory_limit(name: &str, target: impl FnOnce()) {
    let test = name.split_once("::").map_or(name, |(_, t)| t);
    if std::env::var_os(CHILD).is_some_and(|v| v == test) {
        limit_memory();
        return target();
    }
    let exe = std::env::current_exe().expect("path of the test binary");
    // `--nocapture` last: the forks of a long run get these arguments again
    // through rusty-fork, which takes the word after `--nocapture` for its value
    let o = Command::new(exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .stdin(Stdio::null())
        .output()
        .expect("the test binary runs");
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    print!("{out}");
    eprint!("{err}");
    assert!(
        o.status.success(),
        "{test} failed in its child process: {}",
        o.status
    );
    assert!(
        out.contains("test result: ok. 1 passed"),
        "the child process ran no test {test}"
    );
}

/// Runs the property `test` on values of `strategy` as `proptest!` does, with
/// [`config`], in a child process under the memory limit
/// ([`under_memory_limit`]). `name` is the path of the test function that
/// calls it: a long run's forks run that test.
fn fuzz<S: Strategy>(name: &'static str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) {
    under_memory_limit(name, || {
        let mut config = contextualize_config(config());
        config.source_file = Some(file!());
        config.test_name = Some(name);
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, test) {
            panic!("{e}\n{runner}");
        }
    });
}

// ---------------------------------------------------------------- seeds

fn image_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let q = quadrants(12, 8);
        let rgba = RgbaImage::from_fn(6, 5, |x, y| Rgba([x as u8 * 40, y as u8 * 50, 90, 128]));
        let grey16 = image::ImageBuffer::<Luma<u16>, _>::from_fn(5, 4, |x, y| {
            Luma([(x * 9000 + y * 100) as u16])
        });
        let rgb16 = image::ImageBuffer::<Rgb<u16>, _>::from_pixel(3, 3, Rgb([1, 40000, 65535]));
        let frames = [
            RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])),
            RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 255])),
        ];
        let jpeg = encode(&q, ImageFormat::Jpeg);
        vec![
            encode(&q, ImageFormat::Png),
            encode(&rgba, ImageFormat::Png),
            encode(&grey16, ImageFormat::Png),
            encode(&rgb16, ImageFormat::Png),
            palette_png(5, 3, &[[0, 0, 0], [255, 0, 0], [0, 255, 0]], |x, y| {
                ((x + y) % 3) as u8
            }),
            jpeg_with_orientation(&jpeg, 6),
            jpeg,
            cmyk_jpeg(&[[10, 200, 30, 255], [255, 255, 255, 0]]),
            encode(&q, ImageFormat::Bmp),
            encode(&rgba, ImageFormat::Bmp),
            encode(&q, ImageFormat::Tiff),
            encode(&grey16, ImageFormat::Tiff),
            encode(&q, ImageFormat::WebP),
            encode(&rgba, ImageFormat::Gif),
            animated_gif(&frames),
            animated_webp(&frames),
        ]
    })
}

/// A model with most supported operator kinds: conv (strided, padded),
/// batch norm, ReLU, max and average pools, an added constant, a sigmoid,
/// reshape, matmul, bias, softmax.
fn kitchen_sink() -> OnnxBuilder {
    let mut rng = Rng::new(3);
    let mut b = OnnxBuilder::new(13);
    b.input("x", &[1, 3, 8, 8]);
    b.initializer("w1", &[4, 3, 3, 3], &he_normal(&mut rng, 27, 108));
    b.node(
        "Conv",
        &["x", "w1"],
        &["c1"],
        vec![Attr::Ints("pads", vec![1, 1, 1, 1])],
    );
    for (n, v) in [("s", 1.5f32), ("bb", 0.1), ("m", 0.2), ("v", 2.0)] {
        b.initializer(n, &[4], &[v; 4]);
    }
    b.node(
        "BatchNormalization",
        &["c1", "s", "bb", "m", "v"],
        &["bn"],
        vec![Attr::Float("epsilon", 1e-5)],
    );
    b.node("Relu", &["bn"], &["r1"], vec![]);
    b.node(
        "MaxPool",
        &["r1"],
        &["p1"],
        vec![
            Attr::Ints("kernel_shape", vec![2, 2]),
            Attr::Ints("strides", vec![2, 2]),
        ],
    );
    b.initializer("w2", &[6, 4, 3, 3], &he_normal(&mut rng, 36, 216));
    b.node(
        "Conv",
        &["p1", "w2"],
        &["c2"],
        vec![
            Attr::Ints("pads", vec![1, 1, 1, 1]),
            Attr::Ints("strides", vec![1, 1]),
        ],
    );
    b.initializer("k", &[1, 6, 1, 1], &[0.1, -0.1, 0.2, 0.0, 0.3, -0.2]);
    b.node("Add", &["c2", "k"], &["a2"], vec![]);
    b.node("Sigmoid", &["a2"], &["s2"], vec![]);
    b.node(
        "AveragePool",
        &["s2"],
        &["p2"],
        vec![
            Attr::Ints("kernel_shape", vec![2, 2]),
            Attr::Ints("strides", vec![2, 2]),
        ],
    );
    b.initializer_i64("shape", &[2], &[1, -1]);
    b.node("Reshape", &["p2", "shape"], &["f"], vec![]);
    b.initializer("wd", &[24, 5], &he_normal(&mut rng, 24, 120));
    b.node("MatMul", &["f", "wd"], &["mm"], vec![]);
    b.initializer("bd", &[5], &[0.0, 0.1, 0.2, 0.3, 0.4]);
    b.node("Add", &["mm", "bd"], &["logits"], vec![]);
    b.node(
        "Softmax",
        &["logits"],
        &["prob"],
        vec![Attr::Int("axis", 1)],
    );
    b.output("prob", &[1, 5]);
    b
}

/// A channels-last grey model: transpose, conv, leaky ReLU, global max
/// pool, flatten, gemm.
fn nhwc_grey() -> OnnxBuilder {
    let mut rng = Rng::new(4);
    let mut b = OnnxBuilder::new(11);
    b.input("x", &[1, 6, 6, 1]);
    b.node(
        "Transpose",
        &["x"],
        &["t"],
        vec![Attr::Ints("perm", vec![0, 3, 1, 2])],
    );
    b.initializer("w", &[3, 1, 2, 2], &he_normal(&mut rng, 4, 12));
    b.node("Conv", &["t", "w"], &["c"], vec![]);
    b.node("LeakyRelu", &["c"], &["l"], vec![Attr::Float("alpha", 0.1)]);
    b.node("GlobalMaxPool", &["l"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.initializer("wd", &[3, 4], &he_normal(&mut rng, 3, 12));
    b.node("Gemm", &["f", "wd"], &["y"], vec![]);
    b.output("y", &[1, 4]);
    b
}

fn model_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut zoo = VggSpec::tiny(VggStyle::Zoo);
        zoo.batchnorm = true;
        vec![
            tiny_model_builder().to_bytes(),
            kitchen_sink().to_bytes(),
            nhwc_grey().to_bytes(),
            vgg16(&VggSpec::tiny(VggStyle::Torchvision)).to_bytes(),
            vgg16(&zoo).to_bytes(),
        ]
    })
}

// ------------------------------------------------------------ mutations

/// Values that tend to break size and index arithmetic.
fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(0xFF),
        Just(0xFFFF),
        Just(0x1_0000),
        Just(0x7FFF_FFFF),
        Just(0x8000_0000),
        Just(0xFFFF_FFFF),
        any::<u32>(),
    ]
}

fn interesting_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..10,
        Just(16),
        Just(100),
        Just(1 << 16),
        Just(1 << 31),
        Just(1 << 40),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-(1 << 31)),
    ]
}

/// One edit of a byte string; positions are taken modulo the length.
#[derive(Clone, Debug)]
enum ByteEdit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Word {
        at: usize,
        value: u32,
        big_endian: bool,
    },
    Copy {
        from: usize,
        to: usize,
        len: usize,
    },
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| ByteEdit::Flip(p, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(p, v)| ByteEdit::Set(p, v)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| ByteEdit::Insert(p, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| ByteEdit::Delete(p, n)),
        1 => any::<usize>().prop_map(ByteEdit::Truncate),
        3 => (any::<usize>(), interesting_u32(), any::<bool>())
            .prop_map(|(at, value, big_endian)| ByteEdit::Word { at, value, big_endian }),
        1 => (any::<usize>(), any::<usize>(), 1usize..256)
            .prop_map(|(from, to, len)| ByteEdit::Copy { from, to, len }),
    ]
}

fn apply_bytes(seed: &[u8], edits: &[ByteEdit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let n = b.len().max(1);
        match e {
            ByteEdit::Flip(p, bit) if !b.is_empty() => b[p % n] ^= 1 << bit,
            ByteEdit::Set(p, v) if !b.is_empty() => b[p % n] = *v,
            ByteEdit::Insert(p, v) => {
                let at = p % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            ByteEdit::Delete(p, len) if !b.is_empty() => {
                let at = p % n;
                let end = (at + len).min(b.len());
                b.drain(at..end);
            }
            ByteEdit::Truncate(p) => b.truncate(p % (b.len() + 1)),
            ByteEdit::Word {
                at,
                value,
                big_endian,
            } if b.len() >= 4 => {
                let at = at % (b.len() - 3);
                let w = if *big_endian {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                b[at..at + 4].copy_from_slice(&w);
            }
            ByteEdit::Copy { from, to, len } if !b.is_empty() => {
                let from = from % n;
                let end = (from + len).min(b.len());
                let chunk: Vec<u8> = b[from..end].to_vec();
                let to = to % (b.len() + 1);
                b.splice(to..to, chunk);
            }
            _ => {}
        }
    }
    b
}

/// Operator types to swap in: supported ones and some LRP has no rule for.
const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Transpose",
    "Softmax",
    "LogSoftmax",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "PRelu",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Constant",
    "Shape",
    "LRN",
    "Concat",
    "Pad",
    "Resize",
    "Slice",
    "Gather",
    "Einsum",
    "ReduceMean",
    "Expand",
    "Tile",
    "Where",
    "NoSuchOp",
];

const ATTRS: &[&str] = &[
    "pads",
    "strides",
    "kernel_shape",
    "dilations",
    "group",
    "axis",
    "axes",
    "perm",
    "transA",
    "transB",
    "ceil_mode",
    "count_include_pad",
    "keepdims",
    "storage_order",
    "allowzero",
];

/// One edit of a model; indices are taken modulo the list they index.
#[derive(Clone, Debug)]
enum ModelEdit {
    Op(usize, usize),
    AttrInt(usize, usize, i64),
    AttrInts(usize, usize, Vec<i64>),
    Rewire { node: usize, slot: usize, to: usize },
    Remove(usize),
    Duplicate(usize),
    InputDim(usize, i64),
    InitDim { init: usize, dim: usize, value: i64 },
    InitType(usize, i32),
    InitData(usize, usize),
    Output(usize),
    Opset(i64),
}

fn model_edit() -> impl Strategy<Value = ModelEdit> {
    let ix = any::<usize>;
    prop_oneof![
        2 => (ix(), ix()).prop_map(|(n, o)| ModelEdit::Op(n, o)),
        3 => (ix(), ix(), interesting_i64()).prop_map(|(n, a, v)| ModelEdit::AttrInt(n, a, v)),
        3 => (ix(), ix(), proptest::collection::vec(interesting_i64(), 0..6))
            .prop_map(|(n, a, v)| ModelEdit::AttrInts(n, a, v)),
        2 => (ix(), 0usize..4, ix()).prop_map(|(node, slot, to)| ModelEdit::Rewire { node, slot, to }),
        1 => ix().prop_map(ModelEdit::Remove),
        1 => ix().prop_map(ModelEdit::Duplicate),
        2 => (0usize..5, interesting_i64()).prop_map(|(d, v)| ModelEdit::InputDim(d, v)),
        2 => (ix(), 0usize..5, interesting_i64())
            .prop_map(|(init, dim, value)| ModelEdit::InitDim { init, dim, value }),
        1 => (ix(), -1i32..25).prop_map(|(i, t)| ModelEdit::InitType(i, t)),
        1 => (ix(), 0usize..512).prop_map(|(i, n)| ModelEdit::InitData(i, n)),
        1 => ix().prop_map(ModelEdit::Output),
        1 => prop_oneof![Just(1i64), Just(7), Just(9), Just(11), Just(13), Just(18), Just(99)]
            .prop_map(ModelEdit::Opset),
    ]
}

fn set_attr(attrs: &mut Vec<AttributeProto>, name: &str, f: impl FnOnce(&mut AttributeProto)) {
    if let Some(a) = attrs.iter_mut().find(|a| a.name == name) {
        f(a);
    } else {
        let mut a = AttributeProto {
            name: name.to_string(),
            ..Default::default()
        };
        f(&mut a);
        attrs.push(a);
    }
}

fn apply_model(seed: &[u8], edits: &[ModelEdit]) -> Vec<u8> {
    let mut m = ModelProto::decode(seed).expect("seed decodes");
    let mut opset = None;
    let g = m.graph.as_mut().expect("seed has a graph");
    for e in edits {
        let nodes = g.node.len().max(1);
        let inits = g.initializer.len().max(1);
        let mut names: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
        names.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
        names.extend(g.initializer.iter().map(|i| i.name.clone()));
        match e {
            ModelEdit::Op(n, o) if !g.node.is_empty() => {
                g.node[n % nodes].op_type = OPS[o % OPS.len()].to_string()
            }
            ModelEdit::AttrInt(n, a, v) if !g.node.is_empty() => set_attr(
                &mut g.node[n % nodes].attribute,
                ATTRS[a % ATTRS.len()],
                |a| {
                    a.r#type = AttributeType::Int as i32;
                    a.i = *v;
                },
            ),
            ModelEdit::AttrInts(n, a, v) if !g.node.is_empty() => set_attr(
                &mut g.node[n % nodes].attribute,
                ATTRS[a % ATTRS.len()],
                |a| {
                    a.r#type = AttributeType::Ints as i32;
                    a.ints = v.clone();
                },
            ),
            ModelEdit::Rewire { node, slot, to } if !g.node.is_empty() && !names.is_empty() => {
                let n = &mut g.node[node % nodes];
                let name = names[to % names.len()].clone();
                if *slot < n.input.len() {
                    n.input[*slot] = name;
                } else {
                    n.input.push(name);
                }
            }
            ModelEdit::Remove(n) if !g.node.is_empty() => {
                g.node.remove(n % nodes);
            }
            ModelEdit::Duplicate(n) if !g.node.is_empty() => {
                let copy = g.node[n % nodes].clone();
                g.node.insert(n % nodes, copy);
            }
            ModelEdit::InputDim(d, v) => {
                use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
                if let Some(type_proto::Value::TensorType(t)) = g
                    .input
                    .first_mut()
                    .and_then(|i| i.r#type.as_mut())
                    .and_then(|t| t.value.as_mut())
                {
                    if let Some(s) = t.shape.as_mut() {
                        if let Some(dim) = s.dim.get_mut(*d) {
                            dim.value = Some(Value::DimValue(*v));
                        } else {
                            s.dim.push(Default::default());
                        }
                    }
                }
            }
            ModelEdit::InitDim { init, dim, value } if !g.initializer.is_empty() => {
                let t = &mut g.initializer[init % inits];
                if let Some(d) = t.dims.get_mut(*dim) {
                    *d = *value;
                } else {
                    t.dims.push(*value);
                }
            }
            ModelEdit::InitType(i, ty) if !g.initializer.is_empty() => {
                g.initializer[i % inits].data_type = *ty
            }
            ModelEdit::InitData(i, len) if !g.initializer.is_empty() => {
                g.initializer[i % inits].raw_data.resize(*len, 0x3f)
            }
            ModelEdit::Output(n) if !names.is_empty() && !g.output.is_empty() => {
                g.output[0].name = names[n % names.len()].clone()
            }
            ModelEdit::Opset(v) => opset = Some(*v),
            _ => {}
        }
    }
    if let (Some(v), Some(o)) = (opset, m.opset_import.first_mut()) {
        o.version = v;
    }
    m.encode_to_vec()
}

// -------------------------------------------------------------- targets

/// How far a mutated model got: 0 refused at load, 1 loaded, 2 ran
/// forward, 3 explained by at least one analyzer.
fn exercise_model(bytes: &[u8]) -> usize {
    let Ok(model) = Model::options().from_bytes(bytes, Path::new("fuzz.onnx"), None) else {
        return 0;
    };
    let mut i = 0usize;
    let x = ArrayD::from_shape_simple_fn(model.input.shape.clone(), || {
        i += 1;
        (i % 7) as f32 * 0.3 - 1.0
    });
    let Ok(fwd) = model.forward(x) else { return 1 };
    let class = fwd.top_k(1)[0].0;
    let params = AnalyzerParams::default();
    let mut depth = 2;
    for name in ["epsilon-gamma-box", "gradient"] {
        let a = Analyzer::from_name(name, &params).unwrap();
        if a.explain(&model, &fwd, class, &Normalization::default())
            .is_ok()
        {
            depth = 3;
        }
    }
    depth
}

fn timed(what: &str, f: impl FnOnce()) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    f();
    let took = t0.elapsed();
    prop_assert!(took < SLOW, "{what} took {took:?}");
    Ok(())
}

#[test]
fn mutated_images_decode_or_fail_cleanly() {
    let strategy = (
        any::<prop::sample::Index>(),
        proptest::collection::vec(byte_edit(), 1..6),
    );
    let name = concat!(module_path!(), "::mutated_images_decode_or_fail_cleanly");
    fuzz(name, strategy, |(seed, edits)| {
        let seeds = image_seeds();
        let bytes = apply_bytes(&seeds[seed.index(seeds.len())], &edits);
        let limits = DecodeLimits {
            max_pixels: MAX_PIXELS,
        };
        let mut out = None;
        timed("decoding", || out = Some(decode_bytes(&bytes, &limits)))?;
        if let Some(Ok(img)) = out {
            prop_assert!(img.width() as u64 * img.height() as u64 <= MAX_PIXELS);
        }
        Ok(())
    });
}

#[test]
fn mutated_model_bytes_load_or_fail_cleanly() {
    let strategy = (
        any::<prop::sample::Index>(),
        proptest::collection::vec(byte_edit(), 1..5),
    );
    let name = concat!(module_path!(), "::mutated_model_bytes_load_or_fail_cleanly");
    fuzz(name, strategy, |(seed, edits)| {
        let seeds = model_seeds();
        let bytes = apply_bytes(&seeds[seed.index(seeds.len())], &edits);
        timed("loading", || {
            exercise_model(&bytes);
        })
    });
}

#[test]
fn mutated_model_graphs_load_or_fail_cleanly() {
    let strategy = (
        any::<prop::sample::Index>(),
        proptest::collection::vec(model_edit(), 1..4),
    );
    let name = concat!(
        module_path!(),
        "::mutated_model_graphs_load_or_fail_cleanly"
    );
    fuzz(name, strategy, |(seed, edits)| {
        let seeds = model_seeds();
        let bytes = apply_model(&seeds[seed.index(seeds.len())], &edits);
        timed("loading", || {
            exercise_model(&bytes);
        })
    });
}

/// The seeds themselves are valid: every image decodes and every model
/// loads and explains (so the fuzz targets start from working inputs).
#[test]
fn seeds_are_valid() {
    let limits = DecodeLimits::default();
    for (i, s) in image_seeds().iter().enumerate() {
        decode_bytes(s, &limits).unwrap_or_else(|e| panic!("image seed {i}: {e:#}"));
    }
    for (i, s) in model_seeds().iter().enumerate() {
        let m = Model::options()
            .from_bytes(s, Path::new("seed.onnx"), None)
            .unwrap_or_else(|e| panic!("model seed {i}: {e:#}"));
        assert!(m.classes >= 2, "model seed {i}");
    }
}

/// How deep the model mutations get (`cargo test --test it --
/// fuzz::model_mutation_depth --ignored --nocapture`): of 2000 mutated
/// models per kind, how many load, run and are explained. A fuzzer whose
/// inputs all fail at the parser tests little.
#[test]
#[ignore]
fn model_mutation_depth() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let seeds = model_seeds();
    for kind in ["bytes", "graph"] {
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            let seed = any::<prop::sample::Index>()
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let seed = &seeds[seed.index(seeds.len())];
            let bytes = if kind == "bytes" {
                let e = proptest::collection::vec(byte_edit(), 1..5);
                apply_bytes(seed, &e.new_tree(&mut runner).unwrap().current())
            } else {
                let e = proptest::collection::vec(model_edit(), 1..4);
                apply_model(seed, &e.new_tree(&mut runner).unwrap().current())
            };
            counts[exercise_model(&bytes)] += 1;
        }
        println!(
            "{kind}: refused {}, loaded only {}, ran forward only {}, explained {}",
            counts[0], counts[1], counts[2], counts[3]
        );
    }
}
