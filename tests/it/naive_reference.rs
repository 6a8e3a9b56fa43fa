//! The library's LRP against an independent, naive re-implementation.
//!
//! In the spirit of Zennit's own tests, every linear layer is rebuilt here as a
//! dense `f64` matrix `W` (input x output, over the row-major flattened
//! tensors) by an explicit loop over the definition of the operator, and each
//! rule is applied with explicit loops straight from its formula (Zennit 1.0
//! semantics, `zero_params='bias'` for every rule but epsilon and gamma, which
//! include the bias as Montavon et al. 2019 define them). No library rule,
//! layer or pooling code is used by the reference: the library only provides
//! the layers under test, the ONNX writer (`synth`), the seeded RNG and the
//! model loader/explainer under test.
//!
//! Notation: `z_j = sum_i x_i w_ij + b_j`, `R_j` the relevance at the output,
//! `stab(d) = d + 1e-6` if `d >= 0` else `d - 1e-6`.
//!
//! Tolerances (the library computes in `f32`, the reference in `f64` from the
//! very same `f32` weights and inputs, so the only difference is the library's
//! `f32` rounding):
//! - single layers: `max_i |R_lib - R_ref| <= 1e-4 * max_i |R_ref| + 1e-5 * max_i B_i`,
//!   where `B_i = sum_j |c_ij R_j / d_j| (1 + kappa_j)` is the first-order bound of
//!   the rounding error of an `f32` evaluation (`c_ij` the contribution of input
//!   `i` to output `j`, `d_j` the stabilised denominator, `kappa_j = sum_i |c_ij| / |d_j|`
//!   the condition number of that denominator; `1e-5` ~ 2^-24 times the ~100 terms
//!   summed). For well-conditioned rules (z+, alpha-beta, w^2, flat, z^B)
//!   `B_i` is about `|R_i|`, so the bound is a plain relative 1e-4; it only
//!   grows where an epsilon / gamma denominator nearly cancels.
//! - whole networks: `max_i |R_lib - R_ref| <= 1e-4 * max(max_i |R_ref|, 1e-3 |logit|)`
//!   (the floor only matters when the reference relevance is all zero).
//! - logits: `|logit_lib - logit_ref| <= 1e-4 * max(1, max |logit_ref|)`.
//!
//! Batch normalisation: the reference forward applies each BN explicitly as
//! its own op (logit check); for the LRP pass the reference folds a BN that
//! follows a conv into that conv's weights itself (f64, Zennit's
//! `MergeBatchNorm`), and treats a BN with nothing to fold into as a
//! per-channel affine linear layer of the conv class.
//!
//! Observed agreement (library vs reference): ~1e-7 relative on layers and
//! networks.
#![allow(
    // The reference deliberately uses index loops that mirror the formulas.
    clippy::needless_range_loop
)]

use std::path::{Path, PathBuf};

use lrp_heatmap::analyzers::lrp::{explain, Channels, Probes};
use lrp_heatmap::composite::{Composite, RuleParams, NAMES};
use lrp_heatmap::model::{LoadOptions, Model};
use lrp_heatmap::ops::conv::{Conv, Padding, Window};
use lrp_heatmap::ops::dense::{Affine, Dense};
use lrp_heatmap::preprocess::Normalization;
use lrp_heatmap::rules::{Bounds, LinearLayer, Rule, STABILIZER};
use lrp_testkit::synth::{he_normal, Attr, OnnxBuilder, Rng};
use ndarray::{ArrayD, IxDyn};

use crate::support::{lrp, random_rgb};

// ---------------------------------------------------------------------------
// The naive reference
// ---------------------------------------------------------------------------

/// Zennit's stabiliser (`stabilize(..., 1e-6)`), hard-coded from the spec.
const STAB: f64 = 1e-6;

/// ImageNet mean and std, hard-coded from the spec (the z^B bounds are
/// `low = (0 - mean) / std`, `high = (1 - mean) / std` per channel).
const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];

fn stab(d: f64) -> f64 {
    if d >= 0.0 {
        d + STAB
    } else {
        d - STAB
    }
}

fn pos(v: f64) -> f64 {
    v.max(0.0)
}

fn neg(v: f64) -> f64 {
    v.min(0.0)
}

/// The rules of the reference (own type, parameters in `f64`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum RefRule {
    Epsilon(f64),
    AlphaBeta(f64, f64),
    Gamma(f64),
    WSquare,
    Flat,
    ZBox,
}

/// z+ is alpha-beta with alpha 1, beta 0.
const ZPLUS: RefRule = RefRule::AlphaBeta(1.0, 0.0);

/// The reference rule matching a library rule (parameters only).
fn ref_rule_of(rule: Rule) -> RefRule {
    match rule {
        Rule::Epsilon { epsilon } => RefRule::Epsilon(epsilon as f64),
        Rule::ZPlus => ZPLUS,
        Rule::AlphaBeta { alpha, beta } => RefRule::AlphaBeta(alpha as f64, beta as f64),
        Rule::Gamma { gamma } => RefRule::Gamma(gamma as f64),
        Rule::WSquare => RefRule::WSquare,
        Rule::Flat => RefRule::Flat,
        Rule::ZBox => RefRule::ZBox,
    }
}

/// A linear layer as a dense matrix over flattened (row-major) tensors.
#[derive(Clone, Debug)]
struct RefLinear {
    n_in: usize,
    n_out: usize,
    /// `w[i * n_out + j]`: weight from input `i` to output `j`.
    w: Vec<f64>,
    /// 1 where input `i` is a real (non-padding) input of output `j`.
    conn: Vec<f64>,
    /// Bias of each output.
    b: Vec<f64>,
}

impl RefLinear {
    fn new(n_in: usize, n_out: usize) -> Self {
        RefLinear {
            n_in,
            n_out,
            w: vec![0.0; n_in * n_out],
            conn: vec![0.0; n_in * n_out],
            b: vec![0.0; n_out],
        }
    }

    fn w(&self, i: usize, j: usize) -> f64 {
        self.w[i * self.n_out + j]
    }

    fn set(&mut self, i: usize, j: usize, w: f64) {
        assert_eq!(
            self.conn[i * self.n_out + j],
            0.0,
            "reference builder: input {i} reaches output {j} twice"
        );
        self.w[i * self.n_out + j] = w;
        self.conn[i * self.n_out + j] = 1.0;
    }

    /// `z_j = sum_i x_i w_ij + b_j`.
    fn forward(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(x.len(), self.n_in);
        let mut z = self.b.clone();
        for j in 0..self.n_out {
            for i in 0..self.n_in {
                z[j] += x[i] * self.w(i, j);
            }
        }
        z
    }
}

/// The reference relevance at a layer's input, with the rounding-error bound
/// `B_i` described at the top of the file.
struct RefOut {
    r: Vec<f64>,
    bound: Vec<f64>,
}

/// `R_i = sum_j c(i, j) / stab(sum_i' c(i', j)) R_j`.
fn normalised(l: &RefLinear, r: &[f64], c: impl Fn(usize, usize) -> f64) -> RefOut {
    let mut den = vec![0.0; l.n_out];
    let mut abs = vec![0.0; l.n_out];
    for j in 0..l.n_out {
        for i in 0..l.n_in {
            den[j] += c(i, j);
            abs[j] += c(i, j).abs();
        }
    }
    let mut out = vec![0.0; l.n_in];
    let mut bound = vec![0.0; l.n_in];
    for i in 0..l.n_in {
        for j in 0..l.n_out {
            let d = stab(den[j]);
            out[i] += c(i, j) / d * r[j];
            bound[i] += (c(i, j) / d * r[j]).abs() * (1.0 + abs[j] / d.abs());
        }
    }
    RefOut { r: out, bound }
}

/// Applies `rule` to the layer `l` with input `x` and output relevance `r`.
fn ref_rule(
    rule: RefRule,
    l: &RefLinear,
    x: &[f64],
    r: &[f64],
    bounds: Option<(&[f64], &[f64])>,
) -> RefOut {
    assert_eq!(x.len(), l.n_in);
    assert_eq!(r.len(), l.n_out);
    match rule {
        RefRule::Epsilon(eps) => {
            // R_i = x_i sum_j w_ij R_j / (z_j + eps sign(z_j)), sign(0) = +1, bias included;
            // a zero denominator (eps = 0, z = 0) gives zero.
            let z = l.forward(x);
            let mut out = vec![0.0; l.n_in];
            let mut bound = vec![0.0; l.n_in];
            for j in 0..l.n_out {
                let d = if z[j] >= 0.0 { z[j] + eps } else { z[j] - eps };
                if d == 0.0 {
                    continue;
                }
                let mut abs = l.b[j].abs();
                for i in 0..l.n_in {
                    abs += (x[i] * l.w(i, j)).abs();
                }
                for i in 0..l.n_in {
                    out[i] += x[i] * l.w(i, j) * r[j] / d;
                    bound[i] += (x[i] * l.w(i, j) * r[j] / d).abs() * (1.0 + abs / d.abs());
                }
            }
            RefOut { r: out, bound }
        }
        RefRule::AlphaBeta(alpha, beta) => {
            // alpha * z+ term - beta * z- term, bias excluded:
            // z+_ij = x_i+ w_ij+ + x_i- w_ij-, z-_ij = x_i+ w_ij- + x_i- w_ij+.
            let p = normalised(l, r, |i, j| {
                pos(x[i]) * pos(l.w(i, j)) + neg(x[i]) * neg(l.w(i, j))
            });
            let n = normalised(l, r, |i, j| {
                pos(x[i]) * neg(l.w(i, j)) + neg(x[i]) * pos(l.w(i, j))
            });
            RefOut {
                r: (0..l.n_in)
                    .map(|i| alpha * p.r[i] - beta * n.r[i])
                    .collect(),
                bound: (0..l.n_in)
                    .map(|i| alpha * p.bound[i] + beta * n.bound[i])
                    .collect(),
            }
        }
        RefRule::Gamma(g) => {
            // Montavon et al. 2019 (Zennit's Gamma(), bias included): the sign of
            // the plain output z_j (bias included) picks the weights,
            //   z_j > 0: rho(w) = w + g w+ for x_i > 0, w + g w- for x_i < 0, bias b + g b+
            //   z_j < 0: rho(w) = w + g w- for x_i > 0, w + g w+ for x_i < 0, bias b + g b-
            //   R_i = sum_j x_i rho(w_ij) / stab(sum_i' x_i' rho(w_i'j) + rho(b_j)) R_j,
            // and outputs with z_j = 0 give nothing.
            let z = l.forward(x);
            let rho = |i: usize, j: usize| -> f64 {
                let w = l.w(i, j);
                let (up, down) = (w + g * pos(w), w + g * neg(w));
                match (z[j] > 0.0, x[i] > 0.0) {
                    (true, true) | (false, false) => up,
                    (true, false) | (false, true) => down,
                }
            };
            let mut out = vec![0.0; l.n_in];
            let mut bound = vec![0.0; l.n_in];
            for j in 0..l.n_out {
                if z[j] == 0.0 {
                    continue;
                }
                let b = l.b[j];
                let rho_b = if z[j] > 0.0 {
                    b + g * pos(b)
                } else {
                    b + g * neg(b)
                };
                let (mut den, mut abs) = (rho_b, rho_b.abs());
                for i in 0..l.n_in {
                    den += x[i] * rho(i, j);
                    abs += (x[i] * rho(i, j)).abs();
                }
                let d = stab(den);
                for i in 0..l.n_in {
                    let c = x[i] * rho(i, j) / d * r[j];
                    out[i] += c;
                    bound[i] += c.abs() * (1.0 + abs / d.abs());
                }
            }
            RefOut { r: out, bound }
        }
        RefRule::WSquare => normalised(l, r, |i, j| l.w(i, j) * l.w(i, j)),
        RefRule::Flat => normalised(l, r, |i, j| l.conn[i * l.n_out + j]),
        RefRule::ZBox => {
            let (low, high) = bounds.expect("zbox needs bounds");
            normalised(l, r, |i, j| {
                let w = l.w(i, j);
                x[i] * w - low[i] * pos(w) - high[i] * neg(w)
            })
        }
    }
}

/// `(begin, end)` padding of `auto_pad = SAME_UPPER / SAME_LOWER` (ONNX spec):
/// output `ceil(size / s)`, total padding `max(0, (out - 1) s + d (k - 1) + 1 - size)`,
/// the odd pixel at the end (upper) or at the start (lower).
fn same_pads(size: usize, k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + d * (k - 1) + 1).saturating_sub(size);
    if upper {
        (total / 2, total - total / 2)
    } else {
        (total - total / 2, total / 2)
    }
}

/// The dense matrix of a 2-D convolution (batch 1), by a loop over its definition:
/// `z[m, oy, ox] = b[m] + sum_{ci, ki, kj} x[g cg + ci, oy sy + ki dy - top, ox sx + kj dx - left] w[m, ci, ki, kj]`
/// with `g = m / (M / group)`; taps that fall in the padding read zero.
/// Returns the layer and the output shape `[M, OH, OW]`.
fn conv_ref(
    weight: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    in_chw: [usize; 3],
    strides: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
    group: usize,
) -> (RefLinear, [usize; 3]) {
    let [c, h, wd] = in_chw;
    let ws = weight.shape();
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    assert_eq!(cg * group, c);
    let mg = m / group;
    let oh = (h + pads[0] + pads[2] - (dil[0] * (kh - 1) + 1)) / strides[0] + 1;
    let ow = (wd + pads[1] + pads[3] - (dil[1] * (kw - 1) + 1)) / strides[1] + 1;
    let mut l = RefLinear::new(c * h * wd, m * oh * ow);
    for mo in 0..m {
        let gi = mo / mg;
        for oy in 0..oh {
            for ox in 0..ow {
                let j = (mo * oh + oy) * ow + ox;
                l.b[j] = bias.map_or(0.0, |b| b[[mo]] as f64);
                for ci in 0..cg {
                    let cin = gi * cg + ci;
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let iy = (oy * strides[0] + ki * dil[0]) as isize - pads[0] as isize;
                            let ix = (ox * strides[1] + kj * dil[1]) as isize - pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let i = (cin * h + iy as usize) * wd + ix as usize;
                            l.set(i, j, weight[[mo, ci, ki, kj]] as f64);
                        }
                    }
                }
            }
        }
    }
    (l, [m, oh, ow])
}

/// The dense matrix of `z = x W^T + b` (`W` is `[M, K]`) on `rows` rows.
fn dense_ref(weight: &ArrayD<f32>, bias: Option<&ArrayD<f32>>, rows: usize) -> RefLinear {
    let (m, k) = (weight.shape()[0], weight.shape()[1]);
    let mut l = RefLinear::new(rows * k, rows * m);
    for row in 0..rows {
        for o in 0..m {
            let j = row * m + o;
            l.b[j] = bias.map_or(0.0, |b| b[[o]] as f64);
            for i in 0..k {
                l.set(row * k + i, j, weight[[o, i]] as f64);
            }
        }
    }
    l
}

/// The (diagonal) matrix of `z[n, c, ...] = x[n, c, ...] s[c] + t[c]`.
fn affine_ref(scale: &[f64], shift: &[f64], shape: &[usize]) -> RefLinear {
    let (n, c) = (shape[0], shape[1]);
    let plane: usize = shape[2..].iter().product();
    let len = n * c * plane;
    let mut l = RefLinear::new(len, len);
    for k in 0..len {
        let ch = (k / plane) % c;
        l.set(k, k, scale[ch]);
        l.b[k] = shift[ch];
    }
    l
}

