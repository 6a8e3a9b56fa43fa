#!/usr/bin/env python3
"""Time PyTorch and Zennit on VGG16 (224x224, batch 1) on this machine, as the reference for
`lrp-heatmap bench`. Not part of the tests. Needs torch, torchvision and zennit:

    python3 scripts/zennit_bench.py [--runs 5] [--threads 2]

VGG16 is torchvision's architecture with random weights (no download); the time of the
rules does not depend on the weight values. Prints the median seconds per image of the
forward pass and of each composite, like `lrp-heatmap bench`.
"""
import argparse, statistics, time

import torch
from torchvision.models import vgg16
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat, LayerMapComposite
from zennit.rules import Epsilon, ZPlus, Pass
from zennit.types import Convolution, Linear, Activation, AvgPool

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = vgg16(weights=None).eval()
for p in model.parameters():
    p.requires_grad_(False)
x = torch.rand(1, 3, 224, 224)
target = torch.eye(1000)[[0]]


def median(f):
    f()  # warm-up
    ts = []
    for _ in range(args.runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def forward():
    with torch.no_grad():
        model(x)


print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
print(f"{'analyzer':<20}{'s/image':>10}")
print(f"{'forward':<20}{median(forward):>10.3f}")
composites = {
    "epsilon": LayerMapComposite([(Convolution, Epsilon()), (Linear, Epsilon())]),
    "zplus": LayerMapComposite([(Convolution, ZPlus()), (Linear, ZPlus())]),
    "epsilon-plus-flat": EpsilonPlusFlat(),
}
for name, comp in composites.items():
    def run():
        with Gradient(model=model, composite=comp) as attributor:
            attributor(x.clone().requires_grad_(True), target)
    print(f"{name:<20}{median(run):>10.3f}")
