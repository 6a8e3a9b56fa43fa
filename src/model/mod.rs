//! Loading an ONNX classifier: tract for the forward pass (keeping the
//! activations the backward pass needs), the relevance graph for the rest.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ndarray::ArrayD;

use crate::engine::native::NativePlan;
use crate::engine::tract::{pin_symbolic_dims, TractPlan};
use crate::engine::{Backend, MAX_FORWARD_BYTES};
use crate::graph::Graph;
use crate::preprocess::{to_tensor, Layout, Normalization};
use crate::rules::cache::WeightCache;
use canon::canonize;
use image::RgbImage;
use onnx::build_graph;

pub use crate::engine::{softmax, Engine, Forward};

pub(crate) mod canon;
pub(crate) mod limits;
pub(crate) mod onnx;
pub use onnx::fused_nodes;

/// Name of the bundled model (EfficientNet-Lite0, ImageNet), the default.
pub const BUNDLED_NAME: &str = "efficientnet-lite0";

/// The bundled model's ONNX file, compiled into the binary (feature
/// `bundled`, a default one: without it [`BUNDLED_NAME`] is a file name
/// like any other).
#[cfg(feature = "bundled")]
pub static BUNDLED_MODEL: &[u8] = include_bytes!("../../models/efficientnet-lite0.onnx");

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
    backend: Backend,
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

/// A loader of ONNX tensors as f32 values (external data read from the
/// folder `dir`).
pub fn tensor_loader(
    dir: Option<&str>,
) -> impl Fn(&tract_onnx::pb::TensorProto) -> Result<ArrayD<f32>> + '_ {
    loader_with(&tract_onnx::onnx(), dir)
}

/// [`tensor_loader`] with the resource provider of `onnx` (made once per
/// model load).
fn loader_with<'d>(
    onnx: &tract_onnx::Onnx,
    dir: Option<&'d str>,
) -> impl Fn(&tract_onnx::pb::TensorProto) -> Result<ArrayD<f32>> + 'd {
    let provider = onnx.provider.clone();
    move |t| {
        if let Some(a) = raw_f32(t) {
            return a;
        }
        let t =
            tract_onnx::tensor::load_tensor(&*provider, t, dir).map_err(|e| anyhow!("{e:#}"))?;
        let t = t.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?.into_owned();
        t.into_plain_array::<f32>().map_err(|e| anyhow!("{e}"))
    }
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

/// Decodes the protobuf of an ONNX file.
fn decode(bytes: &[u8], path: &Path) -> Result<tract_onnx::pb::ModelProto> {
    ensure!(!bytes.is_empty(), "model {} is empty", path.display());
    // prost straight from the bytes: tract's reader would copy them first
    <tract_onnx::pb::ModelProto as prost::Message>::decode(bytes)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{} is not a valid ONNX model", path.display()))
}

/// A failure to load the model at `path` as the library's error: the
/// importer's [`crate::Error::Unsupported`] (operator and node) with the
/// whole chain as its message, else [`crate::Error::Model`].
fn load_error(path: &Path, e: anyhow::Error) -> crate::Error {
    let message = format!("{e:#}");
    match crate::Error::find(&e) {
        Some(crate::Error::Unsupported { op_type, node, .. }) => crate::Error::Unsupported {
            op_type: op_type.clone(),
            node: node.clone(),
            message,
        },
        _ => crate::Error::Model {
            path: path.to_path_buf(),
            message,
        },
    }
}

/// How [`Model::options`] loads a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Height and width for symbolic input dims (`None`: [`DEFAULT_SIZE`]);
    /// a model with fixed dims must be asked for those.
    pub size: Option<[usize; 2]>,
    /// Which engine runs the forward pass.
    pub engine: Engine,
}

impl LoadOptions {
    /// Symbolic input height and width become `[height, width]`.
    pub fn input_size(mut self, hw: [usize; 2]) -> Self {
        self.size = Some(hw);
        self
    }

    /// The forward engine ([`Engine::Auto`]: native where it can).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Loads and prepares the ONNX file at `path` (or the bundled model, see
    /// [`Model::load`]).
    pub fn load(&self, path: impl AsRef<Path>) -> crate::Result<Model> {
        let path = path.as_ref();
        Model::load_file(path, self).map_err(|e| load_error(path, e))
    }

    /// Prepares a model from the bytes of an ONNX file; `path` names it in
    /// messages, `dir` is where external data files are looked up (`None`:
    /// nowhere).
    pub fn from_bytes(&self, bytes: &[u8], path: &Path, dir: Option<&str>) -> crate::Result<Model> {
        decode(bytes, path)
            .and_then(|proto| Model::from_proto(proto, path, dir, self))
            .map_err(|e| load_error(path, e))
    }
}

