//! `lrp-heatmap compare`: several analyzers side by side, one grid per run.
//!
//! Each image is decoded and run forward once; every analyzer explains the
//! same forward pass (integrated gradients and SmoothGrad run their own extra
//! passes). The grid has one row per image (the photo, then one tile per
//! analyzer) under a header naming the analyzers; `--format html` writes the
//! same grid as a self-contained page with logits and relevance sums.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use ndarray::Ix3;

use crate::app::commands::explain::{relevance_chw, ClassChoice};
use crate::app::grid::{grid_image, GridColumn, GridRow};
use crate::app::html::{encode_png, grid_html, HtmlBar, HtmlRow, HtmlTile, TileEvaluation};
use crate::app::inputs::collect;
use crate::app::labels;
use lrp_heatmap::analyzers::evaluate::{aopc, patches, region_perturbation, Perturbation};
use lrp_heatmap::analyzers::lrp::{Channels, Probes};
use lrp_heatmap::analyzers::Analyzer;
use lrp_heatmap::preprocess::{self, Normalization};
use lrp_heatmap::render::{self, Style};

/// The analyzers of iNNvestigate's "compare methods" figure, the default.
pub const DEFAULT_ANALYZERS: &str =
    "gradient,gradient-x-input,integrated-gradients,smoothgrad,guided-backprop,epsilon,zplus,epsilon-plus-flat,epsilon-gamma-box,deep-taylor";

/// The concept columns of `compare --concepts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConceptColumns {
    /// The `n` most relevant channels of `layer` in each image.
    Top {
        /// A node or tensor name.
        layer: String,
        /// How many.
        n: usize,
    },
    /// These channels.
    Channels(Channels),
}

impl ConceptColumns {
    fn layer(&self) -> &str {
        match self {
            ConceptColumns::Top { layer, .. } => layer,
            ConceptColumns::Channels(c) => &c.layer,
        }
    }

    fn count(&self) -> usize {
        match self {
            ConceptColumns::Top { n, .. } => *n,
            ConceptColumns::Channels(c) => c.channels.len(),
        }
    }
}

impl std::str::FromStr for ConceptColumns {
    type Err = String;

    /// `NODE:topN` (N in 1..=32) or `NODE:K[,K...]`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if let Some((layer, top)) = s.rsplit_once(':') {
            if let Some(n) = top.strip_prefix("top") {
                let n: usize = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .ok_or_else(|| format!("'{top}': expected top1 to top32"))?;
                if layer.is_empty() {
                    return Err(format!("no node name in '{s}'"));
                }
                return Ok(ConceptColumns::Top {
                    layer: layer.to_string(),
                    n,
                });
            }
        }
        s.parse().map(ConceptColumns::Channels)
    }
}

/// Output format of `compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One PNG grid.
    Png,
    /// A self-contained HTML page.
    Html,
}

/// Everything a compare run needs.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// Image files or folders.
    pub inputs: Vec<PathBuf>,
    /// Walk folders recursively.
    pub recursive: bool,
    /// ONNX model file (or the bundled model's name).
    pub model: PathBuf,
    /// The analyzers, in column order.
    pub analyzers: Vec<Analyzer>,
    /// Class to explain.
    pub class: ClassChoice,
    /// Input normalisation.
    pub norm: Normalization,
    /// Colours.
    pub style: Style,
    /// Side of a tile in pixels.
    pub tile: u32,
    /// Bounds on decoding each image.
    pub limits: preprocess::DecodeLimits,
    /// Output folder.
    pub out_dir: PathBuf,
    /// PNG or HTML.
    pub format: Format,
    /// The command line, shown in the HTML page.
    pub command: String,
    /// Height and width for a model with symbolic spatial dims (`None`: 224).
    pub input_size: Option<[usize; 2]>,
    /// Concept columns after each LRP analyzer.
    pub concepts: Option<ConceptColumns>,
    /// Evaluate each analyzer's map by region perturbation (the steps capped
    /// at the number of patches).
    pub evaluate: Option<Perturbation>,
}

struct Row {
    input: String,
    photo: image::RgbImage,
    label: String,
    maps: Vec<ndarray::Array2<f32>>,
    logits: Vec<f32>,
    sums: Vec<f32>,
    captions: Vec<String>,
    evaluations: Vec<Option<TileEvaluation>>,
}

