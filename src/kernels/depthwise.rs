//! Direct depthwise convolution, both ways, on a zero-padded, phase-split
//! copy of one channel plane (the way MLAS and XNNPACK avoid im2col).
//!
//! The padded plane has `h + top + bottom` rows; each row of `w + left +
//! right` values is split into `s` phases (`s` the horizontal stride), phase
//! `r` holding columns `r, r + s, r + 2s, ...`. Tap `(i, j)` of output row
//! `oy` then reads padded row `oy * sh + i * dh`, phase `(j * dw) % s`, from
//! column `(j * dw) / s` on: a contiguous run of `ow` values whatever the
//! stride or dilation, so every tap is a vector multiply-add and padding is
//! plain zeros (no bounds per tap). The forward pass sums all taps of an
//! output row in registers (one store per output); the transposed pass adds
//! each tap of each output row into the padded plane and copies the
//! unpadded part out.
//!
//! On AVX2 machines both passes run on blocks of eight channels instead
//! ([`Blocked`], [`forward_block`], [`transposed_block`]; the stride-1
//! transposed pass is a forward pass on the flipped kernel): the padded
//! plane stored pixel by pixel, one vector of channels per pixel, so that a
//! tap is one vector load or update for any width and stride, and small
//! planes (7x7, 14x14) waste no lanes. The plane kernels remain for
//! machines without AVX2 and pads far larger than the plane.

use std::mem::MaybeUninit;

use crate::kernels::conv::Geo;

/// The padded, phase-split plane of a geometry: rows, phases, phase length,
/// and the offsets of the taps.
#[derive(Clone, Debug)]
pub(crate) struct Padded {
    rows: usize,
    phases: usize,
    len: usize,
    offs: Vec<usize>,
}

impl Padded {
    /// The layout for `g`, or `None` where the pads make it much larger than
    /// the plane itself (the callers then use the tap-by-tap kernels).
    pub(crate) fn of(g: &Geo) -> Option<Padded> {
        let rows = g.h.checked_add(g.pads[0])?.checked_add(g.pads[2])?;
        let wp = g.w.checked_add(g.pads[1])?.checked_add(g.pads[3])?;
        let phases = g.s[1].max(1);
        let len = wp.div_ceil(phases) + 1;
        let size = rows.checked_mul(phases)?.checked_mul(len)?;
        if size > 4 * g.h * g.w + (1 << 16) {
            return None;
        }
        let mut p = Padded {
            rows,
            phases,
            len,
            offs: Vec::new(),
        };
        p.offs = p.taps(g);
        Some(p)
    }

    fn size(&self) -> usize {
        self.rows * self.phases * self.len
    }

    /// Index of padded column `c` of padded row `r`.
    fn at(&self, r: usize, c: usize) -> usize {
        (r * self.phases + c % self.phases) * self.len + c / self.phases
    }

    /// Offsets of the taps (row-major `i, j`) from the start of an output
    /// row's first padded row.
    fn taps(&self, g: &Geo) -> Vec<usize> {
        let mut offs = Vec::with_capacity(g.kh * g.kw);
        for i in 0..g.kh {
            for j in 0..g.kw {
                offs.push(self.at(i * g.d[0], j * g.d[1]));
            }
        }
        offs
    }

    /// For each phase `ph`, the run `q0..q1` of its columns `q * phases + ph`
    /// that hold input columns (`left <= q * phases + ph < left + w`).
    fn phase_runs(&self, g: &Geo) -> impl Iterator<Item = (usize, usize, usize)> {
        let (s, left, w) = (self.phases, g.pads[1], g.w);
        (0..s).filter_map(move |ph| {
            let q0 = left.saturating_sub(ph).div_ceil(s);
            let q1 = (left + w).saturating_sub(ph).div_ceil(s);
            (q1 > q0).then_some((ph, q0, q1))
        })
    }

    /// Start of output row `oy`'s first padded row.
    fn row_base(&self, g: &Geo, oy: usize) -> usize {
        oy * g.s[0] * self.phases * self.len
    }
}

/// Floats after the padded plane of the forward pass: a row's last vector
/// of 8 may read up to 7 values past the plane.
const SLACK: usize = 8;

