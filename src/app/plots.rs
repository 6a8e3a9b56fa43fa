//! The plots of `lrp-heatmap evaluate`, as PNG and SVG (plotters): the mean
//! perturbation curves per analyzer (most relevant first | least relevant
//! first, the random order in grey) and the randomisation check's mean
//! Spearman correlations per randomised layer.
//!
//! The data comes in as plain numbers (names, curves, correlations): the
//! plots know nothing of models. Text is set in DejaVu Sans, embedded
//! (`assets/fonts/`), so a PNG looks the same on a machine without fonts.
//! Both files are rendered in memory first and then written atomically
//! ([`crate::app::output::write_atomic`]): an error leaves neither a
//! half-written file nor a PNG without its SVG.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// File stem of the perturbation curves.
pub const CURVES: &str = "evaluate-curves";
/// File stem of the randomisation check.
pub const RANDOMIZATION: &str = "evaluate-randomization";

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family the plots ask for, served by [`FONT`].
const FAMILY: &str = "sans-serif";

/// Registers [`FONT`] as plotters' sans-serif, once.
fn font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    ensure!(ok, "the embedded font does not load");
    Ok(())
}

/// The element-wise mean of curves (over images), as long as the shortest
/// one; empty without curves.
pub fn mean_curve<T: Copy + Into<f64>>(curves: &[&[T]]) -> Vec<f64> {
    let Some(len) = curves.iter().map(|c| c.len()).min() else {
        return Vec::new();
    };
    let n = curves.len() as f64;
    (0..len)
        .map(|k| curves.iter().map(|c| c[k].into()).sum::<f64>() / n)
        .collect()
}

/// One analyzer's mean curves and mean AOPCs.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyzerCurves {
    /// The analyzer.
    pub name: String,
    /// Mean `f(x_k)`, most relevant first, `k = 0..L`.
    pub morf: Vec<f64>,
    /// Mean `f(x_k)`, least relevant first.
    pub lerf: Vec<f64>,
    /// Mean AOPC, most relevant first.
    pub aopc_morf: f64,
    /// Mean AOPC, least relevant first.
    pub aopc_lerf: f64,
}

/// Everything the curves plot shows.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvesPlot {
    /// The title (images and perturbation).
    pub title: String,
    /// One entry per analyzer, in the order of the legend.
    pub analyzers: Vec<AnalyzerCurves>,
    /// The random order's mean curve (the baseline; the same for every
    /// analyzer).
    pub random: Vec<f64>,
    /// Its mean AOPC.
    pub aopc_random: f64,
}

/// One analyzer's mean correlation after each randomised layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyzerRhos {
    /// The analyzer.
    pub name: String,
    /// Mean Spearman rho with the trained model's map after `1..=n` layers.
    pub rhos: Vec<f64>,
}

/// Everything the randomisation plot shows.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomizationPlot {
    /// The title.
    pub title: String,
    /// The layers randomised, from the output down.
    pub layers: Vec<String>,
    /// One entry per analyzer, in the order of the legend.
    pub analyzers: Vec<AnalyzerRhos>,
    /// A map above this after [`RandomizationPlot::top_layers`] fails.
    pub fail_rho: f64,
    /// See [`RandomizationPlot::fail_rho`].
    pub top_layers: usize,
}

/// Colours of the analyzers, in order (Tableau 10 without its grey).
const PALETTE: [RGBColor; 9] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
];
/// The random baseline's colour.
const GREY: RGBColor = RGBColor(150, 150, 150);
/// Text and thresholds.
const INK: RGBColor = RGBColor(40, 40, 40);

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Width of the legend column.
const LEGEND_W: u32 = 300;
/// Height of one legend entry.
const ROW_H: u32 = 42;

/// The smallest and largest finite value, padded by 5% (1 either side
/// when they are equal; `(0, 1)` without any).
fn span<'a>(values: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    if lo == hi {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// `(k, v)` for the finite values of a curve.
fn points(curve: &[f64]) -> Vec<(i32, f64)> {
    curve
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, &v)| (k as i32, v))
        .collect()
}

