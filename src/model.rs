//! Loading an ONNX classifier: tract for the forward pass (keeping the
//! activations the backward pass needs), the relevance graph for the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use ndarray::ArrayD;
use tract_onnx::prelude::*;

use crate::canon::canonize;
use crate::forward::NativePlan;
use crate::graph::Graph;
use crate::onnx::build_graph;
use crate::preprocess::Layout;
use crate::weights::WeightCache;

/// Name of the bundled model (EfficientNet-Lite0, ImageNet), the default.
pub const BUNDLED_NAME: &str = "efficientnet-lite0";

/// The bundled model's ONNX file, compiled into the binary.
pub static BUNDLED_MODEL: &[u8] = include_bytes!("../models/efficientnet-lite0.onnx");

/// Spatial size used where the model leaves it symbolic.
pub const DEFAULT_SIZE: usize = 224;

/// What the model expects as input.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Tensor name.
    pub name: String,
    /// Concrete shape fed to the model (batch 1).
    pub shape: Vec<usize>,
    /// NCHW or NHWC.
    pub layout: Layout,
    /// Colour channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Whether a dimension was symbolic and fixed by us.
    pub fixed_dims: bool,
}

/// A loaded ONNX image classifier.
pub struct Model {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The relevance graph (canonized).
    pub graph: Graph,
    /// The input it expects.
    pub input: InputSpec,
    /// Number of classes.
    pub classes: usize,
    /// Modified weights of the layers, reused across images.
    pub weights: WeightCache,
    /// Notes on how the model was read, one line each (printed by the
    /// command as `note: ...`).
    pub notes: Vec<String>,
    native: Option<NativePlan>,
    tract_reason: String,
    plan: Option<Arc<TypedRunnableModel>>,
    /// Names of the plan outputs: the logits first, then the activations.
    outputs: Vec<String>,
}

/// The result of a forward pass: logits and every activation the backward pass reads.
pub struct Forward {
    /// The model input.
    pub input: ArrayD<f32>,
    /// Logits (pre-softmax scores), flattened.
    pub logits: Vec<f32>,
    /// The logits tensor with its shape.
    pub logits_tensor: ArrayD<f32>,
    /// Activations by tensor name.
    pub activations: HashMap<String, ArrayD<f32>>,
}

impl Forward {
    /// The activation called `name` (the model input included).
    pub fn get(&self, graph: &Graph, name: &str) -> Result<&ArrayD<f32>> {
        if name == graph.input {
            return Ok(&self.input);
        }
        self.activations
            .get(name)
            .ok_or_else(|| anyhow!("activation '{name}' was not kept by the forward pass"))
    }

    /// Indices of the `k` highest logits with their softmax probabilities.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let probs = softmax(&self.logits);
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| self.logits[b].total_cmp(&self.logits[a]));
        idx.into_iter().take(k).map(|i| (i, probs[i])).collect()
    }
}

