//! `lrp-heatmap bench`: the table, and `--layers` (where the time goes).

use crate::support::*;

/// `bench --layers` prints, for each analyzer, the forward and the backward
/// pass node by node: every node of the tiny model (Conv, Relu,
/// GlobalAveragePool, Flatten, Gemm) in both, shares that sum to 100%, and
/// the time by operator type.
#[test]
fn layers_show_every_node_of_both_passes() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let m = model.to_str().unwrap();
    let o = run(
        t.path(),
        &[
            "bench",
            "--model",
            m,
            "--rules",
            "gradient,zplus",
            "--runs",
            "2",
            "--layers",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for analyzer in ["gradient", "zplus"] {
        assert!(out.lines().any(|l| l.starts_with(analyzer)), "{out}");
    }
    let sections: Vec<&str> = out.split("pass: ").skip(1).collect();
    assert_eq!(
        sections.len(),
        4,
        "forward and backward of two analyzers:\n{out}"
    );
    for s in sections {
        let rows: Vec<&str> = s
            .lines()
            .skip(2)
            .take_while(|l| !l.trim_start().starts_with("by operator"))
            .collect();
        assert_eq!(rows.len(), 5, "one row per node:\n{s}");
        for op in ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"] {
            assert!(rows.iter().any(|r| r.contains(op)), "{op} missing:\n{s}");
        }
        let share: f64 = rows
            .iter()
            .map(|r| {
                let pct = r.split_whitespace().nth(1).unwrap();
                pct.trim_end_matches('%').parse::<f64>().unwrap()
            })
            .sum();
        assert!((share - 100.0).abs() < 0.6, "shares sum to {share}:\n{s}");
        assert!(s.contains("by operator: "), "{s}");
    }
}

/// `bench --batches 1,3` prints forward passes per second at each batch
/// size, and the milliseconds per forward pass; a batch of 0 is refused.
#[test]
fn batches_print_forward_passes_per_second() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let m = model.to_str().unwrap();
    let o = run(
        t.path(),
        &[
            "bench",
            "--model",
            m,
            "--rules",
            "gradient",
            "--runs",
            "1",
            "--batches",
            "1,3",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for b in ["batch 1", "batch 3"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(b))
            .unwrap_or_else(|| panic!("no {b} row:\n{out}"));
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(v.len(), 2, "{line}");
        assert!(v[0] > 0.0 && v[1] >= 0.0, "{line}");
    }
    let o = run(t.path(), &["bench", "--model", m, "--batches", "0"]);
    check_usage_error(&o, "--batches");
}
