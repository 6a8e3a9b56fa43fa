//! Nodes that move relevance without weights: elementwise pass-through,
//! shape changes, transposes and the sum of two activations (residual `Add`,
//! Zennit's `Norm` rule on a `SumSingle`); and the gradients of the sum and of
//! arithmetic with constants. (Reshape and transpose move gradients exactly as
//! they move relevance.)

use std::collections::HashSet;

use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::registry::{Imported, OnnxNode, Operand};
use super::ArithKind;
use crate::rules::{stabilize, STABILIZER};

/// Elementwise nodes (activations, dropout, identity, arithmetic with
/// constants): relevance unchanged.
pub fn pass(x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x.shape() == r.shape(),
        "elementwise node changes the shape {:?} to {:?}",
        x.shape(),
        r.shape()
    );
    Ok(r.clone())
}

/// Shape-only nodes: the relevance takes the input's shape.
pub fn reshape(x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x.len() == r.len(),
        "reshape from {:?} to {:?} changes the size",
        x.shape(),
        r.shape()
    );
    Ok(r.as_standard_layout()
        .into_owned()
        .into_shape_with_order(x.shape())?)
}

/// `x` with its axes permuted by `perm`, in standard layout: a copy of the
/// data as it is where the permutation only moves axes of length 1 (the
/// order of the elements is then unchanged: `[197, 1, 768]` to `[1, 197,
/// 768]`), else an elementwise copy.
pub fn permute(x: &ArrayD<f32>, perm: &[usize]) -> ArrayD<f32> {
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let order: Vec<usize> = perm.iter().copied().filter(|&p| x.shape()[p] != 1).collect();
    if order.windows(2).all(|w| w[0] < w[1]) {
        if let Some(s) = x.as_slice() {
            return ArrayD::from_shape_vec(IxDyn(&shape), s.to_vec()).expect("same size");
        }
    }
    x.view()
        .permuted_axes(IxDyn(perm))
        .as_standard_layout()
        .into_owned()
}

/// `Transpose`: the inverse permutation (an empty `perm` reverses the axes).
pub fn transpose(perm: &[usize], x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let n = r.ndim();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..n).rev().collect()
    } else {
        perm.to_vec()
    };
    ensure!(perm.len() == n, "Transpose perm {perm:?} for rank {n}");
    let mut inv = vec![0; n];
    for (i, &p) in perm.iter().enumerate() {
        ensure!(p < n, "Transpose perm {perm:?} out of range");
        inv[p] = i;
    }
    let out = permute(r, &inv);
    ensure!(
        out.shape() == x.shape(),
        "Transpose relevance {:?} vs input {:?}",
        out.shape(),
        x.shape()
    );
    Ok(out)
}

/// `Add` of activations: each input gets its share, `R_a = a R / stab(a + b)`.
pub fn sum(inputs: &[&ArrayD<f32>], r: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    for x in inputs {
        ensure!(
            x.shape() == r.shape(),
            "Add with broadcasting ({:?} to {:?}) is not supported",
            x.shape(),
            r.shape()
        );
    }
    let mut z = ArrayD::<f32>::zeros(r.shape());
    for x in inputs {
        z += *x;
    }
    let s = Zip::from(r)
        .and(&z)
        .map_collect(|&r, &z| r / stabilize(z, STABILIZER));
    Ok(inputs.iter().map(|x| &s * *x).collect())
}

/// Sums a gradient of a broadcast result back to the operand's `shape`
/// (numpy broadcasting: leading axes added, size-1 axes stretched).
pub fn unbroadcast(g: ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
    if g.shape() == shape {
        return Ok(g);
    }
    ensure!(
        g.ndim() >= shape.len(),
        "an operand of shape {shape:?} does not broadcast to {:?}",
        g.shape()
    );
    let mut g = g;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (k, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[k] != 1 {
            g = g.sum_axis(Axis(k)).insert_axis(Axis(k));
        }
    }
    ensure!(
        g.shape() == shape,
        "an operand of shape {shape:?} does not broadcast to {:?}",
        g.shape()
    );
    Ok(g)
}

/// Gradient through the `Add` of activations: each input gets `g` (summed
/// over the axes it was broadcast along).
pub fn sum_gradient(inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    inputs
        .iter()
        .map(|x| unbroadcast(g.clone(), x.shape()))
        .collect()
}

