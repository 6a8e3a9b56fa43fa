//! The backward pass: relevance from the explained logit to the input.

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, Axis, IxDyn};

use crate::analyzers::ledger::{self, Entry, Ledger};
use crate::composite::Composite;
use crate::engine::walk::walk_from_owned;
use crate::error::Error;
use crate::graph::{Graph, Node};
use crate::model::Forward;
use crate::ops::{self, Elements, Flow};
use crate::preprocess::Normalization;
use crate::rules::cache::WeightCache;
use crate::rules::{flat, Bounds, Rule};

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
    /// Its logit: the relevance put on the output (with a start inside the
    /// graph, [`Probes::start`], the sum of the start activations).
    pub logit: f32,
    /// Relevance of each element of the (normalised) input tensor, in the model's layout.
    pub relevance: ArrayD<f32>,
    /// Sum of `relevance`.
    pub relevance_sum: f32,
    /// The relevance at the layers asked for ([`Probes::layers`]).
    pub layers: Vec<LayerRelevance>,
    /// Where the relevance went, node by node (LRP only).
    pub ledger: Option<Ledger>,
    /// What the guard rails found: non-finite values (set to 0 in
    /// `relevance`), a relevance sum beyond 10x the logit, nodes passing on
    /// more than 10x what they received ([`Ledger::warnings`]).
    pub warnings: Vec<String>,
}

/// The relevance at one layer (a tensor inside the graph).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRelevance {
    /// The layer as asked for (a node or tensor name).
    pub layer: String,
    /// The tensor it names.
    pub tensor: String,
    /// The relevance at that tensor, batch axis removed (`[C, H, W]`, `[C]`;
    /// `[T, D]` for a token tensor).
    pub relevance: ArrayD<f32>,
    /// The token layout when the tensor is a vision transformer's
    /// `[batch, T, D]` ([`Tokens::of`]); `None` for any other tensor.
    pub tokens: Option<Tokens>,
}

impl LayerRelevance {
    /// The relevance of each channel, summed over its positions, highest
    /// first: the concept relevance of CRP (Achtibat et al. 2023). The
    /// channels are axis 0 of `relevance` (axis 1 of the tensor), or the
    /// embedding dimensions (the last axis) of a token tensor, each summed
    /// over all tokens.
    pub fn channel_sums(&self) -> Vec<(usize, f64)> {
        if self.relevance.ndim() == 0 {
            return vec![(0, self.relevance.iter().map(|&v| v as f64).sum())];
        }
        let axis = match self.tokens {
            Some(_) => self.relevance.ndim() - 1,
            None => 0,
        };
        let mut v: Vec<(usize, f64)> = self
            .relevance
            .axis_iter(Axis(axis))
            .map(|c| c.iter().map(|&v| v as f64).sum())
            .enumerate()
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The relevance of each token (summed over its embedding dimensions),
    /// for a token tensor: `relevance` is `[T, D]`.
    fn token_sums(&self) -> Option<Vec<f64>> {
        self.tokens?;
        let r = self
            .relevance
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .ok()?;
        Some(
            r.rows()
                .into_iter()
                .map(|t| t.iter().map(|&v| v as f64).sum())
                .collect(),
        )
    }

    /// The `[P, P]` map of the patch tokens of a token tensor: the last
    /// `P * P` tokens, each summed over its embedding dimensions, in
    /// row-major patch order (as a ViT's patch embedding flattens the
    /// convolution's `[D, P, P]` output); `None` for any other tensor.
    pub fn token_map(&self) -> Option<ndarray::Array2<f32>> {
        let t = self.tokens?;
        let sums = self.token_sums()?;
        let patches: Vec<f32> = sums[t.extra..].iter().map(|&v| v as f32).collect();
        ndarray::Array2::from_shape_vec((t.grid, t.grid), patches).ok()
    }

    /// The relevance of the tokens before the patches, named (`class_token`,
    /// then `distillation_token`, as DeiT orders them), each summed over its
    /// embedding dimensions; empty for any other tensor.
    pub fn extra_tokens(&self) -> Vec<(&'static str, f64)> {
        let (Some(t), Some(sums)) = (self.tokens, self.token_sums()) else {
            return Vec::new();
        };
        Tokens::EXTRA_NAMES
            .iter()
            .copied()
            .zip(sums)
            .take(t.extra)
            .collect()
    }
}

/// The layout of a vision transformer's token tensor `[batch, T, D]`: `T`
/// tokens of width `D`, the last `grid * grid` of them the image's patches
/// in row-major order, the first `extra` (0 to 2) the class token and
/// DeiT's distillation token.
///
/// ```
/// use lrp_heatmap::analyzers::lrp::Tokens;
///
/// // torchvision's ViT-B/16 at 224 x 224: 14 x 14 patches and a class token
/// assert_eq!(Tokens::of(&[1, 197, 768], 1), Some(Tokens { grid: 14, extra: 1 }));
/// // a CNN's feature map is not one
/// assert_eq!(Tokens::of(&[1, 64, 56, 56], 1), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Patches per side (`P`, at least 2).
    pub grid: usize,
    /// Tokens before the patches: 0, 1 (class token) or 2 (and DeiT's
    /// distillation token).
    pub extra: usize,
}

