//! Kernel geometry proven against the definitions, over random geometries.
//!
//! Every convolution and pooling kernel is compared with a naive reference:
//! direct loops in f64 over the taps of each window, written from the ONNX /
//! PyTorch definitions and nothing else of this crate (no `Geo::valid`, no
//! `Window::output_size`). Geometries are drawn by proptest: kernels 1 to 11,
//! strides 1 to 4, dilations 1 to 3, asymmetric pads 0 to 5, groups,
//! depthwise and channel multipliers, odd and even input sizes; convolutions
//! through im2col (with column tiles that end mid-row), Winograd F(2x2, 3x3)
//! and the transposed pass as a convolution; pools in floor and ceil mode,
//! with and without `count_include_pad`. Checked: output sizes against the
//! PyTorch formula, forward values, the transposed pass (gradient), and LRP
//! relevance (z-plus and epsilon for convolutions, arg-max and the `Norm`
//! rule for pools).

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::conv::{Conv, Padding, Window};
use super::Pool;
use crate::kernels::conv::{conv_group, im2col_tile, tile_cols, Geo};
use crate::kernels::winograd;
use crate::rules::{LinearLayer, Rule};

/// Cases per property: a few seconds for all of them in the test profile.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6e0_3e7),
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    }
}

/// Deterministic values in `[lo, hi)` (a 64-bit LCG), optionally rounded to
/// quarters so that windows hold ties.
fn values(n: usize, seed: u64, lo: f32, hi: f32, ties: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let v = lo + (hi - lo) * u;
            if ties {
                (v * 4.0).round() / 4.0
            } else {
                v
            }
        })
        .collect()
}

fn array(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
}

/// The PyTorch output size of one axis (`torch.nn.functional` pooling and
/// convolution): `(size + pads - dilation (k - 1) - 1 [+ stride - 1 in ceil
/// mode]) / stride + 1`, minus one in ceil mode when the last window would
/// start at or after the end of the input and its leading padding.
fn torch_out(size: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, ceil: bool) -> usize {
    let num = (size + p0 + p1) as isize - (d * (k - 1) + 1) as isize;
    assert!(num >= 0, "window larger than the padded input");
    let num = num as usize + if ceil { s - 1 } else { 0 };
    let mut o = num / s + 1;
    if ceil && (o - 1) * s >= size + p0 {
        o -= 1;
    }
    o
}

/// A convolution: `c` inputs, `m` outputs, `group` groups, on `h x w`.
#[derive(Clone, Debug)]
struct ConvCase {
    c: usize,
    m: usize,
    group: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    /// `[top, left, bottom, right]`
    pads: [usize; 4],
    seed: u64,
}

impl ConvCase {
    fn out(&self) -> [usize; 2] {
        [0, 1].map(|a| {
            let (size, p0, p1) = if a == 0 {
                (self.h, self.pads[0], self.pads[2])
            } else {
                (self.w, self.pads[1], self.pads[3])
            };
            torch_out(size, self.k[a], self.s[a], self.d[a], p0, p1, false)
        })
    }

    fn layer(&self) -> Conv {
        let (cg, k) = (self.c / self.group, self.k);
        // weights scaled by 1/sqrt(fan-in), so sums stay of order one
        let scale = 1.0 / ((cg * k[0] * k[1]) as f32).sqrt();
        let n = self.m * cg * k[0] * k[1];
        let w = values(n, self.seed ^ 0x57, -scale, scale, false);
        Conv {
            weight: array(&[self.m, cg, k[0], k[1]], w),
            bias: Some(array(
                &[self.m],
                values(self.m, self.seed ^ 0xb1, -0.5, 0.5, false),
            )),
            window: Window {
                kernel: k,
                strides: self.s,
                dilations: self.d,
                padding: Padding::Explicit(self.pads),
            },
            group: self.group,
        }
    }

    fn input(&self) -> ArrayD<f32> {
        let n = self.c * self.h * self.w;
        array(
            &[1, self.c, self.h, self.w],
            values(n, self.seed, -1.0, 1.0, false),
        )
    }

