//! The operator registry: every operator family and the ONNX operators it
//! reads, listed once. `inspect` prints it, the importer builds operators
//! through it, and tests check it against the README's operator table.
//!
//! Every family is one file under `ops/`: its [`Family`] (the ONNX
//! operators it reads, its import, its fuse of exporters' decomposed
//! forms) and its [`Operator`]s (shape, forward, relevance, gradient and
//! the facts the self-check, the ledger, batching and canonization need).
//! Its name in the `families!` line of `ops/mod.rs` lists it in
//! [`FAMILIES`]: the importer builds its operators through
//! [`Family::import`], the native engine runs their forward pass, and the
//! backward walk calls their relevance and gradient.

use anyhow::Result;
use ndarray::ArrayD;
use tract_onnx::pb::NodeProto;

use super::{Op, Operator, FAMILIES};

/// An input of a node that does not carry the image signal.
pub enum Operand {
    /// Not given (optional input left out or named "").
    Absent,
    /// A constant (initializer or `Constant` node).
    Const(ArrayD<f32>),
    /// Computed at run time (by nodes that do not depend on the image).
    Computed,
}

/// What an [`Operator`]'s import sees of its ONNX node.
pub struct OnnxNode<'a> {
    /// The node as written in the file.
    pub node: &'a NodeProto,
    /// Which inputs are activations (`true`) rather than constants.
    pub is_activation: Vec<bool>,
    /// Input `i` as a parameter: absent, constant or computed at run time.
    pub operand: &'a dyn Fn(usize) -> Result<Operand>,
    /// The model's ONNX opset.
    pub opset: i64,
    /// Which of the node's outputs this graph node computes (a `Split`
    /// becomes one graph node per output).
    pub output: usize,
}

impl OnnxNode<'_> {
    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&tract_onnx::pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// The integer attribute `name`, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    /// The float attribute `name`, or `default`.
    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    /// The integer-list attribute `name`, if present.
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// The string attribute `name`, if present.
    pub fn attr_string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// Whether input `i` is present (not missing, not the empty name).
    pub fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    /// The value of the constant input `i` (`None` for activations and
    /// absent inputs; an error for a parameter computed at run time).
    pub fn constant(&self, i: usize) -> Result<Option<ArrayD<f32>>> {
        if self.is_act(i) {
            return Ok(None);
        }
        match (self.operand)(i)? {
            Operand::Const(c) => Ok(Some(c)),
            Operand::Absent => Ok(None),
            Operand::Computed => {
                let name = self.node.input.get(i).map_or("", String::as_str);
                anyhow::bail!(
                    "parameter '{name}' is not a constant (computed weights are not supported)"
                )
            }
        }
    }

    /// Whether input `i` carries the image signal.
    pub fn is_act(&self, i: usize) -> bool {
        self.is_activation.get(i).copied().unwrap_or(false)
    }

    /// How many inputs carry the image signal.
    pub fn activations(&self) -> usize {
        self.is_activation.iter().filter(|&&a| a).count()
    }

    /// Whether every input is an activation (none a constant).
    pub fn all_activations(&self) -> bool {
        !self.is_activation.is_empty() && self.is_activation.iter().all(|&a| a)
    }

    /// The ONNX operator type.
    pub fn op_type(&self) -> &str {
        &self.node.op_type
    }
}

/// What an import makes of a node: its operator, and which of the node's
/// inputs it reads at run time as parameters (pads, scales, indices the
/// model computes from shapes: the graph node reads them from the forward
/// pass, after its activations, in this order).
pub struct Imported {
    /// The operator.
    pub op: Op,
    /// Indices of the node's inputs read at run time.
    pub runtime: Vec<usize>,
}

impl<T: Operator + 'static> From<T> for Imported {
    fn from(op: T) -> Imported {
        Imported {
            op: Op::new(op),
            runtime: vec![],
        }
    }
}

impl From<Op> for Imported {
    fn from(op: Op) -> Imported {
        Imported {
            op,
            runtime: vec![],
        }
    }
}

/// Builds an operator from its ONNX node; its errors say why the node is
/// not supported (the importer names the operator and the node).
pub type Import = fn(&OnnxNode) -> Result<Imported>;

/// Rewrites the decomposed form of a family's operator, as an exporter
/// writes it (a chain of elementary ONNX nodes), into one node of the
/// operator's own type, before the import: the TorchScript exporter writes
/// `LayerNormalization` as `ReduceMean`, `Sub`, `Pow`, ... and `Gelu` as
/// `Div`, `Erf`, `Add`, `Mul`, `Mul`.
pub type Fuse = fn(&mut ProtoGraph) -> Result<()>;

/// The nodes of an ONNX graph (in an order where each node follows its
/// inputs' producers) with what a [`Fuse`] reads of them.
pub struct ProtoGraph<'a> {
    /// The nodes; a fuse replaces some with one node.
    pub nodes: Vec<NodeProto>,
    /// The value of a constant tensor (initializer or `Constant` node).
    pub constant: &'a dyn Fn(&str) -> Option<ArrayD<f32>>,
    /// Tensors read outside the nodes (the graph's outputs).
    pub outputs: Vec<String>,
}

