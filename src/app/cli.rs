//! Command-line arguments, turned into plain configurations.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::app::commands::compare::{CompareConfig, ConceptColumns, Format};
use crate::app::commands::evaluate::EvaluateConfig;
use crate::app::commands::explain::{ClassChoice, Config};
use lrp_heatmap::analyzers::evaluate::{Perturb, Perturbation};
use lrp_heatmap::analyzers::lrp::{Channels, Probes};
use lrp_heatmap::analyzers::{all_names, Analyzer, AnalyzerParams};
use lrp_heatmap::composite::RuleParams;
use lrp_heatmap::model::BUNDLED_NAME;
use lrp_heatmap::ops::MaxPoolTies;
use lrp_heatmap::preprocess::{DecodeLimits, Normalization};
use lrp_heatmap::render::{Cmap, MapNorm, Style};

/// The flag of the library parameter `name` (`max_pixels`: `--max-pixels`).
fn flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

/// Parses the command line, noting which flags were given (not defaulted).
pub fn parse() -> std::result::Result<Args, clap::Error> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().try_get_matches()?;
    let mut args = Args::from_arg_matches(&matches).map_err(|e| e.format(&mut Args::command()))?;
    let m = matches.subcommand().map_or(&matches, |(_, m)| m);
    args.given = m
        .ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect();
    Ok(args)
}

/// The analyzer parameters that are flags of the same name.
const PARAMETER_FLAGS: &[&str] = &[
    "epsilon", "gamma", "alpha", "steps", "samples", "noise", "seed",
];

/// A library description with the parameters it lists in parentheses as
/// flags: "(samples, noise, seed)" becomes "(--samples, --noise, --seed)".
fn flags_in(what: &str) -> String {
    let mut s = what.to_string();
    for p in PARAMETER_FLAGS {
        for (open, close) in [("(", ")"), ("(", ","), (", ", ")"), (", ", ",")] {
            let f = flag(p);
            s = s.replace(&format!("{open}{p}{close}"), &format!("{open}{f}{close}"));
        }
    }
    s
}

/// A library error in the command's words: an invalid parameter named by
/// its flag ("--epsilon must be ..."), an exceeded limit with the flag that
/// raises it.
pub fn in_flags(e: anyhow::Error) -> anyhow::Error {
    use lrp_heatmap::Error;
    match Error::find(&e) {
        Some(Error::InvalidParameter { name, message }) => {
            let (lib, cli) = (
                format!("{name} {message}"),
                format!("{} {message}", flag(name)),
            );
            anyhow!("{}", format!("{e:#}").replacen(&lib, &cli, 1))
        }
        // the limit named by its flag where the message names it, else a
        // pointer to the flag
        Some(Error::LimitExceeded { name, .. }) => {
            let text = format!("{e:#}");
            let named = format!("the {name} limit");
            if text.contains(&named) {
                anyhow!(
                    "{}",
                    text.replacen(&named, &format!("the {} limit", flag(name)), 1)
                )
            } else {
                anyhow!("{text} (raise it with {})", flag(name))
            }
        }
        _ => e,
    }
}

/// The analyzer called `name`, errors in terms of flags.
fn analyzer(name: &str, params: &AnalyzerParams) -> Result<Analyzer> {
    Analyzer::from_name(name, params).map_err(|e| in_flags(e.into()))
}

fn rules_help() -> String {
    let mut s = String::from("Rules, composites and analyzers (usable wherever a rule name is):\n");
    for (name, what) in all_names() {
        let what = flags_in(what);
        s += &format!("  {name:<22} {what}\n");
    }
    s += "\nExit codes: 0 all good; 1 some input failed (others still processed); 2 usage or model error.";
    s
}

