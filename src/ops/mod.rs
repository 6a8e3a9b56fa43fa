//! Relevance propagation and exact gradients through each operator family,
//! one file per family, registered once by the `families!` line below.

/// The operator methods of an operator that is no linear layer and no
/// per-channel affine map: no weights, nothing folds into it, it folds
/// into nothing.
macro_rules! not_linear {
    () => {
        fn linear(&self) -> Option<&dyn crate::rules::LinearLayer> {
            None
        }
        fn parameters_mut(&mut self) -> Option<crate::ops::Parameters<'_>> {
            None
        }
        fn fold(&mut self, _: &dyn crate::ops::Operator) -> bool {
            false
        }
        fn channel_affine(&self, _: usize, _: usize) -> Option<(Vec<f32>, Vec<f32>)> {
            None
        }
    };
}
pub(crate) use not_linear;

/// The operator methods of a plain operator: the native engine runs it, it
/// is no linear layer ([`not_linear`]), its derivative has no kinks and is
/// not read from its output, it reads no parameters at run time and maps no
/// z^B bounds.
macro_rules! plain {
    () => {
        fn native(&self) -> Option<&'static str> {
            None
        }
        fn kinks(&self) -> Vec<f32> {
            vec![]
        }
        fn derivative_from_output(&self) -> bool {
            false
        }
        fn data_inputs(&self, n: usize) -> usize {
            n
        }
        fn bounds(
            &self,
            _: &ndarray::ArrayD<f32>,
            _: &ndarray::ArrayD<f32>,
            _: &[&ndarray::ArrayD<f32>],
            _: &[usize],
        ) -> Option<crate::ops::Interval> {
            None
        }
        crate::ops::not_linear!();
    };
}
pub(crate) use plain;

/// The operator methods every linear layer states alike (`Conv`, `Gemm`,
/// per-channel layers): relevance by the composite's rule
/// ([`linear_relevance`]), the exact transposed pass as the gradient,
/// LRP-0 exact, and the facts of a map that keeps the samples of a batch
/// apart. Each layer states its shape, forward pass, kind, parameters and
/// canonization itself.
macro_rules! linear_layer {
    () => {
        fn native(&self) -> Option<&'static str> {
            None
        }

        fn relevance(
            &self,
            inputs: &[&ndarray::ArrayD<f32>],
            r: &ndarray::ArrayD<f32>,
            reuse: &crate::ops::Reuse,
        ) -> anyhow::Result<crate::ops::Propagated> {
            crate::ops::linear_relevance(self, inputs, r, reuse)
        }

        fn gradient(
            &self,
            inputs: &[&ndarray::ArrayD<f32>],
            g: &ndarray::ArrayD<f32>,
            _: crate::ops::GradientOptions,
        ) -> anyhow::Result<Vec<ndarray::ArrayD<f32>>> {
            use crate::rules::LinearLayer;
            Ok(vec![self.backward(g, self.weight(), inputs[0].shape())?])
        }

        fn lrp0(&self) -> crate::ops::Lrp0 {
            crate::ops::Lrp0::Exact
        }

        fn lrp0_gradient(
            &self,
            inputs: &[&ndarray::ArrayD<f32>],
            g: &ndarray::ArrayD<f32>,
        ) -> anyhow::Result<Vec<ndarray::ArrayD<f32>>> {
            crate::ops::Operator::gradient(self, inputs, g, Default::default())
        }

        fn takes_maxima(&self) -> bool {
            false
        }

        fn kinks(&self) -> Vec<f32> {
            vec![]
        }

        fn derivative_from_output(&self) -> bool {
            false
        }

        fn flow(&self) -> crate::ops::Flow {
            crate::ops::Flow::Linear
        }

        fn elements(&self) -> crate::ops::Elements {
            crate::ops::Elements::Other
        }

        fn rule(&self, reuse: &crate::ops::Reuse) -> Option<crate::rules::Rule> {
            reuse.rule
        }

        fn keeps_samples_apart(&self, _rank: usize) -> bool {
            true
        }

        fn data_inputs(&self, n: usize) -> usize {
            n
        }

        fn linear(&self) -> Option<&dyn crate::rules::LinearLayer> {
            Some(self)
        }

        fn bounds(
            &self,
            _: &ndarray::ArrayD<f32>,
            _: &ndarray::ArrayD<f32>,
            _: &[&ndarray::ArrayD<f32>],
            _: &[usize],
        ) -> Option<crate::ops::Interval> {
            None
        }
    };
}
pub(crate) use linear_layer;

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
    attention,
);

