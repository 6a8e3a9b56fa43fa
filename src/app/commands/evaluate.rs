//! `lrp-heatmap evaluate`: which analyzer to trust. Region perturbation
//! (MoRF, LeRF and a random baseline, AOPC) and, with `--randomize`, the
//! cascading model randomisation check, per image and analyzer; a table on
//! stdout, `evaluate.json` and the plots ([`crate::app::plots`]: the mean
//! curves, and the randomisation check's correlations).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use crate::app::commands::explain::ClassChoice;
use crate::app::inputs::collect;
use crate::app::labels;
use crate::app::plots;
use lrp_heatmap::analyzers::evaluate::Perturbation;
use lrp_heatmap::analyzers::report::{
    document, score_image, summarize, table, AnalyzerScores, EvaluateOptions, ImageScores,
    FAIL_RHO, TOP_LAYERS,
};
use lrp_heatmap::analyzers::Analyzer;
use lrp_heatmap::preprocess::{self, Normalization};

/// Everything an evaluation needs.
#[derive(Clone, Debug)]
pub struct EvaluateConfig {
    /// Image files or folders.
    pub inputs: Vec<PathBuf>,
    /// Walk folders recursively.
    pub recursive: bool,
    /// ONNX model file (or the bundled model's name).
    pub model: PathBuf,
    /// The analyzers.
    pub analyzers: Vec<Analyzer>,
    /// Class to explain.
    pub class: ClassChoice,
    /// Input normalisation.
    pub norm: Normalization,
    /// Bounds on decoding each image.
    pub limits: preprocess::DecodeLimits,
    /// Output folder of `evaluate.json` and the plots.
    pub out_dir: PathBuf,
    /// Patches, steps, perturbation, seed.
    pub spec: Perturbation,
    /// Also run the randomisation check.
    pub randomize: bool,
    /// Height and width for a model with symbolic spatial dims.
    pub input_size: Option<[usize; 2]>,
    /// Threads (`None`: one per core).
    pub jobs: Option<usize>,
}

/// The files of a run in `dir`, the plots' included, whether or not this run
/// writes them all (a folder evaluated into itself never reads them).
fn outputs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join("evaluate.json")];
    for stem in [plots::CURVES, plots::RANDOMIZATION] {
        for ext in ["png", "svg"] {
            v.push(dir.join(format!("{stem}.{ext}")));
        }
    }
    v
}

