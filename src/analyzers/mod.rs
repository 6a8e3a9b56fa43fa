//! Analyzers: an LRP composite or a method of the gradient family, chosen by
//! name wherever a rule name is accepted.

pub(crate) mod bounds;
pub mod evaluate;
pub mod gradient;
pub mod ledger;
pub mod lrp;
pub mod report;
pub mod selfcheck;

use anyhow::Result;
use ndarray::{ArrayD, Axis, IxDyn};

use crate::analyzers::gradient::{
    input_gradient, input_gradient_rows, integrated_gradients, smoothgrad, GradientMode,
    GradientOptions,
};
use crate::analyzers::lrp::{explain_rows, explain_with, Explanation, Probes};
use crate::composite::{Composite, RuleParams, NAMES};
use crate::error::Error;
use crate::model::{Forward, InputSpec, Model};
use crate::ops::MaxPoolTies;
use crate::preprocess::{Layout, Normalization};

/// The gradient-family analyzers with a one-line description.
pub const GRADIENT_NAMES: &[(&str, &str)] = &[
    ("gradient", "d logit / d input, shown as |gradient|"),
    ("gradient-x-input", "input times gradient (signed)"),
    (
        "integrated-gradients",
        "(input - black) times the mean gradient on the straight path from a black image (steps)",
    ),
    (
        "smoothgrad",
        "mean gradient over noisy copies of the input, shown as |.| (samples, noise, seed)",
    ),
    (
        "guided-backprop",
        "gradient passing only positive gradients through ReLU/ReLU6, shown as |.|",
    ),
];

/// Parameters of all analyzers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalyzerParams {
    /// Parameters of the LRP rules.
    pub rule: RuleParams,
    /// Integrated gradients: number of points on the path (>= 1).
    pub steps: usize,
    /// SmoothGrad: number of noisy samples (>= 1).
    pub samples: usize,
    /// SmoothGrad: noise standard deviation as a fraction of the input's
    /// range (max - min), finite and >= 0.
    pub noise: f32,
    /// SmoothGrad: seed of the noise.
    pub seed: u64,
    /// Where a max pool's window hands its relevance or gradient (every
    /// analyzer).
    pub maxpool_ties: MaxPoolTies,
}

impl AnalyzerParams {
    /// [`Error::InvalidParameter`] for no steps or samples, or a negative
    /// noise (the rule parameters are checked by the composites that read
    /// them, [`RuleParams::validate`]).
    pub fn validate(&self) -> crate::Result<()> {
        let (steps, samples, noise) = (self.steps, self.samples, self.noise);
        Error::check(steps >= 1, "steps", || {
            format!("must be at least 1, got {steps}")
        })?;
        Error::check(samples >= 1, "samples", || {
            format!("must be at least 1, got {samples}")
        })?;
        Error::check(noise.is_finite() && noise >= 0.0, "noise", || {
            format!("must be a finite number >= 0, got {noise}")
        })
    }
}

impl Default for AnalyzerParams {
    fn default() -> Self {
        AnalyzerParams {
            rule: RuleParams::default(),
            steps: 32,
            samples: 32,
            noise: 0.1,
            seed: 0,
            maxpool_ties: MaxPoolTies::First,
        }
    }
}

