//! `LayerNormalization` (opset 17, what PyTorch's dynamo exporter writes for
//! `nn.LayerNorm` and ConvNeXt's `LayerNorm2d`), and its decomposed form
//! (the TorchScript exporter's `ReduceMean`, `Sub`, `Pow`, `ReduceMean`,
//! `Add`, `Sqrt`, `Div`, then `Mul` and `Add` by constants), fused into it
//! at import: `y = (x - mean) / std * w + b` over the normalised axes, `std =
//! sqrt(var + eps)`.
//!
//! Relevance as AttnLRP (Achtibat et al., ICML 2024) and LXT give it: the
//! standard deviation held constant (the identity rule on the
//! normalisation), `x -> y` is a linear map `y = A x + b` with `A_ij = w_i /
//! std (delta_ij - 1 / n)`, to which the epsilon rule applies whatever the
//! composite (its [`crate::Composite::norm_rule`]): `R_j = x_j sum_i A_ij R_i
//! / stab(y_i)`, the bias `b` absorbing its share as a linear layer's bias
//! does (the ledger's account). The gradient is exact; LRP-0 through it is
//! gradient x input with the standard deviation detached
//! ([`Operator::lrp0_gradient`]), what `check` compares.

use anyhow::{anyhow, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, NodeProto};

use super::registry::{Family, Imported, OnnxNode, ProtoGraph};
use super::{Flow, Lrp0, Operator, Propagated, Reuse};
use crate::rules::{stabilize, Account, Rule, STABILIZER};

/// The registry's entry.
pub const FAMILY: Family = Family {
    name: "layer_norm",
    onnx: &[(
        "LayerNormalization",
        "epsilon rule on the normalisation, its std held constant (AttnLRP); the bias absorbs its share",
    )],
    import,
    fuse: Some(fuse),
};

/// A layer normalisation.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// The normalised axes, negative from the end: `[axis, rank)` for an
    /// ONNX `LayerNormalization`, the `ReduceMean` axes of a fused chain.
    axes: Axes,
    /// The `eps` under the square root.
    epsilon: f32,
    /// `w`, broadcast to the input (`None`: 1).
    scale: Option<ArrayD<f32>>,
    /// `b`, broadcast to the input (`None`: 0).
    bias: Option<ArrayD<f32>>,
}

/// Which axes are normalised.
#[derive(Clone, Debug, PartialEq)]
enum Axes {
    /// `[axis, rank)`.
    From(i64),
    /// These.
    List(Vec<i64>),
}

/// The attribute of the fused node listing the normalised axes (not an ONNX
/// attribute of `LayerNormalization`: the fuse below writes it).
const AXES: &str = "lrp_heatmap_axes";

fn import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.is_activation.first() == Some(&true),
        "the normalised input must be an activation"
    );
    ensure!(
        !n.is_activation.iter().skip(1).any(|&a| a),
        "a scale or bias computed from the image is not supported"
    );
    ensure!(
        n.node.output.iter().skip(1).all(String::is_empty),
        "the Mean and InvStdDev outputs are not supported"
    );
    let epsilon = n
        .node
        .attribute
        .iter()
        .find(|a| a.name == "epsilon")
        .map_or(1e-5, |a| a.f);
    ensure!(
        epsilon.is_finite() && epsilon >= 0.0,
        "epsilon must be finite and >= 0, got {epsilon}"
    );
    let axes = match n.attr_ints(AXES) {
        Some(a) => Axes::List(a),
        None => Axes::From(n.attr_int("axis", -1)),
    };
    let c = |i: usize| {
        if n.has_input(i) {
            n.constant(i)
        } else {
            Ok(None)
        }
    };
    Ok(LayerNorm {
        axes,
        epsilon,
        scale: c(1)?,
        bias: c(2)?,
    }.into())
}

