//! One image comparing analyzers: a header naming each analyzer's column
//! (with its colour bar), then one row per input image: the photo, one tile
//! per analyzer, and the predicted label underneath.
//!
//! Knows nothing about models: the maps come in already computed.
//!
//! ```text
//! +--------------------------------------------------+
//! | input     name 1     name 2    ...               |  header: names (font8x8, 2x),
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

use crate::app::text::ellipsize;
pub use crate::app::text::{draw_text, text_width};

/// Space (pixels) around and between tiles.
pub const GAP: u32 = 4;
/// Height of the header band above the first row.
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

// Header layout: names at GAP (16 px), bar, then bar labels (8 px).
const NAME_Y: u32 = GAP;
const BAR_Y: u32 = NAME_Y + 16 + GAP;
const BAR_H: u32 = 10;
const BAR_LABEL_Y: u32 = BAR_Y + BAR_H + 2;

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
    /// Height of the header band ([`HEADER`]).
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

/// Writes `text` within `[x, x + width)` on a 16 px line at `y`: scale 2
/// centred if it fits, else scale 1 (vertically centred), centred if it
/// fits, else left-aligned and cut with `..`.
fn draw_fitted(img: &mut RgbImage, x: u32, y: u32, width: u32, text: &str) {
    let (scale, dy) = if text_width(text, 2) <= width {
        (2, 0)
    } else {
        (1, 4)
    };
    let fitted = ellipsize(text, (width / (8 * scale)) as usize);
    let left = x + (width - text_width(&fitted, scale).min(width)) / 2;
    draw_text(img, left as i32, (y + dy) as i32, &fitted, scale, TEXT);
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
/// column ([`draw_text`], 2x, centred; 1x and cut with `..` when it does not
/// fit the tile) and, under it, the column's colour bar ([`colour_bar`],
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
    let lay = grid_layout(rows.len(), columns.len(), tile);
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

    draw_fitted(&mut img, lay.tile_x(0), NAME_Y, tile, "input");
    for (c, col) in columns.iter().enumerate() {
        let x = lay.tile_x(c + 1);
        draw_fitted(&mut img, x, NAME_Y, tile, &col.name);
        paste(
            &mut img,
            &colour_bar(tile, BAR_H, style, col.signed),
            x,
            BAR_Y,
        );
        let norm = style.pick(col.signed).1;
        draw_bar_labels(&mut img, x, BAR_LABEL_Y, tile, norm, style.clip);
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
}
