//! The backward pass: relevance from the explained logit to the input.

use anyhow::{ensure, Result};
use ndarray::{ArrayD, IxDyn};

use crate::composite::Composite;
use crate::engine::walk::walk_back;
use crate::graph::Graph;
use crate::model::Forward;
use crate::ops;
use crate::preprocess::Normalization;
use crate::rules::cache::WeightCache;
use crate::rules::{Bounds, Rule};

/// The relevance of every input element for one class.
///
/// ```
/// let model = lrp_heatmap::Model::load("efficientnet-lite0")?;
/// let image = image::open("images/cat.jpg").expect("the photo");
/// let e: lrp_heatmap::Explanation = model.explain(&image, "lrp0")?;
/// assert_eq!(e.relevance.shape(), model.input.shape.as_slice());
/// println!("{} of logit {} reached the pixels (ratio {})", e.relevance_sum, e.logit, e.ratio());
/// # Ok::<(), lrp_heatmap::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The explained class.
    pub class: usize,
    /// Its logit (the relevance put on the output).
    pub logit: f32,
    /// Relevance of each element of the (normalised) input tensor, in the model's layout.
    pub relevance: ArrayD<f32>,
    /// Sum of `relevance`.
    pub relevance_sum: f32,
}

impl Explanation {
    /// `relevance_sum / logit`: 1 where the rules conserve relevance.
    pub fn ratio(&self) -> f32 {
        if self.logit == 0.0 {
            0.0
        } else {
            self.relevance_sum / self.logit
        }
    }
}

/// Input bounds of a layer reading the normalised image, of the layer's input
/// `shape`: the per-channel bounds of the model input when the layer reads it
/// as it is, through a reshape (same size) or transposed to channels-first
/// (axis 1 holds the channels); the loosest bounds over all channels otherwise.
fn bounds_for(shape: &[usize], input: &[usize], norm: &Normalization, channels: usize) -> Bounds {
    let (lo, hi) = norm.bounds();
    let ch = |c: usize| if channels == 3 { c } else { 0 };
    let fill = |axis: usize, dims: &[usize]| {
        let low = ArrayD::from_shape_fn(IxDyn(dims), |ix| lo[ch(ix[axis])]);
        let high = ArrayD::from_shape_fn(IxDyn(dims), |ix| hi[ch(ix[axis])]);
        (low, high)
    };
    // the channel axis of the model input: 1 for NCHW, the last one for NHWC
    let in_axis = if input.len() == 4 && input[1] == channels {
        1
    } else {
        input.len().saturating_sub(1)
    };
    let size: usize = shape.iter().product();
    let (low, high) = if shape.len() == 4 && shape[1] == channels && shape != input {
        fill(1, shape)
    } else if size == input.iter().product::<usize>() && !input.is_empty() {
        let (l, h) = fill(in_axis, input);
        let reshape = |a: ArrayD<f32>| a.into_shape_with_order(IxDyn(shape)).expect("same size");
        (reshape(l), reshape(h))
    } else {
        let l = lo[..channels].iter().copied().fold(f32::INFINITY, f32::min);
        let h = hi[..channels]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        (
            ArrayD::from_elem(IxDyn(shape), l),
            ArrayD::from_elem(IxDyn(shape), h),
        )
    };
    Bounds { low, high }
}

/// Propagates the logit of `class` back to the input with `composite`.
///
/// `norm` gives the input bounds for the z^B rule; `channels` is the number
/// of colour channels of the input.
pub fn explain(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    composite: &Composite,
    norm: &Normalization,
    channels: usize,
) -> Result<Explanation> {
    explain_with(
        graph,
        fwd,
        class,
        composite,
        norm,
        channels,
        &WeightCache::new(),
    )
}

/// [`explain`] keeping the modified weights of the layers in `cache`, to be
/// reused by later calls on the same graph; layers whose output `z = W x + b`
/// the forward pass kept reuse it instead of recomputing it.
pub fn explain_with(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    composite: &Composite,
    norm: &Normalization,
    channels: usize,
    cache: &WeightCache,
) -> Result<Explanation> {
    let classes = fwd.logits.len();
    if class >= classes {
        return Err(crate::Error::ClassOutOfRange { class, classes }.into());
    }
    let logit = fwd.logits[class];
    let relevance = walk_back(graph, fwd, class, logit, |node, inputs, r| {
        let rule = composite.rule_for(node);
        let bounds = (node.op.linear().is_some() && rule == Rule::ZBox).then(|| {
            crate::analyzers::bounds::through_normalisation(graph, node, fwd, norm, channels)
                .unwrap_or_else(|| bounds_for(inputs[0].shape(), fwd.input.shape(), norm, channels))
        });
        let reuse = ops::Reuse {
            cache: Some(cache),
            output: fwd.activations.get(&node.output),
        };
        node.relevance(inputs, r, rule, bounds.as_ref(), reuse)
    })?;
    ensure!(
        relevance.shape() == fwd.input.shape(),
        "input relevance of shape {:?}",
        relevance.shape()
    );
    let finite = relevance.iter().all(|v| v.is_finite());
    ensure!(finite, "relevance contains NaN or Inf");
    let relevance_sum = relevance.iter().map(|&v| v as f64).sum::<f64>() as f32;
    Ok(Explanation {
        class,
        logit,
        relevance,
        relevance_sum,
    })
}
