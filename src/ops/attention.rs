//! Attention: the product of two activations (`MatMul` of queries and
//! keys, of attention weights and values) and `Softmax` inside the network.
//!
//! The rules are AttnLRP's (Achtibat et al., ICML 2024; LXT):
//! - a product `Z = A B` of two activations takes the epsilon rule on the
//!   bilinear map, `S = R / stab(Z)`, and the uniform rule on its two
//!   factors: each gets half, `R_A = A * (S B^T) / 2`, `R_B = B * (A^T S) / 2`
//!   (nothing is lost but the stabiliser's share);
//! - a softmax `s = softmax(x)` hands `R_x = x * (R - s * sum(R))` to its
//!   input (its first-order Taylor expansion; Prop. 3.1 of the paper); what
//!   it does not pass on is the expansion's constant term, a bias.
//!
//! Under conservative propagation (CP-LRP, Ali et al., ICML 2022; the
//! [`Attention::Conservative`] of a composite) the attention weights are
//! constants: a product with a factor that a softmax computes
//! ([`Bilinear::weights`]) hands all of its relevance to the other factor
//! (the values) by the epsilon rule, and nothing to the weights, so nothing
//! reaches the queries and keys.

use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::registry::{Imported, OnnxNode};
use super::{normalize_axis, Propagated, Reuse};
use crate::kernels::linalg::{matmul, Mat};
use crate::rules::{stabilize, Account, Rule, STABILIZER};

/// How relevance goes through the attention of a transformer (the
/// composite's choice; [`Reuse::attention`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attention {
    /// AttnLRP: the uniform rule at products of two activations (each
    /// factor gets half), the softmax's Taylor rule.
    #[default]
    Full,
    /// CP-LRP: the attention weights are constants, relevance reaches the
    /// values only.
    Conservative,
}

/// The epsilon of the rules here: the composite's normalisation rule's
/// (its linear layers' epsilon, see `Composite::norm_rule`), else the
/// stabiliser.
fn epsilon(reuse: &Reuse) -> f32 {
    match reuse.norm {
        Some(Rule::Epsilon { epsilon }) => epsilon,
        _ => STABILIZER,
    }
}

/// The geometry of a (numpy) matrix product of `[.., n, k]` by `[.., k, m]`:
/// the broadcast leading axes and, per matrix of the output, the matrices
/// of the two factors it multiplies.
struct Geometry {
    out_shape: Vec<usize>,
    n: usize,
    k: usize,
    m: usize,
    /// For each output matrix: (index of A's matrix, index of B's matrix).
    pairs: Vec<(usize, usize)>,
    a_count: usize,
    b_count: usize,
}

impl Geometry {
    fn of(a: &[usize], b: &[usize]) -> Result<Geometry> {
        ensure!(
            a.len() >= 2 && b.len() >= 2,
            "products of vectors (rank {} by rank {}) are not supported",
            a.len(),
            b.len()
        );
        let (n, k) = (a[a.len() - 2], a[a.len() - 1]);
        let (k2, m) = (b[b.len() - 2], b[b.len() - 1]);
        ensure!(
            k == k2,
            "inner dimensions differ: {a:?} by {b:?} ({k} and {k2})"
        );
        let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let rank = ba.len().max(bb.len());
        let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
        let batch = (0..rank)
            .map(|i| match (dim(ba, i), dim(bb, i)) {
                (x, y) if x == y || y == 1 => Ok(x),
                (1, y) => Ok(y),
                (x, y) => Err(anyhow!("leading axes {ba:?} and {bb:?} do not broadcast ({x} and {y})")),
            })
            .collect::<Result<Vec<_>>>()?;
        let count: usize = batch.iter().product();
        // the index of each factor's matrix for each output matrix
        let index = |s: &[usize], flat: usize| {
            let mut rem = flat;
            let mut idx = 0;
            let mut stride = 1;
            for i in (0..rank).rev() {
                let c = rem % batch[i];
                rem /= batch[i];
                let d = dim(s, i);
                if d != 1 {
                    idx += c * stride;
                }
                stride *= d;
            }
            idx
        };
        let pairs = (0..count).map(|f| (index(ba, f), index(bb, f))).collect();
        let mut out_shape = batch;
        out_shape.extend([n, m]);
        Ok(Geometry {
            out_shape,
            n,
            k,
            m,
            pairs,
            a_count: ba.iter().product(),
            b_count: bb.iter().product(),
        })
    }
}

