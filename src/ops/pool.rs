//! Pooling: `MaxPool` gives each window's relevance to its
//! arg-max (the plain gradient, first maximum on ties as in PyTorch), or with
//! [`MaxPoolTies::Split`] in equal shares to every input within [`NEAR_TIE`]
//! of the maximum (a map that float rounding does not decide);
//! `AveragePool` uses Zennit's `Norm` rule (each input gets
//! its share of the window sum, stabilised by 1e-6).

use anyhow::{ensure, Result};
use ndarray::ArrayD;
use rayon::prelude::*;

use super::conv::Window;
use super::registry::{Imported, OnnxNode};
use crate::rules::{stabilize, STABILIZER};

/// Max-pool inputs closer than this to their window's maximum, relative to
/// the largest `|x|` of the pool input (of the same sample of a batch), are
/// near-ties: about the relative rounding of a convolution's outputs after a
/// few layers in f32, so which of them wins is decided by the arithmetic (f32
/// or f64, one convolution algorithm or another), not by the model.
pub const NEAR_TIE: f32 = 1e-5;

/// Where a max pool hands a window's relevance (and gradient).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MaxPoolTies {
    /// All of it to the first maximum in row-major window order: PyTorch's
    /// gradient, and what rounding decides where two inputs nearly tie.
    #[default]
    First,
    /// Equal shares to every input within [`NEAR_TIE`] of the window's
    /// maximum (exact and near ties alike): a symmetric element of the
    /// subdifferential, the same map in f32 and f64 and with any convolution
    /// algorithm. Conserves relevance; equals `First` where a window has one
    /// clear winner.
    Split,
}

impl MaxPoolTies {
    /// The names accepted by [`MaxPoolTies::from_name`], with a description.
    pub const NAMES: [(&'static str, &'static str); 2] = [
        (
            "first",
            "all to the first maximum of each window (PyTorch's gradient)",
        ),
        (
            "split",
            "equal shares to the inputs within 1e-5 (relative) of the maximum: independent of rounding",
        ),
    ];

    /// `first` or `split`; [`crate::Error::InvalidParameter`] (`maxpool_ties`) otherwise.
    pub fn from_name(name: &str) -> crate::Result<MaxPoolTies> {
        match name {
            "first" => Ok(MaxPoolTies::First),
            "split" => Ok(MaxPoolTies::Split),
            other => Err(crate::Error::InvalidParameter {
                name: "maxpool_ties",
                message: format!("must be first or split, got '{other}'"),
            }),
        }
    }

    /// Its name (`first` or `split`).
    pub fn name(self) -> &'static str {
        match self {
            MaxPoolTies::First => "first",
            MaxPoolTies::Split => "split",
        }
    }
}

impl std::fmt::Display for MaxPoolTies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Geometry of a pooling node.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Window geometry.
    pub window: Window,
    /// `AveragePool`: divide by the window clipped to the padded input
    /// (padding included), not by the number of input elements in it.
    pub count_include_pad: bool,
    /// `ceil_mode`: the output size rounds up, so a last window may hang over
    /// the end of the padded input (the overhang counts for nothing, not even
    /// for `count_include_pad`).
    pub ceil_mode: bool,
}

impl Pool {
    /// Output height and width for an input of `h x w`, as ONNX and PyTorch
    /// define them: `(padded - k_eff) / stride + 1` rounded down, or up in
    /// `ceil_mode`, where a last window that would start past the input and
    /// its leading padding is dropped.
    pub fn output_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let wnd = &self.window;
        let p = wnd.pads(h, w);
        let mut out = [0; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let k = wnd.dilations[axis] * (wnd.kernel[axis].max(1) - 1) + 1;
            let s = wnd.strides[axis].max(1);
            let padded = size + p[axis] + p[axis + 2];
            ensure!(padded >= k, "kernel {k} larger than padded input {padded}");
            let span = padded - k;
            let mut o = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            if self.ceil_mode && (o - 1) * s >= size + p[axis] {
                o -= 1;
            }
            out[axis] = o;
        }
        Ok(out)
    }
}