thread_local! {
    /// The padded plane of this thread, reused across planes and layers.
    static PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Depthwise convolution of one plane: `dst (oh x ow) = bias + w (kh x kw) *
/// x (h x w)`.
pub(crate) fn forward_plane(g: &Geo, p: &Padded, x: &[f32], w: &[f32], bias: f32, dst: &mut [f32]) {
    let offs = &p.offs;
    assert!(x.len() >= g.h * g.w && dst.len() >= g.oh * g.ow && w.len() >= offs.len());
    PLANE.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(p.size() + SLACK, 0.0);
        for iy in 0..g.h {
            let src = &x[iy * g.w..(iy + 1) * g.w];
            let r = iy + g.pads[0];
            for (ph, q0, q1) in p.phase_runs(g) {
                let row = &mut buf[p.at(r, ph)..][..p.len];
                let first = q0 * p.phases + ph - g.pads[1];
                if p.phases == 1 {
                    row[q0..q1].copy_from_slice(&src[first..first + (q1 - q0)]);
                } else {
                    for (q, d) in row[q0..q1].iter_mut().enumerate() {
                        *d = src[first + q * p.phases];
                    }
                }
            }
        }
        taps_plane(g, p, buf, w, bias, dst);
    });
}

/// The transposed depthwise convolution of one plane: `dst (h x w) = w^T g
/// (oh x ow)`.
pub(crate) fn transposed_plane(g: &Geo, p: &Padded, gr: &[f32], w: &[f32], dst: &mut [f32]) {
    let offs = &p.offs;
    assert!(gr.len() >= g.oh * g.ow && dst.len() >= g.h * g.w && w.len() >= offs.len());
    PLANE.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(p.size(), 0.0);
        let last = p.row_base(g, g.oh.saturating_sub(1)) + offs.iter().max().unwrap_or(&0);
        assert!(
            g.oh == 0 || last + g.ow <= buf.len(),
            "depthwise plane too short"
        );
        for oy in 0..g.oh {
            let base = p.row_base(g, oy);
            let line = &gr[oy * g.ow..(oy + 1) * g.ow];
            for (&o, &wv) in offs.iter().zip(w) {
                axpy(&mut buf[base + o..base + o + g.ow], wv, line);
            }
        }
        for iy in 0..g.h {
            let out = &mut dst[iy * g.w..(iy + 1) * g.w];
            let r = iy + g.pads[0];
            for (ph, q0, q1) in p.phase_runs(g) {
                let row = &buf[p.at(r, ph)..][..p.len];
                let first = q0 * p.phases + ph - g.pads[1];
                if p.phases == 1 {
                    out[first..first + (q1 - q0)].copy_from_slice(&row[q0..q1]);
                } else {
                    for (q, &v) in row[q0..q1].iter().enumerate() {
                        out[first + q * p.phases] = v;
                    }
                }
            }
        }
    });
}

/// Whether the AVX2 + FMA kernels can run (checked once by std).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Output rows `oy` of a plane, in vectors of 8 columns: `dst[oy * ow + x]
/// = bias + sum_t ws[t] * buf[row_base(oy) + p.offs[t] + x]`, taps summed
/// in order.
fn taps_plane(g: &Geo, p: &Padded, buf: &[f32], ws: &[f32], bias: f32, dst: &mut [f32]) {
    let (oh, ow, offs) = (g.oh, g.ow, &p.offs);
    if oh == 0 || ow == 0 {
        return;
    }
    let reach = p.row_base(g, oh - 1) + offs.iter().max().unwrap_or(&0) + ow;
    assert!(reach <= buf.len() && dst.len() >= oh * ow && ws.len() >= offs.len());
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() && reach + SLACK <= buf.len() {
        // SAFETY: the features were detected; the assert above and the
        // slack keep every read inside `buf` and every write inside `dst`.
        unsafe { taps_plane_avx2(g, p, buf, ws, bias, dst) };
        return;
    }
    taps_plane_scalar(g, p, buf, ws, bias, dst);
}

