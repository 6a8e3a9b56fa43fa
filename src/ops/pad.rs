//! `Pad`: every output element is either a copy of one input element or the
//! constant. Relevance (and the gradient) of a copy goes back to its source:
//! in constant mode that crops the padding away (the constant absorbs the
//! relevance of the padded border, zero when it is zero and the next layer
//! uses z+ or a zero pad value), in edge / reflect / wrap mode the copies'
//! relevance is summed onto the elements they copy.

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};

use super::registry::{Imported, OnnxNode, Operand};

/// How `Pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge element.
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Wrap around (opset 19).
    Wrap,
}

impl PadMode {
    /// The ONNX `mode` attribute.
    pub fn parse(s: &str) -> Result<PadMode> {
        Ok(match s {
            "constant" | "" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => bail!("pad mode '{other}' is not supported"),
        })
    }
}

/// A `Pad` node.
#[derive(Clone, Debug, PartialEq)]
pub struct PadSpec {
    /// `[begin_0, .., begin_k, end_0, .., end_k]` over `axes` (negative values
    /// crop); `None` when they are computed in the model: the node's second
    /// input then holds them and is read from the forward pass.
    pub pads: Option<Vec<i64>>,
    /// The padded axes (opset 18 `axes`), all axes when `None`.
    pub axes: Option<Vec<i64>>,
    /// Border mode.
    pub mode: PadMode,
    /// The constant of [`PadMode::Constant`].
    pub value: f32,
}

/// Per axis: the source index of each output index (`None` for a constant).
fn axis_map(mode: PadMode, n: usize, begin: i64, out: usize) -> Result<Vec<Option<usize>>> {
    let n_i = n as i64;
    (0..out as i64)
        .map(|o| {
            let i = o - begin;
            if (0..n_i).contains(&i) {
                return Ok(Some(i as usize));
            }
            ensure!(
                n > 0 || mode == PadMode::Constant,
                "cannot pad an empty axis in {mode:?} mode"
            );
            Ok(match mode {
                PadMode::Constant => None,
                PadMode::Edge => Some(i.clamp(0, n_i - 1) as usize),
                PadMode::Wrap => Some(i.rem_euclid(n_i) as usize),
                PadMode::Reflect => {
                    if n == 1 {
                        Some(0)
                    } else {
                        let period = 2 * (n_i - 1);
                        let k = i.rem_euclid(period);
                        Some(if k < n_i { k } else { period - k } as usize)
                    }
                }
            })
        })
        .collect()
}

/// Per-axis begin pads of an input of rank `rank`.
fn begins(spec: &PadSpec, pads: &[i64], rank: usize) -> Result<Vec<i64>> {
    let axes: Vec<usize> = match &spec.axes {
        None => (0..rank).collect(),
        Some(a) => a
            .iter()
            .map(|&x| super::normalize_axis(x, rank))
            .collect::<Result<_>>()?,
    };
    ensure!(
        pads.len() == 2 * axes.len(),
        "{} pads for {} padded axes",
        pads.len(),
        axes.len()
    );
    let mut b = vec![0i64; rank];
    for (k, &a) in axes.iter().enumerate() {
        b[a] = pads[k];
    }
    Ok(b)
}

/// Moves `r` (at the padded output) back onto the input `x`: each output
/// element to the element it copies; `pads` are the node's pads (constant
/// or read at run time).
pub fn back(spec: &PadSpec, pads: &[i64], x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x.ndim() == r.ndim(),
        "Pad input {:?} and output {:?} differ in rank",
        x.shape(),
        r.shape()
    );
    let b = begins(spec, pads, x.ndim())?;
    let maps = x
        .shape()
        .iter()
        .zip(r.shape())
        .zip(&b)
        .map(|((&n, &o), &begin)| axis_map(spec.mode, n, begin, o))
        .collect::<Result<Vec<_>>>()?;
    let mut out = ArrayD::<f32>::zeros(IxDyn(x.shape()));
    for (ix, &v) in r.indexed_iter() {
        let mut src = Vec::with_capacity(maps.len());
        for (axis, m) in maps.iter().enumerate() {
            match m[ix[axis]] {
                Some(i) => src.push(i),
                None => break,
            }
        }
        if src.len() == maps.len() {
            out[IxDyn(&src)] += v;
        }
    }
    Ok(out)
}