/// Gradient through `x op c` (or `c op x` when `constant_first`) at the input
/// `x`: `g` for `+` and `-` (negated for `c - x`), `g c` for `*`, `g / c` for
/// `x / c` and `-g c / x^2` for `c / x`.
pub fn arith_gradient(
    kind: ArithKind,
    constant: &ArrayD<f32>,
    constant_first: bool,
    x: &ArrayD<f32>,
    g: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    let shape = g.shape();
    let c = constant.broadcast(shape).ok_or_else(|| {
        anyhow::anyhow!(
            "constant {:?} does not broadcast to the output {shape:?}",
            constant.shape()
        )
    })?;
    let local = match (kind, constant_first) {
        (ArithKind::Add, _) | (ArithKind::Sub, false) => g.clone(),
        (ArithKind::Sub, true) => g.mapv(|v| -v),
        (ArithKind::Mul, _) => Zip::from(g).and(&c).map_collect(|&g, &c| g * c),
        (ArithKind::Div, false) => Zip::from(g).and(&c).map_collect(|&g, &c| g / c),
        (ArithKind::Div, true) => {
            let xb = x.broadcast(shape).ok_or_else(|| {
                anyhow::anyhow!("input {:?} does not broadcast to {shape:?}", x.shape())
            })?;
            Zip::from(g)
                .and(&c)
                .and(&xb)
                .map_collect(|&g, &c, &x| -g * (c / x) / x)
        }
    };
    unbroadcast(local, x.shape())
}

/// How a shape-only node computes its output shape from its input shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ReshapeRule {
    /// `Flatten(axis)`: `[prod(d[..axis]), prod(d[axis..])]`.
    Flatten(i64),
    /// `Squeeze(axes)` (all axes of size 1 when `None`).
    Squeeze(Option<Vec<i64>>),
    /// `Unsqueeze(axes)`.
    Unsqueeze(Vec<i64>),
    /// `Reshape(shape)` with ONNX's `0` (copy, unless `allowzero`) and `-1`.
    Reshape {
        /// The target shape.
        shape: Vec<i64>,
        /// `allowzero = 1`: a 0 is a zero-sized dimension.
        allowzero: bool,
    },
}

impl ReshapeRule {
    /// The output shape for an input of shape `d`.
    pub fn apply(&self, d: &[usize]) -> Result<Vec<usize>> {
        let axis = |a: i64, rank: usize| -> Result<usize> {
            let r = rank as i64;
            ensure!(a >= -r && a < r, "axis {a} out of range for rank {rank}");
            Ok(if a < 0 { (a + r) as usize } else { a as usize })
        };
        // sizes from a hostile file may overflow: checked products
        let product = |v: &[usize]| -> Result<usize> {
            v.iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or_else(|| anyhow!("a tensor of shape {v:?} has more elements than fit in memory"))
        };
        let size = product(d)?;
        let out = match self {
            ReshapeRule::Flatten(a) => {
                let a = if *a == d.len() as i64 {
                    d.len()
                } else {
                    axis(*a, d.len())?
                };
                vec![product(&d[..a])?, product(&d[a..])?]
            }
            ReshapeRule::Squeeze(None) => d.iter().copied().filter(|&v| v != 1).collect(),
            ReshapeRule::Squeeze(Some(axes)) => {
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, d.len()))
                    .collect::<Result<HashSet<_>>>()?;
                for &a in &axes {
                    ensure!(d[a] == 1, "Squeeze of axis {a} of size {}", d[a]);
                }
                (0..d.len())
                    .filter(|i| !axes.contains(i))
                    .map(|i| d[i])
                    .collect()
            }
            ReshapeRule::Unsqueeze(axes) => {
                let rank = d.len() + axes.len();
                let axes = axes
                    .iter()
                    .map(|&a| axis(a, rank))
                    .collect::<Result<HashSet<_>>>()?;
                let mut src = d.iter();
                (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            1
                        } else {
                            src.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
            ReshapeRule::Reshape { shape, allowzero } => {
                let mut out = Vec::with_capacity(shape.len());
                let mut infer = None;
                for (i, &s) in shape.iter().enumerate() {
                    match s {
                        -1 => {
                            ensure!(infer.is_none(), "Reshape with two -1 dimensions");
                            infer = Some(i);
                            out.push(1);
                        }
                        0 if !allowzero => out.push(
                            *d.get(i)
                                .ok_or_else(|| anyhow!("Reshape copies a missing axis {i}"))?,
                        ),
                        s if s >= 0 => out.push(s as usize),
                        s => bail!("Reshape to a dimension of {s}"),
                    }
                }
                if let Some(i) = infer {
                    let known = product(&out)?;
                    ensure!(
                        known > 0 && size.is_multiple_of(known),
                        "Reshape of {d:?} to {shape:?}"
                    );
                    out[i] = size / known;
                }
                out
            }
        };
        ensure!(
            product(&out)? == size,
            "cannot reshape {d:?} to {out:?}"
        );
        Ok(out)
    }
}