impl LayerNorm {
    /// The normalised axes of a rank-`rank` input, sorted.
    fn axes(&self, rank: usize) -> Result<Vec<usize>> {
        let norm = |a: i64| super::normalize_axis(a, rank);
        let mut v = match &self.axes {
            Axes::From(a) => (norm(*a)?..rank).collect(),
            Axes::List(l) => l.iter().map(|&a| norm(a)).collect::<Result<Vec<_>>>()?,
        };
        v.sort_unstable();
        v.dedup();
        ensure!(!v.is_empty(), "no axis to normalise");
        Ok(v)
    }

    /// `a` broadcast to `shape` (numpy rules), as a standard-layout array.
    fn expand(a: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
        Ok(a.broadcast(IxDyn(shape))
            .ok_or_else(|| anyhow!("{:?} does not broadcast to {shape:?}", a.shape()))?
            .to_owned())
    }

    /// The input as rows `[groups, n]` (normalised axes last), the
    /// permutation that got it there and the permuted shape.
    fn rows(&self, x: &ArrayD<f32>) -> Result<Rows> {
        let rank = x.ndim();
        let axes = self.axes(rank)?;
        let mut perm: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
        perm.extend(&axes);
        let n: usize = axes.iter().map(|&a| x.shape()[a]).product();
        Ok(Rows { perm, n })
    }

    /// `t` (of the input's shape) in the rows' order, as a `[groups, n]`
    /// vector.
    fn to_rows(t: &ArrayD<f32>, rows: &Rows) -> Vec<f32> {
        t.view()
            .permuted_axes(IxDyn(&rows.perm))
            .iter()
            .copied()
            .collect()
    }

    /// A `[groups, n]` vector back in the input's shape `shape`.
    fn from_rows(v: Vec<f32>, rows: &Rows, shape: &[usize]) -> Result<ArrayD<f32>> {
        let permuted: Vec<usize> = rows.perm.iter().map(|&p| shape[p]).collect();
        let a = ArrayD::from_shape_vec(IxDyn(&permuted), v)?;
        let mut inverse = vec![0; rows.perm.len()];
        for (i, &p) in rows.perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(a.permuted_axes(IxDyn(&inverse))
            .as_standard_layout()
            .into_owned())
    }

    /// Per group: the mean and `std = sqrt(var + eps)` (in f64), of the
    /// input in rows.
    fn moments(&self, xr: &[f32], n: usize) -> Vec<(f64, f64)> {
        xr.chunks(n.max(1))
            .map(|row| {
                let m = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = row
                    .iter()
                    .map(|&v| (v as f64 - m) * (v as f64 - m))
                    .sum::<f64>()
                    / n as f64;
                (m, (var + self.epsilon as f64).sqrt())
            })
            .collect()
    }

    /// `w` and `b` in the rows' order (`None`: 1 and 0).
    fn params(&self, shape: &[usize], rows: &Rows) -> Result<[Option<Vec<f32>>; 2]> {
        let p = |a: &Option<ArrayD<f32>>| -> Result<Option<Vec<f32>>> {
            a.as_ref()
                .map(|a| Ok(Self::to_rows(&Self::expand(a, shape)?, rows)))
                .transpose()
        };
        Ok([p(&self.scale)?, p(&self.bias)?])
    }

    /// The backward pass of the normalisation for `gy` at the output in
    /// rows: exact, or with the standard deviation held constant.
    fn backward(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
        detached: bool,
    ) -> Result<ArrayD<f32>> {
        ensure!(
            gy.shape() == x.shape(),
            "gradient {:?} for input {:?}",
            gy.shape(),
            x.shape()
        );
        let rows = self.rows(x)?;
        let xr = Self::to_rows(x, &rows);
        let mut g = Self::to_rows(gy, &rows);
        let [w, _] = self.params(x.shape(), &rows)?;
        if let Some(w) = &w {
            g.iter_mut().zip(w).for_each(|(g, w)| *g *= w);
        }
        let n = rows.n.max(1);
        let moments = self.moments(&xr, n);
        let mut out = vec![0.0f32; xr.len()];
        for (((o, x), g), (m, s)) in (out.chunks_mut(n))
            .zip(xr.chunks(n))
            .zip(g.chunks(n))
            .zip(moments)
        {
            // d/dx_j of sum_i g_i (x_i - m) / s: (g_j - mean g) / s, minus
            // xhat_j mean(g xhat) / s where s depends on x
            let mg = g.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let mgx = if detached {
                0.0
            } else {
                g.iter()
                    .zip(x)
                    .map(|(&g, &x)| g as f64 * (x as f64 - m) / s)
                    .sum::<f64>()
                    / n as f64
            };
            for ((o, &g), &x) in o.iter_mut().zip(g).zip(x) {
                let xhat = (x as f64 - m) / s;
                *o = ((g as f64 - mg - xhat * mgx) / s) as f32;
            }
        }
        Self::from_rows(out, &rows, x.shape())
    }
}

