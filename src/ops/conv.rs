//! ONNX `Conv` (2-D, any stride, padding, dilation and group) as a linear layer:
//! forward by im2col + GEMM, transposed pass by GEMM + col2im or as a
//! convolution with the flipped kernel; 3x3 stride-1 layers with 16+ channels
//! by Winograd F(2x2, 3x3) (`winograd.rs`) both ways, depthwise ones directly.

use std::mem::MaybeUninit;

use anyhow::{bail, ensure, Result};
use ndarray::ArrayD;
use rayon::prelude::*;

use crate::kernels::conv::{col2im, conv_group, depthwise_plane, depthwise_plane_transposed, Geo};
use crate::kernels::depthwise;
use crate::kernels::linalg::{matmul, matmul_epilogue, matmul_strided, Epilogue, Mat};
use crate::kernels::winograd;
use super::registry::{Imported, OnnxNode};
use crate::rules::LinearLayer;

/// How a convolution or pooling window pads its input.
#[derive(Clone, Debug, PartialEq)]
pub enum Padding {
    /// Explicit pads `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// `auto_pad = SAME_UPPER`: extra padding at the end.
    SameUpper,
    /// `auto_pad = SAME_LOWER`: extra padding at the start.
    SameLower,
}

/// The sliding-window geometry shared by convolutions and pools.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides along height and width.
    pub strides: [usize; 2],
    /// Dilations along height and width.
    pub dilations: [usize; 2],
    /// Padding.
    pub padding: Padding,
}

impl Window {
    /// Pads `[top, left, bottom, right]` for an input of `h x w`.
    pub fn pads(&self, h: usize, w: usize) -> [usize; 4] {
        match &self.padding {
            Padding::Explicit(p) => *p,
            Padding::SameUpper | Padding::SameLower => {
                let mut out = [0; 4];
                for (axis, size) in [h, w].into_iter().enumerate() {
                    let s = self.strides[axis];
                    let o = size.div_ceil(s);
                    let k = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
                    let total = ((o - 1) * s + k).saturating_sub(size);
                    let small = total / 2;
                    let (begin, end) = if self.padding == Padding::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    out[axis] = begin;
                    out[axis + 2] = end;
                }
                out
            }
        }
    }

    /// Output height and width for an input of `h x w` (floor mode).
    pub fn output_size(&self, h: usize, w: usize) -> Result<[usize; 2]> {
        let p = self.pads(h, w);
        let mut out = [0; 2];
        for (axis, size) in [h, w].into_iter().enumerate() {
            let k = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
            let padded = size + p[axis] + p[axis + 2];
            ensure!(padded >= k, "kernel {k} larger than padded input {padded}");
            out[axis] = (padded - k) / self.strides[axis] + 1;
        }
        Ok(out)
    }
}

/// A 2-D convolution layer with weights `[M, C/group, kh, kw]`.
#[derive(Clone, Debug)]
pub struct Conv {
    /// Weights `[M, C/group, kh, kw]`.
    pub weight: ArrayD<f32>,
    /// Bias `[M]`.
    pub bias: Option<ArrayD<f32>>,
    /// Window geometry (kernel taken from the weights).
    pub window: Window,
    /// Number of groups.
    pub group: usize,
}

impl Conv {
    fn geometry(&self, shape: &[usize], w: &ArrayD<f32>) -> Result<Geo> {
        ensure!(
            shape.len() == 4,
            "Conv input must be [N, C, H, W], got {shape:?}"
        );
        let ws = w.shape();
        ensure!(
            ws.len() == 4,
            "Conv weight must be [M, C/g, kh, kw], got {ws:?}"
        );
        let (n, c, h, wd) = (shape[0], shape[1], shape[2], shape[3]);
        let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let g = self.group;
        ensure!(
            g > 0 && c == cg * g && m % g == 0,
            "Conv with group {g}: input channels {c}, weight {ws:?} do not fit"
        );
        let mut win = self.window.clone();
        win.kernel = [kh, kw];
        let [oh, ow] = win.output_size(h, wd)?;
        Ok(Geo {
            n,
            c,
            h,
            w: wd,
            m,
            cg,
            mg: m / g,
            kh,
            kw,
            oh,
            ow,
            pads: win.pads(h, wd),
            s: win.strides,
            d: win.dilations,
        })
    }

