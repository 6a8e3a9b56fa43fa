//! Text with the public-domain 8x8 bitmap font of `font8x8`.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// `|` as one unbroken bar: font8x8 draws U+007C as the broken bar `¦`,
/// which at 8 px reads as `!` (`|R|` looked like `!R!`).
const VERTICAL_BAR: [u8; 8] = [0x18, 0x18, 0x18, 0x18, 0x18, 0x18, 0x18, 0x00];

/// The 8x8 glyph of `c` (Basic Latin, Latin-1, Greek, box, block and misc
/// sets of font8x8, `|` our own), or `?`'s.
fn glyph(c: char) -> [u8; 8] {
    if c == '|' {
        return VERTICAL_BAR;
    }
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

/// Whether a line may break after `c` (the separators of analyzer and
/// layer names).
fn breaks_after(c: char) -> bool {
    matches!(c, '-' | ' ' | '/' | '_' | '.' | ':' | ',')
}

/// `text` in at most `max_lines` lines of at most `width` characters, and
/// whether all of it fits without cutting a word. Lines break after a separator (`-`, space, `/`,
/// `_`, `.`, `:`, `,`; a space at a line's end is dropped); a piece longer
/// than a line is cut at the line's width. When text remains after the
/// last line, that line ends in `..` ([`ellipsize`]). No lines for an
/// empty text or a zero width.
pub(super) fn wrap(text: &str, width: usize, max_lines: usize) -> (Vec<String>, bool) {
    if width == 0 || max_lines == 0 {
        return (Vec::new(), text.is_empty());
    }
    // pieces: runs of characters ending in a separator (or the text's end)
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if breaks_after(c) {
            pieces.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut cut_word = false;
    let len = |s: &str| s.chars().count();
    for piece in pieces {
        let mut piece = piece.as_str();
        loop {
            let room = width.saturating_sub(len(&line));
            // a trailing space does not need room
            let need = len(piece.strip_suffix(' ').unwrap_or(piece));
            if need <= room {
                line.push_str(piece);
                break;
            }
            if line.is_empty() {
                // longer than a line: cut it
                cut_word = true;
                let cut: usize = piece.chars().take(width).map(char::len_utf8).sum();
                line.push_str(&piece[..cut]);
                piece = &piece[cut..];
            }
            lines.push(std::mem::take(&mut line).trim_end().to_string());
            if piece.is_empty() {
                break;
            }
        }
    }
    if !line.trim_end().is_empty() {
        lines.push(line.trim_end().to_string());
    }
    if lines.len() <= max_lines {
        return (lines, !cut_word);
    }
    lines.truncate(max_lines);
    let last = lines.pop().unwrap_or_default();
    // mark the cut: `..` after the last line, or over its end
    let marked = format!("{last}..");
    lines.push(if len(&marked) <= width {
        marked
    } else {
        ellipsize(&marked, width)
    });
    (lines, false)
}

/// [`wrap`], abbreviating words until `text` fits: while it does not, the
/// longest word (a run between separators, the first of equals) loses a
/// letter and ends in `.` (`integrated` -> `integrat.` -> `integra.`, a `-`
/// or `_` after it turned into a space), down to two letters; what still
/// does not fit is cut as [`wrap`] cuts it.
pub(super) fn wrap_abbreviated(text: &str, width: usize, max_lines: usize) -> (Vec<String>, bool) {
    let mut chars: Vec<char> = text.chars().collect();
    loop {
        let current: String = chars.iter().collect();
        let (lines, fits) = wrap(&current, width, max_lines);
        if fits || width == 0 {
            return (lines, fits);
        }
        // the longest run of non-separators: (start, length)
        let mut best = (0, 0);
        let mut start = 0;
        for i in 0..=chars.len() {
            if i == chars.len() || breaks_after(chars[i]) {
                if i - start > best.1 {
                    best = (start, i - start);
                }
                start = i + 1;
            }
        }
        let (at, n) = best;
        if n <= 2 {
            return (lines, fits);
        }
        if chars.get(at + n) == Some(&'.') {
            // already abbreviated: one letter fewer
            chars.remove(at + n - 1);
        } else {
            // `word` -> `wo.`: one character shorter; a `-` or `_` after it
            // becomes a space, so that the line breaks after the `.`
            if matches!(chars.get(at + n), Some('-' | '_')) {
                chars[at + n] = ' ';
            }
            chars.splice(at + n - 2..at + n, ['.']);
        }
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

    #[test]
    fn vertical_bar_is_not_an_exclamation_mark() {
        // font8x8's own U+007C is broken in the middle (rows 0-2, 4-6), as
        // '!' has a gap (row 5); ours is one bar over rows 0..=6
        assert_ne!(glyph('|'), glyph('!'));
        assert!(glyph('|')[..7].iter().all(|&row| row == 0x18));
        assert!(glyph('!').contains(&0));
        // drawn: the column of ink under "|" has no gap, the one under "!" has
        let bg = Rgb([255, 255, 255]);
        let ink = Rgb([0, 0, 0]);
        let column = |c: &str| {
            let mut img = RgbImage::from_pixel(8, 8, bg);
            draw_text(&mut img, 0, 0, c, 1, ink);
            (0..8)
                .map(|y| *img.get_pixel(3, y) == ink)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            column("|"),
            [true, true, true, true, true, true, true, false]
        );
        assert_ne!(column("|"), column("!"));
    }

    #[test]
    fn abbreviating_long_words() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // 20 characters cannot fit two lines of 9: the first word loses a
        // letter, and the hyphen after it becomes the line break
        assert_eq!(
            wrap_abbreviated("integrated-gradients", 9, 2),
            (s(&["integrat.", "gradients"]), true)
        );
        // a word is abbreviated rather than cut
        assert_eq!(
            wrap_abbreviated("smoothgrad", 9, 2),
            (s(&["smoothgr."]), true)
        );
        // what fits is not abbreviated
        assert_eq!(
            wrap_abbreviated("epsilon-plus-flat", 9, 2),
            (s(&["epsilon-", "plus-flat"]), true)
        );
        // words of two letters are kept; then cut
        assert_eq!(wrap_abbreviated("ab-cd-ef", 2, 1), (s(&["ab"]), false));
        assert_eq!(wrap_abbreviated("abcdef", 3, 1), (s(&["ab."]), true));
    }

    #[test]
    fn wrapping_breaks_after_separators() {
        let w = |t: &str, n: usize, l: usize| wrap(t, n, l);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            w("epsilon-plus-flat", 10, 2),
            (s(&["epsilon-", "plus-flat"]), true)
        );
        assert_eq!(w("zplus", 10, 2), (s(&["zplus"]), true));
        assert_eq!(w("concept #1", 9, 2), (s(&["concept", "#1"]), true));
        // a piece longer than a line is cut at the width (and reported)
        assert_eq!(
            w("integrated-gradients", 10, 2),
            (s(&["integrated", "-gradients"]), false)
        );
        // too long: the last line shows the cut
        assert_eq!(w("a-b-c-d-e-f", 4, 2), (s(&["a-b-", "c-.."]), false));
        assert_eq!(w("abcdefghij", 4, 1), (s(&["ab.."]), false));
        assert_eq!(w("", 4, 2), (vec![], true));
        assert_eq!(w("abc", 0, 2), (vec![], false));
        // every line within the width
        for n in 1..12 {
            let (lines, _) = w("/_blocks.9/Add epsilon-gamma-box", n, 3);
            assert!(
                lines.iter().all(|l| l.chars().count() <= n),
                "{n}: {lines:?}"
            );
        }
    }
}