/// The concept maps of `a` for one image: the relevance at the layer, then
/// one conditional explanation per channel; each with its caption
/// (`ch K  P%`: the channel's share of the layer's relevance).
fn concept_maps(
    model: &lrp_heatmap::Model,
    fwd: &lrp_heatmap::model::Forward,
    a: &Analyzer,
    class: usize,
    norm: &Normalization,
    spec: &ConceptColumns,
) -> Result<Vec<(lrp_heatmap::Explanation, String)>> {
    let layer = spec.layer().to_string();
    let probes = Probes {
        layers: vec![layer.clone()],
        ..Default::default()
    };
    let e = a.explain_probed(model, fwd, class, norm, &probes)?;
    let sums = e
        .layers
        .first()
        .map(|l| l.channel_sums())
        .unwrap_or_default();
    let total: f64 = sums.iter().map(|c| c.1).sum();
    let channels: Vec<usize> = match spec {
        ConceptColumns::Top { n, .. } => sums.iter().take(*n).map(|c| c.0).collect(),
        ConceptColumns::Channels(c) => c.channels.clone(),
    };
    channels
        .into_iter()
        .map(|k| {
            let probes = Probes {
                concept: Some(Channels {
                    layer: layer.clone(),
                    channels: vec![k],
                }),
                ..Default::default()
            };
            let e = a.explain_probed(model, fwd, class, norm, &probes)?;
            let share = sums.iter().find(|c| c.0 == k).map_or(0.0, |c| c.1);
            let pct = if total != 0.0 {
                100.0 * share / total
            } else {
                0.0
            };
            Ok((e, format!("ch {k} {pct:.0}%")))
        })
        .collect()
}

/// A value at a colour bar's end: 3 significant digits.
fn bar_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (0.01..1000.0).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

/// The colour bar of a tile as [`render::render_map`] draws `map` at
/// `tile x tile`: the same colour map ([`render::colour_bar`]) and the
/// values at its ends from the same scale ([`render::Scale`] of the resized
/// map): `-s 0 +s` for the symmetric norm, `0 .. s` for `|R|` (unsigned
/// maps and the absolute norm), `lo .. hi` for the unaligned norm.
fn html_bar(map: &ndarray::Array2<f32>, style: &Style, signed: bool, tile: u32) -> Result<HtmlBar> {
    let (_, norm) = style.pick(signed);
    let shown = if signed {
        map.clone()
    } else {
        map.mapv(f32::abs)
    };
    let sc = render::Scale::of(&render::resize_map(&shown, tile, tile), style.clip);
    let at = if style.clip >= 100.0 {
        "the maximum".to_string()
    } else {
        format!("the {}th percentile", style.clip)
    };
    let (labels, title) = match norm {
        render::MapNorm::Symmetric => (
            [
                bar_value(-sc.amax),
                "0".into(),
                format!("+{}", bar_value(sc.amax)),
            ],
            format!("colour scale: R from -s to +s, s = {at} of |R|"),
        ),
        render::MapNorm::Absolute => (
            ["0".into(), String::new(), bar_value(sc.amax)],
            format!("colour scale: |R| from 0 to {at} of |R|"),
        ),
        render::MapNorm::Unaligned => (
            [bar_value(sc.lo), String::new(), bar_value(sc.hi)],
            format!(
                "colour scale: R from the {}th to {at} of R",
                100.0 - style.clip
            ),
        ),
    };
    Ok(HtmlBar {
        png: encode_png(&render::colour_bar(tile, 10, style, signed))?,
        labels,
        title,
    })
}