/// The facts of an operator without weights that is not a maximum, has no
/// kinks, no run-time parameters and maps no bounds of its own.
macro_rules! plain_facts {
    () => {
        fn takes_maxima(&self) -> bool {
            false
        }

        fn kinks(&self) -> Vec<f32> {
            vec![]
        }

        fn derivative_from_output(&self) -> bool {
            false
        }

        fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
            None
        }

        fn kind(&self) -> Option<&'static str> {
            None
        }

        fn lrp0_gradient(
            &self,
            inputs: &[&ArrayD<f32>],
            g: &ArrayD<f32>,
        ) -> Result<Vec<ArrayD<f32>>> {
            super::Operator::gradient(self, inputs, g, Default::default())
        }

    };
}

/// The elementwise sum of activations (residual `Add`, `Sum`): relevance
/// split in proportion to the inputs (Zennit's `Norm` rule).
#[derive(Clone, Debug)]
pub struct Sum;

impl super::Operator for Sum {
    plain_facts!();

    fn data_inputs(&self, n: usize) -> usize {
        n
    }
    super::not_linear!();


    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        inputs[1..]
            .iter()
            .try_fold(inputs[0].to_vec(), |acc, s| super::movement::broadcast(&acc, s))
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let mut acc = inputs[0].clone();
        for other in &inputs[1..] {
            acc = broadcast_with(&acc, other, |a, b| a + b)?;
        }
        Ok(acc)
    }

    fn native(&self) -> Option<&'static str> {
        None
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((sum(inputs, r)?, None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        sum_gradient(inputs, g)
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Proportional { per_input: false }
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        true
    }

    fn bounds(
        &self,
        _: &ArrayD<f32>,
        _: &ArrayD<f32>,
        _: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        None
    }
}

/// Elementwise arithmetic of the activation with a constant (numpy
/// broadcasting): relevance passes unchanged, the gradient is that of the
/// operation. Right after a convolution or dense layer, canonization folds
/// it into the layer where it is per-channel ([`super::Operator::channel_affine`]).
/// A constant added (or subtracted) after the first linear layer that no
/// layer took as its bias (a transformer's position embedding) is a bias
/// of its own ([`Arith::bias`]).
#[derive(Clone, Debug)]
pub struct Arith {
    /// The operation.
    pub kind: ArithKind,
    /// The constant operand.
    pub constant: ArrayD<f32>,
    /// Whether the constant is the first operand (`c - x`, `c / x`).
    pub constant_first: bool,
    /// For `Add` and `Sub`: the constant absorbs relevance as a bias does,
    /// `R_x = x R / stab(x + c)` (the rest in the ledger under `bias`), as
    /// gradient x input has it; set by the graph for the nodes after the
    /// first linear layer (`false`: relevance passes, as through the input
    /// normalisation before the first layer).
    pub bias: bool,
    /// The constant is computed by the model (from shapes: the TorchScript
    /// exporter's attention scale) and read at run time, as the node's
    /// second input; `constant` is then unused.
    pub runtime: bool,
}

