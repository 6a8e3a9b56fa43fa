//! The native part of the Python package `lrp_heatmap`: a thin layer over
//! the library (`lrp_heatmap`), with the same steps as the command's
//! `explain` (decoding, normalisation, forward and backward pass, the
//! `[C, H, W]` layout, rendering, PNG encoding), so that the package's
//! arrays and PNGs are the command's. The Python API (`Model`,
//! `Explanation`, `create_analyzer`) lives in `lrp_heatmap/__init__.py`.
//!
//! Every computation runs with the GIL released (`Python::detach`), on the
//! library's rayon pool; every panic is caught at the boundary
//! (`lrp_heatmap::guard::boundary`) and every error becomes a Python
//! exception naming the Python parameter.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array3, ArrayD, Ix3};
use numpy::{IntoPyArray, PyArray3, PyReadonlyArray3, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use lrp_heatmap::analyzers::lrp::{Channels, Probes};
use lrp_heatmap::analyzers::{Analyzer, AnalyzerParams};
use lrp_heatmap::model::{LoadOptions, Model};
use lrp_heatmap::ops::MaxPoolTies;
use lrp_heatmap::preprocess::{self, DecodeLimits, Normalization};
use lrp_heatmap::render::{self, Cmap, Style};
use lrp_heatmap::Error;

pyo3::create_exception!(
    _lrp_heatmap,
    LrpError,
    PyException,
    "Base class of the package's errors."
);
pyo3::create_exception!(
    _lrp_heatmap,
    ModelError,
    LrpError,
    "A model that cannot be read, decoded, prepared or explained."
);
pyo3::create_exception!(
    _lrp_heatmap,
    ImageError,
    LrpError,
    "An image that cannot be read or decoded."
);

/// The Python parameter behind a library parameter name.
fn py_param(name: &str) -> &str {
    match name {
        "input" => "x",
        "class" => "target",
        "perturb_steps" => "steps",
        "perturb_batch" => "batch",
        other => other,
    }
}

/// A library error as the Python exception of its kind, one line.
fn to_py(e: Error) -> PyErr {
    let one_line = |s: String| s.replace('\n', " ");
    match e {
        Error::InvalidParameter { name, message } => {
            PyValueError::new_err(one_line(format!("{}= {message}", py_param(name))))
        }
        Error::LimitExceeded { name, message } => {
            PyValueError::new_err(one_line(format!("{}= {message}", py_param(name))))
        }
        e @ Error::UnknownAnalyzer { .. } => PyValueError::new_err(one_line(format!("rule= {e}"))),
        e @ Error::ClassOutOfRange { .. } => {
            PyValueError::new_err(one_line(format!("target= {e}")))
        }
        e @ (Error::Model { .. } | Error::Unsupported { .. }) => {
            ModelError::new_err(one_line(e.to_string()))
        }
        e @ Error::Image { .. } => ImageError::new_err(one_line(e.to_string())),
        Error::Other(e) => LrpError::new_err(one_line(format!("{e:#}"))),
        e => LrpError::new_err(one_line(e.to_string())),
    }
}

/// The package's thread pool (`RAYON_NUM_THREADS` threads, default one
/// per core), made on first use.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().build().ok())
        .as_ref()
}

/// `f()` with the GIL released, on a worker of the package's pool, as the
/// command runs (`main.rs`): the many short parallel steps of a pass then
/// start from a worker (work stealing) instead of waking the pool from the
/// Python thread and parking it each time. Two Python threads share the
/// pool.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| match pool() {
        Some(p) => p.install(f),
        None => f(),
    })
}

/// `f()` with a panic turned into an error, the GIL released, on the
/// package's pool.
fn compute<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> lrp_heatmap::Result<T> + Send,
) -> PyResult<T> {
    detached(py, || {
        lrp_heatmap::guard::boundary(what, || f().map_err(anyhow::Error::from))
    })
    .map_err(|e| to_py(Error::from(e)))
}

/// A loaded model.
#[pyclass(frozen, module = "lrp_heatmap._lrp_heatmap")]
struct NativeModel {
    model: Arc<Model>,
    labels: Vec<String>,
}

/// An input as the binding receives it.
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Rgb(image::RgbImage),
    Tensor(ArrayD<f32>),
}

