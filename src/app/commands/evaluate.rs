//! `lrp-heatmap evaluate`: which analyzer to trust. Region perturbation
//! (MoRF, LeRF and a random baseline, AOPC) and, with `--randomize`, the
//! cascading model randomisation check, per image and analyzer; a table on
//! stdout, `evaluate.json` and the plots ([`crate::app::plots`]: the mean
//! curves, and the randomisation check's correlations).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use crate::app::commands::explain::ClassChoice;
use crate::app::inputs::collect;
use crate::app::labels;
use crate::app::plots;
use lrp_heatmap::analyzers::evaluate::{
    aopc, random_curve, randomization, region_perturbation, Perturbation, RandomizedLayer,
};
use lrp_heatmap::analyzers::Analyzer;
use lrp_heatmap::preprocess::{self, Normalization};

/// The analyzers of the speed target, the default.
pub const DEFAULT_ANALYZERS: &str =
    "gradient,smoothgrad,epsilon,zplus,epsilon-plus-flat,epsilon-gamma-box";

/// Randomised top layers after which a map still correlated above
/// [`FAIL_RHO`] with the trained model's fails the check.
pub const TOP_LAYERS: usize = 3;
/// See [`TOP_LAYERS`].
pub const FAIL_RHO: f64 = 0.5;

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

/// One analyzer on one image.
struct Scored {
    analyzer: String,
    morf: Vec<f32>,
    lerf: Vec<f32>,
    randomization: Option<Vec<RandomizedLayer>>,
}

/// Mean and standard deviation (population) of `v`.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The check's verdict on one analyzer, in words: the correlation left
/// after the top [`TOP_LAYERS`] linear layers are random.
fn verdict(name: &str, steps: &[&[RandomizedLayer]]) -> Option<String> {
    let rhos: Vec<f64> = steps
        .iter()
        .filter_map(|s| {
            s.get(TOP_LAYERS.min(s.len()).checked_sub(1)?)
                .map(|r| r.spearman)
        })
        .collect();
    if rhos.is_empty() {
        return None;
    }
    let (m, _) = mean_std(&rhos);
    Some(if m > FAIL_RHO {
        format!(
            "{name}: fails the randomisation check: with its top {TOP_LAYERS} linear layers random, \
             the model's map still has Spearman {m:.2} with the trained one (above {FAIL_RHO}): \
             the map barely depends on them"
        )
    } else {
        format!(
            "{name}: passes the randomisation check: with its top {TOP_LAYERS} linear layers random, \
             the map's Spearman with the trained one falls to {m:.2}"
        )
    })
}

/// Images below which the table gives no spread worth the name.
pub const FEW_IMAGES: usize = 3;