/// [`taps_plane`] without SIMD (machines without AVX2 and FMA).
fn taps_plane_scalar(g: &Geo, p: &Padded, buf: &[f32], ws: &[f32], bias: f32, dst: &mut [f32]) {
    let (oh, ow, offs) = (g.oh, g.ow, &p.offs);
    for oy in 0..oh {
        let base = p.row_base(g, oy);
        for (x, d) in dst[oy * ow..(oy + 1) * ow].iter_mut().enumerate() {
            let mut s = bias;
            for (&o, &wv) in offs.iter().zip(ws) {
                s += wv * buf[base + o + x];
            }
            *d = s;
        }
    }
}

/// [`taps_plane`] with AVX2 and FMA: four vectors of 8 outputs at a time
/// (four independent chains of multiply-adds); plain loads (masked ones are
/// slow on AMD), the last vector of a row stored through a buffer.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn taps_plane_avx2(
    g: &Geo,
    p: &Padded,
    buf: &[f32],
    ws: &[f32],
    bias: f32,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (oh, ow, offs) = (g.oh, g.ow, &p.offs);
    // the vectors of the plane in order (row by row, 8 columns each), as
    // (source start, destination start, columns), four at a time; a row's
    // last vector reads up to 7 values past the row (inside `buf`, whose
    // slack the caller asserted) and stores only its own columns
    let mut jobs = [(0usize, 0usize, 8usize); 4];
    let mut filled = 0;
    let (src, out) = (buf.as_ptr(), dst.as_mut_ptr());
    let run = |jobs: &[(usize, usize, usize); 4]| {
        let b = _mm256_set1_ps(bias);
        let mut acc = [b; 4];
        for (&o, &wv) in offs.iter().zip(ws) {
            let wv = _mm256_set1_ps(wv);
            for (a, &(s, _, _)) in acc.iter_mut().zip(jobs) {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src.add(s + o)), *a);
            }
        }
        for (a, &(_, d, n)) in acc.iter().zip(jobs) {
            if n == 8 {
                _mm256_storeu_ps(out.add(d), *a);
            } else {
                let mut t = [0f32; 8];
                _mm256_storeu_ps(t.as_mut_ptr(), *a);
                std::ptr::copy_nonoverlapping(t.as_ptr(), out.add(d), n);
            }
        }
    };
    for oy in 0..oh {
        let base = p.row_base(g, oy);
        let mut x0 = 0;
        while x0 < ow {
            jobs[filled] = (base + x0, oy * ow + x0, (ow - x0).min(8));
            filled += 1;
            if filled == 4 {
                run(&jobs);
                filled = 0;
            }
            x0 += 8;
        }
    }
    if filled > 0 {
        // the last jobs repeated: the same values stored twice
        let last = jobs[filled - 1];
        jobs[filled..].fill(last);
        run(&jobs);
    }
}

/// `y += a x`.
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the features were detected; both slices hold `n` values.
        unsafe { axpy_avx2(&mut y[..n], a, &x[..n]) };
        return;
    }
    for (y, &x) in y[..n].iter_mut().zip(&x[..n]) {
        *y += a * x;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    use std::arch::x86_64::*;
    let n = y.len();
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 16 <= n {
        let y0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
        let y1 = _mm256_fmadd_ps(
            av,
            _mm256_loadu_ps(xp.add(i + 8)),
            _mm256_loadu_ps(yp.add(i + 8)),
        );
        _mm256_storeu_ps(yp.add(i), y0);
        _mm256_storeu_ps(yp.add(i + 8), y1);
        i += 16;
    }
    while i < n {
        *yp.add(i) = a.mul_add(*xp.add(i), *yp.add(i));
        i += 1;
    }
}

/// Channels per block of the channel-blocked kernel (one AVX2 vector).
pub(crate) const LANES: usize = 8;

/// The layout of the channel-blocked forward kernel: the padded input of
/// [`LANES`] channels stored pixel by pixel (`hp x wp` pixels of [`LANES`]
/// channels each, then `slack` pixels), and the offsets of the taps in
/// pixels. Every tap of every output is then one aligned vector load
/// whatever the plane's width, stride or dilation (the NCHWc layout of
/// onnxruntime's MLAS), and eight outputs of a row are eight independent
/// chains of multiply-adds, transposed back to the planes in registers.
#[derive(Clone, Debug)]
pub(crate) struct Blocked {
    hp: usize,
    wp: usize,
    slack: usize,
    offs: Vec<usize>,
}

