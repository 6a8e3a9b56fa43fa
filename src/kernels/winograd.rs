//! 3x3, stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2x2 block of outputs is `A^T [(G g G^T) . (B^T d B)] A` for the 4x4
//! input tile `d` under it and the 3x3 kernel `g`: 16 multiplications per
//! input channel instead of 36. Over all tiles and channels the 16 products
//! are 16 GEMMs `U_xi (M x C) * V_xi (C x tiles)`, so the convolution costs
//! 4/9 of the multiply-adds of im2col + GEMM plus cheap transforms.
//!
//! Numerics: `B` and `A` hold only 0 and +-1 and `G` only 0, +-1/2 and 1, so
//! the transforms add and halve; the results differ from the direct sum by
//! float rounding (tests below and in `conv.rs` compare with the definition).

use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::conv::Geo;
use super::linalg::SharedPtr;
use crate::kernels::linalg::{matmul_strided, Mat};

/// Whether `g` (one group) is a convolution F(2x2, 3x3) computes: a 3x3
/// kernel, stride and dilation 1, pads of at most 2, and enough channels that
/// the 16 GEMMs are not dominated by the transforms.
pub(crate) fn applies(g: &Geo, groups: usize) -> bool {
    groups == 1
        && g.kh == 3
        && g.kw == 3
        && g.s == [1, 1]
        && g.d == [1, 1]
        && g.pads.iter().all(|&p| p <= 2)
        && g.cg >= 16
        && g.mg >= 16
        && g.oh >= 2
        && g.ow >= 2
}

/// The transformed kernels `U = G g G^T`, laid out `[rows][16][cols]`: for
/// the forward pass of weights `w [m][c][3][3]` rows are output channels and
/// cols input channels; with `transposed`, the kernel of the transposed pass
/// (`w` flipped in space, rows the `c` input channels and cols the `m`
/// outputs).
pub(crate) fn transform_weights(w: &[f32], m: usize, c: usize, transposed: bool) -> Vec<f32> {
    let mut u = vec![0.0f32; m * 16 * c];
    transform_weights_into(w, m, c, transposed, &mut u);
    u
}

/// [`transform_weights`] into `u` (`m * 16 * c` floats, every one written).
fn transform_weights_into(w: &[f32], m: usize, c: usize, transposed: bool, u: &mut [f32]) {
    let (rows, cols) = if transposed { (c, m) } else { (m, c) };
    u[..rows * 16 * cols]
        .par_chunks_mut(16 * cols)
        .enumerate()
        .for_each(|(row, dst)| {
            for col in 0..cols {
                let (mo, ci) = if transposed { (col, row) } else { (row, col) };
                let src = &w[(mo * c + ci) * 9..(mo * c + ci + 1) * 9];
                let tap = |i: usize, j: usize| {
                    if transposed {
                        src[(2 - i) * 3 + (2 - j)]
                    } else {
                        src[i * 3 + j]
                    }
                };
                // G k, column by column (gk[j][i] is row i, column j), then
                // (G k) G^T row by row
                let gk = [0, 1, 2].map(|j| expand([tap(0, j), tap(1, j), tap(2, j)]));
                for i in 0..4 {
                    let row = expand([gk[0][i], gk[1][i], gk[2][i]]);
                    for (j, v) in row.into_iter().enumerate() {
                        dst[(i * 4 + j) * cols + col] = v;
                    }
                }
            }
        });
}

/// One dimension of `G`: `(g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)`.
fn expand([a, b, c]: [f32; 3]) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

