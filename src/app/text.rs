//! Text with the public-domain 8x8 bitmap font of `font8x8`.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// The 8x8 glyph of `c` (Basic Latin, Latin-1, Greek, box, block and misc
/// sets of font8x8), or `?`'s.
fn glyph(c: char) -> [u8; 8] {
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .or_else(|| font8x8::GREEK_FONTS.get(c))
        .or_else(|| font8x8::BOX_FONTS.get(c))
        .or_else(|| font8x8::BLOCK_FONTS.get(c))
        .or_else(|| font8x8::MISC_FONTS.get(c))
        .unwrap_or_else(|| font8x8::BASIC_FONTS.get('?').unwrap_or([0; 8]))
}

/// Width in pixels of `text` drawn by [`draw_text`] at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    (text.chars().count() as u32).saturating_mul(8 * scale)
}

/// Draws `text` with the 8x8 font8x8 glyphs, each pixel a `scale x scale`
/// square, top-left corner at `(x, y)`; characters advance by `8 * scale`.
/// Only glyph pixels are painted (transparent background); anything outside
/// the image is clipped. Characters without a glyph are drawn as `?`.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: u32, colour: Rgb<u8>) {
    let s = i64::from(scale);
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for (i, c) in text.chars().enumerate() {
        let x0 = i64::from(x) + i as i64 * 8 * s;
        if x0 >= w {
            break;
        }
        for (gy, bits) in glyph(c).iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) == 0 {
                    continue;
                }
                let (px, py) = (x0 + gx * s, i64::from(y) + gy as i64 * s);
                for yy in py.max(0)..(py + s).min(h) {
                    for xx in px.max(0)..(px + s).min(w) {
                        img.put_pixel(xx as u32, yy as u32, colour);
                    }
                }
            }
        }
    }
}

/// `text` cut to at most `max_chars` characters, ending in `..` when cut.
pub(super) fn ellipsize(text: &str, max_chars: usize) -> String {
    let n = text.chars().count();
    if n <= max_chars {
        text.to_string()
    } else if max_chars >= 3 {
        text.chars()
            .take(max_chars - 2)
            .chain("..".chars())
            .collect()
    } else {
        text.chars().take(max_chars).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_pixels() {
        let bg = Rgb([255, 255, 255]);
        let red = Rgb([255, 0, 0]);
        let mut img = RgbImage::from_pixel(40, 20, bg);
        draw_text(&mut img, 2, 2, "A", 2, red);
        let ink: Vec<_> = img.enumerate_pixels().filter(|p| *p.2 == red).collect();
        assert!(ink.len() > 40, "{}", ink.len());
        assert!(ink
            .iter()
            .all(|p| (2..18).contains(&p.0) && (2..18).contains(&p.1)));
        // font8x8 'A' top row is 0x0C: pixels 2 and 3 (scale 2: x 6..10).
        assert_eq!(*img.get_pixel(6, 2), red);
        assert_eq!(*img.get_pixel(5, 2), bg);
        // Space draws nothing; clipping at every edge does not panic.
        let mut img = RgbImage::from_pixel(10, 10, bg);
        draw_text(&mut img, 0, 0, " ", 3, red);
        assert!(img.pixels().all(|p| *p == bg));
        draw_text(&mut img, -5, -5, "WW", 2, red);
        draw_text(&mut img, 7, 7, "é€\u{1F600}", 4, red);
        assert!(img.pixels().any(|p| *p == red));
        assert_eq!(text_width("abc", 2), 48);
        assert_eq!(ellipsize("abcdef", 4), "ab..");
        assert_eq!(ellipsize("abc", 4), "abc");
        assert_eq!(ellipsize("abc", 2), "ab");
    }
}