/// The lines under the table that temper it: too few images for a spread
/// (fewer than [`FEW_IMAGES`]), and the analyzers whose mean MoRF AOPC the
/// random order's beats (`random` its mean; `morf` each analyzer's name
/// and mean MoRF AOPC, in the table's order).
fn caveats(images: usize, random: f64, morf: &[(&str, f64)]) -> Vec<String> {
    let mut lines = Vec::new();
    if images < FEW_IMAGES {
        lines.push(format!(
            "note: {images} image{}: the +- is no spread, and the ranking may not hold for other images (evaluate {FEW_IMAGES} or more)",
            if images == 1 { "" } else { "s" }
        ));
    }
    let beaten: Vec<&str> = (morf.iter())
        .filter(|(_, m)| random > *m)
        .map(|(n, _)| *n)
        .collect();
    if !beaten.is_empty() {
        lines.push(format!(
            "note: the random order's MoRF AOPC ({random:.3}) beats {}'s: {} the evidence no faster than chance under this perturbation",
            beaten.join(", "),
            if beaten.len() == 1 { "its map removes" } else { "their maps remove" }
        ));
    }
    lines
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
    anyhow::ensure!(!cfg.analyzers.is_empty(), "--rules names no analyzer");
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
    let patches = lrp_heatmap::analyzers::evaluate::patches(
        &model.input.shape,
        model.input.layout,
        cfg.spec.patch,
    )?;
    anyhow::ensure!(
        cfg.spec.steps >= 1 && cfg.spec.steps <= patches.len(),
        "--perturb-steps must be between 1 and the number of patches ({} patches of {} px at {}x{})",
        patches.len(),
        cfg.spec.patch,
        patches.h,
        patches.w
    );
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
    let mut images = Vec::new();
    let mut failed = Vec::new();
    let mut scored: Vec<Vec<Scored>> = Vec::new();
    // each image's random-order curve (the same for every analyzer)
    let mut randoms: Vec<Vec<f32>> = Vec::new();
    for job in &jobs {
        let what = job.input.display().to_string();
        let r = lrp_heatmap::guard::boundary(&what, || {
            (|| -> Result<(Value, Vec<Scored>, Vec<f32>)> {
                let photo = preprocess::load_image_with(&job.input, &cfg.limits)?;
                let x = model.tensor(&photo, &cfg.norm)?;
                let fwd = model.forward(x.clone())?;
                let class = match &cfg.class {
                    ClassChoice::Top => fwd.top_k(1)[0].0,
                    ClassChoice::Query(q) => {
                        labels::find_class(&names, q).map_err(|e| anyhow!("--class {q}: {e}"))?
                    }
                };
                let random = random_curve(&model, &x, class, &cfg.norm, &cfg.spec)?;
                let mut rows = Vec::new();
                let mut per = Vec::new();
                for a in &cfg.analyzers {
                    let e = a
                        .explain(&model, &fwd, class, &cfg.norm)
                        .with_context(|| format!("analyzer {}", a.name()))?;
                    // the map as it is shown: |R| for the unsigned analyzers
                    let map = if a.signed() {
                        e.relevance.clone()
                    } else {
                        e.relevance.mapv(f32::abs)
                    };
                    let c = region_perturbation(&model, &x, class, &map, &cfg.norm, &cfg.spec)?;
                    let randomized = if cfg.randomize {
                        Some(randomization(
                            &model,
                            a,
                            &x,
                            class,
                            &cfg.norm,
                            &e.relevance,
                            cfg.spec.seed,
                        )?)
                    } else {
                        None
                    };
                    let (m, l) = (aopc(&c.morf), aopc(&c.lerf));
                    rows.push(json!({
                        "analyzer": a.name(),
                        "aopc_morf": m,
                        "aopc_lerf": l,
                        "aopc_random": aopc(&random),
                        "difference": m - l,
                        "curves": {"morf": c.morf, "lerf": c.lerf, "random": random},
                        "randomization": randomized,
                    }));
                    per.push(Scored {
                        analyzer: a.name(),
                        morf: c.morf,
                        lerf: c.lerf,
                        randomization: randomized,
                    });
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                }
                let image = json!({
                    "input": what,
                    "class": class,
                    "label": names.get(class).cloned().unwrap_or_default(),
                    "logit": fwd.logits[class],
                    "random": {"aopc": aopc(&random), "curve": random},
                    "analyzers": rows,
                });
                Ok((image, per, random))
            })()
            .with_context(|| what.clone())
        });
        match r {
            Ok((image, per, random)) => {
                images.push(image);
                scored.push(per);
                randoms.push(random);
            }
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
    // over images: mean and std per analyzer, ranked by MoRF - LeRF
    let mut summary = Vec::new();
    for (i, name) in all.iter().enumerate() {
        let pick =
            |f: &dyn Fn(&Scored) -> f64| -> Vec<f64> { scored.iter().map(|s| f(&s[i])).collect() };
        let morf = pick(&|s| aopc(&s.morf));
        let lerf = pick(&|s| aopc(&s.lerf));
        let diff: Vec<f64> = morf.iter().zip(&lerf).map(|(m, l)| m - l).collect();
        let steps: Vec<&[RandomizedLayer]> = scored
            .iter()
            .filter_map(|s| s[i].randomization.as_deref())
            .collect();
        summary.push((
            name.clone(),
            mean_std(&morf),
            mean_std(&lerf),
            mean_std(&diff),
            verdict(name, &steps),
        ));
        debug_assert_eq!(scored[0][i].analyzer, *name);
    }
    let mut ranked: Vec<usize> = (0..summary.len()).collect();
    ranked.sort_by(|&a, &b| summary[b].3 .0.total_cmp(&summary[a].3 .0));
    let random: Vec<f64> = images
        .iter()
        .filter_map(|v| v["random"]["aopc"].as_f64())
        .collect();
    let (rm, rs) = mean_std(&random);
    writeln!(
        out,
        "{} images, patches of {} px, {} steps, perturbation {:?}, seed {}",
        images.len(),
        cfg.spec.patch,
        cfg.spec.steps,
        cfg.spec.mode,
        cfg.spec.seed
    )?;
    writeln!(
        out,
        "{:<4} {:<22} {:>18} {:>18} {:>18}",
        "rank", "analyzer", "AOPC MoRF", "AOPC LeRF", "MoRF - LeRF"
    )?;
    let pm = |(m, s): (f64, f64)| format!("{m:.3} +- {s:.3}");
    for (rank, &i) in ranked.iter().enumerate() {
        let (name, m, l, d, _) = &summary[i];
        writeln!(
            out,
            "{:<4} {:<22} {:>18} {:>18} {:>18}",
            rank + 1,
            name,
            pm(*m),
            pm(*l),
            pm(*d)
        )?;
    }
    writeln!(
        out,
        "{:<4} {:<22} {:>18}",
        "-",
        "random order",
        pm((rm, rs))
    )?;
    let morf: Vec<(&str, f64)> = (ranked.iter())
        .map(|&i| (summary[i].0.as_str(), summary[i].1 .0))
        .collect();
    for line in caveats(images.len(), rm, &morf) {
        writeln!(out, "{line}")?;
    }
    for (_, _, _, _, v) in &summary {
        if let Some(v) = v {
            writeln!(out, "{v}")?;
        }
    }
    let doc = json!({
        "model": cfg.model.display().to_string(),
        "perturbation": {
            "patch": cfg.spec.patch,
            "steps": cfg.spec.steps,
            "mode": format!("{:?}", cfg.spec.mode).to_lowercase(),
            "seed": cfg.spec.seed,
        },
        "images": images,
        "summary": ranked.iter().enumerate().map(|(rank, &i)| {
            let (name, m, l, d, v) = &summary[i];
            json!({
                "analyzer": name,
                "rank": rank + 1,
                "aopc_morf": {"mean": m.0, "std": m.1},
                "aopc_lerf": {"mean": l.0, "std": l.1},
                "difference": {"mean": d.0, "std": d.1},
                "randomization_verdict": v,
            })
        }).collect::<Vec<_>>(),
        "random": {"mean": rm, "std": rs},
    });
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
    let column = |i: usize| -> Vec<&Scored> { scored.iter().map(|s| &s[i]).collect() };
    let curves = plots::CurvesPlot {
        title,
        analyzers: ranked
            .iter()
            .map(|&i| {
                let c = column(i);
                let morf: Vec<&[f32]> = c.iter().map(|s| s.morf.as_slice()).collect();
                let lerf: Vec<&[f32]> = c.iter().map(|s| s.lerf.as_slice()).collect();
                plots::AnalyzerCurves {
                    name: all[i].clone(),
                    morf: plots::mean_curve(&morf),
                    lerf: plots::mean_curve(&lerf),
                    aopc_morf: summary[i].1 .0,
                    aopc_lerf: summary[i].2 .0,
                }
            })
            .collect(),
        random: plots::mean_curve(&randoms.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        aopc_random: rm,
    };
    written.extend(plots::write_curves(&cfg.out_dir, &curves)?);
    if cfg.randomize {
        let layers: Vec<String> = scored[0]
            .first()
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
            analyzers: ranked
                .iter()
                .map(|&i| {
                    let per_image: Vec<Vec<f64>> = column(i)
                        .iter()
                        .filter_map(|s| s.randomization.as_ref())
                        .map(|r| r.iter().map(|l| l.spearman).collect())
                        .collect();
                    plots::AnalyzerRhos {
                        name: all[i].clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caveats_name_few_images_and_analyzers_beaten_by_chance() {
        assert!(caveats(3, 0.1, &[("zplus", 0.5)]).is_empty());
        let lines = caveats(
            1,
            0.3,
            &[("zplus", 0.5), ("gradient", 0.2), ("epsilon", 0.25)],
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("note: 1 image: the +- is no spread"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("(0.300) beats gradient, epsilon's"),
            "{lines:?}"
        );
    }
}
