"""digits-deformed: seeded, cached, disjoint-source splits of deformed digits, and its recipe keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress import datasets_deformed as dd
from edgecompress.data import load_data
from edgecompress.errors import RecipeError
from edgecompress.recipe import DataSpec, load_recipe, parse_recipe
from tests.conftest import EXAMPLES

SMALL = {"train": 200, "val": 50, "test": 100}


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    """Every test gets its own empty cache root."""
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _gen(seed: int = 0, image_size=(32, 32), channels: int = 1, **kw):
    return dd.generate(SMALL, image_size=image_size, channels=channels, seed=seed, **kw)


def test_deterministic_per_seed_and_cache_independent():
    a = _gen(seed=1, cache=False)
    b = _gen(seed=1)  # generated, then written to the cache
    c = _gen(seed=1)  # read from the cache
    d = _gen(seed=2, cache=False)
    for split in dd.SPLITS:
        assert np.array_equal(a[split][0], b[split][0]) and np.array_equal(a[split][0], c[split][0])
        assert np.array_equal(a[split][1], c[split][1])
        assert not np.array_equal(a[split][0], d[split][0])


@pytest.mark.parametrize(("image_size", "channels"), [((32, 32), 1), ((32, 32), 3), ((24, 40), 1)])
def test_sizes_shapes_dtypes_range_and_classes(image_size, channels):
    out = _gen(image_size=image_size, channels=channels, cache=False)
    assert set(out) == {"train", "val", "test"}
    for split, n in SMALL.items():
        x, y = out[split]
        assert x.shape == (n, *image_size, channels) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.1
        assert np.bincount(y, minlength=10).min() == n // 10, "class-balanced, every class present"


def test_source_digits_are_disjoint_stratified_and_cover_all():
    sources = dd.source_split(0)
    sets = [set(sources[s].tolist()) for s in dd.SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 1797
    assert abs(len(sources["test"]) / 1797 - 0.25) < 0.01 and abs(len(sources["val"]) / 1797 - 0.15) < 0.01
    assert not np.array_equal(sources["test"], dd.source_split(1)["test"])
    _, y = dd._source_digits()
    for s in dd.SPLITS:
        assert set(np.unique(y[sources[s]])) == set(range(10))


def test_each_split_renders_only_its_own_sources(monkeypatch):
    """Record the source indices every chunk renders (digit and clutter fragment)."""
    seen: set[str] = set()
    real = dd._render_chunk
    split_of = {int(i): s for s, idx in dd.source_split(0).items() for i in idx}

    def spy(rng, canvases, centre, src, others, *args):
        splits = {split_of[int(i)] for i in (*src, *others)}
        assert len(splits) == 1, f"a chunk mixes sources of {splits}"
        seen.update(splits)
        return real(rng, canvases, centre, src, others, *args)

    monkeypatch.setattr(dd, "_render_chunk", spy)
    _gen(seed=0, cache=False)
    assert set(seen) == {"train", "val", "test"}


def test_cache_is_written_under_the_root_and_read_back(monkeypatch, _cache):
    first = _gen(seed=3)
    files = list((_cache / "datasets").glob("digits-deformed-*.npz"))
    assert files == [dd.cache_path(SMALL, (32, 32), 1, 3)]
    assert not [p for p in (_cache / "datasets").iterdir() if p.suffix != ".npz"], "no temporary files left"

    def boom(*a, **k):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(dd, "_generate_uint8", boom)
    second = _gen(seed=3)
    assert np.array_equal(first["test"][0], second["test"][0])
    with pytest.raises(AssertionError, match="generated again"):
        _gen(seed=4)  # other parameters: another cache file


def test_corrupt_cache_is_regenerated(_cache):
    path = dd.cache_path(SMALL, (32, 32), 1, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    out = _gen(seed=0)
    assert out["train"][0].shape == (200, 32, 32, 1)
    assert np.array_equal(np.load(path)["y_train"], out["train"][1]), "the broken file was replaced"


def test_interrupted_write_leaves_no_cache_file(monkeypatch, _cache):
    def fail(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(KeyboardInterrupt):
        _gen(seed=0)
    assert not list((_cache / "datasets").iterdir())


def test_load_data_gives_the_requested_splits():
    spec = DataSpec.model_validate(
        {
            "dataset": "digits-deformed",
            "image_size": [32, 32],
            "normalize": {"mean": [0.5], "std": [0.5]},
            "deformed": {"train": 120, "val": 30, "test": 40, "seed": 0},
            "split": {"calibration": 16},
        }
    )
    d = load_data(spec, Path("r.yaml"), seed=5)
    assert (len(d.train), len(d.val), len(d.test), len(d.calibration)) == (120, 30, 40, 16)
    assert d.sample_shape == (1, 32, 32) and d.num_classes == 10 and d.class_names[3] == "3"
    assert d.train.x.min() >= -1.0 and d.train.x.max() <= 1.0
    assert "pixels / 255" in d.describe()["scale"]


def test_images_are_really_deformed():
    """A 1-NN on raw pixels fitted to plain renderings of the train sources: far worse on deformed tests."""
    from sklearn.neighbors import KNeighborsClassifier

    images, y = dd._source_digits()
    sources = dd.source_split(0)
    size = (16, 16)
    plain = dd.plain_digits(images, size).reshape(len(images), -1)
    knn = KNeighborsClassifier(n_neighbors=1).fit(plain[sources["train"]], y[sources["train"]])
    plain_acc = knn.score(plain[sources["test"]], y[sources["test"]])
    x, yt = dd.generate(SMALL, image_size=size, channels=1, seed=0, cache=False)["test"]
    deformed_acc = knn.score(x.reshape(len(x), -1), yt)
    assert plain_acc > 0.9 and deformed_acc < plain_acc - 0.3, (plain_acc, deformed_acc)


def test_too_small_sizes_are_rejected():
    with pytest.raises(RecipeError, match=r"data.deformed.val: needs at least 10 images"):
        dd.generate({"train": 100, "val": 5, "test": 100}, image_size=(16, 16), channels=1, seed=0)


RECIPE = f"""\
name: t
model:
  source: {EXAMPLES}:tiny_cnn
  input_shape: [1, 1, 16, 16]
