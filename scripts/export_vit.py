#!/usr/bin/env python3
"""Small vision transformers, exported by PyTorch's two ONNX exporters, with
PyTorch's, LXT's and an independent numpy reference's numbers: the fixtures
of the ViT tests (tests/fixtures/vit/).

Three models, each built with its real constructor at a reduced width and
depth, random weights drawn anew from a seeded generator (He-normal Conv2d
and Linear weights, the attention's packed in-projection included; biases
0.1 N(0, 1); LayerNorm scales 1 + 0.1 N(0, 1) and shifts 0.1 N(0, 1); class
token and position embedding 0.5 N(0, 1)), so that no part is trivially zero,
the attention is neither uniform nor one-hot and the logits are O(1..10):
- vit_tv: torchvision's VisionTransformer (vit_b_16's class) at image 224,
  patch 16, 2 layers, 3 heads, width 48, MLP 96, 10 classes;
- deit: timm's deit_tiny_patch16_224 with embed_dim 48, depth 2, 3 heads
  (MLP 192), 10 classes;
- vit_tiny: torchvision's VisionTransformer at image 32, patch 8, 2 layers,
  2 heads, width 16, MLP 32, 5 classes.

For each model NAME it writes, into tests/fixtures/vit/:
- NAME.ts.onnx: torch.onnx.export(dynamo=False, opset_version=14), dynamic
  batch (opset 14: scaled_dot_product_attention needs it; LayerNorm and GELU
  come out decomposed);
- NAME.dynamo.onnx (+ NAME.dynamo.onnx.data): torch.onnx.export(dynamo=True,
  opset_version=18), weights in an external data file; the per-node metadata
  (stack traces with the exporting machine's paths) is removed;
  both checked against PyTorch with onnxruntime;
- NAME.input.npy: the input [1, 3, H, W], a seeded normal draw (seeded by the
  image size: vit_tv and deit share theirs, byte for byte);
- NAME.logits.npy: PyTorch's logits [1, C], computed in float64;
- NAME.grad.npy: autograd's gradient of the top logit with respect to the
  input [1, 3, H, W], in float64;
- vit_tv.cp_lrp.npy: LXT's CP-LRP (lxt.efficient.monkey_patch of
  torchvision.models.vision_transformer with lxt.efficient.models.vit_torch
  .cp_LRP: LayerNorm's std held constant, GELU's identity rule, no gradient
  through the attention's query and key) of the top logit at the input,
  input * grad on a float64 copy; no Zennit rules, so every linear layer is
  LRP-0;
- vit_tv.cp_lrp_gamma.npy: the same with Zennit's Gamma(0.25) on Conv2d and
  Linear (lxt.efficient.monkey_patch_zennit, as LXT's examples/vit_torch.py);
  for information only: the attention's in- and out-projections, which
  nn.MultiheadAttention applies functionally, never go through the Linear
  hooks and stay LRP-0;
- vit_tiny.{attnlrp,attnlrp_gamma,cp_lrp,cp_lrp_gamma}.npy: an independent
  dense float64 reference of the engine's LRP rules written in plain numpy
  (the weights read from the state_dict, the forward pass with explicit
  matrices, checked against PyTorch to 1e-10; no autograd, no LXT): the
  relevance at the input [1, 3, 32, 32] of the top logit (R at the logits: the
  one-hot of the top class times its logit) under
    attnlrp        epsilon 1e-6 on every linear layer, AttnLRP in the attention
                   (epsilon then uniform rule on both matmuls, the softmax's
                   x * (R - s * sum R) rule);
    attnlrp_gamma  the same with Gamma(0.25) (bias included, Zennit's) on every
                   linear layer, the patch-embedding convolution included;
    cp_lrp         epsilon 1e-6 on every linear layer, the attention weights
                   constant (all of the output's relevance to V);
    cp_lrp_gamma   cp_lrp with Gamma(0.25) on every linear layer;
  in all four: LayerNorm's std held constant and the epsilon rule (1e-6) on
  the resulting linear map, GELU's identity rule, the epsilon rule (1e-6) on
  the residual and position-embedding adds, the class token's relevance
  dropped, the constant 1/sqrt(d_head) passing relevance unchanged.
  Asserted inside: cp_lrp against LXT's cp_LRP on vit_tiny (cosine >
  0.9999), attnlrp against the gradient x input of a hand-written float64
  torch forward (std detached, x * (gelu(x) / x).detach(), the gradients of
  q, k, v divided by 4, 4, 2), and both gamma composites against that torch
  forward with Zennit's Gamma(0.25) hooked on every Conv2d and Linear
  (in- and out-projections as nn.Linear there) under LXT's Zennit patch.
and manifest.json: per model the input size, classes, top class, logit,
parameters, the ONNX op types of each export with their counts, onnxruntime's
max relative logit difference against PyTorch, what each file is, the check
figures (cosines) and, per relevance map, its sum at the input beside the
logit; and the versions of the producers.

Run (CPU; about 20 s; the same bytes at every run):
    python3 scripts/export_vit.py
    python3 scripts/export_vit.py vit_tiny     # some models

LXT patches torch.nn's LayerNorm, GELU and MultiheadAttention classes for the
whole process, so its part runs after every export and plain PyTorch number.
lxt 2.1's lxt.efficient imports the Hugging Face models of its default patch
map, which fail to import with transformers 5: see import_lxt.

Made with torch 2.15.0, torchvision 0.29.2, timm 1.0.31, onnx 1.23.2,
onnxscript 0.7.2, onnxruntime 1.32.0, lxt 2.1, zennit 0.5.1, numpy 2.4.6
(pip install torch torchvision timm onnx onnxscript onnxruntime lxt zennit).
"""

