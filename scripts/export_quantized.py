#!/usr/bin/env python3
"""Models quantized by onnxruntime's own quantizer, with onnxruntime's
logits: the fixtures of tests/it/quantized.rs.

The float model is torchvision's resnet18 (BatchNorm, residual adds), shrunk
in place by scripts/export_zoo.py's `shrink` (channels / 8, 10 classes) and
given its `randomise` weights (He normal, BatchNorm statistics of random
inputs, then perturbed), exported by torch.onnx.export(dynamo=False,
opset_version=17) at 64x64 (the exporter folds each BatchNorm into its
conv). It is then quantized by onnxruntime.quantization.quantize_static,
QuantFormat.QDQ, MinMax calibration on 8 seeded random inputs, in the
variants of VARIANTS: per tensor / per channel x int8 / uint8 weights,
uint8 activations, and one with int8 activations.

Writes into tests/fixtures/quantized/:
- NAME.onnx for each variant of VARIANTS (weights int8/uint8 behind
  DequantizeLinear, biases int32, activations QuantizeLinear ->
  DequantizeLinear);
- input.npy: the input [1, 3, 64, 64] (float32): of 16 seeded normal draws,
  the one whose smallest margin between the top two logits over the
  variants is the widest (the logits are quantized too, in steps of about
  0.04, and random weights give close classes: ties at worst);
- NAME.logits.npy: onnxruntime's logits [1, 10] on it (CPU provider, default
  graph optimisations, which run the QDQ groups as integer kernels);
- blocked.onnx: a small classifier (opset 21) whose dense weight is
  DequantizeLinear(int8 [4, 10], scale [2, 10], axis 0, block_size 2):
  blocked quantization, which the loader refuses (onnxruntime runs it; its
  logits are not kept);
- manifest.json: per variant the settings, onnxruntime's top class and its
  margin over the second, its largest |logit|, the largest difference to
  onnxruntime without graph optimisations (which simulates QDQ in float, as
  tract does, where the optimised session runs integer kernels) and to the
  float model (both relative to the largest |logit|), the float model's top
  class, the file size; the versions of the
  producers and the command.

Run (CPU; seconds):
    python3 scripts/export_quantized.py

Made with torch 2.15.0, torchvision 0.29.2, onnx 1.23.2, onnxruntime 1.32.0,
numpy 2.4.6 (pip install torch torchvision onnx onnxruntime numpy).
"""

import json
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "quantized")
sys.path.insert(0, HERE)

import export_zoo  # noqa: E402  (shrink, randomise, CLASSES)

SIZE = 64
SEED = 26
CANDIDATES = 16
# name: (per_channel, weight type, activation type)
VARIANTS = {
    "tensor_s8": (False, "QInt8", "QUInt8"),
    "tensor_u8": (False, "QUInt8", "QUInt8"),
    "channel_s8": (True, "QInt8", "QUInt8"),
    "channel_u8": (True, "QUInt8", "QUInt8"),
    "channel_s8_s8act": (True, "QInt8", "QInt8"),
}


def float_model(path, gen):
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=export_zoo.CLASSES)
    export_zoo.shrink(model, 8, 8)
    export_zoo.randomise(model, SIZE, gen)
    model.eval()
    x = torch.randn(1, 3, SIZE, SIZE, generator=gen)
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
    )
    return x.numpy().astype(np.float32)


def ort_logits(path, x, optimise=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def top_margin(y):
    top2 = np.sort(y[0])[-2:]
    return float(top2[1] - top2[0])


class Reader:
    """Calibration inputs: seeded normal draws."""

    def __init__(self, n, gen):
        self.batches = [
            {"input": torch.randn(1, 3, SIZE, SIZE, generator=gen).numpy()} for _ in range(n)
        ]

    def with_batches(self, batches):
        self.batches = list(batches)
        return self

    def get_next(self):
        return self.batches.pop() if self.batches else None


def blocked(path):
    """x [1, 3, 64, 64] -> Conv 3x3 (4 channels) -> Relu -> GlobalAveragePool
    -> Flatten -> MatMul with DequantizeLinear(int8 [4, 10], scale [2, 10],
    axis 0, block_size 2): opset 21's blocked quantization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    wq = numpy_helper.from_array(rng.integers(-127, 128, (4, 10)).astype(np.int8), "wq")
    ws = numpy_helper.from_array((rng.uniform(0.005, 0.02, (2, 10))).astype(np.float32), "ws")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], name="dense_weight_dq", axis=0, block_size=2),
        helper.make_node("MatMul", ["f", "wd"], ["logits"], name="dense"),
    ]
    graph = helper.make_graph(
        nodes,
        "blocked",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [w, wq, ws],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="export_quantized.py")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def main():
    import onnx
    import onnxruntime
    import torchvision
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    warnings.filterwarnings("ignore")
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    manifest = {
        "command": "python3 scripts/export_quantized.py",
        "float_model": "torchvision resnet18, channels / 8 (export_zoo.shrink), export_zoo.randomise, "
        f"{SIZE}x{SIZE}, torch.onnx.export(dynamo=False, opset_version=17)",
        "quantizer": "onnxruntime.quantization.quantize_static, QuantFormat.QDQ, MinMax, 8 random inputs",
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        fp = os.path.join(tmp, "float.onnx")
        float_model(fp, gen)
        calibration = Reader(8, gen)
        paths = {}
        for name, (per_channel, wt, at) in VARIANTS.items():
            paths[name] = os.path.join(OUT, name + ".onnx")
            quantize_static(
                fp,
                paths[name],
                Reader(0, gen).with_batches(calibration.batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                weight_type=getattr(QuantType, wt),
                activation_type=getattr(QuantType, at),
            )
        # the output is quantized too: logits are multiples of a step of
        # about 0.04 and random weights give close top classes (ties, at
        # worst). The input is the draw, of CANDIDATES, whose smallest margin
        # between the top two logits over the variants is the widest
        best = None
        for _ in range(CANDIDATES):
            x = torch.randn(1, 3, SIZE, SIZE, generator=gen).numpy()
            margin = min(top_margin(ort_logits(p, x)) for p in paths.values())
            if best is None or margin > best[0]:
                best = (margin, x)
        x = best[1]
        np.save(os.path.join(OUT, "input.npy"), x)
        y_float = ort_logits(fp, x)
        manifest["input"] = f"the normal draw, of {CANDIDATES}, with the widest top-2 margin"
        for name, (per_channel, wt, at) in VARIANTS.items():
            path = paths[name]
            y = ort_logits(path, x)
            np.save(os.path.join(OUT, name + ".logits.npy"), y.astype(np.float32))
            # onnxruntime without graph optimisations: QDQ simulated in float,
            # as tract does, instead of integer kernels
            y_plain = ort_logits(path, x, optimise=False)
            scale = float(np.abs(y).max())
            v = {
                "per_channel": per_channel,
                "weight_type": wt,
                "activation_type": at,
                "top": int(y.argmax()),
                "top_margin": round(top_margin(y), 6),
                "max_abs_logit": round(scale, 6),
                "unoptimised_ort_max_diff_rel": round(float(np.abs(y - y_plain).max()) / scale, 6),
                "float_top": int(y_float.argmax()),
                "vs_float_max_diff_rel": round(float(np.abs(y - y_float).max()) / scale, 6),
                "bytes": os.path.getsize(path),
            }
            manifest["variants"][name] = v
            print(name, v)
    bp = os.path.join(OUT, "blocked.onnx")
    blocked(bp)
    print("blocked.onnx: onnxruntime logits", ort_logits(bp, x)[0])
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
