//! The relevance ledger: where the relevance of one explanation goes, node by
//! node, and the guard rails read from it.
//!
//! Every node the backward pass goes through gets an [`Entry`]: the relevance
//! arriving at its output (`in`), what it hands to its inputs (`out`), and
//! what is not passed on, by cause (see [`crate::rules::Account`]). The books
//! balance per node, `in - out = bias + stabilizer + dropped - sign`, and over
//! the graph, `logit = input_sum + sum over nodes of (in - out)`;
//! [`Ledger::check`] measures both.

use ndarray::ArrayD;
use serde::Serialize;

use crate::ops::Flow;
use crate::rules::{flat, stabilize, zip_sums, Account, STABILIZER};

/// One node of the ledger.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// The node's name (for a concept mask: the masked tensor).
    pub node: String,
    /// Its ONNX operator type (`concept` for a concept mask).
    pub op: String,
    /// What kind of node it is, in words ("depthwise convolution").
    #[serde(skip)]
    pub kind: String,
    /// The rule of a linear layer; for other nodes how relevance goes
    /// through them: `norm` (in proportion), `pass`, `crop`, `mask`.
    pub rule: String,
    /// Sum of the relevance arriving at its output.
    #[serde(rename = "in")]
    pub r_in: f64,
    /// Sum of the relevance it hands to its inputs.
    pub out: f64,
    /// Absorbed by biases.
    pub bias: f64,
    /// Absorbed by the stabiliser.
    pub stabilizer: f64,
    /// Dropped where the rule has no denominator.
    pub dropped: f64,
    /// Created (positive) or destroyed (negative) by signs.
    pub sign: f64,
    /// Sum of |relevance| arriving at its output, or the sum of that of each
    /// part arriving (an upper bound; the scale of its books).
    #[serde(skip)]
    pub mass: f64,
    /// Why relevance is dropped here, in words.
    #[serde(skip)]
    pub dropped_because: &'static str,
}

impl Entry {
    /// `in - out - (bias + stabilizer + dropped - sign)`: zero up to rounding.
    pub fn residual(&self) -> f64 {
        let causes = crate::rules::Account {
            bias: self.bias,
            stabilizer: self.stabilizer,
            dropped: self.dropped,
            sign: self.sign,
        };
        (self.r_in - self.out) - causes.lost()
    }

    /// Whether nothing finite came in or went out.
    pub fn finite(&self) -> bool {
        self.r_in.is_finite() && self.out.is_finite()
    }

    /// How many times the relevance it hands on exceeds what it received
    /// (or `floor`, when it received less).
    pub fn gain(&self, floor: f64) -> f64 {
        self.out.abs() / self.r_in.abs().max(floor).max(f64::MIN_POSITIVE)
    }

    fn set(&mut self, a: Account) {
        self.bias = a.bias;
        self.stabilizer = a.stabilizer;
        self.dropped = a.dropped;
        self.sign = a.sign;
    }
}

/// Where the relevance of one explanation went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ledger {
    /// The relevance put on the output (the logit, or the start activations).
    pub logit: f64,
    /// Sum of the relevance reaching the model input.
    pub input_sum: f64,
    /// One entry per node the relevance went through, output first.
    pub nodes: Vec<Entry>,
}

/// `sum(a)` and `sum(|a|)` in f64 (f32 lanes within blocks of 256, which
/// the compiler vectorises, f64 across blocks; long arrays in parallel).
pub(crate) fn sums(a: &ArrayD<f32>) -> (f64, f64) {
    match a.as_slice_memory_order() {
        Some(s) => slice_sums(s),
        None => slice_sums(&a.iter().copied().collect::<Vec<_>>()),
    }
}

/// [`sums`] of each of `rows` equal parts of `a` in its standard (row-major)
/// order: per input of a batch stacked on axis 0.
pub(crate) fn row_sums(a: &ArrayD<f32>, rows: usize) -> Vec<(f64, f64)> {
    if rows <= 1 {
        return vec![sums(a)];
    }
    let s = flat(a);
    let len = s.len() / rows;
    s.chunks(len.max(1)).take(rows).map(slice_sums).collect()
}

