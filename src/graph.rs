//! The graph the backward pass walks: the part of an ONNX model between its
//! image input and its logits, with weights resolved and constants removed.

use anyhow::{ensure, Context, Result};
use ndarray::ArrayD;

use crate::ops::{GradientOptions, Reuse};
use crate::rules::{Bounds, Rule};

pub use crate::ops::activation::Act;
pub use crate::ops::{ArithKind, Op, Pool};

/// One node of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node name (or a generated one when the file has none).
    pub name: String,
    /// The ONNX operator type.
    pub op_type: String,
    /// What it does.
    pub op: Op,
    /// Names of the activation tensors it reads (constants excluded).
    pub inputs: Vec<String>,
    /// Name of the tensor it writes.
    pub output: String,
    /// Whether this linear layer reads the model input (no other linear layer
    /// in between): the "first layer" of composites.
    pub first: bool,
}

impl Node {
    /// Propagates the relevance `r` at the node's output to each of its
    /// inputs ([`crate::ops::relevance_accounted`]); errors name the operator and node.
    ///
    /// `inputs` are the node's input activations, in the order of
    /// `self.inputs`; `rule` is the rule for linear layers (with the input
    /// bounds for z^B).
    pub fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        rule: Rule,
        bounds: Option<&Bounds>,
        reuse: Reuse,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(self.relevance_accounted(inputs, r, rule, bounds, reuse)?.0)
    }

    /// [`Node::relevance`], with the rule's account for a linear layer
    /// ([`crate::ops::relevance_accounted`]).
    pub fn relevance_accounted(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        rule: Rule,
        bounds: Option<&Bounds>,
        reuse: Reuse,
    ) -> Result<crate::ops::Propagated> {
        self.activations_given(inputs)
            .and_then(|()| {
                let op = &self.op;
                crate::ops::relevance_accounted(op, &self.output, inputs, r, rule, bounds, reuse)
            })
            .with_context(|| format!("relevance through {} node '{}'", self.op_type, self.name))
    }

    /// The gradient at each of the node's inputs for the gradient `g` at its
    /// output ([`crate::ops::gradient`]); errors name the operator and node.
    pub fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        how: impl Into<GradientOptions>,
    ) -> Result<Vec<ArrayD<f32>>> {
        let how = how.into();
        self.activations_given(inputs)
            .and_then(|()| crate::ops::gradient(&self.op, inputs, g, how))
            .with_context(|| format!("gradient through {} node '{}'", self.op_type, self.name))
    }

    /// [`Node::gradient`] owning `g`: an activation's gradient is computed in
    /// its memory; the numbers are the same.
    pub fn gradient_owned(
        &self,
        inputs: &[&ArrayD<f32>],
        g: ArrayD<f32>,
        how: impl Into<GradientOptions>,
    ) -> Result<Vec<ArrayD<f32>>> {
        let how = how.into();
        self.activations_given(inputs)
            .and_then(|()| crate::ops::gradient_owned(&self.op, inputs, g, how))
            .with_context(|| format!("gradient through {} node '{}'", self.op_type, self.name))
    }

    /// What kind of node it is, in words ("depthwise convolution"; the ONNX
    /// operator type for operators without a word of their own).
    pub fn kind(&self) -> String {
        self.op
            .kind()
            .map_or_else(|| self.op_type.clone(), str::to_string)
    }

    fn activations_given(&self, inputs: &[&ArrayD<f32>]) -> Result<()> {
        ensure!(
            inputs.len() == self.inputs.len(),
            "{} activations given for {} inputs",
            inputs.len(),
            self.inputs.len()
        );
        Ok(())
    }
}

