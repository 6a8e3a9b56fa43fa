//! Synthetic ONNX model generation for tests and benchmarks.
//!
//! The real VGG16 checkpoints are far too large to commit, so tests and
//! benchmarks generate structurally faithful stand-ins at run time:
//!
//! * [`OnnxBuilder`] is a tiny, dependency-free (beyond `prost` and the
//!   protobuf types exposed by `tract_onnx::pb`) ONNX graph builder.
//! * [`Rng`] is a small seeded PRNG (SplitMix64-seeded xoshiro256**, with
//!   Box-Muller normals) so generated weights are reproducible.
//! * [`vgg16`] builds VGG16 (configuration "D"), optionally with batch
//!   normalisation, either the way `torch.onnx.export` writes torchvision's
//!   model ([`VggStyle::Torchvision`]) or the way the ONNX model zoo's
//!   MXNet-converted `vgg16-7.onnx` looks ([`VggStyle::Zoo`]), at full or
//!   reduced width.
//!
//! Weight tensors are kept exactly once in memory (as little-endian raw
//! bytes) and [`OnnxBuilder::save`] streams the protobuf encoding straight to
//! disk, so even the full-size 138M-parameter model only needs about one copy
//! of its weights to be written (two for [`OnnxBuilder::to_bytes`]).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto, tensor_proto::DataType, tensor_shape_proto,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Protobuf field number of `ModelProto.graph`.
const MODEL_GRAPH_TAG: u32 = 7;
/// Protobuf field number of `GraphProto.initializer`.
const GRAPH_INITIALIZER_TAG: u32 = 5;
/// Protobuf field number of `TensorProto.raw_data`.
const TENSOR_RAW_DATA_TAG: u32 = 9;

/// A node attribute, as passed to [`OnnxBuilder::node`].
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A single 64-bit integer attribute (`INT`).
    Int(&'static str, i64),
    /// A list of 64-bit integers (`INTS`).
    Ints(&'static str, Vec<i64>),
    /// A single float attribute (`FLOAT`).
    Float(&'static str, f32),
    /// A list of floats (`FLOATS`).
    Floats(&'static str, Vec<f32>),
    /// A UTF-8 string attribute (`STRING`).
    Str(&'static str, String),
}

impl Attr {
    fn to_proto(&self) -> AttributeProto {
        let mut a = AttributeProto::default();
        match self {
            Attr::Int(name, v) => {
                a.name = (*name).to_string();
                a.r#type = AttributeType::Int as i32;
                a.i = *v;
            }
            Attr::Ints(name, v) => {
                a.name = (*name).to_string();
                a.r#type = AttributeType::Ints as i32;
                a.ints = v.clone();
            }
            Attr::Float(name, v) => {
                a.name = (*name).to_string();
                a.r#type = AttributeType::Float as i32;
                a.f = *v;
            }
            Attr::Floats(name, v) => {
                a.name = (*name).to_string();
                a.r#type = AttributeType::Floats as i32;
                a.floats = v.clone();
            }
            Attr::Str(name, v) => {
                a.name = (*name).to_string();
                a.r#type = AttributeType::String as i32;
                a.s = v.as_bytes().to_vec();
            }
        }
        a
    }
}

/// An initializer kept outside of any protobuf message so that its (possibly
/// huge) payload can be streamed without being copied.
#[derive(Clone, Debug)]
struct Initializer {
    name: String,
    dims: Vec<i64>,
    data_type: DataType,
    /// Little-endian element bytes (ONNX `raw_data`).
    raw: Vec<u8>,
    /// `external_data` key/value pairs; when set the tensor's data lives in
    /// another file (`data_location = EXTERNAL`) and `raw` is empty.
    external: Vec<(String, String)>,
}

impl Initializer {
    /// The tensor without its payload (name, dims, data type).
    fn header(&self) -> TensorProto {
        let mut t = TensorProto {
            dims: self.dims.clone(),
            data_type: self.data_type as i32,
            name: self.name.clone(),
            ..Default::default()
        };
        if !self.external.is_empty() {
            t.data_location = Some(tensor_proto::DataLocation::External as i32);
            t.external_data = self
                .external
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
        }
        t
    }

    /// The complete tensor proto (copies the payload).
    fn to_proto(&self) -> TensorProto {
        let mut t = self.header();
        t.raw_data = self.raw.clone();
        t
    }

    /// Encoded length of the `TensorProto` message body.
    fn encoded_len(&self, header: &TensorProto) -> usize {
        header.encoded_len() + length_delimited_len(TENSOR_RAW_DATA_TAG, self.raw.len())
    }

    fn value_info(&self) -> ValueInfoProto {
        value_info(&self.name, self.data_type, Some(&self.dims))
    }
}

/// Bytes taken by a length-delimited field with a body of `len` bytes.
fn length_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Key and length prefix of a length-delimited field.
fn length_delimited_prefix(tag: u32, len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    encode_key(tag, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    buf
}

/// Builds a `ValueInfoProto` for a tensor. `dims == None` means unknown
/// shape; negative dims become symbolic `d{index}` parameters.
fn value_info(name: &str, data_type: DataType, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .enumerate()
            .map(|(ix, &d)| tensor_shape_proto::Dimension {
                denotation: String::new(),
                value: Some(if d < 0 {
                    tensor_shape_proto::dimension::Value::DimParam(format!("d{ix}"))
                } else {
                    tensor_shape_proto::dimension::Value::DimValue(d)
                }),
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type as i32,
                shape,
            })),
        }),
        ..Default::default()
    }
}

/// ONNX IR version matching a default-domain opset (the IR version that
/// shipped alongside it, as exporters of that era wrote).
fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        _ => 7,
    }
}

