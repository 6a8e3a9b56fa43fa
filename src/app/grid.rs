//! One image comparing analyzers: a header naming each analyzer's column
//! (with its colour bar), then one row per input image: the photo, one tile
//! per analyzer, and the predicted label underneath.
//!
//! Knows nothing about models: the maps come in already computed.
//!
//! ```text
//! +--------------------------------------------------+
//! | input     name 1     name 2    ...               |  header: names (font8x8, one
//! |                                                  |  scale for all, 1-2 lines),
//! |           [bar]      [bar]                       |  colour bar + its end labels
//! | [photo]   [map 1]    [map 2]   ...               |  row 0: tiles
//! | label of row 0                                   |  label band
//! | [photo]   [map 1]    [map 2]   ...               |  row 1 ...
//! +--------------------------------------------------+
//! ```
//!
//! The photo is stretched to `tile x tile`, like the model's preprocessing
//! (the image is resized whole), so every map tile lines up pixel for pixel
//! with the photo tile.

use anyhow::{bail, ensure};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use ndarray::Array2;

use lrp_heatmap::render::{colour_bar, render_map, MapNorm, Style};

pub use crate::app::text::{draw_text, text_width};
use crate::app::text::{ellipsize, wrap_abbreviated};

/// Space (pixels) around and between tiles.
pub const GAP: u32 = 4;
/// Height of the header band above the first row with names of one line
/// (16 px more with names of two lines at scale 2: [`header_text`]).
pub const HEADER: u32 = 48;
/// Height of the label band under each row of tiles.
pub const LABEL_BAND: u32 = 24;
/// Background colour of the grid.
pub const BACKGROUND: Rgb<u8> = Rgb([224, 224, 224]);
/// Text colour.
pub const TEXT: Rgb<u8> = Rgb([0, 0, 0]);
/// Largest grid accepted by [`grid_image`], in pixels (384 MiB of RGB).
pub const MAX_PIXELS: u64 = 1 << 27;
/// Largest tile side accepted by [`grid_image`].
pub const MAX_TILE: u32 = 4096;

// Header layout: names at GAP (16 px, or two lines of 16 px), bar, then
// bar labels (8 px). The offsets below are for one 16 px line of names;
// two lines push the bar and its labels down by 16 px (`HeaderText::extra`).
const NAME_Y: u32 = GAP;
const BAR_Y: u32 = NAME_Y + 16 + GAP;
const BAR_H: u32 = 10;
const BAR_LABEL_Y: u32 = BAR_Y + BAR_H + 2;
/// Lines a column name may take in the header.
const NAME_LINES: usize = 2;
/// Blank pixels kept at each side of a column name, so that the names of
/// neighbouring columns are at least `2 * NAME_PAD + GAP` apart.
const NAME_PAD: u32 = 4;
/// Characters a line of a name holds at least for scale 2 (columns of at
/// least 104 px).
const MIN_CHARS: u32 = 6;

/// The column names as the header draws them: one scale for all, each name
/// in lines that fit its column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderText {
    /// The font scale of every name (2: 16 px glyphs, 1: 8 px).
    pub scale: u32,
    /// Each name's lines (at most [`NAME_LINES`]), in the order given.
    pub lines: Vec<Vec<String>>,
}

impl HeaderText {
    /// Height of the names' band: 16 px, or one more 16 px line when a
    /// name takes two lines at scale 2.
    fn height(&self) -> u32 {
        let most = self.lines.iter().map(Vec::len).max().unwrap_or(1) as u32;
        (most * 8 * self.scale).max(16)
    }

    /// How far the bars sit below their place for one 16 px line.
    fn extra(&self) -> u32 {
        self.height() - 16
    }
}

/// Lays out the header's names for `tile` px columns, each within
/// `tile - 2 * NAME_PAD` px in at most two lines broken after `-`, space,
/// `/` ... ([`wrap`]): at scale 2 when a line holds at least
/// [`MIN_CHARS`] characters at scale 2, else at scale 1. One scale for
/// every column: a name too long for two lines is abbreviated (its longest
/// words shortened with `.`, [`wrap_abbreviated`]) and at last cut with
/// `..`, never drawn smaller than its neighbours.
pub fn header_text(names: &[&str], tile: u32) -> HeaderText {
    let room = tile.saturating_sub(2 * NAME_PAD);
    let scale = if room / 16 >= MIN_CHARS { 2 } else { 1 };
    let width = (room / (8 * scale)) as usize;
    HeaderText {
        scale,
        lines: (names.iter())
            .map(|n| wrap_abbreviated(n, width, NAME_LINES).0)
            .collect(),
    }
}

