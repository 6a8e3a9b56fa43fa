//! `ReduceMean` / `ReduceSum` (a global average pool as tf2onnx writes Keras'
//! `GlobalAveragePooling2D`: `ReduceMean` over the spatial axes of NHWC) with
//! the `Norm` rule of the average pools (each input its share of the sum,
//! stabilised by 1e-6), and `ReduceMax` with winner takes all (first maximum).

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Axis, Dimension, IxDyn};

use super::registry::{Family, Imported, OnnxNode};
use super::Operator;
use crate::rules::{stabilize, STABILIZER};

/// The registry's entry.
pub const FAMILY: Family = Family {
    name: "reduce",
    onnx: &[
        ("ReduceMean", "proportional (Norm rule)"),
        ("ReduceSum", "proportional (Norm rule)"),
        ("ReduceMax", "winner takes all"),
    ],
    import,
    fuse: None,
};

fn import(n: &OnnxNode) -> Result<Imported> {
    let kind = match n.node.op_type.as_str() {
        "ReduceMean" => ReduceKind::Mean,
        "ReduceSum" => ReduceKind::Sum,
        _ => ReduceKind::Max,
    };
    // axes became an input: ReduceSum at opset 13, the others at 18
    let as_input = if kind == ReduceKind::Sum {
        n.opset >= 13
    } else {
        n.opset >= 18
    };
    let axes = if as_input && n.has_input(1) {
        ensure!(
            !n.is_activation.get(1).copied().unwrap_or(false),
            "axes computed at run time are not supported"
        );
        let c = n.constant(1)?.ok_or_else(|| anyhow::anyhow!("the axes are missing"))?;
        Some(c.iter().map(|&v| v as i64).collect())
    } else if as_input {
        None
    } else {
        n.attr_ints("axes")
    };
    let empty = axes.as_ref().is_none_or(|a: &Vec<i64>| a.is_empty());
    if empty && n.attr_int("noop_with_empty_axes", 0) != 0 {
        return Ok(NoOp.into());
    }
    Ok(ReduceSpec {
        kind,
        axes,
        keepdims: n.attr_int("keepdims", 1) != 0,
    }.into())
}

impl Operator for ReduceSpec {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        output_shape(self, inputs[0])
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        forward(self, inputs[0])
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![relevance(self, inputs[0], r)?], None))
    }

    /// Sums and means in proportion over the output; a maximum all to the
    /// winner.
    fn flow(&self) -> super::Flow {
        if self.kind == ReduceKind::Max {
            super::Flow::Conserving
        } else {
            super::Flow::Proportional { per_input: false }
        }
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![gradient(self, inputs[0], g)?])
    }

    /// Sums and means are linear; a maximum hands relevance along its
    /// gradient (the winner).
    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
    ) -> Result<Vec<ArrayD<f32>>> {
        self.gradient(inputs, g, Default::default())
    }

    fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        None
    }

    fn takes_maxima(&self) -> bool {
        self.kind == ReduceKind::Max
    }

    /// Unless it reduces axis 0 (no axes: all of them).
    fn keeps_samples_apart(&self, rank: usize) -> bool {
        self.axes.as_ref().is_some_and(|axes| {
            axes.iter()
                .all(|&a| super::normalize_axis(a, rank).is_ok_and(|a| a != 0))
        })
    }
}

/// A reduction with no axes and `noop_with_empty_axes = 1`: the identity.
#[derive(Clone, Debug)]
pub struct NoOp;

impl Operator for NoOp {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        Ok(inputs[0].clone())
    }

    fn relevance(
        &self,
        _: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![r.clone()], None))
    }

    fn gradient(
        &self,
        _: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![g.clone()])
    }

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        true
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
    ) -> Result<Vec<ArrayD<f32>>> {
        self.gradient(inputs, g, Default::default())
    }

    fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        None
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    /// The identity: all relevance passes.
    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }
}

/// The reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// `ReduceMean`.
    Mean,
    /// `ReduceSum`.
    Sum,
    /// `ReduceMax`.
    Max,
}