impl Blocked {
    /// The layout for `g`, or `None` where the pads make it much larger than
    /// the plane itself or the machine lacks AVX2 and FMA (the callers then
    /// use the plane-by-plane kernels).
    pub(crate) fn of(g: &Geo) -> Option<Blocked> {
        if !cfg!(target_arch = "x86_64") || !avx2_fma() {
            return None;
        }
        let hp = g.h.checked_add(g.pads[0])?.checked_add(g.pads[2])?;
        let wp = g.w.checked_add(g.pads[1])?.checked_add(g.pads[3])?;
        if hp.checked_mul(wp)? > 4 * g.h * g.w + (1 << 16) || g.oh == 0 || g.ow == 0 {
            return None;
        }
        // the taps of the outputs past the end of a row narrower than a
        // block (they are computed, never stored) read up to this far past
        // the last pixel
        let slack = (LANES - 1) * g.s[1] + 1;
        let mut offs = Vec::with_capacity(g.kh * g.kw);
        for i in 0..g.kh {
            for j in 0..g.kw {
                offs.push(i * g.d[0] * wp + j * g.d[1]);
            }
        }
        Some(Blocked {
            hp,
            wp,
            slack,
            offs,
        })
    }

    /// Floats of the padded block.
    fn size(&self) -> usize {
        (self.hp * self.wp + self.slack) * LANES
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma() -> bool {
    false
}

thread_local! {
    /// The padded channel block of this thread, reused across blocks and
    /// layers (with room to align it to 32 bytes).
    static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kernels of `nc` channels (`taps` weights each) by tap: one vector
/// of [`LANES`] channels per tap, channels past `nc` zero.
fn by_tap(w: &[f32], nc: usize, taps: usize) -> Vec<f32> {
    let mut wt = vec![0f32; taps * LANES];
    for k in 0..nc {
        for t in 0..taps {
            wt[t * LANES + k] = w[k * taps + t];
        }
    }
    wt
}

/// Depthwise convolution of `nc <= LANES` consecutive planes: `dst` (`nc`
/// planes of `oh x ow`) `= bias + w * x` (`x`: `nc` planes of `h x w`; `w`:
/// `nc` kernels of `kh x kw`; `bias`: `nc` values or none). The sums run
/// bias first, then the taps in order, each a fused multiply-add (as
/// [`taps_plane`] on AVX2 machines); then `clamp` (`min(max(z, lo), hi)`),
/// if any. Every value of `dst` is written. `true` where every output
/// before the clamp is finite.
pub(crate) fn forward_block(
    g: &Geo,
    bl: &Blocked,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Option<(f32, f32)>,
    dst: &mut [MaybeUninit<f32>],
) -> bool {
    let (hw, ohw, taps) = (g.h * g.w, g.oh * g.ow, bl.offs.len());
    let nc = dst.len() / ohw.max(1);
    assert!(
        (1..=LANES).contains(&nc)
            && dst.len() == nc * ohw
            && x.len() >= nc * hw
            && w.len() >= nc * taps
            && bias.is_none_or(|b| b.len() >= nc)
            && g.kh * g.kw == taps
    );
    // the weights and the bias by tap, one vector of channels each
    let wt = by_tap(w, nc, taps);
    let mut bv = [0f32; LANES];
    if let Some(b) = bias {
        bv[..nc].copy_from_slice(&b[..nc]);
    }
    BLOCK.with_borrow_mut(|buf| {
        buf.resize(bl.size() + LANES, 0.0);
        let at = buf.as_ptr().align_offset(32).min(LANES);
        let tile = &mut buf[at..at + bl.size()];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Blocked::of` returned a layout, so AVX2 and FMA were
        // detected; the assert above bounds every plane read and written.
        unsafe {
            fill_block_avx2(g, bl, x, nc, tile);
            taps_block_avx2(g, bl, tile, &wt, &bv, clamp, nc, dst)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no blocked layout without AVX2")
    })
}

/// The transposed depthwise convolution of `nc <= LANES` consecutive
/// planes: `dst` (`nc` planes of `h x w`) `= w^T g` (`g`: `nc` planes of
/// `oh x ow`; `w`: `nc` kernels of `kh x kw`), on the padded block of
/// [`Blocked`]. Each input's terms are added as [`transposed_plane`] adds
/// them (output row by output row, tap by tap, each a fused multiply-add
/// into the padded plane), so the two give the same numbers. Every value of
/// `dst` is written.
pub(crate) fn transposed_block(
    g: &Geo,
    bl: &Blocked,
    gr: &[f32],
    w: &[f32],
    dst: &mut [MaybeUninit<f32>],
) {
    let (hw, ohw, taps) = (g.h * g.w, g.oh * g.ow, bl.offs.len());
    let nc = dst.len() / hw.max(1);
    assert!(
        (1..=LANES).contains(&nc)
            && dst.len() == nc * hw
            && gr.len() >= nc * ohw
            && w.len() >= nc * taps
            && g.kh * g.kw == taps
    );
    let wt = by_tap(w, nc, taps);
    // one output row of the block, pixel by pixel
    let mut line = vec![0f32; g.ow * LANES];
    BLOCK.with_borrow_mut(|buf| {
        buf.resize(bl.size() + LANES, 0.0);
        let at = buf.as_ptr().align_offset(32).min(LANES);
        let tile = &mut buf[at..at + bl.size()];
        tile.fill(0.0);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Blocked::of` returned a layout, so AVX2 and FMA were
        // detected; the assert above bounds every plane read and written.
        unsafe {
            scatter_block_avx2(g, bl, gr, nc, &wt, &mut line, tile);
            unfill_block_avx2(g, bl, tile, nc, dst);
        }
    })
}

/// Adds every output row's terms into the padded block: the row's `nc`
/// planes transposed to pixels, then tap by tap `tile[pixel] += w_tap *
/// line[ox]` (one vector of channels each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scatter_block_avx2(
    g: &Geo,
    bl: &Blocked,
    gr: &[f32],
    nc: usize,
    wt: &[f32],
    line: &mut [f32],
    tile: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (oh, ow, sh, sw, wp) = (g.oh, g.ow, g.s[0], g.s[1], bl.wp);
    let (ohw, offs) = (oh * ow, &bl.offs);
    let last = (oh - 1) * sh * wp + offs.iter().max().unwrap_or(&0) + (ow - 1) * sw;
    assert!(
        (last + 1) * LANES <= tile.len()
            && line.len() >= ow * LANES
            && wt.len() >= offs.len() * LANES
            && gr.len() >= nc * ohw
    );
    let (src, row, out) = (gr.as_ptr(), line.as_mut_ptr(), tile.as_mut_ptr());
    for oy in 0..oh {
        row_to_pixels(src, ohw, oy * ow, ow, nc, row);
        let base = oy * sh * wp;
        for (t, &o) in offs.iter().enumerate() {
            let wv = _mm256_loadu_ps(wt.as_ptr().add(t * LANES));
            let px = out.add((base + o) * LANES);
            for ox in 0..ow {
                let d = px.add(ox * sw * LANES);
                let v = _mm256_loadu_ps(row.add(ox * LANES));
                _mm256_storeu_ps(d, _mm256_fmadd_ps(wv, v, _mm256_loadu_ps(d)));
            }
        }
    }
}

/// The inverse of [`fill_block_avx2`]: the unpadded part of the block back
/// to its `nc` planes (8x8 transposes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unfill_block_avx2(
    g: &Geo,
    bl: &Blocked,
    tile: &[f32],
    nc: usize,
    dst: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let (h, w, hw, wp) = (g.h, g.w, g.h * g.w, bl.wp);
    let (top, left) = (g.pads[0], g.pads[1]);
    assert!(tile.len() >= bl.size() && dst.len() >= nc * hw);
    let (src, out) = (tile.as_ptr(), dst.as_mut_ptr().cast::<f32>());
    for iy in 0..h {
        let row = (top + iy) * wp + left;
        let mut x0 = 0;
        while x0 + LANES <= w {
            let mut r = [_mm256_setzero_ps(); LANES];
            for (p, r) in r.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(src.add((row + x0 + p) * LANES));
            }
            for (k, v) in transpose8(r).iter().enumerate().take(nc) {
                _mm256_storeu_ps(out.add(k * hw + iy * w + x0), *v);
            }
            x0 += LANES;
        }
        for xx in x0..w {
            for k in 0..nc {
                *out.add(k * hw + iy * w + xx) = *src.add((row + xx) * LANES + k);
            }
        }
    }
}