    /// The output shape for an input of `shape`.
    pub fn output_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let g = self.geometry(shape, &self.weight)?;
        Ok(vec![g.n, g.m, g.oh, g.ow])
    }
}

impl Conv {
    /// Whether it is a depthwise convolution: one input channel per group
    /// and one output channel per group.
    pub fn is_depthwise(&self) -> bool {
        let ws = self.weight.shape();
        self.group > 1 && ws.len() == 4 && ws[1] == 1 && ws[0] == self.group
    }

    /// Whether each output channel reads exactly one input channel.
    fn depthwise(g: &Geo) -> bool {
        g.cg == 1 && g.mg == 1
    }

    /// The convolution of `x` by `w` plus `bias` (one value per output
    /// channel, or none), `[N, M, OH, OW]` values. The bias starts the sums
    /// (no pass of its own); Winograd layers add it to the transformed sums
    /// as their output transform writes them.
    fn convolve(&self, g: &Geo, xs: &[f32], ws: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (k, ohw) = (g.k(), g.ohw());
        let channel_bias = |p: usize| bias.map_or(0.0, |b| b[p % g.m]);
        if winograd::applies(g, self.group) {
            return winograd::with_kernels(ws, g.m, g.c, false, |u| {
                Conv::winograd(g, xs, u, bias)
            });
        }
        if let Some((out, _)) = self.convolve_fused(g, xs, ws, bias, None) {
            return out;
        }
        if Conv::depthwise(g) {
            let mut out = vec![0.0f32; g.n * g.m * ohw];
            let hw = g.h * g.w;
            let padded = depthwise::Padded::of(g);
            out.par_chunks_mut(ohw).enumerate().for_each(|(p, dst)| {
                let c = p % g.m;
                let (x, w) = (&xs[p * hw..(p + 1) * hw], &ws[c * k..(c + 1) * k]);
                match &padded {
                    Some(pd) => depthwise::forward_plane(g, pd, x, w, channel_bias(p), dst),
                    None => {
                        depthwise_plane(g, x, w, dst);
                        let bv = channel_bias(p);
                        dst.iter_mut().for_each(|v| *v += bv);
                    }
                }
            });
            return out;
        }
        // the bias first, then the products added to it
        let mut out = match bias {
            Some(b) => {
                let mut out = Vec::with_capacity(g.n * g.m * ohw);
                for _ in 0..g.n {
                    for &bv in &b[..g.m] {
                        out.extend(std::iter::repeat_n(bv, ohw));
                    }
                }
                out
            }
            None => vec![0.0f32; g.n * g.m * ohw],
        };
        let accumulate = bias.is_some();
        for b in 0..g.n {
            let xb = &xs[b * g.c * g.h * g.w..(b + 1) * g.c * g.h * g.w];
            let ob = &mut out[b * g.m * ohw..(b + 1) * g.m * ohw];
            let group = |gi: usize, dst: &mut [f32], threads: bool| {
                let xg = &xb[gi * g.cg * g.h * g.w..(gi + 1) * g.cg * g.h * g.w];
                let wg = &ws[gi * g.mg * k..(gi + 1) * g.mg * k];
                conv_group(g, xg, wg, dst, accumulate, threads);
            };
            if self.group == 1 {
                group(0, ob, true);
            } else {
                ob.par_chunks_mut(g.mg * ohw)
                    .enumerate()
                    .for_each(|(gi, dst)| group(gi, dst, false));
            }
        }
        out
    }

