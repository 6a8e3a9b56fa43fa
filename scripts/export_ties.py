#!/usr/bin/env python3
"""A model whose max pools are full of near-ties, with PyTorch's own numbers:
the fixture of tests/it/ties.rs (`--maxpool-ties split`).

scripts/export_zoo.py's GoogLeNet (torchvision's, channels / 16, He-normal
weights, BatchNorm statistics of random 64x64 inputs, then perturbed), at
224x224 on images/astronaut.jpg. The photo's black background is flat:
there the inputs of a max-pool window are equal, or, once the input moves by
a relative 1e-7, within rounding of each other, and which one wins (and gets
all of the window's gradient) is decided by float rounding: PyTorch's own
float32 gradient at the input and at the input times (1 + 1e-7 noise) differ
(relative L2 in the .json), as do ours with `--maxpool-ties first`.

Writes into tests/fixtures/ties/:
- googlenet_ties.onnx: torch.onnx.export(dynamo=False, opset_version=13);
- googlenet_ties.input.npy: images/astronaut.jpg resized bilinearly to 224x224
  (PIL), /255, normalised with the ImageNet mean and std, [1, 3, 224, 224];
- googlenet_ties.logits.npy: PyTorch's float64 logits on it (as float32);
- googlenet_ties.grad32.npy: autograd's float32 gradient of the top logit
  with respect to the input;
- googlenet_ties.json: the top class, the cosine of the two gradients,
  the relative L2 of PyTorch's float32 gradient under 1e-7 noise, the
  versions of the producers.

Run (CPU; seconds):
    python3 scripts/export_ties.py

Made with torch 2.15.0, torchvision 0.29.2, onnx 1.23.2, Pillow 13.0.0
(pip install torch torchvision onnx pillow).
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "ties")
sys.path.insert(0, HERE)

import export_zoo  # noqa: E402  (shrink, CLASSES)

SIZE = 224
NAME = "googlenet_ties"
PHOTO = "astronaut.jpg"


def main():
    import PIL
    import torchvision
    import onnx
    from PIL import Image

    os.makedirs(OUT, exist_ok=True)
    # export_zoo's GoogLeNet (the fixture tests/fixtures/exporters/googlenet.*),
    # made the same way, but for 224x224 inputs
    gen = torch.Generator().manual_seed(sum(map(ord, "googlenet")))
    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=False, num_classes=export_zoo.CLASSES
    )
    export_zoo.shrink(model, 16, 16)
    export_zoo.randomise(model, 64, gen)
    model.eval()

    img = Image.open(os.path.join(ROOT, "images", PHOTO)).convert("RGB")
    img = img.resize((SIZE, SIZE), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    x = torch.from_numpy(((a - mean) / std).transpose(2, 0, 1)[None].copy())

    def gradient(inp):
        xg = inp.clone().requires_grad_(True)
        logits = model(xg)
        (g,) = torch.autograd.grad(logits[0, int(logits.argmax())], xg)
        return g.double()

    # PyTorch's own float32 gradient at the input times (1 + 1e-7 noise)
    noise = torch.randn(x.shape, generator=gen)
    g_noisy = gradient(x * (1 + 1e-7 * noise))
    g_plain = gradient(x)
    noise_rel_l2 = float((g_noisy - g_plain).norm() / g_plain.norm())
    print(f"PyTorch float32 gradient, input vs input * (1 + 1e-7 noise): relative L2 {noise_rel_l2:.3g}")

    grads = {}
    for dtype in (torch.float64, torch.float32):
        m = model.to(dtype)
        xg = x.to(dtype).clone().requires_grad_(True)
        logits = m(xg)
        top = int(logits.argmax())
        (g,) = torch.autograd.grad(logits[0, top], xg)
        grads[dtype] = (top, logits.detach().double(), g.double())
    top, logits64, g64 = grads[torch.float64]
    top32, _, g32 = grads[torch.float32]
    assert top == top32, "float32 and float64 disagree on the top class"
    cos = float((g32 * g64).sum() / (g32.norm() * g64.norm()))
    print(f"top {top}; cosine of the float32 and float64 gradients {cos:.4f}")

    model = model.float().eval()
    path = os.path.join(OUT, NAME + ".onnx")
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    base = os.path.join(OUT, NAME)
    np.save(base + ".input.npy", x.numpy().astype(np.float32))
    np.save(base + ".logits.npy", logits64.numpy().astype(np.float32))
    np.save(base + ".grad32.npy", g32.numpy().astype(np.float32))
    with open(base + ".json", "w") as f:
        json.dump(
            {
                "top": top,
                "size": SIZE,
                "cosine_grad32_grad64": round(cos, 6),
                "photo": PHOTO,
                "torch_first_noise_rel_l2": round(noise_rel_l2, 6),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "onnx": onnx.__version__,
                "pillow": PIL.__version__,
            },
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