/// Writes the padded block: zero pads around the `nc` planes of `x`, stored
/// pixel by pixel (8x8 transposes), channels past `nc` zero.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_block_avx2(g: &Geo, bl: &Blocked, x: &[f32], nc: usize, tile: &mut [f32]) {
    let (h, w, hw, wp) = (g.h, g.w, g.h * g.w, bl.wp);
    let (top, left) = (g.pads[0], g.pads[1]);
    assert!(tile.len() >= bl.size() && x.len() >= nc * hw);
    // pads: the rows above and below, and each row's left and right columns
    tile[..top * wp * LANES].fill(0.0);
    tile[(top + h) * wp * LANES..].fill(0.0);
    for iy in 0..h {
        let row = (top + iy) * wp * LANES;
        tile[row..row + left * LANES].fill(0.0);
        tile[row + (left + w) * LANES..row + wp * LANES].fill(0.0);
    }
    let (src, out) = (x.as_ptr(), tile.as_mut_ptr());
    for iy in 0..h {
        let row = (top + iy) * wp + left;
        row_to_pixels(src, hw, iy * w, w, nc, out.add(row * LANES));
    }
}

/// Values `at..at + len` of `nc` planes of `plane` values at `src` stored
/// pixel by pixel at `dst` (`len` vectors of [`LANES`] channels, channels
/// past `nc` zero): 8x8 transposes, then the last pixels one by one.
///
/// # Safety
/// AVX2 and FMA; `src` readable at `k * plane + at .. + len` for `k < nc`,
/// `dst` writable for `len * LANES` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_to_pixels(
    src: *const f32,
    plane: usize,
    at: usize,
    len: usize,
    nc: usize,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    let zero = [0f32; LANES];
    let mut x0 = 0;
    while x0 + LANES <= len {
        let mut r = [_mm256_setzero_ps(); LANES];
        for (k, r) in r.iter_mut().enumerate() {
            let p = if k < nc {
                src.add(k * plane + at + x0)
            } else {
                zero.as_ptr()
            };
            *r = _mm256_loadu_ps(p);
        }
        for (p, v) in transpose8(r).iter().enumerate() {
            _mm256_storeu_ps(dst.add((x0 + p) * LANES), *v);
        }
        x0 += LANES;
    }
    for x in x0..len {
        for k in 0..LANES {
            *dst.add(x * LANES + k) = if k < nc {
                *src.add(k * plane + at + x)
            } else {
                0.0
            };
        }
    }
}