/// Explain image classifiers with Layer-wise Relevance Propagation.
#[derive(Parser, Debug)]
#[command(
    name = "lrp-heatmap",
    version,
    about,
    after_help = rules_help(),
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// Subcommands.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Image files (JPEG, PNG, WebP, BMP, TIFF, GIF) or folders of them (hidden files
    /// and our own outputs skipped).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// A rule, a composite or a gradient analyzer (see below).
    #[arg(short, long, default_value = "epsilon-plus-flat")]
    pub rule: String,

    /// Also write the raw input relevance as <stem>.<rule>.npy ([C, H, W] float32).
    #[arg(long)]
    pub raw: bool,

    /// Blend the heatmap over a grey version of the photo.
    #[arg(long)]
    pub overlay: bool,

    /// One JSON object per input on stdout (one line each, as they finish).
    #[arg(long)]
    pub json: bool,

    /// Steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,

    /// Write where the relevance went, node by node, to <stem>.<rule>.ledger.json
    /// (LRP rules and composites).
    #[arg(long)]
    pub ledger: bool,

    /// Also write the relevance at this layer (a node or tensor name, `inspect` lists
    /// them) as <stem>.<rule>.<layer>.npy, with its channels ranked in --json; repeatable.
    /// At a vision transformer's [1, T, D] token tensor also <stem>.<rule>.<layer>.tokens.npy,
    /// the [P, P] map of its patch tokens; its channels are the D embedding dimensions.
    #[arg(long, value_name = "NODE")]
    pub layer: Vec<String>,

    /// Explain one concept: at layer NODE pass on only the relevance of channels K
    /// (the heatmap shows where the concept sits in the image; embedding dimensions K
    /// of a vision transformer's token tensor).
    #[arg(long, value_name = "NODE:K[,K...]")]
    pub concept: Option<Channels>,

    /// Start at the activations of channels K of layer NODE instead of the logit
    /// (what the channel detects in this image).
    #[arg(long, value_name = "NODE:K[,K...]")]
    pub start: Option<Channels>,

    /// Images explained in parallel [default: one per core].
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Images per forward and backward pass: a batch reads each layer's weights
    /// once for all its images (--jobs batches run in parallel) [default: batch
    /// while the weights outweigh one image's activations, within 512 MB of
    /// activations in flight (VGG16: 2, EfficientNet-Lite0: 1); 1 where the
    /// model or the analyzer takes one image at a time]
    #[arg(long, value_name = "N")]
    pub batch: Option<u32>,

    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(short, long)]
    pub quiet: bool,

    /// Skip inputs whose outputs exist already (resume a batch). Outputs are named
    /// by what they show: <stem>.<rule>[.concept-..|.start-..][.class-N][.<cmap>]
    /// [.overlay].png; parameters (--epsilon, --steps, --clip, --level, ...) do not
    /// change names, so a run with other parameters needs another --out.
    #[arg(long)]
    pub skip_existing: bool,

    /// Write outputs into DIR instead of next to each input (folders mirrored below it).
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Explain only part K of N of the inputs (0-based), one task of a job array
    /// (Slurm, Kubernetes indexed Jobs): the inputs, folders expanded, sorted by
    /// path, every N-th from the K-th; N runs with K = 0..N-1 explain each input
    /// once. Output collisions are checked over all inputs before the split; with
    /// --skip-existing a rerun resumes the part. Main command only (compare and
    /// evaluate make one grid or report of all their inputs).
    #[arg(long, value_name = "K/N", allow_hyphen_values = true)]
    pub shard: Option<crate::app::inputs::Shard>,

    #[command(flatten)]
    pub style: StyleArgs,

    #[command(flatten)]
    pub common: Common,

    /// The flags given on the command line (ids of the main command's or the
    /// subcommand's arguments), for the warnings about flags that do nothing.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Several analyzers side by side: one grid (PNG or HTML) per run.
    Compare(Box<CompareArgs>),
    /// Which analyzer to trust: region perturbation (AOPC, most and least
    /// relevant first, a random baseline) and the randomisation check.
    Evaluate(Box<EvaluateArgs>),
    /// Seconds per image of each analyzer and peak memory on --model (the
    /// README's table: a generated full-size VGG16 with random weights, see
    /// `bench --help`).
    Bench(BenchArgs),
    /// Known models (vgg16, ...) with their cache state.
    Models,
    /// Download a known model (or any file, by URL and SHA-256) into the cache, verified.
    Fetch(FetchArgs),
    /// The model's input, output, operator counts and how LRP handles each
    /// operator; exit code 0 if the model can be explained, 2 if not.
    #[command(long_flag = "list-ops")]
    Inspect(InspectArgs),
    /// Checks the backward passes against the forward pass on MODEL and an
    /// image (default: a seeded random input): gradient vs finite
    /// differences, LRP-0 vs gradient x input, z-plus conservation, each
    /// operator one by one. Exit code 0 if all agree, 1 if not, 2 for errors.
    Check(CheckArgs),
}

/// Arguments of `fetch`.
#[derive(ClapArgs, Debug)]
pub struct FetchArgs {
    /// A known model name (`lrp-heatmap models` lists them) or an http(s) URL.
    #[arg(value_name = "NAME|URL")]
    pub what: String,