impl ProtoGraph<'_> {
    /// The index of the node producing `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.output.iter().any(|o| o == tensor))
    }

    /// The indices of the nodes reading `tensor`, and whether a graph output
    /// reads it too.
    pub fn readers(&self, tensor: &str) -> (Vec<usize>, bool) {
        let nodes = (self.nodes.iter().enumerate())
            .filter(|(_, n)| n.input.iter().any(|i| i == tensor))
            .map(|(i, _)| i)
            .collect();
        (nodes, self.outputs.iter().any(|o| o == tensor))
    }

    /// The one node reading `tensor` (none else, no graph output), if so.
    pub fn only_reader(&self, tensor: &str) -> Option<usize> {
        match self.readers(tensor) {
            (r, false) if r.len() == 1 => Some(r[0]),
            _ => None,
        }
    }

    /// The single value of the constant `tensor` (a scalar or one element).
    pub fn scalar(&self, tensor: &str) -> Option<f32> {
        let c = (self.constant)(tensor)?;
        (c.len() == 1).then(|| c.iter().copied().next().unwrap_or(0.0))
    }

    /// For a node of two inputs, one of them the constant-valued tensor
    /// `want(value)` accepts: the other input and the constant's name.
    pub fn with_constant(
        &self,
        node: &NodeProto,
        want: impl Fn(&ArrayD<f32>) -> bool,
    ) -> Option<(String, String)> {
        if node.input.len() != 2 {
            return None;
        }
        for (k, other) in [(1, 0), (0, 1)] {
            let c = &node.input[k];
            if (self.constant)(c).is_some_and(|v| want(&v))
                && (self.constant)(&node.input[other]).is_none()
            {
                return Some((node.input[other].clone(), c.clone()));
            }
        }
        None
    }

    /// Replaces the nodes `remove` by `node`, at the place of the last of
    /// them (its inputs are computed before it).
    pub fn replace(&mut self, remove: &[usize], node: NodeProto) {
        let at = remove.iter().copied().max().unwrap_or(self.nodes.len());
        let mut kept = Vec::with_capacity(self.nodes.len());
        for (i, n) in std::mem::take(&mut self.nodes).into_iter().enumerate() {
            if i == at {
                kept.push(node.clone());
            } else if !remove.contains(&i) {
                kept.push(n);
            }
        }
        self.nodes = kept;
    }
}

/// `f` of the node `node` whose first input is the one activation and whose
/// other inputs are absent (for tests of attribute parsing).
#[cfg(test)]
pub(crate) fn with_node<T>(node: &NodeProto, f: impl FnOnce(&OnnxNode) -> T) -> T {
    let absent = |_: usize| -> Result<Operand> { Ok(Operand::Absent) };
    f(&OnnxNode {
        node,
        is_activation: vec![true],
        operand: &absent,
        opset: 17,
        output: 0,
    })
}

/// Runs every family's [`Fuse`] over `graph`.
pub fn fuse_all(graph: &mut ProtoGraph) -> Result<()> {
    for f in FAMILIES {
        if let Some(fuse) = f.fuse {
            fuse(graph)?;
        }
    }
    Ok(())
}

/// One operator family.
pub struct Family {
    /// Name of the family (the file under `ops/`).
    pub name: &'static str,
    /// The ONNX operators it reads, each with how relevance goes through it.
    pub onnx: &'static [(&'static str, &'static str)],
    /// Builds the family's operators from their ONNX nodes.
    pub import: Import,
    /// What it makes of the decomposed forms exporters write of its
    /// operators (`None`: nothing).
    pub fuse: Option<Fuse>,
}

/// How relevance goes through the ONNX operator `op_type` (`None`: no family reads it).
pub fn handling(op_type: &str) -> Option<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.onnx.iter())
        .find(|(o, _)| *o == op_type)
        .map(|(_, h)| *h)
}

/// Every ONNX operator some family reads, with its handling, in table order.
pub fn operators() -> impl Iterator<Item = (&'static str, &'static str)> {
    FAMILIES.iter().flat_map(|f| f.onnx.iter().copied())
}

/// The importer of the family reading `op_type`, if one does.
pub fn importer(op_type: &str) -> Option<Import> {
    FAMILIES
        .iter()
        .find(|f| f.onnx.iter().any(|(o, _)| *o == op_type))
        .map(|f| f.import)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_onnx_operator_is_read_by_one_family() {
        let all: Vec<&str> = operators().map(|(o, _)| o).collect();
        for (k, o) in all.iter().enumerate() {
            assert!(!all[k + 1..].contains(o), "{o} is listed twice");
        }
        assert!(handling("Conv").is_some() && handling("LSTM").is_none());
    }

    #[test]
    fn the_readme_table_names_every_registered_operator() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("| operator | LRP (relevance) | gradient |")
            .expect("table");
        let end = start + readme[start..].find("\n\n").expect("table end");
        let table = &readme[start..end];
        for (o, _) in operators() {
            let named = table
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word == o);
            assert!(named, "README's operator table does not name {o}");
        }
    }
}