    /// The pointwise convolutions (one product per image) and the depthwise
    /// ones (blocks of eight channels), with `clamp` (`min(max(z, lo), hi)`)
    /// fused into their output loops: the outputs and whether every value
    /// before the clamp is finite; `None` for other geometries. The outputs
    /// are written once, never zeroed or filled with the bias first.
    fn convolve_fused(
        &self,
        g: &Geo,
        xs: &[f32],
        ws: &[f32],
        bias: Option<&[f32]>,
        clamp: Option<(f32, f32)>,
    ) -> Option<(Vec<f32>, bool)> {
        let (k, ohw, hw) = (g.k(), g.ohw(), g.h * g.w);
        if self.group == 1 && g.is_pointwise() {
            let total = g.n * g.m * ohw;
            let mut out: Vec<f32> = Vec::with_capacity(total);
            let (wm, epi) = (Mat::row_major(ws, g.m, k), Epilogue { bias, clamp });
            let mut finite = true;
            for b in 0..g.n {
                let xb = Mat::row_major(&xs[b * g.c * hw..], g.c, hw);
                // SAFETY: the capacity holds all images; this call alone
                // writes image b's `m x ohw` values.
                finite &= unsafe { matmul_epilogue(out.as_mut_ptr().add(b * g.m * ohw), wm, xb, epi) };
            }
            // SAFETY: every value was written above.
            unsafe { out.set_len(total) };
            return Some((out, finite));
        }
        let bl = Conv::depthwise(g).then(|| depthwise::Blocked::of(g)).flatten()?;
        Some(channel_blocks(g.n, g.m, ohw, |b, c0, dst| {
            let x = &xs[(b * g.c + c0) * hw..];
            let (w, bias) = (&ws[c0 * k..], bias.map(|v| &v[c0..]));
            depthwise::forward_block(g, &bl, x, w, bias, clamp, dst)
        }))
    }

    /// The Winograd F(2x2, 3x3) convolution of every image of `xs`, with
    /// kernels transformed by [`winograd::transform_weights`].
    fn winograd(g: &Geo, xs: &[f32], u: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (chw, mohw) = (g.c * g.h * g.w, g.m * g.ohw());
        let mut out: Vec<f32> = Vec::with_capacity(g.n * mohw);
        let spare = &mut out.spare_capacity_mut()[..g.n * mohw];
        for (b, dst) in spare.chunks_mut(mohw).enumerate() {
            winograd::convolve(g, &xs[b * chw..(b + 1) * chw], u, bias, dst);
        }
        // SAFETY: the output transform writes every value of every image.
        unsafe { out.set_len(g.n * mohw) };
        out
    }

    /// The transposed pass as a convolution, where one exists: for stride 1,
    /// dilation 1 and pads below the kernel size, `W^T g` is the convolution
    /// of `g` by the flipped, transposed kernel with pads `k - 1 - p`. It reads
    /// unfolded relevance instead of scattering unfolded columns (col2im).
    fn transposed_as_conv(&self, g: &Geo, gs: &[f32], ws: &[f32]) -> Option<Vec<f32>> {
        let p = g.pads;
        let fits = g.s == [1, 1]
            && g.d == [1, 1]
            && p[0] < g.kh
            && p[2] < g.kh
            && p[1] < g.kw
            && p[3] < g.kw;
        // with few input channels per group the unfolded columns are small and
        // the convolution would be a GEMM with a handful of rows: col2im wins;
        // depthwise layers gather with the direct kernel instead of scattering
        if !fits || g.is_pointwise() || (g.cg < 16 && !Conv::depthwise(g)) {
            return None;
        }
        let (kh, kw) = (g.kh, g.kw);
        let back = Geo {
            n: g.n,
            c: g.m,
            h: g.oh,
            w: g.ow,
            m: g.c,
            cg: g.mg,
            mg: g.cg,
            kh,
            kw,
            oh: g.h,
            ow: g.w,
            pads: [kh - 1 - p[0], kw - 1 - p[1], kh - 1 - p[2], kw - 1 - p[3]],
            s: [1, 1],
            d: [1, 1],
        };
        if winograd::applies(&back, self.group) {
            // the flip and transpose happen inside the kernel transform
            let out = winograd::with_kernels(ws, g.m, g.c, true, |u| Conv::winograd(&back, gs, u, None));
            return Some(out);
        }
        // w [g, mg, cg, kh, kw] -> w' [g, cg, mg, kh, kw], spatially flipped
        let groups = self.group;
        let mut flipped = vec![0.0f32; ws.len()];
        for gi in 0..groups {
            for mo in 0..g.mg {
                for ci in 0..g.cg {
                    let src = ((gi * g.mg + mo) * g.cg + ci) * kh * kw;
                    let dst = ((gi * g.cg + ci) * g.mg + mo) * kh * kw;
                    for i in 0..kh {
                        for j in 0..kw {
                            flipped[dst + (kh - 1 - i) * kw + (kw - 1 - j)] = ws[src + i * kw + j];
                        }
                    }
                }
            }
        }
        Some(self.convolve(&back, gs, &flipped, None))
    }
}