impl Arith {
    /// The constant operand: its value, or the one read at run time.
    fn operand<'a>(&'a self, inputs: &[&'a ArrayD<f32>]) -> Result<&'a ArrayD<f32>> {
        if self.runtime {
            inputs
                .get(1)
                .copied()
                .ok_or_else(|| anyhow!("the operand read at run time is missing"))
        } else {
            Ok(&self.constant)
        }
    }

    /// Whether it absorbs relevance as a bias ([`Arith::bias`], for `Add`
    /// and `Sub` only).
    fn absorbs(&self) -> bool {
        self.bias && matches!(self.kind, ArithKind::Add | ArithKind::Sub)
    }

    /// The bias rule: `x' R / stab(z)` with `x'` the activation's term of
    /// `z = x' + c'` (`-x` for `c - x`), the constant's share in the
    /// account.
    fn bias_relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        reuse: &super::Reuse,
    ) -> Result<super::Propagated> {
        let x = inputs[0];
        let c = self.operand(inputs)?;
        let eps = match reuse.norm {
            Some(crate::rules::Rule::Epsilon { epsilon }) => epsilon,
            _ => STABILIZER,
        };
        let z = arith(self.kind, x, c, self.constant_first)?;
        ensure!(
            z.shape() == x.shape() && r.shape() == x.shape(),
            "a constant of shape {:?} broadcasts the activation {:?} to {:?}",
            c.shape(),
            x.shape(),
            z.shape()
        );
        let sign = if self.constant_first && self.kind == ArithKind::Sub {
            -1.0
        } else {
            1.0
        };
        let rows = reuse.rows.max(1);
        let per = x.len() / rows;
        let mut accounts = vec![crate::rules::Account::default(); rows];
        let mut out = ArrayD::<f32>::zeros(x.shape());
        for (k, ((o, &x), (&z, &r))) in (out.iter_mut().zip(x.iter()))
            .zip(z.iter().zip(r.iter()))
            .enumerate()
        {
            let a = &mut accounts[(k / per.max(1)).min(rows - 1)];
            let d = stabilize(z, eps);
            if d == 0.0 {
                a.dropped += r as f64;
                continue;
            }
            let s = r / d;
            *o = sign * x * s;
            a.bias += ((z - sign * x) * s) as f64;
            a.stabilizer += ((d - z) * s) as f64;
        }
        Ok((super::with_params(out, inputs), Some(accounts)))
    }
}

impl super::Operator for Arith {
    plain_facts!();

    /// A constant the model computes is read at run time, after the activation.
    fn data_inputs(&self, n: usize) -> usize {
        if self.runtime {
            1
        } else {
            n
        }
    }

    fn linear(&self) -> Option<&dyn crate::rules::LinearLayer> {
        None
    }

    fn parameters_mut(&mut self) -> Option<super::Parameters<'_>> {
        None
    }

    /// Arithmetic folds into the layer before it ([`super::Operator::channel_affine`]
    /// there), nothing into it.
    fn fold(&mut self, _: &dyn super::Operator) -> bool {
        false
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let c = match (self.runtime, inputs.get(1)) {
            (true, Some(c)) => c,
            (true, None) => bail!("the operand read at run time is missing"),
            (false, _) => self.constant.shape(),
        };
        super::movement::broadcast(inputs[0], c)
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        arith(self.kind, inputs[0], self.operand(inputs)?, self.constant_first)
    }

    fn native(&self) -> Option<&'static str> {
        None
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        reuse: &super::Reuse,
    ) -> Result<super::Propagated> {
        if self.absorbs() {
            return self.bias_relevance(inputs, r, reuse);
        }
        Ok((super::with_params(pass(inputs[0], r)?, inputs), None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let (kind, c, first) = (self.kind, self.operand(inputs)?, self.constant_first);
        Ok(super::with_params(
            arith_gradient(kind, c, first, inputs[0], g)?,
            inputs,
        ))
    }

    fn lrp0(&self) -> super::Lrp0 {
        use super::Lrp0;
        match self.kind {
            ArithKind::Mul => Lrp0::Exact,
            ArithKind::Div if !self.constant_first => Lrp0::Exact,
            ArithKind::Div => Lrp0::Differs("divides a constant by the activation".into()),
            ArithKind::Add | ArithKind::Sub
                if self.absorbs()
                    || (!self.runtime && self.constant.iter().all(|&c| c == 0.0)) =>
            {
                Lrp0::Exact
            }
            ArithKind::Add | ArithKind::Sub => {
                Lrp0::Differs("adds a constant that is not a layer's bias".into())
            }
        }
    }

    fn flow(&self) -> super::Flow {
        if self.absorbs() {
            super::Flow::Linear
        } else {
            super::Flow::Conserving
        }
    }

    fn elements(&self) -> super::Elements {
        if self.absorbs() {
            super::Elements::Other
        } else {
            super::Elements::Arithmetic
        }
    }

    fn keeps_samples_apart(&self, rank: usize) -> bool {
        if self.runtime {
            // its shape is not known before the run
            return false;
        }
        let c = &self.constant;
        !(c.ndim() >= rank && c.shape().first().is_some_and(|&d| d != 1))
    }

    /// `x op c` as `x * scale + shift` per channel, for the linear cases:
    /// `x * c`, `x / c`, `x - c`, `c - x` and `x + c` (Keras batch norms
    /// exported as `Mul` + `Add`, normalisations written as `Sub` + `Div`).
    fn channel_affine(&self, m: usize, from_end: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        if self.runtime {
            return None;
        }
        let c = per_channel(&self.constant, m, from_end)?;
        let m = c.len();
        Some(match (self.kind, self.constant_first) {
            (ArithKind::Mul, _) => (c, vec![0.0; m]),
            (ArithKind::Div, false) if c.iter().all(|&v| v != 0.0) => {
                (c.iter().map(|v| 1.0 / v).collect(), vec![0.0; m])
            }
            (ArithKind::Add, _) => (vec![1.0; m], c),
            (ArithKind::Sub, false) => (vec![1.0; m], c.iter().map(|v| -v).collect()),
            (ArithKind::Sub, true) => (vec![-1.0; m], c),
            (ArithKind::Div, _) => return None,
        })
    }

    /// Each bound through `x op c`, the smaller and larger of the two as the
    /// new bounds (`c / x` is not monotonic across 0: none).
    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        params: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        if self.kind == ArithKind::Div && self.constant_first {
            return None;
        }
        let c = if self.runtime {
            params.first().copied()?
        } else {
            &self.constant
        };
        let first = self.constant_first;
        let a = arith(self.kind, low, c, first).ok()?;
        let b = arith(self.kind, high, c, first).ok()?;
        let low = Zip::from(&a).and(&b).map_collect(|&a, &b| a.min(b));
        let high = Zip::from(&a).and(&b).map_collect(|&a, &b| a.max(b));
        Some((low, high, true))
    }
}