/// The same layer applied to each of `n` stacked samples (block-diagonal).
fn batched(l: &RefLinear, n: usize) -> RefLinear {
    let mut out = RefLinear::new(n * l.n_in, n * l.n_out);
    for b in 0..n {
        for j in 0..l.n_out {
            out.b[b * l.n_out + j] = l.b[j];
            for i in 0..l.n_in {
                if l.conn[i * l.n_out + j] != 0.0 {
                    out.set(b * l.n_in + i, b * l.n_out + j, l.w(i, j));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn to64(a: &ArrayD<f32>) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
}

fn uniform(rng: &mut Rng, lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(lo, hi)).collect()
}

/// Mixed-sign values in [-1, 1) with about one exact zero in six (as after a ReLU).
fn mixed(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.uniform_range(-1.0, 1.0);
            if rng.uniform() < 1.0 / 6.0 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, &x| m.max(x.abs()))
}

/// `(max |lib - ref|, its index)`, NaN counting as infinitely far.
fn max_diff(lib: &[f32], reference: &[f64]) -> (f64, usize) {
    assert_eq!(lib.len(), reference.len(), "length mismatch");
    let mut worst = (0.0, 0);
    for (k, (&a, &b)) in lib.iter().zip(reference).enumerate() {
        let d = if a.is_finite() {
            (a as f64 - b).abs()
        } else {
            f64::INFINITY
        };
        if d > worst.0 || (d.is_nan() && !worst.0.is_nan()) {
            worst = (d, k);
        }
    }
    worst
}

// ---------------------------------------------------------------------------
// 1. Single layers
// ---------------------------------------------------------------------------

struct LayerCase {
    name: String,
    layer: Box<dyn LinearLayer>,
    reference: RefLinear,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    name: &str,
    rng: &mut Rng,
    c: usize,
    m: usize,
    kernel: [usize; 2],
    hw: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
    group: usize,
    with_bias: bool,
) -> LayerCase {
    let cg = c / group;
    let fan_in = cg * kernel[0] * kernel[1];
    let mut wv = he_normal(rng, fan_in, m * fan_in);
    // An exact zero weight: flat must still count this (real) connection.
    let k = 1.min(wv.len() - 1);
    wv[k] = 0.0;
    let weight = arr(&[m, cg, kernel[0], kernel[1]], wv);
    let bias = with_bias.then(|| arr(&[m], uniform(rng, -0.3, 0.3, m)));
    let pads = match padding {
        Padding::Explicit(p) => p,
        Padding::SameUpper | Padding::SameLower => {
            let upper = padding == Padding::SameUpper;
            let (t, b) = same_pads(hw[0], kernel[0], strides[0], dilations[0], upper);
            let (l, r) = same_pads(hw[1], kernel[1], strides[1], dilations[1], upper);
            [t, l, b, r]
        }
    };
    let (reference, out) = conv_ref(
        &weight,
        bias.as_ref(),
        [c, hw[0], hw[1]],
        strides,
        dilations,
        pads,
        group,
    );
    let layer = Conv {
        weight,
        bias,
        window: Window {
            kernel,
            strides,
            dilations,
            padding,
        },
        group,
    };
    LayerCase {
        name: name.to_string(),
        layer: Box::new(layer),
        reference,
        in_shape: vec![1, c, hw[0], hw[1]],
        out_shape: vec![1, out[0], out[1], out[2]],
    }
}

/// `conv_case` on a batch of `n` images.
fn batched_case(mut case: LayerCase, n: usize) -> LayerCase {
    case.reference = batched(&case.reference, n);
    case.in_shape[0] = n;
    case.out_shape[0] = n;
    case.name = format!("{}, batch {n}", case.name);
    case
}

fn dense_case(name: &str, rng: &mut Rng, rows: usize, k: usize, m: usize) -> LayerCase {
    let weight = arr(&[m, k], he_normal(rng, k, m * k));
    let bias = Some(arr(&[m], uniform(rng, -0.3, 0.3, m)));
    let reference = dense_ref(&weight, bias.as_ref(), rows);
    LayerCase {
        name: name.to_string(),
        layer: Box::new(Dense { weight, bias }),
        reference,
        in_shape: vec![rows, k],
        out_shape: vec![rows, m],
    }
}

fn affine_case(name: &str, rng: &mut Rng, shape: &[usize]) -> LayerCase {
    let c = shape[1];
    // Scales of both signs and magnitudes away from zero.
    let scale: Vec<f32> = (0..c)
        .map(|k| if k % 2 == 0 { 1.0 } else { -1.0 } * rng.uniform_range(0.5, 1.5))
        .collect();
    let shift = uniform(rng, -0.3, 0.3, c);
    let reference = affine_ref(
        &scale.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &shift.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        shape,
    );
    LayerCase {
        name: name.to_string(),
        layer: Box::new(Affine {
            weight: arr(&[c], scale),
            bias: arr(&[c], shift),
        }),
        reference,
        in_shape: shape.to_vec(),
        out_shape: shape.to_vec(),
    }
}

fn layer_cases() -> Vec<LayerCase> {
    let mut rng = Rng::new(20240601);
    let e = |p| Padding::Explicit(p);
    vec![
        dense_case("dense 5->4 + bias", &mut rng, 1, 5, 4),
        dense_case("dense 5->4 + bias, 2 rows", &mut rng, 2, 5, 4),
        conv_case(
            "conv 2->3 3x3 on 5x5, pads 1",
            &mut rng,
            2,
            3,
            [3, 3],
            [5, 5],
            [1, 1],
            [1, 1],
            e([1; 4]),
            1,
            true,
        ),
        conv_case(
            "conv 2->3 3x3 on 7x6, stride 2, pads [0,1,1,0], dilation [2,1]",
            &mut rng,
            2,
            3,
            [3, 3],
            [7, 6],
            [2, 2],
            [2, 1],
            e([0, 1, 1, 0]),
            1,
            true,
        ),
        conv_case(
            "grouped conv 4->6, group 2, 3x3 on 4x5, pads 1",
            &mut rng,
            4,
            6,
            [3, 3],
            [4, 5],
            [1, 1],
            [1, 1],
            e([1; 4]),
            2,
            true,
        ),
        conv_case(
            "depthwise conv 3->3, group 3, 3x3 on 5x4, pads 1, no bias",
            &mut rng,
            3,
            3,
            [3, 3],
            [5, 4],
            [1, 1],
            [1, 1],
            e([1; 4]),
            3,
            false,
        ),
        conv_case(
            "1x1 conv 3->4 on 4x4",
            &mut rng,
            3,
            4,
            [1, 1],
            [4, 4],
            [1, 1],
            [1, 1],
            e([0; 4]),
            1,
            true,
        ),
        conv_case(
            "1x1 conv 3->2 on 5x5, stride 2",
            &mut rng,
            3,
            2,
            [1, 1],
            [5, 5],
            [2, 2],
            [1, 1],
            e([0; 4]),
            1,
            true,
        ),
        conv_case(
            "conv 3->2 3x3 on 5x6, stride 2, SAME_UPPER",
            &mut rng,
            3,
            2,
            [3, 3],
            [5, 6],
            [2, 2],
            [1, 1],
            Padding::SameUpper,
            1,
            true,
        ),
        conv_case(
            "conv 2->2 2x2 on 4x4, SAME_LOWER",
            &mut rng,
            2,
            2,
            [2, 2],
            [4, 4],
            [1, 1],
            [1, 1],
            Padding::SameLower,
            1,
            true,
        ),
        affine_case("affine per-channel [1,3,3,2]", &mut rng, &[1, 3, 3, 2]),
        // Extra geometry: batches, large pads with dilation, mixed strides,
        // non-square kernels, depthwise with channel multiplier 2.
        batched_case(
            conv_case(
                "conv 2->3 3x3 on 5x5, pads 1",
                &mut rng,
                2,
                3,
                [3, 3],
                [5, 5],
                [1, 1],
                [1, 1],
                e([1; 4]),
                1,
                true,
            ),
            2,
        ),
        batched_case(
            conv_case(
                "grouped conv 4->2, group 2, 3x3 on 4x4",
                &mut rng,
                4,
                2,
                [3, 3],
                [4, 4],
                [1, 1],
                [1, 1],
                e([1; 4]),
                2,
                true,
            ),
            2,
        ),
        conv_case(
            "conv 2->3 3x3 on 6x7, dilation 2, pads 2, strides [1,2]",
            &mut rng,
            2,
            3,
            [3, 3],
            [6, 7],
            [1, 2],
            [2, 2],
            e([2; 4]),
            1,
            true,
        ),
        conv_case(
            "conv 2->2 1x3 on 4x5, SAME_UPPER",
            &mut rng,
            2,
            2,
            [1, 3],
            [4, 5],
            [1, 1],
            [1, 1],
            Padding::SameUpper,
            1,
            true,
        ),
        conv_case(
            "conv 2->2 3x1 on 5x4, stride [2,1], pads [1,0,0,0]",
            &mut rng,
            2,
            2,
            [3, 1],
            [5, 4],
            [2, 1],
            [1, 1],
            e([1, 0, 0, 0]),
            1,
            true,
        ),
        conv_case(
            "depthwise conv 3->6 (multiplier 2), group 3, 3x3 on 4x4, pads 1",
            &mut rng,
            3,
            6,
            [3, 3],
            [4, 4],
            [1, 1],
            [1, 1],
            e([1; 4]),
            3,
            true,
        ),
        // 3x3, stride 1, 16+ channels in and out: the library computes these
        // (and their transposed passes) with Winograd F(2x2, 3x3)
        conv_case(
            "conv 16->16 3x3 on 7x6, pads 1 (Winograd)",
            &mut rng,
            16,
            16,
            [3, 3],
            [7, 6],
            [1, 1],
            [1, 1],
            e([1; 4]),
            1,
            true,
        ),
        batched_case(
            conv_case(
                "conv 20->17 3x3 on 5x6, pads [0,2,1,1] (Winograd)",
                &mut rng,
                20,
                17,
                [3, 3],
                [5, 6],
                [1, 1],
                [1, 1],
                e([0, 2, 1, 1]),
                1,
                true,
            ),
            2,
        ),
    ]
}

/// The rules tested on single layers (parameters of the composites and a few others).
fn layer_rules() -> Vec<Rule> {
    vec![
        Rule::Epsilon { epsilon: 0.0 },
        Rule::Epsilon { epsilon: 1e-6 },
        Rule::Epsilon { epsilon: 0.25 },
        Rule::ZPlus,
        Rule::AlphaBeta {
            alpha: 2.0,
            beta: 1.0,
        },
        Rule::AlphaBeta {
            alpha: 1.5,
            beta: 0.5,
        },
        Rule::Gamma { gamma: 0.25 },
        Rule::Gamma { gamma: 0.0 },
        Rule::WSquare,
        Rule::Flat,
        Rule::ZBox,
    ]
}

/// Inputs of the layer tests: mixed sign, all >= 0, all <= 0 and all zero.
fn layer_inputs(rng: &mut Rng, n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let m = mixed(rng, n);
    vec![
        ("mixed", m.clone()),
        ("nonneg", m.iter().map(|v| v.abs()).collect()),
        ("nonpos", m.iter().map(|v| -v.abs()).collect()),
        ("zeros", vec![0.0; n]),
    ]
}

/// Checks one rule on one layer; returns a failure message.
fn check_layer(
    case: &LayerCase,
    rule: Rule,
    input: &str,
    x: &[f32],
    r: &[f32],
    lh: (&[f32], &[f32]),
) -> Option<String> {
    let xa = arr(&case.in_shape, x.to_vec());
    let ra = arr(&case.out_shape, r.to_vec());
    let bounds = Bounds {
        low: arr(&case.in_shape, lh.0.to_vec()),
        high: arr(&case.in_shape, lh.1.to_vec()),
    };
    let lib = match rule.propagate(
        case.layer.as_ref(),
        &xa,
        &ra,
        (rule == Rule::ZBox).then_some(&bounds),
    ) {
        Ok(v) => v,
        Err(e) => {
            return Some(format!(
                "{} / {rule} / {input}: library error {e:#}",
                case.name
            ))
        }
    };
    if lib.shape() != case.in_shape.as_slice() {
        return Some(format!(
            "{} / {rule} / {input}: relevance of shape {:?}",
            case.name,
            lib.shape()
        ));
    }
    let (low, high) = (
        lh.0.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        lh.1.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let r64: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let want = ref_rule(
        ref_rule_of(rule),
        &case.reference,
        &x64,
        &r64,
        Some((&low, &high)),
    );
    let lib: Vec<f32> = lib.iter().copied().collect();
    let (d, k) = max_diff(&lib, &want.r);
    // Tolerance: see the top of the file (relative 1e-4 plus the f32 rounding bound).
    let tol = 1e-4 * max_abs(&want.r) + 1e-5 * max_abs(&want.bound);
    (d.is_nan() || d > tol).then(|| {
        format!(
            "{} / {rule} / {input}: max |diff| {d:.3e} > tol {tol:.3e} at input {k}: lib {} vs ref {} (max |R_ref| {:.3e})",
            case.name,
            lib[k],
            want.r[k],
            max_abs(&want.r)
        )
    })
}

#[test]
fn reference_forward_matches_the_layers() {
    // The reference matrices must describe the same maps as the library's
    // layers (else the rule comparisons below compare different layers).
    // Tolerance 1e-5 * max(1, |z|): f32 sums of <= 50 terms of size <= ~3.
    let mut rng = Rng::new(7);
    for case in layer_cases() {
        let x = mixed(&mut rng, case.reference.n_in);
        let xa = arr(&case.in_shape, x.clone());
        let lib = case
            .layer
            .forward(&xa, case.layer.weight(), true)
            .expect("forward");
        assert_eq!(
            lib.shape(),
            case.out_shape.as_slice(),
            "{}: output shape",
            case.name
        );
        let want = case
            .reference
            .forward(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let (d, k) = max_diff(&lib.iter().copied().collect::<Vec<_>>(), &want);
        assert!(
            d <= 1e-5 * max_abs(&want).max(1.0),
            "{}: forward differs by {d} at {k}",
            case.name
        );
    }
}

#[test]
fn every_rule_on_every_layer_matches_the_naive_reference() {
    let mut rng = Rng::new(99);
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in layer_cases() {
        let n_in = case.reference.n_in;
        let inputs = layer_inputs(&mut rng, n_in);
        for (input, x) in &inputs {
            // Incoming relevance of mixed sign, |R_j| <= 1.
            let r = uniform(&mut rng, -1.0, 1.0, case.reference.n_out);
            // z^B bounds strictly around the input: l = x - U(0.1, 1), h = x + U(0.1, 1).
            let low: Vec<f32> = x.iter().map(|&v| v - rng.uniform_range(0.1, 1.0)).collect();
            let high: Vec<f32> = x.iter().map(|&v| v + rng.uniform_range(0.1, 1.0)).collect();
            for rule in layer_rules() {
                checked += 1;
                if let Some(f) = check_layer(&case, rule, input, x, &r, (&low, &high)) {
                    failures.push(f);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} layer checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn exact_zero_outputs_follow_the_spec() {
    // Integer weights and inputs make every f32 sum exact, so output 0 has
    // z_0 = 1 - 2 + 0 + 3 - 2 (bias) = 0 exactly: LRP-0 and gamma must drop
    // its relevance, epsilon divides it by +eps (sign(0) = +1).
    // z = [0, -2, 2.5] (row 1: 2 - 2 + 0 - 3 + 1; row 2: -1 + 0 + 0 + 3 + 0.5).
    let weight = arr(
        &[3, 4],
        vec![
            1.0, 1.0, 5.0, 1.0, 2.0, 1.0, -1.0, -1.0, -1.0, 0.0, 2.0, 1.0,
        ],
    );
    let bias = Some(arr(&[3], vec![-2.0, 1.0, 0.5]));
    let reference = dense_ref(&weight, bias.as_ref(), 1);
    let case = LayerCase {
        name: "integer dense 4->3 with z_0 = 0".into(),
        layer: Box::new(Dense { weight, bias }),
        reference,
        in_shape: vec![1, 4],
        out_shape: vec![1, 3],
    };
    let x = [1.0, -2.0, 0.0, 3.0];
    let z = case
        .reference
        .forward(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert_eq!(z, vec![0.0, -2.0, 2.5], "the construction above");
    let r = [0.7, -0.4, 1.3];
    let low = [0.0, -3.0, -1.0, 2.0];
    let high = [2.0, -1.0, 1.0, 4.0];
    let mut failures = Vec::new();
    for rule in layer_rules() {
        if let Some(f) = check_layer(&case, rule, "integers", &x, &r, (&low, &high)) {
            failures.push(f);
        }
    }
    // Explicitly: LRP-0 gives exactly what outputs 1 and 2 send (output 0 dropped).
    let lib = Rule::Epsilon { epsilon: 0.0 }
        .propagate(
            case.layer.as_ref(),
            &arr(&[1, 4], x.to_vec()),
            &arr(&[1, 3], r.to_vec()),
            None,
        )
        .expect("lrp0");
    let sum: f32 = lib.sum();
    // Conservation of the outputs with z != 0 and no bias share: sum_i R_i =
    // sum_{j=1,2} R_j (z_j - b_j) / z_j = -0.4 * (-3 / -2) + 1.3 * (2 / 2.5) = 0.44.
    // Tolerance 1e-6: a few f32 products and sums of values of order 1 (exact
    // inputs, rounding only in the divisions), ~10 ulp of 0.44.
    if (sum - 0.44).abs() > 1e-6 {
        failures.push(format!(
            "lrp0 with a zero output: sum R = {sum}, expected 0.44"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn wsquare_and_flat_do_not_depend_on_the_layer_input() {
    // w^2 and flat never read x: the relevance must be bit-identical for any
    // input (and equal to the reference, which has no x in it).
    let mut rng = Rng::new(5);
    for case in layer_cases() {
        let inputs = layer_inputs(&mut rng, case.reference.n_in);
        let r = arr(
            &case.out_shape,
            uniform(&mut rng, -1.0, 1.0, case.reference.n_out),
        );
        for rule in [Rule::WSquare, Rule::Flat] {
            let outs: Vec<ArrayD<f32>> = inputs
                .iter()
                .map(|(_, x)| {
                    rule.propagate(
                        case.layer.as_ref(),
                        &arr(&case.in_shape, x.clone()),
                        &r,
                        None,
                    )
                    .expect("propagate")
                })
                .collect();
            for (k, o) in outs.iter().enumerate().skip(1) {
                assert_eq!(
                    o, &outs[0],
                    "{} / {rule}: input '{}' changes the relevance",
                    case.name, inputs[k].0
                );
            }
        }
    }
}

#[test]
fn stabilizer_and_default_parameters_are_the_spec_ones() {
    // The reference hard-codes them; a change here must be deliberate.
    assert_eq!(STABILIZER, 1e-6);
    assert_eq!(
        RuleParams::default(),
        RuleParams {
            epsilon: 1e-6,
            gamma: 0.25,
            alpha: 2.0
        }
    );
    let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        COMPOSITES.to_vec(),
        "composite list changed: extend the reference table"
    );
    // f32 rounding of values below 3: 1e-6 is ~4 ulp.
    let (lo, hi) = Normalization::default().bounds();
    for c in 0..3 {
        assert!((lo[c] as f64 - (-MEAN[c] / STD[c])).abs() < 1e-6);
        assert!((hi[c] as f64 - (1.0 - MEAN[c]) / STD[c]).abs() < 1e-6);
    }
}

// ---------------------------------------------------------------------------
// 2. Whole networks
// ---------------------------------------------------------------------------

/// Every composite name of the library.
const COMPOSITES: [&str; 18] = [
    "lrp0",
    "epsilon",
    "zplus",
    "alpha-beta",
    "gamma",
    "wsquare",
    "flat",
    "zbox",
    "epsilon-plus",
    "epsilon-plus-flat",
    "epsilon-gamma-box",
    "epsilon-alpha2-beta1",
    "deep-taylor",
    "deep-taylor-bounded",
    "attnlrp",
    "attnlrp-gamma",
    "cp-lrp",
    "cp-lrp-gamma",
];

/// Rule per layer class, from the spec (default parameters: epsilon 1e-6,
/// gamma 0.25, alpha 2 / beta 1). Per-channel affine layers are in the conv class.
struct RefComposite {
    first: Option<RefRule>,
    conv: RefRule,
    dense: RefRule,
}

fn ref_composite(name: &str) -> RefComposite {
    let eps = RefRule::Epsilon(1e-6);
    let gamma = RefRule::Gamma(0.25);
    let ab = RefRule::AlphaBeta(2.0, 1.0);
    let all = |r| RefComposite {
        first: None,
        conv: r,
        dense: r,
    };
    let c = |first, conv, dense| RefComposite { first, conv, dense };
    match name {
        "lrp0" => all(RefRule::Epsilon(0.0)),
        "epsilon" => all(eps),
        "zplus" => all(ZPLUS),
        "alpha-beta" => all(ab),
        "gamma" => all(gamma),
        "wsquare" => all(RefRule::WSquare),
        "flat" => all(RefRule::Flat),
        "zbox" => c(Some(RefRule::ZBox), ZPLUS, ZPLUS),
        "epsilon-plus" => c(None, ZPLUS, eps),
        "epsilon-plus-flat" => c(Some(RefRule::Flat), ZPLUS, eps),
        "epsilon-gamma-box" => c(Some(RefRule::ZBox), gamma, eps),
        "epsilon-alpha2-beta1" => c(None, ab, eps),
        "deep-taylor" => c(Some(RefRule::WSquare), ZPLUS, ZPLUS),
        "deep-taylor-bounded" => c(Some(RefRule::ZBox), ZPLUS, ZPLUS),
        // the transformer composites: their attention rules have no
        // operator on these networks (tests/it/vit.rs has their reference)
        "attnlrp" | "cp-lrp" => all(eps),
        "attnlrp-gamma" | "cp-lrp-gamma" => all(gamma),
        other => panic!("no reference for composite {other}"),
    }
}

/// A node of the reference network; node `k` writes value `k + 1`, value 0 is the input.
#[derive(Clone, Debug)]
enum RefOp {
    Linear {
        layer: RefLinear,
        dense: bool,
    },
    /// `y = gamma (x - mean) / sqrt(var + eps) + beta` per channel (forward only).
    BatchNorm {
        gamma: Vec<f64>,
        beta: Vec<f64>,
        mean: Vec<f64>,
        var: Vec<f64>,
        eps: f64,
        plane: usize,
    },
    Relu,
    /// Input indices of each output's window (row-major window order).
    MaxPool(Vec<Vec<usize>>),
    /// Input indices of each output's window (real inputs only) and the
    /// divisor `n_j` of the average.
    AvgPool(Vec<Vec<usize>>, Vec<f64>),
    Add,
    Identity,
    /// Output `j` copies element `i` of input slot `k` (`Some((k, i))`) or is
    /// `fill` (concat, pad, resize, transpose): relevance to what it copies.
    Copy {
        src: Vec<Option<(usize, usize)>>,
        fill: f64,
    },
    /// `y = x s + t` elementwise (arithmetic with constants): relevance passes.
    Scale {
        s: Vec<f64>,
        t: Vec<f64>,
    },
    /// Elementwise activation: relevance passes.
    Act(RefAct),
    /// `y_j = x_j g_{idx_j}` with inputs `[x, g]`: all relevance to `x`, none to `g`.
    Gate(Vec<usize>),
}

/// Elementwise activations (forward only), from their ONNX definitions.
#[derive(Clone, Copy, Debug)]
enum RefAct {
    Clip(f64, f64),
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    HardSwish,
    HardSigmoid(f64, f64),
}

fn ref_act(a: RefAct, x: f64) -> f64 {
    match a {
        RefAct::Clip(lo, hi) => x.max(lo).min(hi),
        RefAct::LeakyRelu(alpha) => {
            if x >= 0.0 {
                x
            } else {
                alpha * x
            }
        }
        RefAct::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        RefAct::Tanh => x.tanh(),
        RefAct::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        RefAct::HardSigmoid(alpha, beta) => (alpha * x + beta).clamp(0.0, 1.0),
    }
}

#[derive(Clone, Debug)]
struct RefNode {
    op: RefOp,
    inputs: Vec<usize>,
}

/// All values of the reference network, `f64`.
fn ref_forward(nodes: &[RefNode], x: Vec<f64>) -> Vec<Vec<f64>> {
    let mut v = vec![x];
    for n in nodes {
        let a = &v[n.inputs[0]];
        let out = match &n.op {
            RefOp::Linear { layer, .. } => layer.forward(a),
            RefOp::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
                plane,
            } => (0..a.len())
                .map(|k| {
                    let c = k / plane;
                    gamma[c] * (a[k] - mean[c]) / (var[c] + eps).sqrt() + beta[c]
                })
                .collect(),
            RefOp::Relu => a.iter().map(|&v| v.max(0.0)).collect(),
            RefOp::MaxPool(win) => win
                .iter()
                .map(|w| w.iter().map(|&i| a[i]).fold(f64::NEG_INFINITY, f64::max))
                .collect(),
            RefOp::AvgPool(win, n) => win
                .iter()
                .zip(n)
                .map(|(w, n)| w.iter().map(|&i| a[i]).sum::<f64>() / n)
                .collect(),
            RefOp::Add => a.iter().zip(&v[n.inputs[1]]).map(|(p, q)| p + q).collect(),
            RefOp::Identity => a.clone(),
            RefOp::Copy { src, fill } => src
                .iter()
                .map(|s| s.map_or(*fill, |(k, i)| v[n.inputs[k]][i]))
                .collect(),
            RefOp::Scale { s, t } => a
                .iter()
                .zip(s.iter().zip(t))
                .map(|(x, (s, t))| x * s + t)
                .collect(),
            RefOp::Act(f) => a.iter().map(|&x| ref_act(*f, x)).collect(),
            RefOp::Gate(idx) => a
                .iter()
                .zip(idx)
                .map(|(x, &i)| x * v[n.inputs[1]][i])
                .collect(),
        };
        v.push(out);
    }
    v
}

/// Per-channel z^B bounds of the normalised image for a value of shape
/// `[3, H, W]` or its flattened `[3 H W]` (channel-major, as `Flatten` of NCHW).
fn image_bounds(shape: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n: usize = shape.iter().product();
    assert!(
        shape[0] == 3 || shape.len() == 1,
        "z^B bounds only for the 3-channel image, got {shape:?}"
    );
    let plane = n / 3;
    let low = (0..n)
        .map(|k| (0.0 - MEAN[k / plane]) / STD[k / plane])
        .collect();
    let high = (0..n)
        .map(|k| (1.0 - MEAN[k / plane]) / STD[k / plane])
        .collect();
    (low, high)
}

/// Reference LRP: relevance of `class` (its logit) back to the input.
fn ref_lrp(
    nodes: &[RefNode],
    acts: &[Vec<f64>],
    shapes: &[Vec<usize>],
    class: usize,
    comp: &RefComposite,
    input_bounds: &(Vec<f64>, Vec<f64>),
) -> Vec<f64> {
    let out = acts.len() - 1;
    let mut start = vec![0.0; acts[out].len()];
    start[class] = acts[out][class];
    let mut all = ref_lrp_all(nodes, acts, shapes, (out, start), None, comp, input_bounds);
    all.swap_remove(0)
}

/// Where a reference backward pass starts: a value index and the relevance
/// put on it.
type RefStart = (usize, Vec<f64>);

/// `v` with zeros outside `channels` (axis 0 of a value of `shape`, i.e. the
/// model's axis 1: channels of `[C, H, W]`, neurons of `[C]`).
fn ref_mask(v: &mut [f64], shape: &[usize], channels: &[usize]) {
    let plane: usize = shape[1..].iter().product();
    for (k, e) in v.iter_mut().enumerate() {
        if !channels.contains(&(k / plane.max(1))) {
            *e = 0.0;
        }
    }
}

/// Reference LRP from `start`, with the relevance at every value (index 0
/// the input); with `concept = (value, channels)` only those channels'
/// relevance is passed on at that value (CRP's conditional relevance).
fn ref_lrp_all(
    nodes: &[RefNode],
    acts: &[Vec<f64>],
    shapes: &[Vec<usize>],
    start: RefStart,
    concept: Option<(usize, &[usize])>,
    comp: &RefComposite,
    input_bounds: &(Vec<f64>, Vec<f64>),
) -> Vec<Vec<f64>> {
    // z^B bounds of the values reached from the input through copies and
    // arithmetic with constants (in-model normalisation, transposes): each
    // node maps the interval of each element; elsewhere the image bounds.
    let mut bounds: Vec<Option<(Vec<f64>, Vec<f64>)>> = vec![Some(input_bounds.clone())];
    for n in nodes {
        let ins: Option<Vec<&(Vec<f64>, Vec<f64>)>> =
            n.inputs.iter().map(|&i| bounds[i].as_ref()).collect();
        let b = ins.and_then(|ins| match &n.op {
            RefOp::Identity => Some(ins[0].clone()),
            RefOp::Copy { src, fill } => {
                let pick = |hi: bool| -> Vec<f64> {
                    src.iter()
                        .map(|s| {
                            s.map_or(*fill, |(k, i)| if hi { ins[k].1[i] } else { ins[k].0[i] })
                        })
                        .collect()
                };
                Some((pick(false), pick(true)))
            }
            RefOp::Scale { s, t } => {
                let (lo, hi) = ins[0];
                let a: Vec<f64> = (0..lo.len()).map(|e| lo[e] * s[e] + t[e]).collect();
                let b: Vec<f64> = (0..lo.len()).map(|e| hi[e] * s[e] + t[e]).collect();
                Some((
                    a.iter().zip(&b).map(|(a, b)| a.min(*b)).collect(),
                    a.iter().zip(&b).map(|(a, b)| a.max(*b)).collect(),
                ))
            }
            _ => None,
        });
        bounds.push(b);
    }
    let mut rel: Vec<Vec<f64>> = acts.iter().map(|a| vec![0.0; a.len()]).collect();
    rel[start.0] = start.1;
    // First layers: linear layers reading the input with no linear layer in between.
    let mut raw = vec![false; acts.len()];
    raw[0] = true;
    let mut first = vec![false; nodes.len()];
    for (k, n) in nodes.iter().enumerate() {
        let reads_raw = n.inputs.iter().any(|&i| raw[i]);
        match n.op {
            RefOp::Linear { .. } => first[k] = reads_raw,
            _ => raw[k + 1] = reads_raw,
        }
    }
    for k in (0..nodes.len()).rev() {
        let n = &nodes[k];
        if let Some((v, channels)) = concept {
            if v == k + 1 {
                ref_mask(&mut rel[v], &shapes[v], channels);
            }
        }
        let r = rel[k + 1].clone();
        let i0 = n.inputs[0];
        let x = &acts[i0];
        let mut add = vec![vec![0.0; x.len()]];
        match &n.op {
            RefOp::Linear { layer, dense } => {
                let rule = match (first[k], comp.first) {
                    (true, Some(f)) => f,
                    _ if *dense => comp.dense,
                    _ => comp.conv,
                };
                let b = (rule == RefRule::ZBox).then(|| {
                    bounds[i0]
                        .clone()
                        .unwrap_or_else(|| image_bounds(&shapes[i0]))
                });
                add[0] = ref_rule(
                    rule,
                    layer,
                    x,
                    &r,
                    b.as_ref().map(|(l, h)| (l.as_slice(), h.as_slice())),
                )
                .r;
            }
            RefOp::BatchNorm { .. } => panic!("the LRP reference runs on the folded network"),
            RefOp::Relu | RefOp::Identity => add[0] = r,
            RefOp::MaxPool(win) => {
                // All of a window's relevance to its first maximum.
                for (j, w) in win.iter().enumerate() {
                    let mut best = w[0];
                    for &i in &w[1..] {
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                    add[0][best] += r[j];
                }
            }
            RefOp::AvgPool(win, n) => {
                // Norm rule: R_i = sum_j x_i (1 / n_j) R_j / stab(z_j).
                for (j, w) in win.iter().enumerate() {
                    let z: f64 = w.iter().map(|&i| x[i]).sum::<f64>() / n[j];
                    for &i in w {
                        add[0][i] += x[i] / n[j] * r[j] / stab(z);
                    }
                }
            }
            RefOp::Copy { src, .. } => {
                // all of an output's relevance to the element it copies
                add = n.inputs.iter().map(|&i| vec![0.0; acts[i].len()]).collect();
                for (j, s) in src.iter().enumerate() {
                    if let Some((k, i)) = s {
                        add[*k][*i] += r[j];
                    }
                }
            }
            RefOp::Scale { .. } | RefOp::Act(_) => add[0] = r,
            RefOp::Gate(_) => {
                // signal-take-all: the gate gets nothing
                add[0] = r;
                add.push(vec![0.0; acts[n.inputs[1]].len()]);
            }
            RefOp::Add => {
                // R_a = a R / stab(a + b), R_b = b R / stab(a + b).
                let y = &acts[n.inputs[1]];
                add.push(vec![0.0; y.len()]);
                for e in 0..x.len() {
                    let d = stab(x[e] + y[e]);
                    add[0][e] = x[e] * r[e] / d;
                    add[1][e] = y[e] * r[e] / d;
                }
            }
        }
        for (&input, a) in n.inputs.iter().zip(add) {
            for (t, v) in rel[input].iter_mut().zip(a) {
                *t += v;
            }
        }
    }
    rel
}

/// A pooling node: `k x k` window, stride `s`, pads `[top, left, bottom, right]`.
#[derive(Clone, Copy, Debug)]
struct PoolSpec {
    k: usize,
    s: usize,
    pads: [usize; 4],
    ceil: bool,
    count_include_pad: bool,
    max: bool,
}

/// Options of the generated networks.
#[derive(Clone, Copy, Debug)]
struct NetOpts {
    /// Biases on every conv and Gemm (else none at all).
    bias: bool,
    /// All-zero weights and bias in the second conv.
    dead_second_conv: bool,
}

const WITH_BIAS: NetOpts = NetOpts {
    bias: true,
    dead_second_conv: false,
};

/// Writes an ONNX model and its reference networks side by side.
struct NetBuilder {
    onnx: OnnxBuilder,
    /// Forward reference with every batch norm as its own op.
    explicit: Vec<RefNode>,
    /// LRP reference: batch norms folded into the preceding conv (as Zennit's
    /// `MergeBatchNorm`, weights scaled in f64 here) or, with nothing to fold
    /// into, a per-channel affine linear layer.
    folded: Vec<RefNode>,
    /// Shape of each value without the batch axis.
    shapes: Vec<Vec<usize>>,
    rng: Rng,
    opts: NetOpts,
    convs: usize,
    /// How the model is fed (exporter styles).
    feed: Feed,
    /// Value -> index of the linear node a constant scale / shift after it
    /// folds into (the value was written by a fold).
    folds: std::collections::HashMap<usize, usize>,
}

/// How a generated model is fed: input name and layout, the command's
/// normalisation, the input size for symbolic dims.
#[derive(Clone, Debug)]
struct Feed {
    opset: i64,
    input_name: String,
    nhwc: bool,
    mean: [f64; 3],
    std: [f64; 3],
    size: Option<[usize; 2]>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            opset: 13,
            input_name: "input".into(),
            nhwc: false,
            mean: MEAN,
            std: STD,
            size: None,
        }
    }
}

impl NetBuilder {
    fn new(seed: u64, chw: [usize; 3], opts: NetOpts) -> Self {
        let mut onnx = OnnxBuilder::new(13);
        onnx.input("input", &[1, chw[0] as i64, chw[1] as i64, chw[2] as i64]);
        NetBuilder {
            onnx,
            explicit: vec![],
            folded: vec![],
            shapes: vec![chw.to_vec()],
            rng: Rng::new(seed),
            opts,
            convs: 0,
            feed: Feed::default(),
            folds: Default::default(),
        }
    }

    fn name(v: usize) -> String {
        if v == 0 {
            "input".into()
        } else {
            format!("t{v}")
        }
    }

    fn push(
        &mut self,
        explicit: RefOp,
        folded: RefOp,
        inputs: Vec<usize>,
        shape: Vec<usize>,
    ) -> usize {
        self.explicit.push(RefNode {
            op: explicit,
            inputs: inputs.clone(),
        });
        self.folded.push(RefNode { op: folded, inputs });
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    fn chw(&self, v: usize) -> [usize; 3] {
        let s = &self.shapes[v];
        [s[0], s[1], s[2]]
    }

    /// Conv `k x k`, stride 1, pads `pad`, He-normal weights, bias in +-[0.02, 0.1].
    fn conv(&mut self, x: usize, cout: usize, k: usize, pad: usize) -> usize {
        let c = self.chw(x)[0];
        self.convs += 1;
        let dead = self.opts.dead_second_conv && self.convs == 2;
        let fan_in = c * k * k;
        let wv = if dead {
            vec![0.0; cout * fan_in]
        } else {
            he_normal(&mut self.rng, fan_in, cout * fan_in)
        };
        let bv: Option<Vec<f32>> = self.opts.bias.then(|| {
            (0..cout)
                .map(|_| {
                    if dead {
                        0.0
                    } else {
                        self.rng.uniform_range(0.02, 0.1)
                            * if self.rng.uniform() < 0.5 { -1.0 } else { 1.0 }
                    }
                })
                .collect()
        });
        self.conv_node(x, wv, bv, [cout, c, k, k], 1, pad, 1)
    }

    /// A `Conv` node with weight `wv` of shape `wshape` and bias `bv`, and
    /// its reference layer.
    #[allow(clippy::too_many_arguments)]
    fn conv_node(
        &mut self,
        x: usize,
        wv: Vec<f32>,
        bv: Option<Vec<f32>>,
        wshape: [usize; 4],
        stride: usize,
        pad: usize,
        group: usize,
    ) -> usize {
        let [c, h, w] = self.chw(x);
        let [cout, _, k, _] = wshape;
        let id = self.shapes.len();
        let mut inputs = vec![
            Self::name(x),
            self.onnx.initializer(&format!("w{id}"), &wshape, &wv),
        ];
        if let Some(b) = &bv {
            inputs.push(self.onnx.initializer(&format!("b{id}"), &[cout], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            Attr::Ints("dilations", vec![1, 1]),
            Attr::Int("group", group as i64),
            Attr::Ints("kernel_shape", vec![k as i64, k as i64]),
            Attr::Ints("pads", vec![pad as i64; 4]),
            Attr::Ints("strides", vec![stride as i64; 2]),
        ];
        self.onnx.node("Conv", &inputs, &[&Self::name(id)], attrs);
        let bias = bv.map(|b| arr(&[cout], b));
        let (layer, out) = conv_ref(
            &arr(&wshape, wv),
            bias.as_ref(),
            [c, h, w],
            [stride; 2],
            [1, 1],
            [pad; 4],
            group,
        );
        let op = RefOp::Linear {
            layer,
            dense: false,
        };
        self.push(op.clone(), op, vec![x], out.to_vec())
    }

    fn relu(&mut self, x: usize) -> usize {
        let id = self.shapes.len();
        self.onnx
            .node("Relu", &[&Self::name(x)], &[&Self::name(id)], vec![]);
        let s = self.shapes[x].clone();
        self.push(RefOp::Relu, RefOp::Relu, vec![x], s)
    }

    /// Pooling windows of `spec` on value `x`: the real input indices of each
    /// output (row-major window order), the divisor of each output for an
    /// average, and the output shape.
    fn windows(&self, x: usize, spec: &PoolSpec) -> (Vec<Vec<usize>>, Vec<f64>, Vec<usize>) {
        let [c, h, w] = self.chw(x);
        let (k, st, p) = (spec.k, spec.s, spec.pads);
        // ONNX / PyTorch output size: floor or ceil of (H + pads - k) / s + 1; in
        // ceil mode a window must start inside the input or its top/left padding.
        let out = |size: usize, begin: usize, end: usize| {
            let span = size + begin + end - k;
            let mut o = if spec.ceil {
                span.div_ceil(st) + 1
            } else {
                span / st + 1
            };
            if spec.ceil && (o - 1) * st >= size + begin {
                o -= 1;
            }
            o
        };
        let (oh, ow) = (out(h, p[0], p[2]), out(w, p[1], p[3]));
        let (mut win, mut div) = (vec![], vec![]);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (y0, x0) = (
                        (oy * st) as isize - p[0] as isize,
                        (ox * st) as isize - p[1] as isize,
                    );
                    let mut v = vec![];
                    // taps inside the padded input (count_include_pad divisor)
                    let (mut ny, mut nx) = (0, 0);
                    for i in 0..k as isize {
                        ny += usize::from(y0 + i < (h + p[2]) as isize);
                        nx += usize::from(x0 + i < (w + p[3]) as isize);
                        for j in 0..k as isize {
                            let (y, xx) = (y0 + i, x0 + j);
                            if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                                v.push((ch * h + y as usize) * w + xx as usize);
                            }
                        }
                    }
                    div.push(if spec.count_include_pad {
                        (ny * nx) as f64
                    } else {
                        v.len() as f64
                    });
                    win.push(v);
                }
            }
        }
        (win, div, vec![c, oh, ow])
    }

    fn pool(&mut self, x: usize, spec: PoolSpec) -> usize {
        let id = self.shapes.len();
        let mut attrs = vec![
            Attr::Ints("kernel_shape", vec![spec.k as i64; 2]),
            Attr::Ints("pads", spec.pads.iter().map(|&v| v as i64).collect()),
            Attr::Ints("strides", vec![spec.s as i64; 2]),
        ];
        if spec.ceil {
            attrs.push(Attr::Int("ceil_mode", 1));
        }
        if spec.count_include_pad {
            attrs.push(Attr::Int("count_include_pad", 1));
        }
        let op = if spec.max { "MaxPool" } else { "AveragePool" };
        self.onnx
            .node(op, &[&Self::name(x)], &[&Self::name(id)], attrs);
        let (win, div, shape) = self.windows(x, &spec);
        let op = if spec.max {
            RefOp::MaxPool(win)
        } else {
            RefOp::AvgPool(win, div)
        };
        self.push(op.clone(), op, vec![x], shape)
    }

    /// `k x k` pool with stride `k`, no padding.
    fn simple_pool(&mut self, x: usize, k: usize, max: bool) -> usize {
        self.pool(
            x,
            PoolSpec {
                k,
                s: k,
                pads: [0; 4],
                ceil: false,
                count_include_pad: false,
                max,
            },
        )
    }

    fn global_pool(&mut self, x: usize, max: bool) -> usize {
        let id = self.shapes.len();
        let op = if max {
            "GlobalMaxPool"
        } else {
            "GlobalAveragePool"
        };
        self.onnx
            .node(op, &[&Self::name(x)], &[&Self::name(id)], vec![]);
        let [c, h, w] = self.chw(x);
        let win: Vec<Vec<usize>> = (0..c)
            .map(|ch| (ch * h * w..(ch + 1) * h * w).collect())
            .collect();
        let op = if max {
            RefOp::MaxPool(win)
        } else {
            RefOp::AvgPool(win, vec![(h * w) as f64; c])
        };
        self.push(op.clone(), op, vec![x], vec![c, 1, 1])
    }

    fn flatten(&mut self, x: usize) -> usize {
        let id = self.shapes.len();
        self.onnx.node(
            "Flatten",
            &[&Self::name(x)],
            &[&Self::name(id)],
            vec![Attr::Int("axis", 1)],
        );
        let n = self.shapes[x].iter().product();
        self.push(RefOp::Identity, RefOp::Identity, vec![x], vec![n])
    }

    /// `Gemm(transB = 1)`: `y = x W^T + b`, W `[out, in]`.
    fn gemm(&mut self, x: usize, out: usize) -> usize {
        let k = self.shapes[x][0];
        let id = self.shapes.len();
        let wv = he_normal(&mut self.rng, k, out * k);
        let bv: Option<Vec<f32>> = self
            .opts
            .bias
            .then(|| uniform(&mut self.rng, -0.1, 0.1, out));
        let mut inputs = vec![
            Self::name(x),
            self.onnx.initializer(&format!("w{id}"), &[out, k], &wv),
        ];
        if let Some(b) = &bv {
            inputs.push(self.onnx.initializer(&format!("b{id}"), &[out], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            Attr::Float("alpha", 1.0),
            Attr::Float("beta", 1.0),
            Attr::Int("transB", 1),
        ];
        self.onnx.node("Gemm", &inputs, &[&Self::name(id)], attrs);
        let weight = arr(&[out, k], wv);
        let bias = bv.map(|b| arr(&[out], b));
        let op = RefOp::Linear {
            layer: dense_ref(&weight, bias.as_ref(), 1),
            dense: true,
        };
        self.push(op.clone(), op, vec![x], vec![out])
    }

    /// `Gemm(transB = 0, alpha, beta)`: `y = alpha x W + beta b`, W `[in, out]`
    /// (alpha, beta powers of two so that the library's scaling is exact in f32).
    fn gemm_no_trans(&mut self, x: usize, out: usize, alpha: f32, beta: f32) -> usize {
        let k = self.shapes[x][0];
        let id = self.shapes.len();
        let wv = he_normal(&mut self.rng, k, out * k);
        let bv = uniform(&mut self.rng, -0.1, 0.1, out);
        let inputs = [
            Self::name(x),
            self.onnx.initializer(&format!("w{id}"), &[k, out], &wv),
            self.onnx.initializer(&format!("b{id}"), &[out], &bv),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            Attr::Float("alpha", alpha),
            Attr::Float("beta", beta),
            Attr::Int("transB", 0),
        ];
        self.onnx.node("Gemm", &inputs, &[&Self::name(id)], attrs);
        // effective [out, in] weight alpha W^T and bias beta b
        let mut weight = ArrayD::<f32>::zeros(IxDyn(&[out, k]));
        for o in 0..out {
            for i in 0..k {
                weight[[o, i]] = alpha * wv[i * out + o];
            }
        }
        let bias = arr(&[out], bv.iter().map(|v| beta * v).collect());
        let op = RefOp::Linear {
            layer: dense_ref(&weight, Some(&bias), 1),
            dense: true,
        };
        self.push(op.clone(), op, vec![x], vec![out])
    }

    /// `MatMul(x, W [in, out])` followed by `Add(., b)` (a Keras-style dense layer;
    /// `b = 0` in a network without biases).
    fn matmul_add(&mut self, x: usize, out: usize) -> usize {
        let k = self.shapes[x][0];
        let id = self.shapes.len();
        let wv = he_normal(&mut self.rng, k, out * k);
        let mut bv = uniform(&mut self.rng, -0.1, 0.1, out);
        if !self.opts.bias {
            bv.fill(0.0);
        }
        let w = self.onnx.initializer(&format!("w{id}"), &[k, out], &wv);
        let b = self.onnx.initializer(&format!("b{id}"), &[out], &bv);
        let mm = format!("t{id}_matmul");
        self.onnx
            .node("MatMul", &[&Self::name(x), &w], &[&mm], vec![]);
        self.onnx
            .node("Add", &[&mm, &b], &[&Self::name(id)], vec![]);
        let weight = arr(
            &[out, k],
            (0..out * k).map(|e| wv[(e % k) * out + e / k]).collect(),
        );
        let op = RefOp::Linear {
            layer: dense_ref(&weight, Some(&arr(&[out], bv)), 1),
            dense: true,
        };
        self.push(op.clone(), op, vec![x], vec![out])
    }

    fn add(&mut self, a: usize, b: usize) -> usize {
        let id = self.shapes.len();
        self.onnx.node(
            "Add",
            &[&Self::name(a), &Self::name(b)],
            &[&Self::name(id)],
            vec![],
        );
        let s = self.shapes[a].clone();
        self.push(RefOp::Add, RefOp::Add, vec![a, b], s)
    }

    /// `BatchNormalization` (inference), gamma, var in [0.5, 1.5), beta, mean in [-0.1, 0.1).
    fn batch_norm(&mut self, x: usize) -> usize {
        let [c, h, w] = self.chw(x);
        let id = self.shapes.len();
        let ranges = [(0.5, 1.5), (-0.1, 0.1), (-0.1, 0.1), (0.5, 1.5)];
        let mut params: Vec<Vec<f32>> = ranges
            .iter()
            .map(|&(lo, hi)| uniform(&mut self.rng, lo, hi, c))
            .collect();
        if !self.opts.bias {
            // no shift either (beta = mean = 0): a network without any bias
            params[1].fill(0.0);
            params[2].fill(0.0);
        }
        let mut inputs = vec![Self::name(x)];
        for (p, what) in params.iter().zip(["scale", "bias", "mean", "var"]) {
            inputs.push(self.onnx.initializer(&format!("bn{id}_{what}"), &[c], p));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let eps = 1e-5f32;
        self.onnx.node(
            "BatchNormalization",
            &inputs,
            &[&Self::name(id)],
            vec![Attr::Float("epsilon", eps)],
        );
        let p64: Vec<Vec<f64>> = params
            .iter()
            .map(|p| p.iter().map(|&v| v as f64).collect())
            .collect();
        let explicit = RefOp::BatchNorm {
            gamma: p64[0].clone(),
            beta: p64[1].clone(),
            mean: p64[2].clone(),
            var: p64[3].clone(),
            eps: eps as f64,
            plane: h * w,
        };
        // y = x s + t with s = gamma / sqrt(var + eps), t = beta - mean s.
        let s: Vec<f64> = (0..c)
            .map(|k| p64[0][k] / (p64[3][k] + eps as f64).sqrt())
            .collect();
        let t: Vec<f64> = (0..c).map(|k| p64[1][k] - p64[2][k] * s[k]).collect();
        let folded = match (x > 0).then(|| &mut self.folded[x - 1].op) {
            Some(RefOp::Linear {
                layer,
                dense: false,
            }) => {
                // Fold into the conv that produced x (its only consumer is this BN):
                // w'_ij = w_ij s_c(j), b'_j = b_j s_c(j) + t_c(j). The conv then
                // writes the BN output and the BN node passes relevance on.
                let plane = layer.n_out / c;
                for j in 0..layer.n_out {
                    let ch = j / plane;
                    for i in 0..layer.n_in {
                        layer.w[i * layer.n_out + j] *= s[ch];
                    }
                    layer.b[j] = layer.b[j] * s[ch] + t[ch];
                }
                RefOp::Identity
            }
            _ => RefOp::Linear {
                layer: affine_ref(&s, &t, &[1, c, h, w]),
                dense: false,
            },
        };
        self.push(explicit, folded, vec![x], vec![c, h, w])
    }

    fn finish(self, out: usize, dir: &Path, file: &str) -> BuiltNet {
        self.finish_with(out, dir, file, false)
    }

    /// With `softmax`, the model ends in a `Softmax` whose input is the logits.
    fn finish_with(mut self, out: usize, dir: &Path, file: &str, softmax: bool) -> BuiltNet {
        let n = self.shapes[out][0];
        if softmax {
            self.onnx.node(
                "Softmax",
                &[&Self::name(out)],
                &["probabilities"],
                vec![Attr::Int("axis", 1)],
            );
            self.onnx.output("probabilities", &[1, n as i64]);
        } else {
            self.onnx.output(&Self::name(out), &[1, n as i64]);
        }
        if self.feed.input_name != "input" {
            self.onnx.rename("input", &self.feed.input_name);
        }
        let path = dir.join(file);
        self.onnx.save(&path).expect("save onnx");
        // z^B bounds of the input: (0 - mean_c) / std_c .. (1 - mean_c) / std_c
        let s0 = &self.shapes[0];
        let n: usize = s0.iter().product();
        let channel = |k: usize| {
            if self.feed.nhwc {
                k % s0[2]
            } else {
                k / (n / s0[0])
            }
        };
        let f = &self.feed;
        let input_bounds = (
            (0..n)
                .map(|k| (0.0 - f.mean[channel(k)]) / f.std[channel(k)])
                .collect(),
            (0..n)
                .map(|k| (1.0 - f.mean[channel(k)]) / f.std[channel(k)])
                .collect(),
        );
        BuiltNet {
            path,
            logits: Self::name(out),
            explicit: self.explicit,
            folded: self.folded,
            shapes: self.shapes,
            input_bounds,
            feed: self.feed,
        }
    }
}

struct BuiltNet {
    path: PathBuf,
    explicit: Vec<RefNode>,
    folded: Vec<RefNode>,
    shapes: Vec<Vec<usize>>,
    /// The logits tensor (the Softmax input when there is one).
    logits: String,
    /// z^B bounds of each input element under `feed`'s normalisation.
    input_bounds: (Vec<f64>, Vec<f64>),
    feed: Feed,
}

impl BuiltNet {
    /// The command's normalisation for this model.
    fn norm(&self) -> Normalization {
        let f = |v: [f64; 3]| v.map(|x| x as f32);
        Normalization {
            mean: f(self.feed.mean),
            std: f(self.feed.std),
        }
    }
}

/// input [1,3,8,8] -> Conv(3->4, 3x3, pad 1) + Relu -> MaxPool 2x2 -> Conv(4->4, 3x3, pad 1)
/// + Relu -> AveragePool 2x2 -> Flatten -> Gemm(16->6) + Relu -> Gemm(6->3).
fn vgg_like(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 8, 8], opts);
    let v = b.conv(0, 4, 3, 1);
    let v = b.relu(v);
    let v = b.simple_pool(v, 2, true);
    let v = b.conv(v, 4, 3, 1);
    let v = b.relu(v);
    let v = b.simple_pool(v, 2, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 6);
    let v = b.relu(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("vgg_like_{seed}.onnx"))
}

/// input [1,3,6,6] -> Conv(3->4) + Relu = a -> Conv(4->4) + Relu -> Conv(4->4) -> Add(., a)
/// -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3); all convs 3x3, pad 1.
fn residual(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 6, 6], opts);
    let v = b.conv(0, 4, 3, 1);
    let a = b.relu(v);
    let v = b.conv(a, 4, 3, 1);
    let v = b.relu(v);
    let v = b.conv(v, 4, 3, 1);
    let v = b.add(v, a);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("residual_{seed}.onnx"))
}

/// input [1,3,6,6] -> Conv(3->4) -> BatchNorm (folded) -> Relu -> MaxPool 2x2 -> BatchNorm
/// (per-channel affine: nothing to fold into) -> Conv(4->5) + Relu -> GlobalAveragePool
/// -> Flatten -> Gemm(5->3).
fn batchnorm_net(dir: &Path, seed: u64) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 6, 6], WITH_BIAS);
    let v = b.conv(0, 4, 3, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let v = b.simple_pool(v, 2, true);
    let v = b.batch_norm(v);
    let v = b.conv(v, 5, 3, 1);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("batchnorm_{seed}.onnx"))
}

/// input [1,3,6,6] -> BatchNorm (affine, the *first* layer) -> Conv(3->4) + Relu
/// -> GlobalAveragePool -> Flatten -> Gemm(4->3).
fn input_batchnorm_net(dir: &Path, seed: u64) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 6, 6], WITH_BIAS);
    let v = b.batch_norm(0);
    let v = b.conv(v, 4, 3, 1);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("input_batchnorm_{seed}.onnx"))
}

