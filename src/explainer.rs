//! The short way in: [`Model::explain`] for one image with default
//! parameters, [`Model::explainer`] for a builder of the options
//! ([`Explainer`]) and batches.
//!
//! ```
//! use lrp_heatmap::Model;
//!
//! let model = Model::load("efficientnet-lite0")?;
//! let image = image::open("images/cat.jpg").expect("the photo");
//! let e = model.explain(&image, "epsilon-plus-flat")?;
//! assert_eq!(e.class, 285); // Egyptian cat
//! let e = model.explainer("epsilon").class(281).epsilon(0.1).explain(&image)?;
//! assert_eq!(e.class, 281);
//! # Ok::<(), lrp_heatmap::Error>(())
//! ```

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use ndarray::{ArrayD, Axis};
use rayon::prelude::*;

use crate::analyzers::lrp::Probes;
use crate::analyzers::{Analyzer, AnalyzerParams};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::preprocess::{self, DecodeLimits, Normalization};
use crate::Explanation;

/// What can be explained: an image (decoded, or a file to decode) or a
/// tensor already normalised for the model.
pub trait Input: Sync {
    /// The model's input tensor (shape `model.input.shape`, its layout) for
    /// this input: images are resized and normalised with `norm`, files
    /// decoded within `limits`.
    fn tensor(
        &self,
        model: &Model,
        norm: &Normalization,
        limits: &DecodeLimits,
    ) -> Result<ArrayD<f32>>;
}

impl Input for RgbImage {
    fn tensor(&self, model: &Model, norm: &Normalization, _: &DecodeLimits) -> Result<ArrayD<f32>> {
        Ok(model.tensor(self, norm)?)
    }
}

impl Input for DynamicImage {
    /// Converted to 8-bit RGB (an alpha channel dropped), as from a file.
    fn tensor(&self, model: &Model, norm: &Normalization, l: &DecodeLimits) -> Result<ArrayD<f32>> {
        match self {
            DynamicImage::ImageRgb8(rgb) => rgb.tensor(model, norm, l),
            other => other.to_rgb8().tensor(model, norm, l),
        }
    }
}

impl Input for ArrayD<f32> {
    /// Taken as it is (already normalised, in the model's layout), of the
    /// model's input shape with or without the batch axis of 1.
    fn tensor(&self, model: &Model, _: &Normalization, _: &DecodeLimits) -> Result<ArrayD<f32>> {
        let want = &model.input.shape;
        if self.shape() == want.as_slice() {
            Ok(self.clone())
        } else if self.shape() == &want[1..] {
            Ok(self.clone().insert_axis(Axis(0)))
        } else {
            Err(Error::InvalidParameter {
                name: "input",
                message: format!(
                    "must have the model's input shape {want:?} (or {:?}), got {:?}",
                    &want[1..],
                    self.shape()
                ),
            })
        }
    }
}

impl Input for Path {
    /// Decoded as [`preprocess::load_image_with`] does.
    fn tensor(&self, model: &Model, norm: &Normalization, l: &DecodeLimits) -> Result<ArrayD<f32>> {
        let img = preprocess::load_image_with(self, l).map_err(|e| image_error(self, e))?;
        img.tensor(model, norm, l)
    }
}

impl Input for PathBuf {
    fn tensor(&self, model: &Model, norm: &Normalization, l: &DecodeLimits) -> Result<ArrayD<f32>> {
        self.as_path().tensor(model, norm, l)
    }
}

impl<T: Input + ?Sized> Input for &T {
    fn tensor(&self, model: &Model, norm: &Normalization, l: &DecodeLimits) -> Result<ArrayD<f32>> {
        (**self).tensor(model, norm, l)
    }
}

/// A failure to load the image at `path`: a decoding limit it exceeds as
/// it is, anything else as [`Error::Image`].
pub fn image_error(path: &Path, e: anyhow::Error) -> Error {
    match Error::find(&e) {
        Some(Error::LimitExceeded { name, .. }) => Error::LimitExceeded {
            name,
            message: format!("{e:#}"),
        },
        _ => Error::Image {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        },
    }
}

