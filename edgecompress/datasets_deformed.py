"""`dataset: digits-deformed`: scikit-learn's digits made hard enough that compression methods part ways.

The 1,797 8x8 digits that ship with scikit-learn are too easy: a small CNN reaches about 99%, so a
pruned and quantized model looks as good as the original whatever the method. In the spirit of InfiMNIST
(Loosli, Canu & Bottou, "Training invariant support vector machines using selective sampling", 2007),
this module renders each digit many times under seeded random transformations:

1. the 8x8 digit is upsampled smoothly (cubic spline) into a box of 80% of the image's shorter side;
2. a random affine map: rotation, scale, aspect, shear and translation;
3. an elastic deformation (Simard, Steinkraus & Platt, "Best practices for convolutional neural networks
   applied to visual document analysis", 2003): a random displacement field smoothed by a Gaussian, its
   width and size in proportion to the image;
4. thicker or thinner strokes (a blend towards a grey dilation or erosion);
5. background clutter: line segments, blobs, and a faint fragment of another digit of the same split
   entering from the edge;
6. random brightness and contrast, Gaussian noise, and for 3 channels random foreground and background
   colours; images are rounded to 8 bits, so a cached dataset and a fresh one are the same arrays.

Train, validation and test are rendered from disjoint *source* digits (a seeded, stratified 60/15/25
split of the 1,797), so a test image is never a deformation of a digit seen in training. Every split is
class-balanced and uses its source digits evenly.

Everything is numpy + scipy.ndimage, vectorised over chunks of images (one `map_coordinates` call per
chunk); each chunk has its own random generator seeded from (seed, split, chunk), so the images depend on
the seed and the sizes only. The result is cached as a compressed .npz under
`<cache root>/datasets/digits-deformed-<hash>.npz` (`edgecompress.cache.cache_root()`), the hash covering
the generator's version and parameters, the seed, the sizes, the image size and the channels; it is
written atomically, and an unreadable cache file is generated again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecompress.cache import cache_root
from edgecompress.errors import RecipeError
from edgecompress.recipe import MIN_DEFORMED_SPLIT, DataSpec, DeformedSpec

#: Bumped whenever a change to the code makes different images from the same parameters.
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
#: Fractions of the 1,797 source digits each split renders from (stratified by class).
SOURCE_FRACTIONS = {"train": 0.60, "val": 0.15, "test": 0.25}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: Images rendered per vectorised step (and per random generator): bounds the memory of a step.
CHUNK = 512
NUM_CLASSES = 10


@dataclass(frozen=True)
class Strength:
    """How strongly images are deformed; lengths are fractions of the image's shorter side.

    Calibrated on the default sizes at 32x32: the quickstart CNN (examples/models.py:quickstart_cnn, 15
    epochs of the `train` stage) reaches 94.2% test, 92.6% validation accuracy (100% on plain digits),
    while a 1-nearest-neighbour on raw pixels drops from 98% to below 50%: hard enough that compression
    methods part ways, easy enough that a good model is clearly better than a bad one. Part of the cache
    key: changing a value makes new images (and a new cache file).
    """

    box: float = 0.8  # side of the digit's box at scale 1
    rotation_deg: float = 15.0  # +- uniform
    scale: tuple[float, float] = (0.8, 1.15)
    aspect: float = 0.12  # +- relative stretch of width against height
    shear: float = 0.25  # +- shear factor
    shift: float = 0.1  # +- translation per axis
    elastic_rms: float = 0.05  # RMS displacement per axis
    elastic_sigma: float = 0.14  # Gaussian smoothing of the displacement field
    thickness: tuple[float, float] = (-0.7, 1.0)  # blend towards erosion (<0) or dilation (>0)
    fragment_p: float = 0.5  # chance of a fragment of another digit entering from the edge
    fragment_amp: tuple[float, float] = (0.3, 0.7)
    line_p: float = 0.35  # chance of each of two line segments
    line_amp: tuple[float, float] = (0.25, 0.6)
    blob_p: float = 0.3  # chance of each of three blobs
    blob_amp: tuple[float, float] = (0.2, 0.5)
    background: tuple[float, float] = (0.0, 0.3)
    foreground: tuple[float, float] = (0.6, 1.0)
    colour_jitter: float = 0.25  # 3 channels: +- per-channel departure of the colours from grey
    noise: tuple[float, float] = (0.01, 0.08)  # standard deviation of the Gaussian noise


STRENGTH = Strength()


# ----------------------------------------------------------------------------------------- sources


def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (1797, 8, 8) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def source_split(seed: int, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Indices into scikit-learn's digits each split renders from: disjoint, stratified, seeded, sorted."""
    y = _source_digits()[1] if labels is None else labels
    rng = np.random.default_rng([seed, 99])
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test = round(SOURCE_FRACTIONS["test"] * len(members))
        n_val = round(SOURCE_FRACTIONS["val"] * len(members))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _canvases(images: np.ndarray, box: int) -> tuple[np.ndarray, float]:
    """Each 8x8 digit upsampled (cubic spline, clipped) to box x box inside a zero border; and its centre."""
    from scipy.ndimage import zoom

    pad = 2
    side = box + 2 * pad
    out = np.zeros((len(images), side, side), np.float32)
    factor = box / images.shape[1]
    for i, img in enumerate(images):
        up = zoom(img, factor, order=3, mode="grid-constant", grid_mode=True)
        out[i, pad : pad + box, pad : pad + box] = np.clip(up[:box, :box], 0.0, 1.0)
    return out, (side - 1) / 2.0


