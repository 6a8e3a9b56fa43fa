//! Minimal NumPy `.npy` reader/writer for little-endian `f32` arrays.
//!
//! Only what the tool needs: dtype `'<f4'`, C order. Files written by
//! [`write_npy_f32`] load with `numpy.load` unchanged.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};

use crate::output::write_atomic;

/// The six magic bytes that start every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Total header length (magic + version + length field + dict) is padded to a
/// multiple of this, as NumPy does.
const HEADER_ALIGN: usize = 64;

/// Builds the complete header (magic, version, length, dict, padding, '\n').
fn build_header(shape: &[usize]) -> Vec<u8> {
    let shape_str = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");

    // Version 1.0 has a u16 length field (prefix 10 bytes); fall back to 2.0
    // (u32 length, prefix 12 bytes) for absurdly long shapes, like NumPy.
    let padded = |prefix: usize| (prefix + dict.len() + 1).div_ceil(HEADER_ALIGN) * HEADER_ALIGN;
    let (major, prefix) = if padded(10) - 10 <= u16::MAX as usize {
        (1u8, 10usize)
    } else {
        (2u8, 12usize)
    };
    let total = padded(prefix);
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(major);
    out.push(0);
    if major == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' '); // +1 below for the final '\n'
    out.push(b'\n');
    out
}

/// Writes `data` (C order, shape `shape`) as a NumPy `.npy` file.
///
/// Format version 1.0 (2.0 only if the header would not fit), dtype `'<f4'`,
/// `fortran_order: False`; the header is padded with spaces and terminated by
/// `'\n'` so that magic + version + length + dict is a multiple of 64 bytes.
/// The file is written atomically via [`write_atomic`]. Fails when the
/// product of `shape` differs from `data.len()` (an empty `shape` means a
/// scalar, i.e. one element).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> anyhow::Result<()> {
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            anyhow!(
                "cannot write {}: shape {:?} overflows",
                path.display(),
                shape
            )
        })?;
    if count != data.len() {
        bail!(
            "cannot write {}: shape {:?} has {} elements but {} values were given",
            path.display(),
            shape,
            count,
            data.len()
        );
    }
    let header = build_header(shape);
    write_atomic(path, |w: &mut dyn Write| {
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(4 * 4096);
        for chunk in data.chunks(4096) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// A value of the tiny Python-literal subset used in `.npy` headers.
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<PyValue>),
    None,
}

/// Recursive-descent parser for the header dict.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> anyhow::Result<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => bail!(
                "expected '{}' at offset {}, found '{}'",
                c as char,
                self.pos,
                x as char
            ),
            None => bail!("expected '{}' but the header ended", c as char),
        }
    }

    fn value(&mut self) -> anyhow::Result<PyValue> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos] != q {
                    self.pos += 1;
                }
                if self.pos >= self.s.len() {
                    bail!("unterminated string");
                }
                let text = std::str::from_utf8(&self.s[start..self.pos])
                    .map_err(|_| anyhow!("string is not valid UTF-8"))?
                    .to_string();
                self.pos += 1;
                Ok(PyValue::Str(text))
            }
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => bail!("malformed tuple at offset {}", self.pos),
                    }
                }
                Ok(PyValue::Tuple(items))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                // Python 2 era files may write long integers as `3L`.
                let digits = std::str::from_utf8(&self.s[start..self.pos])?;
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Ok(PyValue::Int(
                    digits
                        .parse()
                        .map_err(|_| anyhow!("integer {digits} out of range"))?,
                ))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(PyValue::Bool(true)),
                    b"False" => Ok(PyValue::Bool(false)),
                    b"None" => Ok(PyValue::None),
                    other => bail!("unexpected word '{}'", String::from_utf8_lossy(other)),
                }
            }
            Some(c) => bail!(
                "unexpected character '{}' at offset {}",
                c as char,
                self.pos
            ),
            None => bail!("header ended unexpectedly"),
        }
    }

    fn dict(&mut self) -> anyhow::Result<Vec<(String, PyValue)>> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            let key = match self.value()? {
                PyValue::Str(s) => s,
                other => bail!("dictionary key must be a string, found {other:?}"),
            };
            self.expect(b':')?;
            let val = self.value()?;
            entries.push((key, val));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => bail!("malformed dictionary at offset {}", self.pos),
            }
        }
        if self.peek().is_some() {
            bail!("trailing characters after the dictionary");
        }
        Ok(entries)
    }
}

