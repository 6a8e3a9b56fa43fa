"""LRP heatmaps for ONNX image classifiers, from Python.

>>> import lrp_heatmap as lh
>>> model = lh.Model("efficientnet-lite0")
>>> e = model.explain("cat.jpg", rule="zplus")
>>> e.relevance.shape, e.label
((3, 224, 224), 'Egyptian cat')

The work is done by the Rust library (the command ``lrp-heatmap`` uses the
same code): the arrays equal the command's ``--raw`` arrays and
``Explanation.save`` writes the command's PNG, byte for byte.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lrp_heatmap as _native
from ._lrp_heatmap import Error, ImageError, ModelError

__all__ = ["Model", "Explanation", "Error", "ModelError", "ImageError",
           "create_analyzer", "Analyzer", "ALIASES", "DEFAULT_RULES", "rules"]

#: iNNvestigate's analyzer names and the rule each one means here.
ALIASES: Dict[str, Tuple[str, Dict[str, float]]] = {
    "lrp.z": ("lrp0", {}),
    "lrp.epsilon": ("epsilon", {}),
    "lrp.z_plus": ("zplus", {}),
    "lrp.alpha_1_beta_0": ("alpha-beta", {"alpha": 1.0}),
    "lrp.alpha_2_beta_1": ("alpha-beta", {"alpha": 2.0}),
    "lrp.w_square": ("wsquare", {}),
    "lrp.flat": ("flat", {}),
    "lrp.sequential_preset_a": ("epsilon-plus", {}),
    "lrp.sequential_preset_b": ("epsilon-alpha2-beta1", {}),
    "deep_taylor": ("deep-taylor", {}),
    "gradient": ("gradient", {}),
    "input_t_gradient": ("gradient-x-input", {}),
    "integrated_gradients": ("integrated-gradients", {}),
    "smoothgrad": ("smoothgrad", {}),
    "guided_backprop": ("guided-backprop", {}),
}


#: The analyzers :meth:`Model.evaluate` compares by default (the command's).
DEFAULT_RULES: List[str] = list(_native.DEFAULT_RULES)


def rules() -> List[str]:
    """Every rule, composite and analyzer name ``explain`` takes."""
    return list(_native.NativeModel.rules())


def _input(x: Any) -> Tuple[str, Any]:
    """An input as the native layer's (kind, data)."""
    if isinstance(x, (str, os.PathLike)):
        return ("path", os.fspath(x))
    if isinstance(x, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(x))
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            if x.ndim != 3 or x.shape[2] != 3:
                raise ValueError(f"x= a uint8 array must be HxWx3, got shape {x.shape}")
            return ("rgb", np.ascontiguousarray(x))
        if x.dtype == np.float32:
            return ("tensor", np.ascontiguousarray(x))
        raise ValueError(f"x= an array must be uint8 (HxWx3) or float32 (normalised), got {x.dtype}")
    if hasattr(x, "convert") and hasattr(x, "size"):  # a PIL image
        return ("rgb", np.ascontiguousarray(np.asarray(x.convert("RGB"), dtype=np.uint8)))
    raise TypeError(f"x= must be a path, bytes, a PIL image or a numpy array, got {type(x).__name__}")


