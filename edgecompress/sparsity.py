"""Weight sparsity patterns, framework-free (numpy): the masks `prune` makes and the checks run on exported files.

Every weight is seen in one canonical layout, `[out, in_per_group, kh, kw]` (a linear layer is `[out, in, 1,
1]`), the layout PyTorch stores and `exporters.weights_readback` returns from `.tflite` and OpenVINO files, so
one function decides a pattern and the same one checks it in the artifact. Patterns:

- unstructured: the smallest magnitudes (Global MP, Gupta et al. 2022: one threshold across layers, each
  layer keeping at least `min_density` of its weights against layer collapse; or a sparsity per layer);
- block `[r, c]`: r output x c input weights at one kernel position, ranked by their RMS (the norm divided by
  the square root of the count, so partial blocks of a padded edge rank fairly);
- nm: at most n non-zeros in every m consecutive input channels at one (output, position) — the 2:4 of
  NVIDIA's sparse tensor cores; in a `.tflite` (OHWI) those m weights are consecutive in memory;
- kernel_pattern: each 3x3 kernel keeps the positions of one of a few patterns of k positions, chosen from
  the weights as the most frequent top-k shapes (PatDNN, Niu et al. 2020), with optional connectivity
  pruning (the weakest whole kernels removed).

Gradual pruning (Zhu & Gupta 2017) asks a pattern at a fraction of its sparsity: `keep_mask(...,
fraction=f)` zeroes the weakest f of what the full pattern zeroes (whole blocks for blocks), so every
intermediate mask is a sub-pattern of the final one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("unstructured", "block", "nm", "kernel_pattern")
#: prune `method` -> pattern kind.
METHOD_KINDS = {"magnitude": "unstructured", "block": "block", "nm": "nm", "kernel_pattern": "kernel_pattern"}


@dataclass(frozen=True)
class LayerPattern:
    """What one layer's zeros follow (JSON-able: it travels in the run notes and the report)."""

    kind: str
    sparsity: (
        float  # the fraction of the layer's weights zeroed (nm: 1 - n/m; kernel_pattern: with connectivity)
    )
    block: tuple[int, int] = (1, 1)
    pad: bool = False  # block: partial blocks at the edges (else the layer is left dense)
    n: int = 0
    m: int = 0
    patterns: tuple[tuple[int, ...], ...] = ()  # kernel_pattern: the kept positions (0..8, row-major) of each
    connectivity: float = 0.0  # kernel_pattern: fraction of whole kernels removed

    def describe(self) -> str:
        if self.kind == "block":
            return f"block {self.block[0]}x{self.block[1]}"
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "kernel_pattern":
            k = len(self.patterns[0]) if self.patterns else 0
            extra = f", {self.connectivity:.0%} kernels removed" if self.connectivity else ""
            return f"{len(self.patterns)} kernel patterns of {k}/9{extra}"
        return "unstructured"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (numpy scalars would break report.json and the stage checkpoints)."""
        return {
            "kind": self.kind,
            "sparsity": float(self.sparsity),
            "block": [int(b) for b in self.block],
            "pad": bool(self.pad),
            "n": int(self.n),
            "m": int(self.m),
            "patterns": [[int(i) for i in p] for p in self.patterns],
            "connectivity": float(self.connectivity),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerPattern:
        data = dict(data)
        data["block"] = tuple(data.get("block", (1, 1)))
        data["patterns"] = tuple(tuple(p) for p in data.get("patterns", ()))
        return cls(**data)


@dataclass(frozen=True)
class PatternCheck:
    """A weight tensor checked against its pattern (from the model or read back from an artifact)."""

    sparsity: float  # fraction of exact zeros
    holds: bool
    detail: str = ""


def canonical(weight: np.ndarray) -> np.ndarray:
    """[out, in, kh, kw] for conv weights (any rank >= 2: [out, in] gets two unit dims)."""
    w = np.asarray(weight)
    if w.ndim == 2:
        return w[:, :, None, None]
    if w.ndim == 3:
        return w[:, :, :, None]
    return w


def not_applicable(shape: tuple[int, ...], groups: int, pattern: LayerPattern) -> str | None:
    """Why `pattern` cannot apply to a weight of canonical `shape` (None when it can)."""
    out, inp, kh, kw = shape
    if pattern.kind == "nm":
        if groups > 1 and inp == 1:
            return "depthwise conv (one input channel per kernel: no input-channel groups for N:M)"
        if inp % pattern.m:
            return f"{inp} input channels per group are not divisible by m = {pattern.m}"
    if pattern.kind == "block" and not pattern.pad:
        r, c = pattern.block
        if out % r or inp % c:
            return f"block {r}x{c} does not divide the weight's {out} outputs x {inp} inputs"
    if pattern.kind == "block" and pattern.block[1] > 1 and inp == 1:
        return f"one input channel per kernel: a block {pattern.block[0]}x{pattern.block[1]} spans inputs"
    if pattern.kind == "kernel_pattern" and (kh, kw) != (3, 3):
        return f"{kh}x{kw} kernels (kernel patterns apply to 3x3 kernels)"
    return None


# ------------------------------------------------------------------------------------------------ scoring


def _block_scores(w: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """RMS of every r x c block over (out, in) at each kernel position: [O/r, I/c, kh*kw] (edges padded)."""
    r, c = block
    o, i = w.shape[:2]
    w3 = np.abs(w.reshape(o, i, -1)).astype(np.float64) ** 2
    po, pi = -o % r, -i % c
    counts = np.pad(np.ones((o, i)), ((0, po), (0, pi)))
    w3 = np.pad(w3, ((0, po), (0, pi), (0, 0)))
    shaped = w3.reshape((o + po) // r, r, (i + pi) // c, c, -1).sum(axis=(1, 3))
    count = counts.reshape((o + po) // r, r, (i + pi) // c, c).sum(axis=(1, 3))
    return np.sqrt(shaped / count[:, :, None])


def unit_scores(w: np.ndarray, pattern: LayerPattern) -> np.ndarray:
    """The scores a global ranking compares: |w| per weight (unstructured) or per block (block)."""
    w = canonical(w)
    if pattern.kind == "block":
        return _block_scores(w, pattern.block).ravel()
    return np.abs(w).ravel().astype(np.float64)


def allocate_global(
    weights: dict[str, np.ndarray], patterns: dict[str, LayerPattern], sparsity: float, min_density: float
) -> dict[str, float]:
    """Global MP: the one threshold that zeroes `sparsity` of all these layers' weights, each layer keeping
    at least `min_density` of them; returns the resulting per-layer sparsities."""
    sizes = {n: canonical(w).size for n, w in weights.items()}
    scores = {n: np.sort(unit_scores(w, patterns[n])) for n, w in weights.items()}
    units = {n: len(s) for n, s in scores.items()}
    total = sum(sizes.values())
    goal = sparsity * total

    def zeroed(t: float) -> dict[str, float]:
        out = {}
        for n, s in scores.items():
            cut = int(np.searchsorted(s, t, side="left"))
            out[n] = min(cut / units[n], 1.0 - min_density)
        return out

    every = np.unique(np.concatenate(list(scores.values())))
    lo, hi = 0, len(every) - 1
    while lo < hi:  # smallest threshold that zeroes at least the goal
        mid = (lo + hi) // 2
        z = zeroed(float(every[mid]))
        if sum(z[n] * sizes[n] for n in z) >= goal:
            hi = mid
        else:
            lo = mid + 1
    return zeroed(float(every[lo]) if len(every) else 0.0)


# ------------------------------------------------------------------------------------------------ masks


def choose_kernel_patterns(weights: list[np.ndarray], k: int, count: int) -> tuple[tuple[int, ...], ...]:
    """The `count` most frequent top-k position sets of the 3x3 kernels of `weights` (PatDNN's pattern
    set), ties broken by their summed magnitude; positions are row-major 0..8."""
    tally: dict[tuple[int, ...], float] = {}
    hits: dict[tuple[int, ...], int] = {}
    for w in weights:
        flat = np.abs(canonical(w).reshape(-1, 9))
        flat = flat[flat.sum(axis=1) > 0]
        top = np.sort(np.argsort(-flat, axis=1, kind="stable")[:, :k], axis=1)
        for row, mags in zip((tuple(int(i) for i in r) for r in top), flat, strict=True):
            hits[row] = hits.get(row, 0) + 1
            tally[row] = tally.get(row, 0.0) + float(mags[list(row)].sum())
    ranked = sorted(hits, key=lambda p: (-hits[p], -tally[p]))
    chosen = ranked[:count]
    for extra in itertools.combinations(range(9), k):  # too few distinct shapes seen: fill in order
        if len(chosen) >= count:
            break
        if extra not in chosen:
            chosen.append(extra)
    return tuple(chosen)


def keep_mask(weight: np.ndarray, pattern: LayerPattern, *, fraction: float = 1.0) -> np.ndarray:
    """The boolean keep-mask (shape of `weight`) of `pattern`; `fraction` < 1 zeroes only the weakest that
    fraction of what the full pattern zeroes (gradual pruning)."""
    w = canonical(weight)
    shape = w.shape
    mags = np.abs(w).astype(np.float64)
    if pattern.kind == "unstructured":
        keep = _keep_smallest_out(mags.ravel(), pattern.sparsity * fraction).reshape(shape)
    elif pattern.kind == "block":
        scores = _block_scores(w, pattern.block)
        blocks = _keep_smallest_out(scores.ravel(), pattern.sparsity * fraction).reshape(scores.shape)
        keep = _expand_block_mask(blocks, shape, pattern.block)
    elif pattern.kind == "nm":
        o, i = shape[:2]
        m, n = pattern.m, pattern.n
        grouped = mags.reshape(o, i // m, m, -1)
        rank = np.argsort(np.argsort(-grouped, axis=2, kind="stable"), axis=2, kind="stable")
        keep = (rank < n).reshape(shape)
    elif pattern.kind == "kernel_pattern":
        keep = _kernel_pattern_keep(mags, pattern)
    else:
        raise ValueError(f"unknown sparsity pattern kind {pattern.kind!r}")
    if fraction < 1.0 and pattern.kind in ("nm", "kernel_pattern"):
        keep = _partial(mags, keep, fraction)
    return keep.reshape(np.shape(weight))


def _expand_block_mask(blocks: np.ndarray, shape: tuple[int, ...], block: tuple[int, int]) -> np.ndarray:
    """[O/r, I/c, S] block keep-mask -> [O, I, kh, kw] weight keep-mask."""
    r, c = block
    full = np.repeat(np.repeat(blocks, r, axis=0), c, axis=1)[: shape[0], : shape[1]]
    return full.reshape(shape)


def _keep_smallest_out(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask dropping the round(sparsity * n) smallest scores (stable: earlier ones first on ties)."""
    drop = round(sparsity * scores.size)
    keep = np.ones(scores.size, dtype=bool)
    if drop > 0:
        keep[np.argsort(scores, kind="stable")[:drop]] = False
    return keep


