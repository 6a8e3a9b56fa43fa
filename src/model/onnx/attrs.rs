//! Reading node attributes, and the window geometry of convolutions and pools.

use anyhow::{anyhow, bail, ensure, Result};
use tract_onnx::pb::{self, NodeProto};

use crate::graph::Pool;
use crate::ops::conv::{Padding, Window};

pub(super) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

pub(super) fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

pub(super) fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

pub(super) fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub(super) fn pair(v: &[i64], what: &str, node: &str) -> Result<[usize; 2]> {
    ensure!(
        v.len() == 2,
        "node '{node}': only 2-D {what} are supported, got {v:?}"
    );
    ensure!(
        v.iter().all(|&x| x > 0),
        "node '{node}': {what} must be positive, got {v:?}"
    );
    Ok([v[0] as usize, v[1] as usize])
}

/// Reads the window attributes shared by `Conv` and the pools.
pub(super) fn window(node: &NodeProto, name: &str, kernel: [usize; 2]) -> Result<Window> {
    let strides = attr_ints(node, "strides").map_or(Ok([1, 1]), |v| pair(&v, "strides", name))?;
    let dilations =
        attr_ints(node, "dilations").map_or(Ok([1, 1]), |v| pair(&v, "dilations", name))?;
    let auto = attr_s(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let padding = match auto.as_str() {
        "SAME_UPPER" => Padding::SameUpper,
        "SAME_LOWER" => Padding::SameLower,
        "VALID" => Padding::Explicit([0; 4]),
        "NOTSET" | "" => {
            let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
            ensure!(
                p.len() == 4 && p.iter().all(|&x| x >= 0),
                "node '{name}': pads {p:?} not supported"
            );
            Padding::Explicit([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
        }
        other => bail!("node '{name}': auto_pad '{other}' not supported"),
    };
    Ok(Window {
        kernel,
        strides,
        dilations,
        padding,
    })
}

pub(super) fn pool(node: &NodeProto, name: &str) -> Result<Pool> {
    let k =
        attr_ints(node, "kernel_shape").ok_or_else(|| anyhow!("node '{name}': no kernel_shape"))?;
    let kernel = pair(&k, "kernels", name)?;
    let window = window(node, name, kernel)?;
    // as onnxruntime and PyTorch require: a window that could lie wholly in
    // the padding has no maximum (and no average)
    if let Padding::Explicit(p) = window.padding {
        ensure!(
            p[0] < kernel[0] && p[2] < kernel[0] && p[1] < kernel[1] && p[3] < kernel[1],
            "node '{name}': pads {p:?} not smaller than the kernel {kernel:?}"
        );
    }
    Ok(Pool {
        window,
        count_include_pad: attr_i(node, "count_include_pad", 0) != 0,
        ceil_mode: attr_i(node, "ceil_mode", 0) != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(attrs: &[(&str, Vec<i64>)], ints: &[(&str, i64)]) -> NodeProto {
        let mut n = NodeProto::default();
        for (k, v) in attrs {
            n.attribute.push(pb::AttributeProto {
                name: k.to_string(),
                ints: v.clone(),
                ..Default::default()
            });
        }
        for (k, v) in ints {
            n.attribute.push(pb::AttributeProto {
                name: k.to_string(),
                i: *v,
                ..Default::default()
            });
        }
        n
    }

    #[test]
    fn pool_attributes() {
        // torchvision GoogLeNet's inception pool: MaxPool2d(3, 1, 1, ceil_mode=True)
        let n = node(
            &[
                ("kernel_shape", vec![3, 3]),
                ("strides", vec![1, 1]),
                ("pads", vec![1; 4]),
            ],
            &[("ceil_mode", 1), ("count_include_pad", 1)],
        );
        let p = pool(&n, "inception").unwrap();
        assert!(p.ceil_mode && p.count_include_pad);
        assert_eq!(p.window.padding, Padding::Explicit([1; 4]));
        // absent: floor mode, padding not counted
        let n = node(&[("kernel_shape", vec![2, 2])], &[]);
        let p = pool(&n, "plain").unwrap();
        assert!(!p.ceil_mode && !p.count_include_pad);
        // a pad as large as the kernel is refused, naming the node
        let n = node(
            &[("kernel_shape", vec![2, 3]), ("pads", vec![0, 3, 0, 0])],
            &[],
        );
        let e = pool(&n, "wide").unwrap_err().to_string();
        assert!(e.contains("'wide'") && e.contains("pads"), "{e}");
    }
}
