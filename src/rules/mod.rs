//! LRP rules: the math on one linear layer.
//!
//! A rule knows nothing about graphs, operators or tract. It sees a
//! [`LinearLayer`] (something that maps `x -> W x + b` and can apply `W^T`),
//! modifies its weights and inputs, runs the modified forward passes,
//! stabilises, divides the incoming relevance by them and multiplies back with
//! the transposed passes. The definitions follow Zennit's `BasicHook` rules,
//! with `zero_params='bias'` for the rules that exclude the bias (z-plus,
//! alpha-beta, w^2, flat, z^B); epsilon and gamma include it (Montavon et al.
//! 2019, Zennit's `Gamma()` default).
//!
//! Each propagation also returns an [`Account`]: where the relevance that is
//! not passed on went (the bias, the stabiliser, outputs the rule has no
//! denominator for, signs), for the relevance ledger.

pub mod cache;

use std::borrow::Cow;

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, Zip};

use crate::elementwise;

/// The stabiliser Zennit adds to every denominator (`stabilize(..., 1e-6)`).
pub const STABILIZER: f32 = 1e-6;

/// An elementwise change of a layer's weights, as the rules use them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Modifier {
    /// The weights as they are.
    Identity,
    /// `max(w, 0)`.
    Pos,
    /// `min(w, 0)`.
    Neg,
    /// `w^2`.
    Square,
    /// `1` (the flat rule).
    One,
    /// `w + gamma max(w, 0)`.
    GammaPos(f32),
    /// `w + gamma min(w, 0)`.
    GammaNeg(f32),
}

impl Modifier {
    /// The modified value of one weight.
    #[inline]
    pub fn apply(self, w: f32) -> f32 {
        match self {
            Modifier::Identity => w,
            Modifier::Pos => w.max(0.0),
            Modifier::Neg => w.min(0.0),
            Modifier::Square => w * w,
            Modifier::One => 1.0,
            Modifier::GammaPos(g) => w + g * w.max(0.0),
            Modifier::GammaNeg(g) => w + g * w.min(0.0),
        }
    }

    /// A key that tells modifiers apart exactly (usable in hash maps).
    pub fn key(self) -> (u8, u32) {
        match self {
            Modifier::Identity => (0, 0),
            Modifier::Pos => (1, 0),
            Modifier::Neg => (2, 0),
            Modifier::Square => (3, 0),
            Modifier::One => (4, 0),
            Modifier::GammaPos(g) => (5, g.to_bits()),
            Modifier::GammaNeg(g) => (6, g.to_bits()),
        }
    }

    /// `w` with the modifier applied to every element (a copy).
    pub fn modify(self, w: &ArrayD<f32>) -> ArrayD<f32> {
        w.mapv(|v| self.apply(v))
    }
}

/// A layer that is linear in its input: `z = W x + b`.
///
/// Implemented by convolutions, dense layers and per-channel affine layers.
/// The weight array may have any layout; rules only modify it elementwise,
/// through [`Modifier`]s, so that a layer (or a cache wrapped around it) can
/// apply them on the fly or reuse modified weights across images.
pub trait LinearLayer: Send + Sync {
    /// The layer's weights.
    fn weight(&self) -> &ArrayD<f32>;
    /// Whether it is a dense layer (the composite's dense rule), rather
    /// than a convolution or a per-channel layer (the conv rule).
    fn dense(&self) -> bool;
    /// `W' x (+ b)` for weights `w` of the same shape as [`LinearLayer::weight`].
    fn forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, with_bias: bool) -> Result<ArrayD<f32>>;
    /// The transposed pass `W'^T g`, returning an array of `input_shape`.
    fn backward(
        &self,
        g: &ArrayD<f32>,
        w: &ArrayD<f32>,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>>;
    /// `m(W) x (+ b)`: the forward pass with modified weights.
    fn forward_mod(&self, x: &ArrayD<f32>, m: Modifier, with_bias: bool) -> Result<ArrayD<f32>> {
        match m {
            Modifier::Identity => self.forward(x, self.weight(), with_bias),
            m => self.forward(x, &m.modify(self.weight()), with_bias),
        }
    }
    /// `m(W)^T g`: the transposed pass with modified weights.
    fn backward_mod(
        &self,
        g: &ArrayD<f32>,
        m: Modifier,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        match m {
            Modifier::Identity => self.backward(g, self.weight(), input_shape),
            m => self.backward(g, &m.modify(self.weight()), input_shape),
        }
    }
    /// The bias, one value per index of an axis of an output of `out_ndim`
    /// dimensions, with that axis (`None`: the layer has no bias).
    fn bias(&self, out_ndim: usize) -> Option<(&ArrayD<f32>, usize)>;
    /// Whether [`LinearLayer::forward_mod`] and [`LinearLayer::backward_mod`]
    /// apply modifiers on the fly without copying the weights (then caching
    /// modified weights would only cost memory).
    fn modifies_on_the_fly(&self) -> bool {
        false
    }
}

/// A layer's bias in the form the rules use it: its values and the output
/// axis they run along.
#[derive(Clone, Debug)]
struct Bias {
    values: Vec<f32>,
    axis: usize,
}

