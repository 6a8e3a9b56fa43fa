//! Colour maps: a position `t` in `[0, 1]` (from
//! [`crate::render::normalize_map`]) to a colour.

use anyhow::bail;
use image::Rgb;

/// A colour map: position `t` in `[0, 1]` to RGB.
///
/// Diverging maps (for signed relevance, centre `t = 0.5` = no relevance) are
/// oriented so that positive relevance (`t > 0.5`) gets the first colour of
/// the name: red for `red-blue`, `bwr`, `seismic`; purple for
/// `purple-green`, and so on. Sequential maps (for `|R|`) start at `t = 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmap {
    /// matplotlib `bwr`: blue (0,0,255) → white (255,255,255) at 0 → red (255,0,0).
    Bwr,
    /// matplotlib `seismic`: dark blue (0,0,76.5) → blue → white at 0 → red → dark red (127.5,0,0).
    Seismic,
    /// Zennit's `coldnhot` (`'0ff,00f,80:000,f00,ff0,fff'`): cyan → blue →
    /// black at 0 → red → yellow → white. Zennit's nodes sit at 0, 64, 128,
    /// 170, 212, 255 of 255; here at 0, 1/4, 1/2, 2/3, 5/6, 1, so that 0 is
    /// exactly black.
    ColdNHot,
    /// ColorBrewer RdBu with its grey centre lifted to pure white: the map of
    /// [`crate::render::colorize`] / [`crate::render::heatmap_image`].
    RdBuWhite,
    /// ColorBrewer RdBu (`colorous::RED_BLUE`), red positive.
    RedBlue,
    /// ColorBrewer RdYlBu, red positive.
    RedYellowBlue,
    /// ColorBrewer PRGn, purple positive.
    PurpleGreen,
    /// ColorBrewer BrBG, brown positive.
    BrownGreen,
    /// ColorBrewer PiYG, pink positive.
    PinkGreen,
    /// ColorBrewer PuOr, purple positive.
    PurpleOrange,
    /// ColorBrewer RdGy, red positive.
    RedGrey,
    /// ColorBrewer RdYlGn, red positive.
    RedYellowGreen,
    /// ColorBrewer Spectral, red positive.
    Spectral,
    /// Zennit's `hot` (`'000,f00,ff0,fff'`): black → red → yellow → white,
    /// nodes at 0, 1/3, 2/3, 1.
    Hot,
    /// viridis (`colorous::VIRIDIS`).
    Viridis,
    /// inferno (`colorous::INFERNO`).
    Inferno,
    /// matplotlib `Greys` (ColorBrewer, 9 colours, linear): 0 white, 1 black.
    Greys,
}

/// Names of the diverging colour maps accepted by [`Cmap::parse`].
pub const SIGNED_CMAPS: &[&str] = &[
    "bwr",
    "seismic",
    "coldnhot",
    "rdbu-white",
    "red-blue",
    "red-yellow-blue",
    "purple-green",
    "brown-green",
    "pink-green",
    "purple-orange",
    "red-grey",
    "red-yellow-green",
    "spectral",
];

/// Names of the sequential colour maps (for `|R|`) accepted by [`Cmap::parse`].
pub const UNSIGNED_CMAPS: &[&str] = &["hot", "viridis", "inferno", "greys"];

/// Nodes `(t, [r, g, b])` of a piecewise-linear map.
type Nodes = &'static [(f32, [f32; 3])];