/// [`sums`] of a slice.
fn slice_sums(s: &[f32]) -> (f64, f64) {
    fn block(s: &[f32]) -> (f64, f64) {
        let (mut t, mut m) = (0f64, 0f64);
        for b in s.chunks(256) {
            let (mut lt, mut lm) = ([0f32; 8], [0f32; 8]);
            let mut it = b.chunks_exact(8);
            for c in &mut it {
                for l in 0..8 {
                    lt[l] += c[l];
                    lm[l] += c[l].abs();
                }
            }
            for &v in it.remainder() {
                t += v as f64;
                m += (v as f64).abs();
            }
            t += lt.iter().map(|&v| v as f64).sum::<f64>();
            m += lm.iter().map(|&v| v as f64).sum::<f64>();
        }
        (t, m)
    }
    let f = |s: &[f32]| {
        if s.len() <= 1 << 16 {
            return block(s);
        }
        use rayon::prelude::*;
        s.par_chunks(1 << 15)
            .map(block)
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    f(s)
}

/// Sets the NaN and infinite values of `a` to 0; returns how many there were
/// (the guard rails warn about them, the map is still drawn).
pub(crate) fn zero_non_finite(a: &mut ArrayD<f32>) -> usize {
    let mut n = 0;
    a.mapv_inplace(|v| {
        if v.is_finite() {
            v
        } else {
            n += 1;
            0.0
        }
    });
    n
}

/// A ledger entry for a node that received relevance summing to `arrived`
/// (sum, sum of |.|) at its output and handed relevance summing to `out` to
/// its inputs.
pub(crate) fn entry(
    node: &str,
    op: &str,
    kind: String,
    rule: String,
    arrived: (f64, f64),
    out: f64,
) -> Entry {
    Entry {
        node: node.to_string(),
        op: op.to_string(),
        kind,
        rule,
        r_in: arrived.0,
        out,
        bias: 0.0,
        stabilizer: 0.0,
        dropped: 0.0,
        sign: 0.0,
        mass: arrived.1,
        dropped_because: "",
    }
}

/// Fills in the causes of `e` from how relevance flows through its node:
/// the rule's `account` for a linear layer; for a proportional operator
/// with output `z` (over `inputs` inputs) the stabiliser's share and the
/// outputs equal to zero; for constant padding what it cropped.
pub(crate) fn account(
    e: &mut Entry,
    flow: Flow,
    linear: Option<Account>,
    r: &[f32],
    z: Option<&[f32]>,
    inputs: usize,
) {
    match flow {
        Flow::Linear => {
            if let Some(a) = linear {
                e.set(a);
            }
        }
        Flow::Proportional { per_input } => {
            e.rule = "norm".into();
            e.dropped_because = "outputs equal to zero";
            let Some(z) = z.filter(|z| z.len() == r.len()) else {
                return;
            };
            let factor = if per_input { inputs as f32 } else { 1.0 };
            let [dropped, stabilizer] = zip_sums([r, z], |[r, z]| {
                let d = z * factor;
                let sd = stabilize(d, STABILIZER);
                if d == 0.0 {
                    [r, 0.0]
                } else {
                    [0.0, r * (sd - d) / sd]
                }
            });
            e.set(Account {
                dropped,
                stabilizer,
                ..Account::default()
            });
        }
        Flow::Crops => {
            e.rule = "crop".into();
            e.dropped_because = "padding";
            e.dropped = e.r_in - e.out;
        }
        Flow::Conserving => e.rule = "pass".into(),
    }
}

/// Why a rule drops relevance, in words.
pub(crate) fn dropped_because(rule: &crate::rules::Rule) -> &'static str {
    use crate::rules::Rule;
    match rule {
        Rule::ZPlus | Rule::AlphaBeta { .. } => "outputs without positive contribution",
        Rule::WSquare | Rule::Flat => "outputs without weights",
        Rule::Epsilon { .. } | Rule::Gamma { .. } | Rule::ZBox => "outputs with z = 0",
    }
}

/// The first non-finite entry's words, for a warning.
fn first_non_finite(nodes: &[Entry]) -> Option<&Entry> {
    nodes.iter().find(|e| !e.finite())
}

impl Ledger {
    /// `input_sum / logit`.
    pub fn ratio(&self) -> f64 {
        if self.logit == 0.0 {
            0.0
        } else {
            self.input_sum / self.logit
        }
    }