fn contiguous(x: &ArrayD<f32>) -> std::borrow::Cow<'_, [f32]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// `A B` for all matrices (one thread per product when there are several).
fn product(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let g = Geometry::of(a.shape(), b.shape())?;
    let (sa, sb) = (contiguous(a), contiguous(b));
    let (n, k, m) = (g.n, g.k, g.m);
    let mut out = vec![0.0f32; g.pairs.len() * n * m];
    let many = g.pairs.len() > 1;
    let one = |(dst, &(ia, ib)): (&mut [f32], &(usize, usize))| {
        let am = Mat::row_major(&sa[ia * n * k..(ia + 1) * n * k], n, k);
        let bm = Mat::row_major(&sb[ib * k * m..(ib + 1) * k * m], k, m);
        matmul(dst, am, bm, false, !many);
    };
    if n * m > 0 {
        if many {
            out.par_chunks_mut(n * m).zip(g.pairs.par_iter()).for_each(one);
        } else {
            out.chunks_mut(n * m).zip(g.pairs.iter()).for_each(one);
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&g.out_shape), out)?)
}

/// The products `G B^T` summed into A's matrices and `A^T G` summed into
/// B's (the gradient of `A B` for `G` at the output; `None` where a factor
/// is not wanted).
fn transposed(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    grad: &ArrayD<f32>,
    want: [bool; 2],
) -> Result<[Option<ArrayD<f32>>; 2]> {
    let g = Geometry::of(a.shape(), b.shape())?;
    ensure!(
        grad.shape() == g.out_shape.as_slice(),
        "gradient {:?} for a product of shape {:?}",
        grad.shape(),
        g.out_shape
    );
    let (sa, sb, sg) = (contiguous(a), contiguous(b), contiguous(grad));
    let (n, k, m) = (g.n, g.k, g.m);
    // per factor matrix, the output matrices it takes part in
    let users = |count: usize, pick: fn(&(usize, usize)) -> usize| {
        let mut u = vec![vec![]; count];
        for (f, p) in g.pairs.iter().enumerate() {
            u[pick(p)].push(f);
        }
        u
    };
    let many = g.pairs.len() > 1;
    let ga = want[0].then(|| {
        let users = users(g.a_count, |p| p.0);
        let mut out = vec![0.0f32; g.a_count * n * k];
        if n * k > 0 {
            out.par_chunks_mut(n * k)
                .zip(users.par_iter())
                .for_each(|(dst, fs)| {
                    for (j, &f) in fs.iter().enumerate() {
                        let gm = Mat::row_major(&sg[f * n * m..(f + 1) * n * m], n, m);
                        let ib = g.pairs[f].1;
                        let bm = Mat::row_major(&sb[ib * k * m..(ib + 1) * k * m], k, m);
                        matmul(dst, gm, bm.t(), j > 0, !many);
                    }
                });
        }
        ArrayD::from_shape_vec(IxDyn(a.shape()), out)
    });
    let gb = want[1].then(|| {
        let users = users(g.b_count, |p| p.1);
        let mut out = vec![0.0f32; g.b_count * k * m];
        if k * m > 0 {
            out.par_chunks_mut(k * m)
                .zip(users.par_iter())
                .for_each(|(dst, fs)| {
                    for (j, &f) in fs.iter().enumerate() {
                        let gm = Mat::row_major(&sg[f * n * m..(f + 1) * n * m], n, m);
                        let ia = g.pairs[f].0;
                        let am = Mat::row_major(&sa[ia * n * k..(ia + 1) * n * k], n, k);
                        matmul(dst, am.t(), gm, j > 0, !many);
                    }
                });
        }
        ArrayD::from_shape_vec(IxDyn(b.shape()), out)
    });
    Ok([ga.transpose()?, gb.transpose()?])
}

