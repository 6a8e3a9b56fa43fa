//! Operators that only copy elements (`Slice`, one output of `Split`,
//! `Gather` and `GatherElements`, `Expand`, `Tile`, `DepthToSpace`,
//! `SpaceToDepth`; `Concat` is its own file), all through one mechanism: from the forward shapes a
//! [`CopyMap`] gives, for every output element, the flat index of the input
//! element it copies. The forward pass gathers through the map; relevance
//! and gradient scatter-add back through it, so each input element receives
//! the sum over its copies (an element copied twice gets the relevance of
//! both copies, one never copied gets none).
//!
//! [`FILL`] marks an output element that copies nothing (a constant fill).

use anyhow::{anyhow, bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};

use super::registry::{Imported, OnnxNode, Operand};

/// Map entry of an output element that copies no input element.
pub const FILL: usize = usize::MAX;

/// An integer parameter of a copying operator (starts, indices, a shape):
/// a constant, or read at run time from the node's input at this position.
#[derive(Clone, Debug, PartialEq)]
pub enum Ints {
    /// Known at load time: the tensor's shape and values.
    Const {
        /// Shape of the parameter tensor (`[]` for a scalar).
        shape: Vec<usize>,
        /// Its values in row-major order.
        values: Vec<i64>,
    },
    /// Computed in the model (from shapes): the node input at this position.
    Runtime(usize),
}

impl Ints {
    /// A 1-D constant.
    pub fn list(values: Vec<i64>) -> Ints {
        Ints::Const {
            shape: vec![values.len()],
            values,
        }
    }
}

/// A copying operator with one data input.
#[derive(Clone, Debug, PartialEq)]
pub enum Movement {
    /// `Slice`: `axes` default to the first `starts.len()` axes, `steps` to 1.
    Slice {
        /// First index per axis (negative: from the end; clamped).
        starts: Ints,
        /// One past the last index per axis (negative: from the end; clamped).
        ends: Ints,
        /// The sliced axes.
        axes: Option<Ints>,
        /// Steps per axis (negative: backwards; never 0).
        steps: Option<Ints>,
    },
    /// Output `index` of a `Split` along `axis` into `parts` pieces, of the
    /// given `sizes`, or equal ones (the last one shorter if it must be).
    Split {
        /// The split axis (negative: from the end).
        axis: i64,
        /// Sizes of the pieces, if given.
        sizes: Option<Ints>,
        /// Number of pieces (outputs of the ONNX node).
        parts: usize,
        /// Which piece this node is.
        index: usize,
    },
    /// `Gather` along `axis` (a scalar index removes the axis).
    Gather {
        /// The gathered axis (negative: from the end).
        axis: i64,
        /// The indices (negative: from the end).
        indices: Ints,
    },
    /// `GatherElements` along `axis`.
    GatherElements {
        /// The gathered axis (negative: from the end).
        axis: i64,
        /// The indices, of the output's shape (negative: from the end).
        indices: Ints,
    },
    /// `Expand` to `shape` (numpy broadcasting in both directions).
    Expand {
        /// The requested shape.
        shape: Ints,
    },
    /// `Tile`: each axis repeated.
    Tile {
        /// Repeats per axis.
        repeats: Ints,
    },
    /// `DepthToSpace` on `[N, C, H, W]`.
    DepthToSpace {
        /// Block size.
        block: usize,
        /// Mode `CRD` (column, row, depth) instead of the default `DCR`.
        crd: bool,
    },
    /// `SpaceToDepth` on `[N, C, H, W]`.
    SpaceToDepth {
        /// Block size.
        block: usize,
    },
}

/// An integer parameter resolved: shape and values.
type Resolved = (Vec<usize>, Vec<i64>);

/// For every output element, the flat index of the input element it copies.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyMap {
    /// The output shape.
    pub shape: Vec<usize>,
    /// One entry per output element (row-major): a flat index into the
    /// concatenated inputs, or [`FILL`].
    pub map: Vec<usize>,
    /// Shapes of the data inputs.
    pub inputs: Vec<Vec<usize>>,
}

impl CopyMap {
    /// The output: each element copied from the input it maps to (`fill` for [`FILL`]).
    pub fn forward(&self, inputs: &[&ArrayD<f32>], fill: f32) -> Result<ArrayD<f32>> {
        ensure!(
            inputs.len() == self.inputs.len(),
            "{} data inputs for a copy map of {}",
            inputs.len(),
            self.inputs.len()
        );
        let mut flat = Vec::with_capacity(self.inputs.iter().map(|s| size(s)).sum());
        for (x, s) in inputs.iter().zip(&self.inputs) {
            ensure!(
                x.shape() == s.as_slice(),
                "input {:?}, expected {s:?}",
                x.shape()
            );
            flat.extend(x.iter().copied());
        }
        let out = self
            .map
            .iter()
            .map(|&i| if i == FILL { fill } else { flat[i] })
            .collect();
        Ok(ArrayD::from_shape_vec(IxDyn(&self.shape), out)?)
    }

    /// Relevance or gradient at each input for `r` at the output: each input
    /// element receives the sum over its copies.
    pub fn backward(&self, r: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        ensure!(
            r.shape() == self.shape.as_slice(),
            "relevance of shape {:?} for an output of shape {:?}",
            r.shape(),
            self.shape
        );
        let total: usize = self.inputs.iter().map(|s| size(s)).sum();
        let mut acc = vec![0.0f32; total];
        for (&i, &v) in self.map.iter().zip(r.iter()) {
            if i != FILL {
                acc[i] += v;
            }
        }
        let mut out = Vec::with_capacity(self.inputs.len());
        let mut start = 0;
        for s in &self.inputs {
            let n = size(s);
            out.push(ArrayD::from_shape_vec(
                IxDyn(s),
                acc[start..start + n].to_vec(),
            )?);
            start += n;
        }
        Ok(out)
    }
}

