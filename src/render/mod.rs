//! Turning a relevance map into a picture.
//!
//! Knows nothing about models: input is a `[C, H, W]` relevance array, output
//! is an RGB image with a diverging red/white/blue colour map (red = positive
//! evidence for the class, blue = negative, white = none), optionally blended
//! over a grey version of the photo.
//!
//! [`heatmap_image`] keeps the single-heatmap default ([`colorize`]); the
//! [`Style`]d functions ([`render_map`], [`colour_bar`],
//! [`heatmap_image_styled`]) choose the colour map ([`Cmap`]), the
//! normalisation ([`MapNorm`]) and the `level`, as Zennit's `imgify`.

mod colormap;
mod norm;
mod style;

pub use colormap::{Cmap, SIGNED_CMAPS, UNSIGNED_CMAPS};
pub use norm::{apply_level, normalize_map, normalize_scaled, percentile, MapNorm, Scale};
/// Writes `img` as PNG to `w`, as every heatmap of the command and the
/// Python package (the `image` crate's default PNG encoder).
pub fn write_png(img: &RgbImage, w: impl std::io::Write) -> anyhow::Result<()> {
    use anyhow::Context;
    img.write_with_encoder(image::codecs::png::PngEncoder::new(w))
        .context("PNG encoding failed")
}

pub use style::{colour_bar, heatmap_image_styled, render_map, Style, DEFAULT_CLIP};

use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use ndarray::{Array2, ArrayView3, Axis};

/// Heat-map opacity used by [`heatmap_image`] when blending over the photo.
pub const DEFAULT_ALPHA: f32 = 0.6;

/// Sums a `[C, H, W]` relevance array over the channel axis, giving `[H, W]`.
/// A map with zero channels gives zeros.
pub fn channel_sum(rel: ArrayView3<f32>) -> Array2<f32> {
    rel.sum_axis(Axis(0))
}

/// Replaces NaN and ±Inf by 0.
fn finite_or_zero(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Resampling weights for one axis: for every output index, the first source
/// index and the normalised weights of the consecutive source samples.
///
/// Same scheme as `image`'s / PIL's bilinear filter: a triangle kernel of
/// radius 1 in output pixels, i.e. its support is widened by the scale factor
/// when downscaling (antialiasing); pixel centres are at `i + 0.5`.
fn axis_weights(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = src as f64 / dst as f64;
    let scale = ratio.max(1.0);
    let support = scale; // triangle kernel support (1.0) * scale
    (0..dst)
        .map(|o| {
            let centre = (o as f64 + 0.5) * ratio;
            let lo = ((centre - support).floor().max(0.0) as usize).min(src - 1);
            let hi = ((centre + support).ceil() as usize).clamp(lo + 1, src);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - centre) / scale).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            } else {
                // Cannot happen for a non-empty window, but stay safe.
                w.iter_mut().for_each(|x| *x = 1.0 / (hi - lo) as f64);
            }
            (lo, w.into_iter().map(|x| x as f32).collect())
        })
        .collect()
}

/// Resizes a float map (rows = height, cols = width) to `height x width`
/// with a separable bilinear (triangle) filter that is antialiased when
/// downscaling, like `image`'s `FilterType::Triangle` / PIL's `BILINEAR`,
/// but in full `f32` precision and keeping the sign (`image`'s own resize
/// clamps float pixels to `[0, 1]`). Non-finite entries are treated as 0.
/// An empty source map gives zeros. Returns shape `[height, width]`.
pub fn resize_map(map: &Array2<f32>, width: u32, height: u32) -> Array2<f32> {
    let (dh, dw) = (height as usize, width as usize);
    let (sh, sw) = map.dim();
    let clean = map.mapv(finite_or_zero);
    if (sh, sw) == (dh, dw) {
        return clean;
    }
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 {
        return Array2::zeros((dh, dw));
    }
    // Horizontal pass: [sh, sw] -> [sh, dw].
    let wx = axis_weights(sw, dw);
    let mut tmp = Array2::<f32>::zeros((sh, dw));
    for (src_row, mut dst_row) in clean.rows().into_iter().zip(tmp.rows_mut()) {
        for (d, (lo, w)) in dst_row.iter_mut().zip(&wx) {
            *d = w
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * src_row[lo + k])
                .sum();
        }
    }
    // Vertical pass: [sh, dw] -> [dh, dw].
    let wy = axis_weights(sh, dh);
    let mut out = Array2::<f32>::zeros((dh, dw));
    for (mut dst_row, (lo, w)) in out.rows_mut().into_iter().zip(&wy) {
        for (k, wk) in w.iter().enumerate() {
            dst_row.scaled_add(*wk, &tmp.row(lo + k));
        }
    }
    out
}

