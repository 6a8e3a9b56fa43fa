//! The command's job, free of clap: explain each input with a configured
//! model and rule, write the heatmaps, report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use ndarray::{ArrayD, Axis};
use serde_json::json;

use crate::app::inputs::Job;
use crate::app::labels;
use lrp_heatmap::analyzers::lrp::{Channels, Explanation, Probes};
use lrp_heatmap::analyzers::Analyzer;
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::{self, DecodeLimits, Layout, Normalization};
use lrp_heatmap::render;
use lrp_heatmap::render::Style;

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
    /// The analyzer (a rule, a composite or a gradient method with its parameters).
    pub analyzer: Analyzer,
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
    /// Colours of the heatmaps.
    pub style: Style,
    /// The colour map's name when it is not the map's default (it goes
    /// into the heatmap's name).
    pub cmap: Option<String>,
    /// One JSON object per input instead of text.
    pub json: bool,
    /// Write the relevance ledger as `<stem>.<rule>.ledger.json`.
    pub ledger: bool,
    /// Inner layers, a concept, a start inside the graph.
    pub probes: Probes,
    /// Walk folders recursively.
    pub recursive: bool,
    /// Images explained at once (`None`: one per core).
    pub jobs: Option<usize>,
    /// Images per forward and backward pass (`None`: chosen by memory,
    /// [`Explainer::batch_size`]).
    pub batch: Option<usize>,
    /// No progress bar.
    pub quiet: bool,
    /// Skip inputs whose outputs exist already.
    pub skip_existing: bool,
    /// Explain only this part of the inputs (`None`: all).
    pub shard: Option<crate::app::inputs::Shard>,
    /// Height and width for a model with symbolic spatial dims (`None`: 224).
    pub input_size: Option<[usize; 2]>,
    /// Bounds on decoding each image.
    pub limits: DecodeLimits,
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Inputs explained.
    pub done: usize,
    /// Inputs skipped because their outputs existed.
    pub skipped: usize,
    /// Inputs that failed, with their error.
    pub failed: Vec<(PathBuf, String)>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// One explained input.
pub struct Outcome {
    /// The input image.
    pub input: PathBuf,
    /// The five highest classes with their probabilities.
    pub top5: Vec<(usize, f32)>,
    /// The explanation (its relevance array is dropped once written).
    pub explanation: Explanation,
    /// Written heatmap.
    pub png: PathBuf,
    /// Written raw relevance, if asked for.
    pub npy: Option<PathBuf>,
    /// Written relevance of each layer asked for.
    pub layer_npys: Vec<PathBuf>,
    /// Written map of the patch tokens of each layer asked for that is a
    /// vision transformer's token tensor (`None` for the others).
    pub token_npys: Vec<Option<PathBuf>>,
    /// Written ledger, if asked for.
    pub ledger: Option<PathBuf>,
    /// Wall time for this input.
    pub seconds: f64,
    /// Warnings about this explanation (max-pool near-ties, the guard rails).
    pub warnings: Vec<String>,
}

/// [`lrp_heatmap::analyzers::selfcheck::near_tie_warnings`]; a failure to measure is itself
/// the warning (the explanation goes on).
fn explanation_warnings(
    model: &Model,
    fwd: &lrp_heatmap::model::Forward,
    ties: lrp_heatmap::ops::MaxPoolTies,
) -> Vec<String> {
    lrp_heatmap::analyzers::selfcheck::near_tie_warnings(model, fwd, ties)
        .unwrap_or_else(|e| vec![format!("near-ties not measured: {e:#}")])
}

/// The relevance as `[C, H, W]` whatever the model's layout.
/// ([`preprocess::relevance_chw`], shared with the Python package.)
pub fn relevance_chw(rel: &ArrayD<f32>, layout: Layout) -> Result<ArrayD<f32>> {
    Ok(preprocess::relevance_chw(rel, layout))
}

/// A layer name as a file name part: characters other than ASCII letters,
/// digits, `-` and `_` become `_`, leading and trailing ones dropped
/// (`/_swish_1/Clip` -> `_swish_1_Clip`).
pub fn file_part(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let s = s.trim().replace(' ', "_");
    if s.is_empty() {
        "layer".to_string()
    } else {
        s
    }
}

