//! The printed worked example (`lrp-heatmap demo`, `cargo run --example deep_taylor`).

use std::io::Write;

use anyhow::{ensure, Result};

use super::{sample, sum, tolerance, Layers, TinyNet};
use crate::init::Init;
use lrp_heatmap::composite::{Composite, RuleParams};

/// What the worked example draws.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoConfig {
    /// Initialiser of the weights.
    pub init: Init,
    /// Seed of the weights and inputs.
    pub seed: u64,
    /// Number of inputs `x_i`.
    pub inputs: usize,
    /// Number of hidden ReLU units `x_j`.
    pub hidden: usize,
    /// The bias `b_j` of every unit in the "biases" case.
    pub bias: f32,
    /// The epsilon of the "large epsilon" case.
    pub epsilon: f32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            init: Init::HeNormal,
            seed: 0,
            inputs: 6,
            hidden: 4,
            bias: 0.2,
            epsilon: 1.0,
        }
    }
}

/// The epsilons of the sweep printed in the "large epsilon" case.
const EPSILONS: [f32; 6] = [1e-6, 1e-3, 1e-2, 0.1, 1.0, 10.0];

fn composite(name: &str, epsilon: f32) -> Result<Composite> {
    let params = RuleParams {
        epsilon,
        ..RuleParams::default()
    };
    Ok(Composite::from_name(name, &params)?)
}

fn table(out: &mut dyn Write, l: &Layers) -> Result<()> {
    writeln!(out, "  output    k        x_k        R_k")?;
    writeln!(out, "            0 {:>10.6} {:>10.6}", l.f, l.r_out)?;
    writeln!(out, "  hidden    j        z_j        x_j        R_j")?;
    for j in 0..l.z.len() {
        writeln!(
            out,
            "          {j:>3} {:>10.6} {:>10.6} {:>10.6}",
            l.z[j], l.h[j], l.r_hidden[j]
        )?;
    }
    writeln!(
        out,
        "          sum            {:>10.6} {:>10.6}",
        sum(&l.h),
        sum(&l.r_hidden)
    )?;
    writeln!(out, "  input     i        x_i        R_i")?;
    for i in 0..l.x.len() {
        writeln!(
            out,
            "          {i:>3} {:>10.6} {:>10.6}",
            l.x[i], l.r_input[i]
        )?;
    }
    writeln!(
        out,
        "          sum {:>10.6} {:>10.6}",
        sum(&l.x),
        sum(&l.r_input)
    )?;
    Ok(())
}

fn verdicts(out: &mut dyn Write, l: &Layers) -> Result<()> {
    let (si, sj, sk) = l.sums();
    writeln!(
        out,
        "  conservation {}: sum_i R_i = {si:.6}, sum_j R_j = {sj:.6}, R_k = f(x) = {sk:.6} \
         (largest |sum - f(x)| = {:.1e}, tolerance {:.1e})",
        if l.conserves() { "holds" } else { "FAILS" },
        l.conservation_error(),
        tolerance(l.f)
    )?;
    let min = |v: &[f32]| v.iter().copied().fold(f32::INFINITY, f32::min);
    let negative: Vec<f32> = l
        .r_input
        .iter()
        .chain(&l.r_hidden)
        .copied()
        .filter(|&v| v < 0.0)
        .collect();
    if negative.is_empty() {
        writeln!(
            out,
            "  positivity   holds: min R_j = {:.6}, min R_i = {:.6}",
            min(&l.r_hidden),
            min(&l.r_input)
        )?;
    } else {
        writeln!(
            out,
            "  positivity   FAILS: {} negative relevances, min R_j = {:.6}, min R_i = {:.6}, \
             their sum {:.6}",
            negative.len(),
            min(&l.r_hidden),
            min(&l.r_input),
            sum(&negative)
        )?;
    }
    Ok(())
}

fn case(
    out: &mut dyn Write,
    title: &str,
    net: &TinyNet,
    x: &[f32],
    c: &Composite,
) -> Result<Layers> {
    writeln!(out, "\n== {title}")?;
    let l = net.explain(x, c)?;
    table(out, &l)?;
    verdicts(out, &l)?;
    Ok(l)
}

fn ratio(l: &Layers) -> f64 {
    if l.f == 0.0 {
        0.0
    } else {
        sum(&l.r_input) / l.f as f64
    }
}