/// input [1,3,7,7] -> MaxPool 2x2 stride 1 -> Conv(3->4) + Relu (the first layer,
/// behind a pool) -> MaxPool 3x3 stride 2 ceil_mode -> Conv(4->4) + Relu -> AveragePool
/// 3x3 stride 1 pads 1 count_include_pad -> AveragePool 2x2 stride 2 pads [0,0,1,1]
/// -> MaxPool 3x3 stride 1 pads 1 (overlapping) -> GlobalMaxPool -> Flatten -> Gemm(4->3).
fn pools_net(dir: &Path, seed: u64) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 7, 7], WITH_BIAS);
    let p = |k, s, pads, ceil, count_include_pad, max| PoolSpec {
        k,
        s,
        pads,
        ceil,
        count_include_pad,
        max,
    };
    let v = b.pool(0, p(2, 1, [0; 4], false, false, true));
    let v = b.conv(v, 4, 3, 1);
    let v = b.relu(v);
    let v = b.pool(v, p(3, 2, [0; 4], true, false, true));
    let v = b.conv(v, 4, 3, 1);
    let v = b.relu(v);
    let v = b.pool(v, p(3, 1, [1; 4], false, true, false));
    let v = b.pool(v, p(2, 2, [0, 0, 1, 1], false, false, false));
    let v = b.pool(v, p(3, 1, [1; 4], false, false, true));
    let v = b.global_pool(v, true);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("pools_{seed}.onnx"))
}