/// Incremental builder of a single-graph ONNX model with float32 inputs and
/// outputs.
///
/// Node names are `"<op_type>_<counter>"` with one counter shared by all
/// nodes (`Conv_0`, `Relu_1`, `Conv_2`, ...), as older `torch.onnx` exports
/// name them. For IR versions below 4 (opset <= 8) every initializer is also
/// listed as a graph input, as the IR required then (and as the model zoo's
/// opset-7 models do).
#[derive(Clone, Debug)]
pub struct OnnxBuilder {
    opset: i64,
    ir_version: i64,
    graph_name: String,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    nodes: Vec<NodeProto>,
    initializers: Vec<Initializer>,
}

impl OnnxBuilder {
    /// Starts an empty model importing the default ONNX domain at `opset`.
    ///
    /// The IR version is 7 for opset >= 12 (so for the opset 13 torchvision
    /// exports), 3 for opset <= 8 (the opset 7 model zoo files), and the
    /// matching 4/5/6 in between. The producer name is `"lrp-heatmap synth"`.
    pub fn new(opset: i64) -> Self {
        OnnxBuilder {
            opset,
            ir_version: ir_version_for_opset(opset),
            graph_name: "synth".to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    /// Sets the graph name (default `"synth"`).
    pub fn graph_name(&mut self, name: &str) {
        self.graph_name = name.to_string();
    }

    /// Declares a float32 graph input. A negative dim becomes the symbolic
    /// dimension `d{index}` (e.g. `[-1, 3, 224, 224]` has batch `d0`).
    pub fn input(&mut self, name: &str, dims: &[i64]) {
        self.inputs
            .push(value_info(name, DataType::Float, Some(dims)));
    }

    /// Declares a float32 graph input with dims given as text: a number is a
    /// fixed dim, anything else a symbolic one of that name (e.g.
    /// `["N", "3", "H", "W"]` or tf2onnx's `["unk__6", "224", "224", "3"]`).
    pub fn input_named_dims(&mut self, name: &str, dims: &[&str]) {
        let mut v = value_info(name, DataType::Float, Some(&vec![-1; dims.len()]));
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(shape) = t.shape.as_mut() {
                for (d, text) in shape.dim.iter_mut().zip(dims) {
                    d.value = Some(match text.parse::<i64>() {
                        Ok(n) => tensor_shape_proto::dimension::Value::DimValue(n),
                        Err(_) => tensor_shape_proto::dimension::Value::DimParam(text.to_string()),
                    });
                }
            }
        }
        self.inputs.push(v);
    }

    /// Renames the tensor `from` to `to` everywhere: graph inputs and
    /// outputs and node inputs and outputs (not initializers).
    pub fn rename(&mut self, from: &str, to: &str) {
        let fix = |s: &mut String| {
            if s == from {
                *s = to.to_string();
            }
        };
        self.inputs.iter_mut().for_each(|v| fix(&mut v.name));
        self.outputs.iter_mut().for_each(|v| fix(&mut v.name));
        for n in &mut self.nodes {
            n.input.iter_mut().for_each(fix);
            n.output.iter_mut().for_each(fix);
        }
    }

    /// Declares a float32 graph output. Empty `dims` means unknown shape;
    /// negative dims become symbolic like in [`OnnxBuilder::input`].
    pub fn output(&mut self, name: &str, dims: &[i64]) {
        let dims = if dims.is_empty() { None } else { Some(dims) };
        self.outputs.push(value_info(name, DataType::Float, dims));
    }

    /// Adds a float32 initializer (stored as little-endian `raw_data`) and
    /// returns its name. `data.len()` must equal the product of `dims`.
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_raw(name, dims, data.len(), DataType::Float, raw)
    }