    /// The kernel's own description of the call.
    fn geo(&self) -> Geo {
        let [oh, ow] = self.out();
        Geo {
            n: 1,
            c: self.c,
            h: self.h,
            w: self.w,
            m: self.m,
            cg: self.c / self.group,
            mg: self.m / self.group,
            kh: self.k[0],
            kw: self.k[1],
            oh,
            ow,
            pads: self.pads,
            s: self.s,
            d: self.d,
        }
    }

    /// Every term `(output, input, weight)` of the convolution: output
    /// `(mo, oy, ox)` reads input `(gi cg + ci, oy s + i d - pt, ox s + j d - pl)`
    /// with weight `(mo, ci, i, j)` when that position is inside the input.
    fn taps(&self) -> Vec<(usize, usize, usize)> {
        let [oh, ow] = self.out();
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let [kh, kw] = self.k;
        let mut t = Vec::new();
        for mo in 0..self.m {
            let gi = mo / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (oy * self.s[0] + i * self.d[0]) as isize
                                    - self.pads[0] as isize;
                                let x = (ox * self.s[1] + j * self.d[1]) as isize
                                    - self.pads[1] as isize;
                                if y < 0 || x < 0 || y >= self.h as isize || x >= self.w as isize {
                                    continue;
                                }
                                let input =
                                    ((gi * cg + ci) * self.h + y as usize) * self.w + x as usize;
                                let weight = ((mo * cg + ci) * kh + i) * kw + j;
                                t.push(((mo * oh + oy) * ow + ox, input, weight));
                            }
                        }
                    }
                }
            }
        }
        t
    }
}

/// `got` against `want` within `tol` of each element's `scale` (the sum of
/// the magnitudes of its terms, which bounds the rounding error).
fn close(
    what: &str,
    got: &[f32],
    want: &[f64],
    scale: &[f64],
    tol: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: lengths", what);
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        prop_assert!(g.is_finite(), "{}: element {} is {}", what, i, g);
        prop_assert!(
            (g as f64 - w).abs() <= tol * s + 1e-6,
            "{}: element {}: {} vs {} (scale {})",
            what,
            i,
            g,
            w,
            s
        );
    }
    Ok(())
}

