#!/usr/bin/env python3
"""The README's speed table, measured side by side in one run (not part of the tests).

    python3 scripts/speed_side_by_side.py [--vgg16 vgg16.onnx] [--runs 10] [--threads 2] [--rounds 3]

For each model (the bundled EfficientNet-Lite0, and VGG16 when --vgg16 names the file that
`cargo run --release --example synth_vgg16 -- vgg16.onnx` writes) it times, batch 1, 224x224,
medians of --runs runs after a warm-up, on --threads threads:

- lrp-heatmap: `bench` (release build, target/release/lrp-heatmap): gradient, zplus, epsilon,
  and as the forward pass the gradient's (the lean pass: what its backward pass reads is kept);
- PyTorch on the same ONNX file converted by onnx2torch (same weights): forward, the input
  gradient by autograd, and Zennit 0.5.1's ZPlus and Epsilon composites on its convolutions and
  dense layers;
- onnxruntime: forward (five times --runs runs).

The three take turns, --rounds times per model, and each cell is the median of its rounds (the
ratios of those medians): on a shared, noisy machine a burst of someone else's work then slows
one round of all three rather than one of them. Compare the ratios within one run, not absolute
times across runs. Needs torch, zennit, onnx2torch, onnxruntime (pip); none of them is a project dependency.
"""
import argparse, re, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx2torch import convert
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite
from zennit.rules import Epsilon, ZPlus
from zennit.types import Convolution, Linear

ROOT = Path(__file__).resolve().parent.parent


def median(f, runs):
    f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def ours(model, runs):
    exe = ROOT / "target" / "release" / "lrp-heatmap"
    out = subprocess.run(
        [str(exe), "bench", "--model", str(model), "--rules", "gradient,zplus,epsilon",
         "--runs", str(runs)],
        check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"^(gradient|zplus|epsilon)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            res[m.group(1)] = float(m.group(2))
            if m.group(1) == "gradient":
                # the gradient's forward pass: the lean one (activation
                # outputs kept for the backward pass, ReLU6 fused)
                res["forward"] = float(m.group(3))
    return res


def torch_side(model):
    """A function timing PyTorch / Zennit on `model` (converted once)."""
    net = convert(onnx.load(str(model))).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        classes = net(x).shape[1]
    target = torch.eye(classes)[[0]]

    def forward():
        with torch.no_grad():
            net(x)

    def gradient():
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (out * target).sum().backward()

    def timed(runs):
        res = {"forward": median(forward, runs), "gradient": median(gradient, runs)}
        for name, rule in [("zplus", ZPlus), ("epsilon", Epsilon)]:
            comp = LayerMapComposite([(Convolution, rule()), (Linear, rule())])

            def run():
                with Gradient(model=net, composite=comp) as attributor:
                    attributor(x.clone().requires_grad_(True), target)

            res[name] = median(run, runs)
        return res

    return timed


def ort_side(model, threads):
    """A function timing onnxruntime's forward pass on `model` (one session)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else (1 if i == 0 else 224) for i, d in enumerate(inp.shape)]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return lambda runs: {"forward": median(lambda: sess.run(None, {inp.name: x}), runs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vgg16", type=Path)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [("EfficientNet-Lite0", ROOT / "models" / "efficientnet-lite0.onnx")]
    if args.vgg16:
        models.append(("VGG16", args.vgg16))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"medians of {args.runs} runs, median of {args.rounds} rounds taken in turn")
    print(f"{'model':<20}{'':<10}{'lrp-heatmap':>12}{'PyTorch/Zennit':>16}{'onnxruntime':>13}"
          f"{'ours/torch':>12}{'ours/ort':>10}")
    for name, path in models:
        runs = args.runs if name != "VGG16" else max(3, args.runs // 2)
        torch_timed, ort_timed = torch_side(path), ort_side(path, args.threads)
        rounds = {"ours": [], "torch": [], "ort": []}
        for _ in range(args.rounds):
            rounds["ours"].append(ours(path, runs))
            rounds["torch"].append(torch_timed(runs))
            # onnxruntime's pass is short and its median steadies slowly: 5x the runs
            rounds["ort"].append(ort_timed(5 * runs))
        o, t, r = ({k: statistics.median(d[k] for d in rounds[who]) for k in rounds[who][0]}
                   for who in ("ours", "torch", "ort"))
        for what in ["forward", "gradient", "zplus", "epsilon"]:
            ort_v = r.get(what)
            print(f"{name:<20}{what:<10}{o[what]:>12.4f}{t[what]:>16.4f}"
                  f"{(f'{ort_v:.4f}' if ort_v else '-'):>13}{o[what] / t[what]:>12.2f}"
                  f"{(f'{o[what] / ort_v:.2f}' if ort_v else '-'):>10}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
