//! Composites: which rule each linear layer gets (data, as in Zennit).
//!
//! Linear layers fall in three classes: the first layer (reading the model input),
//! other convolutions (and per-channel affine layers), and dense layers.
//! Activations always pass relevance on, average pools use the `Norm` rule and
//! max pools the gradient: those are fixed and not part of a composite.

use anyhow::{bail, ensure, Result};

use crate::graph::{Node, Op};
use crate::rules::Rule;

/// Parameters of the rules, from the command line or the library user.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuleParams {
    /// Epsilon of the epsilon rule.
    pub epsilon: f32,
    /// Gamma of the gamma rule.
    pub gamma: f32,
    /// Alpha of the alpha-beta rule (beta = alpha - 1).
    pub alpha: f32,
}

impl Default for RuleParams {
    fn default() -> Self {
        RuleParams {
            epsilon: 1e-6,
            gamma: 0.25,
            alpha: 2.0,
        }
    }
}

/// A rule per layer class.
#[derive(Clone, Debug, PartialEq)]
pub struct Composite {
    /// The name it was made from (used in output file names).
    pub name: String,
    /// Rule of the first layer (`None`: the rule of its own class).
    pub first: Option<Rule>,
    /// Rule of convolutions.
    pub conv: Rule,
    /// Rule of dense layers.
    pub dense: Rule,
}

/// Every rule and composite name with a one-line description.
pub const NAMES: &[(&str, &str)] = &[
    ("lrp0", "LRP-0 (epsilon = 0) on every layer"),
    ("epsilon", "epsilon rule on every layer (--epsilon)"),
    ("zplus", "z+ (alpha 1, beta 0) on every layer"),
    (
        "alpha-beta",
        "alpha-beta on every layer (--alpha, beta = alpha - 1)",
    ),
    ("gamma", "generalised gamma on every layer (--gamma)"),
    ("wsquare", "w^2 rule on every layer"),
    ("flat", "flat rule on every layer"),
    (
        "zbox",
        "z^B on the first layer, z+ above (z^B needs known input bounds)",
    ),
    ("epsilon-plus", "conv z+, dense epsilon"),
    ("epsilon-plus-flat", "first flat, conv z+, dense epsilon"),
    ("epsilon-gamma-box", "first z^B, conv gamma, dense epsilon"),
    ("epsilon-alpha2-beta1", "conv alpha 2 beta 1, dense epsilon"),
    ("deep-taylor", "first w^2, every other layer z+"),
    ("deep-taylor-bounded", "first z^B, every other layer z+"),
];

impl Composite {
    /// The composite called `name`, with parameters `p`.
    pub fn from_name(name: &str, p: &RuleParams) -> Result<Composite> {
        ensure!(
            p.epsilon.is_finite() && p.epsilon > 0.0,
            "--epsilon must be a finite number > 0, got {}",
            p.epsilon
        );
        ensure!(
            p.gamma.is_finite() && p.gamma >= 0.0,
            "--gamma must be a finite number >= 0, got {}",
            p.gamma
        );
        ensure!(
            p.alpha.is_finite() && p.alpha >= 1.0,
            "--alpha must be a finite number >= 1 (beta = alpha - 1 >= 0), got {}",
            p.alpha
        );
        let eps = Rule::Epsilon { epsilon: p.epsilon };
        let gamma = Rule::Gamma { gamma: p.gamma };
        let ab = Rule::AlphaBeta {
            alpha: p.alpha,
            beta: p.alpha - 1.0,
        };
        let all = |r: Rule| (None, r, r);
        let (first, conv, dense) = match name {
            "lrp0" => all(Rule::Epsilon { epsilon: 0.0 }),
            "epsilon" => all(eps),
            "zplus" => all(Rule::ZPlus),
            "alpha-beta" => all(ab),
            "gamma" => all(gamma),
            "wsquare" => all(Rule::WSquare),
            "flat" => all(Rule::Flat),
            "zbox" | "deep-taylor-bounded" => (Some(Rule::ZBox), Rule::ZPlus, Rule::ZPlus),
            "epsilon-plus" => (None, Rule::ZPlus, eps),
            "epsilon-plus-flat" => (Some(Rule::Flat), Rule::ZPlus, eps),
            "epsilon-gamma-box" => (Some(Rule::ZBox), gamma, eps),
            "epsilon-alpha2-beta1" => (
                None,
                Rule::AlphaBeta {
                    alpha: 2.0,
                    beta: 1.0,
                },
                eps,
            ),
            "deep-taylor" => (Some(Rule::WSquare), Rule::ZPlus, Rule::ZPlus),
            other => bail!(
                "unknown rule '{other}'; known: {}",
                NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        };
        Ok(Composite {
            name: name.to_string(),
            first,
            conv,
            dense,
        })
    }

    /// The rule for the linear layer `node`: the first-layer rule where the
    /// composite has one and the node reads the model input, else the rule of
    /// its class (dense for `Gemm`/`MatMul`, conv for the rest).
    pub fn rule_for(&self, node: &Node) -> Rule {
        match (node.first, self.first, &node.op) {
            (true, Some(r), _) => r,
            (_, _, Op::Dense(_)) => self.dense,
            _ => self.conv,
        }
    }
}