/// `concept-<layer>-<k>_<k>` for channels of a layer.
fn channels_part(what: &str, c: &Channels) -> String {
    let ks: Vec<String> = c.channels.iter().map(|k| k.to_string()).collect();
    format!("{what}-{}-{}", file_part(&c.layer), ks.join("_"))
}

/// Images per second as the progress bar shows it: `8.9/s`, `0.25/s` (two
/// significant digits below one).
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1.0 || per_sec == 0.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.2}/s")
    }
}

/// Bytes of activations the default batches in flight may keep for their
/// backward passes.
pub const BATCH_BYTES: u64 = 512 << 20;

/// The largest default batch.
pub const MAX_BATCH: usize = 16;

/// One image explained, before its outputs are written.
struct Explained {
    img: image::RgbImage,
    top5: Vec<(usize, f32)>,
    explanation: Explanation,
    /// The near-tie warnings of its forward pass.
    warnings: Vec<String>,
}

/// `f()`, with a panic turned into an error naming the job's input.
fn guarded<T>(job: &Job, f: impl FnOnce() -> Result<T>) -> Result<T> {
    lrp_heatmap::guard::boundary(&job.input.display().to_string(), f)
}

/// A loaded model with the run's rule, ready to explain images.
pub struct Explainer {
    /// The model.
    pub model: Model,
    /// The analyzer.
    pub analyzer: Analyzer,
    /// Class labels.
    pub labels: Vec<String>,
    /// The class asked for with `--class`, resolved (`None`: top-1).
    class: Option<usize>,
    /// Notes on the run's settings (a class label that other labels contain).
    pub notes: Vec<String>,
    cfg: Config,
}

impl Explainer {
    /// Loads the model and checks the class choice.
    pub fn new(cfg: &Config) -> Result<Explainer> {
        let analyzer = cfg.analyzer.clone();
        let model = lrp_heatmap::model::LoadOptions {
            size: cfg.input_size,
            ..Default::default()
        }
        .load(&cfg.model)?;
        if cfg.ledger && !matches!(analyzer, Analyzer::Lrp(_)) {
            return Err(anyhow!(
                "--ledger works with LRP rules and composites, not with {}",
                analyzer.name()
            ));
        }
        if !cfg.probes.is_empty() && !matches!(analyzer, Analyzer::Lrp(_)) {
            let flag = match &cfg.probes {
                Probes { start: Some(_), .. } => "--start",
                Probes {
                    concept: Some(_), ..
                } => "--concept",
                _ => "--layer",
            };
            return Err(anyhow!(
                "{flag} works with LRP rules and composites, not with {}",
                analyzer.name()
            ));
        }
        (cfg.probes.check(&model))
            .map_err(|e| crate::app::cli::in_flags(e.into()))
            .with_context(|| format!("model {}", cfg.model.display()))?;
        let labels = labels::for_classes(model.classes);
        let mut notes = Vec::new();
        let class = match &cfg.class {
            ClassChoice::Query(q) => {
                let i = labels::find_class(&labels, q)
                    .map_err(|e| anyhow!("--class {q}: {e} (model {})", cfg.model.display()))?;
                notes.extend(labels::also_matching(&labels, q));
                Some(i)
            }
            ClassChoice::Top => None,
        };
        Ok(Explainer {
            model,
            analyzer,
            labels,
            class,
            notes,
            cfg: cfg.clone(),
        })
    }

    /// The analyzer part of output names: the analyzer, then the concept or
    /// start if any, then the class when `--class` chose it
    /// (`zplus.concept-<layer>-<k>.class-281`). Parameters are not part of it.
    fn tag(&self) -> String {
        let mut t = self.analyzer.name();
        if let Some(c) = &self.cfg.probes.concept {
            t += &format!(".{}", channels_part("concept", c));
        }
        if let Some(c) = &self.cfg.probes.start {
            t += &format!(".{}", channels_part("start", c));
        }
        // a start explains its channels, whatever --class says
        if let (Some(i), None) = (self.class, &self.cfg.probes.start) {
            t += &format!(".class-{i}");
        }
        t
    }

