//! The tract engine: for graphs the native engine does not run (operators
//! without a native forward, fake-quantized activations), and as a
//! cross-check of it. The plan returns the logits and every activation the
//! backward pass reads.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use ndarray::ArrayD;
use tract_onnx::prelude::*;

use super::Activations;

/// An optimised tract plan and the names of its outputs (logits first).
pub struct TractPlan {
    plan: Arc<TypedRunnableModel>,
    outputs: Vec<String>,
}

impl TractPlan {
    /// The optimised tract plan returning `outputs` (logits first) for an
    /// input of `shape`; `path` names the model in errors.
    pub fn new(
        onnx: &tract_onnx::Onnx,
        proto: &tract_onnx::pb::ModelProto,
        dir: Option<&str>,
        outputs: Vec<String>,
        shape: &[usize],
        path: &std::path::Path,
    ) -> Result<TractPlan> {
        let parsed = crate::guard::third_party("tract", || {
            onnx.parse(proto, dir).map_err(|e| anyhow!("{e:#}"))
        })
        .with_context(|| format!("tract cannot load model {}", path.display()))?;
        let outlets = outputs
            .iter()
            .map(|n| {
                parsed
                    .outlets_by_name
                    .get(n)
                    .copied()
                    .ok_or_else(|| anyhow!("tensor '{n}' not found in the tract model"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = parsed.model;
        let prepare = || -> TractResult<_> {
            model.set_input_fact(0, f32::fact(shape).into())?;
            model.select_output_outlets(&outlets)?;
            let options = tract_onnx::prelude::RunOptions {
                executor: Some(tract_linalg::multithread::Executor::RayonGlobal),
                ..Default::default()
            };
            // the memory check comes before optimisation, which allocates
            // in proportion to the image size
            let typed = model.into_typed()?;
            super::check_forward_memory(&typed, shape)?;
            typed.into_optimized()?.into_runnable_with_options(&options)
        };
        crate::guard::third_party("tract", || prepare().map_err(|e| anyhow!("{e:#}")))
            .with_context(|| {
                format!(
                    "tract cannot prepare model {} for input {:?}",
                    path.display(),
                    shape
                )
            })
            .map(|plan| TractPlan { plan, outputs })
    }

    /// The forward pass: the logits tensor and the activations.
    pub fn run(&self, input: &ArrayD<f32>) -> Result<(Option<ArrayD<f32>>, Activations)> {
        let t: Tensor = input.clone().into();
        let outs = crate::guard::third_party("tract", || {
            self.plan
                .run(tvec!(t.into_tvalue()))
                .map_err(|e| anyhow!("{e:#}"))
        })
        .context("forward pass")?;
        let mut activations = HashMap::new();
        let mut logits_tensor = None;
        for (name, v) in self.outputs.iter().zip(outs) {
            let t = v.into_tensor();
            let t = if t.datum_type() == f32::datum_type() {
                t
            } else {
                t.cast_to::<f32>().map_err(|e| anyhow!("{e}"))?.into_owned()
            };
            let a = t.into_plain_array::<f32>().map_err(|e| anyhow!("{e}"))?;
            if logits_tensor.is_none() {
                logits_tensor = Some(a);
            } else {
                activations.insert(name.clone(), a);
            }
        }
        Ok((logits_tensor, activations))
    }
}

/// Replaces, in every shape the file declares (graph outputs and the
/// `value_info` hints that shape inference tools write), the symbolic
/// dimensions of the image input (`batch`, `height`...) by the values fixed
/// for this run: tract would otherwise refuse to unify `batch` with 1.
pub(crate) fn pin_symbolic_dims(
    proto: &mut tract_onnx::pb::ModelProto,
    input: &str,
    shape: &[usize],
) {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let Some(g) = proto.graph.as_mut() else {
        return;
    };
    fn dims_of(
        v: &mut tract_onnx::pb::ValueInfoProto,
    ) -> Option<&mut Vec<tract_onnx::pb::tensor_shape_proto::Dimension>> {
        match v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => {
                t.shape.as_mut().map(|s| &mut s.dim)
            }
            _ => None,
        }
    }
    let mut pinned: HashMap<String, i64> = HashMap::new();
    if let Some(v) = g.input.iter_mut().find(|v| v.name == input) {
        if let Some(dims) = dims_of(v) {
            for (d, &n) in dims.iter().zip(shape) {
                if let Some(Value::DimParam(p)) = &d.value {
                    pinned.insert(p.clone(), n as i64);
                }
            }
        }
    }
    if pinned.is_empty() {
        return;
    }
    for v in g.output.iter_mut().chain(g.value_info.iter_mut()) {
        for d in dims_of(v).into_iter().flatten() {
            let fixed = match &d.value {
                Some(Value::DimParam(p)) => pinned.get(p.as_str()).copied(),
                _ => None,
            };
            if let Some(n) = fixed {
                d.value = Some(Value::DimValue(n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension::Value, Dimension},
        type_proto, GraphProto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    fn info(name: &str, dims: &[Value]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|v| Dimension {
                                value: Some(v.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn symbolic_dims_of_the_input_are_pinned_in_every_declared_shape() {
        // as onnxruntime's quant_pre_process writes them: value_info hints
        // with the input's symbolic batch
        let sym = |s: &str| Value::DimParam(s.into());
        let mut proto = ModelProto {
            graph: Some(GraphProto {
                input: vec![info(
                    "x",
                    &[sym("batch"), Value::DimValue(3), sym("h"), sym("w")],
                )],
                output: vec![info("y", &[sym("batch"), Value::DimValue(10)])],
                value_info: vec![info("t", &[sym("batch"), sym("other"), sym("h")])],
                ..Default::default()
            }),
            ..Default::default()
        };
        pin_symbolic_dims(&mut proto, "x", &[1, 3, 32, 48]);
        let g = proto.graph.unwrap();
        let dims = |v: &ValueInfoProto| -> Vec<Value> {
            let type_proto::Value::TensorType(t) =
                v.r#type.as_ref().unwrap().value.as_ref().unwrap();
            let shape = t.shape.as_ref().unwrap();
            shape.dim.iter().map(|d| d.value.clone().unwrap()).collect()
        };
        assert_eq!(
            dims(&g.output[0]),
            [Value::DimValue(1), Value::DimValue(10)]
        );
        // a symbol the input does not have stays symbolic
        assert_eq!(
            dims(&g.value_info[0]),
            [Value::DimValue(1), sym("other"), Value::DimValue(32)]
        );
    }
}