/// How to explain: the analyzer by name, the class, the parameters; built
/// by [`Model::explainer`], run by [`Explainer::explain`] or
/// [`Explainer::explain_batch`]. Unset options keep the command's defaults
/// ([`AnalyzerParams::default`], ImageNet normalisation, the top class).
///
/// ```
/// use lrp_heatmap::Model;
///
/// let model = Model::load("efficientnet-lite0")?;
/// let cat = image::open("images/cat.jpg").expect("the photo");
/// let all = model.explainer("zplus").explain_batch(&[&cat, &cat.fliph()])?;
/// assert_eq!(all.len(), 2);
/// let ig = model.explainer("integrated-gradients").steps(4).class(285);
/// assert!(ig.explain(&cat)?.relevance_sum.is_finite());
/// # Ok::<(), lrp_heatmap::Error>(())
/// ```
#[derive(Clone)]
pub struct Explainer<'m> {
    model: &'m Model,
    analyzer: String,
    class: Option<usize>,
    params: AnalyzerParams,
    norm: Normalization,
    limits: DecodeLimits,
}

impl Model {
    /// Explains the top class of `input` with the analyzer called `analyzer`
    /// (a rule, a composite or a gradient-family name, see
    /// [`crate::analyzers::all_names`]) and default parameters.
    ///
    /// ```no_run
    /// let model = lrp_heatmap::Model::load("vgg16.onnx")?;
    /// let e = model.explain(std::path::Path::new("cat.jpg"), "zplus")?;
    /// println!("class {} relevance sum {}", e.class, e.relevance_sum);
    /// # Ok::<(), lrp_heatmap::Error>(())
    /// ```
    pub fn explain<I: Input + ?Sized>(&self, input: &I, analyzer: &str) -> Result<Explanation> {
        self.explainer(analyzer).explain(input)
    }

    /// A builder of the options of an explanation with `analyzer`.
    pub fn explainer(&self, analyzer: &str) -> Explainer<'_> {
        Explainer {
            model: self,
            analyzer: analyzer.to_string(),
            class: None,
            params: AnalyzerParams::default(),
            norm: Normalization::default(),
            limits: DecodeLimits::default(),
        }
    }
}