/// The image input to logits part of a model, in topological order.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Name of the image input tensor.
    pub input: String,
    /// Its declared dimensions (`None` where symbolic).
    pub input_dims: Vec<Option<usize>>,
    /// Name of the logits tensor (the input of a trailing `Softmax`, if any).
    pub logits: String,
    /// Whether a trailing `Softmax` / `LogSoftmax` was skipped.
    pub skipped_softmax: bool,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Nodes that read `tensor`.
    pub fn consumers(&self, tensor: &str) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == tensor))
            .count()
    }

    /// Marks the linear layers that read the model input as `first`, the
    /// constants added after the first linear layer as biases
    /// ([`crate::ops::structural::Arith::bias`]) and, at each product of two
    /// activations, the factor that holds attention weights (computed by a
    /// softmax, through rearrangements and arithmetic with constants:
    /// [`crate::ops::attention::Bilinear::weights`]).
    pub fn mark_first_layers(&mut self) {
        use crate::ops::attention::{Bilinear, Softmax};
        use crate::ops::structural::Arith;
        use crate::ops::Elements;
        use std::collections::{HashMap, HashSet};
        let mut raw: HashSet<String> = HashSet::new();
        raw.insert(self.input.clone());
        let mut after_linear: HashSet<String> = HashSet::new();
        // per tensor: whether a softmax computes it (up to moves and scales)
        let mut softmax: HashMap<String, bool> = HashMap::new();
        for node in &mut self.nodes {
            let reads_raw = node.inputs.iter().any(|i| raw.contains(i));
            let linear = node.op.linear().is_some();
            if linear {
                node.first = reads_raw;
            } else if reads_raw {
                raw.insert(node.output.clone());
            }
            let downstream = node.inputs.iter().any(|i| after_linear.contains(i));
            if let Some(a) = node.op.downcast_mut::<Arith>() {
                a.bias = downstream;
            }
            if linear || downstream {
                after_linear.insert(node.output.clone());
            }
            let from_softmax = |i: &String| softmax.get(i).copied().unwrap_or(false);
            if node.op.downcast::<Bilinear>().is_some() {
                let w = node.inputs.iter().position(from_softmax);
                if let Some(b) = node.op.downcast_mut::<Bilinear>() {
                    b.weights = w;
                }
            }
            let is_softmax = node.op.downcast::<Softmax>().is_some()
                || (matches!(
                    node.op.elements(),
                    Elements::Rearranged | Elements::Arithmetic
                ) && node.inputs.first().is_some_and(from_softmax));
            softmax.insert(node.output.clone(), is_softmax);
        }
    }

    /// The tensor a user means by `name`: the output of the node of that
    /// name, else the tensor of that name (the model input or a node's
    /// output).
    pub fn resolve(&self, name: &str) -> Option<&str> {
        if let Some(n) = self.nodes.iter().find(|n| n.name == name) {
            return Some(&n.output);
        }
        if name == self.input {
            return Some(&self.input);
        }
        self.nodes
            .iter()
            .find(|n| n.output == name)
            .map(|n| n.output.as_str())
    }

    /// [`Graph::needed_activations`] without the inputs of ReLU and Clip
    /// nodes that the backward pass can do without
    /// ([`crate::ops::activation::Act::mask_from_output`]: it reads their
    /// output instead): tensors that only such nodes read, whose output is
    /// kept, and that are not the output of a linear layer for which
    /// `reuses` says the rule reuses `z = W x + b`, nor named in `keep`.
    pub fn lean_activations(&self, reuses: &dyn Fn(&Node) -> bool, keep: &[&str]) -> Vec<String> {
        use std::collections::HashMap;
        let all = self.needed_activations();
        let needed: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
        // per tensor: whether every node reading it is a ReLU or Clip whose
        // output is kept; the node writing it
        let mut masks: HashMap<&str, bool> = HashMap::new();
        for n in &self.nodes {
            let mask = n.op.derivative_from_output()
                && n.inputs.len() == 1
                && needed.contains(n.output.as_str());
            for i in &n.inputs {
                *masks.entry(i.as_str()).or_insert(true) &= mask;
            }
        }
        let producer: HashMap<&str, &Node> =
            self.nodes.iter().map(|n| (n.output.as_str(), n)).collect();
        let droppable = |t: &str| {
            masks.get(t) == Some(&true)
                && t != self.logits
                && !keep.contains(&t)
                && producer
                    .get(t)
                    .is_some_and(|p| p.op.linear().is_none() || !reuses(p))
        };
        all.iter().filter(|t| !droppable(t)).cloned().collect()
    }

    /// Names of all tensors the backward pass reads (node inputs), the model input excluded.
    pub fn needed_activations(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            for i in &n.inputs {
                if *i != self.input && seen.insert(i.as_str()) {
                    out.push(i.clone());
                }
            }
        }
        out
    }
}
