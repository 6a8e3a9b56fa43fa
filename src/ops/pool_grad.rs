//! Exact gradients of the average pools (the max pools' gradient is their
//! relevance rule, [`super::pool::max_pool`] and `GlobalMaxPool` in [`super::global_pool`]).
//!
//! The window and divisor semantics are those of [`super::pool::avg_pool`]:
//! `count_include_pad` divides by the window clipped to the padded input,
//! otherwise by the number of real input positions in the window.

use anyhow::{ensure, Result};
use ndarray::ArrayD;

use super::Pool;

/// Gradient through `AveragePool`: each window's gradient, divided by its
/// divisor, to every input position in it.
pub fn avg_pool(p: &Pool, x_shape: &[usize], g: &ArrayD<f32>) -> Result<ArrayD<f32>> {
    ensure!(
        x_shape.len() == 4 && g.ndim() == 4 && x_shape[..2] == g.shape()[..2],
        "pooling needs [N, C, H, W] tensors, got {x_shape:?} and {:?}",
        g.shape()
    );
    let (planes, h, w) = (x_shape[0] * x_shape[1], x_shape[2], x_shape[3]);
    let (oh, ow) = (g.shape()[2], g.shape()[3]);
    let wnd = &p.window;
    let pads = wnd.pads(h, w);
    // input positions covered by output `o` along `axis`, and how many of the
    // kernel taps fall inside the padded input
    let taps = |o: usize, axis: usize, size: usize| {
        let start = (o * wnd.strides[axis]) as isize - pads[axis] as isize;
        let end = (size + pads[axis + 2]) as isize;
        let mut inside = Vec::new();
        let mut padded = 0;
        for k in 0..wnd.kernel[axis] {
            let at = start + (k * wnd.dilations[axis]) as isize;
            if at < end {
                padded += 1;
            }
            if at >= 0 && at < size as isize {
                inside.push(at as usize);
            }
        }
        (inside, padded)
    };
    let rows: Vec<_> = (0..oh).map(|o| taps(o, 0, h)).collect();
    let cols: Vec<_> = (0..ow).map(|o| taps(o, 1, w)).collect();
    let g = g.as_standard_layout();
    let gs = g.as_slice().unwrap_or(&[]);
    let mut out = vec![0.0f32; planes * h * w];
    for c in 0..planes {
        let op = &mut out[c * h * w..(c + 1) * h * w];
        for (oy, (ys, py)) in rows.iter().enumerate() {
            for (ox, (xs, px)) in cols.iter().enumerate() {
                let count = if p.count_include_pad {
                    py * px
                } else {
                    ys.len() * xs.len()
                };
                if count == 0 {
                    continue;
                }
                let v = gs[(c * oh + oy) * ow + ox] / count as f32;
                for &y in ys {
                    for &xx in xs {
                        op[y * w + xx] += v;
                    }
                }
            }
        }
    }
    Ok(ArrayD::from_shape_vec(x_shape.to_vec(), out)?)
}
