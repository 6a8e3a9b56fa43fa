//! `Mul` of an activation by a gate: squeeze-excitation (`x * sigmoid(fc(gap(x)))`,
//! MobileNetV3 / EfficientNet), swish written as `x * sigmoid(x)` and hard-swish
//! as `x * HardSigmoid(x)`. As for the gates of LSTMs (Arras et al.,
//! "signal-take-all"), the gated activation gets all the relevance and the
//! gate none: the gate only rescales the signal. The gradient is the exact
//! product rule.

use anyhow::{bail, Result};
use ndarray::{ArrayD, Zip};

use super::registry::{Imported, OnnxNode};
use super::structural::unbroadcast;

/// The index of the gate among `inputs` for the output of shape `out`.
fn which(gate: Option<usize>, inputs: &[&ArrayD<f32>], out: &[usize]) -> Result<usize> {
    if inputs.len() != 2 {
        bail!("a gate multiplies two tensors, got {}", inputs.len());
    }
    if let Some(g) = gate {
        return Ok(g);
    }
    let full = |k: usize| inputs[k].shape() == out;
    match (full(0), full(1)) {
        (true, false) => Ok(1),
        (false, true) => Ok(0),
        _ => bail!(
            "Mul of two activations of shapes {:?} and {:?}: neither is a gate (a Sigmoid / \
             HardSigmoid output, or a per-channel factor broadcast over the other)",
            inputs[0].shape(),
            inputs[1].shape()
        ),
    }
}

/// Relevance: all of `r` to the gated input, zero to the gate.
pub fn relevance(
    gate: Option<usize>,
    inputs: &[&ArrayD<f32>],
    r: &ArrayD<f32>,
) -> Result<Vec<ArrayD<f32>>> {
    let g = which(gate, inputs, r.shape())?;
    let signal = 1 - g;
    let mut out = vec![
        ArrayD::zeros(inputs[0].shape()),
        ArrayD::zeros(inputs[1].shape()),
    ];
    out[signal] = unbroadcast(r.clone(), inputs[signal].shape())?;
    Ok(out)
}

/// Gradient of `a * b`: `g b` to `a`, `g a` to `b` (summed over broadcast axes).
pub fn gradient(inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    if inputs.len() != 2 {
        bail!("a gate multiplies two tensors, got {}", inputs.len());
    }
    let shape = g.shape();
    let mut out = Vec::with_capacity(2);
    for k in 0..2 {
        let Some(other) = inputs[1 - k].broadcast(shape) else {
            bail!(
                "{:?} does not broadcast to the output {shape:?}",
                inputs[1 - k].shape()
            );
        };
        let local = Zip::from(g).and(&other).map_collect(|&g, &o| g * o);
        out.push(unbroadcast(local, inputs[k].shape())?);
    }
    Ok(out)
}

/// `Mul` of two activations, one of them a gate (which: decided at import
/// from where it comes, `None`: the input broadcast to the output).
#[derive(Clone, Debug)]
pub struct Gate {
    /// Which input is the gate.
    pub gate: Option<usize>,
}

impl super::Operator for Gate {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let Some(other) = inputs.get(1) else {
            bail!("a gate needs two inputs")
        };
        super::movement::broadcast(inputs[0], other)
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let Some(other) = inputs.get(1) else {
            bail!("a gate needs two inputs")
        };
        super::structural::broadcast_with(inputs[0], other, |a, b| a * b)
    }


    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((relevance(self.gate, inputs, r)?, None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        gradient(inputs, g)
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Differs("multiplies two activations (a gate)".into())
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        gradient(inputs, g)
    }

    fn takes_maxima(&self) -> bool {
        false
    }



    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
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
        true
    }




    super::plain!();
}

/// Builds a `Mul`: of two activations a gate (which one is decided after
/// the import, from where each comes), of one by a constant arithmetic.
fn import(n: &OnnxNode) -> Result<Imported> {
    if n.activations() == 2 {
        Ok(Gate { gate: None }.into())
    } else {
        super::structural::arith_import(n)
    }
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "gate",
    onnx: &[
        ("Mul", "by a constant: as Sub; two activations: a gate, all relevance to the gated one, none to the gate"),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_goes_to_the_signal_and_the_gradient_is_the_product_rule() {
        let x = ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![1.0f32, 2., 3., 4.]).unwrap();
        let s = ArrayD::from_shape_vec(vec![1, 2, 1, 1], vec![0.5f32, 0.25]).unwrap();
        let r = ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![0.5f32, 1., 0.75, 1.]).unwrap();
        // gate decided by shape: s is broadcast
        let out = relevance(None, &[&x, &s], &r).unwrap();
        assert_eq!(out[0], r);
        assert_eq!(out[1].sum(), 0.0);
        assert_eq!(out[1].shape(), &[1, 2, 1, 1]);
        let g = gradient(&[&x, &s], &r).unwrap();
        // d/dx = g s: [0.25, 0.5, 0.1875, 0.25]; d/ds = sum over the plane of g x
        assert_eq!(g[0].as_slice().unwrap(), &[0.25, 0.5, 0.1875, 0.25]);
        assert_eq!(g[1].as_slice().unwrap(), &[2.5, 6.25]);
        // two full-size activations with no known gate: an error naming the shapes
        let e = relevance(None, &[&x, &x], &r).unwrap_err();
        assert!(e.to_string().contains("neither is a gate"), "{e}");
    }
}