data:
  dataset: DATASET
  image_size: [16, 16]
  deformed: DEFORMED
"""


def _recipe(dataset: str = "digits-deformed", deformed: str = "{train: 100, val: 20, test: 30}") -> str:
    return RECIPE.replace("DATASET", dataset).replace("DEFORMED", deformed)


def test_recipe_keys_parse_with_defaults():
    r = parse_recipe(_recipe(), source="r.yaml")
    assert r.data.deformed is not None
    assert (r.data.deformed.train, r.data.deformed.val, r.data.deformed.test) == (100, 20, 30)
    assert r.data.deformed.seed == 0
    full = parse_recipe(_recipe(deformed="{}"), source="r.yaml").data.deformed
    assert (full.train, full.val, full.test) == (10_000, 2_000, 3_000)


@pytest.mark.parametrize(
    ("deformed", "expected"),
    [
        ("{train: 5}", "r.yaml:8: data.deformed.train: needs at least 10 images so that every digit class"),
        (
            "{test: 0}",
            "data.deformed.test: needs at least 10 images so that every digit class appears; got 0",
        ),
        ("{test: 2000000}", "data.deformed.test: Input should be less than or equal to 1000000"),
        ("{val: '20'}", "data.deformed.val: Input should be a valid integer"),
        ("{seed: -1}", "data.deformed.seed: Input should be greater than or equal to 0"),
        ("{tran: 100}", "data.deformed.tran: unknown key 'tran' (did you mean 'train'?)"),
    ],
)
def test_bad_recipe_keys_are_one_line_errors(deformed, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe(_recipe(deformed=deformed), source="r.yaml")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_deformed_with_another_dataset_is_rejected(write_recipe):
    path = write_recipe(_recipe(dataset="digits"))
    with pytest.raises(RecipeError, match=r"data.deformed: applies to dataset 'digits-deformed' only"):
        load_recipe(path)
    load_recipe(write_recipe(_recipe()))