/// How an explanation is computed: parsed from a name once
/// ([`Analyzer::from_name`]), then run on forward passes
/// ([`Analyzer::explain`]).
///
/// ```
/// use lrp_heatmap::{analyzers::AnalyzerParams, Analyzer, Model};
///
/// let params = AnalyzerParams { samples: 8, ..Default::default() };
/// let a = Analyzer::from_name("smoothgrad", &params)?;
/// let ties = Default::default(); // max pools: the first maximum, as PyTorch
/// assert_eq!(a, Analyzer::SmoothGrad { samples: 8, noise: 0.1, seed: 0, ties });
/// assert!(!a.signed()); // shown as |R|
///
/// let model = Model::load("efficientnet-lite0")?;
/// let image = image::open("images/cat.jpg").expect("the photo").to_rgb8();
/// let norm = Default::default();
/// let forward = model.forward(model.tensor(&image, &norm)?)?;
/// let e = Analyzer::from_name("gradient", &params)?.explain(&model, &forward, 285, &norm)?;
/// assert_eq!(e.relevance.shape(), model.input.shape.as_slice());
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Analyzer {
    /// Layer-wise relevance propagation with a composite.
    Lrp(Composite),
    /// The gradient of the logit with respect to the input.
    Gradient {
        /// Where a max pool's window hands its gradient.
        ties: MaxPoolTies,
    },
    /// Input times gradient.
    GradientXInput {
        /// Where a max pool's window hands its gradient.
        ties: MaxPoolTies,
    },
    /// Integrated gradients from a black image (in the normalised space).
    IntegratedGradients {
        /// Points on the path (right Riemann sum).
        steps: usize,
        /// Where a max pool's window hands its gradient.
        ties: MaxPoolTies,
    },
    /// SmoothGrad: mean gradient over noisy inputs.
    SmoothGrad {
        /// Number of noisy samples.
        samples: usize,
        /// Noise standard deviation as a fraction of the input range.
        noise: f32,
        /// Seed of the noise.
        seed: u64,
        /// Where a max pool's window hands its gradient.
        ties: MaxPoolTies,
    },
    /// Guided backprop.
    GuidedBackprop {
        /// Where a max pool's window hands its gradient.
        ties: MaxPoolTies,
    },
}

/// Every analyzer name (rules, composites, gradient family) with its description.
pub fn all_names() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    NAMES.iter().chain(GRADIENT_NAMES)
}

impl Analyzer {
    /// The analyzer called `name` (a rule, a composite or a gradient-family
    /// name), with parameters `p`.
    pub fn from_name(name: &str, p: &AnalyzerParams) -> crate::Result<Analyzer> {
        p.validate()?;
        let ties = p.maxpool_ties;
        Ok(match name {
            "gradient" => Analyzer::Gradient { ties },
            "gradient-x-input" => Analyzer::GradientXInput { ties },
            "integrated-gradients" => Analyzer::IntegratedGradients {
                steps: p.steps,
                ties,
            },
            "smoothgrad" => Analyzer::SmoothGrad {
                samples: p.samples,
                noise: p.noise,
                seed: p.seed,
                ties,
            },
            "guided-backprop" => Analyzer::GuidedBackprop { ties },
            n if NAMES.iter().any(|(k, _)| *k == n) => {
                Analyzer::Lrp(Composite::from_name(n, &p.rule)?.with_max_pool_ties(ties))
            }
            other => {
                return Err(Error::UnknownAnalyzer {
                    name: other.to_string(),
                    known: all_names().map(|(n, _)| *n).collect(),
                })
            }
        })
    }

    /// The name it is known by (used in output file names).
    pub fn name(&self) -> String {
        match self {
            Analyzer::Lrp(c) => c.name.clone(),
            Analyzer::Gradient { .. } => "gradient".into(),
            Analyzer::GradientXInput { .. } => "gradient-x-input".into(),
            Analyzer::IntegratedGradients { .. } => "integrated-gradients".into(),
            Analyzer::SmoothGrad { .. } => "smoothgrad".into(),
            Analyzer::GuidedBackprop { .. } => "guided-backprop".into(),
        }
    }

    /// Where its max pools hand a window's relevance or gradient.
    pub fn maxpool_ties(&self) -> MaxPoolTies {
        match self {
            Analyzer::Lrp(c) => c.max_pool,
            Analyzer::Gradient { ties }
            | Analyzer::GradientXInput { ties }
            | Analyzer::IntegratedGradients { ties, .. }
            | Analyzer::SmoothGrad { ties, .. }
            | Analyzer::GuidedBackprop { ties } => *ties,
        }
    }

    /// Whether the sign of the attribution is meaningful (rendered red/blue);
    /// `false` for the gradient, SmoothGrad and guided backprop, rendered as |R|.
    pub fn signed(&self) -> bool {
        !matches!(
            self,
            Analyzer::Gradient { .. }
                | Analyzer::SmoothGrad { .. }
                | Analyzer::GuidedBackprop { .. }
        )
    }

