//! The relevance ledger from the library: where the relevance of one
//! explanation goes, node by node (what `lrp-heatmap IMAGE --ledger` writes
//! as JSON), as a table.
//!
//! `cargo run --release --example layer_sums -- IMAGE [RULE] [MODEL]`
//! (RULE defaults to epsilon-plus-flat, MODEL to the bundled efficientnet-lite0).
//!
//! Columns: the relevance arriving at the node's output (`in`), what it hands
//! to its inputs (`out`), and what it did not pass on, by cause (`bias`,
//! `stabilizer`, `dropped`, `sign`: `in - out = bias + stabilizer + dropped -
//! sign`). Nodes that pass relevance on unchanged are left out.

use anyhow::{Context, Result};
use lrp_heatmap::Model;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .context("usage: layer_sums IMAGE [RULE] [MODEL]")?;
    let rule = args.next().unwrap_or_else(|| "epsilon-plus-flat".into());
    let model = args.next().unwrap_or_else(|| "efficientnet-lite0".into());
    let model = Model::load(&model)?;
    let e = model.explain(std::path::Path::new(&image), &rule)?;
    let ledger = e.ledger.context("an LRP rule or composite has a ledger")?;
    println!(
        "{:<40} {:<8} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "node", "op", "rule", "in", "out", "bias", "stabilizer", "dropped", "sign"
    );
    for n in ledger.nodes.iter().filter(|n| n.r_in != n.out) {
        println!(
            "{:<40} {:<8} {:<18} {:>10.4} {:>10.4} {:>10.4} {:>10.2e} {:>10.4} {:>10.4}",
            n.node, n.op, n.rule, n.r_in, n.out, n.bias, n.stabilizer, n.dropped, n.sign
        );
    }
    println!(
        "logit {:.4}, input sum {:.4} (ratio {:.4}); books balance to {:.1e} relative",
        ledger.logit,
        ledger.input_sum,
        ledger.ratio(),
        ledger.worst_mismatch().0
    );
    if let Some(s) = ledger.summary() {
        println!("{s}");
    }
    for w in &e.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
