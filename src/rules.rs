//! LRP rules: the math on one linear layer.
//!
//! A rule knows nothing about graphs, operators or tract. It sees a
//! [`LinearLayer`] (something that maps `x -> W x + b` and can apply `W^T`),
//! modifies its weights and inputs, runs the modified forward passes,
//! stabilises, divides the incoming relevance by them and multiplies back with
//! the transposed passes. The definitions follow Zennit's `BasicHook` rules,
//! with `zero_params='bias'` for every rule except epsilon.

use anyhow::{bail, Result};
use ndarray::{ArrayD, Zip};

/// The stabiliser Zennit adds to every denominator (`stabilize(..., 1e-6)`).
pub const STABILIZER: f32 = 1e-6;

/// A layer that is linear in its input: `z = W x + b`.
///
/// Implemented by convolutions, dense layers and per-channel affine layers.
/// The weight array may have any layout; rules only modify it elementwise.
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
}

/// An LRP rule for linear layers.
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
    /// Zennit's generalised gamma rule, bias excluded.
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

fn map(a: &ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    a.mapv(f)
}

fn pos(a: &ArrayD<f32>) -> ArrayD<f32> {
    map(a, |v| v.max(0.0))
}

fn neg(a: &ArrayD<f32>) -> ArrayD<f32> {
    map(a, |v| v.min(0.0))
}

fn add(a: ArrayD<f32>, b: &ArrayD<f32>) -> ArrayD<f32> {
    let mut a = a;
    a += b;
    a
}

/// `sum_k inputs_k * backward(s, weights_k)`, the reducer of most rules.
fn reduce(
    layer: &dyn LinearLayer,
    s: &ArrayD<f32>,
    terms: &[(&ArrayD<f32>, &ArrayD<f32>)],
    shape: &[usize],
) -> Result<ArrayD<f32>> {
    let mut out = ArrayD::<f32>::zeros(shape);
    for (x, w) in terms {
        let c = layer.backward(s, w, shape)?;
        Zip::from(&mut out)
            .and(*x)
            .and(&c)
            .for_each(|o, &x, &c| *o += x * c);
    }
    Ok(out)
}

/// The parts of an input: positive and negative, and whether each is non-zero.
struct Split {
    pos: ArrayD<f32>,
    neg: ArrayD<f32>,
    has_pos: bool,
    has_neg: bool,
}

fn split(x: &ArrayD<f32>) -> Split {
    Split {
        has_pos: x.iter().any(|&v| v > 0.0),
        has_neg: x.iter().any(|&v| v < 0.0),
        pos: pos(x),
        neg: neg(x),
    }
}