/// input [1,3,4,4] -> Flatten -> Gemm(48->8) + Relu (the first layer is dense) -> Gemm(8->3).
fn dense_first_net(dir: &Path, seed: u64) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 4, 4], WITH_BIAS);
    let v = b.flatten(0);
    let v = b.gemm(v, 8);
    let v = b.relu(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("dense_first_{seed}.onnx"))
}

/// input [1,3,4,4] -> Conv(3->4) + Relu -> GlobalAveragePool -> Flatten -> Gemm(4->6,
/// transB 0, alpha 0.5, beta 2) + Relu -> MatMul(6->5) + Add(bias) + Relu -> Gemm(5->3)
/// [-> Softmax, to be skipped: the logits are its input].
fn dense_variants_net(dir: &Path, seed: u64, softmax: bool) -> BuiltNet {
    let mut b = NetBuilder::new(seed, [3, 4, 4], WITH_BIAS);
    let v = b.conv(0, 4, 3, 1);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm_no_trans(v, 6, 0.5, 2.0);
    let v = b.relu(v);
    let v = b.matmul_add(v, 5);
    let v = b.relu(v);
    let v = b.gemm(v, 3);
    b.finish_with(
        v,
        dir,
        &format!("dense_variants_{seed}_{softmax}.onnx"),
        softmax,
    )
}

