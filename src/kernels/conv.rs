//! The loops behind `Conv` (conv.rs): geometry of one call, tiled im2col +
//! GEMM, col2im, and the direct depthwise kernels.

use rayon::prelude::*;

use crate::kernels::linalg::{matmul, matmul_strided, Mat, SharedPtr};

/// Everything the loops need about one call.
#[derive(Clone, Debug)]
pub(crate) struct Geo {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) m: usize,
    pub(crate) cg: usize,
    pub(crate) mg: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) pads: [usize; 4],
    pub(crate) s: [usize; 2],
    pub(crate) d: [usize; 2],
}

impl Geo {
    pub(crate) fn k(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    pub(crate) fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == [1, 1] && self.pads == [0; 4]
    }
    /// Range of output columns whose input column `ox*s + j*d - pad` lies in
    /// the input, within `0..out`. It may be empty (a tap that only ever reads
    /// padding), and then its bounds are no input position: callers must not
    /// compute an input index from them.
    pub(crate) fn valid(
        &self,
        axis: usize,
        offset: usize,
        out: usize,
        size: usize,
    ) -> (usize, usize) {
        // input = o*s + offset - pad, need 0 <= input < size
        let s = self.s[axis];
        let pad = self.pads[axis];
        let lo = if pad > offset {
            (pad - offset).div_ceil(s).min(out)
        } else {
            0
        };
        let hi = if size + pad > offset {
            (size + pad - offset).div_ceil(s).min(out)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// Folds `K x OHW` columns back onto one group of one image, summing overlaps.
pub(crate) fn col2im(g: &Geo, cols: &[f32], x: &mut [f32]) {
    let ohw = g.ohw();
    x.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(c, plane)| {
            plane.fill(0.0);
            for i in 0..g.kh {
                let (ylo, yhi) = g.valid(0, i * g.d[0], g.oh, g.h);
                for j in 0..g.kw {
                    let (xlo, xhi) = g.valid(1, j * g.d[1], g.ow, g.w);
                    let row = (c * g.kh + i) * g.kw + j;
                    let src = &cols[row * ohw..(row + 1) * ohw];
                    for oy in ylo..yhi {
                        let iy = oy * g.s[0] + i * g.d[0] - g.pads[0];
                        let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                        let line = &src[oy * g.ow..(oy + 1) * g.ow];
                        for ox in xlo..xhi {
                            dst[ox * g.s[1] + j * g.d[1] - g.pads[1]] += line[ox];
                        }
                    }
                }
            }
        });
}

/// Tiles from which a convolution's tiles run in parallel, each product on
/// one thread (fewer: each product in parts).
const MANY_TILES: usize = 4;

/// About this many floats of unfolded columns per tile (fits the L2 cache).
const TILE_FLOATS: usize = 64 * 1024;

/// Output columns per tile for `k` rows of unfolded input.
pub(crate) fn tile_cols(k: usize, ohw: usize) -> usize {
    (TILE_FLOATS / k.max(1)).clamp(64, 4096).min(ohw.max(1))
}

thread_local! {
    /// The unfolded-columns buffer of this thread, reused across tiles, layers and images.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Unfolds output columns `c0..c1` of one group of one image (`cg x h x w`)
/// into `cols` (`K x (c1 - c0)`, row-major).
pub(crate) fn im2col_tile(g: &Geo, x: &[f32], c0: usize, c1: usize, cols: &mut [f32]) {
    let width = c1 - c0;
    for (row, dst) in cols.chunks_exact_mut(width).enumerate() {
        let j = row % g.kw;
        let i = (row / g.kw) % g.kh;
        let c = row / (g.kw * g.kh);
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let (ylo, yhi) = g.valid(0, i * g.d[0], g.oh, g.h);
        let (xlo, xhi) = g.valid(1, j * g.d[1], g.ow, g.w);
        let x0 = j * g.d[1];
        let mut o = c0;
        while o < c1 {
            let (oy, ox0) = (o / g.ow, o % g.ow);
            let ox1 = (g.ow).min(ox0 + (c1 - o));
            let line = &mut dst[o - c0..o - c0 + (ox1 - ox0)];
            if oy < ylo || oy >= yhi {
                line.fill(0.0);
            } else {
                let iy = oy * g.s[0] + i * g.d[0] - g.pads[0];
                let src = &plane[iy * g.w..(iy + 1) * g.w];
                // the valid columns within this row segment, maybe none (the
                // segment, a tile's part of a row, can lie wholly before or
                // after them: then no input column may be computed)
                let lo = xlo.clamp(ox0, ox1);
                let hi = xhi.clamp(lo, ox1);
                line[..lo - ox0].fill(0.0);
                line[hi - ox0..].fill(0.0);
                if lo == hi {
                    // nothing of the input in this segment
                } else if g.s[1] == 1 {
                    let start = lo + x0 - g.pads[1];
                    line[lo - ox0..hi - ox0].copy_from_slice(&src[start..start + (hi - lo)]);
                } else {
                    for ox in lo..hi {
                        line[ox - ox0] = src[ox * g.s[1] + x0 - g.pads[1]];
                    }
                }
            }
            o += ox1 - ox0;
        }
    }
}

/// `dst (mg x OHW) = [dst +] w (mg x K) * im2col(x)` for one group of one
/// image, in tiles of output columns (unfolded into a reused per-thread
/// buffer); `accumulate` adds to `dst` (a bias put there first); `threads`
/// lets it use all rayon threads.
pub(crate) fn conv_group(
    g: &Geo,
    x: &[f32],
    w: &[f32],
    dst: &mut [f32],
    accumulate: bool,
    threads: bool,
) {
    let (k, ohw) = (g.k(), g.ohw());
    let wm = Mat::row_major(w, g.mg, k);
    assert!(dst.len() >= g.mg * ohw, "destination too short");
    if g.is_pointwise() {
        matmul(dst, wm, Mat::row_major(x, k, ohw), accumulate, threads);
        return;
    }
    let t = tile_cols(k, ohw);
    let tiles = ohw.div_ceil(t);
    // tiles in parallel where there are enough of them, else each tile's
    // product in parts: decided from the shape alone (how a product is cut
    // changes its order of sums: see `linalg`)
    let many = threads && tiles >= MANY_TILES;
    let out = SharedPtr(dst.as_mut_ptr());
    let run = |ti: usize| {
        let (c0, c1) = (ti * t, ((ti + 1) * t).min(ohw));
        COLUMNS.with_borrow_mut(|cols| {
            if cols.len() < k * (c1 - c0) {
                cols.resize(k * (c1 - c0), 0.0);
            }
            let cols = &mut cols[..k * (c1 - c0)];
            im2col_tile(g, x, c0, c1, cols);
            let b = Mat::row_major(cols, k, c1 - c0);
            // SAFETY: `dst` holds mg rows of `ohw`; this task alone writes columns c0..c1.
            unsafe {
                matmul_strided(
                    out.get().add(c0),
                    ohw as isize,
                    wm,
                    b,
                    accumulate,
                    threads && !many,
                )
            };
        });
    };
    if many {
        (0..tiles).into_par_iter().for_each(run);
    } else {
        (0..tiles).for_each(run);
    }
}

/// Depthwise convolution of one channel plane: `dst (OH x OW) = w (kh x kw) * x (h x w)`.
pub(crate) fn depthwise_plane(g: &Geo, x: &[f32], w: &[f32], dst: &mut [f32]) {
    dst.fill(0.0);
    for i in 0..g.kh {
        let (ylo, yhi) = g.valid(0, i * g.d[0], g.oh, g.h);
        for j in 0..g.kw {
            let (xlo, xhi) = g.valid(1, j * g.d[1], g.ow, g.w);
            if xlo == xhi {
                continue; // this tap reads padding only
            }
            let wv = w[i * g.kw + j];
            let x0 = j * g.d[1];
            for oy in ylo..yhi {
                let iy = oy * g.s[0] + i * g.d[0] - g.pads[0];
                let src = &x[iy * g.w..(iy + 1) * g.w];
                let line = &mut dst[oy * g.ow + xlo..oy * g.ow + xhi];
                if g.s[1] == 1 {
                    let start = xlo + x0 - g.pads[1];
                    let src = &src[start..start + (xhi - xlo)];
                    line.iter_mut().zip(src).for_each(|(o, &v)| *o += wv * v);
                } else {
                    for (o, ox) in line.iter_mut().zip(xlo..xhi) {
                        *o += wv * src[ox * g.s[1] + x0 - g.pads[1]];
                    }
                }
            }
        }
    }
}

/// The transposed depthwise convolution of one plane: `dst (h x w) = w^T g (OH x OW)`.
pub(crate) fn depthwise_plane_transposed(g: &Geo, gr: &[f32], w: &[f32], dst: &mut [f32]) {
    dst.fill(0.0);
    for i in 0..g.kh {
        let (ylo, yhi) = g.valid(0, i * g.d[0], g.oh, g.h);
        for j in 0..g.kw {
            let (xlo, xhi) = g.valid(1, j * g.d[1], g.ow, g.w);
            if xlo == xhi {
                continue; // this tap reads padding only
            }
            let wv = w[i * g.kw + j];
            let x0 = j * g.d[1];
            for oy in ylo..yhi {
                let iy = oy * g.s[0] + i * g.d[0] - g.pads[0];
                let row = &mut dst[iy * g.w..(iy + 1) * g.w];
                let line = &gr[oy * g.ow + xlo..oy * g.ow + xhi];
                if g.s[1] == 1 {
                    let start = xlo + x0 - g.pads[1];
                    let row = &mut row[start..start + (xhi - xlo)];
                    row.iter_mut().zip(line).for_each(|(o, &v)| *o += wv * v);
                } else {
                    for (&v, ox) in line.iter().zip(xlo..xhi) {
                        row[ox * g.s[1] + x0 - g.pads[1]] += wv * v;
                    }
                }
            }
        }
    }
}