const BWR: Nodes = &[
    (0.0, [0.0, 0.0, 255.0]),
    (0.5, [255.0, 255.0, 255.0]),
    (1.0, [255.0, 0.0, 0.0]),
];
// matplotlib _seismic_data: (0,0,.3) (0,0,1) (1,1,1) (1,0,0) (.5,0,0), evenly spaced.
const SEISMIC: Nodes = &[
    (0.0, [0.0, 0.0, 76.5]),
    (0.25, [0.0, 0.0, 255.0]),
    (0.5, [255.0, 255.0, 255.0]),
    (0.75, [255.0, 0.0, 0.0]),
    (1.0, [127.5, 0.0, 0.0]),
];
const COLDNHOT: Nodes = &[
    (0.0, [0.0, 255.0, 255.0]),
    (0.25, [0.0, 0.0, 255.0]),
    (0.5, [0.0, 0.0, 0.0]),
    (2.0 / 3.0, [255.0, 0.0, 0.0]),
    (5.0 / 6.0, [255.0, 255.0, 0.0]),
    (1.0, [255.0, 255.0, 255.0]),
];
const HOT: Nodes = &[
    (0.0, [0.0, 0.0, 0.0]),
    (1.0 / 3.0, [255.0, 0.0, 0.0]),
    (2.0 / 3.0, [255.0, 255.0, 0.0]),
    (1.0, [255.0, 255.0, 255.0]),
];
// matplotlib _Greys_data: ffffff f0f0f0 d9d9d9 bdbdbd 969696 737373 525252 252525 000000.
const GREYS: Nodes = &[
    (0.0, [255.0; 3]),
    (0.125, [240.0; 3]),
    (0.25, [217.0; 3]),
    (0.375, [189.0; 3]),
    (0.5, [150.0; 3]),
    (0.625, [115.0; 3]),
    (0.75, [82.0; 3]),
    (0.875, [37.0; 3]),
    (1.0, [0.0; 3]),
];

