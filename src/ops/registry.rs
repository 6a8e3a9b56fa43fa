//! The operator registry: every operator family and the ONNX operators it
//! reads, listed once. `inspect` prints it, the importer builds operators
//! through it, and tests check it against the importer and the README's
//! operator table.
//!
//! A family written as an [`Operator`] (one file under `ops/` holding its
//! import, shape, forward, relevance and gradient) needs only its name in
//! the `families!` line of `ops/mod.rs`, which lists it in [`FAMILIES`]:
//! the importer builds it through [`Family::import`], the native engine
//! runs its forward pass, and the backward walk calls its relevance and
//! gradient (`mean.rs`, `global_pool.rs`, `concat.rs`, `reduce.rs`). The older families
//! are variants of [`super::Op`] whose import lives in `model/onnx` and
//! whose forward pass lives in `engine/native.rs`; they are listed here for
//! their descriptions.

use std::sync::Arc;

use anyhow::Result;
use ndarray::ArrayD;
use tract_onnx::pb::NodeProto;

use super::{Operator, FAMILIES};

/// What an [`Operator`]'s import sees of its ONNX node.
pub struct OnnxNode<'a> {
    /// The node as written in the file.
    pub node: &'a NodeProto,
    /// Which inputs are activations (`true`) rather than constants.
    pub is_activation: Vec<bool>,
    /// The value of a constant input (`None` for activations and absent inputs).
    pub constant: &'a dyn Fn(usize) -> Result<Option<ArrayD<f32>>>,
    /// The model's ONNX opset.
    pub opset: i64,
}

impl OnnxNode<'_> {
    /// The integer attribute `name`, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.node
            .attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.i)
    }

    /// The integer-list attribute `name`, if present.
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    }

    /// Whether input `i` is present (not missing, not the empty name).
    pub fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    /// Whether every input is an activation (none a constant).
    pub fn all_activations(&self) -> bool {
        !self.is_activation.is_empty() && self.is_activation.iter().all(|&a| a)
    }
}

/// Builds an operator from its ONNX node.
pub type Import = fn(&OnnxNode) -> Result<Arc<dyn Operator>>;

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
    /// The importer of an [`Operator`] family (`None`: built in `model/onnx`).
    pub import: Option<Import>,
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

/// The importer of the [`Operator`] family reading `op_type`, if one does.
pub fn importer(op_type: &str) -> Option<Import> {
    FAMILIES
        .iter()
        .find(|f| f.onnx.iter().any(|(o, _)| *o == op_type))
        .and_then(|f| f.import)
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
