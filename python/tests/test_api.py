"""The Python API against the command line: the same arrays and PNGs, every
input kind, the errors, threads, memory, evaluate.

The command is the release binary of the workspace (target/release/
lrp-heatmap, built by `cargo test --release` before pytest in .ci/run);
LRP_HEATMAP_BIN overrides it."""

import io
import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import lrp_heatmap as lh

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "images").glob("*.jpg"))
RULES = ["zplus", "epsilon-plus-flat", "gradient", "epsilon"]
BIN = Path(os.environ.get("LRP_HEATMAP_BIN", ROOT / "target" / "release" / "lrp-heatmap"))


@pytest.fixture(scope="module")
def model():
    return lh.Model("efficientnet-lite0")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The command's --raw outputs for the 4 photos and the 4 rules."""
    assert BIN.exists(), f"build the command first: {BIN}"
    out = tmp_path_factory.mktemp("cli")
    for rule in RULES:
        subprocess.run([str(BIN), *map(str, PHOTOS), "--rule", rule, "--raw", "-o", str(out), "-q"],
                       check=True, capture_output=True)
    return out


def test_four_photos(model):
    assert len(PHOTOS) == 4


@pytest.mark.parametrize("rule", RULES)
def test_equal_to_the_command_bit_for_bit(model, cli, rule, tmp_path):
    for photo in PHOTOS:
        e = model.explain(photo, rule=rule)
        raw = np.load(cli / f"{photo.stem}.{rule}.npy")
        assert e.relevance.dtype == np.float32 and e.relevance.shape == raw.shape
        assert np.array_equal(e.relevance.view(np.uint32), raw.view(np.uint32)), (photo, rule)
        e.save(tmp_path / "x.png")
        assert (tmp_path / "x.png").read_bytes() == (cli / f"{photo.stem}.{rule}.png").read_bytes()


def test_every_input_kind(model, cli):
    from PIL import Image
    photo = ROOT / "images" / "cat.jpg"
    raw = np.load(cli / "cat.zplus.npy")
    by_path = model.explain(str(photo), rule="zplus")
    by_bytes = model.explain(photo.read_bytes(), rule="zplus")
    assert np.array_equal(by_bytes.relevance, raw)
    assert by_bytes.png() == by_path.png()
    # the same pixels, decoded by the image crate: what the command sees
    pixels = by_path._image
    by_array = model.explain(pixels, rule="zplus")
    assert np.array_equal(by_array.relevance, raw)
    by_pil = model.explain(Image.fromarray(pixels), rule="zplus")
    assert np.array_equal(by_pil.relevance, raw)
    # a heatmap at the array's size
    small = np.ascontiguousarray(pixels[::4, ::4])
    h = model.explain(small, rule="zplus").heatmap()
    assert h.shape == (small.shape[0], small.shape[1], 3) and h.dtype == np.uint8
    # a normalised tensor: the heatmap at the model's resolution
    x = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    t = model.explain(x, rule="gradient", target=1)
    assert t.target == 1 and t.heatmap().shape == (224, 224, 3)
    assert np.array_equal(t.relevance, model.explain(x[None], rule="gradient", target=1).relevance)


def test_fields_and_target(model):
    photo = ROOT / "images" / "cat.jpg"
    e = model.explain(photo, rule="epsilon", target="tabby", epsilon=0.1)
    assert e.target == 281 and e.label.startswith("tabby")
    assert isinstance(e.logit, float) and len(e.top5) == 5 and e.top5[0][0] == 285
    assert abs(float(e.relevance.sum(dtype=np.float64)) - e.relevance_sum) < 1e-3 * max(1, abs(e.relevance_sum))
    assert isinstance(e.ledger, dict) and isinstance(e.warnings, list)
    assert model.explain(photo, rule="gradient").ledger is None
    assert e._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert e.heatmap(overlay=True).shape == e.heatmap(cmap="seismic", clip=100).shape


def test_explain_batch_keeps_the_order(model):
    photos = PHOTOS + PHOTOS[::-1]
    batch = model.explain_batch(photos, rule="zplus", batch_size=3)
    assert [e.target for e in batch] == [model.explain(p, rule="zplus").target for p in photos]
    # the second half is the first reversed, array for array
    for a, b in zip(batch[:4], batch[4:][::-1]):
        assert np.array_equal(a.relevance, b.relevance)


