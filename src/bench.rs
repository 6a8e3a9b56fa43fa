//! `lrp-heatmap bench`: seconds per image of each analyzer and peak memory,
//! on a given model or on a generated full-size VGG16 (random He weights).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::ArrayD;

use crate::analyzer::{Analyzer, AnalyzerParams};
use crate::model::Model;
use crate::preprocess::Normalization;
use crate::synth::{vgg16, Rng, VggSpec, VggStyle};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Model file; `None` generates a full-size VGG16 in a temporary folder.
    pub model: Option<PathBuf>,
    /// Analyzers to time.
    pub analyzers: Vec<String>,
    /// Timed runs per analyzer (after one warm-up run).
    pub runs: usize,
}

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
    let tmp;
    let path = match &cfg.model {
        Some(p) => p.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("lrp-heatmap-bench-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let p = tmp.join("vgg16.onnx");
            writeln!(
                out,
                "writing a full-size VGG16 (random weights) to {}",
                p.display()
            )?;
            vgg16(&VggSpec::full(VggStyle::Torchvision)).save(&p)?;
            p
        }
    };
    let t0 = Instant::now();
    let model = crate::guard::boundary(&format!("model {}", path.display()), || Model::load(&path));
    if cfg.model.is_none() {
        let _ = std::fs::remove_file(&path);
        let _ = path.parent().map(std::fs::remove_dir);
    }
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
    let params = AnalyzerParams::default();
    let mut fwd_times = Vec::new();
    writeln!(
        out,
        "{:<22} {:>12} {:>12} {:>10}",
        "analyzer", "s/image", "forward s", "peak MB"
    )?;
    for name in &cfg.analyzers {
        let a = Analyzer::from_name(name, &params)?;
        let mut times = Vec::new();
        for run in 0..=cfg.runs.max(1) {
            let t = Instant::now();
            let fwd = model.forward(x.clone())?;
            let tf = t.elapsed().as_secs_f64();
            let class = fwd.top_k(1)[0].0;
            let e = a.explain(&model, &fwd, class, &norm)?;
            std::hint::black_box(&e.relevance);
            if run > 0 {
                times.push(t.elapsed().as_secs_f64());
                fwd_times.push(tf);
            }
        }
        let fwd = median(fwd_times.clone());
        writeln!(
            out,
            "{:<22} {:>12.3} {:>12.3} {:>10}",
            name,
            median(times),
            fwd,
            peak_memory() / (1 << 20)
        )?;
    }
    Ok(())
}