import collections
import copy
import json
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vit")

EPS = 1e-6  # the epsilon rule's and every stabiliser's
GAMMA = 0.25
LN_EPS = 1e-6  # torchvision's and timm's ViT LayerNorms


def vit_tv():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=224, patch_size=16, num_layers=2, num_heads=3, hidden_dim=48, mlp_dim=96, num_classes=10
    )


def deit():
    import timm

    return timm.create_model(
        "deit_tiny_patch16_224", pretrained=False, num_classes=10, embed_dim=48, depth=2, num_heads=3
    )


def vit_tiny():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )


# name: (constructor, image size, classes)
MODELS = {
    "vit_tv": (vit_tv, 224, 10),
    "deit": (deit, 224, 10),
    "vit_tiny": (vit_tiny, 32, 5),
}

# class tokens and position embeddings of torchvision and timm
EMBEDDINGS = ("class_token", "cls_token", "pos_embedding", "pos_embed")


def randomise(model, gen):
    """Draws every parameter anew (see the docstring); asserts none is left
    as the constructor set it."""
    done = set()

    def normal(p, std, mean=0.0):
        p.normal_(0.0, std, generator=gen).add_(mean)
        done.add(id(p))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):  # out_proj is a Linear too
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
            if name.split(".")[-1] in EMBEDDINGS:
                normal(p, 0.5)
    left = [n for n, p in model.named_parameters() if id(p) not in done]
    assert not left, f"parameters not drawn: {left}"


# ---------------------------------------------------------------- exports


def op_counts(path):
    """{op type: count} of an ONNX file's graph nodes (and of the nodes of any
    function the dynamo exporter writes, under "function:OP")."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    c = collections.Counter(n.op_type for n in m.graph.node)
    for f in m.functions:
        c.update("function:" + n.op_type for n in f.node)
    return dict(sorted(c.items()))


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


def onnxruntime_diff(path, x, want):
    """onnxruntime's max relative logit difference against PyTorch's (a broken
    export is not a fixture)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))
    assert err < 1e-4, f"{path}: onnxruntime differs from PyTorch by {err}"
    print(f"  {os.path.basename(path)}: onnxruntime vs PyTorch, max rel logit diff {err:.1e}")
    return err