/// The input's layout as rows of the normalised elements.
struct Rows {
    /// Kept axes first, normalised axes last.
    perm: Vec<usize>,
    /// Elements per row.
    n: usize,
}

impl Operator for LayerNorm {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let x = inputs[0];
        self.axes(x.len())?;
        for p in [&self.scale, &self.bias].into_iter().flatten() {
            let b = super::movement::broadcast(x, p.shape())?;
            ensure!(
                b == x,
                "a scale or bias of shape {:?} changes the shape {x:?}",
                p.shape()
            );
        }
        Ok(x.to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let x = inputs[0];
        let rows = self.rows(x)?;
        let xr = Self::to_rows(x, &rows);
        let n = rows.n.max(1);
        let [w, b] = self.params(x.shape(), &rows)?;
        let mut y = vec![0.0f32; xr.len()];
        for (k, ((o, row), (m, s))) in (y.chunks_mut(n))
            .zip(xr.chunks(n))
            .zip(self.moments(&xr, n))
            .enumerate()
        {
            for (j, (o, &v)) in o.iter_mut().zip(row).enumerate() {
                let i = k * n + j;
                let xhat = ((v as f64 - m) / s) as f32;
                *o = xhat * w.as_ref().map_or(1.0, |w| w[i]) + b.as_ref().map_or(0.0, |b| b[i]);
            }
        }
        Self::from_rows(y, &rows, x.shape())
    }

