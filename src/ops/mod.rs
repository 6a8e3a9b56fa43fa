//! Relevance propagation and exact gradients through each operator family,
//! one file per family, registered once by the `families!` line below.

#[cfg(test)]
mod geometry_tests;
pub(crate) mod pool_grad;
pub mod registry;

/// Declares each operator family's module and lists its `FAMILY` in
/// [`FAMILIES`]: adding a family is one file and one name here.
macro_rules! families {
    ($($family:ident),* $(,)?) => {
        $(pub mod $family;)*
        /// Every operator family, in the order of the README's table.
        pub const FAMILIES: &[&registry::Family] = &[$(&$family::FAMILY),*];
    };
}

families!(
    conv,
    dense,
    structural,
    mean,
    gate,
    pool,
    global_pool,
    reduce,
    concat,
    pad,
    resize,
    movement,
    activation,
    layer_norm,
);

use anyhow::{anyhow, ensure, Result};
use ndarray::ArrayD;

use crate::rules::cache::{Cached, WeightCache};
use crate::rules::{Account, Bounds, LinearLayer, Rule};
use activation::Act;
use conv::Conv;
use dense::{Affine, Dense};
pub use pool::{MaxPoolTies, Pool};

/// The axis `axis` (negative: counted from the end) of a rank-`rank` tensor.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    ensure!(
        (0..rank as i64).contains(&a),
        "axis {axis} out of range for rank {rank}"
    );
    Ok(a as usize)
}

/// How rectifiers pass gradients back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GradientMode {
    /// The exact gradient.
    #[default]
    Plain,
    /// Guided backprop: `Relu` (and `Clip` with lower bound 0, i.e. ReLU6)
    /// pass only positive gradients, and only where their input was positive.
    Guided,
}

/// How a gradient pass treats the operators whose derivative is a choice:
/// rectifiers ([`GradientMode`]) and max-pool ties ([`MaxPoolTies`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GradientOptions {
    /// Plain or guided.
    pub mode: GradientMode,
    /// Where a max pool's window hands its gradient.
    pub ties: MaxPoolTies,
}

impl From<GradientMode> for GradientOptions {
    fn from(mode: GradientMode) -> Self {
        GradientOptions {
            mode,
            ties: MaxPoolTies::default(),
        }
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
    /// Shape-only nodes (`Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`) and
    /// how they compute their output shape (`None`: from a shape computed at
    /// run time, which only the tract engine runs).
    Reshape(Option<structural::ReshapeRule>),
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
    /// `Pad`: relevance cropped back (constant mode) or summed onto the
    /// copied elements (edge, reflect, wrap).
    Pad(pad::PadSpec),
    /// `Resize` (nearest): each input element gets the sum over its copies.
    Resize(resize::ResizeSpec),
    /// `Mul` of an activation by a gate (squeeze-excitation, swish): all
    /// relevance to the gated activation, none to the gate.
    Gate {
        /// Which input is the gate (`None`: the one broadcast to the output).
        gate: Option<usize>,
    },
    /// An operator that only copies elements (`Slice`, one output of `Split`,
    /// `Gather`, `GatherElements`, `Expand`, `Tile`, `DepthToSpace`,
    /// `SpaceToDepth`): relevance and gradient go back along its copy map,
    /// each input element receiving the sum over its copies.
    Move(movement::Movement),
    /// An operator family written as an [`Operator`] and built through the
    /// [`registry`] (`Mean`).
    Registered(std::sync::Arc<dyn Operator>),
}

/// How relevance flows through an operator, for the relevance ledger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flow {
    /// A linear layer: the rule's [`crate::rules::Account`] says where the
    /// relevance it does not pass on goes.
    Linear,
    /// Each output `j` hands `R_j` to its inputs in proportion to their
    /// contributions, over the stabilised denominator `stab(z_j)` (`z_j` the
    /// output, times the number of inputs when `per_input`: a mean divided
    /// by the sum): what is not passed on is the stabiliser's, all of `R_j`
    /// where `z_j = 0`.
    Proportional {
        /// Whether the denominator is the output times the number of inputs.
        per_input: bool,
    },
    /// All relevance is passed on (copies, selections, maxima, activations).
    Conserving,
    /// Relevance on elements the operator added (constant padding) is
    /// dropped; the rest is passed on.
    Crops,
}