/// A reduction node.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceSpec {
    /// Which reduction.
    pub kind: ReduceKind,
    /// Reduced axes (negative: from the end); `None` reduces every axis.
    pub axes: Option<Vec<i64>>,
    /// Whether the output keeps the reduced axes (as length 1).
    pub keepdims: bool,
}

/// The output shape of `spec` for an input of `shape`.
pub fn output_shape(spec: &ReduceSpec, shape: &[usize]) -> Result<Vec<usize>> {
    let ax = axes(spec, shape.len())?;
    Ok(shape
        .iter()
        .enumerate()
        .filter_map(|(k, &d)| match (ax.contains(&k), spec.keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

/// The forward pass: the mean, sum or maximum over the reduced axes
/// (accumulated in `f64`).
pub fn forward(spec: &ReduceSpec, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let ax = axes(spec, x.ndim())?;
    let mut acc = x.mapv(|v| v as f64);
    for &a in ax.iter().rev() {
        ensure!(x.shape()[a] > 0, "reduction over an empty axis {a}");
        acc = match spec.kind {
            ReduceKind::Max => acc.fold_axis(Axis(a), f64::NEG_INFINITY, |m, &v| m.max(v)),
            ReduceKind::Sum | ReduceKind::Mean => acc.sum_axis(Axis(a)),
        };
    }
    let count: usize = ax.iter().map(|&a| x.shape()[a]).product();
    if spec.kind == ReduceKind::Mean {
        acc /= count as f64;
    }
    let shape = output_shape(spec, x.shape())?;
    Ok(acc
        .mapv(|v| v as f32)
        .into_shape_with_order(IxDyn(&shape))?)
}

/// The reduced axes for an input of rank `rank`, sorted.
fn axes(spec: &ReduceSpec, rank: usize) -> Result<Vec<usize>> {
    let mut a: Vec<usize> = match &spec.axes {
        None => (0..rank).collect(),
        Some(v) if v.is_empty() => (0..rank).collect(),
        Some(v) => v
            .iter()
            .map(|&x| super::normalize_axis(x, rank))
            .collect::<Result<_>>()?,
    };
    a.sort_unstable();
    a.dedup();
    Ok(a)
}

/// `r` (at the output, with or without the reduced axes kept) with the
/// reduced axes as length 1, and the number of elements reduced into each
/// output.
fn kept(spec: &ReduceSpec, x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<(ArrayD<f32>, usize)> {
    let ax = axes(spec, x.ndim())?;
    let shape: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .map(|(k, &d)| if ax.contains(&k) { 1 } else { d })
        .collect();
    ensure!(
        r.len() == shape.iter().product::<usize>(),
        "reduction of {:?} over axes {ax:?} gives {:?}",
        x.shape(),
        r.shape()
    );
    let n = ax.iter().map(|&a| x.shape()[a]).product();
    let r = r
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&shape))?;
    Ok((r, n))
}

/// The sum of `x` over the reduced axes, axes kept.
fn sum_kept(x: &ArrayD<f32>, ax: &[usize]) -> ArrayD<f32> {
    let mut s = x.clone();
    for &a in ax {
        s = s.sum_axis(Axis(a)).insert_axis(Axis(a));
    }
    s
}

/// Relevance through the reduction.
pub fn relevance(spec: &ReduceSpec, x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let (r, n) = kept(spec, x, r)?;
    let ax = axes(spec, x.ndim())?;
    match spec.kind {
        ReduceKind::Max => max_back(x, &r, &ax),
        ReduceKind::Mean | ReduceKind::Sum => {
            // z = sum_i c_i with c_i = x_i / n (mean) or x_i (sum)
            let div = if spec.kind == ReduceKind::Mean {
                n as f32
            } else {
                1.0
            };
            let z = sum_kept(x, &ax).mapv(|s| s / div);
            let s = ndarray::Zip::from(&r)
                .and(&z)
                .map_collect(|&r, &z| r / stabilize(z, STABILIZER) / div);
            let s = s
                .broadcast(x.shape())
                .ok_or_else(|| anyhow::anyhow!("reduction shapes"))?;
            Ok(ndarray::Zip::from(x).and(&s).map_collect(|&x, &s| x * s))
        }
    }
}

/// All of each output's value to the first maximum of its reduced elements.
fn max_back(x: &ArrayD<f32>, r: &ArrayD<f32>, ax: &[usize]) -> Result<ArrayD<f32>> {
    let mut best: ArrayD<Option<(Vec<usize>, f32)>> = ArrayD::from_elem(r.raw_dim(), None);
    for (ix, &v) in x.indexed_iter() {
        let mut o: Vec<usize> = ix.as_array_view().to_vec();
        for &a in ax {
            o[a] = 0;
        }
        let slot = &mut best[IxDyn(&o)];
        if slot.as_ref().is_none_or(|(_, b)| v > *b) {
            *slot = Some((ix.as_array_view().to_vec(), v));
        }
    }
    let mut out = ArrayD::<f32>::zeros(x.raw_dim());
    for (o, slot) in best.indexed_iter() {
        if let Some((ix, _)) = slot {
            out[IxDyn(ix)] += r[o.clone()];
        }
    }
    Ok(out)
}

/// The exact gradient of the reduction.
pub fn gradient(spec: &ReduceSpec, x: &ArrayD<f32>, g: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let (g, n) = kept(spec, x, g)?;
    let ax = axes(spec, x.ndim())?;
    match spec.kind {
        ReduceKind::Max => max_back(x, &g, &ax),
        ReduceKind::Mean | ReduceKind::Sum => {
            let div = if spec.kind == ReduceKind::Mean {
                n as f32
            } else {
                1.0
            };
            let g = g.mapv(|v| v / div);
            Ok(g.broadcast(x.shape())
                .ok_or_else(|| anyhow::anyhow!("reduction shapes"))?
                .to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Imports a node `op_type(x[, axes])` at `opset` with integer attributes.
    fn imported(
        op_type: &str,
        opset: i64,
        attrs: &[(&str, i64)],
        axes_input: Option<Option<Vec<f32>>>,
    ) -> Result<crate::ops::Op> {
        use crate::ops::registry::Operand;
        use tract_onnx::pb::{AttributeProto, NodeProto};
        let mut inputs = vec!["x".to_string()];
        if axes_input.is_some() {
            inputs.push("axes".into());
        }
        let node = NodeProto {
            op_type: op_type.into(),
            input: inputs,
            attribute: attrs
                .iter()
                .map(|(n, v)| AttributeProto {
                    name: n.to_string(),
                    i: *v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        // Some(None): the axes are computed at run time (an activation)
        let computed = matches!(axes_input, Some(None));
        let axes = axes_input.clone().flatten();
        let constant = move |i: usize| -> Result<Option<ArrayD<f32>>> {
            Ok((i == 1).then(|| axes.clone()).flatten().map(|v| {
                let n = v.len();
                ArrayD::from_shape_vec(IxDyn(&[n]), v).unwrap()
            }))
        };
        let mut is_activation = vec![true];
        if axes_input.is_some() {
            is_activation.push(computed);
        }
        let operand = |i: usize| -> Result<Operand> {
            Ok(match constant(i)? {
                Some(c) => Operand::Const(c),
                None if i < is_activation.len() => Operand::Computed,
                None => Operand::Absent,
            })
        };
        import(&OnnxNode {
            node: &node,
            is_activation: is_activation.clone(),
            operand: &operand,
            opset,
            output: 0,
        })
        .map(|i| i.op)
    }

    #[test]
    fn import_reads_axes_from_attributes_or_inputs_and_noop_is_the_identity() {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2]), vec![1.0f32, 2., 3., 4.]).unwrap();
        // opset 13 ReduceMean without axes: every axis, keepdims 0: a scalar
        let op = imported("ReduceMean", 13, &[("keepdims", 0)], None).unwrap();
        assert!(op.output_shape(&[&[1, 2, 2]]).unwrap().is_empty());
        let m = op.forward(&[&x], 1).unwrap();
        assert_eq!(m.len(), 1);
        assert!((m.iter().next().unwrap() - 2.5).abs() < 1e-6);
        // opset 13 ReduceSum: axes as a constant input
        let op = imported("ReduceSum", 13, &[], Some(Some(vec![2.0]))).unwrap();
        assert_eq!(op.forward(&[&x], 1).unwrap().into_raw_vec_and_offset().0, [3.0, 7.0]);
        // axes computed at run time are refused
        let e = imported("ReduceSum", 13, &[], Some(None)).err().unwrap();
        assert!(e.to_string().contains("run time"), "{e}");
        // no axes with noop_with_empty_axes = 1: the identity
        let op = imported("ReduceMax", 18, &[("noop_with_empty_axes", 1)], None).unwrap();
        assert_eq!(op.forward(&[&x], 1).unwrap(), x);
        assert!(!op.takes_maxima());
        let op = imported("ReduceMax", 18, &[], None).unwrap();
        assert!(op.takes_maxima());
    }

    fn x() -> ArrayD<f32> {
        // [1, 2, 2, 2] NHWC: h, w spatial, 2 channels
        ArrayD::from_shape_vec(vec![1, 2, 2, 2], vec![1.0f32, 5., 2., 6., 3., 7., 4., 0.]).unwrap()
    }

    #[test]
    fn mean_over_the_spatial_axes_is_proportional() {
        let spec = ReduceSpec {
            kind: ReduceKind::Mean,
            axes: Some(vec![1, 2]),
            keepdims: false,
        };
        // the forward pass: the two channel means
        assert_eq!(
            forward(&spec, &x()).unwrap().as_slice().unwrap(),
            &[2.5, 4.5]
        );
        // keepdims 0: output [1, 2]; channel 0 holds 1, 2, 3, 4 (mean 2.5),
        // channel 1 holds 5, 6, 7, 0 (mean 4.5)
        let r = ArrayD::from_shape_vec(vec![1, 2], vec![10.0f32, 9.0]).unwrap();
        let got = relevance(&spec, &x(), &r).unwrap();
        // R_i = x_i / 4 * R / stab(mean): channel 0: x_i, channel 1: x_i / 2 (to 1e-6)
        let want = [1.0, 2.5, 2.0, 3.0, 3.0, 3.5, 4.0, 0.0];
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{got:?}");
        }
        let grad = gradient(&spec, &x(), &r).unwrap();
        assert_eq!(
            grad.iter().take(2).copied().collect::<Vec<_>>(),
            [2.5, 2.25]
        );
    }

    #[test]
    fn max_gives_all_to_the_first_maximum() {
        let spec = ReduceSpec {
            kind: ReduceKind::Max,
            axes: Some(vec![-3, -2]),
            keepdims: true,
        };
        let y = forward(&spec, &x()).unwrap();
        assert_eq!(
            (y.shape(), y.as_slice().unwrap()),
            (&[1, 1, 1, 2][..], &[4.0, 7.0][..])
        );
        let r = ArrayD::from_shape_vec(vec![1, 1, 1, 2], vec![10.0f32, 9.0]).unwrap();
        let got = relevance(&spec, &x(), &r).unwrap();
        // channel 0 maximum 4 (last pixel), channel 1 maximum 7 (third pixel)
        assert_eq!(got.as_slice().unwrap(), &[0., 0., 0., 0., 0., 9., 10., 0.]);
        // sum over everything
        let all = ReduceSpec {
            kind: ReduceKind::Sum,
            axes: None,
            keepdims: true,
        };
        assert_eq!(forward(&all, &x()).unwrap().as_slice().unwrap(), &[28.0]);
        let one = ArrayD::from_shape_vec(vec![1, 1, 1, 1], vec![28.0f32]).unwrap();
        let got = relevance(&all, &x(), &one).unwrap();
        for (a, b) in got.iter().zip(x().iter()) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