class Explanation:
    """One explanation: the relevance and what the model said.

    Attributes:
        relevance: ``np.float32`` array ``[C, H, W]`` at the model's input
            resolution (the command's ``--raw`` array).
        target: the explained class (0-based).
        label: its label.
        logit: its logit.
        top5: the five highest classes as ``(index, label, probability)``.
        relevance_sum: the sum of ``relevance``.
        warnings: warnings about this explanation (max-pool near-ties, the
            guard rails).
        ledger: where the relevance went, node by node (a dict; LRP rules
            only, else ``None``).
        layers: ``{layer: np.float32 array}``, the relevance at the layers
            asked for with ``layers=`` (``[T, D]`` at a vision transformer's
            token tensor ``[batch, T, D]``).
        tokens: ``{layer: np.float32 array [P, P]}`` for the layers that are
            token tensors: the relevance of the last ``P * P`` tokens (the
            patches, each summed over ``D``), in the image's patch order.
        rule: the rule or analyzer.
    """

    def __init__(self, d: Dict[str, Any], rule: str, signed: bool, labels: Sequence[str]):
        self.relevance: np.ndarray = d["relevance"]
        self._image: Optional[np.ndarray] = d["image"]
        self.target: int = d["target"]
        self.label: str = labels[self.target] if self.target < len(labels) else ""
        self.logit: float = d["logit"]
        self.top5: List[Tuple[int, str, float]] = [
            (i, labels[i] if i < len(labels) else "", p) for i, p in d["top5"]]
        self.relevance_sum: float = d["relevance_sum"]
        self.warnings: List[str] = list(d["warnings"])
        self.ledger: Optional[Dict[str, Any]] = (
            json.loads(d["ledger"]) if d["ledger"] is not None else None)
        self.layers: Dict[str, np.ndarray] = dict(d["layers"])
        self.tokens: Dict[str, np.ndarray] = dict(d["tokens"])
        self.rule: str = rule
        self._signed = signed

    def _size(self) -> Tuple[int, int]:
        if self._image is not None:
            h, w = self._image.shape[:2]
        else:
            h, w = self.relevance.shape[1:]
        return int(w), int(h)

    def _args(self, cmap: Optional[str], clip: float, overlay: bool):
        w, h = self._size()
        if overlay and self._image is None:
            raise ValueError("overlay= needs an image input, not a normalised array")
        return (self.relevance, w, h, self._signed, cmap, float(clip),
                self._image if overlay else None)

    def heatmap(self, cmap: Optional[str] = None, clip: float = 99.5,
                overlay: bool = False) -> np.ndarray:
        """The heatmap as an ``HxWx3`` uint8 array at the image's size, as
        the command draws it.

        Args:
            cmap: the colour map (default: ``bwr`` for signed maps, ``hot``
                for unsigned ones).
            clip: the percentile of ``|R|`` that saturates (100: the maximum).
            overlay: blend the heatmap over a grey version of the photo.
        """
        return _native.heatmap(*self._args(cmap, clip, overlay))

    def png(self, cmap: Optional[str] = None, clip: float = 99.5,
            overlay: bool = False) -> bytes:
        """The bytes of the command's PNG of :meth:`heatmap`."""
        return _native.png(*self._args(cmap, clip, overlay))

    def save(self, path: Union[str, "os.PathLike[str]"], cmap: Optional[str] = None,
             clip: float = 99.5, overlay: bool = False) -> None:
        """Writes the heatmap as the command's PNG, byte for byte (the file
        is written whole or not at all)."""
        data = self.png(cmap, clip, overlay)
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return (f"Explanation(rule={self.rule!r}, target={self.target}, label={self.label!r}, "
                f"logit={self.logit:.4g}, relevance_sum={self.relevance_sum:.4g})")