/// Whether LRP-0 through an operator equals gradient x input, what the
/// self-check (`check`) compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Lrp0 {
    /// Equal: the operator is positively homogeneous and relevance follows
    /// its gradient (a sum, a copy, a maximum).
    Exact,
    /// Equal to gradient x input of the network in which this operator's
    /// gradient is [`Operator::lrp0_gradient`] (what that is, in words: the
    /// rule the operator's relevance follows, e.g. a normalisation's
    /// standard deviation held constant).
    Modified(&'static str),
    /// Different, and why.
    Differs(String),
}

/// An operator family in one file: its shape, forward pass, relevance and
/// gradient, and the facts the self-check, the ledger and batching need
/// (the import from ONNX is the [`registry::Family::import`] of the same
/// file). Inputs are the node's activations, in order. No method has a
/// default: a new operator states each.
pub trait Operator: std::fmt::Debug + Send + Sync {
    /// The output shape for inputs of these shapes.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>>;
    /// The forward pass (the native engine's).
    fn forward(&self, inputs: &[&ArrayD<f32>]) -> Result<ArrayD<f32>>;
    /// The relevance `r` at the output, handed to each input, with the
    /// account of what it does not pass on where its [`Operator::flow`] is
    /// [`Flow::Linear`] (one per row of a batch, [`Reuse::rows`]).
    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        reuse: &Reuse,
    ) -> Result<Propagated>;
    /// The gradient `g` at the output, at each input (the chain rule, exact).
    fn gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>;
    /// Whether LRP-0 follows the gradient through it; read by the self-check.
    fn lrp0(&self) -> Lrp0;
    /// The gradient LRP-0 follows through it: [`Operator::gradient`] unless
    /// [`Operator::lrp0`] is [`Lrp0::Modified`].
    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>;
    /// Whether its derivative depends on which inputs are the largest (a
    /// maximum: the self-check looks for near-ties there).
    fn takes_maxima(&self) -> bool;
    /// How relevance flows through it (the ledger checks that nothing else
    /// is lost).
    fn flow(&self) -> Flow;
    /// The rule its relevance applies, for the ledger (`None`: no rule, it
    /// passes or splits relevance as its [`Operator::flow`] says).
    fn rule(&self, reuse: &Reuse) -> Option<Rule>;
    /// What kind of node it is, in words, for the ledger's summary (`None`:
    /// named by its ONNX operator type).
    fn kind(&self) -> Option<&'static str>;
    /// Whether the samples of inputs (of rank `rank`) stacked on axis 0 are
    /// computed apart from each other, forward and backward: a batch may
    /// then run through it in one pass.
    fn keeps_samples_apart(&self, rank: usize) -> bool;
}

impl Op {
    /// Whether its derivative depends on which inputs are the largest
    /// (max pools, and registered operators that say so: `GlobalMaxPool`,
    /// `ReduceMax`).
    pub fn takes_maxima(&self) -> bool {
        match self {
            Op::MaxPool(_) => true,
            Op::Registered(o) => o.takes_maxima(),
            Op::Conv(_)
            | Op::Dense(_)
            | Op::Affine(_)
            | Op::AvgPool(_)
            | Op::Sum
            | Op::Activation(_)
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Pad(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_) => false,
        }
    }