/// Forward, transposed pass, z-plus and epsilon relevance of `case` against
/// the reference over its taps.
fn check_conv(case: &ConvCase) -> Result<(), TestCaseError> {
    let layer = case.layer();
    let x = case.input();
    let [oh, ow] = case.out();
    let out_shape = [1, case.m, oh, ow];
    prop_assert_eq!(layer.output_shape(x.shape()).unwrap(), out_shape.to_vec());
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let ws: Vec<f64> = layer.weight.iter().map(|&v| v as f64).collect();
    let bs: Vec<f64> = layer
        .bias
        .as_ref()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let taps = case.taps();
    let n_out = case.m * oh * ow;
    let bias = |o: usize| bs[o / (oh * ow)];

    // forward with bias: z_o = b_m + sum x_i w_k
    let (mut z, mut zs) = ((0..n_out).map(bias).collect::<Vec<_>>(), vec![0.0; n_out]);
    zs.iter_mut()
        .enumerate()
        .for_each(|(o, s)| *s = bias(o).abs());
    for &(o, i, k) in &taps {
        z[o] += xs[i] * ws[k];
        zs[o] += (xs[i] * ws[k]).abs();
    }
    let got = layer.forward(&x, &layer.weight, true).unwrap();
    close("forward", got.as_slice().unwrap(), &z, &zs, 1e-5)?;

    // transposed pass: (W^T g)_i = sum_o w_k g_o
    let g = array(&out_shape, values(n_out, case.seed ^ 0x9, -1.0, 1.0, false));
    let gs: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    let (mut back, mut backs) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    for &(o, i, k) in &taps {
        back[i] += ws[k] * gs[o];
        backs[i] += (ws[k] * gs[o]).abs();
    }
    let got = layer.backward(&g, &layer.weight, x.shape()).unwrap();
    prop_assert_eq!(got.shape(), x.shape());
    close("transposed", got.as_slice().unwrap(), &back, &backs, 1e-5)?;

    // z-plus: R_i = sum_o (x_i w_k)+ r_o / (z+_o + 1e-6), with
    // (x w)+ = x+ w+ + x- w- and z+_o = sum of (x w)+ (bias excluded)
    let r = array(
        &out_shape,
        values(n_out, case.seed ^ 0x77, -1.0, 1.0, false),
    );
    let rs: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let plus = |a: f64, b: f64| {
        if (a > 0.0) == (b > 0.0) && a != 0.0 && b != 0.0 {
            a * b
        } else {
            0.0
        }
    };
    let mut zp = vec![0.0; n_out];
    for &(o, i, k) in &taps {
        zp[o] += plus(xs[i], ws[k]);
    }
    let (mut rel, mut rels) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    for &(o, i, k) in &taps {
        let t = plus(xs[i], ws[k]) * rs[o] / (zp[o] + 1e-6);
        rel[i] += t;
        rels[i] += t.abs();
    }
    let got = Rule::ZPlus
        .propagate_with(&layer, &x, None, &r, None)
        .unwrap();
    close("z-plus", got.as_slice().unwrap(), &rel, &rels, 1e-4)?;

    // epsilon (bias included): R_i = sum_o x_i w_k r_o / (z_o + eps sign z_o)
    let eps = 0.5;
    let (mut rel, mut rels) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    for &(o, i, k) in &taps {
        let d = if z[o] >= 0.0 { z[o] + eps } else { z[o] - eps };
        let t = xs[i] * ws[k] * rs[o] / d;
        rel[i] += t;
        // the error of z_o (scale zs_o) moves every term by up to that share
        rels[i] += t.abs() * (1.0 + zs[o] / d.abs());
    }
    let rule = Rule::Epsilon {
        epsilon: eps as f32,
    };
    let got = rule.propagate_with(&layer, &x, None, &r, None).unwrap();
    close("epsilon", got.as_slice().unwrap(), &rel, &rels, 1e-4)
}

/// `(size, pad_begin, pad_end)` for output `o` of an axis: the input size
/// giving `o` outputs in floor mode, plus `extra` (< stride) unused rows,
/// at least 1 and at least what the window needs.
fn sized(o: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize, extra: usize) -> usize {
    let keff = d * (k - 1) + 1;
    ((o - 1) * s + keff + extra % s)
        .saturating_sub(p0 + p1)
        .max(1)
}

/// General convolutions: any kernel, stride, dilation and pads; groups,
/// depthwise layers and channel multipliers.
fn general_conv() -> impl Strategy<Value = ConvCase> {
    (
        (
            1usize..=11,
            1usize..=11,
            1usize..=4,
            1usize..=4,
            1usize..=3,
            1usize..=3,
        ),
        (0usize..=5, 0usize..=5, 0usize..=5, 0usize..=5),
        (1usize..=7, 1usize..=7, 0usize..4, 0usize..4),
        (1usize..=3, 1usize..=3, 1usize..=3, any::<u64>()),
    )
        .prop_map(
            |(
                (kh, kw, sh, sw, dh, dw),
                (pt, pl, pb, pr),
                (oh, ow, eh, ew),
                (group, cg, mg, seed),
            )| {
                ConvCase {
                    c: group * cg,
                    m: group * mg,
                    group,
                    h: sized(oh, kh, sh, dh, pt, pb, eh),
                    w: sized(ow, kw, sw, dw, pl, pr, ew),
                    k: [kh, kw],
                    s: [sh, sw],
                    d: [dh, dw],
                    pads: [pt, pl, pb, pr],
                    seed,
                }
            },
        )
    // a pad of the kernel's size or more leaves windows in the padding
    // only: legal, kept (the outputs are the bias)
}

