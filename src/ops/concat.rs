//! `Concat` of activations (SqueezeNet Fire modules, Inception blocks,
//! DenseNet): every output element is a copy of one input element, so each
//! input gets back its own slice of the relevance (and of the gradient). An
//! [`Operator`]: import, shape, forward, relevance and gradient are all in
//! this file.

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Axis, Slice};

use super::registry::{Family, Imported, OnnxNode};
use super::{normalize_axis, Operator};

/// The registry's entry.
pub const FAMILY: Family = Family {
    name: "concat",
    onnx: &[("Concat", "each input gets its slice back")],
    import,
    fuse: None,
};

/// `Concat` along `axis` (negative: from the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concat {
    /// The concatenation axis as written in the model.
    pub axis: i64,
}

fn import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.all_activations(),
        "only a concatenation of activations is supported (an input is a constant)"
    );
    Ok(Concat {
        axis: n.attr_int("axis", 1),
    }.into())
}

impl Operator for Concat {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let x = inputs.first().ok_or_else(|| anyhow::anyhow!("no input"))?;
        let a = normalize_axis(self.axis, x.len())?;
        let mut shape = x.to_vec();
        shape[a] = 0;
        for s in inputs {
            ensure!(
                s.len() == x.len()
                    && s.iter()
                        .zip(x.iter())
                        .enumerate()
                        .all(|(k, (p, q))| k == a || p == q),
                "Concat input {s:?} does not fit {x:?} on the axes other than {a}"
            );
            shape[a] += s[a];
        }
        Ok(shape)
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        self.output_shape(&shapes)?;
        let a = normalize_axis(self.axis, shapes[0].len())?;
        let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
        Ok(ndarray::concatenate(Axis(a), &views)?)
    }

    /// Unless it concatenates along axis 0.
    fn keeps_samples_apart(&self, rank: usize) -> bool {
        normalize_axis(self.axis, rank).is_ok_and(|a| a != 0)
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((split(self.axis, inputs, r)?, None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        split(self.axis, inputs, g)
    }

    /// Each output element is a copy of one input element.
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

    /// A copy: all relevance passes.
    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }
}

/// Splits `r` (the relevance or gradient at the output of a `Concat` along
/// `axis`) into the slices that came from each of `inputs`.
pub fn split(axis: i64, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
    let ax = normalize_axis(axis, r.ndim())?;
    let mut start = 0usize;
    for x in inputs {
        ensure!(
            x.ndim() == r.ndim(),
            "Concat input of rank {} for an output of rank {}",
            x.ndim(),
            r.ndim()
        );
        for (k, (&a, &b)) in x.shape().iter().zip(r.shape()).enumerate() {
            ensure!(
                k == ax || a == b,
                "Concat input {:?} does not fit the output {:?} on axis {k}",
                x.shape(),
                r.shape()
            );
        }
        start += x.shape()[ax];
    }
    ensure!(
        start == r.shape()[ax],
        "Concat inputs cover {start} of the {} entries of axis {ax}",
        r.shape()[ax]
    );
    // each input's slice
    let mut start = 0;
    Ok(inputs
        .iter()
        .map(|x| {
            let n = x.shape()[ax];
            let part = r.slice_axis(Axis(ax), Slice::from(start..start + n)).to_owned();
            start += n;
            part
        })
        .collect())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_gets_its_own_slice_back() {
        let a = ArrayD::from_shape_vec(vec![1, 1, 2], vec![1.0f32, 2.0]).unwrap();
        let b = ArrayD::from_shape_vec(vec![1, 2, 2], vec![3.0f32, 4.0, 5.0, 6.0]).unwrap();
        // output [1, 3, 2] = concat on axis 1 (also written -2)
        let r =
            ArrayD::from_shape_vec(vec![1, 3, 2], vec![10.0f32, 20., 30., 40., 50., 60.]).unwrap();
        for axis in [1, -2] {
            let parts = split(axis, &[&a, &b], &r).unwrap();
            assert_eq!(parts[0].as_slice().unwrap(), &[10.0, 20.0]);
            assert_eq!(parts[1].as_slice().unwrap(), &[30.0, 40.0, 50.0, 60.0]);
            assert_eq!(parts[1].shape(), &[1, 2, 2]);
        }
        // the parts hold every element exactly once: the sum is conserved
        let parts = split(1, &[&a, &b], &r).unwrap();
        let total: f32 = parts.iter().map(|p| p.sum()).sum();
        assert_eq!(total, r.sum());
    }

    #[test]
    fn the_forward_pass_is_ndarrays_concatenation_and_its_shape() {
        let a = ArrayD::from_shape_fn(vec![2, 1, 3], |d| (d[0] * 10 + d[2]) as f32);
        let b = ArrayD::from_shape_fn(vec![2, 4, 3], |d| (100 + d[0] * 10 + d[1] + d[2]) as f32);
        for axis in [1, -2] {
            let c = Concat { axis };
            let y = c.forward(&[&a, &b], 1).unwrap();
            let want = ndarray::concatenate(Axis(1), &[a.view(), b.view()]).unwrap();
            assert_eq!(y, want);
            assert_eq!(c.output_shape(&[&[2, 1, 3], &[2, 4, 3]]).unwrap(), vec![2, 5, 3]);
            // relevance: each input its slice, the sum conserved
            let back = split(axis, &[&a, &b], &y).unwrap();
            assert_eq!(back, vec![a.clone(), b.clone()]);
        }
        let e = Concat { axis: 0 }.forward(&[&a, &b], 1).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }

    #[test]
    fn inputs_that_do_not_tile_the_output_are_errors() {
        let a = ArrayD::<f32>::zeros(vec![1, 2, 2]);
        let r = ArrayD::<f32>::zeros(vec![1, 3, 2]);
        let e = split(1, &[&a], &r).unwrap_err();
        assert!(e.to_string().contains("cover 2 of the 3"), "{e}");
        let e = split(3, &[&a], &r).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