/// Softmax of a vector (max-subtracted, so never overflows).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Dims as `[1, 3, ?, ?]` (`?` where symbolic).
fn show_dims(d: &[Option<usize>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|v| v.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn input_spec(graph: &Graph, size: Option<[usize; 2]>) -> Result<InputSpec> {
    let d = &graph.input_dims;
    ensure!(
        d.len() == 4,
        "not an image classifier: input '{}' has rank {} (expected 4: [N,C,H,W] or [N,H,W,C])",
        graph.input,
        d.len()
    );
    let is_ch = |v: Option<usize>| matches!(v, Some(1) | Some(3));
    let (layout, channels, h, w) = if is_ch(d[1]) || (d[1].is_none() && !is_ch(d[3])) {
        (Layout::Nchw, d[1].unwrap_or(3), d[2], d[3])
    } else if is_ch(d[3]) {
        (Layout::Nhwc, d[3].unwrap_or(3), d[1], d[2])
    } else {
        bail!(
            "not an image classifier: input '{}' has shape {}, with neither 1 nor 3 channels",
            graph.input,
            show_dims(d)
        );
    };
    ensure!(
        d[0].is_none_or(|n| n == 1),
        "input '{}' has a fixed batch of {}; only 1 is supported",
        graph.input,
        d[0].unwrap_or_default()
    );
    let [sh, sw] = size.unwrap_or([DEFAULT_SIZE; 2]);
    if let (Some([want_h, want_w]), Some(fh), Some(fw)) = (size, h, w) {
        ensure!(
            [want_h, want_w] == [fh, fw],
            "input size {want_h}x{want_w} asked for, but input '{}' is fixed to {fh}x{fw}",
            graph.input
        );
    }
    let (height, width) = (h.unwrap_or(sh), w.unwrap_or(sw));
    let shape = match layout {
        Layout::Nchw => vec![1, channels, height, width],
        Layout::Nhwc => vec![1, height, width, channels],
    };
    Ok(InputSpec {
        name: graph.input.clone(),
        shape,
        layout,
        channels,
        height,
        width,
        fixed_dims: d.iter().any(|v| v.is_none()),
    })
}

/// Activations by tensor name.
type Activations = HashMap<String, ArrayD<f32>>;

/// Which engine runs the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The graph-native pass ([`crate::forward`]) where every operator has
    /// one, tract otherwise.
    #[default]
    Auto,
    /// Always tract (a cross-check of the native pass).
    Tract,
}

/// A float tensor stored inline as raw little-endian bytes, read with a
/// single copy (tract's loader makes three of a 400 MB dense layer); `None`
/// for every other storage, which tract's loader handles.
fn raw_f32(t: &tract_onnx::pb::TensorProto) -> Option<Result<ArrayD<f32>>> {
    use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
    let inline =
        t.data_location != Some(DataLocation::External as i32) && t.external_data.is_empty();
    if t.data_type != DataType::Float as i32 || !inline || t.raw_data.is_empty() {
        return None;
    }
    let dims: Option<Vec<usize>> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    let Some(dims) = dims else {
        return Some(Err(anyhow!("tensor '{}' has a negative dimension", t.name)));
    };
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count.and_then(|c| c.checked_mul(4)) != Some(t.raw_data.len()) {
        return Some(Err(anyhow!(
            "tensor '{}' of shape {dims:?} has {} bytes of data",
            t.name,
            t.raw_data.len()
        )));
    }
    let data: Vec<f32> = t
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(ArrayD::from_shape_vec(dims, data).map_err(Into::into))
}

/// Replaces, in every shape the file declares (graph outputs and the
/// `value_info` hints that shape inference tools write), the symbolic
/// dimensions of the image input (`batch`, `height`...) by the values fixed
/// for this run: tract would otherwise refuse to unify `batch` with 1.
fn pin_symbolic_dims(proto: &mut tract_onnx::pb::ModelProto, input: &InputSpec) {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let Some(g) = proto.graph.as_mut() else {
        return;
    };
    fn dims_of(
        v: &mut tract_onnx::pb::ValueInfoProto,
    ) -> Option<&mut Vec<tract_onnx::pb::tensor_shape_proto::Dimension>> {
        match v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => {
                t.shape.as_mut().map(|s| &mut s.dim)
            }
            _ => None,
        }
    }
    let mut pinned: HashMap<String, i64> = HashMap::new();
    if let Some(v) = g.input.iter_mut().find(|v| v.name == input.name) {
        if let Some(dims) = dims_of(v) {
            for (d, &n) in dims.iter().zip(&input.shape) {
                if let Some(Value::DimParam(p)) = &d.value {
                    pinned.insert(p.clone(), n as i64);
                }
            }
        }
    }
    if pinned.is_empty() {
        return;
    }
    for v in g.output.iter_mut().chain(g.value_info.iter_mut()) {
        for d in dims_of(v).into_iter().flatten() {
            let fixed = match &d.value {
                Some(Value::DimParam(p)) => pinned.get(p.as_str()).copied(),
                _ => None,
            };
            if let Some(n) = fixed {
                d.value = Some(Value::DimValue(n));
            }
        }
    }
}

