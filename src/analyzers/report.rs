//! The report of an evaluation ("which analyzer to trust"): each image's
//! region-perturbation curves and AOPCs per analyzer (and, when asked, the
//! randomisation check), the summary over the images ranked by MoRF - LeRF,
//! the table and the document the command writes as `evaluate.json`. The
//! command (`lrp-heatmap evaluate`) and the Python package
//! (`Model.evaluate`) both build their report here; the command adds the
//! files, the progress bar and the plots.

use anyhow::{Context, Result};
use ndarray::ArrayD;
use serde_json::{json, Value};

use crate::analyzers::evaluate::{
    aopc, patches, random_curve, randomization, region_perturbation, Perturbation, RandomizedLayer,
};
use crate::analyzers::Analyzer;
use crate::model::Model;
use crate::preprocess::Normalization;

/// The analyzers evaluated by default, comma-separated: the gradient
/// family's two most used and the LRP composites users compare them with.
pub const DEFAULT_ANALYZERS: &str =
    "gradient,smoothgrad,epsilon,zplus,epsilon-plus-flat,epsilon-gamma-box";

/// Randomised top layers after which a map still correlated above
/// [`FAIL_RHO`] with the trained model's fails the check.
pub const TOP_LAYERS: usize = 3;
/// See [`TOP_LAYERS`].
pub const FAIL_RHO: f64 = 0.5;
/// Images below which the table gives no spread worth the name.
pub const FEW_IMAGES: usize = 3;

/// What is evaluated and how: the analyzers, the perturbation, the
/// normalisation of the inputs, and whether to run the randomisation check.
#[derive(Clone, Debug)]
pub struct EvaluateOptions {
    /// The analyzers, in the order of the report's per-image rows.
    pub analyzers: Vec<Analyzer>,
    /// Patches, steps, perturbation, seed.
    pub spec: Perturbation,
    /// Input normalisation (the perturbation's "mean" is the mean in pixel
    /// space, normalised with it).
    pub norm: Normalization,
    /// Also run the cascading randomisation check.
    pub randomize: bool,
}

impl EvaluateOptions {
    /// [`crate::Error::InvalidParameter`] for options that cannot run on
    /// `model`: no analyzer (`rules`), a patch of 0 px (`patch`), more
    /// steps than patches or none (`perturb_steps`), a perturbation batch
    /// of 0 (`perturb_batch`).
    pub fn check(&self, model: &Model) -> crate::Result<()> {
        use crate::error::Error;
        Error::check(!self.analyzers.is_empty(), "rules", || {
            "must name at least one analyzer".to_string()
        })?;
        Error::check(self.spec.patch >= 1, "patch", || {
            "must be at least 1 pixel, got 0".to_string()
        })?;
        Error::check(self.spec.batch >= 1, "perturb_batch", || {
            "must be at least 1, got 0".to_string()
        })?;
        let p = patches(&model.input.shape, model.input.layout, self.spec.patch)?;
        Error::check(
            self.spec.steps >= 1 && self.spec.steps <= p.len(),
            "perturb_steps",
            || {
                format!(
                    "must be between 1 and the number of patches ({} patches of {} px at {}x{}), got {}",
                    p.len(),
                    self.spec.patch,
                    p.h,
                    p.w,
                    self.spec.steps
                )
            },
        )
    }
}

/// One analyzer on one image.
#[derive(Clone, Debug)]
pub struct AnalyzerScores {
    /// The analyzer's name.
    pub analyzer: String,
    /// The curve with the most relevant patches removed first.
    pub morf: Vec<f32>,
    /// The curve with the least relevant patches removed first.
    pub lerf: Vec<f32>,
    /// The randomisation check, when asked.
    pub randomization: Option<Vec<RandomizedLayer>>,
}

/// Every analyzer on one image.
#[derive(Clone, Debug)]
pub struct ImageScores {
    /// The input as the report names it (a path, or the caller's name).
    pub input: String,
    /// The explained class.
    pub class: usize,
    /// Its label ("" without one).
    pub label: String,
    /// Its logit on the unperturbed input.
    pub logit: f32,
    /// The random order's curve (the same for every analyzer).
    pub random: Vec<f32>,
    /// The analyzers, in the options' order.
    pub analyzers: Vec<AnalyzerScores>,
}