    /// Adds an int64 initializer (e.g. a `Reshape` shape) and returns its
    /// name. `data.len()` must equal the product of `dims`.
    pub fn initializer_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_raw(name, dims, data.len(), DataType::Int64, raw)
    }

    /// Adds an initializer from already-encoded little-endian bytes.
    fn initializer_raw(
        &mut self,
        name: &str,
        dims: &[usize],
        len: usize,
        data_type: DataType,
        raw: Vec<u8>,
    ) -> String {
        let expected: usize = dims.iter().product();
        assert_eq!(
            expected, len,
            "initializer {name}: dims {dims:?} hold {expected} elements, got {len}"
        );
        self.initializers.push(Initializer {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            raw,
            external: Vec::new(),
        });
        name.to_string()
    }

    /// Adds a float32 initializer whose data lives in another file, as
    /// exporters write models over 2 GB (`data_location = EXTERNAL`, with
    /// `location` relative to the model's folder, and `offset` / `length` in
    /// bytes). Nothing is written to `location`: use
    /// [`OnnxBuilder::external_bytes`] for the file's content.
    pub fn initializer_external(
        &mut self,
        name: &str,
        dims: &[usize],
        location: &str,
        offset: usize,
        length: usize,
    ) -> String {
        self.initializers.push(Initializer {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float,
            raw: Vec::new(),
            external: vec![
                ("location".to_string(), location.to_string()),
                ("offset".to_string(), offset.to_string()),
                ("length".to_string(), length.to_string()),
            ],
        });
        name.to_string()
    }

    /// Little-endian bytes of `data`, the content of an external data file.
    pub fn external_bytes(data: &[f32]) -> Vec<u8> {
        data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Appends a node of the default domain. Its name is
    /// `"<op_type>_<counter>"` where the counter is the node's index in the
    /// graph.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attr>) {
        let name = format!("{op_type}_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op_type.to_string(),
            attribute: attrs.iter().map(Attr::to_proto).collect(),
            ..Default::default()
        });
    }

    /// Total number of elements over all initializers (the parameter count).
    pub fn num_params(&self) -> usize {
        self.initializers
            .iter()
            .map(|i| i.dims.iter().product::<i64>() as usize)
            .sum()
    }

    /// The `ModelProto` without its graph.
    fn model_shell(&self) -> ModelProto {
        ModelProto {
            ir_version: self.ir_version,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "lrp-heatmap synth".to_string(),
            graph: None,
            ..Default::default()
        }
    }

    /// The `GraphProto` without its initializers.
    fn graph_shell(&self) -> GraphProto {
        let mut input = self.inputs.clone();
        if self.ir_version < 4 {
            input.extend(self.initializers.iter().map(Initializer::value_info));
        }
        GraphProto {
            node: self.nodes.clone(),
            name: self.graph_name.clone(),
            input,
            output: self.outputs.clone(),
            ..Default::default()
        }
    }

    /// Builds the complete protobuf message. This copies every weight; prefer
    /// [`OnnxBuilder::to_bytes`] / [`OnnxBuilder::save`] for large models.
    pub fn to_model_proto(&self) -> ModelProto {
        let mut graph = self.graph_shell();
        graph.initializer = self
            .initializers
            .iter()
            .map(Initializer::to_proto)
            .collect();
        let mut model = self.model_shell();
        model.graph = Some(graph);
        model
    }

    /// Streams the serialized model to `w`.
    ///
    /// Protobuf allows fields in any order, so the small parts (model and
    /// graph without initializers, tensor headers) are encoded with prost
    /// and each initializer payload is written directly from the builder's
    /// buffer, never copied.
    pub fn write_to<W: Write>(&self, w: &mut W) -> std::io::Result<()> {
        let model_shell = self.model_shell().encode_to_vec();
        let graph_shell = self.graph_shell().encode_to_vec();
        let headers: Vec<TensorProto> = self.initializers.iter().map(Initializer::header).collect();
        let tensor_lens: Vec<usize> = self
            .initializers
            .iter()
            .zip(&headers)
            .map(|(init, h)| init.encoded_len(h))
            .collect();
        let graph_len = graph_shell.len()
            + tensor_lens
                .iter()
                .map(|&l| length_delimited_len(GRAPH_INITIALIZER_TAG, l))
                .sum::<usize>();

        w.write_all(&model_shell)?;
        w.write_all(&length_delimited_prefix(MODEL_GRAPH_TAG, graph_len))?;
        w.write_all(&graph_shell)?;
        for ((init, header), &tensor_len) in
            self.initializers.iter().zip(&headers).zip(&tensor_lens)
        {
            w.write_all(&length_delimited_prefix(GRAPH_INITIALIZER_TAG, tensor_len))?;
            w.write_all(&header.encode_to_vec())?;
            w.write_all(&length_delimited_prefix(
                TENSOR_RAW_DATA_TAG,
                init.raw.len(),
            ))?;
            w.write_all(&init.raw)?;
        }
        Ok(())
    }

    /// Size in bytes of the serialized model.
    pub fn encoded_len(&self) -> usize {
        let graph_len = self.graph_shell().encoded_len()
            + self
                .initializers
                .iter()
                .map(|init| {
                    length_delimited_len(GRAPH_INITIALIZER_TAG, init.encoded_len(&init.header()))
                })
                .sum::<usize>();
        self.model_shell().encoded_len() + length_delimited_len(MODEL_GRAPH_TAG, graph_len)
    }

    /// Serializes the model (an ONNX protobuf `ModelProto`) to memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out)
            .expect("writing to a Vec<u8> cannot fail");
        out
    }

    /// Writes the serialized model to `path`, streaming the weights.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        self.write_to(&mut w)
            .and_then(|_| w.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

pub use lrp_heatmap::rng::Rng;
/// `n` He-normal (Kaiming) weights: N(0, 2 / fan_in).
pub fn he_normal(rng: &mut Rng, fan_in: usize, n: usize) -> Vec<f32> {
    let std = (2.0 / fan_in as f64).sqrt() as f32;
    (0..n).map(|_| rng.normal() * std).collect()
}

/// Like [`he_normal`] but directly as little-endian bytes (no f32 copy).
fn he_normal_bytes(rng: &mut Rng, fan_in: usize, n: usize) -> Vec<u8> {
    let std = (2.0 / fan_in as f64).sqrt() as f32;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        out.extend_from_slice(&(rng.normal() * std).to_le_bytes());
    }
    out
}

/// `n` uniform values in `[lo, hi)`.
fn uniform_vec(rng: &mut Rng, lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(lo, hi)).collect()
}