def test_innvestigate_aliases(model):
    # each alias: analyze() of a batch equals explain() of each row with
    # the rule the alias names, for the row's top class
    for name in lh.ALIASES:
        a = lh.create_analyzer(name, model, **({"steps": 4} if "integrated" in name else {})
                               | ({"samples": 2} if "smooth" in name else {}))
        x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
        r = a.analyze(x)
        assert r.shape == x.shape and r.dtype == np.float32, name
        want = model.explain(x[0], rule=name, **({"steps": 4} if "integrated" in name else {})
                             | ({"samples": 2} if "smooth" in name else {}))
        assert np.array_equal(r[0], want.relevance), name
    z = lh.create_analyzer("lrp.z", model).analyze(x, neuron_selection=7)
    assert np.array_equal(z[1], model.explain(x[1], rule="lrp0", target=7).relevance)
    # lrp.alpha_2_beta_1 is alpha-beta with alpha 2
    ab = lh.create_analyzer("lrp.alpha_2_beta_1", model).analyze(x[:1])
    assert np.array_equal(ab[0], model.explain(x[0], rule="alpha-beta", alpha=2.0).relevance)


def test_exceptions_name_the_python_parameter(model):
    cat = ROOT / "images" / "cat.jpg"
    with pytest.raises(FileNotFoundError, match=r"^x= .*no-such\.jpg: no such file$"):
        model.explain("no-such.jpg")
    with pytest.raises(FileNotFoundError, match="^model= "):
        lh.Model("no-such.onnx")
    with pytest.raises(ValueError, match=r"^rule= unknown rule or analyzer 'nope'; known: lrp0, .*zplus"):
        model.explain(cat, rule="nope")
    with pytest.raises(ValueError, match=r"^epsilon= must be a finite number > 0, got -1$"):
        model.explain(cat, rule="epsilon", epsilon=-1)
    with pytest.raises(ValueError, match=r"^steps= must be at least 1, got 0$"):
        model.explain(cat, rule="integrated-gradients", steps=0)
    with pytest.raises(ValueError, match=r"^maxpool_ties= must be 'first' or 'split'"):
        model.explain(cat, maxpool_ties="both")
    with pytest.raises(ValueError, match=r"^target= class 1000 out of range"):
        model.explain(cat, target=1000)
    with pytest.raises(ValueError, match=r"^target= zzzz"):
        model.explain(cat, target="zzzz")
    with pytest.raises(ValueError, match=r"^x= must have the model's input shape"):
        model.explain(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(lh.ImageError, match="^cannot decode x: ") as err:
        model.explain(b"not an image")
    assert isinstance(err.value, lh.Error) and "\n" not in str(err.value)
    bad = ROOT / "models" / "README.md"
    with pytest.raises(lh.ModelError) as err:
        lh.Model(bad)
    assert isinstance(err.value, lh.Error) and "\n" not in str(err.value)
    for e in (lh.ModelError, lh.ImageError):
        assert issubclass(e, lh.Error)
    assert model.explain(cat, maxpool_ties="split", rule="zplus").target == 285


def test_two_threads_at_once(model):
    photos = [ROOT / "images" / "cat.jpg", ROOT / "images" / "rocket.jpg"]
    want = [model.explain(p, rule="epsilon-plus-flat") for p in photos]
    got = [None, None]

    def run(i):
        got[i] = [model.explain(photos[i], rule="epsilon-plus-flat") for _ in range(3)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for e in got[i]:
            assert np.array_equal(e.relevance, want[i].relevance)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_no_leak(model):
    x = np.asarray(model.explain(ROOT / "images" / "cat.jpg")._image)[::4, ::4].copy()
    for _ in range(20):  # warm-up: the allocator's pools, the thread pool
        model.explain(x, rule="gradient").heatmap()
    before = _rss_mb()
    for _ in range(500):
        e = model.explain(x, rule="gradient")
        e.heatmap()
    grown = _rss_mb() - before
    assert grown < 20, f"{grown:.1f} MB after 500 explanations"


def test_layers_and_concept(model):
    cat = ROOT / "images" / "cat.jpg"
    layer = "/_swish_1/Clip"
    e = model.explain(cat, rule="zplus", layers=[layer])
    assert set(e.layers) == {layer} and e.layers[layer].dtype == np.float32
    c = model.explain(cat, rule="zplus", concept=(layer, [3]))
    assert not np.array_equal(c.relevance, e.relevance)
    with pytest.raises(ValueError, match="^layers= and concept= work with LRP"):
        model.explain(cat, rule="gradient", layers=[layer])
    assert e.tokens == {}, "a CNN's feature map has no tokens"


def test_layers_of_a_vision_transformer():
    vit = lh.Model(ROOT / "tests" / "fixtures" / "vit" / "vit_tv.dynamo.onnx")
    cat = ROOT / "images" / "cat.jpg"
    e = vit.explain(cat, rule="cp-lrp", layers=["node_add_2"])
    r, m = e.layers["node_add_2"], e.tokens["node_add_2"]
    assert r.shape == (197, 48) and m.shape == (14, 14)
    np.testing.assert_allclose(m, r[1:].sum(axis=1).reshape(14, 14), rtol=1e-5, atol=1e-6)
    c = vit.explain(cat, rule="cp-lrp", concept=("node_add_2", [5]))
    assert np.isfinite(c.relevance).all()
    with pytest.raises(ValueError, match="48 embedding dimensions"):
        vit.explain(cat, rule="cp-lrp", concept=("node_add_2", [48]))


def test_evaluate_equals_the_commands_evaluate_json(model, tmp_path):
    # two photos, three analyzers (an alias among them), the mean
    # perturbation with big patches and few steps: the dict is the command's
    # evaluate.json, number for number (both are serde_json's text of the
    # same library report)
    photos = [str(p) for p in PHOTOS[:2]]
    out = tmp_path / "eval"
    subprocess.run([str(BIN), "evaluate", *photos, "--rules", "zplus,gradient,epsilon",
                    "--perturb", "mean", "--patch", "32", "--perturb-steps", "12",
                    "--seed", "3", "-o", str(out)], check=True, capture_output=True)
    want = json.loads((out / "evaluate.json").read_text())
    got = model.evaluate(photos, rules=["lrp.z_plus", "gradient", "epsilon"], perturb="mean",
                         patch=32, steps=12, seed=3)
    assert got == want
    assert [r["rank"] for r in got["summary"]] == [1, 2, 3]
    assert len(got["images"][0]["analyzers"][0]["curves"]["morf"]) == 13
    # an array input is named by its position; its numbers are the photo's
    pixels = model.explain(photos[0], rule="gradient")._image
    by_array = model.evaluate([pixels], rules=["gradient"], perturb="mean", patch=32, steps=12,
                              seed=3)
    assert by_array["images"][0]["input"] == "<input 0>"
    assert by_array["images"][0]["analyzers"][0]["curves"] == \
        want["images"][0]["analyzers"][1]["curves"]


def test_evaluate_errors_name_the_python_parameter(model):
    cat = ROOT / "images" / "cat.jpg"
    with pytest.raises(ValueError, match=r"^steps= must be between 1 and the number of patches "
                                         r"\(49 patches of 32 px at 224x224\), got 50$"):
        model.evaluate([cat], rules=["gradient"], patch=32, steps=50)
    with pytest.raises(ValueError, match=r"^perturb= 'salt': expected noise, mean or blur$"):
        model.evaluate([cat], perturb="salt")
    with pytest.raises(ValueError, match=r"^ig_steps= must be at least 1, got 0$"):
        model.evaluate([cat], rules=["integrated-gradients"], ig_steps=0)
    with pytest.raises(ValueError, match=r"^rules= must name at least one analyzer"):
        model.evaluate([cat], rules=[])
    with pytest.raises(FileNotFoundError, match=r"^x= .*no-such\.jpg: no such file$"):
        model.evaluate(["no-such.jpg"], rules=["gradient"])


def test_a_model_with_external_data_equals_pytorch():
    # tests/fixtures/exporters (scripts/export_zoo.py): AlexNet (channels / 4)
    # by PyTorch's dynamo exporter, weights in alexnet.dynamo.onnx.data
    # beside it; PyTorch's logits and autograd gradient of the top class
    d = ROOT / "tests" / "fixtures" / "exporters"
    top = json.loads((d / "manifest.json").read_text())["models"]["alexnet"]["top"]
    m = lh.Model(d / "alexnet.dynamo.onnx")
    x = np.load(d / "alexnet.input.npy")
    logits = np.load(d / "alexnet.logits.npy")[0]
    grad = np.load(d / "alexnet.grad.npy")[0].astype(np.float64)
    e = m.explain(x, rule="gradient-x-input")
    assert e.target == top == int(np.argmax(logits))
    assert abs(e.logit - logits[top]) <= 1e-3 * np.abs(logits).max()
    # the map is x * d logit / dx (float32 against PyTorch's float32: the
    # Rust exporter tests measure 2e-7 to 2e-5)
    want = x[0].astype(np.float64) * grad
    got = e.relevance.astype(np.float64)
    assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want)