/// What one explanation hands back before it becomes Python objects.
struct Explained {
    relevance: ArrayD<f32>,
    image: Option<image::RgbImage>,
    class: usize,
    logit: f32,
    relevance_sum: f32,
    top5: Vec<(usize, f32)>,
    warnings: Vec<String>,
    ledger: Option<String>,
    layers: Vec<(String, ArrayD<f32>)>,
    /// The `[P, P]` map of the patch tokens of each layer that is a vision
    /// transformer's token tensor.
    tokens: Vec<(String, ndarray::Array2<f32>)>,
}

/// The options of one call of `explain`.
struct Options {
    analyzer: Analyzer,
    probes: Probes,
    class: Option<usize>,
    norm: Normalization,
    limits: DecodeLimits,
}

/// The image (when the input is one) and the model's input tensor.
type Prepared = (Option<image::RgbImage>, ArrayD<f32>);

fn prepare(
    model: &Model,
    norm: &Normalization,
    limits: &DecodeLimits,
    source: Source,
) -> lrp_heatmap::Result<Prepared> {
    let image_err = lrp_heatmap::explainer::image_error;
    Ok(match source {
        Source::Path(p) => {
            let img = preprocess::load_image_with(&p, limits).map_err(|e| image_err(&p, e))?;
            let t = model.tensor(&img, norm)?;
            (Some(img), t)
        }
        Source::Bytes(b) => {
            let img = preprocess::decode_bytes(&b, limits)
                .map_err(|e| image_err(Path::new("<bytes>"), e.context("cannot decode x")))?;
            let t = model.tensor(&img, norm)?;
            (Some(img), t)
        }
        Source::Rgb(img) => {
            let t = model.tensor(&img, norm)?;
            (Some(img), t)
        }
        Source::Tensor(t) => {
            let t = lrp_heatmap::Input::tensor(&t, model, norm, limits)?;
            (None, t)
        }
    })
}

/// One input through the forward and backward pass alone (as the
/// command's `run_one`).
fn explain_source(model: &Model, o: &Options, source: Source) -> lrp_heatmap::Result<Explained> {
    let (image, tensor) = prepare(model, &o.norm, &o.limits, source)?;
    let fwd = o.analyzer.forward(model, tensor, &o.probes, false)?;
    let top5 = fwd.top_k(5);
    let warnings = lrp_heatmap::analyzers::selfcheck::near_tie_warnings(
        model,
        &fwd,
        o.analyzer.maxpool_ties(),
    )
    .unwrap_or_else(|e| vec![format!("near-ties not measured: {e:#}")]);
    let class = o.class.unwrap_or_else(|| top5.first().map_or(0, |t| t.0));
    let e = o
        .analyzer
        .explain_probed(model, &fwd, class, &o.norm, &o.probes)?;
    drop(fwd);
    finish(model, o, image, top5, warnings, e)
}

/// Images per pass for `n` inputs, as the command's default
/// (`Explainer::batch_size` in src/app/commands/explain.rs): 1 for an
/// analyzer or model that takes one image at a time, else while the
/// weights outweigh one image's kept activations, within 512 MiB of
/// activations for the batches in flight, at most 16.
fn batch_size(model: &Model, o: &Options, n: usize) -> usize {
    if !o.analyzer.batches() || o.probes.start.is_some() || model.batch_blocker().is_some() {
        return 1;
    }
    let jobs = rayon::current_num_threads().max(1) as u64;
    let per = model.kept_bytes_per_input().max(1);
    let by_weights = model.weight_bytes() / per;
    let by_memory = (512u64 << 20) / per.saturating_mul(jobs);
    (by_weights.min(by_memory).clamp(1, 16) as usize).min(n.max(1))
}