/// One analyzer column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridColumn {
    /// Analyzer name, written above the column.
    pub name: String,
    /// Whether its maps are signed (drawn with `Style::cmap`) or not
    /// (`|R|` with `Style::unsigned_cmap`).
    pub signed: bool,
}

/// One input image.
#[derive(Clone, Debug)]
pub struct GridRow {
    /// The photo (any size; stretched to the tile).
    pub photo: RgbImage,
    /// Predicted label, written under the row.
    pub label: String,
    /// One `[H, W]` map per column (channel-summed relevance at model
    /// resolution), in column order.
    pub maps: Vec<Array2<f32>>,
    /// A caption per column drawn in the tile's top-left corner (missing or
    /// empty: none).
    pub captions: Vec<String>,
}

/// Pixel geometry of a grid (see [`grid_layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridLayout {
    /// Image width: `(1 + columns) * tile + (columns + 2) * GAP`.
    pub width: u32,
    /// Image height: `header + rows * row_height`.
    pub height: u32,
    /// Height of the header band ([`HEADER`], or more: [`GridLayout::with_header`]).
    pub header: u32,
    /// Height of one row: `tile + LABEL_BAND`.
    pub row_height: u32,
    /// Tile side.
    pub tile: u32,
}

impl GridLayout {
    /// Left edge of column `col`: 0 is the photo, `1..=columns` the
    /// analyzers in order.
    pub fn tile_x(&self, col: usize) -> u32 {
        GAP + col as u32 * (self.tile + GAP)
    }

    /// The same grid under a header `header` px high.
    pub fn with_header(self, header: u32) -> GridLayout {
        let rows = (self.height - self.header) / self.row_height.max(1);
        GridLayout {
            header,
            height: header.saturating_add(rows.saturating_mul(self.row_height)),
            ..self
        }
    }

    /// Top edge of the tiles of row `row`.
    pub fn tile_y(&self, row: usize) -> u32 {
        self.header + row as u32 * self.row_height
    }

    /// Top edge of the label text of row `row` (16 px high).
    pub fn label_y(&self, row: usize) -> u32 {
        self.tile_y(row) + self.tile + (LABEL_BAND - 16) / 2
    }
}

/// The geometry of a grid of `rows` images and `columns` analyzers with
/// `tile x tile` tiles (sizes saturate at `u32::MAX`).
pub fn grid_layout(rows: usize, columns: usize, tile: u32) -> GridLayout {
    let cols = u32::try_from(columns).unwrap_or(u32::MAX);
    let rows = u32::try_from(rows).unwrap_or(u32::MAX);
    let row_height = tile.saturating_add(LABEL_BAND);
    let width = (cols.saturating_add(1))
        .saturating_mul(tile)
        .saturating_add(cols.saturating_add(2).saturating_mul(GAP));
    let height = HEADER.saturating_add(rows.saturating_mul(row_height));
    GridLayout {
        width,
        height,
        header: HEADER,
        row_height,
        tile,
    }
}

/// Writes the lines of a column name centred within `[x, x + width)`,
/// the last line ending at `y + height` (names of fewer lines sit on the
/// bar, as the others).
fn draw_name(
    img: &mut RgbImage,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    lines: &[String],
    scale: u32,
) {
    let line_h = 8 * scale;
    let top = y + height.saturating_sub(line_h * lines.len() as u32);
    for (i, line) in lines.iter().enumerate() {
        let left = x + (width - text_width(line, scale).min(width)) / 2;
        let ly = top + i as u32 * line_h;
        draw_text(img, left as i32, ly as i32, line, scale, TEXT);
    }
}