/// Parses the header dict text into (shape) after validating dtype/order.
fn parse_header(text: &[u8]) -> anyhow::Result<Vec<usize>> {
    let entries = Parser { s: text, pos: 0 }.dict()?;
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow!("header has no '{k}' entry"))
    };
    match get("descr")? {
        PyValue::Str(d) if d == "<f4" => {}
        PyValue::Str(d) => bail!("unsupported dtype '{d}' (only '<f4', little-endian float32)"),
        other => bail!("unsupported dtype {other:?} (only '<f4')"),
    }
    match get("fortran_order")? {
        PyValue::Bool(false) => {}
        PyValue::Bool(true) => bail!("Fortran-ordered arrays are not supported (only C order)"),
        other => bail!("invalid fortran_order {other:?}"),
    }
    match get("shape")? {
        PyValue::Tuple(items) => items
            .iter()
            .map(|v| match v {
                PyValue::Int(n) => {
                    usize::try_from(*n).map_err(|_| anyhow!("dimension {n} too large"))
                }
                other => Err(anyhow!("invalid dimension {other:?} in shape")),
            })
            .collect(),
        other => bail!("invalid shape {other:?}"),
    }
}

/// Reads a `.npy` file of dtype `'<f4'` in C order.
///
/// Accepts format versions 1.0, 2.0 and 3.0 (3.0 only differs by a UTF-8
/// header). Returns the shape and the data in C order. Errors (naming the
/// file) for other dtypes, Fortran order, a malformed header, or a data
/// section whose size does not match the shape.
pub fn read_npy_f32(path: &Path) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("invalid .npy file {}", path.display()))
}

