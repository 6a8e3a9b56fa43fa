//! Writes a VGG16-shaped ONNX model with He-initialised random weights.
//!
//! `cargo run --release --example synth_vgg16 -- OUT.onnx [torchvision|zoo] [WIDTH_DIVISOR] [INPUT_SIZE]`
//!
//! With the defaults (torchvision, divisor 1, 224) it is the full-size network: 13 conv,
//! 5 max-pool, 3 dense layers, 138M parameters, a 553 MB file.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lrp_testkit::synth::{vgg16, VggSpec, VggStyle};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        bail!("usage: synth_vgg16 OUT.onnx [torchvision|zoo] [WIDTH_DIVISOR] [INPUT_SIZE]");
    };
    let style = match args.get(1).map(String::as_str) {
        None | Some("torchvision") => VggStyle::Torchvision,
        Some("zoo") => VggStyle::Zoo,
        Some(other) => bail!("unknown style '{other}' (torchvision or zoo)"),
    };
    let mut spec = VggSpec::full(style);
    if let Some(d) = args.get(2) {
        spec.width_divisor = d.parse().context("WIDTH_DIVISOR")?;
    }
    if let Some(s) = args.get(3) {
        spec.input_size = s.parse().context("INPUT_SIZE")?;
    }
    let builder = vgg16(&spec);
    let path = PathBuf::from(out);
    builder.save(&path)?;
    println!("{}: {} parameters", path.display(), builder.num_params());
    Ok(())
}
