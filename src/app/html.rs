//! The analyzer comparison as a self-contained HTML5 page.
//!
//! One table: a header row with the analyzer names, then one row per input
//! image (photo, input name, predicted label) with one rendered tile per
//! analyzer, captioned with its logit and relevance sum. Images are embedded
//! as `data:image/png;base64,...` URIs, so the page is a single file with no
//! scripts and no external references. Every inserted string is
//! HTML-escaped.

use std::fmt::Write as _;

use anyhow::Context;
use image::codecs::png::PngEncoder;
use image::RgbImage;

/// One analyzer's tile of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlTile {
    /// Analyzer name (used in the image's `alt` text).
    pub name: String,
    /// The rendered tile as an encoded PNG (see [`encode_png`]); empty for
    /// no image (the caption is still shown).
    pub png: Vec<u8>,
    /// The explained logit.
    pub logit: f32,
    /// Sum of the input relevance.
    pub relevance_sum: f32,
    /// Region perturbation of the tile's map (`compare --evaluate`).
    pub evaluation: Option<TileEvaluation>,
}

/// A tile's region perturbation: the AOPC of its most-relevant-first curve
/// and its curves, drawn under the tile.
#[derive(Clone, Debug, PartialEq)]
pub struct TileEvaluation {
    /// AOPC, most relevant first.
    pub aopc_morf: f64,
    /// The logit after each step, most relevant first.
    pub morf: Vec<f32>,
    /// The logit after each step, least relevant first.
    pub lerf: Vec<f32>,
}

/// An inline SVG of the MoRF (red) and LeRF (blue) curves, scaled to their
/// common range.
fn curves_svg(e: &TileEvaluation) -> String {
    let all = e
        .morf
        .iter()
        .chain(&e.lerf)
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let line = |c: &[f32], colour: &str, class: &str| {
        let n = c.len().saturating_sub(1).max(1) as f32;
        let pts: Vec<String> = (c.iter().enumerate())
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| {
                format!(
                    "{:.2},{:.2}",
                    100.0 * k as f32 / n,
                    38.0 - 36.0 * (v - lo) / span
                )
            })
            .collect();
        format!(
            "<polyline class=\"{class}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    format!(
        "<svg class=\"curves\" viewBox=\"0 0 100 40\" width=\"100%\" role=\"img\" \
         aria-label=\"logit after each perturbation step: most relevant first (red), least (blue)\">{}{}</svg>",
        line(&e.morf, "#c00", "morf"),
        line(&e.lerf, "#00c", "lerf")
    )
}

/// One input image.
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlRow {
    /// Input name (e.g. its path).
    pub input: String,
    /// Predicted (or explained) label.
    pub label: String,
    /// The photo as an encoded PNG; empty for none. Shown as wide as the
    /// first tile of the page, keeping its aspect ratio.
    pub photo_png: Vec<u8>,
    /// One tile per column, in column order.
    pub tiles: Vec<HtmlTile>,
}

/// Encodes an image as PNG bytes.
pub fn encode_png(img: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_with_encoder(PngEncoder::new(&mut out))
        .context("PNG encoding failed")?;
    Ok(out)
}

/// Standard base64 (RFC 4648, `+/` alphabet, `=` padding).
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Width and height from a PNG's IHDR chunk, if `png` looks like one.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]);
    Some((be(16), be(20)))
}

/// An `<img>` element for `png` with the given class and alt text, or
/// nothing for empty data. Width and height come from the PNG header.
fn img_tag(png: &[u8], class: &str, alt: &str) -> String {
    if png.is_empty() {
        return String::new();
    }
    let size = match png_size(png) {
        Some((w, h)) => format!(" width=\"{w}\" height=\"{h}\""),
        None => String::new(),
    };
    format!(
        "<img class=\"{}\" alt=\"{}\"{size} src=\"data:image/png;base64,{}\">",
        escape(class),
        escape(alt),
        base64(png)
    )
}

/// Formats a caption number: 4 decimals, or `NaN`/`inf` as Rust prints them.
fn num(v: f32) -> String {
    format!("{v:.4}")
}