    fn relevance(&self, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>, reuse: &Reuse) -> Result<Propagated> {
        let x = inputs[0];
        ensure!(
            r.shape() == x.shape(),
            "relevance {:?} for input {:?}",
            r.shape(),
            x.shape()
        );
        let eps = match self.rule(reuse) {
            Some(Rule::Epsilon { epsilon }) => epsilon,
            _ => STABILIZER,
        };
        // the output kept by the forward pass, else computed again
        let computed;
        let z = match reuse.output {
            Some(z) if z.shape() == x.shape() => z,
            _ => {
                computed = self.forward(inputs, 1)?;
                &computed
            }
        };
        let rows = self.rows(x)?;
        let n = rows.n.max(1);
        let (xr, zr, rr) = (
            Self::to_rows(x, &rows),
            Self::to_rows(z, &rows),
            Self::to_rows(r, &rows),
        );
        let [w, b] = self.params(x.shape(), &rows)?;
        // s = R / stab(z); what the bias and the stabiliser absorb, and the
        // outputs without a denominator, per element
        let mut s = vec![0.0f32; xr.len()];
        let mut lost = vec![[0.0f64; 3]; xr.len()];
        for (i, ((s, l), (&z, &r))) in (s.iter_mut().zip(&mut lost))
            .zip(zr.iter().zip(&rr))
            .enumerate()
        {
            let d = stabilize(z, eps);
            if d == 0.0 {
                l[2] = r as f64;
            } else {
                *s = r / d;
                let bias = b.as_ref().map_or(0.0, |b| b[i]);
                l[0] = (*s * bias) as f64;
                l[1] = (*s * (d - z)) as f64;
            }
        }
        let ws: Vec<f32> = match &w {
            Some(w) => s.iter().zip(w).map(|(s, w)| s * w).collect(),
            None => s,
        };
        let mut out = vec![0.0f32; xr.len()];
        for (((o, x), ws), (_, sd)) in (out.chunks_mut(n))
            .zip(xr.chunks(n))
            .zip(ws.chunks(n))
            .zip(self.moments(&xr, n))
        {
            let mean = ws.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            for ((o, &x), &ws) in o.iter_mut().zip(x).zip(ws) {
                *o = (x as f64 * (ws as f64 - mean) / sd) as f32;
            }
        }
        // the accounts per sample of a batch: the rows are the samples'
        // groups in order (axis 0 is never normalised in a batch)
        let samples = reuse.rows.max(1);
        let per = (lost.len() / samples).max(1);
        let accounts = (0..samples)
            .map(|k| {
                let part = &lost[(k * per).min(lost.len())..((k + 1) * per).min(lost.len())];
                let sum = |c: usize| part.iter().map(|l| l[c]).sum::<f64>();
                Account {
                    bias: sum(0),
                    stabilizer: sum(1),
                    dropped: sum(2),
                    sign: 0.0,
                }
            })
            .collect();
        Ok((
            vec![Self::from_rows(out, &rows, x.shape())?],
            Some(accounts),
        ))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![self.backward(inputs[0], g, false)?])
    }

    fn lrp0(&self) -> Lrp0 {
        Lrp0::Modified("LayerNormalization's standard deviation held constant")
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![self.backward(inputs[0], g, true)?])
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    /// A linear map (the std held constant): its account says where the
    /// relevance it does not pass on goes.
    fn flow(&self) -> Flow {
        Flow::Linear
    }

    fn rule(&self, reuse: &Reuse) -> Option<Rule> {
        Some(reuse.norm.unwrap_or(Rule::Epsilon {
            epsilon: STABILIZER,
        }))
    }

    fn kind(&self) -> Option<&'static str> {
        Some("layer normalisation")
    }

    /// Unless it normalises over axis 0, or its scale or bias varies along
    /// it.
    fn keeps_samples_apart(&self, rank: usize) -> bool {
        let along0 = |p: &Option<ArrayD<f32>>| {
            p.as_ref()
                .is_some_and(|p| p.ndim() == rank && p.shape().first().is_some_and(|&d| d != 1))
        };
        self.axes(rank).is_ok_and(|a| !a.contains(&0))
            && !along0(&self.scale)
            && !along0(&self.bias)
    }
}

/// The decomposed layer normalisation (the TorchScript exporter's):
/// `m = ReduceMean(x)`, `d = Sub(x, m)`, `p = Pow(d, 2)`, `v = ReduceMean(p)`
/// over the same axes, `e = Add(v, eps)`, `s = Sqrt(e)`, `y = Div(d, s)`,
/// then optionally `Mul(y, w)` and `Add(., b)` by constants; each
/// intermediate read by the chain alone. Becomes one `LayerNormalization`
/// node named after the first `ReduceMean`, with the chain's output.
fn fuse(g: &mut ProtoGraph) -> Result<()> {
    let mut start = 0;
    while let Some(i) = (start..g.nodes.len()).find(|&i| g.nodes[i].op_type == "ReduceMean") {
        start = i + 1;
        if let Some((remove, node)) = chain(g, i) {
            g.replace(&remove, node);
            // the nodes before the chain's first are where they were, and
            // none of them starts a chain
            start = remove.iter().copied().min().unwrap_or(0);
        }
    }
    Ok(())
}

/// The ReduceMean node's axes (attribute, or constant input from opset 18).
fn reduce_axes(g: &ProtoGraph, n: &NodeProto) -> Option<Vec<i64>> {
    if n.attribute.iter().any(|a| a.name == "keepdims" && a.i == 0) {
        return None;
    }
    match n.attribute.iter().find(|a| a.name == "axes") {
        Some(a) => Some(a.ints.clone()),
        None => {
            let c = (g.constant)(n.input.get(1)?)?;
            Some(c.iter().map(|&v| v as i64).collect())
        }
    }
}