impl Bias {
    /// The bias of `layer` for an output of shape `out_shape`, checked.
    fn of(layer: &dyn LinearLayer, out_shape: &[usize]) -> Result<Option<Bias>> {
        let Some((b, axis)) = layer.bias(out_shape.len()) else {
            return Ok(None);
        };
        let n = out_shape.get(axis).copied().unwrap_or(0);
        if b.len() != n {
            bail!(
                "a bias of {} values for {n} outputs (output shape {out_shape:?})",
                b.len()
            );
        }
        Ok(Some(Bias {
            values: b.iter().copied().collect(),
            axis,
        }))
    }

    /// `m` applied to each value.
    fn map(&self, m: Modifier) -> Bias {
        Bias {
            values: self.values.iter().map(|&v| m.apply(v)).collect(),
            axis: self.axis,
        }
    }

    /// The values shaped to broadcast against an output of `ndim` dimensions
    /// (`[1, .., n, .., 1]`).
    fn shaped(&self, ndim: usize) -> ArrayD<f32> {
        let mut shape = vec![1; ndim];
        shape[self.axis] = self.values.len();
        ArrayD::from_shape_vec(shape, self.values.clone()).expect("n values")
    }
}

/// An LRP rule for linear layers.
///
/// A [`crate::Composite`] picks one per layer class; [`Rule::propagate`]
/// (on a [`LinearLayer`]) is the rule itself.
///
/// ```
/// use lrp_heatmap::{composite::RuleParams, Composite, Rule};
///
/// let c = Composite::from_name("epsilon", &RuleParams { epsilon: 0.1, ..Default::default() })?;
/// assert_eq!(c.dense, Rule::Epsilon { epsilon: 0.1 });
/// # Ok::<(), lrp_heatmap::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `R_i = x_i sum_j w_ij R_j / (z_j + eps sign(z_j))`, bias included.
    /// `epsilon = 0` is LRP-0 (a zero denominator gives zero relevance).
    Epsilon {
        /// The stabiliser added to each output.
        epsilon: f32,
    },
    /// z+ rule (alpha 1, beta 0), valid for inputs of any sign, bias excluded.
    ZPlus,
    /// alpha-beta rule, `alpha - beta = 1`, bias excluded.
    AlphaBeta {
        /// Weight of the positive contributions.
        alpha: f32,
        /// Weight of the negative contributions.
        beta: f32,
    },
    /// The gamma rule, bias included (Montavon et al. 2019; Zennit's
    /// `Gamma()`, iNNvestigate's `GammaRule(bias=True)`): where `z_j > 0`
    /// the contributions of `z_j`'s sign are amplified by `1 + gamma`, bias
    /// too, so the denominator is at least `z_j`; where `z_j < 0` the other
    /// way round; nothing where `z_j = 0`.
    Gamma {
        /// How much the weights of the output's own sign are amplified.
        gamma: f32,
    },
    /// `R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`.
    WSquare,
    /// `WSquare` with all weights equal to one.
    Flat,
    /// z^B rule for inputs bounded by `low <= x <= high`.
    ZBox,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Epsilon { epsilon } if *epsilon == 0.0 => write!(f, "lrp0"),
            Rule::Epsilon { epsilon } => write!(f, "epsilon({epsilon})"),
            Rule::ZPlus => write!(f, "zplus"),
            Rule::AlphaBeta { alpha, beta } => write!(f, "alpha{alpha}-beta{beta}"),
            Rule::Gamma { gamma } => write!(f, "gamma({gamma})"),
            Rule::WSquare => write!(f, "wsquare"),
            Rule::Flat => write!(f, "flat"),
            Rule::ZBox => write!(f, "zbox"),
        }
    }
}

/// Lowest and highest possible input of a layer, broadcast to its input shape.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Lowest value of each input element.
    pub low: ArrayD<f32>,
    /// Highest value of each input element.
    pub high: ArrayD<f32>,
}

/// Where the relevance a rule did not pass on went, summed over a layer's
/// outputs: `sum R_out - sum R_in = bias + stabilizer + dropped - sign` (up to
/// rounding), where `R_out` is the relevance at the layer's output and `R_in`
/// what the rule hands to its input.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Account {
    /// Absorbed by the bias: the bias's share `b_j / d_j R_j` (epsilon, gamma).
    pub bias: f64,
    /// Absorbed by the stabiliser: `(d_j - z_j) / d_j R_j` where `d_j` is the
    /// stabilised denominator (epsilon's `eps`, the `1e-6` of the others).
    pub stabilizer: f64,
    /// Relevance of outputs the rule has no denominator for (z-plus outputs
    /// without a positive contribution, `z_j = 0` for LRP-0 and gamma, ...).
    pub dropped: f64,
    /// Relevance created (positive) or destroyed (negative) by signs:
    /// alpha-beta's `alpha - beta != 1` where only one part is present,
    /// relevance turned negative by the beta part.
    pub sign: f64,
}

impl Account {
    /// What the four causes add up to: `bias + stabilizer + dropped - sign`.
    pub fn lost(&self) -> f64 {
        self.bias + self.stabilizer + self.dropped - self.sign
    }
}

