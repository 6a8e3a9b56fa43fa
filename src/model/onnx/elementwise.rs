//! Elementwise nodes: activations and arithmetic with a constant, with the
//! parameters their gradients need.

use anyhow::{bail, ensure, Result};
use ndarray::ArrayD;
use tract_onnx::pb::NodeProto;

use super::attrs::{attr, attr_f, attr_s};
use crate::graph::{Act, ArithKind, Op};

/// Operators that become an [`Op::Activation`] (relevance passes through unchanged).
pub(super) const ACTIVATION_OPS: &[&str] = &[
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "PRelu",
    "Gelu",
    "Mish",
    "Dropout",
    "Identity",
    "Cast",
];

/// A non-activation input of a node.
pub(super) enum Operand {
    /// Not given (optional input left out or named "").
    Absent,
    /// A constant (initializer or `Constant` node).
    Const(ArrayD<f32>),
    /// Computed at run time (by nodes that do not depend on the image).
    Computed,
}

/// The operand `i` of the node being converted.
pub(super) type Operands<'a> = dyn Fn(usize) -> Result<Operand> + 'a;

/// ONNX `TensorProto.DataType` codes of the float types (FLOAT, FLOAT16,
/// DOUBLE, BFLOAT16): a `Cast` to them is the identity for gradients.
const FLOAT_TYPES: &[i64] = &[1, 10, 11, 16];

/// A `Clip` bound given as input `i` (opset >= 11): `None` when it is computed.
fn bound(operand: &Operands, i: usize, absent: f32) -> Result<Option<f32>> {
    Ok(match operand(i)? {
        Operand::Absent => Some(absent),
        Operand::Const(c) => {
            ensure!(
                c.len() == 1,
                "a Clip bound must be a scalar, got {:?}",
                c.shape()
            );
            c.iter().next().copied()
        }
        Operand::Computed => None,
    })
}

/// The activation of `n` (an [`ACTIVATION_OPS`] type, or a trailing `Softmax`,
/// which becomes [`Act::Opaque`]); `opset` is the default domain's.
///
/// Defaults are tract's (which computes the forward pass). Parameters that are
/// computed at run time give [`Act::Opaque`]: relevance passes, gradients fail.
pub(super) fn activation(n: &NodeProto, opset: i64, operand: &Operands) -> Result<Act> {
    let f = |name: &str, default: f32| attr_f(n, name, default);
    let (inf, neg_inf) = (f32::INFINITY, f32::NEG_INFINITY);
    Ok(match n.op_type.as_str() {
        "Relu" => Act::Relu,
        "Clip" if opset < 11 => Act::Clip {
            min: f("min", neg_inf),
            max: f("max", inf),
        },
        "Clip" => match (bound(operand, 1, neg_inf)?, bound(operand, 2, inf)?) {
            (Some(min), Some(max)) => Act::Clip { min, max },
            _ => Act::Opaque,
        },
        "LeakyRelu" => Act::LeakyRelu {
            alpha: f("alpha", 0.01),
        },
        "PRelu" => match operand(1)? {
            Operand::Const(slope) => Act::PRelu { slope },
            Operand::Computed => Act::Opaque,
            Operand::Absent => bail!("PRelu without a slope"),
        },
        "Sigmoid" => Act::Sigmoid,
        "Tanh" => Act::Tanh,
        "HardSigmoid" => Act::HardSigmoid {
            alpha: f("alpha", 0.2),
            beta: f("beta", 0.5),
        },
        "HardSwish" => Act::HardSwish,
        "Elu" => Act::Elu {
            alpha: f("alpha", 1.0),
        },
        "Selu" => Act::Selu {
            alpha: f("alpha", 1.67326),
            gamma: f("gamma", 1.0507),
        },
        "Celu" => Act::Celu {
            alpha: f("alpha", 1.0),
        },
        "Softplus" => Act::Softplus,
        "Mish" => Act::Mish,
        "Gelu" => Act::Gelu {
            tanh: attr_s(n, "approximate").as_deref() == Some("tanh"),
        },
        "Dropout" | "Identity" => Act::Identity,
        "Cast" => match attr(n, "to") {
            Some(a) if FLOAT_TYPES.contains(&a.i) => Act::Identity,
            _ => Act::Opaque,
        },
        _ => Act::Opaque,
    })
}

/// `Add`, `Sub`, `Mul` or `Div` of the single activation input `act` with a
/// constant: [`Op::AddConst`] for `Add` (canonization may merge it into a bias),
/// [`Op::Arith`] for the others; an operand computed at run time gives an
/// opaque activation (relevance passes, gradients fail).
pub(super) fn arith(n: &NodeProto, act: &str, operand: &Operands) -> Result<Op> {
    let kind = match n.op_type.as_str() {
        "Add" => ArithKind::Add,
        "Sub" => ArithKind::Sub,
        "Mul" => ArithKind::Mul,
        "Div" => ArithKind::Div,
        other => bail!("'{other}' is not arithmetic"),
    };
    ensure!(
        n.input.len() == 2,
        "expected 2 inputs, got {}",
        n.input.len()
    );
    let constant_first = n.input[0] != act;
    let constant = match operand(if constant_first { 0 } else { 1 })? {
        Operand::Const(c) => c,
        Operand::Computed => return Ok(Op::Activation(Act::Opaque)),
        Operand::Absent => bail!("missing operand"),
    };
    Ok(match kind {
        ArithKind::Add => Op::AddConst(constant),
        kind => Op::Arith {
            kind,
            constant,
            constant_first,
        },
    })
}