impl Explainer<'_> {
    /// Explains the logit of `class` (0-based) instead of the top class.
    pub fn class(mut self, class: usize) -> Self {
        self.class = Some(class);
        self
    }

    /// Epsilon of the epsilon rule (finite, > 0).
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.params.rule.epsilon = epsilon;
        self
    }

    /// Gamma of the gamma rule (finite, >= 0).
    pub fn gamma(mut self, gamma: f32) -> Self {
        self.params.rule.gamma = gamma;
        self
    }

    /// Alpha of the alpha-beta rule (finite, >= 1); beta is `alpha - 1`.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.params.rule.alpha = alpha;
        self
    }

    /// Beta of the alpha-beta rule (finite, >= 0): sets alpha to `beta + 1`.
    pub fn beta(self, beta: f32) -> Self {
        self.alpha(beta + 1.0)
    }

    /// Points on the path of integrated gradients (>= 1).
    pub fn steps(mut self, steps: usize) -> Self {
        self.params.steps = steps;
        self
    }

    /// Noisy samples of SmoothGrad (>= 1).
    pub fn samples(mut self, samples: usize) -> Self {
        self.params.samples = samples;
        self
    }

    /// SmoothGrad's noise, as a fraction of the input's value range (>= 0).
    pub fn noise(mut self, noise: f32) -> Self {
        self.params.noise = noise;
        self
    }

    /// Seed of SmoothGrad's noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }

    /// All analyzer parameters at once.
    pub fn params(mut self, params: AnalyzerParams) -> Self {
        self.params = params;
        self
    }

    /// Input normalisation of images, `(v - mean[c]) / std[c]` on `[0, 1]`
    /// pixel values (default: ImageNet's).
    pub fn normalization(mut self, mean: [f32; 3], std: [f32; 3]) -> Self {
        self.norm = Normalization { mean, std };
        self
    }

    /// Bounds on decoding image files (default: [`DecodeLimits::default`]).
    pub fn limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The analyzer with its parameters, checked.
    pub fn analyzer(&self) -> Result<Analyzer> {
        Analyzer::from_name(&self.analyzer, &self.params)
    }

    /// Checks everything but the input: analyzer, parameters, class.
    fn checked(&self) -> Result<Analyzer> {
        let analyzer = self.analyzer()?;
        let Normalization { mean, std } = self.norm;
        Error::check(mean.iter().all(|m| m.is_finite()), "mean", || {
            format!("must be finite, got {mean:?}")
        })?;
        Error::check(
            std.iter().all(|s| s.is_finite() && *s != 0.0),
            "std",
            || format!("must be finite and non-zero, got {std:?}"),
        )?;
        let classes = self.model.classes;
        match self.class {
            Some(class) if class >= classes => Err(Error::ClassOutOfRange { class, classes }),
            _ => Ok(analyzer),
        }
    }

    fn run(&self, analyzer: &Analyzer, input: &(impl Input + ?Sized)) -> Result<Explanation> {
        let x = input.tensor(self.model, &self.norm, &self.limits)?;
        let fwd = analyzer.forward(self.model, x, &Probes::default(), false)?;
        let class = self.class.unwrap_or_else(|| fwd.top_k(1)[0].0);
        Ok(analyzer.explain(self.model, &fwd, class, &self.norm)?)
    }

    /// Explains one input.
    pub fn explain<I: Input + ?Sized>(&self, input: &I) -> Result<Explanation> {
        self.run(&self.checked()?, input)
    }

    /// Explains each input, in parallel (one per core at a time); the first
    /// error in input order, if any.
    pub fn explain_batch<I: Input>(&self, inputs: &[I]) -> Result<Vec<Explanation>> {
        let analyzer = self.checked()?;
        inputs
            .par_iter()
            .map(|input| self.run(&analyzer, input))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_the_input() {
        let model = Model::load(crate::model::BUNDLED_NAME).expect("bundled");
        let tiny = RgbImage::new(4, 4);
        let err = |e: Explainer| e.explain(&tiny).expect_err("refused");
        assert!(matches!(
            err(model.explainer("nonsense")),
            Error::UnknownAnalyzer { name, known } if name == "nonsense" && known.contains(&"zplus")
        ));
        assert!(matches!(
            err(model.explainer("zplus").class(1000)),
            Error::ClassOutOfRange {
                class: 1000,
                classes: 1000
            }
        ));
        assert!(matches!(
            err(model.explainer("alpha-beta").beta(-0.5)),
            Error::InvalidParameter { name: "alpha", .. }
        ));
        let e = err(model
            .explainer("zplus")
            .normalization([0.0; 3], [1.0, 0.0, 1.0]));
        assert_eq!(
            e.to_string(),
            "std must be finite and non-zero, got [1.0, 0.0, 1.0]"
        );
        let wrong = ArrayD::<f32>::zeros(vec![3, 8, 8]);
        assert!(matches!(
            model.explain(&wrong, "zplus"),
            Err(Error::InvalidParameter { name: "input", .. })
        ));
        let missing = model.explain(Path::new("no-such.png"), "zplus");
        assert!(matches!(missing, Err(Error::Image { .. })), "{missing:?}");
        // a tensor without the batch axis is the same input as with it
        let x = model.tensor(&tiny, &Normalization::default()).unwrap();
        let a = model.explainer("gradient").class(3).explain(&x).unwrap();
        let b = (model.explainer("gradient").class(3))
            .explain(&x.index_axis(Axis(0), 0).to_owned())
            .unwrap();
        assert_eq!(a.relevance, b.relevance);
    }
}