/// The account of relevance `r` at outputs `z` divided by their stabilised
/// values `d` (what the stabiliser absorbs, what outputs equal to zero
/// drop), one per row of a batch on axis 0.
fn stabiliser_account(r: &[f32], z: &[f32], eps: f32, rows: usize) -> Vec<Account> {
    let rows = rows.max(1);
    let per = r.len() / rows;
    (0..rows)
        .map(|i| {
            let (mut stabilizer, mut dropped) = (0.0f64, 0.0f64);
            let span = i * per..(i + 1) * per;
            for (&r, &z) in r[span.clone()].iter().zip(&z[span]) {
                let d = stabilize(z, eps);
                if d == 0.0 {
                    dropped += r as f64;
                } else {
                    stabilizer += (r * (d - z) / d) as f64;
                }
            }
            Account {
                stabilizer,
                dropped,
                ..Account::default()
            }
        })
        .collect()
}

/// `MatMul` of two activations (`Q K^T`, attention weights times values).
#[derive(Clone, Debug, Default)]
pub struct Bilinear {
    /// Which factor holds the attention weights (the output of a softmax),
    /// the constant of conservative propagation; set by the graph after
    /// the import (`None`: neither).
    pub weights: Option<usize>,
}

impl Bilinear {
    /// Which factors get relevance, and what share of the epsilon rule's:
    /// `[share of A, share of B]`.
    fn shares(&self, reuse: &Reuse) -> [f32; 2] {
        match (reuse.attention, self.weights) {
            (Attention::Conservative, Some(0)) => [0.0, 1.0],
            (Attention::Conservative, Some(_)) => [1.0, 0.0],
            _ => [0.5, 0.5],
        }
    }
}

impl super::Operator for Bilinear {
    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        ensure!(inputs.len() == 2, "{} inputs for a product of two", inputs.len());
        Ok(Geometry::of(inputs[0], inputs[1])?.out_shape)
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        product(inputs[0], inputs[1])
    }

    fn relevance(&self, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>, reuse: &Reuse) -> Result<Propagated> {
        let (a, b) = (inputs[0], inputs[1]);
        let computed;
        let z = match reuse.output {
            Some(z) if z.shape() == r.shape() => z,
            _ => {
                computed = product(a, b)?;
                &computed
            }
        };
        ensure!(
            z.shape() == r.shape(),
            "relevance {:?} for a product of shape {:?}",
            r.shape(),
            z.shape()
        );
        let eps = epsilon(reuse);
        if r.iter().all(|&v| v == 0.0) {
            // no relevance arrives (queries by keys under CP-LRP): none leaves
            let zeros = vec![ArrayD::zeros(a.shape()), ArrayD::zeros(b.shape())];
            return Ok((zeros, Some(vec![Account::default(); reuse.rows.max(1)])));
        }
        let s = crate::rules::divide(r, z, eps);
        let shares = self.shares(reuse);
        let [ga, gb] = transposed(a, b, &s, shares.map(|w| w != 0.0))?;
        let part = |g: Option<ArrayD<f32>>, x: &ArrayD<f32>, w: f32| match g {
            Some(mut g) => {
                ndarray::Zip::from(&mut g).and(x).for_each(|g, &x| *g *= x * w);
                g
            }
            None => ArrayD::zeros(x.shape()),
        };
        let out = vec![part(ga, a, shares[0]), part(gb, b, shares[1])];
        let (rs, zs) = (contiguous(r), contiguous(z));
        let account = stabiliser_account(&rs, &zs, eps, reuse.rows);
        Ok((out, Some(account)))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let [ga, gb] = transposed(inputs[0], inputs[1], g, [true, true])?;
        Ok(vec![
            ga.ok_or_else(|| anyhow!("no gradient"))?,
            gb.ok_or_else(|| anyhow!("no gradient"))?,
        ])
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Modified(
            "the uniform rule: each factor of the product gets half of its gradient",
        )
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        let mut grads = super::Operator::gradient(self, inputs, g, Default::default())?;
        for x in &mut grads {
            x.mapv_inplace(|v| v * 0.5);
        }
        Ok(grads)
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Linear
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn rule(&self, reuse: &Reuse) -> Option<Rule> {
        Some(Rule::Epsilon {
            epsilon: epsilon(reuse),
        })
    }

    fn kind(&self) -> Option<&'static str> {
        Some("products of two activations")
    }

    fn keeps_samples_apart(&self, rank: usize) -> bool {
        // axis 0 is a leading (matrix-batch) axis of both factors
        rank >= 3
    }
}