/// Inputs explained in one forward and backward pass (as the command's
/// `run_batch`): an input that cannot be prepared fails alone; a batch that
/// fails as a whole is run input by input.
fn explain_chunk(
    model: &Model,
    o: &Options,
    sources: Vec<PyResult<Source>>,
) -> Vec<PyResult<Explained>> {
    use rayon::prelude::*;
    let guarded = |f: &dyn Fn() -> lrp_heatmap::Result<Explained>| {
        lrp_heatmap::guard::boundary("x=", || f().map_err(anyhow::Error::from))
            .map_err(|e| to_py(Error::from(e)))
    };
    if sources.len() == 1 {
        return sources
            .into_iter()
            .map(|s| {
                let s = std::sync::Mutex::new(Some(s?));
                guarded(&|| match s.lock().ok().and_then(|mut g| g.take()) {
                    Some(s) => explain_source(model, o, s),
                    None => Err(Error::Other(anyhow::anyhow!("input taken twice"))),
                })
            })
            .collect();
    }
    let prepared: Vec<PyResult<Prepared>> = sources
        .into_par_iter()
        .map(|s| {
            let s = s?;
            lrp_heatmap::guard::boundary("x=", || {
                prepare(model, &o.norm, &o.limits, s).map_err(Into::into)
            })
            .map_err(|e| to_py(Error::from(e)))
        })
        .collect();
    let mut results: Vec<Option<PyResult<Explained>>> = Vec::new();
    let (mut ok, mut images, mut tensors) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Ok((img, t)) => {
                ok.push(i);
                images.push(img);
                tensors.push(t);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let stacked = lrp_heatmap::guard::boundary("a batch", || {
        let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
        let x = ndarray::concatenate(ndarray::Axis(0), &views)?;
        let fwd = o.analyzer.forward(model, x, &o.probes, true)?;
        let rows = fwd.rows();
        anyhow::ensure!(
            rows == tensors.len(),
            "{rows} rows for {} inputs",
            tensors.len()
        );
        let top5: Vec<_> = (0..rows).map(|i| fwd.top_k_row(i, 5)).collect();
        let classes: Vec<usize> = top5
            .iter()
            .map(|t| o.class.unwrap_or_else(|| t.first().map_or(0, |t| t.0)))
            .collect();
        let ties = lrp_heatmap::analyzers::selfcheck::near_tie_warnings_rows(
            model,
            &fwd,
            o.analyzer.maxpool_ties(),
        )
        .unwrap_or_else(|e| vec![vec![format!("near-ties not measured: {e:#}")]; rows]);
        let es = o
            .analyzer
            .explain_rows(model, &fwd, &classes, &o.norm, &o.probes)?;
        Ok((top5, ties, es))
    });
    match stacked {
        Ok((top5, ties, es)) => {
            let done: Vec<PyResult<Explained>> = (images.into_par_iter().zip(top5))
                .zip(ties.into_par_iter().zip(es))
                .map(|((img, t5), (w, e))| finish(model, o, img, t5, w, e).map_err(to_py))
                .collect();
            for (&i, r) in ok.iter().zip(done) {
                results[i] = Some(r);
            }
        }
        Err(_) => {
            // the batch failed as a whole: each input alone says why
            let alone: Vec<PyResult<Explained>> = (images.into_par_iter().zip(tensors))
                .map(|(img, t)| {
                    let src = match img {
                        Some(img) => Source::Rgb(img),
                        None => Source::Tensor(t),
                    };
                    let s = std::sync::Mutex::new(Some(src));
                    guarded(&|| match s.lock().ok().and_then(|mut g| g.take()) {
                        Some(s) => explain_source(model, o, s),
                        None => Err(Error::Other(anyhow::anyhow!("input taken twice"))),
                    })
                })
                .collect();
            for (&i, r) in ok.iter().zip(alone) {
                results[i] = Some(r);
            }
        }
    }
    results.into_iter().flatten().collect()
}

/// An explanation as the binding hands it over: `[C, H, W]`, the concept
/// warning, the ledger as JSON.
fn finish(
    model: &Model,
    o: &Options,
    image: Option<image::RgbImage>,
    top5: Vec<(usize, f32)>,
    mut warnings: Vec<String>,
    e: lrp_heatmap::Explanation,
) -> lrp_heatmap::Result<Explained> {
    warnings.extend(e.warnings.iter().cloned());
    let relevance = preprocess::relevance_chw(&e.relevance, model.input.layout);
    if o.probes.concept.is_some() && relevance.iter().all(|&x| x == 0.0) {
        warnings.push(
            "the concept received no relevance: its heatmap is blank (its channels pass none of the explained logit's relevance here)"
                .to_string(),
        );
    }
    let ledger = match &e.ledger {
        Some(l) => {
            let mut v = serde_json::to_value(l).map_err(anyhow::Error::from)?;
            v["ratio"] = serde_json::json!(l.ratio());
            v["summary"] = serde_json::json!(l.summary());
            Some(v.to_string())
        }
        None => None,
    };
    Ok(Explained {
        relevance,
        image,
        class: e.class,
        logit: e.logit,
        relevance_sum: e.relevance_sum,
        top5,
        warnings,
        ledger,
        tokens: (e.layers.iter())
            .filter_map(|l| Some((l.layer.clone(), l.token_map()?)))
            .collect(),
        layers: e
            .layers
            .into_iter()
            .map(|l| (l.layer, l.relevance))
            .collect(),
    })
}

/// An input object (`kind`, `data`) from Python as a [`Source`].
fn source(kind: &str, data: &Bound<'_, PyAny>) -> PyResult<Source> {
    Ok(match kind {
        "path" => {
            let p: PathBuf = data.extract()?;
            if !p.exists() {
                return Err(PyFileNotFoundError::new_err(format!(
                    "x= {}: no such file",
                    p.display()
                )));
            }
            Source::Path(p)
        }
        "bytes" => Source::Bytes(data.extract::<Vec<u8>>()?),
        "rgb" => {
            let a: PyReadonlyArray3<u8> = data.extract()?;
            Source::Rgb(rgb_image(a.as_array(), "x=")?)
        }
        "tensor" => {
            let a: PyReadonlyArrayDyn<f32> = data.extract()?;
            Source::Tensor(a.as_array().to_owned())
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "x= unknown input kind {other}"
            )))
        }
    })
}