/// Per-output-channel values of a constant added to a layer with `m` outputs
/// whose channel axis is `from_end` axes before the last (numpy broadcasting
/// aligns shapes at the end): `None` when it varies along another axis.
fn per_channel(c: &ArrayD<f32>, m: usize, from_end: usize) -> Option<Vec<f32>> {
    let rank = c.ndim();
    for (k, &d) in c.shape().iter().enumerate() {
        if d != 1 && !(rank - 1 - k == from_end && d == m) {
            return None;
        }
    }
    let v: Vec<f32> = c.iter().copied().collect();
    match v.len() {
        1 => Some(vec![v[0]; m]),
        n if n == m => Some(v),
        _ => None,
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; an error where the shapes
/// do not broadcast.
pub fn broadcast_with(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32,
) -> Result<ArrayD<f32>> {
    let (sa, sb) = (a.shape(), b.shape());
    let rank = sa.len().max(sb.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    let shape = (0..rank)
        .map(|i| match (dim(sa, i), dim(sb, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(anyhow!("shapes {sa:?} and {sb:?} do not broadcast")),
        })
        .collect::<Result<Vec<_>>>()?;
    let (va, vb) = (
        a.broadcast(IxDyn(&shape))
            .ok_or_else(|| anyhow!("cannot broadcast {sa:?}"))?,
        b.broadcast(IxDyn(&shape))
            .ok_or_else(|| anyhow!("cannot broadcast {sb:?}"))?,
    );
    Ok(Zip::from(&va).and(&vb).map_collect(|&x, &y| f(x, y)))
}

/// `x op c` (`c op x` when `constant_first`) with numpy broadcasting.
pub fn arith(
    kind: ArithKind,
    x: &ArrayD<f32>,
    c: &ArrayD<f32>,
    constant_first: bool,
) -> Result<ArrayD<f32>> {
    let (a, b) = if constant_first { (c, x) } else { (x, c) };
    match kind {
        ArithKind::Add => broadcast_with(a, b, |x, y| x + y),
        ArithKind::Sub => broadcast_with(a, b, |x, y| x - y),
        ArithKind::Mul => broadcast_with(a, b, |x, y| x * y),
        ArithKind::Div => broadcast_with(a, b, |x, y| x / y),
    }
}

/// Shape-only nodes (`Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`) and how
/// they compute their output shape (`None`: from a shape computed at run
/// time, which only the tract engine runs).
#[derive(Clone, Debug)]
pub struct Reshape(pub Option<ReshapeRule>);

impl Reshape {
    fn rule(&self) -> Result<&ReshapeRule> {
        self.0
            .as_ref()
            .ok_or_else(|| anyhow!("a reshape to a shape computed at run time"))
    }
}

impl super::Operator for Reshape {
    plain_facts!();

    fn data_inputs(&self, n: usize) -> usize {
        n
    }
    super::not_linear!();


    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        self.rule()?.apply(inputs[0])
    }

    /// A batch of `n`: the rule of one sample, then `n` in front (a target
    /// that does not start with the batch axis cannot be batched).
    fn forward(&self, inputs: &[&ArrayD<f32>], n: usize) -> Result<ArrayD<f32>> {
        let (x, rule) = (inputs[0], self.rule()?);
        let shape = if n > 1 && x.shape().first() == Some(&n) {
            let mut one = x.shape().to_vec();
            one[0] = 1;
            let mut s = rule.apply(&one)?;
            ensure!(
                s.first() == Some(&1),
                "a reshape to {s:?} cannot take a batch of {n}"
            );
            s[0] = n;
            s
        } else {
            rule.apply(x.shape())?
        };
        Ok(x.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))?)
    }

    fn native(&self) -> Option<&'static str> {
        self.0
            .is_none()
            .then_some("a reshape to a shape computed at run time")
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![reshape(inputs[0], r)?], None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![reshape(inputs[0], g)?])
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Rearranged
    }

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        self.0.is_some()
    }

    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        _: &[&ArrayD<f32>],
        out_shape: &[usize],
    ) -> Option<super::Interval> {
        let low = low.clone().into_shape_with_order(IxDyn(out_shape)).ok()?;
        let high = high.clone().into_shape_with_order(IxDyn(out_shape)).ok()?;
        Some((low, high, false))
    }
}