fn size(s: &[usize]) -> usize {
    s.iter().product()
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// The axis `a` (negative: from the end) of a rank-`rank` tensor.
fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(a >= -r && a < r, "axis {a} out of range for rank {rank}");
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// The index `i` (negative: from the end) into an axis of length `len`.
fn index(i: i64, len: usize) -> Result<usize> {
    let l = len as i64;
    ensure!(
        i >= -l && i < l,
        "index {i} out of range for an axis of {len}"
    );
    Ok(if i < 0 { (i + l) as usize } else { i as usize })
}

/// The map of a strided view: along axis `k` output index `o` copies input
/// index `first[k] + o * step[k]`.
fn strided(
    input: &[usize],
    first: &[usize],
    step: &[i64],
    shape: &[usize],
    with_map: bool,
) -> Vec<usize> {
    if !with_map {
        return vec![];
    }
    let st = strides(input);
    let base: usize = first.iter().zip(&st).map(|(f, s)| f * s).sum();
    let delta: Vec<i64> = step.iter().zip(&st).map(|(&p, &s)| p * s as i64).collect();
    let n = size(shape);
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    let mut cur = base as i64;
    for _ in 0..n {
        map.push(cur as usize);
        // odometer: advance the last axis, carrying into the ones before
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            cur += delta[k];
            if idx[k] < shape[k] {
                break;
            }
            cur -= delta[k] * shape[k] as i64;
            idx[k] = 0;
        }
    }
    map
}

/// The map where output element at multi-index `o` copies input element
/// `f(o)` (a flat index).
fn by_index(
    shape: &[usize],
    with_map: bool,
    mut f: impl FnMut(&[usize]) -> Result<usize>,
) -> Result<Vec<usize>> {
    if !with_map {
        return Ok(vec![]);
    }
    let n = size(shape);
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        map.push(f(&idx)?);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(map)
}

/// Start, step and length along an axis of `len` of the ONNX slice
/// `start..end` by `step` (negative indices from the end, clamped).
pub fn slice_axis(start: i64, end: i64, step: i64, len: usize) -> Result<(usize, i64, usize)> {
    ensure!(step != 0, "a slice step of 0");
    let l = len as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(l) } else { v };
    let (s, e) = (norm(start), norm(end));
    let count = if step > 0 {
        let (s, e) = (s.clamp(0, l), e.clamp(0, l));
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        let (s, e) = (s.clamp(-1, l - 1), e.clamp(-1, l - 1));
        if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        }
    };
    let first = if step > 0 {
        s.clamp(0, l)
    } else {
        s.clamp(-1, l - 1)
    };
    // an empty slice may start outside the axis: it copies nothing
    let first = if count == 0 { 0 } else { first as usize };
    Ok((first, step, count as usize))
}

/// Offset and length of piece `index` of `parts` when `len` is split with
/// `sizes` (or equally, the last piece shorter: ONNX `num_outputs`).
pub fn split_piece(
    len: usize,
    sizes: Option<&[i64]>,
    parts: usize,
    index: usize,
) -> Result<(usize, usize)> {
    ensure!(
        index < parts,
        "output {index} of a split into {parts} pieces"
    );
    match sizes {
        Some(s) => {
            ensure!(
                s.len() == parts && s.iter().all(|&v| v >= 0),
                "split sizes {s:?} for {parts} outputs"
            );
            let total: i64 = s.iter().sum();
            ensure!(
                total == len as i64,
                "split sizes {s:?} do not add up to the axis length {len}"
            );
            let off: i64 = s[..index].iter().sum();
            Ok((off as usize, s[index] as usize))
        }
        None => {
            let chunk = len.div_ceil(parts.max(1));
            let off = (chunk * index).min(len);
            Ok((off, chunk.min(len - off)))
        }
    }
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (p, q) if p == q || q == 1 => Ok(p),
            (1, q) => Ok(q),
            _ => Err(anyhow!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

fn dims(values: &[i64], what: &str) -> Result<Vec<usize>> {
    values
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| anyhow!("{what} of {v} (negative)")))
        .collect()
}

