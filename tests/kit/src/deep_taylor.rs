//! The deep Taylor decomposition's worked example, run on the library's own
//! graph walk, operator dispatch, composites and rules.
//!
//! Montavon et al. (Pattern Recognition 65, 2017) explain the method on a tiny
//! network: inputs `x_i`, one ReLU layer `x_j = max(0, sum_i x_i w_ij + b_j)`
//! and sum pooling `x_k = sum_j x_j`. A Taylor expansion at a root point gives
//! `R_k = x_k`, `R_j = x_j` and, with the `w^2` rule,
//! `R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j`: relevance is conserved
//! (`sum_i R_i = sum_j R_j = R_k = f(x)`) and positive.
//!
//! [`TinyNet`] builds that network as a [`Graph`] (a dense layer, a ReLU and
//! the sum pooling as a dense layer with weights 1 and no bias) and
//! [`TinyNet::explain`] walks it back with [`lrp_heatmap::engine::walk::walk_back`] and
//! [`lrp_heatmap::graph::Node::relevance`], the rule of each layer chosen by a
//! [`Composite`], exactly as for an ONNX model, keeping every layer's
//! relevance. [`report()`] prints the example
//! (`cargo run --example deep_taylor`).

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use ndarray::{ArrayD, IxDyn};

use crate::init::Init;
use lrp_heatmap::composite::Composite;
use lrp_heatmap::engine::walk::walk_back;
use lrp_heatmap::engine::Forward;
use lrp_heatmap::graph::{Act, Graph, Node, Op};
use lrp_heatmap::ops::dense::Dense;
use lrp_heatmap::rng::Rng;
use lrp_heatmap::rules::{Bounds, LinearLayer, Rule};

pub mod report;

pub use report::{report, DemoConfig};

/// Name of the input tensor (`x_i`).
const INPUT: &str = "x";
/// Name of the hidden pre-activations (`z_j`).
const PRE: &str = "z";
/// Name of the hidden activations (`x_j`).
const HIDDEN: &str = "h";
/// Name of the output (`x_k`).
const OUTPUT: &str = "y";

/// Inputs `x_i` -> ReLU layer -> sum pooling `x_k = sum_j x_j`.
#[derive(Clone, Debug)]
pub struct TinyNet {
    /// The ReLU layer's linear part: weights `[J, I]` (`weight[j, i] = w_ij`), bias `[J]`.
    pub layer: Dense,
    /// The sum pooling: weights `[1, J]`, all 1, no bias.
    pub pool: Dense,
}

/// Every layer's activations and relevance for one input.
#[derive(Clone, Debug)]
pub struct Layers {
    /// Inputs `x_i`.
    pub x: Vec<f32>,
    /// Pre-activations `z_j = sum_i x_i w_ij + b_j`.
    pub z: Vec<f32>,
    /// Hidden activations `x_j = max(0, z_j)`.
    pub h: Vec<f32>,
    /// The output `f(x) = x_k = sum_j x_j`.
    pub f: f32,
    /// Relevance at the output (the walk starts with `R_k = f(x)`).
    pub r_out: f32,
    /// Relevance of the hidden units `R_j` (the same before and after the ReLU).
    pub r_hidden: Vec<f32>,
    /// Relevance of the inputs `R_i`.
    pub r_input: Vec<f32>,
}

/// Sum in `f64`.
pub fn sum(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum()
}

/// Tolerance of the conservation checks for an output `f`: `f32` rounding plus
/// the `1e-6` stabiliser the rules add to their denominators (which moves a sum
/// by at most about `1e-6`).
pub fn tolerance(f: f32) -> f64 {
    1e-5 * (1.0 + f.abs() as f64)
}

impl Layers {
    /// `(sum_i R_i, sum_j R_j, R_k)`.
    pub fn sums(&self) -> (f64, f64, f64) {
        (sum(&self.r_input), sum(&self.r_hidden), self.r_out as f64)
    }

    /// The largest `|sum - f(x)|` over the three layers.
    pub fn conservation_error(&self) -> f64 {
        let (i, j, k) = self.sums();
        let f = self.f as f64;
        [i, j, k].iter().map(|s| (s - f).abs()).fold(0.0, f64::max)
    }

    /// Whether `sum_i R_i = sum_j R_j = R_k = f(x)` within [`tolerance`].
    pub fn conserves(&self) -> bool {
        self.conservation_error() <= tolerance(self.f)
    }

    /// The smallest relevance of the hidden and input layers.
    pub fn min_relevance(&self) -> f32 {
        self.r_hidden
            .iter()
            .chain(&self.r_input)
            .copied()
            .fold(f32::INFINITY, f32::min)
    }

