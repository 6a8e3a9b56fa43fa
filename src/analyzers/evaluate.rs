//! Which analyzer to trust: region perturbation (Samek et al. 2017) with
//! the area over the perturbation curve, and the cascading model
//! randomisation check (Adebayo et al. 2018).
//!
//! Region perturbation cuts the model input tensor into `patch x patch`
//! squares (the last row and column may be smaller), scores each square by
//! the sum of the map's relevance over its pixels and channels, and replaces
//! the squares one more per step in the order of the scores (most relevant
//! first, MoRF; least relevant first, LeRF; or a seeded random order), all
//! channels at once. The curve is the explained class's logit after each
//! step, `f(x_0) .. f(x_L)`, and `AOPC = 1/(L+1) sum_k (f(x_0) - f(x_k))`
//! (Samek et al. 2017, eq. 12).

use anyhow::{ensure, Result};
use ndarray::{ArrayD, Axis};
use rayon::prelude::*;

use crate::analyzers::Analyzer;
use crate::model::Model;
use crate::preprocess::{Layout, Normalization};
use crate::rng::Rng;

/// What replaces a perturbed patch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Perturb {
    /// Each value uniform in its channel's valid range `[(0 - mean) / std,
    /// (1 - mean) / std]`, seeded.
    #[default]
    Noise,
    /// 0 in the normalised space (the dataset mean).
    Mean,
    /// The patch of a Gaussian-blurred copy of the input (sigma = patch / 2).
    Blur,
}

impl std::str::FromStr for Perturb {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "noise" => Ok(Perturb::Noise),
            "mean" => Ok(Perturb::Mean),
            "blur" => Ok(Perturb::Blur),
            other => Err(format!("'{other}': expected noise, mean or blur")),
        }
    }
}

/// How to perturb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perturbation {
    /// Side of a patch in pixels (>= 1).
    pub patch: usize,
    /// Patches perturbed, one more per step (>= 1; at most the number of
    /// patches).
    pub steps: usize,
    /// What replaces a patch.
    pub mode: Perturb,
    /// Seed of the noise and of the random order.
    pub seed: u64,
    /// Perturbed copies run through one forward pass (1: one at a time,
    /// in parallel); the curves do not depend on it.
    pub batch: usize,
}

impl Default for Perturbation {
    fn default() -> Self {
        Perturbation {
            patch: 8,
            steps: 100,
            mode: Perturb::Noise,
            seed: 0,
            batch: DEFAULT_BATCH,
        }
    }
}

/// Perturbed copies per forward pass by default: 1, copies in parallel.
/// Measured on the bundled model (one photo, z-plus, 100 steps): 5.96 s at
/// batch 1, 6.45 s at 2, 6.13 s at 4, 7.18 s at 8, as the native kernels
/// run the images of a batch one after the other; wider kernels are for the
/// speed issue.
pub const DEFAULT_BATCH: usize = 1;

/// The squares of an `h x w` input of side `patch`, row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patches {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Side of a patch.
    pub patch: usize,
}

impl Patches {
    /// Rows and columns of patches.
    pub fn grid(&self) -> (usize, usize) {
        (self.h.div_ceil(self.patch), self.w.div_ceil(self.patch))
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        let (r, c) = self.grid();
        r * c
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The patch of pixel `(y, x)`.
    pub fn of(&self, y: usize, x: usize) -> usize {
        (y / self.patch) * self.grid().1 + x / self.patch
    }
}

/// Height and width axes of a model input of `layout` (`[N, C, H, W]` or
/// `[N, H, W, C]`) and its channel axis.
fn axes(layout: Layout) -> (usize, usize, usize) {
    match layout {
        Layout::Nchw => (2, 3, 1),
        Layout::Nhwc => (1, 2, 3),
    }
}

/// The patches of a model input tensor of `shape` in `layout`.
pub fn patches(shape: &[usize], layout: Layout, patch: usize) -> Result<Patches> {
    ensure!(
        shape.len() == 4,
        "region perturbation needs a 4-D image input, got {shape:?}"
    );
    ensure!(patch >= 1, "patch must be at least 1 pixel");
    let (ha, wa, _) = axes(layout);
    Ok(Patches {
        h: shape[ha],
        w: shape[wa],
        patch,
    })
}

/// Each patch's score: the sum of `relevance` (the model input's layout)
/// over its pixels and channels.
pub fn scores(relevance: &ArrayD<f32>, layout: Layout, p: &Patches) -> Vec<f64> {
    let (ha, wa, _) = axes(layout);
    let mut s = vec![0f64; p.len()];
    for (ix, &v) in relevance.indexed_iter() {
        s[p.of(ix[ha], ix[wa])] += v as f64;
    }
    s
}

/// Patch indices by decreasing score (`most_first`, MoRF) or increasing
/// score (LeRF), ties by patch index.
pub fn order(scores: &[f64], most_first: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        let c = scores[a].total_cmp(&scores[b]);
        let c = if most_first { c.reverse() } else { c };
        c.then(a.cmp(&b))
    });
    idx
}