/// An `HxWx3` uint8 array (the Python parameter `what`) as an image.
fn rgb_image(a: ndarray::ArrayView3<'_, u8>, what: &str) -> PyResult<image::RgbImage> {
    let (h, w, c) = a.dim();
    if c != 3 || h == 0 || w == 0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be an HxWx3 uint8 array, got shape {:?}",
            a.shape()
        )));
    }
    let raw: Vec<u8> = a.iter().copied().collect();
    image::RgbImage::from_raw(w as u32, h as u32, raw)
        .ok_or_else(|| PyValueError::new_err(format!("{what} an image too large")))
}

fn to_dict<'py>(py: Python<'py>, e: Explained) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("relevance", e.relevance.into_pyarray(py))?;
    match e.image {
        Some(img) => {
            let (w, h) = img.dimensions();
            let a = Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw())
                .map_err(|e| LrpError::new_err(e.to_string()))?;
            d.set_item("image", a.into_pyarray(py))?;
        }
        None => d.set_item("image", py.None())?,
    }
    d.set_item("target", e.class)?;
    d.set_item("logit", e.logit)?;
    d.set_item("relevance_sum", e.relevance_sum)?;
    d.set_item("top5", e.top5)?;
    d.set_item("warnings", e.warnings)?;
    d.set_item("ledger", e.ledger)?;
    let layers = PyDict::new(py);
    for (name, r) in e.layers {
        layers.set_item(name, r.into_pyarray(py))?;
    }
    d.set_item("layers", layers)?;
    let tokens = PyDict::new(py);
    for (name, m) in e.tokens {
        tokens.set_item(name, m.into_pyarray(py))?;
    }
    d.set_item("tokens", tokens)?;
    Ok(d)
}

/// The analyzer parameters in `params` (the Python keywords given, by
/// name), the library's defaults for the others.
fn analyzer_params(params: &Bound<'_, PyDict>) -> PyResult<AnalyzerParams> {
    let mut p = AnalyzerParams::default();
    let get_f = |k: &str| -> PyResult<Option<f32>> {
        params.get_item(k)?.map(|v| v.extract::<f32>()).transpose()
    };
    let get_u = |k: &str| -> PyResult<Option<usize>> {
        params
            .get_item(k)?
            .map(|v| v.extract::<usize>())
            .transpose()
    };
    if let Some(v) = get_f("epsilon")? {
        p.rule.epsilon = v;
    }
    if let Some(v) = get_f("gamma")? {
        p.rule.gamma = v;
    }
    if let Some(v) = get_f("alpha")? {
        p.rule.alpha = v;
    }
    if let Some(v) = get_f("beta")? {
        p.rule.alpha = v + 1.0;
    }
    if let Some(v) = get_u("steps")? {
        p.steps = v;
    }
    if let Some(v) = get_u("samples")? {
        p.samples = v;
    }
    if let Some(v) = get_f("noise")? {
        p.noise = v;
    }
    if let Some(v) = params.get_item("seed")? {
        p.seed = v.extract()?;
    }
    if let Some(v) = params.get_item("maxpool_ties")? {
        let s: String = v.extract()?;
        p.maxpool_ties = match s.as_str() {
            "first" => MaxPoolTies::First,
            "split" => MaxPoolTies::Split,
            other => {
                return Err(PyValueError::new_err(format!(
                    "maxpool_ties= must be 'first' or 'split', got '{other}'"
                )))
            }
        };
    }
    Ok(p)
}