    /// SHA-256 of the file at URL (64 hex digits); required with a URL.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// File name in the cache for a URL [default: the URL's last path segment];
    /// `--model NAME` finds it there afterwards.
    #[arg(long)]
    pub name: Option<String>,

    /// Expected size in bytes of the file at URL (checked before downloading).
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u64>,
}

/// Arguments of `inspect` (`--list-ops`).
#[derive(ClapArgs, Debug)]
pub struct InspectArgs {
    /// ONNX file path, or a known name (efficientnet-lite0: the bundled model).
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Height and width for a model whose input leaves them symbolic [default: 224x224].
    #[arg(long, value_name = "HxW")]
    pub input_size: Option<String>,

    /// Also run `check` on a random input when the model loads (exit code 1 if it fails).
    #[arg(long)]
    pub verify: bool,

    /// List the relevance nodes with their output tensors and shapes (the names
    /// --layer, --concept and --start take).
    #[arg(long)]
    pub layers: bool,
}

/// Arguments of `check`.
#[derive(ClapArgs, Debug)]
pub struct CheckArgs {
    /// ONNX file path, or a known name (efficientnet-lite0: the bundled model).
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Image to check at [default: a random input in the model's input range].
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,

    /// Class whose logit is checked: 0-based index or a label substring ("tabby")
    /// [default: top-1].
    #[arg(long, allow_negative_numbers = true)]
    pub class: Option<String>,

    /// Random directions of the gradient check.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub directions: u32,

    /// Seed of the random input and directions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Where max pools hand a near-tied window's gradient (as the main
    /// command's flag): the maps checked are those of this setting.
    #[arg(long, value_name = "first|split", default_value = "first", value_parser = maxpool_ties)]
    pub maxpool_ties: MaxPoolTies,

    /// The figures as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// Height and width for a model whose input leaves them symbolic [default: 224x224].
    #[arg(long, value_name = "HxW")]
    pub input_size: Option<String>,

    /// Input normalisation.
    #[command(flatten)]
    pub input_norm: NormArgs,
}

/// Arguments of `bench`.
#[derive(ClapArgs, Debug)]
pub struct BenchArgs {
    /// ONNX model to time (`cargo run --release --example synth_vgg16 -- vgg16.onnx`
    /// writes the full-size VGG16 with random weights of the README's table).
    #[arg(short, long)]
    pub model: PathBuf,

    /// Comma-separated analyzers.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "zplus,epsilon,epsilon-plus-flat"
    )]
    pub rules: Vec<String>,

    /// Timed runs per analyzer (after a warm-up run); the median is printed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,

    /// Also print where the time goes: each node's mean time in the forward pass
    /// and in each analyzer's backward walk, slowest first, with its share.
    #[arg(long)]
    pub layers: bool,

    /// Also print forward passes per second at each of these batch sizes (32
    /// inputs through evaluate's logits-only pass: batch 1 runs the inputs in
    /// parallel, batch N stacks N of them per pass).
    #[arg(long, value_delimiter = ',')]
    pub batches: Vec<u32>,
}

/// Arguments of `compare`.
#[derive(ClapArgs, Debug)]
pub struct CompareArgs {
    /// Image files or folders.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// Comma-separated analyzers, one column each.
    #[arg(long, value_delimiter = ',', default_value = crate::app::commands::compare::DEFAULT_ANALYZERS)]
    pub rules: Vec<String>,

    /// Also evaluate each analyzer's map by region perturbation (patches of 8 px,
    /// up to 100 steps, noise, --seed): its AOPC (most relevant first) on the tile,
    /// and its curves on the HTML page.
    #[arg(long)]
    pub evaluate: bool,

    /// After each LRP analyzer, the maps of concepts of layer NODE (CRP's
    /// conditional heatmaps): NODE:topN for its N most relevant channels in each
    /// image, or NODE:K[,K...] for these channels.
    #[arg(long, value_name = "NODE:topN")]
    pub concepts: Option<ConceptColumns>,

    /// Output folder of compare.png / compare.html.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,

    /// png: one grid image; html: a page with the grid, logits and relevance sums.
    #[arg(long, value_enum, default_value_t = FormatArg::Png)]
    pub format: FormatArg,

    /// Side of one tile in pixels.
    #[arg(long, default_value_t = 160, value_parser = clap::value_parser!(u32).range(16..=1024))]
    pub tile: u32,

    /// Steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,