/// Scores every analyzer of `opts` on the model input `x` (one image,
/// normalised): `class` when given, else the top class. `done` is called
/// after each analyzer (a progress bar).
pub fn score_image(
    model: &Model,
    input: &str,
    x: &ArrayD<f32>,
    class: Option<usize>,
    labels: &[String],
    opts: &EvaluateOptions,
    done: &mut dyn FnMut(),
) -> Result<ImageScores> {
    let spec = &opts.spec;
    let fwd = model.forward(x.clone())?;
    let class = class.unwrap_or_else(|| fwd.top_k(1)[0].0);
    let random = random_curve(model, x, class, &opts.norm, spec)?;
    let mut analyzers = Vec::with_capacity(opts.analyzers.len());
    for a in &opts.analyzers {
        let e = a
            .explain(model, &fwd, class, &opts.norm)
            .with_context(|| format!("analyzer {}", a.name()))?;
        // the map as it is shown: |R| for the unsigned analyzers
        let map = if a.signed() {
            e.relevance.clone()
        } else {
            e.relevance.mapv(f32::abs)
        };
        let c = region_perturbation(model, x, class, &map, &opts.norm, spec)?;
        let randomization = if opts.randomize {
            Some(randomization(
                model,
                a,
                x,
                class,
                &opts.norm,
                &e.relevance,
                spec.seed,
            )?)
        } else {
            None
        };
        analyzers.push(AnalyzerScores {
            analyzer: a.name(),
            morf: c.morf,
            lerf: c.lerf,
            randomization,
        });
        done();
    }
    Ok(ImageScores {
        input: input.to_string(),
        class,
        label: labels.get(class).cloned().unwrap_or_default(),
        logit: fwd.logits[class],
        random,
        analyzers,
    })
}

/// Mean and standard deviation (population) of `v`.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// One analyzer over the images.
#[derive(Clone, Debug)]
pub struct SummaryRow {
    /// The analyzer's name.
    pub analyzer: String,
    /// Its index in the options' (and each image's) order.
    pub index: usize,
    /// AOPC of MoRF: mean and standard deviation over the images.
    pub morf: (f64, f64),
    /// AOPC of LeRF.
    pub lerf: (f64, f64),
    /// MoRF - LeRF (the ranking's key).
    pub difference: (f64, f64),
    /// The randomisation check's verdict in words, when it ran.
    pub verdict: Option<String>,
}

/// The summary over the images: the analyzers ranked by their mean
/// MoRF - LeRF (best first), and the random order's AOPC.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Best first.
    pub ranked: Vec<SummaryRow>,
    /// The random order's AOPC: mean and standard deviation.
    pub random: (f64, f64),
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

/// The summary of `images` (each scored with the same analyzers).
pub fn summarize(images: &[ImageScores]) -> Summary {
    let names: Vec<&str> = images.first().map_or(Vec::new(), |i| {
        i.analyzers.iter().map(|a| a.analyzer.as_str()).collect()
    });
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let pick = |f: &dyn Fn(&AnalyzerScores) -> f64| -> Vec<f64> {
            images.iter().map(|s| f(&s.analyzers[i])).collect()
        };
        let morf = pick(&|s| aopc(&s.morf));
        let lerf = pick(&|s| aopc(&s.lerf));
        let diff: Vec<f64> = morf.iter().zip(&lerf).map(|(m, l)| m - l).collect();
        let steps: Vec<&[RandomizedLayer]> = images
            .iter()
            .filter_map(|s| s.analyzers[i].randomization.as_deref())
            .collect();
        rows.push(SummaryRow {
            analyzer: name.to_string(),
            index: i,
            morf: mean_std(&morf),
            lerf: mean_std(&lerf),
            difference: mean_std(&diff),
            verdict: verdict(name, &steps),
        });
    }
    // stable: equal differences keep the analyzers' order
    rows.sort_by(|a, b| b.difference.0.total_cmp(&a.difference.0));
    let random: Vec<f64> = images.iter().map(|s| aopc(&s.random)).collect();
    Summary {
        ranked: rows,
        random: mean_std(&random),
    }
}

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

/// The table the command prints: the settings, one row per analyzer (best
/// first), the random order, the caveats and the randomisation verdicts.
pub fn table(images: usize, spec: &Perturbation, s: &Summary) -> String {
    let mut out = format!(
        "{} images, patches of {} px, {} steps, perturbation {:?}, seed {}\n",
        images, spec.patch, spec.steps, spec.mode, spec.seed
    );
    out += &format!(
        "{:<4} {:<22} {:>18} {:>18} {:>18}\n",
        "rank", "analyzer", "AOPC MoRF", "AOPC LeRF", "MoRF - LeRF"
    );
    let pm = |(m, s): (f64, f64)| format!("{m:.3} +- {s:.3}");
    for (rank, r) in s.ranked.iter().enumerate() {
        out += &format!(
            "{:<4} {:<22} {:>18} {:>18} {:>18}\n",
            rank + 1,
            r.analyzer,
            pm(r.morf),
            pm(r.lerf),
            pm(r.difference)
        );
    }
    out += &format!("{:<4} {:<22} {:>18}\n", "-", "random order", pm(s.random));
    let morf: Vec<(&str, f64)> = (s.ranked.iter())
        .map(|r| (r.analyzer.as_str(), r.morf.0))
        .collect();
    for line in caveats(images, s.random.0, &morf) {
        out += &line;
        out.push('\n');
    }
    // the verdicts in the order of the options
    let mut by_index: Vec<&SummaryRow> = s.ranked.iter().collect();
    by_index.sort_by_key(|r| r.index);
    for r in by_index {
        if let Some(v) = &r.verdict {
            out += v;
            out.push('\n');
        }
    }
    out
}

