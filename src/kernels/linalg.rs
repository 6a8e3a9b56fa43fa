//! Dense matrix products on the `gemm` crate (SIMD kernels chosen at run time, rayon threads).

use gemm::Parallelism;
use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_THRESHOLD: usize = 1 << 18;

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
    unsafe { gemm_into(dst.as_mut_ptr(), n as isize, accumulate, a, b, threads) }
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
    unsafe { gemm_into(dst, dst_rs, accumulate, a, b, threads) }
}

/// The `gemm` call behind [`matmul`] and [`matmul_strided`]: `dst (rows
/// dst_rs apart) = [dst +] a * b`, on all rayon threads when `threads` and
/// the product is large.
///
/// # Safety
/// As for [`matmul_strided`].
unsafe fn gemm_into(dst: *mut f32, dst_rs: isize, accumulate: bool, a: Mat, b: Mat, threads: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parts = if threads && m * n * k >= PARALLEL_THRESHOLD {
        rayon::current_num_threads()
    } else {
        1
    };
    // Split over the threads here, one single-threaded product per part: the
    // gemm crate's own threading (`Parallelism::Rayon`) was slower than one
    // thread on the pointwise convolutions of depthwise networks with a
    // large inner dimension (EfficientNet-Lite0's projections: 480 x 196 x
    // 80 in 158 us against 149 us on one thread and 109 us split here).
    // Columns in blocks of 16 where there are enough of them, else rows in
    // blocks of 8; each output's sum runs as in one product.
    let split = |len: usize, block: usize| {
        let per = len.div_ceil(parts).div_ceil(block) * block;
        (0..len.div_ceil(per)).map(move |i| (i * per, ((i + 1) * per).min(len)))
    };
    let out = SharedPtr(dst);
    if parts > 1 && n >= 16 * parts && (n >= 128 || m < 8 * parts) {
        let bs = b.cs.unsigned_abs();
        split(n, 16)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(j0, j1)| {
                let bj = Mat::strided(&b.data[j0 * bs..], k, j1 - j0, b.rs as usize, bs);
                // SAFETY: this part alone writes columns j0..j1 of the destination.
                unsafe { gemm_part(out.get().add(j0), dst_rs, accumulate, a, bj) };
            });
    } else if parts > 1 && m >= 8 * parts {
        let ars = a.rs.unsigned_abs();
        split(m, 8)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(i0, i1)| {
                let ai = Mat::strided(&a.data[i0 * ars..], i1 - i0, k, ars, a.cs as usize);
                // SAFETY: this part alone writes rows i0..i1 of the destination.
                unsafe {
                    gemm_part(
                        out.get().offset(i0 as isize * dst_rs),
                        dst_rs,
                        accumulate,
                        ai,
                        b,
                    )
                };
            });
    } else {
        // SAFETY: as guaranteed by the caller.
        unsafe { gemm_part(dst, dst_rs, accumulate, a, b) };
    }
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
}
