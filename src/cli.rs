//! Command-line arguments, turned into a plain [`Config`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;

use lrp_heatmap::app::{ClassChoice, Config};
use lrp_heatmap::composite::{RuleParams, NAMES};
use lrp_heatmap::model::BUNDLED_NAME;
use lrp_heatmap::preprocess::Normalization;

fn rules_help() -> String {
    let mut s = String::from("Rules and composites:\n");
    for (name, what) in NAMES {
        s += &format!("  {name:<22} {what}\n");
    }
    s += "\nExit codes: 0 all good; 1 some input failed (others still processed); 2 usage or model error.";
    s
}

/// Explain image classifiers with Layer-wise Relevance Propagation.
#[derive(Parser, Debug)]
#[command(name = "lrp-heatmap", version, about, after_help = rules_help())]
pub struct Args {
    /// Image files (JPEG, PNG, WebP, BMP, TIFF) or folders of them (hidden files
    /// and our own outputs skipped).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// ONNX file path, or a known name (efficientnet-lite0: the bundled model).
    #[arg(short, long, default_value = BUNDLED_NAME)]
    pub model: PathBuf,

    /// A rule or a composite (see below).
    #[arg(short, long, default_value = "epsilon-plus-flat")]
    pub rule: String,

    /// Class to explain: 0-based index or a label substring ("tabby"). Default: top-1.
    #[arg(long)]
    pub class: Option<String>,

    /// Write outputs into DIR instead of next to each input.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Also write the raw input relevance as <stem>.<rule>.npy ([C, H, W] float32).
    #[arg(long)]
    pub raw: bool,

    /// Blend the heatmap over a grey version of the photo.
    #[arg(long)]
    pub overlay: bool,

    /// Epsilon of the epsilon rule.
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub epsilon: f32,

    /// Gamma of the gamma rule.
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub gamma: f32,

    /// Alpha of the alpha-beta rule (beta = alpha - 1).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub alpha: f32,

    /// Input normalisation mean, R,G,B.
    #[arg(long, value_name = "R,G,B", default_value = "0.485,0.456,0.406")]
    pub mean: String,

    /// Input normalisation standard deviation, R,G,B.
    #[arg(long, value_name = "R,G,B", default_value = "0.229,0.224,0.225")]
    pub std: String,

    /// One JSON object per input on stdout (one line each, as they finish).
    #[arg(long)]
    pub json: bool,

    /// Descend into sub-folders of folder inputs.
    #[arg(long)]
    pub recursive: bool,

    /// Images explained in parallel [default: one per core].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(short, long)]
    pub quiet: bool,

    /// Skip inputs whose outputs exist already (resume a batch).
    #[arg(long)]
    pub skip_existing: bool,
}

fn triple(s: &str, what: &str) -> Result<[f32; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        bail!("--{what} needs three comma-separated numbers R,G,B, got '{s}'");
    }
    let mut out = [0.0f32; 3];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = p
            .parse()
            .with_context(|| format!("--{what}: '{p}' is not a number"))?;
        if !o.is_finite() {
            bail!("--{what}: '{p}' is not a finite number");
        }
    }
    Ok(out)
}

impl Args {
    /// The run's configuration, validated.
    pub fn into_config(self) -> Result<Config> {
        let mean = triple(&self.mean, "mean")?;
        let std = triple(&self.std, "std")?;
        if std.iter().any(|&s| s <= 0.0) {
            bail!("--std values must be > 0, got {}", self.std);
        }
        let params = RuleParams {
            epsilon: self.epsilon,
            gamma: self.gamma,
            alpha: self.alpha,
        };
        // validates the rule name and parameters before any model is loaded
        lrp_heatmap::composite::Composite::from_name(&self.rule, &params)?;
        Ok(Config {
            inputs: self.inputs,
            model: self.model,
            rule: self.rule,
            params,
            class: self.class.map_or(ClassChoice::Top, ClassChoice::Query),
            out_dir: self.out,
            raw: self.raw,
            overlay: self.overlay,
            norm: Normalization { mean, std },
            json: self.json,
            recursive: self.recursive,
            jobs: self.jobs.map(|j| j as usize),
            quiet: self.quiet,
            skip_existing: self.skip_existing,
        })
    }
}
