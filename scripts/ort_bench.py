#!/usr/bin/env python3
"""Time onnxruntime's forward pass on an ONNX model (not part of the tests).

    python3 scripts/ort_bench.py MODEL.onnx [--runs 10] [--threads 2]

For the README's comparison with `lrp-heatmap bench --model MODEL.onnx`: batch 1, the model's
own input size (symbolic dimensions become 1 and 224), median seconds of --runs runs after one
warm-up run.
"""
import argparse, statistics, time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else (1 if i == 0 else 224) for i, d in enumerate(inp.shape)]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sess.run(None, {inp.name: x})
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, input {shape}")
    print(f"forward s/image {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
