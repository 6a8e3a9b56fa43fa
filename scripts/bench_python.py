#!/usr/bin/env python3
"""Per-image time of the command and of the Python package on the 4 photos,
in the same run (a benchmark, not a test).

    python scripts/bench_python.py [--rule zplus] [--repeat 5]

The command: `target/release/lrp-heatmap images/*.jpg --rule R -o TMP -q`
(the wall time of a run over 16 copies of the photos minus a run over
one photo, to take process start and model loading out); the
package: `Model.explain_batch` of the 4 photos, model loaded once, each
heatmap rendered and saved as the command does. Needs the package
installed (`pip install ./python`) and the command built
(`cargo build --release`).
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lrp_heatmap as lh

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rule", default="epsilon-plus-flat")
    ap.add_argument("--repeat", type=int, default=5, help="passes over the photos (best is kept)")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "lrp-heatmap"))
    a = ap.parse_args()
    photos = sorted((ROOT / "images").glob("*.jpg"))
    # 16 images per pass (start-up costs amortised), under distinct names:
    # the command explains a repeated path once
    src = Path(tempfile.mkdtemp())
    many = []
    for k in range(4):
        for p in photos:
            many.append(src / f"{p.stem}{k}.jpg")
            shutil.copyfile(p, many[-1])
    out = Path(tempfile.mkdtemp())

    def cli(paths) -> float:
        t = time.perf_counter()
        subprocess.run([a.bin, *map(str, paths), "--rule", a.rule, "-o", str(out), "-q"],
                       check=True, capture_output=True)
        return time.perf_counter() - t

    model = lh.Model("efficientnet-lite0")

    def py(paths) -> float:
        t = time.perf_counter()
        es = model.explain_batch(paths, rule=a.rule)
        # rendering and PNG encoding release the GIL: threads draw in
        # parallel, as the command writes its outputs on its thread pool
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(lambda ie: ie[1].save(out / f"py{ie[0]}.png"), enumerate(es)))
        return time.perf_counter() - t

    py(photos)  # warm-up: the thread pool, the allocator
    cli_t, py_t = [], []
    for _ in range(a.repeat):
        # the command's per-image time: a pass over 16 images minus a pass
        # over 1 (process start and model loading), over 15
        cli_t.append((cli(many) - cli(photos[:1])) / (len(many) - 1))
        py_t.append(py(many) / len(many))
    c, p = min(cli_t), min(py_t)
    print(f"rule {a.rule}, {len(many)} images per pass, best of {a.repeat}")
    print(f"command: {c * 1000:.1f} ms/image ({1 / c:.1f} images/s)")
    print(f"python:  {p * 1000:.1f} ms/image ({1 / p:.1f} images/s), {100 * (p / c - 1):+.1f}% vs the command")


if __name__ == "__main__":
    main()
