//! Composites: which rule each linear layer gets (data, as in Zennit).
//!
//! Linear layers fall in three classes: the first layer (reading the model input),
//! other convolutions (and per-channel affine layers), and dense layers.
//! Activations always pass relevance on, average pools use the `Norm` rule and
//! max pools the gradient: those are fixed, but for where a max pool's
//! near-tied window hands its relevance ([`Composite::max_pool`]: the first
//! maximum, as the gradient, or split among the near-maxima).

use crate::error::{Error, Result};

use crate::graph::Node;
use crate::ops::attention::Attention;
use crate::ops::MaxPoolTies;
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

impl RuleParams {
    /// [`Error::InvalidParameter`] for an epsilon that is not finite and
    /// positive, a gamma that is not finite and >= 0 or an alpha below 1.
    pub fn validate(&self) -> Result<()> {
        let (e, g, a) = (self.epsilon, self.gamma, self.alpha);
        Error::check(e.is_finite() && e > 0.0, "epsilon", || {
            format!("must be a finite number > 0, got {e}")
        })?;
        Error::check(g.is_finite() && g >= 0.0, "gamma", || {
            format!("must be a finite number >= 0, got {g}")
        })?;
        Error::check(a.is_finite() && a >= 1.0, "alpha", || {
            format!("must be a finite number >= 1 (beta = alpha - 1 >= 0), got {a}")
        })
    }
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
    /// Where a max pool's window hands its relevance ([`MaxPoolTies::First`]
    /// unless set).
    pub max_pool: MaxPoolTies,
    /// How relevance goes through a transformer's attention: AttnLRP's
    /// rules, or conservative propagation (the composites `cp-lrp*`).
    pub attention: Attention,
}

/// The rules a composite gives the first layer (`None`: the rule of its own
/// class), convolutions and dense layers.
type Rules = (Option<Rule>, Rule, Rule);

/// The rules of a composite from the parameters.
type MakeRules = fn(&RuleParams) -> Rules;

/// The same rule on every layer.
const fn all(r: Rule) -> Rules {
    (None, r, r)
}

fn eps(p: &RuleParams) -> Rule {
    Rule::Epsilon { epsilon: p.epsilon }
}

/// The z^B first layer, z+ above.
const BOUNDED_ZPLUS: Rules = (Some(Rule::ZBox), Rule::ZPlus, Rule::ZPlus);

/// Every rule and composite: name, one-line description (naming the
/// parameters it reads in parentheses), rules.
const TABLE: &[(&str, &str, MakeRules)] = &[
    ("lrp0", "LRP-0 (epsilon = 0) on every layer", |_| {
        all(Rule::Epsilon { epsilon: 0.0 })
    }),
    ("epsilon", "epsilon rule on every layer (epsilon)", |p| {
        all(eps(p))
    }),
    ("zplus", "z+ (alpha 1, beta 0) on every layer", |_| {
        all(Rule::ZPlus)
    }),
    (
        "alpha-beta",
        "alpha-beta on every layer (alpha, beta = alpha - 1)",
        |p| {
            all(Rule::AlphaBeta {
                alpha: p.alpha,
                beta: p.alpha - 1.0,
            })
        },
    ),
    ("gamma", "generalised gamma on every layer (gamma)", |p| {
        all(Rule::Gamma { gamma: p.gamma })
    }),
    ("wsquare", "w^2 rule on every layer", |_| all(Rule::WSquare)),
    ("flat", "flat rule on every layer", |_| all(Rule::Flat)),
    (
        "zbox",
        "z^B on the first layer, z+ above (z^B needs known input bounds)",
        |_| BOUNDED_ZPLUS,
    ),
    ("epsilon-plus", "conv z+, dense epsilon", |p| {
        (None, Rule::ZPlus, eps(p))
    }),
    (
        "epsilon-plus-flat",
        "first flat, conv z+, dense epsilon",
        |p| (Some(Rule::Flat), Rule::ZPlus, eps(p)),
    ),
    (
        "epsilon-gamma-box",
        "first z^B, conv gamma, dense epsilon",
        |p| (Some(Rule::ZBox), Rule::Gamma { gamma: p.gamma }, eps(p)),
    ),
    (
        "epsilon-alpha2-beta1",
        "conv alpha 2 beta 1, dense epsilon",
        |p| {
            let ab = Rule::AlphaBeta {
                alpha: 2.0,
                beta: 1.0,
            };
            (None, ab, eps(p))
        },
    ),
    ("deep-taylor", "first w^2, every other layer z+", |_| {
        (Some(Rule::WSquare), Rule::ZPlus, Rule::ZPlus)
    }),
    (
        "deep-taylor-bounded",
        "first z^B, every other layer z+",
        |_| BOUNDED_ZPLUS,
    ),
    (
        "attnlrp",
        "transformers (AttnLRP): epsilon on every linear layer, uniform rule at products of activations (epsilon)",
        |p| all(eps(p)),
    ),
    (
        "attnlrp-gamma",
        "AttnLRP with gamma on every linear layer, the attention projections included (gamma)",
        |p| all(Rule::Gamma { gamma: p.gamma }),
    ),
    (
        "cp-lrp",
        "transformers (CP-LRP): epsilon on every linear layer, attention weights held constant (epsilon)",
        |p| all(eps(p)),
    ),
    (
        "cp-lrp-gamma",
        "CP-LRP with gamma on every linear layer, the attention projections included (gamma)",
        |p| all(Rule::Gamma { gamma: p.gamma }),
    ),
];

