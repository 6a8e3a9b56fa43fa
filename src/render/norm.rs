//! Value normalisation: Zennit's `zennit.image` `symmetric` / `unaligned`
//! bounds, its scripts' `absolute` relevance norm, and its palette `level`.

use anyhow::bail;
use ndarray::Array2;

/// How map values become colour-map positions, as Zennit's `imgify`
/// `symmetric=True` / `symmetric=False` and its example scripts'
/// `--relevance-norm absolute`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapNorm {
    /// `t = 0.5 + R / (2 max|R|)`: 0 is the centre of the map.
    #[default]
    Symmetric,
    /// `t = |R| / max|R|`: 0 is the start of the map.
    Absolute,
    /// `t = (R - min R) / (max R - min R)`: min-max, 0 is wherever it falls.
    Unaligned,
}

impl MapNorm {
    /// Names accepted by [`MapNorm::parse`].
    pub const NAMES: &'static [&'static str] = &["symmetric", "absolute", "unaligned"];

    /// Parses `symmetric`, `absolute` or `unaligned` (case-insensitive).
    pub fn parse(name: &str) -> anyhow::Result<MapNorm> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "symmetric" => MapNorm::Symmetric,
            "absolute" => MapNorm::Absolute,
            "unaligned" => MapNorm::Unaligned,
            _ => bail!(
                "unknown normalisation {name:?}; expected one of {}",
                Self::NAMES.join(", ")
            ),
        })
    }

    /// The name as accepted by [`MapNorm::parse`].
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Applies `level` to a position `u` in `[0, 1]` and clamps the result.
///
/// As Zennit's palette `level`: values are multiplied by `level` before
/// clipping, so `level > 1` saturates earlier and `level < 1` uses less of
/// the map (0 gives a single colour). For [`MapNorm::Symmetric`] and
/// [`MapNorm::Unaligned`] the scaling is about the centre,
/// `t = 0.5 + (u - 0.5) level` (exactly Zennit); for [`MapNorm::Absolute`]
/// it is about 0, `t = u level`, so `|R| = 0` keeps the first colour (Zennit
/// scales about 0.5 there too). A NaN, infinite or negative `level` counts
/// as 1.
pub fn apply_level(u: f32, norm: MapNorm, level: f32) -> f32 {
    let level = if level.is_finite() && level >= 0.0 {
        level
    } else {
        1.0
    };
    let u = if u.is_nan() { 0.5 } else { u };
    let t = match norm {
        MapNorm::Absolute => u * level,
        MapNorm::Symmetric | MapNorm::Unaligned => 0.5 + (u - 0.5) * level,
    };
    t.clamp(0.0, 1.0)
}

/// The values a map is scaled by: `amax` (the `|R|` that saturates, for
/// [`MapNorm::Symmetric`] and [`MapNorm::Absolute`]) and `lo`, `hi` (for
/// [`MapNorm::Unaligned`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// `|R|` at and beyond which the colour saturates.
    pub amax: f64,
    /// Lowest value of the unaligned range.
    pub lo: f64,
    /// Highest value of the unaligned range.
    pub hi: f64,
}

/// The `q`-th percentile (`0..=100`, linear interpolation between ranks) of
/// `v`, sorted in place; 0 for no values.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 < v.len() {
        v[i] + f * (v[i + 1] - v[i])
    } else {
        v[i]
    }
}

impl Scale {
    /// The scale of `map` clipped at the `clip`-th percentile (`100`: the
    /// maximum, as Zennit; 99.5 by default, as Captum clips outliers):
    /// `amax` the `clip`-th percentile of `|R|`, `lo` and `hi` the `100 -
    /// clip`-th and `clip`-th percentiles of `R`. NaN and +-Inf count as 0.
    pub fn of(map: &Array2<f32>, clip: f32) -> Scale {
        let clip = if clip.is_finite() {
            clip.clamp(0.0, 100.0) as f64
        } else {
            100.0
        };
        let clean: Vec<f64> = map
            .iter()
            .map(|&v| if v.is_finite() { f64::from(v) } else { 0.0 })
            .collect();
        let mut abs: Vec<f64> = clean.iter().map(|v| v.abs()).collect();
        let amax = percentile(&mut abs, clip);
        let mut sorted = clean;
        let hi = percentile(&mut sorted, clip);
        let lo = percentile(&mut sorted, 100.0 - clip);
        Scale { amax, lo, hi }
    }
}

/// Colour-map positions (`[0, 1]`) of a map under `norm` and `level`
/// (see [`MapNorm`], [`apply_level`]), scaled by the map's maximum.
///
/// NaN and ±Inf count as 0 and never propagate. A map without spread (all
/// zero, or all equal for `Unaligned`) gives the "no relevance" position
/// before `level`: 0.5 for `Symmetric` and `Unaligned`, 0 for `Absolute`.
pub fn normalize_map(map: &Array2<f32>, norm: MapNorm, level: f32) -> Array2<f32> {
    normalize_scaled(map, norm, level, &Scale::of(map, 100.0))
}