/// `sum_i f(cols[0][i], .., cols[N-1][i])` of `K` values at once over the
/// length of the shortest column, returned in f64. The terms are added in
/// f32 within blocks of 256 (eight lanes per value, additions the compiler
/// vectorises; a lane adds 32 terms, so the relative error stays near 1e-6
/// at worst), the blocks in f64, long columns in parallel. The accounts and
/// the ledger sum every output of every layer with it, so it must cost
/// little next to the layer itself.
// N columns read at one index: a range loop is the plain way
#[allow(clippy::needless_range_loop)]
pub fn zip_sums<const N: usize, const K: usize>(
    cols: [&[f32]; N],
    f: impl Fn([f32; N]) -> [f32; K] + Sync,
) -> [f64; K] {
    const LANES: usize = 8;
    const INNER: usize = 256;
    const BLOCK: usize = 1 << 15;
    let n = cols.iter().map(|c| c.len()).min().unwrap_or(0);
    let block = |lo: usize, hi: usize| -> [f64; K] {
        let mut out = [0f64; K];
        let mut i = lo;
        while i + INNER <= hi {
            let mut lanes = [[0f32; LANES]; K];
            let mut j = i;
            while j < i + INNER {
                let chunk: [[f32; LANES]; N] = std::array::from_fn(|c| {
                    let mut a = [0f32; LANES];
                    a.copy_from_slice(&cols[c][j..j + LANES]);
                    a
                });
                for l in 0..LANES {
                    let v = f(std::array::from_fn(|c| chunk[c][l]));
                    for k in 0..K {
                        lanes[k][l] += v[k];
                    }
                }
                j += LANES;
            }
            for k in 0..K {
                out[k] += lanes[k].iter().map(|&v| v as f64).sum::<f64>();
            }
            i += INNER;
        }
        for t in i..hi {
            let v = f(std::array::from_fn(|c| cols[c][t]));
            for (o, v) in out.iter_mut().zip(v) {
                *o += v as f64;
            }
        }
        out
    };
    if n <= 2 * BLOCK {
        return block(0, n);
    }
    use rayon::prelude::*;
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| block(b * BLOCK, ((b + 1) * BLOCK).min(n)))
        .reduce(
            || [0f64; K],
            |mut a, b| {
                for k in 0..K {
                    a[k] += b[k];
                }
                a
            },
        )
}

/// The elements of `a` in standard (row-major) order (a copy only when `a`
/// is not one block of memory in that order).
pub(crate) fn flat(a: &ArrayD<f32>) -> Cow<'_, [f32]> {
    match a.as_slice_memory_order() {
        Some(s) if a.is_standard_layout() => Cow::Borrowed(s),
        _ => Cow::Owned(a.iter().copied().collect()),
    }
}

/// The account of a rule that divides each output's relevance by one
/// stabilised denominator `stab(d_j)`, from the shares `s_j = R_j /
/// stab(d_j)` it computed: output `j` passes `(d_j - bias_j) s_j`, so the
/// bias takes `bias_j s_j` and the stabiliser `(stab(d_j) - d_j) s_j = +-eps
/// s_j` (the sign of `d_j`, `+` for 0); where `dropped_j` holds (no
/// denominator) all of `R_j` is dropped.
///
/// `shares` are one or two arrays whose sum is `s` (gamma's `s_up` and
/// `s_down`, the first taking `bias.0`, the second `bias.1`), `sign` an
/// array with `d`'s signs (and zeros where no denominator exists).
fn share_account(
    r: &ArrayD<f32>,
    shares: (&ArrayD<f32>, Option<&ArrayD<f32>>),
    sign: &ArrayD<f32>,
    dropped: impl Fn(f32) -> bool + Sync,
    bias: Option<(&Bias, &Bias)>,
    eps: f32,
    rows: usize,
) -> Result<Vec<Account>> {
    let shape = r.shape().to_vec();
    let (r, up, sign) = (flat(r), flat(shares.0), flat(sign));
    // without a second array of shares the first one is read twice, unused
    let two: f32 = if shares.1.is_some() { 1.0 } else { 0.0 };
    let down = flat(shares.1.unwrap_or(shares.0));
    // per output: [up share, down share, signed share, dropped]
    let one = |[r, u, w, d]: [f32; 4]| -> [f32; 4] {
        let gone = dropped(d);
        let w = two * w;
        let keep = |v: f32| if gone { 0.0 } else { v };
        let s = u + w;
        let signed = if d >= 0.0 { s } else { -s };
        [keep(u), keep(w), keep(signed), if gone { r } else { 0.0 }]
    };
    // one pass: blocks of outputs sharing one bias value (`inner`
    // consecutive outputs of a channel), or all outputs at once
    let rows = rows.max(1);
    let (blocks, inner, n) = match bias {
        Some((b, _)) => {
            let axis = b.axis;
            let n = shape[axis];
            let outer: usize = shape[..axis].iter().product();
            (outer * n, shape[axis + 1..].iter().product::<usize>(), n)
        }
        None => (rows, r.len() / rows, 1),
    };
    // each row (of `rows` equal parts of the outputs) is whole blocks
    ensure!(
        r.len().is_multiple_of(rows) && blocks.is_multiple_of(rows),
        "{} outputs in blocks of {inner} cannot be accounted in {rows} rows",
        r.len()
    );
    let block = |k: usize| -> [f64; 3] {
        let span = k * inner..(k + 1) * inner;
        let cols = [
            &r[span.clone()],
            &up[span.clone()],
            &down[span.clone()],
            &sign[span],
        ];
        let [u, w, signed, dropped] = zip_sums(cols, one);
        let b = bias.map_or(0.0, |(bu, bd)| {
            let c = k % n.max(1);
            u * bu.values[c] as f64 + w * bd.values[c] as f64
        });
        [b, signed, dropped]
    };
    let add = |a: [f64; 3], b: [f64; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    let per_row = blocks / rows;
    let row = |i: usize| {
        let ks = i * per_row..(i + 1) * per_row;
        let [bias, signed, dropped] = if per_row > 1 && inner >= 1024 {
            use rayon::prelude::*;
            ks.into_par_iter().map(block).reduce(|| [0.0; 3], add)
        } else {
            ks.map(block).fold([0.0; 3], add)
        };
        Account {
            bias,
            stabilizer: eps as f64 * signed,
            dropped,
            sign: 0.0,
        }
    };
    Ok((0..rows).map(row).collect())
}

/// Zennit's `stabilize`: `z + eps` where `z >= 0`, `z - eps` where `z < 0`.
#[inline]
pub fn stabilize(z: f32, eps: f32) -> f32 {
    if z >= 0.0 {
        z + eps
    } else {
        z - eps
    }
}

/// `r / stabilize(z, eps)`; with `eps = 0` a zero `z` gives zero.
pub fn divide(r: &ArrayD<f32>, z: &ArrayD<f32>, eps: f32) -> ArrayD<f32> {
    elementwise::map2(r, z, |r, z| {
        let d = stabilize(z, eps);
        if d == 0.0 {
            0.0
        } else {
            r / d
        }
    })
}

fn pos(a: &ArrayD<f32>) -> ArrayD<f32> {
    elementwise::map(a, |v| v.max(0.0))
}

fn neg(a: &ArrayD<f32>) -> ArrayD<f32> {
    elementwise::map(a, |v| v.min(0.0))
}

/// `sum_k inputs_k * backward(s, m_k)`, the reducer of most rules.
fn reduce(
    layer: &dyn LinearLayer,
    s: &ArrayD<f32>,
    terms: &[(&ArrayD<f32>, Modifier)],
    shape: &[usize],
) -> Result<ArrayD<f32>> {
    let mut out: Option<ArrayD<f32>> = None;
    for &(x, m) in terms {
        let mut c = layer.backward_mod(s, m, shape)?;
        match out.as_mut() {
            None => {
                Zip::from(&mut c).and(x).par_for_each(|c, &x| *c *= x);
                out = Some(c);
            }
            Some(o) => Zip::from(o)
                .and(x)
                .and(&c)
                .par_for_each(|o, &x, &c| *o += x * c),
        }
    }
    Ok(out.unwrap_or_else(|| ArrayD::zeros(shape)))
}

/// The parts of an input: positive and negative, each `None` when all zero.
/// A part equal to the whole input is borrowed, not copied.
struct Split<'a> {
    shape: Vec<usize>,
    pos: Option<Cow<'a, ArrayD<f32>>>,
    neg: Option<Cow<'a, ArrayD<f32>>>,
}