/// `Softmax` inside the network (attention weights); a trailing one is
/// skipped by the importer (its input, the logits, is explained).
#[derive(Clone, Debug)]
pub struct Softmax {
    /// The axis it normalises over (negative: from the end).
    pub axis: i64,
}

impl Softmax {
    /// The axis and, per lane along it, the offsets: a [outer, len, inner]
    /// view of the tensor.
    fn lanes(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let axis = normalize_axis(self.axis, shape.len())?;
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        Ok((outer, shape[axis], inner))
    }

    fn softmax(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (_, len, inner) = self.lanes(x.shape())?;
        let xs = contiguous(x);
        let mut out = vec![0.0f32; xs.len()];
        if len > 0 && inner == 1 {
            // along the last axis (attention): whole rows at a time
            let rows = (xs.len() / len).max(1);
            let per = (rows / (4 * rayon::current_num_threads())).max(1) * len;
            out.par_chunks_mut(per)
                .zip(xs.par_chunks(per))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_mut(len).zip(x.chunks(len)) {
                        crate::kernels::math::softmax_row(x, o);
                    }
                });
        } else if len > 0 {
            out.par_chunks_mut(len * inner)
                .zip(xs.par_chunks(len * inner))
                .for_each(|(o, x)| {
                    let mut lane = vec![0.0f32; len];
                    let mut soft = vec![0.0f32; len];
                    for j in 0..inner {
                        for (i, l) in lane.iter_mut().enumerate() {
                            *l = x[i * inner + j];
                        }
                        crate::kernels::math::softmax_row(&lane, &mut soft);
                        for (i, s) in soft.iter().enumerate() {
                            o[i * inner + j] = *s;
                        }
                    }
                });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(x.shape()), out)?)
    }

    /// `x * (v - s * sum(v))` per lane (`x` absent: 1), for `v` at the
    /// output: the gradient (`v = s * g`, no `x`) and the relevance (`v = R`).
    fn along(
        &self,
        s: &ArrayD<f32>,
        v: &ArrayD<f32>,
        times: impl Fn(usize, f32) -> f32 + Sync,
    ) -> Result<ArrayD<f32>> {
        let (_, len, inner) = self.lanes(s.shape())?;
        let (ss, vs) = (contiguous(s), contiguous(v));
        let mut out = vec![0.0f32; ss.len()];
        if len > 0 {
            out.par_chunks_mut(len * inner)
                .enumerate()
                .for_each(|(c, o)| {
                    let base = c * len * inner;
                    for j in 0..inner {
                        let idx = |i: usize| base + i * inner + j;
                        let total: f32 = (0..len).map(|i| vs[idx(i)]).sum();
                        for i in 0..len {
                            let e = idx(i);
                            o[i * inner + j] = times(e, vs[e] - ss[e] * total);
                        }
                    }
                });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(s.shape()), out)?)
    }
}

