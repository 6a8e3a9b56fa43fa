//! Canonization: function-preserving rewrites of the graph before relevance
//! propagation (Zennit's canonizers).
//!
//! - a `BatchNormalization` right after a `Conv` or dense layer is folded into
//!   its weights and bias (Zennit's `MergeBatchNorm`); one with nothing to fold
//!   into becomes a per-channel affine linear layer;
//! - an `Add` of a constant right after a `Conv` or dense layer becomes its bias
//!   (`MatMul` + `Add` from Keras exports); elsewhere it passes relevance on;
//! - a `Mul` / `Div` / `Sub` by a per-channel constant right after a `Conv` or
//!   dense layer (a batch norm that tf2onnx wrote as `Mul` + `Add`) is folded
//!   into its weights and bias like a batch norm; elsewhere it passes
//!   relevance on.

use anyhow::Result;
use ndarray::{ArrayD, Axis};

use crate::graph::{ArithKind, Graph, Op};
use crate::ops::dense::Affine;

/// Applies all canonizations in place.
pub fn canonize(graph: &mut Graph) -> Result<()> {
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let (Op::BatchNorm { .. } | Op::AddConst(_) | Op::Arith { .. }) = &node.op else {
            i += 1;
            continue;
        };
        let src = node.inputs[0].clone();
        let producer = graph.nodes[..i].iter().position(|p| p.output == src);
        let foldable = producer.filter(|&p| {
            matches!(graph.nodes[p].op, Op::Conv(_) | Op::Dense(_))
                && graph.consumers(&src) == 1
                && src != graph.logits
        });
        let node = graph.nodes[i].clone();
        if let Some(p) = foldable {
            if fold(&mut graph.nodes[p].op, &node.op) {
                graph.nodes[p].output = node.output.clone();
                graph.nodes.remove(i);
                continue;
            }
        }
        graph.nodes[i].op = match node.op {
            Op::BatchNorm { scale, shift } => Op::Affine(Affine {
                weight: ArrayD::from_shape_vec(vec![scale.len()], scale)?,
                bias: ArrayD::from_shape_vec(vec![shift.len()], shift)?,
            }),
            op => op.unmerged(),
        };
        i += 1;
    }
    graph.mark_first_layers();
    Ok(())
}

/// Per-output-channel values of a constant added to a layer with `m` outputs
/// whose channel axis is `from_end` axes before the last (numpy broadcasting
/// aligns shapes at the end): `None` when it varies along another axis.
fn per_channel(c: &ArrayD<f32>, m: usize, from_end: usize) -> Option<Vec<f32>> {
    let rank = c.ndim();
    for (k, &d) in c.shape().iter().enumerate() {
        if d != 1 && !(rank - 1 - k == from_end && d == m) {
            return None;
        }
    }
    let v: Vec<f32> = c.iter().copied().collect();
    match v.len() {
        1 => Some(vec![v[0]; m]),
        n if n == m => Some(v),
        _ => None,
    }
}

/// `x op c` as `x * scale + shift` per channel, for the linear cases:
/// `x * c`, `x / c`, `x - c`, `c - x` and `x + c` (Keras batch norms exported as
/// `Mul` + `Add`, normalisations written as `Sub` + `Div`).
fn affine_of(
    kind: ArithKind,
    constant_first: bool,
    c: Option<Vec<f32>>,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let c = c?;
    let m = c.len();
    Some(match (kind, constant_first) {
        (ArithKind::Mul, _) => (c, vec![0.0; m]),
        (ArithKind::Div, false) if c.iter().all(|&v| v != 0.0) => {
            (c.iter().map(|v| 1.0 / v).collect(), vec![0.0; m])
        }
        (ArithKind::Add, _) => (vec![1.0; m], c),
        (ArithKind::Sub, false) => (vec![1.0; m], c.iter().map(|v| -v).collect()),
        (ArithKind::Sub, true) => (vec![-1.0; m], c),
        _ => return None,
    })
}