/// The document of the report (the command's `evaluate.json`): `model` as
/// the caller names it.
pub fn document(model: &str, spec: &Perturbation, images: &[ImageScores], s: &Summary) -> Value {
    let images: Vec<Value> = images
        .iter()
        .map(|im| {
            let random = aopc(&im.random);
            let rows: Vec<Value> = im
                .analyzers
                .iter()
                .map(|a| {
                    let (m, l) = (aopc(&a.morf), aopc(&a.lerf));
                    json!({
                        "analyzer": a.analyzer,
                        "aopc_morf": m,
                        "aopc_lerf": l,
                        "aopc_random": random,
                        "difference": m - l,
                        "curves": {"morf": a.morf, "lerf": a.lerf, "random": im.random},
                        "randomization": a.randomization,
                    })
                })
                .collect();
            json!({
                "input": im.input,
                "class": im.class,
                "label": im.label,
                "logit": im.logit,
                "random": {"aopc": random, "curve": im.random},
                "analyzers": rows,
            })
        })
        .collect();
    json!({
        "model": model,
        "perturbation": {
            "patch": spec.patch,
            "steps": spec.steps,
            "mode": format!("{:?}", spec.mode).to_lowercase(),
            "seed": spec.seed,
        },
        "images": images,
        "summary": s.ranked.iter().enumerate().map(|(rank, r)| {
            json!({
                "analyzer": r.analyzer,
                "rank": rank + 1,
                "aopc_morf": {"mean": r.morf.0, "std": r.morf.1},
                "aopc_lerf": {"mean": r.lerf.0, "std": r.lerf.1},
                "difference": {"mean": r.difference.0, "std": r.difference.1},
                "randomization_verdict": r.verdict,
            })
        }).collect::<Vec<_>>(),
        "random": {"mean": s.random.0, "std": s.random.1},
    })
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

    fn scores(name: &str, morf: &[f32], lerf: &[f32]) -> AnalyzerScores {
        AnalyzerScores {
            analyzer: name.into(),
            morf: morf.to_vec(),
            lerf: lerf.to_vec(),
            randomization: None,
        }
    }

    #[test]
    fn the_summary_ranks_by_mean_difference_with_population_spread() {
        // two images, two analyzers; AOPC(c) = mean over i of (c[0] - c[i])
        let image = |a: [f32; 2], b: [f32; 2]| ImageScores {
            input: "x".into(),
            class: 0,
            label: String::new(),
            logit: 1.0,
            random: vec![1.0, 0.5],
            analyzers: vec![
                scores("a", &[1.0, a[0]], &[1.0, a[1]]),
                scores("b", &[1.0, b[0]], &[1.0, b[1]]),
            ],
        };
        // a: MoRF AOPC (1-0.8)/2 = 0.1 and (1-0.6)/2 = 0.2, LeRF 0 both
        // b: MoRF AOPC 0.5 and 0.3, LeRF 0.1 both: differences 0.4, 0.2
        let s = summarize(&[image([0.8, 1.0], [0.0, 0.8]), image([0.6, 1.0], [0.4, 0.8])]);
        assert_eq!(s.ranked[0].analyzer, "b");
        assert_eq!(s.ranked[0].index, 1);
        let (m, sd) = s.ranked[0].difference;
        assert!(
            (m - 0.3).abs() < 1e-6 && (sd - 0.1).abs() < 1e-6,
            "{m} {sd}"
        );
        let (m, sd) = s.ranked[1].morf;
        assert!(
            (m - 0.15).abs() < 1e-6 && (sd - 0.05).abs() < 1e-6,
            "{m} {sd}"
        );
        assert_eq!(s.random, (0.25, 0.0));
        let doc = document("m.onnx", &Perturbation::default(), &[], &s);
        assert_eq!(doc["summary"][0]["rank"], 1);
        assert_eq!(doc["summary"][1]["analyzer"], "a");
    }
}