def export_onnx(model, x, base):
    ts = base + ".ts.onnx"
    torch.onnx.export(
        model,
        (x,),
        ts,
        dynamo=False,
        opset_version=14,
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
    return ts, dy


# ------------------------------------------------- numpy reference (vit_tiny)


def stab(z, eps=EPS):
    """z + eps for z >= 0, z - eps below."""
    return np.where(z >= 0, z + eps, z - eps)


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def linear_relevance(x, w, b, r, rule):
    """Relevance at the input x [N, I] of the linear layer z = x w^T + b
    (w [O, I]) given r [N, O] at its output, by the epsilon rule or by
    Zennit's Gamma (bias included, outputs with z == 0 passing nothing)."""
    z = x @ w.T + b
    if rule == "epsilon":
        return x * ((r / stab(z)) @ w)
    assert rule == "gamma"
    g = GAMMA
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    wp, wn = w + g * np.maximum(w, 0), w + g * np.minimum(w, 0)
    bp, bn = b + g * np.maximum(b, 0), b + g * np.minimum(b, 0)
    # outputs z > 0: positive contributions amplified
    d = xp @ wp.T + xn @ wn.T + bp
    s = np.where(z > 0, r / stab(d), 0.0)
    out = xp * (s @ wp) + xn * (s @ wn)
    # outputs z < 0: negative contributions amplified
    d = xp @ wn.T + xn @ wp.T + bn
    s = np.where(z < 0, r / stab(d), 0.0)
    return out + xp * (s @ wn) + xn * (s @ wp)


def add_relevance(a, b, r):
    """Epsilon rule on a + b: (R_a, R_b)."""
    s = r / stab(a + b)
    return a * s, b * s


class LayerNorm:
    """y = J x + b, J = diag(w / std) (I - 1/N) per token, std held constant."""

    def __init__(self, x, w, b):
        t, n = x.shape
        mean = x.mean(-1, keepdims=True)
        std = np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + LN_EPS)
        centre = np.eye(n) - 1.0 / n
        self.x = x
        self.j = np.stack([np.diag(w / std[i, 0]) @ centre for i in range(t)])  # [T, N, N]
        self.y = np.einsum("tij,tj->ti", self.j, x) + b
        direct = (x - mean) / std * w + b
        assert np.abs(self.y - direct).max() < 1e-12

    def relevance(self, r):
        return self.x * np.einsum("tji,tj->ti", self.j, r / stab(self.y))