    #[command(flatten)]
    pub style: StyleArgs,

    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `evaluate`.
#[derive(ClapArgs, Debug)]
pub struct EvaluateArgs {
    /// Image files or folders.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// Comma-separated analyzers to evaluate.
    #[arg(long, value_delimiter = ',', default_value = lrp_heatmap::analyzers::report::DEFAULT_ANALYZERS)]
    pub rules: Vec<String>,

    /// Side of the square patches perturbed, in pixels of the model input.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub patch: u32,

    /// Patches perturbed, one more per step.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub perturb_steps: u32,

    /// What replaces a patch: noise (uniform in the valid range), mean (the
    /// dataset mean) or blur (a Gaussian-blurred copy, sigma = patch / 2).
    #[arg(long, default_value = "noise")]
    pub perturb: Perturb,

    /// Also run the cascading model randomisation check.
    #[arg(long)]
    pub randomize: bool,

    /// Perturbed copies run through one forward pass (1: one at a time); the numbers
    /// do not depend on it.
    #[arg(long, value_name = "N", default_value_t = lrp_heatmap::analyzers::evaluate::DEFAULT_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub perturb_batch: u32,

    /// Steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,

    /// The old name of --steps, refused with a pointer to it.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub ig_steps: Option<String>,

    /// The old name of --perturb-batch, refused with a pointer to it.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    pub batch: Option<String>,

    /// Threads [default: one per core]; the numbers do not depend on it.
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<u32>,

    /// Output folder of evaluate.json and the plots (evaluate-curves.png/.svg, with
    /// --randomize evaluate-randomization.png/.svg).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,

    #[command(flatten)]
    pub common: Common,
}

/// `--format` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// One PNG grid.
    Png,
    /// A self-contained HTML page.
    Html,
}

/// Options shared by the main command, `compare` and `evaluate`.
#[derive(ClapArgs, Debug)]
pub struct Common {
    /// ONNX file path, or a known name (`lrp-heatmap models` lists them):
    /// efficientnet-lite0 is bundled, vgg16 and vgg16-12 are downloaded on
    /// first use into the cache.
    #[arg(short, long, default_value = BUNDLED_NAME)]
    pub model: PathBuf,

    /// Never touch the network: a known model must be in the cache already
    /// (also LRP_HEATMAP_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,

    /// Class to explain: 0-based index or a label substring ("tabby"). Default: top-1.
    #[arg(long, allow_negative_numbers = true)]
    pub class: Option<String>,

    /// Descend into sub-folders of folder inputs.
    #[arg(long)]
    pub recursive: bool,

    /// Epsilon of the epsilon rule.
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub epsilon: f32,

    /// Gamma of the gamma rule.
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    pub gamma: f32,

    /// Alpha of the alpha-beta rule (beta = alpha - 1).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub alpha: f32,

    /// Noisy samples of SmoothGrad.
    #[arg(long, default_value_t = 32)]
    pub samples: usize,

    /// SmoothGrad noise, as a fraction of the input's value range.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub noise: f32,

    /// Seed of SmoothGrad's noise; in `evaluate` and `compare --evaluate` also of
    /// the perturbation's noise, the random order and the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Where a max pool's window hands its relevance and gradient: first (all to
    /// the first maximum, PyTorch's gradient) or split (equal shares to the inputs
    /// within 1e-5, relative, of the maximum: a map that float rounding does not
    /// decide, see the near-tie warning).
    #[arg(long, value_name = "first|split", default_value = "first", value_parser = maxpool_ties)]
    pub maxpool_ties: MaxPoolTies,

    /// Input normalisation.
    #[command(flatten)]
    pub input_norm: NormArgs,

    /// Height and width fed to a model whose input leaves them symbolic
    /// (images are resized to it) [default: 224x224].
    #[arg(long, value_name = "HxW")]
    pub input_size: Option<String>,

    /// Refuse images with more pixels than N (read from the header, before
    /// decoding); decoding may allocate 8 bytes per pixel of it, at least
    /// 512 MiB. Suffixes k, M, G.
    #[arg(
        long,
        value_name = "N",
        default_value = "64M",
        allow_hyphen_values = true
    )]
    pub max_pixels: String,
}

/// How maps are drawn, for the commands that draw them (the main command
/// and `compare`).
#[derive(ClapArgs, Debug)]
pub struct StyleArgs {
    /// Colour map: for signed maps (the LRP rules, gradient x input, integrated
    /// gradients) bwr, seismic, coldnhot or a colorous diverging scheme; for
    /// unsigned maps, drawn as |R| (gradient, smoothgrad, guided-backprop), hot,
    /// viridis, inferno or greys [default: bwr for signed maps, hot for unsigned].
    #[arg(long)]
    pub cmap: Option<String>,