impl Conv {
    /// The forward pass with its bias, followed by `min(max(z, lo), hi)`
    /// (a ReLU or ReLU6 that reads nothing else) fused into the output loop,
    /// for the pointwise and depthwise layers: the clamped outputs and
    /// whether every output before the clamp is finite. `None` for other
    /// geometries (the caller then runs the two apart).
    pub fn forward_clamped(
        &self,
        x: &ArrayD<f32>,
        lo: f32,
        hi: f32,
    ) -> Option<Result<(ArrayD<f32>, bool)>> {
        self.forward_with(x, &self.weight, true, Some((lo, hi)))
            .transpose()
    }

    /// [`LinearLayer::forward`] with weights `w`, then `clamp` if any (where
    /// the geometry can fuse it: `None` where it cannot), and whether every
    /// value before the clamp is finite (always `true` without a clamp).
    fn forward_with(
        &self,
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        with_bias: bool,
        clamp: Option<(f32, f32)>,
    ) -> Result<Option<(ArrayD<f32>, bool)>> {
        let g = self.geometry(x.shape(), w)?;
        let x = x.as_standard_layout();
        let w = w.as_standard_layout();
        let (xs, ws) = (x.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        let bias = match (&self.bias, with_bias) {
            (Some(b), true) => {
                ensure!(
                    b.len() == g.m,
                    "Conv bias has {} values for {} outputs",
                    b.len(),
                    g.m
                );
                Some(b.iter().copied().collect::<Vec<f32>>())
            }
            _ => None,
        };
        let out = match clamp {
            None => Some((self.convolve(&g, xs, ws, bias.as_deref()), true)),
            Some(_) => self.convolve_fused(&g, xs, ws, bias.as_deref(), clamp),
        };
        out.map(|(out, finite)| Ok((ArrayD::from_shape_vec(vec![g.n, g.m, g.oh, g.ow], out)?, finite)))
            .transpose()
    }
}

/// `n` images of `ch` planes of `plane` values, computed in blocks of
/// [`depthwise::LANES`] planes (none across two images) on rayon threads:
/// `f(image, first channel, block)` writes every value of its block and
/// says whether they are finite. The values, and whether all are.
fn channel_blocks(
    n: usize,
    ch: usize,
    plane: usize,
    f: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) -> bool + Sync + Send,
) -> (Vec<f32>, bool) {
    let (total, lanes) = (n * ch * plane, depthwise::LANES);
    if total == 0 {
        return (Vec::new(), true);
    }
    let mut out: Vec<f32> = Vec::with_capacity(total);
    let finite = out.spare_capacity_mut()[..total]
        .par_chunks_mut(ch * plane)
        .enumerate()
        .map(|(b, image)| {
            image
                .par_chunks_mut(lanes * plane)
                .enumerate()
                .map(|(i, block)| f(b, i * lanes, block))
                .reduce(|| true, |x, y| x && y)
        })
        .reduce(|| true, |x, y| x && y);
    // SAFETY: every block, and so every value, was written by `f`.
    unsafe { out.set_len(total) };
    (out, finite)
}

impl LinearLayer for Conv {
    fn weight(&self) -> &ArrayD<f32> {
        &self.weight
    }

    fn dense(&self) -> bool {
        false
    }

    fn bias(&self, _: usize) -> Option<(&ArrayD<f32>, usize)> {
        self.bias.as_ref().map(|b| (b, 1))
    }

