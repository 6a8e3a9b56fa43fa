//! Dense matrix products on the `gemm` crate (SIMD kernels chosen at run time, rayon threads).

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_THRESHOLD: usize = 1 << 18;

/// Products of this many multiply-adds and more run in four parts.
const LARGE_PRODUCT: usize = 1 << 26;

/// A strided, row-major-by-default view of a matrix stored in a slice. The
/// fields are private: the constructors check that every element
/// `i * rs + j * cs` lies inside `data`, which is what makes [`matmul`] safe.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> Mat<'a> {
    /// A `rows x cols` matrix whose element `(i, j)` is `data[i * rs + j * cs]`
    /// (non-negative strides). Panics if an element lies outside `data`.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(rs)
                .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
            assert!(
                last.is_some_and(|l| l < data.len()) && rs <= isize::MAX as usize,
                "strided matrix outside its slice"
            );
        }
        Mat {
            data,
            rows,
            cols,
            rs: rs as isize,
            cs: cs as isize,
        }
    }

    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix slice too short");
        Mat {
            data,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// `dst (m x n, row-major, contiguous) = [dst +] a (m x k) * b (k x n)`.
///
/// `accumulate` adds to the existing content of `dst` instead of overwriting it.
/// `threads`: `true` lets large products use all rayon threads.
pub fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, threads: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(dst.len() >= m * n, "destination too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above and the strides of `Mat` (built from slices
    // long enough for their shape) keep every access in bounds.
    unsafe {
        gemm_into(
            dst.as_mut_ptr(),
            n as isize,
            accumulate,
            a,
            b,
            threads,
            None,
        )
    };
}

/// `dst = [dst +] a (m x k) * b (k x n)` into a matrix whose rows are
/// `dst_rs` apart (a block of columns of a wider matrix); `accumulate` and
/// `threads` as for [`matmul`].
///
/// # Safety
/// `dst` must be valid for reads and writes at `i * dst_rs + j` for `i < m`,
/// `j < n` (initialised where `accumulate`), and no other thread may access
/// those elements during the call.
pub unsafe fn matmul_strided(
    dst: *mut f32,
    dst_rs: isize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    threads: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    if m == 0 || n == 0 || (k == 0 && accumulate) {
        return;
    }
    // SAFETY: as guaranteed by the caller.
    unsafe { gemm_into(dst, dst_rs, accumulate, a, b, threads, None) };
}

/// What a product's parts do with their block of the destination (on the
/// thread that computes it, while it is in cache): start it with a bias per
/// row (the products are then added to it, as `gemm` adds to a
/// destination: the sums run as in a destination filled with the bias
/// first), and clamp it afterwards.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per row of the destination, the start of its sums.
    pub bias: Option<&'a [f32]>,
    /// `min(max(v, lo), hi)` after the product.
    pub clamp: Option<(f32, f32)>,
}

/// `dst (m x n, rows n apart) = epilogue(a (m x k) * b (k x n))`, on all
/// rayon threads when the product is large; `true` where every value
/// before the clamp is finite. `dst` need not be initialised: every value
/// is written.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` values, and no other thread may
/// access them during the call.
pub unsafe fn matmul_epilogue(dst: *mut f32, a: Mat, b: Mat, epi: Epilogue) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(epi.bias.is_none_or(|b| b.len() >= m), "bias too short");
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        // SAFETY: as guaranteed by the caller; started, then initialised.
        unsafe {
            epi.start(dst, n, 0, m, n);
            return epi.finish(dst, n, m, n);
        }
    }
    // SAFETY: as guaranteed by the caller.
    unsafe { gemm_into(dst, n as isize, false, a, b, true, Some(&epi)) }
}

