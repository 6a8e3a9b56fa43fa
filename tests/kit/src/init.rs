//! Weight initialisers of real networks, seeded (for examples and tests).
//!
//! The normal initialisers draw from the plain (untruncated) normal, as
//! PyTorch's `kaiming_normal_` does; Keras' `he_normal` and `lecun_normal`
//! truncate at two standard deviations instead.

use anyhow::{bail, Result};

use crate::synth::{he_normal, Rng};

/// A weight initialiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Glorot / Xavier uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform,
    /// He / Kaiming normal: `N(0, 2 / fan_in)`.
    HeNormal,
    /// LeCun normal: `N(0, 1 / fan_in)`.
    LecunNormal,
}

impl Init {
    /// All initialisers.
    pub const ALL: [Init; 3] = [Init::GlorotUniform, Init::HeNormal, Init::LecunNormal];

    /// The name [`Init::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Init::GlorotUniform => "glorot",
            Init::HeNormal => "he",
            Init::LecunNormal => "lecun",
        }
    }

    /// The distribution, for a layer with `fan_in` inputs and `fan_out` outputs.
    pub fn describe(self, fan_in: usize, fan_out: usize) -> String {
        match self {
            Init::GlorotUniform => format!(
                "Glorot/Xavier uniform U(-a, a), a = sqrt(6 / ({fan_in} + {fan_out})) = {:.4}",
                glorot_limit(fan_in, fan_out)
            ),
            Init::HeNormal => format!(
                "He normal N(0, 2 / {fan_in}), std {:.4}",
                (2.0 / fan_in as f64).sqrt()
            ),
            Init::LecunNormal => format!(
                "LeCun normal N(0, 1 / {fan_in}), std {:.4}",
                (1.0 / fan_in as f64).sqrt()
            ),
        }
    }

    /// `glorot` (or `xavier`), `he` (or `kaiming`), `lecun`; the long names
    /// (`glorot-uniform`, `he-normal`, ...) too.
    pub fn parse(s: &str) -> Result<Init> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "glorot" | "xavier" | "glorot-uniform" | "xavier-uniform" => Init::GlorotUniform,
            "he" | "kaiming" | "he-normal" | "kaiming-normal" => Init::HeNormal,
            "lecun" | "lecun-normal" => Init::LecunNormal,
            other => bail!("unknown initialiser '{other}' (glorot, he or lecun)"),
        })
    }

    /// `n` weights of a layer with `fan_in` inputs and `fan_out` outputs.
    pub fn sample(self, rng: &mut Rng, fan_in: usize, fan_out: usize, n: usize) -> Vec<f32> {
        match self {
            Init::GlorotUniform => glorot_uniform(rng, fan_in, fan_out, n),
            Init::HeNormal => he_normal(rng, fan_in, n),
            Init::LecunNormal => lecun_normal(rng, fan_in, n),
        }
    }
}

fn glorot_limit(fan_in: usize, fan_out: usize) -> f64 {
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}

/// `n` Glorot/Xavier-uniform weights: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))`
/// (variance `2 / (fan_in + fan_out)`).
pub fn glorot_uniform(rng: &mut Rng, fan_in: usize, fan_out: usize, n: usize) -> Vec<f32> {
    let a = glorot_limit(fan_in, fan_out) as f32;
    (0..n).map(|_| rng.uniform_range(-a, a)).collect()
}

/// `n` LeCun-normal weights: `N(0, 1 / fan_in)`.
pub fn lecun_normal(rng: &mut Rng, fan_in: usize, n: usize) -> Vec<f32> {
    let std = (1.0 / fan_in as f64).sqrt() as f32;
    (0..n).map(|_| rng.normal() * std).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(w: &[f32]) -> (f64, f64) {
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn variances_match_the_definitions() {
        let (fan_in, fan_out, n) = (300, 100, 200_000);
        // expected variances from the definitions: Glorot a^2 / 3 = 2 / (fan_in + fan_out),
        // He 2 / fan_in, LeCun 1 / fan_in
        let expected = [2.0 / 400.0, 2.0 / 300.0, 1.0 / 300.0];
        for (init, want) in Init::ALL.into_iter().zip(expected) {
            let w = init.sample(&mut Rng::new(5), fan_in, fan_out, n);
            assert_eq!(w.len(), n);
            let (mean, var) = mean_var(&w);
            // within 5 standard errors of the mean (sqrt(var / n))
            assert!(
                mean.abs() < 5.0 * (want / n as f64).sqrt(),
                "{init:?} mean {mean}"
            );
            // the sample variance is within ~1% (3 standard errors of sqrt(2 / n) = 0.3%)
            assert!(
                (var - want).abs() < 0.02 * want,
                "{init:?} var {var} vs {want}"
            );
        }
        let a = (6.0f32 / 400.0).sqrt();
        let w = glorot_uniform(&mut Rng::new(1), fan_in, fan_out, 10_000);
        assert!(w.iter().all(|v| v.abs() <= a));
    }

    #[test]
    fn seeded_and_parsed() {
        for init in Init::ALL {
            assert_eq!(Init::parse(init.name()).unwrap(), init);
            let a = init.sample(&mut Rng::new(9), 4, 3, 12);
            let b = init.sample(&mut Rng::new(9), 4, 3, 12);
            assert_eq!(a, b);
            assert!(!init.describe(4, 3).is_empty());
        }
        assert_eq!(Init::parse("Xavier").unwrap(), Init::GlorotUniform);
        assert!(Init::parse("orthogonal").is_err());
    }
}