/// Prints the worked example: the network, then one table per layer and the
/// conservation and positivity verdicts for the deep Taylor rules and for
/// what breaks them, and a summary.
pub fn report(cfg: &DemoConfig, out: &mut dyn Write) -> Result<()> {
    ensure!(
        (1..=64).contains(&cfg.inputs) && (1..=64).contains(&cfg.hidden),
        "--inputs and --hidden must be between 1 and 64"
    );
    ensure!(
        cfg.bias.is_finite(),
        "--bias must be a finite number, got {}",
        cfg.bias
    );
    ensure!(
        cfg.epsilon.is_finite() && cfg.epsilon > 0.0,
        "--epsilon must be a finite number > 0, got {}",
        cfg.epsilon
    );
    let (ni, nj) = (cfg.inputs, cfg.hidden);
    let (net, x) = sample(cfg.init, cfg.seed, ni, nj)?;
    writeln!(
        out,
        "Deep Taylor decomposition, worked example (Montavon et al., Pattern Recognition 65, 2017)"
    )?;
    writeln!(
        out,
        "network: {ni} inputs x_i -> {nj} ReLU units x_j = max(0, sum_i x_i w_ij + b_j) -> \
         sum pooling x_k = f(x) = sum_j x_j"
    )?;
    writeln!(
        out,
        "weights: {}, seed {}; inputs x_i ~ U(0, 1); b_j = 0 unless stated",
        cfg.init.describe(ni, nj),
        cfg.seed
    )?;
    writeln!(
        out,
        "relevance: the library's backward walk and rules, one composite per case"
    )?;
    write!(out, "\nw_ij     ")?;
    for j in 0..nj {
        write!(out, " {:>9}", format!("j={j}"))?;
    }
    writeln!(out)?;
    for i in 0..ni {
        write!(out, "  i={i:<4} ")?;
        for j in 0..nj {
            write!(out, " {:>9.4}", net.w(i, j))?;
        }
        writeln!(out)?;
    }

    let dt = case(
        out,
        "1. deep Taylor: w^2 rule on the ReLU layer, z+ (proportional) on the sum pooling \
         [composite deep-taylor]",
        &net,
        &x,
        &composite("deep-taylor", 1e-6)?,
    )?;
    writeln!(
        out,
        "  why: R_j = x_j (each unit's share of the sum); R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j \
         hands each R_j >= 0 out in shares that sum to 1."
    )?;

    let zp = case(
        out,
        "2. z+ rule on both layers, the deep Taylor rule for inputs x_i >= 0 [composite zplus]",
        &net,
        &x,
        &composite("zplus", 1e-6)?,
    )?;
    writeln!(
        out,
        "  why: R_i = sum_j x_i w_ij^+ / sum_i' x_i' w_i'j^+ R_j counts positive contributions \
         only; an active unit (z_j > 0) always has one, so nothing is lost."
    )?;

    let biased = net.with_bias(cfg.bias);
    let bi = case(
        out,
        &format!(
            "3. what breaks conservation: biases b_j = {} with the z-rule (LRP-0, bias in the \
             denominator) [composite lrp0]",
            cfg.bias
        ),
        &biased,
        &x,
        &composite("lrp0", 1e-6)?,
    )?;
    let active = bi.active();
    let share: f64 = active.iter().map(|&j| biased.b(j) as f64).sum();
    writeln!(
        out,
        "  why: unit j keeps the share b_j / z_j of R_j = z_j, that is b_j itself (a negative \
         b_j creates relevance instead): f(x) - sum_i R_i = {:.6}, sum of b_j over the {} active units = {share:.6}",
        bi.f as f64 - sum(&bi.r_input),
        active.len()
    )?;
    let w2 = biased.explain(&x, &composite("deep-taylor", 1e-6)?)?;
    writeln!(
        out,
        "  (w^2 on the same biased network: sum_i R_i = {:.6}, f(x) = {:.6}: its root point \
         x - z_j w_j / |w_j|^2 puts the bias on the inputs.)",
        sum(&w2.r_input),
        w2.f
    )?;

    let z0 = case(
        out,
        "4. what breaks positivity: negative weights with the z-rule (LRP-0) instead of w^2, \
         b_j = 0 [composite lrp0]",
        &net,
        &x,
        &composite("lrp0", 1e-6)?,
    )?;
    let abs = net
        .map_weights(f32::abs)
        .explain(&x, &composite("lrp0", 1e-6)?)?;
    writeln!(
        out,
        "  why: with R_j = z_j the denominators cancel: R_i = x_i sum_(j active) w_ij (input times \
         gradient), so x_i > 0 times a negative weight gives negative relevance. \
         The same rule with |w_ij|: min R_i = {:.6}.",
        abs.r_input.iter().copied().fold(f32::INFINITY, f32::min)
    )?;

    let eps = cfg.epsilon;
    let ep = case(
        out,
        &format!("5. what breaks conservation: a large epsilon = {eps} on both layers [composite epsilon]"),
        &net,
        &x,
        &composite("epsilon", eps)?,
    )?;
    let f = ep.f as f64;
    writeln!(
        out,
        "  why: a layer passes on z_j / (z_j + eps) of what unit j receives: sum_j R_j = \
         f^2 / (f + eps) = {:.6}, and the ReLU layer loses again.",
        f * f / (f + eps as f64)
    )?;
    write!(out, "  sum_i R_i / f(x) for epsilon")?;
    for e in EPSILONS {
        let l = net.explain(&x, &composite("epsilon", e)?)?;
        write!(out, "  {e}: {:.4}", ratio(&l))?;
    }
    writeln!(out)?;

    writeln!(
        out,
        "\nsummary                           conserved  positive  sum_i R_i / f(x)"
    )?;
    let rows: [(&str, &Layers); 5] = [
        ("1. deep Taylor (w^2, z+)", &dt),
        ("2. z+", &zp),
        ("3. biases, z-rule", &bi),
        ("4. negative weights, z-rule", &z0),
        ("5. large epsilon", &ep),
    ];
    let yes = |b: bool| if b { "yes" } else { "no" };
    for (name, l) in rows {
        writeln!(
            out,
            "  {name:<32} {:<10} {:<9} {:.6}",
            yes(l.conserves()),
            yes(l.positive()),
            ratio(l)
        )?;
    }
    if dt.f == 0.0 {
        writeln!(
            out,
            "note: no hidden unit is active for this seed (f(x) = 0): every relevance is 0; try another --seed"
        )?;
    }
    Ok(())
}
