//! The command's job, free of clap: explain each input with a configured
//! model and rule, write the heatmaps, report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use ndarray::{ArrayD, Axis};
use serde_json::json;

use crate::composite::{Composite, RuleParams};
use crate::explain::{explain, Explanation};
use crate::labels;
use crate::model::{Forward, Model};
use crate::preprocess::{self, Layout, Normalization};
use crate::{npy, render};

/// Image file extensions picked up from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

/// The class to explain.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassChoice {
    /// The highest logit.
    Top,
    /// A 0-based index or a label substring, resolved per model.
    Query(String),
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Image files or folders.
    pub inputs: Vec<PathBuf>,
    /// ONNX model file.
    pub model: PathBuf,
    /// Rule or composite name.
    pub rule: String,
    /// Rule parameters.
    pub params: RuleParams,
    /// Class to explain.
    pub class: ClassChoice,
    /// Output folder (`None`: next to each input).
    pub out_dir: Option<PathBuf>,
    /// Also write the raw relevance as `.npy`.
    pub raw: bool,
    /// Blend the heatmap over a grey version of the photo.
    pub overlay: bool,
    /// Input normalisation.
    pub norm: Normalization,
    /// One JSON object per input instead of text.
    pub json: bool,
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Inputs explained.
    pub done: usize,
    /// Inputs that failed, with their error.
    pub failed: Vec<(PathBuf, String)>,
}

/// One explained input.
pub struct Outcome {
    /// The input image.
    pub input: PathBuf,
    /// Forward pass results.
    pub forward: Forward,
    /// The explanation.
    pub explanation: Explanation,
    /// Written heatmap.
    pub png: PathBuf,
    /// Written raw relevance, if asked for.
    pub npy: Option<PathBuf>,
    /// Wall time for this input.
    pub seconds: f64,
}

/// Lists the image files of `inputs` (folders expanded, not recursively,
/// hidden files and our own outputs skipped); files are kept as given.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image_name(f))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn is_image_name(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    let own_output = p
        .file_stem()
        .and_then(|s| Path::new(s).extension())
        .and_then(|e| e.to_str())
        .is_some_and(|r| crate::composite::NAMES.iter().any(|(n, _)| *n == r));
    !name.starts_with('.') && IMAGE_EXTENSIONS.contains(&ext.as_str()) && !own_output
}

/// Output path `<dir>/<stem>.<rule>.<ext>`.
pub fn output_path(input: &Path, out_dir: Option<&Path>, rule: &str, ext: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let dir = out_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| input.parent().map(Path::to_path_buf).unwrap_or_default());
    dir.join(format!("{stem}.{rule}.{ext}"))
}

/// The relevance as `[C, H, W]` whatever the model's layout.
pub fn relevance_chw(rel: &ArrayD<f32>, layout: Layout) -> Result<ArrayD<f32>> {
    let r = rel.index_axis(Axis(0), 0).to_owned();
    Ok(match layout {
        Layout::Nchw => r,
        Layout::Nhwc => r
            .permuted_axes(vec![2, 0, 1])
            .as_standard_layout()
            .into_owned(),
    })
}

/// A loaded model with the run's rule, ready to explain images.
pub struct Explainer {
    /// The model.
    pub model: Model,
    /// The composite.
    pub composite: Composite,
    /// Class labels.
    pub labels: Vec<String>,
    cfg: Config,
}

impl Explainer {
    /// Loads the model and checks the rule and class choice.
    pub fn new(cfg: &Config) -> Result<Explainer> {
        let composite = Composite::from_name(&cfg.rule, &cfg.params)?;
        let model = Model::load(&cfg.model)?;
        let labels = labels::for_classes(model.classes);
        if let ClassChoice::Query(q) = &cfg.class {
            labels::find_class(&labels, q).map_err(|e| anyhow!("--class {q}: {e}"))?;
        }
        Ok(Explainer {
            model,
            composite,
            labels,
            cfg: cfg.clone(),
        })
    }

