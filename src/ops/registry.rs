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

/// One operator family.
pub struct Family {
    /// Name of the family (the file under `ops/`).
    pub name: &'static str,
    /// The ONNX operators it reads, each with how relevance goes through it.
    pub onnx: &'static [(&'static str, &'static str)],
    /// The importer of an [`Operator`] family (`None`: built in `model/onnx`).
    pub import: Option<Import>,
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
