//! [`Style`]d rendering: colour map, normalisation and `level` chosen.

use image::RgbImage;
use ndarray::{Array2, ArrayView3};

use super::norm::{normalize_scaled, Scale};
use super::{apply_level, Cmap, MapNorm};
use super::{channel_sum, overlay_weighted, resize_map, DEFAULT_ALPHA};

/// The default percentile of `|R|` that saturates.
pub const DEFAULT_CLIP: f32 = 99.5;

/// How [`render_map`] draws a map: colour maps, normalisation, `level` and
/// the percentile that saturates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Style {
    /// Colour map for signed maps (default [`Cmap::Bwr`]).
    pub cmap: Cmap,
    /// Colour map for unsigned maps, drawn as `|R|` (default [`Cmap::Hot`]).
    pub unsigned_cmap: Cmap,
    /// Normalisation of signed maps (default [`MapNorm::Symmetric`]);
    /// unsigned maps always use [`MapNorm::Absolute`].
    pub norm: MapNorm,
    /// Zennit's `level` (default 1.0), see [`apply_level`].
    pub level: f32,
    /// The percentile of `|R|` that saturates (default 99.5, as Captum
    /// clips outliers; 100: the maximum, as Zennit), see [`Scale::of`].
    pub clip: f32,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            cmap: Cmap::Bwr,
            unsigned_cmap: Cmap::Hot,
            norm: MapNorm::Symmetric,
            level: 1.0,
            clip: DEFAULT_CLIP,
        }
    }
}

impl Style {
    /// The colour map and normalisation used for a signed or unsigned map.
    pub fn pick(&self, signed: bool) -> (Cmap, MapNorm) {
        if signed {
            (self.cmap, self.norm)
        } else {
            (self.unsigned_cmap, MapNorm::Absolute)
        }
    }
}

/// Renders an `[H, W]` map (e.g. channel-summed relevance) as a
/// `width x height` image: [`resize_map`] → [`normalize_map`](super::norm::normalize_map) → colour map.
///
/// `signed`: the map with `style.cmap` and `style.norm`; unsigned: `|R|`
/// (taken before resizing) with `style.unsigned_cmap` and
/// [`MapNorm::Absolute`]. Non-finite values count as 0; an all-zero map is
/// the "no relevance" colour (centre of a diverging map, start of a
/// sequential one).
pub fn render_map(
    map: &Array2<f32>,
    width: u32,
    height: u32,
    style: &Style,
    signed: bool,
) -> RgbImage {
    let (cmap, norm) = style.pick(signed);
    let map = if signed {
        map.clone()
    } else {
        map.mapv(f32::abs)
    };
    // scaled as drawn (at 100 exactly today's max scaling)
    let resized = resize_map(&map, width, height);
    let scale = Scale::of(&resized, style.clip);
    let t = normalize_scaled(&resized, norm, style.level, &scale);
    let mut img = RgbImage::new(width, height);
    for ((y, x), v) in t.indexed_iter() {
        img.put_pixel(x as u32, y as u32, cmap.eval(*v));
    }
    img
}

/// A horizontal colour bar, `width x height`: the left edge is the lowest
/// normalised value (`-max|R|` for [`MapNorm::Symmetric`], `min R` for
/// [`MapNorm::Unaligned`], 0 for [`MapNorm::Absolute`] and unsigned maps),
/// the right edge the highest (`max|R|` / `max R`), with `style.level`
/// applied exactly as in [`render_map`].
pub fn colour_bar(width: u32, height: u32, style: &Style, signed: bool) -> RgbImage {
    let (cmap, norm) = style.pick(signed);
    let mut img = RgbImage::new(width, height);
    for x in 0..width {
        let u = if width > 1 {
            x as f32 / (width - 1) as f32
        } else {
            0.5
        };
        let c = cmap.eval(apply_level(u, norm, style.level));
        for y in 0..height {
            img.put_pixel(x, y, c);
        }
    }
    img
}