/// Parses an in-memory `.npy` file (see [`read_npy_f32`]).
fn parse_npy(bytes: &[u8]) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not a NumPy .npy file (bad magic)");
    }
    let (header_len, prefix) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("file truncated in the header");
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (
                usize::try_from(n).map_err(|_| anyhow!("header too large"))?,
                12usize,
            )
        }
        v => bail!("unsupported .npy format version {}.{}", v, bytes[7]),
    };
    let data_start = prefix
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| anyhow!("file truncated in the header"))?;
    let shape = parse_header(&bytes[prefix..data_start])?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("shape {shape:?} overflows"))?;
    let data = &bytes[data_start..];
    let expected = count
        .checked_mul(4)
        .ok_or_else(|| anyhow!("shape {shape:?} overflows"))?;
    if data.len() != expected {
        bail!(
            "shape {:?} needs {} data bytes but the file has {}",
            shape,
            expected,
            data.len()
        );
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        write_npy_f32(&p, &[3, 2, 2], &data).unwrap();
        let (shape, back) = read_npy_f32(&p).unwrap();
        assert_eq!(shape, vec![3, 2, 2]);
        assert_eq!(back, data);
        // Special values survive bit-exactly.
        let special = [f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE];
        write_npy_f32(&p, &[4], &special).unwrap();
        let (shape, back) = read_npy_f32(&p).unwrap();
        assert_eq!(shape, vec![4]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&special));
    }

    #[test]
    fn header_is_multiple_of_64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.npy");
        for shape in [
            vec![],
            vec![0],
            vec![5],
            vec![1, 3, 224, 224],
            vec![1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 1, 2, 1000],
        ] {
            let n: usize = shape.iter().product();
            write_npy_f32(&p, &shape, &vec![1.0; n]).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + hlen) % 64, 0, "shape {shape:?}");
            assert_eq!(bytes[10 + hlen - 1], b'\n');
            assert_eq!(bytes.len(), 10 + hlen + 4 * n);
            let (s, d) = read_npy_f32(&p).unwrap();
            assert_eq!(s, shape);
            assert_eq!(d.len(), n);
        }
    }

    #[test]
    fn exact_header_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        write_npy_f32(&p, &[3, 2, 2], &[0.0; 12]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2), }";
        // 10-byte prefix + 61-byte dict + '\n' = 72 -> padded to 128.
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x93NUMPY\x01\x00");
        expected.extend_from_slice(&118u16.to_le_bytes());
        expected.extend_from_slice(dict.as_bytes());
        expected.resize(127, b' ');
        expected.push(b'\n');
        assert_eq!(&bytes[..128], &expected[..]);
        assert_eq!(bytes.len(), 128 + 48);
    }

    #[test]
    fn one_d_shape_has_trailing_comma() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.npy");
        write_npy_f32(&p, &[5], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // 57-byte dict + 10-byte prefix + '\n' = 68 -> padded to 128.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }";
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 118);
        assert_eq!(&bytes[10..10 + dict.len()], dict.as_bytes());
        assert!(bytes[10 + dict.len()..127].iter().all(|&b| b == b' '));
        assert_eq!(bytes[127], b'\n');
        // Data follows the header: 1.0f32 little-endian.
        assert_eq!(&bytes[128..132], &1.0f32.to_le_bytes());
        assert_eq!(bytes.len(), 128 + 20);
    }

    #[test]
    fn shape_mismatch_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let err = write_npy_f32(&p, &[2, 2], &[1.0; 3]).unwrap_err();
        assert!(format!("{err:#}").contains("bad.npy"));
        assert!(!p.exists());
    }

    #[test]
    fn reads_version_2_and_other_spacing() {
        // Hand-built v2 header with double quotes and no trailing comma.
        let dict = b"{\"descr\":\"<f4\",\"shape\":(2,),\"fortran_order\":False}\n";
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        bytes.extend_from_slice(dict);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
        let (shape, data) = parse_npy(&bytes).unwrap();
        assert_eq!(shape, vec![2]);
        assert_eq!(data, vec![1.5, -2.0]);
    }

    #[test]
    fn rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello world, not numpy".to_vec(), "magic"),
            (Vec::new(), "magic"),
            (
                {
                    let mut b = build_header(&[2]);
                    b.extend_from_slice(&[0u8; 4]); // 4 bytes, needs 8
                    b
                },
                "data bytes",
            ),
            (
                {
                    let d = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n";
                    let mut b = b"\x93NUMPY\x01\x00".to_vec();
                    b.extend_from_slice(&(d.len() as u16).to_le_bytes());
                    b.extend_from_slice(d);
                    b.extend_from_slice(&[0u8; 8]);
                    b
                },
                "<f8",
            ),
            (
                {
                    let d = b"{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n";
                    let mut b = b"\x93NUMPY\x01\x00".to_vec();
                    b.extend_from_slice(&(d.len() as u16).to_le_bytes());
                    b.extend_from_slice(d);
                    b.extend_from_slice(&[0u8; 4]);
                    b
                },
                "Fortran",
            ),
            (
                {
                    let mut b = b"\x93NUMPY\x01\x00".to_vec();
                    b.extend_from_slice(&500u16.to_le_bytes());
                    b.extend_from_slice(b"{'descr'");
                    b
                },
                "truncated",
            ),
        ];
        for (bytes, needle) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let err = read_npy_f32(&p).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("x.npy"), "{msg}");
            assert!(msg.contains(needle), "{msg} should mention {needle}");
        }
        let missing = dir.path().join("missing.npy");
        assert!(format!("{:#}", read_npy_f32(&missing).unwrap_err()).contains("missing.npy"));
    }
}
