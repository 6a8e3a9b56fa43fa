//! The backward pass: relevance from the explained logit to the input.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use ndarray::{ArrayD, IxDyn};

use crate::composite::Composite;
use crate::graph::Graph;
use crate::model::Forward;
use crate::ops;
use crate::preprocess::Normalization;
use crate::rules::{Bounds, Rule};

/// The relevance of every input element for one class.
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

/// Input bounds of a layer reading the normalised image: per channel on axis 1
/// when that axis has as many entries as the normalisation has channels used,
/// else the loosest bounds over all channels.
fn bounds_for(shape: &[usize], norm: &Normalization, channels: usize) -> Bounds {
    let (lo, hi) = norm.bounds();
    let mut low = ArrayD::<f32>::zeros(IxDyn(shape));
    let mut high = ArrayD::<f32>::zeros(IxDyn(shape));
    if shape.len() >= 2 && shape[1] == channels {
        for ((ix, l), h) in low.indexed_iter_mut().zip(high.iter_mut()) {
            let c = if channels == 3 { ix[1] } else { 0 };
            *l = lo[c];
            *h = hi[c];
        }
    } else {
        let l = lo[..channels].iter().copied().fold(f32::INFINITY, f32::min);
        let h = hi[..channels]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        low.fill(l);
        high.fill(h);
    }
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
    ensure!(
        class < fwd.logits.len(),
        "class {class} out of range: the model has {} classes",
        fwd.logits.len()
    );
    let logit = fwd.logits[class];
    let mut start = ArrayD::<f32>::zeros(fwd.logits_tensor.shape());
    if let Some(v) = start.iter_mut().nth(class) {
        *v = logit;
    }
    let mut rel: HashMap<&str, ArrayD<f32>> = HashMap::new();
    rel.insert(graph.logits.as_str(), start);
    for node in graph.nodes.iter().rev() {
        let Some(r) = rel.remove(node.output.as_str()) else {
            continue;
        };
        let inputs = node
            .inputs
            .iter()
            .map(|n| fwd.get(graph, n))
            .collect::<Result<Vec<_>>>()?;
        let rule = composite.rule_for(node);
        let bounds = (node.op.linear().is_some() && rule == Rule::ZBox)
            .then(|| bounds_for(inputs[0].shape(), norm, channels));
        let out = ops::relevance_of(node, &inputs, &r, rule, bounds.as_ref())?;
        if std::env::var_os("LRP_TRACE").is_some() {
            let s_in: f32 = out.iter().map(|a| a.sum()).sum();
            eprintln!(
                "{:<30} {:<18} {:>12.5} -> {:>12.5}",
                node.name,
                node.op_type,
                r.sum(),
                s_in
            );
        }
        for (name, ri) in node.inputs.iter().zip(out) {
            match rel.get_mut(name.as_str()) {
                Some(acc) => *acc += &ri,
                None => {
                    rel.insert(name.as_str(), ri);
                }
            }
        }
    }
    let relevance = rel
        .remove(graph.input.as_str())
        .unwrap_or_else(|| ArrayD::zeros(fwd.input.shape()));
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
