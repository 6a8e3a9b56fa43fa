//! `Resize` in nearest mode (upsampling in FPN / U-Net style blocks, Keras
//! `UpSampling2D`): every output element is a copy of one input element, so
//! each input element gets the sum of the relevance (or gradient) of its
//! copies. The copy map follows the ONNX definition (and tract, which runs
//! the forward pass): `x_in = transform(x_out, scale, len_in, len_out)` in
//! `f32`, then rounded by the nearest mode and clamped to the input.

use anyhow::{bail, ensure, Result};
use ndarray::{ArrayD, IxDyn};

use super::registry::{Imported, OnnxNode, Operand};

/// `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    /// `(x + 0.5) / scale - 0.5` (the default from opset 11).
    HalfPixel,
    /// Like `HalfPixel` but 0 when the output has length 1.
    PytorchHalfPixel,
    /// `x (len_in - 1) / (len_out - 1)`.
    AlignCorners,
    /// `x / scale` (opset 10, PyTorch's `nearest`).
    Asymmetric,
    /// `(x + 0.5) / scale` (TensorFlow 1 nearest).
    TfHalfPixelForNn,
    /// Half pixel around the centre of the scaled extent (opset 19).
    HalfPixelSymmetric,
}

/// `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    /// Round half down (the default).
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

/// Where the scales of a `Resize` come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Scales {
    /// Constant `scales`, one per resized axis.
    Given(Vec<f32>),
    /// `sizes` given: the scale is `len_out / len_in`.
    FromShapes,
    /// Computed in the model: the node's second input, read from the forward pass.
    Runtime,
}

/// A nearest-mode `Resize` node.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeSpec {
    /// Coordinate transformation.
    pub coord: CoordMode,
    /// Rounding of the source coordinate.
    pub nearest: NearestMode,
    /// Scales.
    pub scales: Scales,
    /// Resized axes (opset 18 `axes`), all when `None`.
    pub axes: Option<Vec<i64>>,
}

impl CoordMode {
    /// The ONNX attribute value.
    pub fn parse(s: &str) -> Result<CoordMode> {
        Ok(match s {
            "half_pixel" => CoordMode::HalfPixel,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            "tf_half_pixel_for_nn" => CoordMode::TfHalfPixelForNn,
            "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
            other => bail!("coordinate_transformation_mode '{other}' is not supported"),
        })
    }