    fn forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, with_bias: bool) -> Result<ArrayD<f32>> {
        let out = self.forward_with(x, w, with_bias, None)?;
        out.map(|(out, _)| out)
            .ok_or_else(|| anyhow::anyhow!("Conv forward pass not computed"))
    }

    fn backward(
        &self,
        gr: &ArrayD<f32>,
        w: &ArrayD<f32>,
        input_shape: &[usize],
    ) -> Result<ArrayD<f32>> {
        let g = self.geometry(input_shape, w)?;
        if gr.shape() != [g.n, g.m, g.oh, g.ow] {
            bail!(
                "Conv relevance of shape {:?}, expected {:?}",
                gr.shape(),
                [g.n, g.m, g.oh, g.ow]
            );
        }
        let gr = gr.as_standard_layout();
        let w = w.as_standard_layout();
        let (gs, ws) = (gr.as_slice().unwrap_or(&[]), w.as_slice().unwrap_or(&[]));
        if let Some(out) = self.transposed_as_conv(&g, gs, ws) {
            return Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?);
        }
        let (k, ohw) = (g.k(), g.ohw());
        let chw = g.c * g.h * g.w;
        if self.group == 1 && g.is_pointwise() && k > 0 {
            // one product per image, written whole: no zeroed allocation
            let mut out: Vec<f32> = Vec::with_capacity(g.n * chw);
            let wt = Mat::row_major(ws, g.m, k).t();
            for b in 0..g.n {
                let gb = Mat::row_major(&gs[b * g.m * ohw..], g.m, ohw);
                // SAFETY: the capacity holds every image; this call alone
                // writes image b's `c x hw` values, and does not read them.
                unsafe { matmul_strided(out.as_mut_ptr().add(b * chw), ohw as isize, wt, gb, false, true) };
            }
            // SAFETY: every value was written above.
            unsafe { out.set_len(g.n * chw) };
            return Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?);
        }
        let hw = g.h * g.w;
        if let Some(bl) = Conv::depthwise(&g).then(|| depthwise::Blocked::of(&g)).flatten() {
            let (out, _) = channel_blocks(g.n, g.c, hw, |b, c0, dst| {
                let gp = &gs[(b * g.m + c0) * ohw..];
                depthwise::transposed_block(&g, &bl, gp, &ws[c0 * k..], dst);
                true
            });
            return Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?);
        }
        let mut out = vec![0.0f32; g.n * chw];
        if Conv::depthwise(&g) {
            let padded = depthwise::Padded::of(&g);
            out.par_chunks_mut(hw).enumerate().for_each(|(p, dst)| {
                let c = p % g.c;
                let (gp, w) = (&gs[p * ohw..(p + 1) * ohw], &ws[c * k..(c + 1) * k]);
                match &padded {
                    Some(pd) => depthwise::transposed_plane(&g, pd, gp, w, dst),
                    None => depthwise_plane_transposed(&g, gp, w, dst),
                }
            });
            return Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?);
        }
        for b in 0..g.n {
            let gb = &gs[b * g.m * ohw..(b + 1) * g.m * ohw];
            let ob = &mut out[b * chw..(b + 1) * chw];
            let run = |gi: usize, dst: &mut [f32], threads: bool| {
                let gg = &gb[gi * g.mg * ohw..(gi + 1) * g.mg * ohw];
                let wg = &ws[gi * g.mg * k..(gi + 1) * g.mg * k];
                let wt = Mat::row_major(wg, g.mg, k).t();
                if g.is_pointwise() {
                    matmul(dst, wt, Mat::row_major(gg, g.mg, ohw), false, threads);
                } else {
                    let mut cols = vec![0.0f32; k * ohw];
                    matmul(&mut cols, wt, Mat::row_major(gg, g.mg, ohw), false, threads);
                    col2im(&g, &cols, dst);
                }
            };
            if self.group == 1 {
                run(0, ob, true);
            } else {
                ob.par_chunks_mut(g.cg * g.h * g.w)
                    .enumerate()
                    .for_each(|(gi, dst)| run(gi, dst, false));
            }
        }
        Ok(ArrayD::from_shape_vec(input_shape.to_vec(), out)?)
    }
}

