//! Checks on a model before anything is allocated for it: a hostile or
//! broken ONNX file must give an error naming the problem, never a panic, an
//! abort on a huge allocation or a read outside the model's folder.
//!
//! * [`check_tensors`]: every constant tensor (initializers, `Constant`
//!   nodes, sub-graphs) has a data type that can be loaded, sane dims, and
//!   exactly as much data as its dims declare, inline or in an external data
//!   file that exists inside the model's folder.
//! * node attributes that would make tract loop or allocate without bound
//!   (a `Transpose` whose `perm` is not a permutation) are refused;
//! * the memory of one forward pass is checked by the engines
//!   ([`crate::engine::MAX_FORWARD_BYTES`]).

use std::path::{Component, Path};

use anyhow::{anyhow, bail, ensure, Context, Result};
use tract_onnx::pb::{
    tensor_proto, tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto,
};

/// Checks every constant tensor of `model`; `dir` is the model's folder
/// (where external data files are), `None` for a model read from memory.
pub fn check_tensors(model: &ModelProto, dir: Option<&Path>) -> Result<()> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the file holds no graph"))?;
    check_graph(g, dir)
}

fn check_graph(g: &GraphProto, dir: Option<&Path>) -> Result<()> {
    for t in &g.initializer {
        check_tensor(t, dir).with_context(|| format!("initializer '{}'", t.name))?;
    }
    for n in &g.node {
        check_node(n).with_context(|| format!("node '{}' ({})", n.name, n.op_type))?;
        for a in &n.attribute {
            let what = || {
                format!(
                    "attribute '{}' of node '{}' ({})",
                    a.name, n.name, n.op_type
                )
            };
            for t in a.t.iter().chain(&a.tensors) {
                check_tensor(t, dir).with_context(what)?;
            }
            for sub in a.g.iter().chain(&a.graphs) {
                check_graph(sub, dir).with_context(what)?;
            }
        }
    }
    Ok(())
}

/// Attribute checks that keep tract from looping or allocating without
/// bound on a malformed node (whether or not it is on the image's path).
fn check_node(n: &NodeProto) -> Result<()> {
    if n.op_type == "Transpose" {
        if let Some(a) = n.attribute.iter().find(|a| a.name == "perm") {
            // tract follows the permutation's cycles: one that is not a
            // permutation never closes (a fuzz finding)
            let mut seen = vec![false; a.ints.len()];
            for &p in &a.ints {
                let slot = usize::try_from(p).ok().and_then(|p| seen.get_mut(p));
                match slot {
                    Some(s) if !*s => *s = true,
                    _ => bail!("perm {:?} is not a permutation", a.ints),
                }
            }
        }
    }
    Ok(())
}

/// Bytes per element of the data types tract can load from raw bytes.
fn element_size(dt: DataType) -> Option<u64> {
    use DataType::*;
    Some(match dt {
        Bool | Uint8 | Int8 => 1,
        Uint16 | Int16 | Float16 => 2,
        Uint32 | Int32 | Float => 4,
        Uint64 | Int64 | Double => 8,
        _ => return None,
    })
}