struct Dims {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

fn dims(x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<Dims> {
    ensure!(
        x.ndim() == 4 && r.ndim() == 4,
        "pooling needs [N, C, H, W] tensors, got {:?} and {:?}",
        x.shape(),
        r.shape()
    );
    ensure!(
        x.shape()[..2] == r.shape()[..2],
        "pooling input {:?} and output {:?} differ in N, C",
        x.shape(),
        r.shape()
    );
    Ok(Dims {
        planes: x.shape()[0] * x.shape()[1],
        h: x.shape()[2],
        w: x.shape()[3],
        oh: r.shape()[2],
        ow: r.shape()[3],
    })
}

/// Window positions `(y, x)` inside the input for output `(oy, ox)`.
fn window<'a>(
    p: &'a Pool,
    pads: [usize; 4],
    d: &Dims,
    oy: usize,
    ox: usize,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let wnd = &p.window;
    let (h, w) = (d.h as isize, d.w as isize);
    let y0 = (oy * wnd.strides[0]) as isize - pads[0] as isize;
    let x0 = (ox * wnd.strides[1]) as isize - pads[1] as isize;
    (0..wnd.kernel[0]).flat_map(move |i| {
        (0..wnd.kernel[1]).filter_map(move |j| {
            let y = y0 + (i * wnd.dilations[0]) as isize;
            let x = x0 + (j * wnd.dilations[1]) as isize;
            (y >= 0 && x >= 0 && y < h && x < w).then_some((y as usize, x as usize))
        })
    })
}

/// `MaxPool` (`max`) or `AveragePool` on `[N, C, H, W]`.
pub fn forward(p: &Pool, x: &ArrayD<f32>, max: bool) -> Result<ArrayD<f32>> {
    ensure!(
        x.ndim() == 4,
        "pooling needs [N, C, H, W], got {:?}",
        x.shape()
    );
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let wnd = &p.window;
    let [oh, ow] = p.output_size(h, w)?;
    let pads = wnd.pads(h, w);
    let x = x.as_standard_layout();
    let xs = x.as_slice().unwrap_or(&[]);
    let mut out = vec![0.0f32; n * c * oh * ow];
    // input rows/cols of window position k at output o, if inside the input
    let at = |o: usize, k: usize, axis: usize, size: usize| -> Option<usize> {
        let v = (o * wnd.strides[axis] + k * wnd.dilations[axis]) as isize - pads[axis] as isize;
        (v >= 0 && (v as usize) < size).then_some(v as usize)
    };
    // window positions inside the padded input (count_include_pad)
    let padded = |o: usize, axis: usize, size: usize| {
        let start = (o * wnd.strides[axis]) as isize - pads[axis] as isize;
        let end = (size + pads[axis + 2]) as isize;
        (0..wnd.kernel[axis])
            .filter(|k| start + ((k * wnd.dilations[axis]) as isize) < end)
            .count()
    };
    // every window inside the input, without holes: no bounds checks
    let [kh, kw] = wnd.kernel;
    let [sh, sw] = wnd.strides;
    if max
        && pads == [0; 4]
        && wnd.dilations == [1, 1]
        && oh > 0
        && ow > 0
        && (oh - 1) * sh + kh <= h
        && (ow - 1) * sw + kw <= w
    {
        out.par_chunks_mut(oh * ow)
            .zip(xs.par_chunks(h * w))
            .for_each(|(op, xp)| {
                for (oy, line) in op.chunks_exact_mut(ow).enumerate() {
                    let rows = &xp[oy * sh * w..(oy * sh + kh) * w];
                    for (ox, o) in line.iter_mut().enumerate() {
                        let x0 = ox * sw;
                        *o = rows
                            .chunks_exact(w)
                            .flat_map(|r| &r[x0..x0 + kw])
                            .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    }
                }
            });
        return Ok(ArrayD::from_shape_vec(vec![n, c, oh, ow], out)?);
    }
    out.par_chunks_mut(oh * ow)
        .zip(xs.par_chunks(h * w))
        .for_each(|(op, xp)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                    let mut count = 0usize;
                    for i in 0..wnd.kernel[0] {
                        let Some(y) = at(oy, i, 0, h) else { continue };
                        for j in 0..wnd.kernel[1] {
                            let Some(xx) = at(ox, j, 1, w) else { continue };
                            let v = xp[y * w + xx];
                            if max {
                                acc = acc.max(v);
                            } else {
                                acc += v;
                            }
                            count += 1;
                        }
                    }
                    op[oy * ow + ox] = if max {
                        acc
                    } else {
                        let d = if p.count_include_pad {
                            padded(oy, 0, h) * padded(ox, 1, w)
                        } else {
                            count
                        };
                        if d == 0 {
                            0.0
                        } else {
                            acc / d as f32
                        }
                    };
                }
            }
        });
    Ok(ArrayD::from_shape_vec(vec![n, c, oh, ow], out)?)
}