    /// Explains the logit of `class` at the forward pass `fwd` of `model`.
    ///
    /// The attribution (`relevance`) has the layout of the model input and is
    /// returned signed for every analyzer (see [`Analyzer::signed`] for how to
    /// show it). `norm` gives the z^B bounds and the black baseline of
    /// integrated gradients, `(0 - mean) / std` per channel.
    pub fn explain(
        &self,
        model: &Model,
        fwd: &Forward,
        class: usize,
        norm: &Normalization,
    ) -> Result<Explanation> {
        self.explain_probed(model, fwd, class, norm, &Probes::default())
    }

    /// [`Analyzer::explain`] with `probes`: the relevance at inner layers, a
    /// concept, a start inside the graph (LRP analyzers only).
    pub fn explain_probed(
        &self,
        model: &Model,
        fwd: &Forward,
        class: usize,
        norm: &Normalization,
        probes: &Probes,
    ) -> Result<Explanation> {
        let classes = fwd.logits.len();
        if class >= classes {
            return Err(Error::ClassOutOfRange { class, classes }.into());
        }
        let graph = &model.graph;
        let relevance = match self {
            Analyzer::Lrp(c) => {
                let channels = model.input.channels;
                let cache = &model.weights;
                return explain_with(graph, fwd, class, c, norm, channels, cache, probes);
            }
            _ if *probes != Probes::default() => {
                let name = match probes {
                    Probes { start: Some(_), .. } => "start",
                    Probes {
                        concept: Some(_), ..
                    } => "concept",
                    _ => "layer",
                };
                return Err(Error::InvalidParameter {
                    name,
                    message: format!(
                        "works with LRP rules and composites, not with {}",
                        self.name()
                    ),
                }
                .into());
            }
            Analyzer::Gradient { ties } => input_gradient(graph, fwd, class, plain(*ties))?,
            Analyzer::GuidedBackprop { ties } => {
                let how = GradientOptions {
                    mode: GradientMode::Guided,
                    ties: *ties,
                };
                input_gradient(graph, fwd, class, how)?
            }
            Analyzer::GradientXInput { ties } => {
                input_gradient(graph, fwd, class, plain(*ties))? * &fwd.input
            }
            Analyzer::IntegratedGradients { steps, ties } => {
                let baseline = black(&model.input, fwd.input.shape(), norm);
                integrated_gradients(model, &fwd.input, &baseline, class, *steps, *ties)?
            }
            Analyzer::SmoothGrad {
                samples,
                noise,
                seed,
                ties,
            } => smoothgrad(model, &fwd.input, class, *samples, *noise, *seed, *ties)?,
        };
        Ok(self.finished(class, fwd.logits[class], relevance))
    }

    /// The forward pass on `input` (a batch stacked on axis 0 if `batch`)
    /// that this analyzer's backward pass needs, probing `probes`: the
    /// activations it reads and the tensors `probes` name, no more
    /// ([`Model::forward_lean`]). The inputs of ReLU and Clip nodes are
    /// dropped (the walk reads their output), unless a rule reuses them as
    /// a layer's output (epsilon, gamma).
    pub fn forward(
        &self,
        model: &Model,
        input: ArrayD<f32>,
        probes: &Probes,
        batch: bool,
    ) -> Result<Forward> {
        let reuses = |n: &crate::graph::Node| match self {
            Analyzer::Lrp(c) => matches!(
                c.rule_for(n),
                crate::rules::Rule::Epsilon { .. } | crate::rules::Rule::Gamma { .. }
            ),
            _ => false,
        };
        let graph = &model.graph;
        let names: Vec<&str> = (probes.layers.iter().map(String::as_str))
            .chain(probes.concept.iter().map(|c| c.layer.as_str()))
            .chain(probes.start.iter().map(|c| c.layer.as_str()))
            .filter_map(|l| graph.resolve(l))
            .collect();
        let lean = crate::model::Lean {
            reuses: &reuses,
            keep: &names,
        };
        model.forward_lean(input, Some(lean), batch)
    }