/// What a lean forward pass keeps ([`Model::forward_lean`]).
#[derive(Clone, Copy)]
pub struct Lean<'a> {
    /// Whether the rule of a linear layer reuses its output `z = W x + b`.
    pub reuses: &'a dyn Fn(&crate::graph::Node) -> bool,
    /// Tensors kept whatever the rules (probed layers).
    pub keep: &'a [&'a str],
}

impl Model {
    /// Loads and prepares an ONNX model file, or the bundled model when `path`
    /// is [`BUNDLED_NAME`] and no such file exists.
    ///
    /// Symbolic input height and width become [`DEFAULT_SIZE`]
    /// ([`Model::options`] chooses them, and the forward engine, which is
    /// chosen automatically by default). A file that cannot be read or
    /// prepared is [`crate::Error::Model`], one with an operator the
    /// relevance graph does not handle [`crate::Error::Unsupported`].
    ///
    /// ```
    /// let model = lrp_heatmap::Model::load("efficientnet-lite0")?; // bundled
    /// assert_eq!((model.classes, model.input.shape.as_slice()), (1000, &[1, 3, 224, 224][..]));
    /// # Ok::<(), lrp_heatmap::Error>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> crate::Result<Model> {
        LoadOptions::default().load(path)
    }

    /// How to load: input size for symbolic dims, forward engine.
    ///
    /// ```
    /// use lrp_heatmap::model::{Engine, Model};
    /// let model = Model::options().engine(Engine::Tract).load("efficientnet-lite0")?;
    /// assert_eq!(model.engine(), "tract (asked for)");
    /// // the bundled model's input is fixed: another size is refused
    /// let e = Model::options().input_size([160, 128]).load("efficientnet-lite0").err().unwrap();
    /// assert!(e.to_string().contains("fixed to 224x224"), "{e}");
    /// # Ok::<(), lrp_heatmap::Error>(())
    /// ```
    pub fn options() -> LoadOptions {
        LoadOptions::default()
    }

    fn load_file(path: &Path, opts: &LoadOptions) -> Result<Model> {
        #[cfg(feature = "bundled")]
        if path == Path::new(BUNDLED_NAME) && !path.exists() {
            let proto = decode(BUNDLED_MODEL, path)?;
            return Model::from_proto(proto, path, None, opts);
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
        Model::from_proto(proto, path, dir, opts)
    }

    /// Which engine runs the forward pass: `native`, or `tract` with the reason.
    pub fn engine(&self) -> String {
        self.backend.describe()
    }

    fn from_proto(
        mut proto: tract_onnx::pb::ModelProto,
        path: &Path,
        dir: Option<&str>,
        opts: &LoadOptions,
    ) -> Result<Model> {
        let (size, engine) = (opts.size, opts.engine);
        limits::check_tensors(&proto, dir.map(Path::new))
            .with_context(|| format!("model {}", path.display()))?;
        let folded = onnx::fold::fold_constants(&mut proto, dir)
            .with_context(|| format!("model {}", path.display()))?;
        let onnx = tract_onnx::onnx();
        let load = loader_with(&onnx, dir);
        let mut graph =
            build_graph(&proto, &load).with_context(|| format!("model {}", path.display()))?;
        let mut notes = Vec::new();
        let fake_quantized = onnx::fold::fake_quantized(&graph.nodes);
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
            Engine::Auto => NativePlan::new(&graph),
            Engine::Tract => Err(anyhow!("asked for")),
        };
        let backend = match native {
            Ok(plan) => {
                let bytes = plan
                    .forward_bytes(&graph, &input.shape)
                    .with_context(|| format!("model {}", path.display()))?;
                ensure!(
                    bytes <= MAX_FORWARD_BYTES,
                    "model {}: one forward pass at input {:?} needs about {:.0} GB for its tensors, more than the {:.0} GB allowed",
                    path.display(),
                    input.shape,
                    bytes as f64 / 1e9,
                    MAX_FORWARD_BYTES as f64 / 1e9
                );
                Backend::Native(plan)
            }
            Err(e) => {
                let mut outputs = vec![graph.logits.clone()];
                outputs.extend(graph.needed_activations());
                pin_symbolic_dims(&mut proto, &input.name, &input.shape);
                let plan = TractPlan::new(&onnx, &proto, dir, outputs, &input.shape, path)?;
                Backend::Tract {
                    plan,
                    reason: format!("{e:#}"),
                }
            }
        };
        drop(proto);

        // one run on zeros: the number of classes, and a model that fails
        // fails here, at load time
        let probe = backend
            .run_keeping(&graph, ArrayD::zeros(input.shape.clone()), None, false)
            .with_context(|| format!("model {}", path.display()))?;
        let classes = probe.logits.len();
        ensure!(
            classes >= 2
                && probe
                    .logits_tensor
                    .shape()
                    .iter()
                    .filter(|&&d| d > 1)
                    .count()
                    == 1,
            "model {}: output '{}' of shape {:?} is not a vector of class scores",
            path.display(),
            graph.logits,
            probe.logits_tensor.shape()
        );
        Ok(Model {
            path: path.to_path_buf(),
            graph,
            input,
            classes,
            weights: WeightCache::new(),
            notes,
            backend,
        })
    }

    /// The input tensor of `img`: resized to the model's input size, in its
    /// layout and channels, normalised with `norm` ([`to_tensor`]).
    pub fn tensor(&self, img: &RgbImage, norm: &Normalization) -> Result<ArrayD<f32>> {
        let s = &self.input;
        to_tensor(img, s.height, s.width, s.channels, s.layout, norm)
    }

    /// The same model with another relevance graph of the same structure
    /// (the randomisation check replaces weights): native engine only, as
    /// tract's plan holds the file's weights.
    pub fn with_graph(&self, graph: Graph) -> crate::Result<Model> {
        let model_error = |message: String| crate::Error::Model {
            path: self.path.clone(),
            message,
        };
        if !matches!(self.backend, Backend::Native(_)) {
            return Err(model_error(format!(
                "model {}: changing its weights needs the native engine, and it runs on {}",
                self.path.display(),
                self.backend.describe()
            )));
        }
        let plan = NativePlan::new(&graph).map_err(|e| model_error(format!("{e:#}")))?;
        Ok(Model {
            path: self.path.clone(),
            graph,
            input: self.input.clone(),
            classes: self.classes,
            weights: WeightCache::new(),
            notes: self.notes.clone(),
            backend: Backend::Native(plan),
        })
    }

    /// The logits of each input (each of shape `self.input.shape`): on the
    /// native engine in batches of `batch` stacked inputs, one pass each
    /// keeping no activation (one by one where an operator cannot take a
    /// batch); on tract one forward pass per input. The numbers are those of [`Model::forward`]
    /// up to float rounding (tested).
    pub fn logits_of(&self, inputs: &[ArrayD<f32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        let Backend::Native(_) = &self.backend else {
            return inputs
                .par_iter()
                .map(|x| Ok(self.forward(x.clone())?.logits))
                .collect();
        };
        if let Some(x) = inputs.iter().find(|x| x.shape() != self.input.shape) {
            anyhow::bail!(
                "input of shape {:?}, the model expects {:?}",
                x.shape(),
                self.input.shape
            );
        }
        // one input through the plain pass, keeping no activation (freed as
        // it goes, activations in place)
        let one = |x: &ArrayD<f32>| -> Result<Vec<f32>> {
            let l = NativePlan::logits_batch(&self.graph, x)?;
            let l: Vec<f32> = l.iter().copied().collect();
            ensure!(
                l.iter().all(|v| v.is_finite()),
                "the model produced non-finite logits"
            );
            Ok(l)
        };
        let batch = batch.max(1);
        if batch == 1 {
            return inputs.par_iter().map(one).collect();
        }
        let rows = |chunk: &[ArrayD<f32>]| -> Result<Vec<Vec<f32>>> {
            let views: Vec<_> = chunk.iter().map(|x| x.view()).collect();
            let stacked = ndarray::concatenate(ndarray::Axis(0), &views)?;
            match NativePlan::logits_batch(&self.graph, &stacked) {
                Ok(l) if l.shape().first() == Some(&chunk.len()) => {
                    let l = l.into_shape_with_order((chunk.len(), self.classes))?;
                    let rows: Vec<Vec<f32>> = l.outer_iter().map(|r| r.to_vec()).collect();
                    ensure!(
                        rows.iter().flatten().all(|v| v.is_finite()),
                        "the model produced non-finite logits"
                    );
                    Ok(rows)
                }
                // not batchable: one by one
                _ => chunk.iter().map(one).collect(),
            }
        };
        let parts: Vec<Vec<Vec<f32>>> =
            inputs.par_chunks(batch).map(rows).collect::<Result<_>>()?;
        let out: Vec<Vec<f32>> = parts.into_iter().flatten().collect();
        // an operator that runs a batch without error but mixes its samples
        // (an axis-0 gather, say) would give other numbers: the first input
        // is checked against its own pass, and any difference runs them all
        // one by one
        if let (Some(x), Some(got)) = (inputs.first(), out.first()) {
            let want = one(x)?;
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            let off = want
                .iter()
                .zip(got)
                .any(|(a, b)| (a - b).abs() > 1e-4 * scale);
            if off || got.len() != want.len() {
                return inputs.par_iter().map(one).collect();
            }
        }
        Ok(out)
    }

    /// Runs the model on `input` (of shape `self.input.shape`), keeping the activations.
    pub fn forward(&self, input: ArrayD<f32>) -> Result<Forward> {
        self.forward_lean(input, None, false)
    }

    /// Why inputs stacked on axis 0 cannot be explained in one pass
    /// ([`Model::forward_batch`]), or `None` if they can: the native engine
    /// runs the model and every operator keeps the samples apart.
    pub fn batch_blocker(&self) -> Option<String> {
        match &self.backend {
            Backend::Native(plan) => plan.batch_blocker(&self.graph, &self.input.shape),
            Backend::Tract { .. } => Some("the forward pass runs in tract".to_string()),
        }
    }

    /// Bytes of the weights of the linear layers (what one pass reads
    /// whatever the number of inputs).
    pub fn weight_bytes(&self) -> u64 {
        let values: usize = (self.graph.nodes.iter())
            .filter_map(|n| n.op.linear())
            .map(|l| l.weight().len())
            .sum();
        4 * values as u64
    }

    /// Bytes of the activations one input keeps for the backward pass
    /// (the size of a batch is chosen from it).
    pub fn kept_bytes_per_input(&self) -> u64 {
        match &self.backend {
            Backend::Native(plan) => plan
                .kept_bytes(&self.graph, &self.input.shape)
                .unwrap_or(u64::MAX),
            Backend::Tract { .. } => u64::MAX,
        }
    }

    /// [`Model::forward`] on `n` inputs stacked on axis 0 (`[n, ...]`, each
    /// of the model's input shape but for axis 0) in one pass. An error where
    /// the model cannot take a batch ([`Model::batch_blocker`]).
    pub fn forward_batch(&self, input: ArrayD<f32>) -> Result<Forward> {
        self.forward_lean(input, None, true)
    }

    /// [`Model::forward`] keeping only the activations of
    /// [`Graph::lean_activations`]`(reuses, keep)` when `lean` holds them
    /// (`None`: all), on a batch stacked on axis 0 if `batch`
    /// ([`Model::forward_batch`]). A backward pass on it must not read
    /// what it dropped: the inputs of ReLU and Clip nodes (the walk reads
    /// their output instead) and the outputs of linear layers whose rule
    /// does not reuse them.
    pub fn forward_lean(
        &self,
        input: ArrayD<f32>,
        lean: Option<Lean>,
        batch: bool,
    ) -> Result<Forward> {
        let one = &self.input.shape;
        if batch {
            ensure!(
                input.ndim() == one.len() && input.shape()[1..] == one[1..],
                "a batch of shape {:?} for a model input of shape {one:?}",
                input.shape()
            );
            if let Some(why) = self.batch_blocker() {
                anyhow::bail!("the model cannot take a batch: {why}");
            }
        } else {
            ensure!(
                input.shape() == one,
                "input of shape {:?}, the model expects {one:?}",
                input.shape()
            );
        }
        let keep = lean.map(|l| self.graph.lean_activations(l.reuses, l.keep));
        (self.backend).run_keeping(&self.graph, input, keep.as_deref(), batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_operator_is_named_in_the_error() {
        let e = anyhow::Error::new(crate::Error::Unsupported {
            op_type: "LSTM".into(),
            node: "rnn/1".into(),
            message: "unsupported operator 'LSTM' (node 'rnn/1'): inside the network".into(),
        })
        .context("model m.onnx");
        match load_error(Path::new("m.onnx"), e) {
            crate::Error::Unsupported {
                op_type,
                node,
                message,
            } => {
                assert_eq!((op_type.as_str(), node.as_str()), ("LSTM", "rnn/1"));
                assert!(
                    message.starts_with("model m.onnx: unsupported"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let e = anyhow!("not a valid ONNX model");
        assert!(matches!(
            load_error(Path::new("m.onnx"), e),
            crate::Error::Model { path, .. } if path == Path::new("m.onnx")
        ));
    }

    #[test]
    fn a_missing_file_is_a_model_error_naming_it() {
        let e = Model::load("no-such-model.onnx").err().expect("refused");
        assert!(matches!(e, crate::Error::Model { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-model.onnx"), "{e}");
    }
}