    /// The heatmap's part of its name: [`Self::tag`], then the colour map
    /// when not the map's default and `overlay` (`zplus.viridis.overlay`).
    fn png_tag(&self) -> String {
        let mut t = self.tag();
        if let Some(c) = &self.cfg.cmap {
            t += &format!(".{c}");
        }
        if self.cfg.overlay {
            t += ".overlay";
        }
        t
    }

    /// Output of the relevance at `layer`.
    fn layer_output(&self, job: &Job, layer: &str) -> PathBuf {
        job.output(&format!("{}.{}", self.tag(), file_part(layer)), "npy")
    }

    /// Output of the map of the patch tokens at `layer` (a token tensor).
    fn token_output(&self, job: &Job, layer: &str) -> PathBuf {
        job.output(
            &format!("{}.{}", self.tag(), file_part(layer)),
            "tokens.npy",
        )
    }

    /// How many images go through one pass for `images` images on `jobs`
    /// threads when `asked` (`None`: the default), and a note when `asked`
    /// cannot be honoured. The default batches while the layers' weights
    /// outweigh the activations one image keeps (a pass then reads more
    /// weights than activations, and a batch reads them once for all its
    /// images), as far as the `jobs` batches in flight keep at most
    /// [`BATCH_BYTES`] of activations; a model or analyzer that takes one
    /// image at a time gets 1.
    pub fn batch_size(
        &self,
        asked: Option<usize>,
        images: usize,
        jobs: usize,
    ) -> (usize, Option<String>) {
        let blocker = if !self.analyzer.batches() {
            Some(format!(
                "{} runs passes of its own for each image",
                self.analyzer.name()
            ))
        } else if self.cfg.probes.start.is_some() {
            Some("a start inside the graph explains one image at a time".to_string())
        } else {
            self.model.batch_blocker()
        };
        let images = images.max(1);
        match (asked, blocker) {
            (Some(n), Some(why)) if n > 1 => {
                (1, Some(format!("--batch {n}: one image per pass: {why}")))
            }
            (Some(n), _) => (n.min(images), None),
            (None, Some(_)) => (1, None),
            (None, None) => {
                let per = self.model.kept_bytes_per_input().max(1);
                let by_weights = self.model.weight_bytes() / per;
                let by_memory = BATCH_BYTES / per.saturating_mul(jobs.max(1) as u64);
                let n = by_weights.min(by_memory).clamp(1, MAX_BATCH as u64) as usize;
                (n.min(images), None)
            }
        }
    }

    /// Loads one image and makes the model's input tensor of it.
    fn prepare(&self, job: &Job) -> Result<(image::RgbImage, ArrayD<f32>)> {
        let input = job.input.as_path();
        let img = preprocess::load_image_with(input, &self.cfg.limits)?;
        let tensor = (self.model)
            .tensor(&img, &self.cfg.norm)
            .with_context(|| format!("cannot prepare {}", input.display()))?;
        Ok((img, tensor))
    }

    /// The class to explain, given the top classes of the input.
    fn class_of(&self, top5: &[(usize, f32)]) -> Result<usize> {
        match &self.cfg.class {
            ClassChoice::Top => top5
                .first()
                .map(|t| t.0)
                .ok_or_else(|| anyhow!("the model has no class")),
            ClassChoice::Query(q) => {
                labels::find_class(&self.labels, q).map_err(|e| anyhow!("--class {q}: {e}"))
            }
        }
    }

    /// Explains one image and writes its outputs.
    pub fn run_one(&self, job: &Job) -> Result<Outcome> {
        let t0 = Instant::now();
        let input = job.input.as_path();
        let (img, tensor) = self.prepare(job)?;
        let forward = (self.analyzer)
            .forward(&self.model, tensor, &self.cfg.probes, false)
            .with_context(|| format!("{}", input.display()))?;
        let top5 = forward.top_k(5);
        let warnings = explanation_warnings(&self.model, &forward, self.analyzer.maxpool_ties());
        let class = self.class_of(&top5)?;
        let explanation = self
            .analyzer
            .explain_probed(
                &self.model,
                &forward,
                class,
                &self.cfg.norm,
                &self.cfg.probes,
            )
            .map_err(crate::app::cli::in_flags)
            .with_context(|| format!("cannot explain {}", input.display()))?;
        drop(forward);
        let explained = Explained {
            img,
            top5,
            explanation,
            warnings,
        };
        self.write(job, explained, t0.elapsed().as_secs_f64())
    }