use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use ndarray::ArrayD;

use crate::rules::cache::{Cached, WeightCache};
use crate::rules::{Account, Bounds, LinearLayer, Rule};
use activation::Act;
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

/// How an operator's output elements come from its input elements, as far
/// as the relevance pass and the self-check use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elements {
    /// An elementwise activation `y_i = f(x_i)`: relevance passes unchanged.
    Activation,
    /// Elementwise arithmetic with a constant (numpy broadcasting):
    /// relevance passes unchanged.
    Arithmetic,
    /// The same elements in another shape or order (`Reshape`, `Transpose`).
    Rearranged,
    /// Anything else.
    Other,
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

/// Element bounds pushed through an operator: the interval `[low, high]`
/// of each output element, and whether the operator changed values (a
/// normalisation) rather than only moved them.
pub type Interval = (ArrayD<f32>, ArrayD<f32>, bool);

/// An operator family in one file: its shape, forward pass, relevance and
/// gradient, and the facts the self-check, the ledger, batching and
/// canonization need (the import from ONNX is the
/// [`registry::Family::import`] of the same file). Inputs are the node's
/// activations, in order. No method has a default: a new operator states
/// each, and adding a method makes the compiler list every operator.
pub trait Operator: std::fmt::Debug + Send + Sync + AsAny + CloneOperator {
    /// The output shape for inputs of these shapes.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>>;
    /// The forward pass (the native engine's) on inputs holding `batch`
    /// samples stacked on axis 0 (1: the model's own input).
    fn forward(&self, inputs: &[&ArrayD<f32>], batch: usize) -> Result<ArrayD<f32>>;
    /// Why the native engine cannot run its forward pass (the model's then
    /// runs in tract), or `None` if it can.
    fn native(&self) -> Option<&'static str>;
    /// The relevance `r` at the output, handed to each input, with the
    /// account of what it does not pass on where its [`Operator::flow`] is
    /// [`Flow::Linear`] (one per row of a batch, [`Reuse::rows`]).
    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        reuse: &Reuse,
    ) -> Result<Propagated>;
    /// The gradient `g` at the output, at each input (the chain rule,
    /// exact unless `how` asks for guided rectifiers).
    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        how: GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>>;
    /// Whether LRP-0 follows the gradient through it; read by the self-check.
    fn lrp0(&self) -> Lrp0;
    /// The gradient LRP-0 follows through it where [`Operator::lrp0`] is
    /// [`Lrp0::Modified`] (else its gradient).
    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>;
    /// Whether its derivative depends on which inputs are the largest (a
    /// maximum: the self-check looks for near-ties there).
    fn takes_maxima(&self) -> bool;
    /// The inputs where its derivative jumps, for an elementwise
    /// activation (what `check` steps around); none for the others.
    fn kinks(&self) -> Vec<f32>;
    /// Whether its derivative can be read from its output as well as from
    /// its input (a ReLU: a lean forward pass may then drop the input).
    fn derivative_from_output(&self) -> bool;
    /// How relevance flows through it (the ledger checks that nothing else
    /// is lost).
    fn flow(&self) -> Flow;
    /// How its output elements come from its input elements.
    fn elements(&self) -> Elements;
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
    /// How many of its `n` inputs are data (the others are parameters read
    /// at run time, such as pads or scales: no relevance, zero gradient).
    fn data_inputs(&self, n: usize) -> usize;
    /// The operator as a linear layer the composite's rules apply to, if
    /// it is one.
    fn linear(&self) -> Option<&dyn LinearLayer>;
    /// The weights and bias of a linear layer, to change (model
    /// randomization).
    fn parameters_mut(&mut self) -> Option<Parameters<'_>>;
    /// The operator as `x * scale + shift` per output channel of a layer
    /// with `m` output channels on the axis `from_end` axes before the last
    /// (a batch norm, arithmetic with a per-channel constant): what
    /// canonization folds into the layer before it.
    fn channel_affine(&self, m: usize, from_end: usize) -> Option<(Vec<f32>, Vec<f32>)>;
    /// Folds the per-channel affine map `next` ([`Operator::channel_affine`])
    /// that alone reads its output into its weights and bias (Zennit's
    /// `MergeBatchNorm`); `false`, nothing changed, where it cannot.
    fn fold(&mut self, next: &dyn Operator) -> bool;
    /// Element bounds `[low, high]` of its first input pushed through it
    /// (the z^B bounds of a first layer behind normalisation nodes;
    /// `params` its other inputs, `out_shape` its output's shape), or
    /// `None` where it does not map bounds elementwise.
    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        params: &[&ArrayD<f32>],
        out_shape: &[usize],
    ) -> Option<Interval>;
}

