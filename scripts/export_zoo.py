#!/usr/bin/env python3
"""Small versions of common CNN architectures, exported by PyTorch's two ONNX
exporters, with PyTorch's own numbers: the fixtures of tests/it/exporters.rs.

Each architecture is built with its real torchvision / timm constructor, then
shrunk in place: every Conv2d, BatchNorm2d, LayerNorm (nn.LayerNorm and the
channels-first LayerNorm2d of timm and torchvision) and Linear (on flattened
features or on channels-last tensors) keeps its class (timm's BatchNormAct2d,
Conv2dSame...) and its place in the graph, but has its channel counts divided
by a factor (the image's 3 channels and the classes excepted; grouped
convolutions keep some groups, depthwise ones stay depthwise), and so do
ConvNeXt's layer scales (timm's `gamma`, torchvision's `layer_scale`).
Weights are drawn anew (He normal; biases as the constructors set them,
zero), BatchNorm running statistics are those of random inputs, then
perturbed, LayerNorm scales and shifts are drawn around 1 and 0 and layer
scales in [0.5, 1] (not ConvNeXt's 1e-6, which would make its blocks vanish),
so that no normalisation is the identity and the activations keep a sane
scale at every depth.

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
  input [1, 3, H, W], computed in float64 (gradient x input is input * grad);
- NAME.lrp0ref.npy (the architectures of LRP0REF, whose nonlinearities are
  ReLU, GELU and LayerNorm): what LRP-0 gives through them, the input times
  the float64 gradient of the top logit of the same network in which every
  LayerNorm's standard deviation is a constant ((x - mean) / std.detach()
  * w + b) and every GELU passes x * (gelu(x) / x).detach() (AttnLRP's
  identity rule: its derivative is taken as gelu(x) / x, 1/2 at 0); same
  forward values (checked to 1e-10 in float64), float32 [1, 3, H, W].
and manifest.json: per architecture the input size, top class, whether every
nonlinearity is piecewise linear through the origin (LRP-0 == gradient x
input), for those of LRP0REF `"lrp0ref": true` and the ONNX op types of each
export (`op_types`: how LayerNorm and GELU come out), and the versions of
the producers.

Run (CPU; about a minute):
    python3 scripts/export_zoo.py            # all architectures
    python3 scripts/export_zoo.py alexnet    # some
    python3 scripts/export_zoo.py convnext_atto convnext_tiny ln_mlp

A separate mode writes the full-size torchvision convnext_tiny (1000 classes,
random weights, layer scales 1) at 1x3x224x224 by the dynamo exporter (opset
18, weights in OUT.onnx.data), for speed measurements; never committed:
    python3 scripts/export_zoo.py --full-convnext-tiny OUT.onnx

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


class LnMlp(nn.Module):
    """A transformer-style MLP block on a convolutional stem: LayerNorm and
    Linear on channels-last tensors (the Linear of a 4-D tensor is exported
    as MatMul + Add, not Gemm), GELU, a residual add, then global average
    pool, LayerNorm and a dense classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x):
        s = self.stem(x)
        y = s.permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        y = y.permute(0, 3, 1, 2) + s
        y = torch.flatten(self.pool(y), 1)
        return self.head(self.head_norm(y))


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
    # LayerNorm2d and 1x1-conv MLPs (conv_mlp), layer scale `gamma`; widths
    # 40..320 -> 3..26
    "convnext_atto": (tm("convnext_atto"), 12, 64, False),
    # nn.LayerNorm and Linear on channels-last tensors, LayerNorm2d before the
    # downsampling and the classifier, `layer_scale` [C, 1, 1]; all 3+3+9+3
    # blocks, widths 96..768 -> 3..24
    "convnext_tiny": (tv("convnext_tiny"), 32, 64, False),
    "ln_mlp": (LnMlp, 1, 32, False),
}

# The architectures that get NAME.lrp0ref.npy: every nonlinearity is a ReLU,
# a GELU or a LayerNorm (see lrp0_reference).
LRP0REF = {"convnext_atto", "convnext_tiny", "ln_mlp"}

# ConvNeXt's layer scales: timm's ConvNeXtBlock.gamma [C] (and LayerScale /
# LayerScale2d .gamma), torchvision's CNBlock.layer_scale [C, 1, 1].
LAYER_SCALES = ("gamma", "layer_scale")


def layer_scales(model):
    """(module, attribute name) of every layer-scale parameter."""
    return [
        (m, a) for m in model.modules() for a in LAYER_SCALES if isinstance(getattr(m, a, None), nn.Parameter)
    ]


def shrink_channels(c, k):
    """c // k, keeping the image's channels and the classes (a mismatch
    between neighbours would fail PyTorch's own forward pass)."""
    if c in (1, 3, CLASSES):
        return c
    return max(1, c // k)


def shrink(model, k, k_dense):
    """Divides the channel counts of every Conv2d, BatchNorm2d, LayerNorm and
    layer scale by k, the hidden widths of Linear layers by k_dense, in place
    (a Linear on channels-last tensors, as in ConvNeXt's blocks, reads and
    writes channels: there k_dense == k)."""
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
        elif isinstance(m, nn.LayerNorm):  # timm's and torchvision's LayerNorm2d too
            assert len(m.normalized_shape) == 1, f"LayerNorm over {m.normalized_shape}"
            n = shrink_channels(m.normalized_shape[0], k)
            m.normalized_shape = (n,)
            if m.weight is not None:
                m.weight = nn.Parameter(torch.empty(n))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(n))
        elif isinstance(m, nn.Linear):
            fin, fout = m.in_features, m.out_features
            fin2 = fin // widths[fin] if fin in widths else fin
            fout2 = shrink_channels(fout, k_dense)
            m.in_features, m.out_features = fin2, fout2
            m.weight = nn.Parameter(torch.empty(fout2, fin2))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(fout2))
    for m, a in layer_scales(model):
        p = getattr(m, a)
        setattr(m, a, nn.Parameter(torch.empty(shrink_channels(p.shape[0], k), *p.shape[1:])))