impl Tokens {
    /// The names of the tokens before the patches, in order.
    pub const EXTRA_NAMES: [&'static str; 2] = ["class_token", "distillation_token"];

    /// Whether a tensor of `shape` (with `batch` inputs) is a token tensor,
    /// decided from the shape alone: rank 3 with the batch on axis 0
    /// (`[batch, T, D]`), `T = P * P + e` with `P >= 2` and `e` in 0..=2
    /// (one such `P` at most: squares of `P >= 2` are 5 or more apart).
    /// The layouts inside the TorchScript exporter's attention (`[T, batch,
    /// D]`, heads first) are not, and nor is a CNN's `[batch, C, H, W]`; a
    /// 1-D CNN's `[batch, C, L]` whose `C` is a square (plus 0 to 2) would be
    /// taken for one.
    pub fn of(shape: &[usize], batch: usize) -> Option<Tokens> {
        let &[b, t, d] = shape else {
            return None;
        };
        if b != batch || d == 0 {
            return None;
        }
        let grid = t.isqrt();
        let extra = t - grid * grid;
        (grid >= 2 && extra <= 2).then_some(Tokens { grid, extra })
    }
}

/// Channels of a layer: `NODE:K[,K...]` (a node or tensor name, channels on
/// axis 1 of the tensor, or the embedding dimensions, the last axis, of a
/// token tensor ([`Tokens`]); 0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channels {
    /// A node or tensor name.
    pub layer: String,
    /// The channels.
    pub channels: Vec<usize>,
}

impl std::str::FromStr for Channels {
    type Err = String;

    /// `NODE:K[,K...]`; the node name may itself contain `:`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (layer, ks) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected NODE:K[,K...], got '{s}'"))?;
        if layer.is_empty() {
            return Err(format!("no node name in '{s}'"));
        }
        let channels = ks
            .split(',')
            .map(|k| {
                k.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("'{k}' is not a channel number (in '{s}')"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Channels {
            layer: layer.to_string(),
            channels,
        })
    }
}

/// What to look at inside the graph during one backward pass.
///
/// ```
/// use lrp_heatmap::analyzers::lrp::Probes;
///
/// let model = lrp_heatmap::Model::load("efficientnet-lite0")?;
/// let probes = Probes {
///     layers: vec!["/_swish_1/Clip".into()],
///     concept: Some("/_swish_1/Clip:1156".parse().unwrap()),
///     ..Default::default()
/// };
/// probes.check(&model)?;
/// let bad = Probes { layers: vec!["nope".into()], ..Default::default() };
/// assert!(bad.check(&model).is_err());
/// # Ok::<(), lrp_heatmap::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    /// Layers whose relevance to keep ([`Explanation::layers`]).
    pub layers: Vec<String>,
    /// At this layer only the relevance of these channels is passed on (the
    /// conditional heatmap of Concept Relevance Propagation).
    pub concept: Option<Channels>,
    /// Start at the activations of these channels of this layer instead of
    /// the logit (what the channels detect in this input).
    pub start: Option<Channels>,
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

impl Probes {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Probes::default()
    }