/// The parts of `x`; `signs` says whether it has values above and below
/// zero, if known (else they are looked for).
fn split(x: &ArrayD<f32>, signs: Option<(bool, bool)>) -> Split<'_> {
    // over the memory slice when there is one (iterating an n-d array by
    // index is several times slower)
    let (has_pos, has_neg) = match (signs, x.as_slice_memory_order()) {
        (Some(s), _) => s,
        (None, Some(s)) => elementwise::signs(s),
        (None, None) => (x.iter().any(|&v| v > 0.0), x.iter().any(|&v| v < 0.0)),
    };
    let part = |wanted: bool, other: bool, f: fn(&ArrayD<f32>) -> ArrayD<f32>| match (wanted, other)
    {
        (false, _) => None,
        (true, false) => Some(Cow::Borrowed(x)),
        (true, true) => Some(Cow::Owned(f(x))),
    };
    Split {
        shape: x.shape().to_vec(),
        pos: part(has_pos, has_neg, pos),
        neg: part(has_neg, has_pos, neg),
    }
}

/// `sum_k fwd(x_k, m_k)` over the terms whose input is present (a term with
/// an all-zero input would add exact zeros); `None` when no term is.
fn forward_sum(
    layer: &dyn LinearLayer,
    terms: &[(Option<&ArrayD<f32>>, Modifier)],
) -> Result<Option<ArrayD<f32>>> {
    let mut acc: Option<ArrayD<f32>> = None;
    for &(x, m) in terms {
        if let Some(x) = x {
            let z = layer.forward_mod(x, m, false)?;
            acc = Some(match acc {
                None => z,
                Some(mut a) => {
                    elementwise::add_into(&mut a, &z);
                    a
                }
            });
        }
    }
    Ok(acc)
}

/// The present terms of `terms`, for [`reduce`].
fn present<'a>(terms: &[(Option<&'a ArrayD<f32>>, Modifier)]) -> Vec<(&'a ArrayD<f32>, Modifier)> {
    terms
        .iter()
        .filter_map(|&(x, m)| x.map(|x| (x, m)))
        .collect()
}

impl Rule {
    /// Propagates the relevance `r` at the layer's output to its input `x`.
    ///
    /// `bounds` is needed by [`Rule::ZBox`] only.
    pub fn propagate(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        r: &ArrayD<f32>,
        bounds: Option<&Bounds>,
    ) -> Result<ArrayD<f32>> {
        self.propagate_with(layer, x, None, r, bounds)
    }

    /// [`Rule::propagate`], given the layer's output `z = W x + b` when the
    /// forward pass kept it (the epsilon and gamma rules then skip a pass).
    pub fn propagate_with(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        z: Option<&ArrayD<f32>>,
        r: &ArrayD<f32>,
        bounds: Option<&Bounds>,
    ) -> Result<ArrayD<f32>> {
        Ok(self.propagate_accounted(layer, x, z, r, bounds)?.0)
    }