/// The composites that hold a transformer's attention weights constant
/// (conservative propagation); every other one applies AttnLRP's rules there.
const CONSERVATIVE: &[&str] = &["cp-lrp", "cp-lrp-gamma"];

/// Every rule and composite name with a one-line description (from the one
/// table that [`Composite::from_name`] reads).
pub const NAMES: [(&str, &str); TABLE.len()] = {
    let mut names = [("", ""); TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = (TABLE[i].0, TABLE[i].1);
        i += 1;
    }
    names
};

impl Composite {
    /// The composite called `name`, with parameters `p`.
    ///
    /// ```
    /// use lrp_heatmap::{Composite, Rule, composite::RuleParams};
    ///
    /// let c = Composite::from_name("epsilon-plus-flat", &RuleParams::default())?;
    /// assert_eq!((c.first, c.conv), (Some(Rule::Flat), Rule::ZPlus));
    /// # Ok::<(), lrp_heatmap::Error>(())
    /// ```
    pub fn from_name(name: &str, p: &RuleParams) -> Result<Composite> {
        p.validate()?;
        let Some((_, _, rules)) = TABLE.iter().find(|(n, _, _)| *n == name) else {
            return Err(Error::UnknownAnalyzer {
                name: name.to_string(),
                known: NAMES.iter().map(|(n, _)| *n).collect(),
            });
        };
        let (first, conv, dense) = rules(p);
        Ok(Composite {
            name: name.to_string(),
            first,
            conv,
            dense,
            max_pool: MaxPoolTies::First,
            attention: if CONSERVATIVE.contains(&name) {
                Attention::Conservative
            } else {
                Attention::Full
            },
        })
    }

    /// The same composite with max-pool ties handled by `ties`.
    pub fn with_max_pool_ties(self, ties: MaxPoolTies) -> Composite {
        Composite {
            max_pool: ties,
            ..self
        }
    }

    /// The rule of normalisation layers (`LayerNormalization`, its
    /// standard deviation held constant: a linear map): the epsilon rule
    /// whatever the composite, as AttnLRP and LXT apply it (the composite's
    /// rules such as gamma or z-plus go to convolutions and dense layers
    /// only), with the dense layers' epsilon where they have the epsilon
    /// rule, else the convolutions', else 1e-6 (so LRP-0 gives it epsilon 0).
    pub fn norm_rule(&self) -> Rule {
        match (self.dense, self.conv) {
            (r @ Rule::Epsilon { .. }, _) | (_, r @ Rule::Epsilon { .. }) => r,
            _ => Rule::Epsilon {
                epsilon: crate::rules::STABILIZER,
            },
        }
    }

    /// The rule for the linear layer `node`: the first-layer rule where the
    /// composite has one and the node reads the model input, else the rule of
    /// its class (dense for `Gemm`/`MatMul`, conv for the rest).
    pub fn rule_for(&self, node: &Node) -> Rule {
        if let (true, Some(r)) = (node.first, self.first) {
            return r;
        }
        if node.op.linear().is_some_and(|l| l.dense()) {
            self.dense
        } else {
            self.conv
        }
    }
}