    /// How relevance flows through it.
    pub fn flow(&self) -> Flow {
        match self {
            Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => Flow::Linear,
            Op::Sum | Op::AvgPool(_) => Flow::Proportional { per_input: false },
            Op::Pad(_) => Flow::Crops,
            Op::Registered(o) => o.flow(),
            Op::MaxPool(_)
            | Op::Activation(_)
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_) => Flow::Conserving,
        }
    }

    /// What kind of node it is, in words (for the ledger's summary);
    /// `None` for the others (named by their ONNX operator type).
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Op::Conv(c) if c.is_depthwise() => "depthwise convolution",
            Op::Conv(_) => "convolution",
            Op::Dense(_) => "dense layer",
            Op::Affine(_) => "per-channel affine layer",
            Op::MaxPool(_) => "max pool",
            Op::AvgPool(_) => "average pool",
            Op::Sum => "residual Add",
            Op::Registered(o) => return o.kind(),
            Op::Activation(_)
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Pad(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_) => return None,
        })
    }

    /// The node as a linear layer, if it is one.
    pub fn linear(&self) -> Option<&dyn LinearLayer> {
        match self {
            Op::Conv(c) => Some(c),
            Op::Dense(d) => Some(d),
            Op::Affine(a) => Some(a),
            Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::Sum
            | Op::Activation(_)
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Pad(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_)
            | Op::Registered(_) => None,
        }
    }

    /// The inputs where its derivative jumps, for an elementwise
    /// activation (what `check` steps around); none for the others.
    pub fn kinks(&self) -> Vec<f32> {
        match self {
            Op::Activation(act) => act.kinks(),
            Op::Conv(_)
            | Op::Dense(_)
            | Op::Affine(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::Sum
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Pad(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_)
            | Op::Registered(_) => vec![],
        }
    }

    /// Whether LRP-0 through it equals gradient x input (what `check`
    /// compares): exactly for linear layers, sums, pools, copies and the
    /// rectifiers through the origin; with a modified gradient
    /// ([`Op::lrp0_gradient`]) for smooth activations with `f(0) = 0` and
    /// normalisations; else why not.
    pub fn lrp0(&self) -> Lrp0 {
        match self {
            Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => Lrp0::Exact,
            Op::MaxPool(_) | Op::AvgPool(_) => Lrp0::Exact,
            Op::Sum | Op::Reshape(_) | Op::Transpose(_) | Op::Resize(_) => Lrp0::Exact,
            // copies and selections (Slice, Split, Gather...): each output
            // element is one input element, relevance goes with it
            Op::Move(_) => Lrp0::Exact,
            Op::Pad(spec) => {
                if spec.mode != pad::PadMode::Constant || spec.value == 0.0 {
                    Lrp0::Exact
                } else {
                    Lrp0::Differs(format!("pads with the constant {}", spec.value))
                }
            }
            Op::Activation(act) => act.lrp0(),
            Op::Arith {
                kind,
                constant,
                constant_first,
            } => match kind {
                ArithKind::Mul => Lrp0::Exact,
                ArithKind::Div if !constant_first => Lrp0::Exact,
                ArithKind::Div => Lrp0::Differs("divides a constant by the activation".into()),
                ArithKind::Add | ArithKind::Sub if constant.iter().all(|&c| c == 0.0) => {
                    Lrp0::Exact
                }
                ArithKind::Add | ArithKind::Sub => {
                    Lrp0::Differs("adds a constant that is not a layer's bias".into())
                }
            },
            Op::Gate { .. } => Lrp0::Differs("multiplies two activations (a gate)".into()),
            Op::Registered(o) => o.lrp0(),
            Op::BatchNorm { .. } | Op::AddConst(_) => Lrp0::Differs("was not canonized".into()),
        }
    }

    /// The gradient LRP-0 follows through it for `g` at its output:
    /// `exact(g)` (the operator's gradient as the caller computes it) unless
    /// [`Op::lrp0`] is [`Lrp0::Modified`]: a smooth activation's derivative
    /// replaced by `f(x) / x`, a normalisation's standard deviation held
    /// constant.
    pub fn lrp0_gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        exact: impl FnOnce(&ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
    ) -> Result<Vec<ArrayD<f32>>> {
        if !matches!(self.lrp0(), Lrp0::Modified(_)) {
            return exact(g);
        }
        match self {
            Op::Activation(act) => Ok(vec![act.lrp0_gradient(inputs[0], g)?]),
            Op::Registered(o) => o.lrp0_gradient(inputs, g),
            Op::Conv(_)
            | Op::Dense(_)
            | Op::Affine(_)
            | Op::MaxPool(_)
            | Op::AvgPool(_)
            | Op::Sum
            | Op::Arith { .. }
            | Op::Reshape(_)
            | Op::Transpose(_)
            | Op::BatchNorm { .. }
            | Op::AddConst(_)
            | Op::Pad(_)
            | Op::Resize(_)
            | Op::Gate { .. }
            | Op::Move(_) => exact(g),
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

/// What the relevance pass of a linear layer may reuse.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reuse<'a> {
    /// Modified weights kept across images.
    pub cache: Option<&'a WeightCache>,
    /// The layer's output `W x + b` from the forward pass, if it was kept.
    pub output: Option<&'a ArrayD<f32>>,
    /// Inputs stacked on axis 0 (a batch; 0 counts as 1): the account of a
    /// linear layer is given per row.
    pub rows: usize,
    /// Whether the layer's input has values above and below zero, if known.
    pub signs: Option<(bool, bool)>,
    /// Where a max pool's window hands its relevance (not a reuse, but one
    /// of the two choices of a relevance pass outside the linear layers'
    /// rules).
    pub ties: MaxPoolTies,
    /// The composite's rule of normalisation layers (`LayerNormalization`;
    /// the other choice; `None`: epsilon at [`crate::rules::STABILIZER`]).
    pub norm: Option<Rule>,
}

/// What a relevance pass hands to each input, with the rule's accounts of a
/// linear layer (one per row of a batch).
pub type Propagated = (Vec<ArrayD<f32>>, Option<Vec<Account>>);

/// Propagates the relevance `r` at the output of `op` to each of its inputs,
/// with the rule's [`Account`] for a linear layer, one per row of a batch
/// ([`Reuse::rows`]) (`Node::relevance` of the graph module names the node
/// in errors).
///
/// `inputs` are the input activations; `rule` is the rule for linear layers
/// (with the input bounds for z^B); `output` names the output tensor (the key
/// of the layer's cached modified weights).
pub fn relevance_accounted(
    op: &Op,
    output: &str,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    rule: Rule,
    bounds: Option<&Bounds>,
    reuse: Reuse,
) -> Result<Propagated> {
    ensure!(!inputs.is_empty(), "no input activation");
    let x = inputs[0];
    let one = |a: ArrayD<f32>| vec![a];
    let out = match op {
        Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => {
            let layer = op.linear().expect("linear op");
            let (out, account) = match reuse.cache {
                Some(cache) => {
                    let name = output;
                    let cached = Cached { layer, cache, name };
                    let (z, rows, signs) = (reuse.output, reuse.rows, reuse.signs);
                    rule.propagate_rows(&cached, x, z, r, bounds, rows, signs)?
                }
                None => {
                    let (z, rows, signs) = (reuse.output, reuse.rows, reuse.signs);
                    rule.propagate_rows(layer, x, z, r, bounds, rows, signs)?
                }
            };
            return Ok((one(out), Some(account)));
        }
        Op::MaxPool(p) => one(pool::max_pool(p, x, r, reuse.ties)?),
        Op::AvgPool(p) => one(pool::avg_pool(p, x, r)?),
        Op::Sum => structural::sum(inputs, r)?,
        Op::Activation(_) | Op::Arith { .. } => one(structural::pass(x, r)?),
        Op::Reshape(_) => one(structural::reshape(x, r)?),
        Op::Transpose(perm) => one(structural::transpose(perm, x, r)?),
        Op::Move(m) => m.backward(inputs, r)?,
        Op::Registered(o) => return o.relevance(inputs, r, &reuse),
        Op::BatchNorm { .. } | Op::AddConst(_) => {
            return Err(anyhow!("the node was not canonized"));
        }
        Op::Pad(_) | Op::Resize(_) | Op::Gate { .. } => copies(op, inputs, r, false)?,
    };
    Ok((out, None))
}

/// The operators that copy, select or gate values (pad, resize,
/// gate): relevance (`gradient == false`) or gradient. Inputs
/// read at run time as parameters (computed pads or scales) get zeros.
fn copies(
    op: &Op,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    gradient: bool,
) -> Result<Vec<ArrayD<f32>>> {
    let x = inputs[0];
    let with_param = |a: ArrayD<f32>| {
        let mut v = vec![a];
        v.extend(inputs[1..].iter().map(|p| ArrayD::zeros(p.shape())));
        v
    };
    Ok(match op {
        Op::Pad(spec) => {
            let pads = match (&spec.pads, inputs.get(1)) {
                (Some(p), _) => p.clone(),
                (None, Some(t)) => pad::runtime_pads(t)?,
                (None, None) => return Err(anyhow!("the pads of the node are missing")),
            };
            with_param(pad::back(spec, &pads, x, r)?)
        }
        Op::Resize(spec) => with_param(resize::back(spec, inputs.get(1).copied(), x, r)?),
        Op::Gate { .. } if gradient => gate::gradient(inputs, r)?,
        Op::Gate { gate } => gate::relevance(*gate, inputs, r)?,
        Op::Conv(_)
        | Op::Dense(_)
        | Op::Affine(_)
        | Op::MaxPool(_)
        | Op::AvgPool(_)
        | Op::Sum
        | Op::Activation(_)
        | Op::Arith { .. }
        | Op::Reshape(_)
        | Op::Transpose(_)
        | Op::BatchNorm { .. }
        | Op::AddConst(_)
        | Op::Move(_)
        | Op::Registered(_) => return Err(anyhow!("not a copying operator")),
    })
}

/// [`gradient`] owning `g`: the piecewise-linear activations multiply it by
/// their derivative in place (no new tensor), other operators as [`gradient`].
pub fn gradient_owned(
    op: &Op,
    inputs: &[&ArrayD<f32>],
    g: ArrayD<f32>,
    how: GradientOptions,
) -> Result<Vec<ArrayD<f32>>> {
    if let (Op::Activation(act), Some(x)) = (op, inputs.first()) {
        let mut g = g;
        if act.gradient_in_place(x, &mut g, how.mode == GradientMode::Guided)? {
            return Ok(vec![g]);
        }
        return gradient(op, inputs, &g, how);
    }
    gradient(op, inputs, &g, how)
}

/// The gradient at each input of `op` for the gradient `g` at its output
/// (the chain rule through one node, exact; see
/// `Node::gradient` of the graph module names the node in errors).
pub fn gradient(
    op: &Op,
    inputs: &[&ArrayD<f32>],
    g: &ArrayD<f32>,
    how: GradientOptions,
) -> Result<Vec<ArrayD<f32>>> {
    ensure!(!inputs.is_empty(), "no input activation");
    let x = inputs[0];
    let one = |a: ArrayD<f32>| vec![a];
    let out = match op {
        Op::Conv(_) | Op::Dense(_) | Op::Affine(_) => {
            let layer = op.linear().expect("linear op");
            one(layer.backward(g, layer.weight(), x.shape())?)
        }
        // the max pools' relevance rule is their gradient
        Op::MaxPool(p) => one(pool::max_pool(p, x, g, how.ties)?),
        Op::AvgPool(p) => one(pool_grad::avg_pool(p, x.shape(), g)?),
        Op::Sum => structural::sum_gradient(inputs, g)?,
        Op::Activation(act) => one(act.gradient(x, g, how.mode == GradientMode::Guided)?),
        Op::Arith {
            kind,
            constant,
            constant_first,
        } => one(structural::arith_gradient(
            *kind,
            constant,
            *constant_first,
            x,
            g,
        )?),
        Op::Reshape(_) => one(structural::reshape(x, g)?),
        Op::Transpose(perm) => one(structural::transpose(perm, x, g)?),
        Op::Move(m) => m.backward(inputs, g)?,
        Op::Registered(o) => o.gradient(inputs, g)?,
        Op::BatchNorm { .. } | Op::AddConst(_) => {
            return Err(anyhow!("the node was not canonized"));
        }
        Op::Pad(_) | Op::Resize(_) | Op::Gate { .. } => copies(op, inputs, g, true)?,
    };
    Ok(out)
}