    /// The largest mismatch of the books relative to their scale: per node
    /// `|residual| / max(sum |R_in|, |in|, |out|)`, and over the graph
    /// `|logit - input_sum - sum (in - out)| / max(|logit|, |input_sum|)`.
    /// Returns the worst relative mismatch and where it is.
    pub fn worst_mismatch(&self) -> (f64, String) {
        let mut worst = (0.0, String::new());
        for e in &self.nodes {
            let scale = e.mass.max(e.r_in.abs()).max(e.out.abs());
            if scale > 0.0 {
                let m = e.residual().abs() / scale;
                // a NaN mismatch is the worst
                if m.is_nan() || m > worst.0 {
                    worst = (m, format!("{} node '{}' ({})", e.op, e.node, e.rule));
                }
            }
        }
        let lost: f64 = self.nodes.iter().map(|e| e.r_in - e.out).sum();
        let scale = self.logit.abs().max(self.input_sum.abs());
        if scale > 0.0 {
            let m = (self.logit - self.input_sum - lost).abs() / scale;
            if m.is_nan() || m > worst.0 {
                worst = (m, "the whole graph".to_string());
            }
        }
        worst
    }

    /// Whether the books balance to `tol` relative (see
    /// [`Ledger::worst_mismatch`]).
    pub fn check(&self, tol: f64) -> Result<(), String> {
        let (m, at) = self.worst_mismatch();
        if m <= tol {
            Ok(())
        } else {
            Err(format!("the ledger is off by {m:.2e} (relative) at {at}"))
        }
    }

    /// What the relevance not reaching the input went to, in one line, when
    /// the ratio is below 0.9 or above 1.1 (`None` otherwise), e.g.
    /// `lost: 68% dropped at 16 depthwise convolutions (outputs without
    /// positive contribution), 26% to biases`.
    pub fn summary(&self) -> Option<String> {
        let ratio = self.ratio();
        if self.logit == 0.0 || (0.9..=1.1).contains(&ratio) {
            return None;
        }
        // (words, amount lost, nodes)
        let mut groups: Vec<(String, f64, usize)> = Vec::new();
        let mut add = |words: String, v: f64| {
            if v == 0.0 {
                return;
            }
            match groups.iter_mut().find(|g| g.0 == words) {
                Some(g) => {
                    g.1 += v;
                    g.2 += 1;
                }
                None => groups.push((words, v, 1)),
            }
        };
        for e in &self.nodes {
            add("to biases".into(), e.bias);
            add("to the stabiliser".into(), e.stabilizer);
            if e.dropped != 0.0 {
                let because = if e.dropped_because.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.dropped_because)
                };
                add(format!("dropped at {{n}} {}{because}", e.kind), e.dropped);
            }
            add("by signs".into(), -e.sign);
        }
        let total = self.logit - self.input_sum;
        let head = if total >= 0.0 { "lost" } else { "gained" };
        let unit = self.logit.abs();
        groups.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let parts: Vec<String> = groups
            .iter()
            .filter(|g| g.1.abs() >= 0.01 * unit)
            .take(3)
            .map(|(words, v, n)| {
                let pct = 100.0 * v / unit * total.signum();
                let words = words.replace("{n}", &format!("{n}"));
                // plural of the kind of node
                let words = if *n == 1 { words } else { pluralise(&words) };
                if words == "by signs" {
                    let how = if *v < 0.0 { "created" } else { "destroyed" };
                    format!("{:.0}% {how} by signs", pct.abs())
                } else {
                    format!("{pct:.0}% {words}")
                }
            })
            .collect();
        Some(format!(
            "{head}: {} (ratio {ratio:.4})",
            if parts.is_empty() {
                "in many small parts".to_string()
            } else {
                parts.join(", ")
            }
        ))
    }

    /// The guard rails: non-finite relevance, `|input_sum| > 10 |logit|`,
    /// and nodes whose outgoing relevance is more than 10x their incoming
    /// (or a tenth of the logit, when they received less), each naming the
    /// node and its rule.
    pub fn warnings(&self, non_finite_values: usize) -> Vec<String> {
        let mut w = Vec::new();
        let name = |e: &Entry| format!("{} node '{}' ({})", e.op, e.node, e.rule);
        if non_finite_values > 0 || !self.input_sum.is_finite() {
            let at = first_non_finite(&self.nodes)
                .map(|e| format!(", first at {}", name(e)))
                .unwrap_or_default();
            w.push(format!(
                "non-finite relevance (NaN or Inf){at}: {non_finite_values} values of the map set to 0"
            ));
        }
        // below a tenth of the logit a node's relevance is mostly the
        // cancellation of both signs, whose sum means little
        let floor = 0.1 * self.logit.abs();
        let amplifiers: Vec<&Entry> = self
            .nodes
            .iter()
            .filter(|e| e.finite() && e.gain(floor) > 10.0)
            .collect();
        if self.input_sum.is_finite() && self.input_sum.abs() > 10.0 * self.logit.abs() {
            let worst = amplifiers
                .iter()
                .max_by(|a, b| a.gain(floor).total_cmp(&b.gain(floor)))
                .map(|e| format!("; amplified most at {}", name(e)))
                .unwrap_or_default();
            w.push(format!(
                "relevance sum {:.4e} is more than 10x the logit {:.4}{worst}",
                self.input_sum, self.logit
            ));
        }
        for e in amplifiers.iter().take(3) {
            w.push(format!(
                "{} passes on {:.4e} of the {:.4e} it received (more than 10x)",
                name(e),
                e.out,
                e.r_in
            ));
        }
        if amplifiers.len() > 3 {
            w.push(format!(
                "{} more nodes pass on more than 10x what they received",
                amplifiers.len() - 3
            ));
        }
        w
    }
}