    /// [`Rule::propagate_with`], with the [`Account`] of the relevance not
    /// passed on.
    pub fn propagate_accounted(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        z: Option<&ArrayD<f32>>,
        r: &ArrayD<f32>,
        bounds: Option<&Bounds>,
    ) -> Result<(ArrayD<f32>, Account)> {
        let (out, accounts) = self.propagate_rows(layer, x, z, r, bounds, 1, None)?;
        Ok((out, accounts.into_iter().next().unwrap_or_default()))
    }

    /// [`Rule::propagate_accounted`] for `rows` inputs stacked on axis 0 (a
    /// batch): one [`Account`] per row, each over its `1 / rows` of the
    /// outputs. `signs` says whether `x` has values above and below zero,
    /// if the caller knows (else the rules that split `x` look).
    #[allow(clippy::too_many_arguments)]
    pub fn propagate_rows(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        z: Option<&ArrayD<f32>>,
        r: &ArrayD<f32>,
        bounds: Option<&Bounds>,
        rows: usize,
        signs: Option<(bool, bool)>,
    ) -> Result<(ArrayD<f32>, Vec<Account>)> {
        let shape = x.shape().to_vec();
        let output = || -> Result<Cow<'_, ArrayD<f32>>> {
            match z {
                Some(z) if z.shape() == r.shape() => Ok(Cow::Borrowed(z)),
                _ => Ok(Cow::Owned(layer.forward_mod(
                    x,
                    Modifier::Identity,
                    true,
                )?)),
            }
        };
        match *self {
            Rule::Epsilon { epsilon } => {
                let z = output()?;
                let s = divide(r, &z, epsilon);
                let bias = Bias::of(layer, z.shape())?;
                // LRP-0 drops the relevance of outputs with z = 0
                let account = share_account(
                    r,
                    (&s, None),
                    &z,
                    |z| epsilon == 0.0 && z == 0.0,
                    bias.as_ref().map(|b| (b, b)),
                    epsilon,
                    rows,
                )?;
                let out = reduce(layer, &s, &[(x, Modifier::Identity)], &shape)?;
                Ok((out, account))
            }
            Rule::ZPlus => self.alpha_beta(layer, split(x, signs), r, 1.0, 0.0, rows),
            Rule::AlphaBeta { alpha, beta } => {
                self.alpha_beta(layer, split(x, signs), r, alpha, beta, rows)
            }
            Rule::Gamma { gamma } => {
                self.gamma(layer, split(x, signs), &*output()?, r, gamma, rows)
            }
            Rule::WSquare | Rule::Flat => {
                let m = if *self == Rule::WSquare {
                    Modifier::Square
                } else {
                    Modifier::One
                };
                let ones = ArrayD::<f32>::ones(shape.clone());
                let z = layer.forward_mod(&ones, m, false)?;
                let s = divide(r, &z, STABILIZER);
                let account =
                    share_account(r, (&s, None), &z, |z| z == 0.0, None, STABILIZER, rows)?;
                Ok((layer.backward_mod(&s, m, &shape)?, account))
            }
            Rule::ZBox => {
                let Some(b) = bounds else {
                    bail!("the zbox rule needs input bounds (low, high)");
                };
                if b.low.shape() != x.shape() || b.high.shape() != x.shape() {
                    bail!(
                        "zbox bounds of shape {:?} do not match the layer input {:?}",
                        b.low.shape(),
                        x.shape()
                    );
                }
                let mut z = layer.forward_mod(x, Modifier::Identity, false)?;
                z -= &layer.forward_mod(&b.low, Modifier::Pos, false)?;
                z -= &layer.forward_mod(&b.high, Modifier::Neg, false)?;
                let s = divide(r, &z, STABILIZER);
                let account =
                    share_account(r, (&s, None), &z, |z| z == 0.0, None, STABILIZER, rows)?;
                let mut out = layer.backward_mod(&s, Modifier::Identity, &shape)?;
                out *= x;
                let cl = layer.backward_mod(&s, Modifier::Pos, &shape)?;
                let ch = layer.backward_mod(&s, Modifier::Neg, &shape)?;
                Zip::from(&mut out)
                    .and(&b.low)
                    .and(&cl)
                    .and(&b.high)
                    .and(&ch)
                    .for_each(|o, &l, &cl, &h, &ch| *o -= l * cl + h * ch);
                Ok((out, account))
            }
        }
    }

    /// The gamma rule with the bias (see [`Rule::Gamma`]); `z` is the layer's
    /// output with the bias.
    fn gamma(
        &self,
        layer: &dyn LinearLayer,
        xs: Split,
        z: &ArrayD<f32>,
        r: &ArrayD<f32>,
        gamma: f32,
        rows: usize,
    ) -> Result<(ArrayD<f32>, Vec<Account>)> {
        let shape = xs.shape.clone();
        let (wp, wn) = (Modifier::GammaPos(gamma), Modifier::GammaNeg(gamma));
        let (xp, xn) = (xs.pos.as_deref(), xs.neg.as_deref());
        let zeros = || ArrayD::<f32>::zeros(z.shape());
        let bias = Bias::of(layer, z.shape())?;
        // the bias's part of each denominator: b + g b+ (z > 0), b + g b- (z < 0)
        let (b_up, b_down) = (
            bias.as_ref().map(|b| b.map(wp)),
            bias.as_ref().map(|b| b.map(wn)),
        );
        let with_bias = |d: Option<ArrayD<f32>>, b: &Option<Bias>| {
            let mut d = d.unwrap_or_else(zeros);
            if let Some(b) = b {
                d += &b.shaped(d.ndim());
            }
            d
        };
        // outputs with z > 0: x+ (w + g w+) + x- (w + g w-) + b + g b+
        let up_terms = [(xp, wp), (xn, wn)];
        let up = with_bias(forward_sum(layer, &up_terms)?, &b_up);
        // outputs with z < 0: x+ (w + g w-) + x- (w + g w+) + b + g b-
        let down_terms = [(xp, wn), (xn, wp)];
        let down = with_bias(forward_sum(layer, &down_terms)?, &b_down);
        let share = |den: &ArrayD<f32>, keep: fn(f32) -> bool| {
            elementwise::map3(r, z, den, |r, z, d| {
                if keep(z) {
                    r / stabilize(d, STABILIZER)
                } else {
                    0.0
                }
            })
        };
        let s_up = share(&up, |z| z > 0.0);
        let s_down = share(&down, |z| z < 0.0);
        // the account: the denominator of an output with z > 0 is >= z > 0,
        // that of one with z < 0 is <= z < 0, so z has the denominator's sign
        let account = share_account(
            r,
            (&s_up, Some(&s_down)),
            z,
            |z| z == 0.0,
            b_up.as_ref().zip(b_down.as_ref()),
            STABILIZER,
            rows,
        )?;
        let mut out = reduce(layer, &s_up, &present(&up_terms), &shape)?;
        elementwise::add_into(
            &mut out,
            &reduce(layer, &s_down, &present(&down_terms), &shape)?,
        );
        Ok((out, account))
    }

    fn alpha_beta(
        &self,
        layer: &dyn LinearLayer,
        xs: Split,
        r: &ArrayD<f32>,
        alpha: f32,
        beta: f32,
        rows: usize,
    ) -> Result<(ArrayD<f32>, Vec<Account>)> {
        let shape = xs.shape.clone();
        let (xp, xn) = (xs.pos.as_deref(), xs.neg.as_deref());
        let mut out: Option<ArrayD<f32>> = None;
        // positive contributions: x+ w+ + x- w-; negative ones: x+ w- + x- w+
        let parts = [
            (alpha, [(xp, Modifier::Pos), (xn, Modifier::Neg)]),
            (-beta, [(xp, Modifier::Neg), (xn, Modifier::Pos)]),
        ];
        // the denominators and shares of the parts used (for the account)
        let mut dens: Vec<(f32, ArrayD<f32>, ArrayD<f32>)> = Vec::new();
        // with one part (z-plus) its account is summed as its shares are
        // computed, and its denominators and shares freed at once
        let single = (alpha != 0.0) != (beta != 0.0);
        let mut accounts = None;
        for (factor, terms) in parts {
            if factor == 0.0 {
                continue;
            }
            if let Some(z) = forward_sum(layer, &terms)? {
                let s = if single {
                    let (s, a) = divide_one_part(r, &z, factor, rows)?;
                    accounts = Some(a);
                    s
                } else {
                    divide(r, &z, STABILIZER)
                };
                let mut c = reduce(layer, &s, &present(&terms), &shape)?;
                match out.as_mut() {
                    None => {
                        if factor != 1.0 {
                            elementwise::apply(&mut c, |v| v * factor);
                        }
                        out = Some(c);
                    }
                    Some(o) if o.shape() == c.shape() => {
                        elementwise::update(o, &c, |u, v| u + factor * v)
                    }
                    Some(o) => o.scaled_add(factor, &c),
                }
                if !single {
                    dens.push((factor, z, s));
                }
            }
        }
        let accounts = match accounts {
            Some(a) => a,
            None => alpha_beta_account(r, &dens, rows)?,
        };
        Ok((out.unwrap_or_else(|| ArrayD::zeros(shape)), accounts))
    }
}