thread_local! {
    /// Transformed kernels, reused across calls on this thread (rewriting a
    /// buffer costs less than faulting in fresh pages for every layer).
    static KERNELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f(U)` for the kernels [`transform_weights`] makes of `w`, computed into a
/// buffer of this thread (a fresh one if the buffer is in use further up the
/// stack, as when a rayon thread runs another layer while it waits).
pub(crate) fn with_kernels<T>(
    w: &[f32],
    m: usize,
    c: usize,
    transposed: bool,
    f: impl FnOnce(&[f32]) -> T,
) -> T {
    let len = m * 16 * c;
    KERNELS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut u) => {
            grow(&mut u, len);
            transform_weights_into(w, m, c, transposed, &mut u[..len]);
            f(&u[..len])
        }
        Err(_) => f(&transform_weights(w, m, c, transposed)),
    })
}

/// Tiles per block of a convolution with at most 128 channels in and out:
/// few enough that the block's 16 products stay in the L2 cache.
const NARROW_TILES: usize = 128;

/// Most floats in one thread's transformed tiles (and in its products).
const MAX_BLOCK_FLOATS: usize = 4 << 20;

/// Below this many tiles per thread, blocks of tile rows would make GEMMs too
/// narrow: all tiles go in one block and the 16 GEMMs run in parallel.
const FEW_TILES: usize = 64;

thread_local! {
    /// Transformed inputs and products of this thread, reused across calls.
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `dst (M x OH x OW) = conv(x (C x H x W), w)` for one image, with `u` from
/// [`transform_weights`] (rows `g.m`, cols `g.c`).
pub(crate) fn convolve(
    g: &Geo,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    dst: &mut [MaybeUninit<f32>],
) {
    let tiles = g.oh.div_ceil(2) * g.ow.div_ceil(2);
    if tiles < FEW_TILES * rayon::current_num_threads().max(1) {
        convolve_whole(g, x, u, bias, dst);
    } else {
        convolve_blocks(g, x, u, bias, dst);
    }
}

/// [`convolve`] by blocks of tile rows, one thread per block.
fn convolve_blocks(
    g: &Geo,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    dst: &mut [MaybeUninit<f32>],
) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    assert!(dst.len() >= g.m * g.oh * g.ow, "destination too short");
    let out = SharedPtr(dst.as_mut_ptr().cast());
    let threads = rayon::current_num_threads().max(1);
    // blocks of whole tile rows, as many as a multiple of the threads so
    // that they end together. Narrow layers keep their products in the cache;
    // wide ones (C x M kernels of a MB and more, packed again by every GEMM
    // call) take twice as many tiles as channels to spread that packing, up
    // to 16 MB of transformed tiles per thread.
    let wide = g.c.max(g.m);
    let target = if wide <= 128 {
        NARROW_TILES
    } else {
        (2 * wide).min(MAX_BLOCK_FLOATS / (16 * wide)).max(1)
    };
    let rows = (target / tw).clamp(1, th);
    let blocks = th.div_ceil(rows).next_multiple_of(threads).min(th);
    let rows = th.div_ceil(blocks);
    let blocks = th.div_ceil(rows);
    (0..blocks).into_par_iter().for_each(|b| {
        let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(th));
        BUFFERS.with_borrow_mut(|(v, p, line)| {
            let tiles = (ty1 - ty0) * tw;
            grow(v, 16 * g.c * tiles);
            grow(p, 16 * g.m * tiles);
            grow(line, 4 * (2 * tw + 2));
            input_transform(g, x, ty0, ty1, tw, &mut v[..16 * g.c * tiles], line);
            for (xi, pb) in p[..16 * g.m * tiles]
                .chunks_exact_mut(g.m * tiles)
                .enumerate()
            {
                product(g, u, &v[..16 * g.c * tiles], pb, tiles, xi);
            }
            // SAFETY: this block writes output rows 2*ty0 .. 2*ty1 of every plane only.
            unsafe {
                output_transform(
                    g,
                    &p[..16 * g.m * tiles],
                    ty0,
                    ty1,
                    tw,
                    0..g.m,
                    bias,
                    out.get(),
                )
            };
        });
    });
}

/// [`convolve`] with all tiles in one block: the 16 GEMMs, then the output
/// planes, are shared out between the threads.
fn convolve_whole(
    g: &Geo,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    dst: &mut [MaybeUninit<f32>],
) {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    assert!(dst.len() >= g.m * g.oh * g.ow, "destination too short");
    let dst = SharedPtr(dst.as_mut_ptr().cast());
    let tiles = th * tw;
    let mut v = vec![0.0f32; 16 * g.c * tiles];
    let mut line = vec![0.0f32; 4 * (2 * tw + 2)];
    input_transform(g, x, 0, th, tw, &mut v, &mut line);
    let mut p = vec![0.0f32; 16 * g.m * tiles];
    p.par_chunks_mut(g.m * tiles)
        .enumerate()
        .for_each(|(xi, pb)| product(g, u, &v, pb, tiles, xi));
    let chunk = g.m.div_ceil(4 * rayon::current_num_threads().max(1));
    (0..g.m.div_ceil(chunk)).into_par_iter().for_each(|k| {
        let ms = k * chunk..((k + 1) * chunk).min(g.m);
        // SAFETY: this task writes the output planes `ms` only.
        unsafe { output_transform(g, &p, 0, th, tw, ms, bias, dst.get()) };
    });
}

/// `P_xi (M x tiles) = U_xi (M x C) * V_xi (C x tiles)` on the calling thread.
fn product(g: &Geo, u: &[f32], v: &[f32], pb: &mut [f32], tiles: usize, xi: usize) {
    let a = Mat::strided(&u[xi * g.c..], g.m, g.c, 16 * g.c, 1);
    let vb = &v[xi * g.c * tiles..(xi + 1) * g.c * tiles];
    assert!(pb.len() >= g.m * tiles, "product buffer too short");
    // SAFETY: `pb` holds the `m x tiles` floats written.
    unsafe {
        matmul_strided(
            pb.as_mut_ptr(),
            tiles as isize,
            a,
            Mat::row_major(vb, g.c, tiles),
            false,
            false,
        )
    };
}

fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// `V_xi[c][t] = (B^T d B)_xi` for the tiles of tile rows `ty0..ty1`.
fn input_transform(
    g: &Geo,
    x: &[f32],
    ty0: usize,
    ty1: usize,
    tw: usize,
    v: &mut [f32],
    line: &mut [f32],
) {
    let tiles = (ty1 - ty0) * tw;
    let width = 2 * tw + 2;
    let (pt, pl) = (g.pads[0] as isize, g.pads[1]);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ty in ty0..ty1 {
            // the four padded input rows under this row of tiles, combined
            // by B^T: e0 = r0 - r2, e1 = r1 + r2, e2 = r2 - r1, e3 = r1 - r3
            let (l0, rest) = line.split_at_mut(width);
            let (l1, rest) = rest.split_at_mut(width);
            let (l2, l3) = rest.split_at_mut(width);
            let l3 = &mut l3[..width];
            for (k, l) in [&mut *l0, &mut *l1, &mut *l2, &mut *l3]
                .into_iter()
                .enumerate()
            {
                l.fill(0.0);
                let iy = (2 * ty) as isize + k as isize - pt;
                if iy >= 0 && (iy as usize) < g.h {
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let n = src.len().min(width - pl);
                    l[pl..pl + n].copy_from_slice(&src[..n]);
                }
            }
            for q in 0..width {
                let (a, b, cc, d) = (l0[q], l1[q], l2[q], l3[q]);
                l0[q] = a - cc;
                l1[q] = b + cc;
                l2[q] = cc - b;
                l3[q] = b - d;
            }
            // then by B along each row, into the 16 planes
            let t0 = (ty - ty0) * tw;
            for (i, l) in [&*l0, &*l1, &*l2, &*l3].into_iter().enumerate() {
                let base = |j: usize| ((i * 4 + j) * g.c + c) * tiles + t0;
                let (b0, b1, b2, b3) = (base(0), base(1), base(2), base(3));
                for tx in 0..tw {
                    let q = 2 * tx;
                    let (a, b, cc, d) = (l[q], l[q + 1], l[q + 2], l[q + 3]);
                    v[b0 + tx] = a - cc;
                    v[b1 + tx] = b + cc;
                    v[b2 + tx] = cc - b;
                    v[b3 + tx] = b - d;
                }
            }
        }
    }
}

/// `Y = A^T P A` for the tiles of tile rows `ty0..ty1`, written to output
/// planes `ms` of `dst`.
///
/// # Safety
/// `dst` must hold `g.m x g.oh x g.ow` floats, and no other thread may access
/// output rows `2 * ty0 .. 2 * ty1` of planes `ms` during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    g: &Geo,
    p: &[f32],
    ty0: usize,
    ty1: usize,
    tw: usize,
    ms: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    dst: *mut f32,
) {
    assert!(bias.is_none_or(|b| b.len() >= ms.end), "bias too short");
    let tiles = (ty1 - ty0) * tw;
    // per output row of a tile row: the columns combined by A^T, then the
    // two outputs of each tile
    let mut r = vec![0.0f32; 4 * tw];
    let mut y = vec![0.0f32; 2 * tw];
    for m in ms {
        for ty in ty0..ty1 {
            let t0 = (ty - ty0) * tw;
            let at = |xi: usize| &p[(xi * g.m + m) * tiles + t0..(xi * g.m + m) * tiles + t0 + tw];
            for a in 0..2 {
                let oy = 2 * ty + a;
                if oy >= g.oh {
                    break;
                }
                // row a of A^T: (1, 1, 1, 0) or (0, 1, -1, -1)
                for (j, rj) in r.chunks_exact_mut(tw).enumerate() {
                    let (p0, p1, p2, p3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    if a == 0 {
                        for (((o, &v0), &v1), &v2) in rj.iter_mut().zip(p0).zip(p1).zip(p2) {
                            *o = v0 + v1 + v2;
                        }
                    } else {
                        for (((o, &v1), &v2), &v3) in rj.iter_mut().zip(p1).zip(p2).zip(p3) {
                            *o = v1 - v2 - v3;
                        }
                    }
                }
                let (r0, rest) = r.split_at(tw);
                let (r1, rest) = rest.split_at(tw);
                let (r2, r3) = rest.split_at(tw);
                for ((((pair, &v0), &v1), &v2), &v3) in
                    y.chunks_exact_mut(2).zip(r0).zip(r1).zip(r2).zip(r3)
                {
                    pair[0] = v0 + v1 + v2;
                    pair[1] = v1 - v2 - v3;
                }
                // the bias after the transform (as a pass of its own would)
                if let Some(b) = bias {
                    let bv = b[m];
                    y[..g.ow].iter_mut().for_each(|v| *v += bv);
                }
                // SAFETY: row `oy` of plane `m` is in bounds and owned by
                // this block (maybe not initialised: written, never read).
                unsafe {
                    std::ptr::copy_nonoverlapping(y.as_ptr(), dst.add((m * g.oh + oy) * g.ow), g.ow)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = fn(&Geo, &[f32], &[f32], Option<&[f32]>, &mut [MaybeUninit<f32>]);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        // a small LCG: deterministic values in [-1, 1)
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn geo(c: usize, m: usize, h: usize, w: usize, pads: [usize; 4]) -> Geo {
        Geo {
            n: 1,
            c,
            h,
            w,
            m,
            cg: c,
            mg: m,
            kh: 3,
            kw: 3,
            oh: h + pads[0] + pads[2] - 2,
            ow: w + pads[1] + pads[3] - 2,
            pads,
            s: [1, 1],
            d: [1, 1],
        }
    }

    /// The definition of the convolution, in f64, with the sum of |terms|
    /// of each output (the scale of its rounding error).
    fn direct(g: &Geo, x: &[f32], w: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; g.m * g.oh * g.ow];
        let mut scale = vec![0.0; g.m * g.oh * g.ow];
        for m in 0..g.m {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (mut acc, mut abs) = (0.0f64, 0.0f64);
                    for c in 0..g.c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let iy = (oy + i) as isize - g.pads[0] as isize;
                                let ix = (ox + j) as isize - g.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                let xv = x[(c * g.h + iy as usize) * g.w + ix as usize] as f64;
                                let t = xv * w[((m * g.c + c) * 3 + i) * 3 + j] as f64;
                                acc += t;
                                abs += t.abs();
                            }
                        }
                    }
                    out[(m * g.oh + oy) * g.ow + ox] = acc;
                    scale[(m * g.oh + oy) * g.ow + ox] = abs;
                }
            }
        }
        (out, scale)
    }

    #[test]
    fn matches_the_direct_convolution() {
        // odd and even sizes, every pad from 0 to 2, one and several blocks
        let cases = [
            (16, 16, 7, 6, [1, 1, 1, 1]),
            (17, 20, 9, 11, [0, 0, 0, 0]),
            (16, 24, 5, 8, [2, 1, 0, 2]),
            (20, 16, 13, 13, [1, 2, 2, 0]),
            (64, 48, 41, 38, [1, 1, 1, 1]),
            (300, 16, 9, 30, [1, 1, 1, 1]),
        ];
        for (seed, (c, m, h, w, pads)) in cases.into_iter().enumerate() {
            let g = geo(c, m, h, w, pads);
            assert!(applies(&g, 1), "case {seed}");
            let x = values(c * h * w, seed as u64);
            let wt = values(m * c * 9, 100 + seed as u64);
            let u = transform_weights(&wt, m, c, false);
            let (want, scale) = direct(&g, &x, &wt);
            // both ways of sharing out the work, whatever `convolve` picks here
            let ways: [(&str, Kernel); 2] =
                [("blocks", convolve_blocks), ("whole", convolve_whole)];
            let bias = values(m, 200 + seed as u64);
            for (way, run) in ways {
                for with_bias in [false, true] {
                    let mut got = vec![MaybeUninit::new(f32::NAN); m * g.oh * g.ow];
                    run(&g, &x, &u, with_bias.then_some(&bias[..]), &mut got);
                    for (o, ((a, &b), &s)) in got.iter().zip(&want).zip(&scale).enumerate() {
                        // SAFETY: initialised above (NaN where not written)
                        let a = unsafe { a.assume_init() };
                        let b = b + if with_bias {
                            bias[o / (g.oh * g.ow)] as f64
                        } else {
                            0.0
                        };
                        // f32 rounding of a sum of 9c terms: a few ulp of their |sum|
                        assert!(
                            (a as f64 - b).abs() <= 1e-6 * s + 1e-6,
                            "case {seed}, {way}, bias {with_bias}: {a} vs {b} (scale {s})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transposed_kernels_are_the_flipped_transpose() {
        let (m, c) = (5, 3);
        let w = values(m * c * 9, 7);
        // w' [c][m][i][j] = w [m][c][2 - i][2 - j]
        let mut flipped = vec![0.0; w.len()];
        for mo in 0..m {
            for ci in 0..c {
                for i in 0..3 {
                    for j in 0..3 {
                        flipped[((ci * m + mo) * 3 + i) * 3 + j] =
                            w[((mo * c + ci) * 3 + 2 - i) * 3 + 2 - j];
                    }
                }
            }
        }
        assert_eq!(
            transform_weights(&w, m, c, true),
            transform_weights(&flipped, c, m, false)
        );
    }
}
