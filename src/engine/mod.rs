//! Running a model: the forward engines (native, or tract for graphs the
//! native engine does not cover) behind one `Backend` enum, and the one backward
//! walk every analyzer uses ([`walk`]).

pub(crate) mod native;
pub mod profile;
pub(crate) mod tract;
pub mod walk;

use std::collections::HashMap;

use anyhow::{anyhow, ensure, Context, Result};
use ndarray::ArrayD;
use tract_onnx::prelude::TypedModel;

use crate::graph::Graph;

/// Most bytes the tensors of one forward pass (activations and weights,
/// every node output counted once) may take.
pub const MAX_FORWARD_BYTES: u64 = 16_000_000_000;

/// Activations by tensor name.
type Activations = HashMap<String, ArrayD<f32>>;

/// Which engine runs the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The graph-native pass (`engine/native.rs`) where every operator has
    /// one, tract otherwise.
    #[default]
    Auto,
    /// Always tract (a cross-check of the native pass).
    Tract,
}

/// The engine a model runs on, with what it needs.
pub(crate) enum Backend {
    /// The graph-native pass (`engine/native.rs`).
    Native(native::NativePlan),
    /// tract, and why the native pass could not be used.
    Tract {
        /// The prepared plan.
        plan: tract::TractPlan,
        /// Why not native (`asked for` when [`Engine::Tract`] was chosen).
        reason: String,
    },
}

impl Backend {
    /// `native`, or `tract (<reason>)`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Native(_) => "native".to_string(),
            Backend::Tract { reason, .. } => format!("tract ({reason})"),
        }
    }

    /// Runs `graph` on `input`: the logits and the activations `keep` (all
    /// those the backward pass reads if `None`; the tract engine keeps them all), on
    /// inputs stacked on axis 0 if `batch` (native engine only; the caller
    /// checks [`native::NativePlan::batch_blocker`]).
    pub fn run_keeping(
        &self,
        graph: &Graph,
        input: ArrayD<f32>,
        keep: Option<&[String]>,
        batch: bool,
    ) -> Result<Forward> {
        let (logits_tensor, activations, signs) = match self {
            Backend::Native(native) => {
                let out =
                    (native.run_keeping(graph, &input, keep, batch)).context("forward pass")?;
                (Some(out.logits), out.activations, out.signs)
            }
            Backend::Tract { .. } if batch => {
                anyhow::bail!("the tract engine runs one input at a time")
            }
            Backend::Tract { plan, .. } => {
                let (logits, activations) = plan.run(&input)?;
                (logits, activations, HashMap::new())
            }
        };
        let logits_tensor =
            logits_tensor.ok_or_else(|| anyhow!("the forward pass returned nothing"))?;
        let logits: Vec<f32> = logits_tensor.iter().copied().collect();
        ensure!(
            logits.iter().all(|v| v.is_finite()),
            "the model produced non-finite logits"
        );
        Ok(Forward {
            input,
            logits,
            logits_tensor,
            activations,
            signs,
        })
    }
}

/// The result of a forward pass: logits and every activation the backward pass reads.
pub struct Forward {
    /// The model input.
    pub input: ArrayD<f32>,
    /// Logits (pre-softmax scores), flattened.
    pub logits: Vec<f32>,
    /// The logits tensor with its shape.
    pub logits_tensor: ArrayD<f32>,
    /// Activations by tensor name.
    pub activations: HashMap<String, ArrayD<f32>>,
    /// Whether an activation has values above and below zero, where the
    /// forward pass noted it (the native engine, as it checks that every
    /// output is finite): the rules then need not look.
    pub signs: HashMap<String, (bool, bool)>,
}

impl Forward {
    /// The activation called `name` (the model input included).
    pub fn get(&self, graph: &Graph, name: &str) -> Result<&ArrayD<f32>> {
        if name == graph.input {
            return Ok(&self.input);
        }
        self.activations
            .get(name)
            .ok_or_else(|| anyhow!("activation '{name}' was not kept by the forward pass"))
    }

    /// Indices of the `k` highest logits with their softmax probabilities.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        top_k(&self.logits, k)
    }

    /// How many inputs the pass ran on (stacked on axis 0; 1 unless it ran
    /// a batch).
    pub fn rows(&self) -> usize {
        match self.logits_tensor.shape() {
            [n, _, ..] if *n > 0 => *n,
            _ => 1,
        }
    }

    /// [`Forward::top_k`] of input `row` of a batch.
    pub fn top_k_row(&self, row: usize, k: usize) -> Vec<(usize, f32)> {
        let n = self.logits.len() / self.rows();
        top_k(
            &self.logits[(row * n).min(self.logits.len())..((row + 1) * n).min(self.logits.len())],
            k,
        )
    }
}

/// Indices of the `k` highest of `logits` with their softmax probabilities.
fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let probs = softmax(logits);
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter().take(k).map(|i| (i, probs[i])).collect()
}

impl Forward {}

/// Softmax of a vector (max-subtracted, so never overflows).
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Checks that the tensors of one forward pass of `model` (every node
/// output, with the shapes tract inferred) take at most
/// [`MAX_FORWARD_BYTES`].
pub(crate) fn check_forward_memory(model: &TypedModel, input: &[usize]) -> Result<()> {
    let mut total: u64 = 0;
    for node in model.nodes() {
        for o in &node.outputs {
            if let Some(shape) = o.fact.shape.as_concrete() {
                let n = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                    .unwrap_or(u64::MAX);
                total = total.saturating_add(n.saturating_mul(o.fact.datum_type.size_of() as u64));
            }
        }
    }
    ensure!(
        total <= MAX_FORWARD_BYTES,
        "one forward pass at input {input:?} needs about {:.0} GB for its tensors, more than the {:.0} GB allowed",
        total as f64 / 1e9,
        MAX_FORWARD_BYTES as f64 / 1e9
    );
    Ok(())
}