/// [`divide`] by `stabilize(z, STABILIZER)` for the only part of
/// alpha-beta (factor `f`), with that part's [`alpha_beta_account`] per row
/// summed in the same pass.
fn divide_one_part(
    r: &ArrayD<f32>,
    z: &ArrayD<f32>,
    f: f32,
    rows: usize,
) -> Result<(ArrayD<f32>, Vec<Account>)> {
    ensure!(
        r.shape() == z.shape(),
        "relevance of shape {:?} for outputs of shape {:?}",
        r.shape(),
        z.shape()
    );
    let rows = rows.max(1);
    ensure!(
        r.len().is_multiple_of(rows),
        "{} outputs cannot be accounted in {rows} rows",
        r.len()
    );
    let (rf, zf) = (flat(r), flat(z));
    let len = (r.len() / rows).max(1);
    let mut s = vec![0f32; r.len()];
    let accounts = (s.chunks_mut(len).zip(rf.chunks(len)).zip(zf.chunks(len)))
        .map(|((so, r), z)| {
            let [dropped, sign, stabilizer] = divide_sums(r, z, so, f);
            Account {
                bias: 0.0,
                stabilizer,
                dropped,
                sign,
            }
        })
        .collect();
    Ok((ArrayD::from_shape_vec(r.shape(), s)?, accounts))
}

