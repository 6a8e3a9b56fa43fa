#!/usr/bin/env python3
"""A small CNN with an ONNX `Mean` node (the operator added through the
operator registry, src/ops/mean.rs), written with the `onnx` package's own
helpers, with PyTorch's numbers for it: the fixture of tests/it/registry.rs.

    image [1,3,16,16] -> Conv 3x3 (8) -> Relu -> a
                      -> Conv 5x5 pad 2 (8) -> Relu -> b
    Mean(a, b, c) with c = Conv 1x1 (8) of the image (no Relu)
    -> GlobalAveragePool -> Flatten -> Gemm (5 classes)

PyTorch computes the same network in float64 (mean of the three branches):
logits and autograd's gradient of the top logit with respect to the input.
Writes into tests/fixtures/registry/: mean.onnx, mean.input.npy,
mean.logits.npy, mean.grad.npy (float32).

Run: python3 scripts/export_mean.py   (torch 2.15.0, onnx 1.23.2, numpy)
"""
import os

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "registry")
rng = np.random.default_rng(7)


def he(*shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


w = {
    "wa": he(8, 3, 3, 3), "ba": (rng.standard_normal(8) * 0.1).astype(np.float32),
    "wb": he(8, 3, 5, 5), "bb": (rng.standard_normal(8) * 0.1).astype(np.float32),
    "wc": he(8, 3, 1, 1), "bc": (rng.standard_normal(8) * 0.1).astype(np.float32),
    "wf": he(5, 8), "bf": (rng.standard_normal(5) * 0.1).astype(np.float32),
}
x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)

nodes = [
    helper.make_node("Conv", ["x", "wa", "ba"], ["ca"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["ca"], ["a"]),
    helper.make_node("Conv", ["x", "wb", "bb"], ["cb"], pads=[2, 2, 2, 2]),
    helper.make_node("Relu", ["cb"], ["b"]),
    helper.make_node("Conv", ["x", "wc", "bc"], ["c"]),
    helper.make_node("Mean", ["a", "b", "c"], ["m"]),
    helper.make_node("GlobalAveragePool", ["m"], ["p"]),
    helper.make_node("Flatten", ["p"], ["f"]),
    helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
]
graph = helper.make_graph(
    nodes, "mean",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
    [numpy_helper.from_array(v, k) for k, v in w.items()],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 7
onnx.checker.check_model(model)

t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
conv = torch.nn.functional.conv2d
a = torch.relu(conv(xt, t["wa"], t["ba"], padding=1))
b = torch.relu(conv(xt, t["wb"], t["bb"], padding=2))
c = conv(xt, t["wc"], t["bc"])
m = (a + b + c) / 3
logits = m.mean(dim=(2, 3)) @ t["wf"].T + t["bf"]
top = int(logits.argmax())
logits[0, top].backward()

os.makedirs(OUT, exist_ok=True)
onnx.save(model, os.path.join(OUT, "mean.onnx"))
np.save(os.path.join(OUT, "mean.input.npy"), x)
np.save(os.path.join(OUT, "mean.logits.npy"), logits.detach().numpy().astype(np.float32))
np.save(os.path.join(OUT, "mean.grad.npy"), xt.grad.numpy().astype(np.float32))
print("top class", top, "logits", logits.detach().numpy())