/// The normalisation in `params` (`mean`, `std`), ImageNet's by default.
fn normalization(params: &Bound<'_, PyDict>) -> PyResult<Normalization> {
    let mut norm = Normalization::default();
    if let Some(v) = params.get_item("mean")? {
        norm.mean = v.extract()?;
    }
    if let Some(v) = params.get_item("std")? {
        norm.std = v.extract()?;
    }
    Ok(norm)
}

#[pymethods]
impl NativeModel {
    #[new]
    #[pyo3(signature = (model, input_size=None))]
    fn new(py: Python<'_>, model: PathBuf, input_size: Option<(usize, usize)>) -> PyResult<Self> {
        let known = model == Path::new(lrp_heatmap::model::BUNDLED_NAME);
        if !known && !model.exists() {
            return Err(PyFileNotFoundError::new_err(format!(
                "model= {}: no such file (nor the bundled model's name, {})",
                model.display(),
                lrp_heatmap::model::BUNDLED_NAME
            )));
        }
        let opts = LoadOptions {
            size: input_size.map(|(h, w)| [h, w]),
            ..Default::default()
        };
        let m = compute(py, "model=", || opts.load(&model))?;
        let labels = lrp_heatmap::labels::for_classes(m.classes);
        Ok(NativeModel {
            model: Arc::new(m),
            labels,
        })
    }