    /// Normalisation of signed maps: symmetric, absolute or unaligned (as Zennit's
    /// imgify).
    #[arg(long, default_value = "symmetric")]
    pub norm: String,

    /// Scale each map by this percentile of |R|: values beyond it saturate (100: the
    /// maximum, as Zennit; 99.5 keeps a few extreme pixels from paling the rest).
    #[arg(long, value_name = "Q", default_value_t = lrp_heatmap::render::DEFAULT_CLIP)]
    pub clip: f32,

    /// Saturate earlier: values are multiplied by LEVEL before clipping.
    #[arg(long, default_value_t = 1.0)]
    pub level: f32,
}

/// `--maxpool-ties first|split`.
fn maxpool_ties(s: &str) -> Result<MaxPoolTies> {
    MaxPoolTies::from_name(s).map_err(|e| in_flags(e.into()))
}

/// `--input-size HxW` (or a single side for a square).
fn input_size(s: &str) -> Result<[usize; 2]> {
    let parts: Vec<&str> = s.split(['x', 'X']).map(str::trim).collect();
    let side = |p: &str| -> Result<usize> {
        match p.parse::<usize>() {
            Ok(v) if (1..=8192).contains(&v) => Ok(v),
            _ => bail!("--input-size: '{p}' is not a side between 1 and 8192"),
        }
    };
    match parts.as_slice() {
        [h, w] => Ok([side(h)?, side(w)?]),
        [s] => Ok([side(s)?; 2]),
        _ => bail!("--input-size needs HxW, e.g. 224x224, got '{s}'"),
    }
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

/// What `fetch` downloads: a registry entry, or a URL with its checksum.
fn fetch_target(f: &FetchArgs) -> Result<crate::app::fetch::Target> {
    if f.what.contains("://") {
        let Some(sha) = &f.sha256 else {
            bail!(
                "fetch {}: a URL needs --sha256 HEX (the file's SHA-256) so the download can be verified",
                f.what
            );
        };
        return crate::app::fetch::Target::from_url(&f.what, sha, f.name.as_deref(), f.size);
    }
    if f.sha256.is_some() || f.name.is_some() || f.size.is_some() {
        bail!(
            "fetch {}: --sha256, --name and --size go with a URL; a known model has its own",
            f.what
        );
    }
    crate::app::registry::target(&f.what)
}

/// `--mean` and `--std`, shared by the commands that read images.
#[derive(ClapArgs, Debug, Clone)]
pub struct NormArgs {
    /// Input normalisation mean, R,G,B.
    #[arg(
        long,
        value_name = "R,G,B",
        default_value = "0.485,0.456,0.406",
        allow_hyphen_values = true
    )]
    pub mean: String,

    /// Input normalisation standard deviation, R,G,B.
    #[arg(
        long,
        value_name = "R,G,B",
        default_value = "0.229,0.224,0.225",
        allow_hyphen_values = true
    )]
    pub std: String,
}

impl NormArgs {
    fn norm(&self) -> Result<Normalization> {
        let mean = triple(&self.mean, "mean")?;
        let std = triple(&self.std, "std")?;
        if std.iter().any(|&s| s <= 0.0) {
            bail!("--std values must be > 0, got {}", self.std);
        }
        Ok(Normalization { mean, std })
    }
}

impl Common {
    fn norm(&self) -> Result<Normalization> {
        self.input_norm.norm()
    }

    /// The analyzer parameters, integrated gradients with `steps` points.
    fn params(&self, steps: usize) -> AnalyzerParams {
        AnalyzerParams {
            rule: RuleParams {
                epsilon: self.epsilon,
                gamma: self.gamma,
                alpha: self.alpha,
            },
            steps,
            samples: self.samples,
            noise: self.noise,
            seed: self.seed,
            maxpool_ties: self.maxpool_ties,
        }
    }
}

/// Which analyzers draw signed maps and which unsigned ones, for messages.
fn map_kinds() -> String {
    let params = AnalyzerParams::default();
    let unsigned: Vec<&str> = all_names()
        .map(|(name, _)| *name)
        .filter(|name| Analyzer::from_name(name, &params).is_ok_and(|a| !a.signed()))
        .collect();
    format!(
        "signed maps (the LRP rules, gradient-x-input, integrated-gradients) take {}; \
         unsigned maps ({}) take {}",
        lrp_heatmap::render::SIGNED_CMAPS.join(", "),
        unsigned.join(", "),
        lrp_heatmap::render::UNSIGNED_CMAPS.join(", ")
    )
}