impl Epilogue<'_> {
    /// Starts `rows x cols` values at `dst` (rows `rs` apart, the first of
    /// them row `row0` of the product) with their row's bias, or zero.
    ///
    /// # Safety
    /// The values must be valid for writes and this thread's alone.
    unsafe fn start(&self, dst: *mut f32, rs: usize, row0: usize, rows: usize, cols: usize) {
        for r in 0..rows {
            let v = self.bias.map_or(0.0, |b| b[row0 + r]);
            // SAFETY: as guaranteed by the caller (maybe not initialised).
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * rs).cast(), cols) };
            row.fill(MaybeUninit::new(v));
        }
    }

    /// Clamps `rows x cols` values at `dst` (rows `rs` apart); `true` where
    /// every value before the clamp is finite.
    ///
    /// # Safety
    /// The values must be initialised, valid for writes and this thread's
    /// alone.
    unsafe fn finish(&self, dst: *mut f32, rs: usize, rows: usize, cols: usize) -> bool {
        let mut bad = 0u32;
        for r in 0..rows {
            // SAFETY: as guaranteed by the caller.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * rs), cols) };
            match self.clamp {
                None => row.iter().for_each(|v| bad |= u32::from(!v.is_finite())),
                Some((lo, hi)) => row.iter_mut().for_each(|v| {
                    bad |= u32::from(!v.is_finite());
                    *v = v.max(lo).min(hi);
                }),
            }
        }
        bad == 0
    }
}

/// The `gemm` call behind [`matmul`] and [`matmul_strided`]: `dst (rows
/// dst_rs apart) = [dst +] a * b`, on all rayon threads when `threads` and
/// the product is large.
///
/// # Safety
/// As for [`matmul_strided`].
unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: isize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    threads: bool,
    epi: Option<&Epilogue>,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Parts computed in parallel, each a single-threaded product: the gemm
    // crate's own threading (`Parallelism::Rayon`) was slower than one
    // thread on the pointwise convolutions of depthwise networks with a
    // large inner dimension (EfficientNet-Lite0's projections: 480 x 196 x
    // 80 in 158 us against 149 us on one thread and 109 us in two parts).
    // Columns in blocks of 16 where there are enough of them, else rows in
    // blocks of 8. How a product is cut changes the gemm crate's order of
    // sums in some shapes, so the parts depend on the shape alone (two or
    // four by the product's size), never on the threads: the same numbers
    // whatever `--jobs`. Each part packs the other matrix again: few parts,
    // and one where the caller runs products in parallel itself (`threads`
    // false: the callers decide it from shapes alone too).
    let parts = match m * n * k {
        _ if !threads => 1,
        x if x < PARALLEL_THRESHOLD => 1,
        x if x < LARGE_PRODUCT => 2,
        _ => 4,
    };
    let out = SharedPtr(dst);
    // one part: the product into its rows and columns, then the epilogue
    // on them (the destination is ours: the caller guarantees it)
    let part = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| -> bool {
        let ai = Mat::strided(
            &a.data[rows.start * a.rs as usize..],
            rows.len(),
            k,
            a.rs as usize,
            a.cs as usize,
        );
        let bj = Mat::strided(
            &b.data[cols.start * b.cs as usize..],
            k,
            cols.len(),
            b.rs as usize,
            b.cs as usize,
        );
        let at = rows.start as isize * dst_rs + cols.start as isize;
        let Some(e) = epi else {
            // SAFETY: this part alone writes rows `rows`, columns `cols`.
            unsafe { gemm_part(out.get().offset(at), dst_rs, accumulate, ai, bj) };
            return true;
        };
        // SAFETY: the block of rows `rows`, columns `cols` is this part's
        // alone: started with the bias (or written whole by the product),
        // then clamped.
        unsafe {
            let (block, rs) = (out.get().offset(at), dst_rs as usize);
            if e.bias.is_some() {
                e.start(block, rs, rows.start, rows.len(), cols.len());
            }
            gemm_part(block, dst_rs, e.bias.is_some(), ai, bj);
            e.finish(block, rs, rows.len(), cols.len())
        }
    };
    let parts_of = |len: usize, block: usize| {
        let per = len.div_ceil(parts).div_ceil(block) * block;
        (0..len.div_ceil(per))
            .map(|i| i * per..((i + 1) * per).min(len))
            .collect::<Vec<_>>()
    };
    let blocks: Vec<_> = if parts > 1 && n >= 16 * parts && (n >= 128 || m < 8 * parts) {
        parts_of(n, 16)
            .into_iter()
            .map(|cols| (0..m, cols))
            .collect()
    } else if parts > 1 && m >= 8 * parts {
        parts_of(m, 8)
            .into_iter()
            .map(|rows| (rows, 0..n))
            .collect()
    } else {
        vec![(0..m, 0..n)]
    };
    blocks
        .into_par_iter()
        .map(|(rows, cols)| part(rows, cols))
        .reduce(|| true, |x, y| x && y)
}

