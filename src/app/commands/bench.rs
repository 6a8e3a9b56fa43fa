//! `lrp-heatmap bench`: seconds per image of each analyzer and peak memory,
//! on a given model or on a generated full-size VGG16 (random He weights).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use ndarray::ArrayD;

use lrp_heatmap::analyzers::Analyzer;
use lrp_heatmap::engine::profile::{self, Phase};
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::Normalization;
use lrp_heatmap::rng::Rng;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Model file.
    pub model: PathBuf,
    /// Analyzers to time.
    pub analyzers: Vec<Analyzer>,
    /// Timed runs per analyzer (after one warm-up run).
    pub runs: usize,
    /// Per-node timings after each analyzer's row.
    pub layers: bool,
    /// Batch sizes at which to measure forward passes per second.
    pub batches: Vec<usize>,
}

/// Inputs per throughput measurement.
const THROUGHPUT_INPUTS: usize = 32;

/// Most rows of each per-node table.
const LAYER_ROWS: usize = 25;

/// Peak resident memory of this process so far, in bytes (Linux; 0 elsewhere).
pub fn peak_memory() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark, printing a table on `out`.
pub fn run_bench(cfg: &BenchConfig, out: &mut dyn Write) -> Result<()> {
    let path = cfg.model.clone();
    let t0 = Instant::now();
    let model = lrp_heatmap::guard::boundary(&format!("model {}", path.display()), || {
        Ok(Model::load(&path)?)
    });
    let model = model?;
    writeln!(
        out,
        "model loaded in {:.2} s, input {:?}, forward engine: {}",
        t0.elapsed().as_secs_f64(),
        model.input.shape,
        model.engine()
    )?;
    let norm = Normalization::default();
    let mut rng = Rng::new(7);
    let x = ArrayD::from_shape_simple_fn(model.input.shape.clone(), || rng.normal());
    writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>10}",
        "analyzer", "s/image", "forward s", "peak MB"
    )?;
    for a in &cfg.analyzers {
        // this analyzer's own forward passes (each runs the lean pass its
        // backward pass reads: they differ by analyzer)
        let (mut times, mut fwd_times) = (Vec::new(), Vec::new());
        for run in 0..=cfg.runs.max(1) {
            if run == 1 && cfg.layers {
                profile::enable();
            }
            let t = Instant::now();
            // the pass `explain` runs: what this analyzer reads, no more
            let fwd = a.forward(&model, x.clone(), &Default::default(), false)?;
            let tf = t.elapsed().as_secs_f64();
            let class = fwd.top_k(1)[0].0;
            let e = a.explain(&model, &fwd, class, &norm)?;
            std::hint::black_box(&e.relevance);
            if run > 0 {
                times.push(t.elapsed().as_secs_f64());
                fwd_times.push(tf);
            }
        }
        let fwd = median(fwd_times);
        writeln!(
            out,
            "{:<22} {:>12.4} {:>12.4} {:>10}",
            a.name(),
            median(times),
            fwd,
            peak_memory() / (1 << 20)
        )?;
        if cfg.layers {
            write_layers(&profile::take(), cfg.runs.max(1), out)?;
        }
    }
    if !cfg.batches.is_empty() {
        writeln!(
            out,
            "{:<22} {:>12} {:>12}",
            "logits-only pass", "forwards/s", "ms/forward"
        )?;
        // 32 distinct inputs (perturbed copies, as evaluate runs)
        let inputs: Vec<ArrayD<f32>> = (0..THROUGHPUT_INPUTS)
            .map(|_| ArrayD::from_shape_simple_fn(model.input.shape.clone(), || rng.normal()))
            .collect();
        for &b in &cfg.batches {
            let mut times = Vec::new();
            for run in 0..=cfg.runs.max(1) {
                let t = Instant::now();
                std::hint::black_box(model.logits_of(&inputs, b)?);
                if run > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            let per = median(times) / inputs.len() as f64;
            writeln!(
                out,
                "{:<22} {:>12.1} {:>12.3}",
                format!("batch {b}"),
                1.0 / per,
                1e3 * per
            )?;
        }
    }
    Ok(())
}

/// The per-node table of one analyzer: for each phase, the slowest nodes
/// (mean ms per image) with their share of the phase, the rest summed, and
/// the time by operator type.
fn write_layers(rows: &[profile::Row], runs: usize, out: &mut dyn Write) -> Result<()> {
    for phase in [Phase::Forward, Phase::Backward] {
        let mut mine: Vec<&profile::Row> = rows.iter().filter(|r| r.phase == phase).collect();
        let total: f64 = mine.iter().map(|r| r.time.total.as_secs_f64()).sum();
        if mine.is_empty() || total <= 0.0 {
            continue;
        }
        mine.sort_by_key(|r| std::cmp::Reverse(r.time.total));
        let ms = |s: f64| 1e3 * s / runs as f64;
        writeln!(
            out,
            "  {phase:?} pass: {:.2} ms per image over {} nodes",
            ms(total),
            mine.len()
        )?;
        writeln!(out, "    {:>9} {:>6}  {:<22} node", "ms", "share", "op")?;
        for r in mine.iter().take(LAYER_ROWS) {
            let s = r.time.total.as_secs_f64();
            writeln!(
                out,
                "    {:>9.3} {:>5.1}%  {:<22} {}",
                ms(s),
                100.0 * s / total,
                r.op_type,
                r.node
            )?;
        }
        if mine.len() > LAYER_ROWS {
            let rest: f64 = mine[LAYER_ROWS..]
                .iter()
                .map(|r| r.time.total.as_secs_f64())
                .sum();
            writeln!(
                out,
                "    {:>9.3} {:>5.1}%  ({} more nodes)",
                ms(rest),
                100.0 * rest / total,
                mine.len() - LAYER_ROWS
            )?;
        }
        let mut by_op: Vec<(String, f64, usize)> = Vec::new();
        for r in &mine {
            let s = r.time.total.as_secs_f64();
            match by_op.iter_mut().find(|e| e.0 == r.op_type) {
                Some(e) => {
                    e.1 += s;
                    e.2 += 1;
                }
                None => by_op.push((r.op_type.clone(), s, 1)),
            }
        }
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        let ops: Vec<String> = by_op
            .iter()
            .map(|(op, s, n)| format!("{op} x{n} {:.1}%", 100.0 * s / total))
            .collect();
        writeln!(out, "    by operator: {}", ops.join(", "))?;
    }
    Ok(())
}