/// End labels under a colour bar of `width` at `(x, y)`: the values that
/// saturate, `max` or the percentile `pQ` of `|R|` (`clip` below 100).
fn draw_bar_labels(img: &mut RgbImage, x: u32, y: u32, width: u32, norm: MapNorm, clip: f32) {
    let (top, bottom) = if clip >= 100.0 {
        ("max".to_string(), "min".to_string())
    } else {
        (format!("p{clip}"), format!("p{}", 100.0 - clip))
    };
    let long: [String; 3] = match norm {
        MapNorm::Symmetric => [format!("-{top}"), "0".into(), format!("+{top}")],
        MapNorm::Absolute => ["0".into(), String::new(), format!("{top}|R|")],
        MapNorm::Unaligned => [bottom, String::new(), top],
    };
    let short: [&str; 3] = match norm {
        MapNorm::Symmetric => ["-", "0", "+"],
        MapNorm::Absolute => ["0", "", "+"],
        MapNorm::Unaligned => ["-", "", "+"],
    };
    let fits = long.iter().map(|s| text_width(s, 1)).sum::<u32>() + 16 <= width;
    let [left, mid, right] = if fits {
        [long[0].as_str(), long[1].as_str(), long[2].as_str()]
    } else {
        short
    };
    if text_width(left, 1) + text_width(right, 1) > width {
        return;
    }
    draw_text(img, x as i32, y as i32, left, 1, TEXT);
    let mx = x + width / 2 - text_width(mid, 1) / 2;
    draw_text(img, mx as i32, y as i32, mid, 1, TEXT);
    let rx = x + width - text_width(right, 1);
    draw_text(img, rx as i32, y as i32, right, 1, TEXT);
}

/// Copies `tile` into `img` with its top-left corner at `(x, y)`.
fn paste(img: &mut RgbImage, tile: &RgbImage, x: u32, y: u32) {
    image::imageops::replace(img, tile, i64::from(x), i64::from(y));
}