impl Movement {
    /// The integer parameters with the index of the ONNX input each comes
    /// from, in input order (runtime ones are numbered in this order).
    pub fn params(&self) -> Vec<(usize, &Ints)> {
        fn opt(i: usize, p: &Option<Ints>) -> Option<(usize, &Ints)> {
            p.as_ref().map(|p| (i, p))
        }
        let mut out = vec![];
        match self {
            Movement::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                out.extend([(1, starts), (2, ends)]);
                out.extend(opt(3, axes));
                out.extend(opt(4, steps));
            }
            Movement::Split { sizes, .. } => out.extend(opt(1, sizes)),
            Movement::Gather { indices, .. } | Movement::GatherElements { indices, .. } => {
                out.push((1, indices))
            }
            Movement::Expand { shape } => out.push((1, shape)),
            Movement::Tile { repeats } => out.push((1, repeats)),
            Movement::DepthToSpace { .. } | Movement::SpaceToDepth { .. } => {}
        }
        out
    }

    /// Whether the samples of inputs of rank `rank` stacked on axis 0 are
    /// copied apart from each other: every parameter known at load time, and
    /// axis 0 neither sliced, split, gathered, tiled nor concatenated along
    /// (`Expand` and `GatherElements`, whose parameters have the batch's
    /// own shape, never are).
    pub fn keeps_samples_apart(&self, rank: usize) -> bool {
        let not_zero = |axis: i64| super::normalize_axis(axis, rank).is_ok_and(|a| a != 0);
        if !self.runtime_inputs().is_empty() {
            return false;
        }
        match self {
            Movement::Split { axis, .. } | Movement::Gather { axis, .. } => not_zero(*axis),
            Movement::Slice {
                axes: Some(Ints::Const { values, .. }),
                ..
            } => values.iter().all(|&a| not_zero(a)),
            Movement::DepthToSpace { .. } | Movement::SpaceToDepth { .. } => true,
            Movement::Slice { .. }
            | Movement::GatherElements { .. }
            | Movement::Expand { .. }
            | Movement::Tile { .. } => false,
        }
    }

    /// Positions among the node's inputs of the parameters read at run time.
    pub fn runtime_inputs(&self) -> Vec<usize> {
        self.params()
            .into_iter()
            .filter_map(|(_, p)| match p {
                Ints::Runtime(i) => Some(*i),
                Ints::Const { .. } => None,
            })
            .collect()
    }

    /// How many of the node's `n` inputs are data (the others are
    /// parameters): one.
    pub fn data_inputs(&self, n: usize) -> usize {
        n.min(1)
    }

    /// The copy map for the data inputs of shapes `xs` (an empty map unless
    /// `with_map`); runtime parameters are read from `inputs` (the node's
    /// inputs; unused when all are constants).
    fn build(&self, xs: &[Vec<usize>], inputs: &[&ArrayD<f32>], with_map: bool) -> Result<CopyMap> {
        let x: &[usize] = xs.first().ok_or_else(|| anyhow!("no data input"))?;
        let get = |p: &Ints| -> Result<Resolved> {
            match p {
                Ints::Const { shape, values } => Ok((shape.clone(), values.clone())),
                Ints::Runtime(i) => {
                    let t = inputs
                        .get(*i)
                        .ok_or_else(|| anyhow!("parameter input {i} is missing"))?;
                    ensure!(
                        t.iter().all(|v| v.is_finite() && v.fract() == 0.0),
                        "parameter input {i} holds non-integers"
                    );
                    Ok((t.shape().to_vec(), t.iter().map(|&v| v as i64).collect()))
                }
            }
        };
        let rank = x.len();
        let (shape, map) = match self {
            Movement::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let (_, starts) = get(starts)?;
                let (_, ends) = get(ends)?;
                let axes = match axes {
                    Some(a) => get(a)?.1,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match steps {
                    Some(s) => get(s)?.1,
                    None => vec![1; starts.len()],
                };
                ensure!(
                    ends.len() == starts.len()
                        && axes.len() == starts.len()
                        && steps.len() == starts.len(),
                    "Slice with {} starts, {} ends, {} axes and {} steps",
                    starts.len(),
                    ends.len(),
                    axes.len(),
                    steps.len()
                );
                let mut first = vec![0usize; rank];
                let mut step = vec![1i64; rank];
                let mut shape = x.to_vec();
                let mut seen = vec![false; rank];
                for k in 0..starts.len() {
                    let a = axis(axes[k], rank)?;
                    ensure!(!seen[a], "Slice names axis {a} twice");
                    seen[a] = true;
                    let (f, s, n) = slice_axis(starts[k], ends[k], steps[k], x[a])?;
                    (first[a], step[a], shape[a]) = (f, s, n);
                }
                let map = strided(x, &first, &step, &shape, with_map);
                (shape, map)
            }
            Movement::Split {
                axis: ax,
                sizes,
                parts,
                index,
            } => {
                let a = axis(*ax, rank)?;
                let sizes = sizes.as_ref().map(get).transpose()?.map(|s| s.1);
                let (off, len) = split_piece(x[a], sizes.as_deref(), *parts, *index)?;
                let mut first = vec![0usize; rank];
                first[a] = off;
                let mut shape = x.to_vec();
                shape[a] = len;
                let map = strided(x, &first, &vec![1; rank], &shape, with_map);
                (shape, map)
            }
            Movement::Gather { axis: ax, indices } => {
                let a = axis(*ax, rank)?;
                let (ishape, ivals) = get(indices)?;
                let ivals = ivals
                    .iter()
                    .map(|&i| index(i, x[a]))
                    .collect::<Result<Vec<_>>>()?;
                let shape: Vec<usize> = x[..a]
                    .iter()
                    .chain(&ishape)
                    .chain(&x[a + 1..])
                    .copied()
                    .collect();
                let st = strides(x);
                let ist = strides(&ishape);
                let q = ishape.len();
                let map = by_index(&shape, with_map, |o| {
                    let i: usize = o[a..a + q].iter().zip(&ist).map(|(v, s)| v * s).sum();
                    let pre: usize = o[..a].iter().zip(&st).map(|(v, s)| v * s).sum();
                    let post: usize = o[a + q..]
                        .iter()
                        .zip(&st[a + 1..])
                        .map(|(v, s)| v * s)
                        .sum();
                    Ok(pre + ivals[i] * st[a] + post)
                })?;
                (shape, map)
            }
            Movement::GatherElements { axis: ax, indices } => {
                let a = axis(*ax, rank)?;
                let (ishape, ivals) = get(indices)?;
                ensure!(
                    ishape.len() == rank
                        && ishape
                            .iter()
                            .zip(x)
                            .enumerate()
                            .all(|(k, (i, d))| k == a || i <= d),
                    "GatherElements indices of shape {ishape:?} for data {x:?}"
                );
                let st = strides(x);
                let mut flat = 0usize;
                let map = by_index(&ishape, with_map, |o| {
                    let j = index(ivals[flat], x[a])?;
                    flat += 1;
                    Ok(o.iter()
                        .zip(&st)
                        .enumerate()
                        .map(|(k, (v, s))| if k == a { j * s } else { v * s })
                        .sum())
                })?;
                (ishape, map)
            }
            Movement::Expand { shape } => {
                let (_, want) = get(shape)?;
                let want = dims(&want, "Expand to a dimension")?;
                let shape = broadcast(x, &want)?;
                let st = strides(x);
                let lead = shape.len() - rank;
                let map = by_index(&shape, with_map, |o| {
                    Ok((0..rank)
                        .map(|k| if x[k] == 1 { 0 } else { o[lead + k] * st[k] })
                        .sum())
                })?;
                (shape, map)
            }
            Movement::Tile { repeats } => {
                let (_, reps) = get(repeats)?;
                ensure!(
                    reps.len() == rank,
                    "Tile with {} repeats for rank {rank}",
                    reps.len()
                );
                let reps = dims(&reps, "Tile repeat")?;
                let shape: Vec<usize> = x.iter().zip(&reps).map(|(d, r)| d * r).collect();
                let st = strides(x);
                let map = by_index(&shape, with_map, |o| {
                    Ok((0..rank).map(|k| (o[k] % x[k]) * st[k]).sum())
                })?;
                (shape, map)
            }
            Movement::DepthToSpace { block, crd } => {
                let b = *block;
                ensure!(rank == 4, "DepthToSpace needs [N, C, H, W], got {x:?}");
                ensure!(
                    b > 0 && x[1].is_multiple_of(b * b),
                    "DepthToSpace of {} channels by blocks of {b}",
                    x[1]
                );
                let c = x[1] / (b * b);
                let shape = vec![x[0], c, x[2] * b, x[3] * b];
                let st = strides(x);
                let crd = *crd;
                let map = by_index(&shape, with_map, |o| {
                    let (i, j) = (o[2] % b, o[3] % b);
                    let ch = if crd {
                        o[1] * b * b + i * b + j
                    } else {
                        (i * b + j) * c + o[1]
                    };
                    Ok(o[0] * st[0] + ch * st[1] + (o[2] / b) * st[2] + o[3] / b)
                })?;
                (shape, map)
            }
            Movement::SpaceToDepth { block } => {
                let b = *block;
                ensure!(rank == 4, "SpaceToDepth needs [N, C, H, W], got {x:?}");
                ensure!(
                    b > 0 && x[2].is_multiple_of(b) && x[3].is_multiple_of(b),
                    "SpaceToDepth of {}x{} by blocks of {b}",
                    x[2],
                    x[3]
                );
                let c = x[1];
                let shape = vec![x[0], c * b * b, x[2] / b, x[3] / b];
                let st = strides(x);
                let map = by_index(&shape, with_map, |o| {
                    let (blk, ch) = (o[1] / c, o[1] % c);
                    let (i, j) = (blk / b, blk % b);
                    Ok(o[0] * st[0] + ch * st[1] + (o[2] * b + i) * st[2] + o[3] * b + j)
                })?;
                (shape, map)
            }
        };
        Ok(CopyMap {
            shape,
            map,
            inputs: xs.to_vec(),
        })
    }

    /// The output shape for a data input of shape `x` (constant parameters only).
    pub fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>> {
        if !self.runtime_inputs().is_empty() {
            bail!("parameters computed at run time");
        }
        Ok(self.build(&[x.to_vec()], &[], false)?.shape)
    }

    /// The output shape for data inputs of shapes `xs` (constant parameters only).
    pub fn output_shape_of(&self, xs: &[Vec<usize>]) -> Result<Vec<usize>> {
        if !self.runtime_inputs().is_empty() {
            bail!("parameters computed at run time");
        }
        Ok(self.build(xs, &[], false)?.shape)
    }

    /// Forward pass: the data input `inputs[0]` gathered through the map.
    pub fn forward(&self, inputs: &[&ArrayD<f32>]) -> Result<ArrayD<f32>> {
        let data = &inputs[..self.data_inputs(inputs.len())];
        let shapes: Vec<Vec<usize>> = data.iter().map(|x| x.shape().to_vec()).collect();
        self.build(&shapes, inputs, true)?.forward(data, 0.0)
    }

    /// Relevance (and gradient: the same for copies) at every node input for
    /// `r` at the output; parameter inputs get zeros.
    pub fn backward(&self, inputs: &[&ArrayD<f32>], r: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        let d = self.data_inputs(inputs.len());
        let shapes: Vec<Vec<usize>> = inputs[..d].iter().map(|x| x.shape().to_vec()).collect();
        let mut out = self.build(&shapes, inputs, true)?.backward(r)?;
        out.extend(inputs[d..].iter().map(|p| ArrayD::zeros(p.shape())));
        Ok(out)
    }
}