impl StyleArgs {
    /// The style of maps of the `analyzers`; a `--cmap` that none of them
    /// draws (a sequential map for signed maps only, a diverging one for
    /// unsigned maps only) is refused.
    fn style(&self, analyzers: &[Analyzer]) -> Result<Style> {
        let mut style = Style::default();
        if let Some(name) = &self.cmap {
            let cmap = Cmap::parse(name).with_context(|| format!("--cmap {name}"))?;
            let wanted = cmap.is_diverging();
            if !analyzers.iter().any(|a| a.signed() == wanted) {
                let names: Vec<String> = analyzers.iter().map(Analyzer::name).collect();
                bail!(
                    "--cmap {name}: {} draw{} {} maps, which {name} does not colour: {}",
                    names.join(", "),
                    if names.len() == 1 { "s" } else { "" },
                    if wanted { "unsigned" } else { "signed" },
                    map_kinds()
                );
            }
            if wanted {
                style.cmap = cmap;
            } else {
                style.unsigned_cmap = cmap;
            }
        }
        style.norm = MapNorm::parse(&self.norm).with_context(|| format!("--norm {}", self.norm))?;
        if !(self.level.is_finite() && self.level > 0.0) {
            bail!("--level must be a finite number > 0, got {}", self.level);
        }
        style.level = self.level;
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip <= 100.0) {
            bail!("--clip must be a percentile in (0, 100], got {}", self.clip);
        }
        style.clip = self.clip;
        Ok(style)
    }
}

impl Common {
    fn input_size(&self) -> Result<Option<[usize; 2]>> {
        self.input_size.as_deref().map(input_size).transpose()
    }

    fn limits(&self) -> Result<DecodeLimits> {
        let max_pixels = DecodeLimits::parse_pixels(&self.max_pixels).context("--max-pixels")?;
        Ok(DecodeLimits { max_pixels })
    }

    fn class(&self) -> ClassChoice {
        self.class
            .clone()
            .map_or(ClassChoice::Top, ClassChoice::Query)
    }
}

/// What to run.
pub enum Job {
    /// Explain each input with one analyzer.
    Explain(Config),
    /// Compare analyzers in a grid.
    Compare(CompareConfig),
    /// Evaluate analyzers by region perturbation.
    Evaluate(EvaluateConfig),
    /// Time analyzers.
    Bench(crate::app::commands::bench::BenchConfig),
    /// List the known models.
    Models,
    /// Download a file into the cache.
    Fetch(crate::app::fetch::Target),
    /// List a model's operators and whether it is supported (and, with
    /// `true`, check its backward passes).
    Inspect(crate::app::commands::inspect::InspectConfig, bool),
    /// Check the backward passes against the forward pass (the class, when
    /// given as a label, is looked up once the model is loaded).
    Check(
        lrp_heatmap::analyzers::selfcheck::CheckConfig,
        Option<String>,
    ),
}

impl Args {
    /// Whether `--offline` was given (`LRP_HEATMAP_OFFLINE` is read where the
    /// download would happen).
    pub fn offline(&self) -> bool {
        match &self.command {
            None => self.common.offline,
            Some(Command::Compare(c)) => c.common.offline,
            Some(Command::Evaluate(c)) => c.common.offline,
            Some(_) => false,
        }
    }