/// "dropped at 16 depthwise convolution (...)" -> "... convolutions (...)".
fn pluralise(words: &str) -> String {
    match words.split_once(" (") {
        Some((head, tail)) => format!("{}s ({tail}", head),
        None if words.starts_with("dropped at") => format!("{words}s"),
        None => words.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, r_in: f64, out: f64, dropped: f64, bias: f64) -> Entry {
        Entry {
            node: "n".into(),
            op: "Conv".into(),
            kind: kind.into(),
            rule: "zplus".into(),
            r_in,
            out,
            bias,
            stabilizer: 0.0,
            dropped,
            sign: 0.0,
            mass: r_in.abs(),
            dropped_because: "outputs without positive contribution",
        }
    }

    #[test]
    fn the_summary_names_the_main_causes_and_the_books_balance() {
        // logit 10: 6.8 dropped at two depthwise convolutions, 2.6 to a bias,
        // 0.6 reaches the input
        let l = Ledger {
            logit: 10.0,
            input_sum: 0.6,
            nodes: vec![
                e("depthwise convolution", 10.0, 6.0, 4.0, 0.0),
                e("convolution", 6.0, 3.4, 0.0, 2.6),
                e("depthwise convolution", 3.4, 0.6, 2.8, 0.0),
            ],
        };
        assert_eq!(l.check(1e-12), Ok(()));
        assert_eq!(
            l.summary().unwrap(),
            "lost: 68% dropped at 2 depthwise convolutions (outputs without positive contribution), \
             26% to biases (ratio 0.0600)"
        );
        // a node that loses relevance it does not account for
        let mut bad = l.clone();
        bad.nodes[1].out = 3.0;
        assert!(bad.check(1e-4).unwrap_err().contains("node 'n'"));
        // within 10% of the logit: no summary
        let fine = Ledger {
            logit: 10.0,
            input_sum: 9.5,
            nodes: vec![e("convolution", 10.0, 9.5, 0.0, 0.5)],
        };
        assert_eq!(fine.summary(), None);
        assert!(fine.warnings(0).is_empty());
    }

    #[test]
    fn amplifying_nodes_and_non_finite_maps_are_warned_about() {
        let l = Ledger {
            logit: 1.0,
            input_sum: 50.0,
            nodes: vec![e("convolution", 1.0, 50.0, 0.0, -49.0)],
        };
        let w = l.warnings(0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("more than 10x the logit") && w[0].contains("Conv node 'n' (zplus)"));
        assert!(w[1].contains("passes on 5.0000e1 of the 1.0000e0"));
        let nan = Ledger {
            logit: 1.0,
            input_sum: f64::NAN,
            nodes: vec![e("convolution", 1.0, f64::NAN, 0.0, 0.0)],
        };
        assert!(nan.warnings(3)[0].starts_with("non-finite relevance (NaN or Inf), first at Conv"));
    }
}
