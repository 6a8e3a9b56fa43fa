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

/// `Concat` along `axis` (negative: from the end), of activations and
/// constants (a transformer's class token): the constants' slices of the
/// relevance are absorbed, as by a bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    /// The concatenation axis as written in the model.
    pub axis: i64,
    /// The inputs that do not depend on the image: their place among the
    /// node's inputs, their value if constant (`None`: computed by the
    /// model, from shapes, and read at run time after the activations, in
    /// this order); an axis 0 of 1 is repeated for each sample of a batch.
    pub constants: Vec<(usize, Option<ArrayD<f32>>)>,
}

fn import(n: &OnnxNode) -> Result<Imported> {
    let mut constants = vec![];
    let mut runtime = vec![];
    for i in 0..n.node.input.len() {
        if n.is_act(i) {
            continue;
        }
        match (n.operand)(i)? {
            super::registry::Operand::Const(c) => constants.push((i, Some(c))),
            super::registry::Operand::Computed => {
                constants.push((i, None));
                runtime.push(i);
            }
            super::registry::Operand::Absent => anyhow::bail!("input {i} is missing"),
        }
    }
    ensure!(n.activations() > 0, "no input is an activation");
    Ok(Imported {
        op: super::Op::new(Concat {
            axis: n.attr_int("axis", 1),
            constants,
        }),
        runtime,
    })
}

/// The parts of a relevance (or gradient) split at a `Concat`: the inputs'
/// (the parameters read at run time get zeros), and the constants'.
type Parts = (Vec<ArrayD<f32>>, Vec<ArrayD<f32>>);

impl Concat {
    /// How many of its inputs are read at run time.
    fn runtime(&self) -> usize {
        self.constants.iter().filter(|(_, c)| c.is_none()).count()
    }

    /// The node's inputs in order, the constants among the activations
    /// (their axis 0 repeated to the activations' where it is 1).
    fn all<'a>(&'a self, inputs: &[&'a ArrayD<f32>]) -> Result<Vec<ndarray::ArrayViewD<'a, f32>>> {
        let batch = inputs.first().and_then(|x| x.shape().first().copied());
        let n_acts = inputs.len() - self.runtime();
        let mut params = inputs[n_acts..].iter();
        let mut out = Vec::with_capacity(n_acts + self.constants.len());
        let mut acts = inputs[..n_acts].iter();
        let mut consts = self.constants.iter().peekable();
        for i in 0..n_acts + self.constants.len() {
            match consts.peek() {
                Some((at, c)) if *at == i => {
                    let c: &ArrayD<f32> = match c {
                        Some(c) => c,
                        None => params.next().ok_or_else(|| {
                            anyhow::anyhow!("a parameter read at run time is missing")
                        })?,
                    };
                    let v = match (c.shape().first(), batch) {
                        (Some(1), Some(b)) if b != 1 && c.ndim() == inputs[0].ndim() => {
                            let mut shape = c.shape().to_vec();
                            shape[0] = b;
                            c.broadcast(shape).ok_or_else(|| {
                                anyhow::anyhow!("constant {:?} for a batch of {b}", c.shape())
                            })?
                        }
                        _ => c.view(),
                    };
                    out.push(v);
                    consts.next();
                }
                _ => out.push(
                    acts.next()
                        .ok_or_else(|| anyhow::anyhow!("too few inputs"))?
                        .view(),
                ),
            }
        }
        Ok(out)
    }

    /// `split` over all inputs, the constants' parts removed (their sum
    /// returned apart).
    fn split_acts(&self, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>) -> Result<Parts> {
        let all = self.all(inputs)?;
        let owned: Vec<ArrayD<f32>> = all.iter().map(|v| v.to_owned()).collect();
        let refs: Vec<&ArrayD<f32>> = owned.iter().collect();
        let parts = split(self.axis, &refs, r)?;
        let (mut acts, mut consts) = (vec![], vec![]);
        for (i, p) in parts.into_iter().enumerate() {
            if self.constants.iter().any(|(at, _)| *at == i) {
                consts.push(p);
            } else {
                acts.push(p);
            }
        }
        // the parameters read at run time get no relevance, no gradient
        let n_acts = inputs.len() - self.runtime();
        acts.extend(inputs[n_acts..].iter().map(|p| ArrayD::zeros(p.shape())));
        Ok((acts, consts))
    }
}

impl Operator for Concat {
    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn native(&self) -> Option<&'static str> {
        None
    }