/// Divides a map by its largest absolute value so that it lies in `[-1, 1]`
/// (sign preserved; the largest magnitude becomes exactly ±1).
///
/// NaN and ±Inf entries are treated as 0 and never propagate; an all-zero
/// (or all non-finite, or empty) map gives all zeros.
pub fn symmetric_normalize(map: &Array2<f32>) -> Array2<f32> {
    let max = map
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        return Array2::zeros(map.dim());
    }
    map.mapv(|v| {
        if v.is_finite() {
            (v / max).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    })
}

/// `colorous::RED_BLUE` at `t` as floats.
///
/// `t` is capped just below 1: colorous evaluates its spline in `f32` and
/// truncates, and at exactly `t = 1` rounding overshoots the last knot,
/// giving (4, 47, 96) instead of the scheme's end colour (5, 48, 97).
fn scheme(t: f64) -> [f32; 3] {
    let c = colorous::RED_BLUE.eval_continuous(t.min(1.0 - 1e-6));
    [c.r as f32, c.g as f32, c.b as f32]
}

/// Colour of one normalised value (see [`colorize`]).
fn color_of(v: f32) -> Rgb<u8> {
    let v = if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let centre = scheme(0.5);
    let s = scheme(0.5 - f64::from(v) / 2.0);
    let fade = 1.0 - v.abs();
    let mut out = [0u8; 3];
    for c in 0..3 {
        let x = s[c] + fade * (255.0 - centre[c]);
        out[c] = x.round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// Maps a normalised map (values in `[-1, 1]`, rows = height) to colours.
///
/// Diverging red/white/blue map based on ColorBrewer RdBu
/// (`colorous::RED_BLUE`, evaluated at `t = 0.5 - v/2`, so positive values
/// are red and negative ones blue). That scheme's centre is an off-white
/// grey, so the colour is
///
/// `colour(v) = RdBu(0.5 - v/2) + (1 - |v|) * (white - RdBu(0.5))`
///
/// i.e. the centre's offset from pure white is added back, fading out
/// linearly towards the ends. Hence `v = 0` is exactly (255, 255, 255),
/// `v = +1` is RdBu's red end (103, 0, 31), `v = -1` its blue end
/// (5, 48, 97); colours darken/saturate monotonically with `|v|`, positive
/// values always have `r >= b` and negative ones `b >= r` (strictly once the
/// colour differs from white). Values outside `[-1, 1]` are clamped, NaN is
/// treated as 0.
pub fn colorize(norm: &Array2<f32>) -> RgbImage {
    let (h, w) = norm.dim();
    let mut img = RgbImage::new(w as u32, h as u32);
    for ((y, x), v) in norm.indexed_iter() {
        img.put_pixel(x as u32, y as u32, color_of(*v));
    }
    img
}

/// BT.601 luma of an 8-bit RGB pixel, in 0..=255 (unrounded).
fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Blends a heat map over a greyscale version of `photo`.
///
/// The photo is converted to grey (ITU-R BT.601 luma, kept as RGB), resized
/// to the heat map's size with `FilterType::Triangle` if needed, and blended
/// per channel: `out = alpha * heat + (1 - alpha) * grey`, rounded.
/// `alpha` is clamped to `[0, 1]`; a NaN `alpha` uses [`DEFAULT_ALPHA`].
pub fn overlay(heat: &RgbImage, photo: &RgbImage, alpha: f32) -> RgbImage {
    let alpha = if alpha.is_nan() {
        DEFAULT_ALPHA
    } else {
        alpha.clamp(0.0, 1.0)
    };
    blend(heat, photo, |_, _| alpha)
}

/// [`overlay`] with a per-pixel opacity `alpha[[y, x]]` in `[0, 1]` (0: the
/// photo only; values outside clamp, NaN, infinite or missing ones are 0).
pub fn overlay_weighted(
    heat: &RgbImage,
    photo: &RgbImage,
    alpha: &ndarray::Array2<f32>,
) -> RgbImage {
    blend(heat, photo, |x, y| {
        alpha
            .get([y as usize, x as usize])
            .copied()
            .filter(|a| a.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, 1.0)
    })
}

/// `heat` over the grey `photo` (resized to it with `FilterType::Triangle`
/// if needed): `alpha(x, y) * heat + (1 - alpha(x, y)) * grey`, rounded.
fn blend(heat: &RgbImage, photo: &RgbImage, alpha: impl Fn(u32, u32) -> f32) -> RgbImage {
    let resized;
    let photo = if photo.dimensions() == heat.dimensions() {
        photo
    } else {
        resized = image::imageops::resize(photo, heat.width(), heat.height(), FilterType::Triangle);
        &resized
    };
    let mut out = RgbImage::new(heat.width(), heat.height());
    for (x, y, o) in out.enumerate_pixels_mut() {
        let a = alpha(x, y);
        let (h, g) = (heat.get_pixel(x, y), luma(photo.get_pixel(x, y)));
        for c in 0..3 {
            let v = a * h[c] as f32 + (1.0 - a) * g;
            o[c] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// [`colorize`] → [`overlay`] on `photo` (with [`DEFAULT_ALPHA`]) when given.
pub fn heatmap_image(
    rel_chw: ArrayView3<f32>,
    width: u32,
    height: u32,
    photo: Option<&RgbImage>,
) -> RgbImage {
    let summed = channel_sum(rel_chw);
    let resized = resize_map(&summed, width, height);
    let heat = colorize(&symmetric_normalize(&resized));
    match photo {
        Some(p) => overlay(&heat, p, DEFAULT_ALPHA),
        None => heat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, Array3};

    #[test]
    fn colorize_endpoints() {
        let img = colorize(&arr2(&[[0.0, 1.0, -1.0]]));
        assert_eq!(img.dimensions(), (3, 1));
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [103, 0, 31]);
        assert_eq!(img.get_pixel(2, 0).0, [5, 48, 97]);
        // Out-of-range values clamp, NaN is white.
        let img = colorize(&arr2(&[[5.0, -7.0, f32::NAN]]));
        assert_eq!(img.get_pixel(0, 0).0, [103, 0, 31]);
        assert_eq!(img.get_pixel(1, 0).0, [5, 48, 97]);
        assert_eq!(img.get_pixel(2, 0).0, [255, 255, 255]);
    }

    #[test]
    fn colorize_sign_and_monotone() {
        let n = 20000;
        let mut prev_pos = 3 * 255;
        let mut prev_neg = 3 * 255;
        for i in 0..=n {
            let a = i as f32 / n as f32;
            let p = color_of(a).0;
            let q = color_of(-a).0;
            // Sign: positive reddish, negative bluish.
            assert!(p[0] >= p[2], "v={a}: {p:?}");
            assert!(q[2] >= q[0], "v=-{a}: {q:?}");
            if a >= 0.02 {
                assert!(p[0] > p[2], "v={a}: {p:?}");
                assert!(q[2] > q[0], "v=-{a}: {q:?}");
            }
            // Monotone: brightness (channel sum) never increases with |v|.
            let sp: u32 = p.iter().map(|&c| c as u32).sum();
            let sq: u32 = q.iter().map(|&c| c as u32).sum();
            assert!(sp <= prev_pos, "v={a}: {sp} > {prev_pos}");
            assert!(sq <= prev_neg, "v=-{a}: {sq} > {prev_neg}");
            prev_pos = sp;
            prev_neg = sq;
        }
        // Half relevance is clearly coloured.
        let half = color_of(0.5).0;
        assert!(half[0] > 200 && half[2] < 150, "{half:?}");
        let half = color_of(-0.5).0;
        assert!(half[2] > 200 && half[0] < 150, "{half:?}");
    }

    #[test]
    fn normalize_with_nan_and_inf() {
        let m = arr2(&[
            [f32::NAN, 2.0],
            [-4.0, f32::INFINITY],
            [1.0, f32::NEG_INFINITY],
        ]);
        let n = symmetric_normalize(&m);
        assert_eq!(n, arr2(&[[0.0, 0.5], [-1.0, 0.0], [0.25, 0.0]]));
        let z = symmetric_normalize(&Array2::zeros((2, 3)));
        assert_eq!(z, Array2::<f32>::zeros((2, 3)));
        let all_nan = symmetric_normalize(&Array2::from_elem((2, 2), f32::NAN));
        assert_eq!(all_nan, Array2::<f32>::zeros((2, 2)));
        let tiny = symmetric_normalize(&arr2(&[[1e-30, -3e-30]]));
        assert!((tiny[[0, 0]] - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(tiny[[0, 1]], -1.0);
        let empty = symmetric_normalize(&Array2::zeros((0, 4)));
        assert_eq!(empty.dim(), (0, 4));
    }

    #[test]
    fn channel_sum_sums_channels() {
        let rel = Array3::from_shape_fn((3, 2, 2), |(c, y, x)| (c * 100 + y * 10 + x) as f32);
        let s = channel_sum(rel.view());
        // (0 + 100 + 200) + 3 * (10y + x)
        assert_eq!(s, arr2(&[[300.0, 303.0], [330.0, 333.0]]));
    }

    #[test]
    fn resize_keeps_constant_and_sign() {
        let m = Array2::from_elem((7, 5), -0.75f32);
        for (w, h) in [(20, 30), (3, 2), (1, 1), (5, 7), (11, 4)] {
            let r = resize_map(&m, w, h);
            assert_eq!(r.dim(), (h as usize, w as usize));
            for v in r.iter() {
                assert!((v + 0.75).abs() < 1e-6, "{w}x{h}: {v}");
            }
        }
    }

    #[test]
    fn resize_known_values() {
        // 1x2 -> 1x4 upscaling (ratio 0.5, no widening): output centres map
        // to source x = 0.25, 0.75, 1.25, 1.75 (pixel-centre coordinates:
        // -0.25, 0.25, 0.75, 1.25 relative to centres 0, 1). Weights clamp at
        // the border, so [-1, 3] -> [-1, 0, 2, 3].
        let r = resize_map(&arr2(&[[-1.0, 3.0]]), 4, 1);
        let expected = [-1.0, 0.0, 2.0, 3.0];
        for (got, want) in r.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{r:?}");
        }
        // 4x1 -> 2x1 downscaling (ratio 2, support 2): output 0 is centred
        // at source 1.0 with weights 1-|i+0.5-1|/2 = 0.75,0.75,0.25 for
        // i=0,1,2 (sum 1.75): [2,-2,4,0] -> (1.5-1.5+1)/1.75 = 0.571428.
        let r = resize_map(&arr2(&[[2.0, -2.0, 4.0, 0.0]]), 2, 1);
        assert!((r[[0, 0]] - 1.0 / 1.75).abs() < 1e-6, "{r:?}");
        // NaN input does not spread.
        let r = resize_map(&arr2(&[[f32::NAN, 1.0], [1.0, 1.0]]), 4, 4);
        assert!(r.iter().all(|v| v.is_finite()));
        // Empty source.
        assert_eq!(
            resize_map(&Array2::<f32>::zeros((0, 0)), 3, 2),
            Array2::<f32>::zeros((2, 3))
        );
    }

    #[test]
    fn heatmap_dimensions_and_colours() {
        // Positive top-left quadrant, negative bottom-right, zero elsewhere.
        let rel = Array3::from_shape_fn((3, 4, 4), |(_, y, x)| match (y < 2, x < 2) {
            (true, true) => 1.0,
            (false, false) => -1.0,
            _ => 0.0,
        });
        let img = heatmap_image(rel.view(), 40, 30, None);
        assert_eq!(img.dimensions(), (40, 30));
        assert_eq!(img.get_pixel(2, 2).0, [103, 0, 31]);
        assert_eq!(img.get_pixel(37, 27).0, [5, 48, 97]);
        assert_eq!(img.get_pixel(37, 2).0, [255, 255, 255]);

        let photo = RgbImage::from_pixel(8, 6, Rgb([100, 100, 100]));
        let img = heatmap_image(rel.view(), 16, 12, Some(&photo));
        assert_eq!(img.dimensions(), (16, 12));
        // White heat over grey 100: 0.6*255 + 0.4*100 = 193.
        assert_eq!(img.get_pixel(15, 0).0, [193, 193, 193]);
        // Red end over grey 100: 0.6*(103,0,31)+40 = (101.8, 40, 58.6).
        assert_eq!(img.get_pixel(0, 0).0, [102, 40, 59]);

        // Degenerate inputs do not panic.
        let empty = Array3::<f32>::zeros((0, 0, 0));
        assert_eq!(heatmap_image(empty.view(), 5, 4, None).dimensions(), (5, 4));
        assert_eq!(heatmap_image(rel.view(), 0, 0, None).dimensions(), (0, 0));
    }

    #[test]
    fn overlay_values() {
        let white = RgbImage::from_pixel(4, 3, Rgb([255, 255, 255]));
        // Photo with different size (must be resized), uniform colour
        // (10, 200, 40): luma = 0.299*10 + 0.587*200 + 0.114*40 = 125.95.
        let photo = RgbImage::from_pixel(9, 7, Rgb([10, 200, 40]));
        let out = overlay(&white, &photo, 0.6);
        assert_eq!(out.dimensions(), (4, 3));
        // 0.6*255 + 0.4*125.95 = 203.38 -> 203
        for p in out.pixels() {
            assert_eq!(p.0, [203, 203, 203]);
        }
        let heat = RgbImage::from_pixel(2, 2, Rgb([103, 0, 31]));
        let photo = RgbImage::from_pixel(2, 2, Rgb([0, 0, 0]));
        assert_eq!(overlay(&heat, &photo, 1.0).get_pixel(1, 1).0, [103, 0, 31]);
        assert_eq!(overlay(&heat, &photo, 0.0).get_pixel(1, 1).0, [0, 0, 0]);
        // 0.5*(103,0,31) = (51.5, 0, 15.5) -> rounds half away from zero.
        assert_eq!(overlay(&heat, &photo, 0.5).get_pixel(0, 0).0, [52, 0, 16]);
        // Out of range alpha clamps.
        assert_eq!(overlay(&heat, &photo, 7.0).get_pixel(0, 0).0, [103, 0, 31]);
    }
}