/// Runs the evaluation; writes `evaluate.json` and the plots into
/// `cfg.out_dir`, the table on `out`; returns the files written and the
/// inputs that failed.
pub fn run_evaluate(
    cfg: &EvaluateConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<crate::app::commands::FileRun> {
    let model = lrp_heatmap::guard::boundary(&format!("model {}", cfg.model.display()), || {
        lrp_heatmap::model::LoadOptions {
            size: cfg.input_size,
            ..Default::default()
        }
        .load(&cfg.model)
        .map_err(Into::into)
    })?;
    let names = labels::for_classes(model.classes);
    if let ClassChoice::Query(q) = &cfg.class {
        labels::find_class(&names, q)
            .map_err(|e| anyhow!("--class {q}: {e} (model {})", cfg.model.display()))?;
    }
    let opts = EvaluateOptions {
        analyzers: cfg.analyzers.clone(),
        spec: cfg.spec,
        norm: cfg.norm,
        randomize: cfg.randomize,
    };
    opts.check(&model)
        .map_err(|e| crate::app::cli::in_flags(e.into()))?;
    let all: Vec<String> = cfg.analyzers.iter().map(Analyzer::name).collect();
    let skip: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut jobs = collect(&cfg.inputs, cfg.recursive, None, &skip)?;
    // the plots this run writes are never among its inputs (a folder
    // evaluated into itself twice)
    let own: Vec<PathBuf> = outputs(&cfg.out_dir)
        .iter()
        .map(|p| crate::app::inputs::identity(p))
        .collect();
    jobs.retain(|j| {
        let mine = own.contains(&crate::app::inputs::identity(&j.input));
        if mine {
            let _ = writeln!(
                err,
                "note: skipping {}, an output of this run",
                j.input.display()
            );
        }
        !mine
    });
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new((jobs.len() * cfg.analyzers.len()) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images x analyzers  ETA {eta}  {msg}",
            )
            .expect("valid template"),
        );
        b
    });
    let mut images: Vec<ImageScores> = Vec::new();
    let mut failed = Vec::new();
    for job in &jobs {
        let what = job.input.display().to_string();
        let r = lrp_heatmap::guard::boundary(&what, || {
            (|| -> Result<ImageScores> {
                let photo = preprocess::load_image_with(&job.input, &cfg.limits)?;
                let x = model.tensor(&photo, &cfg.norm)?;
                let class = match &cfg.class {
                    ClassChoice::Top => None,
                    ClassChoice::Query(q) => Some(
                        labels::find_class(&names, q).map_err(|e| anyhow!("--class {q}: {e}"))?,
                    ),
                };
                let mut tick = || {
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                };
                score_image(&model, &what, &x, class, &names, &opts, &mut tick)
            })()
            .with_context(|| what.clone())
        });
        match r {
            Ok(scores) => images.push(scores),
            Err(e) => {
                let e = crate::app::cli::in_flags(e);
                match &bar {
                    Some(b) => b.suspend(|| writeln!(err, "error: {e:#}"))?,
                    None => writeln!(err, "error: {e:#}")?,
                }
                failed.push((job.input.clone(), format!("{e:#}")));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    anyhow::ensure!(!images.is_empty(), "no input could be evaluated");
    let summary = summarize(&images);
    write!(out, "{}", table(images.len(), &cfg.spec, &summary))?;
    let doc = document(
        &cfg.model.display().to_string(),
        &cfg.spec,
        &images,
        &summary,
    );
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("cannot create output folder {}", cfg.out_dir.display()))?;
    let path = cfg.out_dir.join("evaluate.json");
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    crate::app::output::write_atomic(&path, |w| Ok(w.write_all(text.as_bytes())?))?;
    let mut written = vec![path];
    // the plots, analyzers in the order of the table
    let title = format!(
        "{} image{}, {} perturbation, patches of {} px, {} steps: mean over the images",
        images.len(),
        if images.len() == 1 { "" } else { "s" },
        format!("{:?}", cfg.spec.mode).to_lowercase(),
        cfg.spec.patch,
        cfg.spec.steps,
    );
    let column =
        |i: usize| -> Vec<&AnalyzerScores> { images.iter().map(|s| &s.analyzers[i]).collect() };
    let curves = plots::CurvesPlot {
        title,
        analyzers: (summary.ranked.iter())
            .map(|r| {
                let c = column(r.index);
                let morf: Vec<&[f32]> = c.iter().map(|s| s.morf.as_slice()).collect();
                let lerf: Vec<&[f32]> = c.iter().map(|s| s.lerf.as_slice()).collect();
                plots::AnalyzerCurves {
                    name: r.analyzer.clone(),
                    morf: plots::mean_curve(&morf),
                    lerf: plots::mean_curve(&lerf),
                    aopc_morf: r.morf.0,
                    aopc_lerf: r.lerf.0,
                }
            })
            .collect(),
        random: plots::mean_curve(
            &(images.iter())
                .map(|s| s.random.as_slice())
                .collect::<Vec<_>>(),
        ),
        aopc_random: summary.random.0,
    };
    written.extend(plots::write_curves(&cfg.out_dir, &curves)?);
    if cfg.randomize {
        let layers: Vec<String> = (images[0].analyzers.first())
            .and_then(|s| s.randomization.as_ref())
            .map(|r| r.iter().map(|l| l.layer.clone()).collect())
            .unwrap_or_default();
        let plot = plots::RandomizationPlot {
            title: format!(
                "Randomisation check: {} image{}, mean Spearman rho per randomised layer",
                images.len(),
                if images.len() == 1 { "" } else { "s" },
            ),
            layers,
            analyzers: (summary.ranked.iter())
                .map(|r| {
                    let per_image: Vec<Vec<f64>> = column(r.index)
                        .iter()
                        .filter_map(|s| s.randomization.as_ref())
                        .map(|r| r.iter().map(|l| l.spearman).collect())
                        .collect();
                    plots::AnalyzerRhos {
                        name: r.analyzer.clone(),
                        rhos: plots::mean_curve(
                            &per_image.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                        ),
                    }
                })
                .collect(),
            fail_rho: FAIL_RHO,
            top_layers: TOP_LAYERS,
        };
        written.extend(plots::write_randomization(&cfg.out_dir, &plot)?);
    }
    Ok((written, failed))
}