/// Decimals that tell apart about ten ticks over `lo..hi`.
fn decimals(lo: f64, hi: f64) -> usize {
    let step = (hi - lo) / 10.0;
    if !(step > 0.0 && step.is_finite()) {
        return 1;
    }
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// What drawing on a backend whose errors are `E` returns.
type Drawn<E> = std::result::Result<(), DrawingAreaErrorKind<E>>;

/// One legend entry: a swatch, the name and a line of numbers.
fn legend_entry<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    row: u32,
    colour: RGBColor,
    name: &str,
    numbers: &str,
) -> Drawn<DB::ErrorType> {
    let y = 40 + (row * ROW_H) as i32;
    area.draw(&Rectangle::new([(8, y + 7), (36, y + 11)], colour.filled()))?;
    area.draw(&Text::new(
        name.to_string(),
        (44, y),
        (FAMILY, 17).into_font().color(&INK),
    ))?;
    area.draw(&Text::new(
        numbers.to_string(),
        (44, y + 19),
        (FAMILY, 14).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// Size of the curves plot: two panels and the legend, taller with more
/// analyzers.
pub fn curves_size(p: &CurvesPlot) -> (u32, u32) {
    let rows = p.analyzers.len() as u32 + 1;
    (1200, 500.max(130 + rows * ROW_H))
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &CurvesPlot,
) -> Drawn<DB::ErrorType> {
    root.fill(&WHITE)?;
    let root = root
        .margin(8, 0, 0, 0)
        .titled(&p.title, (FAMILY, 22).into_font().color(&INK))?;
    let (w, _) = root.dim_in_pixel();
    let (panels, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
    let steps = p
        .analyzers
        .iter()
        .flat_map(|a| [a.morf.len(), a.lerf.len()])
        .chain([p.random.len()])
        .max()
        .unwrap_or(1)
        .saturating_sub(1)
        .max(1);
    let (lo, hi) = span(
        p.analyzers
            .iter()
            .flat_map(|a| a.morf.iter().chain(&a.lerf))
            .chain(&p.random),
    );
    let digits = decimals(lo, hi);
    let halves = panels.split_evenly((1, 2));
    type Pick = fn(&AnalyzerCurves) -> &[f64];
    let sides: [(&str, Pick); 2] = [
        ("most relevant first (MoRF)", |a| &a.morf),
        ("least relevant first (LeRF)", |a| &a.lerf),
    ];
    for (panel, (caption, pick)) in halves.iter().zip(sides) {
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, (FAMILY, 18).into_font().color(&INK))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0..steps as i32, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("patches perturbed")
            .y_desc("logit of the explained class")
            .y_label_formatter(&|v| format!("{v:.digits$}"))
            .axis_desc_style((FAMILY, 15).into_font().color(&INK))
            .label_style((FAMILY, 13).into_font().color(&INK))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(222, 222, 222))
            .draw()?;
        chart.draw_series(LineSeries::new(points(&p.random), GREY.stroke_width(2)))?;
        for (i, a) in p.analyzers.iter().enumerate() {
            chart.draw_series(LineSeries::new(points(pick(a)), colour(i).stroke_width(2)))?;
        }
    }
    legend.draw(&Text::new(
        "mean AOPC (higher MoRF, lower LeRF: better)",
        (8, 12),
        (FAMILY, 14).into_font().color(&INK),
    ))?;
    for (i, a) in p.analyzers.iter().enumerate() {
        legend_entry(
            &legend,
            i as u32,
            colour(i),
            &a.name,
            &format!("MoRF {:.3}   LeRF {:.3}", a.aopc_morf, a.aopc_lerf),
        )?;
    }
    legend_entry(
        &legend,
        p.analyzers.len() as u32,
        GREY,
        "random order",
        &format!("AOPC {:.3} (both panels)", p.aopc_random),
    )?;
    Ok(())
}

/// Size of the randomisation plot.
pub fn randomization_size(p: &RandomizationPlot) -> (u32, u32) {
    let rows = p.analyzers.len() as u32 + 1;
    (1100, 500.max(140 + rows * ROW_H))
}

/// Whether the layer names fit under the x axis of a plot `width` pixels
/// wide (about 8 px a character at the tick labels' size).
fn names_fit(layers: &[String], width: u32) -> bool {
    let longest = layers.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    layers.len() <= 12 && (longest * 8 + 8) * layers.len() <= width as usize
}

/// At most `n` characters of `s` (an ellipsis in the middle).
fn shorten(s: &str, n: usize) -> String {
    let c: Vec<char> = s.chars().collect();
    if c.len() <= n {
        return s.to_string();
    }
    let half = (n - 1) / 2;
    let head: String = c[..half].iter().collect();
    let tail: String = c[c.len() - (n - 1 - half)..].iter().collect();
    format!("{head}…{tail}")
}

fn draw_randomization<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &RandomizationPlot,
) -> Drawn<DB::ErrorType> {
    root.fill(&WHITE)?;
    let root = root
        .margin(8, 0, 0, 0)
        .titled(&p.title, (FAMILY, 22).into_font().color(&INK))?;
    let (w, _) = root.dim_in_pixel();
    let (area, legend) = root.split_horizontally(w.saturating_sub(LEGEND_W));
    let n = p.layers.len().max(1) as i32;
    let lowest = p
        .analyzers
        .iter()
        .flat_map(|a| &a.rhos)
        .filter(|v| v.is_finite())
        .fold(0f64, |m, &v| m.min(v));
    let lo = if lowest < -0.2 { -1.0 } else { -0.2 };
    let fit = names_fit(&p.layers, area.dim_in_pixel().0.saturating_sub(90));
    let x_desc = if fit || p.layers.is_empty() {
        "linear layers randomised, from the output down".to_string()
    } else {
        format!(
            "linear layers randomised, from the output down (1: {}, {}: {})",
            shorten(&p.layers[0], 24),
            p.layers.len(),
            shorten(&p.layers[p.layers.len() - 1], 24)
        )
    };
    let names = &p.layers;
    let label = move |v: &i32| -> String {
        match usize::try_from(*v) {
            Ok(k) if k >= 1 && k <= names.len() => {
                if fit {
                    names[k - 1].clone()
                } else {
                    k.to_string()
                }
            }
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0..n + 1, lo..1.05f64)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc("Spearman rho with the trained model's map")
        .x_label_formatter(&label)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .axis_desc_style((FAMILY, 15).into_font().color(&INK))
        .label_style((FAMILY, 13).into_font().color(&INK))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(222, 222, 222));
    if fit {
        mesh.x_labels(n as usize + 2);
    }
    mesh.draw()?;
    // the threshold, and where it is read
    let dashed = ShapeStyle {
        color: INK.mix(0.7),
        filled: false,
        stroke_width: 1,
    };
    chart.draw_series(DashedLineSeries::new(
        [(0, p.fail_rho), (n + 1, p.fail_rho)],
        6,
        5,
        dashed,
    ))?;
    let top = p.top_layers.min(p.layers.len()).max(1) as i32;
    chart.draw_series(DashedLineSeries::new(
        [(top, lo), (top, 1.05)],
        6,
        5,
        dashed,
    ))?;
    chart.draw_series([Text::new(
        format!(" top {top}"),
        (top, lo + 0.03),
        (FAMILY, 13)
            .into_font()
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Bottom)),
    )])?;
    for (i, a) in p.analyzers.iter().enumerate() {
        let pts: Vec<(i32, f64)> = a
            .rhos
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, &v)| (k as i32 + 1, v))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), colour(i).stroke_width(2)))?;
        chart.draw_series(
            pts.iter()
                .filter(|(k, _)| *k == top)
                .map(|&(k, v)| Circle::new((k, v), 5, colour(i).filled())),
        )?;
    }
    legend.draw(&Text::new(
        format!("mean rho after the top {top} layers"),
        (8, 12),
        (FAMILY, 14).into_font().color(&INK),
    ))?;
    for (i, a) in p.analyzers.iter().enumerate() {
        let at = a.rhos.get(top as usize - 1).copied();
        let numbers = match at {
            Some(r) if r > p.fail_rho => format!("{r:.2}: fails the check"),
            Some(r) => format!("{r:.2}: passes"),
            None => "no layer".to_string(),
        };
        legend_entry(&legend, i as u32, colour(i), &a.name, &numbers)?;
    }
    let y = 50 + (p.analyzers.len() as u32 * ROW_H) as i32;
    legend.draw(&plotters::element::DashedPathElement::new(
        [(8, y + 9), (36, y + 9)],
        6,
        5,
        dashed,
    ))?;
    legend.draw(&Text::new(
        format!("fails above {}", p.fail_rho),
        (44, y),
        (FAMILY, 14).into_font().color(&INK),
    ))?;
    legend.draw(&Text::new(
        format!("read at the marker ({top} layers)"),
        (44, y + 19),
        (FAMILY, 13).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// Renders with `svg` and `png` (the same drawing on both backends) and
/// writes `<dir>/<stem>.png` and `.svg`, atomically; returns their paths.
fn render(
    dir: &Path,
    stem: &str,
    (w, h): (u32, u32),
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
    png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    font()?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        svg(&root).with_context(|| format!("cannot draw {stem}.svg"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw {stem}.svg: {e}"))?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        png(&root).with_context(|| format!("cannot draw {stem}.png"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw {stem}.png: {e}"))?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).context("plot buffer of the wrong size")?;
    let (png_path, svg_path) = (
        dir.join(format!("{stem}.png")),
        dir.join(format!("{stem}.svg")),
    );
    crate::app::output::write_atomic(&png_path, |out| {
        use image::codecs::png::{CompressionType, FilterType, PngEncoder};
        img.write_with_encoder(PngEncoder::new_with_quality(
            out,
            CompressionType::Best,
            FilterType::Adaptive,
        ))
        .context("PNG encoding failed")
    })?;
    crate::app::output::write_atomic(&svg_path, |out| Ok(out.write_all(text.as_bytes())?))?;
    Ok(vec![png_path, svg_path])
}

/// A drawing error as an `anyhow` error.
fn drawn<E: std::error::Error + Send + Sync>(r: Drawn<E>) -> Result<()> {
    r.map_err(|e| anyhow!("{e}"))
}

/// Writes `evaluate-curves.png` and `.svg` into `dir`; returns their paths.
pub fn write_curves(dir: &Path, p: &CurvesPlot) -> Result<Vec<PathBuf>> {
    render(
        dir,
        CURVES,
        curves_size(p),
        |r| drawn(draw_curves(r, p)),
        |r| drawn(draw_curves(r, p)),
    )
}

/// Writes `evaluate-randomization.png` and `.svg` into `dir`; returns their
/// paths.
pub fn write_randomization(dir: &Path, p: &RandomizationPlot) -> Result<Vec<PathBuf>> {
    render(
        dir,
        RANDOMIZATION,
        randomization_size(p),
        |r| drawn(draw_randomization(r, p)),
        |r| drawn(draw_randomization(r, p)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_curves_average_over_images_step_by_step() {
        let a: &[f32] = &[4.0, 2.0, 1.0];
        let b: &[f32] = &[2.0, 2.0, 0.0];
        let c: &[f32] = &[0.0, -1.0, 2.0];
        assert_eq!(mean_curve(&[a, b, c]), vec![2.0, 1.0, 1.0]);
        assert_eq!(mean_curve(&[a]), vec![4.0, 2.0, 1.0]);
        // as long as the shortest; nothing without curves
        assert_eq!(mean_curve(&[a, &[1.0f32, 3.0][..]]), vec![2.5, 2.5]);
        assert!(mean_curve::<f64>(&[]).is_empty());
        // f64 too (the correlations)
        assert_eq!(
            mean_curve(&[&[1.0f64, 0.5][..], &[0.0, -0.5][..]]),
            vec![0.5, 0.0]
        );
    }

    #[test]
    fn spans_pad_survive_degenerate_values_and_get_enough_decimals() {
        let (lo, hi) = span([0.0, 10.0, f64::NAN].iter());
        assert!((lo + 0.5).abs() < 1e-12 && (hi - 10.5).abs() < 1e-12);
        assert_eq!(span([3.0].iter()), (2.0, 4.0));
        assert_eq!(span([f64::NAN].iter()), (0.0, 1.0));
        // ticks about a tenth of the span apart
        assert_eq!(decimals(0.0, 10.0), 0);
        assert_eq!(decimals(8.0, 12.0), 1);
        assert_eq!(decimals(0.67, 1.12), 2);
        assert_eq!(decimals(1.0, 1.0), 1);
    }

    #[test]
    fn long_layer_names_are_numbered_and_shortened() {
        let short: Vec<String> = ["Gemm_0", "Conv_1"].map(String::from).into();
        assert!(names_fit(&short, 600));
        let many: Vec<String> = (0..50).map(|i| format!("/blocks/{i}/Conv")).collect();
        assert!(!names_fit(&many, 600));
        assert_eq!(shorten("abcdefghij", 5), "ab…ij");
        assert_eq!(shorten("abc", 5), "abc");
    }

    fn curves_plot() -> CurvesPlot {
        CurvesPlot {
            title: "2 images".into(),
            analyzers: vec![
                AnalyzerCurves {
                    name: "zplus".into(),
                    morf: vec![3.0, 1.0, 0.5],
                    lerf: vec![3.0, 2.9, 2.8],
                    aopc_morf: 1.5,
                    aopc_lerf: 0.1,
                },
                AnalyzerCurves {
                    name: "gradient".into(),
                    morf: vec![3.0, 2.0, 1.5],
                    lerf: vec![3.0, 2.5, 2.0],
                    aopc_morf: 0.8,
                    aopc_lerf: 0.5,
                },
            ],
            random: vec![3.0, 2.4, 2.0],
            aopc_random: 0.5,
        }
    }

    #[test]
    fn the_curves_svg_has_a_line_per_curve_and_every_name() {
        font().unwrap();
        let p = curves_plot();
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, curves_size(&p)).into_drawing_area();
            draw_curves(&root, &p).unwrap();
            root.present().unwrap();
        }
        // two panels of (two analyzers + random): the only polylines of
        // three points (the axes and ticks have two)
        let curves = text
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.matches(',').count() == 3)
            .count();
        assert_eq!(curves, 6, "{text}");
        for name in ["zplus", "gradient", "random order", "patches perturbed"] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains("MoRF 1.500   LeRF 0.100"), "{text}");
    }

    #[test]
    fn both_files_are_written_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_curves(dir.path(), &curves_plot()).unwrap();
        assert_eq!(files.len(), 2);
        let png = image::open(&files[0]).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), curves_size(&curves_plot()));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["evaluate-curves.png", "evaluate-curves.svg"]);
        // into a missing folder: an error naming the file, no file
        let gone = dir.path().join("missing");
        let e = write_curves(&gone, &curves_plot()).unwrap_err();
        assert!(format!("{e:#}").contains("evaluate-curves.png"), "{e:#}");
    }
}