    /// The run's configuration, validated.
    pub fn into_job(self) -> Result<Job> {
        if let Some(Command::Models) = self.command {
            return Ok(Job::Models);
        }
        if let Some(Command::Fetch(f)) = self.command {
            return Ok(Job::Fetch(fetch_target(&f)?));
        }
        if let Some(Command::Inspect(i)) = self.command {
            return Ok(Job::Inspect(
                crate::app::commands::inspect::InspectConfig {
                    model: i.model,
                    input_size: i.input_size.as_deref().map(input_size).transpose()?,
                    layers: i.layers,
                },
                i.verify,
            ));
        }
        if let Some(Command::Check(c)) = self.command {
            let norm = c.input_norm.norm()?;
            // an index now; a label once the model is loaded
            let (class, label) = match c.class {
                None => (None, None),
                Some(q) => match q.trim().parse::<usize>() {
                    Ok(i) => (Some(i), None),
                    Err(_) => (None, Some(q)),
                },
            };
            return Ok(Job::Check(
                lrp_heatmap::analyzers::selfcheck::CheckConfig {
                    model: c.model,
                    image: c.image,
                    input_size: c.input_size.as_deref().map(input_size).transpose()?,
                    options: lrp_heatmap::analyzers::selfcheck::CheckOptions {
                        class,
                        directions: c.directions as usize,
                        seed: c.seed,
                        norm,
                        maxpool_ties: c.maxpool_ties,
                    },
                    json: c.json,
                },
                label,
            ));
        }
        if let Some(Command::Bench(b)) = self.command {
            let params = AnalyzerParams::default();
            let analyzers = b
                .rules
                .iter()
                .map(|name| analyzer(name, &params))
                .collect::<Result<_>>()?;
            return Ok(Job::Bench(crate::app::commands::bench::BenchConfig {
                model: b.model,
                analyzers,
                runs: b.runs as usize,
                layers: b.layers,
                batches: b
                    .batches
                    .iter()
                    .map(|&n| {
                        anyhow::ensure!(
                            (1..=256).contains(&n),
                            "--batches: a batch size is 1 to 256, got {n}"
                        );
                        Ok(n as usize)
                    })
                    .collect::<Result<_>>()?,
            }));
        }
        if let Some(Command::Evaluate(c)) = self.command {
            let c = *c;
            if c.ig_steps.is_some() {
                bail!("evaluate --ig-steps is now --steps (integrated gradients' steps, as in the other commands); the perturbation's steps are --perturb-steps");
            }
            if c.batch.is_some() {
                bail!("evaluate --batch is now --perturb-batch (perturbed copies per forward pass); --batch is images per pass in the main command");
            }
            let params = c.common.params(c.steps);
            let analyzers = c
                .rules
                .iter()
                .map(|name| analyzer(name, &params))
                .collect::<Result<_>>()?;
            return Ok(Job::Evaluate(EvaluateConfig {
                inputs: c.inputs,
                recursive: c.common.recursive,
                model: c.common.model.clone(),
                analyzers,
                class: c.common.class(),
                norm: c.common.norm()?,
                limits: c.common.limits()?,
                out_dir: c.out,
                spec: Perturbation {
                    patch: c.patch as usize,
                    steps: c.perturb_steps as usize,
                    mode: c.perturb,
                    // one seed: SmoothGrad's noise, the perturbation's, the
                    // random order and the random weights
                    seed: c.common.seed,
                    batch: c.perturb_batch as usize,
                },
                randomize: c.randomize,
                input_size: c.common.input_size()?,
                jobs: match c.jobs {
                    Some(0) => anyhow::bail!("--jobs: at least 1 thread, got 0"),
                    j => j.map(|j| j as usize),
                },
            }));
        }
        if let Some(Command::Compare(c)) = self.command {
            let c = *c;
            let params = c.common.params(c.steps);
            let analyzers = c
                .rules
                .iter()
                .map(|name| analyzer(name, &params))
                .collect::<Result<Vec<_>>>()?;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let style = c.style.style(&analyzers)?;
            return Ok(Job::Compare(CompareConfig {
                inputs: c.inputs,
                recursive: c.common.recursive,
                model: c.common.model.clone(),
                analyzers,
                class: c.common.class(),
                norm: c.common.norm()?,
                style,
                tile: c.tile,
                limits: c.common.limits()?,
                out_dir: c.out,
                format: match c.format {
                    FormatArg::Png => Format::Png,
                    FormatArg::Html => Format::Html,
                },
                command,
                input_size: c.common.input_size()?,
                concepts: c.concepts,
                evaluate: c.evaluate.then_some(Perturbation {
                    seed: c.common.seed,
                    ..Perturbation::default()
                }),
            }));
        }
        // the analyzer name and parameters are checked before any model is loaded
        let params = self.common.params(self.steps);
        let analyzer = analyzer(&self.rule, &params)?;
        let style = self.style.style(std::slice::from_ref(&analyzer))?;
        let drawn = style.pick(analyzer.signed()).0;
        let cmap =
            (drawn != Style::default().pick(analyzer.signed()).0).then(|| drawn.name().to_string());
        Ok(Job::Explain(Config {
            inputs: self.inputs,
            model: self.common.model.clone(),
            analyzer,
            class: self.common.class(),
            out_dir: self.out,
            raw: self.raw,
            overlay: self.overlay,
            norm: self.common.norm()?,
            style,
            cmap,
            json: self.json,
            ledger: self.ledger,
            probes: Probes {
                layers: self.layer,
                concept: self.concept,
                start: self.start,
            },
            recursive: self.common.recursive,
            jobs: self.jobs.map(|j| j as usize),
            batch: match self.batch {
                Some(0) => anyhow::bail!("--batch: at least 1 image, got 0"),
                b => b.map(|b| b as usize),
            },
            quiet: self.quiet,
            skip_existing: self.skip_existing,
            shard: self.shard,
            input_size: self.common.input_size()?,
            limits: self.common.limits()?,
        }))
    }