/// One block of [`divide_sums`] (256 values) with AVX2: the same operations
/// in the same order as the portable loop, eight lanes at a time; the f32
/// lane sums of `[dropped, sign, stabilizer]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn divide_block_avx2(r: &[f32], z: &[f32], out: &mut [f32], f: f32) -> [[f32; 8]; 3] {
    use std::arch::x86_64::*;
    let n = r.len().min(z.len()).min(out.len()) / 8 * 8;
    let zero = _mm256_setzero_ps();
    let (e, ne) = (_mm256_set1_ps(STABILIZER), _mm256_set1_ps(-STABILIZER));
    let f1 = _mm256_set1_ps(f - 1.0);
    let fe = _mm256_set1_ps(f * STABILIZER);
    let (mut d, mut g, mut t) = (zero, zero, zero);
    let mut i = 0;
    while i < n {
        let rv = _mm256_loadu_ps(r.as_ptr().add(i));
        let zv = _mm256_loadu_ps(z.as_ptr().add(i));
        // z >= 0 (false for NaN, as the scalar comparison)
        let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(zv, zero);
        let s = _mm256_div_ps(rv, _mm256_add_ps(zv, _mm256_blendv_ps(ne, e, ge)));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), s);
        // on: z != 0 (true for NaN, as the scalar comparison)
        let on = _mm256_cmp_ps::<_CMP_NEQ_UQ>(zv, zero);
        d = _mm256_add_ps(d, _mm256_andnot_ps(on, rv));
        g = _mm256_add_ps(g, _mm256_and_ps(on, _mm256_mul_ps(f1, rv)));
        let signed = _mm256_blendv_ps(_mm256_sub_ps(zero, s), s, ge);
        t = _mm256_add_ps(t, _mm256_and_ps(on, _mm256_mul_ps(fe, signed)));
        i += 8;
    }
    let mut lanes = [[0f32; 8]; 3];
    _mm256_storeu_ps(lanes[0].as_mut_ptr(), d);
    _mm256_storeu_ps(lanes[1].as_mut_ptr(), g);
    _mm256_storeu_ps(lanes[2].as_mut_ptr(), t);
    lanes
}

/// `s = r / stabilize(z, STABILIZER)` into `out`, with the sums of the
/// account of alpha-beta's only part of factor `f` (`[dropped, sign,
/// stabilizer]`, see [`alpha_beta_account`]) in f64, added as [`zip_sums`]
/// adds them (f32 lanes within blocks of 256, the blocks in f64, long
/// slices in parallel). Written without branches, eight values at a time,
/// so that it vectorises.
fn divide_sums(r: &[f32], z: &[f32], out: &mut [f32], f: f32) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    divide_sums_with(r, z, out, f, simd)
}