/// Relevance (or gradient) through `MaxPool`: all of a window's relevance
/// to its arg-max, or with `ties` [`MaxPoolTies::Split`] shared among its
/// near-maxima.
pub fn max_pool(
    p: &Pool,
    x: &ArrayD<f32>,
    r: &ArrayD<f32>,
    ties: MaxPoolTies,
) -> Result<ArrayD<f32>> {
    if ties == MaxPoolTies::Split {
        return max_pool_split(p, x, r);
    }
    let d = dims(x, r)?;
    let pads = p.window.pads(d.h, d.w);
    let (x, r) = (x.as_standard_layout(), r.as_standard_layout());
    let (xs, rs) = (x.as_slice().unwrap_or(&[]), r.as_slice().unwrap_or(&[]));
    let plane = d.h * d.w;
    if plane == 0 || d.oh * d.ow == 0 {
        return Ok(ArrayD::zeros(x.shape()));
    }
    let wnd = &p.window;
    let ([kh, kw], [sh, sw]) = (wnd.kernel, wnd.strides);
    // every window inside the input, without holes
    let inside = pads == [0; 4]
        && wnd.dilations == [1, 1]
        && kh * kw > 0
        && (d.oh - 1) * sh + kh <= d.h
        && (d.ow - 1) * sw + kw <= d.w;
    // one task per channel plane (windows of one plane may overlap)
    let ohw = d.oh * d.ow;
    let out = crate::elementwise::zeroed_planes(xs.len(), plane, |c, op| {
        let (xp, rp) = (&xs[c * plane..(c + 1) * plane], &rs[c * ohw..(c + 1) * ohw]);
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let r = rp[oy * d.ow + ox];
                if r == 0.0 {
                    continue; // nothing to hand back
                }
                if inside {
                    // first maximum in row-major window order, no bounds checks
                    let (y0, x0) = (oy * sh, ox * sw);
                    let mut ix = y0 * d.w + x0;
                    let mut b = xp[ix];
                    for y in y0..y0 + kh {
                        for (i, &v) in xp[y * d.w + x0..y * d.w + x0 + kw].iter().enumerate() {
                            if v > b {
                                (ix, b) = (y * d.w + x0 + i, v);
                            }
                        }
                    }
                    op[ix] += r;
                    continue;
                }
                let mut best: Option<(usize, f32)> = None;
                for (y, xx) in window(p, pads, &d, oy, ox) {
                    let v = xp[y * d.w + xx];
                    if best.is_none_or(|(_, b)| v > b) {
                        best = Some((y * d.w + xx, v));
                    }
                }
                if let Some((ix, _)) = best {
                    op[ix] += r;
                }
            }
        }
    });
    Ok(ArrayD::from_shape_vec(x.shape(), out)?)
}