    /// Checks the names and channels against `model` before any image is
    /// explained: the names against the graph, the channels of a concept or
    /// a start against the tensors' shapes (from a forward pass on a zero
    /// input, only then).
    pub fn check(&self, model: &crate::Model) -> crate::Result<()> {
        let graph = &model.graph;
        let names = self
            .layers
            .iter()
            .map(|l| ("layer", l))
            .chain(self.concept.iter().map(|c| ("concept", &c.layer)))
            .chain(self.start.iter().map(|c| ("start", &c.layer)));
        for (param, name) in names {
            if graph.resolve(name).is_none() {
                return Err(unknown_layer(param, name));
            }
        }
        if self.concept.is_none() && self.start.is_none() {
            return Ok(());
        }
        let fwd = model.forward(ArrayD::zeros(model.input.shape.clone()))?;
        let run = || -> Result<()> {
            if let Some(c) = &self.concept {
                checked_channels(graph, &fwd, "concept", c)?;
            }
            if let Some(c) = &self.start {
                start_tensor(graph, &fwd, c)?;
            }
            Ok(())
        };
        run().map_err(|e| match e.downcast::<Error>() {
            Ok(e) => e,
            Err(e) => Error::InvalidParameter {
                name: "layer",
                message: format!("{e:#}"),
            },
        })
    }
}

/// The error for a name that is no node or tensor of the graph.
fn unknown_layer(param: &'static str, layer: &str) -> Error {
    Error::InvalidParameter {
        name: param,
        message: format!(
            "'{layer}' names no node or tensor of the graph (`inspect MODEL --layers` lists them)"
        ),
    }
}

/// The tensor of a start inside the graph, checked, with its channel axis.
fn start_tensor<'g>(graph: &'g Graph, fwd: &Forward, c: &Channels) -> Result<(&'g str, usize)> {
    let (tensor, axis) = checked_channels(graph, fwd, "start", c)?;
    if tensor == graph.input {
        return Err(Error::InvalidParameter {
            name: "start",
            message: "must be a layer inside the graph, not the model input".into(),
        }
        .into());
    }
    Ok((tensor, axis))
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
        &Probes::default(),
    )
}

/// The tensor `layer` names, with its shape, or an error naming the
/// parameter.
fn tensor_of<'g>(
    graph: &'g Graph,
    fwd: &Forward,
    param: &'static str,
    layer: &str,
) -> Result<(&'g str, Vec<usize>)> {
    let tensor = graph
        .resolve(layer)
        .ok_or_else(|| unknown_layer(param, layer))?;
    let shape = if tensor == graph.logits {
        fwd.logits_tensor.shape().to_vec()
    } else {
        fwd.get(graph, tensor)?.shape().to_vec()
    };
    Ok((tensor, shape))
}

/// The inputs of the forward pass `fwd` (its input's axis 0).
fn batch_of(fwd: &Forward) -> usize {
    fwd.input.shape().first().copied().unwrap_or(1)
}

/// Checks `c`'s channels against the tensor's shape; returns the tensor and
/// its channel axis: 1, or the last axis (the embedding dimensions) of a
/// token tensor ([`Tokens::of`]).
fn checked_channels<'g>(
    graph: &'g Graph,
    fwd: &Forward,
    param: &'static str,
    c: &Channels,
) -> Result<(&'g str, usize)> {
    let (tensor, shape) = tensor_of(graph, fwd, param, &c.layer)?;
    let batch = batch_of(fwd);
    let axis = match shape.len() {
        0 | 1 => {
            return Err(Error::InvalidParameter {
                name: param,
                message: format!("'{}' of shape {shape:?} has no channel axis", c.layer),
            }
            .into())
        }
        _ if Tokens::of(&shape, batch).is_some() => 2,
        // tokens first and the batch on axis 1, as inside the TorchScript
        // exporter's attention: axis 1 is no channel axis
        3.. if shape[0] != batch && shape[1] == batch => {
            return Err(Error::InvalidParameter {
                name: param,
                message: format!(
                    "'{}' of shape {shape:?} holds the batch on axis 1 (tokens first, as inside an attention): it has no channel axis; ask for a [batch, tokens, dim] tensor such as a block's output",
                    c.layer
                ),
            }
            .into())
        }
        _ => 1,
    };
    let n = shape[axis];
    if let Some(&k) = c.channels.iter().find(|&&k| k >= n) {
        let message = if axis == 1 {
            format!("channel {k} out of range: '{}' has {n} channels", c.layer)
        } else {
            format!(
                "channel {k} out of range: '{}' is a token tensor {shape:?} whose channels are its {n} embedding dimensions (D)",
                c.layer
            )
        };
        return Err(Error::InvalidParameter {
            name: param,
            message,
        }
        .into());
    }
    if c.channels.is_empty() {
        return Err(Error::InvalidParameter {
            name: param,
            message: format!("no channel given for '{}'", c.layer),
        }
        .into());
    }
    Ok((tensor, axis))
}