/// Renders the comparison grid (layout: [`grid_layout`], module docs).
///
/// Header: `input` over the photo column, each analyzer's name over its
/// column ([`draw_text`], centred, all at one scale: [`header_text`]; a
/// name of two lines makes the header 16 px taller) and, under it, the column's colour bar ([`colour_bar`],
/// signed or unsigned as the column) with its end labels. Rows: the photo
/// stretched to `tile x tile` (triangle filter), then each map drawn by
/// [`render_map`] at `tile x tile`, then the label (2x, cut at the image's
/// right edge) in the band underneath.
///
/// Errors: `tile` outside `1..=MAX_TILE`, a row whose number of maps differs from the number
/// of columns, or an image larger than [`MAX_PIXELS`].
pub fn grid_image(
    rows: &[GridRow],
    columns: &[GridColumn],
    style: &Style,
    tile: u32,
) -> anyhow::Result<RgbImage> {
    ensure!(
        (1..=MAX_TILE).contains(&tile),
        "grid tile size {tile} is outside 1..={MAX_TILE} pixels"
    );
    for (i, r) in rows.iter().enumerate() {
        if r.maps.len() != columns.len() {
            bail!(
                "grid row {i} ({:?}) has {} maps for {} analyzer columns",
                r.label,
                r.maps.len(),
                columns.len()
            );
        }
    }
    let names: Vec<&str> = std::iter::once("input")
        .chain(columns.iter().map(|c| c.name.as_str()))
        .collect();
    let head = header_text(&names, tile);
    let lay = grid_layout(rows.len(), columns.len(), tile);
    let lay = lay.with_header(lay.header.saturating_add(head.extra()));
    let pixels = u64::from(lay.width) * u64::from(lay.height);
    ensure!(
        pixels <= MAX_PIXELS && lay.width < u32::MAX && lay.height < u32::MAX,
        "grid of {} rows x {} columns with {tile} px tiles is too large ({} x {} pixels)",
        rows.len(),
        columns.len() + 1,
        lay.width,
        lay.height
    );
    let mut img = RgbImage::from_pixel(lay.width, lay.height, BACKGROUND);

    let (name_h, extra) = (head.height(), head.extra());
    for (c, lines) in head.lines.iter().enumerate() {
        let x = lay.tile_x(c) + NAME_PAD.min(tile / 2);
        let room = tile.saturating_sub(2 * NAME_PAD);
        draw_name(&mut img, x, NAME_Y, room, name_h, lines, head.scale);
    }
    for (c, col) in columns.iter().enumerate() {
        let x = lay.tile_x(c + 1);
        paste(
            &mut img,
            &colour_bar(tile, BAR_H, style, col.signed),
            x,
            BAR_Y + extra,
        );
        let norm = style.pick(col.signed).1;
        draw_bar_labels(&mut img, x, BAR_LABEL_Y + extra, tile, norm, style.clip);
    }

    for (r, row) in rows.iter().enumerate() {
        let y = lay.tile_y(r);
        if row.photo.width() > 0 && row.photo.height() > 0 {
            let photo = image::imageops::resize(&row.photo, tile, tile, FilterType::Triangle);
            paste(&mut img, &photo, lay.tile_x(0), y);
        }
        for (c, (map, col)) in row.maps.iter().zip(columns).enumerate() {
            let heat = render_map(map, tile, tile, style, col.signed);
            paste(&mut img, &heat, lay.tile_x(c + 1), y);
            if let Some(caption) = row.captions.get(c).filter(|s| !s.is_empty()) {
                let caption = ellipsize(caption, (tile.saturating_sub(4) / 8) as usize);
                let w = 8 * caption.chars().count() as u32 + 4;
                let bg = RgbImage::from_pixel(w.min(tile), 12.min(tile), BACKGROUND);
                paste(&mut img, &bg, lay.tile_x(c + 1), y);
                draw_text(
                    &mut img,
                    lay.tile_x(c + 1) as i32 + 2,
                    y as i32 + 2,
                    &caption,
                    1,
                    TEXT,
                );
            }
        }
        let room = (lay.width - 2 * GAP) / 16;
        let label = ellipsize(&row.label, room as usize);
        draw_text(&mut img, GAP as i32, lay.label_y(r) as i32, &label, 2, TEXT);
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lrp_heatmap::render::Cmap;

    fn sample() -> (Vec<GridRow>, Vec<GridColumn>) {
        let columns = vec![
            GridColumn {
                name: "epsilon-plus-flat".into(),
                signed: true,
            },
            GridColumn {
                name: "gradient".into(),
                signed: false,
            },
            GridColumn {
                name: "zplus".into(),
                signed: true,
            },
        ];
        let rows = (0..2)
            .map(|r| GridRow {
                photo: RgbImage::from_pixel(30, 20, Rgb([10 + 100 * r as u8, 200, 40])),
                label: format!("{r} some label"),
                captions: vec![],
                maps: (0..3)
                    .map(|c| {
                        Array2::from_shape_fn((7, 7), |(y, x)| {
                            (x as f32 - 3.0) * (c as f32 + 1.0) + (y * r) as f32
                        })
                    })
                    .collect(),
            })
            .collect();
        (rows, columns)
    }

    #[test]
    fn layout_numbers() {
        let l = grid_layout(2, 3, 64);
        assert_eq!(l.width, 4 * 64 + 5 * GAP);
        assert_eq!(l.height, HEADER + 2 * (64 + LABEL_BAND));
        assert_eq!(
            (l.header, l.row_height, l.tile),
            (HEADER, 64 + LABEL_BAND, 64)
        );
        assert_eq!(l.tile_x(0), GAP);
        assert_eq!(l.tile_x(3) + 64 + GAP, l.width);
        assert_eq!(l.tile_y(1) + l.row_height, l.height);
        let empty = grid_layout(0, 0, 10);
        assert_eq!((empty.width, empty.height), (10 + 2 * GAP, HEADER));
        let huge = grid_layout(usize::MAX, usize::MAX, u32::MAX);
        assert_eq!((huge.width, huge.height), (u32::MAX, u32::MAX));
    }

    #[test]
    fn tiles_are_the_renderings() {
        let (rows, columns) = sample();
        let style = Style {
            cmap: Cmap::ColdNHot,
            ..Style::default()
        };
        let tile = 40;
        let img = grid_image(&rows, &columns, &style, tile).unwrap();
        let l = grid_layout(rows.len(), columns.len(), tile);
        assert_eq!(img.dimensions(), (l.width, l.height));
        for (r, row) in rows.iter().enumerate() {
            let photo = image::imageops::resize(&row.photo, tile, tile, FilterType::Triangle);
            for (c, map) in row.maps.iter().enumerate() {
                let want = render_map(map, tile, tile, &style, columns[c].signed);
                for (x, y) in [(0, 0), (tile - 1, tile - 1), (5, 33), (20, 20)] {
                    let (gx, gy) = (l.tile_x(c + 1) + x, l.tile_y(r) + y);
                    assert_eq!(
                        img.get_pixel(gx, gy),
                        want.get_pixel(x, y),
                        "{r} {c} {x} {y}"
                    );
                    assert_eq!(img.get_pixel(l.tile_x(0) + x, gy), photo.get_pixel(x, y));
                }
            }
            // Gaps between tiles are background; label band has text.
            assert_eq!(*img.get_pixel(l.tile_x(1) - 1, l.tile_y(r) + 3), BACKGROUND);
            let band = (0..l.width).flat_map(|x| (0..16).map(move |y| (x, y)));
            let ink = band
                .filter(|&(x, y)| *img.get_pixel(x, l.label_y(r) + y) == TEXT)
                .count();
            assert!(ink > 20, "row {r}: {ink}");
        }
        // Header: names drawn above columns, bars under them.
        for c in 0..=columns.len() {
            let x0 = l.tile_x(c);
            let ink = (x0..x0 + tile)
                .flat_map(|x| (NAME_Y..NAME_Y + 16).map(move |y| (x, y)))
                .filter(|&(x, y)| *img.get_pixel(x, y) == TEXT)
                .count();
            assert!(ink > 10, "column {c}: {ink}");
        }
        let signed = colour_bar(tile, BAR_H, &style, true);
        let unsigned = colour_bar(tile, BAR_H, &style, false);
        assert_eq!(img.get_pixel(l.tile_x(1), BAR_Y), signed.get_pixel(0, 0));
        assert_eq!(img.get_pixel(l.tile_x(2), BAR_Y), unsigned.get_pixel(0, 0));
        assert_eq!(
            img.get_pixel(l.tile_x(2) + tile - 1, BAR_Y + 1),
            &Rgb([255; 3])
        );
    }

    #[test]
    fn grid_errors_and_edge_cases() {
        let (mut rows, columns) = sample();
        let style = Style::default();
        assert!(grid_image(&rows, &columns, &style, 0).is_err());
        let img = grid_image(&[], &columns, &style, 16).unwrap();
        assert_eq!(img.dimensions(), (4 * 16 + 5 * GAP, HEADER));
        let img = grid_image(&[], &[], &style, 1).unwrap();
        assert_eq!(img.dimensions(), (1 + 2 * GAP, HEADER));
        rows[0].photo = RgbImage::new(0, 0);
        assert!(grid_image(&rows, &columns, &style, 8).is_ok());
        rows[1].maps.pop();
        let msg = format!("{:#}", grid_image(&rows, &columns, &style, 8).unwrap_err());
        assert!(msg.contains("2 maps for 3"), "{msg}");
        let msg = format!(
            "{:#}",
            grid_image(&[], &columns, &style, 1 << 20).unwrap_err()
        );
        assert!(msg.contains("outside"), "{msg}");
        let many: Vec<GridColumn> = (0..9).map(|_| columns[0].clone()).collect();
        let row = GridRow {
            photo: RgbImage::new(1, 1),
            label: String::new(),
            maps: vec![Array2::zeros((1, 1)); 9],
            captions: vec![],
        };
        let msg = format!(
            "{:#}",
            grid_image(&[row], &many, &style, MAX_TILE).unwrap_err()
        );
        assert!(msg.contains("too large"), "{msg}");
    }

    /// Lengths of the vertical runs of `TEXT` pixels in columns `xs` of rows
    /// `ys`.
    fn vertical_runs(
        img: &RgbImage,
        xs: std::ops::Range<u32>,
        ys: std::ops::Range<u32>,
    ) -> Vec<u32> {
        let mut runs = Vec::new();
        for x in xs {
            let mut run = 0;
            for y in ys.clone() {
                if *img.get_pixel(x, y) == TEXT {
                    run += 1;
                } else if run > 0 {
                    runs.push(run);
                    run = 0;
                }
            }
            if run > 0 {
                runs.push(run);
            }
        }
        runs
    }

    /// A one-row grid with these column names (`tile` px).
    fn named_grid(names: &[&str], tile: u32) -> (RgbImage, GridLayout, HeaderText) {
        let columns: Vec<GridColumn> = names
            .iter()
            .map(|n| GridColumn {
                name: n.to_string(),
                signed: !n.starts_with("grad"),
            })
            .collect();
        let row = GridRow {
            photo: RgbImage::from_pixel(4, 4, Rgb([9, 9, 9])),
            label: "1 label".into(),
            maps: vec![Array2::from_elem((3, 3), 1.0); names.len()],
            captions: vec![],
        };
        let img = grid_image(&[row], &columns, &Style::default(), tile).unwrap();
        let mut all = vec!["input"];
        all.extend_from_slice(names);
        let head = header_text(&all, tile);
        let lay = grid_layout(1, names.len(), tile);
        (img, lay.with_header(lay.header + head.extra()), head)
    }

    #[test]
    fn one_label_size_for_every_column() {
        // the default analyzers of `compare` and concept columns, at the
        // default 160 px: all at scale 2, long names on two lines, none cut
        let mut names: Vec<&str> = crate::app::commands::compare::DEFAULT_ANALYZERS
            .split(',')
            .collect();
        names.extend(["concept #1", "concept #2", "channel 101"]);
        let head = header_text(&names, 160);
        assert_eq!(head.scale, 2);
        // 160 - 2 * 4 px of padding at 16 px a character: 9 characters
        assert_eq!(head.lines[7], ["epsilon-", "plus-flat"]);
        // 20 characters do not fit two lines of 9: abbreviated, not shrunk
        assert_eq!(head.lines[2], ["integrat.", "gradients"]);
        // one letter too long for a line: abbreviated, not cut in two
        assert_eq!(head.lines[3], ["smoothgr."]);
        for (name, lines) in names.iter().zip(&head.lines) {
            assert!(lines.iter().all(|l| l.chars().count() <= 9), "{lines:?}");
            assert!(lines.len() <= NAME_LINES, "{name}: {lines:?}");
        }
        // too small for six characters of 16 px: every name at scale 1
        let head = header_text(&["zplus", "epsilon-plus-flat"], 64);
        assert_eq!(head.scale, 1);
        assert_eq!(head.lines[0], ["zplus"]);
        // (64 - 8) / 8 = 7 characters a line
        assert!(head.lines[1].len() <= 2, "{:?}", head.lines[1]);
        assert!(head.lines[1].iter().all(|l| l.chars().count() <= 7));

        // drawn: a short and a long name both at scale 2, which makes every
        // vertical run of ink an even number of pixels (each glyph row is two
        // pixel rows); the scale 1 the long name used to get has runs of 1
        let (img, lay, head) = named_grid(&["zplus", "epsilon-plus-flat", "gradient"], 160);
        assert_eq!(head.scale, 2);
        assert_eq!(lay.header, HEADER + 16, "two lines of names");
        assert_eq!(img.height(), lay.height);
        for c in 0..4 {
            let x = lay.tile_x(c);
            let runs = vertical_runs(&img, x..x + 160, NAME_Y..NAME_Y + 32);
            assert!(!runs.is_empty(), "column {c} has no name");
            assert!(runs.iter().all(|r| r % 2 == 0), "column {c}: {runs:?}");
        }
        // the bars moved down with the names: first column's bar starts
        // with the colour bar's first pixel
        let bar = colour_bar(160, BAR_H, &Style::default(), true);
        assert_eq!(
            img.get_pixel(lay.tile_x(1), BAR_Y + 16),
            bar.get_pixel(0, 0)
        );
        assert_eq!(lay.tile_y(0), HEADER + 16);
    }

    #[test]
    fn neighbouring_names_do_not_touch() {
        // "concept #1" (10 characters, 160 px at scale 2) used to fill its
        // 160 px column exactly, running into the next one's name
        let (img, lay, head) = named_grid(&["concept #1", "concept #2", "concept #3"], 160);
        assert_eq!(head.lines[1], ["concept", "#1"]);
        let band = NAME_Y..NAME_Y + 32;
        let ink = |x: u32| band.clone().any(|y| *img.get_pixel(x, y) == TEXT);
        for c in 1..3 {
            // nothing drawn from NAME_PAD before a column's right edge to
            // NAME_PAD after the next column's left edge
            let gutter = lay.tile_x(c) + 160 - NAME_PAD..lay.tile_x(c + 1) + NAME_PAD;
            assert_eq!(gutter.len() as u32, 2 * NAME_PAD + GAP);
            assert!(!gutter.clone().any(ink), "ink in {gutter:?}");
            // and each name is there
            let x = lay.tile_x(c);
            assert!((x..x + 160).any(ink), "column {c}");
        }
    }
}