def _balanced_sources(rng: np.random.Generator, sources: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """n source indices: classes as equal as n allows, in random order, each class's digits used evenly."""
    classes = np.arange(n) % NUM_CLASSES
    rng.shuffle(classes)
    picks = np.empty(n, np.int64)
    for c in range(NUM_CLASSES):
        where = np.flatnonzero(classes == c)
        pool = sources[y[sources] == c]
        rounds = max(1, -(-len(where) // len(pool)))
        picks[where] = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[: len(where)]
    return picks


# ---------------------------------------------------------------------------------------- rendering


def _gaussian_field_std(sigma: float) -> float:
    """Standard deviation of unit white noise after scipy's Gaussian filter (truncate 4) in 2-D."""
    radius = int(4.0 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    return float((w**2).sum())  # 2-D separable: sqrt of (sum w^2)^2


def _warp(
    canvases: np.ndarray,
    centre: float,
    src: np.ndarray,
    size: tuple[int, int],
    *,
    angle: np.ndarray,
    scale: np.ndarray,
    aspect: np.ndarray,
    shear: np.ndarray,
    shift: np.ndarray,
    displacement: np.ndarray | None,
) -> np.ndarray:
    """Render canvases[src] at `size` under per-image affine maps (and displacement fields): (n, H, W).

    An output pixel p samples the canvas at centre + A^-1 (p + d(p) - image centre - shift), with
    A = rotation @ shear @ diag(scale / aspect, scale * aspect): one bilinear `map_coordinates` call on the
    stack of canvases, the canvas index an exact integer coordinate.
    """
    from scipy.ndimage import map_coordinates

    h, w = size
    n = len(src)
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2) on (y, x)
    shr = np.zeros((n, 2, 2))
    shr[:, 0, 0] = shr[:, 1, 1] = 1.0
    shr[:, 1, 0] = shear
    stretch = np.zeros((n, 2, 2))
    stretch[:, 0, 0] = scale / aspect
    stretch[:, 1, 1] = scale * aspect
    inv = np.linalg.inv(rot @ shr @ stretch)
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2.0, np.arange(w) - (w - 1) / 2.0, indexing="ij")
    py = yy[None] - shift[:, 0, None, None]
    px = xx[None] - shift[:, 1, None, None]
    if displacement is not None:
        py = py + displacement[:, 0]
        px = px + displacement[:, 1]
    sy = centre + inv[:, 0, 0, None, None] * py + inv[:, 0, 1, None, None] * px
    sx = centre + inv[:, 1, 0, None, None] * py + inv[:, 1, 1, None, None] * px
    si = np.broadcast_to(src[:, None, None].astype(np.float64), sy.shape)
    out = map_coordinates(canvases, np.stack([si, sy, sx]), order=1, mode="grid-constant", cval=0.0)
    return out.astype(np.float32)


def _segments(
    rng: np.random.Generator, n: int, size: tuple[int, int], short: float, st: Strength
) -> np.ndarray:
    """Up to two anti-aliased line segments per image, max-combined: (n, H, W)."""
    h, w = size
    k = 2
    a = rng.uniform(-0.1, 1.1, (n, k, 2)) * [h, w]
    b = rng.uniform(-0.1, 1.1, (n, k, 2)) * [h, w]
    half = rng.uniform(0.4, 1.0, (n, k)) * short / 32.0
    amp = rng.uniform(*st.line_amp, (n, k)) * (rng.random((n, k)) < st.line_p)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    p = np.stack([yy, xx], -1)[None, None]  # (1, 1, H, W, 2)
    ab = (b - a)[:, :, None, None]
    ap = p - a[:, :, None, None]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-6), 0.0, 1.0)
    dist = np.linalg.norm(ap - t[..., None] * ab, axis=-1)
    ink = np.clip(half[..., None, None] + 0.5 - dist, 0.0, 1.0) * amp[..., None, None]
    return ink.max(axis=1).astype(np.float32)