/// The largest `|x|` of each sample (the first axis) of `x`.
fn largest_per_sample(xs: &[f32], samples: usize) -> Vec<f32> {
    let per = xs.len() / samples.max(1);
    if per == 0 {
        return vec![0.0; samples];
    }
    xs.par_chunks(per)
        .map(|s| s.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect()
}

/// [`max_pool`] with [`MaxPoolTies::Split`]: each window's `r` in equal
/// shares to the inputs `v` with `max - v <= NEAR_TIE * largest |x|` of the
/// sample. Which inputs share depends on the input only through that
/// tolerance, so rounding changes of `x` far below it change nothing.
fn max_pool_split(p: &Pool, x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let d = dims(x, r)?;
    let pads = p.window.pads(d.h, d.w);
    let (x, r) = (x.as_standard_layout(), r.as_standard_layout());
    let (xs, rs) = (x.as_slice().unwrap_or(&[]), r.as_slice().unwrap_or(&[]));
    let plane = d.h * d.w;
    if plane == 0 || d.oh * d.ow == 0 {
        return Ok(ArrayD::zeros(x.shape()));
    }
    let samples = x.shape()[0];
    let channels = x.shape()[1].max(1);
    let tols: Vec<f32> = largest_per_sample(xs, samples)
        .into_iter()
        .map(|m| NEAR_TIE * m)
        .collect();
    let ohw = d.oh * d.ow;
    let out = crate::elementwise::zeroed_planes(xs.len(), plane, |c, op| {
        let (xp, rp) = (&xs[c * plane..(c + 1) * plane], &rs[c * ohw..(c + 1) * ohw]);
        let tol = tols[c / channels];
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let r = rp[oy * d.ow + ox];
                if r == 0.0 {
                    continue;
                }
                let best = window(p, pads, &d, oy, ox)
                    .map(|(y, xx)| xp[y * d.w + xx])
                    .fold(f32::NEG_INFINITY, f32::max);
                let near = |&(y, xx): &(usize, usize)| best - xp[y * d.w + xx] <= tol;
                let count = window(p, pads, &d, oy, ox).filter(near).count();
                if count == 0 {
                    continue; // no input in the window (or a NaN maximum)
                }
                let share = r / count as f32;
                for (y, xx) in window(p, pads, &d, oy, ox).filter(near) {
                    op[y * d.w + xx] += share;
                }
            }
        }
    });
    Ok(ArrayD::from_shape_vec(x.shape(), out)?)
}

/// How much of what a `MaxPool` hands back goes through windows whose winner
/// float rounding decides (see [`max_pool_ties`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ties {
    /// Windows that receive a nonzero relevance or gradient.
    pub windows: usize,
    /// Of those, windows whose two largest inputs differ, but by at most the
    /// tolerance: a near-tie.
    pub near: usize,
    /// Share of the total `|r|` received by the near-tied windows.
    pub share: f64,
}