def randomise(model, size, gen):
    """He-normal weights; zero biases and BatchNorm scale 1 and shift 0, as the
    constructors initialise them (so the TorchScript exporter shares the equal
    ones through Identity nodes, as it does for users' models); BatchNorm
    running statistics of random inputs, then perturbed (so no BatchNorm is
    the identity); LayerNorm scales 1 + 0.2 N(0, 1) and shifts 0.1 N(0, 1)
    (so no LayerNorm is the identity either); layer scales uniform in
    [0.5, 1]."""
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
            elif isinstance(m, nn.LayerNorm):
                if m.weight is not None:
                    m.weight.normal_(0, 0.2, generator=gen).add_(1.0)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=gen)
        for m, a in layer_scales(model):
            getattr(m, a).uniform_(0.5, 1.0, generator=gen)
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
    if name in LRP0REF:
        ref = lrp0_reference(double, x.double(), top, logits)
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
    entry = {
        "size": size,
        "top": top,
        "relu_only": relu_only,
        "parameters": params,
        "divisor": k,
    }
    if name in LRP0REF:
        np.save(base + ".lrp0ref.npy", ref.numpy().astype(np.float32))
        entry["lrp0ref"] = True
        entry["op_types"] = {"ts": op_types(ts), "dynamo": op_types(dy)}
        print(f"  ts ops: {entry['op_types']['ts']}\n  dynamo ops: {entry['op_types']['dynamo']}")
    return entry


def lrp0_reference(double, x, top, logits):
    """Input times the gradient of the top logit of `double` (float64) with
    every LayerNorm's standard deviation detached and every GELU's derivative
    taken as gelu(x) / x (1/2 at 0, gelu'(0)): what LRP-0 computes through
    them (the LayerNorm a linear map of its centred input, AttnLRP's identity
    rule on the GELU). Done by swapping torch.nn.functional's layer_norm and
    gelu, which nn.LayerNorm, timm's and torchvision's LayerNorm2d and the
    GELU modules of torch and timm call, for the time of this pass only;
    every LayerNorm and GELU module must have gone through the swapped ones,
    and the logits must equal `logits` (the forward values do not change)."""
    import torch.nn.functional as F

    layer_norm, gelu = F.layer_norm, F.gelu
    calls = {"layer_norm": 0, "gelu": 0}

    def ln_const_std(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        calls["layer_norm"] += 1
        dims = tuple(range(-len(normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        std = (x.var(dims, unbiased=False, keepdim=True) + eps).sqrt()
        y = (x - mean) / std.detach()
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y

    def gelu_identity(x, approximate="none"):
        calls["gelu"] += 1
        zero = x == 0
        ratio = torch.where(zero, 0.5, gelu(x, approximate=approximate) / torch.where(zero, 1.0, x))
        return x * ratio.detach()

    want = {
        "layer_norm": sum(isinstance(m, nn.LayerNorm) for m in double.modules()),
        "gelu": sum(type(m).__name__ == "GELU" for m in double.modules()),
    }
    xg = x.clone().requires_grad_(True)
    F.layer_norm, F.gelu = ln_const_std, gelu_identity
    try:
        out = double(xg)
    finally:
        F.layer_norm, F.gelu = layer_norm, gelu
    assert calls == want, f"swapped calls {calls}, modules {want}"
    err = float((out - logits).abs().max() / logits.abs().max())
    assert err < 1e-10, f"the LRP-0 network's logits differ by {err}"
    (grad,) = torch.autograd.grad(out[0, top], xg)
    ref = x * grad
    print(f"  lrp0ref: logits {err:.1e}, LayerNorms {calls['layer_norm']}, GELUs {calls['gelu']}")
    return ref


def op_types(path):
    """The sorted set of the op types of an ONNX file's nodes (the graph's,
    and any function's the dynamo exporter writes)."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    ops = {n.op_type for n in m.graph.node}
    for f in m.functions:
        ops |= {n.op_type for n in f.node}
    return sorted(ops)


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


def full_convnext_tiny(path):
    """The full-size torchvision convnext_tiny (1000 classes, the
    constructor's random weights with layer scales 1 instead of 1e-6) at
    1x3x224x224, by the dynamo exporter (opset 18, weights in PATH.data);
    checked against onnxruntime, for speed measurements only."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    with torch.no_grad():
        for m, a in layer_scales(model):
            getattr(m, a).fill_(1.0)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)
    for old in (path, path + ".data"):
        if os.path.exists(old):
            os.remove(old)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18)
    program.save(path, external_data=True)
    strip_metadata(path)
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    err = np.abs(got - logits.numpy()).max() / np.abs(logits.numpy()).max()
    assert err < 1e-4, f"{path}: onnxruntime differs from PyTorch by {err}"
    size = sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.exists(p))
    params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {params} parameters, {size} bytes with its data, onnxruntime vs PyTorch {err:.1e}")
    print(f"  ops: {op_types(path)}")


def main():
    import timm
    import torchvision
    import onnx
    import onnxscript

    warnings.filterwarnings("ignore")
    if sys.argv[1:2] == ["--full-convnext-tiny"]:
        if len(sys.argv) != 3:
            sys.exit("usage: export_zoo.py --full-convnext-tiny OUT.onnx")
        full_convnext_tiny(sys.argv[2])
        return
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
