#!/usr/bin/env python3
"""Small versions of common CNN architectures, exported by PyTorch's two ONNX
exporters, with PyTorch's own numbers: the fixtures of tests/it/exporters.rs.

Each architecture is built with its real torchvision / timm constructor, then
shrunk in place: every Conv2d, BatchNorm2d and Linear keeps its class (timm's
BatchNormAct2d, Conv2dSame...) and its place in the graph, but has its channel
counts divided by a factor (the image's 3 channels and the classes excepted;
grouped convolutions keep some groups, depthwise ones stay depthwise). Weights
are drawn anew (He normal; biases as the constructors set them, zero), and
BatchNorm running statistics are those of random inputs, then perturbed, so
that no BatchNorm is the identity and the activations keep a sane scale at
every depth.

For each architecture NAME it writes, into tests/fixtures/exporters/:
- NAME.ts.onnx: torch.onnx.export(dynamo=False, opset_version=13), dynamic batch;
- NAME.dynamo.onnx (+ NAME.dynamo.onnx.data): torch.onnx.export(dynamo=True,
  opset_version=18), weights in an external data file; the per-node
  metadata (stack traces with the exporting machine's paths) is removed;
- NAME.input.npy: the input [1, 3, H, W] (a seeded normal draw, as a
  normalised image);
- NAME.logits.npy: PyTorch's logits [1, 10] on it, computed in float64
  (stored as float32);
- NAME.grad.npy: autograd's gradient of the top logit with respect to the
  input [1, 3, H, W], computed in float64 (gradient x input is input * grad).
and manifest.json: per architecture the input size, top class, whether every
nonlinearity is piecewise linear through the origin (LRP-0 == gradient x
input), and the versions of the producers.

Run (CPU; about a minute):
    python3 scripts/export_zoo.py            # all architectures
    python3 scripts/export_zoo.py alexnet    # some

Made with torch 2.15.0, torchvision 0.29.2, timm 1.0.31, onnx 1.23.2,
onnxscript 0.7.2 (pip install torch torchvision timm onnx onnxscript).
"""

import copy
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "exporters")
CLASSES = 10


def tv(name, **kw):
    import torchvision

    return lambda: getattr(torchvision.models, name)(weights=None, num_classes=CLASSES, **kw)


def tm(name, **kw):
    import timm

    return lambda: timm.create_model(name, pretrained=False, num_classes=CLASSES, **kw)


def shufflenet():
    import torchvision

    return torchvision.models.ShuffleNetV2([4, 8, 4], [8, 16, 32, 64, 128], num_classes=CLASSES)


# name: (constructor, channel divisor, input size, ReLU-only (LRP-0 == grad x input)
# [, divisor of the hidden dense layers]). AlexNet and VGG keep 224x224: their
# adaptive average pool must not upsample (the TorchScript exporter refuses it).
ARCHS = {
    "alexnet": (tv("alexnet"), 4, 224, True, 128),
    "vgg11_bn": (tv("vgg11_bn"), 16, 224, True, 128),
    "resnet50": (tv("resnet50"), 32, 64, True),
    "resnext50_32x4d": (tv("resnext50_32x4d"), 32, 64, True),
    "squeezenet1_0": (tv("squeezenet1_0"), 8, 64, True),
    "densenet121": (tv("densenet121"), 16, 64, True),
    "googlenet": (tv("googlenet", aux_logits=False, init_weights=False), 16, 64, True),
    "mobilenet_v3_large": (tv("mobilenet_v3_large"), 16, 64, False),
    # x1_0's repeats with reduced stage widths (its branch width, 58, has no divisor)
    "shufflenet_v2_x1_0": (shufflenet, 1, 64, True),
    "mnasnet1_0": (tv("mnasnet1_0"), 16, 64, True),
    "efficientnet_b0": (tv("efficientnet_b0"), 16, 64, False),
    "regnet_y_400mf": (tv("regnet_y_400mf"), 16, 64, False),
    "timm_resnet18d": (tm("resnet18d"), 16, 64, True),
    "timm_mobilenetv3_small_100": (tm("mobilenetv3_small_100"), 8, 64, False),
}


