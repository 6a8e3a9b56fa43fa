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
    /// The relevance at that tensor, batch axis removed (`[C, H, W]`, `[C]`).
    pub relevance: ArrayD<f32>,
}

impl LayerRelevance {
    /// The relevance of each channel (axis 0 of `relevance`), summed over its
    /// positions, highest first: the concept relevance of CRP (Achtibat et
    /// al. 2023).
    pub fn channel_sums(&self) -> Vec<(usize, f64)> {
        if self.relevance.ndim() == 0 {
            return vec![(0, self.relevance.iter().map(|&v| v as f64).sum())];
        }
        let mut v: Vec<(usize, f64)> = self
            .relevance
            .axis_iter(Axis(0))
            .map(|c| c.iter().map(|&v| v as f64).sum())
            .enumerate()
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// Channels of a layer: `NODE:K[,K...]` (a node or tensor name, channels on
/// axis 1 of the tensor, 0-based).
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

/// The tensor of a start inside the graph, checked.
fn start_tensor<'g>(graph: &'g Graph, fwd: &Forward, c: &Channels) -> Result<&'g str> {
    let tensor = checked_channels(graph, fwd, "start", c)?;
    if tensor == graph.input {
        return Err(Error::InvalidParameter {
            name: "start",
            message: "must be a layer inside the graph, not the model input".into(),
        }
        .into());
    }
    Ok(tensor)
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

/// Checks `c`'s channels against the tensor's shape (channels on axis 1).
fn checked_channels<'g>(
    graph: &'g Graph,
    fwd: &Forward,
    param: &'static str,
    c: &Channels,
) -> Result<&'g str> {
    let (tensor, shape) = tensor_of(graph, fwd, param, &c.layer)?;
    let n = match shape.len() {
        0 | 1 => {
            return Err(Error::InvalidParameter {
                name: param,
                message: format!("'{}' of shape {shape:?} has no channel axis", c.layer),
            }
            .into())
        }
        _ => shape[1],
    };
    if let Some(&k) = c.channels.iter().find(|&&k| k >= n) {
        return Err(Error::InvalidParameter {
            name: param,
            message: format!("channel {k} out of range: '{}' has {n} channels", c.layer),
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
    Ok(tensor)
}

/// `a` without its batch axis of 1.
fn unbatched(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.ndim() > 1 && a.shape()[0] == 1 {
        a.index_axis_move(Axis(0), 0)
    } else {
        a
    }
}

/// `a` with zeros outside `channels` (axis 1).
fn keep_channels(a: &mut ArrayD<f32>, channels: &[usize]) {
    for (k, mut lane) in a.axis_iter_mut(Axis(1)).enumerate() {
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
            let tensor = start_tensor(graph, fwd, c)?;
            let mut a = if tensor == graph.logits {
                fwd.logits_tensor.clone()
            } else {
                fwd.get(graph, tensor)?.clone()
            };
            keep_channels(&mut a, &c.channels);
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
        if let Some((ct, c)) = concept {
            if ct == t {
                let before = arrived.borrow_mut().remove(t).unwrap_or_else(|| sums(r));
                keep_channels(r, &c.channels);
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