/// Near-ties of a `MaxPool` at input `x` for the relevance or gradient `r` at
/// its output: windows whose two largest inputs differ by more than 0 and at
/// most `rel_tol * max |x|`. Which of the two wins is decided by the rounding
/// of the layers below (f32 against f64, one convolution algorithm against
/// another), and so is where the window's relevance goes; exact ties are not
/// counted (the first maximum wins, as in PyTorch, whatever the rounding).
pub fn max_pool_ties(p: &Pool, x: &ArrayD<f32>, r: &ArrayD<f32>, rel_tol: f32) -> Result<Ties> {
    let d = dims(x, r)?;
    let wnd = &p.window;
    let pads = wnd.pads(d.h, d.w);
    let (x, r) = (x.as_standard_layout(), r.as_standard_layout());
    let (xs, rs) = (x.as_slice().unwrap_or(&[]), r.as_slice().unwrap_or(&[]));
    let largest = xs
        .par_iter()
        .fold(|| 0f32, |m, v| m.max(v.abs()))
        .reduce(|| 0f32, f32::max);
    let tol = rel_tol * largest;
    // the input rows (columns) of each output row (column), shared by the planes
    let taps = |o: usize, axis: usize, size: usize| -> Vec<usize> {
        (0..wnd.kernel[axis])
            .filter_map(|k| {
                let v = (o * wnd.strides[axis] + k * wnd.dilations[axis]) as isize
                    - pads[axis] as isize;
                (v >= 0 && (v as usize) < size).then_some(v as usize)
            })
            .collect()
    };
    let rows: Vec<Vec<usize>> = (0..d.oh).map(|o| taps(o, 0, d.h)).collect();
    let cols: Vec<Vec<usize>> = (0..d.ow).map(|o| taps(o, 1, d.w)).collect();
    let plane = d.h * d.w;
    if plane == 0 || d.oh * d.ow == 0 {
        return Ok(Ties::default());
    }
    // (windows, near, total |r|, near |r|) of one channel plane
    let count = |(xp, rp): (&[f32], &[f32])| {
        let mut acc = (0usize, 0usize, 0f64, 0f64);
        for (oy, ys) in rows.iter().enumerate() {
            for (ox, xs) in cols.iter().enumerate() {
                let rv = rp[oy * d.ow + ox];
                if rv == 0.0 {
                    continue;
                }
                let (mut m1, mut m2) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                for &y in ys {
                    for &v in xs.iter().map(|&xx| &xp[y * d.w + xx]) {
                        if v > m1 {
                            (m1, m2) = (v, m1);
                        } else if v > m2 {
                            m2 = v;
                        }
                    }
                }
                acc.0 += 1;
                acc.2 += rv.abs() as f64;
                let gap = m1 - m2;
                if gap > 0.0 && gap <= tol {
                    acc.1 += 1;
                    acc.3 += rv.abs() as f64;
                }
            }
        }
        acc
    };
    let (windows, near, total, tied) = xs
        .par_chunks(plane)
        .zip(rs.par_chunks(d.oh * d.ow))
        .map(count)
        .reduce(
            || (0, 0, 0.0, 0.0),
            |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3),
        );
    Ok(Ties {
        windows,
        near,
        share: if total > 0.0 { tied / total } else { 0.0 },
    })
}

/// Relevance through `AveragePool` with the `Norm` rule.
pub fn avg_pool(p: &Pool, x: &ArrayD<f32>, r: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    let d = dims(x, r)?;
    let pads = p.window.pads(d.h, d.w);
    let (x, r) = (x.as_standard_layout(), r.as_standard_layout());
    let (xs, rs) = (x.as_slice().unwrap_or(&[]), r.as_slice().unwrap_or(&[]));
    let mut out = vec![0.0f32; xs.len()];
    let wnd = &p.window;
    for c in 0..d.planes {
        let xp = &xs[c * d.h * d.w..(c + 1) * d.h * d.w];
        let op = &mut out[c * d.h * d.w..(c + 1) * d.h * d.w];
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let count = if p.count_include_pad {
                    // window clipped to the padded input
                    let span = |o: usize, axis: usize, size: usize| {
                        let start = (o * wnd.strides[axis]) as isize - pads[axis] as isize;
                        let end = (size + pads[axis + 2]) as isize;
                        (0..wnd.kernel[axis])
                            .filter(|k| start + ((k * wnd.dilations[axis]) as isize) < end)
                            .count()
                    };
                    span(oy, 0, d.h) * span(ox, 1, d.w)
                } else {
                    window(p, pads, &d, oy, ox).count()
                };
                if count == 0 {
                    continue;
                }
                let inv = 1.0 / count as f32;
                let z: f32 = window(p, pads, &d, oy, ox)
                    .map(|(y, xx)| xp[y * d.w + xx])
                    .sum::<f32>()
                    * inv;
                let s = rs[(c * d.oh + oy) * d.ow + ox] / stabilize(z, STABILIZER) * inv;
                for (y, xx) in window(p, pads, &d, oy, ox) {
                    op[y * d.w + xx] += xp[y * d.w + xx] * s;
                }
            }
        }
    }
    Ok(ArrayD::from_shape_vec(x.shape(), out)?)
}