/// [`divide_sums`] with or without the AVX2 blocks (`simd`, only where
/// AVX2 is present).
fn divide_sums_with(r: &[f32], z: &[f32], out: &mut [f32], f: f32, simd: bool) -> [f64; 3] {
    const INNER: usize = 256;
    const BLOCK: usize = 1 << 15;
    // the f32 lane sums of one block of INNER values
    let lanes = |rb: &[f32], zb: &[f32], ob: &mut [f32]| -> [[f32; 8]; 3] {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 is present (the caller checked); the blocks hold INNER values.
            return unsafe { divide_block_avx2(rb, zb, ob, f) };
        }
        let _ = simd;
        divide_block(rb, zb, ob, f)
    };
    let block = |r: &[f32], z: &[f32], out: &mut [f32]| -> [f64; 3] {
        let mut sums = [0f64; 3];
        let n = r.len().min(z.len()).min(out.len());
        let whole = n - n % INNER;
        for ((rb, zb), ob) in (r[..whole].chunks_exact(INNER))
            .zip(z[..whole].chunks_exact(INNER))
            .zip(out[..whole].chunks_exact_mut(INNER))
        {
            for (k, l) in lanes(rb, zb, ob).iter().enumerate() {
                sums[k] += l.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        for i in whole..n {
            let (s, terms) = divide_one(r[i], z[i], f);
            out[i] = s;
            for (sum, t) in sums.iter_mut().zip(terms) {
                *sum += t as f64;
            }
        }
        sums
    };
    if out.len() <= 2 * BLOCK {
        return block(r, z, out);
    }
    use rayon::prelude::*;
    (out.par_chunks_mut(BLOCK)
        .zip(r.par_chunks(BLOCK))
        .zip(z.par_chunks(BLOCK)))
    .map(|((o, r), z)| block(r, z, o))
    .reduce(|| [0f64; 3], |x, y| [x[0] + y[0], x[1] + y[1], x[2] + y[2]])
}

/// One value of [`divide_sums`]: the share `r / stabilize(z)` and its
/// terms of the account, `[dropped, sign, stabilizer]`.
#[inline]
fn divide_one(r: f32, z: f32, f: f32) -> (f32, [f32; 3]) {
    // stabilize(z) is never 0 (|stabilize(z)| >= STABILIZER)
    let s = r / (z + if z >= 0.0 { STABILIZER } else { -STABILIZER });
    let on = z != 0.0;
    let signed = if z >= 0.0 { s } else { -s };
    let keep = |v: f32| if on { v } else { 0.0 };
    let fe = f * STABILIZER;
    (
        s,
        [
            if on { 0.0 } else { r },
            keep((f - 1.0) * r),
            keep(fe * signed),
        ],
    )
}

/// One block of [`divide_sums`] without SIMD: eight lanes, each adding
/// every eighth value's terms, as the AVX2 block does.
fn divide_block(r: &[f32], z: &[f32], out: &mut [f32], f: f32) -> [[f32; 8]; 3] {
    let mut lanes = [[0f32; 8]; 3];
    for ((r8, z8), o8) in (r.chunks_exact(8))
        .zip(z.chunks_exact(8))
        .zip(out.chunks_exact_mut(8))
    {
        for l in 0..8 {
            let (s, terms) = divide_one(r8[l], z8[l], f);
            o8[l] = s;
            for (lane, t) in lanes.iter_mut().zip(terms) {
                lane[l] += t;
            }
        }
    }
    lanes
}

/// The account of alpha-beta: output `j` passes `sum_k f_k z_kj s_kj` over
/// its parts `k` (factor `f_k`: `alpha`, `-beta`; share `s_kj = R_j /
/// stab(z_kj)`); a part with `z_kj != 0` ideally passes `f_k R_j`. Where no
/// part is present the relevance is dropped; else `(sum f_k - 1) R_j` is
/// created by signs and the stabiliser takes `f_k (stab(z) - z) s = +-1e-6
/// f_k s` of each part.
fn alpha_beta_account(
    r: &ArrayD<f32>,
    dens: &[(f32, ArrayD<f32>, ArrayD<f32>)],
    rows: usize,
) -> Result<Vec<Account>> {
    let rows = rows.max(1);
    ensure!(
        r.len().is_multiple_of(rows),
        "{} outputs cannot be accounted in {rows} rows",
        r.len()
    );
    let len = r.len() / rows;
    let r = flat(r);
    let flats: Vec<_> = dens
        .iter()
        .map(|(f, z, s)| (*f, flat(z), flat(s)))
        .collect();
    Ok((0..rows)
        .map(|i| {
            let span = i * len..(i + 1) * len;
            let parts: Vec<(f32, &[f32], &[f32])> = flats
                .iter()
                .map(|(f, z, s)| (*f, &z[span.clone()], &s[span.clone()]))
                .collect();
            alpha_beta_row(&r[span], &parts)
        })
        .collect())
}

/// [`alpha_beta_account`] of one row.
fn alpha_beta_row(r: &[f32], dens: &[(f32, &[f32], &[f32])]) -> Account {
    // a part: (ideal factor, stabiliser's share)
    let part = |f: f32, z: f32, s: f32| -> (f32, f32) {
        let on = if z == 0.0 { 0.0 } else { f };
        (on, on * STABILIZER * if z >= 0.0 { s } else { -s })
    };
    let finish = |rj: f32, ideal: f32, stab: f32| -> [f32; 3] {
        let none = ideal == 0.0;
        [
            if none { rj } else { 0.0 },
            if none { 0.0 } else { (ideal - 1.0) * rj },
            if none { 0.0 } else { stab },
        ]
    };
    let [dropped, sign, stabilizer] = match dens {
        [] => [r.iter().map(|&v| v as f64).sum(), 0.0, 0.0],
        [(f, z, s)] => zip_sums([r, z, s], |[r, z, s]| {
            let (i, t) = part(*f, z, s);
            finish(r, i, t)
        }),
        [(f, z, s), (g, y, q), ..] => zip_sums([r, z, s, y, q], |[r, z, s, y, q]| {
            let (i, t) = part(*f, z, s);
            let (j, u) = part(*g, y, q);
            finish(r, i + j, t + u)
        }),
    };
    Account {
        bias: 0.0,
        stabilizer,
        dropped,
        sign,
    }
}

#[cfg(test)]
mod divide_tests {
    use super::{divide_sums_with, stabilize, STABILIZER};

    /// The shares and the one-part account against their definition in
    /// f64, portable and AVX2 alike, over lengths around the blocks.
    #[test]
    fn divide_sums_match_the_definition_with_and_without_avx2() {
        let mut seed = 0x1234_5678u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        };
        for len in [0usize, 7, 256, 300, 4099, 70_001] {
            let r: Vec<f32> = (0..len).map(|_| next()).collect();
            // zeros (dropped) and both signs
            let z: Vec<f32> = (0..len)
                .map(|i| if i % 5 == 0 { 0.0 } else { next() })
                .collect();
            for f in [1.0f32, 2.0, -1.0] {
                let mut want = [0f64; 3];
                let shares: Vec<f32> = (r.iter().zip(&z))
                    .map(|(&r, &z)| {
                        let s = r / stabilize(z, STABILIZER);
                        if z == 0.0 {
                            want[0] += r as f64;
                        } else {
                            want[1] += ((f - 1.0) * r) as f64;
                            let signed = if z >= 0.0 { s } else { -s };
                            want[2] += (f * STABILIZER * signed) as f64;
                        }
                        s
                    })
                    .collect();
                #[cfg(target_arch = "x86_64")]
                let avx2 = std::arch::is_x86_feature_detected!("avx2");
                #[cfg(not(target_arch = "x86_64"))]
                let avx2 = false;
                for simd in [false, avx2] {
                    let mut out = vec![0f32; len];
                    let got = divide_sums_with(&r, &z, &mut out, f, simd);
                    assert_eq!(out, shares, "len {len}, f {f}, simd {simd}");
                    for k in 0..3 {
                        let scale = len as f64 * 2.0 + 1.0;
                        assert!(
                            (got[k] - want[k]).abs() <= 1e-5 * scale,
                            "len {len}, f {f}, simd {simd}, sum {k}: {} vs {}",
                            got[k],
                            want[k]
                        );
                    }
                }
            }
        }
    }
}