/// Which exporter's conventions a generated VGG16 follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VggStyle {
    /// `torch.onnx.export(torchvision.models.vgg16(), ..., opset_version=13)`:
    /// input `"input"`, initializers `features.N.weight` /
    /// `classifier.N.weight`, an `AveragePool` (the exported adaptive average
    /// pool) before `Flatten`, dropouts exported as `Identity`, output
    /// `"output"`.
    Torchvision,
    /// ONNX model zoo `vgg16-7.onnx` (MXNet conversion, opset 7): input
    /// `"data"`, initializers `vgg0_conv0_weight` / `vgg0_dense0_weight`,
    /// opset-7 `Dropout` nodes, output `"vgg0_dense2_fwd"`; initializers are
    /// also listed as graph inputs (IR version 3).
    Zoo,
}

/// Parameters of a generated VGG16.
#[derive(Clone, Debug)]
pub struct VggSpec {
    /// Exporter conventions (names, opset, pooling/dropout ops).
    pub style: VggStyle,
    /// Every conv width (64..512) is divided by this (minimum 1 channel).
    pub width_divisor: usize,
    /// Square input side; must be a multiple of 32 (five 2x2 max pools).
    pub input_size: usize,
    /// Width of the two hidden dense layers (4096 in VGG16).
    pub hidden: usize,
    /// Number of output classes.
    pub classes: usize,
    /// PRNG seed for all weights.
    pub seed: u64,
    /// Insert `BatchNormalization` after each conv (vgg16_bn).
    pub batchnorm: bool,
}

impl VggSpec {
    /// The real VGG16 shape: 224x224 input, 4096 hidden, 1000 classes,
    /// 138M parameters (~553 MB of float32), seed 0, no batch norm.
    pub fn full(style: VggStyle) -> Self {
        VggSpec {
            style,
            width_divisor: 1,
            input_size: 224,
            hidden: 4096,
            classes: 1000,
            seed: 0,
            batchnorm: false,
        }
    }

    /// A test-sized VGG16: conv widths 4, 8, 16, 32, 32, 32x32 input,
    /// 64 hidden, 10 classes, seed 0, no batch norm (~40k parameters).
    pub fn tiny(style: VggStyle) -> Self {
        VggSpec {
            style,
            width_divisor: 16,
            input_size: 32,
            hidden: 64,
            classes: 10,
            seed: 0,
            batchnorm: false,
        }
    }

    /// Name of the graph input for this style.
    pub fn input_name(&self) -> &'static str {
        match self.style {
            VggStyle::Torchvision => "input",
            VggStyle::Zoo => "data",
        }
    }

    /// Name of the graph output (the logits) for this style.
    pub fn output_name(&self) -> &'static str {
        match self.style {
            VggStyle::Torchvision => "output",
            VggStyle::Zoo => "vgg0_dense2_fwd",
        }
    }
}

/// VGG16 configuration "D"; `0` marks a 2x2 max pool.
const VGG16_CFG: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];

