//! Dense layer passes with modified weights applied on the fly.
//!
//! A dense layer's weights are read once per pass and its input is a single
//! row per image, so its passes are bound by memory reads, not arithmetic:
//! applying `max(w, 0)` (or any [`Modifier`]) while reading costs nothing and
//! saves the copy of the weights that a GEMM would need. Rows of the transposed
//! pass whose incoming value is zero (most of them behind a ReLU) are skipped.

use rayon::prelude::*;

use super::linalg::{matmul, Mat};
use crate::rules::Modifier;

/// Rows from which the passes run as a GEMM on modified weights: above the
/// default batch's largest (16 images, one row each at a classifier), so
/// that a classifier gives the same numbers in a default batch as alone;
/// ConvNeXt's MLPs have 49 rows per image at their last stage.
pub const GEMM_ROWS: usize = 32;

/// `m(w)` for `w` `[m_out, k]`: `w` itself for the identity (the forward
/// pass, cached modified weights), else a copy.
fn modified(w: &[f32], m_out: usize, k: usize, m: Modifier) -> std::borrow::Cow<'_, [f32]> {
    let w = &w[..m_out * k];
    if m == Modifier::Identity {
        std::borrow::Cow::Borrowed(w)
    } else {
        std::borrow::Cow::Owned(w.par_iter().map(|&v| m.apply(v)).collect())
    }
}

/// `out[r, j] = sum_k m(w[j, k]) x[r, k]` for `w` `[m_out, k]`, `x` `[rows, k]`.
pub fn forward(w: &[f32], m_out: usize, k: usize, x: &[f32], rows: usize, m: Modifier) -> Vec<f32> {
    assert!(
        w.len() >= m_out * k && x.len() >= rows * k,
        "dense kernel slices too short"
    );
    let mut out = vec![0.0f32; rows * m_out];
    if rows >= GEMM_ROWS {
        let wm = modified(w, m_out, k, m);
        let (a, b) = (
            Mat::row_major(x, rows, k),
            Mat::row_major(&wm, m_out, k).t(),
        );
        matmul(&mut out, a, b, false, true);
        return out;
    }
    // one task per block of weight rows; each weight row is read once for all input rows
    let block = (m_out / (4 * rayon::current_num_threads().max(1))).clamp(1, 256);
    let mut by_j = vec![0.0f32; m_out * rows];
    by_j.par_chunks_mut(block * rows)
        .enumerate()
        .for_each(|(b, dst)| {
            for (i, d) in dst.chunks_mut(rows).enumerate() {
                let j = b * block + i;
                let wj = &w[j * k..(j + 1) * k];
                for (r, v) in d.iter_mut().enumerate() {
                    *v = dot(wj, &x[r * k..(r + 1) * k], m);
                }
            }
        });
    for j in 0..m_out {
        for r in 0..rows {
            out[r * m_out + j] = by_j[j * rows + r];
        }
    }
    out
}

/// `out[r, k] = sum_j m(w[j, k]) g[r, j]` for `w` `[m_out, k]`, `g` `[rows, m_out]`.
///
/// The live rows of `w` are split into one run per task; each task reads its
/// rows front to back (whole rows: one stream the prefetcher follows) into
/// its own `rows x k` sum, and the sums are added at the end.
pub fn transposed(
    w: &[f32],
    m_out: usize,
    k: usize,
    g: &[f32],
    rows: usize,
    m: Modifier,
) -> Vec<f32> {
    assert!(
        w.len() >= m_out * k && g.len() >= rows * m_out,
        "dense kernel slices too short"
    );
    if rows >= GEMM_ROWS {
        let wm = modified(w, m_out, k, m);
        let mut out = vec![0.0f32; rows * k];
        let (a, b) = (
            Mat::row_major(g, rows, m_out),
            Mat::row_major(&wm, m_out, k),
        );
        matmul(&mut out, a, b, false, true);
        return out;
    }
    // rows of w that matter for any input row
    let live: Vec<usize> = (0..m_out)
        .filter(|&j| (0..rows).any(|r| g[r * m_out + j] != 0.0))
        .collect();
    let tasks = (2 * rayon::current_num_threads()).clamp(1, live.len().max(1));
    let per = live.len().div_ceil(tasks).max(1);
    let sums: Vec<Vec<f32>> = live
        .par_chunks(per)
        .map(|js| {
            let mut acc = vec![0.0f32; rows * k];
            for &j in js {
                let wj = &w[j * k..(j + 1) * k];
                for r in 0..rows {
                    let s = g[r * m_out + j];
                    if s != 0.0 {
                        axpy(&mut acc[r * k..(r + 1) * k], s, wj, m);
                    }
                }
            }
            acc
        })
        .collect();
    let mut sums = sums.into_iter();
    let mut out = sums.next().unwrap_or_else(|| vec![0.0f32; rows * k]);
    for acc in sums {
        out.iter_mut().zip(&acc).for_each(|(o, a)| *o += a);
    }
    out
}