/// A normalised random image `(u - mean_c) / std_c`, `u` uniform in [0, 1).
fn image(rng: &mut Rng, chw: &[usize]) -> ArrayD<f32> {
    let plane = chw[1] * chw[2];
    let v = (0..chw.iter().product::<usize>())
        .map(|k| {
            let c = k / plane;
            ((rng.uniform() as f64 - MEAN[c]) / STD[c]) as f32
        })
        .collect();
    arr(&[1, chw[0], chw[1], chw[2]], v)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (k, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = k;
        }
    }
    best
}

/// Loads `net`, runs it on `input`, explains the top class with every composite
/// and compares logits and relevance with the reference. Returns failures.
fn check_network(what: &str, net: &BuiltNet, input: &ArrayD<f32>) -> Vec<String> {
    let mut failures = vec![];
    let model = LoadOptions {
        size: net.feed.size,
        ..Default::default()
    }
    .load(&net.path)
    .unwrap_or_else(|e| panic!("{what}: cannot load: {e:#}"));
    let fwd = model
        .forward(input.clone())
        .unwrap_or_else(|e| panic!("{what}: forward: {e:#}"));
    let x = to64(input);
    let explicit = ref_forward(&net.explicit, x.clone());
    let acts = ref_forward(&net.folded, x);
    let logits = explicit.last().expect("logits");
    // The fold is exact in real arithmetic: the f64 logits of the folded and
    // the explicit reference agree to f64 rounding (1e-12 relative is ample).
    let folded_logits = acts.last().expect("logits");
    for (a, b) in folded_logits.iter().zip(logits) {
        assert!(
            (a - b).abs() <= 1e-12 * max_abs(logits).max(1.0),
            "{what}: reference fold changed the logits: {a} vs {b}"
        );
    }
    let (d, k) = max_diff(&fwd.logits, logits);
    // Logit tolerance 1e-4 * max(1, max |logit|): f32 forward of a few tiny layers.
    let tol = 1e-4 * max_abs(logits).max(1.0);
    if d > tol {
        failures.push(format!(
            "{what}: logit {k}: lib {} vs ref {} (tol {tol:.1e})",
            fwd.logits[k], logits[k]
        ));
    }
    let class = argmax(&fwd.logits);
    let norm = net.norm();
    let mut report = vec![];
    for name in COMPOSITES {
        let comp = Composite::from_name(name, &RuleParams::default()).expect("composite");
        let e = match explain(
            &model.graph,
            &fwd,
            class,
            &comp,
            &norm,
            model.input.channels,
        ) {
            Ok(e) => e,
            Err(err) => {
                failures.push(format!("{what} / {name}: explain failed: {err:#}"));
                continue;
            }
        };
        let lib: Vec<f32> = e.relevance.iter().copied().collect();
        if lib.iter().any(|v| !v.is_finite()) {
            failures.push(format!("{what} / {name}: non-finite relevance"));
            continue;
        }
        let want = ref_lrp(
            &net.folded,
            &acts,
            &net.shapes,
            class,
            &ref_composite(name),
            &net.input_bounds,
        );
        let (d, k) = max_diff(&lib, &want);
        // Network tolerance: see the top of the file.
        let scale = max_abs(&want).max(1e-3 * logits[class].abs());
        let tol = 1e-4 * scale;
        report.push(format!("{name}: {:.1e}", d / scale.max(f64::MIN_POSITIVE)));
        // the ledger balances, per node and over the graph
        match e.ledger.as_ref().map(|l| l.check(1e-4)) {
            Some(Ok(())) => {}
            Some(Err(m)) => failures.push(format!("{what} / {name}: {m}")),
            None => failures.push(format!("{what} / {name}: no ledger")),
        }
        failures.extend(check_probes(
            &format!("{what} / {name}"),
            net,
            &model,
            &fwd,
            &acts,
            class,
            &comp,
            &e,
        ));
        if d.is_nan() || d > tol {
            failures.push(format!(
                "{what} / {name}: max |diff| {d:.3e} > tol {tol:.3e} at input {k}: lib {} vs ref {} (max |R_ref| {:.3e}, sum lib {:.6}, sum ref {:.6}, logit {})",
                lib[k],
                want[k],
                max_abs(&want),
                e.relevance_sum,
                want.iter().sum::<f64>(),
                e.logit
            ));
        }
    }
    eprintln!(
        "{what}: class {class}, logit {:.4}, max |diff| / scale: {}",
        fwd.logits[class],
        report.join(", ")
    );
    failures
}

/// `a` (any shape) against the reference values `want` with the network
/// tolerance (top of the file), `None` when they agree.
fn network_diff(what: &str, a: &ArrayD<f32>, want: &[f64], logit: f32) -> Option<String> {
    let lib: Vec<f32> = a.iter().copied().collect();
    if lib.len() != want.len() {
        return Some(format!(
            "{what}: {} values vs {} in the reference",
            lib.len(),
            want.len()
        ));
    }
    let (d, k) = max_diff(&lib, want);
    let scale = max_abs(want).max(1e-3 * logit.abs() as f64);
    let tol = 1e-4 * scale;
    (d.is_nan() || d > tol).then(|| {
        format!(
            "{what}: max |diff| {d:.3e} > tol {tol:.3e} at {k}: lib {} vs ref {}",
            lib[k], want[k]
        )
    })
}

