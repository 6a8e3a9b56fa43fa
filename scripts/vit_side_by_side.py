#!/usr/bin/env python3
"""The full torchvision vit_b_16 side by side: LXT's CP-LRP in PyTorch,
onnxruntime's forward pass and lrp-heatmap's `bench` (not part of the tests).

    python3 scripts/vit_side_by_side.py VIT.onnx [--runs 5] [--threads 2] [--rounds 1]
        [--rules cp-lrp] [--exe target/release/lrp-heatmap] [--compare DIR]

The model: torchvision's vit_b_16 (1000 classes) with random weights drawn
from a seeded generator as scripts/export_vit.py draws them (He-normal Conv2d
and Linear weights, biases 0.1 N(0, 1), LayerNorm scales 1 + 0.1 N(0, 1) and
shifts 0.1 N(0, 1), class token and position embedding 0.5 N(0, 1); not the
constructor's, whose zero head would make every logit 0 and every map empty).
It is rebuilt from the seed at every run and exported to VIT.onnx (+
VIT.onnx.data) by the dynamo exporter (opset 18, weights in the external data
file, per-node metadata removed) only when VIT.onnx is absent; onnxruntime's
logits on the file are checked against PyTorch's (a file of other weights
fails there). About 330 MB; never committed.

Times, batch 1, 224x224, medians of --runs runs after one warm-up, on
--threads threads:
- PyTorch: the plain forward pass (no_grad), then LXT's CP-LRP: the model
  patched with lxt.efficient.monkey_patch(torchvision.models.vision_transformer,
  lxt.efficient.models.vit_torch.cp_LRP), forward + backward of the top logit
  + input * grad, float32;
- onnxruntime: the forward pass (intra_op_num_threads = --threads);
- lrp-heatmap: `bench --model VIT.onnx --rules RULE --runs N` for each of
  --rules (one call per rule: a rule or a model the binary does not take is
  reported in its row, the others still run); its s/image and forward s.
LXT, onnxruntime and lrp-heatmap take turns --rounds times and each cell is
the median of its rounds (the plain PyTorch forward's rounds come first: LXT's
patch cannot be undone). One table, with the ratios lrp-heatmap / LXT and
lrp-heatmap / onnxruntime; compare ratios within one run, not times across
runs (lrp-heatmap's rules: `lrp-heatmap --help`, e.g. cp-lrp, cp-lrp-gamma,
attnlrp, attnlrp-gamma).

--compare DIR: also writes DIR/vit_b_16.input.npy (a seeded normal draw,
[1, 3, 224, 224] float32) and DIR/vit_b_16.lxt_cp_lrp.npy (LXT's CP-LRP map
of its top logit, [1, 3, 224, 224] float32, float32 computation), and prints
the top class, to compare with lrp-heatmap's map by hand.

Needs torch, torchvision, onnx, onnxscript, onnxruntime, lxt and zennit
(pip); none of them is a project dependency. lxt 2.1 is imported without the
Hugging Face models of its default patch map (they do not import with
transformers 5), see import_lxt.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
SEED = 16  # the weights' generator
INPUT_SEED = 224


def median(f, runs):
    f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def randomise(model, gen):
    """As scripts/export_vit.py's randomise (copied, not imported)."""
    done = set()

    def normal(p, std, mean=0.0):
        p.normal_(0.0, std, generator=gen).add_(mean)
        done.add(id(p))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                normal(m.weight, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    normal(m.bias, 0.1)
            elif isinstance(m, nn.MultiheadAttention):
                normal(m.in_proj_weight, math.sqrt(2.0 / m.in_proj_weight.shape[1]))
                normal(m.in_proj_bias, 0.1)
            elif isinstance(m, nn.LayerNorm):
                normal(m.weight, 0.1, 1.0)
                normal(m.bias, 0.1)
        for name, p in model.named_parameters():
            if name.split(".")[-1] in ("class_token", "pos_embedding"):
                normal(p, 0.5)
    left = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not left, f"parameters not drawn: {left}"


def build():
    import torchvision

    model = torchvision.models.vit_b_16(weights=None)
    randomise(model, torch.Generator().manual_seed(SEED))
    return model.eval()


def strip_metadata(path):
    """As scripts/export_zoo.py's: drops the per-node stack traces."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    onnx.save(m, path)


def export(model, path, x):
    """Dynamo exporter, opset 18, weights in PATH.data."""
    for old in (path, Path(str(path) + ".data")):
        if old.exists():
            old.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18)
    program.save(str(path), external_data=True)
    strip_metadata(str(path))
    size = sum(p.stat().st_size for p in (path, Path(str(path) + ".data")) if p.exists())
    print(f"exported {path} ({size / 1e6:.0f} MB with its data) in {time.perf_counter() - t:.0f} s")


def ort_session(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def import_lxt():
    """lxt.efficient without the Hugging Face models of its default patch map
    (as scripts/export_vit.py's import_lxt): a stand-in lxt.efficient.models
    package over the real folder, whose get_default_map refuses."""
    import importlib
    import importlib.util
    import types

    if "lxt.efficient.models" not in sys.modules:
        spec = importlib.util.find_spec("lxt")
        stub = types.ModuleType("lxt.efficient.models")
        stub.__path__ = [os.path.join(os.path.dirname(spec.origin), "efficient", "models")]

        def get_default_map(module):
            raise ValueError("no default patch map here: pass one")

        stub.get_default_map = get_default_map
        sys.modules["lxt.efficient.models"] = stub
    return importlib.import_module("lxt.efficient"), importlib.import_module("lxt.efficient.models.vit_torch")


def ours(exe, model, rule, runs):
    """(s/image, forward s) of `bench` for one rule, or the error text."""
    if not exe.exists():
        return f"no binary at {exe} (cargo build --release)"
    cmd = [str(exe), "bench", "--model", str(model), "--rules", rule, "--runs", str(runs)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [l for l in (p.stderr + p.stdout).splitlines() if l.strip()]
        return f"exit {p.returncode}: " + " | ".join(lines[-3:])[:300]
    for line in p.stdout.splitlines():
        m = re.match(r"^(\S+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s*$", line)
        if m and m.group(1) == rule:
            return float(m.group(2)), float(m.group(3))
    return "no row for this rule in: " + " | ".join(p.stdout.splitlines())[:300]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="the ONNX file (exported here when absent)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="turns of LXT, onnxruntime and lrp-heatmap")
    ap.add_argument("--rules", default="cp-lrp", help="lrp-heatmap analyzers, comma-separated")
    ap.add_argument("--exe", type=Path, default=ROOT / "target" / "release" / "lrp-heatmap")
    ap.add_argument("--compare", type=Path, metavar="DIR", help="write LXT's CP-LRP map and its input here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import onnxruntime as ort
    import torchvision

    model = build()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(INPUT_SEED))
    if not args.model.exists():
        export(model, args.model, x)
    sess = ort_session(args.model, args.threads)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    with torch.no_grad():
        want = model(x).numpy()
    got = sess.run(None, feed)[0]
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 1e-3, f"{args.model}: onnxruntime differs from PyTorch by {err} (other weights?)"
    top = int(want.argmax())

    def torch_forward():
        with torch.no_grad():
            model(x)

    # the plain PyTorch forward first: LXT patches torch.nn's LayerNorm, GELU
    # and MultiheadAttention for good
    t_torch = statistics.median(median(torch_forward, args.runs) for _ in range(args.rounds))
    efficient, vit_torch = import_lxt()
    efficient.monkey_patch(torchvision.models.vision_transformer, vit_torch.cp_LRP)

    def cp_lrp():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out[0, top].backward()
        return (xi * xi.grad).detach()

    rules = [r for r in args.rules.split(",") if r]
    # LXT, onnxruntime and lrp-heatmap take turns, --rounds times: a burst of
    # someone else's work slows one round of all three rather than one of them
    rounds = {"lxt": [], "ort": [], **{r: [] for r in rules}}
    for _ in range(args.rounds):
        rounds["lxt"].append(median(cp_lrp, args.runs))
        rounds["ort"].append(median(lambda: sess.run(None, feed), args.runs))
        for r in rules:
            rounds[r].append(ours(args.exe, args.model, r, args.runs))
    t_lxt, t_ort = statistics.median(rounds["lxt"]), statistics.median(rounds["ort"])
    rows = {}
    for r in rules:
        errors = [v for v in rounds[r] if isinstance(v, str)]
        rows[r] = errors[0] if errors else (
            statistics.median(v[0] for v in rounds[r]), statistics.median(v[1] for v in rounds[r]))
    if args.compare:
        args.compare.mkdir(parents=True, exist_ok=True)
        np.save(args.compare / "vit_b_16.input.npy", x.numpy())
        np.save(args.compare / "vit_b_16.lxt_cp_lrp.npy", cp_lrp().numpy())

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"medians of {args.runs} runs after a warm-up, median of {args.rounds} rounds taken in turn; "
          f"vit_b_16 random weights (seed {SEED}), onnxruntime vs PyTorch logits {err:.1e}, top class {top}")
    print(f"{'':<26}{'s/image':>10}{'forward s':>11}{'/ LXT':>8}{'/ ort':>8}")
    print(f"{'PyTorch forward':<26}{'':>10}{t_torch:>11.4f}{'':>8}{t_torch / t_ort:>8.2f}")
    print(f"{'LXT cp_LRP (PyTorch)':<26}{t_lxt:>10.4f}{'':>11}{1.0:>8.2f}{'':>8}")
    print(f"{'onnxruntime forward':<26}{'':>10}{t_ort:>11.4f}{'':>8}{1.0:>8.2f}")
    for r, res in rows.items():
        name = f"lrp-heatmap {r}"
        if isinstance(res, str):
            print(f"{name:<26}{'error:':>10} {res}")
        else:
            s, f = res
            print(f"{name:<26}{s:>10.4f}{f:>11.4f}{s / t_lxt:>8.2f}{f / t_ort:>8.2f}")
    print("(/ LXT: s/image over LXT's; / ort: forward s over onnxruntime's)")
    if args.compare:
        print(f"LXT's CP-LRP map of class {top}: {args.compare / 'vit_b_16.lxt_cp_lrp.npy'}, "
              f"its input: {args.compare / 'vit_b_16.input.npy'}")


if __name__ == "__main__":
    main()