class NumpyViT:
    """torchvision's VisionTransformer (batch 1) in float64 numpy, from its
    state_dict: forward pass with explicit matrices, then relevance."""

    def __init__(self, model):
        sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        self.sd = sd
        self.p = model.patch_size
        self.heads = model.encoder.layers[0].self_attention.num_heads
        self.layers = len(model.encoder.layers)

    def forward(self, img):
        """img [3, H, W] -> logits [C]; keeps what the relevance pass reads."""
        sd, p = self.sd, self.p
        c, h, w = img.shape
        nh, nw = h // p, w // p
        # patch extraction: token i * nw + j holds img[:, i*p:(i+1)*p, j*p:(j+1)*p]
        # flattened (c, kh, kw) like the convolution's weight
        patches = img.reshape(c, nh, p, nw, p).transpose(1, 3, 0, 2, 4).reshape(nh * nw, c * p * p)
        wc = sd["conv_proj.weight"].reshape(sd["conv_proj.weight"].shape[0], -1)
        bc = sd["conv_proj.bias"]
        tokens = patches @ wc.T + bc
        t = np.concatenate([sd["class_token"][0], tokens], 0)  # [T, D]
        pos = sd["encoder.pos_embedding"][0]
        x = t + pos
        self.fwd = {"img_shape": img.shape, "patches": patches, "wc": wc, "bc": bc, "t": t, "pos": pos}
        self.blocks = []
        d = x.shape[1]
        hd = d // self.heads
        for i in range(self.layers):
            pre = f"encoder.layers.encoder_layer_{i}."
            blk = {"x": x}
            ln1 = LayerNorm(x, sd[pre + "ln_1.weight"], sd[pre + "ln_1.bias"])
            h1 = ln1.y
            w_in, b_in = sd[pre + "self_attention.in_proj_weight"], sd[pre + "self_attention.in_proj_bias"]
            qkv = h1 @ w_in.T + b_in
            heads = []
            for k in range(self.heads):
                q = qkv[:, k * hd : (k + 1) * hd] / math.sqrt(hd)  # scaled query
                kk = qkv[:, d + k * hd : d + (k + 1) * hd]
                v = qkv[:, 2 * d + k * hd : 2 * d + (k + 1) * hd]
                scores = q @ kk.T
                a = softmax(scores)
                heads.append({"q": q, "k": kk, "v": v, "scores": scores, "a": a, "o": a @ v})
            o = np.concatenate([hh["o"] for hh in heads], 1)
            w_out, b_out = sd[pre + "self_attention.out_proj.weight"], sd[pre + "self_attention.out_proj.bias"]
            att = o @ w_out.T + b_out
            x1 = x + att
            ln2 = LayerNorm(x1, sd[pre + "ln_2.weight"], sd[pre + "ln_2.bias"])
            w1, b1 = sd[pre + "mlp.0.weight"], sd[pre + "mlp.0.bias"]
            w2, b2 = sd[pre + "mlp.3.weight"], sd[pre + "mlp.3.bias"]
            pre_act = ln2.y @ w1.T + b1
            act = gelu(pre_act)
            mlp = act @ w2.T + b2
            x2 = x1 + mlp
            blk.update(
                ln1=ln1, w_in=w_in, b_in=b_in, qkv=qkv, heads=heads, o=o, w_out=w_out, b_out=b_out, att=att,
                x1=x1, ln2=ln2, w1=w1, b1=b1, w2=w2, b2=b2, act=act, mlp=mlp,
            )
            self.blocks.append(blk)
            x = x2
        # read-out of the class token: final LayerNorm, head
        ln = LayerNorm(x[:1], sd["encoder.ln.weight"], sd["encoder.ln.bias"])
        wh, bh = sd["heads.head.weight"], sd["heads.head.bias"]
        logits = (ln.y @ wh.T + bh)[0]
        self.top_part = {"x": x, "ln": ln, "wh": wh, "bh": bh}
        return logits

    def relevance(self, top, logit, linear, attention):
        """Relevance at the input [3, H, W] of logit `top` (R at the logits:
        one-hot times the logit), `linear` "epsilon" or "gamma" on every
        linear layer, `attention` "attnlrp" or "cp"."""
        tp = self.top_part
        r = np.zeros((1, tp["wh"].shape[0]))
        r[0, top] = logit
        r = linear_relevance(tp["ln"].y, tp["wh"], tp["bh"], r, linear)
        r = tp["ln"].relevance(r)
        rx = np.zeros_like(tp["x"])
        rx[:1] = r  # the read-out of token 0
        for blk in reversed(self.blocks):
            rx = self.block_relevance(blk, rx, linear, attention)
        f = self.fwd
        # position embedding: a constant add, absorbing its share
        rt, _ = add_relevance(f["t"], f["pos"], rx)
        r_tokens = rt[1:]  # the class token (a constant) keeps its relevance
        r_patches = linear_relevance(f["patches"], f["wc"], f["bc"], r_tokens, linear)
        c, h, w = f["img_shape"]
        p = self.p
        nh, nw = h // p, w // p
        return r_patches.reshape(nh, nw, c, p, p).transpose(2, 0, 3, 1, 4).reshape(c, h, w)

    def block_relevance(self, blk, r, linear, attention):
        x2 = blk["x1"] + blk["mlp"]
        # x2 = x1 + mlp
        r_x1, r_mlp = add_relevance(blk["x1"], blk["mlp"], r)
        r_act = linear_relevance(blk["act"], blk["w2"], blk["b2"], r_mlp, linear)
        r_pre = r_act  # GELU: identity rule
        r_h2 = linear_relevance(blk["ln2"].y, blk["w1"], blk["b1"], r_pre, linear)
        r_x1 = r_x1 + blk["ln2"].relevance(r_h2)
        assert x2.shape == r_x1.shape
        # x1 = x + att
        r_x, r_att = add_relevance(blk["x"], blk["att"], r_x1)
        r_o = linear_relevance(blk["o"], blk["w_out"], blk["b_out"], r_att, linear)
        d = blk["o"].shape[1]
        hd = d // len(blk["heads"])
        r_qkv = np.zeros_like(blk["qkv"])
        for k, hh in enumerate(blk["heads"]):
            # o = a @ v
            s = r_o[:, k * hd : (k + 1) * hd] / stab(hh["o"])
            if attention == "attnlrp":
                r_a = 0.5 * hh["a"] * (s @ hh["v"].T)
                r_v = 0.5 * hh["v"] * (hh["a"].T @ s)
                # softmax
                r_scores = hh["scores"] * (r_a - hh["a"] * r_a.sum(-1, keepdims=True))
                # scores = q @ k^T (q scaled by 1/sqrt(d_head): passes unchanged)
                s2 = r_scores / stab(hh["scores"])
                r_q = 0.5 * hh["q"] * (s2 @ hh["k"])
                r_k = 0.5 * hh["k"] * (s2.T @ hh["q"])
            else:
                assert attention == "cp"
                r_v = hh["v"] * (hh["a"].T @ s)
                r_q = r_k = 0.0
            r_qkv[:, k * hd : (k + 1) * hd] = r_q
            r_qkv[:, d + k * hd : d + (k + 1) * hd] = r_k
            r_qkv[:, 2 * d + k * hd : 2 * d + (k + 1) * hd] = r_v
        r_h1 = linear_relevance(blk["ln1"].y, blk["w_in"], blk["b_in"], r_qkv, linear)
        return r_x + blk["ln1"].relevance(r_h1)