impl super::Operator for Conv {
    super::linear_layer!();

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Conv::output_shape(self, inputs[0])
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        LinearLayer::forward(self, inputs[0], &self.weight, true)
    }

    fn kind(&self) -> Option<&'static str> {
        Some(if self.is_depthwise() {
            "depthwise convolution"
        } else {
            "convolution"
        })
    }

    fn parameters_mut(&mut self) -> Option<super::Parameters<'_>> {
        let fan_in = self.weight.shape()[1..].iter().product();
        Some(super::Parameters {
            weight: &mut self.weight,
            bias: self.bias.as_mut(),
            fan_in,
        })
    }

    fn channel_affine(&self, _m: usize, _from_end: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }

    /// Output channels on axis 1 of `[N, M, H, W]`: two axes before the last.
    fn fold(&mut self, next: &dyn super::Operator) -> bool {
        super::dense::fold_affine(&mut self.weight, &mut self.bias, 2, next)
    }
}

/// Builds a `Conv` (a constant weight on an activation, 2-D).
fn import(n: &OnnxNode) -> Result<Imported> {
    ensure!(
        n.is_act(0) && !n.is_act(1),
        "only a constant weight on an activation is supported"
    );
    let weight = n.constant(1)?.ok_or_else(|| anyhow::anyhow!("no weight"))?;
    ensure!(
        weight.ndim() == 4,
        "only 2-D convolutions, weight {:?}",
        weight.shape()
    );
    let kernel = [weight.shape()[2], weight.shape()[3]];
    let bias = n.constant(2)?;
    if let Some(b) = &bias {
        ensure!(
            b.len() == weight.shape()[0],
            "bias of {} values for {} output channels",
            b.len(),
            weight.shape()[0]
        );
    }
    Ok(Conv {
        weight,
        bias,
        window: window(n, kernel)?,
        group: n.attr_int("group", 1).max(1) as usize,
    }
    .into())
}

/// A 2-D attribute (`strides`, `dilations`, `kernel_shape`) of positive values.
pub(crate) fn pair(v: &[i64], what: &str) -> Result<[usize; 2]> {
    ensure!(v.len() == 2, "only 2-D {what} are supported, got {v:?}");
    ensure!(
        v.iter().all(|&x| x > 0),
        "{what} must be positive, got {v:?}"
    );
    Ok([v[0] as usize, v[1] as usize])
}