fn check_tensor(t: &TensorProto, dir: Option<&Path>) -> Result<()> {
    let dt = DataType::try_from(t.data_type)
        .map_err(|_| anyhow!("unknown data type {}", t.data_type))?;
    let mut count: u64 = 1;
    for &d in &t.dims {
        ensure!(d >= 0, "negative dimension in dims {:?}", t.dims);
        count = count
            .checked_mul(d as u64)
            .ok_or_else(|| anyhow!("dims {:?} overflow", t.dims))?;
    }
    let external = t.data_location == Some(tensor_proto::DataLocation::External as i32);
    if dt == DataType::String {
        ensure!(
            t.raw_data.is_empty() && !external,
            "string tensors must hold their strings inline"
        );
        ensure!(
            t.string_data.len() as u64 == count,
            "dims {:?} hold {count} strings, the tensor has {}",
            t.dims,
            t.string_data.len()
        );
        return Ok(());
    }
    let size = element_size(dt)
        .ok_or_else(|| anyhow!("data type {} is not supported", dt.as_str_name()))?;
    let bytes = count
        .checked_mul(size)
        .ok_or_else(|| anyhow!("dims {:?} overflow", t.dims))?;
    let mismatch = |have: u64, unit: &str| {
        anyhow!(
            "dims {:?} of {} declare {count} elements ({bytes} bytes), the data has {have} {unit}",
            t.dims,
            dt.as_str_name()
        )
    };
    if !t.raw_data.is_empty() {
        ensure!(
            t.raw_data.len() as u64 == bytes,
            mismatch(t.raw_data.len() as u64, "bytes")
        );
    } else if external {
        check_external(t, dir, bytes).map_err(|e| {
            let loc = entry(t, "location").unwrap_or("?");
            e.context(format!("external data '{loc}'"))
        })?;
    } else {
        use DataType::*;
        let have = match dt {
            Float => t.float_data.len(),
            Double => t.double_data.len(),
            Int64 | Uint64 => t.int64_data.len(),
            _ => t.int32_data.len(),
        } as u64;
        ensure!(have == count, mismatch(have, "elements"));
    }
    Ok(())
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

fn check_external(t: &TensorProto, dir: Option<&Path>, bytes: u64) -> Result<()> {
    let location = entry(t, "location").ok_or_else(|| anyhow!("no location given"))?;
    let rel = Path::new(location);
    ensure!(
        !location.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "the location must be a file name relative to the model's folder, without '..'"
    );
    let Some(dir) = dir else {
        bail!("a model read from memory cannot have external data");
    };
    let number = |key: &str| -> Result<Option<u64>> {
        entry(t, key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| anyhow!("{key} '{v}' is not a number"))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let path = dir.join(rel);
    let meta =
        std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(meta.is_file(), "{} is not a regular file", path.display());
    let available = meta.len().saturating_sub(offset);
    let length = length.unwrap_or(available);
    ensure!(
        offset
            .checked_add(length)
            .is_some_and(|end| end <= meta.len()),
        "{} has {} bytes, the tensor is stored at bytes {offset}..{}",
        path.display(),
        meta.len(),
        offset.saturating_add(length)
    );
    ensure!(
        length == bytes,
        "the tensor's dims {:?} declare {bytes} bytes, the external data has {length}",
        t.dims
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::StringStringEntryProto;

    fn floats(dims: &[i64], raw: usize) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: vec![0; raw],
            ..Default::default()
        }
    }

    fn err(t: &TensorProto, dir: Option<&Path>) -> String {
        format!("{:#}", check_tensor(t, dir).unwrap_err())
    }

    #[test]
    fn inline_data_must_match_the_dims() {
        assert!(check_tensor(&floats(&[2, 3], 24), None).is_ok());
        assert!(err(&floats(&[2, 3], 20), None).contains("the data has 20 bytes"));
        assert!(err(&floats(&[1 << 40, 1 << 40], 4), None).contains("overflow"));
        assert!(err(&floats(&[-1, 3], 12), None).contains("negative"));
        let mut t = floats(&[3], 0);
        t.float_data = vec![1.0, 2.0];
        assert!(err(&t, None).contains("the data has 2 elements"));
        t.float_data.push(3.0);
        assert!(check_tensor(&t, None).is_ok());
        let mut t = floats(&[2], 16);
        t.data_type = DataType::Int64 as i32;
        assert!(check_tensor(&t, None).is_ok());
        t.data_type = DataType::Complex64 as i32;
        assert!(err(&t, None).contains("not supported"));
        t.data_type = 999;
        assert!(err(&t, None).contains("unknown data type"));
        let mut t = floats(&[2], 8);
        t.data_type = DataType::String as i32;
        assert!(err(&t, None).contains("inline"));
        t.raw_data.clear();
        t.string_data = vec![b"a".to_vec(), b"b".to_vec()];
        assert!(check_tensor(&t, None).is_ok());
    }

    fn external(location: &str, offset: u64, length: Option<u64>) -> TensorProto {
        let mut t = floats(&[4], 0);
        t.data_location = Some(tensor_proto::DataLocation::External as i32);
        let mut e = vec![
            ("location", location.to_string()),
            ("offset", offset.to_string()),
        ];
        if let Some(l) = length {
            e.push(("length", l.to_string()));
        }
        t.external_data = e
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v,
            })
            .collect();
        t
    }

    #[test]
    fn external_data_must_exist_inside_the_folder_and_fit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("w.bin"), [0u8; 20]).unwrap();
        let dir = Some(d.path());
        assert!(check_tensor(&external("w.bin", 4, Some(16)), dir).is_ok());
        assert!(check_tensor(&external("w.bin", 4, None), dir).is_ok());
        assert!(check_tensor(&external("./w.bin", 0, Some(16)), dir).is_ok());
        assert!(err(&external("w.bin", 8, Some(16)), dir).contains("bytes 8..24"));
        assert!(err(&external("w.bin", 0, Some(12)), dir).contains("declare 16 bytes"));
        assert!(err(&external("w.bin", 0, None), dir).contains("declare 16 bytes"));
        assert!(err(&external("missing.bin", 0, None), dir).contains("missing.bin"));
        for escape in ["../w.bin", "/abs/w.bin", "a/../../w.bin", ""] {
            assert!(
                err(&external(escape, 0, None), dir).contains("relative"),
                "{escape}"
            );
        }
        assert!(err(&external("w.bin", 0, None), None).contains("from memory"));
        let mut t = external("w.bin", 0, None);
        t.external_data[1].value = "x".into();
        assert!(err(&t, dir).contains("offset 'x'"));
    }
}
