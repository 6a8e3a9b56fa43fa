//! The analyzer comparison as a self-contained HTML5 page.
//!
//! One section per input image: a block per column (the photo with the input
//! name and predicted label, then one tile per analyzer), each headed by its
//! name, its caption (a concept's channel and share) and the tile's colour
//! bar with the values at its ends, and captioned with its logit, its
//! relevance sum (signed maps only: gradient, SmoothGrad and guided backprop
//! are shown as `|R|`, whose sum means nothing) and, with `--evaluate`, its
//! AOPC and perturbation curves with axes and a legend. The blocks wrap to
//! the window's width, so nothing is cut off however many columns there are.
//! Images are embedded as `data:image/png;base64,...` URIs, so the page is a
//! single file with no scripts and no external references. Every inserted
//! string is HTML-escaped.

use std::fmt::Write as _;

use anyhow::Context;
use image::codecs::png::PngEncoder;
use image::RgbImage;

/// One analyzer's tile of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlTile {
    /// Column name (analyzer or concept), shown above the tile.
    pub name: String,
    /// Shown under the name (a concept's channel and share); empty: none.
    pub caption: String,
    /// The rendered tile as an encoded PNG (see [`encode_png`]); empty for
    /// no image (the caption is still shown).
    pub png: Vec<u8>,
    /// The explained logit.
    pub logit: f32,
    /// Sum of the input relevance; `None` for maps shown unsigned (`|R|`),
    /// where it is not shown.
    pub relevance_sum: Option<f32>,
    /// The tile's colour bar; `None`: none.
    pub bar: Option<HtmlBar>,
    /// Region perturbation of the tile's map (`compare --evaluate`).
    pub evaluation: Option<TileEvaluation>,
}

/// A colour bar: the colour map from its lowest to its highest value, as
/// the tile uses it, with the values at its ends (and centre).
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlBar {
    /// The bar as an encoded PNG.
    pub png: Vec<u8>,
    /// The values at the left end, the centre (may be empty) and the right
    /// end, as text.
    pub labels: [String; 3],
    /// What the bar shows, for its tooltip and alt text.
    pub title: String,
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

/// Ticks of an axis over `[lo, hi]`: about `n` of them at a step of 1, 2 or
/// 5 times a power of ten, from the step's multiple at or below `lo` to the
/// one at or above `hi` (the axis range), and the decimals they need.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, usize) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step + 1e-9).floor();
    let last = (hi / step - 1e-9).ceil();
    let ticks = (0..=(last - first) as i64)
        .map(|k| (first + k as f64) * step)
        .collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (ticks, decimals)
}

/// Width and height of the curves' plot and its margins (left, right, top,
/// bottom), in px.
const PLOT_H: f32 = 120.0;
const PLOT_MARGIN: (f32, f32, f32, f32) = (38.0, 8.0, 16.0, 28.0);