/// Reads the window attributes shared by `Conv` and the pools.
pub(crate) fn window(n: &OnnxNode, kernel: [usize; 2]) -> Result<Window> {
    let strides = n.attr_ints("strides").map_or(Ok([1, 1]), |v| pair(&v, "strides"))?;
    let dilations = (n.attr_ints("dilations")).map_or(Ok([1, 1]), |v| pair(&v, "dilations"))?;
    let auto = n.attr_string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let padding = match auto.as_str() {
        "SAME_UPPER" => Padding::SameUpper,
        "SAME_LOWER" => Padding::SameLower,
        "VALID" => Padding::Explicit([0; 4]),
        "NOTSET" | "" => {
            let p = n.attr_ints("pads").unwrap_or_else(|| vec![0; 4]);
            ensure!(
                p.len() == 4 && p.iter().all(|&x| x >= 0),
                "pads {p:?} not supported"
            );
            Padding::Explicit([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
        }
        other => bail!("auto_pad '{other}' not supported"),
    };
    Ok(Window {
        kernel,
        strides,
        dilations,
        padding,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "conv",
    onnx: &[
        ("Conv", "linear layer, composite rule (first / conv); 2-D, any stride, padding, dilation, group (depthwise)"),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Dimension, IxDyn};

    fn conv(window: Window, group: usize, w: ArrayD<f32>) -> Conv {
        Conv {
            weight: w,
            bias: None,
            window,
            group,
        }
    }

    /// Direct definition of a convolution, the reference for im2col + GEMM.
    fn naive(c: &Conv, x: &ArrayD<f32>) -> ArrayD<f32> {
        let out_shape = c.output_shape(x.shape()).unwrap();
        let ws = c.weight.shape();
        let (mg, cg) = (ws[0] / c.group, ws[1]);
        let p = c.window.pads(x.shape()[2], x.shape()[3]);
        let mut out = ArrayD::<f32>::zeros(out_shape.clone());
        for m in 0..out_shape[1] {
            let gi = m / mg;
            for oy in 0..out_shape[2] {
                for ox in 0..out_shape[3] {
                    let mut acc = 0.0;
                    for ci in 0..cg {
                        for i in 0..ws[2] {
                            for j in 0..ws[3] {
                                let iy = (oy * c.window.strides[0] + i * c.window.dilations[0])
                                    as isize
                                    - p[0] as isize;
                                let ix = (ox * c.window.strides[1] + j * c.window.dilations[1])
                                    as isize
                                    - p[1] as isize;
                                if iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < x.shape()[2]
                                    && (ix as usize) < x.shape()[3]
                                {
                                    acc += x[[0, gi * cg + ci, iy as usize, ix as usize]]
                                        * c.weight[[m, ci, i, j]];
                                }
                            }
                        }
                    }
                    out[[0, m, oy, ox]] = acc;
                }
            }
        }
        out
    }

    fn arr(shape: &[usize], seed: usize) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |ix| {
            let v: usize = ix.as_array_view().iter().fold(seed, |a, &i| a * 31 + i);
            ((v * 2654435761) % 1000) as f32 / 500.0 - 1.0
        })
    }

    #[test]
    fn forward_and_transpose_match_direct_definition() {
        let cases = [
            (Padding::Explicit([1, 1, 1, 1]), [1, 1], [1, 1], 1, 3, 4),
            (Padding::Explicit([0, 1, 1, 0]), [2, 2], [1, 1], 1, 3, 4),
            (Padding::Explicit([2, 2, 2, 2]), [1, 2], [2, 1], 2, 4, 6),
            (Padding::SameUpper, [2, 2], [1, 1], 4, 4, 4),
            (Padding::Explicit([0, 0, 0, 0]), [1, 1], [1, 1], 1, 3, 5),
            // 16+ input channels per group: the transposed pass as a convolution
            (Padding::Explicit([1, 0, 2, 1]), [1, 1], [1, 1], 1, 16, 5),
            (Padding::Explicit([1, 1, 1, 1]), [1, 1], [1, 1], 2, 32, 6),
            // 3x3, stride 1, 16+ channels in and out: Winograd F(2x2, 3x3),
            // forward and transposed
            (Padding::Explicit([1, 1, 1, 1]), [1, 1], [1, 1], 1, 16, 16),
            (Padding::Explicit([0, 2, 1, 1]), [1, 1], [1, 1], 1, 24, 20),
            // depthwise with a stride
            (Padding::Explicit([1, 1, 0, 0]), [2, 2], [1, 1], 4, 4, 4),
        ];
        for (padding, strides, dilations, group, c, m) in cases {
            let k = if strides == [1, 1] && padding == Padding::Explicit([0; 4]) {
                1
            } else {
                3
            };
            let window = Window {
                kernel: [k, k],
                strides,
                dilations,
                padding,
            };
            let layer = conv(window, group, arr(&[m, c / group, k, k], 7));
            // wide enough for several column tiles (tile_cols(16 * 9, ..) = 455)
            let (h, w) = if c >= 16 { (31, 29) } else { (7, 6) };
            let x = arr(&[1, c, h, w], 3);
            let z = layer.forward(&x, &layer.weight, false).unwrap();
            let want = naive(&layer, &x);
            assert_eq!(z.shape(), want.shape());
            for (a, b) in z.iter().zip(want.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            // <W x, g> = <x, W^T g> checks the transposed pass against the forward.
            let g = arr(z.shape(), 11);
            let back = layer.backward(&g, &layer.weight, x.shape()).unwrap();
            let lhs: f32 = (&z * &g).sum();
            let rhs: f32 = (&x * &back).sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }
}