/// A seeded random order of `n` patches (Fisher-Yates).
pub fn random_order(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_0DE5);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// What replaces each value of `x` when its patch is perturbed.
pub fn replacement(
    x: &ArrayD<f32>,
    layout: Layout,
    norm: &Normalization,
    spec: &Perturbation,
) -> ArrayD<f32> {
    let (ha, wa, ca) = axes(layout);
    match spec.mode {
        Perturb::Mean => ArrayD::zeros(x.raw_dim()),
        Perturb::Noise => {
            let (lo, hi) = norm.bounds();
            let channels = x.shape()[ca];
            let mut rng = Rng::new(spec.seed);
            // in memory order, so the same seed gives the same noise
            let mut out = ArrayD::zeros(x.raw_dim());
            for (ix, v) in out.indexed_iter_mut() {
                let c = if channels == 3 { ix[ca] } else { 0 };
                *v = rng.uniform_range(lo[c], hi[c]);
            }
            out
        }
        Perturb::Blur => blur(x, ha, wa, spec.patch as f32 / 2.0),
    }
}

/// `x` blurred along axes `ha` and `wa` by a Gaussian of `sigma` (kernel
/// radius 3 sigma, edges clamped).
fn blur(x: &ArrayD<f32>, ha: usize, wa: usize, sigma: f32) -> ArrayD<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / total).collect();
    let pass = |a: &ArrayD<f32>, axis: usize| -> ArrayD<f32> {
        let n = a.shape()[axis] as isize;
        let mut out = ArrayD::zeros(a.raw_dim());
        for (mut o, lane) in out
            .lanes_mut(Axis(axis))
            .into_iter()
            .zip(a.lanes(Axis(axis)))
        {
            for i in 0..n {
                let mut s = 0.0;
                for (t, w) in k.iter().enumerate() {
                    let j = (i + t as isize - radius).clamp(0, n - 1);
                    s += w * lane[j as usize];
                }
                o[i as usize] = s;
            }
        }
        out
    };
    pass(&pass(x, ha), wa)
}

/// The curve `f(x_0) .. f(x_steps)` of `class`: `x_k` is `x` with the first
/// `k` patches of `order` replaced by `with`. The forward passes run in
/// parallel; the numbers do not depend on how many.
#[allow(clippy::too_many_arguments)]
pub fn curve(
    model: &Model,
    x: &ArrayD<f32>,
    class: usize,
    layout: Layout,
    patches: &Patches,
    order: &[usize],
    with: &ArrayD<f32>,
    steps: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    ensure!(
        steps <= order.len(),
        "steps ({steps}) must be at most the number of patches ({})",
        order.len()
    );
    let (ha, wa, _) = axes(layout);
    // the step at which each patch is replaced (usize::MAX: never)
    let mut when = vec![usize::MAX; patches.len()];
    for (k, &p) in order.iter().take(steps).enumerate() {
        when[p] = k + 1;
    }
    // the step of each element, in the standard layout of `x`
    let x = x.as_standard_layout().into_owned();
    let with = with.as_standard_layout().into_owned();
    let step_of: Vec<usize> = x
        .indexed_iter()
        .map(|(ix, _)| when[patches.of(ix[ha], ix[wa])])
        .collect();
    let (xs, ws) = (
        x.as_slice().expect("standard layout"),
        with.as_slice().expect("standard layout"),
    );
    let copies: Vec<ArrayD<f32>> = (0..=steps)
        .into_par_iter()
        .map(|k| {
            let v: Vec<f32> = (xs.iter().zip(ws).zip(&step_of))
                .map(|((&x, &w), &s)| if s <= k { w } else { x })
                .collect();
            Ok(ArrayD::from_shape_vec(x.raw_dim(), v)?)
        })
        .collect::<Result<_>>()?;
    let logits = model.logits_of(&copies, batch)?;
    Ok(logits.iter().map(|l| l[class]).collect())
}