/// Folds a batch norm or a constant addition into the layer `into`.
fn fold(into: &mut Op, what: &Op) -> bool {
    let (weight, bias, from_end) = match into {
        Op::Conv(c) => (&mut c.weight, &mut c.bias, 2),
        Op::Dense(d) => (&mut d.weight, &mut d.bias, 0),
        _ => return false,
    };
    let m = weight.shape()[0];
    let (scale, shift) = match what {
        Op::BatchNorm { scale, shift } if scale.len() == m => (scale.clone(), shift.clone()),
        Op::AddConst(c) => match per_channel(c, m, from_end) {
            Some(shift) => (vec![1.0; m], shift),
            None => return false,
        },
        Op::Arith {
            kind,
            constant,
            constant_first,
        } => match affine_of(*kind, *constant_first, per_channel(constant, m, from_end)) {
            Some(st) => st,
            None => return false,
        },
        _ => return false,
    };
    let old: Vec<f32> = bias
        .as_ref()
        .map_or(vec![0.0; m], |b| b.iter().copied().collect());
    // the graph builder checks these lengths; a mismatch is not folded
    // (and nothing is modified) rather than a panic
    if scale.len() != m || shift.len() != m || old.len() != m {
        return false;
    }
    for (mut row, s) in weight.axis_iter_mut(Axis(0)).zip(&scale) {
        row.mapv_inplace(|v| v * s);
    }
    let new: Vec<f32> = old
        .iter()
        .zip(&scale)
        .zip(&shift)
        .map(|((b, s), t)| b * s + t)
        .collect();
    *bias = Some(ndarray::Array1::from(new).into_dyn());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, Node};
    use crate::ops::conv::{Conv, Padding, Window};
    use crate::ops::dense::Dense;
    use crate::rules::LinearLayer;
    use ndarray::{Dimension, IxDyn};

    /// A graph from input `x` to logits `y` through `nodes`.
    fn chain(nodes: Vec<Node>) -> Graph {
        Graph {
            input: "x".into(),
            input_dims: vec![],
            logits: "y".into(),
            skipped_softmax: false,
            nodes,
        }
    }

    fn node(name: &str, op: Op, input: &str, output: &str) -> Node {
        Node {
            name: name.into(),
            op_type: name.into(),
            op,
            inputs: vec![input.into()],
            output: output.into(),
            first: false,
        }
    }

    fn values(shape: &[usize], seed: u32) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |ix| {
            let k = ix
                .as_array_view()
                .iter()
                .fold(seed, |a, &i| a.wrapping_mul(31).wrapping_add(i as u32));
            ((k.wrapping_mul(2654435761) >> 8) % 2000) as f32 / 1000.0 - 1.0
        })
    }

    #[test]
    fn folding_batchnorm_into_a_conv_leaves_its_output_unchanged() {
        let conv = Conv {
            weight: values(&[4, 3, 3, 3], 1),
            bias: Some(values(&[4], 2)),
            window: Window {
                kernel: [3, 3],
                strides: [2, 1],
                dilations: [1, 1],
                padding: Padding::Explicit([1, 0, 1, 1]),
            },
            group: 1,
        };
        // negative scales included: they flip the folded filters
        let scale = vec![0.5, -1.25, 2.0, 0.75];
        let shift = vec![0.1, -0.2, 0.0, 0.3];
        let x = values(&[1, 3, 6, 5], 3);
        let mut z = conv.forward(&x, &conv.weight, true).unwrap();
        for (c, mut plane) in z.axis_iter_mut(Axis(1)).enumerate() {
            plane.mapv_inplace(|v| v * scale[c] + shift[c]);
        }
        let mut g = chain(vec![
            node("Conv", Op::Conv(conv), "x", "c"),
            node(
                "BatchNormalization",
                Op::BatchNorm { scale, shift },
                "c",
                "y",
            ),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "the batch norm is gone");
        assert_eq!(g.nodes[0].output, "y");
        assert!(g.nodes[0].first);
        let Op::Conv(folded) = &g.nodes[0].op else {
            panic!("still a conv")
        };
        let got = folded.forward(&x, &folded.weight, true).unwrap();
        for (a, b) in got.iter().zip(z.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn a_batchnorm_with_nothing_to_fold_into_becomes_a_channel_affine_layer() {
        let mut g = chain(vec![node(
            "BatchNormalization",
            Op::BatchNorm {
                scale: vec![2.0, -1.0],
                shift: vec![0.5, 0.25],
            },
            "x",
            "y",
        )]);
        canonize(&mut g).unwrap();
        let Op::Affine(a) = &g.nodes[0].op else {
            panic!("affine expected")
        };
        let x = values(&[1, 2, 2, 2], 5);
        let z = a.forward(&x, &a.weight, true).unwrap();
        // y = x * scale[c] + shift[c]
        assert!((z[[0, 0, 1, 1]] - (x[[0, 0, 1, 1]] * 2.0 + 0.5)).abs() < 1e-6);
        assert!((z[[0, 1, 0, 1]] - (-x[[0, 1, 0, 1]] + 0.25)).abs() < 1e-6);
        assert!(g.nodes[0].first, "reads the input");
    }

    #[test]
    fn arithmetic_by_per_channel_constants_folds_into_conv_and_dense() {
        use crate::graph::ArithKind;
        let arith = |kind, constant| Op::Arith {
            kind,
            constant,
            constant_first: false,
        };
        // Keras batch norm after a conv: Mul by [1, C, 1, 1] (a negative scale
        // included), Add of [C, 1, 1]
        let conv = Conv {
            weight: values(&[4, 2, 3, 3], 11),
            bias: Some(values(&[4], 12)),
            window: Window {
                kernel: [3, 3],
                strides: [1, 1],
                dilations: [1, 1],
                padding: Padding::Explicit([1; 4]),
            },
            group: 1,
        };
        let s = ArrayD::from_shape_vec(vec![1, 4, 1, 1], vec![0.5, -2.0, 1.5, 1.0]).unwrap();
        let t = ArrayD::from_shape_vec(vec![4, 1, 1], vec![0.1, 0.2, -0.3, 0.0]).unwrap();
        let x = values(&[1, 2, 5, 5], 13);
        let want = conv.forward(&x, &conv.weight, true).unwrap() * &s + &t;
        let mut g = chain(vec![
            node("Conv", Op::Conv(conv), "x", "c"),
            node("Mul", arith(ArithKind::Mul, s), "c", "m"),
            node("Add", Op::AddConst(t), "m", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "Mul and Add folded");
        let Op::Conv(c) = &g.nodes[0].op else {
            panic!("conv expected")
        };
        let got = c.forward(&x, &c.weight, true).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }

        // a dense layer followed by Div and Sub ((x - mean) / std written after it)
        let dense = Dense {
            weight: values(&[3, 4], 14),
            bias: None,
        };
        let d = ArrayD::from_shape_vec(vec![3], vec![2.0, 4.0, -0.5]).unwrap();
        let m = ArrayD::from_shape_vec(vec![1, 3], vec![1.0, -1.0, 0.25]).unwrap();
        let x = values(&[1, 4], 15);
        let want = (dense.forward(&x, &dense.weight, true).unwrap() / &d) - &m;
        let mut g = chain(vec![
            node("MatMul", Op::Dense(dense), "x", "a"),
            node("Div", arith(ArithKind::Div, d), "a", "b"),
            node("Sub", arith(ArithKind::Sub, m), "b", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "Div and Sub folded");
        let Op::Dense(dd) = &g.nodes[0].op else {
            panic!("dense expected")
        };
        let got = dd.forward(&x, &dd.weight, true).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }

        // a factor that varies over space is not per channel: it stays
        let mut g = chain(vec![
            node(
                "MatMul",
                Op::Dense(Dense {
                    weight: values(&[3, 4], 16),
                    bias: None,
                }),
                "x",
                "a",
            ),
            node("Mul", arith(ArithKind::Mul, values(&[2, 3], 17)), "a", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 2);
        assert!(matches!(g.nodes[1].op, Op::Arith { .. }));
    }

    #[test]
    fn a_constant_add_after_matmul_becomes_the_bias() {
        let dense = Dense {
            weight: values(&[3, 4], 7),
            bias: None,
        };
        let b = ArrayD::from_shape_vec(vec![1, 3], vec![0.5, -0.5, 1.0]).unwrap();
        let x = values(&[1, 4], 9);
        let want = dense.forward(&x, &dense.weight, false).unwrap() + &b;
        let mut g = chain(vec![
            node("MatMul", Op::Dense(dense), "x", "m"),
            node("Add", Op::AddConst(b), "m", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1);
        let Op::Dense(d) = &g.nodes[0].op else {
            panic!("dense expected")
        };
        let got = d.forward(&x, &d.weight, true).unwrap();
        assert_eq!(got, want);
    }
}