/// `a` without its batch axis of 1.
fn unbatched(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.ndim() > 1 && a.shape()[0] == 1 {
        a.index_axis_move(Axis(0), 0)
    } else {
        a
    }
}

/// `a` with zeros outside `channels` (on `axis`).
fn keep_channels(a: &mut ArrayD<f32>, axis: usize, channels: &[usize]) {
    for (k, mut lane) in a.axis_iter_mut(Axis(axis)).enumerate() {
        if !channels.contains(&k) {
            lane.fill(0.0);
        }
    }
}

/// The output of a node from the forward pass, or computed again for the
/// proportional operators whose output was not kept.
fn node_output<'f>(
    graph: &Graph,
    fwd: &'f Forward,
    node: &Node,
    inputs: &[&ArrayD<f32>],
) -> Option<std::borrow::Cow<'f, ArrayD<f32>>> {
    use std::borrow::Cow;
    if node.output == graph.logits {
        return Some(Cow::Borrowed(&fwd.logits_tensor));
    }
    if let Some(z) = fwd.activations.get(&node.output) {
        return Some(Cow::Borrowed(z));
    }
    // a proportional operator's output, computed again
    let rows = inputs.first()?.shape().first().copied().unwrap_or(1);
    let z = node.op.forward(inputs, rows).ok()?;
    Some(Cow::Owned(z))
}

/// [`explain`] keeping the modified weights of the layers in `cache`, to be
/// reused by later calls on the same graph; layers whose output `z = W x + b`
/// the forward pass kept reuse it instead of recomputing it. `probes` asks
/// for the relevance at inner layers, a concept, or a start inside the graph.
#[allow(clippy::too_many_arguments)]
pub fn explain_with(
    graph: &Graph,
    fwd: &Forward,
    class: usize,
    composite: &Composite,
    norm: &Normalization,
    channels: usize,
    cache: &WeightCache,
    probes: &Probes,
) -> Result<Explanation> {
    let mut all = explain_rows(
        graph,
        fwd,
        &[class],
        composite,
        norm,
        channels,
        cache,
        probes,
    )?;
    all.pop()
        .ok_or_else(|| anyhow::anyhow!("no explanation was made"))
}