/// The parameters of a linear layer ([`Operator::parameters_mut`]).
pub struct Parameters<'a> {
    /// The weights.
    pub weight: &'a mut ArrayD<f32>,
    /// The bias, if it has one.
    pub bias: Option<&'a mut ArrayD<f32>>,
    /// How many inputs each output reads (He initialisation's fan-in).
    pub fan_in: usize,
}

/// Downcasting an [`Operator`] to its type (for engine optimisations that
/// concern one family, as tract's `downcast_ref`).
pub trait AsAny {
    /// The operator as [`std::any::Any`].
    fn as_any(&self) -> &dyn std::any::Any;
    /// The operator as mutable [`std::any::Any`].
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

// only operators: a blanket impl for every `Any` would make `Arc<dyn
// Operator>` (an `Any` itself) answer `as_any` with the pointer
impl<T: Operator + 'static> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Cloning an [`Operator`] behind a shared pointer (to change one node of
/// a graph whose operators another graph shares).
pub trait CloneOperator {
    /// A copy of the operator.
    fn clone_operator(&self) -> Arc<dyn Operator>;
}

impl<T: Operator + Clone + 'static> CloneOperator for T {
    fn clone_operator(&self) -> Arc<dyn Operator> {
        Arc::new(self.clone())
    }
}

/// What a node does: its [`Operator`], shared between copies of a graph.
#[derive(Clone, Debug)]
pub struct Op(Arc<dyn Operator>);

impl std::ops::Deref for Op {
    type Target = dyn Operator;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl From<Arc<dyn Operator>> for Op {
    fn from(o: Arc<dyn Operator>) -> Op {
        Op(o)
    }
}

impl Op {
    /// The node operator `o`.
    pub fn new(o: impl Operator + 'static) -> Op {
        Op(Arc::new(o))
    }

    /// The operator as a `T`, if it is one.
    pub fn downcast<T: Operator + 'static>(&self) -> Option<&T> {
        (*self.0).as_any().downcast_ref()
    }

    /// The operator, to change (a copy first where another graph shares it).
    pub fn get_mut(&mut self) -> &mut dyn Operator {
        if Arc::get_mut(&mut self.0).is_none() {
            self.0 = self.0.clone_operator();
        }
        Arc::get_mut(&mut self.0).expect("a fresh copy is not shared")
    }

