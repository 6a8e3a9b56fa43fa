//! The deep Taylor decomposition's worked example (Montavon et al., 2017) on
//! the library's own rules: a tiny ReLU network with sum pooling, one table
//! per layer, whether relevance is conserved and positive, and what breaks it.
//!
//! `cargo run --example deep_taylor -- [--init glorot|he|lecun] [--seed N] [--inputs N]
//! [--hidden N] [--bias B] [--epsilon E]` (the same as `lrp-heatmap demo`).

use anyhow::{bail, Context, Result};
use lrp_testkit::deep_taylor::{report, DemoConfig};
use lrp_testkit::init::Init;

fn main() -> Result<()> {
    let mut cfg = DemoConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let what = || format!("{flag} {value}");
        match flag.as_str() {
            "--init" => cfg.init = Init::parse(&value)?,
            "--seed" => cfg.seed = value.parse().with_context(what)?,
            "--inputs" => cfg.inputs = value.parse().with_context(what)?,
            "--hidden" => cfg.hidden = value.parse().with_context(what)?,
            "--bias" => cfg.bias = value.parse().with_context(what)?,
            "--epsilon" => cfg.epsilon = value.parse().with_context(what)?,
            other => bail!(
                "unknown option '{other}' (--init, --seed, --inputs, --hidden, --bias, --epsilon)"
            ),
        }
    }
    report(&cfg, &mut std::io::stdout().lock())
}