impl super::Operator for Movement {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Movement::output_shape(self, inputs[0])
    }

    fn forward(&self, inputs: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        Movement::forward(self, inputs)
    }

    fn native(&self) -> Option<&'static str> {
        (!self.runtime_inputs().is_empty()).then_some("a copying operator with parameters computed at run time")
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        Ok((self.backward(inputs, r)?, None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        self.backward(inputs, g)
    }

    /// Copies and selections (Slice, Split, Gather...): each output element
    /// is one input element, relevance goes with it.
    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        self.backward(inputs, g)
    }

    fn takes_maxima(&self) -> bool {
        false
    }

    fn kinks(&self) -> Vec<f32> {
        vec![]
    }

    fn derivative_from_output(&self) -> bool {
        false
    }

    fn flow(&self) -> super::Flow {
        super::Flow::Conserving
    }

    fn elements(&self) -> super::Elements {
        super::Elements::Other
    }

    fn rule(&self, _: &super::Reuse) -> Option<crate::rules::Rule> {
        None
    }

    fn kind(&self) -> Option<&'static str> {
        None
    }

    fn keeps_samples_apart(&self, rank: usize) -> bool {
        Movement::keeps_samples_apart(self, rank)
    }

    fn data_inputs(&self, n: usize) -> usize {
        Movement::data_inputs(self, n)
    }


    /// The bounds copied as the values are (parameters known at load time).
    fn bounds(
        &self,
        low: &ArrayD<f32>,
        high: &ArrayD<f32>,
        params: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        if !params.is_empty() {
            return None;
        }
        let low = Movement::forward(self, &[low]).ok()?;
        let high = Movement::forward(self, &[high]).ok()?;
        Some((low, high, false))
    }

    super::not_linear!();
}