/// Depthwise convolutions (one input channel per output channel): up to
/// 19 channels (blocks of eight and a partial one) and output rows up to 20
/// wide (one block of eight outputs, several, and a partial one).
fn depthwise_conv() -> impl Strategy<Value = ConvCase> {
    (
        general_conv(),
        1usize..=19,
        (1usize..=20, 1usize..=20, 0usize..4, 0usize..4),
    )
        .prop_map(|(mut c, ch, (oh, ow, eh, ew))| {
            (c.c, c.m, c.group) = (ch, ch, ch);
            c.h = sized(oh, c.k[0], c.s[0], c.d[0], c.pads[0], c.pads[2], eh);
            c.w = sized(ow, c.k[1], c.s[1], c.d[1], c.pads[1], c.pads[3], ew);
            c
        })
}

/// Wide layers whose unfolded columns come in several tiles that start and
/// end inside output rows, and (stride 1) the transposed pass as a
/// convolution (16+ input channels per group).
fn tiled_conv() -> impl Strategy<Value = ConvCase> {
    (
        (5usize..=11, 5usize..=11, 1usize..=2, 1usize..=2),
        (0usize..=5, 0usize..=5, 0usize..=5, 0usize..=5),
        (9usize..=16, 9usize..=16, 1usize..=2, any::<u64>()),
    )
        .prop_map(|((kh, kw, sh, dh), (pt, pl, pb, pr), (oh, ow, m, seed))| {
            // cg kh kw > 65536 / (oh ow): more than one tile of 64+ columns
            let cg = (65536 / (oh * ow * kh * kw) + 1).max(16);
            ConvCase {
                c: cg,
                m,
                group: 1,
                h: sized(oh, kh, sh, dh, pt, pb, 0),
                w: sized(ow, kw, sh, dh, pl, pr, 0),
                k: [kh, kw],
                s: [sh, sh],
                d: [dh, dh],
                pads: [pt, pl, pb, pr],
                seed,
            }
        })
}

