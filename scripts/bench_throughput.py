#!/usr/bin/env python3
"""Images per second of the command, of the Python API and of lh.ray (Ray
Data, 2 workers) on one workload, in the same run (a benchmark, not a test;
the README's "On a cluster" quotes it).

    python scripts/bench_throughput.py [--copies 32] [--rule zplus] [--rounds 2]

The workload: the 4 photos of images/ copied --copies times under distinct
names into one folder (128 images by default), each explained with --rule
and written as a PNG:

- the command: `target/release/lrp-heatmap DIR -o OUT --rule R -q`, the
  whole process (start and model loading included);
- the Python API: `lh.Model(...)` then `explain_batch` of 16 paths at a time,
  each explanation saved with `Explanation.save` (on a thread pool: drawing
  releases the GIL), model loading included;
- lh.ray: `python -m lrp_heatmap.ray DIR OUT --rule R --num-cpus 2`, the
  whole process, and the rate it reports once Ray is up.

Each round runs the three one after the other; the best round of each is
printed. Needs the package installed with Ray (`pip install "./python[ray]"`)
and the command built (`cargo build --release`).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rule", default="zplus")
    ap.add_argument("--copies", type=int, default=32, help="copies of each of the 4 photos")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "lrp-heatmap"))
    a = ap.parse_args()
    photos = sorted((ROOT / "images").glob("*.jpg"))
    work = Path(tempfile.mkdtemp())
    src = work / "photos"
    src.mkdir()
    for k in range(a.copies):
        for p in photos:
            shutil.copyfile(p, src / f"{p.stem}{k}.jpg")
    paths = sorted(src.iterdir())
    n = len(paths)

    def fresh(name: str) -> Path:
        d = work / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        return d

    def cli() -> float:
        out = fresh("cli")
        t = time.perf_counter()
        subprocess.run([a.bin, str(src), "-o", str(out), "--rule", a.rule, "-q"], check=True,
                       capture_output=True)
        return time.perf_counter() - t

    def python_api() -> float:
        import lrp_heatmap as lh

        out = fresh("py")
        t = time.perf_counter()
        model = lh.Model("efficientnet-lite0")
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for i in range(0, n, 16):
                chunk = paths[i:i + 16]
                es = model.explain_batch(chunk, rule=a.rule)
                list(pool.map(lambda pe: pe[1].save(out / f"{pe[0].stem}.{a.rule}.png"),
                              zip(chunk, es)))
        return time.perf_counter() - t

    def ray() -> tuple:
        out = fresh("ray")
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "lrp_heatmap.ray", str(src), str(out),
                            "--rule", a.rule, "--num-cpus", "2"], check=True,
                           capture_output=True, text=True, env=env)
        total = time.perf_counter() - t
        m = re.search(r"then ([0-9.]+) images/s", r.stderr)
        return total, float(m.group(1)) if m else float("nan")

    best = {"cli": float("inf"), "py": float("inf"), "ray": float("inf"), "ray_up": 0.0}
    for _ in range(a.rounds):
        best["cli"] = min(best["cli"], cli())
        best["py"] = min(best["py"], python_api())
        total, up = ray()
        best["ray"] = min(best["ray"], total)
        best["ray_up"] = max(best["ray_up"], up)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{n} images ({a.copies} x 4 photos), rule {a.rule}, best of {a.rounds} rounds, "
          f"{os.cpu_count()} cores")
    print(f"command:           {n / best['cli']:5.1f} images/s ({best['cli']:.1f} s)")
    print(f"Python API:        {n / best['py']:5.1f} images/s ({best['py']:.1f} s)")
    print(f"lh.ray, 2 workers: {n / best['ray']:5.1f} images/s ({best['ray']:.1f} s with Ray's "
          f"start; {best['ray_up']:.1f} images/s once Ray is up)")


if __name__ == "__main__":
    main()