    /// Whether every relevance is `>= 0`.
    pub fn positive(&self) -> bool {
        self.r_out >= 0.0 && self.min_relevance() >= 0.0
    }

    /// Indices of the active hidden units (`z_j > 0`).
    pub fn active(&self) -> Vec<usize> {
        (0..self.z.len()).filter(|&j| self.z[j] > 0.0).collect()
    }
}

/// `n` inputs drawn from `U(0, 1)` (like pixel intensities).
pub fn sample_input(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform()).collect()
}

/// The example's network (biases 0) and input for `seed`: one [`Rng`] draws
/// the weights with `init`, row by row, then the inputs from `U(0, 1)`.
pub fn sample(init: Init, seed: u64, inputs: usize, hidden: usize) -> Result<(TinyNet, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    let net = TinyNet::random(init, inputs, hidden, 0.0, &mut rng)?;
    let x = sample_input(&mut rng, inputs);
    Ok((net, x))
}

fn vector(v: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.to_vec()).expect("[1, n]")
}

impl TinyNet {
    /// The network with weights `w` (`w[j][i] = w_ij`, one row per hidden unit)
    /// and biases `b`.
    pub fn new(w: &[Vec<f32>], b: &[f32]) -> Result<TinyNet> {
        let hidden = w.len();
        ensure!(hidden > 0, "the network needs at least one hidden unit");
        let inputs = w[0].len();
        ensure!(inputs > 0, "the network needs at least one input");
        ensure!(
            w.iter().all(|row| row.len() == inputs),
            "every hidden unit needs {inputs} weights"
        );
        ensure!(b.len() == hidden, "{} biases for {hidden} units", b.len());
        let flat: Vec<f32> = w.iter().flatten().copied().collect();
        Ok(TinyNet {
            layer: Dense {
                weight: ArrayD::from_shape_vec(IxDyn(&[hidden, inputs]), flat)?,
                bias: Some(ArrayD::from_shape_vec(IxDyn(&[hidden]), b.to_vec())?),
            },
            pool: Dense {
                weight: ArrayD::ones(IxDyn(&[1, hidden])),
                bias: None,
            },
        })
    }

    /// Weights from `init` (fan-in = `inputs`, fan-out = `hidden`), drawn from
    /// `rng` row by row, all biases `bias`.
    pub fn random(
        init: Init,
        inputs: usize,
        hidden: usize,
        bias: f32,
        rng: &mut Rng,
    ) -> Result<TinyNet> {
        ensure!(
            inputs > 0 && hidden > 0,
            "inputs and hidden units must be > 0"
        );
        let flat = init.sample(rng, inputs, hidden, inputs * hidden);
        let w: Vec<Vec<f32>> = flat.chunks(inputs).map(<[f32]>::to_vec).collect();
        TinyNet::new(&w, &vec![bias; hidden])
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.layer.weight.shape()[1]
    }

    /// Number of hidden units.
    pub fn hidden(&self) -> usize {
        self.layer.weight.shape()[0]
    }

    /// `w_ij`.
    pub fn w(&self, i: usize, j: usize) -> f32 {
        self.layer.weight[[j, i]]
    }

    /// `b_j`.
    pub fn b(&self, j: usize) -> f32 {
        self.layer.bias.as_ref().map_or(0.0, |b| b[[j]])
    }

    /// The same network with every bias set to `bias`.
    pub fn with_bias(&self, bias: f32) -> TinyNet {
        let mut net = self.clone();
        net.layer.bias = Some(ArrayD::from_elem(IxDyn(&[self.hidden()]), bias));
        net
    }

    /// The same network with `f` applied to every weight of the ReLU layer.
    pub fn map_weights(&self, f: impl Fn(f32) -> f32) -> TinyNet {
        let mut net = self.clone();
        net.layer.weight.mapv_inplace(f);
        net
    }