/// The relevance at every inner layer, a concept and a start inside the
/// graph against the reference: `--layer` equals the reference's relevance
/// at that value; the conditional heatmaps of all channels of a layer every
/// path goes through sum to the unconditional one, and one of them equals the
/// reference's; a start at a neuron equals the reference started there. The
/// ledgers of these explanations balance too.
#[allow(clippy::too_many_arguments)]
fn check_probes(
    what: &str,
    net: &BuiltNet,
    model: &Model,
    fwd: &lrp_heatmap::model::Forward,
    acts: &[Vec<f64>],
    class: usize,
    comp: &Composite,
    plain: &lrp_heatmap::Explanation,
) -> Vec<String> {
    let mut failures = vec![];
    let name = NetBuilder::name;
    let graph = &model.graph;
    let cache = lrp_heatmap::rules::cache::WeightCache::new();
    let run = |probes: &Probes| {
        lrp_heatmap::analyzers::lrp::explain_with(
            graph,
            fwd,
            class,
            comp,
            &net.norm(),
            model.input.channels,
            &cache,
            probes,
        )
    };
    let rc = ref_composite(&comp.name);
    let out = acts.len() - 1;
    let mut start = vec![0.0; acts[out].len()];
    start[class] = acts[out][class];
    let reference = |start: RefStart, concept: Option<(usize, &[usize])>| {
        ref_lrp_all(
            &net.folded,
            acts,
            &net.shapes,
            start,
            concept,
            &rc,
            &net.input_bounds,
        )
    };
    let all = reference((out, start.clone()), None);
    let logit = plain.logit;
    let mut ledger_ok = |e: &lrp_heatmap::Explanation, how: &str| {
        if let Some(Err(m)) = e.ledger.as_ref().map(|l| l.check(1e-4)) {
            failures.push(format!("{what} {how}: {m}"));
        }
    };
    // every inner value the library's graph still has, in one pass
    let values: Vec<usize> = (1..out)
        .filter(|&v| graph.resolve(&name(v)).is_some())
        .collect();
    let probes = Probes {
        layers: values.iter().map(|&v| name(v)).collect(),
        ..Default::default()
    };
    let e = run(&probes).expect("explain with layers");
    ledger_ok(&e, "with layers");
    let mut out_failures = vec![];
    if values.is_empty() {
        out_failures.push(format!("{what}: no inner layer to compare"));
    }
    if e.relevance != plain.relevance {
        out_failures.push(format!("{what}: asking for layers changed the map"));
    }
    for (l, &v) in e.layers.iter().zip(&values) {
        if let Some(f) = network_diff(
            &format!("{what}: layer {}", l.layer),
            &l.relevance,
            &all[v],
            logit,
        ) {
            out_failures.push(f);
        }
    }
    // a layer every path from the input to the output goes through
    let cut = |v: usize| {
        net.folded[v..]
            .iter()
            .all(|n| n.inputs.iter().all(|&i| i >= v))
    };
    // a feature map (else a dense layer)
    let candidates = |rank: usize| {
        (values.iter().rev().copied())
            .find(|&v| cut(v) && net.shapes[v].len() == rank && net.shapes[v][0] >= 2)
    };
    let concept_value = candidates(3).or_else(|| candidates(1));
    if let Some(v) = concept_value {
        let channels = net.shapes[v][0];
        let mut sum = ArrayD::<f32>::zeros(plain.relevance.raw_dim());
        for c in 0..channels {
            let probes = Probes {
                concept: Some(Channels {
                    layer: name(v),
                    channels: vec![c],
                }),
                ..Default::default()
            };
            let e = run(&probes).expect("explain a concept");
            ledger_ok(&e, &format!("concept {}:{c}", name(v)));
            sum += &e.relevance;
            if c == channels - 1 {
                let want = reference((out, start.clone()), Some((v, &[c])));
                if let Some(f) = network_diff(
                    &format!("{what}: concept {}:{c}", name(v)),
                    &e.relevance,
                    &want[0],
                    logit,
                ) {
                    out_failures.push(f);
                }
            }
        }
        let unconditional: Vec<f64> = plain.relevance.iter().map(|&v| v as f64).collect();
        eprintln!(
            "{what}: {} layers, {channels} concepts of {}",
            values.len(),
            name(v)
        );
        if let Some(f) = network_diff(
            &format!("{what}: sum of the {channels} concepts of {}", name(v)),
            &sum,
            &unconditional,
            logit,
        ) {
            out_failures.push(f);
        }
    }
    if concept_value.is_none() {
        out_failures.push(format!("{what}: no layer for concepts"));
    }
    // a start at the most active neuron of the last hidden dense layer (else
    // channel 0 of the last inner layer)
    let dense = values
        .iter()
        .rev()
        .copied()
        .find(|&v| net.shapes[v].len() == 1);
    if let Some(v) = dense.or(values.last().copied()) {
        let k = if net.shapes[v].len() == 1 {
            argmax(&acts[v].iter().map(|&a| a as f32).collect::<Vec<_>>())
        } else {
            0
        };
        let probes = Probes {
            start: Some(Channels {
                layer: name(v),
                channels: vec![k],
            }),
            ..Default::default()
        };
        let e = run(&probes).expect("explain from a start");
        ledger_ok(&e, &format!("start {}:{k}", name(v)));
        let mut s = acts[v].clone();
        ref_mask(&mut s, &net.shapes[v], &[k]);
        let want = reference((v, s), None);
        if let Some(f) = network_diff(
            &format!("{what}: start {}:{k}", name(v)),
            &e.relevance,
            &want[0],
            e.logit,
        ) {
            out_failures.push(f);
        }
    }
    failures.extend(out_failures);
    failures
}

