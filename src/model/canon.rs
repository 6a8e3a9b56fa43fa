//! Canonization: function-preserving rewrites of the graph before relevance
//! propagation (Zennit's canonizers).
//!
//! - a `BatchNormalization` (imported as a per-channel affine layer) right
//!   after a `Conv` or dense layer is folded into its weights and bias
//!   (Zennit's `MergeBatchNorm`); one with nothing to fold into stays a
//!   per-channel affine linear layer;
//! - an `Add` of a constant right after a `Conv` or dense layer becomes its bias
//!   (`MatMul` + `Add` from Keras exports); elsewhere it passes relevance on;
//! - a `Mul` / `Div` / `Sub` by a per-channel constant right after a `Conv` or
//!   dense layer (a batch norm that tf2onnx wrote as `Mul` + `Add`) is folded
//!   into its weights and bias like a batch norm; elsewhere it passes
//!   relevance on.
//!
//! Which operators fold into which is theirs to say
//! ([`crate::ops::Operator::channel_affine`], [`crate::ops::Operator::fold`]).

use anyhow::Result;

use crate::graph::Graph;

/// Applies all canonizations in place.
pub fn canonize(graph: &mut Graph) -> Result<()> {
    let mut i = 0;
    while i < graph.nodes.len() {
        let src = graph.nodes[i].inputs.first().cloned().unwrap_or_default();
        let producer = graph.nodes[..i].iter().position(|p| p.output == src);
        let foldable = producer.filter(|&p| {
            graph.nodes[p].op.linear().is_some()
                && graph.consumers(&src) == 1
                && src != graph.logits
        });
        if let Some(p) = foldable {
            let next = graph.nodes[i].op.clone();
            if graph.nodes[p].op.get_mut().fold(&*next) {
                graph.nodes[p].output = graph.nodes[i].output.clone();
                graph.nodes.remove(i);
                continue;
            }
        }
        i += 1;
    }
    graph.mark_first_layers();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Node, Op};
    use crate::ops::conv::{Conv, Padding, Window};
    use crate::ops::dense::Affine;
    use crate::ops::dense::Dense;
    use crate::ops::structural::Arith;
    use crate::rules::LinearLayer;
    use ndarray::{ArrayD, Axis};
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

    /// A batch norm as the import makes it: `x * scale + shift` per channel.
    fn affine(scale: Vec<f32>, shift: Vec<f32>) -> Op {
        Op::new(Affine {
            weight: ArrayD::from_shape_vec(vec![scale.len()], scale).unwrap(),
            bias: ArrayD::from_shape_vec(vec![shift.len()], shift).unwrap(),
        })
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
            node("Conv", Op::new(conv), "x", "c"),
            node("BatchNormalization", affine(scale, shift), "c", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "the batch norm is gone");
        assert_eq!(g.nodes[0].output, "y");
        assert!(g.nodes[0].first);
        let folded: &Conv = g.nodes[0].op.downcast().expect("still a conv");
        let got = folded.forward(&x, &folded.weight, true).unwrap();
        for (a, b) in got.iter().zip(z.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn a_batchnorm_with_nothing_to_fold_into_becomes_a_channel_affine_layer() {
        let mut g = chain(vec![node(
            "BatchNormalization",
            affine(vec![2.0, -1.0], vec![0.5, 0.25]),
            "x",
            "y",
        )]);
        canonize(&mut g).unwrap();
        let a: &Affine = g.nodes[0].op.downcast().expect("affine expected");
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
        let arith = |kind, constant| {
            Op::new(Arith {
                kind,
                constant,
                constant_first: false,
                bias: false,
                runtime: false,
            })
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
            node("Conv", Op::new(conv), "x", "c"),
            node("Mul", arith(ArithKind::Mul, s), "c", "m"),
            node("Add", arith(ArithKind::Add, t), "m", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "Mul and Add folded");
        let c: &Conv = g.nodes[0].op.downcast().expect("conv expected");
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
            node("MatMul", Op::new(dense), "x", "a"),
            node("Div", arith(ArithKind::Div, d), "a", "b"),
            node("Sub", arith(ArithKind::Sub, m), "b", "y"),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1, "Div and Sub folded");
        let dd: &Dense = g.nodes[0].op.downcast().expect("dense expected");
        let got = dd.forward(&x, &dd.weight, true).unwrap();
        for (a, b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }

        // a factor that varies over space is not per channel: it stays
        let mut g = chain(vec![
            node(
                "MatMul",
                Op::new(Dense {
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
        assert!(g.nodes[1].op.downcast::<Arith>().is_some());
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
            node("MatMul", Op::new(dense), "x", "m"),
            node(
                "Add",
                Op::new(Arith {
                    kind: crate::graph::ArithKind::Add,
                    constant: b,
                    constant_first: false,
                    bias: false,
                    runtime: false,
                }),
                "m",
                "y",
            ),
        ]);
        canonize(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1);
        let d: &Dense = g.nodes[0].op.downcast().expect("dense expected");
        let got = d.forward(&x, &d.weight, true).unwrap();
        assert_eq!(got, want);
    }
}