/// [`explain_with`] for a batch: `fwd` is one forward pass of inputs
/// stacked on axis 0 and `classes` holds the class to explain for each of
/// them, in order. One backward pass carries the relevance of every input
/// (a linear layer reads its weights once for all of them); each input gets
/// its own explanation, ledger and warnings, as if it had been explained
/// alone. Every tensor of the graph must hold the inputs on axis 0
/// ([`crate::Model::batch_blocker`] says whether it does).
#[allow(clippy::too_many_arguments)]
pub fn explain_rows(
    graph: &Graph,
    fwd: &Forward,
    classes: &[usize],
    composite: &Composite,
    norm: &Normalization,
    channels: usize,
    cache: &WeightCache,
    probes: &Probes,
) -> Result<Vec<Explanation>> {
    let rows = classes.len();
    ensure!(rows >= 1, "no class to explain");
    ensure!(
        rows == 1 || fwd.input.shape().first() == Some(&rows),
        "{rows} classes for a forward pass of input {:?}",
        fwd.input.shape()
    );
    ensure!(
        rows == 1 || probes.start.is_none(),
        "a start inside the graph explains one input at a time"
    );
    let n_classes = fwd.logits.len() / rows;
    let batch = batch_of(fwd);
    if let Some(&class) = classes.iter().find(|&&c| c >= n_classes) {
        return Err(Error::ClassOutOfRange {
            class,
            classes: n_classes,
        }
        .into());
    }
    // every name is checked before the backward pass
    let layers = (probes.layers.iter())
        .map(|l| {
            let (t, shape) = tensor_of(graph, fwd, "layer", l)?;
            Ok((l.clone(), t, shape))
        })
        .collect::<Result<Vec<_>>>()?;
    let concept = (probes.concept.as_ref())
        .map(|c| Ok::<_, anyhow::Error>((checked_channels(graph, fwd, "concept", c)?, c)))
        .transpose()?;
    let (tensor, start) = match &probes.start {
        None => {
            let mut start = ArrayD::<f32>::zeros(fwd.logits_tensor.shape());
            for (row, &class) in classes.iter().enumerate() {
                let at = row * n_classes + class;
                if let Some(v) = start.iter_mut().nth(at) {
                    *v = fwd.logits[at];
                }
            }
            (graph.logits.as_str(), start)
        }
        Some(c) => {
            let (tensor, axis) = start_tensor(graph, fwd, c)?;
            let mut a = if tensor == graph.logits {
                fwd.logits_tensor.clone()
            } else {
                fwd.get(graph, tensor)?.clone()
            };
            keep_channels(&mut a, axis, &c.channels);
            (tensor, a)
        }
    };
    let sums = |a: &ArrayD<f32>| ledger::row_sums(a, rows);
    let logits: Vec<f64> = sums(&start).iter().map(|s| s.0).collect();
    let mut kept: Vec<(String, ArrayD<f32>)> = Vec::new();
    // the ledger of each input
    let entries: std::cell::RefCell<Vec<Vec<Entry>>> =
        std::cell::RefCell::new(vec![Vec::new(); rows]);
    // per input, sum and sum of |.| of the relevance arrived at each tensor so far
    type Arrived = std::collections::HashMap<String, Vec<(f64, f64)>>;
    let arrived: std::cell::RefCell<Arrived> = Default::default();
    arrived
        .borrow_mut()
        .insert(tensor.to_string(), sums(&start));
    let at = |t: &str, r: &mut ArrayD<f32>| -> Result<()> {
        if layers.iter().any(|l| l.1 == t) {
            kept.push((t.to_string(), r.clone()));
        }
        if let Some(((ct, axis), c)) = concept {
            if ct == t {
                let before = arrived.borrow_mut().remove(t).unwrap_or_else(|| sums(r));
                keep_channels(r, axis, &c.channels);
                let after = sums(r);
                for ((row, b), a) in entries.borrow_mut().iter_mut().zip(&before).zip(&after) {
                    let mut e =
                        ledger::entry(t, "concept", "concept mask".into(), "mask".into(), *b, a.0);
                    e.dropped = e.r_in - e.out;
                    e.dropped_because = "channels outside the concept";
                    row.push(e);
                }
                arrived.borrow_mut().insert(t.to_string(), after);
            }
        }
        Ok(())
    };
    let step = |node: &Node, inputs: &[&ArrayD<f32>], r_owned: ArrayD<f32>| {
        let r = &r_owned;
        let rule = composite.rule_for(node);
        let linear = node.op.linear().is_some();
        let bounds = (linear && rule == Rule::ZBox).then(|| {
            crate::analyzers::bounds::through_normalisation(graph, node, fwd, norm, channels)
                .unwrap_or_else(|| bounds_for(inputs[0].shape(), fwd.input.shape(), norm, channels))
        });
        let reuse = ops::Reuse {
            cache: Some(cache),
            output: fwd.activations.get(&node.output),
            rows,
            signs: node.inputs.first().and_then(|i| fwd.signs.get(i)).copied(),
            ties: composite.max_pool,
            norm: Some(composite.norm_rule()),
            rule: Some(rule),
            bounds: bounds.as_ref(),
            name: &node.output,
            attention: composite.attention,
        };
        // an activation hands its output's relevance on as it is: moved, not
        // copied (its shape checked as the operator would)
        let elements = node.op.elements();
        let pass =
            elements == Elements::Activation && inputs.len() == 1 && inputs[0].shape() == r.shape();
        let (out, accounts) = if pass {
            (Vec::new(), None)
        } else {
            node.relevance_accounted(inputs, r, rule, bounds.as_ref(), reuse)?
        };
        let flow = node.op.flow();
        // the rule the node applied: a linear layer's, or the one an
        // operator applies itself (a normalisation's epsilon)
        let applied = node.op.rule(&reuse);
        let rule_name = applied.map(|r| r.to_string()).unwrap_or_default();
        // what arrived at the output: the sums of the parts handed to it
        let got = arrived.borrow_mut().remove(node.output.as_str());
        let got = got.unwrap_or_else(|| sums(r));
        // operators that hand on their output's relevance as it is need no sum
        let same = pass
            || out.len() == 1
                && matches!(
                    elements,
                    Elements::Activation | Elements::Arithmetic | Elements::Rearranged
                );
        let mut out_sums = vec![0.0; rows];
        {
            let mut arrived = arrived.borrow_mut();
            let outs = if pass {
                std::slice::from_ref(r)
            } else {
                &out[..]
            };
            for (name, a) in node.inputs.iter().zip(outs) {
                let s = if same { got.clone() } else { sums(a) };
                let slot = (arrived.entry(name.clone())).or_insert_with(|| vec![(0.0, 0.0); rows]);
                for ((o, sl), s) in out_sums.iter_mut().zip(slot.iter_mut()).zip(&s) {
                    *o += s.0;
                    sl.0 += s.0;
                    sl.1 += s.1;
                }
            }
        }
        let z = match flow {
            Flow::Proportional { .. } => node_output(graph, fwd, node, inputs),
            Flow::Linear | Flow::Conserving | Flow::Crops => None,
        };
        let (r_flat, z_flat) = (flat(r), z.as_deref().map(flat));
        fn part(s: &[f32], row: usize, rows: usize) -> &[f32] {
            let len = s.len() / rows;
            &s[(row * len).min(s.len())..((row + 1) * len).min(s.len())]
        }
        for (row, e_row) in entries.borrow_mut().iter_mut().enumerate() {
            let mut e = ledger::entry(
                &node.name,
                &node.op_type,
                node.kind(),
                rule_name.clone(),
                got[row],
                out_sums[row],
            );
            if let Some(rule) = &applied {
                e.dropped_because = ledger::dropped_because(rule);
            }
            let account = accounts.as_ref().and_then(|a| a.get(row).copied());
            let z_row = z_flat.as_deref().map(|z| part(z, row, rows));
            let n = inputs.len();
            ledger::account(&mut e, flow, account, part(&r_flat, row, rows), z_row, n);
            e_row.push(e);
        }
        Ok(if pass { vec![r_owned] } else { out })
    };
    let relevance = walk_from_owned(graph, fwd, tensor, start, at, step)?;
    ensure!(
        relevance.shape() == fwd.input.shape(),
        "input relevance of shape {:?}",
        relevance.shape()
    );
    // one input of the batch: row `i` of a batched tensor, with the batch
    // axis of 1 kept (`relevance`) or removed (layers)
    let row_of = |a: &ArrayD<f32>, i: usize| -> ArrayD<f32> {
        if rows == 1 {
            a.clone()
        } else {
            a.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned()
        }
    };
    let entries = entries.into_inner();
    let mut out = Vec::with_capacity(rows);
    let mut whole = Some(relevance);
    for (i, (&class, nodes)) in classes.iter().zip(entries).enumerate() {
        let mut relevance = match (rows, whole.take()) {
            (1, Some(r)) => r,
            (_, Some(r)) => {
                let row = row_of(&r, i);
                whole = Some(r);
                row
            }
            (_, None) => bail!("the relevance was already handed out"),
        };
        let layers = layers
            .iter()
            .map(|(layer, t, shape)| {
                let relevance = match kept.iter().find(|k| k.0 == *t) {
                    Some(k) => unbatched(row_of(&k.1, i)),
                    None => {
                        let mut one = shape.clone();
                        if let Some(d) = one.first_mut() {
                            *d = if rows == 1 { *d } else { 1 };
                        }
                        unbatched(ArrayD::zeros(one))
                    }
                };
                LayerRelevance {
                    layer: layer.clone(),
                    tensor: t.to_string(),
                    relevance,
                    tokens: Tokens::of(shape, batch),
                }
            })
            .collect();
        let non_finite = ledger::zero_non_finite(&mut relevance);
        let (input_sum, _) = ledger::sums(&relevance);
        let ledger = Ledger {
            logit: logits[i],
            input_sum,
            nodes,
        };
        let warnings = ledger.warnings(non_finite);
        out.push(Explanation {
            class,
            logit: logits[i] as f32,
            relevance,
            relevance_sum: input_sum as f32,
            layers,
            ledger: Some(ledger),
            warnings,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_tensors_are_told_from_the_shape() {
        let tokens = |grid, extra| Some(Tokens { grid, extra });
        // torchvision ViT / DeiT at 224, patches of 16: a class token
        assert_eq!(Tokens::of(&[1, 197, 48], 1), tokens(14, 1));
        // no class token (the patches before the Concat), a batch of 4
        assert_eq!(Tokens::of(&[1, 16, 8], 1), tokens(4, 0));
        assert_eq!(Tokens::of(&[4, 196, 48], 4), tokens(14, 0));
        // DeiT distilled: class and distillation tokens
        assert_eq!(Tokens::of(&[1, 198, 192], 1), tokens(14, 2));
        assert_eq!(Tokens::of(&[1, 6, 3], 1), tokens(2, 2));
        // 3 = 1 * 1 + 2: one patch is no grid
        assert_eq!(Tokens::of(&[1, 3, 7], 1), None);
        assert_eq!(Tokens::of(&[1, 1, 7], 1), None);
        // 3 extra tokens are not a grid plus class tokens
        assert_eq!(Tokens::of(&[1, 199, 48], 1), None);
        assert_eq!(Tokens::of(&[1, 12, 48], 1), None);
        // tokens first (inside the TorchScript attention), heads first, the
        // batch not on axis 0
        assert_eq!(Tokens::of(&[197, 1, 48], 1), None);
        assert_eq!(Tokens::of(&[3, 197, 16], 1), None);
        assert_eq!(Tokens::of(&[1, 197, 48], 2), None);
        // other ranks: a CNN's feature map, a dense layer, [T, D] unbatched
        assert_eq!(Tokens::of(&[1, 64, 56, 56], 1), None);
        assert_eq!(Tokens::of(&[1, 1000], 1), None);
        assert_eq!(Tokens::of(&[197, 48], 1), None);
        assert_eq!(Tokens::of(&[1, 197, 0], 1), None);
        assert_eq!(Tokens::of(&[], 1), None);
    }

    fn layer(relevance: ArrayD<f32>, tokens: Option<Tokens>) -> LayerRelevance {
        LayerRelevance {
            layer: "l".into(),
            tensor: "t".into(),
            relevance,
            tokens,
        }
    }

    #[test]
    fn a_token_layer_ranks_dimensions_and_maps_patches() {
        // 2 extra tokens and a 2 x 2 grid of width 3: token i, dimension d
        // holds 10 i + d
        let r = ArrayD::from_shape_fn(IxDyn(&[6, 3]), |ix| (10 * ix[0] + ix[1]) as f32);
        let l = layer(r.clone(), Tokens::of(&[1, 6, 3], 1));
        // dimension d: sum over tokens of 10 i + d = 150 + 6 d
        assert_eq!(l.channel_sums(), vec![(2, 162.0), (1, 156.0), (0, 150.0)]);
        // token i: 30 i + 3, the patches are tokens 2..6 row-major
        let map = l.token_map().unwrap();
        assert_eq!(map, ndarray::arr2(&[[63.0, 93.0], [123.0, 153.0]]));
        assert_eq!(
            l.extra_tokens(),
            vec![("class_token", 3.0), ("distillation_token", 33.0)]
        );
        // the same array as a CNN's [C, L]: channels on axis 0, no tokens
        let cnn = layer(r, None);
        assert_eq!(cnn.channel_sums()[0], (5, 153.0));
        assert_eq!(cnn.token_map(), None);
        assert!(cnn.extra_tokens().is_empty());
    }

    #[test]
    fn keep_channels_masks_the_given_axis() {
        let mut a = ArrayD::from_elem(IxDyn(&[1, 5, 3]), 1f32);
        keep_channels(&mut a, 2, &[1]);
        assert_eq!(a.sum(), 5.0);
        assert!(a.index_axis(Axis(2), 1).iter().all(|&v| v == 1.0));
        let mut a = ArrayD::from_elem(IxDyn(&[1, 5, 3]), 1f32);
        keep_channels(&mut a, 1, &[0, 4]);
        assert_eq!(a.sum(), 6.0);
    }
}