/// An inline SVG, `width` px wide, of the MoRF (red) and LeRF (blue)
/// curves: x the perturbation step (patches replaced, 0 to L), y the logit
/// of the explained class, both with ticks and labels, and a legend naming
/// the curves.
fn curves_svg(e: &TileEvaluation, width: u32) -> String {
    let all = e
        .morf
        .iter()
        .chain(&e.lerf)
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let (yticks, decimals) = nice_ticks(f64::from(lo), f64::from(hi), 4);
    let (y0, y1) = (yticks[0], yticks[yticks.len() - 1]);
    let steps = e.morf.len().max(e.lerf.len()).saturating_sub(1).max(1);
    let (ml, mr, mt, mb) = PLOT_MARGIN;
    let w = (width as f32).max(ml + mr + 40.0);
    let (pw, ph) = (w - ml - mr, PLOT_H - mt - mb);
    let px = |k: f64| ml + pw * (k / steps as f64) as f32;
    let py = |v: f64| mt + ph * (1.0 - ((v - y0) / (y1 - y0)) as f32);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"curves\" width=\"{w}\" height=\"{PLOT_H}\" viewBox=\"0 0 {w} {PLOT_H}\" \
         role=\"img\" font-size=\"9\" font-family=\"sans-serif\" aria-label=\"logit of the \
         explained class after each perturbation step: most relevant patches first (red), least \
         relevant first (blue)\">"
    );
    // axes
    let (bx, by) = (ml, mt + ph);
    let _ = write!(
        svg,
        "<path class=\"axes\" fill=\"none\" stroke=\"#444\" stroke-width=\"1\" \
         d=\"M{ml},{mt} V{by} H{:.1}\"/>",
        ml + pw
    );
    for v in &yticks {
        let y = py(*v);
        let _ = write!(
            svg,
            "<line stroke=\"#444\" x1=\"{:.1}\" x2=\"{bx}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.decimals$}</text>",
            bx - 3.0,
            bx - 5.0,
            y + 3.0
        );
    }
    let mut xticks = vec![0, steps];
    if steps >= 4 {
        xticks.insert(1, steps / 2);
    }
    for k in xticks {
        let x = px(k as f64);
        let _ = write!(
            svg,
            "<line stroke=\"#444\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{by}\" y2=\"{:.1}\"/>\
             <text class=\"xtick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{k}</text>",
            by + 3.0,
            by + 12.0
        );
    }
    let _ = write!(
        svg,
        "<text class=\"xlabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">patches replaced</text>\
         <text class=\"ylabel\" transform=\"translate(9 {:.1}) rotate(-90)\" \
         text-anchor=\"middle\">logit</text>",
        ml + pw / 2.0,
        PLOT_H - 3.0,
        mt + ph / 2.0
    );
    let line = |c: &[f32], colour: &str, class: &str| {
        let pts: Vec<String> = (c.iter().enumerate())
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| format!("{:.2},{:.2}", px(k as f64), py(f64::from(*v))))
            .collect();
        format!(
            "<polyline class=\"{class}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    svg.push_str(&line(&e.morf, "#c00", "morf"));
    svg.push_str(&line(&e.lerf, "#00c", "lerf"));
    // legend, above the plot
    for (i, (colour, class, text)) in [("#c00", "morf", "MoRF"), ("#00c", "lerf", "LeRF")]
        .iter()
        .enumerate()
    {
        let x = ml + 4.0 + i as f32 * 48.0;
        let _ = write!(
            svg,
            "<g class=\"legend {class}\"><line stroke=\"{colour}\" stroke-width=\"2\" x1=\"{x:.1}\" \
             x2=\"{:.1}\" y1=\"6\" y2=\"6\"/><text x=\"{:.1}\" y=\"9\">{text}</text></g>",
            x + 10.0,
            x + 13.0
        );
    }
    svg.push_str("</svg>");
    svg
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

/// The page's style sheet; `tile` is the width of a column in px.
fn style_sheet(tile: u32) -> String {
    format!(
        "body {{ font-family: sans-serif; margin: 1em; color: #111; background: #fff; }}\n\
         section.image {{ margin-bottom: 1.5em; }}\n\
         div.tiles {{ display: flex; flex-wrap: wrap; gap: 12px 8px; align-items: flex-start; }}\n\
         figure.column {{ margin: 0; width: {tile}px; max-width: 100%; }}\n\
         figure.column img.tile, figure.column img.photo {{ display: block; width: 100%; height: auto; }}\n\
         .analyzer {{ font-weight: bold; text-align: center; overflow-wrap: anywhere; \
         height: 2.5em; display: flex; align-items: flex-end; justify-content: center; }}\n\
         .caption {{ text-align: center; font-size: 0.85em; height: 1.3em; overflow-wrap: anywhere; }}\n\
         div.bar {{ height: 26px; margin-bottom: 2px; }}\n\
         div.bar img {{ display: block; width: 100%; height: 10px; }}\n\
         div.ticks {{ display: flex; justify-content: space-between; font-size: 0.7em; \
         font-family: monospace; }}\n\
         figcaption {{ font-size: 0.8em; font-family: monospace; text-align: center; \
         overflow-wrap: anywhere; }}\n\
         figcaption.input {{ text-align: left; }}\n\
         svg.curves {{ display: block; max-width: 100%; height: auto; margin-top: 2px; }}\n\
         p.note {{ font-size: 0.85em; max-width: 60em; }}\n\
         pre {{ white-space: pre-wrap; overflow-wrap: anywhere; }}\n"
    )
}

/// A column's head: its name, its caption line (kept, empty, so that the
/// tiles of a row line up) and its colour bar (or an empty band as high).
fn column_head(name: &str, caption: &str, bar: Option<&HtmlBar>) -> String {
    let bar = bar.map_or(String::new(), |b| {
        let [l, m, r] = &b.labels;
        format!(
            "{}<div class=\"ticks\"><span>{}</span><span>{}</span><span>{}</span></div>",
            img_tag(&b.png, "bar", &b.title),
            escape(l),
            escape(m),
            escape(r)
        )
    });
    format!(
        "<div class=\"analyzer\">{}</div><div class=\"caption\">{}</div><div class=\"bar\">{bar}</div>",
        escape(name),
        escape(caption)
    )
}

/// The comparison page: one section per [`HtmlRow`] (the photo, input name
/// and label, then its tiles in order, each under its column name from
/// `columns`, its caption and colour bar, and captioned "logit X",
/// "relevance sum Y" for signed maps, and its AOPC and curves when
/// evaluated), then `command`, the command line that made the page.
///
/// A row with fewer tiles than columns gets empty blocks; a row with more
/// tiles shows them with the tiles' own names.
pub fn grid_html(rows: &[HtmlRow], columns: &[String], command: &str) -> String {
    let ncols = rows
        .iter()
        .map(|r| r.tiles.len())
        .max()
        .unwrap_or(0)
        .max(columns.len());
    let tile_width = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .find_map(|t| png_size(&t.png))
        .map_or(224, |(w, _)| w);
    let evaluated = rows
        .iter()
        .flat_map(|r| &r.tiles)
        .any(|t| t.evaluation.is_some());
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>lrp-heatmap: analyzer comparison</title>\n<style>\n");
    h.push_str(&style_sheet(tile_width));
    h.push_str("</style>\n</head>\n<body>\n<h1>Analyzer comparison</h1>\n");
    h.push_str(
        "<p class=\"note\">Each colour bar spans its tile's own scale, from the lowest to the \
         highest value drawn (beyond them the colours saturate): signed maps from -s to +s, maps \
         shown as |R| (gradient, SmoothGrad, guided backprop, whose sums are not shown) from 0 \
         to s.",
    );
    if evaluated {
        h.push_str(
            " Curves: the logit of the explained class as patches of the input are replaced, \
             most relevant first (MoRF, red) and least relevant first (LeRF, blue); AOPC is the \
             mean drop of the MoRF curve.",
        );
    }
    h.push_str("</p>\n");
    for row in rows {
        h.push_str("<section class=\"image\">\n<div class=\"tiles\">\n");
        let _ = writeln!(
            h,
            "<figure class=\"column input\">{}{}<figcaption class=\"input\"><span class=\"name\">{}\
             </span><br><span class=\"label\">{}</span></figcaption></figure>",
            column_head("input", "", None),
            img_tag(&row.photo_png, "photo", &row.input),
            escape(&row.input),
            escape(&row.label)
        );
        for i in 0..ncols {
            let column = columns.get(i).map(String::as_str);
            let Some(t) = row.tiles.get(i) else {
                let _ = writeln!(
                    h,
                    "<figure class=\"column\">{}</figure>",
                    column_head(column.unwrap_or(""), "", None)
                );
                continue;
            };
            let name = column.unwrap_or(&t.name);
            let alt = match t.caption.as_str() {
                "" => format!("{}: {name}", row.input),
                c => format!("{}: {name} ({c})", row.input),
            };
            let sum = t.relevance_sum.map_or(String::new(), |s| {
                format!(
                    "<br><span class=\"sum\">relevance sum {}</span>",
                    escape(&num(s))
                )
            });
            let evaluation = t.evaluation.as_ref().map_or(String::new(), |e| {
                format!(
                    "<br><span class=\"aopc\">AOPC MoRF {}</span>{}",
                    escape(&num(e.aopc_morf as f32)),
                    curves_svg(e, png_size(&t.png).map_or(tile_width, |s| s.0))
                )
            });
            let _ = writeln!(
                h,
                "<figure class=\"column\">{}{}<figcaption>logit {}{sum}{evaluation}</figcaption></figure>",
                column_head(name, &t.caption, t.bar.as_ref()),
                img_tag(&t.png, "tile", &alt),
                escape(&num(t.logit)),
            );
        }
        h.push_str("</div>\n</section>\n");
    }
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
        let bar = HtmlBar {
            png: encode_png(&RgbImage::from_pixel(3, 1, Rgb([9, 9, 9]))).unwrap(),
            labels: ["-0.5".into(), "0".into(), "+0.5".into()],
            title: "colour <scale>".into(),
        };
        let tile = |name: &str, signed: bool, caption: &str| HtmlTile {
            name: name.into(),
            caption: caption.into(),
            png: png.clone(),
            logit: 11.119,
            relevance_sum: signed.then_some(f32::NAN),
            bar: Some(bar.clone()),
            evaluation: None,
        };
        let rows = vec![HtmlRow {
            input: "images/<script>alert(1)</script>.jpg".into(),
            label: "285 \"Egyptian\" cat & 'co'".into(),
            photo_png: png.clone(),
            tiles: vec![
                tile("eps", true, "ch 96 3%"),
                tile("<b>grad</b>", false, ""),
            ],
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
        assert!(h.contains("<div class=\"analyzer\">&lt;b&gt;grad&lt;/b&gt;</div>"));
        assert!(h.contains("lrp-heatmap compare --rule &#39;&lt;x&gt;&#39; &quot;a&amp;b&quot;"));
        // the signed tile has its sum; the unsigned one (|R|) none
        assert!(h.contains("logit 11.1190<br><span class=\"sum\">relevance sum NaN</span>"));
        assert_eq!(h.matches("relevance sum NaN").count(), 1);
        // the concept's channel is shown, not only in the alt text
        assert!(h.contains("<div class=\"caption\">ch 96 3%</div>"));
        assert!(
            h.contains("alt=\"images/&lt;script&gt;alert(1)&lt;/script&gt;.jpg: eps (ch 96 3%)\"")
        );
        // photo, two tiles and their two colour bars with their end values
        assert_eq!(h.matches("<img ").count(), 5);
        assert_eq!(
            h.matches("<img class=\"bar\" alt=\"colour &lt;scale&gt;\"")
                .count(),
            2
        );
        assert_eq!(
            h.matches(
                "<div class=\"ticks\"><span>-0.5</span><span>0</span><span>+0.5</span></div>"
            )
            .count(),
            2
        );
        assert_eq!(h.matches("width=\"3\" height=\"2\"").count(), 3);
        assert!(h.contains("figure.column { margin: 0; width: 3px;"));
        // the tiles wrap: no table, a flex box that wraps
        assert!(h.contains("flex-wrap: wrap") && !h.contains("<table"));
        // Third column has no tile: an empty block under its name.
        assert_eq!(h.matches("<div class=\"analyzer\">").count(), 4);
        assert!(h.contains("<figure class=\"column\"><div class=\"analyzer\">third</div>"));
        assert!(h.contains("src=\"data:image/png;base64,iVBORw0KGgo"));
    }

    #[test]
    fn ticks_are_round_numbers_around_the_data() {
        // 0.3..11.1 in about 4 steps: 2.7 raw, rounded up to 5
        assert_eq!(nice_ticks(0.3, 11.1, 4), (vec![0.0, 5.0, 10.0, 15.0], 0));
        // 4..10: 1.5 raw -> 2, ticks at the data's ends
        assert_eq!(nice_ticks(4.0, 10.0, 4), (vec![4.0, 6.0, 8.0, 10.0], 0));
        // -0.12..0.05: 0.0425 raw -> 0.05, two decimals
        let (t, d) = nice_ticks(-0.12, 0.05, 4);
        assert_eq!(d, 2);
        assert_eq!(t.len(), 5);
        assert!(
            (t[0] + 0.15).abs() < 1e-12 && (t[4] - 0.05).abs() < 1e-12,
            "{t:?}"
        );
        // no spread: a range of 2 around the value
        assert_eq!(nice_ticks(3.0, 3.0, 4).0.first(), Some(&2.0));
    }

    #[test]
    fn curves_have_axes_ticks_and_a_legend() {
        let e = TileEvaluation {
            aopc_morf: 1.5,
            morf: vec![10.0, 8.0, 5.0, 4.0],
            lerf: vec![10.0, 9.9, 9.7, 9.0],
        };
        let svg = curves_svg(&e, 160);
        assert!(
            svg.starts_with("<svg class=\"curves\" width=\"160\""),
            "{svg}"
        );
        // y: the logits 4..10 at ticks of 2 (nice_ticks); x: steps 0 and 3
        for y in ["4", "6", "8", "10"] {
            assert!(
                svg.contains(&format!("text-anchor=\"end\">{y}</text>")),
                "{y}: {svg}"
            );
        }
        for x in ["0", "3"] {
            assert!(
                svg.contains(&format!("text-anchor=\"middle\">{x}</text>")),
                "{x}: {svg}"
            );
        }
        assert!(svg.contains(">patches replaced</text>") && svg.contains(">logit</text>"));
        assert!(svg.contains(">MoRF</text>") && svg.contains(">LeRF</text>"));
        assert!(svg.contains("class=\"axes\""));
        assert_eq!(svg.matches("<polyline ").count(), 2);
        // the first MoRF point is at the top-left corner of the plot: x at
        // the left margin (38), y at the top margin (16) as 10 is the top tick
        assert!(svg.contains("points=\"38.00,16.00 "), "{svg}");
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
        assert!(empty.contains("<h1>") && !empty.contains("<img") && !empty.contains("<section"));
    }
}
