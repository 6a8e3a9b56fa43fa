#!/usr/bin/env python3
"""Cross-check lrp-heatmap against Zennit on a VGG16-shaped PyTorch network.

Not part of the tests (they must not need PyTorch). Needs: torch, zennit, numpy, pillow or
nothing else; run from the repository root after `cargo build --release`:

    python3 scripts/zennit_crosscheck.py [--width-div 4] [--size 64]

It builds a VGG16 (configuration D, widths divided by --width-div) with random He weights and
small random biases, exports it with torch.onnx.export, writes a random image of exactly the
model's input size (so no resizing happens), explains it with every composite in both tools and
prints the largest absolute difference relative to max |R|.
"""
import argparse, os, subprocess, sys, tempfile

import numpy as np
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus
from zennit.types import Convolution, Linear

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def vgg16(div, size, classes=1000):
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            v = max(1, v // div)
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    s = size // 32
    hidden = max(1, 4096 // div)
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((s, s)), nn.Flatten(), nn.Linear(c * s * s, hidden), nn.ReLU(), nn.Dropout(),
                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, classes))
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            m.bias.data = (torch.rand(m.bias.shape, generator=g) - 0.5) * 0.1
    return net.eval()


def composites(eps, gamma, alpha):
    low = torch.tensor((0 - MEAN) / STD).view(1, 3, 1, 1)
    high = torch.tensor((1 - MEAN) / STD).view(1, 3, 1, 1)
    zb = dict(zero_params="bias")

    def lm(conv, dense, first=None):
        layer_map = layer_map_base() + [(Convolution, conv), (Linear, dense)]
        if first is None:
            return LayerMapComposite(layer_map=layer_map)
        return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Linear, first), (Convolution, first)])

    return {
        "lrp0": lambda: lm(Epsilon(0.0), Epsilon(0.0)),
        "epsilon": lambda: lm(Epsilon(eps), Epsilon(eps)),
        "zplus": lambda: lm(ZPlus(**zb), ZPlus(**zb)),
        "alpha-beta": lambda: lm(AlphaBeta(alpha, alpha - 1, **zb), AlphaBeta(alpha, alpha - 1, **zb)),
        "gamma": lambda: lm(Gamma(gamma), Gamma(gamma)),
        "wsquare": lambda: lm(WSquare(**zb), WSquare(**zb)),
        "flat": lambda: lm(Flat(**zb), Flat(**zb)),
        "zbox": lambda: lm(ZPlus(**zb), ZPlus(**zb), ZBox(low, high)),
        "epsilon-plus": lambda: lm(ZPlus(**zb), Epsilon(eps)),
        "epsilon-plus-flat": lambda: lm(ZPlus(**zb), Epsilon(eps), Flat(**zb)),
        "epsilon-gamma-box": lambda: lm(Gamma(gamma), Epsilon(eps), ZBox(low, high)),
        "epsilon-alpha2-beta1": lambda: lm(AlphaBeta(2.0, 1.0, **zb), Epsilon(eps)),
        "deep-taylor": lambda: lm(ZPlus(**zb), ZPlus(**zb), WSquare(**zb)),
        "deep-taylor-bounded": lambda: lm(ZPlus(**zb), ZPlus(**zb), ZBox(low, high)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width-div", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bin", default="target/release/lrp-heatmap")
    a = ap.parse_args()
    torch.set_num_threads(2)
    from PIL import Image
    tmp = tempfile.mkdtemp()
    net = vgg16(a.width_div, a.size)
    onnx_path = os.path.join(tmp, "vgg.onnx")
    x0 = torch.zeros(1, 3, a.size, a.size)
    torch.onnx.export(net, x0, onnx_path, opset_version=13, input_names=["input"], output_names=["output"], dynamo=False)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)
    img_path = os.path.join(tmp, "img.png")
    Image.fromarray(pixels).save(img_path)
    x = ((pixels.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
    x = torch.tensor(np.ascontiguousarray(x))
    with torch.no_grad():
        logits = net(x)
    cls = int(logits.argmax())
    worst = 0.0
    for name, make in composites(1e-6, 0.25, 2.0).items():
        with Gradient(model=net, composite=make()) as attributor:
            _, rel = attributor(x.clone().requires_grad_(True), lambda out: torch.eye(out.shape[1])[[cls]] * out)
        ref = rel[0].detach().numpy()
        out = subprocess.run([a.bin, img_path, "-m", onnx_path, "-r", name, "--raw", "--class", str(cls), "-o", tmp],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(name, "FAILED", out.stderr.strip())
            worst = float("inf")
            continue
        ours = np.load(os.path.join(tmp, f"img.{name}.npy"))
        scale = max(np.abs(ref).max(), 1e-30)
        diff = np.abs(ours - ref).max() / scale
        worst = max(worst, diff)
        print(f"{name:<22} sum zennit {ref.sum():>12.5f} ours {ours.sum():>12.5f}  max|diff|/max|R| = {diff:.2e}")
    print(f"worst relative difference: {worst:.2e}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