#[test]
fn vgg_like_network_matches_the_reference_for_every_composite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    for seed in [1, 2] {
        let net = vgg_like(dir.path(), seed, WITH_BIAS);
        let x = image(&mut Rng::new(100 + seed), &[3, 8, 8]);
        failures.extend(check_network(&format!("vgg-like seed {seed}"), &net, &x));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn residual_network_matches_the_reference_for_every_composite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    for seed in [3, 4] {
        let net = residual(dir.path(), seed, WITH_BIAS);
        let x = image(&mut Rng::new(100 + seed), &[3, 6, 6]);
        failures.extend(check_network(&format!("residual seed {seed}"), &net, &x));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn batchnorm_networks_match_the_reference_for_every_composite() {
    // The reference applies each BN explicitly in its forward pass (logit
    // check) and folds it itself (f64) for the LRP pass; a BN with no conv
    // before it is a per-channel affine layer of the conv class.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    let net = batchnorm_net(dir.path(), 5);
    failures.extend(check_network(
        "batchnorm",
        &net,
        &image(&mut Rng::new(105), &[3, 6, 6]),
    ));
    let net = input_batchnorm_net(dir.path(), 6);
    failures.extend(check_network(
        "input batchnorm",
        &net,
        &image(&mut Rng::new(106), &[3, 6, 6]),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pooling_network_matches_the_reference_for_every_composite() {
    // Padded, overlapping and ceil-mode max pools, padded average pools with
    // and without count_include_pad, GlobalMaxPool, and a first conv that
    // reads the input through a MaxPool (it still gets the first-layer rule).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    for seed in [7, 8] {
        let net = pools_net(dir.path(), seed);
        let x = image(&mut Rng::new(100 + seed), &[3, 7, 7]);
        failures.extend(check_network(&format!("pools seed {seed}"), &net, &x));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dense_variants_network_matches_the_reference_for_every_composite() {
    // Gemm with transB = 0 and alpha / beta, MatMul + Add (the Add becomes the bias).
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dense_variants_net(dir.path(), 10, false);
    let failures = check_network(
        "dense variants",
        &net,
        &image(&mut Rng::new(110), &[3, 4, 4]),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn trailing_softmax_is_skipped_and_the_logits_are_explained() {
    // The same network ending in a Softmax: the library must explain the
    // logits (the Softmax input), i.e. give exactly the relevance of the
    // network without the Softmax (the graph is pruned to the nodes the
    // logits depend on, not to the Softmax's output).
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dense_variants_net(dir.path(), 10, true);
    let model = Model::load(&net.path).expect("load");
    assert!(
        model.graph.skipped_softmax,
        "the trailing Softmax was not recognised"
    );
    let failures = check_network(
        "dense variants + softmax",
        &net,
        &image(&mut Rng::new(110), &[3, 4, 4]),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dense_first_layer_network_matches_the_reference_for_every_composite() {
    // The first linear layer is a Gemm on the flattened image: the z^B bounds
    // of its inputs are still per channel (element k of the flattened NCHW
    // image belongs to channel k / (H W)), not the loosest over all channels.
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dense_first_net(dir.path(), 9);
    let failures = check_network(
        "dense first layer",
        &net,
        &image(&mut Rng::new(109), &[3, 4, 4]),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. Invariants
// ---------------------------------------------------------------------------

#[test]
fn zplus_and_lrp0_conserve_relevance_without_biases() {
    // Without biases both rules are conservative layer by layer (up to the
    // 1e-6 stabiliser, relative to denominators of order 0.01..1, and f32
    // rounding): |sum R_input - logit| <= 1e-4 |logit|.
    let dir = tempfile::tempdir().expect("tempdir");
    let no_bias = NetOpts {
        bias: false,
        dead_second_conv: false,
    };
    let nets = [
        ("vgg-like", vgg_like(dir.path(), 11, no_bias), [3, 8, 8]),
        ("residual", residual(dir.path(), 12, no_bias), [3, 6, 6]),
    ];
    let mut failures = vec![];
    for (what, net, chw) in &nets {
        let model = Model::load(&net.path).expect("load");
        let fwd = model
            .forward(image(&mut Rng::new(111), chw))
            .expect("forward");
        let class = argmax(&fwd.logits);
        for name in ["zplus", "lrp0"] {
            let comp = Composite::from_name(name, &RuleParams::default()).expect("composite");
            let e = explain(
                &model.graph,
                &fwd,
                class,
                &comp,
                &Normalization::default(),
                3,
            )
            .expect("explain");
            let sum: f64 = e.relevance.iter().map(|&v| v as f64).sum();
            let logit = fwd.logits[class] as f64;
            if (sum - logit).abs() > 1e-4 * logit.abs() {
                failures.push(format!("{what} / {name}: sum R = {sum} vs logit {logit}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn zplus_relevance_is_nonnegative_for_nonnegative_input() {
    // With R = logit at the output, z+ (and z^B / w^2 below z+) only
    // distribute non-negative fractions, so every R_i has the sign of the
    // logit: sign(logit) R_i >= -1e-7 (f32 rounding of exact zeros; the
    // relevance values are of order 1e-3..1e-1). Several fixed seeds, at least
    // one of which must give a positive logit (the usual statement R_i >= 0).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut positive = 0;
    let mut failures = vec![];
    for seed in 21..25 {
        let net = vgg_like(dir.path(), seed, WITH_BIAS);
        let model = Model::load(&net.path).expect("load");
        let x = arr(
            &[1, 3, 8, 8],
            uniform(&mut Rng::new(100 + seed), 0.0, 1.0, 192),
        );
        let fwd = model.forward(x).expect("forward");
        let class = argmax(&fwd.logits);
        let sign = fwd.logits[class].signum();
        positive += usize::from(sign > 0.0);
        for name in ["zplus", "zbox", "deep-taylor", "deep-taylor-bounded"] {
            let comp = Composite::from_name(name, &RuleParams::default()).expect("composite");
            let e = explain(
                &model.graph,
                &fwd,
                class,
                &comp,
                &Normalization::default(),
                3,
            )
            .expect("explain");
            let min = e
                .relevance
                .iter()
                .map(|&v| sign * v)
                .fold(f32::INFINITY, f32::min);
            if min < -1e-7 {
                failures.push(format!(
                    "seed {seed} / {name}: relevance of the wrong sign {min} (logit {})",
                    fwd.logits[class]
                ));
            }
        }
    }
    assert!(
        positive > 0,
        "no seed gave a positive logit: the test proves too little"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn zero_input_and_dead_layer_give_finite_relevance_for_every_composite() {
    // check_network requires finite relevance and compares with the reference.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    let zeros = |chw: [usize; 3]| ArrayD::<f32>::zeros(IxDyn(&[1, chw[0], chw[1], chw[2]]));
    let net = vgg_like(dir.path(), 31, WITH_BIAS);
    failures.extend(check_network(
        "vgg-like, zero input",
        &net,
        &zeros([3, 8, 8]),
    ));
    let net = residual(dir.path(), 32, WITH_BIAS);
    failures.extend(check_network(
        "residual, zero input",
        &net,
        &zeros([3, 6, 6]),
    ));
    let net = batchnorm_net(dir.path(), 33);
    failures.extend(check_network(
        "batchnorm, zero input",
        &net,
        &zeros([3, 6, 6]),
    ));
    let dead = NetOpts {
        bias: true,
        dead_second_conv: true,
    };
    let net = vgg_like(dir.path(), 34, dead);
    failures.extend(check_network(
        "vgg-like, dead conv",
        &net,
        &image(&mut Rng::new(134), &[3, 8, 8]),
    ));
    failures.extend(check_network(
        "vgg-like, dead conv, zero input",
        &net,
        &zeros([3, 8, 8]),
    ));
    let net = residual(dir.path(), 35, dead);
    failures.extend(check_network(
        "residual, dead conv",
        &net,
        &image(&mut Rng::new(135), &[3, 6, 6]),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 4. Exporter styles: PyTorch, Keras via tf2onnx, MXNet-era zoo files
// ---------------------------------------------------------------------------
//
// Each model below has the structure a given exporter writes (see the doc
// comment of each builder), at toy size. For each one:
// - `check_network` (library API, every composite, with biases) against the
//   naive reference, which knows the new operators only from their ONNX
//   definitions: a copy map (Concat, Pad, Resize, Transpose, all relevance
//   back to the copied element), an elementwise scale (arithmetic with
//   constants, folded into the layer before it like a batch norm), activations
//   (relevance passes) and gates (all relevance to the gated activation);
// - `check_cli` runs the binary on a PNG of the model's input size (so no
//   resizing) with z+ and the network rebuilt without any bias, and checks
//   its logits against tract's plain forward of the same file, the
//   conservation of relevance and the written relevance against the reference.

impl NetBuilder {
    /// A model in an exporter's style: input declared with `declared` dims
    /// (numbers fixed, names symbolic), values of `shape` (no batch axis;
    /// `[H, W, C]` when `feed.nhwc`).
    fn styled(seed: u64, opts: NetOpts, feed: Feed, declared: &[&str], shape: Vec<usize>) -> Self {
        let mut onnx = OnnxBuilder::new(feed.opset);
        onnx.input_named_dims("input", declared);
        NetBuilder {
            onnx,
            explicit: vec![],
            folded: vec![],
            shapes: vec![shape],
            rng: Rng::new(seed),
            opts,
            convs: 0,
            feed,
            folds: Default::default(),
        }
    }

    /// Conv `k x k`, `stride`, symmetric `pad`, `group` (depthwise when it is
    /// the number of channels); He-normal weights with fan-in `C / group k k`,
    /// bias in +-[0.02, 0.1] when the network has biases.
    fn conv_g(
        &mut self,
        x: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        group: usize,
    ) -> usize {
        let c = self.chw(x)[0];
        let cg = c / group;
        let fan_in = cg * k * k;
        let mut wv = he_normal(&mut self.rng, fan_in, cout * fan_in);
        if !self.opts.bias {
            // The conservation runs (no biases) use non-negative weights as well:
            // z+ loses the relevance of an output whose contributions are all
            // negative, which happens where no ReLU follows (before a residual
            // Add, after HardSwish); with w >= 0 every output that receives
            // relevance has a positive contribution.
            wv.iter_mut().for_each(|w| *w = w.abs());
        }
        let bv: Option<Vec<f32>> = self.opts.bias.then(|| {
            (0..cout)
                .map(|_| {
                    self.rng.uniform_range(0.02, 0.1)
                        * if self.rng.uniform() < 0.5 { -1.0 } else { 1.0 }
                })
                .collect()
        });
        self.conv_node(x, wv, bv, [cout, cg, k, k], stride, pad, group)
    }

    /// An elementwise activation `op_type` with `attrs` and scalar constant inputs `extra`.
    fn act(
        &mut self,
        x: usize,
        op_type: &str,
        f: RefAct,
        attrs: Vec<Attr>,
        extra: &[f32],
    ) -> usize {
        let id = self.shapes.len();
        let mut inputs = vec![Self::name(x)];
        for (k, v) in extra.iter().enumerate() {
            inputs.push(self.onnx.initializer(&format!("a{id}_{k}"), &[], &[*v]));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.onnx.node(op_type, &inputs, &[&Self::name(id)], attrs);
        let s = self.shapes[x].clone();
        self.push(RefOp::Act(f), RefOp::Act(f), vec![x], s)
    }

    /// ReLU6 as PyTorch exports it: `Clip` with bounds as inputs (opset >= 11)
    /// or attributes.
    fn relu6(&mut self, x: usize) -> usize {
        if self.feed.opset >= 11 {
            self.act(x, "Clip", RefAct::Clip(0.0, 6.0), vec![], &[0.0, 6.0])
        } else {
            let attrs = vec![Attr::Float("min", 0.0), Attr::Float("max", 6.0)];
            self.act(x, "Clip", RefAct::Clip(0.0, 6.0), attrs, &[])
        }
    }

    /// `x op c` with a per-channel constant `c` of ONNX shape `cshape` (`[1, C, 1, 1]`
    /// for a `[C, H, W]` value, `[M]` for a vector). Folded into the linear
    /// layer that wrote `x` (directly or through earlier folds), as the
    /// library's canonization: `w' = s w`, `b' = s b + t`; elsewhere it
    /// passes relevance on.
    fn arith(&mut self, x: usize, op: &str, c: &[f32], cshape: &[usize]) -> usize {
        let id = self.shapes.len();
        let cname = self.onnx.initializer(&format!("c{id}"), cshape, c);
        self.onnx
            .node(op, &[&Self::name(x), &cname], &[&Self::name(id)], vec![]);
        let shape = self.shapes[x].clone();
        let n: usize = shape.iter().product();
        let per = n / c.len();
        let (s, t): (Vec<f64>, Vec<f64>) = (0..n)
            .map(|e| {
                let v = c[e / per] as f64;
                match op {
                    "Mul" => (v, 0.0),
                    "Div" => (1.0 / v, 0.0),
                    "Add" => (1.0, v),
                    "Sub" => (1.0, -v),
                    other => panic!("not arithmetic: {other}"),
                }
            })
            .unzip();
        let target = match x.checked_sub(1).map(|k| &self.folded[k].op) {
            Some(RefOp::Linear { .. }) => Some(x - 1),
            _ => self.folds.get(&x).copied(),
        };
        let folded = match target {
            Some(k) => {
                let RefOp::Linear { layer, .. } = &mut self.folded[k].op else {
                    unreachable!("fold target is linear")
                };
                for j in 0..layer.n_out {
                    for i in 0..layer.n_in {
                        layer.w[i * layer.n_out + j] *= s[j];
                    }
                    layer.b[j] = layer.b[j] * s[j] + t[j];
                }
                self.folds.insert(id, k);
                RefOp::Identity
            }
            None => RefOp::Scale {
                s: s.clone(),
                t: t.clone(),
            },
        };
        self.push(RefOp::Scale { s, t }, folded, vec![x], shape)
    }

    /// Per-channel constants for `arith`: +-[0.5, 1.5) for a scale, [-0.1, 0.1) for
    /// a shift (zero in a network without biases).
    fn channel_consts(&mut self, n: usize, shift: bool) -> Vec<f32> {
        if shift {
            let v = uniform(&mut self.rng, -0.1, 0.1, n);
            if self.opts.bias {
                v
            } else {
                vec![0.0; n]
            }
        } else {
            (0..n)
                .map(|_| {
                    self.rng.uniform_range(0.5, 1.5)
                        * if self.rng.uniform() < 0.25 { -1.0 } else { 1.0 }
                })
                .collect()
        }
    }

    /// `Concat` of `[C_k, H, W]` values on the channel axis.
    fn concat(&mut self, xs: &[usize]) -> usize {
        let id = self.shapes.len();
        let names: Vec<String> = xs.iter().map(|&v| Self::name(v)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.onnx.node(
            "Concat",
            &refs,
            &[&Self::name(id)],
            vec![Attr::Int("axis", 1)],
        );
        let [_, h, w] = self.chw(xs[0]);
        // the channel axis is the outermost one: the inputs follow each other
        let mut src = vec![];
        let mut c = 0;
        for (k, &v) in xs.iter().enumerate() {
            let len: usize = self.shapes[v].iter().product();
            src.extend((0..len).map(|i| Some((k, i))));
            c += self.shapes[v][0];
        }
        let op = RefOp::Copy { src, fill: 0.0 };
        self.push(op.clone(), op, xs.to_vec(), vec![c, h, w])
    }

    /// `Pad` of a `[C, H, W]` value by `p = [top, left, bottom, right]` in `mode`
    /// (constant 0, reflect or edge); pads as an attribute before opset 11, as a
    /// constant input from 11, or computed in the model (`Concat` of two
    /// constants, as an export without constant folding) with `computed`.
    fn pad(&mut self, x: usize, p: [usize; 4], mode: &str, computed: bool) -> usize {
        let [c, h, w] = self.chw(x);
        let id = self.shapes.len();
        let pads: Vec<i64> = [0, 0, p[0], p[1], 0, 0, p[2], p[3]]
            .iter()
            .map(|&v| v as i64)
            .collect();
        let mut attrs = vec![Attr::Str("mode", mode.into())];
        if self.feed.opset < 11 {
            attrs.push(Attr::Ints("pads", pads));
            self.onnx
                .node("Pad", &[&Self::name(x)], &[&Self::name(id)], attrs);
        } else {
            let pn = if computed {
                let a = self
                    .onnx
                    .initializer_i64(&format!("pads{id}_a"), &[4], &pads[..4]);
                let b = self
                    .onnx
                    .initializer_i64(&format!("pads{id}_b"), &[4], &pads[4..]);
                let pn = format!("t{id}_pads");
                self.onnx
                    .node("Concat", &[&a, &b], &[&pn], vec![Attr::Int("axis", 0)]);
                pn
            } else {
                self.onnx.initializer_i64(&format!("pads{id}"), &[8], &pads)
            };
            self.onnx
                .node("Pad", &[&Self::name(x), &pn], &[&Self::name(id)], attrs);
        }
        let (oh, ow) = (h + p[0] + p[2], w + p[1] + p[3]);
        // the source of output o on an axis of length n with `before` padding (ONNX Pad)
        let map = |o: usize, before: usize, n: usize| -> Option<usize> {
            let (i, n) = (o as isize - before as isize, n as isize);
            match mode {
                "constant" => (0..n).contains(&i).then_some(i as usize),
                "edge" => Some(i.clamp(0, n - 1) as usize),
                "reflect" => Some(if i < 0 {
                    (-i) as usize
                } else if i >= n {
                    (2 * (n - 1) - i) as usize
                } else {
                    i as usize
                }),
                other => panic!("pad mode {other}"),
            }
        };
        let mut src = vec![];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    src.push(match (map(oy, p[0], h), map(ox, p[1], w)) {
                        (Some(y), Some(xx)) => Some((0, (ch * h + y) * w + xx)),
                        _ => None,
                    });
                }
            }
        }
        let op = RefOp::Copy { src, fill: 0.0 };
        self.push(op.clone(), op, vec![x], vec![c, oh, ow])
    }

    /// `Resize` x2 nearest as PyTorch exports `Upsample(scale_factor=2)`:
    /// asymmetric coordinates, floor, constant scales `[1, 1, 2, 2]`.
    fn upsample2(&mut self, x: usize) -> usize {
        let [c, h, w] = self.chw(x);
        let id = self.shapes.len();
        let sc = self
            .onnx
            .initializer(&format!("scales{id}"), &[4], &[1.0, 1.0, 2.0, 2.0]);
        let attrs = vec![
            Attr::Str("coordinate_transformation_mode", "asymmetric".into()),
            Attr::Str("mode", "nearest".into()),
            Attr::Str("nearest_mode", "floor".into()),
        ];
        self.onnx.node(
            "Resize",
            &[&Self::name(x), "", &sc],
            &[&Self::name(id)],
            attrs,
        );
        // output (ch, oy, ox) copies (ch, floor(oy / 2), floor(ox / 2))
        let mut src = vec![];
        for ch in 0..c {
            for oy in 0..2 * h {
                for ox in 0..2 * w {
                    src.push(Some((0, (ch * h + oy / 2) * w + ox / 2)));
                }
            }
        }
        let op = RefOp::Copy { src, fill: 0.0 };
        self.push(op.clone(), op, vec![x], vec![c, 2 * h, 2 * w])
    }

    /// `Mul` of `x` by the gate `g`, of the same shape (swish) or `[C, 1, 1]`
    /// (squeeze-excitation); `gate_first` writes `Mul(g, x)`.
    fn gate(&mut self, x: usize, g: usize, gate_first: bool) -> usize {
        let id = self.shapes.len();
        let (a, b) = if gate_first { (g, x) } else { (x, g) };
        self.onnx.node(
            "Mul",
            &[&Self::name(a), &Self::name(b)],
            &[&Self::name(id)],
            vec![],
        );
        let shape = self.shapes[x].clone();
        let n: usize = shape.iter().product();
        let gl: usize = self.shapes[g].iter().product();
        let idx: Vec<usize> = (0..n).map(|e| e / (n / gl)).collect();
        self.push(
            RefOp::Gate(idx.clone()),
            RefOp::Gate(idx),
            vec![x, g],
            shape,
        )
    }

    /// `Transpose` with `perm` over the batched axes (`perm[0] == 0`).
    fn transpose(&mut self, x: usize, perm: &[usize]) -> usize {
        let id = self.shapes.len();
        self.onnx.node(
            "Transpose",
            &[&Self::name(x)],
            &[&Self::name(id)],
            vec![Attr::Ints("perm", perm.iter().map(|&p| p as i64).collect())],
        );
        let s = self.shapes[x].clone();
        let p: Vec<usize> = perm[1..].iter().map(|&a| a - 1).collect();
        // output axis k is input axis p[k]
        let out: Vec<usize> = p.iter().map(|&a| s[a]).collect();
        let strides: Vec<usize> = (0..s.len()).map(|k| s[k + 1..].iter().product()).collect();
        let n: usize = s.iter().product();
        let src = (0..n)
            .map(|o| {
                let (mut rem, mut off) = (o, 0);
                for k in (0..out.len()).rev() {
                    off += (rem % out[k]) * strides[p[k]];
                    rem /= out[k];
                }
                Some((0, off))
            })
            .collect();
        let op = RefOp::Copy { src, fill: 0.0 };
        self.push(op.clone(), op, vec![x], out)
    }

    /// tf2onnx's flatten with a dynamic batch: `Reshape(x, Concat(Gather(Shape(x),
    /// [0]), ReduceProd(Slice(Shape(x), [1], [rank]))))`, computed at run time.
    fn dynamic_flatten(&mut self, x: usize) -> usize {
        let id = self.shapes.len();
        let rank = self.shapes[x].len() as i64 + 1;
        let t = |s: &str| format!("t{id}_{s}");
        let xn = Self::name(x);
        self.onnx.node("Shape", &[&xn], &[&t("shape")], vec![]);
        let i0 = self.onnx.initializer_i64(&t("i0"), &[1], &[0]);
        self.onnx.node(
            "Gather",
            &[&t("shape"), &i0],
            &[&t("n")],
            vec![Attr::Int("axis", 0)],
        );
        let starts = self.onnx.initializer_i64(&t("starts"), &[1], &[1]);
        let ends = self.onnx.initializer_i64(&t("ends"), &[1], &[rank]);
        self.onnx.node(
            "Slice",
            &[&t("shape"), &starts, &ends],
            &[&t("rest")],
            vec![],
        );
        self.onnx.node(
            "ReduceProd",
            &[&t("rest")],
            &[&t("k")],
            vec![Attr::Int("keepdims", 1)],
        );
        self.onnx.node(
            "Concat",
            &[&t("n"), &t("k")],
            &[&t("newshape")],
            vec![Attr::Int("axis", 0)],
        );
        self.onnx.node(
            "Reshape",
            &[&xn, &t("newshape")],
            &[&Self::name(id)],
            vec![],
        );
        let n = self.shapes[x].iter().product();
        self.push(RefOp::Identity, RefOp::Identity, vec![x], vec![n])
    }

    /// Keras' `GlobalAveragePooling2D` as tf2onnx writes it: `ReduceMean` over
    /// axes 1, 2 of an NHWC value (`keepdims = 0`).
    fn reduce_mean_hw(&mut self, x: usize) -> usize {
        let (h, w, c) = (self.shapes[x][0], self.shapes[x][1], self.shapes[x][2]);
        let id = self.shapes.len();
        self.onnx.node(
            "ReduceMean",
            &[&Self::name(x)],
            &[&Self::name(id)],
            vec![Attr::Ints("axes", vec![1, 2]), Attr::Int("keepdims", 0)],
        );
        let win: Vec<Vec<usize>> = (0..c)
            .map(|ch| (0..h * w).map(|p| p * c + ch).collect())
            .collect();
        let op = RefOp::AvgPool(win, vec![(h * w) as f64; c]);
        self.push(op.clone(), op, vec![x], vec![c])
    }

    /// A node that passes its input on (`Identity`, `Dropout`).
    fn passthrough(&mut self, x: usize, op_type: &str, attrs: Vec<Attr>) -> usize {
        let id = self.shapes.len();
        self.onnx
            .node(op_type, &[&Self::name(x)], &[&Self::name(id)], attrs);
        let s = self.shapes[x].clone();
        self.push(RefOp::Identity, RefOp::Identity, vec![x], s)
    }
}

/// PyTorch / torchvision ResNet (opset 13, input `input` [batch_size, 3, 12, 12]): stem
/// Conv 3x3 + BatchNormalization (kept as a node) + Relu + MaxPool 3x3 s2 p1; a
/// BasicBlock (Conv-BN-Relu-Conv-BN, identity Add, Relu); a Bottleneck with a strided
/// downsample shortcut (1x1-BN-Relu, 3x3 s2-BN-Relu, 1x1-BN; shortcut 1x1 s2 + BN; Add,
/// Relu); GlobalAveragePool, Flatten, Gemm(transB = 1).
fn torch_resnet(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let dims = ["batch_size", "3", "12", "12"];
    let mut b = NetBuilder::styled(seed, opts, Feed::default(), &dims, vec![3, 12, 12]);
    let v = b.conv_g(0, 4, 3, 1, 1, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let p3 = |k, s, pads| PoolSpec {
        k,
        s,
        pads,
        ceil: false,
        count_include_pad: false,
        max: true,
    };
    let a = b.pool(v, p3(3, 2, [1; 4]));
    // BasicBlock
    let v = b.conv_g(a, 4, 3, 1, 1, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.batch_norm(v);
    let v = b.add(v, a);
    let a = b.relu(v);
    // Bottleneck with a downsample
    let v = b.conv_g(a, 2, 1, 1, 0, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let v = b.conv_g(v, 2, 3, 2, 1, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let v = b.conv_g(v, 8, 1, 1, 0, 1);
    let v = b.batch_norm(v);
    let sc = b.conv_g(a, 8, 1, 2, 0, 1);
    let sc = b.batch_norm(sc);
    let v = b.add(v, sc);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 5);
    b.finish(v, dir, &format!("torch_resnet_{seed}_{}.onnx", opts.bias))
}

/// PyTorch SqueezeNet / Inception (opset 13, input [1, 3, 9, 9]): ZeroPad2d (Pad) + Conv
/// 3x3 + Relu + MaxPool 3x3 s2 ceil_mode; a Fire module (squeeze 1x1 + Relu, expand 1x1
/// and 3x3 + Relu, Concat); an Inception block (1x1, 3x3 and MaxPool 3x3 s1 p1 + 1x1
/// branches, Concat of three); ReflectionPad2d with its pads computed in the model + Conv
/// 3x3 + Relu; Identity; GlobalAveragePool, Flatten, Gemm.
fn torch_concat(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let dims = ["1", "3", "9", "9"];
    let mut b = NetBuilder::styled(seed, opts, Feed::default(), &dims, vec![3, 9, 9]);
    let v = b.pad(0, [1; 4], "constant", false);
    let v = b.conv_g(v, 4, 3, 1, 0, 1);
    let v = b.relu(v);
    let pool = |k, s, pads, ceil| PoolSpec {
        k,
        s,
        pads,
        ceil,
        count_include_pad: false,
        max: true,
    };
    let v = b.pool(v, pool(3, 2, [0; 4], true));
    // Fire
    let sq = b.conv_g(v, 2, 1, 1, 0, 1);
    let sq = b.relu(sq);
    let e1 = b.conv_g(sq, 3, 1, 1, 0, 1);
    let e1 = b.relu(e1);
    let e3 = b.conv_g(sq, 3, 3, 1, 1, 1);
    let e3 = b.relu(e3);
    let v = b.concat(&[e1, e3]);
    // Inception
    let b1 = b.conv_g(v, 2, 1, 1, 0, 1);
    let b1 = b.relu(b1);
    let b2 = b.conv_g(v, 3, 3, 1, 1, 1);
    let b2 = b.relu(b2);
    let b3 = b.pool(v, pool(3, 1, [1; 4], false));
    let b3 = b.conv_g(b3, 2, 1, 1, 0, 1);
    let b3 = b.relu(b3);
    let v = b.concat(&[b1, b2, b3]);
    let v = b.pad(v, [1; 4], "reflect", true);
    let v = b.conv_g(v, 4, 3, 1, 0, 1);
    let v = b.relu(v);
    let v = b.passthrough(v, "Identity", vec![]);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("torch_concat_{seed}_{}.onnx", opts.bias))
}

/// PyTorch MobileNetV2 (opset 13, input [1, 3, 8, 8]): Conv 3x3 s2 + BatchNormalization +
/// ReLU6 (`Clip` with bounds as inputs); an inverted residual (1x1 expand + BN + ReLU6,
/// depthwise 3x3 + BN + ReLU6, 1x1 project + BN, Add without activation); a grouped 3x3
/// Conv (group 2) + BN + ReLU6; GlobalAveragePool, Flatten, Gemm.
fn torch_mobilenet(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let dims = ["1", "3", "8", "8"];
    let mut b = NetBuilder::styled(seed, opts, Feed::default(), &dims, vec![3, 8, 8]);
    let v = b.conv_g(0, 4, 3, 2, 1, 1);
    let v = b.batch_norm(v);
    let a = b.relu6(v);
    let v = b.conv_g(a, 8, 1, 1, 0, 1);
    let v = b.batch_norm(v);
    let v = b.relu6(v);
    let v = b.conv_g(v, 8, 3, 1, 1, 8);
    let v = b.batch_norm(v);
    let v = b.relu6(v);
    let v = b.conv_g(v, 4, 1, 1, 0, 1);
    let v = b.batch_norm(v);
    let v = b.add(v, a);
    let v = b.conv_g(v, 4, 3, 1, 1, 2);
    let v = b.batch_norm(v);
    let v = b.relu6(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(
        v,
        dir,
        &format!("torch_mobilenet_{seed}_{}.onnx", opts.bias),
    )
}

/// MobileNetV3 / EfficientNet style (PyTorch, opset 14 for HardSwish, input [1, 3, 8, 8]):
/// Conv + BN + HardSwish; squeeze-excitation (GlobalAveragePool, 1x1 Conv + Relu, 1x1
/// Conv + HardSigmoid, `Mul(gate, x)`); 1x1 Conv + LeakyRelu; swish as `Mul(x, Sigmoid(x))`;
/// a strided 3x3 Conv + Tanh, upsampled by Resize (nearest x2) and added to the full
/// resolution branch (proportional); Relu, GlobalAveragePool, Flatten, Gemm.
fn torch_gates(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    // raw pixels in [0, 1]: HardSwish and LeakyRelu pass negative values on, and with
    // negative activations z+ can meet outputs without a positive contribution (which
    // absorb their relevance); with non-negative inputs (and the non-negative weights of
    // the conservation run) every activation is non-negative and z+ conserves exactly
    let feed = Feed {
        opset: 14,
        mean: [0.0; 3],
        std: [1.0; 3],
        ..Feed::default()
    };
    let mut b = NetBuilder::styled(seed, opts, feed, &["1", "3", "8", "8"], vec![3, 8, 8]);
    let v = b.conv_g(0, 4, 3, 1, 1, 1);
    let v = b.batch_norm(v);
    let v = b.act(v, "HardSwish", RefAct::HardSwish, vec![], &[]);
    let p = b.global_pool(v, false);
    let s = b.conv_g(p, 2, 1, 1, 0, 1);
    let s = b.relu(s);
    let s = b.conv_g(s, 4, 1, 1, 0, 1);
    let hs = [Attr::Float("alpha", 1.0 / 6.0), Attr::Float("beta", 0.5)];
    let s = b.act(
        s,
        "HardSigmoid",
        RefAct::HardSigmoid((1.0f32 / 6.0) as f64, 0.5),
        hs.to_vec(),
        &[],
    );
    let v = b.gate(v, s, true);
    let v = b.conv_g(v, 4, 1, 1, 0, 1);
    let v = b.act(
        v,
        "LeakyRelu",
        RefAct::LeakyRelu((0.1f32) as f64),
        vec![Attr::Float("alpha", 0.1)],
        &[],
    );
    let sg = b.act(v, "Sigmoid", RefAct::Sigmoid, vec![], &[]);
    let v = b.gate(v, sg, false);
    let d = b.conv_g(v, 4, 3, 2, 1, 1);
    let d = b.act(d, "Tanh", RefAct::Tanh, vec![], &[]);
    let u = b.upsample2(d);
    let v = b.add(u, v);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("torch_gates_{seed}_{}.onnx", opts.bias))
}

/// Keras via tf2onnx (opset 13, input `input_1` [unk__42, 8, 8, 3], NHWC): Transpose to
/// NCHW; Conv + BatchNormalization written as Mul + Add by constants + Relu; MaxPool 2;
/// Conv + Relu; Transpose back to NHWC; the flatten computed at run time (Shape, Gather,
/// Slice, ReduceProd, Concat, Reshape); Dense as MatMul + Add, a BatchNormalization as
/// Mul + Add, Relu; Dense (MatMul + Add); Softmax.
fn keras_flatten(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let feed = Feed {
        input_name: "input_1".into(),
        nhwc: true,
        ..Feed::default()
    };
    let dims = ["unk__42", "8", "8", "3"];
    let mut b = NetBuilder::styled(seed, opts, feed, &dims, vec![8, 8, 3]);
    let v = b.transpose(0, &[0, 3, 1, 2]);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let s = b.channel_consts(4, false);
    let v = b.arith(v, "Mul", &s, &[1, 4, 1, 1]);
    let t = b.channel_consts(4, true);
    let v = b.arith(v, "Add", &t, &[1, 4, 1, 1]);
    let v = b.relu(v);
    let v = b.simple_pool(v, 2, true);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.transpose(v, &[0, 2, 3, 1]);
    let v = b.dynamic_flatten(v);
    let v = b.matmul_add(v, 6);
    let s = b.channel_consts(6, false);
    let v = b.arith(v, "Mul", &s, &[6]);
    let t = b.channel_consts(6, true);
    let v = b.arith(v, "Add", &t, &[6]);
    let v = b.relu(v);
    let v = b.matmul_add(v, 3);
    b.finish_with(
        v,
        dir,
        &format!("keras_flatten_{seed}_{}.onnx", opts.bias),
        true,
    )
}

/// Keras via tf2onnx with a fully convolutional body (opset 13, input `input_1`
/// [unk__1, unk__2, unk__3, 3]: batch, height and width symbolic, fed at 6x7):
/// Transpose; Conv + Relu twice; Transpose back; GlobalAveragePooling2D as ReduceMean
/// over H, W; Dense (MatMul + Add); Softmax.
fn keras_symbolic(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let feed = Feed {
        input_name: "input_1".into(),
        nhwc: true,
        size: Some([6, 7]),
        ..Feed::default()
    };
    let dims = ["unk__1", "unk__2", "unk__3", "3"];
    let mut b = NetBuilder::styled(seed, opts, feed, &dims, vec![6, 7, 3]);
    let v = b.transpose(0, &[0, 3, 1, 2]);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.conv_g(v, 5, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.transpose(v, &[0, 2, 3, 1]);
    let v = b.reduce_mean_hw(v);
    let v = b.matmul_add(v, 3);
    b.finish_with(
        v,
        dir,
        &format!("keras_symbolic_{seed}_{}.onnx", opts.bias),
        true,
    )
}

/// A model that normalises its input itself (PyTorch, opset 13, input [N, 3, H, W] all
/// symbolic but the channels, fed raw pixels in [0, 1] at 6x6): Sub(mean) and Div(std) by
/// `[1, 3, 1, 1]` constants, then Conv + Relu twice, GlobalAveragePool, Flatten, Gemm.
fn normalising(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    let feed = Feed {
        mean: [0.0; 3],
        std: [1.0; 3],
        size: Some([6, 6]),
        ..Feed::default()
    };
    let dims = ["N", "3", "H", "W"];
    let mut b = NetBuilder::styled(seed, opts, feed, &dims, vec![3, 6, 6]);
    let mean = MEAN.map(|v| v as f32);
    let std = STD.map(|v| v as f32);
    let v = b.arith(0, "Sub", &mean, &[1, 3, 1, 1]);
    let v = b.arith(v, "Div", &std, &[1, 3, 1, 1]);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.global_pool(v, false);
    let v = b.flatten(v);
    let v = b.gemm(v, 3);
    b.finish(v, dir, &format!("normalising_{seed}_{}.onnx", opts.bias))
}

/// An MXNet-era model zoo file at opset 8 or 7 (IR 3: initializers also listed as graph
/// inputs, input `data` [1, 3, 8, 8]): BatchNormalization on the data (nothing to fold
/// into: a per-channel linear layer, as in the ResNet v2 files); Conv + BN + Relu; Pad
/// (pads as an attribute) + MaxPool 2; Conv + Relu; Flatten; Gemm (transB = 1) + Relu +
/// Dropout (ratio attribute); Gemm.
fn mxnet_zoo(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    mxnet_zoo_at(dir, seed, opts, 8)
}

fn mxnet_zoo_7(dir: &Path, seed: u64, opts: NetOpts) -> BuiltNet {
    mxnet_zoo_at(dir, seed, opts, 7)
}

fn mxnet_zoo_at(dir: &Path, seed: u64, opts: NetOpts, opset: i64) -> BuiltNet {
    // raw pixels in [0, 1]: a per-channel linear first layer with positive scales keeps
    // every contribution positive, so z+ conserves relevance there as well
    let feed = Feed {
        opset,
        input_name: "data".into(),
        mean: [0.0; 3],
        std: [1.0; 3],
        ..Feed::default()
    };
    let mut b = NetBuilder::styled(seed, opts, feed, &["1", "3", "8", "8"], vec![3, 8, 8]);
    let v = b.batch_norm(0);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.batch_norm(v);
    let v = b.relu(v);
    let v = b.pad(v, [0, 0, 1, 1], "constant", false);
    let v = b.simple_pool(v, 2, true);
    let v = b.conv_g(v, 4, 3, 1, 1, 1);
    let v = b.relu(v);
    let v = b.flatten(v);
    let v = b.gemm(v, 6);
    let v = b.relu(v);
    let v = b.passthrough(v, "Dropout", vec![Attr::Float("ratio", 0.5)]);
    let v = b.gemm(v, 3);
    b.finish(
        v,
        dir,
        &format!("mxnet_zoo_{opset}_{seed}_{}.onnx", opts.bias),
    )
}

type NetFn = fn(&Path, u64, NetOpts) -> BuiltNet;

/// Every exporter style, with the seed of its model.
const STYLES: [(&str, NetFn, u64); 9] = [
    ("torchvision ResNet", torch_resnet, 41),
    ("torchvision SqueezeNet / Inception", torch_concat, 42),
    ("torchvision MobileNetV2", torch_mobilenet, 43),
    ("MobileNetV3 gates and upsampling", torch_gates, 44),
    ("Keras tf2onnx, dynamic flatten", keras_flatten, 45),
    ("Keras tf2onnx, symbolic N H W", keras_symbolic, 46),
    ("normalisation in the model", normalising, 47),
    ("MXNet zoo opset 8", mxnet_zoo, 48),
    ("MXNet zoo opset 7", mxnet_zoo_7, 49),
];

const NO_BIAS: NetOpts = NetOpts {
    bias: false,
    dead_second_conv: false,
};

/// A random input of `net` in its layout and normalisation, `(u - mean_c) / std_c`.
fn feed_image(rng: &mut Rng, net: &BuiltNet) -> ArrayD<f32> {
    let s = &net.shapes[0];
    let n: usize = s.iter().product();
    let f = &net.feed;
    let v = (0..n)
        .map(|k| {
            let c = if f.nhwc { k % s[2] } else { k / (n / s[0]) };
            ((rng.uniform() as f64 - f.mean[c]) / f.std[c]) as f32
        })
        .collect();
    let mut shape = vec![1];
    shape.extend_from_slice(s);
    arr(&shape, v)
}

#[test]
fn exporter_style_networks_match_the_reference_for_every_composite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    for (what, build, seed) in STYLES {
        let net = build(dir.path(), seed, WITH_BIAS);
        let x = feed_image(&mut Rng::new(100 + seed), &net);
        failures.extend(check_network(what, &net, &x));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs the command with z+ on a random PNG of `net`'s input size and checks
/// its logits against tract's plain forward of the same file, the
/// conservation of relevance and the written relevance against the
/// reference. Returns failures.
fn check_cli(what: &str, net: &BuiltNet, dir: &Path, seed: u64) -> Vec<String> {
    use tract_onnx::prelude::*;
    let mut failures = vec![];
    let s = &net.shapes[0];
    let (h, w) = if net.feed.nhwc {
        (s[0], s[1])
    } else {
        (s[1], s[2])
    };
    let img = random_rgb(w as u32, h as u32, seed);
    let stem = net.path.file_stem().unwrap().to_string_lossy().into_owned();
    let png = dir.join(format!("{stem}.png"));
    img.save(&png).expect("save png");
    let out = dir.join(format!("{stem}_out"));
    let f = &net.feed;
    let triple = |v: [f64; 3]| format!("{},{},{}", v[0] as f32, v[1] as f32, v[2] as f32);
    let mut args: Vec<String> = [
        png.to_str().unwrap(),
        "-m",
        net.path.to_str().unwrap(),
        "--rule",
        "zplus",
        "--json",
        "--raw",
        "--quiet",
        "-o",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--mean".into(),
        triple(f.mean),
        "--std".into(),
        triple(f.std),
    ]);
    if let Some([sh, sw]) = f.size {
        args.extend(["--input-size".into(), format!("{sh}x{sw}")]);
    }
    let o = lrp(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(0) {
        return vec![format!("{what}: exit {:?}: {stderr}", o.status.code())];
    }
    if f.size.is_some() && !stderr.contains("symbolic dimensions") {
        failures.push(format!("{what}: no note about the symbolic dims: {stderr}"));
    }
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let class = v["class"].as_u64().expect("class") as usize;
    let logit = v["logit"].as_f64().expect("logit");

    // the tensor the command fed: (p / 255 - mean_c) / std_c in f32, model layout
    let mean = f.mean.map(|x| x as f32);
    let std = f.std.map(|x| x as f32);
    let mut shape = vec![1];
    shape.extend_from_slice(s);
    let x = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        let (y, xx, c) = if f.nhwc {
            (ix[1], ix[2], ix[3])
        } else {
            (ix[2], ix[3], ix[1])
        };
        let p = img.get_pixel(xx as u32, y as u32).0[c];
        (p as f32 / 255.0 - mean[c]) / std[c]
    });

    // tract's plain forward of the same file, up to the logits
    let logits: Vec<f32> = (|| -> TractResult<Vec<f32>> {
        let mut m = tract_onnx::onnx()
            .model_for_path(&net.path)?
            .with_input_fact(0, f32::fact(x.shape()).into())?;
        m.select_outputs_by_name([net.logits.as_str()])?;
        let plan = m.into_optimized()?.into_runnable()?;
        let t: Tensor = x.clone().into();
        let out = plan.run(tvec!(t.into_tvalue()))?;
        Ok(out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect())
    })()
    .unwrap_or_else(|e| panic!("{what}: tract: {e:#}"));
    let top = argmax(&logits);
    // logits: f32 forward passes of the same file, 1e-5 relative to the largest
    let scale = logits.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
    if class != top || (logit - logits[top] as f64).abs() > 1e-5 * scale {
        failures.push(format!(
            "{what}: command explained class {class} logit {logit}, tract top {top} logit {}",
            logits[top]
        ));
    }
    // the other logits through the reported probabilities: softmax of tract's
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
    for e in v["top5"].as_array().expect("top5") {
        let k = e["index"].as_u64().unwrap() as usize;
        let p = e["probability"].as_f64().unwrap();
        let want = (logits[k] as f64 - m).exp() / z;
        if (p - want).abs() > 1e-5 {
            failures.push(format!("{what}: probability of {k}: {p} vs tract {want}"));
        }
    }

    // conservation: z+ without biases (no relevance is absorbed by a bias;
    // pads, concats, resizes, gates, sums and average pools pass all of it on;
    // only the 1e-6 stabiliser and f32 rounding remain), so sum R = logit
    let npy = PathBuf::from(v["npy"].as_str().expect("npy"));
    let (rshape, rel) = lrp_testkit::npy::read_npy_f32(&npy).expect("npy");
    let sum: f64 = rel.iter().map(|&r| r as f64).sum();
    if (sum - logit).abs() > 1e-3 * logit.abs() {
        failures.push(format!("{what}: sum R = {sum} vs logit {logit}"));
    }

    // the reference z+ relevance, written as [C, H, W]
    let acts = ref_forward(&net.folded, to64(&x));
    let want = ref_lrp(
        &net.folded,
        &acts,
        &net.shapes,
        class,
        &ref_composite("zplus"),
        &net.input_bounds,
    );
    let want: Vec<f64> = if f.nhwc {
        (0..want.len())
            .map(|k| {
                let (c, rest) = (k / (h * w), k % (h * w));
                want[rest * 3 + c]
            })
            .collect()
    } else {
        want
    };
    if rshape != [3, h, w] {
        failures.push(format!("{what}: relevance of shape {rshape:?}"));
    } else {
        let (d, k) = max_diff(&rel, &want);
        // network tolerance (top of the file)
        let tol = 1e-4 * max_abs(&want).max(1e-3 * logit.abs());
        if d > tol {
            failures.push(format!(
                "{what}: relevance {k}: command {} vs reference {} (tol {tol:.2e})",
                rel[k], want[k]
            ));
        }
        eprintln!(
            "{what}: class {class}, logit {logit:.5}, sum R {sum:.5}, max |R - R_ref| {d:.2e} (max |R_ref| {:.3e})",
            max_abs(&want)
        );
    }
    failures
}

#[test]
fn exporter_style_models_through_the_command_match_tract_conserve_and_match_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = vec![];
    for (what, build, seed) in STYLES {
        let net = build(dir.path(), seed, NO_BIAS);
        failures.extend(check_cli(what, &net, dir.path(), 200 + seed));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