    fn kinks(&self) -> Vec<f32> {
        vec![]
    }

    fn derivative_from_output(&self) -> bool {
        false
    }

    /// The inputs computed by the model from shapes come last.
    fn data_inputs(&self, n: usize) -> usize {
        n - self.runtime().min(n)
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

    super::not_linear!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let n_acts = inputs.len() - self.runtime().min(inputs.len());
        let mut params = inputs[n_acts..].iter();
        let mut inputs = inputs[..n_acts].to_vec();
        // a constant's axis 0 of 1 is repeated for each sample of a batch
        let batch = inputs.first().and_then(|x| x.first().copied());
        let mut stretched: Vec<Vec<usize>> = vec![];
        for (_, c) in &self.constants {
            let mut shape = match c {
                Some(c) => c.shape(),
                None => params
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("a parameter is missing"))?,
            }
            .to_vec();
            if let (Some(1), Some(b)) = (shape.first().copied(), batch) {
                shape[0] = b;
            }
            stretched.push(shape);
        }
        for ((at, _), shape) in self.constants.iter().zip(&stretched) {
            inputs.insert((*at).min(inputs.len()), shape);
        }
        let x = inputs.first().ok_or_else(|| anyhow::anyhow!("no input"))?;
        let a = normalize_axis(self.axis, x.len())?;
        let mut shape = x.to_vec();
        shape[a] = 0;
        for s in &inputs {
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
        let views = self.all(inputs)?;
        let a = normalize_axis(self.axis, views[0].ndim())?;
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
        reuse: &super::Reuse,
    ) -> Result<super::Propagated> {
        if self.constants.is_empty() {
            return Ok((split(self.axis, inputs, r)?, None));
        }
        let (acts, consts) = self.split_acts(inputs, r)?;
        // the constants' relevance, per row of a batch (axis 0)
        let rows = reuse.rows.max(1);
        let mut account = vec![crate::rules::Account::default(); rows];
        for c in &consts {
            let c = c.as_standard_layout();
            let per = (c.len() / rows).max(1);
            for (k, &v) in c.iter().enumerate() {
                account[(k / per).min(rows - 1)].bias += v as f64;
            }
        }
        Ok((acts, Some(account)))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        if self.constants.is_empty() {
            return split(self.axis, inputs, g);
        }
        Ok(self.split_acts(inputs, g)?.0)
    }

    /// Each output element is a copy of one input element.
    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
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

    /// A copy: all relevance passes, but the constants' (a bias's share).
    fn flow(&self) -> super::Flow {
        if self.constants.is_empty() {
            super::Flow::Conserving
        } else {
            super::Flow::Linear
        }
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
            let part = r
                .slice_axis(Axis(ax), Slice::from(start..start + n))
                .to_owned();
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
            let c = Concat {
                axis,
                constants: vec![],
            };
            let y = c.forward(&[&a, &b], 1).unwrap();
            let want = ndarray::concatenate(Axis(1), &[a.view(), b.view()]).unwrap();
            assert_eq!(y, want);
            assert_eq!(
                c.output_shape(&[&[2, 1, 3], &[2, 4, 3]]).unwrap(),
                vec![2, 5, 3]
            );
            // relevance: each input its slice, the sum conserved
            let back = split(axis, &[&a, &b], &y).unwrap();
            assert_eq!(back, vec![a.clone(), b.clone()]);
        }
        let e = Concat {
            axis: 0,
            constants: vec![],
        }
        .forward(&[&a, &b], 1)
        .unwrap_err();
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
