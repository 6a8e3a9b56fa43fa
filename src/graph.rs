//! The graph the backward pass walks: the part of an ONNX model between its
//! image input and its logits, with weights resolved and constants removed.

use anyhow::{ensure, Result};
use ndarray::ArrayD;

use crate::ops::conv::{Conv, Window};
use crate::ops::dense::{Affine, Dense};
use crate::rules::LinearLayer;

pub use crate::ops::activation::Act;

/// Geometry of a pooling node.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Window geometry.
    pub window: Window,
    /// `AveragePool`: divide by the window clipped to the padded input
    /// (padding included), not by the number of input elements in it.
    pub count_include_pad: bool,
    /// `ceil_mode`: the output size rounds up, so a last window may hang over
    /// the end of the padded input (the overhang counts for nothing, not even
    /// for `count_include_pad`).
    pub ceil_mode: bool,
}

impl Pool {
    /// Output height and width for an input of `h x w`, as ONNX and PyTorch
    /// define them: `(padded - k_eff) / stride + 1` rounded down, or up in
    /// `ceil_mode`, where a last window that would start past the input and
    /// its leading padding is dropped.
    pub fn output_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let wnd = &self.window;
        let p = wnd.pads(h, w);
        let mut out = [0; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let k = wnd.dilations[axis] * (wnd.kernel[axis].max(1) - 1) + 1;
            let s = wnd.strides[axis].max(1);
            let padded = size + p[axis] + p[axis + 2];
            ensure!(padded >= k, "kernel {k} larger than padded input {padded}");
            let span = padded - k;
            let mut o = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            if self.ceil_mode && (o - 1) * s >= size + p[axis] {
                o -= 1;
            }
            out[axis] = o;
        }
        Ok(out)
    }
}

/// Elementwise arithmetic of an activation with a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithKind {
    /// `x + c`.
    Add,
    /// `x - c` (or `c - x`).
    Sub,
    /// `x * c`.
    Mul,
    /// `x / c` (or `c / x`).
    Div,
}

/// What a node does, as far as relevance and gradients are concerned.
#[derive(Clone, Debug)]
pub enum Op {
    /// Convolution (a linear layer).
    Conv(Conv),
    /// Dense layer (`Gemm`, `MatMul` [+ `Add`]).
    Dense(Dense),
    /// Per-channel affine layer (unfolded `BatchNormalization`).
    Affine(Affine),
    /// `MaxPool`: winner takes all.
    MaxPool(Pool),
    /// `AveragePool`: proportional to contribution.
    AvgPool(Pool),
    /// `GlobalAveragePool`: proportional to contribution.
    GlobalAvgPool,
    /// `GlobalMaxPool`: winner takes all.
    GlobalMaxPool,
    /// Elementwise sum of activations (residual `Add`): proportional split.
    Sum,
    /// Elementwise activation (also `Dropout`, `Identity`, `Cast`): relevance
    /// passes unchanged, the gradient is multiplied by the derivative.
    Activation(Act),
    /// Elementwise arithmetic of the activation with a constant (numpy
    /// broadcasting): relevance passes unchanged, the gradient is that of the
    /// operation. `Add` comes from canonization ([`Op::unmerged`]).
    Arith {
        /// The operation.
        kind: ArithKind,
        /// The constant operand.
        constant: ArrayD<f32>,
        /// Whether the constant is the first operand (`c - x`, `c / x`).
        constant_first: bool,
    },
    /// Shape-only nodes (`Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`).
    Reshape,
    /// `Transpose` with this permutation.
    Transpose(Vec<usize>),
    /// `BatchNormalization` before canonization: `y = x * scale + shift` per channel.
    BatchNorm {
        /// Per-channel scale `gamma / sqrt(var + eps)`.
        scale: Vec<f32>,
        /// Per-channel shift `beta - mean * scale`.
        shift: Vec<f32>,
    },
    /// `Add` of a constant before canonization (a bias, usually after `MatMul`).
    AddConst(ArrayD<f32>),
    /// `Concat` of activations along `axis` (negative: from the end): each
    /// input gets its slice of the relevance.
    Concat {
        /// The concatenation axis as written in the model.
        axis: i64,
    },
    /// `Pad`: relevance cropped back (constant mode) or summed onto the
    /// copied elements (edge, reflect, wrap).
    Pad(crate::ops::pad::PadSpec),
    /// `Resize` (nearest): each input element gets the sum over its copies.
    Resize(crate::ops::resize::ResizeSpec),
    /// `Mul` of an activation by a gate (squeeze-excitation, swish): all
    /// relevance to the gated activation, none to the gate.
    Gate {
        /// Which input is the gate (`None`: the one broadcast to the output).
        gate: Option<usize>,
    },
    /// `ReduceMean` / `ReduceSum` (proportional) and `ReduceMax` (winner takes all).
    Reduce(crate::ops::reduce::ReduceSpec),
    /// An operator that only copies elements (`Slice`, one output of `Split`,
    /// `Gather`, `GatherElements`, `Expand`, `Tile`, `DepthToSpace`,
    /// `SpaceToDepth`): relevance and gradient go back along its copy map,
    /// each input element receiving the sum over its copies.
    Move(crate::ops::movement::Movement),
}

impl Op {
    /// The node as a linear layer, if it is one.
    pub fn linear(&self) -> Option<&dyn LinearLayer> {
        match self {
            Op::Conv(c) => Some(c),
            Op::Dense(d) => Some(d),
            Op::Affine(a) => Some(a),
            _ => None,
        }
    }

    /// What an [`Op::AddConst`] that canonization could not merge into a
    /// layer's bias becomes: an [`Op::Arith`] addition. Other ops are returned
    /// unchanged.
    pub fn unmerged(self) -> Op {
        match self {
            Op::AddConst(constant) => Op::Arith {
                kind: ArithKind::Add,
                constant,
                constant_first: false,
            },
            op => op,
        }
    }
}

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

    /// Marks the linear layers that read the model input as `first`.
    pub fn mark_first_layers(&mut self) {
        use std::collections::HashSet;
        let mut raw: HashSet<String> = HashSet::new();
        raw.insert(self.input.clone());
        for node in &mut self.nodes {
            let reads_raw = node.inputs.iter().any(|i| raw.contains(i));
            if node.op.linear().is_some() {
                node.first = reads_raw;
            } else if reads_raw {
                raw.insert(node.output.clone());
            }
        }
    }

    /// Names of all tensors the backward pass reads (node inputs), the model input excluded.
    pub fn needed_activations(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in &self.nodes {
            for i in &n.inputs {
                if *i != self.input && !out.contains(i) {
                    out.push(i.clone());
                }
            }
        }
        out
    }
}
