//! Converting the operators that sum, copy or gate activations: `Sum`,
//! `Pad`, `Resize` and `Mul` of two activations (a gate). (`Concat` and the
//! reductions are [`crate::ops::Operator`]s: `ops/concat.rs`,
//! `ops/reduce.rs`.)

use anyhow::{bail, ensure, Result};
use tract_onnx::pb::NodeProto;

use super::attrs::{attr_f, attr_i, attr_ints, attr_s};
use super::elementwise::{Operand, Operands};
use crate::graph::{Act, Op};
use crate::ops::pad::{PadMode, PadSpec};
use crate::ops::resize::{CoordMode, NearestMode, ResizeSpec, Scales};

/// Operators converted here.
pub(super) const STRUCTURE_OPS: &[&str] = &["Sum", "Pad", "Resize", "Upsample"];

/// Integers of a constant operand (pads, axes).
fn ints(c: &ndarray::ArrayD<f32>) -> Vec<i64> {
    c.iter().map(|&v| v as i64).collect()
}

/// The input index of a `Resize`'s `scales` at `opset`.
fn scales_input(opset: i64) -> usize {
    if opset <= 10 {
        1
    } else {
        2
    }
}

/// Converts `n`, one of [`STRUCTURE_OPS`] (or a `Mul` of two activations);
/// `acts` are its inputs that carry the image signal.
pub(super) fn convert(
    n: &NodeProto,
    acts: &[String],
    opset: i64,
    operand: &Operands,
) -> Result<Op> {
    let all_active = n.input.iter().all(|i| acts.contains(i));
    Ok(match n.op_type.as_str() {
        "Sum" => {
            ensure!(
                all_active,
                "only a sum of activations is supported (an input is a constant)"
            );
            if acts.len() == 1 {
                Op::Activation(Act::Identity)
            } else {
                Op::Sum
            }
        }
        "Mul" => {
            ensure!(acts.len() == 2, "expected two activations");
            Op::Gate { gate: None }
        }
        "Pad" => pad(n, opset, operand)?,
        "Resize" => resize(n, opset, operand)?,
        "Upsample" => bail!(
            "Upsample (opset 7-9) is not supported by the tract runtime; export with opset >= 10 (Resize)"
        ),
        other => bail!("'{other}' is not a structural operator"),
    })
}

fn pad(n: &NodeProto, opset: i64, operand: &Operands) -> Result<Op> {
    let mode = PadMode::parse(&attr_s(n, "mode").unwrap_or_else(|| "constant".into()))?;
    let (pads, axes, value) = if opset < 11 {
        let pads = attr_ints(n, "pads")
            .or_else(|| attr_ints(n, "paddings"))
            .ok_or_else(|| anyhow::anyhow!("no pads"))?;
        (Some(pads), None, attr_f(n, "value", 0.0))
    } else {
        let pads = match operand(1)? {
            Operand::Const(c) => Some(ints(&c)),
            Operand::Computed => None,
            Operand::Absent => bail!("no pads"),
        };
        let axes = match operand(3)? {
            Operand::Const(c) => Some(ints(&c)),
            Operand::Absent => None,
            Operand::Computed => bail!("axes computed at run time are not supported"),
        };
        let value = match operand(2)? {
            Operand::Const(c) => c.iter().next().copied().unwrap_or(0.0),
            Operand::Absent => 0.0,
            Operand::Computed => bail!("a pad value computed at run time is not supported"),
        };
        (pads, axes, value)
    };
    Ok(Op::Pad(PadSpec {
        pads,
        axes,
        mode,
        value,
    }))
}

fn resize(n: &NodeProto, opset: i64, operand: &Operands) -> Result<Op> {
    let mode = attr_s(n, "mode").unwrap_or_else(|| "nearest".into());
    ensure!(
        mode == "nearest",
        "only mode 'nearest' is supported, not '{mode}'"
    );
    ensure!(
        attr_i(n, "antialias", 0) == 0,
        "antialiasing is not supported"
    );
    let policy = attr_s(n, "keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into());
    ensure!(
        policy == "stretch",
        "keep_aspect_ratio_policy '{policy}' is not supported"
    );
    let coord = if opset <= 10 {
        CoordMode::Asymmetric
    } else {
        CoordMode::parse(
            &attr_s(n, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into()),
        )?
    };
    let nearest = NearestMode::parse(
        &attr_s(n, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into()),
    )?;
    let scales = match operand(scales_input(opset))? {
        Operand::Const(c) if !c.is_empty() => Scales::Given(c.iter().copied().collect()),
        Operand::Const(_) | Operand::Absent => Scales::FromShapes,
        Operand::Computed => Scales::Runtime,
    };
    Ok(Op::Resize(ResizeSpec {
        coord,
        nearest,
        scales,
        axes: attr_ints(n, "axes"),
    }))
}

/// Inputs of `n` that `op` reads at run time as parameters (pads or scales
/// computed in the model): they are fetched from the forward pass.
pub(super) fn runtime_operands(n: &NodeProto, op: &Op, opset: i64) -> Vec<String> {
    let ix = match op {
        Op::Pad(PadSpec { pads: None, .. }) => 1,
        Op::Resize(ResizeSpec {
            scales: Scales::Runtime,
            ..
        }) => scales_input(opset),
        _ => return vec![],
    };
    n.input.get(ix).cloned().into_iter().collect()
}