/// Builds VGG16 (configuration "D") following `spec`.
///
/// Every 3x3 conv (stride 1, pad 1) is followed by an optional
/// `BatchNormalization` (epsilon 1e-5, gamma in [0.5, 1.5], beta and mean in
/// [-0.1, 0.1], var in [0.5, 1.5]) and `Relu`; the five `MaxPool`s are 2x2
/// stride 2. The classifier is Gemm(512/div*s*s -> hidden), Relu, Dropout,
/// Gemm(hidden -> hidden), Relu, Dropout, Gemm(hidden -> classes) with
/// `s = input_size / 32` and weights stored `[out, in]` (`transB = 1`).
/// Weights are He-normal, biases uniform in [-0.05, 0.05], all drawn from
/// one [`Rng`] seeded with `spec.seed` in layer order.
///
/// The graph input is `[1, 3, input_size, input_size]` and the output
/// `[1, classes]`; see [`VggSpec::input_name`] / [`VggSpec::output_name`].
pub fn vgg16(spec: &VggSpec) -> OnnxBuilder {
    assert!(spec.width_divisor >= 1, "width_divisor must be >= 1");
    assert!(
        spec.input_size >= 32 && spec.input_size.is_multiple_of(32),
        "input_size must be a positive multiple of 32"
    );
    let torch = spec.style == VggStyle::Torchvision;
    let mut rng = Rng::new(spec.seed);
    let mut b = OnnxBuilder::new(if torch { 13 } else { 7 });
    b.graph_name(if torch { "torch_jit" } else { "vgg0" });
    let side = spec.input_size as i64;
    b.input(spec.input_name(), &[1, 3, side, side]);

    let mut current = spec.input_name().to_string();
    let mut cin = 3usize;
    // torchvision `features` index and MXNet per-kind counters.
    let mut feat_ix = 0usize;
    let (mut conv_ix, mut bn_ix, mut relu_ix, mut pool_ix) = (0usize, 0usize, 0usize, 0usize);

    for &width in VGG16_CFG.iter() {
        if width == 0 {
            let out = if torch {
                format!("/features/features.{feat_ix}/MaxPool_output_0")
            } else {
                format!("vgg0_pool{pool_ix}_fwd")
            };
            let mut attrs = vec![
                Attr::Ints("kernel_shape", vec![2, 2]),
                Attr::Ints("pads", vec![0, 0, 0, 0]),
                Attr::Ints("strides", vec![2, 2]),
            ];
            if torch {
                attrs.insert(0, Attr::Int("ceil_mode", 0));
            }
            b.node("MaxPool", &[&current], &[&out], attrs);
            current = out;
            feat_ix += 1;
            pool_ix += 1;
            continue;
        }

        let cout = (width / spec.width_divisor).max(1);
        let fan_in = cin * 9;
        let (w_name, b_name, conv_out) = if torch {
            (
                format!("features.{feat_ix}.weight"),
                format!("features.{feat_ix}.bias"),
                format!("/features/features.{feat_ix}/Conv_output_0"),
            )
        } else {
            (
                format!("vgg0_conv{conv_ix}_weight"),
                format!("vgg0_conv{conv_ix}_bias"),
                format!("vgg0_conv{conv_ix}_fwd"),
            )
        };
        let w = he_normal_bytes(&mut rng, fan_in, cout * fan_in);
        b.initializer_raw(
            &w_name,
            &[cout, cin, 3, 3],
            cout * fan_in,
            DataType::Float,
            w,
        );
        let bias = uniform_vec(&mut rng, -0.05, 0.05, cout);
        b.initializer(&b_name, &[cout], &bias);
        b.node(
            "Conv",
            &[&current, &w_name, &b_name],
            &[&conv_out],
            vec![
                Attr::Ints("dilations", vec![1, 1]),
                Attr::Int("group", 1),
                Attr::Ints("kernel_shape", vec![3, 3]),
                Attr::Ints("pads", vec![1, 1, 1, 1]),
                Attr::Ints("strides", vec![1, 1]),
            ],
        );
        current = conv_out;
        feat_ix += 1;
        conv_ix += 1;

        if spec.batchnorm {
            let (prefix, out, names) = if torch {
                (
                    format!("features.{feat_ix}."),
                    format!("/features/features.{feat_ix}/BatchNormalization_output_0"),
                    ["weight", "bias", "running_mean", "running_var"],
                )
            } else {
                (
                    format!("vgg0_batchnorm{bn_ix}_"),
                    format!("vgg0_batchnorm{bn_ix}_fwd"),
                    ["gamma", "beta", "running_mean", "running_var"],
                )
            };
            let ranges = [(0.5, 1.5), (-0.1, 0.1), (-0.1, 0.1), (0.5, 1.5)];
            let mut inputs = vec![current.clone()];
            for (suffix, (lo, hi)) in names.iter().zip(ranges) {
                let name = format!("{prefix}{suffix}");
                let data = uniform_vec(&mut rng, lo, hi, cout);
                inputs.push(b.initializer(&name, &[cout], &data));
            }
            let mut attrs = vec![Attr::Float("epsilon", 1e-5), Attr::Float("momentum", 0.9)];
            if !torch {
                // Opset 7 BatchNormalization still has `spatial`.
                attrs.push(Attr::Int("spatial", 1));
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            b.node("BatchNormalization", &inputs, &[&out], attrs);
            current = out;
            feat_ix += 1;
            bn_ix += 1;
        }

        let relu_out = if torch {
            format!("/features/features.{feat_ix}/Relu_output_0")
        } else {
            format!("vgg0_relu{relu_ix}_fwd")
        };
        b.node("Relu", &[&current], &[&relu_out], vec![]);
        current = relu_out;
        feat_ix += 1;
        relu_ix += 1;
        cin = cout;
    }

    let s = spec.input_size / 32;
    if torch {
        // AdaptiveAvgPool2d((7, 7)) on a map that already has its target
        // size exports as a 1x1 average pool; emitted for every size.
        let out = "/avgpool/AveragePool_output_0".to_string();
        b.node(
            "AveragePool",
            &[&current],
            &[&out],
            vec![
                Attr::Int("ceil_mode", 0),
                Attr::Ints("kernel_shape", vec![1, 1]),
                Attr::Ints("pads", vec![0, 0, 0, 0]),
                Attr::Ints("strides", vec![1, 1]),
            ],
        );
        current = out;
    }
    let flat = if torch {
        "/Flatten_output_0".to_string()
    } else {
        "vgg0_flatten0_reshape0".to_string()
    };
    b.node("Flatten", &[&current], &[&flat], vec![Attr::Int("axis", 1)]);
    current = flat;

    let dims = [cin * s * s, spec.hidden, spec.hidden, spec.classes];
    for layer in 0..3 {
        let (fin, fout) = (dims[layer], dims[layer + 1]);
        // torchvision classifier indices: Linear 0, 3, 6 (Relu 1, 4; Dropout 2, 5).
        let cls_ix = layer * 3;
        let last = layer == 2;
        let (w_name, b_name, out) = if torch {
            (
                format!("classifier.{cls_ix}.weight"),
                format!("classifier.{cls_ix}.bias"),
                if last {
                    "output".to_string()
                } else {
                    format!("/classifier/classifier.{cls_ix}/Gemm_output_0")
                },
            )
        } else {
            (
                format!("vgg0_dense{layer}_weight"),
                format!("vgg0_dense{layer}_bias"),
                format!("vgg0_dense{layer}_fwd"),
            )
        };
        let w = he_normal_bytes(&mut rng, fin, fin * fout);
        b.initializer_raw(&w_name, &[fout, fin], fin * fout, DataType::Float, w);
        let bias = uniform_vec(&mut rng, -0.05, 0.05, fout);
        b.initializer(&b_name, &[fout], &bias);
        let mut attrs = vec![
            Attr::Float("alpha", 1.0),
            Attr::Float("beta", 1.0),
            Attr::Int("transB", 1),
        ];
        if !torch {
            attrs.insert(2, Attr::Int("transA", 0));
        }
        b.node("Gemm", &[&current, &w_name, &b_name], &[&out], attrs);
        current = out;
        if last {
            break;
        }

        let (relu_out, drop_out) = if torch {
            (
                format!("/classifier/classifier.{}/Relu_output_0", cls_ix + 1),
                format!("/classifier/classifier.{}/Identity_output_0", cls_ix + 2),
            )
        } else {
            (
                format!("vgg0_dense{layer}_relu_fwd"),
                format!("vgg0_dropout{layer}_fwd"),
            )
        };
        b.node("Relu", &[&current], &[&relu_out], vec![]);
        if torch {
            b.node("Identity", &[&relu_out], &[&drop_out], vec![]);
        } else {
            b.node(
                "Dropout",
                &[&relu_out],
                &[&drop_out],
                vec![Attr::Float("ratio", 0.5)],
            );
        }
        current = drop_out;
    }
    debug_assert_eq!(current, spec.output_name());
    b.output(spec.output_name(), &[1, spec.classes as i64]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// Loads ONNX bytes with tract, optimizes, and runs one input.
    fn run(bytes: &[u8], input: Tensor) -> TractResult<tract_ndarray::ArrayD<f32>> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])?
            .into_optimized()?
            .into_runnable()?;
        let mut out = model.run(tvec!(input.into()))?;
        out.remove(0).into_tensor().into_plain_array::<f32>()
    }

    fn op_count(model: &ModelProto, op: &str) -> usize {
        let graph = model.graph.as_ref().unwrap();
        graph.node.iter().filter(|n| n.op_type == op).count()
    }

    fn check_tiny_runs(spec: &VggSpec) {
        let bytes = vgg16(spec).to_bytes();
        for fill in [0.0f32, 1.0] {
            let input = tract_ndarray::Array4::<f32>::from_elem((1, 3, 32, 32), fill);
            let out = run(&bytes, input.into_tensor()).unwrap();
            assert_eq!(out.shape(), &[1, 10], "{spec:?}");
            let values: Vec<f32> = out.iter().copied().collect();
            assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
            // Random non-zero biases: the logits must not all coincide.
            assert!(values.iter().any(|&v| v != values[0]), "{values:?}");
        }
    }

    #[test]
    fn tiny_vgg_runs_in_tract_both_styles() {
        for style in [VggStyle::Torchvision, VggStyle::Zoo] {
            for batchnorm in [false, true] {
                check_tiny_runs(&VggSpec {
                    batchnorm,
                    ..VggSpec::tiny(style)
                });
            }
        }
    }

    #[test]
    fn tiny_vgg_torchvision_structure() {
        let spec = VggSpec::tiny(VggStyle::Torchvision);
        let model = ModelProto::decode(&vgg16(&spec).to_bytes()[..]).unwrap();
        assert_eq!(model.ir_version, 7);
        assert_eq!(model.opset_import[0].version, 13);
        assert_eq!(model.producer_name, "lrp-heatmap synth");
        assert_eq!(op_count(&model, "Conv"), 13);
        assert_eq!(op_count(&model, "MaxPool"), 5);
        assert_eq!(op_count(&model, "Gemm"), 3);
        assert_eq!(op_count(&model, "Relu"), 15);
        assert_eq!(op_count(&model, "Identity"), 2);
        assert_eq!(op_count(&model, "AveragePool"), 1);
        assert_eq!(op_count(&model, "Flatten"), 1);
        assert_eq!(op_count(&model, "Dropout"), 0);
        let graph = model.graph.unwrap();
        assert_eq!(graph.node.len(), 13 + 5 + 3 + 15 + 2 + 1 + 1);
        assert_eq!(graph.node[0].name, "Conv_0");
        assert_eq!(graph.node[1].name, "Relu_1");
        assert_eq!(graph.input.len(), 1);
        assert_eq!(graph.input[0].name, "input");
        assert_eq!(graph.output[0].name, "output");
        assert_eq!(graph.initializer.len(), 2 * 16);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"features.0.weight"));
        assert!(names.contains(&"features.28.bias"));
        assert!(names.contains(&"classifier.6.weight"));
        let w0 = &graph.initializer[0];
        assert_eq!(w0.dims, vec![4, 3, 3, 3]);
        assert_eq!(w0.raw_data.len(), 4 * 3 * 3 * 3 * 4);
        let fc6 = graph
            .initializer
            .iter()
            .find(|t| t.name == "classifier.0.weight")
            .unwrap();
        assert_eq!(fc6.dims, vec![64, 32]);
        let cls = graph
            .initializer
            .iter()
            .find(|t| t.name == "classifier.6.weight")
            .unwrap();
        assert_eq!(cls.dims, vec![10, 64]);
    }

    #[test]
    fn tiny_vgg_zoo_structure() {
        let spec = VggSpec {
            batchnorm: true,
            ..VggSpec::tiny(VggStyle::Zoo)
        };
        let model = ModelProto::decode(&vgg16(&spec).to_bytes()[..]).unwrap();
        assert_eq!(model.ir_version, 3);
        assert_eq!(model.opset_import[0].version, 7);
        assert_eq!(op_count(&model, "Conv"), 13);
        assert_eq!(op_count(&model, "BatchNormalization"), 13);
        assert_eq!(op_count(&model, "MaxPool"), 5);
        assert_eq!(op_count(&model, "Gemm"), 3);
        assert_eq!(op_count(&model, "Relu"), 15);
        assert_eq!(op_count(&model, "Dropout"), 2);
        assert_eq!(op_count(&model, "Flatten"), 1);
        assert_eq!(op_count(&model, "AveragePool"), 0);
        let graph = model.graph.unwrap();
        assert_eq!(graph.input[0].name, "data");
        assert_eq!(graph.output[0].name, "vgg0_dense2_fwd");
        // IR 3: every initializer is also a graph input.
        assert_eq!(graph.initializer.len(), 2 * 16 + 4 * 13);
        assert_eq!(graph.input.len(), 1 + graph.initializer.len());
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        for n in [
            "vgg0_conv0_weight",
            "vgg0_conv12_bias",
            "vgg0_batchnorm0_gamma",
            "vgg0_batchnorm12_running_var",
            "vgg0_dense2_weight",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let dropout = graph.node.iter().find(|n| n.op_type == "Dropout").unwrap();
        assert_eq!(dropout.output.len(), 1);
        assert_eq!(dropout.attribute[0].name, "ratio");
        assert_eq!(dropout.attribute[0].f, 0.5);
    }

    #[test]
    fn vgg_is_deterministic_and_seed_dependent() {
        let spec = VggSpec::tiny(VggStyle::Zoo);
        let a = vgg16(&spec).to_bytes();
        assert_eq!(a, vgg16(&spec).to_bytes());
        let c = vgg16(&VggSpec { seed: 1, ..spec }).to_bytes();
        assert_eq!(a.len(), c.len());
        assert_ne!(a, c);
    }

    #[test]
    fn streamed_bytes_match_prost_encoding() {
        for style in [VggStyle::Torchvision, VggStyle::Zoo] {
            let b = vgg16(&VggSpec::tiny(style));
            let bytes = b.to_bytes();
            assert_eq!(bytes.len(), b.encoded_len());
            let proto = b.to_model_proto();
            assert_eq!(bytes.len(), proto.encoded_len());
            assert_eq!(ModelProto::decode(&bytes[..]).unwrap(), proto);

            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tiny.onnx");
            b.save(&path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
            let from_file = tract_onnx::onnx().model_for_path(&path).unwrap();
            assert_eq!(from_file.input_outlets().unwrap().len(), 1);
        }
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let xa: Vec<f32> = (0..100).map(|_| a.uniform()).collect();
        let xb: Vec<f32> = (0..100).map(|_| b.uniform()).collect();
        let xc: Vec<f32> = (0..100).map(|_| c.uniform()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        assert!(xa.iter().all(|&u| (0.0..1.0).contains(&u)));
        let na: Vec<f32> = (0..101).map(|_| a.normal()).collect();
        let nb: Vec<f32> = (0..101).map(|_| b.normal()).collect();
        assert_eq!(na, nb);
        assert!(na.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut rng = Rng::new(7);
        let n = 100_000;
        let u: Vec<f64> = (0..n).map(|_| rng.uniform() as f64).collect();
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let z: Vec<f64> = (0..n).map(|_| rng.normal() as f64).collect();
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
    }

    #[test]
    fn he_normal_variance() {
        let mut rng = Rng::new(123);
        let fan_in = 3 * 3 * 64;
        let w = he_normal(&mut rng, fan_in, 100_000);
        assert_eq!(w.len(), 100_000);
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let expected = 2.0 / fan_in as f64;
        assert!(
            (var - expected).abs() < 0.1 * expected,
            "var {var} vs {expected}"
        );
        // The byte variant draws the same stream.
        let bytes = he_normal_bytes(&mut Rng::new(123), fan_in, 10);
        let again: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(again, w[..10]);
    }

    /// Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with hand-picked
    /// weights; the expected output is computed by hand below.
    #[test]
    fn hand_built_model_known_output() {
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 1, 3, 3]);
        // x = [[1, 2, 3],
        //      [4, 5, 6],
        //      [7, 8, 9]]
        // Conv 2x2, no padding, stride 1, two output channels:
        //  ch0: w = [[1, 1], [1, 1]], bias -14. The four 2x2 window sums are
        //       12, 16, 24, 28 -> minus 14 -> -2, 2, 10, 14
        //       -> Relu -> 0, 2, 10, 14 -> GAP mean = 26 / 4 = 6.5
        //  ch1: w = [[-1, 0], [0, 1]], bias 1. Each window gives
        //       x[i+1][j+1] - x[i][j] = 4 -> plus 1 -> 5 everywhere
        //       -> Relu -> 5 -> GAP = 5
        // Flatten -> f = [6.5, 5].
        // Gemm (transB = 1) with W = [[1, 0], [0, 1], [1, -2]], b = [0.5, 0, 1]:
        //  y0 = 6.5 + 0.5 = 7
        //  y1 = 5 + 0 = 5
        //  y2 = 6.5 - 10 + 1 = -2.5
        let w = b.initializer(
            "conv_w",
            &[2, 1, 2, 2],
            &[1.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, 1.0],
        );
        let cb = b.initializer("conv_b", &[2], &[-14.0, 1.0]);
        b.node(
            "Conv",
            &["x", &w, &cb],
            &["c"],
            vec![
                Attr::Ints("kernel_shape", vec![2, 2]),
                Attr::Ints("strides", vec![1, 1]),
                Attr::Ints("pads", vec![0, 0, 0, 0]),
            ],
        );
        b.node("Relu", &["c"], &["r"], vec![]);
        b.node("GlobalAveragePool", &["r"], &["g"], vec![]);
        b.node("Flatten", &["g"], &["f"], vec![Attr::Int("axis", 1)]);
        let gw = b.initializer("fc_w", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, -2.0]);
        let gb = b.initializer("fc_b", &[3], &[0.5, 0.0, 1.0]);
        b.node(
            "Gemm",
            &["f", &gw, &gb],
            &["y"],
            vec![
                Attr::Float("alpha", 1.0),
                Attr::Float("beta", 1.0),
                Attr::Int("transB", 1),
            ],
        );
        b.output("y", &[]);
        assert_eq!(b.num_params(), 8 + 2 + 6 + 3);

        let x = tract_ndarray::Array4::from_shape_vec(
            (1, 1, 3, 3),
            (1..=9).map(|v| v as f32).collect(),
        )
        .unwrap();
        let y = run(&b.to_bytes(), x.into_tensor()).unwrap();
        assert_eq!(y.shape(), &[1, 3]);
        let y: Vec<f32> = y.iter().copied().collect();
        let expected = [7.0f32, 5.0, -2.5];
        for (a, e) in y.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{y:?} vs {expected:?}");
        }
    }

    #[test]
    fn symbolic_batch_dim_loads_and_runs() {
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[-1, 3, 4, 4]);
        b.node("Relu", &["x"], &["r"], vec![]);
        b.node("Flatten", &["r"], &["f"], vec![Attr::Int("axis", 1)]);
        let w = b.initializer("w", &[2, 48], &vec![1.0; 96]);
        let bias = b.initializer("b", &[2], &[0.0, 1.0]);
        b.node(
            "Gemm",
            &["f", &w, &bias],
            &["y"],
            vec![Attr::Int("transB", 1)],
        );
        b.output("y", &[-1, 2]);

        let model = ModelProto::decode(&b.to_bytes()[..]).unwrap();
        let graph = model.graph.unwrap();
        let dim0 = &graph.input[0].r#type.as_ref().unwrap().value;
        let Some(type_proto::Value::TensorType(t)) = dim0 else {
            panic!("not a tensor type")
        };
        assert_eq!(
            t.shape.as_ref().unwrap().dim[0].value,
            Some(tensor_shape_proto::dimension::Value::DimParam("d0".into()))
        );

        // Each row is sum(relu(x)) for output 0 and sum(relu(x)) + 1 for
        // output 1; with x = -1 / +1 alternating by batch that is 0/48.
        let x =
            tract_ndarray::Array4::from_shape_fn(
                (2, 3, 4, 4),
                |(n, _, _, _)| {
                    if n == 0 {
                        -1.0f32
                    } else {
                        1.0
                    }
                },
            );
        let y = run(&b.to_bytes(), x.into_tensor()).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(
            y.iter().copied().collect::<Vec<f32>>(),
            [0.0, 1.0, 48.0, 49.0]
        );
    }

    #[test]
    fn named_dims_and_renaming() {
        let mut b = OnnxBuilder::new(13);
        b.input_named_dims("x", &["N", "3", "H", "W"]);
        b.node("Relu", &["x"], &["y"], vec![]);
        b.output("y", &[]);
        b.rename("x", "data");
        let model = ModelProto::decode(&b.to_bytes()[..]).unwrap();
        let graph = model.graph.unwrap();
        assert_eq!(graph.input[0].name, "data");
        assert_eq!(graph.node[0].input, ["data"]);
        let Some(type_proto::Value::TensorType(t)) = &graph.input[0].r#type.as_ref().unwrap().value
        else {
            panic!("not a tensor type")
        };
        use tensor_shape_proto::dimension::Value;
        let dims: Vec<_> = t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| d.value.clone())
            .collect();
        assert_eq!(
            dims,
            [
                Some(Value::DimParam("N".into())),
                Some(Value::DimValue(3)),
                Some(Value::DimParam("H".into())),
                Some(Value::DimParam("W".into()))
            ]
        );
    }

    #[test]
    fn i64_initializer_reshape() {
        let mut b = OnnxBuilder::new(13);
        b.input("x", &[1, 2, 3]);
        let shape = b.initializer_i64("shape", &[2], &[3, 2]);
        b.node("Reshape", &["x", &shape], &["y"], vec![]);
        b.output("y", &[3, 2]);
        let x = tract_ndarray::Array3::from_shape_vec((1, 2, 3), vec![0f32, 1., 2., 3., 4., 5.])
            .unwrap();
        let y = run(&b.to_bytes(), x.into_tensor()).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(
            y.iter().copied().collect::<Vec<f32>>(),
            [0., 1., 2., 3., 4., 5.]
        );
    }

    /// Builds the real-size torchvision VGG16 (138M parameters); slow and
    /// needs ~1.2 GB of RAM, hence ignored by default.
    #[test]
    #[ignore]
    fn full_vgg16_size() {
        let b = vgg16(&VggSpec::full(VggStyle::Torchvision));
        assert_eq!(b.num_params(), 138_357_544);
        let len = b.encoded_len();
        let floats = 138_357_544 * 4;
        assert!(len > floats && len < floats + 100_000, "{len}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vgg16.onnx");
        b.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, len);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), len);
        // ~553 MB, like the real torchvision export.
        assert!((550_000_000..560_000_000).contains(&bytes.len()));
    }
}
