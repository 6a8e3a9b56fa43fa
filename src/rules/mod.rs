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

use anyhow::{bail, Result};
use ndarray::{ArrayD, Zip};

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
    /// The bias broadcast to an output of shape `out_shape` (`None`: the
    /// layer has no bias).
    fn bias_at(&self, out_shape: &[usize]) -> Result<Option<ArrayD<f32>>>;
    /// Whether [`LinearLayer::forward_mod`] and [`LinearLayer::backward_mod`]
    /// apply modifiers on the fly without copying the weights (then caching
    /// modified weights would only cost memory).
    fn modifies_on_the_fly(&self) -> bool {
        false
    }
}

/// A per-output bias `b` (one value per index of `axis`) broadcast to an
/// output of shape `out_shape`.
pub fn broadcast_bias(b: &ArrayD<f32>, out_shape: &[usize], axis: usize) -> Result<ArrayD<f32>> {
    let n = out_shape.get(axis).copied().unwrap_or(0);
    if b.len() != n {
        bail!(
            "a bias of {} values for {n} outputs (output shape {out_shape:?})",
            b.len()
        );
    }
    let b: Vec<f32> = b.iter().copied().collect();
    Ok(ArrayD::from_shape_fn(out_shape, |ix| b[ix[axis]]))
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

impl std::ops::AddAssign for Account {
    fn add_assign(&mut self, o: Account) {
        self.bias += o.bias;
        self.stabilizer += o.stabilizer;
        self.dropped += o.dropped;
        self.sign += o.sign;
    }
}

/// The account of a rule with one denominator `den_j` per output:
/// `R_in = sum_j (den_j - bias_j) / stab(den_j) R_j` where `stab` adds `eps`
/// away from zero; outputs where `live` is false or `stab(den) = 0` drop
/// their relevance.
fn denominator_account(
    r: &ArrayD<f32>,
    den: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    eps: f32,
    live: impl Fn(usize) -> bool,
) -> Account {
    let mut a = Account::default();
    let (r, den) = (r.as_standard_layout(), den.as_standard_layout());
    let bias = bias.map(|b| b.as_standard_layout());
    let (rs, ds) = (r.as_slice().unwrap_or(&[]), den.as_slice().unwrap_or(&[]));
    let bs = bias.as_ref().and_then(|b| b.as_slice());
    for (j, (&r, &d)) in rs.iter().zip(ds).enumerate() {
        let sd = stabilize(d, eps);
        if !live(j) || sd == 0.0 {
            a.dropped += r as f64;
            continue;
        }
        let share = r as f64 / sd as f64;
        a.stabilizer += (sd as f64 - d as f64) * share;
        if let Some(b) = bs {
            a.bias += b[j] as f64 * share;
        }
    }
    a
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
    Zip::from(r).and(z).map_collect(|&r, &z| {
        let d = stabilize(z, eps);
        if d == 0.0 {
            0.0
        } else {
            r / d
        }
    })
}

fn pos(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.mapv(|v| v.max(0.0))
}

fn neg(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.mapv(|v| v.min(0.0))
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
    pos: Option<Cow<'a, ArrayD<f32>>>,
    neg: Option<Cow<'a, ArrayD<f32>>>,
}

fn split(x: &ArrayD<f32>) -> Split<'_> {
    // over the memory slice when there is one (iterating an n-d array by
    // index is several times slower)
    let any = |f: fn(f32) -> bool| match x.as_slice_memory_order() {
        Some(s) => s.iter().any(|&v| f(v)),
        None => x.iter().any(|&v| f(v)),
    };
    let (has_pos, has_neg) = (any(|v| v > 0.0), any(|v| v < 0.0));
    let part = |wanted: bool, other: bool, f: fn(&ArrayD<f32>) -> ArrayD<f32>| match (wanted, other)
    {
        (false, _) => None,
        (true, false) => Some(Cow::Borrowed(x)),
        (true, true) => Some(Cow::Owned(f(x))),
    };
    Split {
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
                    a += &z;
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
                let bias = layer.bias_at(z.shape())?;
                let account = denominator_account(r, &z, bias.as_ref(), epsilon, |_| true);
                let out = reduce(layer, &s, &[(x, Modifier::Identity)], &shape)?;
                Ok((out, account))
            }
            Rule::ZPlus => self.alpha_beta(layer, x, r, 1.0, 0.0),
            Rule::AlphaBeta { alpha, beta } => self.alpha_beta(layer, x, r, alpha, beta),
            Rule::Gamma { gamma } => self.gamma(layer, x, &*output()?, r, gamma),
            Rule::WSquare | Rule::Flat => {
                let m = if *self == Rule::WSquare {
                    Modifier::Square
                } else {
                    Modifier::One
                };
                let ones = ArrayD::<f32>::ones(shape.clone());
                let z = layer.forward_mod(&ones, m, false)?;
                let s = divide(r, &z, STABILIZER);
                let zs = z.as_standard_layout();
                let zs = zs.as_slice().unwrap_or(&[]);
                let account = denominator_account(r, &z, None, STABILIZER, |j| zs[j] != 0.0);
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
                let zs = z.as_standard_layout();
                let zs = zs.as_slice().unwrap_or(&[]);
                let account = denominator_account(r, &z, None, STABILIZER, |j| zs[j] != 0.0);
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
        x: &ArrayD<f32>,
        z: &ArrayD<f32>,
        r: &ArrayD<f32>,
        gamma: f32,
    ) -> Result<(ArrayD<f32>, Account)> {
        let shape = x.shape().to_vec();
        let (wp, wn) = (Modifier::GammaPos(gamma), Modifier::GammaNeg(gamma));
        let xs = split(x);
        let (xp, xn) = (xs.pos.as_deref(), xs.neg.as_deref());
        let zeros = || ArrayD::<f32>::zeros(z.shape());
        let bias = layer.bias_at(z.shape())?;
        // the bias's part of each denominator: b + g b+ (z > 0), b + g b- (z < 0)
        let bias_part = |m: Modifier| bias.as_ref().map(|b| b.mapv(|v| m.apply(v)));
        let (b_up, b_down) = (bias_part(wp), bias_part(wn));
        let with_bias = |d: Option<ArrayD<f32>>, b: &Option<ArrayD<f32>>| {
            let mut d = d.unwrap_or_else(zeros);
            if let Some(b) = b {
                d += b;
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
            Zip::from(r).and(z).and(den).map_collect(|&r, &z, &d| {
                if keep(z) {
                    r / stabilize(d, STABILIZER)
                } else {
                    0.0
                }
            })
        };
        let s_up = share(&up, |z| z > 0.0);
        let s_down = share(&down, |z| z < 0.0);
        // the account: each output has the denominator of its sign
        let den = Zip::from(z)
            .and(&up)
            .and(&down)
            .map_collect(|&z, &u, &d| if z > 0.0 { u } else { d });
        let b_den = b_up.as_ref().zip(b_down.as_ref()).map(|(bu, bd)| {
            Zip::from(z)
                .and(bu)
                .and(bd)
                .map_collect(|&z, &u, &d| if z > 0.0 { u } else { d })
        });
        let zs = z.as_standard_layout();
        let zs = zs.as_slice().unwrap_or(&[]);
        let account = denominator_account(r, &den, b_den.as_ref(), STABILIZER, |j| zs[j] != 0.0);
        let mut out = reduce(layer, &s_up, &present(&up_terms), &shape)?;
        out += &reduce(layer, &s_down, &present(&down_terms), &shape)?;
        Ok((out, account))
    }

    fn alpha_beta(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        r: &ArrayD<f32>,
        alpha: f32,
        beta: f32,
    ) -> Result<(ArrayD<f32>, Account)> {
        let shape = x.shape().to_vec();
        let xs = split(x);
        let (xp, xn) = (xs.pos.as_deref(), xs.neg.as_deref());
        let mut out: Option<ArrayD<f32>> = None;
        // positive contributions: x+ w+ + x- w-; negative ones: x+ w- + x- w+
        let parts = [
            (alpha, [(xp, Modifier::Pos), (xn, Modifier::Neg)]),
            (-beta, [(xp, Modifier::Neg), (xn, Modifier::Pos)]),
        ];
        // the denominators of the parts used (for the account)
        let mut dens: Vec<(f32, ArrayD<f32>)> = Vec::new();
        for (factor, terms) in parts {
            if factor == 0.0 {
                continue;
            }
            if let Some(z) = forward_sum(layer, &terms)? {
                let s = divide(r, &z, STABILIZER);
                let mut c = reduce(layer, &s, &present(&terms), &shape)?;
                match out.as_mut() {
                    None => {
                        if factor != 1.0 {
                            c.mapv_inplace(|v| v * factor);
                        }
                        out = Some(c);
                    }
                    Some(o) => o.scaled_add(factor, &c),
                }
                dens.push((factor, z.as_standard_layout().into_owned()));
            }
        }
        Ok((
            out.unwrap_or_else(|| ArrayD::zeros(shape)),
            alpha_beta_account(r, &dens),
        ))
    }
}

/// The account of alpha-beta: output `j` passes `sum_k f_k z_kj / stab(z_kj)
/// R_j` over its parts `k` (factor `f_k`: `alpha`, `-beta`); a part with
/// `z_kj != 0` ideally passes `f_k R_j`. Where no part is present the
/// relevance is dropped; else `(sum f_k - 1) R_j` is created by signs and the
/// rest is the stabiliser's.
fn alpha_beta_account(r: &ArrayD<f32>, dens: &[(f32, ArrayD<f32>)]) -> Account {
    let mut a = Account::default();
    let r = r.as_standard_layout();
    let rs = r.as_slice().unwrap_or(&[]);
    let zs: Vec<(f64, &[f32])> = dens
        .iter()
        .map(|(f, z)| (*f as f64, z.as_slice().unwrap_or(&[])))
        .collect();
    for (j, &rj) in rs.iter().enumerate() {
        let rj = rj as f64;
        let (mut ideal, mut stab) = (0.0, 0.0);
        for &(f, z) in &zs {
            let z = z[j];
            if z != 0.0 {
                ideal += f;
                let d = stabilize(z, STABILIZER) as f64;
                stab += f * (1.0 - z as f64 / d);
            }
        }
        if ideal == 0.0 {
            a.dropped += rj;
        } else {
            a.sign += (ideal - 1.0) * rj;
            a.stabilizer += stab * rj;
        }
    }
    a
}