    /// The class labels, in output order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    /// The input shape (batch axis first), in the model's layout.
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.model.input.shape.clone()
    }

    /// The rule and analyzer names.
    #[staticmethod]
    fn rules() -> Vec<&'static str> {
        lrp_heatmap::analyzers::all_names()
            .map(|(n, _)| *n)
            .collect()
    }

    /// Whether `rule` draws signed maps.
    #[staticmethod]
    fn signed(rule: &str) -> PyResult<bool> {
        let a = Analyzer::from_name(rule, &AnalyzerParams::default()).map_err(to_py)?;
        Ok(a.signed())
    }

    /// The 0-based class of `target` (an index or a label substring).
    fn find_class(&self, target: &str) -> PyResult<usize> {
        lrp_heatmap::labels::find_class(&self.labels, target)
            .map_err(|e| PyValueError::new_err(format!("target= {target}: {e}")))
    }

    /// Explains each input (`(kind, data)` pairs); a dict per input, or
    /// an exception per input (in `errors` mode, else the first raised).
    #[pyo3(signature = (inputs, rule, target, params, layers, concept, tolerant=false))]
    #[allow(clippy::too_many_arguments)]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyList>,
        rule: &str,
        target: Option<usize>,
        params: &Bound<'py, PyDict>,
        layers: Vec<String>,
        concept: Option<(String, Vec<usize>)>,
        tolerant: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let p = analyzer_params(params)?;
        let analyzer = Analyzer::from_name(rule, &p).map_err(to_py)?;
        let probes = Probes {
            layers,
            concept: concept.map(|(layer, channels)| Channels { layer, channels }),
            start: None,
        };
        if !probes.is_empty() && !matches!(analyzer, Analyzer::Lrp(_)) {
            return Err(PyValueError::new_err(format!(
                "layers= and concept= work with LRP rules and composites, not with {}",
                analyzer.name()
            )));
        }
        probes.check(&self.model).map_err(to_py)?;
        if let Some(c) = target {
            if c >= self.model.classes {
                return Err(to_py(Error::ClassOutOfRange {
                    class: c,
                    classes: self.model.classes,
                }));
            }
        }
        let norm = normalization(params)?;
        let opts = Options {
            analyzer,
            probes,
            class: target,
            norm,
            limits: DecodeLimits::default(),
        };
        let sources = inputs
            .iter()
            .map(|item| {
                let (kind, data): (String, Bound<'py, PyAny>) = item.extract()?;
                source(&kind, &data)
            })
            .collect::<Vec<PyResult<Source>>>();
        let model = self.model.clone();
        let results: Vec<PyResult<Explained>> = detached(py, || {
            use rayon::prelude::*;
            let b = batch_size(&model, &opts, sources.len());
            let mut chunks: Vec<Vec<PyResult<Source>>> = Vec::new();
            for s in sources {
                match chunks.last_mut() {
                    Some(c) if c.len() < b => c.push(s),
                    _ => chunks.push(vec![s]),
                }
            }
            chunks
                .into_par_iter()
                .flat_map_iter(|c| explain_chunk(&model, &opts, c))
                .collect()
        });
        let out = PyList::empty(py);
        for r in results {
            match r {
                Ok(e) => out.append(to_dict(py, e)?)?,
                Err(e) if tolerant => out.append(e.into_value(py))?,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Evaluates the analyzers `rules` on each input (`(kind, data)`
    /// pairs, named `names` in the report): the document of the command's
    /// `evaluate.json` as JSON text. The first input that fails raises.
    #[pyo3(signature = (inputs, names, rules, target, params, model_name, perturb, patch, steps, seed, randomize, batch))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyList>,
        names: Vec<String>,
        rules: Vec<String>,
        target: Option<usize>,
        params: &Bound<'_, PyDict>,
        model_name: &str,
        perturb: &str,
        patch: usize,
        steps: usize,
        seed: u64,
        randomize: bool,
        batch: usize,
    ) -> PyResult<String> {
        use lrp_heatmap::analyzers::evaluate::{Perturb, Perturbation};
        use lrp_heatmap::analyzers::report::{self, EvaluateOptions};
        // integrated gradients' steps are `ig_steps=` here (`steps=` are
        // the perturbation's)
        let ig = |e: Error| match e {
            Error::InvalidParameter {
                name: "steps",
                message,
            } => Error::InvalidParameter {
                name: "ig_steps",
                message,
            },
            e => e,
        };
        let mut p = analyzer_params(params)?;
        p.seed = seed;
        let analyzers = (rules.iter())
            .map(|r| Analyzer::from_name(r, &p).map_err(|e| to_py(ig(e))))
            .collect::<PyResult<Vec<_>>>()?;
        let mode: Perturb = perturb
            .parse()
            .map_err(|e| PyValueError::new_err(format!("perturb= {e}")))?;
        let opts = EvaluateOptions {
            analyzers,
            spec: Perturbation {
                patch,
                steps,
                mode,
                seed,
                batch,
            },
            norm: normalization(params)?,
            randomize,
        };
        opts.check(&self.model).map_err(to_py)?;
        if let Some(c) = target {
            if c >= self.model.classes {
                return Err(to_py(Error::ClassOutOfRange {
                    class: c,
                    classes: self.model.classes,
                }));
            }
        }
        if names.len() != inputs.len() {
            return Err(PyValueError::new_err("names: one per input"));
        }
        let limits = DecodeLimits::default();
        let mut images = Vec::with_capacity(names.len());
        for (item, name) in inputs.iter().zip(&names) {
            let (kind, data): (String, Bound<'_, PyAny>) = item.extract()?;
            let src = source(&kind, &data)?;
            let model = &self.model;
            let scored = compute(py, name, || {
                let (_, x) = prepare(model, &opts.norm, &limits, src)?;
                report::score_image(model, name, &x, target, &self.labels, &opts, &mut || {})
                    .map_err(|e| Error::from(e.context(name.clone())))
            })?;
            images.push(scored);
        }
        if images.is_empty() {
            return Err(PyValueError::new_err("inputs= names no input"));
        }
        let summary = report::summarize(&images);
        let doc = report::document(model_name, &opts.spec, &images, &summary);
        serde_json::to_string(&doc).map_err(|e| LrpError::new_err(e.to_string()))
    }
}

/// The style of a heatmap: the defaults, `cmap` for the map's kind, `clip`.
fn style(cmap: Option<&str>, clip: f32, signed: bool) -> PyResult<Style> {
    let mut style = Style::default();
    if !(clip.is_finite() && clip > 0.0 && clip <= 100.0) {
        return Err(PyValueError::new_err(format!(
            "clip= must be a percentile in (0, 100], got {clip}"
        )));
    }
    style.clip = clip;
    if let Some(name) = cmap {
        let c = Cmap::parse(name).map_err(|e| PyValueError::new_err(format!("cmap= {e:#}")))?;
        if c.is_diverging() != signed {
            return Err(PyValueError::new_err(format!(
                "cmap= {name} does not colour {} maps",
                if signed { "signed" } else { "unsigned" }
            )));
        }
        if signed {
            style.cmap = c;
        } else {
            style.unsigned_cmap = c;
        }
    }
    Ok(style)
}

/// The heatmap of `relevance` (`[C, H, W]`) at `width` x `height`, as the
/// command draws it; over `photo` when given.
#[pyfunction]
#[pyo3(signature = (relevance, width, height, signed, cmap=None, clip=render::DEFAULT_CLIP, photo=None))]
#[allow(clippy::too_many_arguments)]
fn heatmap<'py>(
    py: Python<'py>,
    relevance: PyReadonlyArrayDyn<'py, f32>,
    width: u32,
    height: u32,
    signed: bool,
    cmap: Option<&str>,
    clip: f32,
    photo: Option<PyReadonlyArray3<'py, u8>>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let img = draw(py, relevance, width, height, signed, cmap, clip, photo)?;
    let (w, h) = img.dimensions();
    let a = Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw())
        .map_err(|e| LrpError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

#[allow(clippy::too_many_arguments)]
fn draw(
    py: Python<'_>,
    relevance: PyReadonlyArrayDyn<'_, f32>,
    width: u32,
    height: u32,
    signed: bool,
    cmap: Option<&str>,
    clip: f32,
    photo: Option<PyReadonlyArray3<'_, u8>>,
) -> PyResult<image::RgbImage> {
    let style = style(cmap, clip, signed)?;
    let rel = relevance
        .as_array()
        .into_dimensionality::<Ix3>()
        .map_err(|_| PyValueError::new_err("relevance must be [C, H, W]"))?
        .to_owned();
    let photo = photo
        .map(|p| rgb_image(p.as_array(), "photo="))
        .transpose()?;
    if width == 0 || height == 0 {
        return Err(PyValueError::new_err("width and height must be > 0"));
    }
    Ok(detached(py, || {
        render::heatmap_image_styled(rel.view(), width, height, photo.as_ref(), &style, signed)
    }))
}

/// [`heatmap`] as the bytes of the command's PNG.
#[pyfunction]
#[pyo3(signature = (relevance, width, height, signed, cmap=None, clip=render::DEFAULT_CLIP, photo=None))]
#[allow(clippy::too_many_arguments)]
fn png<'py>(
    py: Python<'py>,
    relevance: PyReadonlyArrayDyn<'py, f32>,
    width: u32,
    height: u32,
    signed: bool,
    cmap: Option<&str>,
    clip: f32,
    photo: Option<PyReadonlyArray3<'py, u8>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let img = draw(py, relevance, width, height, signed, cmap, clip, photo)?;
    let mut buf = Vec::new();
    detached(py, || render::write_png(&img, &mut buf))
        .map_err(|e| LrpError::new_err(format!("{e:#}")))?;
    Ok(PyBytes::new(py, &buf))
}

/// The command's allocator settings (`keep_freed_memory` in src/main.rs):
/// freed tensors stay in the heap for the next layer and image instead of
/// being unmapped and faulted in afresh (8-10% on VGG16's gradient). Set
/// `LRP_HEATMAP_KEEP_FREED=0` before the import to keep glibc's defaults
/// (the process then returns freed memory to the system sooner).
fn keep_freed_memory() {
    if std::env::var_os("LRP_HEATMAP_KEEP_FREED").is_some_and(|v| v == "0") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets two of glibc's tuning parameters under glibc's
    // own arena lock; it is safe with other threads running.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[pymodule]
fn _lrp_heatmap(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_freed_memory();
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(heatmap, m)?)?;
    m.add_function(wrap_pyfunction!(png, m)?)?;
    m.add("Error", m.py().get_type::<LrpError>())?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("ImageError", m.py().get_type::<ImageError>())?;
    m.add("BUNDLED_NAME", lrp_heatmap::model::BUNDLED_NAME)?;
    m.add(
        "DEFAULT_RULES",
        (lrp_heatmap::analyzers::report::DEFAULT_ANALYZERS.split(',')).collect::<Vec<_>>(),
    )?;
    Ok(())
}