    /// The operator as a mutable `T`, if it is one.
    pub fn downcast_mut<T: Operator + 'static>(&mut self) -> Option<&mut T> {
        self.downcast::<T>()?;
        self.get_mut().as_any_mut().downcast_mut()
    }

    /// The gradient LRP-0 follows through it for `g` at its output:
    /// `exact(g)` (the operator's gradient as the caller computes it) unless
    /// [`Operator::lrp0`] is [`Lrp0::Modified`]: a smooth activation's
    /// derivative replaced by `f(x) / x`, a normalisation's standard
    /// deviation held constant.
    pub fn lrp0_gradient_or(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        exact: impl FnOnce(&ArrayD<f32>) -> Result<Vec<ArrayD<f32>>>,
    ) -> Result<Vec<ArrayD<f32>>> {
        match self.lrp0() {
            Lrp0::Modified(_) => self.0.lrp0_gradient(inputs, g),
            Lrp0::Exact | Lrp0::Differs(_) => exact(g),
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
    /// The composite's rule for this node if it is a linear layer (`None`:
    /// LRP-0).
    pub rule: Option<Rule>,
    /// The input bounds of the z^B rule.
    pub bounds: Option<&'a Bounds>,
    /// The name of the node's output (the key of its cached modified weights).
    pub name: &'a str,
    /// How relevance goes through attention (the composite's choice).
    pub attention: attention::Attention,
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
pub fn relevance_accounted<'a>(
    op: &Op,
    output: &'a str,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    rule: Rule,
    bounds: Option<&'a Bounds>,
    reuse: Reuse<'a>,
) -> Result<Propagated> {
    ensure!(!inputs.is_empty(), "no input activation");
    let reuse = Reuse {
        rule: Some(rule),
        bounds,
        name: output,
        ..reuse
    };
    op.relevance(inputs, r, &reuse)
}

/// The relevance pass of a linear layer under the composite's rule
/// ([`Reuse::rule`]), with its modified weights from the cache if there is
/// one: what each linear family's [`Operator::relevance`] does.
pub fn linear_relevance(
    layer: &dyn LinearLayer,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
    reuse: &Reuse,
) -> Result<Propagated> {
    let x = *inputs
        .first()
        .ok_or_else(|| anyhow!("no input activation"))?;
    let rule = reuse.rule.unwrap_or(Rule::Epsilon { epsilon: 0.0 });
    let (z, rows, signs, bounds) = (reuse.output, reuse.rows, reuse.signs, reuse.bounds);
    let (out, account) = match reuse.cache {
        Some(cache) => {
            let cached = Cached {
                layer,
                cache,
                name: reuse.name,
            };
            rule.propagate_rows(&cached, x, z, r, bounds, rows, signs)?
        }
        None => rule.propagate_rows(layer, x, z, r, bounds, rows, signs)?,
    };
    Ok((vec![out], Some(account)))
}

/// The inputs of a node beyond its data inputs (parameters read at run
/// time) get zero relevance and zero gradient.
pub fn with_params(a: ArrayD<f32>, inputs: &[&ArrayD<f32>]) -> Vec<ArrayD<f32>> {
    let mut v = vec![a];
    v.extend(inputs[1..].iter().map(|p| ArrayD::zeros(p.shape())));
    v
}

/// [`gradient`] owning `g`: the piecewise-linear activations multiply it by
/// their derivative in place (no new tensor), other operators as [`gradient`].
pub fn gradient_owned(
    op: &Op,
    inputs: &[&ArrayD<f32>],
    g: ArrayD<f32>,
    how: GradientOptions,
) -> Result<Vec<ArrayD<f32>>> {
    if let (Some(act), Some(x)) = (op.downcast::<Act>(), inputs.first()) {
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
    op.gradient(inputs, g, how)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::Conv;
    use crate::ops::dense::Dense;

    #[test]
    fn an_op_is_copied_before_a_change_where_another_graph_shares_it() {
        let a = Op::new(Dense {
            weight: ArrayD::ones(vec![2, 3]),
            bias: None,
        });
        assert!(a.downcast::<Dense>().is_some() && a.downcast::<Conv>().is_none());
        // a copy of a graph shares its operators; randomising one of its
        // layers (evaluate's randomisation check) must leave the model's own
        let mut b = a.clone();
        let p = b.get_mut().parameters_mut().expect("a linear layer");
        assert_eq!(p.fan_in, 3);
        p.weight.fill(5.0);
        let w = |op: &Op| {
            op.linear()
                .unwrap()
                .weight()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(w(&a), vec![1.0; 6]);
        assert_eq!(w(&b), vec![5.0; 6]);
        // an operator no other graph shares is changed in place
        let before = std::ptr::from_ref(b.linear().unwrap().weight());
        b.downcast_mut::<Dense>().unwrap().weight.fill(2.0);
        assert_eq!(std::ptr::from_ref(b.linear().unwrap().weight()), before);
        assert_eq!(w(&b), vec![2.0; 6]);
    }

    #[test]
    fn relevance_through_an_op_hands_the_linear_rule_to_the_layer() {
        // a dense layer: LRP-0 through `relevance_accounted` with the rule
        // given there equals x_i w_ji R_j / z_j (by hand: z = 1*1 + 2*3 = 7)
        let op = Op::new(Dense {
            weight: ArrayD::from_shape_vec(vec![1, 2], vec![1.0, 3.0]).unwrap(),
            bias: None,
        });
        let x = ArrayD::from_shape_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
        let r = ArrayD::from_shape_vec(vec![1, 1], vec![7.0f32]).unwrap();
        let eps0 = Rule::Epsilon { epsilon: 0.0 };
        let (out, account) =
            relevance_accounted(&op, "y", &[&x], &r, eps0, None, Reuse::default()).unwrap();
        let got: Vec<f32> = out[0].iter().copied().collect();
        assert!(
            (got[0] - 1.0).abs() < 1e-5 && (got[1] - 6.0).abs() < 1e-5,
            "{got:?}"
        );
        assert_eq!(account.map(|a| a.len()), Some(1));
        assert_eq!(
            op.rule(&Reuse {
                rule: Some(eps0),
                ..Reuse::default()
            }),
            Some(eps0)
        );
    }
}
