"""lrp_heatmap.ray on a real Ray instance (not mocked; CI installs the `ray`
extra): Explain under map_batches and the module command, both against the
CLI's own files (target/release/lrp-heatmap, built by the Rust tests)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing calls out of the machine

import ray  # noqa: E402

import lrp_heatmap.ray as lhr  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLI = Path(os.environ.get("LRP_HEATMAP_CLI", REPO / "target" / "release" / "lrp-heatmap"))
PHOTOS = ["astronaut", "cat", "coffee", "rocket"]
CORRUPT = "broken.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """8 images: the 4 photos, 3 of them again under other names, and a
    corrupt JPEG (a JPEG's first bytes, then garbage)."""
    d = tmp_path_factory.mktemp("ray") / "photos"
    d.mkdir()
    for p in PHOTOS:
        shutil.copy(REPO / "images" / f"{p}.jpg", d / f"{p}.jpg")
    for p in PHOTOS[:3]:
        shutil.copy(REPO / "images" / f"{p}.jpg", d / f"{p}-copy.jpg")
    (d / CORRUPT).write_bytes(
        (REPO / "images" / "cat.jpg").read_bytes()[:200] + b"\x00garbage" * 20
    )
    assert len(list(d.iterdir())) == 8
    return d


def cli(photos: Path, out: Path, *rule: str) -> dict:
    """Runs the CLI on the folder with --raw --json; its JSON reports by input
    file name. Exit code 1: the corrupt file fails, the others go on."""
    assert CLI.exists(), f"{CLI} missing: build it with `cargo build --release` first"
    r = subprocess.run(
        [str(CLI), str(photos), "--raw", "--json", "-q", "-o", str(out), *rule],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    by_name = {Path(j["input"]).name: j for j in reports}
    assert by_name[CORRUPT]["status"] == "failed"
    return by_name


@pytest.fixture(scope="module")
def cli_zplus(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-zplus")
    return out / photos.name, cli(photos, out, "--rule", "zplus")


@pytest.fixture(scope="module")
def cli_default(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-default")
    return out / photos.name, cli(photos, out)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_importing_the_package_does_not_import_ray():
    code = "import sys, lrp_heatmap; assert 'ray' not in sys.modules, 'ray imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_map_batches_equals_the_cli(photos, cli_zplus, local_ray):
    cli_out, reports = cli_zplus
    paths = sorted(str(p) for p in photos.iterdir())
    # 2 actors of ACTOR_CPUS (0.5) each under 2 CPUs: reading keeps a CPU
    ds = ray.data.read_binary_files(paths, include_paths=True, override_num_blocks=4)
    ds = ds.map_batches(
        lhr.Explain,
        fn_constructor_kwargs={"rule": "zplus"},
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=lhr.ACTOR_CPUS,
        batch_size=2,
    )
    rows = {Path(r["path"]).name: r for r in ds.take_all()}
    assert sorted(rows) == sorted(Path(p).name for p in paths)
    for name, r in rows.items():
        if name == CORRUPT:
            assert r["target"] == -1 and r["label"] == "" and np.isnan(r["logit"])
            assert np.isnan(r["relevance"]).all()
            assert isinstance(r["error"], str) and r["error"] and "\n" not in r["error"]
            continue
        want = reports[name]
        assert r["error"] is None, r["error"]
        # the CLI's --raw array, bit for bit
        npy = np.load(cli_out / f"{Path(name).stem}.zplus.npy")
        got = np.asarray(r["relevance"])
        assert got.dtype == np.float32 and got.shape == npy.shape
        assert got.tobytes() == npy.tobytes(), name
        assert r["target"] == want["class"]
        assert r["label"] == want["label"]
        # the JSON's logit is the f32 printed shortest: parsed back to f32 it is equal
        assert np.float32(r["logit"]) == np.float32(want["logit"])
    # the copies explain the same pixels: the same relevance
    for p in PHOTOS[:3]:
        assert np.array_equal(rows[f"{p}.jpg"]["relevance"], rows[f"{p}-copy.jpg"]["relevance"])


def test_image_column_from_pillow(photos, cli_zplus, local_ray):
    """read_images decodes with Pillow, not the CLI's decoder: the classes are
    the CLI's, the maps close to them (not bit-identical, as documented)."""
    _, reports = cli_zplus
    paths = [str(photos / f"{p}.jpg") for p in PHOTOS]
    ds = ray.data.read_images(paths, include_paths=True, mode="RGB")
    ds = ds.map_batches(
        lhr.Explain,
        fn_constructor_kwargs={"rule": "zplus", "keep_relevance": True},
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=lhr.ACTOR_CPUS,
        batch_size=2,
    )
    rows = ds.take_all()
    assert len(rows) == 4
    for r in rows:
        name = Path(r["path"]).name
        assert r["error"] is None, r["error"]
        assert r["target"] == reports[name]["class"], name
        npy = np.load(Path(cli_zplus[0]) / f"{Path(name).stem}.zplus.npy")
        rel = np.asarray(r["relevance"])
        cos = float((rel * npy).sum() / np.linalg.norm(rel) / np.linalg.norm(npy))
        # measured (Ray 2.60, Pillow 13): cosine 0.9994 to 0.9996 for the 4
        # photos, max |difference| 1.5e-5 (the two JPEG decoders round some
        # pixels apart); 0.99 leaves room for other Pillow versions
        assert cos > 0.99, (name, cos)


def test_explain_rejects_a_batch_without_images():
    e = lhr.Explain(rule="zplus")
    with pytest.raises(ValueError, match="batch= needs a 'bytes' column"):
        e({"text": np.array(["a"])})
    with pytest.raises(ValueError, match="rule= unknown rule 'nope'"):
        lhr.Explain(rule="nope")


def test_npy_bytes_are_the_clis(cli_zplus):
    cli_out, _ = cli_zplus
    raw = (cli_out / "cat.zplus.npy").read_bytes()
    assert lhr._npy_bytes(np.load(cli_out / "cat.zplus.npy")) == raw


def test_module_command_writes_the_clis_files(photos, cli_default, tmp_path):
    """`python -m lrp_heatmap.ray` on the folder, the default rule: the CLI's
    PNG and .npy files byte for byte; the corrupt file reported and skipped."""
    cli_out, _ = cli_default
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrp_heatmap.ray",
            str(photos),
            str(out),
            "--raw",
            "--num-cpus",
            "2",
            "--batch-size",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert r.returncode == 1, r.stderr  # 1: an image failed, the others written
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {photos / CORRUPT}: "), r.stderr
    want = sorted(p.name for p in cli_out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == want
    assert len(want) == 14  # 7 images x (png, npy)
    for name in want:
        assert (out / name).read_bytes() == (cli_out / name).read_bytes(), name
    assert "7 explained, 1 failed" in r.stderr


def test_module_command_usage_errors(tmp_path):
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "lrp_heatmap.ray", *a], capture_output=True, text=True, timeout=120
    )
    r = run(str(tmp_path), str(tmp_path / "out"), "--rule", "nope")
    assert r.returncode == 2 and "error: --rule: unknown rule 'nope'; known: " in r.stderr
    r = run(str(tmp_path), str(tmp_path / "out"))
    assert r.returncode == 2 and f"error: no images found in {tmp_path}" in r.stderr


def test_module_command_recursive_and_collisions(tmp_path):
    """--recursive mirrors sub-folders below OUT_DIR; cat.jpg and cat.png would
    both write cat.<rule>.png: the later one is refused before anything runs,
    as the CLI refuses it (the check runs over the whole list)."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(REPO / "images" / "cat.jpg", d / "cat.jpg")
    shutil.copy(REPO / "images" / "cat.jpg", d / "cat.png")
    shutil.copy(REPO / "images" / "rocket.jpg", d / "sub" / "rocket.jpg")
    cli_out = tmp_path / "cli"
    c = subprocess.run(
        [str(CLI), str(d), "--recursive", "-q", "-r", "gradient", "-o", str(cli_out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert c.returncode == 1 and "is already the output of" in c.stderr, c.stderr
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lrp_heatmap.ray",
            str(d),
            str(out),
            "--recursive",
            "--rule",
            "gradient",
        ]
        + ["--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {d / 'cat.png'}: its output {out / 'cat.gradient.png'} is already the output of "
        f"{d / 'cat.jpg'}; not explained (rename one)"
    ], r.stderr
    for name in ["cat.gradient.png", "sub/rocket.gradient.png"]:
        assert (out / name).read_bytes() == (cli_out / "photos" / name).read_bytes(), name
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "cat.gradient.png",
        "sub/rocket.gradient.png",
    ]