/// The 8x8 transpose of eight vectors (row `i`, lane `j` -> row `j`, lane `i`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// The outputs of a padded block, eight of a row at a time (the last eight
/// of a row overlap the previous ones rather than run short; rows narrower
/// than eight go through a buffer), transposed back to the `nc` planes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn taps_block_avx2(
    g: &Geo,
    bl: &Blocked,
    tile: &[f32],
    wt: &[f32],
    bias: &[f32; LANES],
    clamp: Option<(f32, f32)>,
    nc: usize,
    dst: &mut [MaybeUninit<f32>],
) -> bool {
    use std::arch::x86_64::*;
    let (oh, ow, sh, sw, wp) = (g.oh, g.ow, g.s[0], g.s[1], bl.wp);
    let offs = &bl.offs;
    let last = (oh - 1) * sh * wp + offs.iter().max().unwrap_or(&0) + (LANES - 1) * sw;
    assert!(
        (last + 1) * LANES <= tile.len()
            && wt.len() >= offs.len() * LANES
            && dst.len() >= nc * oh * ow
    );
    let (src, out) = (tile.as_ptr(), dst.as_mut_ptr().cast::<f32>());
    let b = _mm256_loadu_ps(bias.as_ptr());
    let ohw = oh * ow;
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    // lanes where some output was not finite (`z - z` is NaN there); the
    // pixels past a row narrower than eight do not count
    let mut bad = _mm256_setzero_ps();
    let valid = ow.min(LANES);
    for oy in 0..oh {
        let mut x0 = 0;
        loop {
            let start = if ow >= LANES { x0.min(ow - LANES) } else { 0 };
            let base = oy * sh * wp + start * sw;
            let mut acc = [b; LANES];
            for (t, &o) in offs.iter().enumerate() {
                let wv = _mm256_loadu_ps(wt.as_ptr().add(t * LANES));
                let px = src.add((base + o) * LANES);
                for (p, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(px.add(p * sw * LANES)), *a);
                }
            }
            for a in acc.iter_mut().take(valid) {
                let nan = _mm256_sub_ps(*a, *a);
                bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_UNORD_Q>(nan, nan));
                if clamp.is_some() {
                    *a = _mm256_min_ps(_mm256_max_ps(*a, lo), hi);
                }
            }
            let planes = transpose8(acc);
            let at = oy * ow + start;
            if ow >= LANES {
                for (k, v) in planes.iter().enumerate().take(nc) {
                    _mm256_storeu_ps(out.add(k * ohw + at), *v);
                }
            } else {
                let mut t = [0f32; LANES];
                for (k, v) in planes.iter().enumerate().take(nc) {
                    _mm256_storeu_ps(t.as_mut_ptr(), *v);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), out.add(k * ohw + at), ow);
                }
            }
            x0 += LANES;
            if x0 >= ow {
                break;
            }
        }
    }
    _mm256_movemask_ps(bad) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{depthwise_plane, depthwise_plane_transposed};
    use crate::rng::Rng;

    /// The tap-by-tap kernels (bounds per tap, no padded copy) are the
    /// reference here; both are checked against the direct definition in
    /// `ops/conv.rs` and `ops/geometry_tests.rs`.
    #[test]
    fn padded_kernels_match_tap_by_tap_kernels_on_random_geometries() {
        let mut rng = Rng::new(11);
        let mut pick = |n: usize| (rng.uniform() * n as f32) as usize % n;
        for case in 0..400 {
            let (kh, kw) = (1 + pick(5), 1 + pick(5));
            let s = [1 + pick(3), 1 + pick(3)];
            let d = [1 + pick(2), 1 + pick(2)];
            let pads = [pick(4), pick(4), pick(4), pick(4)];
            let (h, w) = (1 + pick(20), 1 + pick(40));
            let ekh = d[0] * (kh - 1) + 1;
            let ekw = d[1] * (kw - 1) + 1;
            if h + pads[0] + pads[2] < ekh || w + pads[1] + pads[3] < ekw {
                continue;
            }
            let oh = (h + pads[0] + pads[2] - ekh) / s[0] + 1;
            let ow = (w + pads[1] + pads[3] - ekw) / s[1] + 1;
            let g = Geo {
                n: 1,
                c: 1,
                h,
                w,
                m: 1,
                cg: 1,
                mg: 1,
                kh,
                kw,
                oh,
                ow,
                pads,
                s,
                d,
            };
            let p = Padded::of(&g).expect("small pads");
            let mut r = Rng::new(case);
            let x: Vec<f32> = (0..h * w).map(|_| r.normal()).collect();
            let wt: Vec<f32> = (0..kh * kw).map(|_| r.normal()).collect();
            let gr: Vec<f32> = (0..oh * ow).map(|_| r.normal()).collect();
            let (mut want, mut got) = (vec![0.0; oh * ow], vec![9.0; oh * ow]);
            depthwise_plane(&g, &x, &wt, &mut want);
            forward_plane(&g, &p, &x, &wt, 0.0, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
            // the scalar path (machines without AVX2) on the same padded plane
            let mut scalar = vec![9.0; oh * ow];
            PLANE.with_borrow(|buf| taps_plane_scalar(&g, &p, buf, &wt, 0.0, &mut scalar));
            for (a, b) in scalar.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "scalar {g:?}: {a} vs {b}"
                );
            }
            let (mut want, mut got) = (vec![0.0; h * w], vec![9.0; h * w]);
            depthwise_plane_transposed(&g, &gr, &wt, &mut want);
            transposed_plane(&g, &p, &gr, &wt, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn huge_pads_fall_back() {
        let g = Geo {
            n: 1,
            c: 1,
            h: 2,
            w: 2,
            m: 1,
            cg: 1,
            mg: 1,
            kh: 1,
            kw: 1,
            oh: 1002,
            ow: 1002,
            pads: [500, 500, 500, 500],
            s: [1, 1],
            d: [1, 1],
        };
        assert!(Padded::of(&g).is_none());
    }
}