/// `AOPC = 1/(L+1) sum_k (f(x_0) - f(x_k))` of a curve of `L + 1` points.
pub fn aopc(curve: &[f32]) -> f64 {
    let Some(&f0) = curve.first() else {
        return 0.0;
    };
    curve.iter().map(|&f| (f0 - f) as f64).sum::<f64>() / curve.len() as f64
}

/// The three curves of one map.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Curves {
    /// Most relevant first.
    pub morf: Vec<f32>,
    /// Least relevant first.
    pub lerf: Vec<f32>,
}

/// MoRF and LeRF curves of the map `relevance` of `class` at input `x`.
pub fn region_perturbation(
    model: &Model,
    x: &ArrayD<f32>,
    class: usize,
    relevance: &ArrayD<f32>,
    norm: &Normalization,
    spec: &Perturbation,
) -> Result<Curves> {
    let layout = model.input.layout;
    let p = patches(x.shape(), layout, spec.patch)?;
    let s = scores(relevance, layout, &p);
    let with = replacement(x, layout, norm, spec);
    let run = |most_first| {
        curve(
            model,
            x,
            class,
            layout,
            &p,
            &order(&s, most_first),
            &with,
            spec.steps,
            spec.batch,
        )
    };
    Ok(Curves {
        morf: run(true)?,
        lerf: run(false)?,
    })
}

/// The curve of the seeded random order (the baseline; it does not depend
/// on the analyzer).
pub fn random_curve(
    model: &Model,
    x: &ArrayD<f32>,
    class: usize,
    norm: &Normalization,
    spec: &Perturbation,
) -> Result<Vec<f32>> {
    let layout = model.input.layout;
    let p = patches(x.shape(), layout, spec.patch)?;
    let with = replacement(x, layout, norm, spec);
    let o = random_order(p.len(), spec.seed);
    curve(
        model, x, class, layout, &p, &o, &with, spec.steps, spec.batch,
    )
}

/// Ranks of `v` (1-based, ties get the mean of their ranks).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of `a` and `b` (Pearson's on the ranks,
/// ties averaged); 0 when either is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len().min(rb.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// `|R|` summed over the channels, per pixel (the map the randomisation
/// check compares).
fn magnitude(relevance: &ArrayD<f32>, layout: Layout) -> Vec<f64> {
    let (_, _, ca) = axes(layout);
    relevance
        .mapv(|v| v.abs() as f64)
        .sum_axis(Axis(ca))
        .iter()
        .copied()
        .collect()
}

/// One step of the randomisation check: the linear layer whose weights were
/// replaced last, and the map's Spearman correlation with the original.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RandomizedLayer {
    /// The node whose weights were replaced last (all above it are too).
    pub layer: String,
    /// Spearman rank correlation of `|R|` summed over channels with the map
    /// of the trained model.
    pub spearman: f64,
}

/// Cascading parameter randomisation (Adebayo et al. 2018): the linear
/// layers' weights (and biases) are replaced, from the output layer
/// downwards, one layer more at each step, by He-normal weights of the same
/// shape (seeded); after each step `analyzer` explains `class` at `x` again
/// and the map is compared with `original`.
pub fn randomization(
    model: &Model,
    analyzer: &Analyzer,
    x: &ArrayD<f32>,
    class: usize,
    norm: &Normalization,
    original: &ArrayD<f32>,
    seed: u64,
) -> Result<Vec<RandomizedLayer>> {
    let layout = model.input.layout;
    let want = magnitude(original, layout);
    let mut graph = model.graph.clone();
    let layers: Vec<usize> = (0..graph.nodes.len())
        .rev()
        .filter(|&i| graph.nodes[i].op.linear().is_some())
        .collect();
    let mut rng = Rng::new(seed ^ 0x0ADE_BA70);
    let mut out = Vec::new();
    for i in layers {
        randomize(&mut graph.nodes[i].op, &mut rng);
        let m = model.with_graph(graph.clone())?;
        let fwd = m.forward(x.clone())?;
        let e = analyzer.explain(&m, &fwd, class, norm)?;
        out.push(RandomizedLayer {
            layer: graph.nodes[i].name.clone(),
            spearman: spearman(&magnitude(&e.relevance, layout), &want),
        });
    }
    Ok(out)
}