def _kernel_pattern_keep(mags: np.ndarray, pattern: LayerPattern) -> np.ndarray:
    shape = mags.shape
    flat = mags.reshape(-1, 9) ** 2
    masks = np.zeros((len(pattern.patterns), 9), dtype=bool)
    for j, p in enumerate(pattern.patterns):
        masks[j, list(p)] = True
    kept = flat @ masks.T.astype(np.float64)  # [kernels, patterns]: the energy each pattern keeps
    choice = kept.argmax(axis=1)
    keep = masks[choice]
    if pattern.connectivity > 0:
        alive = _keep_smallest_out(kept.max(axis=1), pattern.connectivity)
        keep &= alive[:, None]
    return keep.reshape(shape)


def _partial(mags: np.ndarray, full_keep: np.ndarray, fraction: float) -> np.ndarray:
    """Of the weights `full_keep` drops, drop only the weakest `fraction` (by magnitude)."""
    dropped = np.flatnonzero(~full_keep.ravel())
    count = round(fraction * dropped.size)
    keep = np.ones(full_keep.size, dtype=bool)
    if count:
        order = np.argsort(mags.ravel()[dropped], kind="stable")[:count]
        keep[dropped[order]] = False
    return keep.reshape(full_keep.shape)


# ------------------------------------------------------------------------------------------------ checks