/// The chain of [`fuse`] from the `ReduceMean` at `i`, if it is one: the
/// nodes to remove and the fused node.
fn chain(g: &ProtoGraph, i: usize) -> Option<(Vec<usize>, NodeProto)> {
    let n = |k: usize| &g.nodes[k];
    let out = |k: usize| n(k).output.first().cloned().unwrap_or_default();
    let rm1 = n(i);
    let x = rm1.input.first()?.clone();
    let axes = reduce_axes(g, rm1)?;
    // d = x - m, read by Pow and Div alone
    let sub = g.only_reader(&out(i))?;
    if n(sub).op_type != "Sub" || n(sub).input != [x.clone(), out(i)] {
        return None;
    }
    let (readers, graph_out) = g.readers(&out(sub));
    if graph_out || readers.len() != 2 {
        return None;
    }
    let pow = *readers.iter().find(|&&k| n(k).op_type == "Pow")?;
    let div = *readers.iter().find(|&&k| n(k).op_type == "Div")?;
    if n(pow).input.first() != Some(&out(sub)) || g.scalar(n(pow).input.get(1)?) != Some(2.0) {
        return None;
    }
    let rm2 = g.only_reader(&out(pow))?;
    if n(rm2).op_type != "ReduceMean" || reduce_axes(g, n(rm2))? != axes {
        return None;
    }
    let add = g.only_reader(&out(rm2))?;
    let (_, eps_name) = g.with_constant(n(add), |c| c.len() == 1)?;
    if n(add).op_type != "Add" {
        return None;
    }
    let eps = g.scalar(&eps_name)?;
    let sqrt = g.only_reader(&out(add))?;
    if n(sqrt).op_type != "Sqrt" || g.only_reader(&out(sqrt)) != Some(div) {
        return None;
    }
    if n(div).input != [out(sub), out(sqrt)] {
        return None;
    }
    let mut remove = vec![i, sub, pow, rm2, add, sqrt, div];
    let mut last = div;
    // the affine part: Mul by a constant (the scale), then Add of a
    // constant (the bias), each optional
    let affine = ["Mul", "Add"].map(|op| {
        let k = g.only_reader(&out(last)).filter(|&k| n(k).op_type == op)?;
        let (_, c) = g.with_constant(n(k), |_| true)?;
        remove.push(k);
        last = k;
        Some(c)
    });
    let [scale, bias] = affine.map(Option::unwrap_or_default);
    let ints = AttributeProto {
        name: AXES.into(),
        r#type: AttributeType::Ints as i32,
        ints: axes,
        ..Default::default()
    };
    let epsilon = AttributeProto {
        name: "epsilon".into(),
        r#type: AttributeType::Float as i32,
        f: eps,
        ..Default::default()
    };
    let node = NodeProto {
        name: rm1.name.clone(),
        op_type: "LayerNormalization".into(),
        input: vec![x, scale, bias],
        output: vec![out(last)],
        attribute: vec![ints, epsilon],
        ..Default::default()
    };
    Some((remove, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

    fn ln(axes: Axes, w: Option<ArrayD<f32>>, b: Option<ArrayD<f32>>) -> LayerNorm {
        LayerNorm {
            axes,
            epsilon: 1e-5,
            scale: w,
            bias: b,
        }
    }

    fn arr(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal())
    }

    /// The map `x -> y` with the std held constant, as a dense matrix
    /// (f64), for one sample of `[1, c, n]` normalised over the last axis:
    /// `A_ij = w_i / s (delta_ij - 1 / n)`.
    fn dense(x: &[f32], w: &[f32], eps: f64) -> (Vec<Vec<f64>>, f64) {
        let n = x.len();
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
        let s = (var + eps).sqrt();
        let a = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| w[i] as f64 / s * (if i == j { 1.0 } else { 0.0 } - 1.0 / n as f64))
                    .collect()
            })
            .collect();
        (a, s)
    }

    #[test]
    fn relevance_is_the_epsilon_rule_on_the_dense_map_and_the_bias_absorbs_its_share() {
        // a naive re-implementation: z_ij = A_ij x_j, R_j = sum_i z_ij /
        // stab(y_i) R_i, over the rows of a [2, 3, 5] input normalised over
        // the last axis
        let x = arr(&[2, 3, 5], 1);
        let w = arr(&[5], 2).mapv(|v| 1.0 + 0.3 * v);
        let b = arr(&[5], 3).mapv(|v| 0.2 * v);
        let op = ln(Axes::From(-1), Some(w.clone()), Some(b.clone()));
        let y = op.forward(&[&x], 1).unwrap();
        let r = arr(&[2, 3, 5], 4);
        let eps = 0.01f32;
        let reuse = Reuse {
            norm: Some(Rule::Epsilon { epsilon: eps }),
            rows: 2,
            ..Default::default()
        };
        let (got, acc) = op.relevance(&[&x], &r, &reuse).unwrap();
        let acc = acc.unwrap();
        let (xs, ys, rs, gs) = (
            x.as_slice().unwrap(),
            y.as_slice().unwrap(),
            r.as_slice().unwrap(),
            got[0].as_slice().unwrap(),
        );
        let ws = w.as_slice().unwrap();
        let mut bias_share = [0.0f64; 2];
        for g in 0..6 {
            let o = g * 5;
            let (a, _) = dense(&xs[o..o + 5], ws, 1e-5);
            for j in 0..5 {
                let want: f64 = (0..5)
                    .map(|i| {
                        let yi = ys[o + i] as f64;
                        let d = yi + if yi >= 0.0 { eps as f64 } else { -(eps as f64) };
                        a[i][j] * xs[o + j] as f64 / d * rs[o + i] as f64
                    })
                    .sum();
                assert!((gs[o + j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{g} {j}");
            }
            for i in 0..5 {
                let yi = ys[o + i] as f64;
                let d = yi + if yi >= 0.0 { eps as f64 } else { -(eps as f64) };
                bias_share[g / 3] += b.as_slice().unwrap()[i] as f64 / d * rs[o + i] as f64;
            }
        }
        // conservation up to the account, per sample
        for k in 0..2 {
            let r_in: f64 = rs[k * 15..(k + 1) * 15].iter().map(|&v| v as f64).sum();
            let r_out: f64 = gs[k * 15..(k + 1) * 15].iter().map(|&v| v as f64).sum();
            assert!((acc[k].bias - bias_share[k]).abs() < 1e-4, "{k}");
            assert!((r_in - r_out - acc[k].lost()).abs() < 1e-4, "{k}: {r_in} {r_out} {:?}", acc[k]);
        }
    }

    /// The forward pass in f64 at `x`, for finite differences.
    fn forward64(op: &LayerNorm, x: &ArrayD<f32>) -> Vec<f64> {
        op.forward(&[x], 1).unwrap().iter().map(|&v| v as f64).collect()
    }

    #[test]
    fn the_gradient_is_exact_and_the_lrp0_gradient_holds_the_std() {
        // channels-first over axis 1 of [1, 4, 2, 3] (ConvNeXt's
        // LayerNorm2d after a fuse: ReduceMean over axis 1), scale [4,1,1]
        let x = arr(&[1, 4, 2, 3], 5);
        let w = arr(&[4, 1, 1], 6).mapv(|v| 1.0 + 0.3 * v);
        let op = ln(Axes::List(vec![1]), Some(w), None);
        let u = arr(&[1, 4, 2, 3], 7);
        let g = op.gradient(&[&x], &u, Default::default()).unwrap().remove(0);
        // central differences of <u, y(x)> along each input element
        let h = 1e-2f32;
        for k in 0..x.len() {
            let mut xp = x.clone();
            let mut xm = x.clone();
            xp.as_slice_mut().unwrap()[k] += h;
            xm.as_slice_mut().unwrap()[k] -= h;
            let (yp, ym) = (forward64(&op, &xp), forward64(&op, &xm));
            let fd: f64 = (yp.iter().zip(&ym).zip(u.iter()))
                .map(|((p, m), &u)| (p - m) / (2.0 * h as f64) * u as f64)
                .sum();
            let got = g.as_slice().unwrap()[k] as f64;
            assert!((got - fd).abs() < 2e-3 * (1.0 + fd.abs()), "{k}: {got} {fd}");
        }
        // LRP-0 (epsilon 0) equals x times the std-detached gradient of
        // u = R / y
        let y = op.forward(&[&x], 1).unwrap();
        let r = &y * &u;
        let reuse = Reuse {
            norm: Some(Rule::Epsilon { epsilon: 0.0 }),
            ..Default::default()
        };
        let (rel, _) = op.relevance(&[&x], &r, &reuse).unwrap();
        let gd = op.lrp0_gradient(&[&x], &u).unwrap().remove(0);
        for ((a, gx), x) in rel[0].iter().zip(&gd).zip(&x) {
            assert!((a - gx * x).abs() < 1e-4 * (1.0 + a.abs()), "{a} {}", gx * x);
        }
    }

    /// A node `op(inputs) -> output` with the `axes` attribute for a
    /// ReduceMean.
    fn proto(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut attribute = vec![];
        if op == "ReduceMean" {
            attribute.push(AttributeProto {
                name: "axes".into(),
                r#type: AttributeType::Ints as i32,
                ints: vec![-1],
                ..Default::default()
            });
        }
        NodeProto {
            name: output.to_string(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        }
    }

    /// The TorchScript exporter's chain, with its affine part, becomes one
    /// LayerNormalization from `x` with the constants as scale and bias; a
    /// chain with another exponent, or without the affine part, is fused
    /// only where it is a layer normalisation.
    #[test]
    fn the_decomposed_chain_fuses_into_one_node() {
        let consts = |name: &str| -> Option<ArrayD<f32>> {
            let v = match name {
                "two" => 2.0,
                "three" => 3.0,
                "eps" => 1e-6,
                "w" | "b" => 0.5,
                _ => return None,
            };
            Some(ArrayD::from_elem(IxDyn(&[]), v))
        };
        let chain = |pow: &str, affine: bool| {
            let mut v = vec![
                proto("ReduceMean", &["x"], "m"),
                proto("Sub", &["x", "m"], "d"),
                proto("Pow", &["d", pow], "p"),
                proto("ReduceMean", &["p"], "v"),
                proto("Add", &["v", "eps"], "ve"),
                proto("Sqrt", &["ve"], "s"),
                proto("Div", &["d", "s"], "n"),
            ];
            if affine {
                v.push(proto("Mul", &["n", "w"], "nw"));
                v.push(proto("Add", &["nw", "b"], "y"));
            }
            v
        };
        let run = |nodes: Vec<NodeProto>, out: &str| {
            let mut g = ProtoGraph {
                nodes,
                constant: &consts,
                outputs: vec![out.to_string()],
            };
            fuse(&mut g).unwrap();
            g.nodes
        };
        let fused = run(chain("two", true), "y");
        assert_eq!(fused.len(), 1);
        let n = &fused[0];
        assert_eq!(n.op_type, "LayerNormalization");
        assert_eq!(n.input, ["x", "w", "b"]);
        assert_eq!(n.output, ["y"]);
        let eps = n.attribute.iter().find(|a| a.name == "epsilon").unwrap().f;
        assert_eq!(eps, 1e-6);
        let plain = run(chain("two", false), "n");
        assert_eq!((plain.len(), plain[0].input.clone()), (1, vec!["x".into(), String::new(), String::new()]));
        // x - mean cubed is no variance
        assert_eq!(run(chain("three", true), "y").len(), 9);
    }

    #[test]
    fn a_batch_keeps_its_samples_apart() {
        let op = ln(Axes::From(-1), None, None);
        assert!(op.keeps_samples_apart(3));
        let x = arr(&[2, 3, 4], 8);
        let y = op.forward(&[&x], 1).unwrap();
        for k in 0..2 {
            let one = x.index_axis(Axis(0), k).insert_axis(Axis(0)).to_owned();
            let yk = op.forward(&[&one], 1).unwrap();
            assert_eq!(yk.index_axis(Axis(0), 0), y.index_axis(Axis(0), k));
        }
        assert!(!ln(Axes::List(vec![0, 1]), None, None).keeps_samples_apart(3));
    }
}