# -------------------------------------- hand-written torch forward (checks)


class DivideGradient(torch.autograd.Function):
    """Identity forward, gradient divided by `factor` (the uniform rule in
    the gradient x input framework)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.factor, None


class HandViT(nn.Module):
    """torchvision's VisionTransformer written out in torch, with its weights
    (the attention's in- and out-projections as nn.Linear, so that Zennit's
    hooks see them). mode "plain": the same function as the model; "attnlrp"
    and "cp": the same values, with LayerNorm's std detached, GELU's
    derivative replaced by gelu(x) / x, and the gradients of q, k, v divided
    by 4, 4, 2 (attnlrp) or q and k detached (cp)."""

    def __init__(self, model):
        super().__init__()
        self.p = model.patch_size
        self.conv = copy.deepcopy(model.conv_proj)
        self.class_token = nn.Parameter(model.class_token.detach().clone())
        self.pos = nn.Parameter(model.encoder.pos_embedding.detach().clone())
        self.blocks = nn.ModuleList()
        for layer in model.encoder.layers:
            att = layer.self_attention
            d = att.embed_dim
            b = nn.Module()
            b.heads = att.num_heads
            b.ln_1 = copy.deepcopy(layer.ln_1)
            b.ln_2 = copy.deepcopy(layer.ln_2)
            b.in_proj = nn.Linear(d, 3 * d).to(att.in_proj_weight.dtype)
            b.out_proj = nn.Linear(d, d).to(att.in_proj_weight.dtype)
            with torch.no_grad():
                b.in_proj.weight.copy_(att.in_proj_weight)
                b.in_proj.bias.copy_(att.in_proj_bias)
                b.out_proj.weight.copy_(att.out_proj.weight)
                b.out_proj.bias.copy_(att.out_proj.bias)
            b.fc1 = copy.deepcopy(layer.mlp[0])
            b.fc2 = copy.deepcopy(layer.mlp[3])
            self.blocks.append(b)
        self.ln = copy.deepcopy(model.encoder.ln)
        self.head = copy.deepcopy(model.heads.head)
        self.mode = "plain"

    def layer_norm(self, ln, x):
        if self.mode == "plain":
            return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        mean = x.mean(-1, keepdim=True)
        std = ((x - mean) ** 2).mean(-1, keepdim=True).add(ln.eps).sqrt()
        return (x - mean) / std.detach() * ln.weight + ln.bias

    def gelu(self, x):
        if self.mode == "plain":
            return F.gelu(x)
        zero = x == 0
        ratio = torch.where(zero, 0.5, F.gelu(x) / torch.where(zero, 1.0, x))
        return x * ratio.detach()

    def attention(self, b, h):
        n, t, d = h.shape
        hd = d // b.heads
        qkv = b.in_proj(h)
        q, k, v = qkv.split(d, -1)
        if self.mode == "attnlrp":
            q, k, v = DivideGradient.apply(q, 4.0), DivideGradient.apply(k, 4.0), DivideGradient.apply(v, 2.0)
        elif self.mode == "cp":
            q, k = q.detach(), k.detach()
        q, k, v = (y.reshape(n, t, b.heads, hd).transpose(1, 2) for y in (q, k, v))
        a = torch.softmax((q / math.sqrt(hd)) @ k.transpose(-1, -2), -1)
        o = (a @ v).transpose(1, 2).reshape(n, t, d)
        return b.out_proj(o)

    def forward(self, x):
        y = self.conv(x).flatten(2).transpose(1, 2)
        y = torch.cat([self.class_token.expand(y.shape[0], -1, -1), y], 1) + self.pos
        for b in self.blocks:
            y = y + self.attention(b, self.layer_norm(b.ln_1, y))
            y = y + b.fc2(self.gelu(b.fc1(self.layer_norm(b.ln_2, y))))
        return self.head(self.layer_norm(self.ln, y[:, 0]))


def gradient_x_input(model, x, top):
    """input * d logit[top] / d input; model's logits."""
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (grad,) = torch.autograd.grad(out[0, top], xg)
    return (x * grad).detach(), out.detach()


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- phases