    /// The source coordinate of output index `x` (in `f32`, as tract).
    fn transform(self, x: usize, scale: f32, len_in: usize, len_out: usize) -> f32 {
        let xf = x as f32;
        match self {
            CoordMode::HalfPixel => (xf + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel if len_out > 1 => (xf + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => 0.0,
            CoordMode::AlignCorners => {
                let width = scale * len_in as f32;
                if width == 1.0 {
                    0.0
                } else {
                    xf * (len_in as f32 - 1.0) / (width - 1.0)
                }
            }
            CoordMode::Asymmetric => xf / scale,
            CoordMode::TfHalfPixelForNn => (xf + 0.5) / scale,
            CoordMode::HalfPixelSymmetric => {
                let adjustment = len_out as f32 / (scale * len_in as f32);
                let offset = len_in as f32 / 2.0 * (1.0 - adjustment);
                offset + (xf + 0.5) / scale - 0.5
            }
        }
    }
}

impl NearestMode {
    /// The ONNX attribute value.
    pub fn parse(s: &str) -> Result<NearestMode> {
        Ok(match s {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => bail!("nearest_mode '{other}' is not supported"),
        })
    }
}

/// The input index each output index of one axis copies.
pub fn axis_map(
    coord: CoordMode,
    nearest: NearestMode,
    scale: f32,
    len_in: usize,
    len_out: usize,
) -> Vec<usize> {
    (0..len_out)
        .map(|x| {
            let x_in = coord.transform(x, scale, len_in, len_out);
            // the two neighbours `cell` and `cell + 1`, `x_in` in (cell, cell + 1]
            let cell = x_in.ceil() - 1.0;
            let frac = x_in - cell;
            let right = frac == 1.0
                || match nearest {
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                    NearestMode::RoundPreferFloor => frac > 0.5,
                    NearestMode::RoundPreferCeil => frac >= 0.5,
                };
            let i = cell as i64 + i64::from(right);
            i.clamp(0, len_in as i64 - 1) as usize
        })
        .collect()
}

/// Sums `r` (at the resized output) back onto the input `x`; `runtime` are
/// the scales read at run time for [`Scales::Runtime`].
pub fn back(
    spec: &ResizeSpec,
    runtime: Option<&ArrayD<f32>>,
    x: &ArrayD<f32>,
    r: &ArrayD<f32>,
) -> Result<ArrayD<f32>> {
    let rank = x.ndim();
    ensure!(
        r.ndim() == rank,
        "Resize input {:?} and output {:?} differ in rank",
        x.shape(),
        r.shape()
    );
    let axes: Vec<usize> = match &spec.axes {
        None => (0..rank).collect(),
        Some(a) => a
            .iter()
            .map(|&v| super::normalize_axis(v, rank))
            .collect::<Result<_>>()?,
    };
    let given: Option<Vec<f32>> = match &spec.scales {
        Scales::Given(s) => Some(s.clone()),
        Scales::Runtime => runtime.map(|t| t.iter().copied().collect()),
        Scales::FromShapes => None,
    };
    let mut scales: Vec<f32> = x
        .shape()
        .iter()
        .zip(r.shape())
        .map(|(&i, &o)| o as f32 / i.max(1) as f32)
        .collect();
    if let Some(g) = given.filter(|g| g.len() == axes.len()) {
        for (&a, &s) in axes.iter().zip(&g) {
            ensure!(s > 0.0 && s.is_finite(), "Resize scale {s}");
            scales[a] = s;
        }
    }
    let maps: Vec<Vec<usize>> = (0..rank)
        .map(|a| {
            let (n, o) = (x.shape()[a], r.shape()[a]);
            if axes.contains(&a) && n > 0 {
                axis_map(spec.coord, spec.nearest, scales[a], n, o)
            } else {
                (0..o).map(|i| i.min(n.saturating_sub(1))).collect()
            }
        })
        .collect();
    for a in 0..rank {
        ensure!(
            axes.contains(&a) || x.shape()[a] == r.shape()[a],
            "Resize changes axis {a}, which is not resized"
        );
    }
    let mut out = ArrayD::<f32>::zeros(IxDyn(x.shape()));
    let mut src = vec![0usize; rank];
    for (ix, &v) in r.indexed_iter() {
        for (a, m) in maps.iter().enumerate() {
            src[a] = m[ix[a]];
        }
        out[IxDyn(&src)] += v;
    }
    Ok(out)
}

/// A nearest-mode `Resize` node: each input element gets the sum over its
/// copies; its forward pass runs in tract.
#[derive(Clone, Debug)]
pub struct Resize(pub ResizeSpec);

impl super::Operator for Resize {
    fn output_shape(&self, _: &[&[usize]]) -> Result<Vec<usize>> {
        bail!("the output shape of a Resize is computed by tract")
    }

    fn forward(&self, _: &[&ArrayD<f32>], _batch: usize) -> Result<ArrayD<f32>> {
        bail!("no native forward pass")
    }

    fn native(&self) -> Option<&'static str> {
        Some("an operator without a native forward pass")
    }

    fn relevance(
        &self,
        inputs: &[&ArrayD<f32>],
        r: &ArrayD<f32>,
        _: &super::Reuse,
    ) -> Result<super::Propagated> {
        let back = back(&self.0, inputs.get(1).copied(), inputs[0], r)?;
        Ok((super::with_params(back, inputs), None))
    }

    fn gradient(
        &self,
        inputs: &[&ArrayD<f32>],
        g: &ArrayD<f32>,
        _: super::GradientOptions,
    ) -> Result<Vec<ArrayD<f32>>> {
        let back = back(&self.0, inputs.get(1).copied(), inputs[0], g)?;
        Ok(super::with_params(back, inputs))
    }

    fn lrp0(&self) -> super::Lrp0 {
        super::Lrp0::Exact
    }

    fn lrp0_gradient(&self, inputs: &[&ArrayD<f32>], g: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        super::Operator::gradient(self, inputs, g, Default::default())
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

    fn keeps_samples_apart(&self, _rank: usize) -> bool {
        false
    }

    /// The data, then the scales or sizes when computed at run time.
    fn data_inputs(&self, _n: usize) -> usize {
        1
    }


    fn bounds(
        &self,
        _: &ArrayD<f32>,
        _: &ArrayD<f32>,
        _: &[&ArrayD<f32>],
        _: &[usize],
    ) -> Option<super::Interval> {
        None
    }

    super::not_linear!();
}

/// The input index of a `Resize`'s `scales` at `opset`.
fn scales_input(opset: i64) -> usize {
    if opset <= 10 {
        1
    } else {
        2
    }
}

/// Builds a nearest-mode `Resize` (scales constant, from the output sizes,
/// or computed at run time).
fn import(n: &OnnxNode) -> Result<Imported> {
    let mode = n.attr_string("mode").unwrap_or_else(|| "nearest".into());
    ensure!(
        mode == "nearest",
        "only mode 'nearest' is supported, not '{mode}'"
    );
    ensure!(
        n.attr_int("antialias", 0) == 0,
        "antialiasing is not supported"
    );
    let policy = (n.attr_string("keep_aspect_ratio_policy")).unwrap_or_else(|| "stretch".into());
    ensure!(
        policy == "stretch",
        "keep_aspect_ratio_policy '{policy}' is not supported"
    );
    let coord = if n.opset <= 10 {
        CoordMode::Asymmetric
    } else {
        CoordMode::parse(
            &(n.attr_string("coordinate_transformation_mode"))
                .unwrap_or_else(|| "half_pixel".into()),
        )?
    };
    let nearest = NearestMode::parse(
        &(n.attr_string("nearest_mode")).unwrap_or_else(|| "round_prefer_floor".into()),
    )?;
    let at = scales_input(n.opset);
    let scales = match (n.operand)(at)? {
        Operand::Const(c) if !c.is_empty() => Scales::Given(c.iter().copied().collect()),
        Operand::Const(_) | Operand::Absent => Scales::FromShapes,
        Operand::Computed => Scales::Runtime,
    };
    // scales computed in the model: read from the forward pass
    let runtime = if scales == Scales::Runtime { vec![at] } else { vec![] };
    let op = Resize(ResizeSpec {
        coord,
        nearest,
        scales,
        axes: n.attr_ints("axes"),
    });
    Ok(Imported {
        op: super::Op::new(op),
        runtime,
    })
}

/// The registry's entry: the ONNX operators this family reads.
pub const FAMILY: super::registry::Family = super::registry::Family {
    name: "resize",
    onnx: &[(
        "Resize",
        "nearest mode: each input gets the sum over its copies",
    )],
    import,
    fuse: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_maps_follow_the_onnx_formulas() {
        use CoordMode::*;
        use NearestMode::*;
        // x2 upsampling, PyTorch export: asymmetric + floor: out x reads x / 2
        assert_eq!(axis_map(Asymmetric, Floor, 2.0, 3, 6), [0, 0, 1, 1, 2, 2]);
        // half_pixel + round_prefer_floor (the opset 11 defaults):
        // x_in = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25
        assert_eq!(
            axis_map(HalfPixel, RoundPreferFloor, 2.0, 3, 6),
            [0, 0, 1, 1, 2, 2]
        );
        // x3 upsampling with align_corners: x_in = x * 2 / 5 = 0, .4, .8, 1.2, 1.6, 2
        assert_eq!(
            axis_map(AlignCorners, RoundPreferCeil, 2.0, 3, 6),
            [0, 0, 1, 1, 2, 2]
        );
        // downsampling by 2, asymmetric: x_in = 2x
        assert_eq!(axis_map(Asymmetric, Floor, 0.5, 6, 3), [0, 2, 4]);
        // ties: x_in = x / 2 = 0, 0.5, 1, 1.5; the last one clamps to the input
        assert_eq!(
            axis_map(Asymmetric, RoundPreferCeil, 2.0, 2, 4),
            [0, 1, 1, 1]
        );
        assert_eq!(
            axis_map(Asymmetric, RoundPreferFloor, 2.0, 2, 4),
            [0, 0, 1, 1]
        );
        assert_eq!(axis_map(Asymmetric, Ceil, 2.0, 2, 4), [0, 1, 1, 1]);
    }

    #[test]
    fn relevance_of_the_copies_is_summed_back() {
        let spec = ResizeSpec {
            coord: CoordMode::Asymmetric,
            nearest: NearestMode::Floor,
            scales: Scales::Given(vec![1.0, 1.0, 2.0, 2.0]),
            axes: None,
        };
        let x = ArrayD::<f32>::zeros(vec![1, 1, 1, 2]);
        let r = ArrayD::from_shape_vec(
            vec![1, 1, 2, 4],
            vec![1.0f32, 2., 3., 4., 10., 20., 30., 40.],
        )
        .unwrap();
        let got = back(&spec, None, &x, &r).unwrap();
        // input 0 is copied to columns 0, 1 of both rows, input 1 to columns 2, 3
        assert_eq!(got.as_slice().unwrap(), &[33.0, 77.0]);
        assert_eq!(got.sum(), r.sum());
        // the same with the scales taken from the shapes
        let s2 = ResizeSpec {
            scales: Scales::FromShapes,
            ..spec
        };
        assert_eq!(back(&s2, None, &x, &r).unwrap(), got);
    }
}
