"""Datasets as numpy arrays: built-in digits (plain or deformed), an image folder, an .npz, a python entry.

Everything becomes float32 images scaled to [0, 1], resized to `image_size`, normalised as the recipe
says, in the recipe's layout (NCHW or NHWC), with int64 labels, split train/val/test with a fixed seed
(stratified by class) plus a calibration subset drawn from train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import RecipeError
from edgecompress.recipe import DataSpec, resolve_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, model layout
    y: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DataBundle:
    train: Split
    val: Split
    test: Split
    calibration: Split
    num_classes: int
    class_names: list[str]
    layout: str
    sample_shape: tuple[int, ...]  # one input without the batch dimension, in `layout`
    mean: list[float] | None
    std: list[float] | None
    #: How raw pixels became [0, 1] before mean/std, e.g. "pixels / 255".
    pixel_scale: str = "pixels / 255"

    def describe(self) -> dict[str, Any]:
        """What an app must do to an image before feeding the exported model (recorded with artifacts)."""
        return {
            "layout": self.layout,
            "sample_shape": list(self.sample_shape),
            "dtype": "float32",
            "scale": f"{self.pixel_scale} (to [0, 1]), resized bilinearly, then (x - mean) / std",
            "mean": self.mean,
            "std": self.std,
            "class_names": self.class_names,
        }


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NHWC float [0, 1] -> NHWC float at (height, width), bilinear."""
    from PIL import Image

    h, w = size
    if images.shape[1:3] == (h, w):
        return images.astype(np.float32)
    out = np.empty((len(images), h, w, images.shape[3]), dtype=np.float32)
    for i, img in enumerate(images):
        for c in range(img.shape[2]):
            out[i, :, :, c] = np.asarray(
                Image.fromarray(img[:, :, c].astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
            )
    return np.clip(out, 0.0, 1.0)


def _to_nhwc01(x: np.ndarray, channels: int, where: str) -> np.ndarray:
    """Accept (N,H,W), (N,H,W,C) or (N,C,H,W) in uint8 or float; return float32 NHWC in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise RecipeError(
            f"{where}: images must have 3 or 4 dimensions (N,H,W[,C]), got shape {list(x.shape)}"
        )
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    x = x.astype(np.float32)
    if x.size and x.max() > 1.0:
        x = x / 255.0
    if x.shape[-1] != channels:
        if x.shape[-1] == 1:
            x = np.repeat(x, channels, axis=-1)
        else:
            x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]
    return x


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64), [str(i) for i in range(10)]


def _folder(path: Path, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise RecipeError(f"{path}: an image folder needs one subfolder per class; found none")
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(f) as im:
                    arr = np.asarray(
                        im.convert(mode).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32
                    )
                images.append(arr / 255.0)
                labels.append(label)
    if not images:
        raise RecipeError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class subfolders")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise RecipeError(
                    f"{path}: an .npz dataset needs arrays 'x' and 'y'; missing {', '.join(sorted(missing))}"
                )
            names = [str(n) for n in f["class_names"]] if "class_names" in f.files else None
            return f["x"], f["y"].astype(np.int64), names
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{path}: cannot read as .npz: {exc}") from None


def _python_entry(source: str, recipe_path: Path) -> Any:
    from edgecompress.entries import import_entry

    file_part, _, fn = source.rpartition(":")
    return import_entry(file_part, fn, recipe_path, key="data.dataset")[0]()


def load_data(spec: DataSpec, recipe_path: Path, *, seed: int) -> DataBundle:
    """Load, resize, normalise, lay out and split the dataset the recipe names."""
    names: list[str] | None
    pixel_scale = "pixels / 255 (float inputs already in [0, 1] are kept)"
    preset: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    if spec.dataset == "digits":
        x, y, names = _digits()
        pixel_scale = "pixels / 16 (scikit-learn digits are 0..16)"
    elif spec.dataset == "digits-deformed":
        from edgecompress.datasets_deformed import digits_deformed

        preset = digits_deformed(spec)
        x, y = preset["train"]
        names = [str(i) for i in range(10)]
        pixel_scale = "pixels / 255 (digits-deformed images are generated in [0, 1] and stored as 8 bits)"
    elif spec.dataset == "folder":
        x, y, names = _folder(resolve_path(spec.path or "", recipe_path), spec.channels, spec.image_size)
    elif spec.dataset == "npz":
        x, y, names = _npz(resolve_path(spec.path or "", recipe_path))
    elif ":" in spec.dataset:
        out = _python_entry(spec.dataset, recipe_path)
        if isinstance(out, dict):
            if not {"train", "test"} <= set(out):
                raise RecipeError(
                    f"data.dataset: {spec.dataset} returned a dict without 'train' and 'test' splits"
                )
            preset = {k: (np.asarray(v[0]), np.asarray(v[1], dtype=np.int64)) for k, v in out.items()}
            x, y = preset["train"]
        else:
            x, y = np.asarray(out[0]), np.asarray(out[1], dtype=np.int64)
        names = None
    else:
        raise RecipeError(
            f"data.dataset: unknown dataset '{spec.dataset}'; use digits, digits-deformed, folder, npz or "
            "'file.py:function'"
        )
    if len(y) == 0 or len(x) != len(y):
        raise RecipeError(
            f"data.dataset: '{spec.dataset}' gave {len(x)} images and {len(y)} labels; need a non-empty, equal number"
        )

    def prepare(images: np.ndarray) -> np.ndarray:
        arr = _resize(_to_nhwc01(images, spec.channels, f"data.dataset '{spec.dataset}'"), spec.image_size)
        if spec.normalize:
            arr = (arr - np.asarray(spec.normalize.mean, np.float32)) / np.asarray(
                spec.normalize.std, np.float32
            )
        return np.ascontiguousarray(
            arr.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else arr, dtype=np.float32
        )

    num_classes = 1 + max([int(y.max())] + [int(v[1].max()) for v in (preset or {}).values() if len(v[1])])
    rng = np.random.default_rng(seed)
    if preset:
        train = Split(prepare(preset["train"][0]), preset["train"][1])
        test = Split(prepare(preset["test"][0]), preset["test"][1])
        val = Split(prepare(preset["val"][0]), preset["val"][1]) if "val" in preset else None
        if val is None:
            tr, va = _split_indices(train.y, spec.split.val, seed)
            train, val = Split(train.x[tr], train.y[tr]), Split(train.x[va], train.y[va])
    else:
        xs = prepare(x)
        rest, test_idx = _split_indices(y, spec.split.test, seed)
        tr_rel, va_rel = _split_indices(y[rest], spec.split.val / (1 - spec.split.test), seed + 1)
        tr, va = rest[tr_rel], rest[va_rel]
        train, val, test = Split(xs[tr], y[tr]), Split(xs[va], y[va]), Split(xs[test_idx], y[test_idx])
    if min(len(train), len(val), len(test)) == 0:
        raise RecipeError(f"data.split: '{spec.dataset}' is too small to split ({len(y)} images)")
    calib_idx = rng.permutation(len(train))[: spec.split.calibration]
    return DataBundle(
        train=train,
        val=val,
        test=test,
        calibration=Split(train.x[calib_idx], train.y[calib_idx]),
        num_classes=num_classes,
        class_names=names or [str(i) for i in range(num_classes)],
        layout=spec.layout,
        sample_shape=tuple(train.x.shape[1:]),
        mean=list(spec.normalize.mean) if spec.normalize else None,
        std=list(spec.normalize.std) if spec.normalize else None,
        pixel_scale=pixel_scale,
    )


def _split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices; stratified when every class has at least two examples."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and len(y) * fraction >= len(counts[counts > 0]) else None
    a, b = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(a), np.sort(b)