def check(weight: np.ndarray, pattern: LayerPattern) -> PatternCheck:
    """Does `weight` (from the model, or read back from an artifact) hold `pattern`? Extra zeros (small
    weights rounded to 0 in int8) never break a pattern; a missing zero does."""
    w = canonical(weight)
    zero = w == 0
    sparsity = float(zero.mean()) if w.size else 0.0
    if pattern.kind == "unstructured":
        need = pattern.sparsity - 0.5 / max(w.size, 1)
        return PatternCheck(
            sparsity, sparsity >= need, f"{sparsity:.1%} zeros (asked {pattern.sparsity:.1%})"
        )
    if pattern.kind == "block":
        r, c = pattern.block
        o, i = w.shape[:2]
        nz = np.pad(~zero.reshape(o, i, -1), ((0, -o % r), (0, -i % c), (0, 0)))
        blocks = nz.reshape(nz.shape[0] // r, r, nz.shape[1] // c, c, -1).any(axis=(1, 3))
        empty, asked = int((~blocks).sum()), round(pattern.sparsity * blocks.size)
        return PatternCheck(
            sparsity, empty >= asked, f"{empty} of {blocks.size} blocks empty (asked {asked})"
        )
    if pattern.kind == "nm":
        o, i = w.shape[:2]
        counts = (~zero).reshape(o, i // pattern.m, pattern.m, -1).sum(axis=2)
        worst = int(counts.max()) if counts.size else 0
        bad = int((counts > pattern.n).sum())
        return PatternCheck(
            sparsity, bad == 0, f"at most {worst} non-zeros per {pattern.m} ({bad} groups over {pattern.n})"
        )
    if pattern.kind == "kernel_pattern":
        nz = (~zero).reshape(-1, 9)
        allowed = np.zeros((len(pattern.patterns), 9), dtype=bool)
        for j, p in enumerate(pattern.patterns):
            allowed[j, list(p)] = True
        fits = (nz[:, None, :] & ~allowed[None]).any(axis=2)  # [kernels, patterns]: outside the pattern
        bad = int(fits.all(axis=1).sum())
        empty = int((~nz.any(axis=1)).sum())
        asked = round(pattern.connectivity * len(nz))
        return PatternCheck(
            sparsity,
            bad == 0 and empty >= asked,
            f"{bad} kernels outside the {len(pattern.patterns)} patterns, {empty} empty kernels (asked {asked})",
        )
    raise ValueError(f"unknown sparsity pattern kind {pattern.kind!r}")


#: Stages whose training holds a sparsity plan's zeros through `fit` (quantize's QAT holds every zero itself).
TRAINING_STAGES = ("train", "distill")


def training_plan(
    notes: dict[int, dict[str, Any]], stage_types: list[str], current: int
) -> dict[str, Any] | None:
    """The sparsity plan (a prune stage's `sparsity_plan` note) the training stage at index `current` holds: the
    latest before it, with `ramp` True when this is the first train/distill after a polynomial one."""
    for i in range(current - 1, -1, -1):
        plan = notes.get(i, {}).get("sparsity_plan")
        if plan is not None:
            first = next(
                (j for j in range(i + 1, len(stage_types)) if stage_types[j] in TRAINING_STAGES), None
            )
            return {**plan, "ramp": plan["schedule"] == "polynomial" and first == current}
    return None


def latest_plan(notes: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The sparsity plan of the build's last pattern-sparsity prune stage (None: there is none)."""
    for i in sorted(notes, reverse=True):
        if i >= 0 and "sparsity_plan" in notes[i]:
            return notes[i]["sparsity_plan"]
    return None


def sparsity_rows(weights: dict[str, np.ndarray], plan: dict[str, Any]) -> tuple[list[dict[str, str]], float]:
    """Per sparse layer of `plan`: shape, pattern, sparsity asked and held, whether the pattern holds; and the
    fraction of zeros over every conv/linear weight of `weights` (the adapter's `weights(model)`)."""
    rows = []
    for name, data in plan["layers"].items():
        w = weights[name]
        pattern = LayerPattern.from_json(data)
        result = check(w, pattern)
        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, w.shape)),
                "pattern": pattern.describe(),
                "asked": f"{pattern.sparsity:.1%}",
                "sparsity": f"{result.sparsity:.1%}",
                "holds": "yes" if result.holds else f"NO ({result.detail})",
            }
        )
    total = sum(w.size for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return rows, zeros / max(total, 1)


def note_sparsity(ctx: Any, weights: dict[str, np.ndarray], plan: dict[str, Any]) -> None:
    """The current stage's notes `sparse_layers` and `weight_sparsity`, and one console line."""
    rows, fraction = sparsity_rows(weights, plan)
    ctx.note("sparse_layers", rows)
    ctx.note("weight_sparsity", round(fraction, 4))
    broken = [r["layer"] for r in rows if r["holds"] != "yes"]
    ctx.ui.info(
        f"{plan['method']} sparsity on {len(rows)} layers: {fraction:.1%} of the conv/linear weights zero"
        + (f"; the pattern does NOT hold in {', '.join(broken)}" if broken else "; every pattern holds")
    )


def kernel_pattern_sparsity(k: int, connectivity: float) -> float:
    return 1.0 - (k / 9.0) * (1.0 - connectivity)


def connectivity_for(sparsity: float, k: int) -> float:
    """The fraction of whole kernels to remove so that k-of-9 patterns reach `sparsity` (< 0: unreachable)."""
    return 1.0 - (1.0 - sparsity) * 9.0 / k


def pattern_count_limit(k: int) -> int:
    return math.comb(9, k)


#: Mask updates over a polynomial ramp.
RAMP_UPDATES = 32


class MaskRamp:
    """When the masks of one fit are updated, and to which fraction of each layer's planned sparsity (Zhu &
    Gupta 2017, cubic: s_t = s_f (1 - (1 - t/T)^3)): the ramp ends before the last epoch when there are several
    (so the best-epoch choice sees full-sparsity epochs only) and updates `RAMP_UPDATES` times. Without `ramp`
    in the plan it never updates (the zeros are only held)."""

    def __init__(self, plan: dict[str, Any], *, steps: int, steps_per_epoch: int) -> None:
        import math

        self.end = 0
        if plan.get("ramp"):
            epochs = max(steps // max(steps_per_epoch, 1), 1)
            self.end = max(steps - steps_per_epoch if epochs > 1 else steps, 1)
        count = min(RAMP_UPDATES, self.end)
        self.updates = sorted({math.ceil(k * self.end / count) for k in range(1, count + 1)}) if count else []

    def settled(self, step: int) -> bool:
        """Whether the weights are at the plan's full sparsity from `step` on."""
        return step >= self.end

    def fraction(self, step: int) -> float | None:
        """The fraction of the planned sparsity to update the masks to after `step`, or None (no update)."""
        if not self.updates or step != self.updates[0]:
            return None
        self.updates.pop(0)
        return 1.0 - (1.0 - step / self.end) ** 3
