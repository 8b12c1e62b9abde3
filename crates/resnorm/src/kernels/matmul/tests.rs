//! Tests of the matrix products against a naive f64 reference.

use super::*;
use crate::rng::Rng;
use rayon::prelude::*;

fn normal(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal()).collect()
}

fn is_shape(r: Result<()>) -> bool {
    matches!(r, Err(Error::Shape { .. }))
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// `A·B` with `A` read as `[m,k]` (or stored `[k,m]`), `B` as `[k,n]` (or `[n,k]`), in f64.
fn naive_matmul(a: &[f32], b: &[f32], d: MatDims, t: Trans) -> Vec<f32> {
    let at = |i: usize, p: usize| if t.a { a[p * d.m + i] } else { a[i * d.k + p] } as f64;
    let bt = |p: usize, j: usize| if t.b { b[j * d.k + p] } else { b[p * d.n + j] } as f64;
    let mut c = vec![0.0; d.m * d.n];
    for i in 0..d.m {
        for j in 0..d.n {
            c[i * d.n + j] = (0..d.k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() as f32;
        }
    }
    c
}

#[test]
fn matmul_matches_naive_for_every_transpose_and_accumulate() {
    // (97, 101, 67) is above PARALLEL_MIN_WORK, so it runs on the pool; the one-row
    // products after it are above VECTOR_PARALLEL_MIN_WORK: (1, 300, 257) splits its sum
    // into blocks of 38 rows and a last of 34 (or its columns, `B` transposed);
    // (1, 3, 30000) sums in one block of 3 rows (or splits its columns).
    let shapes = [
        (1, 1, 1),
        (3, 5, 7),
        (17, 9, 13),
        (33, 65, 31),
        (97, 101, 67),
        (1, 300, 257),
        (1, 3, 30_000),
    ];
    const { assert!(97 * 101 * 67 >= PARALLEL_MIN_WORK) };
    const { assert!(300 * 257 >= VECTOR_PARALLEL_MIN_WORK) };
    const { assert!(3 * 30_000 >= VECTOR_PARALLEL_MIN_WORK) };
    for (m, k, n) in shapes {
        let dims = MatDims { m, k, n };
        let a = normal(1, m * k);
        let b = normal(2, k * n);
        let start = normal(3, m * n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let trans = Trans { a: ta, b: tb };
            let want = naive_matmul(&a, &b, dims, trans);
            let mut c = start.clone();
            matmul(&mut c, &a, &b, dims, trans, false).unwrap();
            assert_close(&format!("{dims:?} {trans:?}"), &c, &want, 1e-5, 1e-5);
            matmul(&mut c, &a, &b, dims, trans, true).unwrap();
            let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
            assert_close(&format!("{dims:?} {trans:?} += "), &c, &twice, 1e-5, 2e-5);
        }
    }
}

#[test]
fn matmul_plus_row_adds_the_row_to_every_row_of_the_product() {
    // One row (the decoding path), one block on the calling thread, and blocks on the
    // pool (97·101·67 is above PARALLEL_MIN_WORK).
    for (m, k, n) in [(1, 300, 257), (3, 5, 7), (97, 101, 67)] {
        let dims = MatDims { m, k, n };
        let a = normal(1, m * k);
        let b = normal(2, k * n);
        let row = normal(3, n);
        for trans in [Trans::NONE, Trans { a: true, b: true }] {
            let product = naive_matmul(&a, &b, dims, trans);
            let want: Vec<f32> = product
                .chunks_exact(n)
                .flat_map(|r| r.iter().zip(&row).map(|(p, b)| p + b))
                .collect();
            let mut c = normal(4, m * n);
            matmul_plus_row(&mut c, &a, &b, &row, dims, trans).unwrap();
            assert_close(&format!("{dims:?} {trans:?}"), &c, &want, 1e-5, 1e-5);
        }
    }
}

/// One-row products started from several pool tasks at once (decoding several sequences
/// in parallel) are each the product alone: a thread waiting for its blocks may run
/// another product, which must not share its partial rows.
#[test]
fn one_row_products_run_concurrently() {
    let dims = MatDims {
        m: 1,
        k: 300,
        n: 257,
    };
    let b = normal(2, dims.k * dims.n);
    let rows: Vec<Vec<f32>> = (0..16).map(|s| normal(10 + s, dims.k)).collect();
    let want: Vec<Vec<f32>> = rows
        .iter()
        .map(|a| naive_matmul(a, &b, dims, Trans::NONE))
        .collect();
    let got: Vec<Vec<f32>> = crate::threads::pool().install(|| {
        rows.par_iter()
            .map(|a| {
                let mut c = vec![0.0; dims.n];
                matmul(&mut c, a, &b, dims, Trans::NONE, false).unwrap();
                c
            })
            .collect()
    });
    for (got, want) in got.iter().zip(&want) {
        assert_close("concurrent one-row product", got, want, 1e-5, 1e-5);
    }
}

#[test]
fn matmul_with_empty_sum_writes_zeros_or_keeps_c() {
    let dims = MatDims { m: 2, k: 0, n: 3 };
    let mut c = vec![5.0; 6];
    matmul(&mut c, &[], &[], dims, Trans::NONE, true).unwrap();
    assert_eq!(c, vec![5.0; 6]);
    matmul(&mut c, &[], &[], dims, Trans::NONE, false).unwrap();
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn matmul_strided_writes_only_its_block() {
    // A 3x2 block at column 1 of a [3, 5] buffer times a stored-transposed [2, 2] B.
    let a_buf = normal(4, 15);
    let b = normal(5, 4);
    let mut c_buf = [9.0; 3 * 4];
    let a = MatRef {
        data: &a_buf[1..],
        row_stride: 5,
        transposed: false,
    };
    let b_ref = MatRef {
        data: &b,
        row_stride: 2,
        transposed: true,
    };
    let c = MatMut {
        data: &mut c_buf[2..],
        row_stride: 4,
    };
    let dims = MatDims { m: 3, k: 2, n: 2 };
    matmul_strided(c, a, b_ref, dims, false).unwrap();
    let a_dense: Vec<f32> = (0..3)
        .flat_map(|r| a_buf[r * 5 + 1..r * 5 + 3].to_vec())
        .collect();
    let want = naive_matmul(&a_dense, &b, dims, Trans { a: false, b: true });
    for r in 0..3 {
        assert_eq!(
            &c_buf[r * 4..r * 4 + 2],
            &[9.0, 9.0],
            "untouched columns of row {r}"
        );
        assert_close(
            "block",
            &c_buf[r * 4 + 2..r * 4 + 4],
            &want[r * 2..r * 2 + 2],
            1e-5,
            1e-6,
        );
    }
}

#[test]
fn matmul_rejects_bad_sizes() {
    let dims = MatDims { m: 2, k: 3, n: 4 };
    let (a, b, mut c) = (vec![0.0; 6], vec![0.0; 12], vec![0.0; 8]);
    assert!(is_shape(matmul(
        &mut c,
        &a[..5],
        &b,
        dims,
        Trans::NONE,
        false
    )));
    assert!(is_shape(matmul(
        &mut c,
        &a,
        &b[..11],
        dims,
        Trans::NONE,
        false
    )));
    assert!(is_shape(matmul(
        &mut c[..7],
        &a,
        &b,
        dims,
        Trans::NONE,
        false
    )));
    let overlapping = MatRef {
        data: &a,
        row_stride: 2,
        transposed: false,
    };
    let b_ref = MatRef {
        data: &b,
        row_stride: 4,
        transposed: false,
    };
    let c_mut = MatMut {
        data: &mut c,
        row_stride: 4,
    };
    assert!(is_shape(matmul_strided(
        c_mut,
        overlapping,
        b_ref,
        dims,
        false
    )));
    let a_ref = MatRef {
        data: &a,
        row_stride: 3,
        transposed: false,
    };
    let short = MatMut {
        data: &mut c,
        row_stride: 5,
    };
    assert!(is_shape(matmul_strided(short, a_ref, b_ref, dims, false)));
    assert_eq!(c, vec![0.0; 8], "nothing written on error");
}