/// `MaxPool`: winner takes all, relevance and gradient alike.
#[derive(Clone, Debug)]
pub struct MaxPool(pub Pool);

/// `AveragePool`: proportional to the contributions (Zennit's `Norm` rule).
#[derive(Clone, Debug)]
pub struct AvgPool(pub Pool);

/// The facts both pools share.
macro_rules! pool_facts {
    () => {
        fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
            let x = inputs[0];
            ensure!(x.len() == 4, "pooling needs [N, C, H, W], got {x:?}");
            let [oh, ow] = self.0.output_size(x[2], x[3])?;
            Ok(vec![x[0], x[1], oh, ow])
        }


        fn lrp0(&self) -> super::Lrp0 {
            super::Lrp0::Exact
        }

        fn lrp0_gradient(
            &self,
            inputs: &[&ArrayD<f32>],
            g: &ArrayD<f32>,
        ) -> Result<Vec<ArrayD<f32>>> {
            super::Operator::gradient(self, inputs, g, Default::default())
        }



        fn elements(&self) -> super::Elements {
            super::Elements::Other
        }

        fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
            None
        }

        fn keeps_samples_apart(&self, _rank: usize) -> bool {
            true
        }




        super::plain!();
    };
}

impl super::Operator for MaxPool {
    pool_facts!();

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        forward(&self.0, inputs[0], true)
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        reuse: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![max_pool(&self.0, inputs[0], r, reuse.ties)?], None))
    }

    /// The max pools' relevance rule is their gradient.
    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        how: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![max_pool(&self.0, inputs[0], g, how.ties)?])
    }

    fn takes_maxima(&self) -> bool {
        true
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }

    fn kind(&self) -> Option<&'static str> {
        Some("max pool")
    }
}

impl super::Operator for AvgPool {
    pool_facts!();

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        forward(&self.0, inputs[0], false)
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((vec![avg_pool(&self.0, inputs[0], r)?], None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        Ok(vec![super::pool_grad::avg_pool(
            &self.0,
            inputs[0].shape(),
            g,
        )?])
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Proportional { per_input: false }
    }

    fn kind(&self) -> Option<&'static str> {
        Some("average pool")
    }
}

/// Builds a `MaxPool` (without its `Indices` output) or an `AveragePool`.
fn import(n: &OnnxNode) -> Result<Imported> {
    let pool = pool_of(n)?;
    Ok(match n.op_type() {
        "MaxPool" => {
            let out = &n.node.output;
            ensure!(out.len() == 1 || out[1].is_empty(), "the Indices output");
            MaxPool(pool).into()
        }
        _ => AvgPool(pool).into(),
    })
}