/// Reads the integer parameters of a node in the order of its inputs,
/// numbering those computed at run time by their position among the graph
/// node's inputs (after the data input).
struct Params<'a> {
    operand: &'a dyn Fn(usize) -> Result<Operand>,
    next: usize,
}

impl Params<'_> {
    /// Input `i` as a parameter (`None` when absent).
    fn get(&mut self, i: usize) -> Result<Option<Ints>> {
        Ok(match (self.operand)(i)? {
            Operand::Absent => None,
            Operand::Const(c) => {
                ensure!(c.iter().all(|v| !v.is_nan()), "input {i} holds NaN");
                Some(Ints::Const {
                    shape: c.shape().to_vec(),
                    // INT64 extremes arrive as +-9.2e18 and saturate back
                    values: c.iter().map(|&v| v as i64).collect(),
                })
            }
            Operand::Computed => {
                self.next += 1;
                Some(Ints::Runtime(self.next - 1))
            }
        })
    }

    fn need(&mut self, i: usize, what: &str) -> Result<Ints> {
        self.get(i)?
            .ok_or_else(|| anyhow::anyhow!("the {what} input is missing"))
    }
}

/// Builds a copying operator; a `Split` becomes one graph node per output
/// ([`OnnxNode::output`]). Integer parameters come from constants, or,
/// when the model computes them (from shapes), from the forward pass.
fn import(n: &OnnxNode) -> Result<Imported> {
    let op = n.op_type();
    ensure!(
        n.is_act(0) && n.activations() == 1,
        "only the data input may depend on the image (indices and sizes must not)"
    );
    let (opset, output) = (n.opset, n.output);
    let mut p = Params {
        operand: n.operand,
        next: 1,
    };
    let m = match op {
        "Slice" if opset < 10 => {
            let starts = n.attr_ints("starts").ok_or_else(|| anyhow::anyhow!("no starts"))?;
            let ends = n.attr_ints("ends").ok_or_else(|| anyhow::anyhow!("no ends"))?;
            Movement::Slice {
                starts: Ints::list(starts),
                ends: Ints::list(ends),
                axes: n.attr_ints("axes").map(Ints::list),
                steps: None,
            }
        }
        "Slice" => Movement::Slice {
            starts: p.need(1, "starts")?,
            ends: p.need(2, "ends")?,
            axes: p.get(3)?,
            steps: p.get(4)?,
        },
        "Split" => {
            let sizes = if opset < 13 {
                n.attr_ints("split")
                    .filter(|s| !s.is_empty())
                    .map(Ints::list)
            } else {
                p.get(1)?
            };
            let num_outputs = n.attr_int("num_outputs", 0);
            let parts = if opset >= 18 && sizes.is_none() && num_outputs > 0 {
                num_outputs as usize
            } else {
                n.node.output.len()
            };
            ensure!(parts > 0, "a Split without outputs");
            Movement::Split {
                axis: n.attr_int("axis", 0),
                sizes,
                parts,
                index: output,
            }
        }
        "Gather" => Movement::Gather {
            axis: n.attr_int("axis", 0),
            indices: p.need(1, "indices")?,
        },
        "GatherElements" => Movement::GatherElements {
            axis: n.attr_int("axis", 0),
            indices: p.need(1, "indices")?,
        },
        "Expand" => Movement::Expand {
            shape: p.need(1, "shape")?,
        },
        "Tile" => Movement::Tile {
            repeats: p.need(1, "repeats")?,
        },
        "DepthToSpace" | "SpaceToDepth" => {
            let block = n.attr_int("blocksize", 0);
            ensure!(block > 0, "blocksize {block}");
            if op == "SpaceToDepth" {
                Movement::SpaceToDepth {
                    block: block as usize,
                }
            } else {
                let mode = n.attr_string("mode").unwrap_or_else(|| "DCR".into());
                let crd = match mode.as_str() {
                    "DCR" => false,
                    "CRD" => true,
                    m => bail!("mode '{m}'"),
                };
                Movement::DepthToSpace {
                    block: block as usize,
                    crd,
                }
            }
        }
        other => bail!("'{other}' is not a copying operator"),
    };
    // the parameters computed in the model, read from the forward pass
    let runtime = m
        .params()
        .into_iter()
        .filter(|(_, p)| matches!(p, Ints::Runtime(_)))
        .map(|(i, _)| i)
        .collect();
    Ok(Imported {
        op: super::Op::new(m),
        runtime,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "movement",
    onnx: &[
        ("Slice", "copies: each input element gets the sum over its copies (any axes, steps; bounds constant or computed)"),
        ("Split", "copies: one node per output, each gets its piece back"),
        ("Gather", "copies (constant indices): each input element gets the sum over its copies"),
        ("GatherElements", "copies (constant indices): each input element gets the sum over its copies"),
        ("Expand", "copies: each input element gets the sum over its copies"),
        ("Tile", "copies: each input element gets the sum over its copies"),
        ("DepthToSpace", "copies (DCR and CRD): relevance moved back"),
        ("SpaceToDepth", "copies: relevance moved back"),
    ],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    /// A tensor whose elements are distinct (and a recognisable function of
    /// their position).
    fn data(shape: &[usize]) -> ArrayD<f32> {
        let n = size(shape);
        Array::from_iter((0..n).map(|i| (i as f32) * 0.5 - 3.0))
            .into_shape_with_order(IxDyn(shape))
            .unwrap()
    }

    /// Pseudo-random values in [-1, 1) (a fixed LCG).
    fn noise(shape: &[usize], seed: u64) -> ArrayD<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    fn run(m: &Movement, x: &ArrayD<f32>) -> ArrayD<f32> {
        m.forward(&[x]).unwrap()
    }

    /// The backward pass is the adjoint of the forward pass (the definition
    /// of the gradient of a linear map): `<F x, r> = <x, B r>`, in f64; and a
    /// map that copies every output from an input conserves the sum.
    fn check_adjoint(m: &Movement, x_shape: &[usize]) {
        let x = noise(x_shape, 1);
        let y = run(m, &x);
        let r = noise(y.shape(), 2);
        let back = m.backward(&[&x], &r).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].shape(), x.shape());
        let lhs: f64 = y
            .iter()
            .zip(r.iter())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(back[0].iter())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
            "{m:?}: {lhs} vs {rhs}"
        );
        let (sr, sb): (f64, f64) = (
            r.iter().map(|&v| v as f64).sum(),
            back[0].iter().map(|&v| v as f64).sum(),
        );
        assert!(
            (sr - sb).abs() < 1e-4 * (1.0 + sr.abs()),
            "{m:?}: sum {sr} vs {sb}"
        );
        assert!(back[0].iter().all(|v| v.is_finite()));
    }

    /// ONNX slice of one axis, element by element: the indices visited by
    /// `i = start; while i in range: i += step`, after the spec's
    /// normalisation (negative + len, clamped to [0, len] going forward and
    /// [-1, len - 1] going backward).
    fn naive_indices(start: i64, end: i64, step: i64, len: i64) -> Vec<usize> {
        let fix = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
        let (mut s, mut e) = (fix(start), fix(end));
        let mut out = vec![];
        if step > 0 {
            s = s.clamp(0, len);
            e = e.clamp(0, len);
            let mut i = s;
            while i < e {
                out.push(i as usize);
                i += step;
            }
        } else {
            s = s.clamp(-1, len - 1);
            e = e.clamp(-1, len - 1);
            let mut i = s;
            while i > e {
                out.push(i as usize);
                i += step;
            }
        }
        out
    }

    fn slice(starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]) -> Movement {
        Movement::Slice {
            starts: Ints::list(starts.to_vec()),
            ends: Ints::list(ends.to_vec()),
            axes: Some(Ints::list(axes.to_vec())),
            steps: Some(Ints::list(steps.to_vec())),
        }
    }

    #[test]
    fn slice_matches_python_on_one_axis() {
        // expected lists from Python: list(range(7))[start:end:step]
        let cases: &[(i64, i64, i64, &[usize])] = &[
            (1, 5, 1, &[1, 2, 3, 4]),
            (-3, i64::MAX, 1, &[4, 5, 6]),
            (0, 7, 3, &[0, 3, 6]),
            (-1, i64::MIN, -1, &[6, 5, 4, 3, 2, 1, 0]),
            (5, 1, -2, &[5, 3]),
            (10, -10, -3, &[6, 3, 0]),
            (-100, 2, 1, &[0, 1]),
            (4, 2, 1, &[]),
            (2, 4, -1, &[]),
        ];
        let x = data(&[7]);
        for &(s, e, st, want) in cases {
            assert_eq!(naive_indices(s, e, st, 7), want, "naive {s}:{e}:{st}");
            let y = run(&slice(&[s], &[e], &[0], &[st]), &x);
            let want: Vec<f32> = want.iter().map(|&i| x[[i]]).collect();
            assert_eq!(y.as_slice().unwrap(), want.as_slice(), "{s}:{e}:{st}");
        }
    }

    #[test]
    fn slice_of_several_axes_matches_the_naive_definition() {
        let shape = [2, 5, 4, 6];
        let x = data(&shape);
        type Case<'a> = (&'a [i64], &'a [i64], &'a [i64], &'a [i64]);
        let cases: &[Case] = &[
            (&[0], &[3], &[1], &[1]),
            (&[3, 1], &[i64::MAX, -1], &[1, -1], &[1, 2]),
            (&[-1, -2, 0], &[i64::MIN, 0, 100], &[2, 3, 1], &[-1, -1, 2]),
            (&[1, 0, 0, 5], &[2, 5, 4, 0], &[0, 1, 2, 3], &[1, 2, 3, -2]),
        ];
        for &(starts, ends, axes, steps) in cases {
            let m = slice(starts, ends, axes, steps);
            let y = run(&m, &x);
            // per axis the visited indices, then every combination
            let mut idx: Vec<Vec<usize>> = shape.iter().map(|&d| (0..d).collect()).collect();
            for k in 0..starts.len() {
                let a = if axes[k] < 0 { axes[k] + 4 } else { axes[k] } as usize;
                idx[a] = naive_indices(starts[k], ends[k], steps[k], shape[a] as i64);
            }
            let want_shape: Vec<usize> = idx.iter().map(|v| v.len()).collect();
            assert_eq!(y.shape(), want_shape.as_slice());
            for (a, &i0) in idx[0].iter().enumerate() {
                for (b, &i1) in idx[1].iter().enumerate() {
                    for (c, &i2) in idx[2].iter().enumerate() {
                        for (d, &i3) in idx[3].iter().enumerate() {
                            assert_eq!(y[[a, b, c, d]], x[[i0, i1, i2, i3]]);
                        }
                    }
                }
            }
            check_adjoint(&m, &shape);
        }
        // default axes (the first ones) and steps
        let m = Movement::Slice {
            starts: Ints::list(vec![1, 2]),
            ends: Ints::list(vec![2, 4]),
            axes: None,
            steps: None,
        };
        let y = run(&m, &x);
        assert_eq!(y.shape(), &[1, 2, 4, 6]);
        assert_eq!(y[[0, 1, 3, 5]], x[[1, 3, 3, 5]]);
    }

    #[test]
    fn runtime_parameters_are_read_from_the_inputs() {
        // starts and ends as f32 tensors from the forward pass
        let m = Movement::Slice {
            starts: Ints::Runtime(1),
            ends: Ints::Runtime(2),
            axes: Some(Ints::list(vec![1])),
            steps: None,
        };
        assert_eq!(m.runtime_inputs(), vec![1, 2]);
        let x = data(&[1, 6, 2]);
        let s = ArrayD::from_shape_vec(vec![1], vec![3.0f32]).unwrap();
        let e = ArrayD::from_shape_vec(vec![1], vec![6.0f32]).unwrap();
        let y = m.forward(&[&x, &s, &e]).unwrap();
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(y[[0, 0, 0]], x[[0, 3, 0]]);
        let r = ArrayD::from_elem(vec![1, 3, 2], 1.0f32);
        let back = m.backward(&[&x, &s, &e], &r).unwrap();
        // the data gets ones where it was copied, the parameters zeros
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].sum(), 6.0);
        assert_eq!(back[0][[0, 2, 1]], 0.0);
        assert_eq!(back[0][[0, 3, 1]], 1.0);
        assert_eq!(back[1].sum() + back[2].sum(), 0.0);
        assert!(m.output_shape(&[1, 6, 2]).is_err());
        let half = ArrayD::from_shape_vec(vec![1], vec![0.5f32]).unwrap();
        assert!(m.forward(&[&x, &half, &e]).is_err());
    }

    #[test]
    fn split_pieces_tile_the_axis() {
        let shape = [1, 10, 3];
        let x = data(&shape);
        // (sizes, parts): explicit sizes; equal split; opset 18 num_outputs
        // with a shorter last piece (10 = 3 + 3 + 3 + 1)
        type Case<'a> = (Option<Vec<i64>>, usize, &'a [usize]);
        let cases: &[Case] = &[
            (Some(vec![1, 5, 4]), 3, &[1, 5, 4]),
            (None, 2, &[5, 5]),
            (None, 4, &[3, 3, 3, 1]),
        ];
        for (sizes, parts, lens) in cases {
            let mut off = 0;
            for index in 0..*parts {
                let m = Movement::Split {
                    axis: -2,
                    sizes: sizes.clone().map(Ints::list),
                    parts: *parts,
                    index,
                };
                let y = run(&m, &x);
                assert_eq!(y.shape(), &[1, lens[index], 3]);
                for c in 0..lens[index] {
                    for w in 0..3 {
                        assert_eq!(y[[0, c, w]], x[[0, off + c, w]]);
                    }
                }
                off += lens[index];
                check_adjoint(&m, &shape);
            }
            assert_eq!(off, 10);
        }
        let bad = Movement::Split {
            axis: 1,
            sizes: Some(Ints::list(vec![4, 4])),
            parts: 2,
            index: 0,
        };
        let e = bad.forward(&[&x]).unwrap_err();
        assert!(e.to_string().contains("do not add up"), "{e}");
    }

    #[test]
    fn gather_matches_the_naive_definition() {
        let shape = [2, 3, 4];
        let x = data(&shape);
        // indices [[2, -1], [0, 0]] on axis 1: output [2, 2, 2, 4]
        let m = Movement::Gather {
            axis: 1,
            indices: Ints::Const {
                shape: vec![2, 2],
                values: vec![2, -1, 0, 0],
            },
        };
        let y = run(&m, &x);
        assert_eq!(y.shape(), &[2, 2, 2, 4]);
        let idx = [[2, 2], [0, 0]]; // -1 is the last of 3
        for a in 0..2 {
            for i in 0..2 {
                for j in 0..2 {
                    for c in 0..4 {
                        assert_eq!(y[[a, i, j, c]], x[[a, idx[i][j], c]]);
                    }
                }
            }
        }
        // index 0 is copied twice: its relevance is the sum of both copies
        let back = m
            .backward(&[&x], &ArrayD::from_elem(vec![2, 2, 2, 4], 1.0))
            .unwrap();
        assert_eq!(back[0][[1, 0, 3]], 2.0);
        assert_eq!(back[0][[1, 2, 3]], 2.0);
        assert_eq!(back[0][[1, 1, 3]], 0.0);
        // a scalar index removes the axis
        let m = Movement::Gather {
            axis: -1,
            indices: Ints::Const {
                shape: vec![],
                values: vec![-2],
            },
        };
        let y = run(&m, &x);
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y[[1, 2]], x[[1, 2, 2]]);
        check_adjoint(&m, &shape);
        let oob = Movement::Gather {
            axis: 0,
            indices: Ints::list(vec![2]),
        };
        let e = oob.forward(&[&x]).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn gather_elements_matches_the_naive_definition() {
        let shape = [2, 3];
        let x = data(&shape);
        // ONNX spec example shape: out[i][j] = x[i][idx[i][j]] on axis 1
        let idx = [[0i64, 0, -1], [1, 0, 2]];
        let m = Movement::GatherElements {
            axis: 1,
            indices: Ints::Const {
                shape: vec![2, 3],
                values: idx.iter().flatten().copied().collect(),
            },
        };
        let y = run(&m, &x);
        for i in 0..2 {
            for j in 0..3 {
                let k = if idx[i][j] < 0 {
                    idx[i][j] + 3
                } else {
                    idx[i][j]
                } as usize;
                assert_eq!(y[[i, j]], x[[i, k]]);
            }
        }
        // axis 0, indices shorter than the data on the other axis
        let m = Movement::GatherElements {
            axis: 0,
            indices: Ints::Const {
                shape: vec![1, 2],
                values: vec![1, 0],
            },
        };
        let y = run(&m, &x);
        assert_eq!(y.as_slice().unwrap(), &[x[[1, 0]], x[[0, 1]]]);
    }

    #[test]
    fn expand_and_tile_sum_the_copies_back() {
        // Expand [3, 1] to [2, 1, 4]: broadcast to [2, 3, 4]
        let x = data(&[3, 1]);
        let m = Movement::Expand {
            shape: Ints::list(vec![2, 1, 4]),
        };
        let y = run(&m, &x);
        assert_eq!(y.shape(), &[2, 3, 4]);
        for a in 0..2 {
            for b in 0..3 {
                for c in 0..4 {
                    assert_eq!(y[[a, b, c]], x[[b, 0]]);
                }
            }
        }
        // each element is copied 2 * 4 = 8 times
        let back = m
            .backward(&[&x], &ArrayD::from_elem(vec![2, 3, 4], 0.5))
            .unwrap();
        assert_eq!(back[0].as_slice().unwrap(), &[4.0, 4.0, 4.0]);
        check_adjoint(&m, &[3, 1]);
        // Tile [2] by 3: r = [1..6] gives [1 + 3 + 5, 2 + 4 + 6]
        let m = Movement::Tile {
            repeats: Ints::list(vec![3]),
        };
        let x = data(&[2]);
        let y = run(&m, &x);
        assert_eq!(
            y.as_slice().unwrap(),
            &[x[[0]], x[[1]], x[[0]], x[[1]], x[[0]], x[[1]]]
        );
        let r = ArrayD::from_shape_vec(vec![6], vec![1.0, 2., 3., 4., 5., 6.]).unwrap();
        let back = m.backward(&[&x], &r).unwrap();
        assert_eq!(back[0].as_slice().unwrap(), &[9.0, 12.0]);
        let m = Movement::Tile {
            repeats: Ints::list(vec![2, 1, 3]),
        };
        let x = data(&[2, 3, 2]);
        let y = run(&m, &x);
        assert_eq!(y.shape(), &[4, 3, 6]);
        assert_eq!(y[[3, 2, 5]], x[[1, 2, 1]]);
        check_adjoint(&m, &[2, 3, 2]);
    }

    /// The ONNX spec's definitions, as reshapes and transposes.
    fn spec_depth_to_space(x: &ArrayD<f32>, b: usize, crd: bool) -> ArrayD<f32> {
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (six, perm) = if crd {
            (vec![n, c / (b * b), b, b, h, w], vec![0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, c / (b * b), h, w], vec![0, 3, 4, 1, 5, 2])
        };
        x.clone()
            .into_shape_with_order(IxDyn(&six))
            .unwrap()
            .permuted_axes(IxDyn(&perm))
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[n, c / (b * b), h * b, w * b]))
            .unwrap()
    }

    fn spec_space_to_depth(x: &ArrayD<f32>, b: usize) -> ArrayD<f32> {
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        x.clone()
            .into_shape_with_order(IxDyn(&[n, c, h / b, b, w / b, b]))
            .unwrap()
            .permuted_axes(IxDyn(&[0, 3, 5, 1, 2, 4]))
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[n, c * b * b, h / b, w / b]))
            .unwrap()
    }

    #[test]
    fn depth_to_space_and_back_match_the_spec() {
        for b in [2, 3] {
            let shape = [2, 2 * b * b, 3, 2];
            let x = data(&shape);
            for crd in [false, true] {
                let m = Movement::DepthToSpace { block: b, crd };
                assert_eq!(
                    run(&m, &x),
                    spec_depth_to_space(&x, b, crd),
                    "b {b} crd {crd}"
                );
                check_adjoint(&m, &shape);
            }
            let shape = [2, 3, 2 * b, 3 * b];
            let x = data(&shape);
            let m = Movement::SpaceToDepth { block: b };
            let y = run(&m, &x);
            assert_eq!(y, spec_space_to_depth(&x, b));
            // SpaceToDepth is undone by DepthToSpace in DCR mode
            let back = Movement::DepthToSpace {
                block: b,
                crd: false,
            };
            assert_eq!(run(&back, &y), x);
            check_adjoint(&m, &shape);
        }
        let e = Movement::DepthToSpace {
            block: 2,
            crd: false,
        }
        .forward(&[&data(&[1, 6, 2, 2])])
        .unwrap_err();
        assert!(e.to_string().contains("6 channels"), "{e}");
    }

    #[test]
    fn bad_parameters_are_errors_not_panics() {
        let x = data(&[2, 3]);
        let cases = [
            (slice(&[0], &[2], &[0], &[0]), "step of 0"),
            (slice(&[0], &[2], &[2], &[1]), "out of range"),
            (slice(&[0, 0], &[2, 2], &[1, -1], &[1, 1]), "twice"),
            (
                Movement::Slice {
                    starts: Ints::list(vec![0, 1]),
                    ends: Ints::list(vec![1]),
                    axes: None,
                    steps: None,
                },
                "2 starts, 1 ends",
            ),
            (
                Movement::Tile {
                    repeats: Ints::list(vec![2]),
                },
                "1 repeats for rank 2",
            ),
            (
                Movement::Expand {
                    shape: Ints::list(vec![4, 3]),
                },
                "do not broadcast",
            ),
            (
                Movement::GatherElements {
                    axis: 0,
                    indices: Ints::list(vec![0, 1]),
                },
                "GatherElements indices",
            ),
            (Movement::SpaceToDepth { block: 2 }, "needs [N, C, H, W]"),
        ];
        for (m, want) in cases {
            let e = m.forward(&[&x]).unwrap_err();
            assert!(e.to_string().contains(want), "{m:?}: {e}");
        }
        // relevance of the wrong shape
        let m = slice(&[0], &[1], &[0], &[1]);
        assert!(m.backward(&[&x], &data(&[2, 3])).is_err());
    }
}
