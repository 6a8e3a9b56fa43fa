//! Elementwise activations: relevance passes through them unchanged; the
//! gradient is multiplied by their derivative at the layer input.
//!
//! At a kink the derivative is that of the right-open piece PyTorch uses:
//! ReLU and Clip pass the gradient strictly inside (`x > 0`, `min < x < max`),
//! LeakyReLU, PReLU, ELU, SELU and CELU take the slope of the negative piece at
//! `x = 0`, HardSigmoid is flat at both ends, HardSwish uses `(2x + 3) / 6` on
//! `[-3, 3]`.

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, Zip};

use super::registry::{Imported, OnnxNode, Operand};
use crate::elementwise::{apply, map, map2, update};

/// An elementwise activation, with the parameters its derivative needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// `Identity`, `Dropout` (inference), `Cast` to a float type.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (an absent bound is infinite).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x` where `x > 0`, else `alpha x`.
    LeakyRelu {
        /// Slope of the negative part.
        alpha: f32,
    },
    /// `x` where `x > 0`, else `slope x` (`slope` broadcasts to `x`).
    PRelu {
        /// Slope of the negative part.
        slope: ArrayD<f32>,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, min(1, alpha x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish,
    /// `x` where `x > 0`, else `alpha (exp(x) - 1)`.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `gamma x` where `x > 0`, else `gamma alpha (exp(x) - 1)`.
    Selu {
        /// Scale of the negative part.
        alpha: f32,
        /// Overall scale.
        gamma: f32,
    },
    /// `x` where `x > 0`, else `alpha (exp(x / alpha) - 1)`.
    Celu {
        /// Scale.
        alpha: f32,
    },
    /// `ln(1 + exp(x))`.
    Softplus,
    /// `x tanh(softplus(x))`.
    Mish,
    /// `x Phi(x)`, or its tanh approximation.
    Gelu {
        /// `approximate = "tanh"`.
        tanh: bool,
    },
    /// An elementwise node whose derivative is not implemented (a `Cast` to a
    /// non-float type, a constant operand that is computed at run time):
    /// relevance passes, a gradient is an error.
    Opaque,
}

/// `erfc(x)` in `f64` (the fit of [`crate::kernels::math::erfc_fit`]).
fn erfc(x: f64) -> f64 {
    let (t, arg) = crate::kernels::math::erfc_fit(x);
    let r = t * arg.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + exp(x))` without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Act {
    /// Whether guided backprop stops negative gradients here: rectifiers, i.e.
    /// `Relu` and a `Clip` with lower bound 0 (ReLU6).
    pub fn is_rectifier(&self) -> bool {
        matches!(self, Act::Relu) || matches!(self, Act::Clip { min, .. } if *min == 0.0)
    }

    /// Whether its output tells its derivative as well as its input does:
    /// ReLU and Clip have derivative 1 on the open interval `(lo, hi)` and 0
    /// elsewhere, and `lo < clip(x) < hi` exactly where `lo < x < hi`
    /// (guided backprop reads the same interval). Both are idempotent, so
    /// running them on their output gives the output again. A forward pass
    /// may then drop their input and the backward pass read the output.
    pub fn mask_from_output(&self) -> bool {
        matches!(self, Act::Relu | Act::Clip { .. })
    }

    /// The bounds `(lo, hi)` it clamps to, for ReLU (`(0, inf)`) and Clip
    /// (a convolution can then clamp its output in its own loop).
    pub fn clamp(&self) -> Option<(f32, f32)> {
        match *self {
            Act::Relu => Some((0.0, f32::INFINITY)),
            Act::Clip { min, max } => Some((min, max)),
            Act::Identity
            | Act::LeakyRelu { .. }
            | Act::PRelu { .. }
            | Act::Sigmoid
            | Act::Tanh
            | Act::HardSigmoid { .. }
            | Act::HardSwish
            | Act::Elu { .. }
            | Act::Selu { .. }
            | Act::Celu { .. }
            | Act::Softplus
            | Act::Mish
            | Act::Gelu { .. }
            | Act::Opaque => None,
        }
    }

    /// The value at `x`, for every activation but [`Act::PRelu`] and [`Act::Opaque`].
    fn value(&self, x: f32) -> f32 {
        let xd = x as f64;
        match *self {
            Act::Identity => x,
            Act::Relu => x.max(0.0),
            Act::Clip { min, max } => x.max(min).min(max),
            Act::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Act::Sigmoid => sigmoid(xd) as f32,
            Act::Tanh => x.tanh(),
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Act::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    (alpha as f64 * xd.exp_m1()) as f32
                }
            }
            Act::Selu { alpha, gamma } => {
                if x > 0.0 {
                    gamma * x
                } else {
                    (gamma as f64 * alpha as f64 * xd.exp_m1()) as f32
                }
            }
            Act::Celu { alpha } => {
                (x.max(0.0) as f64 + (alpha as f64 * (xd / alpha as f64).exp_m1()).min(0.0)) as f32
            }
            Act::Softplus => softplus(xd) as f32,
            Act::Mish => (xd * softplus(xd).tanh()) as f32,
            // in f32 (to float precision), as the tensor passes compute it
            Act::Gelu { tanh: false } => crate::kernels::math::gelu(x),
            Act::Gelu { tanh: true } => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                (0.5 * xd * (1.0 + (k * (xd + 0.044715 * xd.powi(3))).tanh())) as f32
            }
            Act::PRelu { .. } | Act::Opaque => f32::NAN,
        }
    }

    /// The activation applied to `x` (the forward pass).
    pub fn apply(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        match self {
            Act::Opaque => anyhow::bail!("no formula for this elementwise operator"),
            Act::PRelu { slope } => {
                let s = slope.broadcast(x.shape()).ok_or_else(|| {
                    anyhow::anyhow!("PRelu slope {:?} for input {:?}", slope.shape(), x.shape())
                })?;
                Ok(ndarray::Zip::from(x)
                    .and(&s)
                    .map_collect(|&x, &s| if x >= 0.0 { x } else { s * x }))
            }
            Act::Identity => Ok(x.clone()),
            Act::Relu => Ok(map(x, |v| v.max(0.0))),
            &Act::Clip { min, max } => Ok(map(x, |v| v.max(min).min(max))),
            Act::Gelu { tanh: false } => {
                let mut y = x.as_standard_layout().into_owned();
                let gelu = Act::Gelu { tanh: false };
                gelu.apply_in_place(&mut y);
                Ok(y)
            }
            act => Ok(map(x, |v| act.value(v))),
        }
    }

    /// The activation applied to `x` in place, where it has a formula per
    /// value (all but [`Act::PRelu`] and [`Act::Opaque`]: `false`, `x`
    /// untouched). For a forward pass that keeps no activation.
    pub fn apply_in_place(&self, x: &mut ArrayD<f32>) -> bool {
        match *self {
            Act::PRelu { .. } | Act::Opaque => return false,
            Act::Identity => {}
            Act::Relu => apply(x, |v| v.max(0.0)),
            Act::Clip { min, max } => apply(x, move |v| v.max(min).min(max)),
            Act::Gelu { tanh: false } => {
                use rayon::prelude::*;
                match x.as_slice_memory_order_mut() {
                    Some(s) => s
                        .par_chunks_mut(1 << 14)
                        .for_each(crate::kernels::math::gelu_in_place),
                    None => x.mapv_inplace(crate::kernels::math::gelu),
                }
            }
            ref act => apply(x, |v| act.value(v)),
        }
        true
    }

    /// The derivative at `x`, for every activation but [`Act::PRelu`] (whose
    /// slope varies by element) and [`Act::Opaque`].
    fn derivative(&self, x: f32) -> f32 {
        let xd = x as f64;
        let d = match *self {
            Act::Identity => 1.0,
            Act::Relu => f64::from(u8::from(x > 0.0)),
            Act::Clip { min, max } => f64::from(u8::from(x > min && x < max)),
            Act::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha as f64
                }
            }
            Act::Sigmoid => {
                let s = sigmoid(xd);
                s * (1.0 - s)
            }
            Act::Tanh => 1.0 - xd.tanh().powi(2),
            Act::HardSigmoid { alpha, beta } => {
                let v = alpha * x + beta;
                if v > 0.0 && v < 1.0 {
                    alpha as f64
                } else {
                    0.0
                }
            }
            Act::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x > 3.0 {
                    1.0
                } else {
                    (2.0 * xd + 3.0) / 6.0
                }
            }
            Act::Elu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha as f64 * xd.exp()
                }
            }
            Act::Selu { alpha, gamma } => {
                let g = gamma as f64;
                if x > 0.0 {
                    g
                } else {
                    g * alpha as f64 * xd.exp()
                }
            }
            Act::Celu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    (xd / alpha as f64).exp()
                }
            }
            Act::Softplus => sigmoid(xd),
            Act::Mish => {
                let t = softplus(xd).tanh();
                t + xd * (1.0 - t * t) * sigmoid(xd)
            }
            Act::Gelu { tanh: false } => {
                // d/dx x Phi(x) = Phi(x) + x phi(x)
                let phi = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
                0.5 * erfc(-xd / std::f64::consts::SQRT_2) + xd * phi
            }
            Act::Gelu { tanh: true } => {
                // 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
                let k = (2.0 / std::f64::consts::PI).sqrt();
                let t = (k * (xd + 0.044715 * xd.powi(3))).tanh();
                0.5 * (1.0 + t) + 0.5 * xd * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * xd * xd)
            }
            Act::PRelu { .. } | Act::Opaque => f64::NAN,
        };
        d as f32
    }

    /// The gradient at the input `x` for the gradient `g` at the output.
    ///
    /// `guided`: rectifiers ([`Act::is_rectifier`]) pass only positive
    /// gradients (guided backprop); other activations are unaffected.
    pub fn gradient(&self, x: &ArrayD<f32>, g: &ArrayD<f32>, guided: bool) -> Result<ArrayD<f32>> {
        ensure!(
            x.shape() == g.shape(),
            "elementwise node changes the shape {:?} to {:?}",
            x.shape(),
            g.shape()
        );
        match self {
            Act::Opaque => bail!("the gradient of this operator is not implemented"),
            Act::PRelu { slope } => {
                let Some(slope) = slope.broadcast(x.shape()) else {
                    bail!(
                        "PRelu slope {:?} does not broadcast to {:?}",
                        slope.shape(),
                        x.shape()
                    );
                };
                Ok(Zip::from(x)
                    .and(g)
                    .and(&slope)
                    .map_collect(|&x, &g, &s| if x > 0.0 { g } else { g * s }))
            }
            Act::Identity => Ok(g.clone()),
            act => {
                let guided = guided && act.is_rectifier();
                let g0 = move |g: f32| if guided { g.max(0.0) } else { g };
                // the piecewise-linear ones without the f64 `derivative`
                Ok(match act.pieces() {
                    Some(p) => map2(x, g, move |x, g| p.times(x, g0(g))),
                    None => map2(x, g, move |x, g| g0(g) * act.derivative(x)),
                })
            }
        }
    }
}



/// The derivative of a piecewise-linear activation: 1 on `(lo, hi)`,
/// `below` at and below `lo`, 0 at and above `hi` (PyTorch's choice at the
/// kinks).
#[derive(Clone, Copy)]
struct Pieces {
    lo: f32,
    hi: f32,
    below: f32,
}

impl Pieces {
    /// `g` times the derivative at `x`.
    #[inline]
    fn times(self, x: f32, g: f32) -> f32 {
        if x > self.lo && x < self.hi {
            g
        } else if x <= self.lo {
            g * self.below
        } else {
            0.0
        }
    }
}

impl Act {
    /// The pieces of identity, ReLU, Clip and LeakyReLU; `None` for the others.
    fn pieces(&self) -> Option<Pieces> {
        let inf = f32::INFINITY;
        let (lo, hi, below) = match *self {
            Act::Identity => (-inf, inf, 1.0),
            Act::Relu => (0.0, inf, 0.0),
            Act::Clip { min, max } => (min, max, 0.0),
            Act::LeakyRelu { alpha } => (0.0, inf, alpha),
            _ => return None,
        };
        Some(Pieces { lo, hi, below })
    }

    /// [`Act::gradient`] written over `g` for the piecewise-linear
    /// activations (identity, ReLU, Clip, LeakyReLU): `true`; `false` (and
    /// `g` untouched) for the others.
    pub fn gradient_in_place(&self, x: &ArrayD<f32>, g: &mut ArrayD<f32>, guided: bool) -> Result<bool> {
        ensure!(
            x.shape() == g.shape(),
            "elementwise node changes the shape {:?} to {:?}",
            x.shape(),
            g.shape()
        );
        let guided = guided && self.is_rectifier();
        let g0 = move |g: f32| if guided { g.max(0.0) } else { g };
        let Some(p) = self.pieces() else {
            return Ok(false);
        };
        update(g, x, move |g, x| p.times(x, g0(g)));
        Ok(true)
    }
}

impl Act {
    /// Whether LRP-0 (relevance passing unchanged, the identity rule)
    /// equals gradient x input through it: for the piecewise-linear
    /// rectifiers through the origin, exactly; for the smooth activations
    /// with `f(0) = 0` (GELU, tanh, ELU, SELU, CELU, Mish) with the
    /// derivative replaced by `f(x) / x` ([`Act::lrp0_gradient`]); not for
    /// the others.
    pub fn lrp0(&self) -> super::Lrp0 {
        use super::Lrp0;
        match self {
            Act::Identity | Act::Relu | Act::LeakyRelu { .. } | Act::PRelu { .. } => Lrp0::Exact,
            Act::Clip { min, max } => {
                if (*min == 0.0 || *min == f32::NEG_INFINITY) && *max == f32::INFINITY {
                    Lrp0::Exact
                } else if *min == 0.0 && *max == 6.0 {
                    Lrp0::Differs("ReLU6 clips at 6".to_string())
                } else {
                    Lrp0::Differs(format!("clips to [{min}, {max}]"))
                }
            }
            Act::Gelu { .. }
            | Act::Tanh
            | Act::Elu { .. }
            | Act::Selu { .. }
            | Act::Celu { .. }
            | Act::Mish => Lrp0::Modified("each smooth activation's derivative replaced by f(x)/x"),
            Act::Sigmoid
            | Act::HardSigmoid { .. }
            | Act::HardSwish
            | Act::Softplus
            | Act::Opaque => Lrp0::Differs(format!(
                "{self:?} is not piecewise linear through the origin"
            )),
        }
    }

    /// The inputs where its derivative jumps (what `check` steps around).
    pub fn kinks(&self) -> Vec<f32> {
        match self {
            Act::Relu | Act::LeakyRelu { .. } | Act::PRelu { .. } => vec![0.0],
            Act::Clip { min, max } => vec![*min, *max],
            Act::HardSigmoid { alpha, beta } => {
                if *alpha != 0.0 {
                    vec![-beta / alpha, (1.0 - beta) / alpha]
                } else {
                    vec![]
                }
            }
            Act::HardSwish => vec![-3.0, 3.0],
            Act::Identity
            | Act::Sigmoid
            | Act::Tanh
            | Act::Elu { .. }
            | Act::Selu { .. }
            | Act::Celu { .. }
            | Act::Softplus
            | Act::Mish
            | Act::Gelu { .. }
            | Act::Opaque => vec![],
        }
    }

    /// `g f(x) / x`, the gradient LRP-0 follows through a smooth activation
    /// with `f(0) = 0` (relevance passes: `R = f(x) g = x (g f(x) / x)`);
    /// at `x = 0` the derivative.
    pub fn lrp0_gradient(&self, x: &ArrayD<f32>, g: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let y = self.apply(x)?;
        let zero = ArrayD::<f32>::zeros(ndarray::IxDyn(&[1]));
        let d0 = self.gradient(&zero, &ArrayD::ones(ndarray::IxDyn(&[1])), false)?[0];
        let mut out = g.clone();
        Zip::from(&mut out).and(x).and(&y).for_each(|o, &x, &y| {
            *o *= if x == 0.0 { d0 } else { y / x };
        });
        Ok(out)
    }
}

impl super::Operator for Act {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(inputs[0].to_vec())
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        self.apply(inputs[0])
    }

    fn native(&self) -> Option<&'static str> {
        matches!(self, Act::Opaque).then_some("an elementwise operator without a formula")
    }

    /// The identity rule: relevance passes unchanged.
    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![super::structural::pass(inputs[0], r)?], None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        how: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let guided = how.mode == super::GradientMode::Guided;
        Ok(vec![Act::gradient(self, inputs[0], g, guided)?])
    }

    fn lrp0(&self) -> super::Lrp0 {
        Act::lrp0(self)
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![Act::lrp0_gradient(self, inputs[0], g)?])
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    fn kinks(&self) -> Vec<f32> {
        Act::kinks(self)
    }

    fn derivative_from_output(&self) -> bool {
        self.mask_from_output()
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Activation
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

    fn data_inputs(&self, n: usize) -> usize {
        n
    }


    /// Through the identity (a fake quantization), the bounds as they are.
    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        _: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        matches!(self, Act::Identity).then(|| (low.clone(), high.clone(), false))
    }

    super::not_linear!();
}

/// ONNX `TensorProto.DataType` codes of the float types (FLOAT, FLOAT16,
/// DOUBLE, BFLOAT16): a `Cast` to them is the identity for gradients.
const FLOAT_TYPES: &[i64] = &[1, 10, 11, 16];

/// A `Clip` bound given as input `i` (opset >= 11): `None` when it is computed.
fn bound(operand: &dyn Fn(usize) -> Result<Operand>, i: usize, absent: f32) -> Result<Option<f32>> {
    Ok(match operand(i)? {
        Operand::Absent => Some(absent),
        Operand::Const(c) => {
            ensure!(
                c.len() == 1,
                "a Clip bound must be a scalar, got {:?}",
                c.shape()
            );
            c.iter().next().copied()
        }
        Operand::Computed => None,
    })
}

/// Builds an activation. One that reads the image anywhere but in its
/// first input has no derivative here ([`Act::Opaque`]; relevance still
/// passes from the first); a fake quantization of an activation (QDQ
/// models) is the identity for relevance and gradients, its forward pass
/// runs in tract.
fn import(n: &OnnxNode) -> Result<Imported> {
    let quantizer = matches!(n.op_type(), "QuantizeLinear" | "DequantizeLinear");
    if !(n.activations() == 1 && n.is_act(0)) {
        ensure!(
            !quantizer,
            "only the fake quantization of an activation is supported"
        );
        return Ok(Act::Opaque.into());
    }
    Ok(activation(n)?.into())
}

/// The activation of `n`. Defaults are tract's (which computes the forward
/// pass). Parameters that are computed at run time give [`Act::Opaque`]:
/// relevance passes, gradients fail.
fn activation(n: &OnnxNode) -> Result<Act> {
    let (opset, operand) = (n.opset, n.operand);
    let f = |name: &str, default: f32| n.attr_float(name, default);
    let (inf, neg_inf) = (f32::INFINITY, f32::NEG_INFINITY);
    Ok(match n.op_type() {
        "Relu" => Act::Relu,
        "Clip" if opset < 11 => Act::Clip {
            min: f("min", neg_inf),
            max: f("max", inf),
        },
        "Clip" => match (bound(operand, 1, neg_inf)?, bound(operand, 2, inf)?) {
            (Some(min), Some(max)) => Act::Clip { min, max },
            _ => Act::Opaque,
        },
        "LeakyRelu" => Act::LeakyRelu {
            alpha: f("alpha", 0.01),
        },
        "PRelu" => match operand(1)? {
            Operand::Const(slope) => Act::PRelu { slope },
            Operand::Computed => Act::Opaque,
            Operand::Absent => bail!("PRelu without a slope"),
        },
        "Sigmoid" => Act::Sigmoid,
        "Tanh" => Act::Tanh,
        "HardSigmoid" => Act::HardSigmoid {
            alpha: f("alpha", 0.2),
            beta: f("beta", 0.5),
        },
        "HardSwish" => Act::HardSwish,
        "Elu" => Act::Elu {
            alpha: f("alpha", 1.0),
        },
        "Selu" => Act::Selu {
            alpha: f("alpha", 1.67326),
            gamma: f("gamma", 1.0507),
        },
        "Celu" => Act::Celu {
            alpha: f("alpha", 1.0),
        },
        "Softplus" => Act::Softplus,
        "Mish" => Act::Mish,
        "Gelu" => Act::Gelu {
            tanh: n.attr_string("approximate").as_deref() == Some("tanh"),
        },
        "Dropout" | "Identity" | "QuantizeLinear" | "DequantizeLinear" => Act::Identity,
        "Cast" => match n.attr("to") {
            Some(a) if FLOAT_TYPES.contains(&a.i) => Act::Identity,
            _ => Act::Opaque,
        },
        _ => Act::Opaque,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "activation",
    onnx: &[
        ("Relu", "activation: relevance passes"),
        ("Clip", "activation: relevance passes (ReLU6)"),
        ("LeakyRelu", "activation: relevance passes"),
        ("PRelu", "activation: relevance passes"),
        (
            "Sigmoid",
            "activation: relevance passes (as a gate: gets none)",
        ),
        (
            "HardSigmoid",
            "activation: relevance passes (as a gate: gets none)",
        ),
        ("Tanh", "activation: relevance passes"),
        ("HardSwish", "activation: relevance passes"),
        ("Elu", "activation: relevance passes"),
        ("Selu", "activation: relevance passes"),
        ("Celu", "activation: relevance passes"),
        ("Softplus", "activation: relevance passes"),
        (
            "Gelu",
            "activation: relevance passes (also the exporters' Div, Erf, Add, Mul, Mul)",
        ),
        ("Mish", "activation: relevance passes"),
        ("Dropout", "identity (inference)"),
        ("Identity", "identity"),
        ("Cast", "identity"),
        (
            "QuantizeLinear",
            "of an activation (fake quantization): identity",
        ),
        (
            "DequantizeLinear",
            "of an activation (fake quantization): identity",
        ),
    ],
    import,
    fuse: Some(fuse_gelu),
};

/// The exact GELU as exporters decompose it (PyTorch's TorchScript and
/// dynamo exporters before opset 20): `a = Div(x, sqrt 2)` (or `Mul(x, 1 /
/// sqrt 2)`), `e = Erf(a)`, `p = Add(e, 1)`, then `Mul` by `x` and `Mul` by
/// `0.5` in either order (operands in either order), each intermediate read
/// by the chain alone: becomes one `Gelu` node named after the `Erf`.
fn fuse_gelu(g: &mut super::registry::ProtoGraph) -> anyhow::Result<()> {
    let mut start = 0;
    while let Some(i) = (start..g.nodes.len()).find(|&i| g.nodes[i].op_type == "Erf") {
        start = i + 1;
        if let Some((remove, node)) = gelu_chain(g, i) {
            g.replace(&remove, node);
            // the nodes before the chain's first are where they were, and
            // none of them starts a chain
            start = remove.iter().copied().min().unwrap_or(0);
        }
    }
    Ok(())
}

/// The chain of [`fuse_gelu`] around the `Erf` at `i`, if it is one.
fn gelu_chain(
    g: &super::registry::ProtoGraph,
    i: usize,
) -> Option<(Vec<usize>, tract_onnx::pb::NodeProto)> {
    let n = |k: usize| &g.nodes[k];
    let out = |k: usize| n(k).output.first().cloned().unwrap_or_default();
    let near = |c: &ArrayD<f32>, v: f32| c.len() == 1 && c.iter().all(|&c| (c - v).abs() <= 1e-6 * v);
    let scaled = g.producer(n(i).input.first()?)?;
    let (x, _) = match n(scaled).op_type.as_str() {
        "Div" if n(scaled).input.get(1).is_some_and(|c| g.scalar(c).is_some()) => {
            g.with_constant(n(scaled), |c| near(c, std::f32::consts::SQRT_2))?
        }
        "Mul" => g.with_constant(n(scaled), |c| near(c, std::f32::consts::FRAC_1_SQRT_2))?,
        _ => return None,
    };
    if g.only_reader(&out(scaled)) != Some(i) {
        return None;
    }
    let add = g.only_reader(&out(i))?;
    if n(add).op_type != "Add" || g.with_constant(n(add), |c| near(c, 1.0)).is_none() {
        return None;
    }
    // two Muls: by x and by 0.5, in either order
    let m1 = g.only_reader(&out(add))?;
    let m2 = g.only_reader(&out(m1))?;
    if n(m1).op_type != "Mul" || n(m2).op_type != "Mul" {
        return None;
    }
    let by_x = |k: usize, other: &str| {
        let mut ins = n(k).input.clone();
        ins.sort();
        let mut want = vec![x.clone(), other.to_string()];
        want.sort();
        ins == want
    };
    let by_half = |k: usize| g.with_constant(n(k), |c| near(c, 0.5)).is_some();
    let ok = (by_x(m1, &out(add)) && by_half(m2)) || (by_half(m1) && by_x(m2, &out(m1)));
    if !ok {
        return None;
    }
    let node = tract_onnx::pb::NodeProto {
        name: n(i).name.clone(),
        op_type: "Gelu".into(),
        input: vec![x],
        output: vec![out(m2)],
        ..Default::default()
    };
    Some((vec![scaled, i, add, m1, m2], node))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node `op(inputs) -> output`.
    fn proto(op: &str, inputs: &[&str], output: &str) -> tract_onnx::pb::NodeProto {
        tract_onnx::pb::NodeProto {
            name: output.to_string(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            ..Default::default()
        }
    }

    /// The GELU chain in each of its written forms becomes one `Gelu` node
    /// from `x` to the chain's output; a chain with a wrong constant or an
    /// intermediate read elsewhere stays as it is.
    #[test]
    fn gelu_chains_fuse_in_every_order_and_only_when_exact() {
        let consts = |name: &str| -> Option<ArrayD<f32>> {
            let v = match name {
                "sqrt2" => std::f32::consts::SQRT_2,
                "inv_sqrt2" => std::f32::consts::FRAC_1_SQRT_2,
                "one" => 1.0,
                "half" => 0.5,
                "third" => 1.0 / 3.0,
                _ => return None,
            };
            Some(ArrayD::from_elem(ndarray::IxDyn(&[]), v))
        };
        let chain = |scale: (&str, &str), half_first: bool, add_c: &str| {
            let mut v = vec![
                proto(scale.0, &["x", scale.1], "a"),
                proto("Erf", &["a"], "e"),
                proto("Add", &[add_c, "e"], "p"),
            ];
            if half_first {
                v.push(proto("Mul", &["p", "half"], "h"));
                v.push(proto("Mul", &["x", "h"], "y"));
            } else {
                v.push(proto("Mul", &["p", "x"], "m"));
                v.push(proto("Mul", &["half", "m"], "y"));
            }
            v
        };
        let fuse = |nodes: Vec<tract_onnx::pb::NodeProto>, outputs: &[&str]| {
            let mut g = super::super::registry::ProtoGraph {
                nodes,
                constant: &consts,
                outputs: outputs.iter().map(|s| s.to_string()).collect(),
            };
            fuse_gelu(&mut g).unwrap();
            g.nodes
        };
        for scale in [("Div", "sqrt2"), ("Mul", "inv_sqrt2")] {
            for half_first in [false, true] {
                let nodes = fuse(chain(scale, half_first, "one"), &["y"]);
                assert_eq!(nodes.len(), 1, "{scale:?} {half_first}");
                assert_eq!(nodes[0].op_type, "Gelu");
                assert_eq!((nodes[0].input.clone(), nodes[0].output.clone()), (vec!["x".to_string()], vec!["y".to_string()]));
            }
        }
        // not GELU: another constant, or the Erf's output also a graph output
        assert_eq!(fuse(chain(("Div", "sqrt2"), false, "third"), &["y"]).len(), 5);
        assert_eq!(fuse(chain(("Div", "sqrt2"), false, "one"), &["y", "e"]).len(), 5);
    }

    /// The activations' values in f64, independently of the derivatives.
    fn value(act: &Act, x: f64) -> f64 {
        match *act {
            Act::Sigmoid => sigmoid(x),
            Act::Tanh => x.tanh(),
            Act::Elu { alpha } if x <= 0.0 => alpha as f64 * (x.exp() - 1.0),
            Act::Selu { alpha, gamma } if x <= 0.0 => gamma as f64 * alpha as f64 * x.exp_m1(),
            Act::Selu { gamma, .. } => gamma as f64 * x,
            Act::Celu { alpha } if x <= 0.0 => alpha as f64 * (x / alpha as f64).exp_m1(),
            Act::Elu { .. } | Act::Celu { .. } => x,
            Act::Softplus => softplus(x),
            Act::Mish => x * softplus(x).tanh(),
            Act::Gelu { tanh: false } => 0.5 * x * erfc(-x / std::f64::consts::SQRT_2),
            Act::Gelu { tanh: true } => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
            }
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            _ => unreachable!(),
        }
    }

    #[test]
    fn smooth_derivatives_match_central_differences_in_f64() {
        let acts = [
            Act::Sigmoid,
            Act::Tanh,
            Act::Elu { alpha: 0.7 },
            Act::Selu {
                alpha: 1.67326,
                gamma: 1.0507,
            },
            Act::Celu { alpha: 0.5 },
            Act::Softplus,
            Act::Mish,
            Act::Gelu { tanh: false },
            Act::Gelu { tanh: true },
            Act::HardSwish,
        ];
        // points away from the kinks at 0 and +-3; h = 1e-5 in f64 gives a
        // central-difference error ~h^2 f''' ~ 1e-10 plus rounding 1e-16 / h ~ 1e-11;
        // the f32 result of `derivative` rounds to ~6e-8 relative; the erfc fit is
        // good to 1.2e-7 relative; so 1e-6 absolute leaves ample margin.
        for act in &acts {
            for &x in &[-4.5f32, -2.25, -0.8, -0.1, 0.3, 1.7, 2.9, 3.5] {
                let h = 1e-5;
                let xd = x as f64;
                let fd = (value(act, xd + h) - value(act, xd - h)) / (2.0 * h);
                let d = act.derivative(x) as f64;
                assert!((d - fd).abs() < 1e-6, "{act:?} at {x}: {d} vs {fd}");
            }
        }
    }

    #[test]
    fn gradient_in_place_equals_the_gradient() {
        // kinks, both sides, large enough for the parallel path
        let n = 40_000;
        let x = ArrayD::from_shape_fn(vec![n], |i| (i[0] % 17) as f32 - 8.0);
        let g = ArrayD::from_shape_fn(vec![n], |i| (i[0] % 5) as f32 - 2.0);
        let acts = [
            Act::Identity,
            Act::Relu,
            Act::Clip { min: 0.0, max: 6.0 },
            Act::Clip { min: -1.0, max: 1.0 },
            Act::LeakyRelu { alpha: 0.1 },
        ];
        for act in acts {
            for guided in [false, true] {
                let want = act.gradient(&x, &g, guided).unwrap();
                let mut got = g.clone();
                assert!(act.gradient_in_place(&x, &mut got, guided).unwrap());
                assert_eq!(got, want, "{act:?} guided {guided}");
            }
        }
        let mut got = g.clone();
        assert!(!Act::Sigmoid.gradient_in_place(&x, &mut got, false).unwrap());
        assert_eq!(got, g, "untouched where not in place");
        let short = ArrayD::zeros(vec![3]);
        assert!(Act::Relu.gradient_in_place(&short, &mut got, false).is_err());
    }

    #[test]
    fn kinks_follow_pytorch_and_guided_stops_negative_gradients() {
        let x = ArrayD::from_shape_vec(vec![5], vec![-1.0, 0.0, 0.5, 6.0, 7.0]).unwrap();
        let g = ArrayD::from_shape_vec(vec![5], vec![1.0, 1.0, -2.0, 1.0, 1.0]).unwrap();
        let relu = Act::Relu.gradient(&x, &g, false).unwrap();
        assert_eq!(relu.as_slice().unwrap(), &[0.0, 0.0, -2.0, 1.0, 1.0]);
        let guided = Act::Relu.gradient(&x, &g, true).unwrap();
        assert_eq!(guided.as_slice().unwrap(), &[0.0, 0.0, 0.0, 1.0, 1.0]);
        let relu6 = Act::Clip { min: 0.0, max: 6.0 };
        let r6 = relu6.gradient(&x, &g, false).unwrap();
        assert_eq!(r6.as_slice().unwrap(), &[0.0, 0.0, -2.0, 0.0, 0.0]);
        let leaky = Act::LeakyRelu { alpha: 0.1 }
            .gradient(&x, &g, true)
            .unwrap();
        assert_eq!(leaky.as_slice().unwrap(), &[0.1, 0.1, -2.0, 1.0, 1.0]);
        let err = Act::Opaque.gradient(&x, &g, false).unwrap_err();
        assert!(err.to_string().contains("not implemented"));
    }
}