/// `sum_k m(w_k) x_k`.
fn dot(w: &[f32], x: &[f32], m: Modifier) -> f32 {
    match m {
        Modifier::Identity => dot_by(w, x, |v| v),
        Modifier::Pos => dot_by(w, x, |v| v.max(0.0)),
        Modifier::Neg => dot_by(w, x, |v| v.min(0.0)),
        m => dot_by(w, x, move |v| m.apply(v)),
    }
}

/// `acc += s * m(w)`.
fn axpy(acc: &mut [f32], s: f32, w: &[f32], m: Modifier) {
    match m {
        Modifier::Identity => axpy_by(acc, s, w, |v| v),
        Modifier::Pos => axpy_by(acc, s, w, |v| v.max(0.0)),
        Modifier::Neg => axpy_by(acc, s, w, |v| v.min(0.0)),
        m => axpy_by(acc, s, w, move |v| m.apply(v)),
    }
}

/// 32 independent partial sums (four vectors), so that the loop vectorises
/// and the additions do not wait for each other.
#[inline(always)]
fn dot_by(w: &[f32], x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 32];
    let (wc, xc) = (w.chunks_exact(32), x.chunks_exact(32));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for i in 0..32 {
            lanes[i] += f(a[i]) * b[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (a, b) in wr.iter().zip(xr) {
        sum += f(*a) * b;
    }
    sum
}

#[inline(always)]
fn axpy_by(acc: &mut [f32], s: f32, w: &[f32], f: impl Fn(f32) -> f32) {
    for (a, &v) in acc.iter_mut().zip(w) {
        *a += s * f(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_the_definition_for_every_modifier() {
        // two rows (the per-row kernels) and 37 (the GEMM path)
        for (m_out, k, rows) in [(37, 1029, 2), (23, 67, 37)] {
            check(m_out, k, rows);
        }
    }

    fn check(m_out: usize, k: usize, rows: usize) {
        let w: Vec<f32> = (0..m_out * k)
            .map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        // zeros in g exercise the skipped rows
        let g: Vec<f32> = (0..rows * m_out)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i % 5) as f32 - 2.0
                }
            })
            .collect();
        for m in [
            Modifier::Identity,
            Modifier::Pos,
            Modifier::Neg,
            Modifier::Square,
            Modifier::One,
            Modifier::GammaPos(0.25),
        ] {
            let z = forward(&w, m_out, k, &x, rows, m);
            let c = transposed(&w, m_out, k, &g, rows, m);
            for r in 0..rows {
                for j in 0..m_out {
                    let want: f64 = (0..k)
                        .map(|i| m.apply(w[j * k + i]) as f64 * x[r * k + i] as f64)
                        .sum();
                    let got = z[r * m_out + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{m:?} {got} {want}"
                    );
                }
                for i in 0..k {
                    let want: f64 = (0..m_out)
                        .map(|j| m.apply(w[j * k + i]) as f64 * g[r * m_out + j] as f64)
                        .sum();
                    let got = c[r * k + i] as f64;
                    assert!(
                        (got - want).abs() < 1e-3 * want.abs().max(1.0),
                        "{m:?} {got} {want}"
                    );
                }
            }
        }
    }
}