/// The padded tensor of shape `out` for `x` (the forward pass; used for
/// the z^B bounds of a first layer that reads a padded image).
pub fn forward(
    spec: &PadSpec,
    pads: &[i64],
    x: &ArrayD<f32>,
    out: &[usize],
) -> Result<ArrayD<f32>> {
    ensure!(x.ndim() == out.len(), "Pad changes the rank");
    let b = begins(spec, pads, x.ndim())?;
    let maps = x
        .shape()
        .iter()
        .zip(out)
        .zip(&b)
        .map(|((&n, &o), &begin)| axis_map(spec.mode, n, begin, o))
        .collect::<Result<Vec<_>>>()?;
    let mut src = vec![0usize; maps.len()];
    Ok(ArrayD::from_shape_fn(IxDyn(out), |ix| {
        for (axis, m) in maps.iter().enumerate() {
            match m[ix[axis]] {
                Some(i) => src[axis] = i,
                None => return spec.value,
            }
        }
        x[IxDyn(&src)]
    }))
}

/// The pads read at run time from the node's second input (an integer
/// tensor, cast to `f32` by the forward pass).
pub fn runtime_pads(t: &ArrayD<f32>) -> Result<Vec<i64>> {
    t.iter()
        .map(|&v| {
            ensure!(v.fract() == 0.0 && v.is_finite(), "pads {v} not an integer");
            Ok(v as i64)
        })
        .collect()
}

/// A `Pad` node: relevance cropped back (constant mode) or summed onto the
/// copied elements (edge, reflect, wrap); its forward pass runs in tract.
#[derive(Clone, Debug)]
pub struct Pad(pub PadSpec);

impl Pad {
    /// The node's pads: constant, or read at run time from its second input.
    fn pads(&self, inputs: &[&ArrayD<f32>]) -> Result<Vec<i64>> {
        match (&self.0.pads, inputs.get(1)) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(t)) => runtime_pads(t),
            (None, None) => bail!("the pads of the node are missing"),
        }
    }
}

impl super::Operator for Pad {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let x = inputs[0];
        let pads = (self.0.pads.as_ref()).ok_or_else(|| anyhow::anyhow!("pads computed at run time"))?;
        let b = begins(&self.0, pads, x.len())?;
        let half = pads.len() / 2;
        let mut e = vec![0i64; x.len()];
        let axes: Vec<usize> = match &self.0.axes {
            None => (0..x.len()).collect(),
            Some(a) => a
                .iter()
                .map(|&v| super::normalize_axis(v, x.len()))
                .collect::<Result<_>>()?,
        };
        for (k, &a) in axes.iter().enumerate() {
            e[a] = pads[half + k];
        }
        x.iter()
            .zip(b.iter().zip(&e))
            .map(|(&n, (&b, &e))| {
                let o = n as i64 + b + e;
                ensure!(o >= 0, "Pad of {x:?} by {pads:?} to a negative size");
                Ok(o as usize)
            })
            .collect()
    }

    fn forward(&self, _: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        bail!("no native forward pass")
    }

    fn native(&self) -> Option<&'static str> {
        Some("an operator without a native forward pass")
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        let pads = self.pads(inputs)?;
        let back = back(&self.0, &pads, inputs[0], r)?;
        Ok((super::with_params(back, inputs), None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let pads = self.pads(inputs)?;
        Ok(super::with_params(back(&self.0, &pads, inputs[0], g)?, inputs))
    }

    fn lrp0(&self) -> super::Lrp0 {
        if self.0.mode != PadMode::Constant || self.0.value == 0.0 {
            super::Lrp0::Exact
        } else {
            super::Lrp0::Differs(format!("pads with the constant {}", self.0.value))
        }
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        super::Operator::gradient(self, inputs, g, Default::default())
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

    fn flow(&self) -> super::Flow {
        super::Flow::Crops
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        None
    }

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        false
    }

    /// The data, then the pads when computed at run time.
    fn data_inputs(&self, _n: usize) -> usize {
        1
    }


    /// The border is the constant (or a copy of the bounds of the element
    /// it copies): its bounds are that constant, as for the implicit
    /// padding of a `Conv`.
    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        params: &[&ArrayD<f32>],
        out_shape: &[usize],
    ) -> Option<super::Interval> {
        let pads = match (&self.0.pads, params.first()) {
            (Some(v), _) => v.clone(),
            (None, Some(t)) => runtime_pads(t).ok()?,
            (None, None) => return None,
        };
        let low = forward(&self.0, &pads, low, out_shape).ok()?;
        let high = forward(&self.0, &pads, high, out_shape).ok()?;
        Some((low, high, true))
    }

    super::not_linear!();
}