def _blobs(rng: np.random.Generator, n: int, size: tuple[int, int], short: float, st: Strength) -> np.ndarray:
    """Up to three Gaussian blobs per image, max-combined: (n, H, W)."""
    h, w = size
    k = 3
    cy = rng.uniform(0, h, (n, k))[..., None, None]
    cx = rng.uniform(0, w, (n, k))[..., None, None]
    r = rng.uniform(0.03, 0.09, (n, k))[..., None, None] * short
    amp = (rng.uniform(*st.blob_amp, (n, k)) * (rng.random((n, k)) < st.blob_p))[..., None, None]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ink = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return ink.max(axis=1).astype(np.float32)


def _render_chunk(
    rng: np.random.Generator,
    canvases: np.ndarray,
    centre: float,
    src: np.ndarray,
    others: np.ndarray,
    size: tuple[int, int],
    channels: int,
    st: Strength,
) -> np.ndarray:
    """Deformed renderings of canvases[src] with clutter from canvases[others]: uint8 (n, H, W, channels)."""
    from scipy.ndimage import gaussian_filter, grey_dilation, grey_erosion

    n = len(src)
    h, w = size
    short = float(min(h, w))

    # the digit: affine map and elastic displacement field (Simard et al. 2003)
    sigma = st.elastic_sigma * short
    field = gaussian_filter(rng.standard_normal((n, 2, h, w)), sigma=(0, 0, sigma, sigma), mode="reflect")
    field *= st.elastic_rms * short / _gaussian_field_std(sigma)
    digit = _warp(
        canvases,
        centre,
        src,
        size,
        angle=np.deg2rad(rng.uniform(-st.rotation_deg, st.rotation_deg, n)),
        scale=rng.uniform(*st.scale, n),
        aspect=np.exp(rng.uniform(-st.aspect, st.aspect, n)),
        shear=rng.uniform(-st.shear, st.shear, n),
        shift=rng.uniform(-st.shift, st.shift, (n, 2)) * short,
        displacement=field,
    )

    # stroke thickness: a blend towards the grey dilation (thicker) or erosion (thinner)
    k = max(2, round(short / 16))
    blend = rng.uniform(*st.thickness, n)[:, None, None]
    thick = grey_dilation(digit, size=(1, k, k))
    thin = grey_erosion(digit, size=(1, k, k))
    digit = np.where(blend >= 0, digit + blend * (thick - digit), digit + (-blend) * (thin - digit))

    # clutter: a fragment of another digit of the split entering from the edge, lines, blobs
    direction = rng.uniform(0, 2 * np.pi, n)
    reach = rng.uniform(0.55, 0.75, n)[:, None] * np.array([h, w], np.float64)  # per axis: off the edge
    fragment = _warp(
        canvases,
        centre,
        others,
        size,
        angle=np.deg2rad(rng.uniform(-30, 30, n)),
        scale=rng.uniform(0.7, 1.1, n),
        aspect=np.ones(n),
        shear=np.zeros(n),
        shift=np.stack([np.sin(direction), np.cos(direction)], -1) * reach,
        displacement=None,
    )
    fragment *= (rng.uniform(*st.fragment_amp, n) * (rng.random(n) < st.fragment_p))[:, None, None]
    clutter = np.maximum(
        fragment, np.maximum(_segments(rng, n, size, short, st), _blobs(rng, n, size, short, st))
    )
    ink = np.clip(np.maximum(digit, clutter), 0.0, 1.0)[..., None]  # (n, H, W, 1)

    # brightness, contrast, colours, noise
    back = rng.uniform(*st.background, (n, 1, 1, 1))
    fore = rng.uniform(*st.foreground, (n, 1, 1, 1))
    if channels == 3:
        back = np.clip(back + rng.uniform(-st.colour_jitter, st.colour_jitter, (n, 1, 1, 3)), 0.0, 1.0)
        fore = np.clip(fore + rng.uniform(-st.colour_jitter, st.colour_jitter, (n, 1, 1, 3)), 0.0, 1.0)
    img = back + (fore - back) * ink
    img = img + rng.standard_normal((n, h, w, channels)) * rng.uniform(*st.noise, (n, 1, 1, 1))
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _generate_uint8(
    sizes: Mapping[str, int], *, image_size: tuple[int, int], channels: int, seed: int, st: Strength
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split as (uint8 NHWC images, int64 labels); no cache."""
    images8, y = _source_digits()
    size = (int(image_size[0]), int(image_size[1]))
    canvases, centre = _canvases(images8, max(2, round(st.box * min(size))))
    sources = source_split(seed, y)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        n = int(sizes[split])
        pool = sources[split]
        src = _balanced_sources(np.random.default_rng([seed, _SPLIT_IDS[split], 0]), pool, y, n)
        x = np.empty((n, *size, channels), np.uint8)
        for start in range(0, n, CHUNK):
            part = src[start : start + CHUNK]
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], 1 + start // CHUNK])
            others = rng.choice(pool, len(part))
            x[start : start + len(part)] = _render_chunk(
                rng, canvases, centre, part, others, size, channels, st
            )
        out[split] = (x, y[src])
    return out


def plain_digits(images: np.ndarray, image_size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """8x8 digits in [0, 1] rendered as digits-deformed places them, without any deformation or clutter.

    float32 NHWC in [0, 1]: the reference against which the deformations are measured (tests).
    """
    size = (int(image_size[0]), int(image_size[1]))
    canvases, centre = _canvases(np.asarray(images, np.float32), max(2, round(STRENGTH.box * min(size))))
    n = len(canvases)
    x = _warp(
        canvases,
        centre,
        np.arange(n),
        size,
        angle=np.zeros(n),
        scale=np.ones(n),
        aspect=np.ones(n),
        shear=np.zeros(n),
        shift=np.zeros((n, 2)),
        displacement=None,
    )
    return np.repeat(np.clip(x, 0.0, 1.0)[..., None], channels, axis=-1)


# -------------------------------------------------------------------------------------------- cache


def _key(sizes: Mapping[str, int], image_size: tuple[int, int], channels: int, seed: int) -> dict:
    """Everything the images depend on, as plain JSON values (tuples become lists, as read back)."""
    key = {
        "generator": GENERATOR_VERSION,
        "strength": asdict(STRENGTH),
        "seed": int(seed),
        "sizes": {s: int(sizes[s]) for s in SPLITS},
        "image_size": [int(v) for v in image_size],
        "channels": int(channels),
    }
    return json.loads(json.dumps(key, sort_keys=True))


def cache_path(sizes: Mapping[str, int], image_size: tuple[int, int], channels: int, seed: int) -> Path:
    """`<cache root>/datasets/digits-deformed-<hash>.npz` for these parameters (the file may not exist)."""
    key = json.dumps(_key(sizes, image_size, channels, seed), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "datasets" / f"digits-deformed-{digest}.npz"


def _read_cache(path: Path, key: dict) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The cached splits, or None when the file is missing, unreadable or for other parameters."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["key"])) != key:
                return None
            out = {s: (f[f"x_{s}"], f[f"y_{s}"].astype(np.int64)) for s in SPLITS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    size, channels = tuple(key["image_size"]), key["channels"]
    for s, (x, y) in out.items():
        if x.dtype != np.uint8 or x.shape != (key["sizes"][s], *size, channels) or y.shape != (len(x),):
            return None
    return out


def _write_cache(path: Path, key: dict, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write atomically (a temporary file beside it, then os.replace): never a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            arrays = {f"{k}_{s}": v for s, (x, y) in splits.items() for k, v in (("x", x), ("y", y))}
            np.savez_compressed(f, key=np.array(json.dumps(key, sort_keys=True)), **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache file is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(
    sizes: Mapping[str, int], *, image_size: tuple[int, int], channels: int, seed: int, cache: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits-deformed splits {"train", "val", "test"}: (float32 NHWC images in [0, 1], int64 labels).

    Read from the cache when it holds these parameters; otherwise generated (seconds for the defaults)
    and, with `cache`, stored there. A cache that cannot be written (read-only home) is not an error.
    """
    for split in SPLITS:
        if split not in sizes:
            raise RecipeError(f"data.deformed.{split}: missing; give the number of {split} images")
        if int(sizes[split]) < MIN_DEFORMED_SPLIT:
            raise RecipeError(
                f"data.deformed.{split}: needs at least {MIN_DEFORMED_SPLIT} images so that every digit "
                f"class appears; got {sizes[split]}"
            )
    if int(seed) < 0:
        raise RecipeError(f"data.deformed.seed: must be 0 or more; got {seed}")
    if channels not in (1, 3):
        raise RecipeError(f"data.channels: digits-deformed renders 1 or 3 channels; got {channels}")
    key = _key(sizes, image_size, channels, seed)
    path = cache_path(sizes, image_size, channels, seed)
    splits = _read_cache(path, key) if cache else None
    if splits is None:
        splits = _generate_uint8(sizes, image_size=image_size, channels=channels, seed=seed, st=STRENGTH)
        if cache:
            with contextlib.suppress(OSError):  # a read-only cache folder only costs the next build time
                _write_cache(path, key, splits)
    return {s: (x.astype(np.float32) / np.float32(255.0), y) for s, (x, y) in splits.items()}


def digits_deformed(spec: DataSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The digits-deformed splits a recipe's `data:` asks for (see `generate`).

    Sizes and seed come from `data.deformed` (its defaults when absent), the image size and channels from
    `data.image_size` and `data.channels`.
    """
    d = spec.deformed or DeformedSpec()
    return generate(
        {"train": d.train, "val": d.val, "test": d.test},
        image_size=spec.image_size,
        channels=spec.channels,
        seed=d.seed,
    )