impl super::Operator for Softmax {
    super::plain!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        normalize_axis(self.axis, inputs[0].len())?;
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        self.softmax(inputs[0])
    }

    fn relevance(&self, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>, reuse: &Reuse) -> Result<Propagated> {
        let x = inputs[0];
        ensure!(
            r.shape() == x.shape(),
            "relevance {:?} for input {:?}",
            r.shape(),
            x.shape()
        );
        if r.iter().all(|&v| v == 0.0) {
            // no relevance arrives (the attention weights under CP-LRP)
            let accounts = vec![Account::default(); reuse.rows.max(1)];
            return Ok((vec![ArrayD::zeros(x.shape())], Some(accounts)));
        }
        let computed;
        let s = match reuse.output {
            Some(s) if s.shape() == x.shape() => s,
            _ => {
                computed = self.softmax(x)?;
                &computed
            }
        };
        let xs = contiguous(x);
        let out = self.along(s, r, |e, v| xs[e] * v)?;
        // what the Taylor expansion's constant term keeps, per row
        let rows = reuse.rows.max(1);
        let (rs, os) = (contiguous(r), contiguous(&out));
        let per = rs.len() / rows;
        let account = (0..rows)
            .map(|i| {
                let span = i * per..(i + 1) * per;
                let arrived: f64 = rs[span.clone()].iter().map(|&v| v as f64).sum();
                let passed: f64 = os[span].iter().map(|&v| v as f64).sum();
                Account {
                    bias: arrived - passed,
                    ..Account::default()
                }
            })
            .collect();
        Ok((vec![out], Some(account)))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let s = self.softmax(inputs[0])?;
        let sg = &s * g;
        Ok(vec![self.along(&s, &sg, |_, v| v)?])
    }

    fn lrp0(&self) -> super::Lrp0 {
        // x * (R - s sum R) with R = s * g is x times the gradient
        super::Lrp0::Exact
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        super::Operator::gradient(self, inputs, g, Default::default())
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Linear
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn rule(&self, _: &Reuse) -> Option<Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        Some("softmax")
    }

    fn keeps_samples_apart(&self, rank: usize) -> bool {
        normalize_axis(self.axis, rank).is_ok_and(|a| a != 0)
    }
}

/// Builds a product of two activations or a softmax.
fn import(n: &OnnxNode) -> Result<Imported> {
    match n.op_type() {
        "MatMul" => {
            ensure!(n.activations() == 2, "a product of an activation and a constant is a dense layer");
            Ok(Bilinear::default().into())
        }
        "Softmax" => {
            // opset < 13: over the flattened axes from `axis` (default 1)
            ensure!(
                n.opset >= 13 || n.attr("axis").is_some_and(|a| a.i == -1),
                "Softmax of opset {} flattens the axes from 'axis'; only axis = -1 is supported",
                n.opset
            );
            Ok(Softmax {
                axis: n.attr_int("axis", -1),
            }
            .into())
        }
        other => bail!("'{other}' is not an attention operator"),
    }
}

