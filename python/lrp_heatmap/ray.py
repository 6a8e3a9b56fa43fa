"""lrp-heatmap on Ray Data: explain a data set of images on a cluster.

Ray is an optional extra (``pip install "lrp-heatmap[ray]"``); it is imported
only by this module, and only where it is needed.

:class:`Explain` is a callable class for :meth:`ray.data.Dataset.map_batches`
(Ray's pattern for stateful batch inference: each actor loads the model once)::

    import ray
    import lrp_heatmap.ray

    ray.init(num_cpus=2)
    ds = ray.data.read_binary_files("photos/", include_paths=True)
    ds = ds.map_batches(
        lrp_heatmap.ray.Explain,
        fn_constructor_kwargs={"rule": "zplus"},
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.5,   # leave CPU to the read tasks (see ACTOR_CPUS)
        batch_size=4,
    )
    for row in ds.iter_rows():
        print(row["path"], row["label"], row["error"])

The module is also a command that runs a folder through Ray Data and writes
the files the CLI writes (``<stem>.<rule>.png``, with ``--raw`` also
``<stem>.<rule>.npy``), byte for byte::

    python -m lrp_heatmap.ray photos/ out/ --rule zplus --raw --num-cpus 2

Ray's usage statistics are switched off (``RAY_USAGE_STATS_ENABLED=0``) when
this module is imported, unless the environment says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__all__ = ["Explain", "ACTOR_CPUS", "IMAGE_EXTENSIONS", "list_images", "main"]

#: CPUs each :class:`Explain` actor reserves in Ray's accounting. Less than one,
#: so that the read tasks always find CPU left: with ``ray.init(num_cpus=2)``
#: two actors of one CPU each take every CPU and the read tasks never run (the
#: pipeline hangs). Each actor still computes with its share of the cores
#: (``threads``), the read tasks mostly wait on the disk.
ACTOR_CPUS = 0.5

#: Image file extensions taken from folders (case-insensitive), as the CLI's.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_RULE = "epsilon-plus-flat"  # the CLI's default


def _rules() -> List[str]:
    """The rule and analyzer names (the CLI's ``--rule`` values)."""
    import lrp_heatmap as lh

    rules = getattr(lh, "RULES", None) or getattr(lh, "rules", None)
    if callable(rules):
        rules = rules()
    if rules:
        return list(rules)
    from lrp_heatmap import _lrp_heatmap

    return list(_lrp_heatmap.NativeModel.rules())


def _errors() -> Tuple[type, ...]:
    """Exceptions that fail one row, not the batch: an image that cannot be
    read or decoded, a model that fails on it, a bad array in ``image``."""
    import lrp_heatmap as lh

    return (lh.Error, ValueError, OSError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _npy_bytes(a: np.ndarray) -> bytes:
    """``a`` (float32) as the CLI's ``.npy`` file, byte for byte: NPY 1.0, the
    header dict without numpy's trailing comma (ndarray-npy's spelling),
    padded with spaces to a multiple of 64 bytes."""
    a = np.ascontiguousarray(a, dtype="<f4")
    shape = "(" + ", ".join(str(d) for d in a.shape) + ("," if a.ndim == 1 else "") + ")"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s}" % shape
    pad = -(10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return (
        b"\x93NUMPY\x01\x00"
        + len(header).to_bytes(2, "little")
        + header.encode("latin1")
        + a.tobytes()
    )


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in its folder
    renamed into place, as the CLI does: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _assigned_cpus() -> Optional[float]:
    """The CPUs Ray assigned to this actor or task (``None`` outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker, or an older Ray
        return None


class Explain:
    """Explains a batch of images: a callable class for
    :meth:`ray.data.Dataset.map_batches` (the model is loaded once per actor).

    Input columns (one of):

    - ``bytes`` (and ``path``), as ``ray.data.read_binary_files(...,
      include_paths=True)`` gives them: each file is decoded in Rust exactly
      as the CLI decodes it, so the results are the CLI's bit for bit.
    - ``image``: HxWx3 uint8 arrays, as ``ray.data.read_images(...,
      mode="RGB")`` gives them after Pillow decoded them. Pillow's decoding
      may differ from the CLI's in the last bit of some pixels: these results
      are close to the CLI's, not bit-identical.

    Columns added (every input column is kept):

    - ``relevance``: float32 ``[C, H, W]`` at the model's input resolution
      (``keep_relevance=False`` leaves it out); NaN for a failed row.
    - ``target`` (int64, the explained class; -1 for a failed row),
      ``label`` (str; "" for a failed row), ``logit`` (float32; NaN).
    - ``error``: ``None``, or the one-line reason a row could not be
      explained (a corrupt file fails its row, not the batch).
    - with ``out_dir``: ``png`` (and with ``raw``, ``npy``): the files
      written, ``None`` for a failed row.

    Parameters:
        model: a known model name (``"efficientnet-lite0"``, bundled) or an
            ``.onnx`` path readable on every node.
        rule: the rule, composite or analyzer (the CLI's ``--rule``).
        threads: Rust threads of this actor. Default: ``RAYON_NUM_THREADS``
            when set, else the CPUs Ray assigned to the actor rounded up (one
            for ``num_cpus=0.5``), so that N actors on N cores use one core
            each, as the CLI's one image per core.
        out_dir: when given, write each row's heatmap as
            ``out_dir/<stem>.<rule>.png`` (the CLI's file, byte for byte) into
            a folder every worker can reach; ``root`` keeps the inputs'
            sub-folders below ``out_dir`` (paths relative to ``root``).
        raw: with ``out_dir``, also write ``<stem>.<rule>.npy`` (the CLI's
            ``--raw`` file, byte for byte).
        keep_relevance: add the ``relevance`` column (turn off when only the
            files matter: it is 600 KB a row for a 224x224 model).
        **options: passed on to :meth:`lrp_heatmap.Model.explain`
            (``target=``, ``epsilon=``, ``maxpool_ties=``, ...).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        rule: str = DEFAULT_RULE,
        *,
        threads: Optional[int] = None,
        out_dir: Optional[str] = None,
        root: Optional[str] = None,
        raw: bool = False,
        keep_relevance: bool = True,
        **options: Any,
    ) -> None:
        if threads is None and not os.environ.get("RAYON_NUM_THREADS"):
            cpus = _assigned_cpus()
            threads = max(1, math.ceil(cpus)) if cpus else None
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads= must be at least 1, got {threads}")
            # read by the Rust pool when it starts, i.e. at the first computation
            os.environ["RAYON_NUM_THREADS"] = str(int(threads))
        import lrp_heatmap as lh

        aliases = getattr(lh, "ALIASES", {})
        if rule not in _rules() and rule not in aliases:
            raise ValueError(f"rule= unknown rule '{rule}'; known: {', '.join(_rules())}")
        self.rule = rule
        # the outputs are named by the rule an alias stands for, as the CLI names them
        self.rule_name = aliases[rule][0] if rule in aliases else rule
        self.options = options
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.root = Path(root) if root is not None else None
        self.raw = raw
        self.keep_relevance = keep_relevance
        self.model = lh.Model(model)
        self._errors = _errors()
        self._shape: Optional[Tuple[int, ...]] = None

    def _tag(self, target: int) -> str:
        # the CLI's name part: the rule, and the class when one was asked for
        return self.rule_name + (
            f".class-{target}" if self.options.get("target") is not None else ""
        )

    def _outputs(self, path: str, target: int) -> Tuple[Path, Optional[Path]]:
        assert self.out_dir is not None
        p = Path(path)
        folder = self.out_dir
        if self.root is not None:
            try:
                folder = self.out_dir / p.parent.relative_to(self.root)
            except ValueError:
                pass
        stem = p.stem or "input"
        tag = self._tag(target)
        png = folder / f"{stem}.{tag}.png"
        return png, (folder / f"{stem}.{tag}.npy") if self.raw else None

    def _relevance_shape(self) -> Tuple[int, ...]:
        if self._shape is None:
            shape = list(getattr(self.model, "input_shape", None) or [1, 3, 224, 224])
            shape = shape[1:]
            if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3):
                shape = [shape[2], shape[0], shape[1]]  # NHWC model: relevance is [C, H, W]
            self._shape = tuple(int(d) for d in shape)
        return self._shape

    def _explain(self, inputs: Sequence[Any]) -> List[Any]:
        """An Explanation or the exception of each input: the batch at once on
        the Rust pool (a failed input fails its row only), else one by one."""
        many = getattr(self.model, "_explain_many", None)
        if many is not None:
            try:
                return list(many(list(inputs), self.rule, tolerant=True, **self.options))
            except self._errors:
                pass  # an input refused before the native call: row by row
        out: List[Any] = []
        for x in inputs:
            try:
                out.append(self.model.explain(x, rule=self.rule, **self.options))
            except self._errors as ex:
                out.append(ex)
        return out

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if "bytes" in batch:
            inputs: Sequence[Any] = [bytes(b) for b in batch["bytes"]]
        elif "image" in batch:
            inputs = list(batch["image"])
        else:
            raise ValueError(
                "batch= needs a 'bytes' column (ray.data.read_binary_files) or an 'image' "
                f"column (ray.data.read_images); got {sorted(batch)}"
            )
        n = len(inputs)
        paths = (
            [str(p) for p in batch["path"]] if "path" in batch else [f"row {i}" for i in range(n)]
        )
        relevance: List[Optional[np.ndarray]] = [None] * n
        target = np.full(n, -1, dtype=np.int64)
        logit = np.full(n, np.nan, dtype=np.float32)
        label = np.empty(n, dtype=object)
        label[:] = ""
        error = np.empty(n, dtype=object)
        png = np.empty(n, dtype=object)
        npy = np.empty(n, dtype=object)
        for i, e in enumerate(self._explain(inputs)):
            if isinstance(e, BaseException):
                error[i] = _one_line(e)
                continue
            if self.out_dir is not None:
                try:
                    png_path, npy_path = self._outputs(paths[i], int(e.target))
                    png_path.parent.mkdir(parents=True, exist_ok=True)
                    e.save(str(png_path))
                    png[i] = str(png_path)
                    if npy_path is not None:
                        _write_atomic(npy_path, _npy_bytes(e.relevance))
                        npy[i] = str(npy_path)
                except self._errors as ex:
                    error[i] = _one_line(ex)
                    continue
            relevance[i] = e.relevance
            target[i] = int(e.target)
            logit[i] = float(e.logit)
            label[i] = str(e.label)
        out = dict(batch)
        if self.keep_relevance:
            shape = (
                next((r.shape for r in relevance if r is not None), None) or self._relevance_shape()
            )
            rel = np.full((n,) + tuple(shape), np.nan, dtype=np.float32)
            for i, r in enumerate(relevance):
                if r is not None:
                    rel[i] = r
            out["relevance"] = rel
        out["target"] = target
        out["label"] = label
        out["logit"] = logit
        out["error"] = error
        if self.out_dir is not None:
            out["png"] = png
            if self.raw:
                out["npy"] = npy
        return out


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def list_images(
    folder: str, recursive: bool = False, rules: Optional[Sequence[str]] = None
) -> List[str]:
    """The images of ``folder`` as the CLI takes them: a known extension, not
    hidden, not one of our outputs (``<stem>.<rule>...png``), sorted by path;
    sub-folders (not hidden) only when ``recursive``."""
    names = set(rules if rules is not None else _rules())
    found: List[str] = []

    def walk(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.is_dir():
                if recursive and not _hidden(p):
                    walk(p)
                continue
            ext = p.suffix[1:].lower()
            own = any(part in names for part in p.stem.split(".")[1:])
            if not _hidden(p) and ext in IMAGE_EXTENSIONS and not own:
                found.append(str(p))

    walk(Path(folder))
    return found


def _identity(p: Path) -> str:
    return os.path.realpath(os.path.abspath(p))


def _conflicts(paths: Sequence[str], outputs: Any) -> Dict[int, str]:
    """The CLI's output-collision check over the whole list: an output that
    would overwrite an input, or a file another input writes already."""
    inputs = {_identity(Path(p)): p for p in paths}
    claimed: Dict[str, str] = {}
    refused: Dict[int, str] = {}
    for i, p in enumerate(paths):
        outs = [(o, _identity(o)) for o in outputs(p)]
        why = None
        for o, ident in outs:
            if ident in inputs:
                why = f"its output {o} would overwrite the input {inputs[ident]}; not explained (use another OUT_DIR)"
            elif ident in claimed:
                why = f"its output {o} is already the output of {claimed[ident]}; not explained (rename one)"
            if why:
                break
        if why:
            refused[i] = why
        else:
            for _, ident in outs:
                claimed[ident] = p
    return refused


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lrp_heatmap.ray",
        description=(
            "Explain every image of INPUT_DIR on Ray Data and write <stem>.<rule>.png (with --raw "
            "also <stem>.<rule>.npy) into OUT_DIR: the CLI's files, byte for byte. A bad image is "
            "reported with its path and skipped. Exit code 0 all good, 1 some image failed, 2 usage "
            "or model error."
        ),
    )
    p.add_argument(
        "input_dir", metavar="INPUT_DIR", help="folder of images (JPEG, PNG, WebP, BMP, TIFF, GIF)"
    )
    p.add_argument(
        "out_dir", metavar="OUT_DIR", help="output folder (on a cluster: one every node can write)"
    )
    p.add_argument(
        "--rule",
        "-r",
        default=DEFAULT_RULE,
        help=f"rule, composite or analyzer [default: {DEFAULT_RULE}]",
    )
    p.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help=f"known model name or .onnx path [default: {DEFAULT_MODEL}]",
    )
    p.add_argument(
        "--raw", action="store_true", help="also write the raw relevance as <stem>.<rule>.npy"
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help=(
            "workers (Ray actors, one core each); without --address also the CPUs of the local Ray "
            "instance [default: every core of this machine, or of the cluster with --address]"
        ),
    )
    p.add_argument(
        "--batch-size", type=int, default=4, help="images per batch handed to a worker [default: 4]"
    )
    p.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster (e.g. auto or HOST:6379) instead of starting a local one",
    )
    p.add_argument(
        "--recursive", action="store_true", help="descend into sub-folders (mirrored below OUT_DIR)"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The module command; returns the exit code."""
    args = _parser().parse_args(argv)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    err = sys.stderr
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=err)
        return 2
    if args.num_cpus is not None and args.num_cpus < 1:
        print(f"error: --num-cpus must be at least 1, got {args.num_cpus}", file=err)
        return 2
    rules = _rules()
    if args.rule not in rules:
        print(f"error: --rule: unknown rule '{args.rule}'; known: {', '.join(rules)}", file=err)
        return 2
    if not os.path.isdir(args.input_dir):
        print(f"error: {args.input_dir}: not a folder", file=err)
        return 2
    paths = list_images(args.input_dir, args.recursive, rules)
    if not paths:
        hint = "" if args.recursive else " (sub-folders need --recursive)"
        print(f"error: no images found in {args.input_dir}{hint}", file=err)
        return 2
    out_dir = Path(args.out_dir)
    root = Path(args.input_dir)

    def outputs(p: str) -> List[Path]:
        rel = Path(p).parent.relative_to(root)
        stem = Path(p).stem or "input"
        o = [out_dir / rel / f"{stem}.{args.rule}.png"]
        if args.raw:
            o.append(out_dir / rel / f"{stem}.{args.rule}.npy")
        return o

    failed = 0
    refused = _conflicts(paths, outputs)
    for i, why in refused.items():
        print(f"error: {paths[i]}: {why}", file=err)
        failed += 1
    todo = [p for i, p in enumerate(paths) if i not in refused]

    import logging

    import ray

    t0 = time.perf_counter()
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if args.address:
        ray.init(address=args.address, **quiet)
        workers = args.num_cpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    else:
        cpus = args.num_cpus or os.cpu_count() or 1
        ray.init(num_cpus=cpus, **quiet)
        workers = cpus
    workers = max(1, min(workers, len(todo)))
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    done = 0
    try:
        # the model loads in each actor; load it here first for one clear error
        # (a missing file, a bad model) instead of a failed actor's traceback
        try:
            import lrp_heatmap as lh

            lh.Model(args.model)
        except Exception as e:  # noqa: BLE001 - reported, exit code 2
            print(f"error: --model {args.model}: {_one_line(e)}", file=err)
            return 2
        t1 = time.perf_counter()
        ds = ray.data.read_binary_files(
            todo, include_paths=True, override_num_blocks=max(1, min(len(todo), workers * 4))
        )
        # the class by reference to the installed module (this file may run as __main__)
        explain_cls = importlib.import_module("lrp_heatmap.ray").Explain
        ds = ds.map_batches(
            explain_cls,
            fn_constructor_kwargs={
                "model": args.model,
                "rule": args.rule,
                "threads": 1,
                "out_dir": str(out_dir),
                "root": str(root),
                "raw": args.raw,
                "keep_relevance": False,
            },
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=ACTOR_CPUS,
            batch_size=args.batch_size,
        ).select_columns(
            ["path", "target", "label", "logit", "error", "png"] + (["npy"] if args.raw else [])
        )
        # reported as they finish, as the CLI does
        for r in ds.iter_rows():
            if r["error"] is not None:
                print(f"error: {r['path']}: {r['error']}", file=err, flush=True)
                failed += 1
                continue
            done += 1
            files = r["png"] + (f", {r['npy']}" if args.raw else "")
            print(
                f"{r['path']}: class {r['target']} \"{r['label']}\", logit {r['logit']:.4f} -> {files}",
                flush=True,
            )
        t2 = time.perf_counter()
    finally:
        ray.shutdown()
    seconds = time.perf_counter() - t0
    rate = done / (t2 - t1) if t2 > t1 else 0.0
    print(
        f"{done} explained, {failed} failed with {workers} workers in {seconds:.1f} s "
        f"({t1 - t0:.1f} s starting Ray and checking the model, then {rate:.2f} images/s)",
        file=err,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