/// Layers Winograd F(2x2, 3x3) takes: 3x3, stride and dilation 1, pads up
/// to 2, 16+ channels in and out; odd and even sizes.
fn winograd_conv() -> impl Strategy<Value = ConvCase> {
    (
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        (
            16usize..=20,
            16usize..=20,
            2usize..=9,
            2usize..=9,
            any::<u64>(),
        ),
    )
        .prop_map(|((pt, pl, pb, pr), (c, m, oh, ow, seed))| ConvCase {
            c,
            m,
            group: 1,
            h: sized(oh, 3, 1, 1, pt, pb, 0),
            w: sized(ow, 3, 1, 1, pl, pr, 0),
            k: [3, 3],
            s: [1, 1],
            d: [1, 1],
            pads: [pt, pl, pb, pr],
            seed,
        })
        .prop_filter("Winograd needs 2x2 outputs", |c| {
            c.out().iter().all(|&o| o >= 2)
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn conv_general_matches_the_definition(case in general_conv()) {
        check_conv(&case)?;
    }

    #[test]
    fn conv_depthwise_matches_the_definition(case in depthwise_conv()) {
        check_conv(&case)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn conv_tiled_matches_the_definition(case in tiled_conv()) {
        let g = case.geo();
        prop_assert!(g.ohw() > tile_cols(g.k(), g.ohw()), "one tile only: {:?}", case);
        check_conv(&case)?;
    }

    #[test]
    fn conv_winograd_and_im2col_match_the_definition(case in winograd_conv()) {
        let g = case.geo();
        prop_assert!(winograd::applies(&g, 1), "not Winograd: {:?}", case);
        check_conv(&case)?;
        // the same layer through im2col + GEMM
        let layer = case.layer();
        let x = case.input();
        let mut got = vec![0.0f32; g.m * g.ohw()];
        conv_group(&g, x.as_slice().unwrap(), layer.weight.as_slice().unwrap(), &mut got, false, false);
        let (mut z, mut zs) = (vec![0.0; got.len()], vec![0.0; got.len()]);
        for (o, i, k) in case.taps() {
            let t = x.as_slice().unwrap()[i] as f64 * layer.weight.as_slice().unwrap()[k] as f64;
            z[o] += t;
            zs[o] += t.abs();
        }
        close("im2col", &got, &z, &zs, 1e-5)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any run of output columns `c0..c1` (a tile may start and end anywhere
    /// in a row) unfolds to exactly the input values under each tap.
    #[test]
    fn im2col_tile_unfolds_any_column_range(
        case in general_conv(), a in any::<u16>(), b in any::<u16>()
    ) {
        let g = case.geo();
        let ohw = g.ohw();
        // a tile is never empty
        let c0 = a as usize % ohw;
        let c1 = c0 + 1 + b as usize % (ohw - c0);
        let x = case.input();
        let xs = x.as_slice().unwrap();
        // the first group: cg input channels
        let k = g.k();
        let mut got = vec![f32::NAN; k * (c1 - c0)];
        im2col_tile(&g, xs, c0, c1, &mut got);
        for row in 0..k {
            let (ci, i, j) = (row / (g.kh * g.kw), (row / g.kw) % g.kh, row % g.kw);
            for o in c0..c1 {
                let (oy, ox) = (o / g.ow, o % g.ow);
                let y = (oy * g.s[0] + i * g.d[0]) as isize - g.pads[0] as isize;
                let xx = (ox * g.s[1] + j * g.d[1]) as isize - g.pads[1] as isize;
                let want = if y < 0 || xx < 0 || y >= g.h as isize || xx >= g.w as isize {
                    0.0
                } else {
                    xs[(ci * g.h + y as usize) * g.w + xx as usize]
                };
                prop_assert_eq!(got[row * (c1 - c0) + o - c0], want, "row {} column {}", row, o);
            }
        }
    }
}

/// The AlexNet layers that crashed: 11x11 stride 4 pads 2 on 224x224 and
/// 5x5 pads 2 on 27x27 with 64 input channels (the second layer's column
/// tiles of 64 end in the middle of rows of 27).
#[test]
fn alexnet_layers_match_the_definition() {
    let cases = [
        ConvCase {
            c: 3,
            m: 2,
            group: 1,
            h: 224,
            w: 224,
            k: [11, 11],
            s: [4, 4],
            d: [1, 1],
            pads: [2; 4],
            seed: 1,
        },
        ConvCase {
            c: 64,
            m: 2,
            group: 1,
            h: 27,
            w: 27,
            k: [5, 5],
            s: [1, 1],
            d: [1, 1],
            pads: [2; 4],
            seed: 2,
        },
    ];
    for case in cases {
        if let Err(e) = check_conv(&case) {
            panic!("{case:?}: {e}");
        }
    }
}

/// A pooling node on `[1, c, h, w]`.
#[derive(Clone, Debug)]
struct PoolCase {
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    pads: [usize; 4],
    ceil: bool,
    count_include_pad: bool,
    seed: u64,
}

impl PoolCase {
    fn pool(&self) -> Pool {
        Pool {
            window: Window {
                kernel: self.k,
                strides: self.s,
                dilations: self.d,
                padding: Padding::Explicit(self.pads),
            },
            count_include_pad: self.count_include_pad,
            ceil_mode: self.ceil,
        }
    }

    fn out(&self) -> [usize; 2] {
        [
            torch_out(
                self.h,
                self.k[0],
                self.s[0],
                self.d[0],
                self.pads[0],
                self.pads[2],
                self.ceil,
            ),
            torch_out(
                self.w,
                self.k[1],
                self.s[1],
                self.d[1],
                self.pads[1],
                self.pads[3],
                self.ceil,
            ),
        ]
    }

    /// Input rows (or columns) under output `o` of `axis` in window order,
    /// `None` outside the input, and the divisor `count_include_pad` uses
    /// along the axis: taps before the end of the padded input (PyTorch's
    /// `min(start + k, size + pad) - start`; a ceil-mode overhang is not
    /// padding).
    fn axis(&self, axis: usize, o: usize) -> (Vec<Option<usize>>, usize) {
        let size = if axis == 0 { self.h } else { self.w };
        let start = (o * self.s[axis]) as isize - self.pads[axis] as isize;
        let end = (size + self.pads[axis + 2]) as isize;
        let mut taps = Vec::new();
        let mut padded = 0;
        for t in 0..self.k[axis] {
            let at = start + (t * self.d[axis]) as isize;
            padded += usize::from(at < end);
            taps.push((at >= 0 && at < size as isize).then_some(at as usize));
        }
        (taps, padded)
    }

    /// Input positions of window `(oy, ox)` in row-major window order, and
    /// the average pool's divisor.
    fn window(&self, oy: usize, ox: usize) -> (Vec<usize>, usize) {
        let ((ys, py), (xs, px)) = (self.axis(0, oy), self.axis(1, ox));
        let mut v = Vec::new();
        for y in ys.iter().flatten() {
            for x in xs.iter().flatten() {
                v.push(y * self.w + x);
            }
        }
        let div = if self.count_include_pad {
            py * px
        } else {
            v.len()
        };
        (v, div)
    }
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        (
            1usize..=11,
            1usize..=11,
            1usize..=4,
            1usize..=4,
            1usize..=3,
            1usize..=3,
        ),
        (0usize..=5, 0usize..=5, 0usize..=5, 0usize..=5),
        (1usize..=7, 1usize..=7, 0usize..4, 0usize..4),
        (1usize..=3, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (kh, kw, sh, sw, dh, dw),
                (pt, pl, pb, pr),
                (oh, ow, eh, ew),
                (c, ceil, cip, seed),
            )| {
                // pads below the window, as PyTorch and onnxruntime require
                let keff = |k: usize, d: usize| d * (k - 1) + 1;
                let (kh_, kw_) = (keff(kh, dh), keff(kw, dw));
                let pads = [pt % kh_, pl % kw_, pb % kh_, pr % kw_];
                PoolCase {
                    c,
                    h: sized(oh, kh, sh, dh, pads[0], pads[2], eh),
                    w: sized(ow, kw, sw, dw, pads[1], pads[3], ew),
                    k: [kh, kw],
                    s: [sh, sw],
                    d: [dh, dw],
                    pads,
                    ceil,
                    count_include_pad: cip,
                    seed,
                }
            },
        )
        // windows of dilated taps that skip the whole input have no value
        .prop_filter("every window holds an input element", |p| {
            let [oh, ow] = p.out();
            (0..oh).all(|o| p.axis(0, o).0.iter().any(Option::is_some))
                && (0..ow).all(|o| p.axis(1, o).0.iter().any(Option::is_some))
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// MaxPool: the output size, the forward (window maximum), and the
    /// relevance, which is the gradient: all of an output's value to the
    /// first maximum of its window in row-major order (PyTorch's choice).
    #[test]
    fn max_pool_matches_the_definition(case in pool_case()) {
        let p = case.pool();
        let [oh, ow] = case.out();
        prop_assert_eq!(p.output_size(case.h, case.w).unwrap(), [oh, ow]);
        let (c, hw) = (case.c, case.h * case.w);
        // ties in odd cases
        let xv = values(c * hw, case.seed, -1.0, 1.0, case.seed % 2 == 1);
        let x = array(&[1, c, case.h, case.w], xv.clone());
        let y = super::pool::forward(&p, &x, true).unwrap();
        prop_assert_eq!(y.shape(), &[1, c, oh, ow]);
        let r = array(&[1, c, oh, ow], values(c * oh * ow, case.seed ^ 3, -1.0, 1.0, false));
        let mut want = vec![0.0f64; c * hw];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (win, _) = case.window(oy, ox);
                    let mut best = win[0];
                    for &i in &win {
                        if xv[ch * hw + i] > xv[ch * hw + best] {
                            best = i;
                        }
                    }
                    prop_assert_eq!(y[[0, ch, oy, ox]], xv[ch * hw + best], "max at {} {} {}", ch, oy, ox);
                    want[ch * hw + best] += r[[0, ch, oy, ox]] as f64;
                }
            }
        }
        let scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
        let got = super::pool::max_pool(&p, &x, &r, super::MaxPoolTies::First).unwrap();
        close("max relevance", got.as_slice().unwrap(), &want, &scale, 1e-6)?;
    }

    /// MaxPool with `MaxPoolTies::Split`: each window's relevance in equal
    /// shares to the inputs within `NEAR_TIE` times the sample's largest
    /// `|x|` of the window's maximum, against that definition in f64, on two
    /// samples of different scale (the tolerance is per sample). The inputs
    /// are quarters (exact ties) minus 0, 2e-6 or 3e-5 (near ties inside and
    /// outside the tolerance 1e-5, far from its edge), with a 1.0 in each
    /// plane so that the largest |x| is 1 (times 4 in the second sample).
    /// Conserves relevance; a relative change of 1e-7 of the inputs (f32 vs
    /// f64 rounding) changes nothing.
    #[test]
    fn max_pool_split_matches_the_definition(case in pool_case()) {
        let p = case.pool();
        let [oh, ow] = case.out();
        let (c, hw, ohw) = (case.c, case.h * case.w, oh * ow);
        let base = values(c * hw, case.seed, -0.5, 1.0, true);
        let nudge = values(c * hw, case.seed ^ 7, 0.0, 3.0, false);
        let mut xv: Vec<f32> = base
            .iter()
            .zip(&nudge)
            .map(|(&b, &n)| b - [0.0, 2e-6, 3e-5][(n as usize).min(2)])
            .collect();
        for ch in 0..c {
            xv[ch * hw] = 1.0;
        }
        let scales = [1.0f32, 4.0];
        let xs: Vec<f32> = scales.iter().flat_map(|&k| xv.iter().map(move |&v| v * k)).collect();
        let x = array(&[2, c, case.h, case.w], xs.clone());
        let r = array(&[2, c, oh, ow], values(2 * c * ohw, case.seed ^ 3, -1.0, 1.0, false));
        let mut want = vec![0.0f64; 2 * c * hw];
        for (n, &k) in scales.iter().enumerate() {
            let tol = 1e-5 * k as f64;
            for ch in 0..c {
                let plane = (n * c + ch) * hw;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (win, _) = case.window(oy, ox);
                        let m = win.iter().map(|&i| xs[plane + i] as f64).fold(f64::MIN, f64::max);
                        let near: Vec<usize> = win
                            .iter()
                            .copied()
                            .filter(|&i| m - xs[plane + i] as f64 <= tol)
                            .collect();
                        let rv = r[[n, ch, oy, ox]] as f64;
                        for &i in &near {
                            want[plane + i] += rv / near.len() as f64;
                        }
                    }
                }
            }
        }
        let scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
        let split = super::MaxPoolTies::Split;
        let got = super::pool::max_pool(&p, &x, &r, split).unwrap();
        close("split max relevance", got.as_slice().unwrap(), &want, &scale, 1e-6)?;
        // conservation, per sample
        for n in 0..2 {
            let (a, b) = (n * c * hw, (n + 1) * c * hw);
            let out: f64 = got.as_slice().unwrap()[a..b].iter().map(|&v| v as f64).sum();
            let inn: f64 = r.as_slice().unwrap()[n * c * ohw..(n + 1) * c * ohw]
                .iter()
                .map(|&v| v as f64)
                .sum();
            let size: f64 = r.iter().map(|v| v.abs() as f64).sum();
            prop_assert!((out - inn).abs() <= 1e-6 * size.max(1.0), "sum {} vs {}", out, inn);
        }
        // rounding-sized changes of x move no share
        let noise = values(xs.len(), case.seed ^ 11, -1.0, 1.0, false);
        let moved: Vec<f32> = xs.iter().zip(&noise).map(|(&v, &e)| v * (1.0 + 1e-7 * e)).collect();
        let moved = super::pool::max_pool(&p, &array(&[2, c, case.h, case.w], moved), &r, split);
        prop_assert_eq!(moved.unwrap(), got);
    }

    /// AveragePool: the output size, the forward (window sum / divisor),
    /// the gradient (each output's gradient / divisor to every input of its
    /// window) and the `Norm` relevance
    /// `R_i = sum_o (x_i / div_o) r_o / (z_o + 1e-6)` (positive inputs, as
    /// after a ReLU, so that `z_o` is well away from zero).
    #[test]
    fn avg_pool_matches_the_definition(case in pool_case()) {
        let p = case.pool();
        let [oh, ow] = case.out();
        prop_assert_eq!(p.output_size(case.h, case.w).unwrap(), [oh, ow]);
        let (c, hw, ohw) = (case.c, case.h * case.w, oh * ow);
        let xv = values(c * hw, case.seed, 0.05, 1.0, false);
        let x = array(&[1, c, case.h, case.w], xv.clone());
        let y = super::pool::forward(&p, &x, false).unwrap();
        prop_assert_eq!(y.shape(), &[1, c, oh, ow]);
        let g = array(&[1, c, oh, ow], values(c * ohw, case.seed ^ 5, -1.0, 1.0, false));
        let gs = g.as_slice().unwrap();
        let (mut z, mut zs) = (vec![0.0f64; c * ohw], vec![0.0f64; c * ohw]);
        let (mut grad, mut grads) = (vec![0.0f64; c * hw], vec![0.0f64; c * hw]);
        let (mut rel, mut rels) = (vec![0.0f64; c * hw], vec![0.0f64; c * hw]);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = ch * ohw + oy * ow + ox;
                    let (win, div) = case.window(oy, ox);
                    let div = div as f64;
                    for &i in &win {
                        z[o] += xv[ch * hw + i] as f64 / div;
                        zs[o] += xv[ch * hw + i].abs() as f64 / div;
                        grad[ch * hw + i] += gs[o] as f64 / div;
                        grads[ch * hw + i] += (gs[o] as f64 / div).abs();
                    }
                    for &i in &win {
                        let t = xv[ch * hw + i] as f64 / div * gs[o] as f64 / (z[o] + 1e-6);
                        rel[ch * hw + i] += t;
                        rels[ch * hw + i] += t.abs();
                    }
                }
            }
        }
        close("avg forward", y.as_slice().unwrap(), &z, &zs, 1e-5)?;
        let got = super::pool_grad::avg_pool(&p, x.shape(), &g).unwrap();
        close("avg gradient", got.as_slice().unwrap(), &grad, &grads, 1e-5)?;
        let got = super::pool::avg_pool(&p, &x, &g).unwrap();
        close("avg relevance", got.as_slice().unwrap(), &rel, &rels, 1e-4)?;
    }
}