/// `Transpose` with this permutation (empty: the axes reversed).
#[derive(Clone, Debug)]
pub struct Transpose(pub Vec<usize>);

impl Transpose {
    /// The permutation for a tensor of rank `rank`.
    fn perm(&self, rank: usize) -> Vec<usize> {
        if self.0.is_empty() {
            (0..rank).rev().collect()
        } else {
            self.0.clone()
        }
    }
}

impl super::Operator for Transpose {
    plain_facts!();

    fn data_inputs(&self, n: usize) -> usize {
        n
    }
    super::not_linear!();


    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let (x, perm) = (inputs[0], &self.0);
        Ok(if perm.is_empty() {
            x.iter().rev().copied().collect()
        } else {
            ensure!(perm.len() == x.len(), "permutation {perm:?} for {x:?}");
            perm.iter()
                .map(|&p| x.get(p).copied().unwrap_or(1))
                .collect()
        })
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let x = inputs[0];
        let perm = self.perm(x.ndim());
        ensure!(
            perm.len() == x.ndim(),
            "permutation {perm:?} for {:?}",
            x.shape()
        );
        Ok(permute(x, &perm))
    }

    fn native(&self) -> Option<&'static str> {
        None
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![transpose(&self.0, inputs[0], r)?], None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![transpose(&self.0, inputs[0], g)?])
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Rearranged
    }

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        self.0.first() == Some(&0)
    }

    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        _: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        let perm = self.perm(low.ndim());
        if perm.len() != low.ndim() {
            return None;
        }
        let t = |a: &ArrayD<f32>| {
            a.clone()
                .permuted_axes(perm.clone())
                .as_standard_layout()
                .into_owned()
        };
        Some((t(low), t(high), false))
    }
}

/// Builds the sums, arithmetic with constants, shape changes and
/// transposes (and a trailing `LogSoftmax`, which the importer then removes).
fn import(n: &OnnxNode) -> Result<Imported> {
    let acts = n.activations();
    Ok(match n.op_type() {
        "Add" if acts == 2 => Sum.into(),
        "Add" | "Sub" | "Div" => arith_import(n)?,
        "Sum" => {
            ensure!(
                n.all_activations(),
                "only a sum of activations is supported (an input is a constant)"
            );
            if acts == 1 {
                super::activation::Act::Identity.into()
            } else {
                Sum.into()
            }
        }
        "Transpose" => Transpose(
            n.attr_ints("perm")
                .unwrap_or_default()
                .into_iter()
                .map(|p| p as usize)
                .collect(),
        )
        .into(),
        // only allowed as the last node (checked by the importer), then removed
        "LogSoftmax" => super::activation::Act::Opaque.into(),
        o => {
            // the target shape when the file fixes it (an attribute or a
            // constant input); `None` leaves the forward pass to tract
            let ints = |i: usize| -> Option<Vec<i64>> {
                if n.is_act(i) {
                    return None;
                }
                let c = n.constant(i).ok()??;
                Some(c.iter().map(|&v| v as i64).collect())
            };
            Reshape(match o {
                "Flatten" => Some(ReshapeRule::Flatten(n.attr_int("axis", 1))),
                "Squeeze" => match (n.attr_ints("axes"), n.has_input(1)) {
                    (Some(axes), _) => Some(ReshapeRule::Squeeze(Some(axes))),
                    (None, false) => Some(ReshapeRule::Squeeze(None)),
                    (None, true) => ints(1).map(|axes| ReshapeRule::Squeeze(Some(axes))),
                },
                "Unsqueeze" => n
                    .attr_ints("axes")
                    .or_else(|| ints(1))
                    .map(ReshapeRule::Unsqueeze),
                "Reshape" => ints(1).map(|shape| ReshapeRule::Reshape {
                    shape,
                    allowzero: n.attr_int("allowzero", 0) != 0,
                }),
                other => bail!("'{other}' is not a structural operator"),
            })
            .into()
        }
    })
}

