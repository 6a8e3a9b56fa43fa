//! Elementwise maps over whole tensors: large arrays in standard layout on
//! all rayon threads, written once into the new vector (no zeroing first);
//! small or strided ones through ndarray.

use ndarray::{ArrayD, Zip};
use rayon::prelude::*;

/// Arrays at least this long go parallel.
const PARALLEL: usize = 1 << 15;
/// Fewest values per rayon task.
const MIN_TASK: usize = 1 << 13;

/// A vector of `n` values, `fill(chunk_index, chunk)` writing every value of
/// each chunk of [`MIN_TASK`] (the last one shorter) on all threads, with no
/// zeroing first. The chunk loops are plain slices, which vectorise.
fn filled(
    n: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(MIN_TASK)
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the chunks cover all `n` values and `fill` wrote each one
    // (every caller zips a chunk with input chunks of the same length).
    unsafe { out.set_len(n) };
    out
}

/// `len` values in planes of `plane`, each plane set to zero and then
/// handed to `f` (with its index) on a rayon thread: the zeroing runs in
/// parallel, on the thread that writes the plane next, instead of one
/// thread's pass over the whole allocation first.
pub fn zeroed_planes(
    len: usize,
    plane: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(p, u)| {
            u.fill(std::mem::MaybeUninit::new(0.0));
            // SAFETY: every value was initialised just above.
            let values = unsafe { &mut *(u as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            f(p, values);
        });
    // SAFETY: every plane was initialised (zeroed, then written by `f`).
    unsafe { out.set_len(len) };
    out
}

/// `f(a)` for every value.
pub fn map(a: &ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) -> ArrayD<f32> {
    match a.as_slice() {
        Some(s) if s.len() >= PARALLEL => {
            let out = filled(s.len(), |i, o| {
                let x = &s[i * MIN_TASK..][..o.len()];
                for (o, &v) in o.iter_mut().zip(x) {
                    o.write(f(v));
                }
            });
            ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length")
        }
        _ => a.mapv(f),
    }
}

/// `f(a, b)` for every pair of values of two arrays of one shape. Panics
/// where the shapes differ.
pub fn map2(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> ArrayD<f32> {
    match (a.as_slice(), b.as_slice()) {
        (Some(x), Some(y)) if x.len() >= PARALLEL && a.shape() == b.shape() => {
            let out = filled(x.len(), |i, o| {
                let (x, y) = (&x[i * MIN_TASK..][..o.len()], &y[i * MIN_TASK..][..o.len()]);
                for ((o, &u), &v) in o.iter_mut().zip(x).zip(y) {
                    o.write(f(u, v));
                }
            });
            ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length")
        }
        _ => Zip::from(a).and(b).map_collect(|&u, &v| f(u, v)),
    }
}

/// `f(a, b, c)` for every triple of values of three arrays of one shape.
pub fn map3(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    c: &ArrayD<f32>,
    f: impl Fn(f32, f32, f32) -> f32 + Sync + Send,
) -> ArrayD<f32> {
    match (a.as_slice(), b.as_slice(), c.as_slice()) {
        (Some(x), Some(y), Some(z))
            if x.len() >= PARALLEL && a.shape() == b.shape() && a.shape() == c.shape() =>
        {
            let out = filled(x.len(), |i, o| {
                let n = o.len();
                let (x, y, z) = (
                    &x[i * MIN_TASK..][..n],
                    &y[i * MIN_TASK..][..n],
                    &z[i * MIN_TASK..][..n],
                );
                for (((o, &u), &v), &w) in o.iter_mut().zip(x).zip(y).zip(z) {
                    o.write(f(u, v, w));
                }
            });
            ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length")
        }
        _ => Zip::from(a)
            .and(b)
            .and(c)
            .map_collect(|&u, &v, &w| f(u, v, w)),
    }
}

/// `a = f(a, b)` in place for every pair of values of two arrays of one
/// shape. Panics where the shapes differ.
pub fn update(a: &mut ArrayD<f32>, b: &ArrayD<f32>, f: impl Fn(f32, f32) -> f32 + Sync + Send) {
    let same = a.shape() == b.shape();
    match (a.as_slice_mut(), b.as_slice()) {
        (Some(x), Some(y)) if same && x.len() >= PARALLEL => x
            .par_chunks_mut(MIN_TASK)
            .zip(y.par_chunks(MIN_TASK))
            .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(u, &v)| *u = f(*u, v))),
        (Some(x), Some(y)) if same => x.iter_mut().zip(y).for_each(|(u, &v)| *u = f(*u, v)),
        _ => Zip::from(a).and(b).for_each(|u, &v| *u = f(*u, v)),
    }
}