/// The output sizes of torchvision GoogLeNet's ceil-mode pools and of
/// hand-checked cases (PyTorch 2 prints these shapes for `MaxPool2d`).
#[test]
fn ceil_mode_output_sizes() {
    // (input, kernel, stride, pad, ceil) -> output
    let cases = [
        // GoogLeNet: MaxPool2d(3, 2, ceil_mode=True) on 112, 56, 28, 14
        (112, 3, 2, 0, true, 56),
        (56, 3, 2, 0, true, 28),
        (28, 3, 2, 0, true, 14),
        (14, 2, 2, 0, true, 7),
        // inception branch: MaxPool2d(3, 1, padding=1, ceil_mode=True)
        (28, 3, 1, 1, true, 28),
        // (111 - 3) / 2 = 54, + 1: 55 in both modes; 110: 53.5 -> 54 / 55
        (111, 3, 2, 0, true, 55),
        (110, 3, 2, 0, false, 54),
        (110, 3, 2, 0, true, 55),
        // ceil would give (5 + 2 - 2) / 2 rounded up + 1 = 4, but the last
        // window would start at 6 >= 5 + 1: dropped
        (5, 2, 2, 1, true, 3),
    ];
    for (size, k, s, pad, ceil, want) in cases {
        let p = PoolCase {
            c: 1,
            h: size,
            w: size,
            k: [k, k],
            s: [s, s],
            d: [1, 1],
            pads: [pad; 4],
            ceil,
            count_include_pad: false,
            seed: 0,
        };
        assert_eq!(p.out(), [want, want], "{p:?}");
        assert_eq!(
            p.pool().output_size(size, size).unwrap(),
            [want, want],
            "{p:?}"
        );
    }
}