def shrink_channels(c, k):
    """c // k, keeping the image's channels and the classes (a mismatch
    between neighbours would fail PyTorch's own forward pass)."""
    if c in (1, 3, CLASSES):
        return c
    return max(1, c // k)


def shrink(model, k, k_dense):
    """Divides the channel counts of every Conv2d and BatchNorm2d by k, the
    hidden widths of Linear layers by k_dense, in place."""
    # a dense layer reads flattened channels (k) or a dense layer's outputs (k_dense)
    widths = {}
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features != CLASSES:
            widths[m.out_features] = k_dense
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.in_features not in widths:
            widths[m.in_features] = k
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            cin, cout, g = m.in_channels, m.out_channels, m.groups
            cin2, cout2 = shrink_channels(cin, k), shrink_channels(cout, k)
            if g == 1:
                g2 = 1
            elif g == cin:  # depthwise stays depthwise
                g2 = cin2
            else:  # grouped: fewer groups, several channels each where possible
                g2 = max(2, g // k)
                while cin2 % g2 or cout2 % g2:
                    g2 -= 1
            m.in_channels, m.out_channels, m.groups = cin2, cout2, g2
            m.weight = nn.Parameter(torch.empty(cout2, cin2 // g2, *m.kernel_size))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(cout2))
        elif isinstance(m, nn.BatchNorm2d):
            n = shrink_channels(m.num_features, k)
            m.num_features = n
            m.weight = nn.Parameter(torch.empty(n))
            m.bias = nn.Parameter(torch.empty(n))
            m.running_mean = torch.zeros(n)
            m.running_var = torch.ones(n)
        elif isinstance(m, nn.Linear):
            fin, fout = m.in_features, m.out_features
            fin2 = fin // widths[fin] if fin in widths else fin
            fout2 = shrink_channels(fout, k_dense)
            m.in_features, m.out_features = fin2, fout2
            m.weight = nn.Parameter(torch.empty(fout2, fin2))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(fout2))


def randomise(model, size, gen):
    """He-normal weights; zero biases and BatchNorm scale 1 and shift 0, as the
    constructors initialise them (so the TorchScript exporter shares the equal
    ones through Identity nodes, as it does for users' models); BatchNorm
    running statistics of random inputs, then perturbed (so no BatchNorm is
    the identity)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, math.sqrt(2.0 / fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.momentum = None  # cumulative average over the calibration batches
                m.reset_running_stats()
        # calibration: running statistics of random inputs, layer by layer
        model.train()
        for _ in range(4):
            model(torch.randn(4, 3, size, size, generator=gen))
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean += 0.2 * m.running_var.sqrt() * torch.randn(n, generator=gen)
                m.running_var *= torch.empty(n).uniform_(0.7, 1.4, generator=gen)


def export(name, ctor, k, size, relu_only, k_dense=None):
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    model = ctor()
    shrink(model, k, k_dense or k)
    randomise(model, size, gen)
    model.eval()
    x = torch.randn(1, 3, size, size, generator=gen)
    # the reference in float64: PyTorch's float32 gradient of a net with many
    # activations near a ReLU kink or max-pool near-ties carries its own
    # rounding (cosine 0.998 against float64 on a reduced regnet_x_400mf)
    double = copy.deepcopy(model).double()
    xg = x.double().requires_grad_(True)
    logits = double(xg)
    top = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, top], xg)
    logits, grad = logits.float(), grad.float()
    params = sum(p.numel() for p in model.parameters())

    base = os.path.join(OUT, name)
    ts = base + ".ts.onnx"
    torch.onnx.export(
        model,
        (x,),
        ts,
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    dy = base + ".dynamo.onnx"
    for old in (dy, dy + ".data"):
        if os.path.exists(old):
            os.remove(old)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18)
    program.save(dy, external_data=True)
    strip_metadata(dy)
    np.save(base + ".input.npy", x.numpy().astype(np.float32))
    np.save(base + ".logits.npy", logits.detach().numpy().astype(np.float32))
    np.save(base + ".grad.npy", grad.numpy().astype(np.float32))
    check_onnxruntime(name, ts, dy, x, logits)
    return {
        "size": size,
        "top": top,
        "relu_only": relu_only,
        "parameters": params,
        "divisor": k,
    }


def strip_metadata(path):
    """Removes the dynamo exporter's per-node metadata (stack traces naming
    the exporting machine's files, FX node dumps): documentation only, no
    semantics; the weights stay in the external data file as written."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    onnx.save(m, path)


def check_onnxruntime(name, ts, dy, x, logits):
    """onnxruntime must agree with PyTorch on both files (a broken export is
    not a fixture)."""
    import onnxruntime as ort

    want = logits.detach().numpy()
    for path in (ts, dy):
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)
        assert err < 1e-4, f"{path}: onnxruntime differs from PyTorch by {err}"
        print(f"  {os.path.basename(path)}: onnxruntime vs PyTorch {err:.1e}")


def main():
    import timm
    import torchvision
    import onnx
    import onnxscript

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    names = sys.argv[1:] or list(ARCHS)
    manifest_path = os.path.join(OUT, "manifest.json")
    manifest = {"models": {}}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    for name in names:
        print(name)
        manifest["models"][name] = export(name, *ARCHS[name])
    manifest["producers"] = {
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "command": "python3 scripts/export_zoo.py",
    }
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