/// One single-threaded `gemm` call: `dst (rows dst_rs apart) = [dst +] a * b`.
///
/// # Safety
/// As for [`matmul_strided`].
unsafe fn gemm_part(dst: *mut f32, dst_rs: isize, accumulate: bool, a: Mat, b: Mat) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the caller guarantees the destination; `Mat` strides stay inside their slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr(pub(crate) *mut f32);
// SAFETY: only used by tasks that write disjoint parts (column or row blocks
// of a GEMM output, output rows of a Winograd block).
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    /// The pointer (a method, so that closures capture the whole `SharedPtr`).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_plain_and_transposed() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 17) as f32 - 8.0)
            .collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(
            &mut got,
            Mat::row_major(&a, m, k),
            Mat::row_major(&b, k, n),
            false,
            true,
        );
        assert_eq!(got, want, "small integers are exact in f32");
        // b stored transposed (n x k) and viewed through .t()
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut got2 = vec![1.0; m * n];
        matmul(
            &mut got2,
            Mat::row_major(&a, m, k),
            Mat::row_major(&bt, n, k).t(),
            true,
            false,
        );
        let want2: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
        assert_eq!(got2, want2);
    }

    /// The parts (columns, rows, one) and the epilogue against the naive
    /// product in f64: bias, then products, then the clamp; a non-finite
    /// value found wherever it is; no value left unwritten.
    #[test]
    fn products_with_an_epilogue_match_the_definition_in_every_split() {
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 23) as f32 - 1.0
        };
        // columns split (n large), rows split (n small), one part (small)
        for (m, k, n) in [
            (24, 40, 300),
            (96, 64, 49),
            (5, 3, 7),
            (3, 0, 4),
            (200, 700, 17),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let bias: Vec<f32> = (0..m).map(|_| next()).collect();
            for (with_bias, clamp) in [
                (false, None),
                (true, None),
                (true, Some((-0.5f32, 0.25f32))),
            ] {
                let epi = Epilogue {
                    bias: with_bias.then_some(&bias[..]),
                    clamp,
                };
                let mut out: Vec<f32> = Vec::with_capacity(m * n);
                // SAFETY: m * n values of capacity, written by the call.
                let finite = unsafe {
                    let f = matmul_epilogue(
                        out.as_mut_ptr(),
                        Mat::row_major(&a, m, k),
                        Mat::row_major(&b, k, n),
                        epi,
                    );
                    out.set_len(m * n);
                    f
                };
                assert!(finite);
                for i in 0..m {
                    for j in 0..n {
                        let mut z = if with_bias { bias[i] as f64 } else { 0.0 };
                        z += (0..k)
                            .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                            .sum::<f64>();
                        if let Some((lo, hi)) = clamp {
                            z = z.max(lo as f64).min(hi as f64);
                        }
                        let got = out[i * n + j] as f64;
                        assert!(
                            (got - z).abs() <= 1e-5 * (1.0 + z.abs()),
                            "{m}x{k}x{n} ({i}, {j}): {got} vs {z}"
                        );
                    }
                }
                // an overflow in any part is found, before the clamp hides it
                if k > 0 {
                    let mut big = a.clone();
                    big[(m - 1) * k] = f32::MAX;
                    let mut bb = b.clone();
                    bb[n - 1] = f32::MAX;
                    let mut out: Vec<f32> = Vec::with_capacity(m * n);
                    // SAFETY: as above.
                    let finite = unsafe {
                        matmul_epilogue(
                            out.as_mut_ptr(),
                            Mat::row_major(&big, m, k),
                            Mat::row_major(&bb, k, n),
                            epi,
                        )
                    };
                    assert!(!finite, "{m}x{k}x{n}");
                }
            }
        }
    }

    /// The same numbers on one thread and on three, in shapes where the way
    /// a product is cut changes the gemm crate's order of sums (192 x 1152
    /// x 49 cut by rows, 64 x 600 x 300 by columns, as found by trying).
    #[test]
    fn products_do_not_depend_on_the_threads() {
        for (m, k, n) in [(192, 1152, 49), (64, 600, 300), (96, 16, 12544)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1000) as f32 / 777.0 - 0.6)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104729) % 1000) as f32 / 555.0 - 0.9)
                .collect();
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut c = vec![0.0f32; m * n];
                    let (am, bm) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
                    matmul(&mut c, am, bm, false, true);
                    c
                })
            };
            assert!(on(1) == on(3), "{m}x{k}x{n}");
        }
    }
}