def plain(name, ctor, size, classes):
    """Everything without LXT (before LXT patches torch.nn's classes):
    exports, onnxruntime checks, logits, gradient, and for vit_tiny the numpy
    reference and its attnlrp check. Returns (manifest entry, state kept for
    the LXT phase)."""
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    model = ctor()
    randomise(model, gen)
    model.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    double = copy.deepcopy(model).double().eval()
    xd = x.double()
    xg = xd.clone().requires_grad_(True)
    logits = double(xg)
    assert logits.shape == (1, classes)
    top = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, top], xg)
    logits = logits.detach()
    print(f"  logits {np.round(logits.numpy()[0], 3).tolist()}, top {top}")

    base = os.path.join(OUT, name)
    ts, dy = export_onnx(model, x, base)
    want = model(x).detach().numpy()
    ort_diff = {"ts": onnxruntime_diff(ts, x, want), "dynamo": onnxruntime_diff(dy, x, want)}
    ops = {"ts": op_counts(ts), "dynamo": op_counts(dy)}
    for k, v in ops.items():
        print(f"  {k} ops: {v}")
    np.save(base + ".input.npy", x.numpy().astype(np.float32))
    np.save(base + ".logits.npy", logits.numpy().astype(np.float32))
    np.save(base + ".grad.npy", grad.numpy().astype(np.float32))
    entry = {
        "size": size,
        "classes": classes,
        "top": top,
        "logit": float(logits[0, top]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "op_types": ops,
        "onnxruntime_max_rel_logit_diff": ort_diff,
        "files": {
            f"{name}.ts.onnx": "torch.onnx.export(dynamo=False, opset_version=14), dynamic batch",
            f"{name}.dynamo.onnx": "torch.onnx.export(dynamo=True, opset_version=18), weights in .data, metadata stripped",
            f"{name}.input.npy": f"input [1, 3, {size}, {size}], seeded normal draw (seed {size})",
            f"{name}.logits.npy": f"PyTorch's logits [1, {classes}] in float64",
            f"{name}.grad.npy": "autograd gradient of the top logit at the input, float64",
        },
        "checks": {},
        "relevance_sums": {},
    }
    state = {"model": model, "double": double, "x": xd, "top": top, "logits": logits, "grad": grad}
    if name == "vit_tiny":
        numpy_reference(name, entry, state)
    return entry, state


def numpy_reference(name, entry, state):
    double, x, top, logits = state["double"], state["x"], state["top"], state["logits"]
    ref = NumpyViT(double)
    np_logits = ref.forward(x.numpy()[0])
    err = float(np.abs(np_logits - logits.numpy()[0]).max() / np.abs(logits.numpy()).max())
    assert err < 1e-10, f"numpy forward differs from PyTorch by {err}"
    print(f"  numpy forward vs PyTorch (float64): max rel logit diff {err:.1e}")
    entry["checks"]["numpy_forward_max_rel_logit_diff"] = err
    logit = float(logits[0, top])
    maps = {}
    for key, linear, attention in [
        ("attnlrp", "epsilon", "attnlrp"),
        ("attnlrp_gamma", "gamma", "attnlrp"),
        ("cp_lrp", "epsilon", "cp"),
        ("cp_lrp_gamma", "gamma", "cp"),
    ]:
        r = ref.relevance(top, logit, linear, attention)[None]
        maps[key] = r
        np.save(os.path.join(OUT, f"{name}.{key}.npy"), r.astype(np.float32))
        entry["relevance_sums"][key] = {"input_sum": float(r.sum()), "logit": logit}
        print(f"  numpy {key}: sum at the input {r.sum():.4f}, logit {logit:.4f}")
    # how far the rules are from plain gradient x input (what the checks
    # below tell apart)
    gxi = (x * state["grad"]).numpy()
    entry["checks"]["gradient_x_input_cosine_info"] = {k: cosine(gxi, m) for k, m in maps.items()}
    print("  cosine to plain gradient x input:", {k: round(v, 4) for k, v in entry["checks"]["gradient_x_input_cosine_info"].items()})
    entry["files"].update(
        {
            f"{name}.attnlrp.npy": "numpy reference: AttnLRP, epsilon 1e-6 on all linear layers",
            f"{name}.attnlrp_gamma.npy": "numpy reference: AttnLRP, Gamma(0.25) on all linear layers incl. the conv",
            f"{name}.cp_lrp.npy": "numpy reference: CP-LRP, epsilon 1e-6 on all linear layers",
            f"{name}.cp_lrp_gamma.npy": "numpy reference: CP-LRP, Gamma(0.25) on all linear layers incl. the conv",
        }
    )
    # the same function written out in torch, then AttnLRP by gradient x input
    hand = HandViT(double).double().eval()
    got, out = gradient_x_input(hand, x, top)
    err = float((out - logits).abs().max() / logits.abs().max())
    assert err < 1e-10, f"hand-written torch forward differs by {err}"
    hand.mode = "attnlrp"
    got, out = gradient_x_input(hand, x, top)
    err = max(err, float((out - logits).abs().max() / logits.abs().max()))
    assert err < 1e-10, f"hand-written torch forward (attnlrp) differs by {err}"
    c = cosine(maps["attnlrp"], got.numpy())
    print(f"  attnlrp: numpy vs torch gradient x input (std detached, gelu(x)/x, q,k,v grads /4,/4,/2): cosine {c:.10f}")
    assert c > 0.9999, c
    entry["checks"]["attnlrp_vs_torch_gradxinput_cosine"] = c
    hand.mode = "cp"
    got, _ = gradient_x_input(hand, x, top)
    c = cosine(maps["cp_lrp"], got.numpy())
    print(f"  cp_lrp: numpy vs hand-written torch (q, k detached): cosine {c:.10f}")
    assert c > 0.9999, c
    entry["checks"]["cp_lrp_vs_torch_gradxinput_cosine"] = c
    state["maps"] = maps
    state["hand"] = hand


def import_lxt():
    """lxt.efficient, without the Hugging Face models of its default patch
    map: lxt 2.1's lxt.efficient.models imports them all (bert, llama, ...),
    and they fail to import with transformers 5 (find_pruneable_heads_and_
    indices is gone). A stand-in lxt.efficient.models package (the real
    folder, so lxt.efficient.models.vit_torch loads as shipped) whose
    get_default_map refuses: the patch map is always given here."""
    import importlib
    import importlib.util
    import types

    if "lxt.efficient.models" not in sys.modules:
        spec = importlib.util.find_spec("lxt")
        folder = os.path.join(os.path.dirname(spec.origin), "efficient", "models")
        stub = types.ModuleType("lxt.efficient.models")
        stub.__path__ = [folder]

        def get_default_map(module):
            raise ValueError("no default patch map here: pass one")

        stub.get_default_map = get_default_map
        sys.modules["lxt.efficient.models"] = stub
    efficient = importlib.import_module("lxt.efficient")
    vit_torch = importlib.import_module("lxt.efficient.models.vit_torch")
    return efficient, vit_torch


def lxt_phase(entries, states):
    """LXT's CP-LRP (and Zennit's Gamma under LXT's patch): patches
    torchvision's classes (and torch.nn's LayerNorm, GELU and
    MultiheadAttention, which they are) for the rest of the process, so it
    runs after every plain number and export."""
    import torchvision
    from zennit.composites import LayerMapComposite
    from zennit.rules import Gamma

    efficient, vit_torch = import_lxt()
    efficient.monkey_patch(torchvision.models.vision_transformer, vit_torch.cp_LRP)
    efficient.monkey_patch_zennit()

    def gamma_composite():
        return LayerMapComposite([(nn.Conv2d, Gamma(GAMMA)), (nn.Linear, Gamma(GAMMA))])

    def lxt_maps(double, x, top, logits):
        model = copy.deepcopy(double).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        r, out = gradient_x_input(model, x, top)
        err = float((out - logits).abs().max() / logits.abs().max())
        assert err < 1e-10, f"LXT-patched forward differs by {err}"
        comp = gamma_composite()
        comp.register(model)
        try:
            rg, _ = gradient_x_input(model, x, top)
        finally:
            comp.remove()
        return r.numpy(), rg.numpy()

    if "vit_tv" in states:
        s, e = states["vit_tv"], entries["vit_tv"]
        r, rg = lxt_maps(s["double"], s["x"], s["top"], s["logits"])
        for key, m in (("cp_lrp", r), ("cp_lrp_gamma", rg)):
            np.save(os.path.join(OUT, f"vit_tv.{key}.npy"), m.astype(np.float32))
            e["relevance_sums"][key] = {"input_sum": float(m.sum()), "logit": e["logit"]}
            print(f"  vit_tv LXT {key}: sum at the input {m.sum():.4f}, logit {e['logit']:.4f}")
        e["files"].update(
            {
                "vit_tv.cp_lrp.npy": "LXT cp_LRP (monkey_patch(torchvision.models.vision_transformer, "
                "vit_torch.cp_LRP)), input * grad of the top logit, float64; no Zennit rules: "
                "every linear layer LRP-0",
                "vit_tv.cp_lrp_gamma.npy": "for information only: the same with Zennit "
                "LayerMapComposite([(Conv2d, Gamma(0.25)), (Linear, Gamma(0.25))]) after "
                "lxt.efficient.monkey_patch_zennit(); the attention's in- and out-projections "
                "(applied functionally by nn.MultiheadAttention) never reach the Linear hooks "
                "and stay LRP-0, so it is not our cp-lrp + gamma composite",
            }
        )
        gxi = (s["x"] * s["grad"]).numpy()
        e["checks"]["cosine_info"] = {
            "cp_lrp_vs_cp_lrp_gamma": cosine(r, rg),
            "cp_lrp_vs_gradient_x_input": cosine(r, gxi),
            "cp_lrp_gamma_vs_gradient_x_input": cosine(rg, gxi),
        }
        print("  vit_tv LXT cosines:", {k: round(v, 4) for k, v in e["checks"]["cosine_info"].items()})

    if "vit_tiny" in states:
        s, e = states["vit_tiny"], entries["vit_tiny"]
        r, rg = lxt_maps(s["double"], s["x"], s["top"], s["logits"])
        c = cosine(s["maps"]["cp_lrp"], r)
        print(f"  vit_tiny cp_lrp: numpy vs LXT cp_LRP gradient x input: cosine {c:.10f}")
        assert c > 0.9999, c
        e["checks"]["cp_lrp_vs_lxt_cosine"] = c
        c = cosine(s["maps"]["cp_lrp_gamma"], rg)
        print(f"  vit_tiny cp_lrp_gamma: numpy vs LXT + Zennit Gamma (projections LRP-0 there): cosine {c:.4f}")
        e["checks"]["cp_lrp_gamma_vs_lxt_zennit_gamma_cosine_info"] = c
        # Gamma on every linear layer: the hand-written forward, whose
        # projections are nn.Linear, with Zennit's hooks under LXT's patch
        hand = s["hand"]
        for p in hand.parameters():
            p.requires_grad_(False)
        for key, mode in (("attnlrp_gamma", "attnlrp"), ("cp_lrp_gamma", "cp")):
            hand.mode = mode
            comp = gamma_composite()
            comp.register(hand)
            try:
                got, _ = gradient_x_input(hand, s["x"], s["top"])
            finally:
                comp.remove()
            c = cosine(s["maps"][key], got.numpy())
            print(f"  {key}: numpy vs hand-written torch + Zennit Gamma(0.25) on every Conv2d/Linear: cosine {c:.10f}")
            assert c > 0.9999, c
            e["checks"][f"{key}_vs_torch_zennit_cosine"] = c


def main():
    import onnx
    import onnxruntime
    import onnxscript
    import timm
    import torchvision
    import zennit
    from importlib.metadata import version

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    names = sys.argv[1:] or list(MODELS)
    entries, states = {}, {}
    for name in names:
        print(name)
        entries[name], states[name] = plain(name, *MODELS[name])
    print("LXT")
    lxt_phase(entries, states)
    manifest_path = os.path.join(OUT, "manifest.json")
    manifest = {"models": {}}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    manifest["models"].update(entries)
    manifest["producers"] = {
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "lxt": version("lxt"),
        "zennit": zennit.__version__ if hasattr(zennit, "__version__") else version("zennit"),
        "numpy": np.__version__,
        "command": "python3 scripts/export_vit.py",
    }
    manifest["rules"] = {
        "epsilon": EPS,
        "gamma": GAMMA,
        "layer_norm_eps": LN_EPS,
        "start": "R at the logits: one-hot of the top class times its logit",
    }
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in sorted(os.listdir(OUT))}
    print(f"{OUT}: {len(sizes)} files, {sum(sizes.values())} bytes")


if __name__ == "__main__":
    main()
