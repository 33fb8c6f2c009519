"""Datasets: digits, folder, npz, python entry; resizing, normalisation, layout, seeded splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecompress.data import load_data
from edgecompress.errors import RecipeError
from edgecompress.recipe import DataSpec

RECIPE = Path("recipe.yaml")


def _spec(**kw) -> DataSpec:
    return DataSpec.model_validate(kw)


def test_digits_shapes_layout_and_split_sizes():
    d = load_data(_spec(dataset="digits", image_size=(16, 16)), RECIPE, seed=0)
    total = len(d.train) + len(d.val) + len(d.test)
    assert total == 1797 and d.num_classes == 10
    assert d.train.x.shape[1:] == (1, 16, 16) == d.sample_shape
    assert d.train.x.dtype == np.float32 and d.train.y.dtype == np.int64
    assert d.train.x.min() >= 0.0 and d.train.x.max() <= 1.0
    assert abs(len(d.test) / total - 0.2) < 0.01
    assert len(d.calibration) == 256
    assert set(np.unique(d.test.y)) == set(range(10)), "stratified: every class in the test split"


def test_splits_are_seeded_and_disjoint():
    a = load_data(_spec(image_size=(8, 8)), RECIPE, seed=3)
    b = load_data(_spec(image_size=(8, 8)), RECIPE, seed=3)
    c = load_data(_spec(image_size=(8, 8)), RECIPE, seed=4)
    assert np.array_equal(a.test.x, b.test.x) and not np.array_equal(a.test.x, c.test.x)
    train_rows = {r.tobytes() for r in a.train.x}
    assert sum(r.tobytes() in train_rows for r in a.test.x) < 5  # digits has a few duplicate images


def test_normalize_and_nhwc_and_rgb():
    d = load_data(
        _spec(image_size=(8, 8), layout="NHWC", channels=3, normalize={"mean": [0.5], "std": [0.25]}),
        RECIPE,
        seed=0,
    )
    assert d.sample_shape == (8, 8, 3)
    assert d.train.x.min() >= -2.0 - 1e-6 and d.train.x.max() <= 2.0 + 1e-6
    assert d.describe()["mean"] == [0.5] and d.describe()["layout"] == "NHWC"


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 12, 12), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(
        _spec(dataset="npz", path=str(tmp_path / "d.npz"), image_size=(12, 12)), tmp_path / "r.yaml", seed=0
    )
    assert d.num_classes == 3 and d.sample_shape == (1, 12, 12)
    assert d.train.x.max() <= 1.0


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(RecipeError, match="needs arrays 'x' and 'y'; missing x, y"):
        load_data(_spec(dataset="npz", path="d.npz"), tmp_path / "r.yaml", seed=0)


def test_image_folder(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((20, 20), 25 * i, np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    d = load_data(_spec(dataset="folder", path="imgs", image_size=(10, 10)), tmp_path / "r.yaml", seed=0)
    assert d.class_names == ["cat", "dog"] and d.sample_shape == (1, 10, 10)
    assert len(d.train) + len(d.val) + len(d.test) == 20


def test_empty_folder_is_a_recipe_error(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    with pytest.raises(RecipeError, match="no images"):
        load_data(_spec(dataset="folder", path="imgs"), tmp_path / "r.yaml", seed=0)


def test_python_entry_returning_splits(tmp_path):
    (tmp_path / "ds.py").write_text(
        "import numpy as np\n"
        "def make():\n"
        "    x = np.zeros((30, 8, 8), np.float32); y = np.arange(30) % 3\n"
        "    return {'train': (x, y), 'test': (x[:9], y[:9])}\n"
        "def empty():\n"
        "    return np.zeros((0, 8, 8)), np.zeros((0,))\n"
    )
    d = load_data(_spec(dataset="ds.py:make", image_size=(8, 8)), tmp_path / "r.yaml", seed=0)
    assert len(d.test) == 9 and len(d.train) + len(d.val) == 30
    with pytest.raises(RecipeError, match="need a non-empty"):
        load_data(_spec(dataset="ds.py:empty", image_size=(8, 8)), tmp_path / "r.yaml", seed=0)


def test_unknown_dataset():
    with pytest.raises(RecipeError, match="unknown dataset 'mnist'"):
        load_data(_spec(dataset="mnist"), RECIPE, seed=0)