/// [`normalize_map`] with a given [`Scale`]: values beyond it saturate.
pub fn normalize_scaled(map: &Array2<f32>, norm: MapNorm, level: f32, sc: &Scale) -> Array2<f32> {
    let clean = |v: f32| if v.is_finite() { f64::from(v) } else { 0.0 };
    let (amax, lo, hi) = (sc.amax, sc.lo, sc.hi);
    let u = |v: f64| -> f64 {
        let u = match norm {
            MapNorm::Symmetric if amax > 0.0 => 0.5 + 0.5 * (v / amax),
            MapNorm::Symmetric => 0.5,
            MapNorm::Absolute if amax > 0.0 => v.abs() / amax,
            MapNorm::Absolute => 0.0,
            MapNorm::Unaligned if hi > lo => (v - lo) / (hi - lo),
            MapNorm::Unaligned => 0.5,
        };
        u.clamp(0.0, 1.0)
    };
    map.mapv(|v| apply_level(u(clean(v)) as f32, norm, level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn parse_names() {
        assert_eq!(MapNorm::parse("Absolute").unwrap(), MapNorm::Absolute);
        for n in MapNorm::NAMES {
            assert_eq!(MapNorm::parse(n).unwrap().name(), *n);
        }
        assert!(MapNorm::parse("max").is_err());
    }

    #[test]
    fn percentiles_and_clipped_scales() {
        // 0..=100: the q-th percentile is q, between ranks interpolated
        let mut v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.5), 99.5);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
        // one outlier among 400 values of 1: clipped at 99.5 (between the
        // ranks 397 and 398 of 0..=399, both 1) it no longer sets the scale,
        // and it saturates
        let mut m = Array2::from_elem((20, 20), 1.0f32);
        m[[0, 0]] = 1000.0;
        let sc = Scale::of(&m, 99.5);
        assert_eq!(sc.amax, 1.0);
        let t = normalize_scaled(&m, MapNorm::Symmetric, 1.0, &sc);
        assert_eq!((t[[0, 0]], t[[5, 5]]), (1.0, 1.0));
        // at 100 it is today's max scaling: 1 becomes a faint 0.5005
        let t = normalize_scaled(&m, MapNorm::Symmetric, 1.0, &Scale::of(&m, 100.0));
        assert!((t[[5, 5]] - 0.5005).abs() < 1e-6);
    }

    #[test]
    fn normalisations() {
        let m = arr2(&[[-2.0, 0.0, 1.0, 4.0]]);
        let s = normalize_map(&m, MapNorm::Symmetric, 1.0);
        assert_eq!(s, arr2(&[[0.25, 0.5, 0.625, 1.0]]));
        let a = normalize_map(&m, MapNorm::Absolute, 1.0);
        assert_eq!(a, arr2(&[[0.5, 0.0, 0.25, 1.0]]));
        let u = normalize_map(&m, MapNorm::Unaligned, 1.0);
        assert_eq!(u, arr2(&[[0.0, 1.0 / 3.0, 0.5, 1.0]]));
    }

    #[test]
    fn normalisation_never_nan() {
        let m = arr2(&[[f32::NAN, 2.0, f32::INFINITY, -4.0, f32::NEG_INFINITY]]);
        let s = normalize_map(&m, MapNorm::Symmetric, 1.0);
        assert_eq!(s, arr2(&[[0.5, 0.75, 0.5, 0.0, 0.5]]));
        let a = normalize_map(&m, MapNorm::Absolute, 1.0);
        assert_eq!(a, arr2(&[[0.0, 0.5, 0.0, 1.0, 0.0]]));
        let u = normalize_map(&m, MapNorm::Unaligned, 1.0);
        assert_eq!(u, arr2(&[[2.0 / 3.0, 1.0, 2.0 / 3.0, 0.0, 2.0 / 3.0]]));
        // No spread: the "no relevance" position.
        let z = Array2::<f32>::zeros((2, 2));
        for (norm, want) in [
            (MapNorm::Symmetric, 0.5),
            (MapNorm::Absolute, 0.0),
            (MapNorm::Unaligned, 0.5),
        ] {
            assert!(normalize_map(&z, norm, 1.0).iter().all(|&t| t == want));
            let nan = Array2::from_elem((2, 2), f32::NAN);
            assert!(normalize_map(&nan, norm, 3.0).iter().all(|&t| t == want));
        }
        let flat = Array2::from_elem((1, 3), 7.0f32);
        assert!(normalize_map(&flat, MapNorm::Unaligned, 1.0)
            .iter()
            .all(|&t| t == 0.5));
        // Huge finite values do not overflow to Inf/NaN.
        let big = arr2(&[[-3e38f32, 3e38]]);
        assert_eq!(
            normalize_map(&big, MapNorm::Unaligned, 1.0),
            arr2(&[[0.0, 1.0]])
        );
        assert_eq!(
            normalize_map(&Array2::zeros((0, 3)), MapNorm::Symmetric, 1.0).dim(),
            (0, 3)
        );
    }

    #[test]
    fn level_saturates() {
        let m = arr2(&[[-1.0, -0.25, 0.0, 0.25, 0.5, 1.0]]);
        let s = normalize_map(&m, MapNorm::Symmetric, 2.0);
        assert_eq!(s, arr2(&[[0.0, 0.25, 0.5, 0.75, 1.0, 1.0]]));
        let a = normalize_map(&m, MapNorm::Absolute, 2.0);
        assert_eq!(a, arr2(&[[1.0, 0.5, 0.0, 0.5, 1.0, 1.0]]));
        // level < 1 uses less of the map; 0 gives one colour.
        let s = normalize_map(&m, MapNorm::Symmetric, 0.5);
        assert_eq!(s[[0, 0]], 0.25);
        assert_eq!(s[[0, 5]], 0.75);
        let s = normalize_map(&m, MapNorm::Symmetric, 0.0);
        assert!(s.iter().all(|&t| t == 0.5));
        // Bad levels count as 1.
        for bad in [f32::NAN, f32::INFINITY, -2.0] {
            assert_eq!(apply_level(0.75, MapNorm::Symmetric, bad), 0.75);
        }
        assert_eq!(apply_level(0.8, MapNorm::Unaligned, 2.0), 1.0);
        assert!((apply_level(0.3, MapNorm::Unaligned, 2.0) - 0.1).abs() < 1e-6);
    }
}