    /// Explains one image file and writes its outputs.
    pub fn run_one(&self, input: &Path) -> Result<Outcome> {
        let t0 = Instant::now();
        let spec = &self.model.input;
        let img = preprocess::load_image(input)?;
        let tensor = preprocess::to_tensor(
            &img,
            spec.height,
            spec.width,
            spec.channels,
            spec.layout,
            &self.cfg.norm,
        )
        .with_context(|| format!("cannot prepare {}", input.display()))?;
        let forward = self
            .model
            .forward(tensor)
            .with_context(|| format!("{}", input.display()))?;
        let class = match &self.cfg.class {
            ClassChoice::Top => forward.top_k(1)[0].0,
            ClassChoice::Query(q) => {
                labels::find_class(&self.labels, q).map_err(|e| anyhow!("--class {q}: {e}"))?
            }
        };
        let explanation = explain(
            &self.model.graph,
            &forward,
            class,
            &self.composite,
            &self.cfg.norm,
            spec.channels,
        )
        .with_context(|| format!("cannot explain {}", input.display()))?;
        let chw = relevance_chw(&explanation.relevance, spec.layout)?;
        let view = chw.view().into_dimensionality::<ndarray::Ix3>()?;
        let heat = render::heatmap_image(
            view,
            img.width(),
            img.height(),
            self.cfg.overlay.then_some(&img),
        );
        let out_dir = self.cfg.out_dir.as_deref();
        let png = output_path(input, out_dir, &self.composite.name, "png");
        render::save_png(&heat, &png)?;
        let npy = if self.cfg.raw {
            let path = output_path(input, out_dir, &self.composite.name, "npy");
            let data: Vec<f32> = chw.iter().copied().collect();
            npy::write_npy_f32(&path, chw.shape(), &data)?;
            Some(path)
        } else {
            None
        };
        Ok(Outcome {
            input: input.to_path_buf(),
            forward,
            explanation,
            png,
            npy,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The report of one outcome: text lines or a JSON object.
    pub fn report(&self, o: &Outcome) -> String {
        let e = &o.explanation;
        let label = |i: usize| self.labels.get(i).cloned().unwrap_or_default();
        let top5 = o.forward.top_k(5);
        if self.cfg.json {
            let top: Vec<_> = top5
                .iter()
                .map(|&(i, p)| json!({"index": i, "label": label(i), "probability": p}))
                .collect();
            return json!({
                "input": o.input.display().to_string(),
                "model": self.model.path.display().to_string(),
                "rule": self.composite.name,
                "class": e.class,
                "label": label(e.class),
                "logit": e.logit,
                "top5": top,
                "relevance_sum": e.relevance_sum,
                "ratio": e.ratio(),
                "png": o.png.display().to_string(),
                "npy": o.npy.as_ref().map(|p| p.display().to_string()),
                "seconds": o.seconds,
            })
            .to_string();
        }
        let mut s = format!("{}\n", o.input.display());
        for (rank, (i, p)) in top5.iter().enumerate() {
            s += &format!("  {}. {:>4} {:<40} p = {:.4}\n", rank + 1, i, label(*i), p);
        }
        s += &format!(
            "  explained class {} \"{}\", logit {:.4}\n",
            e.class,
            label(e.class),
            e.logit
        );
        s += &format!(
            "  relevance sum = {:.4} (logit = {:.4}, ratio = {:.4})\n",
            e.relevance_sum,
            e.logit,
            e.ratio()
        );
        s += &format!("  {} -> {}", self.composite.name, o.png.display());
        if let Some(n) = &o.npy {
            s += &format!(", {}", n.display());
        }
        s
    }
}

/// Runs the whole job; per-input failures are reported on `err` and counted.
/// An error return means nothing could be done (model or usage error).
pub fn run(cfg: &Config, out: &mut dyn Write, err: &mut dyn Write) -> Result<Summary> {
    let explainer = Explainer::new(cfg)?;
    let files = expand_inputs(&cfg.inputs)?;
    let mut summary = Summary::default();
    if explainer.model.input.fixed_dims && !cfg.json {
        writeln!(
            err,
            "note: the model input has symbolic dimensions; using {:?}",
            explainer.model.input.shape
        )?;
    }
    for f in files {
        match explainer.run_one(&f) {
            Ok(o) => {
                writeln!(out, "{}", explainer.report(&o))?;
                summary.done += 1;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if cfg.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"input": f.display().to_string(), "error": msg})
                    )?;
                }
                writeln!(err, "error: {msg}")?;
                summary.failed.push((f, msg));
            }
        }
    }
    Ok(summary)
}