/// Builds a `Pad` (pads before opset 11 as attributes, after as inputs,
/// constant or computed at run time).
fn import(n: &OnnxNode) -> Result<Imported> {
    let ints = |c: &ArrayD<f32>| -> Vec<i64> { c.iter().map(|&v| v as i64).collect() };
    let mode = PadMode::parse(&n.attr_string("mode").unwrap_or_else(|| "constant".into()))?;
    let (pads, axes, value) = if n.opset < 11 {
        let pads = n
            .attr_ints("pads")
            .or_else(|| n.attr_ints("paddings"))
            .ok_or_else(|| anyhow::anyhow!("no pads"))?;
        (Some(pads), None, n.attr_float("value", 0.0))
    } else {
        let pads = match (n.operand)(1)? {
            Operand::Const(c) => Some(ints(&c)),
            Operand::Computed => None,
            Operand::Absent => bail!("no pads"),
        };
        let axes = match (n.operand)(3)? {
            Operand::Const(c) => Some(ints(&c)),
            Operand::Absent => None,
            Operand::Computed => bail!("axes computed at run time are not supported"),
        };
        let value = match (n.operand)(2)? {
            Operand::Const(c) => c.iter().next().copied().unwrap_or(0.0),
            Operand::Absent => 0.0,
            Operand::Computed => bail!("a pad value computed at run time is not supported"),
        };
        (pads, axes, value)
    };
    // pads computed in the model: read from the forward pass
    let runtime = if pads.is_none() { vec![1] } else { vec![] };
    let op = Pad(PadSpec {
        pads,
        axes,
        mode,
        value,
    });
    Ok(Imported {
        op: super::Op::new(op),
        runtime,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "pad",
    onnx: &[(
        "Pad",
        "constant: cropped back; edge / reflect / wrap: copies summed back",
    )],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: PadMode) -> PadSpec {
        PadSpec {
            pads: None,
            axes: None,
            mode,
            value: 0.5,
        }
    }

    #[test]
    fn constant_pad_is_cropped_back() {
        let x = ArrayD::<f32>::zeros(vec![1, 2]);
        // pads: axis 0 none, axis 1 one before, two after: output [1, 5]
        let r = ArrayD::from_shape_vec(vec![1, 5], vec![1.0f32, 2., 3., 4., 5.]).unwrap();
        let got = back(&spec(PadMode::Constant), &[0, 1, 0, 2], &x, &r).unwrap();
        assert_eq!(got.as_slice().unwrap(), &[2.0, 3.0]);
        // the forward pass fills the border with the constant
        let x2 = ArrayD::from_shape_vec(vec![1, 2], vec![1.0f32, 2.0]).unwrap();
        let y = forward(&spec(PadMode::Constant), &[0, 1, 0, 2], &x2, &[1, 5]).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[0.5, 1.0, 2.0, 0.5, 0.5]);
        let y = forward(&spec(PadMode::Reflect), &[0, 1, 0, 2], &x2, &[1, 5]).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[2.0, 1.0, 2.0, 1.0, 2.0]);
        // negative pads crop: the cropped input elements get nothing
        let x3 = ArrayD::<f32>::zeros(vec![4]);
        let r3 = ArrayD::from_shape_vec(vec![2], vec![7.0f32, 8.0]).unwrap();
        let got = back(&spec(PadMode::Constant), &[-1, -1], &x3, &r3).unwrap();
        assert_eq!(got.as_slice().unwrap(), &[0.0, 7.0, 8.0, 0.0]);
    }

    #[test]
    fn edge_reflect_and_wrap_sum_the_copies_back() {
        // input [a b c], pads 2 before, 1 after: output 6 elements
        let x = ArrayD::<f32>::zeros(vec![3]);
        let r =
            ArrayD::from_shape_vec(vec![6], vec![1.0f32, 10., 100., 1000., 10000., 1e5]).unwrap();
        // edge:    a a | a b c | c
        let e = back(&spec(PadMode::Edge), &[2, 1], &x, &r).unwrap();
        assert_eq!(e.as_slice().unwrap(), &[111.0, 1000.0, 110000.0]);
        // reflect: c b | a b c | b
        let f = back(&spec(PadMode::Reflect), &[2, 1], &x, &r).unwrap();
        assert_eq!(f.as_slice().unwrap(), &[100.0, 101010.0, 10001.0]);
        // wrap:    b c | a b c | a
        let w = back(&spec(PadMode::Wrap), &[2, 1], &x, &r).unwrap();
        assert_eq!(w.as_slice().unwrap(), &[100100.0, 1001.0, 10010.0]);
        // every mode without a constant conserves the sum
        for g in [e, f, w] {
            assert_eq!(g.sum(), r.sum());
        }
    }

    #[test]
    fn axes_select_the_padded_axes() {
        let s = PadSpec {
            pads: Some(vec![1, 0]),
            axes: Some(vec![-1]),
            mode: PadMode::Constant,
            value: 0.0,
        };
        let x = ArrayD::<f32>::zeros(vec![2, 1]);
        let r = ArrayD::from_shape_vec(vec![2, 2], vec![1.0f32, 2., 3., 4.]).unwrap();
        let got = back(&s, &[1, 0], &x, &r).unwrap();
        assert_eq!(got.as_slice().unwrap(), &[2.0, 4.0]);
        assert!(back(&s, &[1, 0, 0], &x, &r).is_err());
    }
}