/// `Add`, `Sub`, `Mul` or `Div` of one activation with a constant (which
/// canonization may fold into the layer before); an operand computed at run
/// time gives an opaque activation (relevance passes, gradients fail).
pub(crate) fn arith_import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.activations() == 1,
        "only an activation combined with a constant is supported"
    );
    let kind = match n.op_type() {
        "Add" => ArithKind::Add,
        "Sub" => ArithKind::Sub,
        "Mul" => ArithKind::Mul,
        "Div" => ArithKind::Div,
        other => bail!("'{other}' is not arithmetic"),
    };
    let inputs = n.node.input.len();
    ensure!(inputs == 2, "expected 2 inputs, got {inputs}");
    let constant_first = !n.is_act(0);
    let at = if constant_first { 0 } else { 1 };
    let (constant, runtime) = match (n.operand)(at)? {
        Operand::Const(c) => (c, false),
        Operand::Computed => (ArrayD::zeros(IxDyn(&[0])), true),
        Operand::Absent => bail!("missing operand"),
    };
    Ok(Imported {
        op: super::Op::new(Arith {
            kind,
            constant,
            constant_first,
            bias: false,
            runtime,
        }),
        runtime: if runtime { vec![at] } else { vec![] },
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "structural",
    onnx: &[
        ("Add", "two activations: proportional split (residual); a constant: folded bias, else passes"),
        ("Sum", "proportional split between the activations"),
        ("Sub", "by a constant: folded into the layer before, else passes (normalisation: z^B bounds mapped)"),
        ("Div", "by a constant: as Sub"),
        ("Transpose", "shape only (any rank)"),
        ("Flatten", "shape only"),
        ("Reshape", "shape only (also with a shape computed at run time)"),
        ("Squeeze", "shape only"),
        ("Unsqueeze", "shape only"),
        ("LogSoftmax", "only as the last node: skipped, its input (the logits) is explained"),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuting_axes_of_length_one_copies_the_data_as_it_is() {
        // against ndarray's elementwise copy, over shapes with and without
        // axes of length 1 and every permutation of three axes
        let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        for shape in [[197usize, 1, 8], [1, 5, 3], [4, 1, 1], [2, 3, 4], [1, 1, 1]] {
            let n: usize = shape.iter().product();
            let x = ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|v| v as f32).collect())
                .unwrap();
            for p in perms {
                let want = x.view().permuted_axes(IxDyn(&p)).as_standard_layout().into_owned();
                assert_eq!(permute(&x, &p), want, "{shape:?} {p:?}");
            }
        }
    }

    #[test]
    fn reshape_rules_compute_shapes_and_refuse_overflowing_sizes() {
        let flat = ReshapeRule::Flatten(1);
        assert_eq!(flat.apply(&[2, 3, 4]).unwrap(), [2, 12]);
        let reshape = ReshapeRule::Reshape {
            shape: vec![0, -1],
            allowzero: false,
        };
        assert_eq!(reshape.apply(&[2, 3, 4]).unwrap(), [2, 12]);
        // dims from a hostile file: an error, not an overflow
        let huge = [usize::MAX / 2, 3, 1];
        for rule in [flat, reshape, ReshapeRule::Squeeze(None)] {
            let e = rule.apply(&huge).unwrap_err().to_string();
            assert!(e.contains("more elements than fit"), "{e}");
        }
    }
}
