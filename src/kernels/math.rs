//! Elementary functions in `f32` that the compiler vectorises (no calls
//! into libm in the loops): `exp` and the exact (erf) GELU, for softmax and
//! GELU over whole tensors.

/// `e^x` to within 2 ulp over the range where it is a normal `f32`
/// (Cody-Waite range reduction `x = n ln 2 + r`, |r| <= ln 2 / 2, a degree-6
/// polynomial for `e^r`, `2^n` set in the exponent bits); 0 below -87.3,
/// infinity above 88.7, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that
    // n * LN2_HI is exact for |n| <= 128 (Cephes' constants)
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.336_55, 88.722_83);
    let n = (xc * LOG2E).round();
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k!, enough below |r| <= 0.347 for f32
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n in two halves, so that n = -127 .. 128 stay finite and normal
    let n = n as i32;
    let half = n / 2;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x.is_nan() {
        x
    } else if x > 88.722_83 {
        f32::INFINITY
    } else if x < -87.336_55 {
        0.0
    } else {
        y
    }
}

/// Numerical Recipes' `erfcc` Chebyshev fit of `erfc(x)` (fractional error
/// below 1.2e-7): `erfc(|x|) = t e^arg`, returned as `(t, arg)`; the one
/// fit behind this module's [`erfc`] and the `f64` activations'.
#[inline(always)]
pub fn erfc_fit(x: f64) -> (f64, f64) {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    (t, -z * z + poly)
}

/// `erfc(x)` (in `f64`, computed to `f32` precision) with a fractional
/// error below 1.2e-7 (Numerical Recipes'
/// `erfcc` Chebyshev fit, the one the `f64` activations use). The exponent
/// `-z^2 + P(t)` is formed in `f64` (in `f32` its rounding alone would cost
/// 1e-6 of the result at z = 3), then split into an `f32` part for [`exp`]
/// and the small rest, `e^lo = 1 + lo`.
#[inline(always)]
pub fn erfc(x: f64) -> f64 {
    let (t, arg) = erfc_fit(x);
    let hi = arg as f32;
    let lo = arg - hi as f64;
    let r = t * exp(hi) as f64 * (1.0 + lo);
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The exact GELU `x Phi(x) = x erfc(-x / sqrt 2) / 2` (the argument
/// scaled in `f64`: its `f32` rounding would cost 4e-6 of the result at
/// x = -8, where erfc falls steeply).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let xd = x as f64;
    (0.5 * xd * erfc(-xd * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

/// Defines `$name(args)` that runs `$body` compiled for AVX-512F, for
/// AVX2 + FMA or for the baseline, chosen at run time (the same operations
/// in each: no fused multiply-adds are formed, so the results are the same
/// bits on every path; the tests compare them).
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn wide($($arg: $ty),*) $body
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { wide($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2($($arg: $ty),*) $body
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            baseline($($arg),*);
            fn baseline($($arg: $ty),*) $body
        }
    };
}

/// Which instruction set [`gelu_in_place`] and [`softmax_row`] use here.
#[cfg(test)]
fn path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "baseline"
}

multiversion! {
    /// [`gelu`] of every value of `x`, in place.
    fn gelu_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu(*v);
        }
    }
}

multiversion! {
    /// `softmax(x)` into `out` (of the same length): the maximum
    /// subtracted, so it never overflows.
    fn softmax_row(x: &[f32], out: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp(v - max);
            sum += *o;
        }
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place.
    fn ulps(a: f32, b: f32) -> f64 {
        ((a as f64 - b as f64) / (b.abs().max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64))
            .abs()
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp(x), (x as f64).exp() as f32));
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn gelu_equals_the_f64_definition_to_float_precision() {
        // gelu(1) = Phi(1) = 0.841344746068543, gelu(-1) = Phi(1) - 1; then
        // against x Phi(x) from an independent f64 erfc (below)
        assert!((gelu(1.0) - 0.841_344_7).abs() < 2e-7);
        assert!((gelu(-1.0) + 0.158_655_25).abs() < 2e-7);
        let mut x = -12.0f32;
        while x < 12.0 {
            let xd = x as f64;
            // erfc by its continued integral: use the f64 series of erf
            let want = 0.5 * xd * erfc64(-xd / std::f64::consts::SQRT_2);
            let got = gelu(x) as f64;
            assert!(
                (got - want).abs() <= 3e-7 * want.abs() + 1e-20,
                "{x}: {got} {want}"
            );
            x += 0.0173;
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // the baseline loop against the one chosen here (AVX-512F or AVX2 on
        // the machines we run on): the same operations, the same results
        let x: Vec<f32> = (0..4099)
            .map(|i| (i as f32 * 0.013_7).sin() * 9.0 - 0.5)
            .collect();
        let mut fast = x.clone();
        gelu_in_place(&mut fast);
        let slow: Vec<f32> = x.iter().map(|&v| gelu(v)).collect();
        assert_eq!(fast, slow, "gelu on the {} path", path());
        let mut out = vec![0.0f32; x.len()];
        softmax_row(&x, &mut out);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = x.iter().map(|&v| exp(v - max)).collect();
        let sum: f32 = e.iter().sum();
        let want: Vec<f32> = e.iter().map(|&v| v * (1.0 / sum)).collect();
        assert_eq!(out, want, "softmax on the {} path", path());
    }

    /// erfc by erf's Taylor series (|x| < 3) or its continued fraction
    /// (beyond), in f64: an independent reference.
    fn erfc64(x: f64) -> f64 {
        let a = x.abs();
        let tail = if a < 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0f64);
            while term.abs() > 1e-18 * sum.abs() {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) / (a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        if x >= 0.0 {
            tail
        } else {
            2.0 - tail
        }
    }
}
