//! `Mean` of activations (numpy broadcasting): `y = (x_1 + ... + x_n) / n`.
//! Relevance is split in proportion to the inputs, as for a sum (the `1/n`
//! scales every contribution alike); the gradient is `g / n` to each input,
//! summed over the axes it was broadcast along.
//!
//! The first operator family written as an [`Operator`]: this file and its
//! name in the `families!` line of `ops/mod.rs` are all there is to it.

use anyhow::{ensure, Result};
use ndarray::ArrayD;

use super::movement::broadcast;
use super::registry::{Family, Imported, OnnxNode};
use super::structural::{sum, sum_gradient};
use super::Operator;

/// The registry's entry.
pub const FAMILY: Family = Family {
    name: "mean",
    onnx: &[(
        "Mean",
        "proportional split between the activations (as Sum)",
    )],
    import,
    fuse: None,
};

/// `Mean` of the node's activations.
#[derive(Clone, Debug)]
pub struct Mean;

fn import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.all_activations(),
        "only a mean of activations is supported (no constant operand)"
    );
    Ok(Mean.into())
}

impl Operator for Mean {



    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }




    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        inputs[1..]
            .iter()
            .try_fold(inputs[0].to_vec(), |acc, s| broadcast(&acc, s))
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|x| x.shape()).collect();
        let shape = self.output_shape(&shapes)?;
        let mut acc = ArrayD::<f32>::zeros(shape.clone());
        for x in inputs {
            let b = x.broadcast(shape.clone()).ok_or_else(|| {
                anyhow::anyhow!("Mean input {:?} does not broadcast to {shape:?}", x.shape())
            })?;
            acc += &b;
        }
        let n = inputs.len() as f32;
        Ok(acc.mapv_into(|v| v / n))
    }

    /// An elementwise mean of activations.
    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        true
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((sum(inputs, r)?, None))
    }

    /// Proportional to the inputs over their sum, `n` times the output.
    fn flow(&self) -> super::Flow {
        super::Flow::Proportional { per_input: true }
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let n = inputs.len() as f32;
        sum_gradient(inputs, &g.mapv(|v| v / n))
    }

    /// Linear: each input's share `x_i / sum x` of the relevance is its
    /// share `x_i * dy/dx_i / y` of the output, as for a sum.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn arr(shape: &[usize], v: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn forward_relevance_and_gradient_by_hand() {
        let a = arr(&[1, 2], &[1.0, 3.0]);
        let b = arr(&[1, 2], &[3.0, 1.0]);
        let y = Mean.forward(&[&a, &b], 1).unwrap();
        assert_eq!(y, arr(&[1, 2], &[2.0, 2.0]));
        // relevance in proportion to the inputs, conserved (up to the
        // stabiliser 1e-6 added to the sum)
        let r = arr(&[1, 2], &[4.0, 8.0]);
        let rs = Mean.relevance(&[&a, &b], &r, &Default::default()).unwrap().0;
        assert!((rs[0][[0, 0]] - 1.0).abs() < 1e-5 && (rs[1][[0, 0]] - 3.0).abs() < 1e-5);
        assert!((rs[0][[0, 1]] - 6.0).abs() < 1e-5 && (rs[1][[0, 1]] - 2.0).abs() < 1e-5);
        // d mean / d x_i = 1 / n; a broadcast input sums over its copies
        let c = arr(&[1, 1], &[5.0]);
        let g = Mean
            .gradient(&[&a, &c], &arr(&[1, 2], &[1.0, 1.0]), Default::default())
            .unwrap();
        assert_eq!(g[0], arr(&[1, 2], &[0.5, 0.5]));
        assert_eq!(g[1], arr(&[1, 1], &[1.0]));
    }
}