/// The comparison page: a table whose header row holds `columns` (the
/// analyzer names), one row per [`HtmlRow`] (photo, input name and label,
/// then its tiles in column order, each captioned "logit X" and
/// "relevance sum Y"), and `command`, the command line that made the page.
///
/// A row with fewer tiles than columns gets empty cells; a row with more
/// tiles widens the table (with unnamed header cells).
pub fn grid_html(rows: &[HtmlRow], columns: &[String], command: &str) -> String {
    let ncols = rows
        .iter()
        .map(|r| r.tiles.len())
        .max()
        .unwrap_or(0)
        .max(columns.len());
    let photo_width = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .find_map(|t| png_size(&t.png))
        .map_or(224, |(w, _)| w);
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>lrp-heatmap: analyzer comparison</title>\n<style>\n");
    h.push_str(
        "body { font-family: sans-serif; margin: 1em; color: #111; background: #fff; }\n\
         table.grid { border-collapse: collapse; }\n\
         table.grid th, table.grid td { padding: 4px; vertical-align: top; text-align: center; }\n\
         table.grid td.input { text-align: left; }\n\
         figure { margin: 0; }\n\
         figcaption { font-size: 0.8em; font-family: monospace; }\n\
         img { display: block; }\n",
    );
    let _ = writeln!(h, "img.photo {{ width: {photo_width}px; height: auto; }}");
    h.push_str("</style>\n</head>\n<body>\n<h1>Analyzer comparison</h1>\n");
    h.push_str("<table class=\"grid\">\n<thead>\n<tr><th>input</th>");
    for i in 0..ncols {
        let name = columns.get(i).map_or("", String::as_str);
        let _ = write!(h, "<th class=\"analyzer\">{}</th>", escape(name));
    }
    h.push_str("</tr>\n</thead>\n<tbody>\n");
    for row in rows {
        h.push_str("<tr>\n<td class=\"input\"><figure>");
        h.push_str(&img_tag(&row.photo_png, "photo", &row.input));
        let _ = writeln!(
            h,
            "<figcaption><span class=\"name\">{}</span><br><span class=\"label\">{}</span>\
             </figcaption></figure></td>",
            escape(&row.input),
            escape(&row.label)
        );
        for i in 0..ncols {
            let Some(t) = row.tiles.get(i) else {
                h.push_str("<td></td>\n");
                continue;
            };
            let alt = format!("{}: {}", row.input, t.name);
            let evaluation = t.evaluation.as_ref().map_or(String::new(), |e| {
                format!(
                    "<br><span class=\"aopc\">AOPC MoRF {}</span>{}",
                    escape(&num(e.aopc_morf as f32)),
                    curves_svg(e)
                )
            });
            let _ = writeln!(
                h,
                "<td><figure>{}<figcaption>logit {}<br>relevance sum {}{evaluation}</figcaption>\
                 </figure></td>",
                img_tag(&t.png, "tile", &alt),
                escape(&num(t.logit)),
                escape(&num(t.relevance_sum))
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    let _ = write!(
        h,
        "<p>Made by lrp-heatmap {} with:</p>\n<pre><code class=\"command\">{}</code></pre>\n",
        escape(env!("CARGO_PKG_VERSION")),
        escape(command)
    );
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 section 10 test vectors.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, want) in cases {
            assert_eq!(base64(plain.as_bytes()), want, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<script>alert(\"x\" & 'y')</script>"),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    fn page() -> String {
        let png = encode_png(&RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]))).unwrap();
        let tile = |name: &str| HtmlTile {
            name: name.into(),
            png: png.clone(),
            logit: 11.119,
            relevance_sum: f32::NAN,
            evaluation: None,
        };
        let rows = vec![HtmlRow {
            input: "images/<script>alert(1)</script>.jpg".into(),
            label: "285 \"Egyptian\" cat & 'co'".into(),
            photo_png: png.clone(),
            tiles: vec![tile("eps"), tile("<b>grad</b>")],
        }];
        let columns = vec!["eps".to_string(), "<b>grad</b>".to_string(), "third".into()];
        grid_html(&rows, &columns, "lrp-heatmap compare --rule '<x>' \"a&b\"")
    }

    #[test]
    fn page_is_escaped_and_complete() {
        let h = page();
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(!h.contains("<script>") && !h.contains("<b>"), "{h}");
        assert!(h.contains("images/&lt;script&gt;alert(1)&lt;/script&gt;.jpg"));
        assert!(h.contains("285 &quot;Egyptian&quot; cat &amp; &#39;co&#39;"));
        assert!(h.contains("<th class=\"analyzer\">&lt;b&gt;grad&lt;/b&gt;</th>"));
        assert!(h.contains("lrp-heatmap compare --rule &#39;&lt;x&gt;&#39; &quot;a&amp;b&quot;"));
        assert!(h.contains("logit 11.1190<br>relevance sum NaN"));
        assert_eq!(h.matches("<img ").count(), 3);
        assert_eq!(h.matches("width=\"3\" height=\"2\"").count(), 3);
        assert!(h.contains("img.photo { width: 3px;"));
        // Third column has no tile: an empty cell.
        assert_eq!(h.matches("<th class=\"analyzer\">").count(), 3);
        assert!(h.contains("<td></td>"));
        assert!(h.contains("src=\"data:image/png;base64,iVBORw0KGgo"));
    }

    #[test]
    fn png_round_trip_and_header() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 60, 9]));
        let png = encode_png(&img).unwrap();
        assert_eq!(png_size(&png), Some((5, 4)));
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(back, img);
        assert_eq!(png_size(b"GIF89a"), None);
        assert_eq!(img_tag(&[], "x", "y"), "");
        let empty = grid_html(&[], &[], "");
        assert!(empty.contains("<table") && !empty.contains("<img"));
    }
}
