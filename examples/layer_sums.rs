//! Where relevance is lost or created: the sum of the relevance entering and
//! leaving every linear layer (and residual `Add`) of one explanation, walked
//! with the library's own backward pass and rules.
//!
//! `cargo run --release --example layer_sums -- IMAGE [RULE] [MODEL]`
//! (RULE defaults to epsilon-plus-flat, MODEL to the bundled efficientnet-lite0).
//!
//! Columns: the sum of the relevance arriving at the layer's output, the sum it
//! passes to its input(s), their ratio, and the largest |R| passed on. Extra
//! columns explain the two rules that do not conserve on this model:
//! `bias-only` counts outputs with `z > 0` whose weighted inputs alone
//! (bias excluded) are `<= 0`, of all outputs with `z > 0`; `no-w+` counts filters without a positive weight
//! (z+ passes nothing through them); `den<0` counts positive outputs whose
//! gamma denominator (bias excluded) is negative.

use anyhow::{bail, Context, Result};
use lrp_heatmap::composite::{Composite, RuleParams};
use lrp_heatmap::engine::walk::walk_back;
use lrp_heatmap::model::Model;
use lrp_heatmap::preprocess::{load_image, to_tensor, Layout, Normalization};
use lrp_heatmap::rules::{Bounds, LinearLayer, Rule};
use ndarray::{ArrayD, IxDyn};

fn sum(a: &ArrayD<f32>) -> f64 {
    a.iter().map(|&v| v as f64).sum()
}

/// The outputs with `z > 0`, those of them that are `<= 0` without the bias,
/// and, for the gamma rule, those whose gamma denominator is negative.
fn bias_only(l: &dyn LinearLayer, x: &ArrayD<f32>, rule: Rule) -> Result<(usize, usize, usize)> {
    let w = l.weight();
    let z = l.forward(x, w, true)?;
    let zn = l.forward(x, w, false)?;
    let positive = z.iter().filter(|&&z| z > 0.0).count();
    let only = z
        .iter()
        .zip(&zn)
        .filter(|(&z, &n)| z > 0.0 && n <= 0.0)
        .count();
    let Rule::Gamma { gamma } = rule else {
        return Ok((positive, only, 0));
    };
    // denominator of outputs with z > 0: x+ (w + g w+) + x- (w + g w-)
    let up = l.forward(
        &x.mapv(|v| v.max(0.0)),
        &w.mapv(|v| v + gamma * v.max(0.0)),
        false,
    )? + l.forward(
        &x.mapv(|v| v.min(0.0)),
        &w.mapv(|v| v + gamma * v.min(0.0)),
        false,
    )?;
    let negative = z
        .iter()
        .zip(&up)
        .filter(|(&z, &d)| z > 0.0 && d < 0.0)
        .count();
    Ok((positive, only, negative))
}

/// A ratio, in exponent notation when it is huge.
fn ratio(a: f64, b: f64) -> String {
    let r = if b == 0.0 { 0.0 } else { a / b };
    if r.abs() < 1e4 {
        format!("{r:.4}")
    } else {
        format!("{r:.3e}")
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(image) = args.first() else {
        bail!("usage: layer_sums IMAGE [RULE] [MODEL]");
    };
    let rule_name = args.get(1).map_or("epsilon-plus-flat", String::as_str);
    let model = Model::load(args.get(2).map_or("efficientnet-lite0", String::as_str))?;
    let composite = Composite::from_name(rule_name, &RuleParams::default())?;
    let (spec, norm) = (&model.input, Normalization::default());
    if spec.layout != Layout::Nchw || spec.channels != 3 {
        bail!("this example handles 3-channel NCHW models only");
    }
    let photo = load_image(image.as_ref()).with_context(|| image.clone())?;
    let x = to_tensor(&photo, spec.height, spec.width, 3, spec.layout, &norm)?;
    let fwd = model.forward(x)?;
    let (class, _) = fwd.top_k(1)[0];
    let logit = fwd.logits[class];
    println!("{image}: class {class}, logit {logit:.4}, {rule_name}");
    println!(
        "{:<36} {:<16} {:>11} {:>11} {:>9} {:>10} {:>15} {:>8} {:>6}",
        "layer", "rule", "R in", "R out", "out/in", "max |R|", "bias-only", "no-w+", "den<0"
    );
    let (lo, hi) = norm.bounds();
    let r = walk_back(&model.graph, &fwd, class, logit, |node, inputs, r| {
        let rule = composite.rule_for(node);
        let linear = node.op.linear();
        let bounds = (linear.is_some() && rule == Rule::ZBox).then(|| {
            let shape = inputs[0].shape();
            let fill = |b: [f32; 3]| ArrayD::from_shape_fn(IxDyn(shape), |ix| b[ix[1]]);
            Bounds {
                low: fill(lo),
                high: fill(hi),
            }
        });
        let out = node.relevance(inputs, r, rule, bounds.as_ref(), Default::default())?;
        let is_add = node.op_type == "Add" && node.inputs.len() == 2;
        if linear.is_some() || is_add {
            let (r_in, r_out) = (sum(r), out.iter().map(sum).sum::<f64>());
            let max = out
                .iter()
                .flat_map(|a| a.iter())
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let (mut only, mut neg, mut no_pos) = (String::new(), String::new(), String::new());
            if let Some(l) = linear {
                let (p, o, n) = bias_only(l, inputs[0], rule)?;
                only = format!("{o}/{p}");
                if matches!(rule, Rule::Gamma { .. }) {
                    neg = n.to_string();
                }
                if rule == Rule::ZPlus {
                    let w = l.weight();
                    let filters = w.shape()[0];
                    let per = w.len() / filters;
                    let w = w.as_standard_layout();
                    let w = w.as_slice().unwrap_or(&[]);
                    no_pos = w
                        .chunks(per)
                        .filter(|f| f.iter().all(|&v| v <= 0.0))
                        .count()
                        .to_string()
                        + "/"
                        + &filters.to_string();
                }
            }
            let rule = if is_add {
                "split".to_string()
            } else {
                rule.to_string()
            };
            println!(
                "{:<36} {:<16} {r_in:>11.4e} {r_out:>11.4e} {:>9} {max:>10.3e} {only:>15} {no_pos:>8} {neg:>6}",
                node.name,
                rule,
                ratio(r_out, r_in),
            );
        }
        Ok(out)
    })?;
    println!(
        "input relevance sum {:.6e}, logit {logit:.4}, ratio {}",
        sum(&r),
        ratio(sum(&r), logit as f64)
    );
    Ok(())
}