/// Builds the product of two activations for a `MatMul` whose factors are
/// both computed from the image (the dense family's import hands it over).
pub fn import_product(n: &OnnxNode) -> Result<Imported> {
    import(n)
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "attention",
    onnx: &[(
        "Softmax",
        "as the last node: skipped, its input (the logits) is explained; inside the network (attention): AttnLRP's x (R - s sum R)",
    )],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Operator;

    /// Deterministic values in [-1, 1).
    fn arr(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
    }

    /// `A B` by the definition, numpy broadcasting of the leading axes done
    /// by hand: element (f, i, j) = sum_k A[fa, i, k] B[fb, k, j].
    fn naive_product(a: &ArrayD<f32>, b: &ArrayD<f32>, pairs: &[(usize, usize)]) -> Vec<f64> {
        let (n, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
        let m = b.shape()[b.ndim() - 1];
        let (sa, sb) = (a.as_slice().unwrap(), b.as_slice().unwrap());
        let mut out = vec![];
        for &(fa, fb) in pairs {
            for i in 0..n {
                for j in 0..m {
                    let mut t = 0.0f64;
                    for l in 0..k {
                        t += sa[fa * n * k + i * k + l] as f64 * sb[fb * k * m + l * m + j] as f64;
                    }
                    out.push(t);
                }
            }
        }
        out
    }

    #[test]
    fn products_broadcast_their_leading_axes_as_numpy() {
        // [2, 1, 3, 4] x [3, 4, 5] -> [2, 3, 3, 5]: a's matrix (f / 3), b's (f % 3)
        let (a, b) = (arr(&[2, 1, 3, 4], 1), arr(&[3, 4, 5], 2));
        let z = product(&a, &b).unwrap();
        assert_eq!(z.shape(), &[2, 3, 3, 5]);
        let pairs: Vec<_> = (0..6).map(|f| (f / 3, f % 3)).collect();
        let want = naive_product(&a, &b, &pairs);
        for (g, w) in z.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} {w}");
        }
        assert!(Geometry::of(&[2, 3, 4], &[3, 5, 6]).is_err());
        assert!(Geometry::of(&[2, 3, 4], &[4, 2]).is_ok());
        assert!(Geometry::of(&[4], &[4, 2]).is_err());
    }

    #[test]
    fn gradient_of_a_product_is_its_transposed_passes_summed_over_broadcasts() {
        // <g, A B> is bilinear: its gradient in A is (g B^T) summed over the
        // output matrices A takes part in; checked against the directional
        // derivative <gA, dA> = <g, dA B> computed by the naive product
        let (a, b) = (arr(&[2, 1, 3, 4], 3), arr(&[3, 4, 5], 4));
        let g = arr(&[2, 3, 3, 5], 5);
        let op = Bilinear::default();
        let grads = op.gradient(&[&a, &b], &g, Default::default()).unwrap();
        let pairs: Vec<_> = (0..6).map(|f| (f / 3, f % 3)).collect();
        let (da, db) = (arr(&[2, 1, 3, 4], 6), arr(&[3, 4, 5], 7));
        let dot = |x: &[f64], y: &ArrayD<f32>| x.iter().zip(y.iter()).map(|(x, &y)| x * y as f64).sum::<f64>();
        let lhs_a: f64 = grads[0].iter().zip(da.iter()).map(|(&x, &y)| x as f64 * y as f64).sum();
        let lhs_b: f64 = grads[1].iter().zip(db.iter()).map(|(&x, &y)| x as f64 * y as f64).sum();
        let rhs_a = dot(&naive_product(&da, &b, &pairs), &g);
        let rhs_b = dot(&naive_product(&a, &db, &pairs), &g);
        assert!((lhs_a - rhs_a).abs() < 1e-4 * rhs_a.abs().max(1.0), "{lhs_a} {rhs_a}");
        assert!((lhs_b - rhs_b).abs() < 1e-4 * rhs_b.abs().max(1.0), "{lhs_b} {rhs_b}");
    }

    #[test]
    fn relevance_of_a_product_is_the_epsilon_rule_then_half_to_each_factor() {
        // naive: R_A[i,k] = 1/2 sum_j A_ik B_kj R_ij / stab(z_ij), R_B[k,j] =
        // 1/2 sum_i A_ik B_kj R_ij / stab(z_ij), over two heads
        let (a, b) = (arr(&[2, 3, 4], 8), arr(&[2, 4, 5], 9));
        let r = arr(&[2, 3, 5], 10);
        let eps = 0.05f32;
        let op = Bilinear { weights: Some(0) };
        let z = product(&a, &b).unwrap();
        let reuse = Reuse {
            norm: Some(Rule::Epsilon { epsilon: eps }),
            ..Reuse::default()
        };
        let (got, acc) = op.relevance(&[&a, &b], &r, &reuse).unwrap();
        let (mut ra, mut rb) = (vec![0.0f64; 24], vec![0.0f64; 40]);
        let mut stab = 0.0f64;
        for h in 0..2 {
            for i in 0..3 {
                for j in 0..5 {
                    let zz = z[[h, i, j]] as f64;
                    let d = if zz >= 0.0 { zz + eps as f64 } else { zz - eps as f64 };
                    let rr = r[[h, i, j]] as f64;
                    stab += rr * (d - zz) / d;
                    for k in 0..4 {
                        let c = a[[h, i, k]] as f64 * b[[h, k, j]] as f64 * rr / d;
                        ra[h * 12 + i * 4 + k] += 0.5 * c;
                        rb[h * 20 + k * 5 + j] += 0.5 * c;
                    }
                }
            }
        }
        for (g, w) in got[0].iter().zip(&ra).chain(got[1].iter().zip(&rb)) {
            assert!((*g as f64 - w).abs() < 1e-4, "{g} {w}");
        }
        // conserved but for the stabiliser's share
        let total: f64 = got.iter().flat_map(|g| g.iter()).map(|&v| v as f64).sum();
        let arrived: f64 = r.iter().map(|&v| v as f64).sum();
        let acc = &acc.unwrap()[0];
        assert!((acc.stabilizer - stab).abs() < 1e-4, "{} {stab}", acc.stabilizer);
        assert!((arrived - total - acc.lost()).abs() < 1e-4);

        // conservative propagation: the weights (input 0) get nothing, the
        // values all of it
        let cp = Reuse {
            attention: Attention::Conservative,
            ..reuse
        };
        let (got, _) = op.relevance(&[&a, &b], &r, &cp).unwrap();
        assert!(got[0].iter().all(|&v| v == 0.0));
        for (g, w) in got[1].iter().zip(&rb) {
            assert!((*g as f64 - 2.0 * w).abs() < 1e-4, "{g} {w}");
        }
    }

    #[test]
    fn softmax_gradient_and_relevance_follow_their_definitions() {
        // over axis 1 of [2, 4, 3]: the Jacobian ds_i/dx_j = s_i (d_ij - s_j)
        let x = arr(&[2, 4, 3], 11).mapv(|v| 3.0 * v);
        let op = Softmax { axis: 1 };
        let s = op.forward(&[&x], 1).unwrap();
        for o in 0..2 {
            for c in 0..3 {
                let t: f32 = (0..4).map(|i| s[[o, i, c]]).sum();
                assert!((t - 1.0).abs() < 1e-6);
            }
        }
        let g = arr(&[2, 4, 3], 12);
        let got = op.gradient(&[&x], &g, Default::default()).unwrap();
        let r = arr(&[2, 4, 3], 13);
        let (rel, acc) = op.relevance(&[&x], &r, &Reuse::default()).unwrap();
        let mut bias = 0.0f64;
        for o in 0..2 {
            for c in 0..3 {
                let rsum: f64 = (0..4).map(|i| r[[o, i, c]] as f64).sum();
                for j in 0..4 {
                    let sj = s[[o, j, c]] as f64;
                    let want: f64 = (0..4)
                        .map(|i| {
                            let si = s[[o, i, c]] as f64;
                            let d = if i == j { 1.0 } else { 0.0 };
                            g[[o, i, c]] as f64 * si * (d - sj)
                        })
                        .sum();
                    assert!((got[0][[o, j, c]] as f64 - want).abs() < 1e-5);
                    // AttnLRP Prop. 3.1: R_j = x_j (R_j - s_j sum R)
                    let xj = x[[o, j, c]] as f64;
                    let rj = xj * (r[[o, j, c]] as f64 - sj * rsum);
                    assert!((rel[0][[o, j, c]] as f64 - rj).abs() < 1e-5);
                    bias += r[[o, j, c]] as f64 - rj;
                }
            }
        }
        assert!((acc.unwrap()[0].bias - bias).abs() < 1e-4);
        // LRP-0 through it is x times the gradient: R = s * g at the output
        let sg = &s * &g;
        let (rel, _) = op.relevance(&[&x], &sg, &Reuse::default()).unwrap();
        for ((r, gr), x) in rel[0].iter().zip(got[0].iter()).zip(x.iter()) {
            assert!((r - gr * x).abs() < 1e-5);
        }
    }
}