    /// Explains the images of `jobs` in one forward and one backward pass
    /// (a batch: [`lrp_heatmap::Model::forward_batch`]) and writes their
    /// outputs; a result per job, in order. An image that cannot be read
    /// fails alone; if the batch itself fails, each image is run alone.
    pub fn run_batch(&self, jobs: &[Job]) -> Vec<Result<Outcome>> {
        use rayon::prelude::*;
        let t0 = Instant::now();
        let prepared: Vec<Result<(image::RgbImage, ArrayD<f32>)>> = jobs
            .par_iter()
            .map(|j| guarded(j, || self.prepare(j)))
            .collect();
        // the images that load go on together; the others fail alone
        let mut results: Vec<Option<Result<Outcome>>> = Vec::with_capacity(jobs.len());
        let (mut ok, mut imgs, mut tensors) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Ok((img, t)) => {
                    ok.push(i);
                    imgs.push(img);
                    tensors.push(t);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let stacked = lrp_heatmap::guard::boundary("a batch", || self.explain_stacked(&tensors));
        let explained = match stacked {
            Ok(e) => e,
            Err(_) => {
                // the batch failed as a whole: each image alone says why
                let alone: Vec<Result<Outcome>> = ok
                    .par_iter()
                    .map(|&i| guarded(&jobs[i], || self.run_one(&jobs[i])))
                    .collect();
                for (&i, r) in ok.iter().zip(alone) {
                    results[i] = Some(r);
                }
                return results.into_iter().flatten().collect();
            }
        };
        drop(tensors);
        let shared = t0.elapsed().as_secs_f64() / ok.len().max(1) as f64;
        let written: Vec<Result<Outcome>> = (ok.par_iter().zip(imgs.into_par_iter()))
            .zip(explained.into_par_iter())
            .map(|((&i, img), (top5, explanation, warnings))| {
                let t = Instant::now();
                let e = Explained {
                    img,
                    top5,
                    explanation,
                    warnings,
                };
                guarded(&jobs[i], || {
                    self.write(&jobs[i], e, shared + t.elapsed().as_secs_f64())
                })
            })
            .collect();
        for (&i, r) in ok.iter().zip(written) {
            results[i] = Some(r);
        }
        results.into_iter().flatten().collect()
    }

    /// The forward and backward pass of a batch of input tensors: per
    /// input, its top classes, the explanation and its warnings.
    #[allow(clippy::type_complexity)]
    fn explain_stacked(
        &self,
        tensors: &[ArrayD<f32>],
    ) -> Result<Vec<(Vec<(usize, f32)>, Explanation, Vec<String>)>> {
        let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
        let stacked = ndarray::concatenate(Axis(0), &views)?;
        let forward = (self.analyzer).forward(&self.model, stacked, &self.cfg.probes, true)?;
        let rows = forward.rows();
        anyhow::ensure!(
            rows == tensors.len(),
            "{rows} rows for {} inputs",
            tensors.len()
        );
        let top5: Vec<_> = (0..rows).map(|i| forward.top_k_row(i, 5)).collect();
        let classes = top5
            .iter()
            .map(|t| self.class_of(t))
            .collect::<Result<Vec<_>>>()?;
        let ties = lrp_heatmap::analyzers::selfcheck::near_tie_warnings_rows(
            &self.model,
            &forward,
            self.analyzer.maxpool_ties(),
        )
        .unwrap_or_else(|e| vec![vec![format!("near-ties not measured: {e:#}")]; rows]);
        let explanations = self.analyzer.explain_rows(
            &self.model,
            &forward,
            &classes,
            &self.cfg.norm,
            &self.cfg.probes,
        )?;
        Ok((top5.into_iter().zip(explanations).zip(ties))
            .map(|((t, e), w)| (t, e, w))
            .collect())
    }

    /// Writes the outputs of one explained image.
    fn write(&self, job: &Job, explained: Explained, seconds: f64) -> Result<Outcome> {
        let input = job.input.as_path();
        let spec = &self.model.input;
        let Explained {
            img,
            top5,
            mut explanation,
            mut warnings,
        } = explained;
        warnings.extend(explanation.warnings.iter().cloned());
        let chw = relevance_chw(&explanation.relevance, spec.layout)?;
        explanation.relevance = ArrayD::zeros(vec![0]);
        let view = chw.view().into_dimensionality::<ndarray::Ix3>()?;
        let photo = self.cfg.overlay.then_some(&img);
        let signed = self.analyzer.signed();
        let heat = render::heatmap_image_styled(
            view,
            img.width(),
            img.height(),
            photo,
            &self.cfg.style,
            signed,
        );
        std::fs::create_dir_all(&job.out_dir)
            .with_context(|| format!("cannot create output folder {}", job.out_dir.display()))
            .with_context(|| format!("{}", input.display()))?;
        if self.cfg.probes.concept.is_some() && chw.iter().all(|&x| x == 0.0) {
            warnings.push(
                "the concept received no relevance: its heatmap is blank (its channels pass none of the explained logit's relevance here)"
                    .to_string(),
            );
        }
        let png = job.output(&self.png_tag(), "png");
        crate::app::output::save_png(&heat, &png)
            .with_context(|| format!("{}", input.display()))?;
        let npy = if self.cfg.raw {
            let path = job.output(&self.tag(), "npy");
            crate::app::output::save_npy(&chw, &path)
                .with_context(|| format!("{}", input.display()))?;
            Some(path)
        } else {
            None
        };
        let mut layer_npys = Vec::new();
        let mut token_npys = Vec::new();
        for l in &mut explanation.layers {
            // the token map first: once the layer's file exists, so does its
            // token map (`--skip-existing` looks for the layer's file only,
            // not knowing before the forward pass which layers hold tokens)
            let tokens = match l.token_map() {
                Some(map) => {
                    let path = self.token_output(job, &l.layer);
                    crate::app::output::save_npy(&map, &path)
                        .with_context(|| format!("{}", input.display()))?;
                    Some(path)
                }
                None => None,
            };
            let path = self.layer_output(job, &l.layer);
            crate::app::output::save_npy(&l.relevance, &path)
                .with_context(|| format!("{}", input.display()))?;
            layer_npys.push(path);
            token_npys.push(tokens);
        }
        let ledger = match (&explanation.ledger, self.cfg.ledger) {
            (Some(l), true) => {
                let path = job.output(&self.tag(), "ledger.json");
                let mut v = serde_json::to_value(l)?;
                v["input"] = json!(input.display().to_string());
                v["rule"] = json!(self.analyzer.name());
                v["class"] = json!(explanation.class);
                v["ratio"] = json!(l.ratio());
                v["summary"] = json!(l.summary());
                let text = serde_json::to_string_pretty(&v)? + "\n";
                crate::app::output::write_atomic(&path, |w| Ok(w.write_all(text.as_bytes())?))
                    .with_context(|| format!("{}", input.display()))?;
                Some(path)
            }
            _ => None,
        };
        Ok(Outcome {
            input: input.to_path_buf(),
            top5,
            explanation,
            png,
            npy,
            layer_npys,
            token_npys,
            ledger,
            seconds,
            warnings,
        })
    }

    /// The files `job` writes.
    pub fn outputs(&self, job: &Job) -> Vec<PathBuf> {
        let tag = self.tag();
        let mut v = vec![job.output(&self.png_tag(), "png")];
        if self.cfg.raw {
            v.push(job.output(&tag, "npy"));
        }
        if self.cfg.ledger {
            v.push(job.output(&tag, "ledger.json"));
        }
        for l in &self.cfg.probes.layers {
            v.push(self.layer_output(job, l));
        }
        v
    }

    /// Whether every output of `job` exists already.
    pub fn outputs_exist(&self, job: &Job) -> bool {
        self.outputs(job).iter().all(|p| p.exists())
    }

    /// The report of one outcome: text lines or a JSON object.
    pub fn report(&self, o: &Outcome) -> String {
        let e = &o.explanation;
        let label = |i: usize| self.labels.get(i).cloned().unwrap_or_default();
        let top5 = &o.top5;
        if self.cfg.json {
            let top: Vec<_> = top5
                .iter()
                .map(|&(i, p)| json!({"index": i, "label": label(i), "probability": p}))
                .collect();
            return json!({
                "input": o.input.display().to_string(),
                "status": "done",
                "model": self.model.path.display().to_string(),
                "rule": self.analyzer.name(),
                "class": e.class,
                "label": label(e.class),
                "logit": e.logit,
                "top5": top,
                "relevance_sum": e.relevance_sum,
                "ratio": e.ratio(),
                "png": o.png.display().to_string(),
                "npy": o.npy.as_ref().map(|p| p.display().to_string()),
                "seconds": o.seconds,
                "warnings": o.warnings,
                "concept": self.cfg.probes.concept.as_ref().map(|c| json!({"layer": c.layer, "channels": c.channels})),
                "start": self.cfg.probes.start.as_ref().map(|c| json!({"layer": c.layer, "channels": c.channels})),
                "ledger": e.ledger.as_ref().map(|l| json!({
                    "logit": l.logit,
                    "input_sum": l.input_sum,
                    "ratio": l.ratio(),
                    "bias": l.nodes.iter().map(|n| n.bias).sum::<f64>(),
                    "stabilizer": l.nodes.iter().map(|n| n.stabilizer).sum::<f64>(),
                    "dropped": l.nodes.iter().map(|n| n.dropped).sum::<f64>(),
                    "sign": l.nodes.iter().map(|n| n.sign).sum::<f64>(),
                    "summary": l.summary(),
                    "file": o.ledger.as_ref().map(|p| p.display().to_string()),
                })),
                "layers": e.layers.iter().zip(&o.layer_npys).zip(&o.token_npys).map(|((l, p), t)| {
                    let ch = l.channel_sums();
                    let mut v = json!({
                        "layer": l.layer,
                        "tensor": l.tensor,
                        "shape": l.relevance.shape(),
                        "sum": ch.iter().map(|c| c.1).sum::<f64>(),
                        "npy": p.display().to_string(),
                        "channels": ch.iter().map(|&(k, r)| json!({"channel": k, "relevance": r})).collect::<Vec<_>>(),
                    });
                    if let Some(tokens) = token_json(l, t.as_deref()) {
                        v["tokens"] = tokens;
                    }
                    v
                }).collect::<Vec<_>>(),
            })
            .to_string();
        }
        let mut s = format!("{}\n", o.input.display());
        for (rank, (i, p)) in top5.iter().enumerate() {
            s += &format!("  {}. {:>4} {:<40} p = {:.4}\n", rank + 1, i, label(*i), p);
        }
        match &self.cfg.probes.start {
            Some(c) => {
                s += &format!(
                    "  started at channels {:?} of {}: activation sum {:.4}\n",
                    c.channels, c.layer, e.logit
                )
            }
            None => {
                s += &format!(
                    "  explained class {} \"{}\", logit {:.4}\n",
                    e.class,
                    label(e.class),
                    e.logit
                )
            }
        }
        if let Some(c) = &self.cfg.probes.concept {
            s += &format!(
                "  concept: channels {:?} of {} (their share of the relevance only)\n",
                c.channels, c.layer
            );
        }
        s += &format!(
            "  relevance sum = {:.4} (logit = {:.4}, ratio = {:.4})\n",
            e.relevance_sum,
            e.logit,
            e.ratio()
        );
        if let Some(line) = e.ledger.as_ref().and_then(|l| l.summary()) {
            s += &format!("  {line}\n");
        }
        for ((l, path), tokens) in e.layers.iter().zip(&o.layer_npys).zip(&o.token_npys) {
            let top: Vec<String> = (l.channel_sums().iter().take(5))
                .map(|(k, r)| format!("{k} ({r:.4})"))
                .collect();
            match (l.tokens, l.token_map(), tokens) {
                (Some(t), Some(map), Some(tokens)) => {
                    let mut parts: Vec<String> = (l.extra_tokens().iter())
                        .map(|(name, r)| format!("{} {r:.4}", name.replace('_', " ")))
                        .collect();
                    let patches: f64 = map.iter().map(|&v| v as f64).sum();
                    parts.push(format!("{0}x{0} patches {patches:.4}", t.grid));
                    s += &format!(
                        "  layer {} {:?} (tokens: {}): top dimensions {} -> {}, {}\n",
                        l.layer,
                        l.relevance.shape(),
                        parts.join(", "),
                        top.join(", "),
                        path.display(),
                        tokens.display()
                    );
                }
                _ => {
                    s += &format!(
                        "  layer {} {:?}: top channels {} -> {}\n",
                        l.layer,
                        l.relevance.shape(),
                        top.join(", "),
                        path.display()
                    );
                }
            }
        }
        s += &format!("  {} -> {}", self.png_tag(), o.png.display());
        if let Some(n) = &o.npy {
            s += &format!(", {}", n.display());
        }
        if let Some(n) = &o.ledger {
            s += &format!(", {}", n.display());
        }
        s
    }
}

/// The `tokens` object of a token tensor's entry in `--json`'s `layers`:
/// `grid` (`[P, P]`), `patches` (the relevance of the patch tokens), each
/// token before them by name (`class_token`, `distillation_token`), `npy`
/// (the token map's file). `None` for any other tensor.
fn token_json(
    l: &lrp_heatmap::analyzers::lrp::LayerRelevance,
    npy: Option<&std::path::Path>,
) -> Option<serde_json::Value> {
    let t = l.tokens?;
    let map = l.token_map()?;
    let mut v = json!({
        "grid": [t.grid, t.grid],
        "patches": map.iter().map(|&v| v as f64).sum::<f64>(),
        "npy": npy.map(|p| p.display().to_string()),
    });
    for (name, r) in l.extra_tokens() {
        v[name] = json!(r);
    }
    Some(v)
}

/// Runs the whole job; per-input failures are reported on `err` and counted.
/// An error return means nothing could be done (model or usage error).
///
/// Images are explained in parallel (`cfg.jobs`, default one per core) with at
/// most that many in memory at once; results are reported as they finish, with
/// a progress bar on `progress` when it is given (a terminal, not `--quiet`).
pub fn run(
    cfg: &Config,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<Summary> {
    let t0 = Instant::now();
    let explainer =
        lrp_heatmap::guard::boundary(&format!("model {}", cfg.model.display()), || {
            Explainer::new(cfg)
        })?;
    let names: Vec<&str> = lrp_heatmap::analyzers::all_names()
        .map(|(n, _)| *n)
        .collect();
    let jobs =
        crate::app::inputs::collect(&cfg.inputs, cfg.recursive, cfg.out_dir.as_deref(), &names)?;
    let mut summary = Summary::default();
    // never overwrite an input, nor write one file for two inputs: checked
    // over the whole list, so that every part of a job array refuses the
    // same jobs and keeps the same ones
    let refused = crate::app::inputs::output_conflicts(&jobs, &|j| explainer.outputs(j));
    // this part's jobs (--shard), chosen from the whole list; a refused job
    // is reported by its own part only
    let mine: Vec<bool> = match cfg.shard {
        None => vec![true; jobs.len()],
        Some(shard) => {
            let mut mine = vec![false; jobs.len()];
            for i in shard.select(&jobs) {
                mine[i] = true;
            }
            let n = mine.iter().filter(|&&m| m).count();
            writeln!(
                err,
                "note: shard {shard}: {n} of {} input{}{}",
                jobs.len(),
                if jobs.len() == 1 { "" } else { "s" },
                if n == 0 {
                    " (more parts than inputs)"
                } else {
                    ""
                }
            )?;
            mine
        }
    };
    let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    for (i, why) in refused {
        let job = jobs[i].take();
        if !mine[i] {
            continue;
        }
        let input = job.map(|j| j.input).unwrap_or_default();
        let msg = format!("{}: {why}", input.display());
        if cfg.json {
            writeln!(
                out,
                "{}",
                json!({"input": input.display().to_string(), "status": "failed", "error": msg})
            )?;
        }
        writeln!(err, "error: {msg}")?;
        summary.failed.push((input, msg));
    }
    let jobs: Vec<Job> = (jobs.into_iter().zip(mine))
        .filter_map(|(j, m)| j.filter(|_| m))
        .collect();
    if explainer.model.input.fixed_dims {
        writeln!(
            err,
            "note: the model input has symbolic dimensions; using {:?} (--input-size HxW sets height and width)",
            explainer.model.input.shape
        )?;
    }
    for note in explainer.model.notes.iter().chain(&explainer.notes) {
        writeln!(err, "note: {note}")?;
    }
    let (todo, skipped): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| !(cfg.skip_existing && explainer.outputs_exist(j)));
    summary.skipped = skipped.len();
    if cfg.json {
        for j in &skipped {
            let outputs: Vec<String> = (explainer.outputs(j).iter())
                .map(|p| p.display().to_string())
                .collect();
            writeln!(
                out,
                "{}",
                json!({"input": j.input.display().to_string(), "status": "skipped", "outputs": outputs})
            )?;
        }
    }
    let threads = cfg
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start worker threads")?;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(todo.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images  {rate}  ETA {eta}  {msg}",
            )
            .expect("valid template")
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", rate(s.per_sec()));
                },
            ),
        );
        b
    });
    let (batch, note) = explainer.batch_size(cfg.batch, todo.len(), threads);
    if let Some(note) = note {
        writeln!(err, "note: {note}")?;
    }
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, Result<Outcome>)>();
    std::thread::scope(|scope| -> Result<()> {
        let explainer = &explainer;
        let todo = &todo;
        let pool = &pool;
        scope.spawn(move || {
            use rayon::prelude::*;
            pool.install(|| {
                if batch > 1 {
                    // --jobs batches in parallel (each image's failure its own)
                    todo.par_chunks(batch).for_each_with(tx, |tx, jobs| {
                        for (job, r) in jobs.iter().zip(explainer.run_batch(jobs)) {
                            let _ = tx.send((job.input.clone(), r));
                        }
                    });
                    return;
                }
                todo.par_iter().for_each_with(tx, |tx, job| {
                    // a panic (ours, or in a worker of a parallel kernel)
                    // fails this image only
                    let r = guarded(job, || explainer.run_one(job));
                    let _ = tx.send((job.input.clone(), r));
                })
            })
        });
        for (input, r) in rx {
            match r {
                Ok(o) => {
                    let line = explainer.report(&o);
                    match &bar {
                        Some(b) if !cfg.json => b.suspend(|| writeln!(out, "{line}"))?,
                        _ => writeln!(out, "{line}")?,
                    }
                    for w in &o.warnings {
                        let w = format!("warning: {}: {w}", o.input.display());
                        match &bar {
                            Some(b) => b.suspend(|| writeln!(err, "{w}"))?,
                            None => writeln!(err, "{w}")?,
                        }
                    }
                    summary.done += 1;
                }
                Err(e) => {
                    let msg = format!("{:#}", crate::app::cli::in_flags(e));
                    if cfg.json {
                        writeln!(
                            out,
                            "{}",
                            json!({"input": input.display().to_string(), "status": "failed", "error": msg})
                        )?;
                    }
                    match &bar {
                        Some(b) => b.suspend(|| writeln!(err, "error: {msg}"))?,
                        None => writeln!(err, "error: {msg}")?,
                    }
                    summary.failed.push((input, msg));
                }
            }
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
        Ok(())
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_rounded() {
        assert_eq!(rate(8.9387), "8.9/s");
        assert_eq!(rate(12.04), "12.0/s");
        assert_eq!(rate(0.2549), "0.25/s");
        assert_eq!(rate(0.0), "0.0/s");
    }
}
