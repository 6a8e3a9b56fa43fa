//! Converting the operators that only copy elements into [`Op::Move`]:
//! `Slice`, `Split` (one graph node per output), `Gather`,
//! `GatherElements`, `Expand`, `Tile`, `DepthToSpace`, `SpaceToDepth`.
//! Integer parameters come from constants, or, when the model computes them
//! (from shapes), from the forward pass at run time.

use anyhow::{bail, ensure, Result};
use tract_onnx::pb::NodeProto;

use super::attrs::{attr_i, attr_ints, attr_s};
use super::elementwise::{Operand, Operands};
use crate::graph::Op;
use crate::ops::movement::{Ints, Movement};

/// Operators converted here.
pub(super) const MOVEMENT_OPS: &[&str] = &[
    "Slice",
    "Split",
    "Gather",
    "GatherElements",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
];

/// Reads the integer parameters of a node in the order of its inputs,
/// numbering those computed at run time by their position among the graph
/// node's inputs (after the data input).
struct Params<'a> {
    operand: &'a Operands<'a>,
    next: usize,
}

impl Params<'_> {
    /// Input `i` as a parameter (`None` when absent).
    fn get(&mut self, i: usize) -> Result<Option<Ints>> {
        Ok(match (self.operand)(i)? {
            Operand::Absent => None,
            Operand::Const(c) => {
                ensure!(c.iter().all(|v| !v.is_nan()), "input {i} holds NaN");
                Some(Ints::Const {
                    shape: c.shape().to_vec(),
                    // INT64 extremes arrive as +-9.2e18 and saturate back
                    values: c.iter().map(|&v| v as i64).collect(),
                })
            }
            Operand::Computed => {
                self.next += 1;
                Some(Ints::Runtime(self.next - 1))
            }
        })
    }

    fn need(&mut self, i: usize, what: &str) -> Result<Ints> {
        self.get(i)?
            .ok_or_else(|| anyhow::anyhow!("the {what} input is missing"))
    }
}

/// Converts `n`, one of [`MOVEMENT_OPS`]; `output` is the index of the
/// output this graph node computes (a `Split` becomes one node per output).
pub(super) fn convert(
    n: &NodeProto,
    acts: &[String],
    opset: i64,
    operand: &Operands,
    output: usize,
) -> Result<Op> {
    let op = n.op_type.as_str();
    ensure!(
        n.input.first().is_some_and(|x| acts.contains(x)) && acts.len() == 1,
        "only the data input may depend on the image (indices and sizes must not)"
    );
    let mut p = Params { operand, next: 1 };
    let m = match op {
        "Slice" if opset < 10 => {
            let starts = attr_ints(n, "starts").ok_or_else(|| anyhow::anyhow!("no starts"))?;
            let ends = attr_ints(n, "ends").ok_or_else(|| anyhow::anyhow!("no ends"))?;
            Movement::Slice {
                starts: Ints::list(starts),
                ends: Ints::list(ends),
                axes: attr_ints(n, "axes").map(Ints::list),
                steps: None,
            }
        }
        "Slice" => Movement::Slice {
            starts: p.need(1, "starts")?,
            ends: p.need(2, "ends")?,
            axes: p.get(3)?,
            steps: p.get(4)?,
        },
        "Split" => {
            let sizes = if opset < 13 {
                attr_ints(n, "split")
                    .filter(|s| !s.is_empty())
                    .map(Ints::list)
            } else {
                p.get(1)?
            };
            let num_outputs = attr_i(n, "num_outputs", 0);
            let parts = if opset >= 18 && sizes.is_none() && num_outputs > 0 {
                num_outputs as usize
            } else {
                n.output.len()
            };
            ensure!(parts > 0, "a Split without outputs");
            Movement::Split {
                axis: attr_i(n, "axis", 0),
                sizes,
                parts,
                index: output,
            }
        }
        "Gather" => Movement::Gather {
            axis: attr_i(n, "axis", 0),
            indices: p.need(1, "indices")?,
        },
        "GatherElements" => Movement::GatherElements {
            axis: attr_i(n, "axis", 0),
            indices: p.need(1, "indices")?,
        },
        "Expand" => Movement::Expand {
            shape: p.need(1, "shape")?,
        },
        "Tile" => Movement::Tile {
            repeats: p.need(1, "repeats")?,
        },
        "DepthToSpace" | "SpaceToDepth" => {
            let block = attr_i(n, "blocksize", 0);
            ensure!(block > 0, "blocksize {block}");
            if op == "SpaceToDepth" {
                Movement::SpaceToDepth {
                    block: block as usize,
                }
            } else {
                let mode = attr_s(n, "mode").unwrap_or_else(|| "DCR".into());
                let crd = match mode.as_str() {
                    "DCR" => false,
                    "CRD" => true,
                    m => bail!("mode '{m}'"),
                };
                Movement::DepthToSpace {
                    block: block as usize,
                    crd,
                }
            }
        }
        other => bail!("'{other}' is not a copying operator"),
    };
    Ok(Op::Move(m))
}

/// Inputs of `n` that `op` reads at run time as parameters, in the order
/// their positions were numbered by [`convert`] (input order).
pub(super) fn runtime_operands(n: &NodeProto, op: &Op) -> Vec<String> {
    let Op::Move(m) = op else { return vec![] };
    m.params()
        .into_iter()
        .filter(|(_, p)| matches!(p, Ints::Runtime(_)))
        .filter_map(|(i, _)| n.input.get(i).cloned())
        .collect()
}