/// `fwd(xa, wa) + fwd(xb, wb)`, skipping a term whose input is all zero
/// (it would add exact zeros).
fn forward_pair(
    layer: &dyn LinearLayer,
    terms: [(bool, &ArrayD<f32>, &ArrayD<f32>); 2],
) -> Result<Option<ArrayD<f32>>> {
    let mut acc: Option<ArrayD<f32>> = None;
    for (used, x, w) in terms {
        if used {
            let z = layer.forward(x, w, false)?;
            acc = Some(match acc {
                None => z,
                Some(a) => add(a, &z),
            });
        }
    }
    Ok(acc)
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
        let shape = x.shape().to_vec();
        let w = layer.weight();
        match *self {
            Rule::Epsilon { epsilon } => {
                let z = layer.forward(x, w, true)?;
                let s = divide(r, &z, epsilon);
                reduce(layer, &s, &[(x, w)], &shape)
            }
            Rule::ZPlus => self.alpha_beta(layer, x, r, 1.0, 0.0),
            Rule::AlphaBeta { alpha, beta } => self.alpha_beta(layer, x, r, alpha, beta),
            Rule::Gamma { gamma } => {
                let z = layer.forward(x, w, true)?;
                let wp = map(w, move |v| v + gamma * v.max(0.0));
                let wn = map(w, move |v| v + gamma * v.min(0.0));
                let xs = split(x);
                let zeros = || ArrayD::<f32>::zeros(z.shape());
                // outputs with z > 0: x+ (w + g w+) + x- (w + g w-)
                let up = forward_pair(
                    layer,
                    [(xs.has_pos, &xs.pos, &wp), (xs.has_neg, &xs.neg, &wn)],
                )?
                .unwrap_or_else(zeros);
                // outputs with z < 0: x+ (w + g w-) + x- (w + g w+)
                let down = forward_pair(
                    layer,
                    [(xs.has_pos, &xs.pos, &wn), (xs.has_neg, &xs.neg, &wp)],
                )?
                .unwrap_or_else(zeros);
                let s_up = Zip::from(r).and(&z).and(&up).map_collect(|&r, &z, &d| {
                    if z > 0.0 {
                        r / stabilize(d, STABILIZER)
                    } else {
                        0.0
                    }
                });
                let s_down = Zip::from(r).and(&z).and(&down).map_collect(|&r, &z, &d| {
                    if z < 0.0 {
                        r / stabilize(d, STABILIZER)
                    } else {
                        0.0
                    }
                });
                let mut terms: Vec<(&ArrayD<f32>, &ArrayD<f32>)> = Vec::new();
                let mut out = ArrayD::<f32>::zeros(shape.clone());
                if xs.has_pos {
                    terms.push((&xs.pos, &wp));
                }
                if xs.has_neg {
                    terms.push((&xs.neg, &wn));
                }
                out += &reduce(layer, &s_up, &terms, &shape)?;
                terms.clear();
                if xs.has_pos {
                    terms.push((&xs.pos, &wn));
                }
                if xs.has_neg {
                    terms.push((&xs.neg, &wp));
                }
                out += &reduce(layer, &s_down, &terms, &shape)?;
                Ok(out)
            }
            Rule::WSquare | Rule::Flat => {
                let wm = if *self == Rule::WSquare {
                    map(w, |v| v * v)
                } else {
                    map(w, |_| 1.0)
                };
                let ones = ArrayD::<f32>::ones(shape.clone());
                let z = layer.forward(&ones, &wm, false)?;
                let s = divide(r, &z, STABILIZER);
                layer.backward(&s, &wm, &shape)
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
                let wp = pos(w);
                let wn = neg(w);
                let mut z = layer.forward(x, w, false)?;
                z -= &layer.forward(&b.low, &wp, false)?;
                z -= &layer.forward(&b.high, &wn, false)?;
                let s = divide(r, &z, STABILIZER);
                let mut out = layer.backward(&s, w, &shape)?;
                out *= x;
                let cl = layer.backward(&s, &wp, &shape)?;
                let ch = layer.backward(&s, &wn, &shape)?;
                Zip::from(&mut out)
                    .and(&b.low)
                    .and(&cl)
                    .and(&b.high)
                    .and(&ch)
                    .for_each(|o, &l, &cl, &h, &ch| *o -= l * cl + h * ch);
                Ok(out)
            }
        }
    }

    fn alpha_beta(
        &self,
        layer: &dyn LinearLayer,
        x: &ArrayD<f32>,
        r: &ArrayD<f32>,
        alpha: f32,
        beta: f32,
    ) -> Result<ArrayD<f32>> {
        let shape = x.shape().to_vec();
        let w = layer.weight();
        let wp = pos(w);
        let wn = neg(w);
        let xs = split(x);
        let mut out = ArrayD::<f32>::zeros(shape.clone());
        // positive contributions: x+ w+ + x- w-
        if let Some(zp) = forward_pair(
            layer,
            [(xs.has_pos, &xs.pos, &wp), (xs.has_neg, &xs.neg, &wn)],
        )? {
            let s = divide(r, &zp, STABILIZER);
            let mut terms: Vec<(&ArrayD<f32>, &ArrayD<f32>)> = Vec::new();
            if xs.has_pos {
                terms.push((&xs.pos, &wp));
            }
            if xs.has_neg {
                terms.push((&xs.neg, &wn));
            }
            let c = reduce(layer, &s, &terms, &shape)?;
            out.scaled_add(alpha, &c);
        }
        if beta != 0.0 {
            // negative contributions: x+ w- + x- w+
            if let Some(zn) = forward_pair(
                layer,
                [(xs.has_pos, &xs.pos, &wn), (xs.has_neg, &xs.neg, &wp)],
            )? {
                let s = divide(r, &zn, STABILIZER);
                let mut terms: Vec<(&ArrayD<f32>, &ArrayD<f32>)> = Vec::new();
                if xs.has_pos {
                    terms.push((&xs.pos, &wn));
                }
                if xs.has_neg {
                    terms.push((&xs.neg, &wp));
                }
                let c = reduce(layer, &s, &terms, &shape)?;
                out.scaled_add(-beta, &c);
            }
        }
        Ok(out)
    }
}