    /// Whether [`Analyzer::explain_rows`] takes a batch: LRP and the
    /// gradients of one backward pass (integrated gradients and SmoothGrad
    /// run passes of their own for each input).
    pub fn batches(&self) -> bool {
        matches!(
            self,
            Analyzer::Lrp(_)
                | Analyzer::Gradient { .. }
                | Analyzer::GuidedBackprop { .. }
                | Analyzer::GradientXInput { .. }
        )
    }

    /// [`Analyzer::explain_probed`] of each input of a forward pass on a
    /// batch ([`Model::forward_batch`]), `classes[i]` for input `i`, in one
    /// backward pass; each explanation as if its input had been explained
    /// alone (up to float rounding). An error for an analyzer that does not
    /// [`Analyzer::batches`].
    pub fn explain_rows(
        &self,
        model: &Model,
        fwd: &Forward,
        classes: &[usize],
        norm: &Normalization,
        probes: &Probes,
    ) -> Result<Vec<Explanation>> {
        let graph = &model.graph;
        let mode = match self {
            Analyzer::Lrp(c) => {
                let (channels, cache) = (model.input.channels, &model.weights);
                return explain_rows(graph, fwd, classes, c, norm, channels, cache, probes);
            }
            _ if classes.len() == 1 => {
                let one = self.explain_probed(model, fwd, classes[0], norm, probes)?;
                return Ok(vec![one]);
            }
            _ if *probes != Probes::default() => {
                anyhow::bail!("inner layers are probed with LRP only")
            }
            Analyzer::Gradient { .. } | Analyzer::GradientXInput { .. } => GradientMode::Plain,
            Analyzer::GuidedBackprop { .. } => GradientMode::Guided,
            _ => anyhow::bail!("{} explains one input at a time", self.name()),
        };
        let ties = self.maxpool_ties();
        let g = input_gradient_rows(graph, fwd, classes, GradientOptions { mode, ties })?;
        let n = fwd.logits.len() / classes.len();
        classes
            .iter()
            .enumerate()
            .map(|(row, &class)| {
                let mut r = g.index_axis(Axis(0), row).insert_axis(Axis(0)).to_owned();
                if let Analyzer::GradientXInput { .. } = self {
                    r *= &fwd.input.index_axis(Axis(0), row).insert_axis(Axis(0));
                }
                let logit = *fwd
                    .logits
                    .get(row * n + class)
                    .ok_or_else(|| anyhow::anyhow!("class {class} out of range"))?;
                Ok(self.finished(class, logit, r))
            })
            .collect()
    }

    /// The explanation of a gradient-family analyzer from its map: NaN and
    /// Inf set to 0 (with a warning), the sum.
    fn finished(&self, class: usize, logit: f32, relevance: ArrayD<f32>) -> Explanation {
        let mut relevance = relevance;
        let non_finite = ledger::zero_non_finite(&mut relevance);
        let relevance_sum = relevance.iter().map(|&v| v as f64).sum::<f64>() as f32;
        let warnings = (non_finite > 0)
            .then(|| {
                format!("non-finite values (NaN or Inf) in the {}: {non_finite} values of the map set to 0", self.name())
            })
            .into_iter()
            .collect();
        Explanation {
            class,
            logit,
            relevance,
            relevance_sum,
            layers: Vec::new(),
            ledger: None,
            warnings,
        }
    }
}

/// The plain gradient with max-pool ties handled by `ties`.
fn plain(ties: MaxPoolTies) -> GradientOptions {
    GradientOptions {
        mode: GradientMode::Plain,
        ties,
    }
}

/// A black image in the normalised space, `(0 - mean[c]) / std[c]` on each
/// channel (the first one for grey models), of `shape` in the model's layout.
pub fn black(spec: &InputSpec, shape: &[usize], norm: &Normalization) -> ArrayD<f32> {
    let low = norm.bounds().0;
    let axis = match spec.layout {
        Layout::Nchw => 1,
        Layout::Nhwc => shape.len().saturating_sub(1),
    };
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let c = if spec.channels == 3 { ix[axis] } else { 0 };
        low[c.min(2)]
    })
}