/// Decodes the protobuf of an ONNX file.
fn decode(bytes: &[u8], path: &Path) -> Result<tract_onnx::pb::ModelProto> {
    ensure!(!bytes.is_empty(), "model {} is empty", path.display());
    // prost straight from the bytes: tract's reader would copy them first
    <tract_onnx::pb::ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{} is not a valid ONNX model", path.display()))
}

/// The optimised tract plan returning `outputs` (logits first).
fn tract_plan(
    onnx: &tract_onnx::Onnx,
    proto: &tract_onnx::pb::ModelProto,
    dir: Option<&str>,
    outputs: &[String],
    input: &InputSpec,
    path: &Path,
) -> Result<Arc<TypedRunnableModel>> {
    let parsed = crate::guard::third_party("tract", || {
        onnx.parse(proto, dir).map_err(|e| anyhow!("{e:#}"))
    })
    .with_context(|| format!("tract cannot load model {}", path.display()))?;
    let outlets = outputs
        .iter()
        .map(|n| {
            parsed
                .outlets_by_name
                .get(n)
                .copied()
                .ok_or_else(|| anyhow!("tensor '{n}' not found in the tract model"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut model = parsed.model;
    let prepare = || -> TractResult<_> {
        model.set_input_fact(0, f32::fact(&input.shape).into())?;
        model.select_output_outlets(&outlets)?;
        let options = tract_onnx::prelude::RunOptions {
            executor: Some(tract_linalg::multithread::Executor::RayonGlobal),
            ..Default::default()
        };
        // the memory check comes before optimisation, which allocates
        // in proportion to the image size
        let typed = model.into_typed()?;
        crate::model_check::check_forward_memory(&typed, &input.shape)?;
        typed.into_optimized()?.into_runnable_with_options(&options)
    };
    crate::guard::third_party("tract", || prepare().map_err(|e| anyhow!("{e:#}"))).with_context(
        || {
            format!(
                "tract cannot prepare model {} for input {:?}",
                path.display(),
                input.shape
            )
        },
    )
}

impl Model {
    /// Loads and prepares an ONNX model file, or the bundled model when `path`
    /// is [`BUNDLED_NAME`] and no such file exists.
    pub fn load(path: &Path) -> Result<Model> {
        Model::load_with(path, None, Engine::Auto)
    }

    /// [`Model::load`] with symbolic height and width fixed to `size`
    /// (`[H, W]`; [`DEFAULT_SIZE`] when `None`).
    pub fn load_sized(path: &Path, size: Option<[usize; 2]>) -> Result<Model> {
        Model::load_with(path, size, Engine::Auto)
    }

    /// [`Model::load_sized`] with a choice of forward engine.
    pub fn load_with(path: &Path, size: Option<[usize; 2]>, engine: Engine) -> Result<Model> {
        if path == Path::new(BUNDLED_NAME) && !path.exists() {
            return Model::from_bytes_with(BUNDLED_MODEL, path, None, size, engine);
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
        let dir = path
            .parent()
            .and_then(|p| p.to_str())
            .map(|s| if s.is_empty() { "." } else { s });
        let proto = decode(&bytes, path)?;
        // the file's bytes are not needed once decoded: one copy of the weights less
        drop(bytes);
        Model::from_proto(proto, path, dir, size, engine)
    }

    /// Prepares a model from the bytes of an ONNX file; `path` names it in
    /// messages, `dir` is where external data files are looked up.
    pub fn from_bytes(bytes: &[u8], path: &Path, dir: Option<&str>) -> Result<Model> {
        Model::from_bytes_with(bytes, path, dir, None, Engine::Auto)
    }

    /// [`Model::from_bytes`] with symbolic height and width fixed to `size`.
    pub fn from_bytes_sized(
        bytes: &[u8],
        path: &Path,
        dir: Option<&str>,
        size: Option<[usize; 2]>,
    ) -> Result<Model> {
        Model::from_bytes_with(bytes, path, dir, size, Engine::Auto)
    }

    /// [`Model::from_bytes_sized`] with a choice of forward engine.
    pub fn from_bytes_with(
        bytes: &[u8],
        path: &Path,
        dir: Option<&str>,
        size: Option<[usize; 2]>,
        engine: Engine,
    ) -> Result<Model> {
        let proto = decode(bytes, path)?;
        Model::from_proto(proto, path, dir, size, engine)
    }

    /// Which engine runs the forward pass: `native`, or `tract` with the reason.
    pub fn engine(&self) -> String {
        match &self.native {
            Some(_) => "native".to_string(),
            None => format!("tract ({})", self.tract_reason),
        }
    }

    fn from_proto(
        mut proto: tract_onnx::pb::ModelProto,
        path: &Path,
        dir: Option<&str>,
        size: Option<[usize; 2]>,
        engine: Engine,
    ) -> Result<Model> {
        crate::model_check::check_tensors(&proto, dir.map(Path::new))
            .with_context(|| format!("model {}", path.display()))?;
        let folded = crate::onnx::fold::fold_constants(&mut proto, dir)
            .with_context(|| format!("model {}", path.display()))?;
        let onnx = tract_onnx::onnx();
        let provider = onnx.provider.clone();
        let load = |t: &tract_onnx::pb::TensorProto| -> Result<ArrayD<f32>> {
            if let Some(a) = raw_f32(t) {
                return a;
            }
            let t = tract_onnx::tensor::load_tensor(&*provider, t, dir)
                .map_err(|e| anyhow!("{e:#}"))?;
            let t = t.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?.into_owned();
            t.into_plain_array::<f32>().map_err(|e| anyhow!("{e}"))
        };
        let mut graph =
            build_graph(&proto, &load).with_context(|| format!("model {}", path.display()))?;
        let mut notes = Vec::new();
        let fake_quantized = crate::onnx::fold::fake_quantized(&graph.nodes);
        if fake_quantized {
            notes.push(
                "the model fake-quantizes its activations (QuantizeLinear -> DequantizeLinear): \
                 the forward pass runs in tract, relevance and gradients pass them unchanged"
                    .to_string(),
            );
        }
        if folded.op_types.iter().any(|o| o == "DequantizeLinear") {
            notes.push(
                "the model's weights are quantized: the dequantized float weights are explained"
                    .to_string(),
            );
        }
        canonize(&mut graph)?;
        let input =
            input_spec(&graph, size).with_context(|| format!("model {}", path.display()))?;

        let native = match engine {
            Engine::Auto if fake_quantized => Err(anyhow!(
                "fake-quantized activations (QuantizeLinear/DequantizeLinear)"
            )),
            Engine::Auto => NativePlan::new(&proto, &graph),
            Engine::Tract => Err(anyhow!("asked for")),
        };
        let (native, tract_reason) = match native {
            Ok(plan) => {
                let bytes = plan
                    .forward_bytes(&graph, &input.shape)
                    .with_context(|| format!("model {}", path.display()))?;
                ensure!(
                    bytes <= crate::model_check::MAX_FORWARD_BYTES,
                    "model {}: one forward pass at input {:?} needs about {:.0} GB for its tensors, more than the {:.0} GB allowed",
                    path.display(),
                    input.shape,
                    bytes as f64 / 1e9,
                    crate::model_check::MAX_FORWARD_BYTES as f64 / 1e9
                );
                (Some(plan), String::new())
            }
            Err(e) => (None, format!("{e:#}")),
        };
        let mut outputs = vec![graph.logits.clone()];
        outputs.extend(graph.needed_activations());
        let plan = match native {
            Some(_) => None,
            None => {
                pin_symbolic_dims(&mut proto, &input);
                Some(tract_plan(&onnx, &proto, dir, &outputs, &input, path)?)
            }
        };
        drop(proto);

        let mut m = Model {
            path: path.to_path_buf(),
            graph,
            input,
            classes: 0,
            weights: WeightCache::new(),
            notes,
            native,
            tract_reason,
            plan,
            outputs,
        };
        let probe = m
            .forward(ArrayD::zeros(m.input.shape.clone()))
            .with_context(|| format!("model {}", path.display()))?;
        m.classes = probe.logits.len();
        ensure!(
            m.classes >= 2
                && probe
                    .logits_tensor
                    .shape()
                    .iter()
                    .filter(|&&d| d > 1)
                    .count()
                    == 1,
            "model {}: output '{}' of shape {:?} is not a vector of class scores",
            path.display(),
            m.graph.logits,
            probe.logits_tensor.shape()
        );
        Ok(m)
    }

    /// The forward pass in tract: logits and activations.
    fn tract_forward(
        &self,
        plan: &Arc<TypedRunnableModel>,
        input: &ArrayD<f32>,
    ) -> Result<(Option<ArrayD<f32>>, Activations)> {
        let t: Tensor = input.clone().into();
        let outs = crate::guard::third_party("tract", || {
            plan.run(tvec!(t.into_tvalue()))
                .map_err(|e| anyhow!("{e:#}"))
        })
        .context("forward pass")?;
        let mut activations = HashMap::new();
        let mut logits_tensor = None;
        for (name, v) in self.outputs.iter().zip(outs) {
            let t = v.into_tensor();
            let t = if t.datum_type() == f32::datum_type() {
                t
            } else {
                t.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?.into_owned()
            };
            let a = t.into_plain_array::<f32>().map_err(|e| anyhow!("{e}"))?;
            if logits_tensor.is_none() {
                logits_tensor = Some(a);
            } else {
                activations.insert(name.clone(), a);
            }
        }
        Ok((logits_tensor, activations))
    }

    /// Runs the model on `input` (of shape `self.input.shape`), keeping the activations.
    pub fn forward(&self, input: ArrayD<f32>) -> Result<Forward> {
        ensure!(
            input.shape() == self.input.shape,
            "input of shape {:?}, the model expects {:?}",
            input.shape(),
            self.input.shape
        );
        let (logits_tensor, activations) = match (&self.native, &self.plan) {
            (Some(native), _) => {
                let out = native.run(&self.graph, &input).context("forward pass")?;
                (Some(out.logits), out.activations)
            }
            (None, Some(plan)) => self.tract_forward(plan, &input)?,
            (None, None) => bail!("the model has no forward engine"),
        };
        let logits_tensor =
            logits_tensor.ok_or_else(|| anyhow!("the forward pass returned nothing"))?;
        let logits: Vec<f32> = logits_tensor.iter().copied().collect();
        ensure!(
            logits.iter().all(|v| v.is_finite()),
            "the model produced non-finite logits"
        );
        Ok(Forward {
            input,
            logits,
            logits_tensor,
            activations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension::Value, Dimension},
        type_proto, GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    fn info(name: &str, dims: &[Value]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|v| Dimension {
                                value: Some(v.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn symbolic_dims_of_the_input_are_pinned_in_every_declared_shape() {
        // as onnxruntime's quant_pre_process writes them: value_info hints
        // with the input's symbolic batch
        let sym = |s: &str| Value::DimParam(s.into());
        let mut proto = ModelProto {
            graph: Some(GraphProto {
                input: vec![info(
                    "x",
                    &[sym("batch"), Value::DimValue(3), sym("h"), sym("w")],
                )],
                output: vec![info("y", &[sym("batch"), Value::DimValue(10)])],
                value_info: vec![info("t", &[sym("batch"), sym("other"), sym("h")])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let input = InputSpec {
            name: "x".into(),
            shape: vec![1, 3, 32, 48],
            layout: Layout::Nchw,
            channels: 3,
            height: 32,
            width: 48,
            fixed_dims: true,
        };
        pin_symbolic_dims(&mut proto, &input);
        let g = proto.graph.unwrap();
        let dims = |v: &ValueInfoProto| -> Vec<Value> {
            let type_proto::Value::TensorType(t) =
                v.r#type.as_ref().unwrap().value.as_ref().unwrap();
            let shape = t.shape.as_ref().unwrap();
            shape.dim.iter().map(|d| d.value.clone().unwrap()).collect()
        };
        assert_eq!(
            dims(&g.output[0]),
            [Value::DimValue(1), Value::DimValue(10)]
        );
        // a symbol the input does not have stays symbolic
        assert_eq!(
            dims(&g.value_info[0]),
            [Value::DimValue(1), sym("other"), Value::DimValue(32)]
        );
    }
}
