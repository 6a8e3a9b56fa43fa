//! Per-node timings of the forward pass and of the backward walk, for
//! `lrp-heatmap bench --layers`: off unless [`enable`]d (one relaxed atomic
//! load per node then), summed over every pass until [`take`]n.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which pass a time belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The native forward pass.
    Forward,
    /// The backward walk (relevance or gradient step of the node, including
    /// the sum into tensors read by several nodes).
    Backward,
}

/// What was measured for one node in one phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTime {
    /// Summed wall time.
    pub total: Duration,
    /// Passes measured.
    pub calls: usize,
}

/// One row of [`take`]'s report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The pass.
    pub phase: Phase,
    /// ONNX operator type.
    pub op_type: String,
    /// Node name.
    pub node: String,
    /// Time and calls.
    pub time: NodeTime,
}

static ON: AtomicBool = AtomicBool::new(false);
type Key = (Phase, String, String);
static TIMES: Mutex<Option<HashMap<Key, NodeTime>>> = Mutex::new(None);
/// Order of first appearance, so that the report follows the graph.
static ORDER: Mutex<Vec<Key>> = Mutex::new(Vec::new());

/// Starts recording (clears what was recorded before).
pub fn enable() {
    if let Ok(mut t) = TIMES.lock() {
        *t = Some(HashMap::new());
    }
    if let Ok(mut o) = ORDER.lock() {
        o.clear();
    }
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the rows, in the order the nodes first ran
/// (forward rows, then backward rows).
pub fn take() -> Vec<Row> {
    ON.store(false, Ordering::Relaxed);
    let times = TIMES
        .lock()
        .ok()
        .and_then(|mut t| t.take())
        .unwrap_or_default();
    let order = ORDER
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default();
    let mut rows: Vec<Row> = order
        .into_iter()
        .filter_map(|k| {
            let time = times.get(&k)?.clone();
            Some(Row {
                phase: k.0,
                op_type: k.1,
                node: k.2,
                time,
            })
        })
        .collect();
    rows.sort_by_key(|r| r.phase);
    rows
}

/// Runs `f`, adding its wall time to the node's row when recording.
pub(crate) fn timed<T>(phase: Phase, op_type: &str, node: &str, f: impl FnOnce() -> T) -> T {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed();
    if let Ok(mut guard) = TIMES.lock() {
        if let Some(map) = guard.as_mut() {
            let key = (phase, op_type.to_string(), node.to_string());
            let e = map.entry(key.clone()).or_default();
            if e.calls == 0 {
                if let Ok(mut o) = ORDER.lock() {
                    o.push(key);
                }
            }
            e.total += dt;
            e.calls += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_enabled_and_sums_calls() {
        timed(Phase::Forward, "Conv", "before", || ());
        enable();
        for _ in 0..3 {
            timed(Phase::Forward, "Conv", "a", || {
                std::thread::sleep(Duration::from_millis(1))
            });
        }
        timed(Phase::Backward, "Relu", "b", || ());
        timed(Phase::Forward, "Add", "c", || ());
        // other tests may run passes meanwhile: look at this test's nodes only
        let mine = |r: &Row| ["before", "a", "b", "c", "after"].contains(&r.node.as_str());
        let rows: Vec<Row> = take().into_iter().filter(mine).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"], "forward rows first, in run order");
        assert_eq!(rows[0].time.calls, 3);
        assert!(rows[0].time.total >= Duration::from_millis(3));
        // off again after take
        timed(Phase::Forward, "Conv", "after", || ());
        enable();
        assert!(!take().iter().any(mine));
    }
}