    /// The network as the graph the backward walk reads.
    pub fn graph(&self) -> Graph {
        let node = |name: &str, op_type: &str, op: Op, input: &str, output: &str| Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            op,
            inputs: vec![input.to_string()],
            output: output.to_string(),
            first: false,
        };
        let mut graph = Graph {
            input: INPUT.to_string(),
            input_dims: vec![Some(1), Some(self.inputs())],
            logits: OUTPUT.to_string(),
            skipped_softmax: false,
            nodes: vec![
                node("layer", "Gemm", Op::new(self.layer.clone()), INPUT, PRE),
                node("relu", "Relu", Op::new(Act::Relu), PRE, HIDDEN),
                node(
                    "sum_pool",
                    "Gemm",
                    Op::new(self.pool.clone()),
                    HIDDEN,
                    OUTPUT,
                ),
            ],
        };
        graph.mark_first_layers();
        graph
    }

    /// The forward pass, with the layers' own `forward`.
    pub fn forward(&self, x: &[f32]) -> Result<Forward> {
        ensure!(
            x.len() == self.inputs(),
            "{} inputs for a network with {}",
            x.len(),
            self.inputs()
        );
        let input = vector(x);
        let z = self.layer.forward(&input, self.layer.weight(), true)?;
        let h = z.mapv(|v| v.max(0.0));
        let y = self.pool.forward(&h, self.pool.weight(), true)?;
        let logits = y.iter().copied().collect();
        let activations = HashMap::from([
            (PRE.to_string(), z),
            (HIDDEN.to_string(), h),
            (OUTPUT.to_string(), y.clone()),
        ]);
        Ok(Forward {
            input,
            logits,
            logits_tensor: y,
            activations,
            signs: HashMap::new(),
        })
    }

    /// Every layer's relevance for input `x` with the rules of `composite`:
    /// the ReLU layer reads the input, so it gets the composite's first-layer
    /// rule if it has one (else its dense rule); the sum pooling gets the
    /// dense rule. `zbox` gets the bounds `[0, 1]` of [`sample_input`].
    pub fn explain(&self, x: &[f32], composite: &Composite) -> Result<Layers> {
        let graph = self.graph();
        let fwd = self.forward(x)?;
        let f = fwd.logits[0];
        let mut at: HashMap<String, ArrayD<f32>> = HashMap::new();
        let r_input = walk_back(&graph, &fwd, 0, f, |node, inputs, r| {
            let rule = composite.rule_for(node);
            let bounds = (rule == Rule::ZBox).then(|| Bounds {
                low: ArrayD::zeros(inputs[0].shape()),
                high: ArrayD::ones(inputs[0].shape()),
            });
            let out = node.relevance(inputs, r, rule, bounds.as_ref(), Default::default())?;
            for (name, ri) in node.inputs.iter().zip(&out) {
                at.insert(name.clone(), ri.clone());
            }
            Ok(out)
        })
        .with_context(|| format!("relevance with {}", composite.name))?;
        let get = |name: &str| -> Result<Vec<f32>> {
            Ok(fwd.get(&graph, name)?.iter().copied().collect())
        };
        let r_hidden = at
            .get(HIDDEN)
            .context("no relevance reached the hidden layer")?
            .iter()
            .copied()
            .collect();
        let layers = Layers {
            x: x.to_vec(),
            z: get(PRE)?,
            h: get(HIDDEN)?,
            f,
            r_out: f,
            r_hidden,
            r_input: r_input.iter().copied().collect(),
        };
        ensure!(
            layers
                .r_input
                .iter()
                .chain(&layers.r_hidden)
                .all(|v| v.is_finite()),
            "relevance contains NaN or Inf"
        );
        Ok(layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lrp_heatmap::composite::RuleParams;

    /// The hand-checked case: x = (1, 2), w_j=0 = (1, 1), w_j=1 = (1, -1), b = 0.
    /// z = (3, -1), x_j = (3, 0), f = 3; w^2 shares of unit 0: 1/2 each,
    /// so R_i = (1.5, 1.5).
    #[test]
    fn hand_computed_deep_taylor() {
        let net = TinyNet::new(&[vec![1.0, 1.0], vec![1.0, -1.0]], &[0.0, 0.0]).unwrap();
        let dt = Composite::from_name("deep-taylor", &RuleParams::default()).unwrap();
        let l = net.explain(&[1.0, 2.0], &dt).unwrap();
        assert_eq!(l.z, vec![3.0, -1.0]);
        assert_eq!(l.h, vec![3.0, 0.0]);
        assert_eq!(l.f, 3.0);
        assert_eq!(l.active(), vec![0]);
        for (got, want) in l.r_hidden.iter().zip([3.0, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{:?}", l.r_hidden);
        }
        for got in &l.r_input {
            assert!((got - 1.5).abs() < 1e-5, "{:?}", l.r_input);
        }
        assert!(l.conserves() && l.positive());
        // LRP-0: R_i = x_i w_i0 (the only active unit): (1, 2)
        let z = Composite::from_name("lrp0", &RuleParams::default()).unwrap();
        let l = net.explain(&[1.0, 2.0], &z).unwrap();
        assert!((l.r_input[0] - 1.0).abs() < 1e-6 && (l.r_input[1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(TinyNet::new(&[vec![1.0], vec![1.0, 2.0]], &[0.0, 0.0]).is_err());
        assert!(TinyNet::new(&[vec![1.0]], &[0.0, 0.0]).is_err());
        let net = TinyNet::new(&[vec![1.0, 1.0]], &[0.0]).unwrap();
        assert!(net.forward(&[1.0]).is_err());
    }
}