/// The geometry of a pooling node.
fn pool_of(n: &OnnxNode) -> Result<Pool> {
    let k = n
        .attr_ints("kernel_shape")
        .ok_or_else(|| anyhow::anyhow!("no kernel_shape"))?;
    let kernel = super::conv::pair(&k, "kernels")?;
    let window = super::conv::window(n, kernel)?;
    // as onnxruntime and PyTorch require: a window that could lie wholly in
    // the padding has no maximum (and no average)
    if let super::conv::Padding::Explicit(p) = window.padding {
        ensure!(
            p[0] < kernel[0] && p[2] < kernel[0] && p[1] < kernel[1] && p[3] < kernel[1],
            "pads {p:?} not smaller than the kernel {kernel:?}"
        );
    }
    Ok(Pool {
        window,
        count_include_pad: n.attr_int("count_include_pad", 0) != 0,
        ceil_mode: n.attr_int("ceil_mode", 0) != 0,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "pool",
    onnx: &[
        ("MaxPool", "winner takes all (first maximum)"),
        ("AveragePool", "proportional (Norm rule)"),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::conv::{Padding, Window};
    use tract_onnx::pb::{self, NodeProto};

    fn node(attrs: &[(&str, Vec<i64>)], ints: &[(&str, i64)]) -> NodeProto {
        let mut n = NodeProto::default();
        for (k, v) in attrs {
            n.attribute.push(pb::AttributeProto {
                name: k.to_string(),
                ints: v.clone(),
                ..Default::default()
            });
        }
        for (k, v) in ints {
            n.attribute.push(pb::AttributeProto {
                name: k.to_string(),
                i: *v,
                ..Default::default()
            });
        }
        n
    }

    #[test]
    fn pool_attributes() {
        let pool = |n: &NodeProto| crate::ops::registry::with_node(n, pool_of);
        // torchvision GoogLeNet's inception pool: MaxPool2d(3, 1, 1, ceil_mode=True)
        let n = node(
            &[
                ("kernel_shape", vec![3, 3]),
                ("strides", vec![1, 1]),
                ("pads", vec![1; 4]),
            ],
            &[("ceil_mode", 1), ("count_include_pad", 1)],
        );
        let p = pool(&n).unwrap();
        assert!(p.ceil_mode && p.count_include_pad);
        assert_eq!(p.window.padding, Padding::Explicit([1; 4]));
        // absent: floor mode, padding not counted
        let n = node(&[("kernel_shape", vec![2, 2])], &[]);
        let p = pool(&n).unwrap();
        assert!(!p.ceil_mode && !p.count_include_pad);
        // a pad as large as the kernel is refused (the importer names the node)
        let n = node(
            &[("kernel_shape", vec![2, 3]), ("pads", vec![0, 3, 0, 0])],
            &[],
        );
        let e = pool(&n).unwrap_err().to_string();
        assert!(e.contains("pads [0, 3, 0, 0]") && e.contains("kernel"), "{e}");
    }

    /// Brute force: input positions `[y, x]` of the window of output
    /// `(oy, ox)`, in row-major window order, those outside the input left out.
    pub(crate) fn brute_window(
        win: &Window,
        h: usize,
        w: usize,
        oy: usize,
        ox: usize,
    ) -> Vec<[usize; 2]> {
        let p = win.pads(h, w);
        let mut v = Vec::new();
        for i in 0..win.kernel[0] {
            for j in 0..win.kernel[1] {
                let y = (oy * win.strides[0] + i * win.dilations[0]) as isize - p[0] as isize;
                let x = (ox * win.strides[1] + j * win.dilations[1]) as isize - p[1] as isize;
                if (0..h as isize).contains(&y) && (0..w as isize).contains(&x) {
                    v.push([y as usize, x as usize]);
                }
            }
        }
        v
    }

    /// Brute force: each output's relevance to the first maximum of its
    /// window (row-major order, positions outside the input skipped).
    fn reference(win: &Window, x: &ArrayD<f32>, r: &ArrayD<f32>) -> ArrayD<f32> {
        let (c, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
        let (oh, ow) = (r.shape()[2], r.shape()[3]);
        let mut out = ArrayD::zeros(x.shape());
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<([usize; 2], f32)> = None;
                    for [y, xx] in brute_window(win, h, w, oy, ox) {
                        let v = x[[0, ch, y, xx]];
                        if best.is_none() || v > best.unwrap().1 {
                            best = Some(([y, xx], v));
                        }
                    }
                    let ([y, xx], _) = best.unwrap();
                    out[[0, ch, y, xx]] += r[[0, ch, oy, ox]];
                }
            }
        }
        out
    }

    #[test]
    fn max_pool_relevance_goes_to_the_first_maximum() {
        // (kernel, strides, dilations, pads): the fast path (windows inside,
        // no holes; overlapping or not) and the general one
        let cases = [
            ([2, 2], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 3], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 2], [1, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
            ([2, 2], [2, 2], [2, 2], [0, 0, 0, 0]),
            ([3, 3], [2, 2], [1, 1], [0, 1, 1, 0]),
        ];
        for (kernel, strides, dilations, pads) in cases {
            let win = Window {
                kernel,
                strides,
                dilations,
                padding: Padding::Explicit(pads),
            };
            let (h, w) = (9, 8);
            let [oh, ow] = win.output_size(h, w).unwrap();
            // few distinct values, so windows hold ties
            let x = ArrayD::from_shape_fn(vec![1, 3, h, w], |i| {
                ((i[1] * 7 + i[2] * 5 + i[3] * 3) % 4) as f32
            });
            // some zero relevance, which the kernel skips
            let r = ArrayD::from_shape_fn(vec![1, 3, oh, ow], |i| {
                ((i[1] + i[2] * 3 + i[3]) % 5) as f32 - 1.0
            });
            let pool = Pool {
                window: win.clone(),
                count_include_pad: false,
                ceil_mode: false,
            };
            let got = max_pool(&pool, &x, &r, MaxPoolTies::First).unwrap();
            assert_eq!(got, reference(&win, &x, &r), "{win:?}");
        }
    }

    #[test]
    fn near_ties_are_counted_and_exact_ties_are_not() {
        // four 2x2 windows (stride 2) on a 4x4 plane whose largest value is 2:
        // tolerance 1e-6 * 2
        let pool = Pool {
            window: Window {
                kernel: [2, 2],
                strides: [2, 2],
                dilations: [1, 1],
                padding: Padding::Explicit([0; 4]),
            },
            count_include_pad: false,
            ceil_mode: false,
        };
        #[rustfmt::skip]
        let x = ArrayD::from_shape_vec(vec![1, 1, 4, 4], vec![
            // near-tie (gap 1.2e-7)  | clear winner
            1.0, 1.0 - 1.2e-7,          2.0, 0.5,
            0.0, 0.0,                   0.0, 0.0,
            // exact tie              | near-tie, but no relevance arrives
            1.0, 1.0,                   1.5, 1.5 - 1.2e-7,
            0.5, 0.0,                   0.0, 0.0,
        ]).unwrap();
        let r = ArrayD::from_shape_vec(vec![1, 1, 2, 2], vec![3.0, 1.0, -4.0, 0.0]).unwrap();
        let t = max_pool_ties(&pool, &x, &r, 1e-6).unwrap();
        assert_eq!((t.windows, t.near), (3, 1));
        // |3| of |3| + |1| + |-4|
        assert!((t.share - 3.0 / 8.0).abs() < 1e-12, "{t:?}");
        // a looser tolerance (0.8 * 2) takes in the gap of 1.5 too, a tighter none
        assert_eq!(max_pool_ties(&pool, &x, &r, 0.8).unwrap().near, 2);
        assert_eq!(max_pool_ties(&pool, &x, &r, 1e-9).unwrap().near, 0);
    }

    #[test]
    fn max_pool_forward_is_the_window_maximum() {
        // the fast path (no padding, no holes) and the general one
        let cases = [
            ([2, 2], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 3], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 2], [1, 2], [1, 1], [0, 0, 0, 0]),
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
            ([2, 2], [2, 2], [2, 2], [0, 0, 0, 0]),
        ];
        let (h, w) = (9, 8);
        let x = ArrayD::from_shape_fn(vec![1, 2, h, w], |i| {
            ((i[1] * 13 + i[2] * 7 + i[3] * 5) % 11) as f32 - 5.0
        });
        for (kernel, strides, dilations, pads) in cases {
            let window = Window {
                kernel,
                strides,
                dilations,
                padding: Padding::Explicit(pads),
            };
            let [oh, ow] = window.output_size(h, w).unwrap();
            let p = Pool {
                window: window.clone(),
                count_include_pad: false,
                ceil_mode: false,
            };
            let got = forward(&p, &x, true).unwrap();
            assert_eq!(got.shape(), &[1, 2, oh, ow]);
            for c in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let want = brute_window(&window, h, w, oy, ox)
                            .into_iter()
                            .map(|[y, xx]| x[[0, c, y, xx]])
                            .fold(f32::NEG_INFINITY, f32::max);
                        assert_eq!(got[[0, c, oy, ox]], want, "{window:?} at {c} {oy} {ox}");
                    }
                }
            }
        }
    }
}