/// He-normal weights of the same shape for a linear layer (fan-in: all but
/// the first axis of a conv's weights, the input features of a dense
/// layer), zero biases.
fn randomize(op: &mut crate::ops::Op, rng: &mut Rng) {
    // not linear layers: nothing to randomise (the caller picks linear
    // layers only)
    if op.linear().is_none() {
        return;
    }
    let Some(p) = op.get_mut().parameters_mut() else {
        return;
    };
    let std = (2.0 / p.fan_in.max(1) as f32).sqrt();
    p.weight.mapv_inplace(|_| rng.normal() * std);
    if let Some(b) = p.bias {
        b.fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn ix4(a: usize, b: usize, c: usize, d: usize) -> IxDyn {
        IxDyn(&[a, b, c, d])
    }

    #[test]
    fn patches_scores_and_orders_follow_the_definitions() {
        // a 5x5 input with patches of 2: 3x3 patches, the last row and
        // column 1 pixel wide
        let p = patches(&[1, 3, 5, 5], Layout::Nchw, 2).unwrap();
        assert_eq!((p.grid(), p.len()), ((3, 3), 9));
        assert_eq!((p.of(0, 0), p.of(1, 3), p.of(4, 4)), (0, 1, 8));
        let mut r = ArrayD::<f32>::zeros(vec![1, 3, 5, 5]);
        r[ix4(0, 0, 4, 4)] = 2.0; // patch 8
        r[ix4(0, 2, 4, 4)] = 1.0; // patch 8, another channel
        r[ix4(0, 1, 0, 3)] = 5.0; // patch 1
        r[ix4(0, 0, 2, 0)] = -1.0; // patch 3
        let s = scores(&r, Layout::Nchw, &p);
        assert_eq!(s, vec![0.0, 5.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 3.0]);
        // ties by patch index, both ways
        assert_eq!(order(&s, true), vec![1, 8, 0, 2, 4, 5, 6, 7, 3]);
        assert_eq!(order(&s, false), vec![3, 0, 2, 4, 5, 6, 7, 8, 1]);
        let o = random_order(9, 7);
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>());
        assert_eq!(o, random_order(9, 7), "seeded");
        assert_ne!(o, random_order(9, 8));
    }

    #[test]
    fn aopc_and_spearman_on_known_values() {
        // f = 4, 2, 1: (0 + 2 + 3) / 3
        assert!((aopc(&[4.0, 2.0, 1.0]) - 5.0 / 3.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        // ties averaged: ranks [1.5, 1.5, 3] and [1, 2, 3]
        let r = spearman(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn replacements_stay_in_range_and_blur_keeps_a_constant() {
        let norm = Normalization::default();
        let x = ArrayD::<f32>::from_elem(vec![1, 3, 6, 6], 0.5);
        let spec = Perturbation {
            patch: 2,
            steps: 3,
            mode: Perturb::Noise,
            seed: 3,
            batch: 1,
        };
        let n = replacement(&x, Layout::Nchw, &norm, &spec);
        let (lo, hi) = norm.bounds();
        for (ix, &v) in n.indexed_iter() {
            assert!(v >= lo[ix[1]] && v < hi[ix[1]], "{v}");
        }
        assert_eq!(n, replacement(&x, Layout::Nchw, &norm, &spec), "seeded");
        let b = replacement(
            &x,
            Layout::Nchw,
            &norm,
            &Perturbation {
                mode: Perturb::Blur,
                ..spec
            },
        );
        assert!(b.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        let m = replacement(
            &x,
            Layout::Nchw,
            &norm,
            &Perturbation {
                mode: Perturb::Mean,
                ..spec
            },
        );
        assert!(m.iter().all(|&v| v == 0.0));
    }
}