/// Runs a comparison; returns the written file and the inputs that failed.
pub fn run_compare(
    cfg: &CompareConfig,
    err: &mut dyn Write,
) -> Result<(PathBuf, Vec<(PathBuf, String)>)> {
    let analyzers = &cfg.analyzers;
    anyhow::ensure!(!analyzers.is_empty(), "--rules names no analyzer");
    let model = lrp_heatmap::guard::boundary(&format!("model {}", cfg.model.display()), || {
        lrp_heatmap::model::LoadOptions {
            size: cfg.input_size,
            ..Default::default()
        }
        .load(&cfg.model)
        .map_err(Into::into)
    })?;
    if let Some(spec) = &cfg.concepts {
        anyhow::ensure!(
            analyzers.iter().any(|a| matches!(a, Analyzer::Lrp(_))),
            "--concepts needs an LRP rule or composite in --rules"
        );
        let probes = match spec {
            ConceptColumns::Top { layer, .. } => Probes {
                layers: vec![layer.clone()],
                ..Default::default()
            },
            ConceptColumns::Channels(c) => Probes {
                concept: Some(c.clone()),
                ..Default::default()
            },
        };
        // the parameter the library names (layer, concept) is this flag
        (probes.check(&model))
            .map_err(|e| match e {
                lrp_heatmap::Error::InvalidParameter { message, .. } => {
                    anyhow!("--concepts {message}")
                }
                e => e.into(),
            })
            .with_context(|| format!("model {}", cfg.model.display()))?;
    }
    let names = labels::for_classes(model.classes);
    if let ClassChoice::Query(q) = &cfg.class {
        labels::find_class(&names, q)
            .map_err(|e| anyhow!("--class {q}: {e} (model {})", cfg.model.display()))?;
    }
    let all: Vec<String> = analyzers.iter().map(Analyzer::name).collect();
    let skip: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut jobs = collect(&cfg.inputs, cfg.recursive, None, &skip)?;
    // the grid this run writes is never one of its inputs (a folder
    // compared into itself twice)
    let out_file = cfg.out_dir.join(match cfg.format {
        Format::Png => "compare.png",
        Format::Html => "compare.html",
    });
    let out_id = crate::app::inputs::identity(&out_file);
    jobs.retain(|j| {
        let own = crate::app::inputs::identity(&j.input) == out_id;
        if own {
            let _ = writeln!(
                err,
                "note: skipping {}, the output of this run",
                j.input.display()
            );
        }
        !own
    });
    let spec = &model.input;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for job in &jobs {
        let what = job.input.display().to_string();
        let row = lrp_heatmap::guard::boundary(&what, || {
            (|| -> Result<Row> {
                let photo = preprocess::load_image_with(&job.input, &cfg.limits)?;
                let x = model.tensor(&photo, &cfg.norm)?;
                let fwd = model.forward(x)?;
                let class = match &cfg.class {
                    ClassChoice::Top => fwd.top_k(1)[0].0,
                    ClassChoice::Query(q) => {
                        labels::find_class(&names, q).map_err(|e| anyhow!("--class {q}: {e}"))?
                    }
                };
                let mut row = Row {
                    input: job.input.display().to_string(),
                    photo,
                    label: format!("{} {}", class, names[class]),
                    maps: vec![],
                    logits: vec![],
                    sums: vec![],
                    captions: vec![],
                    evaluations: vec![],
                };
                let mut push = |e: &lrp_heatmap::Explanation,
                                caption: String,
                                evaluation: Option<TileEvaluation>|
                 -> Result<()> {
                    let chw = relevance_chw(&e.relevance, spec.layout)?;
                    row.maps.push(render::channel_sum(
                        chw.view().into_dimensionality::<Ix3>()?,
                    ));
                    row.logits.push(e.logit);
                    row.sums.push(e.relevance_sum);
                    row.captions.push(caption);
                    row.evaluations.push(evaluation);
                    Ok(())
                };
                for a in analyzers {
                    let e = a
                        .explain(&model, &fwd, class, &cfg.norm)
                        .with_context(|| format!("analyzer {}", a.name()))?;
                    let evaluation = match &cfg.evaluate {
                        Some(spec) => {
                            // the map as it is shown: |R| for unsigned analyzers
                            let map = if a.signed() {
                                e.relevance.clone()
                            } else {
                                e.relevance.mapv(f32::abs)
                            };
                            // at most as many steps as patches
                            let n =
                                patches(fwd.input.shape(), model.input.layout, spec.patch)?.len();
                            let spec = Perturbation {
                                steps: spec.steps.min(n),
                                ..*spec
                            };
                            let c = region_perturbation(
                                &model, &fwd.input, class, &map, &cfg.norm, &spec,
                            )
                            .with_context(|| format!("evaluating {}", a.name()))?;
                            Some(TileEvaluation {
                                aopc_morf: aopc(&c.morf),
                                morf: c.morf,
                                lerf: c.lerf,
                            })
                        }
                        None => None,
                    };
                    let caption = evaluation
                        .as_ref()
                        .map_or(String::new(), |t| format!("AOPC {:.2}", t.aopc_morf));
                    push(&e, caption, evaluation)?;
                    if let (Some(spec), Analyzer::Lrp(_)) = (&cfg.concepts, a) {
                        let maps = concept_maps(&model, &fwd, a, class, &cfg.norm, spec)
                            .map_err(crate::app::cli::in_flags)
                            .with_context(|| format!("concepts of {}", a.name()))?;
                        for (e, caption) in &maps {
                            push(e, caption.clone(), None)?;
                        }
                        // too few channels: empty columns
                        for _ in maps.len()..spec.count() {
                            push(&e.clone(), "-".into(), None)?;
                        }
                    }
                }
                Ok(row)
            })()
            .with_context(|| format!("{}", job.input.display()))
        });
        match row {
            Ok(r) => rows.push(r),
            Err(e) => {
                let e = crate::app::cli::in_flags(e);
                writeln!(err, "error: {e:#}")?;
                failed.push((job.input.clone(), format!("{e:#}")));
            }
        }
    }
    anyhow::ensure!(!rows.is_empty(), "no input could be explained");
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("cannot create output folder {}", cfg.out_dir.display()))?;
    let mut columns: Vec<GridColumn> = Vec::new();
    for a in analyzers {
        columns.push(GridColumn {
            name: a.name(),
            signed: a.signed(),
        });
        if let (Some(spec), Analyzer::Lrp(_)) = (&cfg.concepts, a) {
            for k in 0..spec.count() {
                let name = match spec {
                    ConceptColumns::Top { .. } => format!("concept #{}", k + 1),
                    ConceptColumns::Channels(c) => format!("channel {}", c.channels[k]),
                };
                columns.push(GridColumn { name, signed: true });
            }
        }
    }
    let path = match cfg.format {
        Format::Png => {
            let grid_rows: Vec<GridRow> = rows
                .into_iter()
                .map(|r| GridRow {
                    photo: r.photo,
                    label: r.label,
                    maps: r.maps,
                    captions: r.captions,
                })
                .collect();
            let img = grid_image(&grid_rows, &columns, &cfg.style, cfg.tile)?;
            let path = out_file;
            crate::app::output::save_png(&img, &path)?;
            path
        }
        Format::Html => {
            let mut html_rows = Vec::new();
            for r in &rows {
                let mut tiles = Vec::new();
                for (i, c) in columns.iter().enumerate() {
                    let img =
                        render::render_map(&r.maps[i], cfg.tile, cfg.tile, &cfg.style, c.signed);
                    // the AOPC caption of the PNG is on the page anyway
                    let caption = match &r.evaluations[i] {
                        Some(_) => String::new(),
                        None => r.captions[i].clone(),
                    };
                    tiles.push(HtmlTile {
                        evaluation: r.evaluations[i].clone(),
                        name: c.name.clone(),
                        caption,
                        png: encode_png(&img)?,
                        logit: r.logits[i],
                        // |R| maps: their sum means nothing
                        relevance_sum: c.signed.then_some(r.sums[i]),
                        bar: Some(html_bar(&r.maps[i], &cfg.style, c.signed, cfg.tile)?),
                    });
                }
                let photo = image::imageops::resize(
                    &r.photo,
                    cfg.tile,
                    cfg.tile,
                    image::imageops::FilterType::Triangle,
                );
                html_rows.push(HtmlRow {
                    input: r.input.clone(),
                    label: r.label.clone(),
                    photo_png: encode_png(&photo)?,
                    tiles,
                });
            }
            let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
            let page = grid_html(&html_rows, &names, &cfg.command);
            let path = out_file;
            crate::app::output::write_atomic(&path, |w| Ok(w.write_all(page.as_bytes())?))?;
            path
        }
    };
    Ok((path, failed))
}