/// [`crate::render::heatmap_image`] with a [`Style`]: [`channel_sum`] → [`render_map`] →
/// [`overlay`](super::overlay) on `photo` (with [`DEFAULT_ALPHA`]) when given.
pub fn heatmap_image_styled(
    rel_chw: ArrayView3<f32>,
    width: u32,
    height: u32,
    photo: Option<&RgbImage>,
    style: &Style,
    signed: bool,
) -> RgbImage {
    let map = channel_sum(rel_chw);
    let heat = render_map(&map, width, height, style, signed);
    match photo {
        Some(p) => {
            // opacity grows with |R| up to DEFAULT_ALPHA where it
            // saturates: the photo shows where nothing happens
            let abs = resize_map(&map.mapv(f32::abs), width, height);
            let t = normalize_scaled(&abs, MapNorm::Absolute, 1.0, &Scale::of(&abs, style.clip));
            overlay_weighted(&heat, p, &t.mapv(|v| v * DEFAULT_ALPHA))
        }
        None => heat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::heatmap_image;
    use image::Rgb;
    use ndarray::Array3;

    #[test]
    fn render_map_styles() {
        // Positive top-left, negative bottom-right, zero elsewhere.
        let m = Array2::from_shape_fn((4, 4), |(y, x)| match (y < 2, x < 2) {
            (true, true) => 2.0,
            (false, false) => -2.0,
            _ => 0.0,
        });
        let style = Style::default();
        let img = render_map(&m, 8, 8, &style, true);
        assert_eq!(img.dimensions(), (8, 8));
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]); // bwr +1
        assert_eq!(img.get_pixel(7, 7).0, [0, 0, 255]); // bwr -1
        assert_eq!(img.get_pixel(7, 0).0, [255, 255, 255]); // bwr 0
                                                            // Unsigned: |R| with hot; both quadrants white (max), zero black.
        let img = render_map(&m, 8, 8, &style, false);
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(7, 7).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(7, 0).0, [0, 0, 0]);
        // All-zero and all-NaN maps: the centre colour, never a panic.
        for v in [0.0, f32::NAN] {
            let z = Array2::from_elem((3, 3), v);
            let img = render_map(&z, 5, 4, &style, true);
            assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));
            let coldnhot = Style {
                cmap: Cmap::ColdNHot,
                ..style
            };
            let img = render_map(&z, 5, 4, &coldnhot, true);
            assert!(img.pixels().all(|p| p.0 == [0, 0, 0]));
        }
        // The issue-2 colour map reproduces heatmap_image.
        let rel = Array3::from_shape_fn((3, 5, 7), |(c, y, x)| {
            ((c * 7 + y * 3 + x) as f32 * 0.37).sin()
        });
        let old = Style {
            cmap: Cmap::RdBuWhite,
            clip: 100.0,
            ..style
        };
        let a = heatmap_image(rel.view(), 23, 17, None);
        let b = heatmap_image_styled(rel.view(), 23, 17, None, &old, true);
        for (p, q) in a.pixels().zip(b.pixels()) {
            assert!(p.0.iter().zip(q.0).all(|(x, y)| x.abs_diff(y) <= 1));
        }
    }

    #[test]
    fn the_overlay_is_transparent_where_nothing_happens() {
        // one channel: left half zero, right column saturating
        let mut rel = Array3::<f32>::zeros((1, 4, 4));
        for y in 0..4 {
            rel[[0, y, 3]] = 5.0;
            rel[[0, y, 2]] = 1.0;
        }
        let photo = RgbImage::from_pixel(4, 4, Rgb([30, 90, 200]));
        let grey = super::super::luma(&Rgb([30, 90, 200])).round() as u8;
        let img = heatmap_image_styled(rel.view(), 4, 4, Some(&photo), &Style::default(), true);
        // a zero pixel: the grey photo, alpha 0
        assert_eq!(img.get_pixel(0, 0).0, [grey; 3]);
        // a saturating pixel: DEFAULT_ALPHA of full red over the grey
        let red = |g: u8| (DEFAULT_ALPHA * 255.0 + (1.0 - DEFAULT_ALPHA) * g as f32).round() as u8;
        let p = img.get_pixel(3, 0).0;
        assert_eq!(p[0], red(grey));
        // in between: less opaque than where it saturates
        let q = img.get_pixel(2, 0).0;
        assert!(q[0] > grey && q[0] < p[0], "{q:?} {p:?}");
    }

    #[test]
    fn colour_bar_ends_and_level() {
        let style = Style::default();
        let bar = colour_bar(101, 3, &style, true);
        assert_eq!(bar.dimensions(), (101, 3));
        assert_eq!(bar.get_pixel(0, 0).0, [0, 0, 255]);
        assert_eq!(bar.get_pixel(50, 2).0, [255, 255, 255]);
        assert_eq!(bar.get_pixel(100, 1).0, [255, 0, 0]);
        let bar = colour_bar(101, 3, &style, false);
        assert_eq!(bar.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(bar.get_pixel(100, 0).0, [255, 255, 255]);
        // level 2: saturated from a quarter of the way out.
        let hot = Style {
            level: 2.0,
            ..style
        };
        let bar = colour_bar(101, 1, &hot, true);
        assert_eq!(bar.get_pixel(25, 0).0, [0, 0, 255]);
        assert_eq!(bar.get_pixel(75, 0).0, [255, 0, 0]);
        assert_eq!(colour_bar(0, 5, &style, true).dimensions(), (0, 5));
        assert_eq!(colour_bar(1, 1, &style, true).get_pixel(0, 0).0, [255; 3]);
    }
}