/// Linear interpolation between the nodes around `t` (`t` in `[0, 1]`).
fn lerp_nodes(nodes: Nodes, t: f32) -> Rgb<u8> {
    let k = nodes
        .windows(2)
        .position(|w| t <= w[1].0)
        .unwrap_or(nodes.len() - 2);
    let ((t0, c0), (t1, c1)) = (nodes[k], nodes[k + 1]);
    let a = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
    let mut out = [0u8; 3];
    for c in 0..3 {
        out[c] = (c0[c] + a * (c1[c] - c0[c])).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// A colorous gradient at `t`, capped just below 1 (colorous's `f32` spline
/// overshoots its last knot at exactly 1).
fn gradient(g: colorous::Gradient, t: f32) -> Rgb<u8> {
    let c = g.eval_continuous(f64::from(t).min(1.0 - 1e-6));
    Rgb([c.r, c.g, c.b])
}

impl Cmap {
    /// Parses a colour-map name: one of [`SIGNED_CMAPS`] or
    /// [`UNSIGNED_CMAPS`], case-insensitive, `_` or space allowed for `-`;
    /// ColorBrewer's short names (`rdbu`, `rdylbu`, `prgn`, `brbg`, `piyg`,
    /// `puor`, `rdgy`, `rdylgn`) and `red-gray`, `grays` are aliases.
    pub fn parse(name: &str) -> anyhow::Result<Cmap> {
        let key = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Ok(match key.as_str() {
            "bwr" => Cmap::Bwr,
            "seismic" => Cmap::Seismic,
            "coldnhot" => Cmap::ColdNHot,
            "rdbu-white" => Cmap::RdBuWhite,
            "red-blue" | "rdbu" => Cmap::RedBlue,
            "red-yellow-blue" | "rdylbu" => Cmap::RedYellowBlue,
            "purple-green" | "prgn" => Cmap::PurpleGreen,
            "brown-green" | "brbg" => Cmap::BrownGreen,
            "pink-green" | "piyg" => Cmap::PinkGreen,
            "purple-orange" | "puor" => Cmap::PurpleOrange,
            "red-grey" | "red-gray" | "rdgy" => Cmap::RedGrey,
            "red-yellow-green" | "rdylgn" => Cmap::RedYellowGreen,
            "spectral" => Cmap::Spectral,
            "hot" => Cmap::Hot,
            "viridis" => Cmap::Viridis,
            "inferno" => Cmap::Inferno,
            "greys" | "grays" => Cmap::Greys,
            _ => bail!(
                "unknown colour map {name:?}; diverging (signed): {}; sequential (|R|): {}",
                SIGNED_CMAPS.join(", "),
                UNSIGNED_CMAPS.join(", ")
            ),
        })
    }

    /// The canonical name (an entry of [`SIGNED_CMAPS`] or [`UNSIGNED_CMAPS`]).
    pub fn name(self) -> &'static str {
        match self {
            Cmap::Bwr => "bwr",
            Cmap::Seismic => "seismic",
            Cmap::ColdNHot => "coldnhot",
            Cmap::RdBuWhite => "rdbu-white",
            Cmap::RedBlue => "red-blue",
            Cmap::RedYellowBlue => "red-yellow-blue",
            Cmap::PurpleGreen => "purple-green",
            Cmap::BrownGreen => "brown-green",
            Cmap::PinkGreen => "pink-green",
            Cmap::PurpleOrange => "purple-orange",
            Cmap::RedGrey => "red-grey",
            Cmap::RedYellowGreen => "red-yellow-green",
            Cmap::Spectral => "spectral",
            Cmap::Hot => "hot",
            Cmap::Viridis => "viridis",
            Cmap::Inferno => "inferno",
            Cmap::Greys => "greys",
        }
    }

    /// Whether the map is diverging (meant for signed values, centre 0.5).
    pub fn is_diverging(self) -> bool {
        !matches!(
            self,
            Cmap::Hot | Cmap::Viridis | Cmap::Inferno | Cmap::Greys
        )
    }

    /// The colour at position `t` (clamped to `[0, 1]`; NaN is the "no
    /// relevance" position: 0.5 for diverging maps, 0 for sequential ones).
    pub fn eval(self, t: f32) -> Rgb<u8> {
        let t = if t.is_nan() {
            if self.is_diverging() {
                0.5
            } else {
                0.0
            }
        } else {
            t.clamp(0.0, 1.0)
        };
        // Diverging colorous schemes start with their "positive" colour.
        let rev = 1.0 - t;
        match self {
            Cmap::Bwr => lerp_nodes(BWR, t),
            Cmap::Seismic => lerp_nodes(SEISMIC, t),
            Cmap::ColdNHot => lerp_nodes(COLDNHOT, t),
            Cmap::Hot => lerp_nodes(HOT, t),
            Cmap::Greys => lerp_nodes(GREYS, t),
            Cmap::RdBuWhite => super::color_of(2.0 * t - 1.0),
            Cmap::RedBlue => gradient(colorous::RED_BLUE, rev),
            Cmap::RedYellowBlue => gradient(colorous::RED_YELLOW_BLUE, rev),
            Cmap::PurpleGreen => gradient(colorous::PURPLE_GREEN, rev),
            Cmap::BrownGreen => gradient(colorous::BROWN_GREEN, rev),
            Cmap::PinkGreen => gradient(colorous::PINK_GREEN, rev),
            Cmap::PurpleOrange => gradient(colorous::PURPLE_ORANGE, rev),
            Cmap::RedGrey => gradient(colorous::RED_GREY, rev),
            Cmap::RedYellowGreen => gradient(colorous::RED_YELLOW_GREEN, rev),
            Cmap::Spectral => gradient(colorous::SPECTRAL, rev),
            Cmap::Viridis => gradient(colorous::VIRIDIS, t),
            Cmap::Inferno => gradient(colorous::INFERNO, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piecewise_maps_end_points_and_centres() {
        // matplotlib bwr: _bwr_data = (0,0,1), (1,1,1), (1,0,0).
        assert_eq!(Cmap::Bwr.eval(0.0).0, [0, 0, 255]);
        assert_eq!(Cmap::Bwr.eval(0.5).0, [255, 255, 255]);
        assert_eq!(Cmap::Bwr.eval(1.0).0, [255, 0, 0]);
        assert_eq!(Cmap::Bwr.eval(0.75).0, [255, 128, 128]); // 127.5 rounds up
                                                             // matplotlib seismic: (0,0,.3) (0,0,1) (1,1,1) (1,0,0) (.5,0,0).
        assert_eq!(Cmap::Seismic.eval(0.0).0, [0, 0, 77]);
        assert_eq!(Cmap::Seismic.eval(0.25).0, [0, 0, 255]);
        assert_eq!(Cmap::Seismic.eval(0.5).0, [255, 255, 255]);
        assert_eq!(Cmap::Seismic.eval(1.0).0, [128, 0, 0]);
        // Zennit CMAPS['coldnhot'] = '0ff,00f,80:000,f00,ff0,fff'.
        assert_eq!(Cmap::ColdNHot.eval(0.0).0, [0, 255, 255]);
        assert_eq!(Cmap::ColdNHot.eval(0.25).0, [0, 0, 255]);
        assert_eq!(Cmap::ColdNHot.eval(0.5).0, [0, 0, 0]);
        assert_eq!(Cmap::ColdNHot.eval(2.0 / 3.0).0, [255, 0, 0]);
        assert_eq!(Cmap::ColdNHot.eval(1.0).0, [255, 255, 255]);
        // Zennit CMAPS['hot'] = '000,f00,ff0,fff'.
        assert_eq!(Cmap::Hot.eval(0.0).0, [0, 0, 0]);
        assert_eq!(Cmap::Hot.eval(1.0 / 3.0).0, [255, 0, 0]);
        assert_eq!(Cmap::Hot.eval(2.0 / 3.0).0, [255, 255, 0]);
        assert_eq!(Cmap::Hot.eval(1.0).0, [255, 255, 255]);
        // matplotlib Greys: #ffffff .. #969696 (middle) .. #000000.
        assert_eq!(Cmap::Greys.eval(0.0).0, [255, 255, 255]);
        assert_eq!(Cmap::Greys.eval(0.5).0, [150, 150, 150]);
        assert_eq!(Cmap::Greys.eval(1.0).0, [0, 0, 0]);
        // Issue-2 map: white centre, RdBu ends (#67001f red, #053061 blue).
        assert_eq!(Cmap::RdBuWhite.eval(0.5).0, [255, 255, 255]);
        assert_eq!(Cmap::RdBuWhite.eval(1.0).0, [103, 0, 31]);
        assert_eq!(Cmap::RdBuWhite.eval(0.0).0, [5, 48, 97]);
    }

    #[test]
    fn colorous_maps_orientation_and_ends() {
        // ColorBrewer RdBu (11 classes): #67001f ... #053061. colorous's
        // B-spline centre is (#fddbc7 + 4 #f7f7f7 + #d1e5f0) / 6, truncated.
        assert_eq!(Cmap::RedBlue.eval(1.0).0, [103, 0, 31]);
        assert_eq!(Cmap::RedBlue.eval(0.5).0, [241, 239, 237]);
        let blue = Cmap::RedBlue.eval(0.0).0;
        assert!(blue
            .iter()
            .zip([5, 48, 97])
            .all(|(&a, b)| a.abs_diff(b) <= 1));
        // ColorBrewer PRGn positive end #40004b (purple).
        assert_eq!(Cmap::PurpleGreen.eval(1.0).0, [64, 0, 75]);
        // viridis #440154 -> #fde725, inferno #000004 -> #fcffa4 (matplotlib);
        // colorous's B-spline may be off by one at the ends.
        let near = |a: Rgb<u8>, b: [u8; 3]| a.0.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= 2);
        assert!(near(Cmap::Viridis.eval(0.0), [0x44, 0x01, 0x54]));
        assert!(near(Cmap::Viridis.eval(1.0), [0xfd, 0xe7, 0x25]));
        assert!(near(Cmap::Inferno.eval(0.0), [0x00, 0x00, 0x04]));
        assert!(near(Cmap::Inferno.eval(1.0), [0xfc, 0xff, 0xa4]));
        // Every diverging map: positive side differs from negative side.
        for name in SIGNED_CMAPS {
            let c = Cmap::parse(name).unwrap();
            assert!(c.is_diverging(), "{name}");
            assert_eq!(c.name(), *name);
            assert_ne!(c.eval(0.0), c.eval(1.0), "{name}");
            assert_eq!(c.eval(f32::NAN), c.eval(0.5), "{name}");
        }
        for name in UNSIGNED_CMAPS {
            let c = Cmap::parse(name).unwrap();
            assert!(!c.is_diverging(), "{name}");
            assert_eq!(c.name(), *name);
            assert_eq!(c.eval(f32::NAN), c.eval(0.0), "{name}");
        }
    }

    #[test]
    fn parse_names() {
        assert_eq!(Cmap::parse("RdBu").unwrap(), Cmap::RedBlue);
        assert_eq!(Cmap::parse("red_yellow_blue").unwrap(), Cmap::RedYellowBlue);
        assert_eq!(Cmap::parse(" Greys ").unwrap(), Cmap::Greys);
        let msg = format!("{:#}", Cmap::parse("jet").unwrap_err());
        assert!(msg.contains("jet") && msg.contains("coldnhot") && msg.contains("viridis"));
    }
}