/// `a += b`: on all threads where the shapes are equal, else ndarray's
/// broadcasting `+=` (which panics where `b` does not broadcast to `a`).
pub fn add_into(a: &mut ArrayD<f32>, b: &ArrayD<f32>) {
    if a.shape() == b.shape() {
        update(a, b, |u, v| u + v);
    } else {
        *a += b;
    }
}

/// Whether any value of `s` is positive, and whether any is negative: one
/// pass (vectorised min and max per chunk), large slices on all threads.
pub fn signs(s: &[f32]) -> (bool, bool) {
    let chunk = |c: &[f32]| {
        let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
        let mut it = c.chunks_exact(8);
        for v in &mut it {
            for k in 0..8 {
                lo[k] = lo[k].min(v[k]);
                hi[k] = hi[k].max(v[k]);
            }
        }
        let rest = it.remainder();
        let lo = lo.iter().chain(rest).fold(0f32, |a, &v| a.min(v));
        let hi = hi.iter().chain(rest).fold(0f32, |a, &v| a.max(v));
        (hi > 0.0, lo < 0.0)
    };
    if s.len() < PARALLEL {
        return chunk(s);
    }
    s.par_chunks(MIN_TASK)
        .map(chunk)
        .reduce(|| (false, false), |a, b| (a.0 || b.0, a.1 || b.1))
}

/// `f(a)` in place for every value.
pub fn apply(a: &mut ArrayD<f32>, f: impl Fn(f32) -> f32 + Sync + Send) {
    match a.as_slice_memory_order_mut() {
        Some(s) if s.len() >= PARALLEL => s
            .par_chunks_mut(MIN_TASK)
            .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v))),
        Some(s) => s.iter_mut().for_each(|v| *v = f(*v)),
        None => a.mapv_inplace(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_find_one_positive_or_negative_value_anywhere() {
        for len in [0usize, 1, 7, 8, 9, PARALLEL + 3] {
            let zeros = vec![0.0f32; len];
            assert_eq!(signs(&zeros), (false, false), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                for (v, want) in [(1e-30f32, (true, false)), (-2.0, (false, true))] {
                    let mut s = zeros.clone();
                    s[at] = v;
                    assert_eq!(signs(&s), want, "{v} at {at} of {len}");
                }
            }
        }
        // NaN counts as neither (as in `v > 0.0` and `v < 0.0`)
        assert_eq!(signs(&[f32::NAN, -0.0]), (false, false));
    }

    #[test]
    fn parallel_and_serial_paths_agree_with_ndarray() {
        for len in [7usize, PARALLEL + 5] {
            let a = ArrayD::from_shape_fn(vec![len], |i| i[0] as f32 * 0.5 - 3.0);
            let b = ArrayD::from_shape_fn(vec![len], |i| (i[0] % 7) as f32);
            let c = ArrayD::from_shape_fn(vec![len], |i| (i[0] % 3) as f32 - 1.0);
            assert_eq!(map(&a, |v| v * v), a.mapv(|v| v * v));
            assert_eq!(map2(&a, &b, |u, v| u - v), &a - &b);
            assert_eq!(map3(&a, &b, &c, |u, v, w| u * v + w), &a * &b + &c);
            let mut d = a.clone();
            apply(&mut d, |v| v.max(0.0));
            assert_eq!(d, a.mapv(|v| v.max(0.0)));
            let mut e = a.clone();
            update(&mut e, &b, |u, v| u * v - 1.0);
            assert_eq!(e, &a * &b - 1.0);
            let mut f = a.clone();
            add_into(&mut f, &b);
            assert_eq!(f, &a + &b);
        }
        // strided operands take ndarray's path
        let a = ArrayD::from_shape_fn(vec![3, 3], |i| (i[0] * 3 + i[1]) as f32);
        let t = a.t().to_owned();
        assert_eq!(map2(&a, &t, |u, v| u * v), &a * &t);
        assert_eq!(map(&t, |v| v + 1.0), &t + 1.0);
        // a broadcast addend takes ndarray's +=
        let row = ArrayD::from_shape_vec(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let mut g = a.clone();
        add_into(&mut g, &row);
        assert_eq!(g, &a + &row);
    }
}