class Model:
    """An ONNX image classifier, loaded once, explained many times.

    Args:
        model: a known name (``"efficientnet-lite0"``, bundled) or the path
            of an ``.onnx`` file (external data beside it works too).
        input_size: ``(height, width)`` for a model whose spatial size is
            symbolic (default 224x224).
    """

    def __init__(self, model: Union[str, "os.PathLike[str]"] = "efficientnet-lite0",
                 input_size: Optional[Tuple[int, int]] = None):
        self._m = _native.NativeModel(os.fspath(model), input_size)
        self.labels: List[str] = list(self._m.labels)
        self.input_shape: List[int] = list(self._m.input_shape)
        self.name = os.fspath(model)

    def __repr__(self) -> str:
        return f"Model({self.name!r})"

    def _target(self, target: Union[int, str, None]) -> Optional[int]:
        if target is None:
            return None
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if target < 0:
                raise ValueError(f"target= must be >= 0, got {target}")
            return int(target)
        if isinstance(target, str):
            return self._m.find_class(target)
        raise TypeError(f"target= must be an int or a label, got {type(target).__name__}")

    def _run(self, inputs: Sequence[Any], rule: str, target, epsilon, gamma, alpha, beta,
             steps, samples, noise, seed, maxpool_ties, layers, concept, mean, std,
             tolerant: bool = False) -> List[Any]:
        if not isinstance(rule, str):
            raise TypeError(f"rule= must be a name, got {type(rule).__name__}")
        if rule in ALIASES:
            rule, preset = ALIASES[rule]
            if alpha is None and beta is None:
                alpha = preset.get("alpha")
        params = {k: v for k, v in dict(
            epsilon=epsilon, gamma=gamma, alpha=alpha, beta=beta, steps=steps,
            samples=samples, noise=noise, seed=seed, maxpool_ties=maxpool_ties,
            mean=None if mean is None else tuple(mean),
            std=None if std is None else tuple(std)).items() if v is not None}
        if concept is not None:
            layer, channels = concept
            concept = (str(layer), [int(c) for c in channels])
        signed = _native.NativeModel.signed(rule) if rule in rules() else True
        raw = self._m.explain([_input(x) for x in inputs], rule, self._target(target), params,
                              list(layers or []), concept, tolerant)
        return [r if isinstance(r, BaseException) else Explanation(r, rule, signed, self.labels)
                for r in raw]

    def explain(self, x: Any, rule: str = "epsilon-plus-flat", target: Union[int, str, None] = None,
                epsilon: Optional[float] = None, gamma: Optional[float] = None,
                alpha: Optional[float] = None, beta: Optional[float] = None,
                steps: Optional[int] = None, samples: Optional[int] = None,
                noise: Optional[float] = None, seed: Optional[int] = None,
                maxpool_ties: Optional[str] = None, layers: Optional[Sequence[str]] = None,
                concept: Optional[Tuple[str, Sequence[int]]] = None,
                mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None) -> Explanation:
        """Explains one input.

        Args:
            x: the path of an image file; the ``bytes`` of an encoded image
                (decoded in Rust as the command does); a PIL image; an
                ``HxWx3`` uint8 array; or a float32 array already normalised,
                of the model's input shape (with or without the batch axis).
            rule: an LRP rule or composite (``zplus``, ``epsilon``,
                ``epsilon-plus-flat``...), a gradient-family analyzer
                (``gradient``, ``integrated-gradients``...) or an
                iNNvestigate name (``lrp.z``, see ``ALIASES``); ``rules()``
                lists them all.
            target: the class to explain, a 0-based index or a label
                substring (as Captum's ``target``); default: the top class.
            epsilon: epsilon of the epsilon rule (> 0).
            gamma: gamma of the gamma rule (>= 0).
            alpha: alpha of the alpha-beta rule (>= 1).
            beta: beta of the alpha-beta rule (>= 0; alpha = beta + 1).
            steps: points on the path of integrated gradients (>= 1).
            samples: noisy samples of SmoothGrad (>= 1).
            noise: SmoothGrad's noise as a fraction of the input range (>= 0).
            seed: seed of SmoothGrad's noise.
            maxpool_ties: ``"first"`` (default) or ``"split"``: where a max
                pool hands a window's relevance (the command's
                ``--maxpool-ties``).
            layers: layers (node or tensor names) whose relevance to keep in
                ``Explanation.layers`` (LRP only).
            concept: ``(layer, [channels])``: pass on only these channels'
                relevance at that layer (Concept Relevance Propagation); the
                channels of a vision transformer's token tensor are its
                embedding dimensions.
            mean: normalisation mean per channel (default ImageNet's).
            std: normalisation std per channel (default ImageNet's).

        Raises:
            FileNotFoundError: ``x`` names no file.
            ValueError: a bad parameter or rule name (the message names it).
            ImageError: an image that cannot be decoded.
            ModelError: a model that cannot be run.
        """
        return self._run([x], rule, target, epsilon, gamma, alpha, beta, steps, samples, noise,
                         seed, maxpool_ties, layers, concept, mean, std)[0]

    def explain_batch(self, inputs: Sequence[Any], rule: str = "epsilon-plus-flat",
                      batch_size: Optional[int] = None, **kwargs: Any) -> List[Explanation]:
        """Explains each input (in parallel on the Rust thread pool); a list
        in the same order. ``batch_size``: inputs handed over at once
        (default: all). Other arguments as :meth:`explain`."""
        inputs = list(inputs)
        n = len(inputs) if not batch_size else int(batch_size)
        if n < 1 and inputs:
            raise ValueError(f"batch_size= must be >= 1, got {batch_size}")
        out: List[Explanation] = []
        for i in range(0, len(inputs), max(n, 1)):
            out.extend(self._explain_many(inputs[i:i + n], rule, **kwargs))
        return out

    def _explain_many(self, inputs, rule, tolerant=False, target=None, epsilon=None, gamma=None,
                      alpha=None, beta=None, steps=None, samples=None, noise=None, seed=None,
                      maxpool_ties=None, layers=None, concept=None, mean=None, std=None):
        return self._run(inputs, rule, target, epsilon, gamma, alpha, beta, steps, samples,
                         noise, seed, maxpool_ties, layers, concept, mean, std, tolerant)


    def evaluate(self, inputs: Sequence[Any], rules: Optional[Sequence[str]] = None,
                 target: Union[int, str, None] = None, perturb: str = "noise", patch: int = 8,
                 steps: int = 100, seed: int = 0, randomize: bool = False, batch: int = 1,
                 ig_steps: Optional[int] = None, epsilon: Optional[float] = None,
                 gamma: Optional[float] = None, alpha: Optional[float] = None,
                 beta: Optional[float] = None, samples: Optional[int] = None,
                 noise: Optional[float] = None, maxpool_ties: Optional[str] = None,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> Dict[str, Any]:
        """Which analyzer to trust: region perturbation (MoRF, LeRF and a
        random order; AOPC) per input and analyzer, and with ``randomize``
        the cascading model randomisation check. The command's
        ``lrp-heatmap evaluate``, whose ``evaluate.json`` this dict equals
        (an input is named by its path as given, or ``<input N>``).

        Args:
            inputs: the inputs, each as :meth:`explain` takes it (paths,
                bytes, PIL images, arrays).
            rules: the analyzers (default: the command's, ``DEFAULT_RULES``);
                iNNvestigate names too.
            target: the class to explain, as in :meth:`explain`; default
                each input's top class.
            perturb: what replaces a patch: ``"noise"`` (uniform in the
                valid range), ``"mean"`` (the dataset mean) or ``"blur"``.
            patch: side of the square patches, in pixels of the model input.
            steps: patches perturbed, one more per step (at most the number
                of patches).
            seed: the one seed of the perturbation's noise, the random
                order, the random weights and SmoothGrad's noise.
            randomize: also run the randomisation check.
            batch: perturbed copies per forward pass (the numbers do not
                depend on it).
            ig_steps: points on the path of integrated gradients.
            epsilon, gamma, alpha, beta, samples, noise, maxpool_ties, mean,
                std: as in :meth:`explain`.

        Returns:
            ``{"model", "perturbation", "images": [...], "summary": [...],
            "random"}``: per image the curves and AOPCs of each analyzer;
            the summary ranked by mean MoRF - LeRF, best first.

        Raises:
            FileNotFoundError, ValueError, ImageError, ModelError: as
            :meth:`explain`; the first input that fails raises.
        """
        names = []
        for i, x in enumerate(inputs):
            names.append(os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"<input {i}>")
        rules = list(DEFAULT_RULES if rules is None else rules)
        resolved = []
        for r in rules:
            if not isinstance(r, str):
                raise TypeError(f"rules= must be names, got {type(r).__name__}")
            if r in ALIASES:
                rule, preset = ALIASES[r]
                if alpha is None and beta is None and "alpha" in preset:
                    alpha = preset["alpha"]
                r = rule
            resolved.append(r)
        for name, v in (("patch", patch), ("steps", steps), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name}= must be a whole number >= 1, got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed= must be a whole number >= 0, got {seed!r}")
        params = {k: v for k, v in dict(
            epsilon=epsilon, gamma=gamma, alpha=alpha, beta=beta, steps=ig_steps,
            samples=samples, noise=noise, maxpool_ties=maxpool_ties,
            mean=None if mean is None else tuple(mean),
            std=None if std is None else tuple(std)).items() if v is not None}
        text = self._m.evaluate([_input(x) for x in inputs], names, resolved,
                                self._target(target), params, self.name, str(perturb),
                                int(patch), int(steps), int(seed), bool(randomize), int(batch))
        return json.loads(text)

class Analyzer:
    """iNNvestigate's analyzer interface over a :class:`Model`."""

    def __init__(self, name: str, model: Model, neuron_selection_mode: str = "max_activation",
                 **params: Any):
        if name not in ALIASES and name not in rules():
            raise ValueError(f"name= unknown analyzer '{name}'; known: "
                             + ", ".join(list(ALIASES) + rules()))
        if neuron_selection_mode not in ("max_activation", "index"):
            raise ValueError("neuron_selection_mode= must be 'max_activation' or 'index', "
                             f"got '{neuron_selection_mode}'")
        self.name, self.model, self.params = name, model, params
        self.neuron_selection_mode = neuron_selection_mode

    def analyze(self, x: np.ndarray, neuron_selection: Union[int, Sequence[int], None] = None
                ) -> np.ndarray:
        """The relevance of each row of ``x`` (``(N, C, H, W)`` float32,
        normalised), same shape; each row's top class unless
        ``neuron_selection`` (an index, or one per row) says otherwise."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"x= must be (N, C, H, W), got shape {x.shape}")
        if neuron_selection is None:
            targets: List[Optional[int]] = [None] * len(x)
        elif np.ndim(neuron_selection) == 0:
            targets = [int(neuron_selection)] * len(x)
        else:
            targets = [int(t) for t in neuron_selection]
            if len(targets) != len(x):
                raise ValueError(f"neuron_selection= needs one class per row ({len(x)}), "
                                 f"got {len(targets)}")
        rows = []
        if all(t is None for t in targets):
            es = self.model.explain_batch(list(x), rule=self.name, **self.params)
        else:
            es = [self.model.explain(row, rule=self.name, target=t, **self.params)
                  for row, t in zip(x, targets)]
        for e in es:
            rows.append(e.relevance)
        return np.stack(rows).astype(np.float32, copy=False).reshape(x.shape)


def create_analyzer(name: str, model: Model, **kwargs: Any) -> Analyzer:
    """iNNvestigate's ``create_analyzer``: ``analyzer.analyze(x)``; ``name``
    an iNNvestigate name (``lrp.z``, ``lrp.epsilon``, ``lrp.z_plus``, ...,
    see ``ALIASES``) or one of ``rules()``; keyword arguments go to
    :meth:`Model.explain` (``epsilon=0.1``)."""
    return Analyzer(name, model, **kwargs)


def __getattr__(name: str) -> Any:
    """``lh.ray`` (Ray Data) on first use: importing the package never imports Ray."""
    if name == "ray":
        import importlib

        return importlib.import_module("lrp_heatmap.ray")
    raise AttributeError(f"module 'lrp_heatmap' has no attribute {name!r}")