    /// One line for each flag given that does nothing in this run (the
    /// main command): a parameter the analyzer does not read, `--class`
    /// with `--start`.
    pub fn warnings(&self) -> Vec<String> {
        if self.command.is_some() {
            return Vec::new();
        }
        let params = self.common.params(self.steps);
        let mut warnings: Vec<String> = idle_parameters(&self.rule, &params, &self.given)
            .into_iter()
            .map(|f| format!("{f} does nothing with {}", self.rule))
            .collect();
        if self.start.is_some() && self.common.class.is_some() {
            warnings.push(
                "--class does nothing with --start (the start channels' activations are explained, not a class)"
                    .into(),
            );
        }
        warnings
    }
}

/// The flags among `given` (argument ids) of the analyzer parameters that
/// `name` does not read with `params`: changing them makes the same analyzer.
fn idle_parameters(name: &str, params: &AnalyzerParams, given: &[String]) -> Vec<String> {
    let Ok(base) = Analyzer::from_name(name, params) else {
        return Vec::new();
    };
    let changed = |p: &str| -> Option<AnalyzerParams> {
        let mut q = *params;
        match p {
            "epsilon" => q.rule.epsilon += 1.0,
            "gamma" => q.rule.gamma += 1.0,
            "alpha" => q.rule.alpha += 1.0,
            "steps" => q.steps += 1,
            "samples" => q.samples += 1,
            "noise" => q.noise += 1.0,
            "seed" => q.seed = q.seed.wrapping_add(1),
            _ => return None,
        }
        Some(q)
    };
    PARAMETER_FLAGS
        .iter()
        .filter(|p| given.iter().any(|g| g == *p))
        .filter(|p| {
            changed(p)
                .and_then(|q| Analyzer::from_name(name, &q).ok())
                .is_some_and(|a| a == base)
        })
        .map(|p| flag(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_flags() {
        assert_eq!(flag("max_pixels"), "--max-pixels");
        assert_eq!(
            flags_in("noisy copies (samples, noise, seed)"),
            "noisy copies (--samples, --noise, --seed)"
        );
        assert_eq!(flags_in("LRP-0 (epsilon = 0)"), "LRP-0 (epsilon = 0)");
        assert_eq!(
            flags_in("alpha-beta (alpha, beta = alpha - 1)"),
            "alpha-beta (--alpha, beta = alpha - 1)"
        );
        let bad = AnalyzerParams {
            steps: 0,
            ..AnalyzerParams::default()
        };
        let e = analyzer("integrated-gradients", &bad).unwrap_err();
        assert_eq!(format!("{e:#}"), "--steps must be at least 1, got 0");
        let limit = anyhow::Error::new(lrp_heatmap::Error::LimitExceeded {
            name: "max_pixels",
            message: "too many".into(),
        })
        .context("cannot decode x.png");
        assert_eq!(
            format!("{:#}", in_flags(limit)),
            "cannot decode x.png: too many (raise it with --max-pixels)"
        );
    }

    #[test]
    fn idle_parameters_are_those_the_analyzer_does_not_read() {
        let given: Vec<String> = ["epsilon", "gamma", "steps", "samples", "seed"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = AnalyzerParams::default();
        // z+ reads no parameter; epsilon-gamma-box reads epsilon and gamma;
        // smoothgrad samples, noise and seed; integrated gradients steps
        assert_eq!(
            idle_parameters("zplus", &p, &given),
            ["--epsilon", "--gamma", "--steps", "--samples", "--seed"]
        );
        assert_eq!(
            idle_parameters("epsilon-gamma-box", &p, &given),
            ["--steps", "--samples", "--seed"]
        );
        assert_eq!(
            idle_parameters("smoothgrad", &p, &given),
            ["--epsilon", "--gamma", "--steps"]
        );
        assert_eq!(
            idle_parameters("integrated-gradients", &p, &given),
            ["--epsilon", "--gamma", "--samples", "--seed"]
        );
        assert!(idle_parameters("zplus", &p, &[]).is_empty());
    }
}
